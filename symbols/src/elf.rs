//! ELF files: memory-mapped once, with their function symbols (`.symtab` and `.dynsym`,
//! demangled), GNU build ID, `.gnu_debuglink` and the `PT_LOAD` segments that turn a virtual
//! address into a file offset (what uprobes attach to).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::elf::{
    DF_1_PIE, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, ET_DYN, ET_EXEC, PT_INTERP,
    STT_GNU_IFUNC,
};
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::demangle::{demangle, strip_version};

/// Why an ELF file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot open {path}: {source}; check the path and that you may read it")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path} as an object file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("{path} is not an ELF file; chronicle only traces Linux ELF binaries")]
    NotElf { path: PathBuf },
}

/// A function symbol of an ELF file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FunctionSymbol {
    /// As in the symbol table (mangled for Rust and C++).
    pub name: String,
    /// Rust without the `::h<hash>` suffix, C++ in full with parameters, C = `name`.
    pub demangled: String,
    /// Virtual address (`st_value`).
    pub address: u64,
    /// Size in bytes (`st_size`), 0 when unknown.
    pub size: u64,
    /// Read from the separate debug file's symbol table: the file itself is stripped.
    pub from_debug_file: bool,
}

/// What kind of ELF file this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfKind {
    /// `ET_EXEC`: a position-dependent executable.
    Executable,
    /// `ET_DYN` with a program interpreter: a position-independent executable.
    PieExecutable,
    /// `ET_DYN` without a program interpreter.
    SharedLibrary,
    /// Relocatable objects, core files and the rest.
    Other,
}

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub offset: u64,
    pub file_size: u64,
}

/// An opened, memory-mapped ELF file.
pub struct ElfFile {
    path: PathBuf,
    data: Arc<Mmap>,
    kind: ElfKind,
    build_id: Option<String>,
    debuglink: Option<(String, u32)>,
    functions: Vec<FunctionSymbol>,
    ifuncs: HashSet<u64>,
    segments: Vec<LoadSegment>,
    has_debug_info: bool,
    /// Whether the file has a `.symtab` (a stripped file has only `.dynsym`).
    has_symtab: bool,
    /// Built by the Go toolchain (`.go.buildinfo` or `.note.go.buildid`).
    is_go: bool,
    /// The separate debug file the function symbols came from, for a stripped file.
    symbols_from: Option<PathBuf>,
    dynamic: DynamicDeps,
}

/// What the dynamic section says about libraries: `DT_NEEDED` names and search paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DynamicDeps {
    /// `DT_NEEDED` entries, in order (`libc.so.6`).
    pub needed: Vec<String>,
    /// `DT_RUNPATH` directories, unexpanded (`$ORIGIN/../lib`).
    pub runpath: Vec<String>,
    /// `DT_RPATH` directories (only used when there is no `DT_RUNPATH`).
    pub rpath: Vec<String>,
}

impl std::fmt::Debug for ElfFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfFile")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("build_id", &self.build_id)
            .field("functions", &self.functions.len())
            .finish_non_exhaustive()
    }
}

impl ElfFile {
    /// Maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<ElfFile, ElfError> {
        let file = File::open(path).map_err(|source| ElfError::Open {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: the mapping is read-only and private. A binary that is replaced on disk while
        // we hold it is the usual risk of every symbolizer (gdb, perf, addr2line); writers
        // replace binaries by rename, which leaves this mapping intact.
        let data = unsafe { Mmap::map(&file) }.map_err(|source| ElfError::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut elf = Self::parse(path, Arc::new(data))?;
        if !elf.has_symtab {
            elf.adopt_debug_symbols();
        }
        Ok(elf)
    }

    /// A stripped file keeps only its exported functions (`.dynsym`); its separate debug
    /// file (`objcopy --only-keep-debug`), found as for DWARF and of the same build, still
    /// has the full symbol table at the same addresses.
    fn adopt_debug_symbols(&mut self) {
        for candidate in crate::dwarf::separate_debug_candidates(self) {
            if !candidate.is_file() {
                continue;
            }
            let Ok(file) = File::open(&candidate) else {
                continue;
            };
            // SAFETY: as in `open`.
            let Ok(data) = (unsafe { Mmap::map(&file) }) else {
                continue;
            };
            let Ok(debug) = Self::parse(&candidate, Arc::new(data)) else {
                continue;
            };
            if !debug.has_symtab || (self.build_id.is_some() && debug.build_id != self.build_id) {
                continue;
            }
            // Only functions `.dynsym` does not name: its names carry symbol versions
            // (`memcpy@GLIBC_2.2.5`) that `.symtab` spells plainly.
            let exported: HashSet<u64> = self.functions.iter().map(|f| f.address).collect();
            let adopted: Vec<FunctionSymbol> = debug
                .functions
                .into_iter()
                .filter(|f| !exported.contains(&f.address))
                .map(|f| FunctionSymbol {
                    from_debug_file: true,
                    ..f
                })
                .collect();
            // After the file's own: a lookup by name finds the exported function first.
            self.functions.extend(adopted);
            self.ifuncs.extend(debug.ifuncs);
            self.symbols_from = Some(candidate);
            return;
        }
    }

    /// Parses an ELF image held in memory; `path` only names it in errors and reports.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<ElfFile, ElfError> {
        let open = |source| ElfError::Open {
            path: path.to_owned(),
            source,
        };
        let mut anon = memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(open)?;
        anon[..bytes.len()].copy_from_slice(bytes);
        let data = anon.make_read_only().map_err(open)?;
        Self::parse(path, Arc::new(data))
    }

    fn parse(path: &Path, data: Arc<Mmap>) -> Result<ElfFile, ElfError> {
        let parse_err = |source| ElfError::Parse {
            path: path.to_owned(),
            source,
        };
        let obj = object::File::parse(&data[..]).map_err(parse_err)?;
        let (kind, hidden) = match &obj {
            object::File::Elf64(elf) => (elf_kind(elf, &data[..]), hidden_versions(elf, &data[..])),
            object::File::Elf32(elf) => (elf_kind(elf, &data[..]), hidden_versions(elf, &data[..])),
            _ => {
                return Err(ElfError::NotElf {
                    path: path.to_owned(),
                });
            }
        };
        let build_id = obj
            .build_id()
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let debuglink = obj
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));
        let segments = obj
            .segments()
            .map(|seg| {
                let (offset, file_size) = seg.file_range();
                LoadSegment {
                    vaddr: seg.address(),
                    mem_size: seg.size(),
                    offset,
                    file_size,
                }
            })
            .collect();

