//! The test generator: turns recorded calls of one function into a test file in the target's
//! own language — Rust `#[test]`s ([`rust`]), a self-contained C program ([`c`]), or, for any
//! binary, a replay spec in the export format that `chronicle replay --spec` runs.
//!
//! [`select`] picks a few diverse records (every distinct error first, then one call per
//! cluster of similar arguments, then the rest round-robin over the clusters); the renderers
//! read the function's signature and types from the DWARF of the recorded binary and write
//! the captured inputs as literals and the captured output as the expected value.

pub mod c;
pub mod rust;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chronicle_symbols::{
    DebugInfo, DwarfError, ElfError, ElfFile, Language, ResolveError, Signature, Value, resolve,
};
use serde_json::Value as Json;

use crate::export::export_json;
use crate::record::{CallRecord, Status};
use crate::sampling::{features, similarity};
use crate::storage::{NoSuchFunction, RecordQuery, Storage, StorageError, match_function};
use crate::time::rfc3339;

/// How many tests [`GenerateOptions::default`] asks for.
pub const DEFAULT_COUNT: usize = 10;

/// Calls whose arguments are at least this similar ([`similarity`]) share a cluster.
const CLUSTER_THRESHOLD: f64 = 0.75;

/// The kind of file to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestLanguage {
    /// A Rust test file: one `#[test]` per call.
    Rust,
    /// A C program: one case per call, `main` exits non-zero when a case fails.
    C,
    /// A replay spec (the export format) for `chronicle replay --spec`; works for any binary.
    Spec,
}

impl TestLanguage {
    /// `rust`, `c` or `spec`.
    pub fn as_str(self) -> &'static str {
        match self {
            TestLanguage::Rust => "rust",
            TestLanguage::C => "c",
            TestLanguage::Spec => "spec",
        }
    }
}

impl fmt::Display for TestLanguage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A language name that is not `rust`, `c` or `spec`.
#[derive(Debug, thiserror::Error)]
#[error("unknown test language `{0}`: use rust, c or spec")]
pub struct UnknownLanguage(pub String);

impl FromStr for TestLanguage {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" => Ok(TestLanguage::Rust),
            "c" => Ok(TestLanguage::C),
            "spec" => Ok(TestLanguage::Spec),
            other => Err(UnknownLanguage(other.to_owned())),
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// At most this many tests (records).
    pub count: usize,
    /// `None`: from the DWARF language of the function (Rust or C; C++ and others get a spec).
    pub language: Option<TestLanguage>,
    /// Read the signature from this binary instead of the recorded one.
    pub binary: Option<PathBuf>,
    /// What the printed build command links the tests against: C objects or libraries, or
    /// the crate's rlib for Rust. Without it the command has a placeholder.
    pub link: Vec<PathBuf>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            count: DEFAULT_COUNT,
            language: None,
            binary: None,
            link: Vec::new(),
        }
    }
}

/// A test file written by [`BehaviorAgent::generate_test_file`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The file written.
    pub path: PathBuf,
    pub language: TestLanguage,
    /// The function's full recorded name.
    pub function: String,
    /// Ids of the records that became tests, in the file's order.
    pub call_ids: Vec<i64>,
    /// Selected records that could not become tests: `(call id, reason)`.
    pub skipped: Vec<(i64, String)>,
    /// Command that builds the tests, when they need building.
    pub build: Option<String>,
    /// Command that runs the tests.
    pub run: String,
}

