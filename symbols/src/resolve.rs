//! Turning what a user typed (`process_order`, `orders::process_order`, a C++ name with or
//! without its parameters, a mangled symbol) into exactly one function of the loaded objects.

use std::fmt;
use std::path::PathBuf;

use crate::demangle::without_params;
use crate::elf::{ElfFile, FunctionSymbol};

/// A function found by [`resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFunction {
    /// The object the function lives in (`ElfFile::path`).
    pub object: PathBuf,
    pub symbol: FunctionSymbol,
    /// Where a uprobe on the function's first instruction attaches.
    pub file_offset: u64,
    pub build_id: Option<String>,
}

/// Why a query did not name exactly one function.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "`{query}` matches {} functions: {}; pass a longer path or the mangled name, or \
         FILE:NAME for the one in FILE",
        candidates.len(),
        candidates.join(", ")
    )]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
    #[error("{}", NotFoundMessage { query, searched, suggestions, stripped: *stripped })]
    NotFound {
        query: String,
        searched: Vec<PathBuf>,
        suggestions: Vec<String>,
        /// The first object searched (the executable) is stripped (no `.symtab`, and no
        /// debug file with one): only its exported functions could be found.
        stripped: bool,
    },
    #[error(
        "function `{name}` at {address:#x} in {object} is not in a loaded segment of the file; \
         is the binary stripped or corrupt?"
    )]
    NoFileOffset {
        object: PathBuf,
        name: String,
        address: u64,
    },
}

struct NotFoundMessage<'a> {
    query: &'a str,
    searched: &'a [PathBuf],
    suggestions: &'a [String],
    stripped: bool,
}

impl fmt::Display for NotFoundMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no function `{}` in ", self.query)?;
        match self.searched {
            [] => write!(f, "no objects")?,
            [main] => write!(f, "{}", main.display())?,
            [main, rest @ ..] => write!(
                f,
                "{} (and {} shared librar{})",
                main.display(),
                rest.len(),
                if rest.len() == 1 { "y" } else { "ies" }
            )?,
        }
        if let Some(main) = self.searched.first().filter(|_| self.stripped) {
            write!(
                f,
                "; {} is stripped (it has no symbol table, and no debug file with one was \
                 found), so only its exported functions can be traced: trace an unstripped \
                 build, or put its debug file (objcopy --only-keep-debug) next to it",
                main.display()
            )?;
        }
        if self.suggestions.is_empty() {
            if !self.stripped {
                write!(f, "; list the functions with `chronicle symbols BINARY`")?;
            }
            Ok(())
        } else {
            write!(f, "; closest matches: {}", self.suggestions.join(", "))
        }
    }
}

/// How well a symbol matched; lower is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Priority {
    Mangled,
    Demangled,
    Suffix,
}

/// The match priority of one symbol for `query`, if it matches at all.
fn priority(query: &str, sym: &FunctionSymbol) -> Option<Priority> {
    if sym.name == query {
        return Some(Priority::Mangled);
    }
    match sym.name.split_once('@') {
        // The default version (`sym@@VER`) is the plain name.
        Some((plain, version)) if version.starts_with('@') && plain == query => {
            return Some(Priority::Mangled);
        }
        // A non-default version (`sym@VER`) answers only to its full name.
        Some((_, version)) if !version.starts_with('@') => return None,
        _ => {}
    }
    let full = sym.demangled.as_str();
    let short = if sym.name.starts_with("_Z") {
        without_params(full)
    } else {
        None
    };
    let names = || std::iter::once(full).chain(short);
    if names().any(|n| n == query) {
        return Some(Priority::Demangled);
    }
    let is_suffix = |n: &str| {
        n.len() > query.len() && n.ends_with(query) && n[..n.len() - query.len()].ends_with("::")
    };
    names().any(is_suffix).then_some(Priority::Suffix)
}

