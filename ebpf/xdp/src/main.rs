//! Gatehouse's XDP program: the first stop of every frame on the configured interface.
//!
//! It reads only maps that the user side (`appliance/xdp`) fills from the compiled snapshot:
//! packets for an L7 VIP pass to the local proxy, packets for an L4 VIP are balanced over the
//! VIP's Maglev table (flows pinned in an LRU connection table) and forwarded by full NAT or
//! IPIP encapsulation, backend replies of full-NAT flows are rewritten back, ARP requests and
//! NDP neighbour solicitations for owned addresses are answered. Everything else passes
//! untouched. Unsafe code is inherent here: packet and map memory are raw pointers whose
//! bounds the verifier checks.
#![no_std]
#![no_main]
// The NAT port claim's compare-and-swap: the BPF target declares no atomic CAS, so
// `AtomicU32::compare_exchange` is absent; the intrinsic lowers to BPF_CMPXCHG (BPF CPU v3).
#![feature(core_intrinsics)]
// An empty `asm!` is the compiler barrier: LLVM's BPF back end cannot select a fence.
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod csum;
mod packet;

use aya_ebpf::bindings::{bpf_fib_lookup, xdp_action, xdp_md};
use aya_ebpf::helpers::generated::{
    bpf_fib_lookup as fib_lookup, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_redirect,
    bpf_xdp_adjust_head,
};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::lpm_trie::Key as LpmKey;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use gatehouse_ebpf_common::{
    ACTION_BALANCE, ACTION_PASS, Addr, Backend, BackendCpu, CLIENT_HOP_SLOTS, COUNTER_ARP_REPLY,
    COUNTER_DROP_LIST, COUNTER_FIB_PASS, COUNTER_FRAGMENT, COUNTER_MALFORMED, COUNTER_MISS,
    COUNTER_NAT_REVERSE, COUNTER_ND_REPLY, COUNTER_NO_BACKEND, COUNTER_VIP_PASS, COUNTERS,
    DEFAULT_MAX_BACKENDS, DEFAULT_MAX_FLOWS, DEFAULT_MAX_VIPS, DEFAULT_NAT_LANES,
    DEFAULT_RING_SIZE, FLOW_WAYS, FlowBucket, FlowClock, FlowKey, FlowSlot, FlowValue,
    GEN_FRAME_LEN, GenFrame, MAPPED_V4_WORD, MAX_DROP, MAX_OWNED, Mac, NAT_PORT_BASE,
    NAT_PORT_TRIES, NAT_QUIET_SECS, NatSlot, NextHop, OwnedKey, PROTO_TCP, PROTO_UDP, RING_CHUNK,
    RingChunk, Settings, SynWindow, VIP_FLAG_IPIP, VIP_PROBES, VipEntry, VipKey, VipStats,
    VipValue, client_hop_slot, flow_bucket, flow_buckets, flow_hash, flow_tag, is_mapped_v4,
    nat_claimed, nat_index, nat_lane, nat_tag, ring_chunks, ring_slot, vip_index_slots, vip_slot,
    vip_tag,
};

use crate::packet::{Ctx, Parsed, Verdict};

#[map]
static GH_VIPS: HashMap<VipKey, VipValue> = HashMap::with_max_entries(DEFAULT_MAX_VIPS, 0);
/// The VIP index: copies of [`GH_VIPS`]' entries in an array, so a new flow's VIP lookup
/// costs no helper call (see [`VipEntry`]).
#[map]
static GH_VIP_INDEX: Array<VipEntry> =
    Array::with_max_entries(vip_index_slots(DEFAULT_MAX_VIPS), 0);
#[map]
static GH_BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);
#[map]
static GH_RING: Array<RingChunk> =
    Array::with_max_entries(ring_chunks(DEFAULT_MAX_VIPS, DEFAULT_RING_SIZE), 0);
/// The connection table: set-associative, in an array (no helper call, no kernel LRU lists;
/// see [`FlowSlot`]). Shared by every CPU.
#[map]
static GH_FLOWS: Array<FlowBucket> = Array::with_max_entries(flow_buckets(DEFAULT_MAX_FLOWS), 0);
#[map]
static GH_FLOW_CLOCK: Array<FlowClock> = Array::with_max_entries(1, 0);
/// The full-NAT reverse table: one slot per NAT source port and lane (see [`NatSlot`]).
#[map]
static GH_NAT: Array<NatSlot> = Array::with_max_entries(DEFAULT_NAT_LANES * 65_536, 0);
#[map]
static GH_NAT_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(DEFAULT_NAT_LANES, 0);
#[map]
static GH_SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static GH_OWNED: HashMap<OwnedKey, u32> = HashMap::with_max_entries(MAX_OWNED, 0);
#[map]
static GH_MACS: HashMap<u32, Mac> = HashMap::with_max_entries(256, 0);
#[map]
static GH_DROP: LpmTrie<Addr, u32> = LpmTrie::with_max_entries(MAX_DROP, 0);
#[map]
static GH_VIP_STATS: PerCpuArray<VipStats> = PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS, 0);
#[map]
static GH_BACKEND_CPU: PerCpuArray<BackendCpu> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_BACKENDS, 0);
#[map]
static GH_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);
#[map]
static GH_GEN_FRAME: Array<GenFrame> = Array::with_max_entries(1, 0);
#[map]
static GH_SYN: PerCpuArray<SynWindow> = PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS, 0);
#[map]
static GH_VIP_GEN: Array<u32> = Array::with_max_entries(DEFAULT_MAX_VIPS, 0);
#[map]
static GH_CLIENT_HOP: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(CLIENT_HOP_SLOTS, 0);
/// Shared, not per CPU: `BPF_PROG_TEST_RUN` may move to another CPU between repetitions, and
/// the run counter must go on from where it was (one benchmark runs at a time).
#[map]
static GH_BENCH: Array<u64> = Array::with_max_entries(8, 0);
/// The benchmark twins' copy of the frame they restore (per CPU, one slot).
#[map]
static GH_BENCH_SAVED: PerCpuArray<GenFrame> = PerCpuArray::with_max_entries(1, 0);

const NS_PER_SEC: u64 = 1_000_000_000;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_FRAG_NEEDED: i64 = 8;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// The program attached to interfaces.
#[xdp]
pub fn gatehouse_xdp(ctx: XdpContext) -> u32 {
    process(&ctx)
}

