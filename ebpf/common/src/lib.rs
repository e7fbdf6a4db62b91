//! The contract between the XDP program (`ebpf/xdp`, kernel side) and its loader and map
//! applier (`appliance/xdp`, user side): map names, key and value layouts, action codes and
//! the flow hash both sides must agree on.
//!
//! Every type is `#[repr(C)]`, `Copy`, with explicit padding fields so the kernel and user
//! space see the same bytes. Byte order: addresses and ports are kept exactly as they appear on
//! the wire (network order). IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) in 16-byte
//! fields so one key type serves both families.
#![no_std]

#[cfg(feature = "user")]
mod pod;

/// VIP table: [`VipKey`] → [`VipValue`] (hash map).
pub const MAP_VIPS: &str = "GH_VIPS";
/// Backends: backend id (`u32`) → [`Backend`] (array).
pub const MAP_BACKENDS: &str = "GH_BACKENDS";
/// Maglev lookup tables of every VIP, two halves per VIP: backend ids (`u16`) packed
/// [`RING_CHUNK`] to an array element ([`RingChunk`]). A half starts at a multiple of
/// [`ring_stride`] entries; entry `e` is `ids[e % RING_CHUNK]` of element `e / RING_CHUNK`.
pub const MAP_RING: &str = "GH_RING";

/// Maglev entries per [`RingChunk`].
pub const RING_CHUNK: u32 = 32;

/// [`RING_CHUNK`] backend ids of a Maglev table (64 bytes, a cache line's size). Packed: an array
/// element takes at least 8 bytes, so one `u32` id per element took 8 bytes a slot, four
/// times this.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingChunk {
    pub ids: [u16; RING_CHUNK as usize],
}

impl Default for RingChunk {
    fn default() -> Self {
        RingChunk { ids: [0; RING_CHUNK as usize] }
    }
}

/// Entries from one Maglev half to the next: the table length rounded up to whole chunks.
pub const fn ring_stride(ring_size: u32) -> u32 {
    ring_size.div_ceil(RING_CHUNK) * RING_CHUNK
}

/// Elements of [`MAP_RING`] for `max_vips` VIPs of two halves each.
pub const fn ring_chunks(max_vips: u32, ring_size: u32) -> u32 {
    max_vips.saturating_mul(2).saturating_mul(ring_stride(ring_size) / RING_CHUNK)
}

/// Backend ids are `u16` in the Maglev tables: at most this many backends.
pub const MAX_BACKEND_IDS: u32 = 65_536;
/// Connection table: a set-associative array of [`FlowBucket`]s, the bucket of a flow at
/// [`flow_bucket`] of its [`flow_hash`] (see [`FlowSlot`]).
pub const MAP_FLOWS: &str = "GH_FLOWS";
/// Index 0: the connection table's [`FlowClock`] (array of one), written by user space.
pub const MAP_FLOW_CLOCK: &str = "GH_FLOW_CLOCK";
/// Full-NAT reverse path: an array of [`NatSlot`]s indexed by [`nat_index`] of a backend's
/// reply (the NAT source port the program chose, in the lane of the backend).
pub const MAP_NAT: &str = "GH_NAT";
/// Index 0: the [`Settings`] (array of one).
pub const MAP_SETTINGS: &str = "GH_SETTINGS";
/// Addresses this appliance answers ARP/NDP for: [`OwnedKey`] → `u32` (reserved, 0) (hash).
pub const MAP_OWNED: &str = "GH_OWNED";
/// Interface MAC addresses: ifindex (`u32`) → [`Mac`] (hash).
pub const MAP_MACS: &str = "GH_MACS";
/// Per-source drop list: LPM trie of [`Addr`] (IPv4 as `::ffff:0:0/96` + prefix) → `u32`.
pub const MAP_DROP: &str = "GH_DROP";
/// Per-CPU [`VipStats`] by VIP index.
pub const MAP_VIP_STATS: &str = "GH_VIP_STATS";
/// Per-CPU [`BackendCpu`] by backend id: the backend's counters and its cached next hop.
pub const MAP_BACKEND_CPU: &str = "GH_BACKEND_CPU";
/// Per-CPU global counters (`u64`) indexed by the `COUNTER_*` constants.
pub const MAP_COUNTERS: &str = "GH_COUNTERS";
/// Per-CPU [`SynWindow`] by VIP index: the SYN-flood guard's state.
pub const MAP_SYN: &str = "GH_SYN";
/// Index 0: the [`GenFrame`] the benchmark generator sends (array of one).
pub const MAP_GEN_FRAME: &str = "GH_GEN_FRAME";
/// By VIP index: the generation of the VIP's shape (`u32`, array), see [`FlowValue::vip_gen`].
pub const MAP_VIP_GEN: &str = "GH_VIP_GEN";
/// Per-CPU [`NextHop`] of clients (the full-NAT reverse path), direct-mapped by
/// [`client_hop_slot`]; an entry serves only the address it holds.
pub const MAP_CLIENT_HOP: &str = "GH_CLIENT_HOP";
/// Slots of [`MAP_CLIENT_HOP`] per CPU.
pub const CLIENT_HOP_SLOTS: u32 = 4096;

