//! The programs themselves (only compiled for `bpfel-unknown-none`).

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{
            bpf_get_attach_cookie, bpf_get_prandom_u32, bpf_probe_read_user,
            bpf_probe_read_user_str,
        },
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use chronicle_common::{
    CapturePlan, Counters, EventHeader, FetchOp, FrameKey, GP_REGS, LARGE_SLOT, LargeEvent,
    MAX_FETCH_OPS, MAX_PLANS, MAX_SAVES, MAX_SYSCALL, RingConfig, SMALL_SLOT, SYSCALL_ENTER_ID,
    SYSCALL_EXIT_ID, SYSCALL_FRAME, SavedWords, base, class, event_kind, fetch_status, flags,
    len_from, op_kind, reg, stop,
};

/// Sized by user space (`attach --ring-buffer-mb`). Events carry their header and the
/// payload bytes their fetches used, nothing more.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Where an event with a payload is assembled before it is copied into [`EVENTS`] at its
/// used size (a ring buffer reservation must have a size known when the program is
/// verified). One slot per kind of program that can be running on a CPU at once: a syscall
/// tracepoint's program can be preempted (syscall tracepoints may fault), and a uprobe or the
/// other syscall program may then run on the same CPU; a program does not nest with itself.
#[map]
static SCRATCH: PerCpuArray<LargeEvent> = PerCpuArray::with_max_entries(3, 0);

/// [`SCRATCH`] slots.
mod slot {
    pub const UPROBE: u32 = 0;
    pub const SYS_ENTER: u32 = 1;
    pub const SYS_EXIT: u32 = 2;
}

#[map]
static PLANS: HashMap<u32, CapturePlan> = HashMap::with_max_entries(MAX_PLANS, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_PLANS, 0);

/// Threads inside a captured call: tid → canonical frame address of the outermost open one.
/// LRU: a thread whose outermost call never returned is eventually evicted (and a dependency
/// emitted from a stale entry is dropped by user space, which knows the open calls).
#[map]
static ACTIVE: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65536, 0);

#[map]
static TRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Calls whose entry was sampled out, so their returns stay silent too. LRU: a frame
/// that never returns (exception, longjmp) is eventually evicted.
#[map]
static SKIPPED: LruHashMap<FrameKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// Words entry probes saved for the return probe of the same call (output parameters).
#[map]
static SAVED: LruHashMap<FrameKey, SavedWords> = LruHashMap::with_max_entries(65536, 0);

#[map]
static RING_CONFIG: Array<RingConfig> = Array::with_max_entries(1, 0);

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

#[uprobe]
pub fn chronicle_entry(ctx: ProbeContext) -> u32 {
    probe(ctx.as_ptr(), ctx.regs, event_kind::ENTRY)
}

#[uretprobe]
pub fn chronicle_return(ctx: RetProbeContext) -> u32 {
    probe(ctx.as_ptr(), ctx.regs, event_kind::RETURN)
}

/// `sched_process_exit(struct task_struct *p)` fires in the context of every exiting thread.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn chronicle_thread_exit(_ctx: RawTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence.
    if unsafe { TRACED_PIDS.get(&tgid) }.is_none() || stop_state() == stop::STOPPED {
        return 0;
    }
    if let Some(mut entry) = EVENTS.reserve::<EventHeader>(0) {
        let header = EventHeader {
            kind: event_kind::THREAD_EXIT,
            pid: tgid,
            tid: pid_tgid as u32,
            ktime_ns: now(),
            ..EventHeader::default()
        };
        entry.write(header);
        entry.submit(BPF_RB_FORCE_WAKEUP);
    }
    0
}

fn now() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

fn counters(probe_id: u32) -> Option<&'static mut Counters> {
    // SAFETY: per-CPU slot; this program is the only writer on this CPU while it runs.
    COUNTERS.get_ptr_mut(probe_id).map(|p| unsafe { &mut *p })
}