/// Finds the function `query` names in `objects` (main executable first).
///
/// `query` is a mangled symbol, a demangled name, or a `::`-path suffix of one; for C++ the
/// parameter list may be left out; `FILE:NAME` looks only in the object named `FILE`. Exact
/// mangled matches beat exact demangled ones, which beat suffix matches; at equal priority,
/// symbols of the files beat those read from their separate debug files. Several symbols at one address of one object are one function. The result
/// has one element per matching function; it is never empty.
pub fn resolve(query: &str, objects: &[ElfFile]) -> Result<Vec<ResolvedFunction>, ResolveError> {
    let query = query.trim();
    let (file, name) = split_file(query);
    let in_file = |elf: &ElfFile| {
        file.is_none_or(|file| {
            elf.path().file_name().is_some_and(|n| n == file) || elf.path().ends_with(file)
        })
    };
    if query.is_empty() {
        return Err(ResolveError::NotFound {
            query: String::new(),
            searched: objects.iter().map(|o| o.path().to_owned()).collect(),
            suggestions: Vec::new(),
            stripped: false,
        });
    }
    // Lower is better: the match priority, then symbols of the file itself before those
    // only its separate debug file has (a stripped `ld.so` has a private `strcmp` there).
    let mut best: Option<(Priority, bool)> = None;
    // (object index, symbol) of every match at the best priority, one per address.
    let mut hits: Vec<(usize, &FunctionSymbol)> = Vec::new();
    for (i, elf) in objects.iter().enumerate().filter(|(_, elf)| in_file(elf)) {
        for sym in elf.functions() {
            let Some(p) = priority(name, sym) else {
                continue;
            };
            let p = (p, sym.from_debug_file);
            if best.is_some_and(|b| p > b) {
                continue;
            }
            if best.is_none_or(|b| p < b) {
                best = Some(p);
                hits.clear();
            }
            if !hits
                .iter()
                .any(|(j, s)| *j == i && s.address == sym.address)
            {
                hits.push((i, sym));
            }
        }
    }
    if hits.is_empty() {
        return Err(ResolveError::NotFound {
            query: query.to_owned(),
            searched: objects.iter().map(|o| o.path().to_owned()).collect(),
            suggestions: suggestions(name, objects),
            // Only the executable: system libraries are usually stripped, and saying so for
            // every query would bury the suggestions.
            stripped: objects
                .first()
                .is_some_and(|o| !o.has_symtab() && o.symbols_from().is_none()),
        });
    }
    if hits.len() > 1 {
        let mut candidates: Vec<String> = hits.iter().map(|(_, s)| s.demangled.clone()).collect();
        // Distinct functions that demangle alike (statics in two files, two libraries) need the
        // mangled name and the object to tell them apart.
        let mut counts = std::collections::HashMap::new();
        for c in &candidates {
            *counts.entry(c.clone()).or_insert(0) += 1;
        }
        for (c, (i, s)) in candidates.iter_mut().zip(&hits) {
            if counts[c.as_str()] > 1 {
                *c = format!(
                    "{} [{} at {:#x} in {}]",
                    s.demangled,
                    s.name,
                    s.address,
                    objects[*i].path().display()
                );
            }
        }
        return Err(ResolveError::Ambiguous {
            query: query.to_owned(),
            candidates,
        });
    }
    let (i, sym) = hits[0];
    let elf = &objects[i];
    let file_offset = elf
        .file_offset(sym.address)
        .ok_or_else(|| ResolveError::NoFileOffset {
            object: elf.path().to_owned(),
            name: sym.name.clone(),
            address: sym.address,
        })?;
    Ok(vec![ResolvedFunction {
        object: elf.path().to_owned(),
        symbol: sym.clone(),
        file_offset,
        build_id: elf.build_id().map(str::to_owned),
    }])
}

/// `libledger.so:ledger_post` names `ledger_post` in the object whose file name (or path
/// suffix) is `libledger.so`: for a name that several objects define. A `::` is part of a
/// name, never a separator.
fn split_file(query: &str) -> (Option<&str>, &str) {
    match query.split_once(':') {
        Some((file, name)) if !file.is_empty() && !name.is_empty() && !name.starts_with(':') => {
            (Some(file), name)
        }
        _ => (None, query),
    }
}

/// Up to five demangled names close to `query`: names containing it first (shortest first),
/// then by edit distance of their last path segments.
fn suggestions(query: &str, objects: &[ElfFile]) -> Vec<String> {
    let lower_query = query.to_lowercase();
    let segments = query.matches("::").count() + 1;
    let threshold = (query.chars().count() / 3).max(2);
    let mut scored: Vec<(bool, usize, usize, &str)> = Vec::new();
    for elf in objects {
        for sym in elf.functions() {
            let name = if sym.name.starts_with("_Z") {
                without_params(&sym.demangled).unwrap_or(&sym.demangled)
            } else {
                &sym.demangled
            };
            let contains = name.to_lowercase().contains(&lower_query);
            let tail = last_segments(name, segments);
            let distance = levenshtein(query, tail);
            if contains || distance <= threshold {
                scored.push((!contains, distance, name.len(), name));
            }
        }
    }
    scored.sort();
    let mut out: Vec<String> = Vec::new();
    for (_, _, _, name) in scored {
        if out.len() == 5 {
            break;
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    }
    out
}

/// The last `n` `::`-separated segments of a name.
fn last_segments(name: &str, n: usize) -> &str {
    let mut start = name.len();
    for _ in 0..n {
        match name[..start].rfind("::") {
            Some(i) => start = i,
            None => return name,
        }
    }
    &name[start + 2..]
}

/// The edit distance between two strings, in characters.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{last_segments, levenshtein};

    #[test]
    fn distance() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("proces_order", "process_order"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("abc", "abc"), 0);
    }

    #[test]
    fn segments() {
        assert_eq!(last_segments("a::b::c", 1), "c");
        assert_eq!(last_segments("a::b::c", 2), "b::c");
        assert_eq!(last_segments("a::b::c", 5), "a::b::c");
        assert_eq!(last_segments("c", 1), "c");
    }
}