/// Why no test file could be generated.
#[derive(Debug, thiserror::Error)]
pub enum TestGenError {
    #[error(transparent)]
    NoSuchFunction(#[from] NoSuchFunction),
    #[error("reading the records")]
    Storage(#[from] StorageError),
    #[error(
        "none of the {total} recorded calls of `{function}` can become a test ({why}); record \
         more calls with `chronicle attach`"
    )]
    NoReplayable {
        function: String,
        total: usize,
        why: String,
    },
    #[error(
        "cannot read {} (pass the function's binary with --binary PATH, or use --lang spec)",
        path.display()
    )]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("reading the debug info of {}", path.display())]
    Dwarf {
        path: PathBuf,
        #[source]
        source: DwarfError,
    },
    #[error("finding `{function}` in {}; pass the binary that holds it with --binary PATH", path.display())]
    Resolve {
        function: String,
        path: PathBuf,
        #[source]
        source: Box<ResolveError>,
    },
    #[error(
        "no debug info describes `{function}` in {}; rebuild it with -g and pass it with \
         --binary PATH, or generate a replay spec with --lang spec",
        path.display()
    )]
    NoSignature { function: String, path: PathBuf },
    #[error(
        "`{function}` is {language:?} code: only Rust and C tests can be generated; use --lang \
         spec for a replay spec"
    )]
    UnsupportedLanguage {
        function: String,
        language: Language,
    },
    #[error(
        "none of the {} selected calls of `{function}` can be written as a {language} test: {}; \
         use --lang spec for a replay spec",
        reasons.len(),
        reasons.join("; ")
    )]
    NothingRenderable {
        function: String,
        language: TestLanguage,
        reasons: Vec<String>,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Answers questions about recorded behaviour; here: writes regression tests from it.
pub struct BehaviorAgent<'a> {
    storage: &'a dyn Storage,
}

impl<'a> BehaviorAgent<'a> {
    /// An agent over the records of `storage`.
    pub fn new(storage: &'a dyn Storage) -> Self {
        BehaviorAgent { storage }
    }

    /// The store it answers from.
    pub fn storage(&self) -> &'a dyn Storage {
        self.storage
    }

    /// Writes a test file for `function` (full name, or a unique last part of it) into `dir`
    /// (created when missing): up to `options.count` diverse recorded calls, each asserting
    /// the captured output for the captured inputs. Only calls that are
    /// [`replayable`](CallRecord::replayable), returned, and whose return value was read
    /// whole are used (a spec also takes calls that never returned).
    pub fn generate_test_file(
        &self,
        function: &str,
        dir: &Path,
        options: &GenerateOptions,
    ) -> Result<GeneratedFile, TestGenError> {
        let known = self.storage.function_names()?;
        let function = match_function(function, &known)?;
        let records = self.storage.records(&RecordQuery {
            function: Some(function.clone()),
            ..Default::default()
        })?;
        let spec_only = options.language == Some(TestLanguage::Spec);
        let eligible: Vec<&CallRecord> =
            records.iter().filter(|r| eligible(r, spec_only)).collect();
        if eligible.is_empty() {
            return Err(TestGenError::NoReplayable {
                function,
                total: records.len(),
                why: ineligible_summary(&records, spec_only),
            });
        }
        let binary = match &options.binary {
            Some(path) => path.clone(),
            // The newest build is the one the tests should pin.
            None => PathBuf::from(&eligible.last().expect("not empty").binary),
        };
        let signature = if spec_only {
            None
        } else {
            Some(load_signature(&binary, &function)?)
        };
        let language = match (options.language, &signature) {
            (Some(language), _) => language,
            (None, Some(sig)) => match sig.language {
                Language::Rust => TestLanguage::Rust,
                Language::C => TestLanguage::C,
                _ => TestLanguage::Spec,
            },
            (None, None) => TestLanguage::Spec,
        };
        let chosen = select(&eligible, options.count);
        std::fs::create_dir_all(dir).map_err(|source| TestGenError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let stem = file_stem(&function);
        let target = Target {
            function: &function,
            binary: &binary,
            link: &options.link,
        };
        let (path, rendered) = match language {
            TestLanguage::Spec => {
                let path = dir.join(format!("{stem}.replay.json"));
                let owned: Vec<CallRecord> = chosen.iter().map(|r| (*r).clone()).collect();
                let mut text = serde_json::to_string_pretty(&export_json(&owned))
                    .expect("JSON values always render");
                text.push('\n');
                let run = format!(
                    "chronicle replay {function} --spec {} --binary {}",
                    path.display(),
                    binary.display()
                );
                let rendered = Rendered {
                    text,
                    call_ids: chosen.iter().filter_map(|r| r.id).collect(),
                    skipped: Vec::new(),
                    build: None,
                    run,
                };
                (path, rendered)
            }
            TestLanguage::Rust | TestLanguage::C => {
                let sig = signature
                    .as_ref()
                    .expect("loaded for every language but spec");
                let rendered = match language {
                    TestLanguage::Rust => {
                        if sig.language != Language::Rust {
                            return Err(TestGenError::UnsupportedLanguage {
                                function,
                                language: sig.language,
                            });
                        }
                        let path = dir.join(format!("{stem}_test.rs"));
                        (path.clone(), rust::render(&target, sig, &chosen, &path))
                    }
                    _ => {
                        if sig.language != Language::C {
                            return Err(TestGenError::UnsupportedLanguage {
                                function,
                                language: sig.language,
                            });
                        }
                        let path = dir.join(format!("{stem}_test.c"));
                        (path.clone(), c::render(&target, sig, &chosen, &path))
                    }
                };
                if rendered.1.call_ids.is_empty() {
                    return Err(TestGenError::NothingRenderable {
                        function,
                        language,
                        reasons: rendered
                            .1
                            .skipped
                            .iter()
                            .map(|(id, why)| format!("call {id}: {why}"))
                            .collect(),
                    });
                }
                rendered
            }
        };
        write_in(dir, &path, &rendered.text).map_err(|source| TestGenError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(GeneratedFile {
            path,
            language,
            function,
            call_ids: rendered.call_ids,
            skipped: rendered.skipped,
            build: rendered.build,
            run: rendered.run,
        })
    }
}

/// What a test is generated for.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The function's full name (`orders::order_total`).
    pub function: &'a str,
    /// The binary whose DWARF the signature came from.
    pub binary: &'a Path,
    /// What the build command links against (see [`GenerateOptions::link`]).
    pub link: &'a [PathBuf],
}