/// The [`MAP_CLIENT_HOP`] slot of a client address.
#[inline(always)]
pub fn client_hop_slot(addr: &Addr) -> u32 {
    (addr[0] ^ addr[1] ^ addr[2] ^ addr[3]).wrapping_mul(0x85eb_ca6b) >> 20
}

/// Benchmark counters of the new-flow twin (`u64`, array): index 0 is the run counter that
/// makes every run a new flow, 1 + action counts the actions returned.
pub const MAP_BENCH: &str = "GH_BENCH";

/// The XDP program that is attached to interfaces.
pub const PROGRAM_NAME: &str = "gatehouse_xdp";
/// A test-only variant that restores the frame after each run, so `BPF_PROG_TEST_RUN` with
/// `repeat > 1` sees the original packet every time (benchmarks).
pub const BENCH_PROGRAM_NAME: &str = "gatehouse_xdp_bench";
/// A test-only variant that gives every run a new flow (its source address and port come from
/// a run counter) and restores the frame after it: new flows with `repeat > 1`.
pub const BENCH_NEW_FLOW_PROGRAM_NAME: &str = "gatehouse_xdp_bench_new";
/// A program that only returns `XDP_PASS`: the benchmark harness's floor.
pub const FLOOR_PROGRAM_NAME: &str = "gatehouse_xdp_floor";
/// A program that only returns `XDP_TX`: with live-frames `BPF_PROG_TEST_RUN`, a traffic
/// generator (benchmarks).
pub const GENERATOR_PROGRAM_NAME: &str = "gatehouse_xdp_tx";

/// Default sizes; the loader overrides them from `[xdp]` settings before loading.
pub const DEFAULT_MAX_VIPS: u32 = 256;
pub const DEFAULT_MAX_BACKENDS: u32 = 4096;
pub const DEFAULT_RING_SIZE: u32 = 16_381;
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;
pub const MAX_OWNED: u32 = 4096;
pub const MAX_DROP: u32 = 65_536;

/// An IP address, IPv4 mapped into `::ffff:0:0/96`, as four 32-bit words whose memory bytes
/// are the wire bytes (network order; each word is a native-endian read of four wire bytes).
/// Words rather than bytes keep the structs 4-aligned, so BPF copies and compares them a word
/// at a time.
pub type Addr = [u32; 4];

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Hand the packet to the local stack (an L7 listener of the proxy).
pub const ACTION_PASS: u8 = 1;
/// Balance over the VIP's Maglev table and forward.
pub const ACTION_BALANCE: u8 = 2;

/// [`VipValue::flags`]: forward by IPIP (IPv6-in-IPv6 for IPv6) encapsulation (DSR) instead
/// of full NAT.
pub const VIP_FLAG_IPIP: u8 = 1;

/// Key of the VIP table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    /// VIP address, network order, IPv4-mapped.
    pub addr: Addr,
    /// Destination port, network order.
    pub port: u16,
    /// IP protocol number ([`PROTO_TCP`] or [`PROTO_UDP`]).
    pub proto: u8,
    pub _pad: u8,
}

