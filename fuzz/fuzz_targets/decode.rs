//! Hostile event bytes: decoding what a probe sent, for every function of a real binary,
//! never panics. The binary comes from `CHRONICLE_FUZZ_BINARY` (set by `cargo xtask fuzz`).
#![no_main]

use std::sync::OnceLock;

use chronicle_symbols::plan::{FetchResult, FunctionPlan, PlanLimits, compile};
use chronicle_symbols::{DebugInfo, ElfFile};
use libfuzzer_sys::fuzz_target;

fn plans() -> &'static [FunctionPlan] {
    static PLANS: OnceLock<Vec<FunctionPlan>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let path = std::env::var_os("CHRONICLE_FUZZ_BINARY")
            .expect("set CHRONICLE_FUZZ_BINARY to a binary with debug info");
        let elf = ElfFile::open(path.as_ref()).expect("open the fuzz binary");
        let debug = DebugInfo::load(&elf).expect("load its debug info");
        let limits = PlanLimits::default();
        elf.functions()
            .iter()
            .filter_map(|f| debug.signature(f.address).ok().flatten())
            .map(|sig| compile(Some(&sig), elf.data(), &limits))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let plans = plans();
    if plans.is_empty() || data.len() < 2 + 128 {
        return;
    }
    let plan = &plans[usize::from(u16::from_le_bytes([data[0], data[1]])) % plans.len()];
    let mut regs = [0u64; 16];
    for (i, r) in regs.iter_mut().enumerate() {
        let at = 2 + i * 8;
        *r = u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    }
    let rest = &data[130..];
    // Each fetch takes a control byte (ok / failed / null / skipped) and a length.
    let results = |n: usize| -> Vec<FetchResult<'_>> {
        (0..n)
            .map(|i| {
                let control = rest.get(i).copied().unwrap_or(0);
                let len = usize::from(rest.get(i + 1).copied().unwrap_or(0)) * 4;
                match control % 4 {
                    0 => FetchResult::Bytes(&rest[..len.min(rest.len())]),
                    1 => FetchResult::Failed(-14),
                    2 => FetchResult::Null,
                    _ => FetchResult::Skipped,
                }
            })
            .collect()
    };
    let _ = plan.decode_entry(&regs, &results(plan.entry.fetches.len()));
    let _ = plan.decode_return(&regs, &results(plan.ret.fetches.len()));
});