        let mut seen = HashSet::new();
        let mut functions = Vec::new();
        let mut ifuncs = HashSet::new();
        let symtab = obj.symbols().map(|sym| (sym, false));
        let dynsym = obj.dynamic_symbols().map(|sym| (sym, true));
        for (sym, dynamic) in symtab.chain(dynsym) {
            // Not `is_definition()`: it leaves out indirect functions, which are listed and
            // flagged instead.
            let defined = matches!(sym.section(), object::SymbolSection::Section(_));
            if sym.kind() != SymbolKind::Text || !defined || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            // A non-default version (`memcpy@GLIBC_2.2.5`) is only for binaries linked
            // against an old library; it keeps its version so that it has a name of its own
            // and does not hide the default version at the same address.
            let name = match hidden.get(&sym.index().0) {
                Some(version) if dynamic => format!("{name}@{version}"),
                _ => strip_version(name).to_owned(),
            };
            if !seen.insert((sym.address(), name.clone())) {
                continue;
            }
            if let object::SymbolFlags::Elf { st_info, .. } = sym.flags()
                && st_info.st_type() == STT_GNU_IFUNC
            {
                ifuncs.insert(sym.address());
            }
            let demangled = demangle(&name).unwrap_or_else(|| strip_version(&name).to_owned());
            functions.push(FunctionSymbol {
                name,
                demangled,
                address: sym.address(),
                size: sym.size(),
                from_debug_file: false,
            });
        }
        let has_symtab = obj.symbol_table().is_some();
        let is_go = [".go.buildinfo", ".note.go.buildid"]
            .iter()
            .any(|name| object::Object::section_by_name(&obj, name).is_some());
        let has_debug_info = object::Object::section_by_name(&obj, ".debug_info")
            .is_some_and(|s| object::ObjectSection::size(&s) > 0);
        let dynamic = match &obj {
            object::File::Elf64(elf) => dynamic_deps(elf, &data[..]),
            object::File::Elf32(elf) => dynamic_deps(elf, &data[..]),
            _ => DynamicDeps::default(),
        };
        drop(obj);
        Ok(ElfFile {
            path: path.to_owned(),
            data,
            kind,
            build_id,
            debuglink,
            functions,
            ifuncs,
            segments,
            has_debug_info,
            has_symtab,
            is_go,
            symbols_from: None,
            dynamic,
        })
    }

    /// The path this file was opened from.
    /// Libraries this file needs and where its dynamic section says to look for them.
    pub fn dynamic_deps(&self) -> &DynamicDeps {
        &self.dynamic
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw file contents.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The GNU build ID (`.note.gnu.build-id`) as lowercase hex.
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.as_deref()
    }

    /// The `.gnu_debuglink` file name and CRC, when the debug info lives elsewhere.
    pub fn debuglink(&self) -> Option<(&str, u32)> {
        self.debuglink.as_ref().map(|(n, c)| (n.as_str(), *c))
    }

    /// Defined function symbols with a nonzero address, from `.symtab` then `.dynsym`, with
    /// duplicates (same address and name) removed; for a stripped file, then the functions
    /// only its separate debug file names (`from_debug_file`).
    pub fn functions(&self) -> &[FunctionSymbol] {
        &self.functions
    }

    /// True when the function symbol at `address` is a GNU indirect function: the address is
    /// that of its resolver, which runs once at load time, not of the implementation that
    /// calls reach (glibc's `memcpy`, `strlen`).
    pub fn is_ifunc(&self, address: u64) -> bool {
        self.ifuncs.contains(&address)
    }

    /// The `PT_LOAD` segments.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// The file offset of a virtual address, through the `PT_LOAD` segment that maps it from
    /// the file.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size)
            .map(|s| vaddr - s.vaddr + s.offset)
    }

    /// What kind of ELF file this is.
    pub fn kind(&self) -> ElfKind {
        self.kind
    }

    /// True for position-independent executables.
    pub fn is_pie(&self) -> bool {
        self.kind == ElfKind::PieExecutable
    }

    /// True when the file has a full symbol table (`.symtab`): it is not stripped.
    pub fn has_symtab(&self) -> bool {
        self.has_symtab
    }

    /// Whether the Go toolchain built this file (it has `.go.buildinfo` or
    /// `.note.go.buildid`).
    pub fn is_go(&self) -> bool {
        self.is_go
    }

    /// For a stripped file, the separate debug file its function symbols were read from.
    pub fn symbols_from(&self) -> Option<&Path> {
        self.symbols_from.as_deref()
    }

    /// True when the file itself has a non-empty `.debug_info` section.
    pub fn has_debug_info(&self) -> bool {
        self.has_debug_info
    }
}