/// What to do with packets for a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipValue {
    /// [`ACTION_PASS`] or [`ACTION_BALANCE`].
    pub action: u8,
    /// `VIP_FLAG_*` bits.
    pub flags: u8,
    pub _pad: u16,
    /// Index into the per-VIP counters and SYN guard (host order).
    pub index: u32,
    /// First entry of this VIP's live Maglev table in [`MAP_RING`] (a multiple of
    /// [`RING_CHUNK`], host order).
    pub ring_offset: u32,
    /// Length of the Maglev table, a prime (host order); 0 for PASS.
    pub ring_size: u32,
    /// New TCP connections (SYNs without ACK) allowed per second per CPU; 0 = no limit.
    pub syn_limit: u32,
    /// The generation of this VIP's shape (action, flags, whether its table is empty),
    /// also in [`MAP_VIP_GEN`] at `index` (host order; never 0).
    pub shape_gen: u32,
}

/// The VIP index: an array of [`VipEntry`]s ([`vip_index_slots`] of them, a power of two),
/// each VIP in one of the [`VIP_PROBES`] slots from [`vip_slot`] of its key. The program
/// looks a new flow's VIP up here first (an array: no helper call); [`MAP_VIPS`] stays the
/// table of record, asked when no probed slot holds the key whole (not indexed, or being
/// rewritten).
pub const MAP_VIP_INDEX: &str = "GH_VIP_INDEX";
/// Slots of the VIP index the program probes for a key.
pub const VIP_PROBES: u32 = 2;

/// Slots of the VIP index for `max_vips` VIPs: a power of two, four per VIP, at least four.
pub const fn vip_index_slots(max_vips: u32) -> u32 {
    let slots = max_vips.saturating_mul(4);
    if slots <= 4 { 4 } else { slots.next_power_of_two() }
}

/// The first VIP index slot (before masking) of a VIP key.
#[inline(always)]
pub fn vip_slot(addr: &Addr, port: u16, proto: u8) -> u32 {
    finish(addr[0] ^ addr[1] ^ addr[2] ^ addr[3] ^ (u32::from(port) << 8) ^ u32::from(proto))
}

/// One slot of the VIP index: a copy of a [`MAP_VIPS`] entry and its tag ([`vip_tag`]; 0:
/// empty). User space writes a slot whole; a reader takes it only when the tag read before
/// and after the key and value equals [`vip_tag`] of what it read, else it asks [`MAP_VIPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipEntry {
    pub key: VipKey,
    pub value: VipValue,
    pub tag: u32,
}

/// The tag of a VIP index slot holding `value` for the key (`addr`, `port`, `proto`); never 0.
#[inline(always)]
pub fn vip_tag(addr: &Addr, port: u16, proto: u8, value: &VipValue) -> u32 {
    let mut h = mix64(SEED ^ u64::from(proto), pair(addr[0], addr[1]));
    h = mix64(h, pair(addr[2], addr[3]));
    let head = u32::from(value.action) | (u32::from(value.flags) << 8) | (u32::from(port) << 16);
    h = mix64(h, pair(head, value.index));
    h = mix64(h, pair(value.ring_offset, value.ring_size));
    h = mix64(h, pair(value.syn_limit, value.shape_gen));
    (h as u32) | 1
}

/// A real server behind a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Address, network order, IPv4-mapped for IPv4.
    pub addr: Addr,
    /// Port, network order.
    pub port: u16,
    /// 1 while the backend is in some VIP's table; flows pinned to a dead backend are rebalanced.
    pub live: u8,
    pub _pad: u8,
}

