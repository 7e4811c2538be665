//! Where a value lives at a probe address: DWARF location expressions (single expressions
//! and location lists) evaluated symbolically, and the canonical frame address from the
//! call frame information (`.eh_frame`).
//!
//! Nothing is read from the process here. An expression becomes a list of [`Piece`]s, each
//! a register, memory at an address computed from registers (possibly through loads), a
//! value computed from registers, constant bytes, or missing with a reason. The planner
//! turns memory pieces into fetch ops; the decoder reads registers from the event.

use std::ops::Range;

/// One DWARF expression operation, reduced to what the evaluator understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocOp {
    /// `DW_OP_reg*`: the value is in the register.
    Reg(u16),
    /// `DW_OP_breg*`: push register + offset.
    BReg(u16, i64),
    /// `DW_OP_fbreg`: push frame base + offset.
    FBReg(i64),
    /// `DW_OP_call_frame_cfa`.
    Cfa,
    /// `DW_OP_lit*`, `DW_OP_const*`.
    Const(u64),
    /// `DW_OP_plus_uconst`.
    PlusConst(u64),
    Plus,
    Minus,
    /// `DW_OP_and`.
    And,
    /// `DW_OP_deref` of `size` bytes.
    Deref(u8),
    StackValue,
    /// `DW_OP_piece` of `bytes` bytes.
    Piece(u64),
    /// `DW_OP_entry_value` of a sub-expression.
    EntryValue(Vec<LocOp>),
    ImplicitValue(Vec<u8>),
    /// Anything else, by name: the value is reported unavailable with it.
    Unsupported(&'static str),
}

/// Where a parameter is, as DWARF says: one expression for the whole function, or a list
/// of address ranges with their expressions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationSpec {
    Expr(Vec<LocOp>),
    List(Vec<(Range<u64>, Vec<LocOp>)>),
}

/// A symbolic 64-bit value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sym {
    Const(u64),
    /// The register's value plus a constant.
    Reg {
        reg: u8,
        add: i64,
    },
    /// The 8 bytes at an address, plus a constant.
    Load {
        at: Box<Sym>,
        add: i64,
    },
    /// A value with only the bits of `mask` kept (`DW_OP_and`); only as a value.
    Masked {
        value: Box<Sym>,
        mask: u64,
    },
}

impl Sym {
    fn add(self, k: i64) -> Sym {
        match self {
            Sym::Const(c) => Sym::Const(c.wrapping_add(k as u64)),
            Sym::Reg { reg, add } => Sym::Reg {
                reg,
                add: add.wrapping_add(k),
            },
            Sym::Load { at, add } => Sym::Load {
                at,
                add: add.wrapping_add(k),
            },
            // Arithmetic after a mask is not modelled; keep the mask and fail at use.
            masked @ Sym::Masked { .. } => Sym::Masked {
                value: Box::new(masked),
                mask: 0,
            },
        }
    }
}

/// Part of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The low `size` bytes of a general-purpose register (DWARF number 0–15).
    Reg {
        reg: u8,
        size: u64,
    },
    /// `size` bytes of memory at an address.
    Memory {
        at: Sym,
        size: u64,
    },
    /// A computed value (its low `size` bytes).
    Value {
        value: Sym,
        size: u64,
    },
    Bytes(Vec<u8>),
    Missing {
        size: u64,
        reason: String,
    },
}

impl Piece {
    pub fn size(&self) -> u64 {
        match self {
            Piece::Reg { size, .. }
            | Piece::Memory { size, .. }
            | Piece::Value { size, .. }
            | Piece::Missing { size, .. } => *size,
            Piece::Bytes(b) => b.len() as u64,
        }
    }
}

/// The canonical frame address rule at an address: `register + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CfaRule {
    pub reg: u8,
    pub offset: i64,
}

/// What the evaluator knows about the probe site.
#[derive(Clone, Debug)]
pub struct Site<'a> {
    pub pc: u64,
    /// The probe is on the function's first instruction: entry values are the registers.
    pub at_entry: bool,
    /// The CFA rule at `pc`.
    pub cfa: Option<CfaRule>,
    /// The function's `DW_AT_frame_base`.
    pub frame_base: Option<&'a [LocOp]>,
}

