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

/// A function's signature from DWARF.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    /// `DW_AT_name` (unqualified).
    pub name: String,
    /// `DW_AT_linkage_name`, when the compiler gave one (C++, Rust).
    pub linkage_name: Option<String>,
    pub params: Vec<Param>,
    /// `None` for `void` (and Rust `()`).
    pub ret: Option<Type>,
    /// How the return type is written (typedef names kept), `None` for `void`.
    pub ret_type_name: Option<String>,
    /// The function takes `...` after its named parameters.
    pub variadic: bool,
    /// The function is also inlined somewhere: those calls never reach a probe.
    pub inlined: bool,
}

/// A formal parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The parameter name; `arg0`, `arg1`, … when it has none; Rust `self` and C++ `this`
    /// keep theirs.
    pub name: String,
    /// The type with typedefs and qualifiers resolved.
    pub ty: Type,
    /// How the type is written (`const char *`, `size_t`).
    pub type_name: String,
}

/// The type of a parameter or return value, as far as decoding needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// A signed or unsigned integer of 1, 2, 4, 8 or 16 bytes.
    Int {
        name: String,
        signed: bool,
        size: u8,
    },
    Bool,
    /// C `char`, `signed char`, `unsigned char`.
    Char {
        signed: bool,
    },
    Float {
        name: String,
        size: u8,
    },
    /// A C-like enum; `enumerators` hold the values as written.
    Enum {
        name: String,
        size: u8,
        signed: bool,
        enumerators: Vec<(String, i128)>,
    },
    /// A pointer to (possibly const) `char`, `signed char` or `unsigned char`.
    CString,
    /// Any other pointer or reference; `pointee` is the pointed-to type's name (`void`).
    Pointer {
        pointee: String,
    },
    Struct {
        name: String,
        size: u64,
    },
    Union {
        name: String,
        size: u64,
    },
    Array {
        name: String,
        size: u64,
    },
    /// Something this first cut does not decode.
    Unknown {
        name: String,
    },
}

impl Type {
    /// A short, C-like name of the resolved type.
    pub fn display_name(&self) -> String {
        match self {
            Type::Int { name, .. } | Type::Float { name, .. } | Type::Enum { name, .. } => {
                name.clone()
            }
            Type::Bool => "bool".to_owned(),
            Type::Char { signed: true } => "char".to_owned(),
            Type::Char { signed: false } => "unsigned char".to_owned(),
            Type::CString => "char *".to_owned(),
            Type::Pointer { pointee } => format!("{pointee} *"),
            Type::Struct { name, .. }
            | Type::Union { name, .. }
            | Type::Array { name, .. }
            | Type::Unknown { name } => name.clone(),
        }
    }
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
                .build_signature(dwarf, index, offset)
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
        let ret = chain
            .iter()
            .find_map(|(u, die)| Some((*u, die.attr_value(dw::DW_AT_type)?)));
        let (ret, ret_type_name) = match ret {
            Some((u, value)) => {
                let (ty, written) = self.referenced_type(dwarf, u, value, 0)?;
                (Some(ty), Some(written))
            }
            None => (None, None),
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
                        params.push(self.param(dwarf, u, child, params.len())?);
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
        Ok(Signature {
            name,
            linkage_name,
            params,
            ret,
            ret_type_name,
            variadic,
            inlined,
        })
    }

    fn param(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        die: &Die,
        position: usize,
    ) -> gimli::Result<Param> {
        let chain = self.origin_chain(unit, die.offset())?;
        let name = self
            .chain_string(dwarf, &chain, dw::DW_AT_name)
            .unwrap_or_else(|| format!("arg{position}"));
        let ty = chain
            .iter()
            .find_map(|(u, die)| Some((*u, die.attr_value(dw::DW_AT_type)?)));
        let (ty, type_name) = match ty {
            Some((u, value)) => self.referenced_type(dwarf, u, value, 0)?,
            None => (
                Type::Unknown {
                    name: "<no type>".to_owned(),
                },
                "<no type>".to_owned(),
            ),
        };
        Ok(Param {
            name,
            ty,
            type_name,
        })
    }

