//! Replay: run captured calls again against a new implementation and report what changed.
//!
//! A [`ReplayTarget`] makes one call from a [`ReplayCase`] (the captured inputs) and says
//! what came back. Targets: a rebuilt native binary driven under ptrace
//! (`chronicle_agent::replay::NativeTarget`, Linux), or a Rust closure ([`ClosureTarget`],
//! for `#[capture]`d code). The [`ReplayEngine`] feeds it the replayable records of a
//! function, compares each result with the captured one value by value (in the export
//! format's JSON, so a spec file and a database replay the same way), and sums it all up in
//! a [`ReplayReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json, json};

use crate::record::{CallRecord, Status};
use crate::storage::{RecordQuery, Storage, StorageError};

/// One captured call, as replay needs it: inputs, expected outputs, how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayCase {
    /// The record's ID in the store (or in the spec file).
    pub call_id: Option<i64>,
    pub function: String,
    /// The binary the call was captured from.
    pub binary: String,
    /// Its build ID (empty when it has none).
    pub build_id: String,
    /// Parameter name → value, in declaration order, in the export format.
    pub args: Map<String, Json>,
    /// The return value in the export format (`null` for `void`).
    pub expected: Json,
    pub status: Status,
    pub duration_ns: Option<u64>,
    /// Value path → why it was not read exactly (export format's `unavailable`).
    pub unavailable: Vec<(String, String)>,
    /// Output parameters as they were at return, when captured.
    pub after: Map<String, Json>,
    /// What the captured call did outside itself (export format): what a replay does not
    /// repeat, and so a reason it may differ.
    pub dependencies: Vec<Json>,
}

impl From<&CallRecord> for ReplayCase {
    fn from(r: &CallRecord) -> Self {
        let to_map = |values: &[(String, crate::Value)]| {
            values
                .iter()
                .map(|(name, value)| (name.clone(), value.to_json()))
                .collect()
        };
        ReplayCase {
            call_id: r.id,
            function: r.function.clone(),
            binary: r.binary.clone(),
            build_id: r.build_id.clone(),
            args: to_map(&r.args),
            expected: r.ret.as_ref().map_or(Json::Null, crate::Value::to_json),
            status: r.status,
            duration_ns: r.duration_ns,
            unavailable: r.unavailable.clone(),
            after: to_map(&r.after),
            dependencies: r
                .dependencies
                .iter()
                .map(crate::export::dependency_json)
                .collect(),
        }
    }
}

/// A spec file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("a replay spec is a JSON array of records in the export format (`chronicle export`)")]
    NotAnArray,
    #[error("record {index} of the spec: field `{field}` is missing or has the wrong type")]
    Field { index: usize, field: &'static str },
}

impl ReplayCase {
    /// Reads the records of a spec file: the export format (`chronicle export`,
    /// `chronicle generate-tests --lang spec`).
    pub fn from_export(json: &Json) -> Result<Vec<ReplayCase>, SpecError> {
        let records = json.as_array().ok_or(SpecError::NotAnArray)?;
        records
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let field = |field| SpecError::Field { index, field };
                let text = |name: &'static str| {
                    r[name]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| field(name))
                };
                let object = |name: &'static str| match &r[name] {
                    Json::Null => Ok(Map::new()),
                    Json::Object(map) => Ok(map.clone()),
                    _ => Err(field(name)),
                };
                Ok(ReplayCase {
                    call_id: r["id"].as_i64(),
                    function: text("function")?,
                    binary: r["binary"].as_str().unwrap_or_default().to_owned(),
                    build_id: r["build_id"].as_str().unwrap_or_default().to_owned(),
                    args: object("args")?,
                    expected: r["return"].clone(),
                    status: Status::parse(&text("status")?).ok_or_else(|| field("status"))?,
                    duration_ns: r["duration_ns"].as_u64(),
                    unavailable: object("unavailable")?
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                    after: object("after")?,
                    dependencies: r["dependencies"].as_array().cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Why the call cannot be replayed, when it cannot: an input that was not read exactly,
    /// or a call that never returned.
    pub fn not_replayable(&self) -> Option<String> {
        if let Some((path, why)) = self
            .unavailable
            .iter()
            .find(|(path, _)| !crate::record::is_return_path(path))
        {
            return Some(format!("input {path} was not captured: {why}"));
        }
        (self.status == Status::Unwound)
            .then(|| "the call never returned (status unwound)".to_owned())
    }

    /// A named argument, deserialised from its captured JSON (for [`ClosureTarget`]s).
    pub fn arg<T: DeserializeOwned>(&self, name: &str) -> Result<T, String> {
        let value = self
            .args
            .get(name)
            .ok_or_else(|| format!("the call has no argument `{name}`"))?;
        serde_json::from_value(value.clone()).map_err(|e| format!("argument `{name}`: {e}"))
    }
}

/// What a target's call gave back.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The return value in the export format.
    pub ret: Json,
    pub status: Status,
    /// Parts of the return value that could not be read (path → reason).
    pub unavailable: Vec<(String, String)>,
    /// Output parameters as they were at return; empty when not read.
    pub after: Map<String, Json>,
    /// How long the call took in the target.
    pub duration: Duration,
}

