//! The map applier: writes a [`Plan`] into the XDP maps without ever exposing a half-written
//! VIP to the program.
//!
//! Each VIP owns two halves of `GH_RING` (16-bit backend ids packed 32 to an element). A
//! new Maglev table is written into the half the
//! program is not reading, then the VIP's entry (one atomic hash-map update) switches to it;
//! the VIP index's copy of the entry follows (`vip_index`).
//! Backends get stable ids (so pinned flows keep them); an id leaves service by being marked
//! dead and is reused only one generation later. The generation is written last.
//! A plan whose writes fail half-way is undone (`journal`); the state only moves on with a
//! plan written whole.

use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use aya::maps::{Array, HashMap, LpmTrie, MapData};
use gatehouse_ebpf_common::{
    ACTION_BALANCE, ACTION_PASS, Addr, Backend, FILTER_WORDS, MAP_DROP, MAP_OWNED, MAP_SETTINGS,
    MAP_VIPS, MAX_BACKEND_IDS, OwnedKey, RING_CHUNK, RingChunk, Settings, VIP_FLAG_IPIP, VipEntry,
    VipKey, VipValue, addr_from_octets, filter_add, mapped_v4, ring_stride, vip_index_slots,
};
use tracing::error;

use crate::error::{XdpError, map_err};
use crate::journal::{Journal, is_not_found};
use crate::maglev::{self, Member};
use crate::plan::{Forwarding, L4Protocol, Limits, Plan, VipAction};
use crate::vip_index::{self, VipIndex};

/// An address as the maps store it (network order, IPv4-mapped).
pub fn wire_addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => mapped_v4(v4.octets()),
        IpAddr::V6(v6) => addr_from_octets(v6.octets()),
    }
}

/// The VIP table key of an address, port and protocol number.
pub fn vip_key(addr: IpAddr, port: u16, proto: u8) -> VipKey {
    VipKey { addr: wire_addr(addr), port: port.to_be(), proto, _pad: 0 }
}

/// The maps the applier writes.
pub(crate) struct Maps {
    pub vips: HashMap<MapData, VipKey, VipValue>,
    /// Copies of `vips`' entries the program reads without a helper call.
    pub vip_index: Array<MapData, VipEntry>,
    pub backends: Array<MapData, Backend>,
    pub ring: Array<MapData, RingChunk>,
    pub vip_gen: Array<MapData, u32>,
    pub settings: Array<MapData, Settings>,
    pub owned: HashMap<MapData, OwnedKey, u32>,
    pub drop: LpmTrie<MapData, Addr, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct VipSlot {
    index: u32,
    /// The generation of the VIP's shape (see `FlowValue::vip_gen`) and the shape itself:
    /// (action, flags, whether the table is empty).
    shape_gen: u32,
    shape: (u8, u8, bool),
    /// The half the program reads now.
    half: u32,
    /// What the live half holds: (backend id, weight) in table order, and the table itself
    /// (shared: the state is copied for every plan).
    members: Vec<(u32, u32)>,
    table: Arc<Vec<u32>>,
    /// The VIP's entry in `GH_VIPS` (and its copy in the index).
    value: VipValue,
}

/// What the applier remembers between generations: what the maps hold (unless
/// `needs_full_write`).
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    vips: StdHashMap<VipKey, VipSlot>,
    /// Which VIP each slot of `GH_VIP_INDEX` holds (made at the first plan).
    vip_index: Option<VipIndex>,
    free_vip_indexes: Vec<u32>,
    next_vip_index: u32,
    backend_ids: StdHashMap<SocketAddr, u32>,
    free_backend_ids: Vec<u32>,
    /// Ids marked dead in the last generation, free from the next one on.
    quarantine: Vec<u32>,
    next_backend_id: u32,
    /// The last VIP generation handed out.
    last_vip_gen: u32,
    owned: BTreeSet<Addr>,
    drop: BTreeSet<(Addr, u32)>,
    applied: Option<u64>,
    /// Next hops are not cached (epoch 0): their changes cannot be watched.
    pub next_hop_cache_off: bool,
    /// A failed plan could not be undone: the maps may mix two generations, and the next
    /// plan is written in full (every element, not the difference to this state).
    needs_full_write: bool,
}

