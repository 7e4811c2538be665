//! A tracing session: resolve, load, attach, then read and pair events until told to stop.

use std::collections::HashMap;
use std::ffi::OsString;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use chronicle::{CallRecord, Status};
use chronicle_common::{
    COUNTERS_MAP, CapturePlan, Counters, EVENTS_MAP, EventHeader, MAX_PROBES, PLANS_MAP,
    RING_CONFIG_MAP, RingConfig, SYSCALL_ENTER_ID, SYSCALL_EXIT_ID, TRACED_PIDS_MAP, event_kind,
    flags, stop,
};
use chronicle_symbols::dwarf::DebugInfo;
use chronicle_symbols::elf::ElfFile;
use chronicle_symbols::libs;
use chronicle_symbols::maps::ProcessMaps;
use chronicle_symbols::plan::{self, DecodedArgs, DecodedReturn, FunctionPlan, PlanLimits};
use chronicle_symbols::resolve::{self, ResolvedFunction};

use crate::deps::{self, CallDeps, Collector, DependencyStats, HasDeps, LibraryHook, Tracking};
use crate::error::{AgentError, has_errno, is_permission_error};
use crate::lower::{self, lower};
use crate::pairing::{OpenCall, Pairing};
use crate::sys;

/// The eBPF object built by `cargo xtask build-ebpf` from `chronicle-ebpf/`.
static EBPF_OBJECT: &[u8] = include_bytes_aligned!("../bpf/chronicle-probes.bpf.o");

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    /// A process that is already running.
    Pid(u32),
    /// A program to start; it is held before `exec` until the probes are attached.
    Program {
        program: OsString,
        args: Vec<OsString>,
    },
}

/// Knobs of a session.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Functions to trace: mangled or demangled names, or `::`-path suffixes.
    pub functions: Vec<String>,
    /// Longest string read per value, in bytes; longer ones are truncated and marked.
    pub max_string: u16,
    /// Bytes of memory one probe may read (`max_serialized_size`), at most 8192.
    pub max_bytes: u32,
    /// How many pointers deep arguments are followed.
    pub max_depth: u8,
    /// Read non-const pointer parameters' pointees again at return (`after` values).
    pub capture_after: bool,
    /// In-kernel sampling: keep each call with this probability (see
    /// [`Session::set_sampling_rate`]).
    pub sampling_rate: f64,
    /// The kernel wakes the reader once this many bytes are pending (batched wake-ups).
    pub wakeup_bytes: u64,
    /// The reader drains the ring buffer at least this often.
    pub drain_interval: Duration,
    /// Size of the ring buffer between the probes and the reader: headroom for bursts the
    /// reader cannot follow at once. A power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// Which dependencies of captured calls to collect (files, network and HTTP, SQLite).
    pub tracking: Tracking,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            functions: Vec::new(),
            max_string: 256,
            max_bytes: 4096,
            max_depth: 3,
            capture_after: false,
            sampling_rate: 1.0,
            wakeup_bytes: 256 * 1024,
            drain_interval: Duration::from_millis(10),
            ring_buffer_bytes: 16 * 1024 * 1024,
            tracking: Tracking::default(),
        }
    }
}

/// A function with probes on it.
#[derive(Clone, Debug)]
pub struct TracedFunction {
    /// Demangled name, as stored in records.
    pub name: String,
    /// Path of the object as the process maps it.
    pub binary: PathBuf,
    pub build_id: String,
    pub file_offset: u64,
    /// Human-readable signature, or why there is none.
    pub signature: String,
    /// What will not be captured, and why (inlined copies, values not readable).
    pub notes: Vec<String>,
    /// File offset of the entry probe (the function's start, or the end of its prologue).
    pub entry_offset: u64,
    /// Where the probes attach when the file at `binary` is no longer what the process runs
    /// (replaced on disk): the process's own link to the mapped file.
    probe_path: Option<PathBuf>,
    plan: FunctionPlan,
    entry: CapturePlan,
    ret: CapturePlan,
}

/// Counts for one traced function, from the kernel and from user space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    pub name: String,
    /// Entry probe hits in the kernel.
    pub calls: u64,
    /// Records produced (returned, plus unwound).
    pub records: u64,
    pub unwound: u64,
    /// Events the kernel could not write because the ring buffer was full.
    pub dropped: u64,
    /// Values the decoder marked as unreadable memory (the value is marked, not lost).
    pub fetch_errors: u64,
    /// Calls left out by in-kernel sampling (not drops: nothing was lost by accident).
    pub sampled_out: u64,
    /// Returns whose entry was never seen (tracing began mid-call, or the entry was dropped).
    pub orphan_returns: u64,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Signal,
    TargetExited,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub reason: StopReason,
    pub functions: Vec<FunctionStats>,
    /// Exit status of a program started by `attach -- PROGRAM`.
    pub exit: Option<sys::ExitStatus>,
    pub elapsed: Duration,
    /// What dependency collection saw (all zero when it was off).
    pub dependencies: DependencyStats,
}

