//! Capture plans: where a function's values are at its probes, which memory to read there
//! (a bounded list of fetches, each from a register or from a pointer an earlier fetch
//! read), and how to decode what was read into [`Value`]s with the same DWARF types.
//!
//! The entry probe goes on the first instruction, or at the end of the prologue when the
//! parameters only live in the stack frame from there (`-O0`). Locations come from DWARF
//! (`DW_AT_location`, location lists included) evaluated at the probe address; return
//! values from the x86-64 calling conventions (SysV for C and C++, rustc's for Rust).
//!
//! A value is decoded exactly or reported unavailable with the reason; never guessed.

use std::collections::HashMap;

use crate::dwarf::Signature;
use crate::location::{self, CfaRule, Piece, Site, Sym};
use crate::types::{Language, PtrLen, TypeId, TypeKind, Types};
use crate::value::Value;

/// Budgets of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Longest string kept, in bytes; longer ones are truncated and reported.
    pub max_string: u16,
    /// How many pointers deep values are followed (a pointer argument is depth 1).
    pub max_depth: u8,
    /// Bytes of memory one probe may read in total (`max_serialized_size`).
    pub max_bytes: u32,
    /// Fetches one probe may make.
    pub max_fetches: usize,
    /// Largest single fetch, and the payload offset every fetch must start below.
    pub max_fetch_len: u32,
    /// Elements of a variable-length sequence whose own pointers are followed.
    pub max_followed_elements: u32,
    /// Read what non-const pointer parameters point to again at return (`after` values),
    /// for functions that fill a buffer or update an object.
    pub capture_after: bool,
    /// Bytes of one variable-length sequence (`Vec`, slice) read; longer ones are
    /// truncated and reported.
    pub max_sequence_bytes: u32,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_string: 256,
            max_depth: 3,
            max_bytes: 8192,
            max_fetches: 32,
            max_fetch_len: 4096,
            max_followed_elements: 8,
            max_sequence_bytes: 1024,
            capture_after: false,
        }
    }
}

/// How a fetch reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchKind {
    /// A NUL-terminated string, at most `len` bytes including the NUL; the result holds the
    /// bytes read including the NUL.
    CString,
    /// `len` bytes, or the computed length capped at `len`.
    Memory,
    /// Return probes: the word the entry probe saved in `slot` (see [`ProbePlan::saves`]).
    Saved { slot: u8 },
}

/// Where a fetch's base address (or computed length) comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A general-purpose register (DWARF number).
    Reg(u8),
    /// 8 bytes at `offset` in the result of an earlier fetch.
    Fetched { fetch: usize, offset: u64 },
}

/// One read done by the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub kind: FetchKind,
    /// Base address; the read starts at `base + offset`.
    pub base: Source,
    pub offset: i64,
    /// Maximum bytes to read.
    pub len: u32,
    /// For `Memory`: read `count * scale` bytes (capped at `len`) instead of `len`.
    pub count: Option<(Source, u32)>,
    /// Where the result goes in the event payload.
    pub dst: u32,
}

impl Fetch {
    /// The earlier fetch this one depends on.
    pub fn parent(&self) -> Option<usize> {
        let from = |s: Source| match s {
            Source::Fetched { fetch, .. } => Some(fetch),
            Source::Reg(_) => None,
        };
        from(self.base).max(self.count.and_then(|(s, _)| from(s)))
    }
}

/// The outcome of one fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchResult<'a> {
    /// The bytes read (for `CString`, as many as the helper returned, NUL included).
    Bytes(&'a [u8]),
    /// The read failed with this negative errno.
    Failed(i32),
    /// The pointer to follow was NULL.
    Null,
    /// Not run: the fetch it depends on failed.
    Skipped,
}

/// What one probe reads and how its values decode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbePlan {
    pub fetches: Vec<Fetch>,
    /// Bytes of payload the fetches may fill.
    pub payload_len: u32,
    /// Entry probes: words to keep for the return probe of the same call (the pointers of
    /// output parameters), in slot order.
    pub saves: Vec<Source>,
    items: Vec<Item>,
    follows: HashMap<(Buf, u64), Follow>,
}

/// A value to decode: a parameter, or the return value.
#[derive(Clone, Debug, PartialEq)]
struct Item {
    name: String,
    /// Where notes about it go: `name`, `return`, or `after.name`.
    path: String,
    /// A parameter's pointee read again at return.
    after: bool,
    ty: TypeId,
    /// The value's bytes, in order.
    segs: Vec<Seg>,
}

/// Where some bytes of a value are.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    /// The low `size` bytes of a register.
    Reg {
        reg: u8,
        size: u64,
    },
    /// A value computed from a register (`reg + add`), or from a fetched 8-byte word.
    RegPlus {
        reg: u8,
        add: i64,
        mask: u64,
        size: u64,
    },
    Loaded {
        fetch: usize,
        add: i64,
        size: u64,
    },
    /// Bytes read by a fetch (all of its result, from offset 0).
    Fetched {
        fetch: usize,
        size: u64,
    },
    Bytes(Vec<u8>),
    Missing {
        size: u64,
        reason: String,
    },
}

impl Seg {
    fn size(&self) -> u64 {
        match self {
            Seg::Reg { size, .. }
            | Seg::RegPlus { size, .. }
            | Seg::Loaded { size, .. }
            | Seg::Fetched { size, .. }
            | Seg::Missing { size, .. } => *size,
            Seg::Bytes(b) => b.len() as u64,
        }
    }
}

/// A buffer values are decoded from: a value's assembled bytes, or a fetch's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Buf {
    Item(usize),
    Fetch(usize),
}

/// What became of a pointer (or pointer + length) at a place in a buffer.
#[derive(Clone, Debug, PartialEq)]
enum Follow {
    Fetch(usize),
    Skipped(String),
}

/// Where the entry probe goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySite {
    /// Bytes from the function's first instruction (0, or the end of the prologue).
    pub offset: u64,
    /// How to compute the canonical frame address there.
    pub cfa: CfaRule,
}

/// What to read at a function's entry and return probes, and how to decode it.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionPlan {
    pub entry_site: EntrySite,
    pub entry: ProbePlan,
    pub ret: ProbePlan,
    types: Types,
    language: Language,
    has_debug_info: bool,
    returns_void: bool,
    /// The return type is a Rust `Result`: `Err` means status `error`.
    returns_result: bool,
    limits: PlanLimits,
}

/// Decoded arguments: values that were read, and `(path, reason)` for what was not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecodedArgs {
    pub args: Vec<(String, Value)>,
    pub unavailable: Vec<(String, String)>,
}

/// A decoded return value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecodedReturn {
    /// `None` for `void`, or when the value could not be read (see `unavailable`).
    pub value: Option<Value>,
    /// `(path, reason)`; paths start with `return`.
    pub unavailable: Vec<(String, String)>,
    /// The function returned a Rust `Err(..)`.
    pub is_error: bool,
    /// Output parameters' pointees as they were at return (with `capture_after`).
    pub after: Vec<(String, Value)>,
}

const NO_DEBUG_INFO: &str = "no DWARF debug info: stored as raw registers (types unknown); \
    rebuild with -g or install the debug file";

