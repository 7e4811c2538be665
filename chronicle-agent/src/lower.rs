//! Lowers a [`FunctionPlan`]'s fetches into the wire [`CapturePlan`] the eBPF program runs:
//! assigns payload offsets and picks the event size class.

use chronicle_common::{
    CapturePlan, FetchOp, LARGE_SLOT, MAX_FETCH_OPS, SMALL_SLOT, class, op_kind, reg,
};
use chronicle_symbols::plan::{Fetch, FetchKind, FetchResult, Register};

/// Errno reported for a fetch the plan had no room for.
pub const ENOSPC: i32 = -(libc::ENOSPC);

/// A wire plan plus where each fetch's bytes land in the payload.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub plan: CapturePlan,
    /// Per fetch of the symbolic plan: `(dst, len)` in the payload, or `None` when it did not fit.
    pub slots: Vec<Option<(usize, usize)>>,
}

pub fn lower(fetches: &[Fetch]) -> Lowered {
    let mut plan = CapturePlan::default();
    let mut slots = Vec::with_capacity(fetches.len());
    let mut dst = 0usize;
    let mut class = class::HEADER;
    for fetch in fetches {
        let len = match fetch.kind {
            FetchKind::CString { max_len } => max_len as usize,
            FetchKind::Memory { len } => len as usize,
        };
        let index = plan.n_ops as usize;
        if index >= MAX_FETCH_OPS || len == 0 || len > LARGE_SLOT || dst >= LARGE_SLOT {
            slots.push(None);
            continue;
        }
        let needed = if dst < SMALL_SLOT && len <= SMALL_SLOT {
            class::SMALL
        } else {
            class::LARGE
        };
        class = class.max(needed);
        plan.ops[index] = FetchOp {
            kind: match fetch.kind {
                FetchKind::CString { .. } => op_kind::C_STRING,
                FetchKind::Memory { .. } => op_kind::MEMORY,
            },
            reg: register(fetch.reg),
            _pad0: 0,
            len: len as u16,
            dst: dst as u16,
            offset: fetch.offset,
        };
        plan.n_ops += 1;
        slots.push(Some((dst, len)));
        dst = (dst + len).next_multiple_of(8);
    }
    plan.class = class;
    plan.payload_len = slots
        .iter()
        .flatten()
        .map(|(d, l)| d + l)
        .max()
        .unwrap_or(0) as u32;
    Lowered { plan, slots }
}

fn register(r: Register) -> u8 {
    match r {
        Register::Rdi => reg::RDI,
        Register::Rsi => reg::RSI,
        Register::Rdx => reg::RDX,
        Register::Rcx => reg::RCX,
        Register::R8 => reg::R8,
        Register::R9 => reg::R9,
        Register::Rax => reg::RAX,
        Register::Rsp => reg::RSP,
    }
}

impl Lowered {
    /// The fetch results of one event, in the symbolic plan's order.
    pub fn results<'a>(&self, fetch_len: &[i16], payload: &'a [u8]) -> Vec<FetchResult<'a>> {
        let mut op = 0;
        self.slots
            .iter()
            .map(|slot| match slot {
                None => FetchResult::Failed(ENOSPC),
                Some((dst, max)) => {
                    let n = fetch_len.get(op).copied().unwrap_or(-(libc::EIO as i16));
                    op += 1;
                    if n < 0 {
                        return FetchResult::Failed(i32::from(n));
                    }
                    let n = (n as usize).min(*max);
                    match payload.get(*dst..dst + n) {
                        Some(bytes) => FetchResult::Bytes(bytes),
                        None => FetchResult::Failed(-(libc::EIO)),
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(reg: Register, max_len: u16) -> Fetch {
        Fetch {
            reg,
            offset: 0,
            kind: FetchKind::CString { max_len },
        }
    }

    #[test]
    fn small_plan_packs_slots_aligned() {
        let l = lower(&[cstr(Register::Rdi, 258), cstr(Register::Rsi, 10)]);
        assert_eq!(l.plan.class, class::SMALL);
        assert_eq!(l.slots, [Some((0, 258)), Some((264, 10))]);
        assert_eq!(l.plan.payload_len, 274);
        assert_eq!((l.plan.ops[1].dst, l.plan.ops[1].reg), (264, reg::RSI));
    }

    #[test]
    fn large_and_overflowing_plans() {
        let many: Vec<_> = (0..10).map(|_| cstr(Register::Rdi, 258)).collect();
        let l = lower(&many);
        assert_eq!(l.plan.class, class::LARGE);
        assert_eq!(l.plan.n_ops as usize, MAX_FETCH_OPS);
        assert_eq!(l.slots.iter().filter(|s| s.is_none()).count(), 2);
        let payload = vec![b'x'; 8192];
        let mut lens = [3i16; MAX_FETCH_OPS];
        lens[1] = -14;
        let r = l.results(&lens, &payload);
        assert!(matches!(r[0], FetchResult::Bytes(b) if b == b"xxx"));
        assert!(matches!(r[1], FetchResult::Failed(-14)));
        assert!(matches!(r[9], FetchResult::Failed(ENOSPC)));
    }

    #[test]
    fn header_only_without_fetches() {
        let l = lower(&[]);
        assert_eq!((l.plan.class, l.plan.payload_len), (class::HEADER, 0));
    }
}