/// Benchmark-only twin: restores the first 60 bytes (and the head, after an encapsulation)
/// so that `BPF_PROG_TEST_RUN` with `repeat > 1` runs every repetition on the original frame.
#[xdp]
pub fn gatehouse_xdp_bench(ctx: XdpContext) -> u32 {
    restoring(&ctx)
}

/// Benchmark-only twin for new flows: every run gets its own flow (the run counter
/// becomes the last two bytes of the IPv4 source address and the TCP/UDP source port of the
/// untagged IPv4 frame the harness sends), then runs as [`gatehouse_xdp_bench`]. The actions
/// returned are counted (`GH_BENCH[1 + action]`) so the harness checks every run's.
#[xdp]
pub fn gatehouse_xdp_bench_new(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 60 <= ctx.data_end()
        && let Some(counter) = GH_BENCH.get_ptr_mut(0)
    {
        // SAFETY: the benchmark's own slot (one test run at a time); the 60 bytes at `start`
        // were bounds-checked just above.
        unsafe {
            let n = *counter;
            *counter = n + 1;
            core::ptr::write((start + 28) as *mut u16, ((n >> 16) as u16).to_be());
            core::ptr::write((start + 34) as *mut u16, (n as u16).to_be());
        }
    }
    let action = restoring(&ctx);
    if let Some(c) = GH_BENCH.get_ptr_mut(1 + action) {
        // SAFETY: the benchmark's own slot (see above).
        unsafe { *c += 1 };
    }
    action
}

#[inline(always)]
fn restoring(ctx: &XdpContext) -> u32 {
    save(ctx);
    let action = process(ctx);
    restore(ctx);
    action
}

/// Bytes of the frame the benchmark twins save and restore.
const SAVED: usize = 60;

/// The benchmark twins' copy of the frame's first [`SAVED`] bytes and its length, into
/// [`GH_BENCH_SAVED`] (per CPU, not on the stack: the stack is the verifier's 512 bytes per
/// call chain, which the program itself needs; nothing stays live across [`process`]).
#[inline(always)]
fn save(ctx: &XdpContext) {
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(saved) = GH_BENCH_SAVED.get_ptr_mut(0) else {
        return;
    };
    if start + SAVED > end {
        // SAFETY: this CPU's slot. Length 0: nothing to restore.
        unsafe { (*saved).words[7] = 0 };
        return;
    }
    // SAFETY: the 60 bytes at `start` were bounds-checked above; unaligned packet access is
    // accepted (see packet.rs); `saved` is this CPU's slot.
    unsafe {
        let w = core::ptr::read(start as *const [u64; 7]);
        (*saved).words = [w[0], w[1], w[2], w[3], w[4], w[5], w[6], 0];
        (*saved).words[7] =
            u64::from(core::ptr::read((start + 56) as *const u32)) | (((end - start) as u64) << 32);
    }
}

/// Undoes what [`process`] did to the frame: the head back where it was (after an
/// encapsulation) and the saved bytes written back.
#[inline(always)]
fn restore(ctx: &XdpContext) {
    let Some(saved) = GH_BENCH_SAVED.get(0) else {
        return;
    };
    let before = (saved.words[7] >> 32) as usize;
    if before < SAVED {
        return;
    }
    let grown = (ctx.data_end() - ctx.data()) as i64 - before as i64;
    if grown > 0 && grown <= 64 {
        // SAFETY: a plain helper call on this program's own context.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, grown as i32) };
    }
    let start = ctx.data();
    if start + SAVED <= ctx.data_end() {
        let w = &saved.words;
        // SAFETY: bounds-checked just above.
        unsafe {
            core::ptr::write(start as *mut [u64; 7], [w[0], w[1], w[2], w[3], w[4], w[5], w[6]]);
            core::ptr::write((start + 56) as *mut u32, w[7] as u32);
        }
    }
}

/// Benchmark floor: the cheapest possible XDP program, to measure the test harness itself.
#[xdp]
pub fn gatehouse_xdp_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark traffic generator: run with `BPF_PROG_TEST_RUN` in live-frames mode, it sends
/// its frame out of the ingress interface, again and again.
#[xdp]
pub fn gatehouse_xdp_tx(ctx: XdpContext) -> u32 {
    // The receivers rewrite the frame in place and live-frames mode recycles its page: write
    // the original bytes back before every send.
    let start = ctx.data();
    if start + GEN_FRAME_LEN <= ctx.data_end()
        && let Some(frame) = GH_GEN_FRAME.get(0)
    {
        // SAFETY: the 60 bytes at `start` were bounds-checked just above.
        unsafe {
            core::ptr::write(
                start as *mut [u64; 7],
                [
                    frame.words[0],
                    frame.words[1],
                    frame.words[2],
                    frame.words[3],
                    frame.words[4],
                    frame.words[5],
                    frame.words[6],
                ],
            );
            core::ptr::write((start + 56) as *mut u32, frame.words[7] as u32);
        }
    }
    xdp_action::XDP_TX
}

