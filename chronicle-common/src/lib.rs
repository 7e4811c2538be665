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

/// Name of the LRU hash of calls the entry probe sampled out ([`FrameKey`] → 1), so the
/// return probe of the same call stays silent too.
pub const SKIPPED_MAP: &str = "SKIPPED";

/// Name of the LRU hash of words an entry probe saved for its return probe
/// ([`FrameKey`] → [`SavedWords`]): the pointers of output parameters.
pub const SAVED_MAP: &str = "SAVED";
/// Words an entry probe can save for the return probe of the same call.
pub const MAX_SAVES: usize = 4;

/// Name of the LRU hash of threads inside a captured call (tid → the canonical frame
/// address of the outermost open one). Dependency probes and the syscall tracepoints emit
/// only on these threads, and only deeper in the stack than that call's frame.
pub const ACTIVE_MAP: &str = "ACTIVE";

/// Maximum number of probes (entry and return count separately) one agent attaches.
pub const MAX_PROBES: u32 = 4096;
/// Syscall numbers below this can have capture plans (x86-64 has about 460).
pub const MAX_SYSCALL: u32 = 512;
/// Plan and counter id of the `sys_enter` plan of syscall `nr`: `SYSCALL_ENTER_ID + nr`.
pub const SYSCALL_ENTER_ID: u32 = MAX_PROBES;
/// Plan and counter id of the `sys_exit` plan of syscall `nr`: `SYSCALL_EXIT_ID + nr`.
pub const SYSCALL_EXIT_ID: u32 = MAX_PROBES + MAX_SYSCALL;
/// Entries of the plan and counter maps: probes, then syscall entries and exits.
pub const MAX_PLANS: u32 = MAX_PROBES + 2 * MAX_SYSCALL;
/// The [`FrameKey::cfa`] under which a syscall's entry saves words for its exit (a thread
/// runs one syscall at a time).
pub const SYSCALL_FRAME: u64 = u64::MAX;
/// Maximum fetch operations in one capture plan.
pub const MAX_FETCH_OPS: usize = 32;
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
/// General-purpose registers carried in every event, in DWARF numbering (see [`reg`]).
pub const GP_REGS: usize = 16;

/// What an event reports.
pub mod event_kind {
    /// A probed function was entered.
    pub const ENTRY: u32 = 1;
    /// A probed function returned normally.
    pub const RETURN: u32 = 2;
    /// A thread of a traced process exited: calls still open on it never return.
    pub const THREAD_EXIT: u32 = 3;
}

/// x86-64 general-purpose registers, numbered as DWARF numbers them, so a location
/// expression's register maps straight to an index of [`EventHeader::regs`].
pub mod reg {
    pub const RAX: u8 = 0;
    pub const RDX: u8 = 1;
    pub const RCX: u8 = 2;
    pub const RBX: u8 = 3;
    pub const RSI: u8 = 4;
    pub const RDI: u8 = 5;
    pub const RBP: u8 = 6;
    pub const RSP: u8 = 7;
    pub const R8: u8 = 8;
    pub const R9: u8 = 9;
    pub const R10: u8 = 10;
    pub const R11: u8 = 11;
    pub const R12: u8 = 12;
    pub const R13: u8 = 13;
    pub const R14: u8 = 14;
    pub const R15: u8 = 15;
}

/// Kinds of fetch op.
pub mod op_kind {
    /// Read a NUL-terminated string, at most `len` bytes including the NUL.
    pub const C_STRING: u8 = 1;
    /// Read `len` bytes (or the op's computed length, capped at `len`).
    pub const MEMORY: u8 = 2;
    /// Return probes: copy the word the entry probe saved in slot `base_src` (8 bytes).
    pub const SAVED: u8 = 3;
}

/// Where a fetch op takes its base address from.
pub mod base {
    /// The register numbered `base_src`.
    pub const REG: u8 = 0;
    /// The 8 bytes at payload offset `base_src`, written by an earlier op (`parent`).
    pub const FETCHED: u8 = 1;
}

/// Where a [`op_kind::MEMORY`] op takes its length from; the result is multiplied by
/// `scale` and capped at `len`.
pub mod len_from {
    /// The constant `len`.
    pub const CONST: u8 = 0;
    /// The register numbered `len_src`.
    pub const REG: u8 = 1;
    /// The 8 bytes at payload offset `len_src`, written by an earlier op (`parent`).
    pub const FETCHED: u8 = 2;
}

