//! DWARF debug info: function signatures (parameter names and types, return type) looked up
//! by the address of a function symbol.
//!
//! Loading only indexes the address ranges of the compile units. A unit's functions are read
//! on first use and cached with their error: one unreadable unit leaves every other function
//! usable. Debug info is taken from the file itself or from a separate debug file found by
//! build ID or `.gnu_debuglink`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use gimli::{
    AttributeValue, DebugInfoOffset, DwAt, DwTag, Reader as _, UnitOffset, constants as dw,
};
use object::{Object, ObjectSection};

use crate::elf::{ElfError, ElfFile};
use crate::location::{LocOp, LocationSpec, parse_expression};
use crate::types::{Language, Member, TypeDef, TypeId, TypeKind, Types, Variant, VariantPart};

type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;
type Die = gimli::DebuggingInformationEntry<Reader>;

/// Why debug info could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("cannot open the separate debug info file {path}: {source}")]
    DebugFile {
        path: PathBuf,
        #[source]
        source: Arc<ElfError>,
    },
    #[error("cannot read section {section} of {path}: {source}; the file may be corrupt")]
    Section {
        path: PathBuf,
        section: &'static str,
        #[source]
        source: object::Error,
    },
    #[error(
        "cannot read the compile unit header at {offset:#x} of {path}: {source}; functions of \
         later units have no signatures, rebuild with -g"
    )]
    UnitHeader {
        path: PathBuf,
        offset: u64,
        #[source]
        source: gimli::Error,
    },
    #[error(
        "cannot read the compile unit at {offset:#x} of {path}: {source}; its functions have no \
         signatures"
    )]
    Unit {
        path: PathBuf,
        offset: u64,
        #[source]
        source: gimli::Error,
    },
    #[error("cannot read the debug info of the function at {address:#x} in {path}: {source}")]
    Function {
        path: PathBuf,
        address: u64,
        #[source]
        source: gimli::Error,
    },
}

/// A function's signature from DWARF, with everything needed to find its values at a
/// probe: parameter locations, frame base, the end of the prologue, and the types.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    /// `DW_AT_name` (unqualified).
    pub name: String,
    /// `DW_AT_linkage_name`, when the compiler gave one (C++, Rust).
    pub linkage_name: Option<String>,
    pub language: Language,
    /// Address of the first instruction.
    pub low_pc: u64,
    /// End of the function's (first) address range, when known.
    pub high_pc: Option<u64>,
    /// Where the prologue ends (line table `prologue_end`, or the function's second line
    /// row): parameters that live in the stack frame are valid from there.
    pub prologue_end: Option<u64>,
    /// `DW_AT_frame_base`.
    pub frame_base: Option<Vec<LocOp>>,
    pub params: Vec<Param>,
    /// `None` for `void` (and Rust `()`).
    pub ret: Option<TypeId>,
    /// How the return type is written (typedef names kept), `None` for `void`.
    pub ret_type_name: Option<String>,
    /// The function takes `...` after its named parameters.
    pub variadic: bool,
    /// The function is also inlined somewhere: those calls never reach a probe.
    pub inlined: bool,
    /// Every type the parameters and return value use.
    pub types: Types,
}

impl Signature {
    /// `name(param: type, ...) -> type`, types as written.
    pub fn describe(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.type_name))
            .collect();
        let ret = self
            .ret_type_name
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        format!("{}({}){ret}", self.name, params.join(", "))
    }
}

/// A formal parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The parameter name; `arg0`, `arg1`, … when it has none; Rust `self` and C++ `this`
    /// keep theirs.
    pub name: String,
    /// The type with typedefs and qualifiers resolved.
    pub ty: TypeId,
    /// How the type is written (`const char *`, `size_t`).
    pub type_name: String,
    /// `DW_AT_location`; `None` when the compiler gave none (optimised out).
    pub location: Option<LocationSpec>,
    /// Compiler-made (C++ `this`).
    pub artificial: bool,
}

/// Cycles in malformed DWARF must not hang us; real type chains are short.
const MAX_DEPTH: u32 = 32;

/// A unit's functions by entry address, each with its signature or why it has none.
type UnitFunctions = HashMap<u64, Result<Signature, DwarfError>>;

struct UnitSlot {
    offset: DebugInfoOffset,
    unit: gimli::Unit<Reader>,
    /// Empty when the unit has no address ranges; such units are searched last.
    ranges: Vec<Range<u64>>,
    functions: OnceLock<Result<UnitFunctions, DwarfError>>,
    /// Parent of every DIE, for qualified names; built on first use.
    parents: OnceLock<HashMap<UnitOffset, UnitOffset>>,
    /// The line table's rows by address, for prologue ends; built on first use.
    line_rows: OnceLock<Vec<LineRow>>,
}

/// One line-table row: its address, and whether it is flagged `prologue_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LineRow {
    address: u64,
    prologue_end: bool,
}

/// The DWARF debug info of one ELF file.
pub struct DebugInfo {
    /// Where the DWARF came from (the ELF file or its separate debug file).
    path: PathBuf,
    dwarf: Option<gimli::Dwarf<Reader>>,
    units: Vec<UnitSlot>,
    errors: Mutex<Vec<DwarfError>>,
}

impl std::fmt::Debug for DebugInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugInfo")
            .field("path", &self.path)
            .field("units", &self.units.len())
            .finish_non_exhaustive()
    }
}

