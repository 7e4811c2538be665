//! Replays captured calls against a rebuilt native binary, the way a debugger's `call`
//! does: the binary runs as our child under ptrace, stopped once its runtime is initialised
//! (at `main`); each call sets the registers and stack as the calling convention wants,
//! points the return address at a breakpoint, resumes the child and waits for it to come
//! back. The return value is read and decoded with the capture plan's own decoder.
//!
//! One child serves many calls; a crash, a signal, an exit or a timeout ends that child
//! (the call is an `error` with the reason) and the next call starts a fresh one. With
//! [`NativeOptions::fresh_child`] every call gets its own child (functions with global
//! state). A shared library is loaded with `dlopen` into a host process (a copy of this
//! program, stopped before its `main` ran) and called the same way.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chronicle::Status;
use chronicle::replay::{Attempt, Outcome, ReplayCase, ReplayTarget};
use chronicle_symbols::{
    DebugInfo, ElfFile, ElfKind, FunctionPlan, PlanLimits, ProcessMaps, Signature, compile, resolve,
};
use serde_json::Map;

use crate::marshal::{self, INT_ARG_REGS, Scratch};
use crate::sys::{self, Regs, Stop};

/// Bytes of child memory for the arguments of one call (strings, structs, arrays).
const SCRATCH_SIZE: usize = 4 << 20;
/// Stack left untouched below the stopped frame: its red zone and then some.
const STACK_GAP: u64 = 4096;

/// How to run the rebuilt binary.
#[derive(Clone, Debug)]
pub struct NativeOptions {
    /// A call that has not returned after this long is killed and counts as an error.
    pub timeout: Duration,
    /// Start a new child for every call (for functions with global state).
    pub fresh_child: bool,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            timeout: Duration::from_secs(5),
            fresh_child: false,
        }
    }
}

/// Replay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayTargetError {
    #[error("cannot read {path}: {source}")]
    Binary {
        path: PathBuf,
        #[source]
        source: chronicle_symbols::ElfError,
    },
    #[error(
        "cannot start {path} under ptrace: {source} (replay needs permission to trace its child: run as root or lower kernel.yama.ptrace_scope)"
    )]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare {path} for calls: {reason}")]
    Prepare { path: PathBuf, reason: String },
}

/// A function of the new binary, ready to call.
struct Callee {
    /// Address in the object's own virtual addresses.
    vaddr: u64,
    sig: Option<Signature>,
    plan: FunctionPlan,
}

/// A rebuilt native binary (executable or shared library) to replay calls against.
pub struct NativeTarget {
    binary: PathBuf,
    elf: ElfFile,
    debug: Option<DebugInfo>,
    options: NativeOptions,
    library: bool,
    callees: HashMap<String, Result<Arc<Callee>, String>>,
    child: Option<Child>,
    watchdog: Watchdog,
    /// Children started so far (the first plus restarts).
    pub children_started: u64,
}

/// A stopped child ready for calls.
struct Child {
    pid: u32,
    mem: File,
    /// Registers at the stop point; every call starts from them.
    base: Regs,
    base_fp: sys::FpRegs,
    scratch: u64,
    /// A breakpoint the called function returns to.
    trap: u64,
    /// Runtime address minus the object's virtual address.
    bias: u64,
    /// What resuming the child and catching it at the breakpoint costs by itself (the
    /// fastest of a few calls that return at once); taken off every call's duration.
    overhead: Duration,
}

impl Drop for Child {
    fn drop(&mut self) {
        sys::kill(self.pid);
    }
}

