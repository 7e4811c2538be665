//! Errors of the agent, each saying what to do about it.

use std::path::PathBuf;

use chronicle_symbols::{dwarf::DwarfError, elf::ElfError, maps::MapsError, resolve::ResolveError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no process with pid {pid}: check the pid (`pgrep NAME`) and that it is still running")]
    NoSuchProcess { pid: u32 },
    #[error(
        "not allowed to read process {pid}: run as root (sudo), or as its user with CAP_BPF and \
         CAP_PERFMON"
    )]
    NoAccess {
        pid: u32,
        #[source]
        source: MapsError,
    },
    #[error("process {pid} maps no executable: it has exited (a zombie); check the pid")]
    NothingMapped { pid: u32 },
    #[error(
        "pid {pid} ({name}) is a kernel thread: it runs no program whose functions could be \
         traced; give the pid of a user-space process (`pgrep NAME`)"
    )]
    KernelThread { pid: u32, name: String },
    #[error("cannot read the memory map of pid {pid}")]
    Maps {
        pid: u32,
        #[source]
        source: MapsError,
    },
    #[error("cannot read {}", path.display())]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("cannot read DWARF debug info of {}", path.display())]
    Dwarf {
        path: PathBuf,
        #[source]
        source: DwarfError,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("`{program}` not found: give a path or a program on PATH")]
    ProgramNotFound { program: String },
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "not allowed to load eBPF programs: run as root (sudo) or grant CAP_BPF and CAP_PERFMON \
         (setcap cap_bpf,cap_perfmon+ep on the chronicle binary)"
    )]
    Permission {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "this kernel has no BPF (the bpf system call is not implemented): Chronicle needs \
         Linux 5.15+ built with CONFIG_BPF_SYSCALL and CONFIG_UPROBE_EVENTS; where that cannot \
         be had, Rust code can record itself with #[capture]"
    )]
    NoBpf {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "this kernel cannot place uprobes (perf_event_open for a uprobe is not implemented): \
         Chronicle needs a kernel built with CONFIG_UPROBE_EVENTS; where that cannot be had, \
         Rust code can record itself with #[capture]"
    )]
    NoUprobes {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "this kernel cannot load Chronicle's eBPF programs (needs Linux 5.15+ with BPF and uprobes)"
    )]
    Load {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot attach a probe to {function} in {}", binary.display())]
    Attach {
        function: String,
        binary: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "`{function}` in {} is an indirect function (its resolver runs once at load time), so a \
         probe on it would never fire: trace the implementation it resolves to, or its caller",
        binary.display()
    )]
    IndirectFunction { function: String, binary: PathBuf },
    #[error(
        "`{function}` is in {}, a Go program: a return probe would crash it (Go moves \
         goroutine stacks, and the kernel's return trampoline breaks that), and Chronicle \
         cannot trace Go yet; trace a C, C++ or Rust function instead",
        binary.display()
    )]
    GoProgram { function: String, binary: PathBuf },
    #[error("cannot build the capture plan of {function}: {source}; please report this bug")]
    Plan {
        function: String,
        #[source]
        source: crate::lower::LowerError,
    },
    #[error("sampling rate {rate} is out of range: give a number from 0 to 1")]
    SamplingRate { rate: f64 },
    #[error("no --func given: name at least one function to trace")]
    NoFunctions,
    #[error("too many probes ({count}); the limit is {limit}")]
    TooManyProbes { count: usize, limit: u32 },
    #[error("reading events failed")]
    Io(#[from] std::io::Error),
}

impl AgentError {
    /// Whether the error is about the environment (permissions, kernel) rather than the input.
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            AgentError::Permission { .. }
                | AgentError::NoAccess { .. }
                | AgentError::Load { .. }
                | AgentError::NoBpf { .. }
                | AgentError::NoUprobes { .. }
        )
    }
}

/// Walks an error's sources looking for EPERM/EACCES, the signature of missing capabilities.
pub(crate) fn is_permission_error(error: &(dyn std::error::Error + 'static)) -> bool {
    has_errno(error, &[libc::EPERM, libc::EACCES])
}

/// Whether any source of `error` is an I/O error with one of `errnos`.
pub(crate) fn has_errno(error: &(dyn std::error::Error + 'static), errnos: &[i32]) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error().is_some_and(|n| errnos.contains(&n))
        {
            return true;
        }
        current = e.source();
    }
    false
}