/// A flow's 5-tuple as received. 8-aligned, with its padding in named fields (kept 0): the
/// program compares and copies a key as five 64-bit words ([`FlowKey::words`]).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address, network order, IPv4-mapped.
    pub src: Addr,
    /// Destination address, network order, IPv4-mapped.
    pub dst: Addr,
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    pub proto: u8,
    // Two fields rather than `[u8; 3]`: BPF's LLVM turns odd byte arrays into memset calls.
    pub _pad: u8,
    pub _pad2: u16,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key as five 64-bit words (memory order): the source address, the destination
    /// address, then the ports, protocol and padding.
    #[inline(always)]
    #[allow(unsafe_code, reason = "a reinterpretation of a plain 40-byte struct")]
    pub fn words(&self) -> &[u64; 5] {
        // SAFETY: `FlowKey` is `repr(C, align(8))`, 40 bytes with no implicit padding (its
        // padding is in named fields), so it is valid to read as five aligned `u64`s.
        unsafe { &*(self as *const FlowKey as *const [u64; 5]) }
    }
}

/// Where an established flow goes, and enough of its VIP that a packet of the flow needs no
/// VIP lookup: while `vip_gen` is [`MAP_VIP_GEN`]`[vip_index]`, the VIP is there with the same
/// shape (the applier gives a VIP a new generation when it is created, removed, or changes its
/// action, forwarding or emptiness; not when its backends change, so flows stay pinned).
/// 8-aligned, 16 bytes with no implicit padding: [`flow_tag`] reads it as two words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// Backend id (host order).
    pub backend: u32,
    /// Source port chosen for full NAT, network order (0 for IPIP).
    pub snat_port: u16,
    /// The VIP's `VIP_FLAG_*` bits.
    pub flags: u8,
    pub _pad: u8,
    /// The VIP's index (host order).
    pub vip_index: u32,
    /// The VIP's generation when the flow was pinned (host order).
    pub vip_gen: u32,
}

const _: () = assert!(core::mem::size_of::<FlowValue>() == 16);

impl FlowValue {
    /// The value as two 64-bit words (memory order).
    #[inline(always)]
    #[allow(unsafe_code, reason = "a reinterpretation of a plain 16-byte struct")]
    pub fn words(&self) -> &[u64; 2] {
        // SAFETY: `FlowValue` is `repr(C, align(8))`, 16 bytes with no implicit padding (its
        // padding is a named field), so it is valid to read as two aligned `u64`s.
        unsafe { &*(self as *const FlowValue as *const [u64; 2]) }
    }
}

/// Slots per [`FlowBucket`] of the connection table.
pub const FLOW_WAYS: usize = 4;

/// One flow of the connection table: its key, where it goes, when it was last seen and a tag
/// that makes a slot half-written by another CPU recognisable. A reader takes the slot only if
/// the tag it read before the key and value equals the one it reads after them and equals
/// [`flow_tag`] of the flow's hash and the value; a writer zeroes the tag first and writes it
/// last (64 bytes, a cache line's size; in the kernel's array it straddles two lines).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowSlot {
    pub key: FlowKey,
    pub value: FlowValue,
    /// [`FlowClock::now`] when a packet of the flow was last seen (host order).
    pub seen: u32,
    /// [`flow_tag`] of the flow; 0: empty or being written.
    pub tag: u32,
}

/// A bucket of the connection table: a new flow takes the slot of its own key if there is
/// one, else an empty one, else the one seen longest ago (LRU within the bucket).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowBucket {
    pub slots: [FlowSlot; FLOW_WAYS],
}

/// The connection table's clock and size, written by user space (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowClock {
    /// Seconds since the program was loaded, plus one (0 marks a slot never seen).
    pub now: u32,
    /// Buckets − 1 (the number of buckets is a power of two).
    pub mask: u32,
    /// Lanes of the reverse table − 1 ([`nat_lanes`]).
    pub nat_mask: u32,
    /// NAT source ports handed out: `NAT_PORT_BASE..NAT_PORT_BASE + nat_ports`.
    pub nat_ports: u32,
    /// Possible CPUs (host order).
    pub cpus: u32,
    /// Slots of the VIP index − 1 ([`vip_index_slots`]).
    pub vip_mask: u32,
    /// `nat_ports / cpus`: how far apart the CPUs' NAT cursors start (a division made here,
    /// once, not per new flow).
    pub nat_share: u32,
}

