//! Dependencies collected from outside the process: the files, connections, HTTP requests and
//! SQL statements a captured call made while it ran.
//!
//! The kernel side only reports; it emits a syscall or library call only on a thread inside a
//! captured call (the `ACTIVE` mark that captured functions' probes keep) and deeper in the
//! stack than that call. Here the events become [`Dependency`]s of the innermost open call:
//! syscall entries wait for their exits, descriptors are mapped to paths and peer addresses,
//! socket traffic (or OpenSSL plaintext) that starts with an HTTP request line becomes an
//! `http` dependency, SQLite statements are followed from `sqlite3_prepare*` through
//! `sqlite3_bind_*` to `sqlite3_step`, and libpq queries from `PQexec*` to what the program
//! asks of their results.

mod plans;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chronicle::Value;
use chronicle::record::{Dependency, DependencyKind};
use chronicle_common::{CapturePlan, EventHeader, fetch_status, reg};

use crate::pairing::Pairing;
pub(crate) use plans::{LibCall, LibraryHook, library_hooks, syscall_plans};
use plans::{PQ_PARAMS, SYSCALLS, Sys, fetched, fetched_text, fetched_u64};
use wire::{
    errno_text, floor_char_boundary, parse_http_request, parse_http_status, pg_failure,
    sockaddr_text, sqlite_error, tcp_peer,
};

/// Which dependencies to collect (`track_file_io`, `track_http_calls`, `track_db_calls`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Files: `open`, `read`, `write`, `close` of descriptors that are not sockets.
    pub files: bool,
    /// Connections and the HTTP requests on them (plain text, or through OpenSSL).
    pub network: bool,
    /// SQL statements run through SQLite or libpq.
    pub db: bool,
}

impl Tracking {
    pub fn any(self) -> bool {
        self.files || self.network || self.db
    }

    fn syscalls(self) -> bool {
        self.files || self.network
    }
}

/// Counts of what dependency collection saw and could not use; nothing is dropped silently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DependencyStats {
    /// Syscall and library events received from the kernel.
    pub events: u64,
    /// Dependencies attached to calls.
    pub recorded: u64,
    /// Hits outside any captured call, filtered in the kernel (not an error).
    pub outside: u64,
    /// Events the kernel could not write because the ring buffer was full.
    pub dropped: u64,
    /// Events with no open captured call to attach to (that call's entry was dropped or
    /// sampled out, or it unwound), or an exit whose entry was not seen.
    pub unattributed: u64,
    /// Reads and writes on a descriptor opened before tracing and closed before it could be
    /// identified: not recorded.
    pub unknown_descriptors: u64,
}

/// What a descriptor refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fd {
    File(String),
    Socket {
        address: Option<String>,
    },
    /// Event fds, epoll and the like: machinery, not dependencies.
    Internal,
}

/// A dependency of an open call, still being filled in.
#[derive(Debug)]
struct Building {
    kind: DependencyKind,
    start: u64,
    end: Option<u64>,
    detail: Detail,
}

#[derive(Debug)]
enum Detail {
    File {
        path: String,
        ops: Vec<&'static str>,
        read: u64,
        written: u64,
        error: Option<String>,
    },
    Net {
        address: Option<String>,
        sent: u64,
        received: u64,
        error: Option<String>,
        /// Bytes counted are the plaintext given to and read from TLS.
        tls: bool,
    },
    Http {
        method: String,
        target: String,
        host: Option<String>,
        status: Option<u16>,
        address: Option<String>,
        sent: u64,
        received: u64,
        error: Option<String>,
        tls: bool,
    },
    Db {
        /// `sqlite` or `postgresql`.
        system: &'static str,
        statement: String,
        params: Vec<Value>,
        rows: Option<u64>,
        error: Option<String>,
    },
}

/// The dependencies of one open call.
#[derive(Debug, Default)]
pub struct CallDeps {
    list: Vec<Building>,
    /// Descriptor → the file or connection dependency it feeds in this call.
    by_fd: HashMap<i32, usize>,
    /// Statement → the execution it is part of (until reset).
    by_stmt: HashMap<u64, usize>,
    /// libpq result → the query that made it.
    by_result: HashMap<u64, usize>,
}

impl CallDeps {
    /// The finished dependencies, with offsets from `call_start`.
    pub fn finish(self, call_start: u64) -> Vec<Dependency> {
        self.list
            .into_iter()
            .map(|b| Dependency {
                kind: b.kind,
                offset_ns: b.start.saturating_sub(call_start),
                duration_ns: b.end.map(|end| end.saturating_sub(b.start)),
                detail: b.detail.into_fields(),
            })
            .collect()
    }

