//! Capture plans for dependency hooks, built by hand: which syscalls and library functions
//! are followed, and what each reads (the registers are the C calling convention's, or a
//! syscall's arguments).

use std::path::PathBuf;

use chronicle_common::{
    CapturePlan, EventHeader, FetchOp, LARGE_SLOT, SMALL_SLOT, base, class, flags, len_from,
    op_kind, reg,
};
use chronicle_symbols::elf::ElfFile;

use super::Tracking;

/// The syscalls followed, by what they do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sys {
    /// The path is a C string in this register.
    Open {
        path: u8,
    },
    /// `content`: the first bytes read are copied at the exit (HTTP status lines).
    Read {
        content: bool,
    },
    /// `content`: the first bytes written are copied at the entry (HTTP request lines).
    Write {
        content: bool,
    },
    Close,
    Connect,
    /// Returns a new socket descriptor (`socket`, `accept`, `accept4`).
    Socket,
}

impl Sys {
    /// Descriptor-table syscalls are followed on every thread (they are rare, and a
    /// descriptor opened before a captured call and used inside it must be known); reads and
    /// writes only inside captured calls.
    pub(super) fn gated(self) -> bool {
        matches!(self, Sys::Read { .. } | Sys::Write { .. })
    }
}

/// x86-64 syscall numbers, with their names for readers.
pub(super) const SYSCALLS: &[(u32, &str, Sys)] = &[
    (0, "read", Sys::Read { content: true }),
    (1, "write", Sys::Write { content: true }),
    (2, "open", Sys::Open { path: reg::RDI }),
    (3, "close", Sys::Close),
    (17, "pread64", Sys::Read { content: false }),
    (18, "pwrite64", Sys::Write { content: false }),
    (19, "readv", Sys::Read { content: false }),
    (20, "writev", Sys::Write { content: false }),
    (41, "socket", Sys::Socket),
    (42, "connect", Sys::Connect),
    (43, "accept", Sys::Socket),
    (44, "sendto", Sys::Write { content: true }),
    (45, "recvfrom", Sys::Read { content: true }),
    (46, "sendmsg", Sys::Write { content: false }),
    (47, "recvmsg", Sys::Read { content: false }),
    (85, "creat", Sys::Open { path: reg::RDI }),
    (257, "openat", Sys::Open { path: reg::RSI }),
    (288, "accept4", Sys::Socket),
    (295, "preadv", Sys::Read { content: false }),
    (296, "pwritev", Sys::Write { content: false }),
    (437, "openat2", Sys::Open { path: reg::RSI }),
];

/// Longest path read by `open`.
pub(super) const PATH_BYTES: u16 = 256;
/// Bytes of a write or send copied to find an HTTP request line and `Host` header.
pub(super) const WRITE_BYTES: u16 = 256;
/// Bytes of a read or receive copied to find an HTTP status line.
pub(super) const READ_BYTES: u16 = 64;
/// Longest SQL statement read (a LARGE plan).
pub(super) const SQL_BYTES: u16 = 2048;
/// Longest text parameter read.
pub(super) const PARAM_BYTES: u16 = 256;
/// Bytes of an address read by `connect` (`sockaddr_in6` is 28, `sockaddr_un` 110).
pub(super) const SOCKADDR_BYTES: u16 = 128;

/// How many bytes a fetch reads (at most its cap).
#[derive(Clone, Copy)]
pub(super) enum Len {
    /// The cap.
    Cap,
    /// The value of a register.
    Reg(u8),
    /// The 8-byte value an earlier op fetched.
    Fetched(usize),
}

/// A plan under construction: ops are laid out one after another in the payload.
pub(super) struct PlanBuilder {
    plan: CapturePlan,
    next_dst: u16,
    large: bool,
}

impl PlanBuilder {
    fn new(flags: u8) -> PlanBuilder {
        PlanBuilder {
            plan: CapturePlan {
                flags,
                ..CapturePlan::default()
            },
            next_dst: 0,
            large: false,
        }
    }

    fn push(&mut self, mut op: FetchOp) -> usize {
        let index = self.plan.n_ops as usize;
        op.dst = self.next_dst;
        op.scale = 1;
        // Results are 8-aligned so a fetched pointer can be followed.
        self.next_dst += op.len.div_ceil(8) * 8;
        self.large |= op.len as usize > SMALL_SLOT || op.dst as usize >= SMALL_SLOT;
        self.plan.ops[index] = op;
        self.plan.n_ops += 1;
        index
    }