/// Lanes of the full-NAT reverse table for a connection table of `max_flows` slots: 65,536
/// slots (one per port) each, twice as many as the connection table has slots (so the port a
/// CPU's cursor comes back to is almost always free again), at least one.
pub const fn nat_lanes(max_flows: u32) -> u32 {
    let slots = flow_buckets(max_flows).saturating_mul(2 * FLOW_WAYS as u32);
    if slots <= 65_536 { 1 } else { slots / 65_536 }
}

/// The lane of the reverse table that a backend's NAT ports are in.
#[inline(always)]
pub fn nat_lane(backend: &Addr, backend_port: u16, nat_mask: u32) -> u32 {
    finish(backend[0] ^ backend[1] ^ backend[2] ^ backend[3] ^ u32::from(backend_port)) & nat_mask
}

/// The [`MAP_NAT`] index of a NAT source port (host order) in a lane.
#[inline(always)]
pub fn nat_index(lane: u32, port: u16) -> u32 {
    (lane << 16) | u32::from(port)
}

/// Per-CPU cursors of the NAT port allocator, by lane (`u32`, per-CPU array).
pub const MAP_NAT_CURSOR: &str = "GH_NAT_CURSOR";
/// Lanes of the reverse table the program's maps are declared with (user space sizes them).
pub const DEFAULT_NAT_LANES: u32 = nat_lanes(DEFAULT_MAX_FLOWS);

/// A backend's reply to a NAT source port must come within this many seconds of the last
/// one (or of the flow's start) for the port to stay its flow's once the flow's connection-table
/// slot is gone; after that (or when no reply ever came) another flow may take it.
pub const NAT_QUIET_SECS: u32 = 60;

/// The reverse mapping of one full-NAT flow (64 bytes, like a [`FlowSlot`]). `owner` and
/// `owner_tag` name the connection-table slot of the flow: while that slot still carries the
/// tag, the port is taken. Written only by the CPU that claimed it (`claim`, see
/// [`nat_claimed`]); read like a [`FlowSlot`] (tag zeroed first, written last; a reader
/// compares the tag before and after and with [`nat_tag`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatSlot {
    /// The client's address, network order, IPv4-mapped.
    pub client: Addr,
    /// The VIP, network order, IPv4-mapped.
    pub vip: Addr,
    /// The backend id (host order).
    pub backend: u32,
    /// The backend's port, network order.
    pub backend_port: u16,
    /// The client's port, network order.
    pub client_port: u16,
    /// The VIP's port, network order.
    pub vip_port: u16,
    pub proto: u8,
    pub _pad: u8,
    /// The flow's connection-table slot: bucket × [`FLOW_WAYS`] + way (host order).
    pub owner: u32,
    /// The [`flow_tag`] that slot carries while it holds the flow.
    pub owner_tag: u32,
    /// [`FlowClock::now`] of the last reply; 0: none yet.
    pub seen: u32,
    /// [`nat_tag`] of the fields above; 0: empty or being written.
    pub tag: u32,
    /// Who may write the slot: a count of claims, odd while the claiming CPU writes it. A
    /// CPU that judged the slot free takes it with one compare-and-swap from the even value
    /// it read before judging to that value + 1, and stores + 2 when the slot is written.
    pub claim: u32,
}

/// Whether a [`NatSlot::claim`] value says a CPU is writing the slot now.
#[inline(always)]
pub const fn nat_claimed(claim: u32) -> bool {
    claim & 1 == 1
}

/// The tag of a [`NatSlot`]: covers every field a reply is rewritten with; never 0.
#[inline(always)]
pub fn nat_tag(s: &NatSlot) -> u32 {
    let client = s.client[0] ^ s.client[1] ^ s.client[2] ^ s.client[3];
    let vip = s.vip[0] ^ s.vip[1] ^ s.vip[2] ^ s.vip[3];
    let mut h = mix64(SEED, pair(s.owner_tag, s.owner));
    h = mix64(h, pair(client, vip));
    h = mix64(h, pair(u32::from(s.client_port) | (u32::from(s.vip_port) << 16), s.backend));
    h = mix64(h, u64::from(s.backend_port) | (u64::from(s.proto) << 16));
    (h as u32) | 1
}