#[inline(always)]
fn process(ctx: &XdpContext) -> u32 {
    // Not zeroed: zeroing 72 bytes costs a byte-wise memset call per packet in BPF.
    let mut pkt = core::mem::MaybeUninit::<Parsed>::uninit();
    let Some(settings) = GH_SETTINGS.get(0) else {
        return xdp_action::XDP_PASS;
    };
    match packet::parse(ctx.ctx, pkt.as_mut_ptr(), &settings.filter) {
        Verdict::Miss => {
            count(COUNTER_MISS);
            xdp_action::XDP_PASS
        }
        Verdict::Malformed => {
            count(COUNTER_MALFORMED);
            xdp_action::XDP_PASS
        }
        Verdict::Fragment => {
            count(COUNTER_FRAGMENT);
            xdp_action::XDP_PASS
        }
        Verdict::Arp(l3) => arp_reply(ctx.ctx, l3),
        Verdict::Solicit(l3) => nd_reply(ctx.ctx, l3),
        // SAFETY: `parse` wrote every field before returning `Verdict::L4`.
        Verdict::L4 => l4(ctx.ctx, unsafe { pkt.assume_init_ref() }, settings),
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = GH_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}

// Out of line (here and below): each BPF function gets its own stack frame, which keeps every
// call chain within the verifier's 512-byte stack limit. The common path (`l4`) is inlined.
#[inline(always)]
fn l4(raw: *mut xdp_md, pkt: &Parsed, settings: &Settings) -> u32 {
    // Most frames are for none of our addresses: the parser answered `Verdict::Miss` for
    // those (the settings' filter), before any hash-map lookup.
    //
    // A reply to the NAT source? For IPv4 its last word and the mapped prefix are compared:
    // the frame's first three words are that prefix already, and an unset source (all zero)
    // has no prefix.
    let to_source = if pkt.v4 {
        pkt.key.dst[3] == settings.source_v4[3] && settings.source_v4[2] == MAPPED_V4_WORD
    } else {
        pkt.key.dst == settings.source_v6
    };
    if to_source {
        // Written by `nat_reply` (an out-parameter, see `new_flow`'s) when it answers
        // `REPLY_REWRITTEN`, and read only then. Not zeroed: `[0; 4]` here was a call to a
        // byte-wise `memset` subprogram per reply.
        let mut client = core::mem::MaybeUninit::<Addr>::uninit();
        match nat_reply(raw, pkt, client.as_mut_ptr()) {
            REPLY_NONE => {}
            REPLY_REWRITTEN => {
                // SAFETY: `nat_reply` wrote it before answering `REPLY_REWRITTEN`.
                let client = unsafe { client.assume_init() };
                // Sent from here, not from `nat_reply`: the FIB lookup `forward` may make
                // would be a third call deep, past the verifier's stack limit.
                let hop = GH_CLIENT_HOP.get_ptr_mut(client_hop_slot(&client));
                let hop = hop.unwrap_or(core::ptr::null_mut());
                let (epoch, shared) = (settings.next_hop_epoch, true);
                return forward(raw, pkt, &client, false, hop, epoch, shared);
            }
            action => return action,
        }
    }
    let hash = flow_hash(&pkt.key);
    let Some(clock) = GH_FLOW_CLOCK.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let bucket = GH_FLOWS.get_ptr_mut(flow_bucket(hash) & clock.mask);
    // An established flow: its slot says where to and which VIP it belongs to; while that
    // VIP's generation stands, no VIP lookup. A SYN opens a connection: it takes the Maglev
    // choice without looking through the bucket. A retransmitted SYN finds the same backend
    // unless the table changed meanwhile, and with full NAT its own source port.
    let pinned = if !(pkt.key.proto == PROTO_TCP && pkt.syn_only())
        && let Some(bucket) = bucket
        && let Some(entry) = pinned_flow(bucket, pkt, hash, clock.now)
        && GH_VIP_GEN.get(entry.vip_index).is_some_and(|g| *g == entry.vip_gen)
        && let Some(backend) = GH_BACKENDS.get(entry.backend)
        && backend.live != 0
    {
        if dropped(settings, pkt) {
            return xdp_action::XDP_DROP;
        }
        vip_count(entry.vip_index, pkt, false);
        (entry, backend)
    } else {
        // Written by `new_flow` (an out-parameter: the verifier refuses reading back a
        // returned struct of mixed-size fields from the caller's stack).
        let mut value = FlowValue::default();
        let action = new_flow(hash, pkt, settings, &mut value);
        if action != NEW_FLOW {
            return action;
        }
        let Some(backend) = GH_BACKENDS.get(value.backend) else {
            return xdp_action::XDP_DROP;
        };
        (value, backend)
    };
    to_backend(raw, pkt, &pinned.0, pinned.1, settings)
}

/// The VIP of a packet whose flow is not (or no longer) pinned, copied into `out`: from the
/// VIP index when one of the key's slots holds it whole, else from [`GH_VIPS`] (the table of
/// record: a VIP not indexed, or a slot being rewritten). `false`: no such VIP.
#[inline(always)]
fn vip_of(pkt: &Parsed, mask: u32, out: &mut VipValue) -> bool {
    let start = vip_slot(&pkt.key.dst, pkt.key.dport, pkt.key.proto);
    let mut probe = 0;
    while probe < VIP_PROBES {
        let Some(entry) = GH_VIP_INDEX.get_ptr(start.wrapping_add(probe) & mask) else {
            break;
        };
        // SAFETY: a map value (valid for the whole run). User space may be rewriting it: the
        // tag read before and after the key and value (volatile, in this order) and checked
        // against them tells a whole slot from a torn one (see `VipEntry`).
        unsafe {
            let before = core::ptr::read_volatile(&raw const (*entry).tag);
            let key = &raw const (*entry).key;
            if before != 0
                && (*key).port == pkt.key.dport
                && (*key).proto == pkt.key.proto
                && (*key).addr[3] == pkt.key.dst[3]
                && (*key).addr[0] == pkt.key.dst[0]
                && (*key).addr[1] == pkt.key.dst[1]
                && (*key).addr[2] == pkt.key.dst[2]
            {
                let value = core::ptr::read_volatile(&raw const (*entry).value);
                let after = core::ptr::read_volatile(&raw const (*entry).tag);
                if before == after
                    && after == vip_tag(&pkt.key.dst, pkt.key.dport, pkt.key.proto, &value)
                {
                    *out = value;
                    return true;
                }
                break;
            }
        }
        probe += 1;
    }
    let key = VipKey { addr: pkt.key.dst, port: pkt.key.dport, proto: pkt.key.proto, _pad: 0 };
    // SAFETY: map values stay valid for the whole program run (RCU); copied at once.
    match unsafe { GH_VIPS.get(&key) } {
        Some(vip) => {
            *out = *vip;
            true
        }
        None => false,
    }
}

/// Whether the drop list holds the packet's source.
#[inline(always)]
fn dropped(settings: &Settings, pkt: &Parsed) -> bool {
    if settings.drop_entries == 0 {
        return false;
    }
    let probe = LpmKey::new(128, pkt.key.src);
    if GH_DROP.get(&probe).is_some() {
        count(COUNTER_DROP_LIST);
        return true;
    }
    false
}

/// Counts a packet for a VIP (and a new flow).
#[inline(always)]
fn vip_count(index: u32, pkt: &Parsed, new_flow: bool) {
    if let Some(s) = GH_VIP_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += u64::from(pkt.ip_len);
            if new_flow {
                (*s).new_flows += 1;
            }
        }
    }
}

