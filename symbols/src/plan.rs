//! Capture plans: which registers and memory to read at a function's entry and return
//! probes (SysV x86-64 calling convention, probe on the first instruction), and how to decode
//! what was read into [`Value`]s. A value is decoded exactly or reported unavailable with the
//! reason; never guessed.

use crate::dwarf::{Signature, Type};
use crate::value::Value;

/// Limits on what a plan reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Longest C string kept, in bytes; longer ones are truncated and reported.
    pub max_string: u16,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits { max_string: 256 }
    }
}

/// A register a fetch is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Register {
    Rdi,
    Rsi,
    Rdx,
    Rcx,
    R8,
    R9,
    Rax,
    Rsp,
}

/// The integer argument registers, in order.
const ARG_REGS: [Register; 6] = [
    Register::Rdi,
    Register::Rsi,
    Register::Rdx,
    Register::Rcx,
    Register::R8,
    Register::R9,
];

/// How to read memory at a fetch's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchKind {
    /// A NUL-terminated string with `bpf_probe_read_user_str` semantics: at most `max_len`
    /// bytes including the NUL; the result holds the bytes read including the NUL.
    CString { max_len: u16 },
    /// Exactly `len` bytes.
    Memory { len: u16 },
}

/// One read done by the probe: at address `value of reg + offset`, read `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub reg: Register,
    pub offset: i64,
    pub kind: FetchKind,
}

/// The outcome of one fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchResult<'a> {
    /// The bytes read (for `CString`, as many as the helper returned, NUL included).
    Bytes(&'a [u8]),
    /// The helper failed with this negative errno.
    Failed(i32),
}

/// Decoded arguments: values that were read, and `(name, reason)` for those that were not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecodedArgs {
    pub args: Vec<(String, Value)>,
    pub unavailable: Vec<(String, String)>,
}

/// Where an argument is at the entry probe.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// An integer-class value in argument register `n`.
    Reg(usize),
    /// An integer-class value in an 8-byte stack slot, read by fetch `fetch`.
    Stack {
        fetch: usize,
        offset: i64,
    },
    /// A `char *` in argument register `reg`, its string read by fetch `fetch`.
    StringInReg {
        reg: usize,
        fetch: usize,
    },
    /// A `char *` in a stack slot: only the pointer is read (by fetch `fetch`).
    StringOnStack {
        fetch: usize,
        offset: i64,
    },
    Unavailable(String),
}

#[derive(Clone, Debug, PartialEq)]
struct ArgPlan {
    name: String,
    ty: Type,
    source: Source,
}

#[derive(Clone, Debug, PartialEq)]
enum ReturnPlan {
    Void,
    /// Integer-class, in rax (rax:rdx for 128-bit integers).
    Int(Type),
    /// A `char *` in rax; the string is read by return fetch `fetch`.
    String {
        fetch: usize,
    },
    Unavailable(String),
}

/// What to read at a function's entry and return probes, and how to decode it.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionPlan {
    /// Reads at the entry probe; the agent passes their results to `decode_entry` in order.
    pub entry: Vec<Fetch>,
    /// Reads at the return probe; the agent passes their results to `decode_return` in order.
    pub ret: Vec<Fetch>,
    args: Vec<ArgPlan>,
    ret_plan: ReturnPlan,
    has_debug_info: bool,
    max_string: u16,
}

const NO_DEBUG_INFO: &str = "no DWARF debug info: rebuild with -g";
const IN_FP_REGISTER: &str = "in FP register";
const BY_VALUE: &str = "passed by value in registers/memory: not decoded yet";
const AFTER_AGGREGATE: &str = "register assignment unknown after a by-value aggregate";
const RETURN_IN_MEMORY: &str =
    "register assignment unknown: the by-value return value may take a hidden pointer";
const RETURNED_BY_VALUE: &str = "returned by value in registers/memory: not decoded yet";

/// How the ABI passes a value of type `ty`.
enum Class {
    /// One integer register or eightbyte.
    Integer,
    /// One SSE register or eightbyte.
    Sse,
    /// `long double`: on the stack, 16-byte aligned.
    X87,
    /// Aggregates, 128-bit integers, unknown types: not modeled yet.
    Other,
}