/// Buckets of a connection table of `max_flows` slots: a power of two, at least one.
pub const fn flow_buckets(max_flows: u32) -> u32 {
    let b = max_flows / FLOW_WAYS as u32;
    if b <= 1 { 1 } else { b.next_power_of_two() }
}

/// The bucket index (before masking) of a flow hash: its high bits first, so flows of one bucket
/// do not share the bits their Maglev slot comes from ([`ring_slot`]).
#[inline(always)]
pub fn flow_bucket(hash: u32) -> u32 {
    hash.rotate_left(16)
}

/// The slot of a VIP's Maglev table (of `len` entries) a flow of hash `hash` takes: the hash
/// scaled to the table by a multiply and a shift (uniform to within `len` / 2^32), not taken
/// modulo `len` (a division, the dearest instruction of a new flow). Scaled is the hash as the
/// bucket index takes it, whose upper half (the hash's lower) the bucket index does not use.
#[inline(always)]
pub fn ring_slot(hash: u32, len: u32) -> u32 {
    ((u64::from(flow_bucket(hash)) * u64::from(len)) >> 32) as u32
}

/// The tag of a slot holding `value` for a flow of hash `hash`; never 0. The value's two
/// words and the hash are multiplied side by side (see [`flow_hash`]), the products' xor's
/// halves folded: a change in any field changes the tag but for a chance of about 2^-31.
#[inline(always)]
pub fn flow_tag(hash: u32, value: &FlowValue) -> u32 {
    let v = value.words();
    let h = (v[0] ^ SEED).wrapping_mul(M1)
        ^ (v[1] ^ SEED).wrapping_mul(M2)
        ^ u64::from(hash).wrapping_mul(M3);
    ((h >> 32) ^ h) as u32 | 1
}

/// Program-wide settings (index 0 of [`MAP_SETTINGS`]); the program reads them first, for
/// every frame (an array lookup the verifier inlines: no helper call).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Source address for full NAT and IPIP outer headers to IPv4 backends, IPv4-mapped.
    pub source_v4: Addr,
    /// Source address for full NAT and outer headers to IPv6 backends.
    pub source_v6: Addr,
    /// The generation the applier last finished writing (host order).
    pub generation: u64,
    /// Entries in the drop list; 0 skips its lookup (host order).
    pub drop_entries: u32,
    /// Cached next hops ([`BackendCpu::next_hop`]) resolved at another epoch are stale. User space
    /// bumps it when the kernel's neighbours, routes or links change and on every plan
    /// (host order; never 0, which marks a slot never resolved).
    pub next_hop_epoch: u32,
    /// A Bloom-like filter of the destination addresses the program handles (every VIP
    /// address and the NAT sources): bit [`filter_slot`] of an address. A frame whose bit is
    /// clear is none of the program's business and passes before any hash-map lookup.
    pub filter: [u64; FILTER_WORDS],
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            source_v4: [0; 4],
            source_v6: [0; 4],
            generation: 0,
            drop_entries: 0,
            next_hop_epoch: 0,
            filter: [0; FILTER_WORDS],
        }
    }
}

/// Words of [`Settings::filter`] (4096 bits).
pub const FILTER_WORDS: usize = 64;

/// The bit of [`Settings::filter`] that stands for an address.
#[inline(always)]
pub fn filter_slot(addr: &Addr) -> u32 {
    (addr[0] ^ addr[1] ^ addr[2] ^ addr[3]).wrapping_mul(0x9e37_79b1) >> 20
}

/// Whether an address's bit is set in a filter.
#[inline(always)]
pub fn filter_has(filter: &[u64; FILTER_WORDS], addr: &Addr) -> bool {
    let slot = filter_slot(addr);
    (filter[(slot >> 6) as usize & (FILTER_WORDS - 1)] >> (slot & 63)) & 1 != 0
}