/// The result of asking a target to make one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    Returned(Outcome),
    /// The call did not return normally: it crashed, raised a signal, timed out, or the
    /// target could not make it.
    Error {
        reason: String,
    },
    /// The call cannot be made with these inputs (a pointer that was not followed, a type
    /// the target cannot build); counted as skipped.
    Unsupported {
        reason: String,
    },
}

/// Something that can make captured calls again.
pub trait ReplayTarget {
    /// What is being replayed against, for the report (a binary's path).
    fn name(&self) -> String;
    /// The GNU build ID of what is replayed against, when it has one.
    fn build_id(&self) -> Option<String> {
        None
    }
    /// Makes the call `case` describes.
    fn call(&mut self, case: &ReplayCase) -> Attempt;
}

/// Replays against an in-process closure: `|case| -> Result<R, String>` where `R` is the
/// new implementation's return value (`Err(..)` of a `Result` return marks status `error`,
/// as `#[capture]` does). An `Err(String)` of the closure itself is a replay error.
pub struct ClosureTarget<F> {
    name: String,
    f: F,
}

impl<F, R> ClosureTarget<F>
where
    F: FnMut(&ReplayCase) -> Result<R, String>,
    R: serde::Serialize,
{
    pub fn new(name: impl Into<String>, f: F) -> Self {
        ClosureTarget {
            name: name.into(),
            f,
        }
    }
}

impl<F, R> ReplayTarget for ClosureTarget<F>
where
    F: FnMut(&ReplayCase) -> Result<R, String>,
    R: serde::Serialize,
{
    fn name(&self) -> String {
        self.name.clone()
    }

    fn call(&mut self, case: &ReplayCase) -> Attempt {
        let started = Instant::now();
        let result = (self.f)(case);
        let duration = started.elapsed();
        match result.and_then(|r| crate::capture::to_value(&r)) {
            Ok(value) => {
                let failed = matches!(&value, crate::Value::Variant(n, _) if n == "Err");
                Attempt::Returned(Outcome {
                    ret: value.to_json(),
                    status: if failed { Status::Error } else { Status::Ok },
                    unavailable: Vec::new(),
                    after: Map::new(),
                    duration,
                })
            }
            Err(reason) => Attempt::Error { reason },
        }
    }
}

/// Value paths whose differences do not count (timestamps, generated IDs).
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    patterns: Vec<Vec<Segment>>,
    regexes: Vec<Regex>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
    AnyKey,
    AnyIndex,
    /// `..`: any number of segments.
    Deep,
}

/// A bad ignore rule.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error(
        "ignore path `{0}` is not understood: write it like `$.created_at`, `$.items[*].id` \
         or `$..id`"
    )]
    Path(String),
    #[error("ignore regex `{pattern}`: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

impl IgnoreRules {
    /// Ignores a path: `$.a.b`, `$.items[2]`, `$.items[*].id` (any element), `$.*.id` (any
    /// key), `$..id` (at any depth). `$` alone ignores the whole return value.
    pub fn path(mut self, pattern: &str) -> Result<Self, IgnoreError> {
        let segments = parse_pattern(pattern).ok_or_else(|| IgnoreError::Path(pattern.into()))?;
        self.patterns.push(segments);
        Ok(self)
    }

    /// Ignores every path the regex matches (`\.ts$`, `_at$`), searched in the rendered path.
    pub fn regex(mut self, pattern: &str) -> Result<Self, IgnoreError> {
        let re = Regex::new(pattern).map_err(|source| IgnoreError::Regex {
            pattern: pattern.into(),
            source,
        })?;
        self.regexes.push(re);
        Ok(self)
    }