    /// A NUL-terminated string whose address is in `reg`.
    fn c_string(&mut self, reg: u8, cap: u16) -> usize {
        self.push(FetchOp {
            kind: op_kind::C_STRING,
            base: base::REG,
            base_src: reg as u16,
            len: cap,
            ..FetchOp::default()
        })
    }

    /// Bytes at the address in `reg`, as many as `len_reg` says, at most `cap`.
    fn memory(&mut self, reg: u8, len_reg: u8, cap: u16) -> usize {
        self.push(FetchOp {
            kind: op_kind::MEMORY,
            base: base::REG,
            base_src: reg as u16,
            len_from: len_from::REG,
            len_src: len_reg as u16,
            len: cap,
            ..FetchOp::default()
        })
    }

    /// The 8 bytes at `offset` from the stack pointer (at a function's first instruction,
    /// its 7th integer argument is at `rsp + 8`).
    fn stack_word(&mut self, offset: i32) -> usize {
        self.push(FetchOp {
            kind: op_kind::MEMORY,
            base: base::REG,
            base_src: reg::RSP as u16,
            len: 8,
            offset,
            ..FetchOp::default()
        })
    }

    /// Entry probes: keep the 8 bytes op `op` fetched for the return.
    fn save_fetched(&mut self, op: usize) {
        let slot = self.plan.n_saves as usize;
        self.plan.save_base[slot] = base::FETCHED;
        self.plan.save_src[slot] = self.plan.ops[op].dst;
        self.plan.n_saves += 1;
    }

    /// The C string element `element` of an array op `array` fetched.
    fn c_string_in(&mut self, array: usize, element: u16, cap: u16) -> usize {
        let base_src = self.plan.ops[array].dst + 8 * element;
        self.push(FetchOp {
            kind: op_kind::C_STRING,
            base: base::FETCHED,
            base_src,
            len: cap,
            parent: array as u8 + 1,
            ..FetchOp::default()
        })
    }

    /// Return probes: the word the entry saved in `slot`.
    fn saved(&mut self, slot: u16) -> usize {
        self.push(FetchOp {
            kind: op_kind::SAVED,
            base_src: slot,
            len: 8,
            ..FetchOp::default()
        })
    }

    /// Bytes at the address op `pointer` fetched, as many as `len` says, at most `cap`.
    fn memory_at(&mut self, pointer: usize, len: Len, cap: u16) -> usize {
        let base_src = self.plan.ops[pointer].dst;
        let (len_from, len_src) = match len {
            Len::Cap => (len_from::CONST, 0),
            Len::Reg(reg) => (len_from::REG, reg as u16),
            Len::Fetched(op) => (len_from::FETCHED, self.plan.ops[op].dst),
        };
        self.push(FetchOp {
            kind: op_kind::MEMORY,
            base: base::FETCHED,
            base_src,
            len_from,
            len_src,
            len: cap,
            parent: pointer as u8 + 1,
            ..FetchOp::default()
        })
    }

    /// Entry probes: keep register `reg` for the return (slot = order of calls).
    fn save_reg(&mut self, reg: u8) {
        let slot = self.plan.n_saves as usize;
        self.plan.save_base[slot] = base::REG;
        self.plan.save_src[slot] = reg as u16;
        self.plan.n_saves += 1;
    }

    /// A return probe's plan: its frame address is the stack pointer after `ret`, which is
    /// the entry's (`sp + 8` at the first instruction), so saved words are found.
    fn at_return(flags: u8) -> PlanBuilder {
        let mut builder = PlanBuilder::new(flags);
        builder.plan.cfa_offset = 0;
        builder
    }

    fn build(mut self) -> CapturePlan {
        if self.plan.n_ops > 0 {
            self.plan.class = if self.large {
                class::LARGE
            } else {
                class::SMALL
            };
            self.plan.payload_len = self.next_dst as u32;
            debug_assert!(self.plan.payload_len as usize <= 2 * LARGE_SLOT);
        }
        self.plan
    }
}

/// The bytes op `index` of `plan` fetched, or why there are none.
pub(super) fn fetched<'a>(
    plan: &CapturePlan,
    header: &EventHeader,
    payload: &'a [u8],
    index: usize,
) -> Option<&'a [u8]> {
    let len = header.fetch_len[index];
    if len < 0 {
        return None;
    }
    let dst = plan.ops[index].dst as usize;
    let bytes = payload.get(dst..dst + len as usize)?;
    Some(if plan.ops[index].kind == op_kind::C_STRING {
        bytes.strip_suffix(&[0]).unwrap_or(bytes)
    } else {
        bytes
    })
}