/// Copies the general-purpose registers out of the context, in DWARF order.
///
/// The verifier only allows context loads at a constant offset from the context pointer;
/// volatile loads stop LLVM from merging them into a load through a computed pointer.
fn read_regs(regs: *const pt_regs, out: &mut [u64; GP_REGS]) {
    // SAFETY: `regs` is the program's context or a copy on its stack, valid for reads for the
    // whole run.
    unsafe {
        out[reg::RAX as usize] = core::ptr::read_volatile(&raw const (*regs).rax);
        out[reg::RDX as usize] = core::ptr::read_volatile(&raw const (*regs).rdx);
        out[reg::RCX as usize] = core::ptr::read_volatile(&raw const (*regs).rcx);
        out[reg::RBX as usize] = core::ptr::read_volatile(&raw const (*regs).rbx);
        out[reg::RSI as usize] = core::ptr::read_volatile(&raw const (*regs).rsi);
        out[reg::RDI as usize] = core::ptr::read_volatile(&raw const (*regs).rdi);
        out[reg::RBP as usize] = core::ptr::read_volatile(&raw const (*regs).rbp);
        out[reg::RSP as usize] = core::ptr::read_volatile(&raw const (*regs).rsp);
        out[reg::R8 as usize] = core::ptr::read_volatile(&raw const (*regs).r8);
        out[reg::R9 as usize] = core::ptr::read_volatile(&raw const (*regs).r9);
        out[reg::R10 as usize] = core::ptr::read_volatile(&raw const (*regs).r10);
        out[reg::R11 as usize] = core::ptr::read_volatile(&raw const (*regs).r11);
        out[reg::R12 as usize] = core::ptr::read_volatile(&raw const (*regs).r12);
        out[reg::R13 as usize] = core::ptr::read_volatile(&raw const (*regs).r13);
        out[reg::R14 as usize] = core::ptr::read_volatile(&raw const (*regs).r14);
        out[reg::R15 as usize] = core::ptr::read_volatile(&raw const (*regs).r15);
    }
}

fn read_sp_bp_ip(regs: *const pt_regs) -> (u64, u64, u64) {
    // SAFETY: as in `read_regs`.
    unsafe {
        (
            core::ptr::read_volatile(&raw const (*regs).rsp),
            core::ptr::read_volatile(&raw const (*regs).rbp),
            core::ptr::read_volatile(&raw const (*regs).rip),
        )
    }
}

/// Where user space is in stopping ([`stop`]), `STOPPED` if the config cannot be read.
fn stop_state() -> u32 {
    RING_CONFIG.get(0).map_or(stop::STOPPED, |c| c.stopped)
}