/// Sets an address's bit in a filter.
#[inline(always)]
pub fn filter_add(filter: &mut [u64; FILTER_WORDS], addr: &Addr) {
    let slot = filter_slot(addr);
    filter[(slot >> 6) as usize & (FILTER_WORDS - 1)] |= 1 << (slot & 63);
}

/// The kernel FIB's answer for one destination, cached per CPU (for backends by id in
/// [`MAP_BACKEND_CPU`], for clients by [`client_hop_slot`] in [`MAP_CLIENT_HOP`]) so a packet to a
/// known destination costs no `bpf_fib_lookup`. Valid only while `epoch` is
/// [`Settings::next_hop_epoch`], for the ingress interface it was resolved from and for `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// The epoch it was resolved at; 0: never.
    pub epoch: u32,
    /// The ingress interface the lookup was made for.
    pub ingress: u32,
    /// The egress interface.
    pub ifindex: u32,
    /// The route's MTU: longer packets go to the kernel (as the FIB would answer).
    pub mtu: u16,
    pub _pad: u16,
    /// The Ethernet header's first 12 bytes: the next hop's MAC, then the egress interface's,
    /// as words (8-aligned at offset 16) so the program copies them in two stores.
    pub macs: [u32; 3],
    /// The destination it was resolved for (IPv4-mapped, wire order).
    pub addr: Addr,
}

/// Key of the owned-address table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct OwnedKey {
    /// Address, network order, IPv4-mapped.
    pub addr: Addr,
}

/// An interface's MAC address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Mac {
    pub addr: [u8; 6],
    pub _pad: [u8; 2],
}

/// Per-VIP counters (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipStats {
    pub packets: u64,
    pub bytes: u64,
    /// Flows that were not in the connection table.
    pub new_flows: u64,
    /// SYNs dropped by the SYN-flood guard.
    pub syn_drops: u64,
}

/// Per-backend counters (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
}

/// What one CPU keeps for one backend ([`MAP_BACKEND_CPU`]): its cached next hop and its
/// counters, in one 64-byte value, so a forwarded packet finds both with one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendCpu {
    /// The kernel FIB's answer for the backend (see [`NextHop`]).
    pub next_hop: NextHop,
    pub _pad: u32,
    pub stats: BackendStats,
}

const _: () = assert!(core::mem::size_of::<BackendCpu>() == 64);

/// SYN-flood guard state of one VIP on one CPU (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynWindow {
    /// Start of the current one-second window, `bpf_ktime_get_ns`.
    pub start_ns: u64,
    /// SYNs seen in it.
    pub count: u64,
}

/// The first 60 bytes of the frame the generator program writes before every `XDP_TX`
/// (live-frames `BPF_PROG_TEST_RUN` reuses pages that the receivers rewrote), as wire bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GenFrame {
    pub words: [u64; 8],
}

/// Bytes of a [`GenFrame`] written into the packet.
pub const GEN_FRAME_LEN: usize = 60;

/// Packets not for us (no VIP, not owned ARP/NDP): passed untouched.
pub const COUNTER_MISS: u32 = 0;
/// Dropped by the per-source drop list.
pub const COUNTER_DROP_LIST: u32 = 1;
/// Headers truncated or inconsistent: passed untouched for the kernel to judge.
pub const COUNTER_MALFORMED: u32 = 2;
/// IP fragments: passed untouched (the kernel reassembles).
pub const COUNTER_FRAGMENT: u32 = 3;
/// ARP replies sent.
pub const COUNTER_ARP_REPLY: u32 = 4;
/// NDP neighbour advertisements sent.
pub const COUNTER_ND_REPLY: u32 = 5;
/// Backend replies rewritten on the full-NAT reverse path.
pub const COUNTER_NAT_REVERSE: u32 = 6;
/// Packets dropped because no NAT source port was free or the VIP had no live backend.
pub const COUNTER_NO_BACKEND: u32 = 7;
/// Forwarded by the kernel stack after the rewrite (no FIB/neighbour entry yet).
pub const COUNTER_FIB_PASS: u32 = 8;
/// Passed to the local stack for an L7 VIP.
pub const COUNTER_VIP_PASS: u32 = 9;
/// Number of global counters.
pub const COUNTERS: u32 = 10;