/// A rendered test file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The file's content.
    pub text: String,
    /// Records that became tests, in order.
    pub call_ids: Vec<i64>,
    /// Records that could not: `(call id, reason)`.
    pub skipped: Vec<(i64, String)>,
    /// Command that builds the file (paths as given to the renderer).
    pub build: Option<String>,
    /// Command that runs it.
    pub run: String,
}

/// Reads the signature of `function` from the DWARF of `binary`.
pub fn load_signature(binary: &Path, function: &str) -> Result<Signature, TestGenError> {
    let elf = ElfFile::open(binary).map_err(|source| TestGenError::Elf {
        path: binary.to_owned(),
        source,
    })?;
    let found =
        resolve(function, std::slice::from_ref(&elf)).map_err(|source| TestGenError::Resolve {
            function: function.to_owned(),
            path: binary.to_owned(),
            source: Box::new(source),
        })?;
    let debug = DebugInfo::load(&elf).map_err(|source| TestGenError::Dwarf {
        path: binary.to_owned(),
        source,
    })?;
    let no_signature = || TestGenError::NoSignature {
        function: function.to_owned(),
        path: binary.to_owned(),
    };
    let first = found.first().ok_or_else(no_signature)?;
    debug
        .signature(first.symbol.address)
        .map_err(|source| TestGenError::Dwarf {
            path: binary.to_owned(),
            source,
        })?
        .ok_or_else(no_signature)
}

/// Whether a record can become a test: every input exact, and (unless for a spec) it
/// returned with its whole return value read.
fn eligible(r: &CallRecord, spec: bool) -> bool {
    if !r.replayable() {
        return false;
    }
    spec || (r.status != Status::Unwound && r.unavailable.is_empty())
}

/// Why no record was eligible, counted by reason.
fn ineligible_summary(records: &[CallRecord], spec: bool) -> String {
    if records.is_empty() {
        return "there are none".into();
    }
    let missing = records.iter().filter(|r| !r.replayable()).count();
    let unwound = records
        .iter()
        .filter(|r| r.replayable() && r.status == Status::Unwound)
        .count();
    let partial = records.len() - missing - unwound;
    let mut why = Vec::new();
    if missing > 0 {
        why.push(format!("{missing} with inputs that were not read exactly"));
    }
    if !spec && unwound > 0 {
        why.push(format!("{unwound} that never returned"));
    }
    if !spec && partial > 0 {
        why.push(format!("{partial} with a return value not read whole"));
    }
    why.join(", ")
}