/// Without DWARF nothing says what the values are, but the System V convention says where
/// integer and pointer arguments arrive (rdi, rsi, rdx, rcx, r8, r9: DWARF numbers) and
/// where a scalar result leaves (rax): those registers are stored as raw words.
const RAW_ARGUMENT_REGS: [(u8, &str); 6] = [
    (5, "rdi"),
    (4, "rsi"),
    (1, "rdx"),
    (2, "rcx"),
    (8, "r8"),
    (9, "r9"),
];
const BEFORE_PROLOGUE: &str = "in the stack frame, which the probe site precedes";

/// Compiles the plan for a function; `sig` `None` means there is no debug info.
/// `elf_data` is the ELF image, for the call frame information at the probe address.
pub fn compile(sig: Option<&Signature>, elf_data: &[u8], limits: &PlanLimits) -> FunctionPlan {
    let mut limits = *limits;
    limits.max_string = limits.max_string.min(u16::MAX - 2);
    let entry_cfa = CfaRule { reg: 7, offset: 8 };
    let Some(sig) = sig else {
        return FunctionPlan {
            entry_site: EntrySite {
                offset: 0,
                cfa: entry_cfa,
            },
            entry: ProbePlan::default(),
            ret: ProbePlan::default(),
            types: Types::default(),
            language: Language::Other,
            has_debug_info: false,
            returns_void: false,
            returns_result: false,
            limits,
        };
    };

    // Candidate sites: the first instruction, and the end of the prologue when it has CFI.
    let mut candidates = vec![(sig.low_pc, entry_cfa)];
    if let Some(pc) = sig.prologue_end
        && let Some(cfa) = location::cfa_rule(elf_data, pc)
    {
        candidates.push((pc, cfa));
    }
    let evaluated: Vec<_> = candidates
        .iter()
        .map(|&(pc, cfa)| {
            let pieces = entry_pieces(sig, pc, cfa);
            let readable = pieces
                .iter()
                .filter(|p| !p.iter().any(|x| matches!(x, Piece::Missing { .. })))
                .count();
            (pc, cfa, pieces, readable)
        })
        .collect();
    // The most parameters readable; on a tie the first instruction (cheaper to probe and
    // valid for every calling path).
    let best = evaluated
        .iter()
        .enumerate()
        .max_by_key(|(i, e)| (e.3, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let (pc, cfa, pieces, _) = evaluated.into_iter().nth(best).expect("a candidate");

    let mut entry = Planner::new(&sig.types, sig.language, &limits);
    for (param, pieces) in sig.params.iter().zip(pieces) {
        entry.add_item(param.name.clone(), param.ty, pieces);
    }
    let mut ret = Planner::new(&sig.types, sig.language, &limits);
    if let Some(ty) = sig.ret {
        let pieces = return_pieces(&sig.types, ty, sig.language);
        ret.add_item("return".to_owned(), ty, pieces);
    }
    if limits.capture_after {
        for (i, param) in sig.params.iter().enumerate() {
            if entry.plan.saves.len() >= MAX_SAVES {
                break;
            }
            if !is_output(&sig.types, param, sig.language) {
                continue;
            }
            if let Some(Word::Source(source, 0)) = entry.word(Buf::Item(i), 0) {
                let slot = entry.plan.saves.len() as u8;
                entry.plan.saves.push(source);
                ret.add_after(&param.name, param.ty, slot);
            }
        }
    }
    let returns_result = sig.ret.is_some_and(|t| {
        let name = &sig.types.get(t).name;
        sig.language == Language::Rust
            && (name.starts_with("core::result::Result<") || name.starts_with("Result<"))
    });
    FunctionPlan {
        entry_site: EntrySite {
            offset: pc - sig.low_pc,
            cfa,
        },
        entry: entry.finish(),
        ret: ret.finish(),
        types: sig.types.clone(),
        language: sig.language,
        has_debug_info: true,
        returns_void: sig.ret.is_none(),
        returns_result,
        limits,
    }
}

/// Words one entry probe can keep for its return probe.
pub const MAX_SAVES: usize = 4;

/// A pointer or reference to something the function may write: not to `const`.
fn is_output(types: &Types, param: &crate::dwarf::Param, lang: Language) -> bool {
    let TypeKind::Pointer { pointee, .. } = types.get(param.ty).kind else {
        return false;
    };
    if types.size(pointee).unwrap_or(0) == 0 && !types.is_c_string(param.ty) {
        return false;
    }
    let written = param.type_name.as_str();
    if lang == Language::Rust {
        return written.starts_with("&mut ") || written.starts_with("*mut ");
    }
    // `const T *` and `T const *` point to const; `T *const` is a const pointer to T.
    let last = written.rfind(['*', '&']).unwrap_or(written.len());
    !written[..last]
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w == "const")
}

/// Where each parameter is at `pc`.
fn entry_pieces(sig: &Signature, pc: u64, cfa: CfaRule) -> Vec<Vec<Piece>> {
    let at_entry = pc == sig.low_pc;
    let site = Site {
        pc,
        at_entry,
        cfa: Some(cfa),
        frame_base: sig.frame_base.as_deref(),
    };
    let abi = if at_entry {
        sysv_entry_pieces(sig)
    } else {
        None
    };
    sig.params
        .iter()
        .enumerate()
        .map(|(i, param)| {
            let size = sig.types.size(param.ty).unwrap_or(8);
            let missing = |reason: String| vec![Piece::Missing { size, reason }];
            match &param.location {
                None => missing(location::OPTIMIZED_OUT.to_owned()),
                Some(spec) => match location::select(spec, pc) {
                    Err(reason) => missing(reason),
                    Ok(ops) => {
                        let single = matches!(spec, location::LocationSpec::Expr(_));
                        if at_entry
                            && single
                            && location::is_frame_relative(ops, sig.frame_base.as_deref())
                        {
                            // Unoptimised code: the prologue will store the argument in this
                            // frame slot; before it runs, the calling convention says where
                            // the argument is.
                            match abi.as_ref().and_then(|abi| abi.get(i)) {
                                Some(pieces) => pieces.clone(),
                                None => missing(BEFORE_PROLOGUE.to_owned()),
                            }
                        } else {
                            location::evaluate(ops, size, &site)
                        }
                    }
                },
            }
        })
        .collect()
}

/// Where the System V calling convention puts each parameter at a C or C++ function's first
/// instruction, when every parameter is a scalar (integer, `char`, `bool`, enum, pointer or
/// reference: the next of rdi, rsi, rdx, rcx, r8, r9, then the stack; `float`/`double`: an SSE
/// register, not readable); `None` for other languages and for aggregates passed by value,
/// whose classification this does not attempt.
fn sysv_entry_pieces(sig: &Signature) -> Option<Vec<Vec<Piece>>> {
    if !matches!(sig.language, Language::C | Language::Cpp) {
        return None;
    }
    const INT_REGS: [u8; 6] = [5, 4, 1, 2, 8, 9];
    let mut next_int = 0;
    // A value returned in memory takes rdi for its destination.
    if sig
        .ret
        .is_some_and(|ty| returns_in_memory(&sig.types, ty, sig.language))
    {
        next_int = 1;
    }
    let mut next_sse = 0;
    // Stack arguments start at the canonical frame address, rsp + 8 here.
    let mut stack = 8;
    let mut out = Vec::with_capacity(sig.params.len());
    for param in &sig.params {
        let size = sig.types.size(param.ty)?;
        if size == 0 || size > 8 {
            return None;
        }
        let pieces = match sig.types.get(param.ty).kind {
            TypeKind::Int { .. }
            | TypeKind::Bool
            | TypeKind::Char { .. }
            | TypeKind::Enum { .. }
            | TypeKind::Pointer { .. } => match INT_REGS.get(next_int) {
                Some(&reg) => {
                    next_int += 1;
                    vec![Piece::Reg { reg, size }]
                }
                None => {
                    let at = Sym::Reg { reg: 7, add: stack };
                    stack += 8;
                    vec![Piece::Memory { at, size }]
                }
            },
            TypeKind::Float if next_sse < 8 => {
                next_sse += 1;
                vec![Piece::Missing {
                    size,
                    reason: location::IN_FP_REGISTER.to_owned(),
                }]
            }
            TypeKind::Float => {
                let at = Sym::Reg { reg: 7, add: stack };
                stack += 8;
                vec![Piece::Memory { at, size }]
            }
            _ => return None,
        };
        out.push(pieces);
    }
    Some(out)
}

/// True when a value of type `ty` is returned through a hidden pointer the caller passes
/// first (in rdi) rather than in registers.
pub fn returns_in_memory(types: &Types, ty: TypeId, lang: Language) -> bool {
    matches!(
        return_pieces(types, ty, lang).as_slice(),
        [Piece::Memory { .. }]
    )
}

/// Rust's split of a value into at most two scalars `(offset, size, is_float)`, when it is
/// one (`Scalar`) or two (`ScalarPair`: `&str`, slices, two-field structs); `None` for other
/// aggregates.
pub fn rust_scalars(types: &Types, ty: TypeId) -> Option<Vec<(u64, u64, bool)>> {
    let size = types.size(ty)?;
    let leaves = types.leaves(ty)?;
    let slots = scalar_slots(&leaves);
    match slots.as_slice() {
        [(0, s, _)] if *s == size || leaves.len() == 1 => Some(slots),
        [(o1, s1, _), (o2, _, _)] if *o1 == 0 && *o2 >= *s1 => Some(slots),
        _ => None,
    }
}

/// Where a return value of type `ty` is when the return probe fires.
fn return_pieces(types: &Types, ty: TypeId, lang: Language) -> Vec<Piece> {
    let Some(size) = types.size(ty) else {
        return vec![Piece::Missing {
            size: 8,
            reason: format!("return type {} has no known size", types.get(ty).name),
        }];
    };
    let rax = |size| Piece::Reg { reg: 0, size };
    let rdx = |size| Piece::Reg { reg: 1, size };
    let in_memory = || {
        // The caller passed the destination in rdi; the callee returns it in rax.
        vec![Piece::Memory {
            at: Sym::Reg { reg: 0, add: 0 },
            size,
        }]
    };
    let fp = |size| Piece::Missing {
        size,
        reason: location::IN_FP_REGISTER.to_owned(),
    };
    if size == 0 {
        return Vec::new();
    }
    let by_reference = matches!(
        types.get(ty).kind,
        TypeKind::Struct {
            by_reference: true,
            ..
        }
    );
    if size > 16 || by_reference {
        return in_memory();
    }
    let Some(leaves) = types.leaves(ty) else {
        return vec![Piece::Missing {
            size,
            reason: format!("return type {} not understood", types.get(ty).name),
        }];
    };
    if let TypeKind::Float = types.get(ty).kind {
        return vec![if size > 8 {
            Piece::Missing {
                size,
                reason: "in x87 register".to_owned(),
            }
        } else {
            fp(size)
        }];
    }
    if lang == Language::Rust {
        // rustc returns a scalar in rax (or xmm0), a scalar pair in rax and rdx (each
        // scalar in its own register, wherever it sits in memory), any other value of up
        // to 8 bytes as its memory image in rax, and anything larger in memory (rustc 1.95
        // returns a 16-byte `Result<u64, SomeEnum>` through a hidden pointer).
        let slots = scalar_slots(&leaves);
        match slots.as_slice() {
            [(0, s, float)] if *s == size || leaves.len() == 1 => {
                return vec![if *float { fp(size) } else { rax(size) }];
            }
            [(o1, s1, f1), (o2, s2, f2)] if *o1 == 0 && *o2 >= *s1 => {
                let mut out = vec![if *f1 { fp(*s1) } else { rax(*s1) }];
                if o2 > s1 {
                    out.push(Piece::Missing {
                        size: o2 - s1,
                        reason: "padding".to_owned(),
                    });
                }
                out.push(if *f2 { fp(*s2) } else { rdx(*s2) });
                let used = o2 + s2;
                if used < size {
                    out.push(Piece::Missing {
                        size: size - used,
                        reason: "padding".to_owned(),
                    });
                }
                return out;
            }
            _ => {}
        }
        if leaves.iter().any(|l| l.2) {
            return vec![Piece::Missing {
                size,
                reason: "returned partly in FP registers".to_owned(),
            }];
        }
        return if size <= 8 {
            vec![rax(size)]
        } else {
            in_memory()
        };
    }
    // SysV: each eightbyte is INTEGER unless all its leaves are floats (SSE). INTEGER
    // eightbytes take rax then rdx; SSE ones xmm0 then xmm1.
    let eightbytes = size.div_ceil(8);
    let mut out = Vec::new();
    let mut next_int = 0;
    for i in 0..eightbytes {
        let lo = i * 8;
        let len = (size - lo).min(8);
        let inside: Vec<_> = leaves
            .iter()
            .filter(|l| l.0 < lo + 8 && l.0 + l.1 > lo)
            .collect();
        let sse = !inside.is_empty() && inside.iter().all(|l| l.2);
        if sse {
            out.push(fp(len));
        } else {
            out.push(if next_int == 0 { rax(len) } else { rdx(len) });
            next_int += 1;
        }
    }
    out
}

/// Leaves grouped by position: `(offset, size, is_float)` of each distinct scalar slot.
fn scalar_slots(leaves: &[(u64, u64, bool)]) -> Vec<(u64, u64, bool)> {
    let mut slots: Vec<(u64, u64, bool)> = Vec::new();
    for &(o, s, f) in leaves {
        match slots.iter_mut().find(|x| x.0 == o) {
            Some(slot) if slot.1 == s => slot.2 &= f,
            Some(_) => return Vec::new(),
            None => slots.push((o, s, f)),
        }
    }
    // Overlapping slots of different shapes are not a scalar pair.
    for w in slots.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            return Vec::new();
        }
    }
    slots
}