fn class(ty: &Type) -> Class {
    match ty {
        Type::Int {
            size: 1 | 2 | 4 | 8,
            ..
        }
        | Type::Bool
        | Type::Char { .. }
        | Type::CString
        | Type::Pointer { .. } => Class::Integer,
        Type::Enum { size, .. } if *size <= 8 => Class::Integer,
        Type::Float { size: 4 | 8, .. } => Class::Sse,
        Type::Float { name, .. } if !name.contains("long double") => Class::Sse,
        Type::Float { .. } => Class::X87,
        _ => Class::Other,
    }
}

/// Compiles the plan for a function; `None` means there is no debug info.
pub fn compile(sig: Option<&Signature>, limits: &PlanLimits) -> FunctionPlan {
    let max_string = limits.max_string.min(u16::MAX - 2);
    // Two more than the limit: one for the NUL and one to tell "exactly the limit" from
    // "longer than the limit".
    let string_fetch = FetchKind::CString {
        max_len: max_string + 2,
    };
    let Some(sig) = sig else {
        return FunctionPlan {
            entry: Vec::new(),
            ret: Vec::new(),
            args: Vec::new(),
            ret_plan: ReturnPlan::Unavailable("no DWARF debug info".to_owned()),
            has_debug_info: false,
            max_string,
        };
    };

    let mut entry = Vec::new();
    let mut args = Vec::new();
    let mut next_reg = 0usize;
    let mut sse = 0usize;
    // Offset from rsp at the first instruction: the return address is at [rsp].
    let mut stack = 8i64;
    let mut unknown_after: Option<&str> = None;

    let ret_plan = match sig.ret.as_ref() {
        None => ReturnPlan::Void,
        Some(ty) => match (class(ty), ty) {
            (Class::Integer, Type::CString) => {
                let fetch = 0;
                ReturnPlan::String { fetch }
            }
            (Class::Integer, _) | (_, Type::Int { size: 16, .. }) => ReturnPlan::Int(ty.clone()),
            (Class::Sse, _) => ReturnPlan::Unavailable(IN_FP_REGISTER.to_owned()),
            (Class::X87, _) => ReturnPlan::Unavailable("in x87 register".to_owned()),
            (
                Class::Other,
                Type::Struct { size, .. } | Type::Union { size, .. } | Type::Array { size, .. },
            ) if *size > 16 => {
                // Returned in memory: the caller passes the destination in rdi.
                next_reg = 1;
                ReturnPlan::Unavailable(RETURNED_BY_VALUE.to_owned())
            }
            (Class::Other, _) => {
                unknown_after = Some(RETURN_IN_MEMORY);
                ReturnPlan::Unavailable(RETURNED_BY_VALUE.to_owned())
            }
        },
    };
    let ret = match ret_plan {
        ReturnPlan::String { .. } => vec![Fetch {
            reg: Register::Rax,
            offset: 0,
            kind: string_fetch,
        }],
        _ => Vec::new(),
    };

    for param in &sig.params {
        let source = match class(&param.ty) {
            Class::Integer => match unknown_after {
                Some(reason) => Source::Unavailable(reason.to_owned()),
                None if next_reg < ARG_REGS.len() => {
                    let reg = next_reg;
                    next_reg += 1;
                    if param.ty == Type::CString {
                        entry.push(Fetch {
                            reg: ARG_REGS[reg],
                            offset: 0,
                            kind: string_fetch,
                        });
                        Source::StringInReg {
                            reg,
                            fetch: entry.len() - 1,
                        }
                    } else {
                        Source::Reg(reg)
                    }
                }
                None => {
                    let offset = stack;
                    stack += 8;
                    entry.push(Fetch {
                        reg: Register::Rsp,
                        offset,
                        kind: FetchKind::Memory { len: 8 },
                    });
                    let fetch = entry.len() - 1;
                    if param.ty == Type::CString {
                        Source::StringOnStack { fetch, offset }
                    } else {
                        Source::Stack { fetch, offset }
                    }
                }
            },
            Class::Sse => {
                if sse < 8 {
                    sse += 1;
                } else {
                    // The ninth and later FP arguments take stack slots.
                    stack += 8;
                }
                Source::Unavailable(IN_FP_REGISTER.to_owned())
            }
            Class::X87 => {
                // The argument area starts at rsp+8, 16-byte aligned.
                let area = (stack - 8 + 15) / 16 * 16;
                stack = 8 + area + 16;
                Source::Unavailable("long double passed in memory: not decoded yet".to_owned())
            }
            Class::Other => {
                unknown_after.get_or_insert(AFTER_AGGREGATE);
                Source::Unavailable(BY_VALUE.to_owned())
            }
        };
        args.push(ArgPlan {
            name: param.name.clone(),
            ty: param.ty.clone(),
            source,
        });
    }

    FunctionPlan {
        entry,
        ret,
        args,
        ret_plan,
        has_debug_info: true,
        max_string,
    }
}