impl State {
    /// The Maglev table (backend addresses, slot by slot) the program reads for a VIP.
    pub fn table(&self, key: &VipKey) -> Option<Vec<SocketAddr>> {
        let slot = self.vips.get(key)?;
        let by_id: StdHashMap<u32, SocketAddr> =
            self.backend_ids.iter().map(|(a, id)| (*id, *a)).collect();
        slot.table.iter().map(|id| by_id.get(id).copied()).collect()
    }

    pub fn applied(&self) -> Option<u64> {
        self.applied
    }

    pub fn vip_index(&self, key: &VipKey) -> Option<u32> {
        self.vips.get(key).map(|s| s.index)
    }

    /// Live backends and their ids.
    pub fn backends(&self) -> Vec<(SocketAddr, u32)> {
        self.backend_ids.iter().map(|(a, id)| (*a, *id)).collect()
    }

    /// Whether the maps may mix two generations (the next plan is written in full).
    pub fn needs_full_write(&self) -> bool {
        self.needs_full_write
    }

    /// After a failed plan (`attempt`: the state it reached): what must outlive it. VIP
    /// generations handed out stay handed out (flows pinned meanwhile carry them); backend
    /// ids given out rest one generation, as dead ids do (flows pinned to them meanwhile must
    /// not reach another backend at once). After a failed undo every index and id handed out
    /// counts, so that the full write covers them.
    fn carry_over(&mut self, attempt: &State, undone: bool) {
        self.last_vip_gen = attempt.last_vip_gen;
        let old: BTreeSet<u32> = self.backend_ids.values().copied().collect();
        let fresh: BTreeSet<u32> =
            attempt.backend_ids.values().filter(|id| !old.contains(id)).copied().collect();
        self.free_backend_ids.retain(|id| !fresh.contains(id));
        self.quarantine.retain(|id| !fresh.contains(id));
        self.quarantine.extend(fresh);
        self.next_backend_id = self.next_backend_id.max(attempt.next_backend_id);
        if !undone {
            self.free_vip_indexes.extend(self.next_vip_index..attempt.next_vip_index);
            self.next_vip_index = self.next_vip_index.max(attempt.next_vip_index);
            self.needs_full_write = true;
        }
    }
}

/// Writes `plan` into the maps; returns the generation now live.
///
/// The plan is written against a copy of `state`, through a [`Journal`]. If a write fails,
/// the journal undoes the writes made (last first) and `state` stays as it was: the program
/// serves the generation before, and the next plan is computed against what the maps hold.
/// If an undo fails too, the error says so and the next plan is written in full.
pub(crate) fn apply(
    maps: &mut Maps,
    state: &mut State,
    limits: &Limits,
    plan: &Plan,
) -> Result<u64, XdpError> {
    validate(plan, limits)?;
    let full = state.needs_full_write;
    let mut next = state.clone();
    let mut journal = Journal::new(maps, !full);
    let error = match write_plan(&mut journal, &mut next, limits, plan, full) {
        Ok(()) => {
            next.needs_full_write = false;
            next.applied = Some(plan.generation);
            *state = next;
            return Ok(plan.generation);
        }
        Err(error) => error,
    };
    if full {
        state.carry_over(&next, false);
        return Err(error);
    }
    match journal.undo() {
        Ok(()) => {
            state.carry_over(&next, true);
            Err(error)
        }
        Err(undo) => {
            state.carry_over(&next, false);
            error!(
                %error,
                %undo,
                generation = plan.generation,
                "an XDP plan failed and undoing its map writes failed too: the maps may mix two generations until a plan is written in full (the next is)"
            );
            Err(XdpError::NotUndone { error: Box::new(error), undo: Box::new(undo) })
        }
    }
}