impl NativeTarget {
    /// Opens the rebuilt binary; the first call starts it.
    pub fn new(binary: &Path, options: NativeOptions) -> Result<NativeTarget, ReplayTargetError> {
        let binary = binary.canonicalize().unwrap_or_else(|_| binary.to_owned());
        let elf = ElfFile::open(&binary).map_err(|source| ReplayTargetError::Binary {
            path: binary.clone(),
            source,
        })?;
        let library = elf.kind() == ElfKind::SharedLibrary;
        let debug = DebugInfo::load(&elf).ok();
        let mut target = NativeTarget {
            binary,
            elf,
            debug,
            options,
            library,
            callees: HashMap::new(),
            child: None,
            watchdog: Watchdog::start(),
            children_started: 0,
        };
        if !target.options.fresh_child {
            // Start now, so that a binary that cannot run fails before any call.
            let child = target.start_child()?;
            target.child = Some(child);
        }
        Ok(target)
    }

    fn prepare_error(&self, reason: impl Into<String>) -> ReplayTargetError {
        ReplayTargetError::Prepare {
            path: self.binary.clone(),
            reason: reason.into(),
        }
    }

    /// Starts the binary (or the host of a library) and stops it where calls can be made.
    fn start_child(&mut self) -> Result<Child, ReplayTargetError> {
        self.children_started += 1;
        let (program, host_elf) = if self.library {
            let host = std::env::current_exe().map_err(|e| self.prepare_error(e.to_string()))?;
            let elf = ElfFile::open(&host).map_err(|source| ReplayTargetError::Binary {
                path: host.clone(),
                source,
            })?;
            (host, Some(elf))
        } else {
            (self.binary.clone(), None)
        };
        let program_elf = host_elf.as_ref().unwrap_or(&self.elf);
        let pid = sys::spawn_traced(program.as_os_str(), &[] as &[&OsStr]).map_err(|source| {
            ReplayTargetError::Spawn {
                path: program.clone(),
                source,
            }
        })?;
        let mem = match File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
        {
            Ok(mem) => mem,
            Err(e) => {
                sys::kill(pid);
                return Err(self.prepare_error(format!("opening /proc/{pid}/mem: {e}")));
            }
        };
        let mut child = Child {
            pid,
            mem,
            base: sys::get_regs(pid).map_err(|e| self.prepare_error(e.to_string()))?,
            base_fp: sys::get_fpregs(pid).map_err(|e| self.prepare_error(e.to_string()))?,
            scratch: 0,
            trap: 0,
            bias: 0,
            overhead: Duration::ZERO,
        };
        let prepared = self.prepare(&mut child, &program, program_elf);
        prepared.map_err(|reason| self.prepare_error(reason))?;
        Ok(child)
    }

    /// Runs the child to `main` (or the entry point), maps the scratch area, plants the
    /// return breakpoint and, for a library, loads it.
    fn prepare(&self, child: &mut Child, program: &Path, elf: &ElfFile) -> Result<(), String> {
        let maps = ProcessMaps::read(child.pid).map_err(|e| e.to_string())?;
        let runtime = |vaddr: u64| -> Result<u64, String> {
            let offset = elf
                .file_offset(vaddr)
                .ok_or_else(|| format!("{vaddr:#x} is not in a loaded segment"))?;
            maps.runtime_address(program, offset)
                .ok_or_else(|| format!("{} is not mapped", program.display()))
        };
        let entry = runtime(entry_point(elf))?;
        let stop_at = match resolve("main", std::slice::from_ref(elf)) {
            Ok(found) if !found.is_empty() => runtime(found[0].symbol.address)?,
            _ => entry,
        };
        // Run to `main`: global constructors and the language runtime have run there.
        run_to(child, stop_at)?;
        // The entry point never runs again: its first byte becomes the return breakpoint.
        child.trap = entry;
        sys::write_memory(&child.mem, entry, &[0xcc]).map_err(|e| e.to_string())?;
        child.base = sys::get_regs(child.pid).map_err(|e| e.to_string())?;
        child.base_fp = sys::get_fpregs(child.pid).map_err(|e| e.to_string())?;
        child.scratch = inject_mmap(child, SCRATCH_SIZE as u64)?;
        if self.library {
            self.load_library(child)?;
        } else {
            child.bias = runtime(self.text_vaddr())? - self.text_vaddr();
        }
        child.overhead = self.calibrate(child)?;
        Ok(())
    }