impl FunctionPlan {
    /// Decodes the arguments from the six argument registers (rdi, rsi, rdx, rcx, r8, r9) and
    /// the results of `self.entry` (`fetched[i]` is the result of `entry[i]`).
    pub fn decode_entry(&self, regs: &[u64; 6], fetched: &[FetchResult]) -> DecodedArgs {
        let mut out = DecodedArgs::default();
        if !self.has_debug_info {
            out.unavailable
                .push(("arguments".to_owned(), NO_DEBUG_INFO.to_owned()));
            return out;
        }
        for arg in &self.args {
            let result = match &arg.source {
                Source::Reg(n) => Ok(decode_scalar(&arg.ty, regs[*n])),
                Source::Stack { fetch, offset } => {
                    stack_slot(fetched.get(*fetch), *offset).map(|raw| decode_scalar(&arg.ty, raw))
                }
                Source::StringInReg { reg, fetch } => {
                    self.decode_string(&arg.name, regs[*reg], fetched.get(*fetch), &mut out)
                }
                Source::StringOnStack { fetch, offset } => stack_slot(fetched.get(*fetch), *offset)
                    .and_then(|ptr| match ptr {
                        0 => Ok(Value::Null),
                        _ => Err(format!(
                            "string pointer {ptr:#x} passed on the stack: string not read yet"
                        )),
                    }),
                Source::Unavailable(reason) => Err(reason.clone()),
            };
            match result {
                Ok(value) => out.args.push((arg.name.clone(), value)),
                Err(reason) => out.unavailable.push((arg.name.clone(), reason)),
            }
        }
        out
    }

    /// Decodes the return value from rax, rdx and the results of `self.ret`. Unavailable
    /// values are reported under the name `return`; `void` gives `None` and nothing else.
    pub fn decode_return(
        &self,
        rax: u64,
        rdx: u64,
        fetched: &[FetchResult],
    ) -> (Option<Value>, Vec<(String, String)>) {
        let mut out = DecodedArgs::default();
        let result = match &self.ret_plan {
            ReturnPlan::Void => return (None, Vec::new()),
            ReturnPlan::Int(ty) => match ty {
                Type::Int {
                    size: 16, signed, ..
                } => decode_int128(rax, rdx, *signed),
                _ => Ok(decode_scalar(ty, rax)),
            },
            ReturnPlan::String { fetch } => {
                self.decode_string("return", rax, fetched.get(*fetch), &mut out)
            }
            ReturnPlan::Unavailable(reason) => Err(reason.clone()),
        };
        match result {
            Ok(value) => (Some(value), out.unavailable),
            Err(reason) => {
                out.unavailable.push(("return".to_owned(), reason));
                (None, out.unavailable)
            }
        }
    }

    /// True when the function returns nothing (and there is debug info to say so).
    pub fn returns_void(&self) -> bool {
        self.ret_plan == ReturnPlan::Void
    }

    /// True when the plan was compiled from a signature.
    pub fn has_debug_info(&self) -> bool {
        self.has_debug_info
    }