/// Builds one probe's fetches.
struct Planner<'a> {
    types: &'a Types,
    lang: Language,
    limits: &'a PlanLimits,
    plan: ProbePlan,
}

/// Where the 8 bytes at a place come from, for use as a fetch base or length.
#[derive(Clone, Copy, Debug)]
enum Word {
    Source(Source, i64),
    Const(u64),
}

impl<'a> Planner<'a> {
    fn new(types: &'a Types, lang: Language, limits: &'a PlanLimits) -> Self {
        Planner {
            types,
            lang,
            limits,
            plan: ProbePlan::default(),
        }
    }

    fn finish(mut self) -> ProbePlan {
        self.follow_pointers();
        self.plan
    }

    fn add_item(&mut self, name: String, ty: TypeId, pieces: Vec<Piece>) {
        let mut segs = Vec::new();
        for piece in pieces {
            segs.push(match piece {
                Piece::Reg { reg, size } => Seg::Reg { reg, size },
                Piece::Bytes(b) => Seg::Bytes(b),
                Piece::Missing { size, reason } => Seg::Missing { size, reason },
                Piece::Value { value, size } => match value {
                    Sym::Const(c) => Seg::Bytes(c.to_le_bytes()[..size.min(8) as usize].to_vec()),
                    Sym::Reg { reg, add } => Seg::RegPlus {
                        reg,
                        add,
                        mask: u64::MAX,
                        size,
                    },
                    Sym::Masked { value, mask } => match *value {
                        Sym::Reg { reg, add } => Seg::RegPlus {
                            reg,
                            add,
                            mask,
                            size,
                        },
                        _ => Seg::Missing {
                            size,
                            reason: "masked value in location (not supported)".to_owned(),
                        },
                    },
                    Sym::Load { at, add } => match self.load_word(&at) {
                        Ok(fetch) => Seg::Loaded { fetch, add, size },
                        Err(reason) => Seg::Missing { size, reason },
                    },
                },
                Piece::Memory { at, size } => match self.memory(&at, size) {
                    Ok(fetch) => Seg::Fetched { fetch, size },
                    Err(reason) => Seg::Missing { size, reason },
                },
            });
        }
        let path = name.clone();
        self.plan.items.push(Item {
            name,
            path,
            after: false,
            ty,
            segs,
        });
    }

