//! Loading the XDP object, attaching it to interfaces, applying plans, reading counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use gatehouse_ebpf_common::{
    self as common, BackendCpu, BackendStats, COUNTERS, Mac, NAT_PORT_TRIES, VipKey, VipStats,
};
use tracing::warn;

use crate::applier::{self, Maps, State};
use crate::error::{XdpError, map_err};
use crate::plan::{Limits, Plan};

/// The compiled XDP object (built by build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gatehouse-ebpf"));

/// How to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode; falls back to generic mode with a warning.
    Driver,
    /// Generic (SKB) mode.
    Generic,
}

/// Where the program ended up attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    pub ifindex: u32,
    /// True when driver mode was asked for but only generic mode worked.
    pub fell_back: bool,
    pub mode: AttachMode,
}

/// Counters summed over every CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per VIP (address:port/protocol number).
    pub vips: BTreeMap<String, VipStats>,
    /// Per backend address.
    pub backends: BTreeMap<SocketAddr, BackendStats>,
    /// The global `COUNTER_*` counters, by index.
    pub counters: Vec<u64>,
}

/// The XDP data plane: the loaded program, its maps and what has been applied.
pub struct Datapath {
    ebpf: Ebpf,
    maps: Maps,
    macs: HashMap<MapData, u32, Mac>,
    vip_stats: PerCpuArray<MapData, VipStats>,
    backend_cpu: PerCpuArray<MapData, BackendCpu>,
    counters: PerCpuArray<MapData, u64>,
    gen_frame: aya::maps::Array<MapData, common::GenFrame>,
    flow_clock: aya::maps::Array<MapData, common::FlowClock>,
    /// When the program was loaded: the connection table's clock counts seconds from here.
    loaded: std::time::Instant,
    /// NAT source ports per CPU, when limited ([`Datapath::limit_nat_ports`]).
    nat_ports: Option<u32>,
    /// The connection table's clock as last set.
    clock_now: u32,
    state: State,
    limits: Limits,
    attached: Vec<Attachment>,
    links: Vec<(u32, XdpLinkId)>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("limits", &self.limits)
            .field("attached", &self.attached)
            .field("applied", &self.state.applied())
            .finish_non_exhaustive()
    }
}

