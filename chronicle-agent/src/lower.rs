//! Lowers a symbolic [`ProbePlan`] into the wire [`CapturePlan`] the eBPF program runs,
//! and turns an event's fetch results back into [`FetchResult`]s for the decoder.

use chronicle_common::{
    CapturePlan, FetchOp, LARGE_SLOT, MAX_FETCH_OPS, MAX_SAVES, SMALL_SLOT, base, class,
    fetch_status, flags, len_from, op_kind,
};
use chronicle_symbols::location::CfaRule;
use chronicle_symbols::plan::{FetchKind, FetchResult, PlanLimits, ProbePlan, Source};

/// The plan budgets the wire format can carry.
pub fn wire_limits(max_string: u16, max_bytes: u32, max_depth: u8, after: bool) -> PlanLimits {
    PlanLimits {
        max_string,
        max_depth,
        capture_after: after,
        max_bytes: max_bytes.min(2 * LARGE_SLOT as u32),
        max_fetches: MAX_FETCH_OPS,
        max_fetch_len: LARGE_SLOT as u32,
        ..PlanLimits::default()
    }
}

/// Why a probe plan cannot be expressed on the wire (a planner bug, never user input).
#[derive(Debug, thiserror::Error)]
#[error("capture plan does not fit the wire format: {what}")]
pub struct LowerError {
    what: &'static str,
}

/// Builds the wire plan of one probe. `cfa` says how the probe computes the canonical
/// frame address that pairs entries with returns.
pub fn lower(plan: &ProbePlan, cfa: CfaRule) -> Result<CapturePlan, LowerError> {
    let fail = |what| Err(LowerError { what });
    let mut wire = CapturePlan {
        cfa_reg: cfa.reg,
        cfa_offset: i32::try_from(cfa.offset).or(Err(LowerError { what: "CFA offset" }))?,
        ..CapturePlan::default()
    };
    if plan.fetches.len() > MAX_FETCH_OPS {
        return fail("too many fetches");
    }
    let mut class = class::HEADER;
    for (i, fetch) in plan.fetches.iter().enumerate() {
        let (dst, len) = (fetch.dst as usize, fetch.len as usize);
        if dst >= LARGE_SLOT || len > LARGE_SLOT || len == 0 {
            return fail("fetch out of bounds");
        }
        let needed = if dst < SMALL_SLOT && len <= SMALL_SLOT {
            class::SMALL
        } else {
            class::LARGE
        };
        class = class.max(needed);
        let source = |s: Source| -> Result<(u8, u16), LowerError> {
            match s {
                Source::Reg(r) => Ok((0, u16::from(r))),
                Source::Fetched { fetch, offset } => {
                    let at = plan.fetches[fetch].dst as u64 + offset;
                    if !at.is_multiple_of(8) || at + 8 > 2 * LARGE_SLOT as u64 {
                        return Err(LowerError {
                            what: "misaligned fetched pointer",
                        });
                    }
                    Ok((1, at as u16))
                }
            }
        };
        let (base_kind, mut base_src) = source(fetch.base)?;
        let (len_kind, len_src, scale) = match fetch.count {
            None => (len_from::CONST, 0, 1),
            Some((s, scale)) => {
                let (kind, src) = source(s)?;
                let kind = if kind == 0 {
                    len_from::REG
                } else {
                    len_from::FETCHED
                };
                let scale = u16::try_from(scale).or(Err(LowerError {
                    what: "element size",
                }))?;
                (kind, src, scale)
            }
        };
        let parent = match fetch.parent() {
            Some(p) if p >= i => return fail("fetch depends on a later one"),
            Some(p) => p as u8 + 1,
            None => 0,
        };
        wire.ops[i] = FetchOp {
            kind: match fetch.kind {
                FetchKind::CString => op_kind::C_STRING,
                FetchKind::Memory => op_kind::MEMORY,
                FetchKind::Saved { slot } => {
                    base_src = u16::from(slot);
                    op_kind::SAVED
                }
            },
            base: if base_kind == 0 {
                base::REG
            } else {
                base::FETCHED
            },
            len_from: len_kind,
            parent,
            base_src,
            len_src,
            len: len as u16,
            dst: dst as u16,
            scale,
            _pad0: 0,
            offset: fetch.offset as i32,
        };
        wire.n_ops += 1;
    }
    wire.class = class;
    wire.payload_len = plan.payload_len;
    if plan.saves.len() > MAX_SAVES {
        return fail("too many saved words");
    }
    for (i, save) in plan.saves.iter().enumerate() {
        let (kind, src) = match *save {
            Source::Reg(r) => (base::REG, u16::from(r)),
            Source::Fetched { fetch, offset } => {
                let at = u64::from(plan.fetches[fetch].dst) + offset;
                if !at.is_multiple_of(8) || at + 8 > 2 * LARGE_SLOT as u64 {
                    return fail("misaligned saved word");
                }
                (base::FETCHED, at as u16)
            }
        };
        wire.save_base[i] = kind;
        wire.save_src[i] = src;
    }
    wire.n_saves = plan.saves.len() as u8;
    if plan
        .fetches
        .iter()
        .any(|f| matches!(f.kind, FetchKind::Saved { .. }))
    {
        wire.flags |= flags::LOAD_SAVED;
    }
    Ok(wire)
}