    /// A parameter read again at return through the pointer the entry probe saved in `slot`.
    fn add_after(&mut self, name: &str, ty: TypeId, slot: u8) {
        let segs = match self.push(FetchKind::Saved { slot }, Source::Reg(0), 0, 8, None) {
            Ok(fetch) => vec![Seg::Fetched { fetch, size: 8 }],
            Err(reason) => vec![Seg::Missing { size: 8, reason }],
        };
        self.plan.items.push(Item {
            name: name.to_owned(),
            path: format!("after.{name}"),
            after: true,
            ty,
            segs,
        });
    }

    /// Plans the reads behind pointers, once every value's own bytes are planned: those
    /// come first in the budget.
    fn follow_pointers(&mut self) {
        for index in 0..self.plan.items.len() {
            let ty = self.plan.items[index].ty;
            self.walk(ty, Buf::Item(index), 0, 1);
        }
    }

    /// A fetch of the 8-byte word at a symbolic address.
    fn load_word(&mut self, at: &Sym) -> Result<usize, String> {
        self.memory(at, 8)
    }

    /// A fetch of `size` bytes at a symbolic address.
    fn memory(&mut self, at: &Sym, size: u64) -> Result<usize, String> {
        let (base, offset) = match at {
            Sym::Reg { reg, add } => (Source::Reg(*reg), *add),
            Sym::Load { at, add } => {
                let word = self.load_word(at)?;
                (
                    Source::Fetched {
                        fetch: word,
                        offset: 0,
                    },
                    *add,
                )
            }
            Sym::Const(_) => return Err("at a static address (not supported)".to_owned()),
            Sym::Masked { .. } => return Err("masked address in location".to_owned()),
        };
        self.push(FetchKind::Memory, base, offset, size, None)
    }

    /// Adds a fetch if the budgets allow it.
    fn push(
        &mut self,
        kind: FetchKind,
        base: Source,
        offset: i64,
        len: u64,
        count: Option<(Source, u32)>,
    ) -> Result<usize, String> {
        let limits = self.limits;
        if self.plan.fetches.len() >= limits.max_fetches {
            return Err(format!(
                "not captured: more than {} reads needed (capture budget)",
                limits.max_fetches
            ));
        }
        if len > u64::from(limits.max_fetch_len) {
            return Err(format!(
                "not captured: {len} bytes is more than one read may take ({})",
                limits.max_fetch_len
            ));
        }
        let Ok(offset32) = i32::try_from(offset) else {
            return Err("address offset out of range".to_owned());
        };
        let dst = u64::from(self.plan.payload_len).next_multiple_of(8);
        if dst >= u64::from(limits.max_fetch_len) || dst + len > u64::from(limits.max_bytes) {
            return Err(format!(
                "not captured: the probe's {}-byte capture budget (max_serialized_size) is used up",
                limits.max_bytes
            ));
        }
        self.plan.fetches.push(Fetch {
            kind,
            base,
            offset: i64::from(offset32),
            len: len as u32,
            count,
            dst: dst as u32,
        });
        self.plan.payload_len = (dst + len) as u32;
        Ok(self.plan.fetches.len() - 1)
    }

    /// Where the word at `buf + at` comes from.
    fn word(&self, buf: Buf, at: u64) -> Option<Word> {
        match buf {
            Buf::Fetch(fetch) => Some(Word::Source(Source::Fetched { fetch, offset: at }, 0)),
            Buf::Item(i) => {
                let mut start = 0;
                for seg in &self.plan.items[i].segs {
                    let end = start + seg.size();
                    if at >= start && at + 8 <= end {
                        return match seg {
                            Seg::Reg { reg, .. } if at == start => {
                                Some(Word::Source(Source::Reg(*reg), 0))
                            }
                            Seg::RegPlus {
                                reg,
                                add,
                                mask: u64::MAX,
                                ..
                            } if at == start => Some(Word::Source(Source::Reg(*reg), *add)),
                            Seg::Loaded { fetch, add, .. } if at == start => Some(Word::Source(
                                Source::Fetched {
                                    fetch: *fetch,
                                    offset: 0,
                                },
                                *add,
                            )),
                            Seg::Fetched { fetch, .. } => Some(Word::Source(
                                Source::Fetched {
                                    fetch: *fetch,
                                    offset: at - start,
                                },
                                0,
                            )),
                            Seg::Bytes(b) => {
                                let from = (at - start) as usize;
                                let raw: [u8; 8] = b.get(from..from + 8)?.try_into().ok()?;
                                Some(Word::Const(u64::from_le_bytes(raw)))
                            }
                            _ => None,
                        };
                    }
                    start = end;
                }
                None
            }
        }
    }

    fn skip(&mut self, buf: Buf, at: u64, reason: String) {
        self.plan.follows.insert((buf, at), Follow::Skipped(reason));
    }

    /// Plans the reads behind the pointers inside a value of type `ty` at `buf + at`.
    fn walk(&mut self, ty: TypeId, buf: Buf, at: u64, depth: u32) {
        let types = self.types;
        if depth > 64 || !self.has_indirection(ty, 0) {
            return;
        }
        if let Some(pl) = types.ptr_len(ty, self.lang) {
            self.plan_ptr_len(&pl, buf, at, depth);
            return;
        }
        match &types.get(ty).kind {
            TypeKind::Pointer { pointee, .. } => self.plan_pointer(ty, *pointee, buf, at, depth),
            TypeKind::Struct {
                members, variants, ..
            } => {
                for m in members {
                    if m.bits.is_none() {
                        self.walk(m.ty, buf, at + m.offset, depth);
                    }
                }
                if let Some(part) = variants {
                    // The active variant is known only at decode time: plan all of them;
                    // the decoder uses the reads of the one that is active.
                    for v in &part.variants {
                        self.walk(v.member.ty, buf, at + v.member.offset, depth);
                    }
                }
            }
            TypeKind::Array {
                element,
                count: Some(n),
            } => {
                let size = types.size(*element).unwrap_or(0);
                if size == 0 {
                    return;
                }
                for i in 0..(*n).min(64) {
                    self.walk(*element, buf, at + i * size, depth);
                }
            }
            _ => {}
        }
    }