/// The writes of `apply`, in the order that keeps every step safe for the program; `state`
/// becomes what the maps hold once they all succeeded. `full`: every element is written (the
/// maps may not be what `state` says; what they hold is read where it matters).
fn write_plan(
    j: &mut Journal<'_>,
    state: &mut State,
    limits: &Limits,
    plan: &Plan,
    full: bool,
) -> Result<(), XdpError> {
    // Ids that were dead for a whole generation can serve again.
    state.free_backend_ids.append(&mut state.quarantine);

    let before = j.maps().settings.get(&0, 0).map_err(map_err(MAP_SETTINGS))?;
    let mut settings = before;
    settings.source_v4 = plan.source_v4.map(|a| wire_addr(a.into())).unwrap_or_default();
    settings.source_v6 = plan.source_v6.map(|a| wire_addr(a.into())).unwrap_or_default();
    // The address filter lets through the old and the new addresses while the VIPs change;
    // the last write below narrows it to the new ones.
    let filter = address_filter(plan);
    for (word, new) in settings.filter.iter_mut().zip(filter) {
        *word |= new;
    }
    // Backend ids may get new addresses: cached next hops are stale from here on.
    settings.next_hop_epoch = next_epoch(settings.next_hop_epoch, state);
    // Undone, the settings take an epoch never seen: next hops cached meanwhile may be those
    // of the new backends' addresses.
    let undo_to = Settings { next_hop_epoch: next_epoch(settings.next_hop_epoch, state), ..before };
    // Sources first: a new VIP may forward as soon as it appears.
    j.settings(settings, Some(undo_to))?;

    // Backends in use at this generation; a backend that keeps its id keeps its entry.
    let mut in_use: StdHashMap<SocketAddr, u32> = StdHashMap::new();
    for vip in &plan.vips {
        if let VipAction::Balance { backends, .. } = &vip.action {
            for b in backends {
                if in_use.contains_key(&b.addr) {
                    continue;
                }
                let (id, fresh) = match state.backend_ids.get(&b.addr) {
                    Some(id) => (*id, false),
                    None => {
                        let id = match state.free_backend_ids.pop() {
                            Some(id) => id,
                            None => {
                                if state.next_backend_id >= limits.max_backends {
                                    return Err(XdpError::TooManyBackends(limits.max_backends));
                                }
                                state.next_backend_id += 1;
                                state.next_backend_id - 1
                            }
                        };
                        state.backend_ids.insert(b.addr, id);
                        (id, true)
                    }
                };
                if fresh || full {
                    let value = Backend {
                        addr: wire_addr(b.addr.ip()),
                        port: b.addr.port().to_be(),
                        live: 1,
                        _pad: 0,
                    };
                    j.backend(id, value)?;
                }
                in_use.insert(b.addr, id);
            }
        }
    }

    // VIPs: new tables into the idle half, then one atomic switch per VIP.
    if full {
        // The index is written whole below, from a picture made afresh.
        state.vip_index = Some(VipIndex::new(vip_index_slots(limits.max_vips)));
    }
    let stride = ring_stride(limits.ring_size);
    let mut wanted = BTreeSet::new();
    for vip in &plan.vips {
        let key = vip_key(vip.addr, vip.port, vip.protocol.number());
        wanted.insert(key_bytes(&key));
        let previous = state.vips.get(&key).cloned();
        let index = match &previous {
            Some(s) => s.index,
            None => match state.free_vip_indexes.pop() {
                Some(i) => i,
                None => {
                    if state.next_vip_index >= limits.max_vips {
                        return Err(XdpError::TooManyVips(limits.max_vips));
                    }
                    state.next_vip_index += 1;
                    state.next_vip_index - 1
                }
            },
        };
        let (mut value, mut slot) = match &vip.action {
            VipAction::Pass => (
                VipValue { action: ACTION_PASS, index, ..VipValue::default() },
                VipSlot {
                    index,
                    shape_gen: 0,
                    shape: (ACTION_PASS, 0, true),
                    half: 0,
                    members: Vec::new(),
                    table: Arc::default(),
                    value: VipValue::default(),
                },
            ),
            VipAction::Balance { backends, forwarding, syn_limit } => {
                let members: Vec<(u32, u32)> = backends
                    .iter()
                    .map(|b| (in_use.get(&b.addr).copied().unwrap_or(0), b.weight))
                    .collect();
                let (half, table) = match &previous {
                    Some(p) if !full && p.members == members && !p.table.is_empty() => {
                        (p.half, p.table.clone())
                    }
                    _ => {
                        // The half the program does not read: in a full write, as the VIP's
                        // entry in the map says.
                        let live = if full {
                            live_half(j, &key, index, stride)?
                        } else {
                            previous.as_ref().map(|p| p.half)
                        };
                        let half = live.map_or(0, |h| 1 - h);
                        let table = build_table(backends, &members, limits.ring_size)?;
                        write_table(j, (index * 2 + half) * stride, &table)?;
                        (half, Arc::new(table))
                    }
                };
                let value = VipValue {
                    action: ACTION_BALANCE,
                    flags: if *forwarding == Forwarding::Ipip { VIP_FLAG_IPIP } else { 0 },
                    _pad: 0,
                    index,
                    ring_offset: (index * 2 + half) * stride,
                    // An empty table (every weight 0) is a VIP without backends: PASS.
                    ring_size: if table.is_empty() { 0 } else { limits.ring_size },
                    syn_limit: *syn_limit,
                    shape_gen: 0,
                };
                let shape = (ACTION_BALANCE, value.flags, table.is_empty());
                let slot = VipSlot {
                    index,
                    shape_gen: 0,
                    shape,
                    half,
                    members,
                    table,
                    value: VipValue::default(),
                };
                (value, slot)
            }
        };
        // Flows pinned under another shape (or another VIP at this index) stop being trusted
        // before the VIP entry changes; a change of backends alone keeps them.
        slot.shape_gen = match &previous {
            Some(p) if !full && p.shape == slot.shape && p.index == index => p.shape_gen,
            _ => {
                state.last_vip_gen = state.last_vip_gen.wrapping_add(1).max(1);
                j.vip_gen(index, state.last_vip_gen)?;
                state.last_vip_gen
            }
        };
        value.shape_gen = slot.shape_gen;
        slot.value = value;
        let unchanged = !full && previous.as_ref().is_some_and(|p| p.value == value);
        if !unchanged {
            j.insert_vip(key, value)?;
        }
        // The index's copy after the table of record: a packet reads either the old or the
        // new entry. (A full write places it now and writes the whole index below.)
        match state.vip_index.as_mut() {
            Some(index) if full => {
                index.place(&key);
            }
            _ => index_vip(j, state, limits, &key, Some(&value), unchanged)?,
        }
        state.vips.insert(key, slot);
    }
    if full {
        write_whole_index(j, state)?;
    }
    let mut gone: Vec<VipKey> =
        state.vips.keys().filter(|k| !wanted.contains(&key_bytes(k))).copied().collect();
    if full {
        // Entries of VIPs the state does not know (written by a plan that was not undone).
        for key in j.maps().vips.keys() {
            let key = key.map_err(map_err(MAP_VIPS))?;
            if !wanted.contains(&key_bytes(&key)) && !state.vips.contains_key(&key) {
                gone.push(key);
            }
        }
    }
    for key in gone {
        // Out of the index first, so no packet finds a copy of a VIP that is gone.
        index_vip(j, state, limits, &key, None, false)?;
        j.remove_vip(key)?;
        if let Some(slot) = state.vips.remove(&key) {
            // Its flows are no longer trusted (generation 0 is never handed out).
            j.vip_gen(slot.index, 0)?;
            state.free_vip_indexes.push(slot.index);
        }
    }
    if full {
        let used: BTreeSet<u32> = state.vips.values().map(|s| s.index).collect();
        for index in (0..state.next_vip_index).filter(|i| !used.contains(i)) {
            j.vip_gen(index, 0)?;
        }
    }

    // Backends no VIP uses any more: dead now, reusable next generation.
    let dead: Vec<SocketAddr> =
        state.backend_ids.keys().filter(|a| !in_use.contains_key(a)).copied().collect();
    for addr in dead {
        if let Some(id) = state.backend_ids.remove(&addr) {
            j.backend(id, Backend::default())?;
            state.quarantine.push(id);
        }
    }
    if full {
        let live: BTreeSet<u32> = in_use.values().copied().collect();
        for id in (0..state.next_backend_id).filter(|id| !live.contains(id)) {
            j.backend(id, Backend::default())?;
        }
    }

    sync_owned(j, state, plan, full)?;
    sync_drop(j, state, plan, full)?;

    // The commit: the generation, the drop list's size and the narrowed filter.
    settings.generation = plan.generation;
    settings.drop_entries = state.drop.len() as u32;
    settings.filter = filter;
    settings.next_hop_epoch = next_epoch(settings.next_hop_epoch, state);
    j.settings(settings, None)
}