impl RunSummary {
    pub fn dropped(&self) -> u64 {
        self.functions.iter().map(|f| f.dropped).sum()
    }
}

/// One probe (entry or return of one function); its index is its attach cookie.
#[derive(Clone, Copy, Debug)]
struct Probe {
    target: ProbeTarget,
    is_return: bool,
}

#[derive(Clone, Copy, Debug)]
enum ProbeTarget {
    /// A traced function (index into the functions).
    Function(usize),
    /// A library function whose calls are dependencies (index into the hooks).
    Library(usize),
}

/// An attached session.
pub struct Session {
    // Field order matters: maps and links are closed before the object they came from.
    ring: RingBuf<MapData>,
    ebpf: Ebpf,
    tracker: Tracker,
    pid: u32,
    child: Option<sys::HeldChild>,
    pidfd: OwnedFd,
    options: AttachOptions,
    counts_read: Instant,
    /// Asked on every drain for a new in-kernel sampling rate (live policy).
    rate_source: Option<Box<dyn FnMut() -> Option<f64> + Send>>,
}

/// Everything that turns events into records; apart from the ring buffer so events can be
/// handled in place, without copying them out first.
struct Tracker {
    probes: Vec<Probe>,
    functions: Vec<TracedFunction>,
    stats: Vec<FunctionStats>,
    pairing: Pairing<Open>,
    clock_offset_ns: i128,
    hooks: Vec<LibraryHook>,
    /// Plans of the followed syscalls: (nr, enter, exit).
    syscalls: Vec<(u32, CapturePlan, CapturePlan)>,
    collector: Collector,
}

/// What an open call carries until it returns.
#[derive(Debug)]
struct Open {
    args: DecodedArgs,
    deps: CallDeps,
    /// Entered with [`MAX_URETPROBE_DEPTH`] calls already open on its thread: the kernel
    /// will not report its return.
    beyond_return_depth: bool,
}

/// How many returns of probed calls the kernel follows per thread at once (Linux's
/// `MAX_URETPROBE_DEPTH`): a call entered deeper runs and returns unseen.
const MAX_URETPROBE_DEPTH: usize = 64;

/// How long calls already running when tracing stops get to return before they are
/// recorded as unwound.
const CLOSING_GRACE: Duration = Duration::from_millis(250);

impl HasDeps for Open {
    fn deps(&mut self) -> &mut CallDeps {
        &mut self.deps
    }
}