/// `ET_DYN` is used by both PIE executables and shared libraries. `DF_1_PIE` says PIE; old
/// linkers did not set it, so an interpreter without a `DT_SONAME` also counts (libc has an
/// interpreter to print its version, and a soname).
fn elf_kind<Elf: FileHeader<Endian = object::Endianness>>(
    elf: &object::read::elf::ElfFile<'_, Elf>,
    data: &[u8],
) -> ElfKind {
    let endian = elf.endian();
    let headers = elf.elf_program_headers();
    let has_interp = headers.iter().any(|ph| ph.p_type(endian) == PT_INTERP);
    let (mut pie_flag, mut soname) = (false, false);
    for ph in headers {
        let Ok(Some(entries)) = ph.dynamic(endian, data) else {
            continue;
        };
        for entry in entries {
            let tag = entry.d_tag(endian);
            soname |= tag == DT_SONAME;
            pie_flag |= tag == DT_FLAGS_1 && entry.d_val(endian).into() & DF_1_PIE.0 != 0;
        }
    }
    match elf.elf_header().e_type(endian) {
        ET_EXEC => ElfKind::Executable,
        ET_DYN if pie_flag || (has_interp && !soname) => ElfKind::PieExecutable,
        ET_DYN => ElfKind::SharedLibrary,
        _ => ElfKind::Other,
    }
}

/// `DT_NEEDED`, `DT_RUNPATH` and `DT_RPATH`, read through `.dynstr`.
fn dynamic_deps<Elf: FileHeader<Endian = object::Endianness>>(
    elf: &object::read::elf::ElfFile<'_, Elf>,
    data: &[u8],
) -> DynamicDeps {
    let endian = elf.endian();
    let mut deps = DynamicDeps::default();
    let Some(dynstr) = object::Object::section_by_name(elf, ".dynstr")
        .and_then(|s| object::ObjectSection::data(&s).ok())
    else {
        return deps;
    };
    let string_at = |offset: u64| -> Option<String> {
        let tail = dynstr.get(usize::try_from(offset).ok()?..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&tail[..end]).into_owned())
    };
    for ph in elf.elf_program_headers() {
        let Ok(Some(entries)) = ph.dynamic(endian, data) else {
            continue;
        };
        for entry in entries {
            let tag = entry.d_tag(endian);
            let list = if tag == DT_NEEDED {
                &mut deps.needed
            } else if tag == DT_RUNPATH {
                &mut deps.runpath
            } else if tag == DT_RPATH {
                &mut deps.rpath
            } else {
                continue;
            };
            let Some(value) = string_at(entry.d_val(endian).into()) else {
                continue;
            };
            if tag == DT_NEEDED {
                list.push(value);
            } else {
                list.extend(
                    value
                        .split(':')
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned),
                );
            }
        }
    }
    deps
}

/// Dynamic symbols defined with a non-default version (`sym@VER`, not `sym@@VER`), by index.
fn hidden_versions<Elf: FileHeader<Endian = object::Endianness>>(
    elf: &object::read::elf::ElfFile<'_, Elf>,
    data: &[u8],
) -> HashMap<usize, String> {
    let endian = elf.endian();
    let mut out = HashMap::new();
    let Ok(Some(versions)) = elf.elf_section_table().versions(endian, data) else {
        return out;
    };
    for index in 0..elf.elf_dynamic_symbol_table().len() {
        let versym = versions.version_index(endian, object::SymbolIndex(index));
        if !versym.is_hidden() {
            continue;
        }
        if let Ok(Some(version)) = versions.version(versym.index()) {
            out.insert(index, String::from_utf8_lossy(version.name()).into_owned());
        }
    }
    out
}