/// Which half of its index's pair the VIP's entry in the map points to, if any.
fn live_half(
    j: &Journal<'_>,
    key: &VipKey,
    index: u32,
    stride: u32,
) -> Result<Option<u32>, XdpError> {
    let value = match j.maps().vips.get(key, 0) {
        Ok(value) => value,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(map_err(MAP_VIPS)(e)),
    };
    Ok((0..2).find(|h| value.ring_size != 0 && value.ring_offset == (index * 2 + h) * stride))
}

/// Writes a Maglev table (backend ids) into `GH_RING` from entry `base` (a multiple of
/// `RING_CHUNK`), a chunk of ids per map element.
fn write_table(j: &mut Journal<'_>, base: u32, table: &[u32]) -> Result<(), XdpError> {
    for (i, ids) in table.chunks(RING_CHUNK as usize).enumerate() {
        let mut chunk = RingChunk::default();
        for (slot, id) in chunk.ids.iter_mut().zip(ids) {
            // Ids are below `Limits::max_backends`, at most `MAX_BACKEND_IDS` (load checks).
            *slot = u16::try_from(*id).map_err(|_| XdpError::TooManyBackends(MAX_BACKEND_IDS))?;
        }
        j.ring(base / RING_CHUNK + i as u32, chunk)?;
    }
    Ok(())
}

