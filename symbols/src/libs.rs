//! Finding the shared libraries a program will load, before it runs: its `DT_NEEDED`
//! entries, transitively, searched the way the dynamic loader does (`DT_RPATH`,
//! `LD_LIBRARY_PATH`, `DT_RUNPATH`, then the system directories; no `ld.so.cache`).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::elf::ElfFile;

/// Where the loader looks last on x86-64 Debian-like systems.
const SYSTEM_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// The libraries `program` needs, directly or through other libraries, as canonical paths in
/// breadth-first order. Names that cannot be found are left out: the program would not start
/// either, and its own loader says so.
pub fn needed_libraries(program: &ElfFile) -> Vec<PathBuf> {
    let ld_library_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::new();
    queue.push_back(needs_of(program));
    while let Some((origin, deps)) = queue.pop_front() {
        for name in &deps.needed {
            let Some(path) = locate(name, &origin, &deps, &ld_library_path) else {
                continue;
            };
            if !seen.insert(path.clone()) {
                continue;
            }
            if let Ok(lib) = ElfFile::open(&path) {
                queue.push_back(needs_of(&lib));
            }
            found.push(path);
        }
    }
    found
}

fn needs_of(elf: &ElfFile) -> (PathBuf, crate::elf::DynamicDeps) {
    let origin = elf.path().parent().map(Path::to_owned).unwrap_or_default();
    (origin, elf.dynamic_deps().clone())
}

fn locate(
    name: &str,
    origin: &Path,
    deps: &crate::elf::DynamicDeps,
    ld_library_path: &str,
) -> Option<PathBuf> {
    if name.contains('/') {
        return std::fs::canonicalize(name).ok();
    }
    // DT_RPATH only counts when there is no DT_RUNPATH, and comes before LD_LIBRARY_PATH.
    let rpath = if deps.runpath.is_empty() {
        deps.rpath.as_slice()
    } else {
        &[]
    };
    let expand = |dir: &String| PathBuf::from(dir.replace("$ORIGIN", &origin.to_string_lossy()));
    rpath
        .iter()
        .map(expand)
        .chain(
            ld_library_path
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        )
        .chain(deps.runpath.iter().map(expand))
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .and_then(|path| std::fs::canonicalize(path).ok())
}