    fn ignores(&self, path: &[Segment]) -> bool {
        self.patterns.iter().any(|p| matches_pattern(p, path))
            || (!self.regexes.is_empty() && {
                let rendered = render_path(path);
                self.regexes.iter().any(|re| re.is_match(&rendered))
            })
    }
}

fn parse_pattern(pattern: &str) -> Option<Vec<Segment>> {
    let mut rest = pattern.trim().strip_prefix('$')?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("..") {
            out.push(Segment::Deep);
            rest = r;
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end > 0 {
                out.push(key_segment(&rest[..end]));
                rest = &rest[end..];
            }
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            out.push(key_segment(&r[..end]));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inside = &r[..end];
            out.push(match inside {
                "*" => Segment::AnyIndex,
                _ => Segment::Index(inside.parse().ok()?),
            });
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

fn key_segment(key: &str) -> Segment {
    match key {
        "*" => Segment::AnyKey,
        _ => Segment::Key(key.to_owned()),
    }
}

fn matches_pattern(pattern: &[Segment], path: &[Segment]) -> bool {
    match (pattern.first(), path.first()) {
        (None, _) => true, // A pattern ignores everything below the place it names.
        (Some(Segment::Deep), _) => {
            (0..=path.len()).any(|skip| matches_pattern(&pattern[1..], &path[skip..]))
        }
        (Some(_), None) => false,
        (Some(p), Some(s)) => {
            let one = match (p, s) {
                (Segment::AnyKey, Segment::Key(_)) | (Segment::AnyIndex, Segment::Index(_)) => true,
                (p, s) => p == s,
            };
            one && matches_pattern(&pattern[1..], &path[1..])
        }
    }
}

fn render_path(path: &[Segment]) -> String {
    let mut out = String::from("$");
    for s in path {
        match s {
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::AnyKey => out.push_str(".*"),
            Segment::AnyIndex => out.push_str("[*]"),
            Segment::Deep => out.push_str(".."),
        }
    }
    out
}

/// One difference between the captured and the replayed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// `$` is the return value, `$.total` a field of it, `$status` the call's status,
    /// `$after.buf` an output parameter.
    pub path: String,
    pub expected: Json,
    pub actual: Json,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Json| match v {
            Json::Null => "(absent)".to_owned(),
            v => v.to_string(),
        };
        write!(
            f,
            "{}: {} → {}",
            self.path,
            show(&self.expected),
            show(&self.actual)
        )
    }
}

/// Compares two values in the export format; appends every difference not ignored.
fn diff(
    expected: &Json,
    actual: &Json,
    path: &mut Vec<Segment>,
    root: &str,
    rules: &IgnoreRules,
    out: &mut Vec<Difference>,
) {
    if rules.ignores(path) {
        return;
    }
    match (expected, actual) {
        (Json::Object(e), Json::Object(a)) => {
            for (key, ev) in e {
                path.push(Segment::Key(key.clone()));
                diff(
                    ev,
                    a.get(key).unwrap_or(&Json::Null),
                    path,
                    root,
                    rules,
                    out,
                );
                path.pop();
            }
            for (key, av) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                path.push(Segment::Key(key.clone()));
                diff(&Json::Null, av, path, root, rules, out);
                path.pop();
            }
        }
        (Json::Array(e), Json::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                path.push(Segment::Index(i));
                diff(ev, av, path, root, rules, out);
                path.pop();
            }
        }
        (e, a) if e == a || numbers_equal(e, a) => {}
        (e, a) => out.push(Difference {
            path: format!("{root}{}", &render_path(path)[1..]),
            expected: e.clone(),
            actual: a.clone(),
        }),
    }
}

/// `3` and `3.0` are the same number (a float field that holds an integral value).
fn numbers_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            x.as_f64() == y.as_f64() && (x.is_f64() || y.is_f64())
        }
        _ => false,
    }
}