impl DebugInfo {
    /// Loads the debug info of `elf`, from the file itself or a separate debug file.
    ///
    /// A binary without debug info gives a `DebugInfo` whose `has_debug_info()` is false.
    pub fn load(elf: &ElfFile) -> Result<DebugInfo, DwarfError> {
        if elf.has_debug_info() {
            return Self::from_data(elf.path(), elf.data());
        }
        for candidate in separate_debug_candidates(elf) {
            if !candidate.is_file() {
                continue;
            }
            let debug = ElfFile::open(&candidate).map_err(|e| DwarfError::DebugFile {
                path: candidate.clone(),
                source: Arc::new(e),
            })?;
            // A stale debug file from another build would give wrong signatures.
            if elf.build_id().is_some() && debug.build_id() != elf.build_id() {
                continue;
            }
            if debug.has_debug_info() {
                return Self::from_data(&candidate, debug.data());
            }
        }
        Ok(DebugInfo {
            path: elf.path().to_owned(),
            dwarf: None,
            units: Vec::new(),
            errors: Mutex::new(Vec::new()),
        })
    }

    fn from_data(path: &Path, data: &[u8]) -> Result<DebugInfo, DwarfError> {
        let obj = object::File::parse(data).map_err(|source| DwarfError::Section {
            path: path.to_owned(),
            section: "(headers)",
            source,
        })?;
        let endian = if obj.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        // Sections are copied out of the mapping (and decompressed when needed) so the result
        // owns its data; only the sections gimli asks for are touched.
        let load = |id: gimli::SectionId| -> Result<Reader, DwarfError> {
            let data: Cow<'_, [u8]> = match obj.section_by_name(id.name()) {
                Some(section) => {
                    section
                        .uncompressed_data()
                        .map_err(|source| DwarfError::Section {
                            path: path.to_owned(),
                            section: id.name(),
                            source,
                        })?
                }
                None => Cow::Borrowed(&[]),
            };
            Ok(Reader::new(Arc::from(&*data), endian))
        };
        let dwarf = gimli::Dwarf::load(load)?;
        let mut units = Vec::new();
        let mut errors = Vec::new();
        let mut headers = dwarf.units();
        loop {
            let header = match headers.next() {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(source) => {
                    let offset = units.last().map_or(0, |u: &UnitSlot| u.offset.0 as u64);
                    errors.push(DwarfError::UnitHeader {
                        path: path.to_owned(),
                        offset,
                        source,
                    });
                    break;
                }
            };
            // `Dwarf::units` only walks `.debug_info`.
            let offset = DebugInfoOffset(header.offset().0);
            let unit = match dwarf.unit(header) {
                Ok(unit) => unit,
                Err(source) => {
                    errors.push(DwarfError::Unit {
                        path: path.to_owned(),
                        offset: offset.0 as u64,
                        source,
                    });
                    continue;
                }
            };
            let ranges = unit_ranges(&dwarf, &unit).unwrap_or_default();
            units.push(UnitSlot {
                offset,
                unit,
                ranges,
                functions: OnceLock::new(),
                parents: OnceLock::new(),
                line_rows: OnceLock::new(),
            });
        }
        Ok(DebugInfo {
            path: path.to_owned(),
            dwarf: Some(dwarf),
            units,
            errors: Mutex::new(errors),
        })
    }

    /// True when there is DWARF to read.
    pub fn has_debug_info(&self) -> bool {
        self.dwarf.is_some() && !self.units.is_empty()
    }

    /// The file the DWARF was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Errors met so far: unreadable unit headers, units and functions.
    pub fn errors(&self) -> Vec<DwarfError> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The signature of the function whose first instruction is at `address` (the address of
    /// its symbol). `Ok(None)` when no debug info describes it.
    pub fn signature(&self, address: u64) -> Result<Option<Signature>, DwarfError> {
        let Some(dwarf) = &self.dwarf else {
            return Ok(None);
        };
        let covering = self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.ranges.iter().any(|r| r.contains(&address)));
        let rangeless = self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.ranges.is_empty());
        let mut first_error = None;
        for (index, slot) in covering.chain(rangeless) {
            let functions = slot.functions.get_or_init(|| {
                let result = self.read_functions(dwarf, index);
                let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
                match &result {
                    Err(e) => errors.push(e.clone()),
                    Ok(map) => errors.extend(map.values().filter_map(|r| r.clone().err())),
                }
                result
            });
            match functions {
                Ok(map) => match map.get(&address) {
                    Some(Ok(sig)) => return Ok(Some(sig.clone())),
                    Some(Err(e)) => return Err(e.clone()),
                    None => {}
                },
                Err(e) => {
                    first_error.get_or_insert_with(|| e.clone());
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    /// Every function of a unit that has code, keyed by entry address.
    fn read_functions(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        index: usize,
    ) -> Result<UnitFunctions, DwarfError> {
        let slot = &self.units[index];
        let unit_error = |source| DwarfError::Unit {
            path: self.path.clone(),
            offset: slot.offset.0 as u64,
            source,
        };
        let unit = slot.unit.unit_ref(dwarf);
        let mut entries = unit.entries();
        let mut found = Vec::new();
        while let Some(entry) = entries.next_dfs().map_err(unit_error)? {
            if entry.tag() != dw::DW_TAG_subprogram || entry.has_attr(dw::DW_AT_declaration) {
                continue;
            }
            let mut starts = Vec::new();
            if let Some(low) = entry.attr_value(dw::DW_AT_low_pc) {
                starts.extend(unit.attr_address(low).map_err(unit_error)?);
            } else if let Some(entry_pc) = entry.attr_value(dw::DW_AT_entry_pc) {
                starts.extend(unit.attr_address(entry_pc).map_err(unit_error)?);
            } else if entry.has_attr(dw::DW_AT_ranges) {
                // A function split into hot and cold parts: the symbol sits at one of the
                // range starts, and which one is not recorded.
                let mut ranges = unit.die_ranges(entry).map_err(unit_error)?;
                while let Some(r) = ranges.next().map_err(unit_error)? {
                    starts.push(r.begin);
                }
            }
            for start in starts {
                found.push((start, entry.offset()));
            }
        }
        let mut map = HashMap::new();
        for (address, offset) in found {
            let sig = self
                .build_signature(dwarf, index, offset, address)
                .map_err(|source| DwarfError::Function {
                    path: self.path.clone(),
                    address,
                    source,
                });
            map.entry(address).or_insert(sig);
        }
        Ok(map)
    }

    fn entry(&self, unit: usize, offset: UnitOffset) -> gimli::Result<Die> {
        self.units[unit].unit.entry(offset)
    }

    /// The unit and offset a reference attribute points to.
    fn follow(&self, unit: usize, value: AttributeValue<Reader>) -> Option<(usize, UnitOffset)> {
        match value {
            AttributeValue::UnitRef(offset) => Some((unit, offset)),
            AttributeValue::DebugInfoRef(target) => {
                let index = self
                    .units
                    .partition_point(|u| u.offset.0 <= target.0)
                    .checked_sub(1)?;
                let offset = target.to_unit_offset(&self.units[index].unit.header)?;
                Some((index, offset))
            }
            _ => None,
        }
    }

    /// Follows `DW_AT_specification` / `DW_AT_abstract_origin` from a DIE: the DIE itself
    /// first, then the DIEs it completes.
    fn origin_chain(&self, unit: usize, offset: UnitOffset) -> gimli::Result<Vec<(usize, Die)>> {
        let mut chain = Vec::new();
        let mut next = Some((unit, offset));
        while let Some((u, off)) = next {
            if chain.len() as u32 >= MAX_DEPTH {
                break;
            }
            let die = self.entry(u, off)?;
            next = die
                .attr_value(dw::DW_AT_specification)
                .or_else(|| die.attr_value(dw::DW_AT_abstract_origin))
                .and_then(|v| self.follow(u, v));
            chain.push((u, die));
        }
        Ok(chain)
    }

    fn string(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        die: &Die,
        at: DwAt,
    ) -> Option<String> {
        let value = die.attr_value(at)?;
        let unit = &self.units[unit].unit;
        let s = dwarf.attr_string(unit, value).ok()?;
        Some(s.to_string_lossy().ok()?.into_owned())
    }

    fn chain_string(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        chain: &[(usize, Die)],
        at: DwAt,
    ) -> Option<String> {
        chain
            .iter()
            .find_map(|(u, die)| self.string(dwarf, *u, die, at))
    }

    fn build_signature(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        offset: UnitOffset,
        low_pc: u64,
    ) -> gimli::Result<Signature> {
        let chain = self.origin_chain(unit, offset)?;
        let name = self
            .chain_string(dwarf, &chain, dw::DW_AT_name)
            .unwrap_or_else(|| "<unnamed>".to_owned());
        let linkage_name = self
            .chain_string(dwarf, &chain, dw::DW_AT_linkage_name)
            .or_else(|| self.chain_string(dwarf, &chain, dw::DW_AT_MIPS_linkage_name));
        let inlined = chain.iter().any(|(_, die)| {
            matches!(
                die.attr_value(dw::DW_AT_inline),
                Some(AttributeValue::Inline(
                    dw::DW_INL_inlined | dw::DW_INL_declared_inlined
                ))
            )
        });
        let language = self.language(unit);
        let mut builder = TypeBuilder {
            info: self,
            dwarf,
            types: Types::default(),
            memo: HashMap::new(),
            language,
        };
        let ret = chain
            .iter()
            .find_map(|(u, die)| Some((*u, die.attr_value(dw::DW_AT_type)?)));
        let (ret, ret_type_name) = match ret {
            Some((u, value)) => {
                let (ty, written) = builder.referenced(u, value, 0)?;
                if matches!(builder.types.get(ty).kind, TypeKind::Void)
                    || (language == Language::Rust && builder.types.get(ty).name == "()")
                {
                    (None, None)
                } else {
                    (Some(ty), Some(written))
                }
            }
            None => (None, None),
        };
        let definition = &chain[0].1;
        let encoding = self.units[unit].unit.encoding();
        let frame_base = match definition.attr_value(dw::DW_AT_frame_base) {
            Some(AttributeValue::Exprloc(expr)) => Some(parse_expression(expr, encoding)),
            _ => None,
        };
        let high_pc = match definition.attr_value(dw::DW_AT_high_pc) {
            Some(AttributeValue::Udata(len)) => Some(low_pc + len),
            Some(v) => self.units[unit]
                .unit
                .unit_ref(dwarf)
                .attr_address(v)
                .ok()
                .flatten(),
            None => None,
        };

        // The parameters of the definition; a definition without any borrows them from the
        // declaration it completes.
        let mut params = Vec::new();
        let mut variadic = false;
        for &(u, ref die) in &chain {
            let mut children = self.units[u].unit.entries_tree(Some(die.offset()))?;
            let root = children.root()?;
            let mut iter = root.children();
            let mut any = false;
            while let Some(child) = iter.next()? {
                let child = child.entry();
                match child.tag() {
                    dw::DW_TAG_formal_parameter => {
                        any = true;
                        // Only the definition's own parameters carry locations.
                        let param = self.param(&mut builder, u, child, params.len())?;
                        params.push(param);
                    }
                    dw::DW_TAG_unspecified_parameters => {
                        any = true;
                        variadic = true;
                    }
                    _ => {}
                }
            }
            if any {
                break;
            }
        }
        let prologue_end = high_pc.and_then(|end| self.prologue_end(dwarf, unit, low_pc, end));
        Ok(Signature {
            name,
            linkage_name,
            language,
            low_pc,
            high_pc,
            prologue_end,
            frame_base,
            params,
            ret,
            ret_type_name,
            variadic,
            inlined,
            types: builder.types,
        })
    }

    fn param(
        &self,
        builder: &mut TypeBuilder<'_>,
        unit: usize,
        die: &Die,
        position: usize,
    ) -> gimli::Result<Param> {
        let chain = self.origin_chain(unit, die.offset())?;
        let name = self
            .chain_string(builder.dwarf, &chain, dw::DW_AT_name)
            .unwrap_or_else(|| format!("arg{position}"));
        let ty = chain
            .iter()
            .find_map(|(u, die)| Some((*u, die.attr_value(dw::DW_AT_type)?)));
        let (ty, type_name) = match ty {
            Some((u, value)) => builder.referenced(u, value, 0)?,
            None => builder.unknown("<no type>")?,
        };
        let artificial = chain.iter().any(|(_, d)| {
            matches!(
                d.attr_value(dw::DW_AT_artificial),
                Some(AttributeValue::Flag(true))
            )
        });
        let location = self.location(builder.dwarf, unit, die);
        Ok(Param {
            name,
            ty,
            type_name,
            location,
            artificial,
        })
    }

    fn location(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        die: &Die,
    ) -> Option<LocationSpec> {
        let slot = &self.units[unit];
        let encoding = slot.unit.encoding();
        match die.attr_value(dw::DW_AT_location)? {
            AttributeValue::Exprloc(expr) => {
                Some(LocationSpec::Expr(parse_expression(expr, encoding)))
            }
            value => {
                let unit_ref = slot.unit.unit_ref(dwarf);
                let offset = unit_ref.attr_locations_offset(value).ok()??;
                let mut iter = unit_ref.locations(offset).ok()?;
                let mut list = Vec::new();
                while let Ok(Some(entry)) = iter.next() {
                    if list.len() >= 1024 {
                        break;
                    }
                    list.push((
                        entry.range.begin..entry.range.end,
                        parse_expression(entry.data, encoding),
                    ));
                }
                Some(LocationSpec::List(list))
            }
        }
    }

    fn language(&self, unit: usize) -> Language {
        let slot = &self.units[unit];
        let mut entries = slot.unit.entries();
        let Ok(Some(root)) = entries.next_dfs() else {
            return Language::Other;
        };
        match root.attr_value(dw::DW_AT_language) {
            Some(AttributeValue::Language(lang)) => match lang {
                dw::DW_LANG_Rust => Language::Rust,
                dw::DW_LANG_C_plus_plus
                | dw::DW_LANG_C_plus_plus_03
                | dw::DW_LANG_C_plus_plus_11
                | dw::DW_LANG_C_plus_plus_14 => Language::Cpp,
                dw::DW_LANG_C
                | dw::DW_LANG_C89
                | dw::DW_LANG_C99
                | dw::DW_LANG_C11
                | dw::DW_LANG_C17 => Language::C,
                _ => Language::Other,
            },
            _ => Language::Other,
        }
    }

    /// Where the prologue of the function at `[low, high)` ends: the first line-table row
    /// flagged `prologue_end`, else the second distinct address of the function's rows.
    fn prologue_end(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        low: u64,
        high: u64,
    ) -> Option<u64> {
        let _ = dwarf;
        let rows = self.line_rows(unit);
        let start = rows.partition_point(|r| r.address <= low);
        let end = rows.partition_point(|r| r.address < high);
        let inside = &rows[start..end];
        inside
            .iter()
            .find(|r| r.prologue_end)
            .or(inside.first())
            .map(|r| r.address)
    }

    /// A unit's line-table rows sorted by address (end-of-sequence rows left out), read once:
    /// a Rust crate's unit holds hundreds of thousands of rows, and reading them again for
    /// each function made loading many functions quadratic.
    fn line_rows(&self, unit: usize) -> &[LineRow] {
        self.units[unit].line_rows.get_or_init(|| {
            let Some(program) = self.units[unit].unit.line_program.clone() else {
                return Vec::new();
            };
            let mut rows = program.rows();
            let mut out = Vec::new();
            while let Ok(Some((_, row))) = rows.next_row() {
                if !row.end_sequence() {
                    out.push(LineRow {
                        address: row.address(),
                        prologue_end: row.prologue_end(),
                    });
                }
            }
            out.sort_unstable();
            out
        })
    }

    /// Parent DIE offsets of a unit, built once.
    fn parents(&self, unit: usize) -> &HashMap<UnitOffset, UnitOffset> {
        self.units[unit].parents.get_or_init(|| {
            let mut map = HashMap::new();
            let mut stack: Vec<UnitOffset> = Vec::new();
            let mut entries = self.units[unit].unit.entries();
            while let Ok(Some(entry)) = entries.next_dfs() {
                let offset = entry.offset();
                let depth = entries.depth().max(0) as usize;
                stack.truncate(depth);
                if let Some(&parent) = stack.last() {
                    map.insert(offset, parent);
                }
                stack.push(offset);
            }
            map
        })
    }

    /// `a::b::` for a DIE nested in namespaces, structs or enums (C++ and Rust).
    fn scope_prefix(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        offset: UnitOffset,
    ) -> String {
        let parents = self.parents(unit);
        let mut names = Vec::new();
        let mut at = offset;
        while let Some(&parent) = parents.get(&at) {
            let Ok(die) = self.entry(unit, parent) else {
                break;
            };
            match die.tag() {
                dw::DW_TAG_namespace
                | dw::DW_TAG_structure_type
                | dw::DW_TAG_class_type
                | dw::DW_TAG_union_type
                | dw::DW_TAG_enumeration_type => {
                    if let Some(n) = self.string(dwarf, unit, &die, dw::DW_AT_name) {
                        names.push(n);
                    }
                }
                _ => break,
            }
            at = parent;
            if names.len() > 32 {
                break;
            }
        }
        names.reverse();
        names.iter().map(|n| format!("{n}::")).collect()
    }
}

/// Builds the [`Types`] arena of one signature.
struct TypeBuilder<'a> {
    info: &'a DebugInfo,
    dwarf: &'a gimli::Dwarf<Reader>,
    types: Types,
    memo: HashMap<(usize, UnitOffset), TypeId>,
    language: Language,
}

/// What a struct's children say.
struct Members {
    members: Vec<Member>,
    variants: Option<VariantPart>,
    template: Vec<(String, TypeId)>,
    /// C++: a destructor, virtual table or non-trivial member makes the class non-trivial.
    non_trivial: bool,
}

impl TypeBuilder<'_> {
    fn add(&mut self, name: String, size: Option<u64>, kind: TypeKind) -> TypeId {
        match self.types.push(TypeDef { name, size, kind }) {
            Some(id) => id,
            // The arena is full: reuse the first type slot as an opaque stand-in.
            None => TypeId(0),
        }
    }

    fn unknown(&mut self, what: &str) -> gimli::Result<(TypeId, String)> {
        let id = self.add(what.to_owned(), None, TypeKind::Unknown);
        Ok((id, what.to_owned()))
    }

    /// The type a `DW_AT_type` value refers to and how it is written. A reference that
    /// cannot be followed (type units, supplementary files) is an unknown type, never `void`.
    fn referenced(
        &mut self,
        unit: usize,
        value: AttributeValue<Reader>,
        depth: u32,
    ) -> gimli::Result<(TypeId, String)> {
        match self.info.follow(unit, value) {
            Some((u, offset)) => self.type_at(u, offset, depth),
            None => self.unknown("<unresolved type reference>"),
        }
    }

    fn void(&mut self) -> TypeId {
        self.add("void".to_owned(), Some(0), TypeKind::Void)
    }

    /// The resolved type at a DIE (typedefs and qualifiers looked through) and how it is
    /// written.
    fn type_at(
        &mut self,
        unit: usize,
        offset: UnitOffset,
        depth: u32,
    ) -> gimli::Result<(TypeId, String)> {
        if depth > MAX_DEPTH {
            return self.unknown("<type chain too deep>");
        }
        let die = self.info.entry(unit, offset)?;
        let tag: DwTag = die.tag();
        let raw_name = self.info.string(self.dwarf, unit, &die, dw::DW_AT_name);
        // Typedefs and qualifiers resolve to their target; only the written name differs.
        match tag {
            dw::DW_TAG_typedef => {
                let name = raw_name.unwrap_or_default();
                return match die.attr_value(dw::DW_AT_type) {
                    Some(v) => {
                        let (id, _) = self.referenced(unit, v, depth + 1)?;
                        Ok((id, name))
                    }
                    None => self.unknown(&name),
                };
            }
            dw::DW_TAG_const_type
            | dw::DW_TAG_volatile_type
            | dw::DW_TAG_restrict_type
            | dw::DW_TAG_atomic_type => {
                let qualifier = match tag {
                    dw::DW_TAG_const_type => "const",
                    dw::DW_TAG_volatile_type => "volatile",
                    dw::DW_TAG_restrict_type => "restrict",
                    _ => "_Atomic",
                };
                let (id, written) = match die.attr_value(dw::DW_AT_type) {
                    Some(v) => self.referenced(unit, v, depth + 1)?,
                    None => (self.void(), "void".to_owned()),
                };
                // Pointer qualifiers go after the star: `char *const`.
                let written = if written.ends_with('*') {
                    format!("{written}{qualifier}")
                } else {
                    format!("{qualifier} {written}")
                };
                return Ok((id, written));
            }
            _ => {}
        }
        if let Some(&id) = self.memo.get(&(unit, offset)) {
            let name = self.types.get(id).name.clone();
            return Ok((id, name));
        }
        // Reserve the slot first so self-references find it.
        let id = self.add(
            raw_name.clone().unwrap_or_default(),
            None,
            TypeKind::Unknown,
        );
        self.memo.insert((unit, offset), id);
        let size = die
            .attr_value(dw::DW_AT_byte_size)
            .and_then(|v| v.udata_value());
        let scoped = |b: &Self, n: String| {
            if matches!(b.language, Language::Rust | Language::Cpp) {
                format!("{}{n}", b.info.scope_prefix(b.dwarf, unit, offset))
            } else {
                n
            }
        };
        let def = match tag {
            dw::DW_TAG_base_type => {
                let name = raw_name.unwrap_or_default();
                let kind = match die.attr_value(dw::DW_AT_encoding) {
                    Some(AttributeValue::Encoding(e)) => match (e, size.unwrap_or(0)) {
                        (dw::DW_ATE_boolean, _) => TypeKind::Bool,
                        (dw::DW_ATE_signed_char | dw::DW_ATE_unsigned_char, 1) => TypeKind::Char {
                            signed: e == dw::DW_ATE_signed_char,
                        },
                        (dw::DW_ATE_UTF, 4) if self.language == Language::Rust => {
                            TypeKind::RustChar
                        }
                        (
                            dw::DW_ATE_signed
                            | dw::DW_ATE_unsigned
                            | dw::DW_ATE_UTF
                            | dw::DW_ATE_signed_char
                            | dw::DW_ATE_unsigned_char,
                            1 | 2 | 4 | 8 | 16,
                        ) => TypeKind::Int {
                            signed: matches!(e, dw::DW_ATE_signed | dw::DW_ATE_signed_char),
                        },
                        (dw::DW_ATE_float, 4 | 8 | 10 | 12 | 16) => TypeKind::Float,
                        _ => TypeKind::Unknown,
                    },
                    _ => TypeKind::Unknown,
                };
                TypeDef { name, size, kind }
            }
            dw::DW_TAG_unspecified_type => TypeDef {
                name: raw_name.unwrap_or_else(|| "void".to_owned()),
                size: Some(0),
                kind: TypeKind::Void,
            },
            dw::DW_TAG_pointer_type
            | dw::DW_TAG_reference_type
            | dw::DW_TAG_rvalue_reference_type
            | dw::DW_TAG_ptr_to_member_type => {
                let sigil = match tag {
                    dw::DW_TAG_pointer_type => "*",
                    dw::DW_TAG_reference_type => "&",
                    dw::DW_TAG_rvalue_reference_type => "&&",
                    _ => "::*",
                };
                let (pointee, pointee_name) = match die.attr_value(dw::DW_AT_type) {
                    Some(v) => self.referenced(unit, v, depth + 1)?,
                    None => (self.void(), "void".to_owned()),
                };
                // Rust names its pointer types (`&u32`, `Box<T>`); C and C++ do not.
                let name = raw_name.unwrap_or_else(|| {
                    if pointee_name.ends_with(['*', '&']) {
                        format!("{pointee_name}{sigil}")
                    } else {
                        format!("{pointee_name} {sigil}")
                    }
                });
                let kind = if tag == dw::DW_TAG_ptr_to_member_type || size.is_some_and(|s| s != 8) {
                    TypeKind::Unknown
                } else {
                    let reference = tag != dw::DW_TAG_pointer_type
                        || (self.language == Language::Rust && name.starts_with('&'));
                    TypeKind::Pointer { pointee, reference }
                };
                TypeDef {
                    name,
                    size: Some(8),
                    kind,
                }
            }
            dw::DW_TAG_enumeration_type => {
                let name = scoped(
                    self,
                    raw_name.unwrap_or_else(|| "<anonymous enum>".to_owned()),
                );
                let mut signed = match die.attr_value(dw::DW_AT_type) {
                    Some(v) => {
                        let (t, _) = self.referenced(unit, v, depth + 1)?;
                        matches!(
                            self.types.get(t).kind,
                            TypeKind::Int { signed: true } | TypeKind::Char { signed: true }
                        )
                    }
                    None => false,
                };
                let mut enumerators = Vec::new();
                let mut tree = self.info.units[unit].unit.entries_tree(Some(offset))?;
                let mut children = tree.root()?.children();
                while let Some(child) = children.next()? {
                    let child = child.entry();
                    if child.tag() != dw::DW_TAG_enumerator || enumerators.len() >= 4096 {
                        continue;
                    }
                    let Some(enumerator) =
                        self.info.string(self.dwarf, unit, child, dw::DW_AT_name)
                    else {
                        continue;
                    };
                    let value = match child.attr_value(dw::DW_AT_const_value) {
                        Some(AttributeValue::Sdata(v)) => {
                            signed |= v < 0;
                            v as i128
                        }
                        Some(AttributeValue::Udata(v)) => v as i128,
                        Some(AttributeValue::Data1(v)) if signed => v as i8 as i128,
                        Some(AttributeValue::Data2(v)) if signed => v as i16 as i128,
                        Some(AttributeValue::Data4(v)) if signed => v as i32 as i128,
                        Some(AttributeValue::Data8(v)) if signed => v as i64 as i128,
                        Some(AttributeValue::Data1(v)) => v as i128,
                        Some(AttributeValue::Data2(v)) => v as i128,
                        Some(AttributeValue::Data4(v)) => v as i128,
                        Some(AttributeValue::Data8(v)) => v as i128,
                        _ => continue,
                    };
                    enumerators.push((enumerator, value));
                }
                let kind = if matches!(size, Some(1 | 2 | 4 | 8)) {
                    TypeKind::Enum {
                        signed,
                        enumerators,
                    }
                } else {
                    TypeKind::Unknown
                };
                TypeDef { name, size, kind }
            }
            dw::DW_TAG_structure_type | dw::DW_TAG_class_type | dw::DW_TAG_union_type => {
                let keyword = match tag {
                    dw::DW_TAG_union_type => "union",
                    dw::DW_TAG_class_type => "class",
                    _ => "struct",
                };
                let name = match raw_name {
                    Some(n) => scoped(self, n),
                    None => format!("<anonymous {keyword}>"),
                };
                let name =
                    if self.language == Language::C && die.attr_value(dw::DW_AT_name).is_some() {
                        format!("{keyword} {name}")
                    } else {
                        name
                    };
                // Write the name now: members pointing back at this struct print it.
                self.types.set(
                    id,
                    TypeDef {
                        name: name.clone(),
                        size,
                        kind: TypeKind::Unknown,
                    },
                );
                if die.has_attr(dw::DW_AT_declaration) {
                    TypeDef {
                        name,
                        size,
                        kind: TypeKind::Unknown,
                    }
                } else {
                    let Members {
                        members,
                        variants,
                        template,
                        non_trivial,
                    } = self.members(unit, offset, depth)?;
                    // GCC does not say (no DW_AT_calling_convention): then a C++ class is
                    // passed by reference when it is non-trivial for the purposes of calls.
                    let by_reference = match die.attr_value(dw::DW_AT_calling_convention) {
                        Some(AttributeValue::CallingConvention(cc)) => {
                            cc == dw::DW_CC_pass_by_reference
                        }
                        _ => self.language == Language::Cpp && non_trivial,
                    };
                    let kind = if tag == dw::DW_TAG_union_type {
                        TypeKind::Union { members }
                    } else {
                        TypeKind::Struct {
                            members,
                            variants,
                            template,
                            by_reference,
                        }
                    };
                    TypeDef { name, size, kind }
                }
            }
            dw::DW_TAG_array_type => {
                let (element, element_name) = match die.attr_value(dw::DW_AT_type) {
                    Some(v) => self.referenced(unit, v, depth + 1)?,
                    None => self.unknown("<array element>")?,
                };
                let mut counts = Vec::new();
                let mut tree = self.info.units[unit].unit.entries_tree(Some(offset))?;
                let mut children = tree.root()?.children();
                while let Some(child) = children.next()? {
                    let child = child.entry();
                    if child.tag() != dw::DW_TAG_subrange_type {
                        continue;
                    }
                    let count = child
                        .attr_value(dw::DW_AT_count)
                        .and_then(|v| v.udata_value())
                        .or_else(|| {
                            child
                                .attr_value(dw::DW_AT_upper_bound)
                                .and_then(|v| v.udata_value())
                                .map(|u| u.saturating_add(1))
                        });
                    counts.push(count);
                    if counts.len() > 8 {
                        break;
                    }
                }
                if counts.is_empty() {
                    counts.push(None);
                }
                // Multi-dimensional arrays are arrays of arrays, innermost last.
                // Multi-dimensional arrays are arrays of arrays, innermost last.
                let dims = |counts: &[Option<u64>]| -> String {
                    counts
                        .iter()
                        .map(|c| c.map_or("[]".to_owned(), |n| format!("[{n}]")))
                        .collect()
                };
                let mut inner = element;
                for i in (0..counts.len()).rev() {
                    let this_size = counts[i]
                        .zip(self.types.size(inner))
                        .and_then(|(n, s)| n.checked_mul(s));
                    let kind = TypeKind::Array {
                        element: inner,
                        count: counts[i],
                    };
                    let name = format!("{element_name}{}", dims(&counts[i..]));
                    if i == 0 {
                        let name = raw_name.clone().unwrap_or(name);
                        let size = size.or(this_size);
                        self.types.set(id, TypeDef { name, size, kind });
                        return Ok((id, self.types.get(id).name.clone()));
                    }
                    inner = self.add(name, this_size, kind);
                }
                unreachable!("counts is not empty")
            }
            dw::DW_TAG_subroutine_type => TypeDef {
                name: raw_name.unwrap_or_else(|| "<function>".to_owned()),
                size: None,
                kind: TypeKind::Function,
            },
            _ => TypeDef {
                name: raw_name.unwrap_or_else(|| "<unsupported type>".to_owned()),
                size,
                kind: TypeKind::Unknown,
            },
        };
        let name = def.name.clone();
        self.types.set(id, def);
        Ok((id, name))
    }

    /// Data members, a Rust variant part, and template parameters of a struct or union.
    #[allow(clippy::type_complexity)]
    fn members(&mut self, unit: usize, offset: UnitOffset, depth: u32) -> gimli::Result<Members> {
        let mut members = Vec::new();
        let mut variants = None;
        let mut template = Vec::new();
        let mut non_trivial = false;
        let mut tree = self.info.units[unit].unit.entries_tree(Some(offset))?;
        let mut children = tree.root()?.children();
        while let Some(child) = children.next()? {
            let die = child.entry().clone();
            match die.tag() {
                dw::DW_TAG_member => {
                    // Static members have no location in the object.
                    if die.has_attr(dw::DW_AT_external) || die.has_attr(dw::DW_AT_declaration) {
                        continue;
                    }
                    if let Some(m) = self.member(unit, &die, depth)? {
                        members.push(m);
                    }
                }
                dw::DW_TAG_inheritance => {
                    if let Some(mut m) = self.member(unit, &die, depth)? {
                        m.name = format!("<base {}>", self.types.get(m.ty).name);
                        members.push(m);
                    }
                }
                dw::DW_TAG_template_type_parameter => {
                    let name = self
                        .info
                        .string(self.dwarf, unit, &die, dw::DW_AT_name)
                        .unwrap_or_default();
                    if let Some(v) = die.attr_value(dw::DW_AT_type) {
                        let (t, _) = self.referenced(unit, v, depth + 1)?;
                        template.push((name, t));
                    }
                }
                dw::DW_TAG_variant_part => {
                    variants = Some(self.variant_part(unit, &die, child, depth)?);
                }
                // A user-provided destructor makes a C++ class non-trivial: the Itanium
                // ABI passes and returns it through a hidden pointer.
                dw::DW_TAG_subprogram => {
                    let name = self.info.string(self.dwarf, unit, &die, dw::DW_AT_name);
                    let defaulted = die.has_attr(dw::DW_AT_defaulted);
                    if name.is_some_and(|n| n.starts_with('~')) && !defaulted {
                        non_trivial = true;
                    }
                }
                _ => {}
            }
            if members.len() > 4096 {
                break;
            }
        }
        // So does a virtual table, or a member or base that is itself non-trivial.
        non_trivial |= members.iter().any(|m| {
            m.name.starts_with("_vptr")
                || matches!(
                    self.types.get(m.ty).kind,
                    TypeKind::Struct {
                        by_reference: true,
                        ..
                    }
                )
        });
        Ok(Members {
            members,
            variants,
            template,
            non_trivial,
        })
    }

    fn member(&mut self, unit: usize, die: &Die, depth: u32) -> gimli::Result<Option<Member>> {
        let name = self
            .info
            .string(self.dwarf, unit, die, dw::DW_AT_name)
            .unwrap_or_else(|| "<anonymous>".to_owned());
        let Some(tv) = die.attr_value(dw::DW_AT_type) else {
            return Ok(None);
        };
        let (ty, _) = self.referenced(unit, tv, depth + 1)?;
        let mut offset = match die.attr_value(dw::DW_AT_data_member_location) {
            Some(v) => match v.udata_value() {
                Some(o) => o,
                // Location expressions (virtual bases) are not followed.
                None => return Ok(None),
            },
            None => 0,
        };
        let bit_size = die
            .attr_value(dw::DW_AT_bit_size)
            .and_then(|v| v.udata_value());
        let bits = match bit_size {
            Some(bits) => {
                // DWARF 4+: DW_AT_data_bit_offset from the start of the struct.
                let data_bit = die
                    .attr_value(dw::DW_AT_data_bit_offset)
                    .and_then(|v| v.udata_value());
                match data_bit {
                    Some(b) => {
                        let unit_size = self.types.size(ty).unwrap_or(4).max(1);
                        let start = b / 8 / unit_size * unit_size;
                        offset = start;
                        Some((b - start * 8, bits))
                    }
                    None => {
                        // DWARF 2/3: DW_AT_bit_offset counts from the storage unit's MSB.
                        let unit_bits = self.types.size(ty).unwrap_or(4) * 8;
                        let from_msb = die
                            .attr_value(dw::DW_AT_bit_offset)
                            .and_then(|v| v.udata_value())
                            .unwrap_or(0);
                        Some((unit_bits.saturating_sub(from_msb + bits), bits))
                    }
                }
            }
            None => None,
        };
        Ok(Some(Member {
            name,
            offset,
            ty,
            bits,
        }))
    }

    fn variant_part(
        &mut self,
        unit: usize,
        die: &Die,
        node: gimli::EntriesTreeNode<'_, '_, Reader>,
        depth: u32,
    ) -> gimli::Result<VariantPart> {
        // The discriminant member is a sibling DW_TAG_member the part points at; it is
        // found among the part's children in rustc's output.
        let discr_ref = die
            .attr_value(dw::DW_AT_discr)
            .and_then(|v| self.info.follow(unit, v));
        let mut discr = None;
        if let Some((u, off)) = discr_ref {
            let d = self.info.entry(u, off)?;
            discr = self.member(u, &d, depth)?;
        }
        let mut variants = Vec::new();
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let v = child.entry().clone();
            if v.tag() != dw::DW_TAG_variant {
                continue;
            }
            let discr_value = v.attr_value(dw::DW_AT_discr_value).and_then(|x| match x {
                AttributeValue::Sdata(s) => Some(s as u64),
                other => other.udata_value(),
            });
            let mut inner = child.children();
            while let Some(m) = inner.next()? {
                let m = m.entry().clone();
                if m.tag() == dw::DW_TAG_member
                    && let Some(member) = self.member(unit, &m, depth)?
                {
                    variants.push(Variant {
                        discr_value,
                        member,
                    });
                    break;
                }
            }
            if variants.len() > 4096 {
                break;
            }
        }
        Ok(VariantPart { discr, variants })
    }
}