/// Text op `index` fetched, or `?` when it could not be read.
pub(super) fn fetched_text(
    plan: &CapturePlan,
    header: &EventHeader,
    payload: &[u8],
    index: usize,
) -> String {
    fetched(plan, header, payload, index).map_or_else(
        || "?".to_owned(),
        |b| String::from_utf8_lossy(b).into_owned(),
    )
}

pub(super) fn fetched_u64(
    plan: &CapturePlan,
    header: &EventHeader,
    payload: &[u8],
    index: usize,
) -> u64 {
    fetched(plan, header, payload, index)
        .and_then(|b| b.get(..8))
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// The `sys_enter` and `sys_exit` plans for every followed syscall: `(nr, enter, exit)`.
pub(crate) fn syscall_plans(tracking: Tracking) -> Vec<(u32, CapturePlan, CapturePlan)> {
    if !tracking.syscalls() {
        return Vec::new();
    }
    SYSCALLS
        .iter()
        .map(|&(nr, _, sys)| {
            let gate = if sys.gated() { flags::DEPENDENCY } else { 0 };
            let mut enter = PlanBuilder::new(gate);
            let mut exit = PlanBuilder::new(gate);
            match sys {
                Sys::Open { path } => {
                    enter.c_string(path, PATH_BYTES);
                }
                Sys::Read { content: true } if tracking.network => {
                    enter.save_reg(reg::RSI);
                    exit.plan.flags |= flags::LOAD_SAVED;
                    let buffer = exit.saved(0);
                    exit.memory_at(buffer, Len::Reg(reg::RAX), READ_BYTES);
                }
                Sys::Write { content: true } if tracking.network => {
                    enter.memory(reg::RSI, reg::RDX, WRITE_BYTES);
                }
                Sys::Connect => {
                    enter.memory(reg::RSI, reg::RDX, SOCKADDR_BYTES);
                }
                _ => {}
            }
            (nr, enter.build(), exit.build())
        })
        .collect()
}

/// Library functions followed by uprobes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LibCall {
    /// `sqlite3_prepare`, `_v2` (`ppStmt` in RCX) and `_v3` (in R8).
    SqlitePrepare {
        out_reg: u8,
    },
    SqliteBindInt,
    SqliteBindInt64,
    SqliteBindDouble,
    SqliteBindText,
    SqliteBindNull,
    SqliteStep,
    SqliteReset,
    SqliteClearBindings,
    SqliteFinalize,
    SqliteExec,
    /// `SSL_write` (`ex`: `SSL_write_ex`, the count written through a pointer).
    SslWrite {
        ex: bool,
    },
    /// `SSL_read` (`ex`: `SSL_read_ex`).
    SslRead {
        ex: bool,
    },
    /// `SSL_connect`, `SSL_do_handshake`, `SSL_shutdown`: their own traffic is the protocol's.
    SslOther,
    /// `PQexec(conn, query)`.
    PqExec,
    /// `PQexecParams(conn, command, nParams, types, values, lengths, formats, resultFormat)`.
    PqExecParams,
    /// `PQprepare(conn, name, query, nParams, types)`.
    PqPrepare,
    /// `PQexecPrepared(conn, name, nParams, values, lengths, formats, resultFormat)`.
    PqExecPrepared,
    /// `PQresultStatus(res)`, `PQntuples(res)`, `PQresultErrorMessage(res)`: what a result
    /// says, when the program asks.
    PqResultStatus,
    PqNtuples,
    PqResultErrorMessage,
    /// `PQclear(res)`: the address may be reused.
    PqClear,
}

/// Text parameters read per libpq call (a plan has room for eight).
pub(super) const PQ_PARAMS: u16 = 8;
/// Longest libpq parameter read.
pub(super) const PQ_PARAM_BYTES: u16 = 128;

impl LibCall {
    pub(super) fn is_tls(self) -> bool {
        matches!(
            self,
            LibCall::SslWrite { .. } | LibCall::SslRead { .. } | LibCall::SslOther
        )
    }

    /// Whether its return event is recorded: the calls whose plans have a return probe
    /// (checked against [`LibCall::plans`] by a test; this runs for every entry event).
    pub(super) fn awaits_return(self) -> bool {
        !matches!(
            self,
            LibCall::SqliteBindInt
                | LibCall::SqliteBindInt64
                | LibCall::SqliteBindDouble
                | LibCall::SqliteBindText
                | LibCall::SqliteBindNull
                | LibCall::SqliteReset
                | LibCall::SqliteClearBindings
                | LibCall::SqliteFinalize
                | LibCall::PqClear
        )
    }