/// Export-format `unavailable` paths (`return.items.0.name`) as value paths to skip.
fn unread_paths(unavailable: &[(String, String)], prefix: &str) -> Vec<Vec<Segment>> {
    unavailable
        .iter()
        .filter_map(|(path, _)| {
            let rest = path.strip_prefix(prefix)?;
            let rest = match rest {
                "" => "",
                r => r.strip_prefix('.')?,
            };
            Some(
                rest.split('.')
                    .filter(|s| !s.is_empty())
                    .map(|s| match s.parse() {
                        Ok(i) => Segment::Index(i),
                        Err(_) => Segment::Key(s.to_owned()),
                    })
                    .collect(),
            )
        })
        .collect()
}

/// How one call fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResultStatus {
    Passed,
    Failed,
    Error,
    Skipped,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Passed => "passed",
            ResultStatus::Failed => "failed",
            ResultStatus::Error => "error",
            ResultStatus::Skipped => "skipped",
        }
    }
}

/// The result of replaying one call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallResult {
    pub call_id: Option<i64>,
    pub status: ResultStatus,
    /// What differed (failed calls).
    pub difference: Vec<Difference>,
    /// Why the call errored or was skipped; notes on what was not compared.
    pub reason: Option<String>,
    pub captured_ns: Option<u64>,
    pub replayed_ns: Option<u64>,
    /// What the captured call did outside itself (export format), which replay does not
    /// repeat.
    pub dependencies: Vec<Json>,
}

impl CallResult {
    /// Captured duration ÷ replayed duration.
    pub fn speedup(&self) -> Option<f64> {
        match (self.captured_ns, self.replayed_ns) {
            (Some(old), Some(new)) if old > 0 && new > 0 => Some(old as f64 / new as f64),
            _ => None,
        }
    }
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    pub function: String,
    /// What the calls were replayed against.
    pub binary: String,
    /// Its build ID, when known.
    pub build_id: Option<String>,
    /// `(binary, build ID)` the replayed calls were captured from, in order of appearance.
    pub captured_from: Vec<(String, String)>,
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
    pub skipped: u64,
    /// Skipped calls by reason.
    pub skipped_reasons: BTreeMap<String, u64>,
    /// Wall time of the whole replay.
    pub duration: Duration,
    pub results: Vec<CallResult>,
}

impl ReplayReport {
    /// Calls looked at, skipped ones included.
    pub fn total(&self) -> u64 {
        self.passed + self.failed + self.errors + self.skipped
    }