fn probe(ctx: *mut core::ffi::c_void, regs: *mut pt_regs, kind: u32) -> u32 {
    // One read of the config per hit: whether tracing is stopping, and whether an entry was
    // ever dropped (a flag that only goes from 0 to 1, so a stale read errs on the side of
    // the older behaviour for this one event).
    let Some(config) = RING_CONFIG.get(0) else {
        return 0;
    };
    let (stop_state, dropped_before) = (config.stopped, config.entry_dropped != 0);
    if stop_state == stop::STOPPED {
        return 0;
    }
    // SAFETY: the context of a uprobe program is a kprobe-type context.
    let probe_id = unsafe { bpf_get_attach_cookie(ctx) } as u32;
    let Some(counters) = counters(probe_id) else {
        return 0;
    };
    // SAFETY: plans are written whole by user space before the probe is attached.
    let Some(plan) = (unsafe { PLANS.get(&probe_id) }) else {
        counters.hits += 1;
        counters.no_plan += 1;
        return 0;
    };
    let (sp, bp, ip) = read_sp_bp_ip(regs);
    let cfa_base = if plan.cfa_reg == reg::RBP { bp } else { sp };
    let cfa = cfa_base.wrapping_add(plan.cfa_offset as i64 as u64);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let frame = FrameKey { tid, _pad0: 0, cfa };
    let closing = stop_state == stop::CLOSING;
    if closing && kind == event_kind::ENTRY && plan.flags & flags::CAPTURED != 0 {
        // A call that starts while tracing closes is not one of this trace's calls: it is
        // not counted, and its return stays silent.
        let _ = SKIPPED.insert(&frame, &1, 0);
        return 0;
    }
    counters.hits += 1;
    if plan.flags & flags::DEPENDENCY != 0 && !inside_captured_call(tid, sp) {
        counters.outside += 1;
        return 0;
    }
    if kind == event_kind::ENTRY && plan.sample_threshold != u32::MAX {
        // SAFETY: the helper has no preconditions.
        if unsafe { bpf_get_prandom_u32() } >= plan.sample_threshold {
            counters.sampled_out += 1;
            // If the map is full the return is emitted and user space counts an orphan.
            let _ = SKIPPED.insert(&frame, &1, 0);
            return 0;
        }
    }
    let check_skipped = plan.flags & flags::CHECK_SKIPPED != 0 || dropped_before || closing;
    if kind == event_kind::RETURN && check_skipped {
        // SAFETY: the value is only tested for presence.
        if unsafe { SKIPPED.get(&frame) }.is_some() {
            let _ = SKIPPED.remove(&frame);
            // A dropped entry (unlike a sampled-out one) may have marked its thread.
            // SAFETY: the value is copied out at once.
            if plan.flags & flags::SCOPE != 0 && unsafe { ACTIVE.get(&tid) }.copied() == Some(cfa) {
                let _ = ACTIVE.remove(&tid);
            }
            return 0;
        }
    }
    if plan.flags & flags::SCOPE != 0 {
        // SAFETY: the value is copied out at once.
        let outer = unsafe { ACTIVE.get(&tid) }.copied();
        if kind == event_kind::ENTRY {
            // Stacks grow down: an open call with a higher frame encloses this one; a mark
            // at or below this frame is stale (that call unwound without returning).
            if outer.is_none_or(|outer| outer <= cfa) {
                let _ = ACTIVE.insert(&tid, &cfa, 0);
            }
        } else if outer == Some(cfa) {
            let _ = ACTIVE.remove(&tid);
        }
    }
    let saved = take_saved(kind, plan, &frame);
    let fired = Fired {
        kind,
        probe_id,
        pid_tgid,
        cfa,
        ip,
        regs,
        scratch: slot::UPROBE,
    };
    let emitted = emit(&fired, plan, counters, saved.as_ref(), &frame);
    if kind == event_kind::ENTRY {
        if !emitted {
            // Its return must not be paired with an older entry at this frame, one whose own
            // return was lost: it stays silent, and this call is counted once, as dropped.
            let _ = SKIPPED.insert(&frame, &1, 0);
            if let Some(config) = RING_CONFIG.get_ptr_mut(0) {
                // SAFETY: a one-word store into the config array's only value.
                unsafe { (*config).entry_dropped = 1 };
            }
        } else if check_skipped {
            // A call at this frame that never returned (longjmp) must not silence this one.
            let _ = SKIPPED.remove(&frame);
        }
    }
    0
}

/// Return probes that load saved words: the words the entry of this frame saved, removed.
fn take_saved(kind: u32, plan: &CapturePlan, frame: &FrameKey) -> Option<SavedWords> {
    if kind != event_kind::RETURN || plan.flags & flags::LOAD_SAVED == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once.
    let saved = unsafe { SAVED.get(frame) }.copied();
    if saved.is_some() {
        let _ = SAVED.remove(frame);
    }
    saved
}

/// Whether a dependency at stack pointer `sp` on thread `tid` runs inside a captured call.
fn inside_captured_call(tid: u32, sp: u64) -> bool {
    // SAFETY: the value is copied out at once.
    unsafe { ACTIVE.get(&tid) }.is_some_and(|&outer| sp < outer)
}

/// `sys_enter(struct pt_regs *regs, long id)`, for the syscalls user space gave a plan.
///
/// While attached, every syscall of every process takes the kernel's tracing path and runs
/// this program (which lets other processes go after one array load): about 200 ns more per
/// syscall in this VM (BENCHMARKS.md). Programs on the followed syscalls' kernel functions
/// (`fentry` on `__x64_sys_read`, ...) would spare the others, but this kernel refuses to
/// load tracing programs (`EPERM` under lockdown).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn chronicle_sys_enter(ctx: RawTracePointContext) -> u32 {
    syscall(ctx.arg(0), event_kind::ENTRY)
}