/// Forwards a packet of a pinned flow to its backend: full NAT or IPIP, then out.
#[inline(always)]
fn to_backend(
    raw: *mut xdp_md,
    pkt: &Parsed,
    pinned: &FlowValue,
    backend: &Backend,
    settings: &Settings,
) -> u32 {
    let mut hop = core::ptr::null_mut();
    if let Some(local) = GH_BACKEND_CPU.get_ptr_mut(pinned.backend) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*local).stats.packets += 1;
            (*local).stats.bytes += u64::from(pkt.ip_len);
            hop = &raw mut (*local).next_hop;
        }
    }
    if pinned.flags & VIP_FLAG_IPIP != 0 {
        // An untagged IPv4 frame (the common case) inline, no BPF-to-BPF call.
        let done = if pkt.v4 && pkt.l3 == packet::ETH_HLEN {
            // SAFETY: a plain helper call on this program's own context.
            let grown = unsafe { bpf_xdp_adjust_head(raw, -20) } == 0;
            grown
                && packet::encapsulate_v4(
                    &Ctx::new(raw),
                    pkt.ip_len,
                    settings.source_v4[3],
                    backend.addr[3],
                )
        } else {
            encapsulate(raw, pkt, backend, settings)
        };
        if !done {
            count(COUNTER_NO_BACKEND);
            return xdp_action::XDP_DROP;
        }
        return forward(raw, pkt, &backend.addr, true, hop, settings.next_hop_epoch, false);
    }
    let source = if pkt.v4 { &settings.source_v4 } else { &settings.source_v6 };
    let ports = packet::ports(pinned.snat_port, backend.port);
    if !packet::rewrite(raw, pkt, source, &backend.addr, ports) {
        count(COUNTER_MALFORMED);
        return xdp_action::XDP_DROP;
    }
    forward(raw, pkt, &backend.addr, false, hop, settings.next_hop_epoch, false)
}

/// A flow the connection table does not know (or whose backend left): the VIP lookup, then
/// [`balance`]; the VIP's counters. Returns [`NEW_FLOW`] (the entry written to `out`), or
/// the action for a packet that goes no further. Out of line: each call chain stays within
/// the verifier's 512-byte stack.
#[inline(never)]
fn new_flow(hash: u32, pkt: &Parsed, settings: &Settings, out: &mut FlowValue) -> u32 {
    let Some(clock) = GH_FLOW_CLOCK.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let mut vip = VipValue::default();
    if !vip_of(pkt, clock.vip_mask, &mut vip) {
        count(COUNTER_MISS);
        return xdp_action::XDP_PASS;
    }
    if dropped(settings, pkt) {
        return xdp_action::XDP_DROP;
    }
    if vip.action != ACTION_BALANCE || vip.ring_size == 0 {
        vip_count(vip.index, pkt, false);
        if vip.action == ACTION_PASS {
            count(COUNTER_VIP_PASS);
        }
        return xdp_action::XDP_PASS;
    }
    let action = balance(&vip, hash, pkt, clock, out);
    vip_count(vip.index, pkt, action == NEW_FLOW);
    action
}

/// [`new_flow`] of a balanced VIP: SYN guard, Maglev choice, NAT port, new entry (pinned in
/// the connection table, and written to `out`).
#[inline(always)]
fn balance(vip: &VipValue, hash: u32, pkt: &Parsed, clock: &FlowClock, out: &mut FlowValue) -> u32 {
    if pkt.key.proto == PROTO_TCP && pkt.syn_only() && vip.syn_limit != 0 && syn_flood(vip) {
        if let Some(s) = GH_VIP_STATS.get_ptr_mut(vip.index) {
            // SAFETY: per-CPU slot.
            unsafe { (*s).syn_drops += 1 };
        }
        return xdp_action::XDP_DROP;
    }
    // `ring_size` is not 0 here (`new_flow` passed such a VIP), so the slot is below it.
    let entry = vip.ring_offset.wrapping_add(ring_slot(hash, vip.ring_size));
    let Some(id) = GH_RING
        .get(entry / RING_CHUNK)
        .map(|chunk| u32::from(chunk.ids[(entry % RING_CHUNK) as usize]))
    else {
        count(COUNTER_NO_BACKEND);
        return xdp_action::XDP_DROP;
    };
    let Some(backend) = GH_BACKENDS.get(id) else {
        count(COUNTER_NO_BACKEND);
        return xdp_action::XDP_DROP;
    };
    if backend.live == 0 || is_mapped_v4(&backend.addr) != pkt.v4 {
        count(COUNTER_NO_BACKEND);
        return xdp_action::XDP_DROP;
    }
    let bucket_index = flow_bucket(hash) & clock.mask;
    let Some(bucket) = GH_FLOWS.get_ptr_mut(bucket_index) else {
        return xdp_action::XDP_PASS;
    };
    let way = victim(bucket, pkt, hash);
    let mut value = FlowValue {
        backend: id,
        snat_port: 0,
        flags: vip.flags,
        _pad: 0,
        vip_index: vip.index,
        vip_gen: vip.shape_gen,
    };
    let nat = if vip.flags & VIP_FLAG_IPIP != 0 {
        None
    } else {
        let Some((port, slot, claim)) = nat_slot(pkt, backend, id, clock) else {
            count(COUNTER_NO_BACKEND);
            return xdp_action::XDP_DROP;
        };
        value.snat_port = port.to_be();
        Some((slot, claim))
    };
    let tag = flow_tag(hash, &value);
    if let Some((slot, claim)) = nat {
        let owner = bucket_index * FLOW_WAYS as u32 + way as u32;
        write_nat(slot, claim, pkt, backend, id, (owner, tag));
    }
    // SAFETY: map value, `way` in bounds.
    let slot = unsafe { &raw mut (*bucket).slots[way & (FLOW_WAYS - 1)] };
    pin(slot, pkt, tag, &value, clock.now);
    *out = value;
    NEW_FLOW
}

/// [`new_flow`]'s answer for a new flow (not an XDP action).
const NEW_FLOW: u32 = u32::MAX;

