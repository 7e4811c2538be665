//! The call record: one call of one function, as captured, whatever captured it.

use std::time::SystemTime;

pub use chronicle_symbols::Value;

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Returned normally.
    Ok,
    /// Returned an error (`Err(..)`, or an error return the capture knows about).
    Error,
    /// Never returned normally: the thread unwound past it (exception, panic, longjmp) or
    /// exited, or tracing stopped while it was still running.
    Unwound,
}

impl Status {
    /// The export-format name: `ok`, `error` or `unwound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Unwound => "unwound",
        }
    }

    /// Parses an export-format name.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "ok" => Some(Status::Ok),
            "error" => Some(Status::Error),
            "unwound" => Some(Status::Unwound),
            _ => None,
        }
    }
}

/// One captured call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// Assigned by the store; `None` until the record is written.
    pub id: Option<i64>,
    /// Demangled function name (`orders::process_order`), without a Rust hash suffix.
    pub function: String,
    /// Path of the binary or shared library the function lives in.
    pub binary: String,
    /// GNU build ID of that binary, hex; empty when it has none.
    pub build_id: String,
    pub pid: u32,
    pub tid: u32,
    /// Wall-clock time the call started.
    pub timestamp: SystemTime,
    /// `None` for calls that never returned.
    pub duration_ns: Option<u64>,
    pub status: Status,
    /// Parameter name → value, in declaration order. Parameters that could not be read are
    /// absent here and present in `unavailable`.
    pub args: Vec<(String, Value)>,
    /// The return value; `None` for `void` functions and for calls that did not return.
    pub ret: Option<Value>,
    /// Value path (`order.customer`, `return`, `after.buf`) → reason it was not read
    /// exactly.
    pub unavailable: Vec<(String, String)>,
    /// Output parameters as they were when the call returned (pointees of non-const pointer
    /// parameters, read again at return when asked for), in declaration order.
    pub after: Vec<(String, Value)>,
    /// What the call did outside itself while it ran (files, network, HTTP, databases), in
    /// the order it started them; only what the innermost captured call on its thread did.
    pub dependencies: Vec<Dependency>,
}

/// One operation a captured call made outside itself: a file opened, read or written, a
/// connection, an HTTP exchange, a database statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Dependency {
    pub kind: DependencyKind,
    /// When it started, in nanoseconds after the call started.
    pub offset_ns: u64,
    /// `None` when it had not finished when the call returned.
    pub duration_ns: Option<u64>,
    /// What it was, by kind: `path`, `bytes`; `address`, `sent`, `received`; `method`,
    /// `target`, `status`, `headers`; `system`, `statement`, `params`; ...
    pub detail: Vec<(String, Value)>,
}

/// What kind of operation a [`Dependency`] was; the export format's `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DependencyKind {
    File,
    Net,
    Http,
    Db,
}

impl DependencyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyKind::File => "file",
            DependencyKind::Net => "net",
            DependencyKind::Http => "http",
            DependencyKind::Db => "db",
        }
    }

    pub fn parse(s: &str) -> Option<DependencyKind> {
        match s {
            "file" => Some(DependencyKind::File),
            "net" => Some(DependencyKind::Net),
            "http" => Some(DependencyKind::Http),
            "db" => Some(DependencyKind::Db),
            _ => None,
        }
    }
}

impl CallRecord {
    /// A record can be replayed when every input was read exactly: nothing is unavailable
    /// but (parts of) the return value.
    pub fn replayable(&self) -> bool {
        !self
            .unavailable
            .iter()
            .any(|(path, _)| !is_return_path(path))
    }
}

/// `return`, `return.field`, `return[2]`: paths into the return value.
pub(crate) fn is_return_path(path: &str) -> bool {
    path.strip_prefix("return")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}