/// Places a VIP's copy in the VIP index and writes it (`None`: clears its slot). A VIP whose
/// probed slots are all taken is not indexed: the program asks `GH_VIPS` for it.
/// `unchanged`: the VIP's entry is what it was; its copy is written only if it moves.
fn index_vip(
    j: &mut Journal<'_>,
    state: &mut State,
    limits: &Limits,
    key: &VipKey,
    value: Option<&VipValue>,
    unchanged: bool,
) -> Result<(), XdpError> {
    let index =
        state.vip_index.get_or_insert_with(|| VipIndex::new(vip_index_slots(limits.max_vips)));
    let had = index.slot(key);
    let (slot, entry) = match value {
        Some(value) => match index.place(key) {
            Some(slot) if unchanged && had == Some(slot) => return Ok(()),
            Some(slot) => (slot, vip_index::entry(key, value)),
            None => return Ok(()),
        },
        None => match index.remove(key) {
            Some(slot) => (slot, VipEntry::default()),
            None => return Ok(()),
        },
    };
    j.vip_index(slot, entry)
}

/// Writes every slot of the VIP index from the state's picture (a full write).
fn write_whole_index(j: &mut Journal<'_>, state: &State) -> Result<(), XdpError> {
    let Some(index) = &state.vip_index else {
        return Ok(());
    };
    for (slot, key) in index.slots() {
        let entry = key
            .and_then(|k| state.vips.get(&k).map(|s| vip_index::entry(&k, &s.value)))
            .unwrap_or_default();
        j.vip_index(slot, entry)?;
    }
    Ok(())
}