    fn plan_pointer(&mut self, ty: TypeId, pointee: TypeId, buf: Buf, at: u64, depth: u32) {
        let types = self.types;
        if depth > u32::from(self.limits.max_depth) {
            let reason = format!(
                "not followed: deeper than {} pointers (max_depth)",
                self.limits.max_depth
            );
            self.skip(buf, at, reason);
            return;
        }
        let Some(Word::Source(base, add)) = self.word(buf, at) else {
            if !matches!(self.word(buf, at), Some(Word::Const(0))) {
                self.skip(buf, at, "pointer not readable at the probe".to_owned());
            }
            return;
        };
        let c_string = types.is_c_string(ty) && self.lang != Language::Rust;
        let result = if c_string {
            // Two more than the limit: the NUL, and one to tell "exactly the limit" from
            // "longer".
            let len = u64::from(self.limits.max_string) + 2;
            self.push(FetchKind::CString, base, add, len, None)
        } else {
            match types.size(pointee) {
                Some(0) | None => return,
                Some(size) => self.push(FetchKind::Memory, base, add, size, None),
            }
        };
        match result {
            Ok(fetch) => {
                self.plan.follows.insert((buf, at), Follow::Fetch(fetch));
                if !c_string {
                    self.walk(pointee, Buf::Fetch(fetch), 0, depth + 1);
                }
            }
            Err(reason) => self.skip(buf, at, reason),
        }
    }

    fn plan_ptr_len(&mut self, pl: &PtrLen, buf: Buf, at: u64, depth: u32) {
        let types = self.types;
        let key = at + pl.ptr_offset;
        if depth > u32::from(self.limits.max_depth) {
            let reason = format!(
                "not followed: deeper than {} pointers (max_depth)",
                self.limits.max_depth
            );
            self.skip(buf, key, reason);
            return;
        }
        let element_size = types.size(pl.element).unwrap_or(0);
        if element_size == 0 {
            return;
        }
        let (Some(Word::Source(base, add)), Some(count)) = (
            self.word(buf, at + pl.ptr_offset),
            self.word(buf, at + pl.len_offset),
        ) else {
            self.skip(
                buf,
                key,
                "pointer or length not readable at the probe".to_owned(),
            );
            return;
        };
        let cap = if pl.text {
            u64::from(self.limits.max_string) + 1
        } else {
            let bytes = self
                .limits
                .max_sequence_bytes
                .min(self.limits.max_fetch_len);
            (u64::from(bytes) / element_size).max(1) * element_size
        };
        let remaining = u64::from(self.limits.max_bytes)
            .saturating_sub(u64::from(self.plan.payload_len).next_multiple_of(8));
        let cap = cap.min(remaining / element_size * element_size);
        if cap == 0 {
            let reason = format!(
                "not captured: the probe's {}-byte capture budget (max_serialized_size) is used up",
                self.limits.max_bytes
            );
            self.skip(buf, key, reason);
            return;
        }
        let result = match count {
            Word::Const(n) => {
                let len = n.saturating_mul(element_size).min(cap);
                self.push(FetchKind::Memory, base, add, len, None)
            }
            Word::Source(src, 0) => self.push(
                FetchKind::Memory,
                base,
                add,
                cap,
                Some((src, element_size as u32)),
            ),
            Word::Source(..) => Err("length not readable at the probe".to_owned()),
        };
        match result {
            Ok(fetch) => {
                self.plan.follows.insert((buf, key), Follow::Fetch(fetch));
                if self.has_indirection(pl.element, 0) {
                    let n = u64::from(self.limits.max_followed_elements).min(cap / element_size);
                    for i in 0..n {
                        self.walk(pl.element, Buf::Fetch(fetch), i * element_size, depth + 1);
                    }
                }
            }
            Err(reason) => self.skip(buf, key, reason),
        }
    }

    /// Whether a value of this type holds pointers worth following.
    fn has_indirection(&self, ty: TypeId, depth: u32) -> bool {
        let types = self.types;
        if depth > 12 {
            return false;
        }
        if types.ptr_len(ty, self.lang).is_some() {
            return true;
        }
        match &types.get(ty).kind {
            TypeKind::Pointer { .. } => true,
            TypeKind::Struct {
                members, variants, ..
            } => {
                members
                    .iter()
                    .any(|m| m.bits.is_none() && self.has_indirection(m.ty, depth + 1))
                    || variants.as_ref().is_some_and(|p| {
                        p.variants
                            .iter()
                            .any(|v| self.has_indirection(v.member.ty, depth + 1))
                    })
            }
            TypeKind::Array {
                element,
                count: Some(_),
            } => self.has_indirection(*element, depth + 1),
            _ => false,
        }
    }
}

/// The bytes of a buffer, with the ranges that could not be read.
struct View {
    bytes: Vec<u8>,
    /// `(start, end, reason)`.
    missing: Vec<(u64, u64, String)>,
}

impl View {
    fn gap(&self, at: u64, len: u64) -> Option<&str> {
        if at + len > self.bytes.len() as u64 {
            return Some("short read");
        }
        self.missing
            .iter()
            .find(|(s, e, _)| *s < at + len && at < *e)
            .map(|(_, _, r)| r.as_str())
    }

    fn word(&self, at: u64, len: u64) -> Option<u64> {
        let bytes = self.bytes.get(at as usize..(at + len) as usize)?;
        let mut raw = [0u8; 8];
        raw[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
        Some(u64::from_le_bytes(raw))
    }
}

struct Decoder<'a> {
    plan: &'a ProbePlan,
    types: &'a Types,
    lang: Language,
    limits: &'a PlanLimits,
    regs: &'a [u64; 16],
    fetched: &'a [FetchResult<'a>],
    unavailable: Vec<(String, String)>,
}

impl FunctionPlan {
    /// Decodes the arguments from an entry event's registers (DWARF numbering) and the
    /// results of `self.entry.fetches` (`fetched[i]` is the result of fetch `i`).
    pub fn decode_entry(&self, regs: &[u64; 16], fetched: &[FetchResult]) -> DecodedArgs {
        let mut out = DecodedArgs::default();
        if !self.has_debug_info {
            out.args = RAW_ARGUMENT_REGS
                .iter()
                .map(|&(reg, name)| (name.to_owned(), Value::UInt(regs[reg as usize])))
                .collect();
            out.unavailable
                .push(("arguments".to_owned(), NO_DEBUG_INFO.to_owned()));
            return out;
        }
        let mut decoder = self.decoder(&self.entry, regs, fetched);
        for (i, item) in self.entry.items.iter().enumerate() {
            if let Some(value) = decoder.item(i, item) {
                out.args.push((item.name.clone(), value));
            }
        }
        out.unavailable = decoder.unavailable;
        out
    }