    /// The ptrace round trip of a call: "calls" of the return breakpoint itself.
    fn calibrate(&self, child: &Child) -> Result<Duration, String> {
        let mut fastest = Duration::MAX;
        for _ in 0..5 {
            let setup = marshal::CallSetup::default();
            match call(
                child,
                child.trap,
                &setup,
                &self.watchdog,
                self.options.timeout,
            )? {
                Ok((_, took)) => fastest = fastest.min(took),
                Err(reason) => return Err(format!("an empty call failed: {reason}")),
            }
        }
        Ok(fastest)
    }

    /// Some address inside the object's first executable segment, for computing its bias.
    fn text_vaddr(&self) -> u64 {
        self.elf.segments().first().map_or(0, |s| s.vaddr)
    }

    /// `dlopen`s the library inside the host child.
    fn load_library(&self, child: &mut Child) -> Result<(), String> {
        let dlopen_at = libc_function(child.pid, "dlopen")?;
        let mut scratch = Scratch::new(child.scratch, SCRATCH_SIZE);
        let mut path = self.binary.as_os_str().as_encoded_bytes().to_vec();
        path.push(0);
        let at = scratch
            .alloc(path.len() as u64, 16, "path")
            .map_err(|e| e.to_string())?;
        let mut bytes = scratch.bytes;
        bytes[(at - child.scratch) as usize..].copy_from_slice(&path);
        sys::write_memory(&child.mem, child.scratch, &bytes).map_err(|e| e.to_string())?;
        const RTLD_NOW: u64 = 2;
        let setup = marshal::CallSetup {
            int_regs: vec![at, RTLD_NOW],
            ..Default::default()
        };
        let handle = match call(
            child,
            dlopen_at,
            &setup,
            &self.watchdog,
            self.options.timeout,
        )? {
            Ok((regs, _)) => regs.rax,
            Err(reason) => return Err(format!("dlopen crashed: {reason}")),
        };
        if handle == 0 {
            return Err(format!(
                "dlopen({}) failed: is it a library for this machine, with its dependencies installed?",
                self.binary.display()
            ));
        }
        let maps = ProcessMaps::read(child.pid).map_err(|e| e.to_string())?;
        let offset = self
            .elf
            .file_offset(self.text_vaddr())
            .ok_or("the library has no loadable segment")?;
        let at = maps
            .runtime_address(&self.binary, offset)
            .ok_or("the library is not mapped after dlopen")?;
        child.bias = at - self.text_vaddr();
        Ok(())
    }

    fn callee(&mut self, function: &str) -> Result<Arc<Callee>, String> {
        if let Some(found) = self.callees.get(function) {
            return found.clone();
        }
        let found = self.find_callee(function);
        self.callees.insert(function.to_owned(), found.clone());
        found
    }

    fn find_callee(&self, function: &str) -> Result<Arc<Callee>, String> {
        let found =
            resolve(function, std::slice::from_ref(&self.elf)).map_err(|e| e.to_string())?;
        let symbol = match found.as_slice() {
            [one] => &one.symbol,
            [] => return Err(format!("{function} is not in {}", self.binary.display())),
            many => {
                let names: Vec<&str> = many.iter().map(|f| f.symbol.demangled.as_str()).collect();
                return Err(format!(
                    "{function} is ambiguous in the new binary: {}",
                    names.join(", ")
                ));
            }
        };
        let sig = match &self.debug {
            Some(debug) => debug.signature(symbol.address).map_err(|e| e.to_string())?,
            None => None,
        };
        let limits = PlanLimits {
            capture_after: true,
            ..PlanLimits::default()
        };
        let plan = compile(sig.as_ref(), self.elf.data(), &limits);
        Ok(Arc::new(Callee {
            vaddr: symbol.address,
            sig,
            plan,
        }))
    }

    fn child(&mut self) -> Result<&mut Child, String> {
        if self.child.is_none() {
            let child = self.start_child().map_err(|e| e.to_string())?;
            self.child = Some(child);
        }
        Ok(self.child.as_mut().expect("just started"))
    }
}