    /// True when no call failed or errored.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.errors == 0
    }

    /// Mean of the per-call speedups (captured ÷ replayed duration).
    pub fn avg_speedup(&self) -> Option<f64> {
        let speedups: Vec<f64> = self
            .results
            .iter()
            .filter_map(CallResult::speedup)
            .collect();
        (!speedups.is_empty()).then(|| speedups.iter().sum::<f64>() / speedups.len() as f64)
    }

    /// Total captured time ÷ total replayed time, over calls that have both.
    pub fn aggregate_speedup(&self) -> Option<f64> {
        let (old, new) = self.results.iter().filter(|r| r.speedup().is_some()).fold(
            (0u64, 0u64),
            |(o, n), r| {
                (
                    o + r.captured_ns.unwrap_or(0),
                    n + r.replayed_ns.unwrap_or(0),
                )
            },
        );
        (new > 0).then(|| old as f64 / new as f64)
    }

    /// The `chronicle replay --json` object of DESIGN.md.
    pub fn to_json(&self) -> Json {
        let results: Vec<Json> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "call_id": r.call_id,
                    "status": r.status.as_str(),
                    "difference": r.difference.iter().map(|d| json!({
                        "path": d.path, "expected": d.expected, "actual": d.actual,
                        "text": d.to_string(),
                    })).collect::<Vec<_>>(),
                    "reason": r.reason,
                    "captured_ns": r.captured_ns,
                    "replayed_ns": r.replayed_ns,
                    "speedup": r.speedup(),
                    "dependencies": r.dependencies,
                })
            })
            .collect();
        json!({
            "function": self.function,
            "binary": self.binary,
            "build_id": self.build_id,
            "captured_from": self.captured_from.iter()
                .map(|(binary, build_id)| json!({"binary": binary, "build_id": build_id}))
                .collect::<Vec<_>>(),
            "total": self.total(),
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "skipped": self.skipped,
            "skipped_reasons": self.skipped_reasons,
            "duration_s": self.duration.as_secs_f64(),
            "avg_speedup": self.avg_speedup(),
            "aggregate_speedup": self.aggregate_speedup(),
            "results": results,
        })
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        let pct = |n: u64| match total {
            0 => 0.0,
            t => n as f64 * 100.0 / t as f64,
        };
        writeln!(f, "Replay Report: {}", self.function)?;
        writeln!(f, "{}", "=".repeat(50))?;
        let build = |id: &str| match id {
            "" => String::new(),
            id => format!(" (build {})", &id[..id.len().min(12)]),
        };
        writeln!(
            f,
            "Binary:       {}{}",
            self.binary,
            build(self.build_id.as_deref().unwrap_or_default())
        )?;
        for (binary, id) in &self.captured_from {
            writeln!(f, "Captured on:  {binary}{}", build(id))?;
        }
        writeln!(f, "Total calls:  {total}")?;
        writeln!(
            f,
            "Passed:       {} ({:.1}%)",
            self.passed,
            pct(self.passed)
        )?;
        writeln!(f, "Failed:       {}", self.failed)?;
        writeln!(f, "Errors:       {}", self.errors)?;
        writeln!(f, "Skipped:      {}", self.skipped)?;
        writeln!(f, "Duration:     {:.2}s", self.duration.as_secs_f64())?;
        match self.avg_speedup() {
            Some(s) => writeln!(f, "Avg speedup:  {s:.2}x")?,
            None => writeln!(f, "Avg speedup:  n/a")?,
        }
        for (reason, n) in &self.skipped_reasons {
            writeln!(f, "  skipped {n}: {reason}")?;
        }
        const SHOWN: usize = 10;
        let bad: Vec<&CallResult> = self
            .results
            .iter()
            .filter(|r| matches!(r.status, ResultStatus::Failed | ResultStatus::Error))
            .collect();
        for r in bad.iter().take(SHOWN) {
            let id = r.call_id.map_or("?".to_owned(), |id| id.to_string());
            writeln!(f, "\n{} call {id}:", r.status.as_str())?;
            for d in &r.difference {
                writeln!(f, "  {d}")?;
            }
            if let Some(reason) = &r.reason {
                writeln!(f, "  {reason}")?;
            }
            if !r.dependencies.is_empty() {
                let made: Vec<String> = r
                    .dependencies
                    .iter()
                    .map(crate::export::dependency_summary)
                    .collect();
                writeln!(f, "  the captured call also made: {}", made.join("; "))?;
            }
        }
        if bad.len() > SHOWN {
            writeln!(f, "\n… and {} more (see --json)", bad.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no recorded calls of {function}: capture some with `chronicle attach` first")]
    NoCalls { function: String },
}

/// Replays recorded calls and compares.
pub struct ReplayEngine<'a> {
    storage: Option<&'a dyn Storage>,
    ignore: IgnoreRules,
    progress: Option<Box<dyn FnMut(usize, usize) + 'a>>,
}

impl<'a> ReplayEngine<'a> {
    /// An engine reading records from `storage`.
    pub fn new(storage: &'a dyn Storage) -> Self {
        ReplayEngine {
            storage: Some(storage),
            ignore: IgnoreRules::default(),
            progress: None,
        }
    }

    /// An engine for cases from elsewhere (a spec file): use [`ReplayEngine::replay_cases`].
    pub fn without_storage() -> Self {
        ReplayEngine {
            storage: None,
            ignore: IgnoreRules::default(),
            progress: None,
        }
    }

    /// Differences at these paths do not count.
    pub fn ignore(mut self, rules: IgnoreRules) -> Self {
        self.ignore = rules;
        self
    }