    /// Decodes the return value from a return event's registers and the results of
    /// `self.ret.fetches`.
    pub fn decode_return(&self, regs: &[u64; 16], fetched: &[FetchResult]) -> DecodedReturn {
        let mut out = DecodedReturn::default();
        if !self.has_debug_info {
            out.value = Some(Value::UInt(regs[0]));
            out.unavailable
                .push(("return".to_owned(), NO_DEBUG_INFO.to_owned()));
            return out;
        }
        let mut decoder = self.decoder(&self.ret, regs, fetched);
        if !self.returns_void {
            // A zero-sized return type (`()`-like) has nothing to read.
            out.value = Some(Value::Null);
        }
        for (i, item) in self.ret.items.iter().enumerate() {
            let value = decoder.item(i, item);
            match (item.after, value) {
                (false, value) => out.value = value,
                (true, Some(value)) => out.after.push((item.name.clone(), value)),
                (true, None) => {}
            }
        }
        out.unavailable = decoder.unavailable;
        out.is_error = self.returns_result
            && matches!(&out.value, Some(Value::Variant(name, _)) if name == "Err");
        out
    }

    fn decoder<'a>(
        &'a self,
        plan: &'a ProbePlan,
        regs: &'a [u64; 16],
        fetched: &'a [FetchResult<'a>],
    ) -> Decoder<'a> {
        Decoder {
            plan,
            types: &self.types,
            lang: self.language,
            limits: &self.limits,
            regs,
            fetched,
            unavailable: Vec::new(),
        }
    }

    /// True when the function returns nothing (and there is debug info to say so).
    pub fn returns_void(&self) -> bool {
        self.returns_void
    }

    /// True when the plan was compiled from a signature.
    pub fn has_debug_info(&self) -> bool {
        self.has_debug_info
    }

    /// What the entry probe will capture of each parameter: `(name, Ok(how) | Err(why not))`.
    pub fn describe_entry(&self) -> Vec<(String, Result<String, String>)> {
        self.entry
            .items
            .iter()
            .map(|item| (item.name.clone(), describe_segs(&item.segs)))
            .collect()
    }

    /// What the return probe will capture, as for [`Self::describe_entry`].
    pub fn describe_return(&self) -> Option<Result<String, String>> {
        self.ret
            .items
            .iter()
            .find(|item| !item.after)
            .map(|item| describe_segs(&item.segs))
    }
}

fn reg_name(reg: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    NAMES.get(reg as usize).copied().unwrap_or("?")
}

