//! The programs themselves (only compiled for `bpfel-unknown-none`).

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_attach_cookie, bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use chronicle_common::{
    CapturePlan, Counters, EventHeader, FetchOp, LARGE_SLOT, LargeEvent, MAX_FETCH_OPS, MAX_PROBES,
    RingConfig, SMALL_SLOT, SmallEvent, class, event_kind, op_kind, reg,
};

/// 16 MiB: about 140 000 header-only events or 11 000 small-plan events of headroom.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map]
static PLANS: HashMap<u32, CapturePlan> = HashMap::with_max_entries(MAX_PROBES, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_PROBES, 0);

#[map]
static TRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

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
    if unsafe { TRACED_PIDS.get(&tgid) }.is_none() {
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

/// The registers a probe uses, copied out of the context once.
///
/// The verifier only allows context loads at a constant offset from the context pointer;
/// volatile loads stop LLVM from merging them into a load through a computed pointer.
struct Regs {
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    r8: u64,
    r9: u64,
    rax: u64,
    rsp: u64,
    rbp: u64,
    rip: u64,
}

impl Regs {
    fn read(regs: *const pt_regs) -> Regs {
        // SAFETY: `regs` is the program's context, valid for reads for the whole run.
        unsafe {
            Regs {
                rdi: core::ptr::read_volatile(&raw const (*regs).rdi),
                rsi: core::ptr::read_volatile(&raw const (*regs).rsi),
                rdx: core::ptr::read_volatile(&raw const (*regs).rdx),
                rcx: core::ptr::read_volatile(&raw const (*regs).rcx),
                r8: core::ptr::read_volatile(&raw const (*regs).r8),
                r9: core::ptr::read_volatile(&raw const (*regs).r9),
                rax: core::ptr::read_volatile(&raw const (*regs).rax),
                rsp: core::ptr::read_volatile(&raw const (*regs).rsp),
                rbp: core::ptr::read_volatile(&raw const (*regs).rbp),
                rip: core::ptr::read_volatile(&raw const (*regs).rip),
            }
        }
    }
}

fn probe(ctx: *mut core::ffi::c_void, regs: *mut pt_regs, kind: u32) -> u32 {
    // SAFETY: the context of a uprobe program is a kprobe-type context.
    let probe_id = unsafe { bpf_get_attach_cookie(ctx) } as u32;
    let Some(counters) = counters(probe_id) else {
        return 0;
    };
    counters.hits += 1;
    // SAFETY: plans are written whole by user space before the probe is attached.
    let Some(plan) = (unsafe { PLANS.get(&probe_id) }) else {
        counters.no_plan += 1;
        return 0;
    };
    let regs = Regs::read(regs);
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut header = EventHeader {
        kind,
        probe_id,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        ktime_ns: now(),
        sp: regs.rsp,
        ip: regs.rip,
        ..EventHeader::default()
    };
    if kind == event_kind::ENTRY {
        header.regs = [regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9];
    } else {
        header.regs[0] = regs.rax;
        header.regs[1] = regs.rdx;
    }
    let emitted = match plan.class {
        class::SMALL => emit_with_payload::<SmallEvent, SMALL_SLOT>(header, plan, &regs, counters),
        class::LARGE => emit_with_payload::<LargeEvent, LARGE_SLOT>(header, plan, &regs, counters),
        _ => match EVENTS.reserve::<EventHeader>(0) {
            Some(mut entry) => {
                entry.write(header);
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
    0
}

/// Events of one size class: a header followed by a payload buffer of `2 * SLOT` bytes.
trait PayloadEvent {
    fn parts(&mut self) -> (&mut EventHeader, *mut u8);
}

impl PayloadEvent for SmallEvent {
    fn parts(&mut self) -> (&mut EventHeader, *mut u8) {
        (&mut self.header, self.payload.as_mut_ptr())
    }
}

impl PayloadEvent for LargeEvent {
    fn parts(&mut self) -> (&mut EventHeader, *mut u8) {
        (&mut self.header, self.payload.as_mut_ptr())
    }
}

fn emit_with_payload<E: PayloadEvent + 'static, const SLOT: usize>(
    header: EventHeader,
    plan: &CapturePlan,
    regs: &Regs,
    counters: &mut Counters,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<E>(0) else {
        return false;
    };
    // SAFETY: the header is written below before anything reads it; the payload is only
    // written through bounded helper calls, and user space reads at most `payload_len` bytes.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    let (out, payload) = event.parts();
    *out = header;
    out.payload_len = plan.payload_len.min(2 * SLOT as u32);
    for i in 0..MAX_FETCH_OPS {
        if i >= plan.n_ops as usize {
            break;
        }
        let Some(op) = plan.ops.get(i) else { break };
        let result = fetch::<SLOT>(op, regs, payload);
        if result < 0 {
            counters.fetch_errors += 1;
        }
        if let Some(slot) = out.fetch_len.get_mut(i) {
            *slot = result;
        }
    }
    entry.submit(wakeup_flags(size_of::<E>() as u64));
    true
}

/// Runs one fetch op; returns the bytes read or a negative errno.
fn fetch<const SLOT: usize>(op: &FetchOp, regs: &Regs, payload: *mut u8) -> i16 {
    const EINVAL: i16 = -22;
    let base = match op.reg {
        reg::RDI => regs.rdi,
        reg::RSI => regs.rsi,
        reg::RDX => regs.rdx,
        reg::RCX => regs.rcx,
        reg::R8 => regs.r8,
        reg::R9 => regs.r9,
        reg::RAX => regs.rax,
        reg::RSP => regs.rsp,
        reg::RBP => regs.rbp,
        _ => return EINVAL,
    };
    let src = base.wrapping_add(op.offset as u64) as *const core::ffi::c_void;
    // Bounds the verifier can follow: dst < SLOT and len <= SLOT, in a 2 * SLOT buffer.
    let dst = (op.dst as usize) & (SLOT - 1);
    let len = op.len as usize;
    if len > SLOT || len == 0 {
        return EINVAL;
    }
    // SAFETY: dst + len <= 2 * SLOT, the size of the payload buffer.
    let dst = unsafe { payload.add(dst) }.cast::<core::ffi::c_void>();
    let ret = match op.kind {
        // SAFETY: bounded destination (above); the helper fails safely on a bad source.
        op_kind::C_STRING => (unsafe { bpf_probe_read_user_str(dst, len as u32, src) }) as i64,
        op_kind::MEMORY => {
            // SAFETY: as above.
            let r = (unsafe { bpf_probe_read_user(dst, len as u32, src) }) as i64;
            if r == 0 { len as i64 } else { r }
        }
        _ => return EINVAL,
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