    /// Called with `(done, total)` after each call.
    pub fn on_progress(mut self, f: impl FnMut(usize, usize) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// The recorded calls of `function` (the oldest `limit`), as cases.
    pub fn cases(
        &self,
        function: &str,
        limit: Option<usize>,
    ) -> Result<Vec<ReplayCase>, ReplayError> {
        let Some(storage) = self.storage else {
            return Ok(Vec::new());
        };
        let records = storage.records(&RecordQuery {
            function: Some(function.to_owned()),
            limit,
            ..Default::default()
        })?;
        if records.is_empty() {
            return Err(ReplayError::NoCalls {
                function: function.to_owned(),
            });
        }
        Ok(records.iter().map(ReplayCase::from).collect())
    }

    /// Replays up to `limit` recorded calls of `function` against `target`.
    pub fn replay(
        &mut self,
        function: &str,
        target: &mut dyn ReplayTarget,
        limit: Option<usize>,
    ) -> Result<ReplayReport, ReplayError> {
        let cases = self.cases(function, limit)?;
        Ok(self.replay_cases(function, &cases, target))
    }

    /// Replays recorded calls of a `#[capture]`d function against a closure (the new
    /// implementation): `engine.replay_with("orders::total", None, |case| {
    /// let order: Order = case.arg("order")?; Ok(new_total(&order)) })`.
    pub fn replay_with<F, R>(
        &mut self,
        function: &str,
        limit: Option<usize>,
        f: F,
    ) -> Result<ReplayReport, ReplayError>
    where
        F: FnMut(&ReplayCase) -> Result<R, String>,
        R: serde::Serialize,
    {
        let mut target = ClosureTarget::new("closure", f);
        self.replay(function, &mut target, limit)
    }

    /// Replays `cases` against `target`.
    pub fn replay_cases(
        &mut self,
        function: &str,
        cases: &[ReplayCase],
        target: &mut dyn ReplayTarget,
    ) -> ReplayReport {
        let started = Instant::now();
        let mut report = ReplayReport {
            function: function.to_owned(),
            binary: target.name(),
            build_id: target.build_id(),
            captured_from: Vec::new(),
            passed: 0,
            failed: 0,
            errors: 0,
            skipped: 0,
            skipped_reasons: BTreeMap::new(),
            duration: Duration::ZERO,
            results: Vec::with_capacity(cases.len()),
        };
        for (i, case) in cases.iter().enumerate() {
            let from = (case.binary.clone(), case.build_id.clone());
            if !case.binary.is_empty() && !report.captured_from.contains(&from) {
                report.captured_from.push(from);
            }
            let result = self.replay_one(case, target);
            match result.status {
                ResultStatus::Passed => report.passed += 1,
                ResultStatus::Failed => report.failed += 1,
                ResultStatus::Error => report.errors += 1,
                ResultStatus::Skipped => {
                    report.skipped += 1;
                    let reason = result.reason.clone().unwrap_or_default();
                    *report.skipped_reasons.entry(reason).or_default() += 1;
                }
            }
            report.results.push(result);
            if let Some(progress) = &mut self.progress {
                progress(i + 1, cases.len());
            }
        }
        report.duration = started.elapsed();
        report
    }

    fn replay_one(&self, case: &ReplayCase, target: &mut dyn ReplayTarget) -> CallResult {
        let mut result = CallResult {
            call_id: case.call_id,
            status: ResultStatus::Skipped,
            difference: Vec::new(),
            reason: None,
            captured_ns: case.duration_ns,
            replayed_ns: None,
            dependencies: case.dependencies.clone(),
        };
        if let Some(reason) = case.not_replayable() {
            result.reason = Some(reason);
            return result;
        }
        let outcome = match target.call(case) {
            Attempt::Returned(outcome) => outcome,
            Attempt::Error { reason } => {
                result.status = ResultStatus::Error;
                result.reason = Some(reason);
                return result;
            }
            Attempt::Unsupported { reason } => {
                result.reason = Some(reason);
                return result;
            }
        };
        result.replayed_ns = Some(outcome.duration.as_nanos() as u64);
        let (difference, notes) = compare(case, &outcome, &self.ignore);
        result.status = if difference.is_empty() {
            ResultStatus::Passed
        } else {
            ResultStatus::Failed
        };
        result.difference = difference;
        result.reason = (!notes.is_empty()).then(|| notes.join("; "));
        result
    }
}

/// The differences between a captured call and its replay, and notes on what could not be
/// compared.
pub fn compare(
    case: &ReplayCase,
    outcome: &Outcome,
    ignore: &IgnoreRules,
) -> (Vec<Difference>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    if case.status != outcome.status {
        out.push(Difference {
            path: "$status".to_owned(),
            expected: case.status.as_str().into(),
            actual: outcome.status.as_str().into(),
        });
    }
    // Parts not read exactly on either side are not compared.
    let mut rules = ignore.clone();
    let unread = unread_paths(&case.unavailable, "return")
        .into_iter()
        .chain(unread_paths(&outcome.unavailable, "return"));
    for path in unread {
        if path.is_empty() {
            notes.push("return value not compared: it was not read exactly".to_owned());
        }
        rules.patterns.push(path);
    }
    diff(
        &case.expected,
        &outcome.ret,
        &mut Vec::new(),
        "$",
        &rules,
        &mut out,
    );
    if !case.after.is_empty() && !outcome.after.is_empty() {
        let mut rules = ignore.clone();
        rules.patterns.extend(
            unread_paths(&case.unavailable, "after")
                .into_iter()
                .chain(unread_paths(&outcome.unavailable, "after")),
        );
        diff(
            &Json::Object(case.after.clone()),
            &Json::Object(outcome.after.clone()),
            &mut Vec::new(),
            "$after",
            &rules,
            &mut out,
        );
    }
    (out, notes)
}

/// Finds noisy paths: replays each case twice against the *old* implementation and
/// returns ignore rules for every path whose value differs between the two runs (array
/// indices generalised to `[*]`).
pub fn detect_noise(cases: &[ReplayCase], old: &mut dyn ReplayTarget) -> IgnoreRules {
    let mut noisy: Vec<Vec<Segment>> = Vec::new();
    for case in cases.iter().filter(|c| c.not_replayable().is_none()) {
        let (Attempt::Returned(a), Attempt::Returned(b)) = (old.call(case), old.call(case)) else {
            continue;
        };
        let pseudo = ReplayCase {
            expected: a.ret,
            status: a.status,
            unavailable: a.unavailable,
            after: a.after,
            ..case.clone()
        };
        let mut found = Vec::new();
        let mut rules = IgnoreRules::default();
        rules.patterns.clone_from(&noisy);
        diff(
            &pseudo.expected,
            &b.ret,
            &mut Vec::new(),
            "$",
            &rules,
            &mut found,
        );
        for d in found {
            if let Some(mut path) = parse_pattern(&d.path) {
                for s in &mut path {
                    if matches!(s, Segment::Index(_)) {
                        *s = Segment::AnyIndex;
                    }
                }
                if !noisy.contains(&path) {
                    noisy.push(path);
                }
            }
        }
    }
    IgnoreRules {
        patterns: noisy,
        regexes: Vec::new(),
    }
}

impl IgnoreRules {
    /// The rules as paths (`$.a[*].b`), for reports.
    pub fn describe(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| render_path(p))
            .chain(self.regexes.iter().map(|r| format!("/{}/", r.as_str())))
            .collect()
    }