/// The flow hash used to index Maglev tables and choose NAT source ports. Both sides use this
/// exact function: the XDP program to forward, the user side's reference model to check it.
/// Inputs are the raw wire-order values as stored in [`FlowKey`].
///
/// The key's words are multiplied each by its own odd constant, side by side (no product
/// waits for another: every packet's connection-table lookup waits for this hash), then
/// folded, multiplied once more and the upper half taken: every input bit reaches every
/// output bit. The words: the source address (its first half only when not zero: an
/// IPv4-mapped address's is), and the VIP's last word with the ports and protocol. The
/// destination is the VIP, the same for every flow of a VIP: only its last word (which differs
/// between VIPs) is mixed in.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let w = key.words();
    let mut h = (w[1] ^ SEED).wrapping_mul(M1) ^ ((w[3] & !LOW_HALF) ^ w[4]).wrapping_mul(M2);
    if w[0] != 0 {
        h ^= (w[0] ^ SEED).wrapping_mul(M3);
    }
    h ^= h >> 29;
    (h.wrapping_mul(M1) >> 32) as u32
}

/// A third multiplier, for [`flow_hash`] (odd, from murmur3's 64-bit finaliser).
const M3: u64 = 0xff51_afd7_ed55_8ccd;

/// The lower 32 bits of a word.
const LOW_HALF: u64 = 0xffff_ffff;

/// An odd constant with well-spread bits (the golden ratio's, 64 bits).
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Multipliers of [`mix64`], [`flow_hash`] and [`flow_tag`] (from splitmix64's finaliser).
const M1: u64 = 0xbf58_476d_1ce4_e5b9;
const M2: u64 = 0x94d0_49bb_1331_11eb;

/// Two words as one (`hi` in the upper half).
#[inline(always)]
fn pair(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// One round of a 64-bit multiply-xorshift mixer: `k` folded into `h`.
#[inline(always)]
fn mix64(h: u64, k: u64) -> u64 {
    let h = (h ^ k).wrapping_mul(M1);
    h ^ (h >> 32)
}

/// murmur3's finaliser: every input bit affects every output bit.
#[inline(always)]
pub fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// NAT source ports are chosen from `NAT_PORT_BASE..=65535`.
pub const NAT_PORT_BASE: u32 = 1024;
/// NAT source ports: `NAT_PORT_BASE..=65535`.
pub const NAT_PORTS: u32 = 65_536 - NAT_PORT_BASE;
/// How many source ports the program tries for a new full-NAT flow before giving up.
pub const NAT_PORT_TRIES: u32 = 16;

/// The third word of every IPv4-mapped address (`0000:ffff`).
pub const MAPPED_V4_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The IPv4-mapped form of an IPv4 address given as its wire word.
#[inline(always)]
pub const fn mapped_v4_word(word: u32) -> Addr {
    [0, 0, MAPPED_V4_WORD, word]
}

/// The IPv4-mapped form of an IPv4 address given in network order bytes.
#[inline(always)]
pub const fn mapped_v4(octets: [u8; 4]) -> Addr {
    mapped_v4_word(u32::from_ne_bytes(octets))
}

/// An address from its 16 wire bytes.
#[inline(always)]
pub const fn addr_from_octets(o: [u8; 16]) -> Addr {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The 16 wire bytes of an address.
#[inline(always)]
pub const fn addr_octets(a: &Addr) -> [u8; 16] {
    let (w0, w1, w2, w3) =
        (a[0].to_ne_bytes(), a[1].to_ne_bytes(), a[2].to_ne_bytes(), a[3].to_ne_bytes());
    [
        w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3], w2[0], w2[1], w2[2], w2[3], w3[0],
        w3[1], w3[2], w3[3],
    ]
}

/// Whether a stored address is IPv4-mapped.
#[inline(always)]
pub fn is_mapped_v4(addr: &Addr) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == MAPPED_V4_WORD
}