pub const OPTIMIZED_OUT: &str = "optimized out";
pub const IN_FP_REGISTER: &str = "in FP register";

/// x86-64 DWARF registers 17–32 are xmm0–15, 33–40 st0–7.
fn register_reason(reg: u16) -> String {
    match reg {
        17..=32 => IN_FP_REGISTER.to_owned(),
        33..=40 => "in x87 register".to_owned(),
        _ => format!("in register {reg} (not captured)"),
    }
}

/// The expression that applies at `pc`, or why none does.
pub fn select(spec: &LocationSpec, pc: u64) -> Result<&[LocOp], String> {
    match spec {
        LocationSpec::Expr(ops) => Ok(ops),
        LocationSpec::List(list) => list
            .iter()
            .find(|(range, _)| range.contains(&pc))
            .map(|(_, ops)| ops.as_slice())
            .ok_or_else(|| format!("{OPTIMIZED_OUT} (no location at the probe address)")),
    }
}

/// True when an expression addresses the function's own stack frame (`DW_OP_fbreg`
/// below a CFA frame base, or relative to rsp/rbp): such single expressions only hold once
/// the prologue has run. Slots at or above the CFA are the caller's (stack arguments) and
/// hold from the first instruction.
pub fn is_frame_relative(ops: &[LocOp], frame_base: Option<&[LocOp]>) -> bool {
    let cfa_based = matches!(frame_base, Some([LocOp::Cfa]));
    ops.iter().any(|op| match op {
        LocOp::FBReg(off) => !(cfa_based && *off >= 0),
        LocOp::BReg(r, _) => matches!(r, 6 | 7),
        _ => false,
    })
}

/// Evaluates a location expression for a value of `size` bytes.
pub fn evaluate(ops: &[LocOp], size: u64, site: &Site) -> Vec<Piece> {
    if ops.is_empty() {
        return vec![Piece::Missing {
            size,
            reason: OPTIMIZED_OUT.to_owned(),
        }];
    }
    let mut pieces = Vec::new();
    let mut state = Eval::default();
    let mut covered = 0u64;
    for op in ops {
        if let LocOp::Piece(bytes) = op {
            pieces.push(state.finish(*bytes));
            covered += bytes;
            state = Eval::default();
            continue;
        }
        if let Err(reason) = state.step(op, site, 0) {
            state.failed = Some(reason);
        }
    }
    if pieces.is_empty() {
        return vec![state.finish(size)];
    }
    if covered < size {
        pieces.push(Piece::Missing {
            size: size - covered,
            reason: OPTIMIZED_OUT.to_owned(),
        });
    }
    pieces
}

#[derive(Default)]
struct Eval {
    stack: Vec<Sym>,
    reg: Option<u16>,
    stack_value: bool,
    implicit: Option<Vec<u8>>,
    failed: Option<String>,
}

const MAX_STACK: usize = 64;

impl Eval {
    fn pop(&mut self) -> Result<Sym, String> {
        self.stack
            .pop()
            .ok_or_else(|| "malformed location expression (stack underflow)".to_owned())
    }