    /// Both sets of rules.
    pub fn merge(mut self, other: IgnoreRules) -> Self {
        self.patterns.extend(other.patterns);
        self.regexes.extend(other.regexes);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(expected: Json, status: Status) -> ReplayCase {
        ReplayCase {
            call_id: Some(7),
            function: "f".into(),
            binary: "old".into(),
            build_id: "0123456789abcdef".into(),
            args: Map::new(),
            expected,
            status,
            duration_ns: Some(2000),
            unavailable: Vec::new(),
            after: Map::new(),
            dependencies: Vec::new(),
        }
    }

    fn outcome(ret: Json, status: Status) -> Outcome {
        Outcome {
            ret,
            status,
            unavailable: Vec::new(),
            after: Map::new(),
            duration: Duration::from_nanos(1000),
        }
    }

    #[track_caller]
    fn check(expected: Json, actual: Json, rules: &IgnoreRules, expect: &[&str]) {
        let (diffs, _) = compare(
            &case(expected, Status::Ok),
            &outcome(actual, Status::Ok),
            rules,
        );
        let rendered: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, expect);
    }

    #[test]
    fn differences_have_paths() {
        let none = IgnoreRules::default();
        check(
            json!({"total": 19.98}),
            json!({"total": 19.97}),
            &none,
            &["$.total: 19.98 → 19.97"],
        );
        check(
            json!({"items": [{"id": 1, "qty": 2}, {"id": 2, "qty": 3}]}),
            json!({"items": [{"id": 1, "qty": 2}, {"id": 2, "qty": 4}]}),
            &none,
            &["$.items[1].qty: 3 → 4"],
        );
        check(
            json!([1, 2]),
            json!([1, 2, 3]),
            &none,
            &["$: [1,2] → [1,2,3]"],
        );
        check(
            json!({"a": 1}),
            json!({"a": 1, "b": 2}),
            &none,
            &["$.b: (absent) → 2"],
        );
        check(json!(3), json!(3.0), &none, &[]);
        check(json!("eu"), json!("eu"), &none, &[]);
    }