    /// A C string: `Null` for a null pointer; a truncation note goes to `out.unavailable`.
    fn decode_string(
        &self,
        name: &str,
        ptr: u64,
        fetched: Option<&FetchResult>,
        out: &mut DecodedArgs,
    ) -> Result<Value, String> {
        if ptr == 0 {
            return Ok(Value::Null);
        }
        let bytes = match fetched {
            Some(FetchResult::Bytes(bytes)) => *bytes,
            Some(FetchResult::Failed(errno)) => {
                return Err(format!(
                    "unreadable memory at {ptr:#x} (errno {})",
                    errno.unsigned_abs()
                ));
            }
            None => return Err("string not fetched".to_owned()),
        };
        let limit = usize::from(self.max_string);
        // The helper's count includes the NUL; a full buffer means the string went on.
        if bytes.len() >= limit + 2 {
            let mut kept = &bytes[..limit];
            if let Err(e) = std::str::from_utf8(kept)
                && e.error_len().is_none()
            {
                // Do not turn a string cut inside a UTF-8 sequence into bytes.
                kept = &kept[..e.valid_up_to()];
            }
            out.unavailable.push((
                name.to_owned(),
                format!("truncated: longer than {limit} bytes"),
            ));
            return Ok(Value::from_bytes(kept));
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Ok(Value::from_bytes(&bytes[..end]))
    }
}

/// An 8-byte little-endian stack slot.
fn stack_slot(fetched: Option<&FetchResult>, offset: i64) -> Result<u64, String> {
    match fetched {
        Some(FetchResult::Bytes(bytes)) if bytes.len() >= 8 => {
            let raw: [u8; 8] = bytes[..8].try_into().expect("eight bytes");
            Ok(u64::from_le_bytes(raw))
        }
        Some(FetchResult::Bytes(bytes)) => Err(format!(
            "short read of stack slot at rsp+{offset} ({} bytes)",
            bytes.len()
        )),
        Some(FetchResult::Failed(errno)) => Err(format!(
            "unreadable stack slot at rsp+{offset} (errno {})",
            errno.unsigned_abs()
        )),
        None => Err("stack slot not fetched".to_owned()),
    }
}

/// The low `size` bytes of `raw`, sign-extended when `signed`.
fn extend(raw: u64, size: u8, signed: bool) -> i128 {
    let bits = u32::from(size.min(8)) * 8;
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

/// An integer-class value from a register or stack slot. The ABI leaves the bits above a
/// value's width undefined, so they are masked off.
fn decode_scalar(ty: &Type, raw: u64) -> Value {
    match ty {
        Type::Int { signed, size, .. } => int_value(extend(raw, *size, *signed), *signed),
        Type::Bool => Value::Bool(raw & 0xff != 0),
        Type::Char { signed } => {
            let byte = raw as u8;
            if (0x20..0x7f).contains(&byte) {
                Value::Str(char::from(byte).to_string())
            } else {
                int_value(extend(raw, 1, *signed), *signed)
            }
        }
        Type::Enum {
            size,
            signed,
            enumerators,
            ..
        } => {
            let v = extend(raw, *size, *signed);
            match enumerators.iter().find(|(_, e)| *e == v) {
                Some((name, _)) => Value::Enum(name.clone()),
                None => int_value(v, *signed),
            }
        }
        Type::Pointer { .. } | Type::CString => match raw {
            0 => Value::Null,
            addr => Value::Ptr(addr),
        },
        // `compile` only routes integer-class types here.
        _ => Value::UInt(raw),
    }
}

/// A 128-bit integer returned in rax (low) and rdx (high), when it fits a 64-bit value.
fn decode_int128(rax: u64, rdx: u64, signed: bool) -> Result<Value, String> {
    let wide = (u128::from(rdx) << 64) | u128::from(rax);
    if signed {
        i64::try_from(wide as i128)
            .map(Value::Int)
            .map_err(|_| format!("128-bit value {} does not fit in 64 bits", wide as i128))
    } else {
        u64::try_from(wide)
            .map(Value::UInt)
            .map_err(|_| format!("128-bit value {wide} does not fit in 64 bits"))
    }
}