    fn push(&mut self, s: Sym) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err("malformed location expression (stack overflow)".to_owned());
        }
        self.stack.push(s);
        Ok(())
    }

    fn step(&mut self, op: &LocOp, site: &Site, depth: u32) -> Result<(), String> {
        if self.failed.is_some() {
            return Ok(());
        }
        match op {
            LocOp::Reg(r) => self.reg = Some(*r),
            LocOp::BReg(r, off) => {
                let reg = gp(*r)?;
                self.push(Sym::Reg { reg, add: *off })?;
            }
            LocOp::FBReg(off) => {
                let base = frame_base(site, depth)?;
                self.push(base.add(*off))?;
            }
            LocOp::Cfa => {
                let cfa = site
                    .cfa
                    .ok_or("no call frame information at the probe address")?;
                self.push(Sym::Reg {
                    reg: cfa.reg,
                    add: cfa.offset,
                })?;
            }
            LocOp::Const(c) => self.push(Sym::Const(*c))?,
            LocOp::PlusConst(c) => {
                let top = self.pop()?;
                self.push(top.add(*c as i64))?;
            }
            LocOp::Plus | LocOp::Minus => {
                let b = self.pop()?;
                let a = self.pop()?;
                let k = match (b, op) {
                    (Sym::Const(k), LocOp::Plus) => k as i64,
                    (Sym::Const(k), _) => (k as i64).wrapping_neg(),
                    _ => return Err("location arithmetic on two registers".to_owned()),
                };
                self.push(a.add(k))?;
            }
            LocOp::And => {
                let b = self.pop()?;
                let a = self.pop()?;
                let (value, mask) = match (a, b) {
                    (Sym::Const(x), Sym::Const(y)) => (Sym::Const(x & y), u64::MAX),
                    (v, Sym::Const(m)) | (Sym::Const(m), v) => (v, m),
                    _ => return Err("location arithmetic on two registers".to_owned()),
                };
                self.push(match value {
                    Sym::Masked { value, mask: old } => Sym::Masked {
                        value,
                        mask: old & mask,
                    },
                    Sym::Const(c) => Sym::Const(c & mask),
                    v => Sym::Masked {
                        value: Box::new(v),
                        mask,
                    },
                })?;
            }
            LocOp::Deref(size) => {
                if *size != 8 {
                    return Err(format!("{size}-byte dereference in location"));
                }
                let at = self.pop()?;
                if load_depth(&at) >= 2 {
                    return Err("location dereferences too deep".to_owned());
                }
                self.push(Sym::Load {
                    at: Box::new(at),
                    add: 0,
                })?;
            }
            LocOp::StackValue => self.stack_value = true,
            LocOp::EntryValue(inner) => {
                if !site.at_entry {
                    return Err(
                        "entry value (only known at the function's first instruction)".to_owned(),
                    );
                }
                match inner.as_slice() {
                    [LocOp::Reg(r)] => {
                        let reg = gp(*r)?;
                        self.push(Sym::Reg { reg, add: 0 })?;
                    }
                    _ => return Err("complex entry value".to_owned()),
                }
            }
            LocOp::ImplicitValue(bytes) => self.implicit = Some(bytes.clone()),
            LocOp::Piece(_) => {}
            LocOp::Unsupported(name) => return Err(format!("unsupported location op {name}")),
        }
        Ok(())
    }

    fn finish(self, size: u64) -> Piece {
        if let Some(reason) = self.failed {
            return Piece::Missing { size, reason };
        }
        if let Some(mut bytes) = self.implicit {
            bytes.resize(size as usize, 0);
            return Piece::Bytes(bytes);
        }
        if let Some(r) = self.reg {
            return match gp(r) {
                Ok(reg) if size <= 8 => Piece::Reg { reg, size },
                Ok(_) => Piece::Missing {
                    size,
                    reason: "register piece wider than the register".to_owned(),
                },
                Err(reason) => Piece::Missing { size, reason },
            };
        }
        let mut stack = self.stack;
        match stack.pop() {
            None => Piece::Missing {
                size,
                reason: OPTIMIZED_OUT.to_owned(),
            },
            Some(value) if self.stack_value => Piece::Value { value, size },
            Some(Sym::Const(_)) => Piece::Missing {
                size,
                reason: "at a static address (not supported)".to_owned(),
            },
            Some(Sym::Masked { .. }) => Piece::Missing {
                size,
                reason: "masked address in location".to_owned(),
            },
            Some(at) => Piece::Memory { at, size },
        }
    }
}

fn load_depth(s: &Sym) -> u32 {
    match s {
        Sym::Load { at, .. } => 1 + load_depth(at),
        _ => 0,
    }
}

fn gp(r: u16) -> Result<u8, String> {
    if r < 16 {
        Ok(r as u8)
    } else {
        Err(register_reason(r))
    }
}