impl Session {
    /// Resolves the functions, loads the eBPF programs and attaches the probes. When the
    /// target is a program, it starts now and runs its first instruction with probes in place.
    pub fn attach(target: Target, options: AttachOptions) -> Result<Session, AgentError> {
        if options.functions.is_empty() {
            return Err(AgentError::NoFunctions);
        }
        let threshold = sample_threshold(options.sampling_rate)?;
        let limits = lower::wire_limits(
            options.max_string,
            options.max_bytes,
            options.max_depth,
            options.capture_after,
        );
        let (pid, child, functions, hooks) = match target {
            Target::Pid(pid) => {
                if !sys::process_exists(pid) {
                    return Err(AgentError::NoSuchProcess { pid });
                }
                if let Some(name) = kernel_thread(pid) {
                    return Err(AgentError::KernelThread { pid, name });
                }
                let (elves, paths, replaced) = process_objects(pid)?;
                let functions =
                    resolve_functions(&elves, &paths, &replaced, &options.functions, &limits)?;
                let hooks = deps::library_hooks(&elves, &paths, options.tracking);
                (pid, None, functions, hooks)
            }
            Target::Program { program, args } => {
                let path = find_program(&program)?;
                let exe = ElfFile::open(&path).map_err(|source| AgentError::Elf {
                    path: path.clone(),
                    source,
                })?;
                // Nothing is mapped before exec: find the libraries the loader will map.
                // One we cannot read is only skipped, as for a running process.
                let libs = libs::needed_libraries(&exe);
                let mut elves = vec![exe];
                elves.extend(libs.iter().filter_map(|lib| ElfFile::open(lib).ok()));
                let paths: Vec<PathBuf> = elves.iter().map(|e| e.path().to_owned()).collect();
                let replaced = vec![false; elves.len()];
                let functions =
                    resolve_functions(&elves, &paths, &replaced, &options.functions, &limits)?;
                let hooks = deps::library_hooks(&elves, &paths, options.tracking);
                let arg_refs: Vec<&std::ffi::OsStr> =
                    args.iter().map(OsString::as_os_str).collect();
                let child = sys::spawn_held(path.as_os_str(), &arg_refs).map_err(|source| {
                    AgentError::Spawn {
                        program: program.to_string_lossy().into_owned(),
                        source,
                    }
                })?;
                (child.pid, Some(child), functions, hooks)
            }
        };
        let probe_count = functions.len() * 2 + hooks.len() * 2;
        if probe_count > MAX_PROBES as usize {
            return Err(AgentError::TooManyProbes {
                count: probe_count,
                limit: MAX_PROBES,
            });
        }

        let syscalls = deps::syscall_plans(options.tracking);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(EVENTS_MAP, options.ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(load_error)?;
        let mut probes = Vec::with_capacity(probe_count);
        {
            let mut plans: BpfHashMap<_, u32, CapturePlan> =
                BpfHashMap::try_from(ebpf.map_mut(PLANS_MAP).expect("PLANS map in object"))
                    .map_err(load_error)?;
            for (index, function) in functions.iter().enumerate() {
                for (is_return, plan) in [(false, &function.entry), (true, &function.ret)] {
                    let id = probes.len() as u32;
                    let mut plan = *plan;
                    plan.flags |= flags::CAPTURED;
                    if threshold != u32::MAX {
                        plan.sample_threshold = threshold;
                        plan.flags |= flags::CHECK_SKIPPED;
                    }
                    if options.tracking.any() {
                        // Marks the thread as inside a captured call for dependency probes.
                        plan.flags |= flags::SCOPE;
                    }
                    plans.insert(id, plan, 0).map_err(load_error)?;
                    probes.push(Probe {
                        target: ProbeTarget::Function(index),
                        is_return,
                    });
                }
            }
            for (index, hook) in hooks.iter().enumerate() {
                for (is_return, plan) in [(false, Some(&hook.entry)), (true, hook.ret.as_ref())] {
                    let Some(plan) = plan else { continue };
                    plans
                        .insert(probes.len() as u32, plan, 0)
                        .map_err(load_error)?;
                    probes.push(Probe {
                        target: ProbeTarget::Library(index),
                        is_return,
                    });
                }
            }
            for (nr, enter, exit) in &syscalls {
                plans
                    .insert(SYSCALL_ENTER_ID + nr, enter, 0)
                    .map_err(load_error)?;
                plans
                    .insert(SYSCALL_EXIT_ID + nr, exit, 0)
                    .map_err(load_error)?;
            }
        }
        {
            let mut ring_config: Array<_, RingConfig> = Array::try_from(
                ebpf.map_mut(RING_CONFIG_MAP)
                    .expect("RING_CONFIG map in object"),
            )
            .map_err(load_error)?;
            ring_config
                .set(
                    0,
                    RingConfig {
                        wakeup_bytes: options.wakeup_bytes,
                        traced_tgid: pid,
                        stopped: 0,
                        entry_dropped: 0,
                        _pad0: 0,
                    },
                    0,
                )
                .map_err(load_error)?;
            let mut traced: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
                ebpf.map_mut(TRACED_PIDS_MAP)
                    .expect("TRACED_PIDS map in object"),
            )
            .map_err(load_error)?;
            traced.insert(pid, 1, 0).map_err(load_error)?;
        }

        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("pids are nonzero"));
        // Both programs are verified before anything is attached, so the window between the
        // return probes and the entry probes is only the attaching itself.
        for name in ["chronicle_return", "chronicle_entry"] {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .expect("probe program in object")
                .try_into()
                .map_err(load_error)?;
            program.load().map_err(load_error)?;
        }
        // Return probes first: a uretprobe only sees calls entered after it is attached, so
        // once an entry probe can fire, the return of that call is sure to be seen.
        for (name, is_return) in [("chronicle_return", true), ("chronicle_entry", false)] {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .expect("probe program in object")
                .try_into()
                .map_err(load_error)?;
            for (id, probe) in probes.iter().enumerate() {
                if probe.is_return != is_return {
                    continue;
                }
                let (name, binary, offset, probe_path) = match probe.target {
                    ProbeTarget::Function(index) => {
                        let function = &functions[index];
                        let offset = if is_return {
                            function.file_offset
                        } else {
                            function.entry_offset
                        };
                        (
                            &function.name[..],
                            &function.binary,
                            offset,
                            function.probe_path.as_ref(),
                        )
                    }
                    ProbeTarget::Library(index) => {
                        let hook = &hooks[index];
                        (hook.name, &hook.binary, hook.file_offset, None)
                    }
                };
                let attach_path = probe_path
                    .cloned()
                    .unwrap_or_else(|| attach_path(pid, binary, child.is_some()));
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(offset),
                    cookie: Some(id as u64),
                };
                program
                    .attach(point, &attach_path, scope)
                    .map_err(|source| {
                        if is_permission_error(&source) {
                            AgentError::Permission {
                                source: Box::new(source),
                            }
                        } else if has_errno(&source, &[libc::ESRCH]) {
                            AgentError::NoSuchProcess { pid }
                        } else if has_errno(&source, &[libc::ENOSYS]) {
                            AgentError::NoUprobes {
                                source: Box::new(source),
                            }
                        } else {
                            AgentError::Attach {
                                function: name.to_owned(),
                                binary: binary.clone(),
                                source: Box::new(source),
                            }
                        }
                    })?;
            }
        }
        let exit_tp: &mut RawTracePoint = ebpf
            .program_mut("chronicle_thread_exit")
            .expect("thread exit program in object")
            .try_into()
            .map_err(load_error)?;
        exit_tp.load().map_err(load_error)?;
        exit_tp.attach("sched_process_exit").map_err(load_error)?;
        if !syscalls.is_empty() {
            for (program, tracepoint) in [
                ("chronicle_sys_exit", "sys_exit"),
                ("chronicle_sys_enter", "sys_enter"),
            ] {
                let tp: &mut RawTracePoint = ebpf
                    .program_mut(program)
                    .expect("syscall program in object")
                    .try_into()
                    .map_err(load_error)?;
                tp.load().map_err(load_error)?;
                tp.attach(tracepoint).map_err(load_error)?;
            }
        }

        let ring = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).expect("EVENTS map in object"))
            .map_err(load_error)?;
        let pidfd = sys::pidfd_open(pid).map_err(|_| AgentError::NoSuchProcess { pid })?;
        let mut child = child;
        if let Some(child) = child.as_mut() {
            child.release().map_err(|source| AgentError::Spawn {
                program: child.program.clone(),
                source,
            })?;
        }
        let stats = functions
            .iter()
            .map(|f| FunctionStats {
                name: f.name.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Session {
            ring,
            ebpf,
            tracker: Tracker {
                probes,
                functions,
                stats,
                pairing: Pairing::default(),
                clock_offset_ns: sys::realtime_offset_ns(),
                hooks,
                syscalls,
                collector: Collector::new(options.tracking),
            },
            pid,
            child,
            pidfd,
            options,
            counts_read: Instant::now(),
            rate_source: None,
        })
    }

    /// The traced process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The functions with probes on them.
    pub fn functions(&self) -> &[TracedFunction] {
        &self.tracker.functions
    }

    /// Follows a live policy: `source` is asked on every drain (about every 10 ms) and
    /// returns a new in-kernel sampling rate when it changed.
    pub fn follow_sampling_rate(&mut self, source: impl FnMut() -> Option<f64> + Send + 'static) {
        self.rate_source = Some(Box::new(source));
    }

    /// Sets the in-kernel sampling rate of every traced function: each call is kept with
    /// probability `rate` (0 to 1) before anything is read or sent; the others cost one
    /// random draw and are counted as sampled out. Takes effect at once.
    pub fn set_sampling_rate(&mut self, rate: f64) -> Result<(), AgentError> {
        let threshold = sample_threshold(rate)?;
        let mut plans: BpfHashMap<_, u32, CapturePlan> =
            BpfHashMap::try_from(self.ebpf.map_mut(PLANS_MAP).expect("PLANS map in object"))
                .map_err(load_error)?;
        // Returns learn to check for skipped calls before any entry skips one. They keep
        // checking afterwards: calls skipped earlier may still be running.
        for (is_return, pass) in [(true, 0), (false, 1)] {
            for (id, probe) in self.tracker.probes.iter().enumerate() {
                if probe.is_return != is_return || !matches!(probe.target, ProbeTarget::Function(_))
                {
                    continue;
                }
                let id = id as u32;
                let mut plan = plans.get(&id, 0).map_err(load_error)?;
                if pass == 0 {
                    if threshold == u32::MAX {
                        continue;
                    }
                    plan.flags |= chronicle_common::flags::CHECK_SKIPPED;
                } else {
                    plan.sample_threshold = threshold;
                }
                plans.insert(id, plan, 0).map_err(load_error)?;
            }
        }
        Ok(())
    }

    /// Reads events until `duration` passes, SIGINT/SIGTERM arrives (see
    /// [`sys::install_stop_handlers`]) or the target exits. Every record goes to `sink`;
    /// `on_tick` is called about every `tick` with the current counts.
    pub fn run(
        &mut self,
        duration: Option<Duration>,
        tick: Duration,
        sink: &mut dyn FnMut(CallRecord),
        on_tick: &mut dyn FnMut(&[FunctionStats]),
    ) -> Result<RunSummary, AgentError> {
        let started = Instant::now();
        let mut last_tick = Instant::now();
        let ring_fd = self.ring.as_raw_fd();
        let pid_fd = self.pidfd.as_raw_fd();
        let reason = loop {
            let mut wait = self.options.drain_interval;
            if let Some(d) = duration {
                wait = wait.min(d.saturating_sub(started.elapsed()));
            }
            let ready = sys::poll_readable(&[ring_fd, pid_fd], wait)?;
            self.drain(sink, Some(self.options.drain_interval));
            if ready[1] {
                // The process is gone; its last events are already in the ring buffer.
                self.drain(sink, None);
                break StopReason::TargetExited;
            }
            if sys::stop_requested() {
                break StopReason::Signal;
            }
            if duration.is_some_and(|d| started.elapsed() >= d) {
                break StopReason::Duration;
            }
            if last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                self.refresh_kernel_counts();
                on_tick(&self.tracker.stats);
            }
        };
        if reason != StopReason::TargetExited {
            self.close(sink)?;
        }
        self.drain(sink, None);
        for open in self.tracker.pairing.drain() {
            let reason = "tracing stopped while the call was running";
            let record = self.tracker.unwound_record(open, reason);
            sink(record);
        }
        self.refresh_kernel_counts();
        let exit = match self.child.as_ref() {
            Some(child) if reason == StopReason::TargetExited => sys::wait(child.pid, true)?,
            _ => None,
        };
        Ok(RunSummary {
            reason,
            functions: self.tracker.stats.clone(),
            exit,
            elapsed: started.elapsed(),
            dependencies: self.tracker.collector.stats.clone(),
        })
    }

    /// Stops in two steps. Closing: calls that start from now on are not traced, while
    /// those already running get up to [`CLOSING_GRACE`] to return (a call in flight when
    /// the user pressed Ctrl-C is recorded whole, not as unwound). Then stopped: every
    /// program returns at once, so draining the ring buffer ends even while the target keeps
    /// calling as fast as the probes let it.
    fn close(&mut self, sink: &mut dyn FnMut(CallRecord)) -> Result<(), AgentError> {
        self.set_stop_state(stop::CLOSING)?;
        let started = Instant::now();
        loop {
            self.drain(sink, None);
            if self.tracker.pairing.open_calls() == 0 || started.elapsed() >= CLOSING_GRACE {
                break;
            }
            let ring_fd = self.ring.as_raw_fd();
            sys::poll_readable(&[ring_fd], Duration::from_millis(5))?;
        }
        self.set_stop_state(stop::STOPPED)
    }

    /// Writes [`RingConfig::stopped`], then waits until no program that read the old value
    /// can still be running.
    fn set_stop_state(&mut self, state: u32) -> Result<(), AgentError> {
        let mut ring_config: Array<_, RingConfig> = Array::try_from(
            self.ebpf
                .map_mut(RING_CONFIG_MAP)
                .expect("RING_CONFIG map in object"),
        )
        .map_err(load_error)?;
        let config = ring_config.get(&0, 0).map_err(load_error)?;
        ring_config
            .set(
                0,
                RingConfig {
                    stopped: state,
                    ..config
                },
                0,
            )
            .map_err(load_error)?;
        // A program runs for microseconds; one that read the flag just before it changed is
        // done long before this.
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    /// Handles pending events: all of them (`budget` `None`), or until `budget` has passed,
    /// so ticks and policy changes are not held up while the probes keep the ring full.
    fn drain(&mut self, sink: &mut dyn FnMut(CallRecord), budget: Option<Duration>) {
        let started = Instant::now();
        if let Some(rate) = self.rate_source.as_mut().and_then(|source| source()) {
            // A rate the policy accepted is always in range; a map update that fails leaves
            // the previous rate in force, and the next change tries again.
            let _ = self.set_sampling_rate(rate);
        }
        // Kernel counts first (at most every 10 ms): a return dropped before these events
        // changes how an unmatched entry among them is explained.
        if self.counts_read.elapsed() >= Duration::from_millis(10) {
            self.refresh_kernel_counts();
        }
        let mut handled = 0u32;
        while let Some(item) = self.ring.next() {
            self.tracker.handle(&item, sink);
            handled = handled.wrapping_add(1);
            if handled.is_multiple_of(1024) && budget.is_some_and(|b| started.elapsed() >= b) {
                break;
            }
        }
    }

    fn refresh_kernel_counts(&mut self) {
        self.counts_read = Instant::now();
        let Some(map) = self.ebpf.map(COUNTERS_MAP) else {
            return;
        };
        let Ok(counters) = PerCpuArray::<_, Counters>::try_from(map) else {
            return;
        };
        let tracker = &mut self.tracker;
        for stats in &mut tracker.stats {
            stats.calls = 0;
            stats.dropped = 0;
            stats.sampled_out = 0;
        }
        let dependencies = &mut tracker.collector.stats;
        dependencies.outside = 0;
        dependencies.dropped = 0;
        for (id, probe) in tracker.probes.iter().enumerate() {
            let Ok(per_cpu) = counters.get(&(id as u32), 0) else {
                continue;
            };
            for c in per_cpu.iter() {
                match probe.target {
                    ProbeTarget::Function(index) => {
                        let stats = &mut tracker.stats[index];
                        if !probe.is_return {
                            stats.calls += c.hits;
                        }
                        stats.dropped += c.ringbuf_full;
                        stats.sampled_out += c.sampled_out;
                    }
                    ProbeTarget::Library(_) => {
                        dependencies.outside += c.outside;
                        dependencies.dropped += c.ringbuf_full;
                    }
                }
            }
        }
        for (nr, _, _) in &tracker.syscalls {
            for id in [SYSCALL_ENTER_ID + nr, SYSCALL_EXIT_ID + nr] {
                let Ok(per_cpu) = counters.get(&id, 0) else {
                    continue;
                };
                for c in per_cpu.iter() {
                    dependencies.outside += c.outside;
                    dependencies.dropped += c.ringbuf_full;
                }
            }
        }
    }
}