    /// The type a `DW_AT_type` value refers to. A reference that cannot be followed (type
    /// units, supplementary files) is an unknown type, never `void`.
    fn referenced_type(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        value: AttributeValue<Reader>,
        depth: u32,
    ) -> gimli::Result<(Type, String)> {
        match self.follow(unit, value) {
            Some((u, offset)) => self.type_of(dwarf, u, offset, depth),
            None => unknown(None, "<unresolved type reference>"),
        }
    }

    /// The resolved type at a DIE and how it is written.
    fn type_of(
        &self,
        dwarf: &gimli::Dwarf<Reader>,
        unit: usize,
        offset: UnitOffset,
        depth: u32,
    ) -> gimli::Result<(Type, String)> {
        let die = self.entry(unit, offset)?;
        let name = self.string(dwarf, unit, &die, dw::DW_AT_name);
        let size = die
            .attr_value(dw::DW_AT_byte_size)
            .and_then(|v| v.udata_value());
        if depth > MAX_DEPTH {
            return unknown(name, "<type chain too deep>");
        }
        // `None` is `void`.
        let inner = match die.attr_value(dw::DW_AT_type) {
            Some(value) => Some(self.referenced_type(dwarf, unit, value, depth + 1)?),
            None => None,
        };
        let tag: DwTag = die.tag();
        match tag {
            dw::DW_TAG_base_type => {
                let encoding = match die.attr_value(dw::DW_AT_encoding) {
                    Some(AttributeValue::Encoding(e)) => e,
                    _ => return unknown(name, "<base type>"),
                };
                let name = name.unwrap_or_default();
                let size = size.unwrap_or(0);
                let ty = match encoding {
                    dw::DW_ATE_boolean if size == 1 => Type::Bool,
                    dw::DW_ATE_signed_char | dw::DW_ATE_unsigned_char if size == 1 => Type::Char {
                        signed: encoding == dw::DW_ATE_signed_char,
                    },
                    dw::DW_ATE_signed
                    | dw::DW_ATE_unsigned
                    | dw::DW_ATE_signed_char
                    | dw::DW_ATE_unsigned_char
                    | dw::DW_ATE_UTF
                        if matches!(size, 1 | 2 | 4 | 8 | 16) =>
                    {
                        Type::Int {
                            name: name.clone(),
                            signed: matches!(encoding, dw::DW_ATE_signed | dw::DW_ATE_signed_char),
                            size: size as u8,
                        }
                    }
                    dw::DW_ATE_float if matches!(size, 4 | 8 | 10 | 12 | 16) => Type::Float {
                        name: name.clone(),
                        size: size as u8,
                    },
                    _ => Type::Unknown { name: name.clone() },
                };
                Ok((ty, name))
            }
            dw::DW_TAG_typedef => {
                let name = name.unwrap_or_default();
                match inner {
                    Some((ty, _)) => Ok((ty, name)),
                    None => Ok((Type::Unknown { name: name.clone() }, name)),
                }
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
                match inner {
                    Some((ty, written)) => {
                        // Pointer qualifiers go after the star: `char *const`.
                        let written = if written.ends_with('*') {
                            format!("{written}{qualifier}")
                        } else {
                            format!("{qualifier} {written}")
                        };
                        Ok((ty, written))
                    }
                    None => {
                        let written = format!("{qualifier} void");
                        Ok((
                            Type::Unknown {
                                name: written.clone(),
                            },
                            written,
                        ))
                    }
                }
            }
            dw::DW_TAG_pointer_type
            | dw::DW_TAG_reference_type
            | dw::DW_TAG_rvalue_reference_type => {
                let sigil = match tag {
                    dw::DW_TAG_pointer_type => "*",
                    dw::DW_TAG_reference_type => "&",
                    _ => "&&",
                };
                if size.is_some_and(|s| s != 8) {
                    return unknown(name, "<pointer of unusual size>");
                }
                let (pointee, pointee_name) = match inner {
                    Some(inner) => inner,
                    None => (
                        Type::Unknown {
                            name: "void".to_owned(),
                        },
                        "void".to_owned(),
                    ),
                };
                // Rust names its pointer types (`&str` is a struct, `*const u8` a pointer).
                let written = name.unwrap_or_else(|| {
                    if pointee_name.ends_with(['*', '&']) {
                        format!("{pointee_name}{sigil}")
                    } else {
                        format!("{pointee_name} {sigil}")
                    }
                });
                let ty = match pointee {
                    Type::Char { .. } => Type::CString,
                    _ => Type::Pointer {
                        pointee: pointee_name,
                    },
                };
                Ok((ty, written))
            }
            dw::DW_TAG_enumeration_type => {
                let name = name.unwrap_or_else(|| "<anonymous enum>".to_owned());
                let signed = match inner {
                    Some((ty, _)) => matches!(
                        ty,
                        Type::Int { signed: true, .. } | Type::Char { signed: true }
                    ),
                    None => false,
                };
                let size = size.unwrap_or(0);
                if !matches!(size, 1 | 2 | 4 | 8) {
                    return Ok((Type::Unknown { name: name.clone() }, name));
                }
                let mut enumerators = Vec::new();
                let mut tree = self.units[unit].unit.entries_tree(Some(offset))?;
                let mut children = tree.root()?.children();
                let mut any_negative = false;
                while let Some(child) = children.next()? {
                    let child = child.entry();
                    if child.tag() != dw::DW_TAG_enumerator {
                        continue;
                    }
                    let Some(enumerator) = self.string(dwarf, unit, child, dw::DW_AT_name) else {
                        continue;
                    };
                    let value = match child.attr_value(dw::DW_AT_const_value) {
                        Some(AttributeValue::Sdata(v)) => {
                            any_negative |= v < 0;
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
                let ty = Type::Enum {
                    name: name.clone(),
                    size: size as u8,
                    signed: signed || any_negative,
                    enumerators,
                };
                Ok((ty, name))
            }
            dw::DW_TAG_structure_type | dw::DW_TAG_class_type | dw::DW_TAG_union_type => {
                let keyword = match tag {
                    dw::DW_TAG_union_type => "union",
                    dw::DW_TAG_class_type => "class",
                    _ => "struct",
                };
                let name = name.unwrap_or_else(|| format!("<anonymous {keyword}>"));
                let size = size.unwrap_or(0);
                let ty = if tag == dw::DW_TAG_union_type {
                    Type::Union {
                        name: name.clone(),
                        size,
                    }
                } else {
                    Type::Struct {
                        name: name.clone(),
                        size,
                    }
                };
                Ok((ty, name))
            }
            dw::DW_TAG_array_type => {
                let (element, element_name) = match inner {
                    Some(inner) => inner,
                    None => return unknown(name, "<array>"),
                };
                let mut tree = self.units[unit].unit.entries_tree(Some(offset))?;
                let mut children = tree.root()?.children();
                let mut dims = String::new();
                let mut count_total: Option<u64> = Some(1);
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
                                .map(|u| u + 1)
                        });
                    match count {
                        Some(n) => dims.push_str(&format!("[{n}]")),
                        None => dims.push_str("[]"),
                    }
                    count_total = count_total.zip(count).map(|(a, b)| a * b);
                }
                let element_size = element_size(&element);
                let size = size
                    .or_else(|| count_total.zip(element_size).map(|(n, s)| n * s))
                    .unwrap_or(0);
                let name = name.unwrap_or_else(|| format!("{element_name}{dims}"));
                Ok((
                    Type::Array {
                        name: name.clone(),
                        size,
                    },
                    name,
                ))
            }
            dw::DW_TAG_subroutine_type => unknown(name, "<function>"),
            _ => unknown(name, "<unsupported type>"),
        }
    }
}

fn unknown(name: Option<String>, what: &str) -> gimli::Result<(Type, String)> {
    let name = name.unwrap_or_else(|| what.to_owned());
    Ok((Type::Unknown { name: name.clone() }, name))
}

fn element_size(ty: &Type) -> Option<u64> {
    match ty {
        Type::Int { size, .. } | Type::Float { size, .. } | Type::Enum { size, .. } => {
            Some(u64::from(*size))
        }
        Type::Bool | Type::Char { .. } => Some(1),
        Type::CString | Type::Pointer { .. } => Some(8),
        Type::Struct { size, .. } | Type::Union { size, .. } | Type::Array { size, .. } => {
            Some(*size)
        }
        Type::Unknown { .. } => None,
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
fn separate_debug_candidates(elf: &ElfFile) -> Vec<PathBuf> {
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