fn frame_base(site: &Site, depth: u32) -> Result<Sym, String> {
    let ops = site.frame_base.ok_or("no frame base for DW_OP_fbreg")?;
    if depth > 0 {
        return Err("recursive frame base".to_owned());
    }
    // A register location means "the register's value"; anything else is an address.
    match ops {
        [LocOp::Reg(r)] => Ok(Sym::Reg {
            reg: gp(*r)?,
            add: 0,
        }),
        _ => {
            let mut eval = Eval::default();
            for op in ops {
                eval.step(op, site, depth + 1)?;
            }
            eval.pop()
        }
    }
}

/// Converts a gimli expression; unreadable bytes give `Unsupported`.
pub fn parse_expression<R: gimli::Reader>(
    expr: gimli::Expression<R>,
    encoding: gimli::Encoding,
) -> Vec<LocOp> {
    let mut out = Vec::new();
    let mut ops = expr.operations(encoding);
    loop {
        let op = match ops.next() {
            Ok(Some(op)) => op,
            Ok(None) => break,
            Err(_) => {
                out.push(LocOp::Unsupported("malformed expression"));
                break;
            }
        };
        if out.len() > 256 {
            out.push(LocOp::Unsupported("expression too long"));
            break;
        }
        use gimli::Operation as O;
        out.push(match op {
            O::Register { register } => LocOp::Reg(register.0),
            O::RegisterOffset {
                register, offset, ..
            } => LocOp::BReg(register.0, offset),
            O::FrameOffset { offset } => LocOp::FBReg(offset),
            O::CallFrameCFA => LocOp::Cfa,
            O::UnsignedConstant { value } => LocOp::Const(value),
            O::SignedConstant { value } => LocOp::Const(value as u64),
            O::PlusConstant { value } => LocOp::PlusConst(value),
            O::Plus => LocOp::Plus,
            O::Minus => LocOp::Minus,
            O::And => LocOp::And,
            O::Deref {
                size, space: false, ..
            } => LocOp::Deref(size),
            O::StackValue => LocOp::StackValue,
            O::Piece {
                size_in_bits,
                bit_offset: None,
            } if size_in_bits % 8 == 0 => LocOp::Piece(size_in_bits / 8),
            O::Piece { .. } => LocOp::Unsupported("DW_OP_bit_piece"),
            O::EntryValue { expression } => {
                LocOp::EntryValue(parse_expression(gimli::Expression(expression), encoding))
            }
            O::ImplicitValue { data } => match data.to_slice() {
                Ok(bytes) if bytes.len() <= 64 => LocOp::ImplicitValue(bytes.into_owned()),
                _ => LocOp::Unsupported("DW_OP_implicit_value"),
            },
            O::Nop => continue,
            O::Address { .. } | O::AddressIndex { .. } => LocOp::Unsupported("DW_OP_addr"),
            O::ImplicitPointer { .. } => LocOp::Unsupported("DW_OP_implicit_pointer"),
            O::TLS => LocOp::Unsupported("DW_OP_form_tls_address"),
            _ => LocOp::Unsupported("DWARF expression op"),
        });
    }
    out
}

