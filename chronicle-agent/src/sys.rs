//! The only module that makes raw system calls: starting a program held before `exec`,
//! process-exit notification (pidfd), polling, clocks and signal flags.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A child forked and waiting, before `exec`, until [`HeldChild::release`].
///
/// Probes are attached to its pid while it waits, so they are in place for its first call.
#[derive(Debug)]
pub struct HeldChild {
    pub pid: u32,
    /// The program it will run, for messages.
    pub program: String,
    gate: Option<OwnedFd>,
    status: Option<OwnedFd>,
}

/// Forks a child that execs `program` with `args` once released.
pub fn spawn_held(program: &OsStr, args: &[&OsStr]) -> io::Result<HeldChild> {
    let argv_c = argv(program, args)?;
    let program_c = &argv_c[0];
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());

    let (gate_read, gate_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    // SAFETY: the child only calls async-signal-safe functions (read, write, execvp, _exit)
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on valid descriptors and buffers, see above.
        unsafe {
            libc::close(gate_write.as_raw_fd());
            libc::close(status_read.as_raw_fd());
            let mut byte = 0u8;
            let n = libc::read(gate_read.as_raw_fd(), (&raw mut byte).cast(), 1);
            if n != 1 {
                libc::_exit(127);
            }
            libc::execvp(program_c.as_ptr(), argv.as_ptr());
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(status_write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    drop(gate_read);
    drop(status_write);
    Ok(HeldChild {
        pid: pid as u32,
        program: program.to_string_lossy().into_owned(),
        gate: Some(gate_write),
        status: Some(status_read),
    })
}

impl HeldChild {
    /// Lets the child exec; returns the exec error if it failed.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(gate) = self.gate.take() {
            write_all(gate.as_raw_fd(), &[1])?;
        }
        if let Some(status) = self.status.take() {
            let mut buf = [0u8; 4];
            // The status pipe is close-on-exec in the child: EOF means exec succeeded.
            let n = read_full(status.as_raw_fd(), &mut buf)?;
            if n == 4 {
                let _ = wait(self.pid, true);
                return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
            }
        }
        Ok(())
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        // Never released (attach failed): closing the gate makes the child exit without
        // running the program; reap it.
        if self.gate.take().is_some() {
            let _ = wait(self.pid, true);
        }
    }
}

/// `program` and `args` as C strings, for `execv`.
fn argv(program: &OsStr, args: &[&OsStr]) -> io::Result<Vec<CString>> {
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte")
            })
        })
        .collect()
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn read_full(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the destination range lies inside `buf`.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        match n {
            0 => break,
            n if n < 0 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(done)
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Reaps `pid` (our child). `None` when `block` is false and it is still running.
pub fn wait(pid: u32, block: bool) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if r == 0 {
            return Ok(None);
        }
        return Ok(Some(if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }));
    }
}

