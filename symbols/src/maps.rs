//! `/proc/PID/maps`: which files a process has mapped where, so that a file offset can be
//! found (and turned back into a runtime address) and every loaded object can be opened,
//! even from another mount namespace.

use std::path::{Path, PathBuf};

/// Why the memory map of a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("cannot read {path}: check that process {pid} exists and that you may trace it")]
    Read {
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse line {line_number} of {path}: `{line}`")]
    Parse {
        path: PathBuf,
        line_number: usize,
        line: String,
    },
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `r-xp` and the like.
    pub perms: String,
    /// Offset in the file of `start`.
    pub offset: u64,
    pub inode: u64,
    /// The path as the process sees it, without a ` (deleted)` suffix; pseudo paths such as
    /// `[heap]` are kept; anonymous mappings have none.
    pub path: Option<PathBuf>,
    /// The file was deleted (or replaced) after it was mapped.
    pub deleted: bool,
}

impl Mapping {
    /// True when the mapping is executable.
    pub fn is_executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    /// True for a mapping of a real file (not `[heap]`, `[vdso]`, anonymous memory).
    pub fn is_file_backed(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.is_absolute())
    }
}

/// A file mapped into a process that may hold code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedObject {
    /// The path as in `/proc/PID/maps` (the process's mount namespace).
    pub path: PathBuf,
    /// A path that opens the same file from here: `/proc/PID/root/<path>`, or
    /// `/proc/PID/map_files/...` for deleted files, or `path` as a last resort.
    pub open_path: PathBuf,
    pub deleted: bool,
    /// True for the main executable (`/proc/PID/exe`).
    pub is_main: bool,
}

/// The memory map of a process.
#[derive(Clone, Debug)]
pub struct ProcessMaps {
    pid: u32,
    mappings: Vec<Mapping>,
    exe: Option<PathBuf>,
}