/// Picks up to `count` diverse records, returned oldest first: first one call per distinct
/// error outcome (status `error` and return value), then one per cluster of similar
/// arguments, then the rest round-robin over the clusters. Calls with the same arguments,
/// return value and status count once.
pub fn select<'r>(records: &[&'r CallRecord], count: usize) -> Vec<&'r CallRecord> {
    // Distinct (args, return, status), oldest first.
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&CallRecord> = records
        .iter()
        .copied()
        .filter(|r| seen.insert(outcome_key(r)))
        .collect();

    // Greedy clustering on argument features, in order of first appearance.
    let mut reps: Vec<Vec<u64>> = Vec::new();
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    for (i, r) in distinct.iter().enumerate() {
        let f = features(&r.args);
        match reps
            .iter()
            .position(|rep| similarity(rep, &f) >= CLUSTER_THRESHOLD)
        {
            Some(c) => clusters[c].push(i),
            None => {
                reps.push(f);
                clusters.push(vec![i]);
            }
        }
    }

    let mut picked: Vec<usize> = Vec::new();
    let take = |i: usize, picked: &mut Vec<usize>| {
        if picked.len() < count && !picked.contains(&i) {
            picked.push(i);
        }
    };
    let mut errors = std::collections::HashSet::new();
    for (i, r) in distinct.iter().enumerate() {
        if r.status == Status::Error && errors.insert(json_of(r.ret.as_ref())) {
            take(i, &mut picked);
        }
    }
    let longest = clusters.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..longest {
        for cluster in &clusters {
            if let Some(&i) = cluster.get(round) {
                take(i, &mut picked);
            }
        }
    }
    picked.sort_unstable();
    picked.into_iter().map(|i| distinct[i]).collect()
}

fn outcome_key(r: &CallRecord) -> String {
    let args: Vec<Json> = r
        .args
        .iter()
        .map(|(n, v)| Json::Array(vec![n.clone().into(), v.to_json()]))
        .collect();
    format!(
        "{}|{}|{}",
        Json::Array(args),
        json_of(r.ret.as_ref()),
        r.status.as_str()
    )
}

fn json_of(v: Option<&Value>) -> String {
    v.map_or(Json::Null, |v| v.to_json()).to_string()
}

/// Writes `text` to `path`, a file directly in `dir`, without following what is there: a new
/// file next to it, renamed over it. A symbolic link planted at `path` is replaced, and
/// whatever it points to (outside `dir`, perhaps) is left alone.
fn write_in(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().expect("a file name made from a stem");
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// `orders::order_total` → `orders_order_total`: a file-name-safe stem.
fn file_stem(function: &str) -> String {
    let mut out = String::new();
    for c in function.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "function".into()
    } else {
        trimmed.to_owned()
    }
}

/// "call 17, captured 2026-11-27T00:30:01.123456789Z": how a test names its record.
fn provenance(r: &CallRecord) -> String {
    let id = r.id.map_or("without id".to_owned(), |id| id.to_string());
    format!("Call {id}, captured {}", rfc3339(r.timestamp))
}