/// A descriptor that becomes readable when the process exits (`pidfd_open`).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until one of `fds` is readable or `timeout` passes; returns which are readable.
pub fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if r < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns: turns `bpf_ktime_get_ns()` into wall-clock time.
pub fn realtime_offset_ns() -> i128 {
    let mono = clock_ns(libc::CLOCK_MONOTONIC);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let mono2 = clock_ns(libc::CLOCK_MONOTONIC);
    real as i128 - ((mono as i128 + mono2 as i128) / 2)
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing us, so tracing can flush and detach.
pub fn install_stop_handlers() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous =
            unsafe { libc::signal(signal, on_stop_signal as *const () as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_handlers`].
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Whether a process with this pid exists (and is not a zombie we could see).
pub fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    alive || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// ---- ptrace: replaying calls in a child of a rebuilt binary -----------------------------

/// General-purpose registers of a stopped tracee.
pub type Regs = libc::user_regs_struct;
/// x87/SSE state of a stopped tracee (`xmm_space` holds xmm0..15).
pub type FpRegs = libc::user_fpregs_struct;

/// Forks a child that asks to be traced, sends stdio to `/dev/null` and execs `program`;
/// returns once the child is stopped at its `exec` (before the dynamic loader ran). The
/// child is killed if we die (`PTRACE_O_EXITKILL`).
pub fn spawn_traced(program: &OsStr, args: &[&OsStr]) -> io::Result<u32> {
    let argv_c = argv(program, args)?;
    let program_c = &argv_c[0];
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let dev_null = c"/dev/null";
    let (status_read, status_write) = pipe()?;
    // SAFETY: the child only calls async-signal-safe functions (ptrace, open, dup2, execv,
    // write, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on valid descriptors and buffers, see above.
        unsafe {
            libc::close(status_read.as_raw_fd());
            let null = libc::open(dev_null.as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
            }
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == 0 {
                libc::execv(program_c.as_ptr(), argv.as_ptr());
            }
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(status_write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    drop(status_write);
    let pid = pid as u32;
    let mut buf = [0u8; 4];
    // The status pipe is close-on-exec: EOF means exec succeeded.
    if read_full(status_read.as_raw_fd(), &mut buf)? == 4 {
        let _ = wait(pid, true);
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
    }
    match wait_stop(pid)? {
        Stop::Signal(libc::SIGTRAP) => {}
        other => {
            kill(pid);
            return Err(io::Error::other(format!(
                "the child did not stop at exec: {other:?}"
            )));
        }
    }
    ptrace(
        libc::PTRACE_SETOPTIONS,
        pid,
        0,
        libc::PTRACE_O_EXITKILL as usize,
    )?;
    Ok(pid)
}

fn ptrace(request: libc::c_uint, pid: u32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: the requests used here take integers or a pointer to a buffer of the size
    // the request implies, which the callers pass.
    let r = unsafe { libc::ptrace(request, pid as libc::pid_t, addr, data) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Reads the registers of a stopped tracee.
pub fn get_regs(pid: u32) -> io::Result<Regs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is valid.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    ptrace(libc::PTRACE_GETREGS, pid, 0, (&raw mut regs) as usize)?;
    Ok(regs)
}

/// Sets the registers of a stopped tracee.
pub fn set_regs(pid: u32, regs: &Regs) -> io::Result<()> {
    ptrace(libc::PTRACE_SETREGS, pid, 0, (&raw const *regs) as usize).map(drop)
}

/// Reads the x87/SSE state of a stopped tracee.
pub fn get_fpregs(pid: u32) -> io::Result<FpRegs> {
    // SAFETY: user_fpregs_struct is plain integers; all-zero is valid.
    let mut regs: FpRegs = unsafe { std::mem::zeroed() };
    ptrace(libc::PTRACE_GETFPREGS, pid, 0, (&raw mut regs) as usize)?;
    Ok(regs)
}

/// Sets the x87/SSE state of a stopped tracee.
pub fn set_fpregs(pid: u32, regs: &FpRegs) -> io::Result<()> {
    ptrace(libc::PTRACE_SETFPREGS, pid, 0, (&raw const *regs) as usize).map(drop)
}

/// Resumes a stopped tracee, delivering `signal` (0 for none).
pub fn cont(pid: u32, signal: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_CONT, pid, 0, signal as usize).map(drop)
}

/// Runs one instruction of a stopped tracee.
pub fn single_step(pid: u32) -> io::Result<()> {
    ptrace(libc::PTRACE_SINGLESTEP, pid, 0, 0).map(drop)
}

/// Kills a child and reaps it.
pub fn kill(pid: u32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let _ = wait(pid, true);
}

/// Sends SIGKILL without reaping (the tracer thread reaps).
pub fn send_kill(pid: u32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Why a tracee stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Stopped with this signal (SIGTRAP for breakpoints and single steps).
    Signal(i32),
    Exited(i32),
    Killed(i32),
}

/// Waits for the next stop or the end of a tracee.
pub fn wait_stop(pid: u32) -> io::Result<Stop> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(if libc::WIFSTOPPED(status) {
            Stop::Signal(libc::WSTOPSIG(status))
        } else if libc::WIFSIGNALED(status) {
            Stop::Killed(libc::WTERMSIG(status))
        } else {
            Stop::Exited(libc::WEXITSTATUS(status))
        });
    }
}

/// Reads a tracee's memory as far as it is readable (`process_vm_readv`).
pub fn read_memory(pid: u32, address: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let local = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: buf.len() - done,
        };
        let remote = libc::iovec {
            iov_base: (address + done as u64) as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        // SAFETY: `local` describes memory inside `buf`; the remote side is only read.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    done
}

/// Writes a tracee's memory through `/proc/PID/mem`, which may write read-only pages
/// (code) of a tracee, as debuggers do.
pub fn write_memory(mem: &std::fs::File, address: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    mem.write_all_at(bytes, address)
}