/// The CFA rule at `pc` from `.eh_frame` (or `.debug_frame`) of an ELF image.
pub fn cfa_rule(elf_data: &[u8], pc: u64) -> Option<CfaRule> {
    use gimli::UnwindSection;
    use object::{Object, ObjectSection};
    let obj = object::File::parse(elf_data).ok()?;
    let endian = gimli::RunTimeEndian::Little;
    let rule = |row: &gimli::UnwindTableRow<usize>| match *row.cfa() {
        gimli::CfaRule::RegisterAndOffset { register, offset } if register.0 < 16 => {
            Some(CfaRule {
                reg: register.0 as u8,
                offset,
            })
        }
        _ => None,
    };
    let mut ctx = Box::new(gimli::UnwindContext::new());
    if let Some(section) = obj.section_by_name(".eh_frame") {
        let data = section.uncompressed_data().ok()?;
        let mut eh = gimli::EhFrame::new(&data, endian);
        eh.set_address_size(8);
        let mut bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = obj.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = obj.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        if let Ok(row) =
            eh.unwind_info_for_address(&bases, &mut ctx, pc, gimli::EhFrame::cie_from_offset)
        {
            return rule(row);
        }
    }
    let section = obj.section_by_name(".debug_frame")?;
    let data = section.uncompressed_data().ok()?;
    let mut df = gimli::DebugFrame::new(&data, endian);
    df.set_address_size(8);
    let bases = gimli::BaseAddresses::default();
    let row = df
        .unwind_info_for_address(&bases, &mut ctx, pc, gimli::DebugFrame::cie_from_offset)
        .ok()?;
    rule(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(at_entry: bool) -> Site<'static> {
        Site {
            pc: 0x1000,
            at_entry,
            cfa: Some(CfaRule { reg: 6, offset: 16 }),
            frame_base: None,
        }
    }

    #[track_caller]
    fn check(ops: &[LocOp], size: u64, at_entry: bool, expect: &[Piece]) {
        assert_eq!(evaluate(ops, size, &site(at_entry)), expect);
    }

    #[test]
    fn registers_memory_and_values() {
        check(&[LocOp::Reg(5)], 8, true, &[Piece::Reg { reg: 5, size: 8 }]);
        check(
            &[LocOp::Reg(17)],
            8,
            true,
            &[Piece::Missing {
                size: 8,
                reason: IN_FP_REGISTER.into(),
            }],
        );
        check(
            &[LocOp::Cfa, LocOp::Const(20), LocOp::Minus],
            4,
            false,
            &[Piece::Memory {
                at: Sym::Reg { reg: 6, add: -4 },
                size: 4,
            }],
        );
        check(
            &[LocOp::BReg(4, 0), LocOp::PlusConst(3), LocOp::StackValue],
            8,
            false,
            &[Piece::Value {
                value: Sym::Reg { reg: 4, add: 3 },
                size: 8,
            }],
        );
        check(
            &[LocOp::BReg(7, 80), LocOp::Deref(8)],
            24,
            false,
            &[Piece::Memory {
                at: Sym::Load {
                    at: Box::new(Sym::Reg { reg: 7, add: 80 }),
                    add: 0,
                },
                size: 24,
            }],
        );
    }

    #[test]
    fn pieces_and_gaps() {
        // `&str` at -O2 with its pointer optimised out and a constant length.
        check(
            &[
                LocOp::Piece(8),
                LocOp::Const(2),
                LocOp::StackValue,
                LocOp::Piece(8),
            ],
            16,
            true,
            &[
                Piece::Missing {
                    size: 8,
                    reason: OPTIMIZED_OUT.into(),
                },
                Piece::Value {
                    value: Sym::Const(2),
                    size: 8,
                },
            ],
        );
        check(
            &[LocOp::Reg(5), LocOp::Piece(8)],
            16,
            true,
            &[
                Piece::Reg { reg: 5, size: 8 },
                Piece::Missing {
                    size: 8,
                    reason: OPTIMIZED_OUT.into(),
                },
            ],
        );
    }

    #[test]
    fn entry_values_only_at_entry() {
        let ops = [LocOp::EntryValue(vec![LocOp::Reg(4)]), LocOp::StackValue];
        check(
            &ops,
            8,
            true,
            &[Piece::Value {
                value: Sym::Reg { reg: 4, add: 0 },
                size: 8,
            }],
        );
        assert!(matches!(
            evaluate(&ops, 8, &site(false))[0],
            Piece::Missing { .. }
        ));
    }

    #[test]
    fn hostile_expressions_never_panic() {
        check(
            &[LocOp::Plus],
            8,
            true,
            &[Piece::Missing {
                size: 8,
                reason: "malformed location expression (stack underflow)".into(),
            }],
        );
        let deep: Vec<LocOp> = std::iter::once(LocOp::BReg(7, 0))
            .chain(std::iter::repeat_n(LocOp::Deref(8), 10))
            .collect();
        assert!(matches!(
            evaluate(&deep, 8, &site(false))[0],
            Piece::Missing { .. }
        ));
        let many = vec![LocOp::Const(1); 100];
        assert!(matches!(
            evaluate(&many, 8, &site(false))[0],
            Piece::Missing { .. }
        ));
    }
}