    #[test]
    fn ignore_rules() {
        let rules = IgnoreRules::default()
            .path("$.created_at")
            .unwrap()
            .path("$.items[*].id")
            .unwrap()
            .path("$..trace")
            .unwrap()
            .regex("_ts$")
            .unwrap();
        check(
            json!({"created_at": 1, "items": [{"id": 1, "n": 1}], "x": {"trace": "a"}, "sent_ts": 5, "n": 1}),
            json!({"created_at": 2, "items": [{"id": 9, "n": 2}], "x": {"trace": "b"}, "sent_ts": 6, "n": 1}),
            &rules,
            &["$.items[0].n: 1 → 2"],
        );
        assert!(matches!(
            IgnoreRules::default().path("created_at"),
            Err(IgnoreError::Path(_))
        ));
        assert!(IgnoreRules::default().regex("(").is_err());
    }

    #[test]
    fn unread_parts_and_status() {
        let mut c = case(json!({"name": "abc", "n": 1}), Status::Ok);
        c.unavailable = vec![("return.name".into(), "truncated".into())];
        let (diffs, _) = compare(
            &c,
            &outcome(json!({"name": "abcdef", "n": 1}), Status::Error),
            &IgnoreRules::default(),
        );
        let rendered: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, ["$status: \"ok\" → \"error\""]);
    }

    #[test]
    fn closures_and_reports() {
        let cases = vec![
            {
                let mut c = case(json!(4), Status::Ok);
                c.args.insert("x".into(), json!(2));
                c
            },
            {
                let mut c = case(json!(9), Status::Ok);
                c.args.insert("x".into(), json!(3));
                c.dependencies = vec![
                    json!({"kind": "db", "detail": {"statement": "select x from t"}, "duration_ns": 10}),
                    json!({"kind": "http", "detail": {"method": "GET", "target": "/x/3"}, "duration_ns": null}),
                ];
                c
            },
            {
                let mut c = case(json!(null), Status::Ok);
                c.unavailable = vec![("x".into(), "optimized out".into())];
                c
            },
        ];
        let mut target = ClosureTarget::new("square+1 for 3", |c: &ReplayCase| {
            let x: i64 = c.arg("x")?;
            Ok(if x == 3 { x * x + 1 } else { x * x })
        });
        let report = ReplayEngine::without_storage().replay_cases("f", &cases, &mut target);
        assert_eq!(
            (report.passed, report.failed, report.errors, report.skipped),
            (1, 1, 0, 1)
        );
        assert_eq!(report.results[1].difference[0].to_string(), "$: 9 → 10");
        assert_eq!(
            report.skipped_reasons,
            BTreeMap::from([("input x was not captured: optimized out".to_owned(), 1)])
        );
        assert!(!report.ok());
        let text = report.to_string();
        assert!(
            text.starts_with(
                "Replay Report: f\n=================================================="
            )
        );
        assert!(text.contains("Total calls:  3\nPassed:       1 (33.3%)\nFailed:       1\nErrors:       0\nSkipped:      1\n"), "{text}");
        assert!(
            text.contains(
                "failed call 7:\n  $: 9 → 10\n  the captured call also made: SELECT; GET /x/3\n"
            ),
            "{text}"
        );
        let json = report.to_json();
        assert_eq!(json["total"], 3);
        assert_eq!(json["results"][1]["status"], "failed");
        assert_eq!(
            json["results"][1]["dependencies"],
            json!(cases[1].dependencies)
        );
        assert_eq!(json["results"][0]["dependencies"], json!([]));
        assert_eq!(json["results"][2]["status"], "skipped");
    }

    #[test]
    fn noise_is_what_differs_between_two_runs_of_the_old_code() {
        let mut n = 0;
        let mut old = ClosureTarget::new("old", |_: &ReplayCase| {
            n += 1;
            Ok(json!({"id": n, "items": [{"at": n, "v": 1}], "total": 5}))
        });
        let cases = vec![case(
            json!({"id": 0, "items": [{"at": 0, "v": 1}], "total": 5}),
            Status::Ok,
        )];
        let rules = detect_noise(&cases, &mut old);
        assert_eq!(rules.describe(), ["$.id", "$.items[*].at"]);
    }
}