fn take<K, V>(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, XdpError> {
    let _ = std::marker::PhantomData::<(K, V)>;
    ebpf.take_map(name).ok_or(XdpError::MissingMap(name))
}

impl Datapath {
    /// Loads the program and creates its maps with the given sizes (nothing is attached yet).
    pub fn load(limits: Limits) -> Result<Self, XdpError> {
        if !crate::maglev::is_prime(limits.ring_size) {
            return Err(crate::maglev::MaglevError::NotPrime(limits.ring_size).into());
        }
        if limits.max_backends > common::MAX_BACKEND_IDS {
            return Err(XdpError::TooManyBackends(common::MAX_BACKEND_IDS));
        }
        let ring = common::ring_chunks(limits.max_vips, limits.ring_size);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(common::MAP_VIPS, limits.max_vips)
            .map_max_entries(common::MAP_VIP_INDEX, common::vip_index_slots(limits.max_vips))
            .map_max_entries(common::MAP_VIP_STATS, limits.max_vips)
            .map_max_entries(common::MAP_VIP_GEN, limits.max_vips)
            .map_max_entries(common::MAP_SYN, limits.max_vips)
            .map_max_entries(common::MAP_BACKENDS, limits.max_backends)
            .map_max_entries(common::MAP_BACKEND_CPU, limits.max_backends)
            .map_max_entries(common::MAP_RING, ring)
            .map_max_entries(common::MAP_FLOWS, common::flow_buckets(limits.max_flows))
            .map_max_entries(common::MAP_NAT, common::nat_lanes(limits.max_flows) * 65_536)
            .map_max_entries(common::MAP_NAT_CURSOR, common::nat_lanes(limits.max_flows))
            .load(OBJECT)?;
        for name in [
            common::PROGRAM_NAME,
            common::BENCH_PROGRAM_NAME,
            common::BENCH_NEW_FLOW_PROGRAM_NAME,
            common::FLOOR_PROGRAM_NAME,
            common::GENERATOR_PROGRAM_NAME,
        ] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(XdpError::MissingProgram(name))?
                .try_into()
                .map_err(|source| XdpError::Program { name, source })?;
            program.load().map_err(|source| XdpError::Program { name, source })?;
        }
        let maps = Maps {
            vips: HashMap::try_from(take::<(), ()>(&mut ebpf, common::MAP_VIPS)?)
                .map_err(map_err(common::MAP_VIPS))?,
            vip_index: aya::maps::Array::try_from(take::<(), ()>(
                &mut ebpf,
                common::MAP_VIP_INDEX,
            )?)
            .map_err(map_err(common::MAP_VIP_INDEX))?,
            backends: aya::maps::Array::try_from(take::<(), ()>(&mut ebpf, common::MAP_BACKENDS)?)
                .map_err(map_err(common::MAP_BACKENDS))?,
            ring: aya::maps::Array::try_from(take::<(), ()>(&mut ebpf, common::MAP_RING)?)
                .map_err(map_err(common::MAP_RING))?,
            vip_gen: aya::maps::Array::try_from(take::<(), ()>(&mut ebpf, common::MAP_VIP_GEN)?)
                .map_err(map_err(common::MAP_VIP_GEN))?,
            settings: aya::maps::Array::try_from(take::<(), ()>(&mut ebpf, common::MAP_SETTINGS)?)
                .map_err(map_err(common::MAP_SETTINGS))?,
            owned: HashMap::try_from(take::<(), ()>(&mut ebpf, common::MAP_OWNED)?)
                .map_err(map_err(common::MAP_OWNED))?,
            drop: aya::maps::LpmTrie::try_from(take::<(), ()>(&mut ebpf, common::MAP_DROP)?)
                .map_err(map_err(common::MAP_DROP))?,
        };
        let macs = HashMap::try_from(take::<(), ()>(&mut ebpf, common::MAP_MACS)?)
            .map_err(map_err(common::MAP_MACS))?;
        let vip_stats = PerCpuArray::try_from(take::<(), ()>(&mut ebpf, common::MAP_VIP_STATS)?)
            .map_err(map_err(common::MAP_VIP_STATS))?;
        let backend_cpu =
            PerCpuArray::try_from(take::<(), ()>(&mut ebpf, common::MAP_BACKEND_CPU)?)
                .map_err(map_err(common::MAP_BACKEND_CPU))?;
        let counters = PerCpuArray::try_from(take::<(), ()>(&mut ebpf, common::MAP_COUNTERS)?)
            .map_err(map_err(common::MAP_COUNTERS))?;
        let gen_frame =
            aya::maps::Array::try_from(take::<(), ()>(&mut ebpf, common::MAP_GEN_FRAME)?)
                .map_err(map_err(common::MAP_GEN_FRAME))?;
        let flow_clock =
            aya::maps::Array::try_from(take::<(), ()>(&mut ebpf, common::MAP_FLOW_CLOCK)?)
                .map_err(map_err(common::MAP_FLOW_CLOCK))?;
        let mut datapath = Datapath {
            gen_frame,
            flow_clock,
            loaded: std::time::Instant::now(),
            nat_ports: None,
            clock_now: 1,
            ebpf,
            maps,
            macs,
            vip_stats,
            backend_cpu,
            counters,
            state: State::default(),
            limits,
            attached: Vec::new(),
            links: Vec::new(),
        };
        datapath.set_flow_clock(1)?;
        Ok(datapath)
    }

    /// Limits the NAT source ports handed out per backend lane to the first `ports` (tests:
    /// port exhaustion); by default all 64,512.
    pub fn limit_nat_ports(&mut self, ports: u32) -> Result<(), XdpError> {
        self.nat_ports = Some(ports);
        self.set_flow_clock(self.clock_now)
    }

    /// Moves the connection table's clock to now (seconds since load); the data plane calls it
    /// every second. A flow's slot records when it was last seen; a new flow whose bucket is
    /// full takes the slot seen longest ago.
    pub fn tick_flow_clock(&mut self) -> Result<(), XdpError> {
        let secs = u32::try_from(self.loaded.elapsed().as_secs()).unwrap_or(u32::MAX - 1);
        self.set_flow_clock(secs.saturating_add(1))
    }

    /// Sets the connection table's clock (seconds, never 0; tests move it by hand).
    pub fn set_flow_clock(&mut self, now: u32) -> Result<(), XdpError> {
        // Possible CPUs (what per-CPU maps are sized by): bpf_get_smp_processor_id() is below.
        let cpus =
            aya::util::nr_cpus().map_or(1, |n| u32::try_from(n).unwrap_or(1024)).clamp(1, 1024);
        let nat_ports = self.nat_ports.map_or(common::NAT_PORTS, |n| n.clamp(1, common::NAT_PORTS));
        let clock = common::FlowClock {
            now: now.max(1),
            mask: common::flow_buckets(self.limits.max_flows) - 1,
            nat_mask: common::nat_lanes(self.limits.max_flows) - 1,
            nat_ports,
            cpus,
            vip_mask: common::vip_index_slots(self.limits.max_vips) - 1,
            nat_share: nat_ports / cpus,
        };
        self.flow_clock.set(0, clock, 0).map_err(map_err(common::MAP_FLOW_CLOCK))?;
        self.clock_now = clock.now;
        Ok(())
    }

    /// The table sizes this program was loaded with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Attaches to an interface; its MAC is recorded for ARP/NDP answers. A second attach
    /// to an interface that already runs an XDP program fails with [`XdpError::Busy`].
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<Attachment, XdpError> {
        let (ifindex, mac) = interface_facts(interface)?;
        let program = self.program_mut(common::PROGRAM_NAME)?;
        let first = match mode {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        let mut attachment =
            Attachment { interface: interface.to_owned(), ifindex, fell_back: false, mode };
        let link = match program.attach_to_if_index(ifindex, first) {
            Ok(link) => link,
            Err(e) if is_busy(&e) => return Err(XdpError::Busy(interface.to_owned())),
            Err(e) if mode == AttachMode::Driver => {
                warn!(
                    interface,
                    error = %e,
                    "XDP driver mode unavailable; falling back to generic mode (slower)"
                );
                let link = match program.attach_to_if_index(ifindex, XdpMode::Skb) {
                    Ok(link) => link,
                    Err(e) if is_busy(&e) => return Err(XdpError::Busy(interface.to_owned())),
                    Err(source) => {
                        return Err(XdpError::Attach { interface: interface.to_owned(), source });
                    }
                };
                attachment.fell_back = true;
                attachment.mode = AttachMode::Generic;
                link
            }
            Err(source) => {
                return Err(XdpError::Attach { interface: interface.to_owned(), source });
            }
        };
        self.links.push((ifindex, link));
        self.macs
            .insert(ifindex, Mac { addr: mac, _pad: [0; 2] }, 0)
            .map_err(map_err(common::MAP_MACS))?;
        self.attached.push(attachment.clone());
        Ok(attachment)
    }

    /// Detaches from an interface (by name, as attached). An interface that vanished took its
    /// attachment with it; this only forgets it then. Returns whether anything was attached.
    pub fn detach(&mut self, interface: &str) -> bool {
        let gone: Vec<u32> =
            self.attached.iter().filter(|a| a.interface == interface).map(|a| a.ifindex).collect();
        self.attached.retain(|a| a.interface != interface);
        let (links, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.links).into_iter().partition(|(i, _)| gone.contains(i));
        self.links = kept;
        if let Ok(program) = self.program_mut(common::PROGRAM_NAME) {
            for (_, link) in links {
                // Fails only when the interface (and with it the attachment) is gone.
                let _ = program.detach(link);
            }
        }
        for ifindex in &gone {
            let _ = self.macs.remove(ifindex);
        }
        !gone.is_empty()
    }

    /// Records an interface's MAC without attaching (tests run the program through
    /// `BPF_PROG_TEST_RUN`, whose ingress interface is `lo`).
    pub fn set_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), XdpError> {
        self.macs
            .insert(ifindex, Mac { addr: mac, _pad: [0; 2] }, 0)
            .map_err(map_err(common::MAP_MACS))
    }

    /// Interfaces the program is attached to.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attached
    }

    /// Writes a plan into the maps; returns the generation now live (the acknowledgement).
    /// A plan that fails is undone: the maps keep the generation before (see
    /// [`Datapath::needs_full_apply`] for when undoing fails too).
    pub fn apply(&mut self, plan: &Plan) -> Result<u64, XdpError> {
        applier::apply(&mut self.maps, &mut self.state, &self.limits, plan)
    }

    /// Marks every cached next hop stale: the program asks the kernel's FIB again for the
    /// next packet to each backend. Call it when the kernel's neighbours, routes or links
    /// changed ([`crate::NextHopWatch`] says when); every [`Datapath::apply`] does it too.
    pub fn invalidate_next_hops(&mut self) -> Result<(), XdpError> {
        applier::invalidate_next_hops(&mut self.maps, &self.state)
    }

    /// Turns the program's next-hop cache on (the default) or off (every forwarded packet
    /// asks the FIB): off when the kernel's changes cannot be watched.
    pub fn set_next_hop_cache(&mut self, on: bool) -> Result<(), XdpError> {
        self.state.next_hop_cache_off = !on;
        applier::invalidate_next_hops(&mut self.maps, &self.state)
    }

    /// The generation last applied (a plan that failed leaves it as it was).
    pub fn applied(&self) -> Option<u64> {
        self.state.applied()
    }

    /// The maps the applier writes (tests read them back).
    #[cfg(test)]
    pub(crate) fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Whether a failed plan could not be undone: the maps may then mix two generations, and
    /// the next [`Datapath::apply`] writes every element of its plan, not a difference.
    pub fn needs_full_apply(&self) -> bool {
        self.state.needs_full_write()
    }

    /// The Maglev table live for a VIP, slot by slot (for the reference model and tests).
    pub fn table(&self, key: &VipKey) -> Option<Vec<SocketAddr>> {
        self.state.table(key)
    }

    /// The attached program, or its benchmark twin, for `BPF_PROG_TEST_RUN`.
    pub fn program(&self, bench: bool) -> Result<&Xdp, XdpError> {
        let name = if bench { common::BENCH_PROGRAM_NAME } else { common::PROGRAM_NAME };
        self.named_program(name)
    }

    /// The benchmark twin that makes every run a new flow.
    pub fn new_flow_bench_program(&self) -> Result<&Xdp, XdpError> {
        self.named_program(common::BENCH_NEW_FLOW_PROGRAM_NAME)
    }

    /// The new-flow twin's counters: runs, then the count per action.
    pub fn bench_counts(&self) -> Result<Vec<u64>, XdpError> {
        let map =
            self.ebpf.map(common::MAP_BENCH).ok_or(XdpError::MissingMap(common::MAP_BENCH))?;
        let counts =
            aya::maps::Array::<_, u64>::try_from(map).map_err(map_err(common::MAP_BENCH))?;
        (0..8).map(|i| counts.get(&i, 0).map_err(map_err(common::MAP_BENCH))).collect()
    }

    /// The VIP index's slot `index` (tests: what the program reads before `GH_VIPS`).
    pub fn vip_index_entry(&self, index: u32) -> Result<common::VipEntry, XdpError> {
        self.maps.vip_index.get(&index, 0).map_err(map_err(common::MAP_VIP_INDEX))
    }

    /// Overwrites the VIP index's slot `index` (tests: a slot torn by a write in progress).
    pub fn write_vip_index_entry(
        &mut self,
        index: u32,
        entry: &common::VipEntry,
    ) -> Result<(), XdpError> {
        self.maps.vip_index.set(index, entry, 0).map_err(map_err(common::MAP_VIP_INDEX))
    }

    /// The full-NAT reverse-table slot at `index` ([`common::nat_index`]).
    pub fn nat_slot(&self, index: u32) -> Result<common::NatSlot, XdpError> {
        let map = self.ebpf.map(common::MAP_NAT).ok_or(XdpError::MissingMap(common::MAP_NAT))?;
        let slots = aya::maps::Array::<_, common::NatSlot>::try_from(map)
            .map_err(map_err(common::MAP_NAT))?;
        slots.get(&index, 0).map_err(map_err(common::MAP_NAT))
    }

    /// Overwrites the reverse-table slot at `index` (tests: a slot another CPU is claiming).
    pub fn write_nat_slot(&mut self, index: u32, slot: &common::NatSlot) -> Result<(), XdpError> {
        let map =
            self.ebpf.map_mut(common::MAP_NAT).ok_or(XdpError::MissingMap(common::MAP_NAT))?;
        let mut slots = aya::maps::Array::<_, common::NatSlot>::try_from(map)
            .map_err(map_err(common::MAP_NAT))?;
        slots.set(index, slot, 0).map_err(map_err(common::MAP_NAT))
    }

    /// The trivial `XDP_PASS` program (the benchmark's floor).
    pub fn floor_program(&self) -> Result<&Xdp, XdpError> {
        self.named_program(common::FLOOR_PROGRAM_NAME)
    }

    /// Sets the frame the generator program sends: its first [`common::GEN_FRAME_LEN`] bytes.
    pub fn set_generator_frame(&mut self, frame: &[u8]) -> Result<(), XdpError> {
        let mut bytes = [0u8; 64];
        let n = frame.len().min(common::GEN_FRAME_LEN);
        bytes[..n].copy_from_slice(&frame[..n]);
        let mut value = common::GenFrame::default();
        for (word, chunk) in value.words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_ne_bytes(b);
        }
        self.gen_frame.set(0, value, 0).map_err(map_err(common::MAP_GEN_FRAME))
    }

    /// The generator program: with live-frames `BPF_PROG_TEST_RUN` it writes the frame set by
    /// [`Datapath::set_generator_frame`] and sends it out of the ingress interface (`XDP_TX`).
    pub fn generator_program(&self) -> Result<&Xdp, XdpError> {
        self.named_program(common::GENERATOR_PROGRAM_NAME)
    }

    fn named_program(&self, name: &'static str) -> Result<&Xdp, XdpError> {
        self.ebpf
            .program(name)
            .ok_or(XdpError::MissingProgram(name))?
            .try_into()
            .map_err(|source| XdpError::Program { name, source })
    }

    fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(name)
            .ok_or(XdpError::MissingProgram(name))?
            .try_into()
            .map_err(|source| XdpError::Program { name, source })
    }

    /// Every counter, summed over CPUs.
    pub fn stats(&self, plan: &Plan) -> Result<Stats, XdpError> {
        let mut stats = Stats::default();
        for vip in &plan.vips {
            let key = applier::vip_key(vip.addr, vip.port, vip.protocol.number());
            let Some(index) = self.state.vip_index(&key) else {
                continue;
            };
            let per_cpu = self.vip_stats.get(&index, 0).map_err(map_err(common::MAP_VIP_STATS))?;
            let mut sum = VipStats::default();
            for s in per_cpu.iter() {
                sum.packets += s.packets;
                sum.bytes += s.bytes;
                sum.new_flows += s.new_flows;
                sum.syn_drops += s.syn_drops;
            }
            let name = format!(
                "{}/{}",
                SocketAddr::new(vip.addr, vip.port),
                match vip.protocol {
                    crate::plan::L4Protocol::Tcp => "tcp",
                    crate::plan::L4Protocol::Udp => "udp",
                }
            );
            stats.vips.insert(name, sum);
        }
        for (addr, id) in self.state.backends() {
            let per_cpu = self.backend_cpu.get(&id, 0).map_err(map_err(common::MAP_BACKEND_CPU))?;
            let mut sum = BackendStats::default();
            for local in per_cpu.iter() {
                sum.packets += local.stats.packets;
                sum.bytes += local.stats.bytes;
            }
            stats.backends.insert(addr, sum);
        }
        for i in 0..COUNTERS {
            let per_cpu = self.counters.get(&i, 0).map_err(map_err(common::MAP_COUNTERS))?;
            stats.counters.push(per_cpu.iter().sum());
        }
        Ok(stats)
    }
}

// Keep the contract's constant visible from the user side: the reference model mirrors it.
const _: u32 = NAT_PORT_TRIES;

fn is_busy(e: &aya::programs::ProgramError) -> bool {
    match e {
        aya::programs::ProgramError::SyscallError(s) => s.io_error.raw_os_error() == Some(16),
        other => other.to_string().contains("busy"),
    }
}

/// An interface's index and MAC address, asked of the kernel in this thread's network
/// namespace (sysfs would show the namespace it was mounted in).
fn interface_facts(interface: &str) -> Result<(u32, [u8; 6]), XdpError> {
    let unknown = || XdpError::UnknownInterface(interface.to_owned());
    if interface.is_empty() || interface.len() >= 16 || interface.contains(['/', '\0']) {
        return Err(unknown());
    }
    let ifindex = nix::net::if_::if_nametoindex(interface).map_err(|_| unknown())?;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| XdpError::Interface {
        interface: interface.to_owned(),
        source: std::io::Error::from(e),
    })?;
    let mac = addrs
        .filter(|a| a.interface_name == interface)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().and_then(|l| l.addr())))
        .unwrap_or_default();
    Ok((ifindex, mac))
}
