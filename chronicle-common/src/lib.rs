//! Wire types shared by the eBPF programs (`chronicle-ebpf`) and user space
//! (`chronicle-agent`): the event layout written to the ring buffer, capture plans
//! (the bounded fetch-op lists a probe executes), map names and sizes.
//!
//! Everything here is `#[repr(C)]`, `Copy` and fixed-size, with explicit padding, so
//! both sides agree byte for byte. Sizes are pinned by `const` assertions.

#![no_std]

use core::mem::size_of;

/// Name of the ring buffer map carrying [`EventHeader`]-prefixed events.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the hash map from probe id (the attach cookie) to its [`CapturePlan`].
pub const PLANS_MAP: &str = "PLANS";
/// Name of the per-CPU array of [`Counters`], one entry per probe id.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the hash map of traced process ids (tgid → 1), used to report thread exits.
pub const TRACED_PIDS_MAP: &str = "TRACED_PIDS";
/// Name of the one-entry array holding [`RingConfig`].
pub const RING_CONFIG_MAP: &str = "RING_CONFIG";

/// Maximum number of probes (entry and return count separately) one agent attaches.
pub const MAX_PROBES: u32 = 4096;
/// Maximum fetch operations in one capture plan.
pub const MAX_FETCH_OPS: usize = 8;
/// Event size classes. The verifier needs each fetch's destination and length bounded
/// separately, so a class with payload buffer `2 * N` accepts ops with `dst < N` and
/// `len <= N`. Plans pick the smallest class that fits; plans without ops send headers only.
pub mod class {
    /// Header only: no fetch ops.
    pub const HEADER: u8 = 0;
    /// [`super::SMALL_SLOT`]-bounded ops.
    pub const SMALL: u8 = 1;
    /// [`super::LARGE_SLOT`]-bounded ops.
    pub const LARGE: u8 = 2;
}
/// Bound on `dst` and on `len` of every op in a [`class::SMALL`] plan (a power of two).
pub const SMALL_SLOT: usize = 512;
/// Bound on `dst` and on `len` of every op in a [`class::LARGE`] plan (a power of two).
pub const LARGE_SLOT: usize = 4096;
/// Integer-class argument registers in the SysV x86-64 ABI.
pub const ARG_REGS: usize = 6;

/// What an event reports.
pub mod event_kind {
    /// A probed function was entered.
    pub const ENTRY: u32 = 1;
    /// A probed function returned normally.
    pub const RETURN: u32 = 2;
    /// A thread of a traced process exited: calls still open on it never return.
    pub const THREAD_EXIT: u32 = 3;
}

/// Registers a fetch op can name, in `pt_regs` terms (x86-64).
pub mod reg {
    pub const RDI: u8 = 0;
    pub const RSI: u8 = 1;
    pub const RDX: u8 = 2;
    pub const RCX: u8 = 3;
    pub const R8: u8 = 4;
    pub const R9: u8 = 5;
    pub const RAX: u8 = 6;
    pub const RSP: u8 = 7;
    pub const RBP: u8 = 8;
    /// Number of register ids.
    pub const COUNT: u8 = 9;
}

/// Kinds of fetch op.
pub mod op_kind {
    /// Read a NUL-terminated string at `reg + offset`, at most `len` bytes including the NUL.
    pub const C_STRING: u8 = 1;
    /// Read exactly `len` bytes at `reg + offset`.
    pub const MEMORY: u8 = 2;
}

/// One step of a capture plan: read memory the target can see, address taken from a register.
///
/// The result lands in the event payload at `dst`; its length (or a negative errno) in
/// [`EventHeader::fetch_len`] at the op's index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchOp {
    /// One of [`op_kind`]; 0 ends the plan.
    pub kind: u8,
    /// One of [`reg`]: the register holding the base address.
    pub reg: u8,
    pub _pad0: u16,
    /// Maximum bytes to read (at most the plan class's slot).
    pub len: u16,
    /// Offset of the result in the payload (below the plan class's slot).
    pub dst: u16,
    /// Added to the register's value to form the address.
    pub offset: i64,
}
const _: () = assert!(size_of::<FetchOp>() == 16);

/// Everything a probe does beyond the fixed header: a bounded list of fetch ops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapturePlan {
    /// Number of valid entries in `ops`.
    pub n_ops: u8,
    /// One of [`class`].
    pub class: u8,
    pub _pad0: u16,
    /// Bytes of payload the plan may fill (`max(dst + len)`).
    pub payload_len: u32,
    pub ops: [FetchOp; MAX_FETCH_OPS],
}
const _: () = assert!(size_of::<CapturePlan>() == 8 + 16 * MAX_FETCH_OPS);

/// Fixed part of every event.
///
/// Entry events carry the six integer argument registers in `regs`; return events carry
/// `rax` and `rdx` in `regs[0]` and `regs[1]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`event_kind`].
    pub kind: u32,
    /// The attach cookie of the probe that fired.
    pub probe_id: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` when the probe fired (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// Stack pointer when the probe fired: identifies the frame for pairing.
    pub sp: u64,
    /// Instruction pointer when the probe fired.
    pub ip: u64,
    pub regs: [u64; ARG_REGS],
    /// Per fetch op: bytes read, or a negative errno when the read failed.
    pub fetch_len: [i16; MAX_FETCH_OPS],
    /// Bytes of payload that follow this header (0 or the plan's `payload_len`).
    pub payload_len: u32,
    pub _pad0: u32,
}
const _: () = assert!(size_of::<EventHeader>() == 112);

/// Event of a [`class::SMALL`] plan.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SmallEvent {
    pub header: EventHeader,
    pub payload: [u8; 2 * SMALL_SLOT],
}
const _: () = assert!(size_of::<SmallEvent>() == size_of::<EventHeader>() + 2 * SMALL_SLOT);

/// Event of a [`class::LARGE`] plan.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LargeEvent {
    pub header: EventHeader,
    pub payload: [u8; 2 * LARGE_SLOT],
}
const _: () = assert!(size_of::<LargeEvent>() == size_of::<EventHeader>() + 2 * LARGE_SLOT);

/// Per-probe, per-CPU counts of everything that happened in the kernel, lost or not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Times the probe fired for a traced process.
    pub hits: u64,
    /// Events written to the ring buffer.
    pub emitted: u64,
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Probe ids with no capture plan (should never happen).
    pub no_plan: u64,
    /// Fetch ops that failed (unmapped or paged-out memory); the value is marked, not lost.
    pub fetch_errors: u64,
}
const _: () = assert!(size_of::<Counters>() == 40);

/// Ring buffer wake-up policy (one-entry array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingConfig {
    /// Submit without waking the reader until this many bytes are pending; the reader also
    /// drains on a timer, so nothing waits longer than that.
    pub wakeup_bytes: u64,
}
const _: () = assert!(size_of::<RingConfig>() == 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are `#[repr(C)]`, `Copy`, made only of integers and arrays of
    // integers, with explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::FetchOp {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CapturePlan {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RingConfig {}
}