/// `sys_exit(struct pt_regs *regs, long ret)`: the return value is in `regs->ax` too.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn chronicle_sys_exit(ctx: RawTracePointContext) -> u32 {
    syscall(ctx.arg(0), event_kind::RETURN)
}

/// A syscall entry or exit: `regs_ptr` is the thread's saved user registers (the syscall
/// number in `orig_ax`, at an exit the return value in `ax`). Other processes leave after
/// one array load.
fn syscall(regs_ptr: *const pt_regs, kind: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(config) = RING_CONFIG.get(0) else {
        return 0;
    };
    if (pid_tgid >> 32) as u32 != config.traced_tgid || config.stopped == stop::STOPPED {
        return 0;
    }
    let tid = pid_tgid as u32;
    // SAFETY: the registers the kernel saved at syscall entry, valid while it runs.
    let Ok(user_regs) = (unsafe { bpf_probe_read_kernel(regs_ptr) }) else {
        return 0;
    };
    let nr = user_regs.orig_rax;
    if nr >= MAX_SYSCALL as u64 {
        return 0;
    }
    let probe_id = if kind == event_kind::ENTRY {
        SYSCALL_ENTER_ID
    } else {
        SYSCALL_EXIT_ID
    } + nr as u32;
    // SAFETY: plans are written whole by user space before the tracepoint is attached.
    let Some(plan) = (unsafe { PLANS.get(&probe_id) }) else {
        return 0;
    };
    let Some(counters) = counters(probe_id) else {
        return 0;
    };
    counters.hits += 1;
    if plan.flags & flags::DEPENDENCY != 0 && !inside_captured_call(tid, user_regs.rsp) {
        counters.outside += 1;
        return 0;
    }
    let frame = FrameKey {
        tid,
        _pad0: 0,
        cfa: SYSCALL_FRAME,
    };
    let saved = take_saved(kind, plan, &frame);
    let fired = Fired {
        kind,
        probe_id,
        pid_tgid,
        // The user stack pointer: user space attributes the syscall to the innermost open
        // call above it.
        cfa: user_regs.rsp,
        ip: user_regs.rip,
        regs: &raw const user_regs,
        scratch: if kind == event_kind::ENTRY {
            slot::SYS_ENTER
        } else {
            slot::SYS_EXIT
        },
    };
    let _ = emit(&fired, plan, counters, saved.as_ref(), &frame);
    0
}

/// A probe or tracepoint hit that passed its filters.
struct Fired {
    kind: u32,
    probe_id: u32,
    pid_tgid: u64,
    cfa: u64,
    ip: u64,
    /// The target's registers (a uprobe's context, or a copy of a syscall's user registers).
    regs: *const pt_regs,
    /// The [`SCRATCH`] slot of this kind of program.
    scratch: u32,
}

/// Sends the event; false when the ring buffer was full (counted).
fn emit(
    fired: &Fired,
    plan: &CapturePlan,
    counters: &mut Counters,
    saved: Option<&SavedWords>,
    frame: &FrameKey,
) -> bool {
    let header = |out: &mut EventHeader| {
        out.kind = fired.kind;
        out.probe_id = fired.probe_id;
        out.pid = (fired.pid_tgid >> 32) as u32;
        out.tid = fired.pid_tgid as u32;
        out.ktime_ns = now();
        out.cfa = fired.cfa;
        out.ip = fired.ip;
        read_regs(fired.regs, &mut out.regs);
        out.payload_len = 0;
        out._pad0 = 0;
    };
    let emitted = match plan.class {
        class::SMALL => {
            emit_with_payload::<SMALL_SLOT>(fired.scratch, header, plan, counters, saved, frame)
        }
        class::LARGE => {
            emit_with_payload::<LARGE_SLOT>(fired.scratch, header, plan, counters, saved, frame)
        }
        _ => match EVENTS.reserve::<EventHeader>(0) {
            Some(mut entry) => {
                // SAFETY: every field is written before the entry is submitted.
                let out = unsafe { &mut *entry.as_mut_ptr() };
                header(out);
                out.fetch_len = [0; MAX_FETCH_OPS];
                save::<SMALL_SLOT>(plan, &out.regs, core::ptr::null_mut(), frame);
                entry.submit(wakeup_flags(size_of::<EventHeader>() as u64));
                true
            }
            None => false,
        },
    };
    if emitted {
        counters.emitted += 1;
    } else {
        counters.ringbuf_full += 1;
    }
    emitted
}