fn describe_segs(segs: &[Seg]) -> Result<String, String> {
    let parts: Vec<String> = segs
        .iter()
        .filter(|seg| !matches!(seg, Seg::Missing { reason, .. } if reason == "padding"))
        .map(|seg| match seg {
            Seg::Reg { reg, .. } => reg_name(*reg).to_owned(),
            Seg::RegPlus { reg, add, .. } => format!("{}{add:+}", reg_name(*reg)),
            Seg::Loaded { .. } => "loaded value".to_owned(),
            Seg::Fetched { size, .. } => format!("memory ({size} bytes)"),
            Seg::Bytes(_) => "constant".to_owned(),
            Seg::Missing { reason, .. } => format!("missing: {reason}"),
        })
        .collect();
    let missing: Vec<&str> = segs
        .iter()
        .filter_map(|s| match s {
            Seg::Missing { reason, .. } if reason != "padding" => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    if !missing.is_empty() && missing.len() == segs.len() {
        return Err(missing[0].to_owned());
    }
    Ok(parts.join(" + "))
}

impl Decoder<'_> {
    fn note(&mut self, path: &str, reason: impl Into<String>) {
        self.unavailable.push((path.to_owned(), reason.into()));
    }

    fn fetch_view(&self, fetch: usize) -> Result<View, String> {
        match self.fetched.get(fetch) {
            Some(FetchResult::Bytes(b)) => Ok(View {
                bytes: b.to_vec(),
                missing: Vec::new(),
            }),
            Some(FetchResult::Failed(errno)) => Err(format!(
                "unreadable memory (errno {})",
                errno.unsigned_abs()
            )),
            Some(FetchResult::Null) => Err("null pointer".to_owned()),
            Some(FetchResult::Skipped) | None => Err("not read".to_owned()),
        }
    }

    fn item_view(&self, item: &Item) -> View {
        let mut bytes = Vec::new();
        let mut missing = Vec::new();
        for seg in &item.segs {
            let start = bytes.len() as u64;
            let size = seg.size();
            let mut put = |word: Option<Vec<u8>>, reason: &str| match word {
                Some(mut b) => {
                    b.resize(size as usize, 0);
                    bytes.extend_from_slice(&b);
                }
                None => {
                    bytes.resize((start + size) as usize, 0);
                    missing.push((start, start + size, reason.to_owned()));
                }
            };
            match seg {
                Seg::Reg { reg, .. } => {
                    put(
                        self.regs
                            .get(*reg as usize)
                            .map(|r| r.to_le_bytes().to_vec()),
                        "register",
                    );
                }
                Seg::RegPlus { reg, add, mask, .. } => put(
                    self.regs
                        .get(*reg as usize)
                        .map(|r| (r.wrapping_add(*add as u64) & mask).to_le_bytes().to_vec()),
                    "register",
                ),
                Seg::Loaded { fetch, add, .. } => match self.fetch_view(*fetch) {
                    Ok(v) => put(
                        v.word(0, 8)
                            .map(|w| w.wrapping_add(*add as u64).to_le_bytes().to_vec()),
                        "short read",
                    ),
                    Err(reason) => put(None, &reason),
                },
                Seg::Fetched { fetch, .. } => match self.fetch_view(*fetch) {
                    Ok(v) if v.bytes.len() as u64 >= size => put(Some(v.bytes), ""),
                    Ok(_) => put(None, "short read"),
                    Err(reason) => put(None, &reason),
                },
                Seg::Bytes(b) => put(Some(b.clone()), ""),
                Seg::Missing { reason, .. } => put(None, reason),
            }
        }
        View { bytes, missing }
    }

    fn item(&mut self, index: usize, item: &Item) -> Option<Value> {
        let view = self.item_view(item);
        let size = self.types.size(item.ty).unwrap_or(0);
        // A value missing as a whole is reported once, under its own name.
        if size > 0
            && let Some(reason) = whole_gap(&view, size)
        {
            self.note(&item.path, reason);
            return None;
        }
        self.value(item.ty, Buf::Item(index), &view, 0, &item.path, 0)
    }

    /// Decodes the value of type `ty` at `view[at..]`; `None` when it is unavailable (the
    /// reason is noted under `path`).
    fn value(
        &mut self,
        ty: TypeId,
        buf: Buf,
        view: &View,
        at: u64,
        path: &str,
        depth: u32,
    ) -> Option<Value> {
        let types = self.types;
        let def = types.get(ty);
        if depth > 64 {
            self.note(path, "nested too deep");
            return None;
        }
        if let Some(pl) = types.ptr_len(ty, self.lang) {
            return self.ptr_len(&pl, buf, view, at, path, depth);
        }
        let size = types.size(ty);
        let scalar = |d: &mut Self, len: u64| -> Option<u64> {
            if let Some(reason) = view.gap(at, len) {
                d.note(path, reason.to_owned());
                return None;
            }
            view.word(at, len)
        };
        match &def.kind {
            TypeKind::Int { signed } => {
                let size = size?;
                if size == 16 {
                    if let Some(reason) = view.gap(at, 16) {
                        self.note(path, reason.to_owned());
                        return None;
                    }
                    let lo = view.word(at, 8)?;
                    let hi = view.word(at + 8, 8)?;
                    return self.int128(lo, hi, *signed, path);
                }
                let raw = scalar(self, size)?;
                Some(int_value(extend(raw, size, *signed), *signed))
            }
            TypeKind::Bool => Some(Value::Bool(scalar(self, size.unwrap_or(1))? & 0xff != 0)),
            TypeKind::Char { signed } => {
                let raw = scalar(self, 1)?;
                let byte = raw as u8;
                // Plain `char` is text; `signed char` / `unsigned char` (`int8_t`,
                // `uint8_t`) are numbers.
                Some(if types.is_text_char(ty) && (0x20..0x7f).contains(&byte) {
                    Value::Str(char::from(byte).to_string())
                } else {
                    int_value(extend(raw, 1, *signed), *signed)
                })
            }
            TypeKind::RustChar => {
                let raw = scalar(self, 4)? as u32;
                match char::from_u32(raw) {
                    Some(c) => Some(Value::Str(c.to_string())),
                    None => Some(Value::UInt(u64::from(raw))),
                }
            }
            TypeKind::Float => match size? {
                4 => Some(Value::Float(f64::from(f32::from_bits(
                    scalar(self, 4)? as u32
                )))),
                8 => Some(Value::Float(f64::from_bits(scalar(self, 8)?))),
                _ => {
                    self.note(path, "long double not decoded");
                    None
                }
            },
            TypeKind::Enum {
                signed,
                enumerators,
            } => {
                let size = size?;
                let v = extend(scalar(self, size)?, size, *signed);
                Some(match enumerators.iter().find(|(_, e)| *e == v) {
                    Some((name, _)) => Value::Enum(name.clone()),
                    None => int_value(v, *signed),
                })
            }
            TypeKind::Pointer { pointee, .. } => {
                let raw = scalar(self, 8)?;
                self.pointer(ty, *pointee, raw, buf, at, path, depth)
            }
            TypeKind::Struct {
                members, variants, ..
            } => {
                if let Some(part) = variants {
                    return self.variant(part, buf, view, at, path, depth);
                }
                let tuple = types.is_tuple_like(ty);
                let mut fields = Vec::new();
                for m in members {
                    let sub = if tuple {
                        format!("{path}[{}]", &m.name[2..])
                    } else {
                        format!("{path}.{}", m.name)
                    };
                    let value = match m.bits {
                        Some((bit, bits)) => {
                            self.bitfield(m.ty, view, at + m.offset, bit, bits, &sub)
                        }
                        None => self.value(m.ty, buf, view, at + m.offset, &sub, depth + 1),
                    };
                    // C++ base classes: their fields join the object's own.
                    if m.name.starts_with("<base ")
                        && let Some(Value::Struct(inner)) = value
                    {
                        fields.extend(inner);
                        continue;
                    }
                    if let Some(v) = value {
                        fields.push((m.name.clone(), v));
                    }
                }
                if tuple {
                    return Some(Value::Array(fields.into_iter().map(|(_, v)| v).collect()));
                }
                if members.is_empty() && self.lang == Language::Rust && def.name == "()" {
                    return Some(Value::Null);
                }
                Some(Value::Struct(fields))
            }
            TypeKind::Union { members } => {
                let mut fields = Vec::new();
                for m in members {
                    let sub = format!("{path}.{}", m.name);
                    // Pointers inside unions are not followed: which member is live is unknown.
                    let v = match types.get(m.ty).kind {
                        TypeKind::Pointer { .. } => {
                            let raw = scalar(self, 8)?;
                            Some(if raw == 0 {
                                Value::Null
                            } else {
                                Value::Ptr(raw)
                            })
                        }
                        _ => self.value(m.ty, buf, view, at + m.offset, &sub, depth + 1),
                    };
                    if let Some(v) = v {
                        fields.push((m.name.clone(), v));
                    }
                }
                Some(Value::Struct(fields))
            }
            TypeKind::Array { element, count } => {
                let Some(n) = *count else {
                    self.note(path, "array of unknown length");
                    return None;
                };
                let esize = types.size(*element).unwrap_or(0);
                if types.is_text_char(*element) {
                    if let Some(reason) = view.gap(at, n) {
                        self.note(path, reason.to_owned());
                        return None;
                    }
                    let bytes = &view.bytes[at as usize..(at + n) as usize];
                    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                    return Some(Value::from_bytes(&bytes[..end]));
                }
                let shown = n.min(4096);
                let mut items = Vec::new();
                for i in 0..shown {
                    let sub = format!("{path}[{i}]");
                    match self.value(*element, buf, view, at + i * esize, &sub, depth + 1) {
                        Some(v) => items.push(v),
                        None => items.push(Value::Null),
                    }
                }
                if shown < n {
                    self.note(path, format!("truncated: first {shown} of {n} elements"));
                }
                Some(Value::Array(items))
            }
            TypeKind::Void => Some(Value::Null),
            TypeKind::Function | TypeKind::Unknown => {
                self.note(path, format!("type {} not decoded", def.name));
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pointer(
        &mut self,
        ty: TypeId,
        pointee: TypeId,
        raw: u64,
        buf: Buf,
        at: u64,
        path: &str,
        depth: u32,
    ) -> Option<Value> {
        if raw == 0 {
            return Some(Value::Null);
        }
        match self.plan.follows.get(&(buf, at)) {
            None => Some(Value::Ptr(raw)),
            Some(Follow::Skipped(reason)) => {
                let reason = reason.clone();
                self.note(path, reason);
                Some(Value::Ptr(raw))
            }
            Some(Follow::Fetch(fetch)) => {
                let fetch = *fetch;
                let view = match self.fetch_view(fetch) {
                    Ok(v) => v,
                    Err(reason) => {
                        self.note(path, format!("{reason} at {raw:#x}"));
                        return Some(Value::Ptr(raw));
                    }
                };
                if self.types.is_c_string(ty) && self.lang != Language::Rust {
                    return Some(self.c_string(&view.bytes, path));
                }
                self.value(pointee, Buf::Fetch(fetch), &view, 0, path, depth + 1)
            }
        }
    }

    fn c_string(&mut self, bytes: &[u8], path: &str) -> Value {
        let limit = usize::from(self.limits.max_string);
        // The helper's count includes the NUL; a full buffer means the string went on.
        if bytes.len() >= limit + 2 {
            let mut kept = &bytes[..limit];
            if let Err(e) = std::str::from_utf8(kept)
                && e.error_len().is_none()
            {
                // Do not turn a string cut inside a UTF-8 sequence into bytes.
                kept = &kept[..e.valid_up_to()];
            }
            self.note(path, format!("truncated: longer than {limit} bytes"));
            return Value::from_bytes(kept);
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Value::from_bytes(&bytes[..end])
    }

    fn ptr_len(
        &mut self,
        pl: &PtrLen,
        buf: Buf,
        view: &View,
        at: u64,
        path: &str,
        depth: u32,
    ) -> Option<Value> {
        let types = self.types;
        let (ptr_at, len_at) = (at + pl.ptr_offset, at + pl.len_offset);
        for place in [ptr_at, len_at] {
            if let Some(reason) = view.gap(place, 8) {
                self.note(path, reason.to_owned());
                return None;
            }
        }
        let ptr = view.word(ptr_at, 8)?;
        let len = view.word(len_at, 8)?;
        let esize = types.size(pl.element).unwrap_or(0);
        if len == 0 {
            return Some(if pl.text {
                Value::Str(String::new())
            } else {
                Value::Array(Vec::new())
            });
        }
        let (fetch, data) = match self.plan.follows.get(&(buf, ptr_at)) {
            Some(Follow::Fetch(f)) => {
                let f = *f;
                match self.fetch_view(f) {
                    Ok(v) => (f, v),
                    Err(reason) => {
                        self.note(path, format!("{reason} at {ptr:#x} ({len} elements)"));
                        return None;
                    }
                }
            }
            Some(Follow::Skipped(reason)) => {
                let reason = reason.clone();
                self.note(path, reason);
                return None;
            }
            None => {
                self.note(path, "not read");
                return None;
            }
        };
        if pl.text {
            let limit = u64::from(self.limits.max_string);
            let have = (data.bytes.len() as u64).min(len);
            let mut kept = &data.bytes[..have as usize];
            if len > have {
                if let Err(e) = std::str::from_utf8(kept)
                    && e.error_len().is_none()
                {
                    kept = &kept[..e.valid_up_to()];
                }
                self.note(
                    path,
                    format!(
                        "truncated: {len} bytes, first {} kept",
                        kept.len().min(limit as usize)
                    ),
                );
            }
            return Some(Value::from_bytes(kept));
        }
        if esize == 0 {
            return Some(Value::Array(Vec::new()));
        }
        let have = (data.bytes.len() as u64 / esize).min(len);
        let mut items = Vec::with_capacity(have as usize);
        for i in 0..have {
            let sub = format!("{path}[{i}]");
            let v = self.value(
                pl.element,
                Buf::Fetch(fetch),
                &data,
                i * esize,
                &sub,
                depth + 1,
            );
            items.push(v.unwrap_or(Value::Null));
        }
        if have < len {
            self.note(path, format!("truncated: first {have} of {len} elements"));
        }
        Some(Value::Array(items))
    }

    fn variant(
        &mut self,
        part: &crate::types::VariantPart,
        buf: Buf,
        view: &View,
        at: u64,
        path: &str,
        depth: u32,
    ) -> Option<Value> {
        let types = self.types;
        let chosen = match &part.discr {
            None => part.variants.first(),
            Some(d) => {
                let size = types.size(d.ty).unwrap_or(0);
                if let Some(reason) = view.gap(at + d.offset, size) {
                    self.note(path, reason.to_owned());
                    return None;
                }
                let tag = view.word(at + d.offset, size.min(8))?;
                part.variants
                    .iter()
                    .find(|v| v.discr_value == Some(tag))
                    .or_else(|| part.variants.iter().find(|v| v.discr_value.is_none()))
            }
        };
        let Some(v) = chosen else {
            self.note(path, "discriminant matches no variant");
            return None;
        };
        let name = v.member.name.clone();
        let payload_ty = v.member.ty;
        let sub = format!("{path}.{name}");
        let payload = match &types.get(payload_ty).kind {
            TypeKind::Struct { members, .. } if members.is_empty() => Value::Null,
            TypeKind::Struct { members, .. } if members.len() == 1 && members[0].name == "__0" => {
                let m = &members[0];
                self.value(
                    m.ty,
                    buf,
                    view,
                    at + v.member.offset + m.offset,
                    &sub,
                    depth + 1,
                )
                .unwrap_or(Value::Null)
            }
            _ => self
                .value(payload_ty, buf, view, at + v.member.offset, &sub, depth + 1)
                .unwrap_or(Value::Null),
        };
        Some(Value::Variant(name, Box::new(payload)))
    }

    fn bitfield(
        &mut self,
        ty: TypeId,
        view: &View,
        at: u64,
        bit: u64,
        bits: u64,
        path: &str,
    ) -> Option<Value> {
        let types = self.types;
        let unit = types.size(ty).unwrap_or(4).clamp(1, 8);
        let span = (bit + bits).div_ceil(8).max(unit).min(8);
        if let Some(reason) = view.gap(at, span) {
            self.note(path, reason.to_owned());
            return None;
        }
        let raw = view.word(at, span)?;
        if bits == 0 || bits > 64 || bit >= 64 {
            self.note(path, "malformed bit field");
            return None;
        }
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let v = (raw >> bit) & mask;
        let signed = matches!(
            types.get(ty).kind,
            TypeKind::Int { signed: true } | TypeKind::Enum { signed: true, .. }
        );
        Some(match &types.get(ty).kind {
            TypeKind::Bool => Value::Bool(v != 0),
            TypeKind::Enum { enumerators, .. } => {
                let e = if signed {
                    sign_extend_bits(v, bits)
                } else {
                    i128::from(v)
                };
                match enumerators.iter().find(|(_, x)| *x == e) {
                    Some((name, _)) => Value::Enum(name.clone()),
                    None => int_value(e, signed),
                }
            }
            _ if signed => int_value(sign_extend_bits(v, bits), true),
            _ => Value::UInt(v),
        })
    }

    fn int128(&mut self, lo: u64, hi: u64, signed: bool, path: &str) -> Option<Value> {
        let wide = (u128::from(hi) << 64) | u128::from(lo);
        let v = if signed {
            i64::try_from(wide as i128).map(Value::Int).ok()
        } else {
            u64::try_from(wide).map(Value::UInt).ok()
        };
        if v.is_none() {
            let shown = if signed {
                (wide as i128).to_string()
            } else {
                wide.to_string()
            };
            self.note(
                path,
                format!("128-bit value {shown} does not fit in 64 bits"),
            );
        }
        v
    }
}

/// The reason a value is missing as a whole, if it is.
fn whole_gap(view: &View, size: u64) -> Option<String> {
    let mut reasons: Vec<&str> = Vec::new();
    let mut covered = 0;
    for (s, e, r) in &view.missing {
        if *s < size {
            covered += e.min(&size) - s;
            if r != "padding" {
                reasons.push(r);
            }
        }
    }
    let padding: u64 = view
        .missing
        .iter()
        .filter(|(_, _, r)| r == "padding")
        .map(|(s, e, _)| e - s)
        .sum();
    if covered >= size && covered > padding {
        return Some(reasons.first().copied().unwrap_or("not read").to_owned());
    }
    None
}

fn sign_extend_bits(v: u64, bits: u64) -> i128 {
    let shift = 64 - bits;
    i128::from(((v << shift) as i64) >> shift)
}

/// The low `size` bytes of `raw`, sign-extended when `signed`.
fn extend(raw: u64, size: u64, signed: bool) -> i128 {
    let bits = size.min(8) * 8;
    let masked = if bits == 64 {
        raw
    } else {
        raw & ((1u64 << bits) - 1)
    };
    if signed {
        let shift = 64 - bits;
        i128::from(((masked << shift) as i64) >> shift)
    } else {
        i128::from(masked)
    }
}

fn int_value(v: i128, signed: bool) -> Value {
    if signed {
        Value::Int(v as i64)
    } else {
        Value::UInt(v as u64)
    }
}