/// The fetch results of one event, in the plan's order.
pub fn results<'a>(plan: &ProbePlan, fetch_len: &[i16], payload: &'a [u8]) -> Vec<FetchResult<'a>> {
    plan.fetches
        .iter()
        .enumerate()
        .map(|(i, fetch)| {
            let n = fetch_len.get(i).copied().unwrap_or(fetch_status::SKIPPED);
            match n {
                fetch_status::NULL => FetchResult::Null,
                fetch_status::SKIPPED => FetchResult::Skipped,
                n if n < 0 => FetchResult::Failed(i32::from(n)),
                n => {
                    let dst = fetch.dst as usize;
                    let n = (n as usize).min(fetch.len as usize);
                    match payload.get(dst..dst + n) {
                        Some(bytes) => FetchResult::Bytes(bytes),
                        None => FetchResult::Failed(-libc::EIO),
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronicle_symbols::plan::Fetch;

    fn plan(fetches: Vec<Fetch>) -> ProbePlan {
        let payload_len = fetches.iter().map(|f| f.dst + f.len).max().unwrap_or(0);
        let mut p = ProbePlan::default();
        p.fetches = fetches;
        p.payload_len = payload_len;
        p
    }

    fn fetch(base: Source, len: u32, dst: u32) -> Fetch {
        Fetch {
            kind: FetchKind::Memory,
            base,
            offset: 0,
            len,
            count: None,
            dst,
        }
    }

    #[test]
    fn chained_fetches_name_their_parent_and_payload_offsets() {
        let p = plan(vec![
            fetch(Source::Reg(5), 24, 0),
            Fetch {
                count: Some((
                    Source::Fetched {
                        fetch: 0,
                        offset: 16,
                    },
                    4,
                )),
                ..fetch(
                    Source::Fetched {
                        fetch: 0,
                        offset: 8,
                    },
                    400,
                    24,
                )
            },
        ]);
        let w = lower(&p, CfaRule { reg: 7, offset: 8 }).unwrap();
        assert_eq!((w.class, w.n_ops, w.payload_len), (class::SMALL, 2, 424));
        let op = w.ops[1];
        assert_eq!((op.base, op.base_src, op.parent), (base::FETCHED, 8, 1));
        assert_eq!(
            (op.len_from, op.len_src, op.scale),
            (len_from::FETCHED, 16, 4)
        );
        assert_eq!((w.ops[0].base, w.ops[0].base_src), (base::REG, 5));
    }

    #[test]
    fn large_fetches_pick_the_large_class_and_results_map_back() {
        let p = plan(vec![
            fetch(Source::Reg(5), 2000, 0),
            fetch(Source::Reg(4), 8, 2000),
        ]);
        let w = lower(&p, CfaRule { reg: 6, offset: 16 }).unwrap();
        assert_eq!((w.class, w.cfa_reg, w.cfa_offset), (class::LARGE, 6, 16));
        let payload = vec![7u8; 4096];
        let r = results(&p, &[3, fetch_status::NULL], &payload);
        assert_eq!(r, [FetchResult::Bytes(&[7, 7, 7]), FetchResult::Null]);
        let r = results(&p, &[-14, fetch_status::SKIPPED], &payload);
        assert_eq!(r, [FetchResult::Failed(-14), FetchResult::Skipped]);
    }

    #[test]
    fn header_only_without_fetches() {
        let w = lower(&ProbePlan::default(), CfaRule { reg: 7, offset: 0 }).unwrap();
        assert_eq!(
            (w.class, w.payload_len, w.cfa_offset),
            (class::HEADER, 0, 0)
        );
    }
}
