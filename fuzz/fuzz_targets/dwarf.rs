//! Hostile ELF and DWARF: loading, signatures and plan compilation never panic (seed the
//! corpus with real binaries; `cargo xtask fuzz` does).
#![no_main]

use chronicle_symbols::plan::{PlanLimits, compile};
use chronicle_symbols::{DebugInfo, ElfFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(elf) = ElfFile::from_bytes("fuzz.elf".as_ref(), data) else {
        return;
    };
    let Ok(debug) = DebugInfo::load(&elf) else {
        return;
    };
    let limits = PlanLimits::default();
    for f in elf.functions().iter().take(64) {
        if let Ok(Some(sig)) = debug.signature(f.address) {
            let plan = compile(Some(&sig), elf.data(), &limits);
            let _ = plan.describe_entry();
        }
    }
});