impl ReplayTarget for NativeTarget {
    fn name(&self) -> String {
        self.binary.display().to_string()
    }

    fn build_id(&self) -> Option<String> {
        self.elf.build_id().map(str::to_owned)
    }

    fn call(&mut self, case: &ReplayCase) -> Attempt {
        let callee = match self.callee(&case.function) {
            Ok(c) => c,
            Err(reason) => return Attempt::Error { reason },
        };
        let Some(sig) = &callee.sig else {
            return Attempt::Unsupported {
                reason: format!(
                    "{} has no DWARF debug info in the new binary: rebuild it with -g",
                    case.function
                ),
            };
        };
        let timeout = self.options.timeout;
        let fresh = self.options.fresh_child;
        if let Err(reason) = self.child() {
            return Attempt::Error { reason };
        }
        let child = self.child.as_ref().expect("started above");
        let mut scratch = Scratch::new(child.scratch, SCRATCH_SIZE);
        let mut heap = ChildHeap {
            child,
            watchdog: &self.watchdog,
            timeout,
            allocator: None,
            elf: &self.elf,
        };
        let marshalled = marshal::marshal(sig, &case.args, &mut scratch, &mut heap);
        let setup = match marshalled {
            Ok(setup) => setup,
            Err(e) => {
                return Attempt::Unsupported {
                    reason: e.to_string(),
                };
            }
        };
        let written = sys::write_memory(&child.mem, child.scratch, &scratch.bytes).and_then(|()| {
            setup
                .heap_writes
                .iter()
                .try_for_each(|(at, bytes)| sys::write_memory(&child.mem, *at, bytes))
        });
        if let Err(e) = written {
            return Attempt::Error {
                reason: format!("writing the arguments into the child: {e}"),
            };
        }
        let address = callee.vaddr + child.bias;
        // Output parameters are read again at return from the pointers the entry probe
        // saved; where the probe sits after the prologue, stop there to take them.
        let offset = callee.plan.entry_site.offset;
        let entry_stop =
            (!callee.plan.entry.saves.is_empty() && offset != 0).then_some(address + offset);
        let result =
            call_with_entry_stop(child, address, &setup, &self.watchdog, timeout, entry_stop);
        let attempt = match result {
            Ok(Ok((regs, duration, entry_regs))) => {
                let stops = if entry_regs.is_some() { 2 } else { 1 };
                let duration = duration.saturating_sub(child.overhead * stops);
                let regs16 = dwarf_regs(&regs);
                let memory = ChildMemory(child.pid);
                let entry = match &entry_regs {
                    Some(r) => dwarf_regs(r),
                    None => {
                        let mut entry = regs16;
                        for (i, &r) in INT_ARG_REGS.iter().enumerate() {
                            entry[usize::from(r)] = setup.int_regs.get(i).copied().unwrap_or(0);
                        }
                        entry
                    }
                };
                let saves = if offset == 0 || entry_regs.is_some() {
                    callee.plan.entry_saves(&entry, &memory)
                } else {
                    Vec::new()
                };
                let mut decoded = callee.plan.read_return(&regs16, &memory, &saves);
                // Probes cannot read SSE registers; ptrace can.
                if let Some(value) = float_return(sig, &decoded, child.pid) {
                    decoded.value = Some(value);
                    decoded.unavailable.retain(|(path, _)| path != "return");
                }
                let after: Map<String, serde_json::Value> = decoded
                    .after
                    .iter()
                    .map(|(name, value)| (name.clone(), value.to_json()))
                    .collect();
                Attempt::Returned(Outcome {
                    ret: decoded
                        .value
                        .as_ref()
                        .map_or(serde_json::Value::Null, chronicle::Value::to_json),
                    status: if decoded.is_error {
                        Status::Error
                    } else {
                        Status::Ok
                    },
                    unavailable: decoded.unavailable,
                    after,
                    duration,
                })
            }
            Ok(Err(reason)) => {
                // The child is gone or in an unknown state: the next call starts another.
                self.child = None;
                Attempt::Error { reason }
            }
            Err(reason) => {
                self.child = None;
                Attempt::Error { reason }
            }
        };
        if fresh {
            self.child = None;
        }
        attempt
    }
}