impl ProcessMaps {
    /// Reads `/proc/PID/maps`.
    pub fn read(pid: u32) -> Result<ProcessMaps, MapsError> {
        let path = PathBuf::from(format!("/proc/{pid}/maps"));
        let text = std::fs::read_to_string(&path).map_err(|source| MapsError::Read {
            pid,
            path: path.clone(),
            source,
        })?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| strip_deleted(&p.to_string_lossy()).0.into());
        let mut maps = Self::parse(pid, &text, &path)?;
        maps.exe = exe;
        Ok(maps)
    }

    /// Parses the text of a maps file (`source` names it in errors).
    pub fn parse(pid: u32, text: &str, source: &Path) -> Result<ProcessMaps, MapsError> {
        let mappings = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                parse_line(line).ok_or_else(|| MapsError::Parse {
                    path: source.to_owned(),
                    line_number: i + 1,
                    line: line.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ProcessMaps {
            pid,
            mappings,
            exe: None,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// All mappings, in address order.
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// Each distinct file that is mapped executable or is an ELF file, main executable first.
    pub fn objects(&self) -> Vec<MappedObject> {
        let mut objects: Vec<MappedObject> = Vec::new();
        for m in self.mappings.iter().filter(|m| m.is_file_backed()) {
            let path = m.path.clone().expect("file-backed mappings have a path");
            if objects.iter().any(|o| o.path == path) {
                continue;
            }
            let all = || {
                self.mappings
                    .iter()
                    .filter(|o| o.path.as_ref() == Some(&path))
            };
            let open_path = if m.deleted {
                PathBuf::from(format!(
                    "/proc/{}/map_files/{:x}-{:x}",
                    self.pid, m.start, m.end
                ))
            } else {
                let rooted = Path::new("/proc")
                    .join(self.pid.to_string())
                    .join("root")
                    .join(path.strip_prefix("/").unwrap_or(&path));
                if rooted.exists() {
                    rooted
                } else {
                    path.clone()
                }
            };
            if !all().any(Mapping::is_executable) && !is_elf(&open_path) {
                continue;
            }
            objects.push(MappedObject {
                is_main: self.exe.as_ref() == Some(&path),
                path,
                open_path,
                deleted: m.deleted,
            });
        }
        // A stable sort keeps the address order of the rest.
        objects.sort_by_key(|o| !o.is_main);
        objects
    }

    /// The runtime address at which `file_offset` of `object_path` (as in the maps) is
    /// mapped, preferring executable mappings.
    pub fn runtime_address(&self, object_path: &Path, file_offset: u64) -> Option<u64> {
        let mut hits = self.mappings.iter().filter(|m| {
            m.path.as_deref() == Some(object_path)
                && file_offset >= m.offset
                && file_offset - m.offset < m.end - m.start
        });
        let first = hits.next()?;
        let best = if first.is_executable() {
            first
        } else {
            hits.find(|m| m.is_executable()).unwrap_or(first)
        };
        Some(best.start + (file_offset - best.offset))
    }
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn strip_deleted(path: &str) -> (&str, bool) {
    match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    }
}

/// `start-end perms offset dev inode   path`; the path may contain spaces.
fn parse_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        f
    };
    let (start, end) = field().split_once('-')?;
    let perms = field().to_owned();
    let offset = u64::from_str_radix(field(), 16).ok()?;
    let _dev = field();
    let inode = field().parse().ok()?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let path = rest.trim_start();
    let (path, deleted) = strip_deleted(path);
    if perms.len() != 4 || end < start {
        return None;
    }
    Some(Mapping {
        start,
        end,
        perms,
        offset,
        inode,
        path: (!path.is_empty()).then(|| PathBuf::from(path)),
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234                       /usr/bin/my app
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234                       /usr/bin/my app
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000028000 r--p 00000000 08:01 99                         /usr/lib/libc.so.6
7f0000028000-7f000019d000 r-xp 00028000 08:01 99                         /usr/lib/libc.so.6
7f0000200000-7f0000201000 r-xp 00000000 08:01 77                         /tmp/plugin.so (deleted)
7f0000300000-7f0000301000 rw-p 00000000 00:00 0 
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn parse_and_list() {
        let mut maps = ProcessMaps::parse(42, MAPS, Path::new("maps")).unwrap();
        maps.exe = Some(PathBuf::from("/usr/lib/libc.so.6"));
        assert_eq!(maps.mappings().len(), 8);
        let m = &maps.mappings()[1];
        assert_eq!(
            (m.start, m.end, m.perms.as_str(), m.offset, m.inode),
            (0x55d0c0a01000, 0x55d0c0a02000, "r-xp", 0x1000, 1234)
        );
        assert_eq!(m.path.as_deref(), Some(Path::new("/usr/bin/my app")));
        assert_eq!(maps.mappings()[6].path, None);
        assert!(maps.mappings()[5].deleted);

        let objects: Vec<_> = maps
            .objects()
            .into_iter()
            .map(|o| (o.path.display().to_string(), o.deleted, o.is_main))
            .collect();
        assert_eq!(
            objects,
            [
                ("/usr/lib/libc.so.6".to_owned(), false, true),
                ("/usr/bin/my app".to_owned(), false, false),
                ("/tmp/plugin.so".to_owned(), true, false),
            ]
        );
        let deleted = &maps.objects()[2];
        assert_eq!(
            deleted.open_path,
            Path::new("/proc/42/map_files/7f0000200000-7f0000201000")
        );

        let libc = Path::new("/usr/lib/libc.so.6");
        assert_eq!(maps.runtime_address(libc, 0x28010), Some(0x7f0000028010));
        assert_eq!(maps.runtime_address(libc, 0x10), Some(0x7f0000000010));
        assert_eq!(maps.runtime_address(libc, 0x1_000_000), None);
    }

    #[test]
    fn bad_line() {
        let err = ProcessMaps::parse(1, "garbage\n", Path::new("maps")).unwrap_err();
        assert_eq!(err.to_string(), "cannot parse line 1 of maps: `garbage`");
    }
}