    fn add(&mut self, kind: DependencyKind, start: u64, end: Option<u64>, detail: Detail) -> usize {
        self.list.push(Building {
            kind,
            start,
            end,
            detail,
        });
        self.list.len() - 1
    }
}

impl Detail {
    fn into_fields(self) -> Vec<(String, Value)> {
        let mut fields: Vec<(String, Value)> = Vec::new();
        let mut put = |name: &str, value: Value| fields.push((name.to_owned(), value));
        let text = |s: Option<String>| s.map_or(Value::Null, Value::Str);
        // The fields a connection and an HTTP request share.
        let traffic = |put: &mut dyn FnMut(&str, Value),
                       address: Option<String>,
                       tls: bool,
                       sent: u64,
                       received: u64,
                       error: Option<String>| {
            put("address", address.map_or(Value::Null, Value::Str));
            put("tls", Value::Bool(tls));
            put("sent", Value::UInt(sent));
            put("received", Value::UInt(received));
            if let Some(error) = error {
                put("error", Value::Str(error));
            }
        };
        match self {
            Detail::File {
                path,
                ops,
                read,
                written,
                error,
            } => {
                put("path", Value::Str(path));
                put("op", Value::Str(ops.join(" ")));
                put("bytes_read", Value::UInt(read));
                put("bytes_written", Value::UInt(written));
                if let Some(error) = error {
                    put("error", Value::Str(error));
                }
            }
            Detail::Net {
                address,
                sent,
                received,
                error,
                tls,
            } => {
                traffic(&mut put, address, tls, sent, received, error);
            }
            Detail::Http {
                method,
                target,
                host,
                status,
                address,
                sent,
                received,
                error,
                tls,
            } => {
                put("method", Value::Str(method));
                put("target", Value::Str(target));
                put("host", text(host));
                put(
                    "status",
                    status.map_or(Value::Null, |s| Value::UInt(s.into())),
                );
                traffic(&mut put, address, tls, sent, received, error);
            }
            Detail::Db {
                system,
                statement,
                params,
                rows,
                error,
            } => {
                put("system", Value::Str(system.into()));
                put("statement", Value::Str(statement));
                put("params", Value::Array(params));
                if let Some(rows) = rows {
                    put("rows", Value::UInt(rows));
                }
                if let Some(error) = error {
                    put("error", Value::Str(error));
                }
            }
        }
        fields
    }
}

/// A syscall entry waiting for its exit.
#[derive(Debug)]
struct PendingSyscall {
    sys: Sys,
    start: u64,
    sp: u64,
    args: [u64; 3],
    /// What the entry copied (a path, the first bytes written, an address).
    data: Option<Vec<u8>>,
}

impl PendingSyscall {
    /// The path an `open` was given.
    fn path(&self) -> String {
        self.data.as_deref().map_or_else(
            || "?".to_owned(),
            |p| String::from_utf8_lossy(p).into_owned(),
        )
    }

    /// The address a `connect` was given.
    fn address(&self) -> Option<String> {
        self.data.as_deref().and_then(sockaddr_text)
    }
}

/// A library call entry waiting for its return.
#[derive(Debug)]
struct PendingLib {
    call: LibCall,
    start: u64,
    /// The stack pointer at the call (its canonical frame address at return).
    cfa: u64,
    /// The statement, or the `SSL` object.
    stmt: u64,
    nbytes: i32,
    /// The plaintext an `SSL_write` was given (its first bytes).
    plaintext: Option<Vec<u8>>,
}

/// A prepared statement.
#[derive(Debug, Default)]
struct Statement {
    sql: String,
    params: BTreeMap<i32, Value>,
}

/// Turns dependency events into [`Dependency`]s of open calls.
pub(crate) struct Collector {
    tracking: Tracking,
    pub stats: DependencyStats,
    syscalls: HashMap<u32, Sys>,
    pending_sys: HashMap<u32, PendingSyscall>,
    pending_lib: HashMap<u32, Vec<PendingLib>>,
    fds: HashMap<(u32, i32), Fd>,
    statements: HashMap<(u32, u64), Statement>,
    /// Threads inside `sqlite3_exec`, whose own prepare and step calls are its parts.
    in_exec: HashMap<u32, u32>,
    /// `SSL` object → the descriptor its records travel on (seen in its reads and writes).
    tls_fd: HashMap<(u32, u64), i32>,
    /// libpq prepared statements: (pid, connection, name) → SQL.
    pg_prepared: HashMap<(u32, u64, String), String>,
    proc_root: PathBuf,
}