/// The pinned value of `flow` in its bucket, if a whole (untorn) slot holds it; marks it seen.
/// The ways are looked at from the one [`victim`] tries first, where a flow that met no
/// other in its bucket sits: one way looked at, not up to four.
#[inline(always)]
fn pinned_flow(bucket: *mut FlowBucket, pkt: &Parsed, hash: u32, now: u32) -> Option<FlowValue> {
    let start = first_way(hash);
    let mut i = 0;
    while i < FLOW_WAYS {
        let way = (start + i) & (FLOW_WAYS - 1);
        // SAFETY: `bucket` is a map value (valid for the whole run) and `way` is in bounds.
        // Another CPU may be writing the slot: the tag read before and after the key and value
        // (volatile, in this order) tells a whole slot from a half-written one (see FlowSlot):
        // a writer zeroes it first and writes it last, and x86 keeps stores, and loads, in
        // program order. The tag is not computed again here: a slot rewritten whole between
        // the two reads with an equal tag takes a collision of `flow_tag` (about 2^-31), and
        // computing it cost about 2 ns of a hit's 39.
        unsafe {
            let slot: *mut FlowSlot = &raw mut (*bucket).slots[way];
            let before = core::ptr::read_volatile(&raw const (*slot).tag);
            if before != 0 && same_flow(&(*slot).key, pkt) {
                let value = core::ptr::read_volatile(&raw const (*slot).value);
                let after = core::ptr::read_volatile(&raw const (*slot).tag);
                if before != after {
                    return None;
                }
                if (*slot).seen != now {
                    core::ptr::write_volatile(&raw mut (*slot).seen, now);
                }
                return Some(value);
            }
        }
        i += 1;
    }
    None
}

/// The way of its bucket a flow of hash `hash` tries first.
#[inline(always)]
fn first_way(hash: u32) -> usize {
    (hash >> 5) as usize
}

/// Whether a slot's key is the packet's flow: five 64-bit words compared, the ones that
/// differ most between flows first (comparing the keys whole would call a byte-wise `memcmp`).
#[inline(always)]
fn same_flow(key: &FlowKey, pkt: &Parsed) -> bool {
    let (a, b) = (key.words(), pkt.key.words());
    a[4] == b[4] && a[1] == b[1] && a[3] == b[3] && a[0] == b[0] && a[2] == b[2]
}

/// The way of its bucket a new flow takes: the slot that holds the flow already, else an
/// empty one, else the one seen longest ago (ties: the first from a way the hash picks).
#[inline(always)]
fn victim(bucket: *mut FlowBucket, pkt: &Parsed, hash: u32) -> usize {
    let start = first_way(hash);
    let mut victim = start & (FLOW_WAYS - 1);
    let mut oldest = u32::MAX;
    let mut i = 0;
    while i < FLOW_WAYS {
        let way = (start + i) & (FLOW_WAYS - 1);
        // SAFETY: map value, index in bounds (see `pinned_flow`).
        let (tag, seen, same) = unsafe {
            let slot = &raw const (*bucket).slots[way];
            ((*slot).tag, (*slot).seen, same_flow(&(*slot).key, pkt))
        };
        if same {
            return way;
        }
        let age = if tag == 0 { 0 } else { seen };
        if age < oldest {
            oldest = age;
            victim = way;
        }
        i += 1;
    }
    victim
}

/// Writes a flow into a slot of its bucket. The tag is zeroed first and written last
/// (volatile: in this order), so a reader on another CPU never takes a half-written slot.
#[inline(always)]
fn pin(slot: *mut FlowSlot, pkt: &Parsed, tag: u32, value: &FlowValue, now: u32) {
    // SAFETY: `slot` is inside a map value (valid for the whole run).
    unsafe {
        core::ptr::write_volatile(&raw mut (*slot).tag, 0);
        let key = &raw mut (*slot).key as *mut u64;
        let words = pkt.key.words();
        let mut i = 0;
        while i < 5 {
            core::ptr::write_volatile(key.add(i), words[i]);
            i += 1;
        }
        core::ptr::write_volatile(&raw mut (*slot).value, *value);
        core::ptr::write_volatile(&raw mut (*slot).seen, now);
        core::ptr::write_volatile(&raw mut (*slot).tag, tag);
    }
}

/// A NAT source port for a new flow to `backend` (id `id`) and its reverse-table slot: the
/// next ports from this CPU's cursor in the backend's lane (each CPU's cursor starts its own
/// share of the range further on, so CPUs rarely meet), the first whose slot is free: empty,
/// this very flow's, or its flow's connection-table slot gone and no reply for
/// [`NAT_QUIET_SECS`]. The cursor comes back to a port after the lane's whole range, by then
/// almost always free (the table has twice as many slots as the connection table).
///
/// A free slot is then claimed ([`claim_nat`]): of CPUs that judged one port free at once,
/// only one owns it and writes it; the others try their next port. Returns the port, the
/// slot and the claim value [`write_nat`] releases it with. `None`: [`NAT_PORT_TRIES`] ports
/// all taken.
#[inline(always)]
fn nat_slot(
    pkt: &Parsed,
    backend: &Backend,
    id: u32,
    clock: &FlowClock,
) -> Option<(u16, *mut NatSlot, u32)> {
    let lane = nat_lane(&backend.addr, backend.port, clock.nat_mask);
    // SAFETY: a plain helper call.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let cursor = GH_NAT_CURSOR.get_ptr_mut(lane)?;
    let ports = clock.nat_ports;
    if ports == 0 {
        return None;
    }
    // One division per port tried, not four: CPU ids are below the possible CPUs' count (the
    // share is user space's `nat_ports / cpus`), and the offset goes into the one remainder.
    let cpu = if cpu < clock.cpus { cpu } else { 0 };
    let offset = cpu.wrapping_mul(clock.nat_share);
    let mut attempt = 0;
    while attempt < NAT_PORT_TRIES {
        // SAFETY: a per-CPU slot.
        let next = unsafe {
            let n = *cursor;
            *cursor = n.wrapping_add(1);
            n
        };
        let port = (NAT_PORT_BASE + offset.wrapping_add(next) % ports) as u16;
        if let Some(slot) = GH_NAT.get_ptr_mut(nat_index(lane, port)) {
            // SAFETY: map value; read before judging the slot (the barrier keeps the judging
            // reads after it), so a slot written since fails the claim below.
            let seen = unsafe { core::ptr::read_volatile(&raw const (*slot).claim) };
            compiler_barrier();
            if !nat_claimed(seen) && nat_free(slot, pkt, id, clock.now) && claim_nat(slot, seen) {
                return Some((port, slot, seen.wrapping_add(2)));
            }
        }
        attempt += 1;
    }
    None
}