    pub(super) fn is_libpq(self) -> bool {
        matches!(
            self,
            LibCall::PqExec
                | LibCall::PqExecParams
                | LibCall::PqPrepare
                | LibCall::PqExecPrepared
                | LibCall::PqResultStatus
                | LibCall::PqNtuples
                | LibCall::PqResultErrorMessage
                | LibCall::PqClear
        )
    }
}

pub(super) const LIBRARY_CALLS: &[(&str, LibCall)] = &[
    (
        "sqlite3_prepare",
        LibCall::SqlitePrepare { out_reg: reg::RCX },
    ),
    (
        "sqlite3_prepare_v2",
        LibCall::SqlitePrepare { out_reg: reg::RCX },
    ),
    (
        "sqlite3_prepare_v3",
        LibCall::SqlitePrepare { out_reg: reg::R8 },
    ),
    ("sqlite3_bind_int", LibCall::SqliteBindInt),
    ("sqlite3_bind_int64", LibCall::SqliteBindInt64),
    ("sqlite3_bind_double", LibCall::SqliteBindDouble),
    ("sqlite3_bind_text", LibCall::SqliteBindText),
    ("sqlite3_bind_null", LibCall::SqliteBindNull),
    ("sqlite3_step", LibCall::SqliteStep),
    ("sqlite3_reset", LibCall::SqliteReset),
    ("sqlite3_clear_bindings", LibCall::SqliteClearBindings),
    ("sqlite3_finalize", LibCall::SqliteFinalize),
    ("sqlite3_exec", LibCall::SqliteExec),
    ("SSL_write", LibCall::SslWrite { ex: false }),
    ("SSL_write_ex", LibCall::SslWrite { ex: true }),
    ("SSL_read", LibCall::SslRead { ex: false }),
    ("SSL_read_ex", LibCall::SslRead { ex: true }),
    ("SSL_connect", LibCall::SslOther),
    ("SSL_do_handshake", LibCall::SslOther),
    ("SSL_shutdown", LibCall::SslOther),
    ("PQexec", LibCall::PqExec),
    ("PQexecParams", LibCall::PqExecParams),
    ("PQprepare", LibCall::PqPrepare),
    ("PQexecPrepared", LibCall::PqExecPrepared),
    ("PQresultStatus", LibCall::PqResultStatus),
    ("PQntuples", LibCall::PqNtuples),
    ("PQresultErrorMessage", LibCall::PqResultErrorMessage),
    ("PQclear", LibCall::PqClear),
];