/// The data a dependency event needs from its open call.
pub trait HasDeps {
    fn deps(&mut self) -> &mut CallDeps;
}

impl Collector {
    pub fn new(tracking: Tracking) -> Collector {
        Collector {
            tracking,
            stats: DependencyStats::default(),
            syscalls: SYSCALLS.iter().map(|&(nr, _, sys)| (nr, sys)).collect(),
            pending_sys: HashMap::new(),
            pending_lib: HashMap::new(),
            fds: HashMap::new(),
            statements: HashMap::new(),
            in_exec: HashMap::new(),
            tls_fd: HashMap::new(),
            pg_prepared: HashMap::new(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// A thread exited: forget what it had pending.
    pub fn thread_exit(&mut self, tid: u32) {
        self.pending_sys.remove(&tid);
        self.pending_lib.remove(&tid);
        self.in_exec.remove(&tid);
    }

    /// A `sys_enter` (`exit == false`) or `sys_exit` event of syscall `nr`.
    pub fn syscall<T: HasDeps>(
        &mut self,
        pairing: &mut Pairing<T>,
        nr: u32,
        exit: bool,
        plan: &CapturePlan,
        header: &EventHeader,
        payload: &[u8],
    ) {
        self.stats.events += 1;
        let Some(&sys) = self.syscalls.get(&nr) else {
            return;
        };
        if !exit {
            if sys == Sys::Close {
                // At the entry, while the number is still this descriptor's: the exit can
                // reach us after another thread was given the same number (the closing thread
                // may be preempted between freeing it and its exit tracepoint).
                self.fds
                    .remove(&(header.pid, header.regs[reg::RDI as usize] as i32));
            }
            let data = (plan.n_ops > 0)
                .then(|| fetched(plan, header, payload, 0).map(<[u8]>::to_vec))
                .flatten();
            let regs = &header.regs;
            self.pending_sys.insert(
                header.tid,
                PendingSyscall {
                    sys,
                    start: header.ktime_ns,
                    sp: header.cfa,
                    args: [
                        regs[reg::RDI as usize],
                        regs[reg::RSI as usize],
                        regs[reg::RDX as usize],
                    ],
                    data,
                },
            );
            return;
        }
        let Some(pending) = self.pending_sys.remove(&header.tid) else {
            // Tracing began during this syscall, or its entry was dropped.
            if sys.gated() {
                self.stats.unattributed += 1;
            }
            return;
        };
        let ret = header.regs[reg::RAX as usize] as i64;
        let end = header.ktime_ns;
        let pid = header.pid;
        // The descriptor table follows every thread, inside a captured call or not.
        self.track_descriptor(pid, &pending, ret);
        let Some(open) = pairing.innermost_mut(header.tid, pending.sp) else {
            if pending.sys.gated() {
                self.stats.unattributed += 1;
            }
            return;
        };
        let deps = open.data.deps();
        let fd = pending.args[0] as i32;
        let before = deps.list.len();
        match pending.sys {
            Sys::Open { .. } => {
                if self.tracking.files {
                    let index = deps.add(
                        DependencyKind::File,
                        pending.start,
                        Some(end),
                        Detail::File {
                            path: pending.path(),
                            ops: vec!["open"],
                            read: 0,
                            written: 0,
                            error: (ret < 0).then(|| errno_text(ret)),
                        },
                    );
                    if ret >= 0 {
                        deps.by_fd.insert(ret as i32, index);
                    }
                }
            }
            Sys::Connect => {
                // A non-blocking connect answers EINPROGRESS and completes later.
                let failed = ret < 0 && ret != -(libc::EINPROGRESS as i64);
                if !self.tracking.network {
                    return;
                }
                let index = deps.add(
                    DependencyKind::Net,
                    pending.start,
                    Some(end),
                    Detail::Net {
                        address: pending.address(),
                        sent: 0,
                        received: 0,
                        error: failed.then(|| errno_text(ret)),
                        tls: false,
                    },
                );
                deps.by_fd.insert(fd, index);
            }
            Sys::Socket => {}
            Sys::Close => {
                if let Some(index) = deps.by_fd.remove(&fd)
                    && let Detail::File { ops, .. } = &mut deps.list[index].detail
                {
                    push_op(ops, "close");
                    deps.list[index].end = Some(end);
                }
            }
            Sys::Read { .. } | Sys::Write { .. } => {
                let is_write = matches!(pending.sys, Sys::Write { .. });
                // Inside SSL_read/SSL_write/the handshake: the bytes are TLS records of that
                // connection; its plaintext is recorded when the SSL call returns.
                let tls = self
                    .pending_lib
                    .get(&header.tid)
                    .and_then(|calls| calls.iter().rev().find(|p| p.call.is_tls()).map(|p| p.stmt));
                if let Some(ssl) = tls {
                    self.tls_fd.insert((pid, ssl), fd);
                    return;
                }
                let kind = match self.fds.get(&(pid, fd)) {
                    Some(kind) => kind.clone(),
                    None => match describe_fd(&self.proc_root, pid, fd) {
                        Some(kind) => {
                            self.fds.insert((pid, fd), kind.clone());
                            kind
                        }
                        None => {
                            self.stats.unknown_descriptors += 1;
                            Fd::Internal
                        }
                    },
                };
                let bytes = ret.max(0) as u64;
                let error = (ret < 0 && ret != -(libc::EAGAIN as i64)).then(|| errno_text(ret));
                match kind {
                    Fd::File(path) if self.tracking.files => {
                        let index = match deps.by_fd.get(&fd) {
                            Some(&index)
                                if matches!(deps.list[index].detail, Detail::File { .. }) =>
                            {
                                index
                            }
                            _ => {
                                let index = deps.add(
                                    DependencyKind::File,
                                    pending.start,
                                    None,
                                    Detail::File {
                                        path,
                                        ops: Vec::new(),
                                        read: 0,
                                        written: 0,
                                        error: None,
                                    },
                                );
                                deps.by_fd.insert(fd, index);
                                index
                            }
                        };
                        let dep = &mut deps.list[index];
                        dep.end = Some(end);
                        if let Detail::File {
                            ops,
                            read,
                            written,
                            error: first_error,
                            ..
                        } = &mut dep.detail
                        {
                            if is_write {
                                push_op(ops, "write");
                                *written += bytes;
                            } else {
                                push_op(ops, "read");
                                *read += bytes;
                            }
                            if first_error.is_none() {
                                *first_error = error;
                            }
                        }
                    }
                    Fd::Socket { address } if self.tracking.network => {
                        let content = if is_write {
                            pending.data.as_deref()
                        } else {
                            fetched_read(plan, header, payload, ret)
                        };
                        socket_io(
                            deps,
                            fd,
                            address,
                            is_write,
                            bytes,
                            error,
                            content,
                            pending.start,
                            end,
                        );
                    }
                    _ => {}
                }
            }
        }
        self.stats.recorded += (deps.list.len() - before) as u64;
    }

    /// Keeps the descriptor table right after a syscall that makes a descriptor (a close
    /// takes its own out at the entry).
    fn track_descriptor(&mut self, pid: u32, pending: &PendingSyscall, ret: i64) {
        let fd = pending.args[0] as i32;
        match pending.sys {
            Sys::Open { .. } if ret >= 0 => {
                self.fds.insert((pid, ret as i32), Fd::File(pending.path()));
            }
            Sys::Connect => {
                let address = pending.address();
                self.fds.insert((pid, fd), Fd::Socket { address });
            }
            Sys::Socket if ret >= 0 => {
                self.fds
                    .insert((pid, ret as i32), Fd::Socket { address: None });
            }
            _ => {}
        }
    }

    /// An entry or return of a library function.
    pub fn library<T: HasDeps>(
        &mut self,
        pairing: &mut Pairing<T>,
        call: LibCall,
        is_return: bool,
        plan: &CapturePlan,
        header: &EventHeader,
        payload: &[u8],
    ) {
        self.stats.events += 1;
        let tid = header.tid;
        let pid = header.pid;
        let regs = &header.regs;
        if !is_return {
            if call == LibCall::SqliteExec {
                *self.in_exec.entry(tid).or_default() += 1;
            } else if !call.is_tls() && !call.is_libpq() && self.in_exec.contains_key(&tid) {
                // sqlite3_exec's own statements: it is the dependency.
                return;
            }
            let stmt = regs[reg::RDI as usize];
            let text = || {
                fetched(plan, header, payload, 0).map(|b| String::from_utf8_lossy(b).into_owned())
            };
            if call.awaits_return() {
                self.pending_lib.entry(tid).or_default().push(PendingLib {
                    call,
                    start: header.ktime_ns,
                    // Equal to the return's (see `PlanBuilder::at_return`).
                    cfa: header.cfa,
                    stmt,
                    // The SQL is read at the return; its length in bytes (-1: to the NUL).
                    nbytes: match call {
                        LibCall::SqlitePrepare { .. } => regs[reg::RDX as usize] as i32,
                        _ => -1,
                    },
                    plaintext: matches!(call, LibCall::SslWrite { .. })
                        .then(|| fetched(plan, header, payload, 0).map(<[u8]>::to_vec))
                        .flatten(),
                });
            }
            match call {
                LibCall::PqClear => {
                    if let Some(open) = pairing.innermost_mut(tid, header.cfa) {
                        open.data.deps().by_result.remove(&stmt);
                    }
                }
                LibCall::SqliteBindInt => self.bind(
                    pid,
                    stmt,
                    regs,
                    Value::Int(regs[reg::RDX as usize] as i32 as i64),
                ),
                LibCall::SqliteBindInt64 => {
                    self.bind(pid, stmt, regs, Value::Int(regs[reg::RDX as usize] as i64))
                }
                LibCall::SqliteBindNull => self.bind(pid, stmt, regs, Value::Null),
                LibCall::SqliteBindDouble => self.bind(
                    pid,
                    stmt,
                    regs,
                    Value::Struct(vec![(
                        "unavailable".into(),
                        Value::Str("a double passed in an SSE register is not read".into()),
                    )]),
                ),
                LibCall::SqliteBindText => {
                    let mut value = text().unwrap_or_default();
                    let n = regs[reg::RCX as usize] as i32;
                    if n >= 0 && (n as usize) < value.len() {
                        value.truncate(floor_char_boundary(&value, n as usize));
                    }
                    self.bind(pid, stmt, regs, Value::Str(value));
                }
                LibCall::SqliteReset => {
                    if let Some(open) = pairing.innermost_mut(tid, header.cfa) {
                        open.data.deps().by_stmt.remove(&stmt);
                    }
                }
                LibCall::SqliteClearBindings => {
                    if let Some(s) = self.statements.get_mut(&(pid, stmt)) {
                        s.params.clear();
                    }
                }
                LibCall::SqliteFinalize => {
                    self.statements.remove(&(pid, stmt));
                    if let Some(open) = pairing.innermost_mut(tid, header.cfa) {
                        open.data.deps().by_stmt.remove(&stmt);
                    }
                }
                // Their work is at the return.
                _ => {}
            }
            if call == LibCall::SqliteStep {
                self.step_started(pairing, header, stmt);
            }
            return;
        }
        // A return: find its entry (the same function, the same frame).
        let stack = self.pending_lib.entry(tid).or_default();
        let at = stack
            .iter()
            .rposition(|p| p.call == call && p.cfa == header.cfa)
            .or_else(|| stack.iter().rposition(|p| p.call == call));
        let Some(at) = at else {
            if call == LibCall::SqliteExec || !self.in_exec.contains_key(&tid) {
                self.stats.unattributed += 1;
            }
            return;
        };
        let pending = stack.remove(at);
        if stack.is_empty() {
            self.pending_lib.remove(&tid);
        }
        let rc = regs[reg::RAX as usize] as i32;
        match call {
            LibCall::SqlitePrepare { .. } => {
                let stmt = fetched_u64(plan, header, payload, 3);
                let mut sql = fetched_text(plan, header, payload, 2);
                if pending.nbytes >= 0 && (pending.nbytes as usize) < sql.len() {
                    sql.truncate(floor_char_boundary(&sql, pending.nbytes as usize));
                }
                if rc == 0 && stmt != 0 {
                    self.statements.insert(
                        (pid, stmt),
                        Statement {
                            sql,
                            params: BTreeMap::new(),
                        },
                    );
                } else if let Some(open) = pairing.innermost_mut(tid, pending.cfa) {
                    // A statement that did not compile is a failed database call.
                    open.data.deps().add(
                        DependencyKind::Db,
                        pending.start,
                        Some(header.ktime_ns),
                        Detail::Db {
                            system: "sqlite",
                            statement: sql,
                            params: Vec::new(),
                            rows: None,
                            error: Some(sqlite_error(rc)),
                        },
                    );
                    self.stats.recorded += 1;
                }
            }
            LibCall::SqliteExec => {
                if let Some(depth) = self.in_exec.get_mut(&tid) {
                    *depth -= 1;
                    if *depth == 0 {
                        self.in_exec.remove(&tid);
                    }
                }
                match pairing.innermost_mut(tid, pending.cfa) {
                    Some(open) => {
                        open.data.deps().add(
                            DependencyKind::Db,
                            pending.start,
                            Some(header.ktime_ns),
                            Detail::Db {
                                system: "sqlite",
                                statement: fetched_text(plan, header, payload, 1),
                                params: Vec::new(),
                                rows: None,
                                error: (rc != 0).then(|| sqlite_error(rc)),
                            },
                        );
                        self.stats.recorded += 1;
                    }
                    None => self.stats.unattributed += 1,
                }
            }
            LibCall::SqliteStep => {
                let Some(open) = pairing.innermost_mut(tid, pending.cfa) else {
                    return;
                };
                let deps = open.data.deps();
                let Some(&index) = deps.by_stmt.get(&pending.stmt) else {
                    return;
                };
                let dep = &mut deps.list[index];
                dep.end = Some(header.ktime_ns);
                if let Detail::Db { rows, error, .. } = &mut dep.detail {
                    match rc {
                        100 => *rows = Some(rows.unwrap_or(0) + 1), // SQLITE_ROW
                        101 => {}                                   // SQLITE_DONE
                        _ => *error = Some(sqlite_error(rc)),
                    }
                }
            }
            LibCall::PqPrepare => {
                let name = fetched_text(plan, header, payload, 2);
                let sql = fetched_text(plan, header, payload, 3);
                self.pg_prepared.insert((pid, pending.stmt, name), sql);
            }
            LibCall::PqExec | LibCall::PqExecParams | LibCall::PqExecPrepared => {
                let result = regs[reg::RAX as usize];
                let (statement, params) =
                    self.pq_query(call, pid, pending.stmt, plan, header, payload);
                let Some(open) = pairing.innermost_mut(tid, pending.cfa) else {
                    self.stats.unattributed += 1;
                    return;
                };
                let deps = open.data.deps();
                let index = deps.add(
                    DependencyKind::Db,
                    pending.start,
                    Some(header.ktime_ns),
                    Detail::Db {
                        system: "postgresql",
                        statement,
                        params,
                        rows: None,
                        error: (result == 0)
                            .then(|| "no result: out of memory or no connection".to_owned()),
                    },
                );
                if result != 0 {
                    deps.by_result.insert(result, index);
                }
                self.stats.recorded += 1;
            }
            LibCall::PqResultStatus | LibCall::PqNtuples | LibCall::PqResultErrorMessage => {
                let Some(open) = pairing.innermost_mut(tid, pending.cfa) else {
                    return;
                };
                let deps = open.data.deps();
                let Some(&index) = deps.by_result.get(&pending.stmt) else {
                    return;
                };
                let Detail::Db { rows, error, .. } = &mut deps.list[index].detail else {
                    return;
                };
                match call {
                    LibCall::PqNtuples => *rows = Some(rc.max(0) as u64),
                    LibCall::PqResultStatus => {
                        if let Some(name) = pg_failure(rc) {
                            *error = Some(match error.take() {
                                Some(message) if !message.starts_with("PGRES_") => {
                                    format!("{name}: {message}")
                                }
                                _ => name.to_owned(),
                            });
                        }
                    }
                    _ => {
                        let message = fetched(plan, header, payload, 0)
                            .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                            .unwrap_or_default();
                        if !message.is_empty() {
                            *error = Some(match error.take() {
                                Some(name) if name.starts_with("PGRES_") && !name.contains(':') => {
                                    format!("{name}: {message}")
                                }
                                _ => message,
                            });
                        }
                    }
                }
            }
            LibCall::SslWrite { ex } | LibCall::SslRead { ex } => {
                let is_write = matches!(call, LibCall::SslWrite { .. });
                // Bytes moved: the return value, or (`_ex`) the count written through the
                // pointer when the call returned 1.
                let bytes = match (ex, is_write) {
                    (false, _) => rc.max(0) as u64,
                    (true, _) if rc != 1 => 0,
                    (true, true) => fetched_u64(plan, header, payload, 1),
                    (true, false) => fetched_u64(plan, header, payload, 2),
                };
                if bytes == 0 {
                    // Nothing moved (closed, or retry later): no traffic to record.
                    return;
                }
                let content = if is_write {
                    pending.plaintext.as_deref()
                } else {
                    let buffer = if ex { 3 } else { 1 };
                    fetched(plan, header, payload, buffer)
                        .map(|b| &b[..b.len().min(bytes as usize)])
                };
                let fd = self.tls_fd.get(&(pid, pending.stmt)).copied();
                let address = fd.and_then(|fd| match self.fds.get(&(pid, fd)) {
                    Some(Fd::Socket { address }) => address.clone(),
                    _ => None,
                });
                // Without a descriptor (a memory BIO), the connection is keyed by the object.
                let key = fd.unwrap_or(i32::MIN | (pending.stmt >> 4) as i32);
                let Some(open) = pairing.innermost_mut(tid, pending.cfa) else {
                    self.stats.unattributed += 1;
                    return;
                };
                let deps = open.data.deps();
                let before = deps.list.len();
                let index = socket_io(
                    deps,
                    key,
                    address,
                    is_write,
                    bytes,
                    None,
                    content,
                    pending.start,
                    header.ktime_ns,
                );
                if let Detail::Net { tls, .. } | Detail::Http { tls, .. } =
                    &mut deps.list[index].detail
                {
                    *tls = true;
                }
                self.stats.recorded += (deps.list.len() - before) as u64;
            }
            _ => {}
        }
    }

    /// A libpq query's statement and text parameters (binary ones are marked, not read), from
    /// its return event (see [`LibCall::plans`] for the ops).
    fn pq_query(
        &self,
        call: LibCall,
        pid: u32,
        conn: u64,
        plan: &CapturePlan,
        header: &EventHeader,
        payload: &[u8],
    ) -> (String, Vec<Value>) {
        if call == LibCall::PqExec {
            return (fetched_text(plan, header, payload, 1), Vec::new());
        }
        let first = fetched_text(plan, header, payload, 4);
        let statement = if call == LibCall::PqExecPrepared {
            match self.pg_prepared.get(&(pid, conn, first.clone())) {
                Some(sql) => sql.clone(),
                None => format!("EXECUTE {first}"),
            }
        } else {
            first
        };
        let count = (fetched_u64(plan, header, payload, 1) as i32).clamp(0, 64) as usize;
        let formats = fetched(plan, header, payload, 6 + PQ_PARAMS as usize).unwrap_or(&[]);
        let unavailable =
            |why: &str| Value::Struct(vec![("unavailable".into(), Value::Str(why.into()))]);
        let params = (0..count)
            .map(|i| {
                let binary = formats
                    .get(4 * i..4 * i + 4)
                    .is_some_and(|f| i32::from_le_bytes(f.try_into().expect("4 bytes")) == 1);
                if binary {
                    return unavailable("a binary-format parameter is not read");
                }
                if i >= PQ_PARAMS as usize {
                    return unavailable("parameters after the 8th are not read");
                }
                let op = 6 + i;
                match header.fetch_len[op] {
                    fetch_status::NULL => Value::Null,
                    _ => fetched(plan, header, payload, op).map_or_else(
                        || unavailable("unreadable memory"),
                        |b| Value::Str(String::from_utf8_lossy(b).into_owned()),
                    ),
                }
            })
            .collect();
        (statement, params)
    }

    fn bind(&mut self, pid: u32, stmt: u64, regs: &[u64], value: Value) {
        let index = regs[reg::RSI as usize] as i32;
        self.statements
            .entry((pid, stmt))
            .or_insert_with(|| Statement {
                sql: UNKNOWN_STATEMENT.to_owned(),
                params: BTreeMap::new(),
            })
            .params
            .insert(index, value);
    }

    /// A `sqlite3_step` began: the first step of an execution starts a dependency.
    fn step_started<T: HasDeps>(
        &mut self,
        pairing: &mut Pairing<T>,
        header: &EventHeader,
        stmt: u64,
    ) {
        let Some(open) = pairing.innermost_mut(header.tid, header.cfa) else {
            self.stats.unattributed += 1;
            return;
        };
        let deps = open.data.deps();
        if deps.by_stmt.contains_key(&stmt) {
            return;
        }
        let (statement, params) = match self.statements.get(&(header.pid, stmt)) {
            Some(s) => (s.sql.clone(), dense_params(&s.params)),
            None => (UNKNOWN_STATEMENT.to_owned(), Vec::new()),
        };
        let index = deps.add(
            DependencyKind::Db,
            header.ktime_ns,
            None,
            Detail::Db {
                system: "sqlite",
                statement,
                params,
                rows: Some(0),
                error: None,
            },
        );
        deps.by_stmt.insert(stmt, index);
        self.stats.recorded += 1;
    }
}

/// The text of a statement whose preparation was not seen (before `attach`, or its event
/// was dropped).
const UNKNOWN_STATEMENT: &str = "(prepared before tracing began)";

/// Bound parameters in order; an index never bound is SQL NULL, as SQLite treats it.
fn dense_params(params: &BTreeMap<i32, Value>) -> Vec<Value> {
    let last = params.keys().next_back().copied().unwrap_or(0).max(0);
    (1..=last)
        .map(|i| params.get(&i).cloned().unwrap_or(Value::Null))
        .collect()
}

fn push_op(ops: &mut Vec<&'static str>, op: &'static str) {
    if ops.last() != Some(&op) {
        ops.push(op);
    }
}

/// The bytes a read returned, as far as the exit copied them.
fn fetched_read<'a>(
    plan: &CapturePlan,
    header: &EventHeader,
    payload: &'a [u8],
    ret: i64,
) -> Option<&'a [u8]> {
    if plan.n_ops < 2 || ret <= 0 {
        return None;
    }
    let bytes = fetched(plan, header, payload, 1)?;
    Some(&bytes[..bytes.len().min(ret as usize)])
}

/// Reads and writes on a socket: an HTTP request line starts an `http` dependency, later
/// traffic on the descriptor adds to it; other traffic adds to a `net` dependency.
#[allow(clippy::too_many_arguments)]
fn socket_io(
    deps: &mut CallDeps,
    fd: i32,
    address: Option<String>,
    is_write: bool,
    bytes: u64,
    error: Option<String>,
    content: Option<&[u8]>,
    start: u64,
    end: u64,
) -> usize {
    if is_write && let Some((method, target, host)) = content.and_then(parse_http_request) {
        // A connection made for this request (no traffic yet) becomes the request: it
        // starts at the connect and keeps its address.
        let fresh = deps.by_fd.get(&fd).copied().filter(|&index| {
            matches!(
                deps.list[index].detail,
                Detail::Net {
                    sent: 0,
                    received: 0,
                    error: None,
                    ..
                }
            )
        });
        if let Some(index) = fresh {
            let dep = &mut deps.list[index];
            let connected = match &mut dep.detail {
                Detail::Net { address, .. } => address.take(),
                _ => None,
            };
            dep.kind = DependencyKind::Http;
            dep.end = Some(end);
            let tls = matches!(dep.detail, Detail::Net { tls: true, .. });
            dep.detail = Detail::Http {
                method,
                target,
                host,
                status: None,
                address: connected.or(address),
                sent: bytes,
                received: 0,
                error,
                tls,
            };
            return index;
        }
        let index = deps.add(
            DependencyKind::Http,
            start,
            Some(end),
            Detail::Http {
                method,
                target,
                host,
                status: None,
                address: address.clone(),
                sent: bytes,
                received: 0,
                error,
                tls: false,
            },
        );
        deps.by_fd.insert(fd, index);
        return index;
    }
    let index = match deps.by_fd.get(&fd) {
        Some(&index)
            if matches!(
                deps.list[index].detail,
                Detail::Net { .. } | Detail::Http { .. }
            ) =>
        {
            index
        }
        _ => {
            let index = deps.add(
                DependencyKind::Net,
                start,
                None,
                Detail::Net {
                    address,
                    sent: 0,
                    received: 0,
                    error: None,
                    tls: false,
                },
            );
            deps.by_fd.insert(fd, index);
            index
        }
    };
    let dep = &mut deps.list[index];
    dep.end = Some(end);
    match &mut dep.detail {
        Detail::Net {
            sent,
            received,
            error: first_error,
            ..
        } => {
            *if is_write { sent } else { received } += bytes;
            if first_error.is_none() {
                *first_error = error;
            }
        }
        Detail::Http {
            sent,
            received,
            status,
            error: first_error,
            ..
        } => {
            *if is_write { sent } else { received } += bytes;
            if !is_write && status.is_none() {
                *status = content.and_then(parse_http_status);
            }
            if first_error.is_none() {
                *first_error = error;
            }
        }
        _ => {}
    }
    index
}

/// What a descriptor opened before tracing began is: its `/proc` link, and for a TCP
/// socket the peer address from `/proc/PID/net/tcp{,6}`. `None` when it is closed already
/// (events are read a little after they happen).
fn describe_fd(proc_root: &Path, pid: u32, fd: i32) -> Option<Fd> {
    let base = proc_root.join(pid.to_string());
    let link = std::fs::read_link(base.join("fd").join(fd.to_string())).ok()?;
    let link = link.to_string_lossy().into_owned();
    if let Some(inode) = link
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
    {
        return Some(Fd::Socket {
            address: tcp_peer(&base, inode),
        });
    }
    if link.starts_with("anon_inode:") {
        return Some(Fd::Internal);
    }
    Some(Fd::File(link))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbound_parameters_are_null() {
        let params = BTreeMap::from([(1, Value::Int(7)), (3, Value::Str("x".into()))]);
        assert_eq!(
            dense_params(&params),
            [Value::Int(7), Value::Null, Value::Str("x".into())]
        );
    }
}