/// Whether a reverse-table slot may be given to this flow (see [`nat_slot`]).
#[inline(always)]
fn nat_free(slot: *mut NatSlot, pkt: &Parsed, id: u32, now: u32) -> bool {
    // SAFETY: map value; read field by field (another CPU's reply may be refreshing `seen`).
    unsafe {
        let tag = core::ptr::read_volatile(&raw const (*slot).tag);
        if tag == 0 {
            return true;
        }
        let s = &*slot;
        if s.backend == id
            && s.client_port == pkt.key.sport
            && s.vip_port == pkt.key.dport
            && s.proto == pkt.key.proto
            && s.client == pkt.key.src
            && s.vip == pkt.key.dst
        {
            return true;
        }
        if s.seen != 0 && now.wrapping_sub(s.seen) < NAT_QUIET_SECS {
            return false;
        }
        // Its flow's connection-table slot: still carrying the tag, the port is in use.
        let owner = s.owner;
        match GH_FLOWS.get(owner / FLOW_WAYS as u32) {
            Some(bucket) => {
                let way = &bucket.slots[(owner as usize) & (FLOW_WAYS - 1)];
                core::ptr::read_volatile(&raw const way.tag) != s.owner_tag
            }
            None => true,
        }
    }
}

/// Keeps the compiler from moving memory accesses across this point (no instruction; the
/// CPU's own order is x86's, see [`NatSlot`]).
#[inline(always)]
fn compiler_barrier() {
    // SAFETY: an empty instruction sequence; without `nomem` the compiler assumes it reads
    // and writes any memory, which is the point.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
}

/// Takes a reverse-table slot judged free when its claim word read `seen` (even): one
/// compare-and-swap to `seen + 1` (odd: being written). Fails when any other CPU claimed the
/// slot since `seen` was read, whatever it wrote: the claim count only grows.
#[inline(always)]
fn claim_nat(slot: *mut NatSlot, seen: u32) -> bool {
    use core::intrinsics::AtomicOrdering::SeqCst;
    // SAFETY: `slot` is a map value (valid, aligned); an atomic access of one `u32` field.
    let (_, won) = unsafe {
        core::intrinsics::atomic_cxchg::<u32, { SeqCst }, { SeqCst }>(
            &raw mut (*slot).claim,
            seen,
            seen.wrapping_add(1),
        )
    };
    won
}

/// Writes a flow's reverse mapping into a slot this CPU claimed ([`claim_nat`]): tag zeroed
/// first, written last (see [`NatSlot`]), then the claim word set to `release` (even).
#[inline(always)]
fn write_nat(
    slot: *mut NatSlot,
    release: u32,
    pkt: &Parsed,
    backend: &Backend,
    id: u32,
    owner: (u32, u32),
) {
    // SAFETY: `slot` is a map value (valid for the whole run). Field by field: a whole
    // `NatSlot` built on the stack would cost 64 bytes of this call chain's 512.
    unsafe {
        core::ptr::write_volatile(&raw mut (*slot).tag, 0);
        core::ptr::write_volatile(&raw mut (*slot).client, pkt.key.src);
        core::ptr::write_volatile(&raw mut (*slot).vip, pkt.key.dst);
        core::ptr::write_volatile(&raw mut (*slot).backend, id);
        core::ptr::write_volatile(&raw mut (*slot).backend_port, backend.port);
        core::ptr::write_volatile(&raw mut (*slot).client_port, pkt.key.sport);
        core::ptr::write_volatile(&raw mut (*slot).vip_port, pkt.key.dport);
        core::ptr::write_volatile(&raw mut (*slot).proto, pkt.key.proto);
        core::ptr::write_volatile(&raw mut (*slot).owner, owner.0);
        core::ptr::write_volatile(&raw mut (*slot).owner_tag, owner.1);
        core::ptr::write_volatile(&raw mut (*slot).seen, 0);
        let tag = nat_tag(&*slot);
        core::ptr::write_volatile(&raw mut (*slot).tag, tag);
        core::ptr::write_volatile(&raw mut (*slot).claim, release);
    }
}

/// Whether this SYN exceeds the VIP's per-CPU budget of new connections per second.
#[inline(always)]
fn syn_flood(vip: &VipValue) -> bool {
    let Some(w) = GH_SYN.get_ptr_mut(vip.index) else {
        return false;
    };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot.
    unsafe {
        if now.wrapping_sub((*w).start_ns) >= NS_PER_SEC {
            (*w).start_ns = now;
            (*w).count = 0;
        }
        (*w).count += 1;
        (*w).count > u64::from(vip.syn_limit)
    }
}

/// A backend's reply to a full-NAT flow (sent to the NAT source): rewritten back as from the
/// VIP to the client, whose address goes to `out` ([`REPLY_REWRITTEN`]: the caller sends it
/// on). [`REPLY_NONE`]: no such flow, the packet goes on as any other; else the action.
#[inline(never)]
fn nat_reply(raw: *mut xdp_md, pkt: &Parsed, out: *mut Addr) -> u32 {
    let Some(clock) = GH_FLOW_CLOCK.get(0) else {
        return REPLY_NONE;
    };
    let lane = nat_lane(&pkt.key.src, pkt.key.sport, clock.nat_mask);
    let Some(slot) = GH_NAT.get_ptr_mut(nat_index(lane, u16::from_be(pkt.key.dport))) else {
        return REPLY_NONE;
    };
    // SAFETY: a map value; the tag read before and after the fields (volatile) tells a whole
    // slot from one another CPU is writing. Only what the rewrite needs is copied.
    let (client, vip, ports) = unsafe {
        let before = core::ptr::read_volatile(&raw const (*slot).tag);
        let s = &*slot;
        let (client, vip) = (s.client, s.vip);
        let ports = packet::ports(s.vip_port, s.client_port);
        let whole = nat_tag(s) == before
            && s.backend_port == pkt.key.sport
            && s.proto == pkt.key.proto
            && GH_BACKENDS.get(s.backend).is_some_and(|b| b.addr == pkt.key.src);
        let after = core::ptr::read_volatile(&raw const (*slot).tag);
        if before == 0 || before != after || !whole {
            return REPLY_NONE;
        }
        if s.seen != clock.now {
            // A racing write of the same field is harmless.
            core::ptr::write_volatile(&raw mut (*slot).seen, clock.now);
        }
        (client, vip, ports)
    };
    count(COUNTER_NAT_REVERSE);
    if !packet::rewrite(raw, pkt, &vip, &client, ports) {
        count(COUNTER_MALFORMED);
        return xdp_action::XDP_DROP;
    }
    // SAFETY: `out` points to the caller's `Addr` (valid for writes).
    unsafe { out.write(client) };
    REPLY_REWRITTEN
}