/// Fetch results that are not an errno from a read helper.
pub mod fetch_status {
    /// The op was not run: its parent op failed or was skipped.
    pub const SKIPPED: i16 = -1000;
    /// The op was not run: the pointer it would follow is NULL.
    pub const NULL: i16 = -1001;
    /// The op is malformed (bad register, offset or length).
    pub const INVALID: i16 = -1002;
}

/// Plan flags.
pub mod flags {
    /// Return probe: look the frame up in the skipped-calls map first; a call whose entry
    /// was sampled out emits nothing at return either (nor one whose entry was dropped:
    /// [`super::RingConfig::entry_dropped`]).
    pub const CHECK_SKIPPED: u8 = 1;
    /// Return probe: load the words the entry probe of this call saved ([`super::SAVED_MAP`]).
    pub const LOAD_SAVED: u8 = 2;
    /// A captured function's probe while dependencies are tracked: the entry marks the
    /// thread as inside a captured call ([`super::ACTIVE_MAP`]), the return of the
    /// outermost such call clears the mark.
    pub const SCOPE: u8 = 4;
    /// A dependency probe (a library call such as `sqlite3_step`, or a syscall such as
    /// `write`): emits only on a thread inside a captured call, deeper in the stack than it.
    /// Without it a syscall plan emits for every thread of the traced process (`open`,
    /// `close`, `connect`: user space keeps its descriptor table from them).
    pub const DEPENDENCY: u8 = 8;
    /// A captured function's probe (not a dependency hook): while tracing closes
    /// ([`super::stop::CLOSING`]) its entries leave at once, so only calls already running
    /// are still recorded.
    pub const CAPTURED: u8 = 16;
}

/// Values of [`RingConfig::stopped`].
pub mod stop {
    /// Tracing.
    pub const TRACING: u32 = 0;
    /// Tracing is closing: a call of a captured function that starts now is not traced (its
    /// entry leaves before counting; its return finds the frame in the skipped-calls map),
    /// while calls already running still reach their returns, dependencies and thread exits.
    pub const CLOSING: u32 = 1;
    /// Stopped: every program returns at once, so the reader can drain the ring buffer to its
    /// end while the target keeps calling.
    pub const STOPPED: u32 = 2;
}

/// One step of a capture plan: read memory the target can see.
///
/// The address is `base + offset`, where the base is a register or a pointer an earlier op
/// fetched. The result lands in the event payload at `dst`; its length (or a negative errno,
/// or a [`fetch_status`]) in [`EventHeader::fetch_len`] at the op's index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchOp {
    /// One of [`op_kind`]; 0 ends the plan.
    pub kind: u8,
    /// One of [`base`].
    pub base: u8,
    /// One of [`len_from`].
    pub len_from: u8,
    /// 1 + index of an op that must have succeeded for this one to run (0: none).
    pub parent: u8,
    /// Register number or payload offset of the base address (see [`base`]).
    pub base_src: u16,
    /// Register number or payload offset of the length (see [`len_from`]).
    pub len_src: u16,
    /// Maximum bytes to read (at most the plan class's slot).
    pub len: u16,
    /// Offset of the result in the payload (below the plan class's slot).
    pub dst: u16,
    /// Multiplies a computed length (an element size).
    pub scale: u16,
    pub _pad0: u16,
    /// Added to the base to form the address.
    pub offset: i32,
}
const _: () = assert!(size_of::<FetchOp>() == 20);

/// Everything a probe does beyond the fixed header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturePlan {
    /// Number of valid entries in `ops`.
    pub n_ops: u8,
    /// One of [`class`].
    pub class: u8,
    /// Register the canonical frame address is computed from ([`reg::RSP`] or [`reg::RBP`]).
    pub cfa_reg: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    /// Bytes of payload the plan may fill (`max(dst + len)`).
    pub payload_len: u32,
    /// Added to `cfa_reg` to form the canonical frame address (the caller's stack pointer
    /// before the call), which pairs entries with returns.
    pub cfa_offset: i32,
    /// Entry probes: keep a call when a random u32 is below this; `u32::MAX` keeps all.
    pub sample_threshold: u32,
    /// Entry probes: words to save for the return probe (output parameters' pointers).
    pub n_saves: u8,
    /// Per save: one of [`base`] (`REG`: register `save_src`; `FETCHED`: the 8 bytes at
    /// payload offset `save_src`).
    pub save_base: [u8; MAX_SAVES],
    pub _pad0: [u8; 3],
    pub save_src: [u16; MAX_SAVES],
    pub ops: [FetchOp; MAX_FETCH_OPS],
}
const _: () = assert!(size_of::<CapturePlan>() == 32 + 20 * MAX_FETCH_OPS);