fn unit_ranges(
    dwarf: &gimli::Dwarf<Reader>,
    unit: &gimli::Unit<Reader>,
) -> gimli::Result<Vec<Range<u64>>> {
    let mut ranges = Vec::new();
    let mut iter = dwarf.unit_ranges(unit)?;
    while let Some(r) = iter.next()? {
        if r.begin < r.end {
            ranges.push(r.begin..r.end);
        }
    }
    Ok(ranges)
}

/// Where a separate debug file may be: by build ID, then by `.gnu_debuglink` next to the
/// file, in its `.debug` folder and under `/usr/lib/debug`.
pub(crate) fn separate_debug_candidates(elf: &ElfFile) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(id) = elf.build_id().filter(|id| id.len() > 2) {
        out.push(PathBuf::from(format!(
            "/usr/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        )));
    }
    if let Some((name, _crc)) = elf.debuglink() {
        let dir = elf.path().parent().unwrap_or(Path::new("/"));
        let own = elf
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if own.as_deref() != Some(name) {
            out.push(dir.join(name));
        }
        out.push(dir.join(".debug").join(name));
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        out.push(
            Path::new("/usr/lib/debug")
                .join(absolute.strip_prefix("/").unwrap_or(&absolute))
                .join(name),
        );
    }
    out
}