/// [`nat_reply`]: not a reply of a full-NAT flow (not an XDP action).
const REPLY_NONE: u32 = u32::MAX;
/// [`nat_reply`]: rewritten, to be sent on to the client (not an XDP action).
const REPLY_REWRITTEN: u32 = u32::MAX - 1;

/// Sends a rewritten packet on its way: straight out of the right interface when the next
/// hop's MAC is known, else through the kernel's stack (which resolves it).
/// `encapsulated`: the packet now has an outer IPIP / IPv6-in-IPv6 header. `hop`: the
/// per-CPU next-hop slot that serves `dst` (the backend's in [`GH_BACKEND_CPU`], the client's in
/// [`GH_CLIENT_HOP`]; null: none), looked up by the caller, where the map is known: a lookup
/// whose map is only known at run time is a real helper call, one the verifier cannot inline.
///
/// The next hop is the kernel FIB's answer (`bpf_fib_lookup`), cached per CPU while the epoch
/// user space bumps on neighbour, route, rule and link changes stays the same: a packet to a
/// known destination costs no FIB lookup.
///
/// Inlined, so a packet whose next hop is cached costs no BPF-to-BPF call (each call and
/// return goes through the kernel's return thunk); [`resolve`] is out of line. `epoch`: the
/// [`Settings::next_hop_epoch`] the caller read (no second settings lookup per packet).
/// `shared`: the slot serves other destinations too (a client's), so it serves this one only
/// if resolved for it. A backend's slot is its id's alone: an id gets another address only
/// in a plan, which changes the epoch, and only after a whole generation without flows
/// (the applier's quarantine), so no packet can have cached the old address meanwhile.
#[inline(always)]
fn forward(
    raw: *mut xdp_md,
    pkt: &Parsed,
    dst: &Addr,
    encapsulated: bool,
    hop: *mut NextHop,
    epoch: u32,
    shared: bool,
) -> u32 {
    let ctx = &Ctx::new(raw);
    let ingress = ctx.ingress_ifindex();
    if pkt.l3 != packet::ETH_HLEN {
        // VLAN-tagged: XDP cannot redirect into a VLAN device; the kernel forwards it.
        count(COUNTER_FIB_PASS);
        return xdp_action::XDP_PASS;
    }
    if epoch != 0 && !hop.is_null() {
        // SAFETY: a per-CPU slot: only this CPU reads or writes it while the program runs.
        let nh = unsafe { &*hop };
        if nh.epoch == epoch && nh.ingress == ingress && (!shared || nh.addr == *dst) {
            if outer_len(pkt, encapsulated) > nh.mtu {
                // What the FIB answers too (FRAG_NEEDED): the kernel sends the ICMP error.
                count(COUNTER_FIB_PASS);
                return xdp_action::XDP_PASS;
            }
            if !packet::set_mac_words(ctx, &nh.macs) {
                return xdp_action::XDP_PASS;
            }
            return out(nh.ifindex, ingress);
        }
    }
    resolve(raw, pkt, dst, encapsulated, hop)
}

/// The length of the IP packet sent (with the outer header, encapsulated).
#[inline(always)]
fn outer_len(pkt: &Parsed, encapsulated: bool) -> u16 {
    match (encapsulated, pkt.v4) {
        (false, _) => pkt.ip_len,
        (true, true) => pkt.ip_len + 20,
        (true, false) => pkt.ip_len + 40,
    }
}

/// [`forward`] of a packet whose next hop is not cached (or stale): asks the kernel's FIB,
/// caches the answer in `hop` and sends.
#[inline(never)]
fn resolve(
    raw: *mut xdp_md,
    pkt: &Parsed,
    dst: &Addr,
    encapsulated: bool,
    hop: *mut NextHop,
) -> u32 {
    let ctx = &Ctx::new(raw);
    // Read once: LLVM must not keep `ctx + offset` in a register (the verifier refuses it).
    let ingress = ctx.ingress_ifindex();
    let proto = match (encapsulated, pkt.v4) {
        (false, _) => pkt.key.proto,
        (true, true) => IPPROTO_IPIP,
        (true, false) => IPPROTO_IPV6,
    };
    let ip_len = outer_len(pkt, encapsulated);
    let epoch = GH_SETTINGS.get(0).map_or(0, |s| s.next_hop_epoch);
    let cached = if epoch == 0 || hop.is_null() { None } else { Some(hop) };
    let v4 = pkt.v4;
    const _: () = assert!(core::mem::size_of::<bpf_fib_lookup>() == 64);
    let mut words = core::mem::MaybeUninit::<[u64; 8]>::uninit();
    // SAFETY: 64 8-aligned bytes, zeroed by `fib_query` before use, are a valid
    // `bpf_fib_lookup` (a plain C struct).
    let fib = unsafe { &mut *(words.as_mut_ptr() as *mut bpf_fib_lookup) };
    // To cache, ask with the largest length first: FRAG_NEEDED then tells the route's MTU.
    let asked = if cached.is_some() { u16::MAX } else { ip_len };
    let mut rc = fib_query(ctx, fib, v4, proto, asked, ingress, dst);
    let mut mtu = u16::MAX;
    if cached.is_some() && rc == BPF_FIB_LKUP_RET_FRAG_NEEDED {
        // SAFETY: the helper wrote the MTU into this union member.
        mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
        rc = fib_query(ctx, fib, v4, proto, 0, ingress, dst);
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        count(COUNTER_FIB_PASS);
        return xdp_action::XDP_PASS;
    }
    if let Some(nh) = cached {
        // SAFETY: per-CPU slot (see above). The epoch is the one read before the lookup, so a
        // change that bumped it meanwhile makes the next packet ask again.
        unsafe {
            (*nh).ingress = ingress;
            (*nh).addr = *dst;
            (*nh).ifindex = fib.ifindex;
            (*nh).mtu = mtu;
            let (d, s) = (fib.dmac, fib.smac);
            (*nh).macs = [
                u32::from_ne_bytes([d[0], d[1], d[2], d[3]]),
                u32::from_ne_bytes([d[4], d[5], s[0], s[1]]),
                u32::from_ne_bytes([s[2], s[3], s[4], s[5]]),
            ];
            (*nh).epoch = epoch;
        }
    }
    if ip_len > mtu {
        count(COUNTER_FIB_PASS);
        return xdp_action::XDP_PASS;
    }
    send(ctx, &fib.dmac, &fib.smac, fib.ifindex, ingress)
}