/// Allocations from the child's own allocator: Rust's `__rust_alloc(size, align)` when the
/// binary has one (what `Box` frees with), else libc's `malloc`.
struct ChildHeap<'a> {
    child: &'a Child,
    watchdog: &'a Watchdog,
    timeout: Duration,
    elf: &'a ElfFile,
    /// `(address, takes an alignment)`.
    allocator: Option<(u64, bool)>,
}

impl marshal::Heap for ChildHeap<'_> {
    fn alloc(&mut self, size: u64, align: u64) -> Result<u64, String> {
        let (address, rust) = match self.allocator {
            Some(found) => found,
            None => {
                let found = self.find_allocator()?;
                self.allocator = Some(found);
                found
            }
        };
        let int_regs = if rust { vec![size, align] } else { vec![size] };
        let setup = marshal::CallSetup {
            int_regs,
            ..Default::default()
        };
        match call(self.child, address, &setup, self.watchdog, self.timeout)? {
            Ok((regs, _)) if regs.rax != 0 => Ok(regs.rax),
            Ok(_) => Err(format!(
                "the child's allocator returned NULL for {size} bytes"
            )),
            Err(reason) => Err(format!("allocating in the child: {reason}")),
        }
    }
}

impl ChildHeap<'_> {
    fn find_allocator(&self) -> Result<(u64, bool), String> {
        if let Ok(found) = resolve("__rust_alloc", std::slice::from_ref(self.elf))
            && let [one] = found.as_slice()
        {
            return Ok((one.symbol.address + self.child.bias, true));
        }
        let at = libc_function(self.child.pid, "malloc")
            .map_err(|e| format!("no allocator: the binary has no __rust_alloc, and {e}"))?;
        Ok((at, false))
    }
}