impl Default for CapturePlan {
    fn default() -> Self {
        CapturePlan {
            n_ops: 0,
            class: class::HEADER,
            cfa_reg: reg::RSP,
            flags: 0,
            payload_len: 0,
            cfa_offset: 8,
            sample_threshold: u32::MAX,
            n_saves: 0,
            save_base: [0; MAX_SAVES],
            _pad0: [0; 3],
            save_src: [0; MAX_SAVES],
            ops: [FetchOp::default(); MAX_FETCH_OPS],
        }
    }
}

/// Fixed part of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Canonical frame address: the caller's stack pointer before the call. Equal at a
    /// call's entry and return, so it pairs them.
    pub cfa: u64,
    /// Instruction pointer when the probe fired.
    pub ip: u64,
    /// The general-purpose registers, indexed by DWARF number ([`reg`]).
    pub regs: [u64; GP_REGS],
    /// Per fetch op: bytes read, a negative errno, or a [`fetch_status`].
    pub fetch_len: [i16; MAX_FETCH_OPS],
    /// Bytes of payload that follow this header: up to the last byte a fetch wrote.
    pub payload_len: u32,
    pub _pad0: u32,
}
const _: () = assert!(size_of::<EventHeader>() == 240);

impl Default for EventHeader {
    fn default() -> Self {
        EventHeader {
            kind: 0,
            probe_id: 0,
            pid: 0,
            tid: 0,
            ktime_ns: 0,
            cfa: 0,
            ip: 0,
            regs: [0; GP_REGS],
            fetch_len: [0; MAX_FETCH_OPS],
            payload_len: 0,
            _pad0: 0,
        }
    }
}

/// An event with the largest payload: the buffer an event is assembled in before the
/// header and the payload bytes its fetches wrote are copied to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LargeEvent {
    pub header: EventHeader,
    pub payload: [u8; 2 * LARGE_SLOT],
}
const _: () = assert!(size_of::<LargeEvent>() == size_of::<EventHeader>() + 2 * LARGE_SLOT);

/// Key of the skipped-calls map: a thread and the canonical frame address of a call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameKey {
    pub tid: u32,
    pub _pad0: u32,
    pub cfa: u64,
}
const _: () = assert!(size_of::<FrameKey>() == 16);

/// Words saved at a call's entry for its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedWords {
    pub words: [u64; MAX_SAVES],
}
const _: () = assert!(size_of::<SavedWords>() == 8 * MAX_SAVES);

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
    /// Calls left out by in-kernel sampling (counted at entry; their returns are silent).
    pub sampled_out: u64,
    /// Dependency probe and syscall hits outside any captured call: not emitted, by design.
    pub outside: u64,
}
const _: () = assert!(size_of::<Counters>() == 56);

/// Ring buffer wake-up policy and the traced process (one-entry array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingConfig {
    /// Submit without waking the reader until this many bytes are pending; the reader also
    /// drains on a timer, so nothing waits longer than that.
    pub wakeup_bytes: u64,
    /// The traced process (tgid). The syscall tracepoints see every process on the machine;
    /// comparing with this first keeps their cost to others at one array load.
    pub traced_tgid: u32,
    /// One of [`stop`]: user space stops in two steps, closing and then stopped.
    pub stopped: u32,
    /// Set by the programs once an entry event did not fit in the ring buffer: from then on
    /// return probes look their frame up in the skipped-calls map, so that the return of a
    /// call whose entry was lost is not paired with an earlier entry at the same frame.
    pub entry_dropped: u32,
    pub _pad0: u32,
}
const _: () = assert!(size_of::<RingConfig>() == 24);

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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FrameKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SavedWords {}
}