impl LibCall {
    /// Plans for the entry and (when the return matters) the return probe.
    fn plans(self) -> (CapturePlan, Option<CapturePlan>) {
        // Statements are prepared once and run many times, often before any captured call:
        // their text is always followed, or a cached statement would run as "?". Finalize too,
        // so a reused statement address is not taken for the old statement.
        let gate = match self {
            LibCall::SqlitePrepare { .. } | LibCall::SqliteFinalize | LibCall::PqPrepare => 0,
            _ => flags::DEPENDENCY,
        };
        let mut entry = PlanBuilder::new(gate);
        let mut ret = None;
        // Input strings (SQL, names, parameters) are read at the return: a literal in a page
        // the program has not touched yet cannot be read at the entry (probes cannot fault
        // pages in), and by the return the library has read it.
        match self {
            LibCall::SqlitePrepare { out_reg } => {
                entry.save_reg(reg::RSI);
                entry.save_reg(out_reg);
                let mut at_return = PlanBuilder::at_return(gate | flags::LOAD_SAVED);
                let sql = at_return.saved(0);
                let out = at_return.saved(1);
                at_return.c_string_in(sql, 0, SQL_BYTES);
                at_return.memory_at(out, Len::Cap, 8);
                ret = Some(at_return);
            }
            LibCall::SqliteBindText => {
                entry.c_string(reg::RDX, PARAM_BYTES);
            }
            LibCall::SqliteExec | LibCall::PqExec => {
                entry.save_reg(reg::RSI);
                let mut at_return = PlanBuilder::at_return(gate | flags::LOAD_SAVED);
                let sql = at_return.saved(0);
                at_return.c_string_in(sql, 0, SQL_BYTES);
                ret = Some(at_return);
            }
            LibCall::SqliteStep
            | LibCall::SslOther
            | LibCall::PqResultStatus
            | LibCall::PqNtuples => ret = Some(PlanBuilder::at_return(gate)),
            LibCall::PqExecParams | LibCall::PqExecPrepared => {
                // Saved: the statement (or its name), the parameter count, the values array
                // and the formats array (1: binary, not read as text).
                entry.save_reg(reg::RSI);
                entry.save_reg(reg::RDX);
                if self == LibCall::PqExecParams {
                    entry.save_reg(reg::R8);
                    // paramFormats is the 7th argument, on the stack above the return address.
                    let formats = entry.stack_word(8);
                    entry.save_fetched(formats);
                } else {
                    entry.save_reg(reg::RCX);
                    entry.save_reg(reg::R9);
                }
                let mut at_return = PlanBuilder::at_return(gate | flags::LOAD_SAVED);
                let (statement, count, values, formats) = (
                    at_return.saved(0),
                    at_return.saved(1),
                    at_return.saved(2),
                    at_return.saved(3),
                );
                at_return.c_string_in(statement, 0, SQL_BYTES);
                let array = at_return.memory_at(values, Len::Fetched(count), 8 * PQ_PARAMS);
                at_return.plan.ops[array].scale = 8;
                for i in 0..PQ_PARAMS {
                    at_return.c_string_in(array, i, PQ_PARAM_BYTES);
                }
                let kinds = at_return.memory_at(formats, Len::Fetched(count), 4 * PQ_PARAMS);
                at_return.plan.ops[kinds].scale = 4;
                ret = Some(at_return);
            }
            LibCall::PqPrepare => {
                entry.save_reg(reg::RSI);
                entry.save_reg(reg::RDX);
                let mut at_return = PlanBuilder::at_return(gate | flags::LOAD_SAVED);
                let name = at_return.saved(0);
                let sql = at_return.saved(1);
                at_return.c_string_in(name, 0, 128);
                at_return.c_string_in(sql, 0, SQL_BYTES);
                ret = Some(at_return);
            }
            LibCall::PqResultErrorMessage => {
                let mut at_return = PlanBuilder::at_return(gate);
                at_return.c_string(reg::RAX, PARAM_BYTES);
                ret = Some(at_return);
            }
            LibCall::SslWrite { ex } => {
                entry.memory(reg::RSI, reg::RDX, WRITE_BYTES);
                let mut at_return = PlanBuilder::at_return(gate);
                if ex {
                    entry.save_reg(reg::RCX);
                    at_return.plan.flags |= flags::LOAD_SAVED;
                    let written = at_return.saved(0);
                    at_return.memory_at(written, Len::Cap, 8);
                }
                ret = Some(at_return);
            }
            LibCall::SslRead { ex } => {
                entry.save_reg(reg::RSI);
                let mut at_return = PlanBuilder::at_return(gate | flags::LOAD_SAVED);
                let buffer = at_return.saved(0);
                if ex {
                    entry.save_reg(reg::RCX);
                    let count_at = at_return.saved(1);
                    let count = at_return.memory_at(count_at, Len::Cap, 8);
                    at_return.memory_at(buffer, Len::Fetched(count), READ_BYTES);
                } else {
                    at_return.memory_at(buffer, Len::Reg(reg::RAX), READ_BYTES);
                }
                ret = Some(at_return);
            }
            _ => {}
        }
        (entry.build(), ret.map(PlanBuilder::build))
    }
}

/// A library function found in one of the process's objects.
pub(crate) struct LibraryHook {
    pub call: LibCall,
    pub name: &'static str,
    /// The object as the process maps it.
    pub binary: PathBuf,
    pub file_offset: u64,
    pub entry: CapturePlan,
    pub ret: Option<CapturePlan>,
}

/// The library functions to probe, in whichever object defines them (the executable first:
/// a statically linked SQLite is found there). `paths[i]` is how the process maps `elves[i]`.
pub(crate) fn library_hooks(
    elves: &[ElfFile],
    paths: &[PathBuf],
    tracking: Tracking,
) -> Vec<LibraryHook> {
    let mut hooks = Vec::new();
    for &(name, call) in LIBRARY_CALLS {
        let wanted = if call.is_tls() {
            tracking.network
        } else {
            tracking.db
        };
        if !wanted {
            continue;
        }
        let found = elves.iter().zip(paths).find_map(|(elf, path)| {
            let symbol = elf
                .functions()
                .iter()
                .find(|s| s.name == name && s.address != 0)?;
            if elf.is_ifunc(symbol.address) {
                return None;
            }
            Some((path, elf.file_offset(symbol.address)?))
        });
        if let Some((path, file_offset)) = found {
            let (entry, ret) = call.plans();
            hooks.push(LibraryHook {
                call,
                name,
                binary: path.clone(),
                file_offset,
                entry,
                ret,
            });
        }
    }
    hooks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_awaits_its_return_exactly_when_its_plans_probe_it() {
        for &(name, call) in LIBRARY_CALLS {
            assert_eq!(call.awaits_return(), call.plans().1.is_some(), "{name}");
        }
    }
}