/// One `bpf_fib_lookup` for `dst`, into `fib` (zeroed first); returns the helper's code.
#[inline(always)]
fn fib_query(
    ctx: &Ctx,
    fib: &mut bpf_fib_lookup,
    v4: bool,
    proto: u8,
    tot_len: u16,
    ingress: u32,
    dst: &Addr,
) -> i64 {
    let words = fib as *mut bpf_fib_lookup as *mut u64;
    let mut i = 0;
    while i < 8 {
        // SAFETY: eight words inside `fib`. Volatile: LLVM would fuse plain stores into a
        // `memset` call, which BPF runs a byte at a time.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    fib.family = if v4 { AF_INET } else { AF_INET6 };
    fib.l4_protocol = proto;
    fib.__bindgen_anon_1.tot_len = tot_len;
    fib.ifindex = ingress;
    if v4 {
        fib.__bindgen_anon_4.ipv4_dst = dst[3];
    } else {
        fib.__bindgen_anon_4.ipv6_dst = *dst;
    }
    // SAFETY: `fib` is a properly sized local struct; the helper writes only into it.
    unsafe { fib_lookup(ctx.raw.cast(), fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) }
}

/// Sets the MACs and sends the frame out of `ifindex` (back out of the ingress: `XDP_TX`).
#[inline(always)]
fn send(ctx: &Ctx, dmac: &[u8; 6], smac: &[u8; 6], ifindex: u32, ingress: u32) -> u32 {
    if !packet::set_macs(ctx, dmac, smac) {
        return xdp_action::XDP_PASS;
    }
    out(ifindex, ingress)
}

/// Out of `ifindex` (back out of the ingress: `XDP_TX`).
#[inline(always)]
fn out(ifindex: u32, ingress: u32) -> u32 {
    if ifindex == ingress {
        xdp_action::XDP_TX
    } else {
        // SAFETY: a plain helper call.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
}

/// IPIP (IPv4) or IPv6-in-IPv6 encapsulation towards the backend (direct server return), of
/// a VLAN-tagged or IPv6 frame (an untagged IPv4 one is encapsulated inline, `to_backend`).
#[inline(never)]
fn encapsulate(raw: *mut xdp_md, pkt: &Parsed, backend: &Backend, settings: &Settings) -> bool {
    let ctx = &Ctx::new(raw);
    let outer: i32 = if pkt.v4 { 20 } else { 40 };
    let l3 = pkt.l3;
    // SAFETY: a plain helper call on this program's own context.
    if unsafe { bpf_xdp_adjust_head(raw, -outer) } != 0 {
        return false;
    }
    // Move the L2 header (with its VLAN tags) to the new start of the frame.
    if !packet::move_l2(ctx, l3, outer as usize) {
        return false;
    }
    if pkt.v4 {
        packet::write_outer_v4(
            ctx,
            l3,
            pkt.ip_len,
            &settings.source_v4,
            &backend.addr,
            IPPROTO_IPIP,
        )
    } else {
        packet::write_outer_v6(
            ctx,
            l3,
            pkt.ip_len,
            &settings.source_v6,
            &backend.addr,
            IPPROTO_IPV6,
        )
    }
}

/// Answers an ARP request for an owned IPv4 address in place.
#[inline(never)]
fn arp_reply(raw: *mut xdp_md, l3: usize) -> u32 {
    let ctx = &Ctx::new(raw);
    let Some(target) = packet::arp_request_target(ctx, l3) else {
        count(COUNTER_MISS);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: read by value right away.
    if unsafe { GH_OWNED.get(&OwnedKey { addr: target }) }.is_none() {
        count(COUNTER_MISS);
        return xdp_action::XDP_PASS;
    }
    let ifindex = ctx.ingress_ifindex();
    // SAFETY: read by value right away.
    let Some(mac) = (unsafe { GH_MACS.get(&ifindex) }).copied() else {
        count(COUNTER_MISS);
        return xdp_action::XDP_PASS;
    };
    if packet::arp_to_reply(ctx, l3, &mac.addr) {
        count(COUNTER_ARP_REPLY);
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

/// Answers a neighbour solicitation for an owned IPv6 address in place.
#[inline(never)]
fn nd_reply(raw: *mut xdp_md, l3: usize) -> u32 {
    let ctx = &Ctx::new(raw);
    let Some(target) = packet::solicit_target(ctx, l3) else {
        count(COUNTER_MISS);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: read by value right away.
    if unsafe { GH_OWNED.get(&OwnedKey { addr: target }) }.is_none() {
        count(COUNTER_MISS);
        return xdp_action::XDP_PASS;
    }
    let ifindex = ctx.ingress_ifindex();
    // SAFETY: read by value right away.
    let Some(mac) = (unsafe { GH_MACS.get(&ifindex) }).copied() else {
        count(COUNTER_MISS);
        return xdp_action::XDP_PASS;
    };
    if packet::solicit_to_advert(ctx, l3, &mac.addr) {
        count(COUNTER_ND_REPLY);
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// Keep `PROTO_UDP` referenced for readers: UDP flows take the same path as TCP.
const _: u8 = PROTO_UDP;
