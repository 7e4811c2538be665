//! Everything Chronicle knows about a binary without running it: ELF symbol tables
//! (demangled Rust and C++ names), `/proc/PID/maps` and file offsets, build IDs, DWARF
//! function signatures and types; capture plans compiled from them; decoding of fetched
//! bytes into [`Value`]s. Nothing here knows about BPF or storage.

pub mod demangle;
pub mod dwarf;
pub mod elf;
pub mod inspect;
pub mod libs;
pub mod location;
pub mod maps;
pub mod plan;
pub mod resolve;
pub mod run;
pub mod types;
pub mod value;

pub use demangle::demangle;
pub use dwarf::{DebugInfo, DwarfError, Param, Signature};
pub use elf::{ElfError, ElfFile, ElfKind, FunctionSymbol};
pub use maps::{MappedObject, Mapping, MapsError, ProcessMaps};
pub use plan::{
    DecodedArgs, DecodedReturn, Fetch, FetchKind, FetchResult, FunctionPlan, PlanLimits, Source,
    compile,
};
pub use resolve::{ResolveError, ResolvedFunction, resolve};
pub use types::{Language, TypeDef, TypeId, TypeKind, Types};
pub use value::Value;

#[cfg(test)]
mod tests {
    /// The agent shares these between threads.
    #[test]
    fn thread_safe() {
        fn check<T: Send + Sync>() {}
        check::<crate::ElfFile>();
        check::<crate::DebugInfo>();
        check::<crate::FunctionPlan>();
        check::<crate::ProcessMaps>();
        check::<crate::ResolveError>();
        check::<crate::DwarfError>();
    }
}