/// Runs the plan's fetches into a payload of `2 * SLOT` bytes and sends the header and the
/// payload up to the last byte a fetch wrote: a 9-byte string costs the ring its 9 bytes,
/// not the plan's whole buffer. Returns false when the ring buffer is full.
fn emit_with_payload<const SLOT: usize>(
    scratch: u32,
    header: impl FnOnce(&mut EventHeader),
    plan: &CapturePlan,
    counters: &mut Counters,
    saved: Option<&SavedWords>,
    frame: &FrameKey,
) -> bool {
    let Some(event) = SCRATCH.get_ptr_mut(scratch) else {
        return false;
    };
    // SAFETY: a per-CPU slot no other program uses while this one runs (see `SCRATCH`); the
    // header is written below before anything reads it; the payload is only written through
    // bounded helper calls, and only the bytes the fetches wrote are sent.
    let event = unsafe { &mut *event };
    let out = &mut event.header;
    let payload = event.payload.as_mut_ptr();
    header(out);
    out.fetch_len = [fetch_status::SKIPPED; MAX_FETCH_OPS];
    let mut used: usize = 0;
    for i in 0..MAX_FETCH_OPS {
        if i >= plan.n_ops as usize {
            break;
        }
        let Some(op) = plan.ops.get(i) else { break };
        let parent_ok = match op.parent {
            0 => true,
            p => out.fetch_len.get(p as usize - 1).is_some_and(|&n| n >= 0),
        };
        let result = if !parent_ok {
            fetch_status::SKIPPED
        } else if op.kind == op_kind::SAVED {
            copy_saved::<SLOT>(op, saved, payload)
        } else {
            fetch::<SLOT>(op, &out.regs, payload)
        };
        if result < 0 && result > fetch_status::SKIPPED {
            counters.fetch_errors += 1;
        }
        if result > 0 {
            let dst = op.dst as usize & (SLOT - 1);
            used = used.max(dst + result as usize);
        }
        if let Some(slot) = out.fetch_len.get_mut(i) {
            *slot = result;
        }
    }
    save::<SLOT>(plan, &out.regs, payload, frame);
    // Bounds the verifier can follow: the sent bytes stay inside the scratch slot.
    let used = used.min(2 * SLOT);
    out.payload_len = used as u32;
    let size = size_of::<EventHeader>() + used;
    // SAFETY: `size` is at most the header and `2 * SLOT <= 2 * LARGE_SLOT` payload bytes,
    // all inside the slot.
    let bytes =
        unsafe { core::slice::from_raw_parts((event as *const LargeEvent).cast::<u8>(), size) };
    EVENTS
        .output::<[u8]>(bytes, wakeup_flags(size as u64))
        .is_ok()
}

/// Entry probes: saves the words the plan names (output parameters' pointers) for the
/// return probe of this call. `payload` is null for header-only events.
fn save<const SLOT: usize>(
    plan: &CapturePlan,
    regs: &[u64; GP_REGS],
    payload: *mut u8,
    frame: &FrameKey,
) {
    if plan.n_saves == 0 {
        return;
    }
    let mut saved = SavedWords::default();
    for i in 0..MAX_SAVES {
        if i >= plan.n_saves as usize {
            break;
        }
        let src = plan.save_src[i];
        saved.words[i] = match plan.save_base[i] {
            base::REG => regs.get(src as usize).copied().unwrap_or(0),
            _ if payload.is_null() => 0,
            _ => fetched_u64::<SLOT>(payload, src),
        };
    }
    let _ = SAVED.insert(frame, &saved, 0);
}