/// A value that cannot be written in the target language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrenderable {
    /// Where in the value (`order.customer`, `return`).
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Unrenderable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl Unrenderable {
    fn new(path: &str, reason: impl Into<String>) -> Self {
        Unrenderable {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// How a captured value is named in messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Int(_) | Value::UInt(_) => "integer",
        Value::Float(_) => "float",
        Value::Str(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Enum(_) => "enumerator",
        Value::Ptr(_) => "pointer",
        Value::Struct(_) => "struct",
        Value::Array(_) => "array",
        Value::Variant(..) => "enum variant",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::storage::story::record;

    fn call(id: i64, args: Vec<(&str, Value)>, ret: Value, status: Status) -> CallRecord {
        let mut r = record("orders::f", 0, 10);
        r.id = Some(id);
        r.args = args.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        r.ret = Some(ret);
        r.status = status;
        r
    }

    fn ids(chosen: &[&CallRecord]) -> Vec<i64> {
        chosen.iter().filter_map(|r| r.id).collect()
    }

    #[test]
    fn select_prefers_distinct_outcomes_and_keeps_every_error() {
        let s = |v: &str| Value::Str(v.into());
        let err = |v: &str| Value::Variant("Err".into(), Box::new(Value::Enum(v.into())));
        let records = [
            call(1, vec![("c", s("DE"))], s("eu"), Status::Ok),
            call(2, vec![("c", s("DE"))], s("eu"), Status::Ok),
            call(3, vec![("c", s("US"))], s("americas"), Status::Ok),
            call(4, vec![("c", s("JP"))], s("world"), Status::Ok),
            call(5, vec![("c", s(""))], err("Empty"), Status::Error),
            call(6, vec![("c", s("??"))], err("Bad"), Status::Error),
            call(7, vec![("c", s("FR"))], s("eu"), Status::Ok),
        ];
        let all: Vec<&CallRecord> = records.iter().collect();
        // The duplicate (2) never counts; with room for three, both errors come first.
        assert_eq!(ids(&select(&all, 3)), [1, 5, 6]);
        assert_eq!(ids(&select(&all, 10)), [1, 3, 4, 5, 6, 7]);
        assert_eq!(ids(&select(&all, 0)), Vec::<i64>::new());
    }

    #[test]
    fn select_takes_one_per_cluster_before_seconds() {
        let order = |q: u64, express: bool| {
            Value::Struct(vec![
                ("quantity".into(), Value::UInt(q)),
                ("express".into(), Value::Bool(express)),
                ("customer".into(), Value::Str("x".into())),
                ("unit".into(), Value::UInt(100)),
            ])
        };
        let records = [
            call(1, vec![("o", order(2, false))], Value::UInt(1), Status::Ok),
            // Same magnitude of quantity (2 bits): the same cluster as 1.
            call(2, vec![("o", order(3, false))], Value::UInt(2), Status::Ok),
            call(
                3,
                vec![("o", order(5000, true))],
                Value::UInt(3),
                Status::Ok,
            ),
        ];
        let all: Vec<&CallRecord> = records.iter().collect();
        assert_eq!(ids(&select(&all, 2)), [1, 3]);
    }

    #[test]
    fn file_stems() {
        assert_eq!(file_stem("orders::order_total"), "orders_order_total");
        assert_eq!(file_stem("order_total"), "order_total");
        assert_eq!(file_stem("ns::f(int, char const*)"), "ns_f_int_char_const");
        // Names that look like paths stay inside the directory.
        assert_eq!(file_stem("../../etc/passwd"), "etc_passwd");
        assert_eq!(file_stem("/abs/olute"), "abs_olute");
        assert_eq!(file_stem("ns::operator/"), "ns_operator");
        assert_eq!(file_stem(".."), "function");
    }

    #[test]
    #[cfg(unix)]
    fn a_link_planted_where_a_test_goes_is_replaced_not_followed() {
        let dir = crate::test_util::TempDir::new();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep me\n").unwrap();
        let tests = dir.path().join("tests");
        std::fs::create_dir(&tests).unwrap();
        let path = tests.join("f_test.rs");
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        write_in(&tests, &path, "generated\n").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me\n");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "generated\n");
        let left: Vec<_> = std::fs::read_dir(&tests).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }

    #[test]
    fn languages_parse() {
        assert_eq!("rust".parse::<TestLanguage>().unwrap(), TestLanguage::Rust);
        assert_eq!("c".parse::<TestLanguage>().unwrap(), TestLanguage::C);
        assert_eq!("spec".parse::<TestLanguage>().unwrap(), TestLanguage::Spec);
        assert_eq!(
            "go".parse::<TestLanguage>().unwrap_err().to_string(),
            "unknown test language `go`: use rust, c or spec"
        );
    }
}