/// Marks every cached next hop stale (the kernel's neighbours, routes or links changed).
pub(crate) fn invalidate_next_hops(maps: &mut Maps, state: &State) -> Result<(), XdpError> {
    let mut settings = maps.settings.get(&0, 0).map_err(map_err(MAP_SETTINGS))?;
    settings.next_hop_epoch = next_epoch(settings.next_hop_epoch, state);
    maps.settings.set(0, settings, 0).map_err(map_err(MAP_SETTINGS))
}

/// The epoch after `epoch`, never 0 (0 marks a next hop never resolved), or 0 (the program
/// caches nothing) with the cache off.
fn next_epoch(epoch: u32, state: &State) -> u32 {
    if state.next_hop_cache_off { 0 } else { epoch.wrapping_add(1).max(1) }
}

/// The destination-address filter of a plan: every VIP address and the NAT sources.
fn address_filter(plan: &Plan) -> [u64; FILTER_WORDS] {
    let mut filter = [0; FILTER_WORDS];
    let sources = plan.source_v4.map(IpAddr::V4).into_iter().chain(plan.source_v6.map(IpAddr::V6));
    for addr in plan.vips.iter().map(|v| v.addr).chain(sources) {
        filter_add(&mut filter, &wire_addr(addr));
    }
    filter
}

fn key_bytes(k: &VipKey) -> (Addr, u16, u8) {
    (k.addr, k.port, k.proto)
}

fn build_table(
    backends: &[crate::plan::WeightedAddr],
    members: &[(u32, u32)],
    size: u32,
) -> Result<Vec<u32>, XdpError> {
    let input: Vec<Member> = backends
        .iter()
        .map(|b| Member { id: maglev::identity(b.addr.to_string().as_bytes()), weight: b.weight })
        .collect();
    let slots = maglev::table(&input, size)?;
    Ok(slots.iter().map(|i| members[*i as usize].0).collect())
}

fn validate(plan: &Plan, limits: &Limits) -> Result<(), XdpError> {
    if !maglev::is_prime(limits.ring_size) {
        return Err(maglev::MaglevError::NotPrime(limits.ring_size).into());
    }
    // Once each: a VIP's second write would go into the half the first made live.
    let mut keys = std::collections::HashSet::with_capacity(plan.vips.len());
    for vip in &plan.vips {
        if !keys.insert(vip_key(vip.addr, vip.port, vip.protocol.number())) {
            let protocol = if vip.protocol == L4Protocol::Tcp { "tcp" } else { "udp" };
            return Err(XdpError::DuplicateVip(format!("{}:{}/{protocol}", vip.addr, vip.port)));
        }
    }
    for vip in &plan.vips {
        let VipAction::Balance { backends, forwarding: _, syn_limit: _ } = &vip.action else {
            continue;
        };
        let name = format!("{}:{}", vip.addr, vip.port);
        for b in backends {
            if b.addr.is_ipv4() != vip.addr.is_ipv4() {
                return Err(XdpError::FamilyMismatch { vip: name, backend: b.addr.to_string() });
            }
        }
        if vip.addr.is_ipv4() && plan.source_v4.is_none() {
            return Err(XdpError::NoSource { vip: name, family: "IPv4" });
        }
        if vip.addr.is_ipv6() && plan.source_v6.is_none() {
            return Err(XdpError::NoSource { vip: name, family: "IPv6" });
        }
    }
    for (addr, len) in &plan.drop_sources {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if *len > max {
            return Err(XdpError::BadPrefix { addr: *addr, len: *len });
        }
    }
    Ok(())
}