impl Tracker {
    fn handle(&mut self, bytes: &[u8], sink: &mut dyn FnMut(CallRecord)) {
        let header_len = size_of::<EventHeader>();
        if bytes.len() < header_len {
            return;
        }
        // SAFETY: `EventHeader` is plain old data and `bytes` holds at least its size.
        let header: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let payload = &bytes[header_len..];
        let payload = &payload[..(header.payload_len as usize).min(payload.len())];
        if header.probe_id >= SYSCALL_ENTER_ID && header.kind != event_kind::THREAD_EXIT {
            let (nr, exit) = if header.probe_id >= SYSCALL_EXIT_ID {
                (header.probe_id - SYSCALL_EXIT_ID, true)
            } else {
                (header.probe_id - SYSCALL_ENTER_ID, false)
            };
            if let Some((_, enter_plan, exit_plan)) =
                self.syscalls.iter().find(|(n, _, _)| *n == nr)
            {
                let plan = if exit { exit_plan } else { enter_plan };
                self.collector
                    .syscall(&mut self.pairing, nr, exit, plan, &header, payload);
            }
            return;
        }
        match header.kind {
            event_kind::THREAD_EXIT => {
                self.collector.thread_exit(header.tid);
                for open in self.pairing.thread_exit(header.tid) {
                    let record =
                        self.unwound_record(open, "the thread exited before the call returned");
                    sink(record);
                }
            }
            event_kind::ENTRY | event_kind::RETURN => {
                let Some(&probe) = self.probes.get(header.probe_id as usize) else {
                    return;
                };
                let function_index = match probe.target {
                    ProbeTarget::Function(index) => index,
                    ProbeTarget::Library(index) => {
                        let hook = &self.hooks[index];
                        let plan = match (probe.is_return, &hook.ret) {
                            (true, Some(ret)) => ret,
                            _ => &hook.entry,
                        };
                        self.collector.library(
                            &mut self.pairing,
                            hook.call,
                            probe.is_return,
                            plan,
                            &header,
                            payload,
                        );
                        return;
                    }
                };
                let function = &self.functions[function_index];
                if probe.is_return {
                    let fetched = lower::results(&function.plan.ret, &header.fetch_len, payload);
                    let ret = function.plan.decode_return(&header.regs, &fetched);
                    // At a return the canonical frame address is the stack pointer.
                    let closed = self.pairing.ret(header.tid, function_index, header.cfa);
                    for open in closed.unwound {
                        let record = self.inferred_unwound_record(
                            open,
                            "the call never returned (the stack unwound past it)",
                        );
                        sink(record);
                    }
                    match closed.call {
                        Some(open) => {
                            let record = self.record(open, Some(header.ktime_ns), ret);
                            sink(record);
                        }
                        None => self.stats[function_index].orphan_returns += 1,
                    }
                } else {
                    let fetched = lower::results(&function.plan.entry, &header.fetch_len, payload);
                    let decoded = function.plan.decode_entry(&header.regs, &fetched);
                    let open = OpenCall {
                        function: function_index,
                        // The stack pointer at the call's first instruction.
                        sp: header.cfa.wrapping_sub(8),
                        ktime_ns: header.ktime_ns,
                        pid: header.pid,
                        tid: header.tid,
                        data: Open {
                            args: decoded,
                            deps: CallDeps::default(),
                            beyond_return_depth: false,
                        },
                    };
                    for gone in self.pairing.enter(open) {
                        let record = self.inferred_unwound_record(
                            gone,
                            "the call never returned (its frame was reused)",
                        );
                        sink(record);
                    }
                    if let Some((open, depth)) = self.pairing.newest_mut(header.tid)
                        && depth > MAX_URETPROBE_DEPTH
                    {
                        open.data.beyond_return_depth = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// An unwind inferred from the stack. If the kernel dropped events of this function, the
    /// missing return may be one of them, and the record says so instead of guessing.
    fn inferred_unwound_record(&mut self, open: OpenCall<Open>, reason: &str) -> CallRecord {
        let reason = if open.data.beyond_return_depth {
            "no return seen: the call began with 64 traced calls already open on its thread, \
             and the kernel reports at most 64 nested returns per thread (deep recursion)"
        } else if self.stats[open.function].dropped > 0 {
            "no return seen: the call unwound, or its return event was dropped (ring buffer full)"
        } else {
            reason
        };
        self.unwound_record(open, reason)
    }

    fn unwound_record(&mut self, open: OpenCall<Open>, reason: &str) -> CallRecord {
        let returns_void = self.functions[open.function].plan.returns_void();
        let mut record = self.record(open, None, DecodedReturn::default());
        if !returns_void {
            record.unavailable.push(("return".into(), reason.into()));
        }
        record
    }

    fn record(
        &mut self,
        open: OpenCall<Open>,
        return_ktime: Option<u64>,
        ret: DecodedReturn,
    ) -> CallRecord {
        let function = &self.functions[open.function];
        let stats = &mut self.stats[open.function];
        stats.records += 1;
        if return_ktime.is_none() {
            stats.unwound += 1;
        }
        let wall_ns = (open.ktime_ns as i128 + self.clock_offset_ns).max(0) as u64;
        let Open { args, deps, .. } = open.data;
        let mut unavailable = args.unavailable;
        unavailable.extend(ret.unavailable);
        // Kernel read failures include reads of inactive enum variants, which the decoder
        // ignores; count what the record actually lacks.
        stats.fetch_errors += unavailable
            .iter()
            .filter(|(_, why)| why.starts_with("unreadable memory"))
            .count() as u64;
        CallRecord {
            id: None,
            function: function.name.clone(),
            binary: function.binary.display().to_string(),
            build_id: function.build_id.clone(),
            pid: open.pid,
            tid: open.tid,
            timestamp: UNIX_EPOCH + Duration::from_nanos(wall_ns),
            duration_ns: return_ktime.map(|t| t.saturating_sub(open.ktime_ns)),
            status: if return_ktime.is_none() {
                Status::Unwound
            } else if ret.is_error {
                Status::Error
            } else {
                Status::Ok
            },
            args: args.args,
            ret: ret.value,
            unavailable,
            after: ret.after,
            dependencies: deps.finish(open.ktime_ns),
        }
    }
}

fn load_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> AgentError {
    if is_permission_error(&error) {
        AgentError::Permission {
            source: Box::new(error),
        }
    } else if has_errno(&error, &[libc::ENOSYS]) {
        AgentError::NoBpf {
            source: Box::new(error),
        }
    } else {
        AgentError::Load {
            source: Box::new(error),
        }
    }
}

/// For a program we started, the path we resolved is the path it runs; for a running
/// process, go through its root so a different mount namespace still works.
fn attach_path(pid: u32, binary: &Path, spawned: bool) -> PathBuf {
    if spawned {
        return binary.to_owned();
    }
    let through_root = Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(binary.strip_prefix("/").unwrap_or(binary));
    if through_root.exists() {
        through_root
    } else {
        binary.to_owned()
    }
}

fn find_program(program: &std::ffi::OsStr) -> Result<PathBuf, AgentError> {
    let not_found = || AgentError::ProgramNotFound {
        program: program.to_string_lossy().into_owned(),
    };
    let as_path = Path::new(program);
    if as_path.components().count() > 1 {
        return std::fs::canonicalize(as_path).map_err(|_| not_found());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(as_path))
        .find(|candidate| candidate.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(not_found)
}

/// The entry plans' threshold for a sampling rate: a call is kept when a uniform random u32
/// is below it; `u32::MAX` keeps every call without drawing.
fn sample_threshold(rate: f64) -> Result<u32, AgentError> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(AgentError::SamplingRate { rate });
    }
    Ok(if rate >= 1.0 {
        u32::MAX
    } else {
        (rate * 4_294_967_296.0) as u32
    })
}

#[derive(Default)]
struct DebugCache {
    by_path: HashMap<PathBuf, Option<DebugInfo>>,
}

/// The name of process `pid` when it is a kernel thread (`PF_KTHREAD` in the flags of
/// `/proc/PID/stat`). Such a thread maps nothing, and probes on it would never fire.
fn kernel_thread(pid: u32) -> Option<String> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    // After the name: state, ppid, pgrp, session, tty_nr, tpgid, flags.
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    (flags & PF_KTHREAD != 0).then(|| name.to_owned())
}

/// The objects a process maps (the executable first), the paths it maps them by, and
/// whether each was replaced on disk since (its path now names another file).
type Objects = (Vec<ElfFile>, Vec<PathBuf>, Vec<bool>);

fn process_objects(pid: u32) -> Result<Objects, AgentError> {
    let maps = ProcessMaps::read(pid).map_err(|source| {
        if is_permission_error(&source) {
            AgentError::NoAccess { pid, source }
        } else if has_errno(&source, &[libc::ENOENT, libc::ESRCH]) {
            AgentError::NoSuchProcess { pid }
        } else {
            AgentError::Maps { pid, source }
        }
    })?;
    let objects = maps.objects();
    let mut elves = Vec::new();
    let mut map_paths = Vec::new();
    let mut replaced = Vec::new();
    for object in &objects {
        match ElfFile::open(&object.open_path) {
            Ok(elf) => {
                elves.push(elf);
                map_paths.push(object.path.clone());
                replaced.push(object.deleted);
            }
            // The executable must be readable; a library we cannot read is only skipped.
            Err(source) if elves.is_empty() => {
                return Err(AgentError::Elf {
                    path: object.open_path.clone(),
                    source,
                });
            }
            Err(_) => {}
        }
    }
    if elves.is_empty() {
        // A zombie maps nothing: there is nothing to trace.
        return Err(AgentError::NothingMapped { pid });
    }
    Ok((elves, map_paths, replaced))
}

/// Resolves every query in `elves` (the executable first: a name it defines wins over a
/// library's) and prepares its probes; `paths[i]` is how the process names `elves[i]`.
fn resolve_functions(
    elves: &[ElfFile],
    paths: &[PathBuf],
    replaced: &[bool],
    queries: &[String],
    limits: &PlanLimits,
) -> Result<Vec<TracedFunction>, AgentError> {
    let mut debug = DebugCache::default();
    let mut functions = Vec::new();
    for query in queries {
        let found = match resolve::resolve(query, &elves[..1]) {
            Ok(found) => found,
            Err(_) => resolve::resolve(query, elves)?,
        };
        for f in found {
            let index = elves.iter().position(|e| e.path() == f.object).unwrap_or(0);
            functions.push(prepare(
                f,
                &paths[index],
                replaced[index],
                &mut debug,
                &elves[index],
                limits,
            )?);
        }
    }
    Ok(dedup(functions))
}

fn prepare(
    found: ResolvedFunction,
    binary: &Path,
    replaced: bool,
    debug: &mut DebugCache,
    elf: &ElfFile,
    limits: &PlanLimits,
) -> Result<TracedFunction, AgentError> {
    if elf.is_go() {
        return Err(AgentError::GoProgram {
            function: found.symbol.demangled.clone(),
            binary: binary.to_owned(),
        });
    }
    if elf.is_ifunc(found.symbol.address) {
        return Err(AgentError::IndirectFunction {
            function: found.symbol.demangled.clone(),
            binary: found.object.clone(),
        });
    }
    let info = debug
        .by_path
        .entry(found.object.clone())
        .or_insert_with(|| DebugInfo::load(elf).ok().filter(|d| d.has_debug_info()));
    let signature = match info {
        Some(info) => info
            .signature(found.symbol.address)
            .map_err(|source| AgentError::Dwarf {
                path: found.object.clone(),
                source,
            })?,
        None => None,
    };
    let plan = plan::compile(signature.as_ref(), elf.data(), limits);
    let mut notes = Vec::new();
    if replaced {
        notes.push(format!(
            "{} was replaced on disk after the process started it: tracing the build that \
             runs ({})",
            binary.display(),
            found
                .build_id
                .as_deref()
                .map_or("no build id", |id| &id[..id.len().min(12)])
        ));
    }
    match info {
        Some(info) if info.path() != elf.path() => {
            notes.push(format!(
                "debug info from {}",
                outside_proc_root(info.path()).display()
            ));
        }
        Some(_) => {}
        None => notes.push(format!(
            "{} has no DWARF debug info (and no separate debug file was found): the argument \
             registers rdi, rsi, rdx, rcx, r8, r9 and rax at return are stored as raw words; \
             rebuild with -g, or put its debug file next to it, in its .debug folder or under \
             /usr/lib/debug/.build-id",
            binary.display()
        )),
    }
    if signature.as_ref().is_some_and(|s| s.inlined) {
        notes.push(
            "this function is also inlined into its callers; those inlined calls are not seen"
                .to_owned(),
        );
    }
    if plan.entry_site.offset > 0 {
        notes.push(format!(
            "entry probe after the prologue (+{:#x}), where the arguments are in the frame",
            plan.entry_site.offset
        ));
    }
    for (name, how) in plan.describe_entry() {
        if let Err(why) = how {
            notes.push(format!("{name}: not captured: {why}"));
        }
    }
    if let Some(Err(why)) = plan.describe_return() {
        notes.push(format!("return: not captured: {why}"));
    }
    let described = match &signature {
        Some(sig) => sig.describe(),
        None => format!("{} (no debug info)", found.symbol.demangled),
    };
    let entry = lower(&plan.entry, plan.entry_site.cfa).map_err(|source| AgentError::Plan {
        function: found.symbol.demangled.clone(),
        source,
    })?;
    // At a return the stack pointer is the canonical frame address.
    let at_return = chronicle_symbols::location::CfaRule { reg: 7, offset: 0 };
    let ret = lower(&plan.ret, at_return).map_err(|source| AgentError::Plan {
        function: found.symbol.demangled.clone(),
        source,
    })?;
    Ok(TracedFunction {
        name: found.symbol.demangled.clone(),
        binary: binary.to_owned(),
        build_id: found.build_id.clone().unwrap_or_default(),
        file_offset: found.file_offset,
        entry_offset: found.file_offset + plan.entry_site.offset,
        probe_path: replaced.then(|| elf.path().to_owned()),
        signature: described,
        notes,
        plan,
        entry,
        ret,
    })
}

/// A path as the traced process sees it, without the `/proc/PID/root` it was opened through.
fn outside_proc_root(path: &Path) -> PathBuf {
    let mut components = path.components();
    let through_root = components.next() == Some(std::path::Component::RootDir)
        && components.next().is_some_and(|c| c.as_os_str() == "proc")
        && components
            .next()
            .is_some_and(|c| c.as_os_str().to_string_lossy().parse::<u32>().is_ok())
        && components.next().is_some_and(|c| c.as_os_str() == "root");
    if through_root {
        Path::new("/").join(components.as_path())
    } else {
        path.to_owned()
    }
}

/// The same function named twice (`--func a --func a`) gets one pair of probes.
fn dedup(functions: Vec<TracedFunction>) -> Vec<TracedFunction> {
    let mut seen = std::collections::HashSet::new();
    functions
        .into_iter()
        .filter(|f| seen.insert((f.binary.clone(), f.file_offset)))
        .collect()
}