/// Return probes: copies saved word `base_src` into the payload.
fn copy_saved<const SLOT: usize>(
    op: &FetchOp,
    saved: Option<&SavedWords>,
    payload: *mut u8,
) -> i16 {
    let Some(saved) = saved else {
        return fetch_status::SKIPPED;
    };
    let Some(&word) = saved.words.get(op.base_src as usize) else {
        return fetch_status::INVALID;
    };
    let dst = (op.dst as usize) & (SLOT - 1);
    // SAFETY: dst + 8 <= SLOT + 8 <= 2 * SLOT, inside the payload buffer.
    unsafe { core::ptr::write_unaligned(payload.add(dst).cast::<u64>(), word) };
    8
}

/// An 8-byte value an earlier op wrote at payload offset `at` (8-aligned).
fn fetched_u64<const SLOT: usize>(payload: *mut u8, at: u16) -> u64 {
    // Bounds the verifier can follow: an 8-aligned offset below 2 * SLOT - 8.
    let at = (at as usize) & (2 * SLOT - 8);
    // SAFETY: at + 8 <= 2 * SLOT, the size of the payload buffer.
    unsafe { core::ptr::read_unaligned(payload.add(at).cast::<u64>()) }
}

/// Runs one fetch op; returns the bytes read, a negative errno or a `fetch_status`.
fn fetch<const SLOT: usize>(op: &FetchOp, regs: &[u64; GP_REGS], payload: *mut u8) -> i16 {
    let base = match op.base {
        base::REG => match regs.get(op.base_src as usize) {
            Some(&r) => r,
            None => return fetch_status::INVALID,
        },
        base::FETCHED => {
            let p = fetched_u64::<SLOT>(payload, op.base_src);
            if p == 0 {
                return fetch_status::NULL;
            }
            p
        }
        _ => return fetch_status::INVALID,
    };
    let cap = op.len as u64;
    let mut len = match op.len_from {
        len_from::CONST => cap,
        len_from::REG => match regs.get(op.len_src as usize) {
            Some(&r) => r,
            None => return fetch_status::INVALID,
        },
        len_from::FETCHED => fetched_u64::<SLOT>(payload, op.len_src),
        _ => return fetch_status::INVALID,
    };
    if op.len_from != len_from::CONST {
        // Capping first keeps the product small (no 128-bit multiply in BPF).
        if len > cap {
            len = cap;
        }
        len *= op.scale as u64;
        if len > cap {
            len = cap;
        }
    }
    if len > SLOT as u64 {
        return fetch_status::INVALID;
    }
    if len == 0 {
        return 0;
    }
    let src = base.wrapping_add(op.offset as i64 as u64) as *const core::ffi::c_void;
    // Bounds the verifier can follow: dst < SLOT and len <= SLOT, in a 2 * SLOT buffer.
    let dst = (op.dst as usize) & (SLOT - 1);
    // SAFETY: dst + len <= 2 * SLOT, the size of the payload buffer.
    let dst = unsafe { payload.add(dst) }.cast::<core::ffi::c_void>();
    let len = len as u32;
    let ret = match op.kind {
        // SAFETY: bounded destination (above); the helper fails safely on a bad source.
        op_kind::C_STRING => (unsafe { bpf_probe_read_user_str(dst, len, src) }) as i64,
        op_kind::MEMORY => {
            // SAFETY: as above.
            let r = (unsafe { bpf_probe_read_user(dst, len, src) }) as i64;
            if r == 0 { len as i64 } else { r }
        }
        _ => return fetch_status::INVALID,
    };
    ret as i16
}

/// Wake the reader once, when the pending data crosses the threshold; the reader also drains
/// on a short timer. Waking on every event past the threshold would cost an inter-processor
/// interrupt per event exactly when the reader is already behind.
fn wakeup_flags(event_size: u64) -> u64 {
    let threshold = RING_CONFIG.get(0).map_or(0, |c| c.wakeup_bytes);
    if threshold == 0 {
        return 0;
    }
    // Includes this event: it is reserved, not yet submitted.
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA);
    if pending >= threshold && pending.saturating_sub(event_size) < threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