fn sync_owned(
    j: &mut Journal<'_>,
    state: &mut State,
    plan: &Plan,
    full: bool,
) -> Result<(), XdpError> {
    let wanted: BTreeSet<Addr> = plan.owned.iter().map(|a| wire_addr(*a)).collect();
    let held = if full {
        let mut held = BTreeSet::new();
        for key in j.maps().owned.keys() {
            held.insert(key.map_err(map_err(MAP_OWNED))?.addr);
        }
        held
    } else {
        std::mem::take(&mut state.owned)
    };
    sync(&held, &wanted, |addr, own| j.owned(*addr, own))?;
    state.owned = wanted;
    Ok(())
}

fn sync_drop(
    j: &mut Journal<'_>,
    state: &mut State,
    plan: &Plan,
    full: bool,
) -> Result<(), XdpError> {
    let wanted: BTreeSet<(Addr, u32)> = plan
        .drop_sources
        .iter()
        .map(|(a, len)| {
            let bits = match a {
                IpAddr::V4(_) => 96 + u32::from(*len),
                IpAddr::V6(_) => u32::from(*len),
            };
            (wire_addr(*a), bits)
        })
        .collect();
    let held = if full {
        let mut held = BTreeSet::new();
        for key in j.maps().drop.keys() {
            let key = key.map_err(map_err(MAP_DROP))?;
            held.insert((key.data(), key.prefix_len()));
        }
        held
    } else {
        std::mem::take(&mut state.drop)
    };
    sync(&held, &wanted, |(addr, bits), drop| j.drop_prefix(*bits, *addr, drop))?;
    state.drop = wanted;
    Ok(())
}

/// Adds what `wanted` has and `held` lacks, then removes what only `held` has.
fn sync<T: Ord>(
    held: &BTreeSet<T>,
    wanted: &BTreeSet<T>,
    mut write: impl FnMut(&T, bool) -> Result<(), XdpError>,
) -> Result<(), XdpError> {
    for item in wanted.difference(held) {
        write(item, true)?;
    }
    for item in held.difference(wanted) {
        write(item, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::net::IpAddr;

    use gatehouse_ebpf_common::filter_has;

    use super::{State, address_filter, next_epoch, wire_addr};
    use crate::plan::{L4Protocol, Plan, Vip, VipAction};

    #[test]
    fn the_address_filter_holds_every_vip_and_nat_source_and_few_others() {
        let vips: Vec<Vip> = (0..200u32)
            .map(|i| Vip {
                addr: IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
                port: 80,
                protocol: L4Protocol::Tcp,
                action: VipAction::Pass,
            })
            .chain(std::iter::once(Vip {
                addr: "2001:db8::1".parse().unwrap(),
                port: 443,
                protocol: L4Protocol::Udp,
                action: VipAction::Pass,
            }))
            .collect();
        let plan = Plan {
            vips,
            source_v4: Some("192.0.2.254".parse().unwrap()),
            source_v6: Some("2001:db8::fe".parse().unwrap()),
            ..Plan::default()
        };
        let filter = address_filter(&plan);
        for addr in plan
            .vips
            .iter()
            .map(|v| v.addr)
            .chain(["192.0.2.254".parse().unwrap(), "2001:db8::fe".parse().unwrap()])
        {
            assert!(filter_has(&filter, &wire_addr(addr)), "{addr}");
        }
        // 202 of 4096 bits set: most other addresses are out before any hash lookup.
        let others = (0..10_000u32)
            .filter(|i| {
                filter_has(&filter, &wire_addr(IpAddr::from([172, 16, (i >> 8) as u8, *i as u8])))
            })
            .count();
        assert!(others < 1_000, "{others} of 10000 unrelated addresses pass the filter");
    }

    #[test]
    fn next_hop_epochs_skip_zero_and_are_zero_with_the_cache_off() {
        let mut state = State::default();
        assert_eq!(next_epoch(0, &state), 1);
        assert_eq!(next_epoch(u32::MAX, &state), 1);
        assert_eq!(next_epoch(7, &state), 8);
        state.next_hop_cache_off = true;
        assert_eq!(next_epoch(7, &state), 0);
    }
}
