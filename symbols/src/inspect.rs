//! What Chronicle would capture of each function of a binary: its signature, where the
//! entry probe would go, and for each parameter and the return value how it is read or
//! why it cannot be. Backs `chronicle symbols`.

use serde::Serialize;

use crate::dwarf::DebugInfo;
use crate::elf::ElfFile;
use crate::plan::{self, PlanLimits};

/// One probe-able function.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionReport {
    /// Demangled name.
    pub name: String,
    /// Symbol name as in the ELF file.
    pub symbol: String,
    pub address: u64,
    pub size: u64,
    /// `name(param: type, ...) -> type`, or `None` without debug info.
    pub signature: Option<String>,
    pub language: Option<String>,
    /// Bytes from the first instruction to the entry probe (after the prologue when > 0).
    pub entry_offset: u64,
    pub params: Vec<ValueReport>,
    /// `None` for `void`.
    #[serde(rename = "return")]
    pub ret: Option<ValueReport>,
    /// The function is inlined somewhere too: those copies are not probed.
    pub inlined: bool,
    /// Why nothing is decoded, when there is no debug info.
    pub note: Option<String>,
}

/// How one value is captured.
#[derive(Clone, Debug, Serialize)]
pub struct ValueReport {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// Where it is read from at the probe (`rdi`, `memory (24 bytes)`), when it can be.
    pub from: Option<String>,
    /// Why it cannot be read at the probe.
    pub unavailable: Option<String>,
}

/// Reports the functions of `elf` whose demangled name contains `filter`, by address.
pub fn inspect(elf: &ElfFile, filter: Option<&str>, limits: &PlanLimits) -> Vec<FunctionReport> {
    let debug = DebugInfo::load(elf).ok().filter(DebugInfo::has_debug_info);
    let mut functions: Vec<_> = elf
        .functions()
        .iter()
        .filter(|f| f.size > 0 && filter.is_none_or(|t| f.demangled.contains(t)))
        .collect();
    functions.sort_by_key(|f| f.address);
    functions.dedup_by_key(|f| f.address);
    functions
        .into_iter()
        .map(|f| {
            let sig = debug
                .as_ref()
                .and_then(|d| d.signature(f.address).ok().flatten());
            let compiled = plan::compile(sig.as_ref(), elf.data(), limits);
            let mut report = FunctionReport {
                name: f.demangled.clone(),
                symbol: f.name.clone(),
                address: f.address,
                size: f.size,
                signature: None,
                language: None,
                entry_offset: compiled.entry_site.offset,
                params: Vec::new(),
                ret: None,
                inlined: false,
                note: None,
            };
            let Some(sig) = sig else {
                report.note = Some(if debug.is_some() {
                    "no debug info for this function: arguments are not decoded".to_owned()
                } else {
                    "no DWARF debug info: rebuild with -g to decode arguments".to_owned()
                });
                return report;
            };
            report.signature = Some(sig.describe());
            report.language = Some(format!("{:?}", sig.language));
            report.inlined = sig.inlined;
            let how = |r: Result<String, String>| match r {
                Ok(from) => (Some(from), None),
                Err(why) => (None, Some(why)),
            };
            report.params = sig
                .params
                .iter()
                .zip(compiled.describe_entry())
                .map(|(p, (_, r))| {
                    let (from, unavailable) = how(r);
                    ValueReport {
                        name: p.name.clone(),
                        ty: p.type_name.clone(),
                        from,
                        unavailable,
                    }
                })
                .collect();
            report.ret = sig.ret_type_name.clone().map(|ty| {
                let (from, unavailable) = match compiled.describe_return() {
                    Some(r) => how(r),
                    None => (Some("nothing (zero-sized)".to_owned()), None),
                };
                ValueReport {
                    name: "return".to_owned(),
                    ty,
                    from,
                    unavailable,
                }
            });
            report
        })
        .collect()
}