/// The runtime address of a function of the libc the child has loaded.
fn libc_function(pid: u32, name: &str) -> Result<u64, String> {
    let maps = ProcessMaps::read(pid).map_err(|e| e.to_string())?;
    let libc = maps
        .objects()
        .into_iter()
        .find(|o| {
            o.path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .ok_or("the process has no libc loaded")?;
    let elf = ElfFile::open(&libc.open_path).map_err(|e| e.to_string())?;
    let found = resolve(name, std::slice::from_ref(&elf)).map_err(|e| e.to_string())?;
    maps.runtime_address(&libc.path, found[0].file_offset)
        .ok_or_else(|| format!("libc's {name} is not mapped"))
}

/// The child's memory, for the plan runner.
struct ChildMemory(u32);

impl chronicle_symbols::run::Memory for ChildMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> usize {
        sys::read_memory(self.0, address, buf)
    }
}

/// The ELF header's entry point.
fn entry_point(elf: &ElfFile) -> u64 {
    elf.data()
        .get(24..32)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Resumes the child until it reaches `address` (a temporary breakpoint), and leaves it
/// stopped there with the original instruction back in place.
fn run_to(child: &Child, address: u64) -> Result<(), String> {
    let mut original = [0u8; 1];
    if sys::read_memory(child.pid, address, &mut original) != 1 {
        return Err(format!("cannot read the code at {address:#x}"));
    }
    sys::write_memory(&child.mem, address, &[0xcc]).map_err(|e| e.to_string())?;
    sys::cont(child.pid, 0).map_err(|e| e.to_string())?;
    loop {
        match sys::wait_stop(child.pid).map_err(|e| e.to_string())? {
            Stop::Signal(libc::SIGTRAP) => break,
            Stop::Signal(signal) => sys::cont(child.pid, signal).map_err(|e| e.to_string())?,
            Stop::Exited(code) => {
                return Err(format!("it exited with status {code} before reaching main"));
            }
            Stop::Killed(signal) => {
                return Err(format!(
                    "it was killed by {} before reaching main",
                    signal_name(signal)
                ));
            }
        }
    }
    let mut regs = sys::get_regs(child.pid).map_err(|e| e.to_string())?;
    if regs.rip != address + 1 {
        return Err(format!(
            "it stopped at {:#x}, not at {address:#x}",
            regs.rip
        ));
    }
    sys::write_memory(&child.mem, address, &original).map_err(|e| e.to_string())?;
    regs.rip = address;
    sys::set_regs(child.pid, &regs).map_err(|e| e.to_string())
}

/// Makes the child map `size` bytes of read-write memory; returns their address.
fn inject_mmap(child: &Child, size: u64) -> Result<u64, String> {
    let at = child.base.rip;
    let mut original = [0u8; 2];
    if sys::read_memory(child.pid, at, &mut original) != 2 {
        return Err("cannot read the code at the stop".into());
    }
    const SYSCALL: [u8; 2] = [0x0f, 0x05];
    sys::write_memory(&child.mem, at, &SYSCALL).map_err(|e| e.to_string())?;
    let mut regs = child.base;
    regs.rax = libc::SYS_mmap as u64;
    regs.rdi = 0;
    regs.rsi = size;
    regs.rdx = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    regs.r10 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    regs.r8 = u64::MAX;
    regs.r9 = 0;
    let result = (|| {
        sys::set_regs(child.pid, &regs).map_err(|e| e.to_string())?;
        sys::single_step(child.pid).map_err(|e| e.to_string())?;
        match sys::wait_stop(child.pid).map_err(|e| e.to_string())? {
            Stop::Signal(libc::SIGTRAP) => {}
            other => {
                return Err(format!(
                    "mapping scratch memory: the child stopped with {other:?}"
                ));
            }
        }
        let after = sys::get_regs(child.pid).map_err(|e| e.to_string())?;
        if (after.rax as i64) < 0 {
            return Err(format!(
                "mmap in the child failed: {}",
                std::io::Error::from_raw_os_error(-(after.rax as i64) as i32)
            ));
        }
        Ok(after.rax)
    })();
    sys::write_memory(&child.mem, at, &original).map_err(|e| e.to_string())?;
    sys::set_regs(child.pid, &child.base).map_err(|e| e.to_string())?;
    result
}

/// Makes one call in the child. `Ok(Ok((registers at return, duration)))` when it
/// returned; `Ok(Err(reason))` when it crashed, exited or timed out (the child is then
/// unusable); `Err` when ptrace itself failed.
fn call(
    child: &Child,
    address: u64,
    setup: &marshal::CallSetup,
    watchdog: &Watchdog,
    timeout: Duration,
) -> Result<Result<(Regs, Duration), String>, String> {
    call_with_entry_stop(child, address, setup, watchdog, timeout, None)
        .map(|r| r.map(|(regs, duration, _)| (regs, duration)))
}

/// Registers at return, the call's duration, and the registers at `entry_stop`.
type Returned = (Regs, Duration, Option<Regs>);

/// [`call`], also stopping once at `entry_stop` (the entry probe's site inside the
/// function) to read the registers there, as the entry probe would.
fn call_with_entry_stop(
    child: &Child,
    address: u64,
    setup: &marshal::CallSetup,
    watchdog: &Watchdog,
    timeout: Duration,
    entry_stop: Option<u64>,
) -> Result<Result<Returned, String>, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut entry_regs = None;
    let mut original = [0u8; 1];
    if let Some(stop) = entry_stop {
        if sys::read_memory(child.pid, stop, &mut original) != 1 {
            return Err(format!("cannot read the code at {stop:#x}"));
        }
        sys::write_memory(&child.mem, stop, &[0xcc]).map_err(io)?;
    }
    let mut regs = child.base;
    // Stack arguments sit just above the return address; rsp is 16-byte aligned at the
    // call, so the callee sees rsp ≡ 8 (mod 16).
    let below = (child.base.rsp - STACK_GAP) & !15;
    let args_at = (below - setup.stack.len() as u64) & !15;
    let ret_slot = args_at - 8;
    let mut stack = child.trap.to_le_bytes().to_vec();
    stack.extend_from_slice(&setup.stack);
    sys::write_memory(&child.mem, ret_slot, &stack).map_err(io)?;
    regs.rsp = ret_slot;
    regs.rip = address;
    // Not in a system call: nothing to restart.
    regs.orig_rax = u64::MAX;
    let slots = [
        &mut regs.rdi,
        &mut regs.rsi,
        &mut regs.rdx,
        &mut regs.rcx,
        &mut regs.r8,
        &mut regs.r9,
    ];
    for (slot, &value) in slots.into_iter().zip(&setup.int_regs) {
        *slot = value;
    }
    // Variadic callees read the number of vector registers used from al.
    regs.rax = setup.sse_regs.len() as u64;
    if !setup.sse_regs.is_empty() {
        let mut fp = child.base_fp;
        for (i, &word) in setup.sse_regs.iter().enumerate() {
            fp.xmm_space[i * 4] = word as u32;
            fp.xmm_space[i * 4 + 1] = (word >> 32) as u32;
            fp.xmm_space[i * 4 + 2] = 0;
            fp.xmm_space[i * 4 + 3] = 0;
        }
        sys::set_fpregs(child.pid, &fp).map_err(io)?;
    }
    sys::set_regs(child.pid, &regs).map_err(io)?;
    watchdog.arm(child.pid, timeout);
    let started = Instant::now();
    sys::cont(child.pid, 0).map_err(io)?;
    loop {
        let stop = sys::wait_stop(child.pid).map_err(io);
        let duration = started.elapsed();
        let stop = match stop {
            Ok(stop) => stop,
            Err(e) => {
                watchdog.disarm();
                return Err(e);
            }
        };
        match stop {
            Stop::Signal(libc::SIGTRAP) => {
                let mut after = sys::get_regs(child.pid).map_err(io)?;
                if let Some(stop) = entry_stop
                    && after.rip == stop + 1
                    && entry_regs.is_none()
                {
                    sys::write_memory(&child.mem, stop, &original).map_err(io)?;
                    after.rip = stop;
                    sys::set_regs(child.pid, &after).map_err(io)?;
                    entry_regs = Some(after);
                    sys::cont(child.pid, 0).map_err(io)?;
                    continue;
                }
                watchdog.disarm();
                if after.rip == child.trap + 1 {
                    return Ok(Ok((after, duration, entry_regs)));
                }
                return Ok(Err(format!(
                    "stopped by SIGTRAP at {:#x} (a breakpoint instruction in the code?)",
                    after.rip
                )));
            }
            Stop::Signal(
                signal @ (libc::SIGSEGV
                | libc::SIGBUS
                | libc::SIGILL
                | libc::SIGFPE
                | libc::SIGABRT
                | libc::SIGSYS),
            ) => {
                watchdog.disarm();
                let at = sys::get_regs(child.pid).map_or(0, |r| r.rip);
                return Ok(Err(format!(
                    "crashed with {} at {at:#x}{}",
                    signal_name(signal),
                    describe_code_address(child.pid, at)
                        .map(|place| format!(" ({place})"))
                        .unwrap_or_default()
                )));
            }
            Stop::Signal(signal) => {
                // Not ours to judge (SIGCHLD, SIGALRM, …): deliver it and keep waiting.
                sys::cont(child.pid, signal).map_err(io)?;
            }
            Stop::Exited(code) => {
                watchdog.disarm();
                return Ok(Err(format!(
                    "the process exited with status {code} during the call"
                )));
            }
            Stop::Killed(signal) => {
                if watchdog.disarm() {
                    return Ok(Err(format!(
                        "timed out after {} ms (--timeout-ms)",
                        timeout.as_millis()
                    )));
                }
                return Ok(Err(format!(
                    "the process was killed by {}",
                    signal_name(signal)
                )));
            }
        }
    }
}

/// A `float` or `double` return value, from xmm0, when the decoder could not read it.
fn float_return(
    sig: &Signature,
    decoded: &chronicle_symbols::DecodedReturn,
    pid: u32,
) -> Option<chronicle::Value> {
    let ret = sig.ret?;
    let in_fp = decoded
        .unavailable
        .iter()
        .any(|(path, why)| path == "return" && why == chronicle_symbols::location::IN_FP_REGISTER);
    let def = sig.types.get(ret);
    if !in_fp || !matches!(def.kind, chronicle_symbols::TypeKind::Float) {
        return None;
    }
    let fp = sys::get_fpregs(pid).ok()?;
    let low = u64::from(fp.xmm_space[0]) | (u64::from(fp.xmm_space[1]) << 32);
    match def.size? {
        4 => Some(chronicle::Value::Float(f64::from(f32::from_bits(
            low as u32,
        )))),
        8 => Some(chronicle::Value::Float(f64::from_bits(low))),
        _ => None,
    }
}

/// `function+0x12 in object` for a code address of the child, when a symbol covers it.
fn describe_code_address(pid: u32, address: u64) -> Option<String> {
    let maps = ProcessMaps::read(pid).ok()?;
    let mapping = maps
        .mappings()
        .iter()
        .find(|m| (m.start..m.end).contains(&address) && m.path.is_some())?;
    let path = mapping.path.as_ref()?;
    let file_offset = address - mapping.start + mapping.offset;
    let elf = ElfFile::open(path).ok()?;
    let segment = elf
        .segments()
        .iter()
        .find(|s| (s.offset..s.offset + s.file_size).contains(&file_offset))?;
    let vaddr = segment.vaddr + (file_offset - segment.offset);
    let object = path.file_name()?.to_string_lossy();
    let function = elf
        .functions()
        .iter()
        .filter(|f| f.address <= vaddr && vaddr < f.address + f.size.max(1))
        .min_by_key(|f| f.size)?;
    Some(format!(
        "{}+{:#x} in {object}",
        function.demangled,
        vaddr - function.address
    ))
}

/// The 16 general-purpose registers in DWARF order, as the decoder wants them.
fn dwarf_regs(r: &Regs) -> [u64; 16] {
    [
        r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ]
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSYS => "SIGSYS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// Kills a child whose call runs past its deadline. ptrace belongs to the thread that
/// started the child, so the deadline is kept by another thread that only sends SIGKILL.
struct Watchdog {
    shared: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct WatchState {
    armed: Option<(Instant, u32)>,
    fired: bool,
    quit: bool,
}

impl Watchdog {
    fn start() -> Watchdog {
        let shared = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("replay-watchdog".into())
            .spawn(move || {
                let (lock, cond) = &*theirs;
                let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !state.quit {
                    state = match state.armed {
                        None => cond.wait(state).unwrap_or_else(|e| e.into_inner()),
                        Some((deadline, pid)) => {
                            let now = Instant::now();
                            if now >= deadline {
                                sys::send_kill(pid);
                                state.fired = true;
                                state.armed = None;
                                state
                            } else {
                                cond.wait_timeout(state, deadline - now)
                                    .unwrap_or_else(|e| e.into_inner())
                                    .0
                            }
                        }
                    };
                }
            })
            .ok();
        Watchdog { shared, thread }
    }

    fn arm(&self, pid: u32, timeout: Duration) {
        let (lock, cond) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.armed = Some((Instant::now() + timeout, pid));
        state.fired = false;
        cond.notify_one();
    }

    /// Disarms; true when the deadline had passed and the child was killed.
    fn disarm(&self) -> bool {
        let (lock, _) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.armed = None;
        std::mem::take(&mut state.fired)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cond) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).quit = true;
        cond.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
