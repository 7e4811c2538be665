//! Analyses of recorded behaviour: errors, performance, drift, frequency, input
//! distribution, examples, and the recorded functions. Each answers with one JSON object
//! whose `type` names it (the `chronicle ask` contract of DESIGN.md); `chronicle query`,
//! `chronicle ask` and the MCP server share them.
//!
//! Counts, percentiles, outcome groups and changed outputs come from the store's SQL
//! aggregates (`Storage::call_stats`, ...), so they cover every record in scope. What needs
//! the values themselves (input distributions, latency correlations, input shapes) reads the
//! newest [`SAMPLE`] records of the scope and says so (`sampled`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value as Json, json};

use crate::export::record_json;
use crate::record::{CallRecord, Status};
use crate::storage::{
    CallStats, OUTCOME_GROUPS, OutcomeGroup, RecordOrder, RecordQuery, Storage, StorageError,
};
use crate::time::rfc3339;

/// How many of the newest records value-level analyses read.
pub const SAMPLE: usize = 2000;

/// Which calls an analysis looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub function: String,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub build_id: Option<String>,
}

impl Scope {
    pub fn function(function: impl Into<String>) -> Scope {
        Scope {
            function: function.into(),
            ..Scope::default()
        }
    }

    /// The store query for this scope.
    pub fn query(&self) -> RecordQuery {
        RecordQuery {
            function: Some(self.function.clone()),
            since: self.since,
            until: self.until,
            build_id: self.build_id.clone(),
            ..RecordQuery::default()
        }
    }

    /// `{"since": .., "until": .., "build_id": ..}` with what is set.
    pub fn describe(&self) -> Json {
        let mut m = Map::new();
        if let Some(t) = self.since {
            m.insert("since".into(), rfc3339(t).into());
        }
        if let Some(t) = self.until {
            m.insert("until".into(), rfc3339(t).into());
        }
        if let Some(b) = &self.build_id {
            m.insert("build_id".into(), b.clone().into());
        }
        Json::Object(m)
    }
}

fn ms(ns: Option<u64>) -> Json {
    ns.map_or(Json::Null, |n| json!(n as f64 / 1e6))
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn outcome_json(g: &OutcomeGroup, total: u64) -> Json {
    json!({
        "status": g.status.as_str(),
        "value": g.ret.as_ref().map_or(Json::Null, crate::Value::to_json),
        "count": g.count,
        "share": ratio(g.count, total),
        "example_call_id": g.example_id,
    })
}

fn stats_json(stats: &CallStats) -> Json {
    json!({
        "calls": stats.calls,
        "errors": stats.errors,
        "unwound": stats.unwound,
        "error_rate": ratio(stats.errors + stats.unwound, stats.calls),
        "p50_ms": ms(stats.p50_ns),
        "p90_ms": ms(stats.p90_ns),
        "p99_ms": ms(stats.p99_ns),
        "max_ms": ms(stats.max_ns),
        "first_seen": stats.first_seen.map(rfc3339),
        "last_seen": stats.last_seen.map(rfc3339),
    })
}

fn newest(
    storage: &dyn Storage,
    query: RecordQuery,
    n: usize,
) -> Result<Vec<CallRecord>, StorageError> {
    storage.records(&RecordQuery {
        order: RecordOrder::Newest,
        limit: Some(n),
        ..query
    })
}

/// A compact call for answers: id, time, duration, status, args, return.
pub fn call_json(r: &CallRecord) -> Json {
    let full = record_json(r);
    json!({
        "call_id": r.id,
        "timestamp": full["timestamp"],
        "duration_ns": r.duration_ns,
        "status": r.status.as_str(),
        "args": full["args"],
        "return": full["return"],
    })
}

/// What goes wrong: error and unwound calls grouped by what they returned, with counts,
/// shares and an example input for each. For functions that never report status `error`
/// (C), negative integer returns are taken as error returns by value.
pub fn error_analysis(storage: &dyn Storage, scope: &Scope) -> Result<Json, StorageError> {
    let all = storage.call_stats(&scope.query())?;
    let with_status = |status| RecordQuery {
        status: Some(status),
        ..scope.query()
    };
    // Statuses with no calls are not looked for: finding the newest of none reads every call.
    let present = |status| match status {
        Status::Error => all.errors > 0,
        Status::Unwound => all.unwound > 0,
        Status::Ok => true,
    };
    let mut groups: Vec<OutcomeGroup> = Vec::new();
    for status in [Status::Error, Status::Unwound] {
        if present(status) {
            groups.extend(storage.outcomes(&with_status(status), OUTCOME_GROUPS)?);
        }
    }
    let mut by_value = false;
    if groups.is_empty() {
        // C convention: a negative return is an error code.
        groups = storage
            .outcomes(&scope.query(), OUTCOME_GROUPS)?
            .iter()
            .filter(|g| matches!(g.ret, Some(crate::Value::Int(n)) if n < 0))
            .cloned()
            .collect();
        by_value = !groups.is_empty();
    }
    let failing: u64 = groups.iter().map(|g| g.count).sum();
    let mut examples = Vec::new();
    for (status, n) in [(Status::Error, 200), (Status::Unwound, 50)] {
        if present(status) {
            examples.extend(newest(storage, with_status(status), n)?);
        }
    }
    if by_value {
        examples = newest(storage, scope.query(), SAMPLE)?;
    }
    let groups: Vec<Json> = groups
        .iter()
        .map(|g| {
            let mut j = outcome_json(g, failing);
            let example = examples
                .iter()
                .find(|r| r.status == g.status && r.ret == g.ret)
                .map(call_json);
            j["example"] = example.unwrap_or(Json::Null);
            j
        })
        .collect();
    Ok(json!({
        "type": "error_analysis",
        "function": scope.function,
        "scope": scope.describe(),
        "total_calls": all.calls,
        "failing_calls": failing,
        "error_rate": ratio(failing, all.calls),
        "errors": all.errors,
        "unwound": all.unwound,
        "error_returns_by_value": by_value,
        "groups": groups,
    }))
}

/// How fast: percentiles, the slowest calls, and which inputs go with slow calls.
pub fn performance(
    storage: &dyn Storage,
    scope: &Scope,
    slowest: usize,
) -> Result<Json, StorageError> {
    let stats = storage.call_stats(&scope.query())?;
    let slow = storage.records(&RecordQuery {
        order: RecordOrder::Slowest,
        limit: Some(slowest),
        ..scope.query()
    })?;
    let sample = newest(storage, scope.query(), SAMPLE)?;
    Ok(json!({
        "type": "performance",
        "function": scope.function,
        "scope": scope.describe(),
        "stats": stats_json(&stats),
        "slowest": slow.iter().map(call_json).collect::<Vec<_>>(),
        "correlations": correlations(&sample),
        "sampled": sample.len(),
    }))
}

/// Numeric leaves of a value (numbers, bools, string and array lengths) by path.
fn numeric_leaves(path: &str, v: &Json, out: &mut Vec<(String, &'static str, f64)>) {
    match v {
        Json::Number(n) => out.push((path.to_owned(), "value", n.as_f64().unwrap_or(0.0))),
        Json::Bool(b) => out.push((path.to_owned(), "value", f64::from(u8::from(*b)))),
        Json::String(s) => out.push((path.to_owned(), "length", s.len() as f64)),
        Json::Array(items) => {
            out.push((path.to_owned(), "length", items.len() as f64));
            for (i, item) in items.iter().enumerate().take(4) {
                numeric_leaves(&format!("{path}[{i}]"), item, out);
            }
        }
        Json::Object(m) => {
            for (k, item) in m {
                numeric_leaves(&format!("{path}.{k}"), item, out);
            }
        }
        Json::Null => {}
    }
}

/// Pearson correlation of each input feature with the duration, strongest first.
fn correlations(sample: &[CallRecord]) -> Vec<Json> {
    let mut series: BTreeMap<(String, &'static str), Vec<(f64, f64)>> = BTreeMap::new();
    for r in sample {
        let Some(d) = r.duration_ns else { continue };
        let mut leaves = Vec::new();
        for (name, value) in &r.args {
            numeric_leaves(name, &value.to_json(), &mut leaves);
        }
        for (path, kind, x) in leaves {
            series.entry((path, kind)).or_default().push((x, d as f64));
        }
    }
    let mut out: Vec<(f64, Json)> = series
        .into_iter()
        .filter(|(_, xs)| xs.len() >= 3)
        .filter_map(|((path, kind), xs)| {
            let r = pearson(&xs)?;
            Some((
                r.abs(),
                json!({"input": path, "feature": kind, "correlation": r, "calls": xs.len()}),
            ))
        })
        .collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter().take(5).map(|(_, j)| j).collect()
}

fn pearson(xy: &[(f64, f64)]) -> Option<f64> {
    // A constant says nothing (and float means would make it look like a tiny variance).
    let constant = |f: fn(&(f64, f64)) -> f64| xy.iter().all(|p| f(p) == f(&xy[0]));
    if xy.is_empty() || constant(|p| p.0) || constant(|p| p.1) {
        return None;
    }
    let n = xy.len() as f64;
    let (mx, my) = xy
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xy {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| (sxy / (sxx.sqrt() * syy.sqrt()) * 1000.0).round() / 1000.0)
}

/// One side of a comparison: a label and the calls it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub label: String,
    pub scope: Scope,
}

/// What changed between two periods or builds: volume, error rate, latency, the spread of
/// outputs, input shapes never seen before, and the same inputs giving other outputs.
pub fn drift(storage: &dyn Storage, before: &Period, after: &Period) -> Result<Json, StorageError> {
    let a = storage.call_stats(&before.scope.query())?;
    let b = storage.call_stats(&after.scope.query())?;
    let a_outcomes = storage.outcomes(&before.scope.query(), OUTCOME_GROUPS)?;
    let b_outcomes = storage.outcomes(&after.scope.query(), OUTCOME_GROUPS)?;
    let change = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) if x > 0 => json!(y as f64 / x as f64),
        _ => Json::Null,
    };
    // Output distribution: every value common on either side, with its share on both.
    let share = |s: &CallStats, outcomes: &[OutcomeGroup], g: &OutcomeGroup| {
        outcomes
            .iter()
            .find(|o| o.status == g.status && o.ret == g.ret)
            .map_or(0.0, |o| ratio(o.count, s.calls))
    };
    let mut outputs: Vec<Json> = Vec::new();
    let mut seen = Vec::new();
    for g in a_outcomes.iter().chain(&b_outcomes) {
        if seen.contains(&(g.status, g.ret.clone())) {
            continue;
        }
        seen.push((g.status, g.ret.clone()));
        let (before_share, after_share) = (share(&a, &a_outcomes, g), share(&b, &b_outcomes, g));
        outputs.push(json!({
            "status": g.status.as_str(),
            "value": g.ret.as_ref().map_or(Json::Null, crate::Value::to_json),
            "before_share": before_share,
            "after_share": after_share,
        }));
    }
    let shapes = |scope: &Scope| -> Result<BTreeSet<String>, StorageError> {
        Ok(newest(storage, scope.query(), SAMPLE)?
            .iter()
            .map(|r| shape(&r.args))
            .collect())
    };
    let (shapes_a, shapes_b) = (shapes(&before.scope)?, shapes(&after.scope)?);
    let new_shapes: Vec<Json> = shapes_b
        .difference(&shapes_a)
        .take(10)
        .map(|s| serde_json::from_str(s).unwrap_or(Json::Null))
        .collect();
    let changed = storage.changed_outputs(&before.scope.query(), &after.scope.query(), 20)?;
    let changed: Vec<Json> = changed
        .iter()
        .map(|c| {
            let args: Map<String, Json> =
                c.args.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
            let side = |(status, ret, id): &(Status, Option<crate::Value>, i64)| {
                json!({"status": status.as_str(), "return": ret.as_ref().map_or(Json::Null, crate::Value::to_json), "call_id": id})
            };
            json!({"args": args, "before": side(&c.before), "after": side(&c.after)})
        })
        .collect();
    let side = |p: &Period, s: &CallStats| {
        let mut j = stats_json(s);
        j["label"] = p.label.clone().into();
        j["scope"] = p.scope.describe();
        j
    };
    Ok(json!({
        "type": "drift",
        "function": after.scope.function,
        "before": side(before, &a),
        "after": side(after, &b),
        "changes": {
            "call_volume": change(Some(a.calls), Some(b.calls)),
            "error_rate": ratio(b.errors + b.unwound, b.calls) - ratio(a.errors + a.unwound, a.calls),
            "p50": change(a.p50_ns, b.p50_ns),
            "p99": change(a.p99_ns, b.p99_ns),
        },
        "output_distribution": outputs,
        "new_input_shapes": new_shapes,
        "changed_outputs": changed,
    }))
}

/// The structure of an argument list with its leaves replaced by their JSON types.
fn shape(args: &[(String, crate::Value)]) -> String {
    fn of(v: &Json) -> Json {
        match v {
            Json::Null => "null".into(),
            Json::Bool(_) => "bool".into(),
            Json::Number(_) => "number".into(),
            Json::String(_) => "string".into(),
            Json::Array(items) => match items.first() {
                Some(first) => json!([of(first)]),
                None => json!([]),
            },
            Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), of(v))).collect()),
        }
    }
    let m: Map<String, Json> = args
        .iter()
        .map(|(k, v)| (k.clone(), of(&v.to_json())))
        .collect();
    Json::Object(m).to_string()
}

/// How often: calls per bucket over the scope, or per function when `function` is empty.
pub fn frequency(
    storage: &dyn Storage,
    scope: &Scope,
    bucket: Duration,
) -> Result<Json, StorageError> {
    if scope.function.is_empty() {
        let functions = storage.functions()?;
        let rows: Vec<Json> = functions
            .iter()
            .map(|f| json!({"function": f.function, "calls": f.calls, "errors": f.errors}))
            .collect();
        return Ok(json!({"type": "frequency", "functions": rows}));
    }
    let stats = storage.call_stats(&scope.query())?;
    let volume = storage.call_volume(&scope.query(), bucket)?;
    let span = match (stats.first_seen, stats.last_seen) {
        (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let per_hour = if span.as_secs_f64() > 0.0 {
        json!(stats.calls as f64 / (span.as_secs_f64() / 3600.0))
    } else {
        Json::Null
    };
    Ok(json!({
        "type": "frequency",
        "function": scope.function,
        "scope": scope.describe(),
        "calls": stats.calls,
        "first_seen": stats.first_seen.map(rfc3339),
        "last_seen": stats.last_seen.map(rfc3339),
        "calls_per_hour": per_hour,
        "bucket_seconds": bucket.as_secs(),
        "buckets": volume.iter().map(|(t, n)| json!({"start": rfc3339(*t), "calls": n})).collect::<Vec<_>>(),
    }))
}

/// What the inputs look like: per argument path, numbers' range and mean, the most common
/// strings, booleans' split, how often a value was absent.
pub fn input_distribution(storage: &dyn Storage, scope: &Scope) -> Result<Json, StorageError> {
    let sample = newest(storage, scope.query(), SAMPLE)?;
    #[derive(Default)]
    struct Leaf {
        numbers: Vec<f64>,
        strings: BTreeMap<String, u64>,
        trues: u64,
        falses: u64,
        nulls: u64,
    }
    fn walk(path: &str, v: &Json, leaves: &mut BTreeMap<String, Leaf>, depth: usize) {
        if depth > 4 {
            return;
        }
        match v {
            Json::Number(n) => {
                let l = leaves.entry(path.to_owned()).or_default();
                l.numbers.push(n.as_f64().unwrap_or(0.0));
            }
            Json::String(s) => {
                *leaves
                    .entry(path.to_owned())
                    .or_default()
                    .strings
                    .entry(s.clone())
                    .or_default() += 1;
            }
            Json::Bool(b) => {
                let l = leaves.entry(path.to_owned()).or_default();
                if *b {
                    l.trues += 1;
                } else {
                    l.falses += 1;
                }
            }
            Json::Null => leaves.entry(path.to_owned()).or_default().nulls += 1,
            Json::Array(items) => {
                for item in items.iter().take(8) {
                    walk(&format!("{path}[*]"), item, leaves, depth + 1);
                }
            }
            Json::Object(m) => {
                for (k, item) in m {
                    walk(&format!("{path}.{k}"), item, leaves, depth + 1);
                }
            }
        }
    }
    let mut leaves: BTreeMap<String, Leaf> = BTreeMap::new();
    for r in &sample {
        for (name, value) in &r.args {
            walk(name, &value.to_json(), &mut leaves, 0);
        }
    }
    let inputs: Map<String, Json> = leaves
        .into_iter()
        .map(|(path, l)| {
            let mut j = Map::new();
            if !l.numbers.is_empty() {
                let n = l.numbers.len() as f64;
                let min = l.numbers.iter().copied().fold(f64::INFINITY, f64::min);
                let max = l.numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let distinct: BTreeSet<u64> = l.numbers.iter().map(|x| x.to_bits()).collect();
                j.insert("numbers".into(), json!({
                    "count": l.numbers.len(), "min": min, "max": max,
                    "mean": l.numbers.iter().sum::<f64>() / n, "distinct": distinct.len(),
                }));
            }
            if !l.strings.is_empty() {
                let mut top: Vec<(&String, &u64)> = l.strings.iter().collect();
                top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                j.insert("strings".into(), json!({
                    "count": l.strings.values().sum::<u64>(), "distinct": l.strings.len(),
                    "top": top.iter().take(5).map(|(s, n)| json!({"value": s, "count": n})).collect::<Vec<_>>(),
                }));
            }
            if l.trues + l.falses > 0 {
                j.insert("bools".into(), json!({"true": l.trues, "false": l.falses}));
            }
            if l.nulls > 0 {
                j.insert("nulls".into(), json!(l.nulls));
            }
            (path, Json::Object(j))
        })
        .collect();
    Ok(json!({
        "type": "input_distribution",
        "function": scope.function,
        "scope": scope.describe(),
        "sampled": sample.len(),
        "inputs": inputs,
    }))
}

/// Example calls: the newest calls with distinct inputs and outputs, errors included.
pub fn examples(storage: &dyn Storage, scope: &Scope, n: usize) -> Result<Json, StorageError> {
    let sample = newest(storage, scope.query(), SAMPLE)?;
    let mut seen = BTreeSet::new();
    let picked: Vec<Json> = sample
        .iter()
        .map(call_json)
        .filter(|c| seen.insert(json!([c["args"], c["return"], c["status"]]).to_string()))
        .take(n)
        .collect();
    Ok(json!({
        "type": "examples",
        "function": scope.function,
        "scope": scope.describe(),
        "examples": picked,
    }))
}

/// What a function does outside itself: its calls' dependencies (files, connections, HTTP
/// requests, database statements) grouped by kind and what they were, most frequent first,
/// with how many calls made each, their durations and an example call. Reads the newest
/// [`SAMPLE`] calls in scope.
pub fn dependencies(storage: &dyn Storage, scope: &Scope) -> Result<Json, StorageError> {
    let sample = newest(storage, scope.query(), SAMPLE)?;
    struct Group {
        kind: &'static str,
        what: String,
        count: u64,
        calls: BTreeSet<usize>,
        durations: Vec<u64>,
        example: Json,
        example_call: Option<i64>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut with = 0u64;
    for (i, r) in sample.iter().enumerate() {
        with += u64::from(!r.dependencies.is_empty());
        for d in &r.dependencies {
            let json = crate::export::dependency_json(d);
            let what = dependency_key(&json);
            let kind = d.kind.as_str();
            let at = match groups.iter().position(|g| g.kind == kind && g.what == what) {
                Some(at) => at,
                None => {
                    groups.push(Group {
                        kind,
                        what,
                        count: 0,
                        calls: BTreeSet::new(),
                        durations: Vec::new(),
                        example: json["detail"].clone(),
                        example_call: r.id,
                    });
                    groups.len() - 1
                }
            };
            let g = &mut groups[at];
            g.count += 1;
            g.calls.insert(i);
            g.durations.extend(d.duration_ns);
        }
    }
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.what.cmp(&b.what)));
    let list: Vec<Json> = groups
        .iter_mut()
        .map(|g| {
            g.durations.sort_unstable();
            let rank = |p| crate::monitor::nearest_rank(&g.durations, p);
            json!({
                "kind": g.kind,
                "what": g.what,
                "count": g.count,
                "calls": g.calls.len(),
                "share_of_calls": g.calls.len() as f64 / sample.len().max(1) as f64,
                "p50_ns": rank(0.5),
                "max_ns": g.durations.last(),
                "example": g.example,
                "example_call_id": g.example_call,
            })
        })
        .collect();
    Ok(json!({
        "type": "dependencies",
        "function": scope.function,
        "scope": scope.describe(),
        "calls_read": sample.len(),
        "sampled": sample.len() == SAMPLE,
        "calls_with_dependencies": with,
        "dependencies": list,
    }))
}

/// What identifies a dependency across calls: the statement, the request line, the address,
/// the file and operation.
fn dependency_key(d: &Json) -> String {
    let text = |name| crate::export::detail_text(d, name);
    let parts: Vec<String> = match d["kind"].as_str() {
        Some("db") => vec![text("statement")],
        Some("http") => vec![text("method"), text("host"), text("target")],
        Some("net") => vec![text("address")],
        Some("file") => vec![text("op"), text("path")],
        _ => vec![],
    }
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        d["detail"].to_string()
    } else {
        parts.join(" ")
    }
}

/// The recorded functions with their counts and latencies.
pub fn functions(storage: &dyn Storage) -> Result<Json, StorageError> {
    let list = storage.functions()?;
    Ok(json!({
        "type": "functions",
        "functions": list.iter().map(crate::export::function_summary_json).collect::<Vec<_>>(),
    }))
}

/// What `chronicle query` selects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    pub scope: Scope,
    /// Only calls that failed (`error` or `unwound`).
    pub errors: bool,
    /// The N slowest calls instead of the newest.
    pub slowest: Option<usize>,
    /// `(path, value)`: the argument value at `path` (`order.customer.name`,
    /// `order.items[0].qty`) must read as `value`.
    pub conditions: Vec<(String, String)>,
    /// At most this many calls.
    pub limit: usize,
}

/// A `--where` condition that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--where {0}: write it as PATH=VALUE, e.g. order.customer.name=alice or qty=3")]
pub struct BadCondition(pub String);

/// Parses `PATH=VALUE`.
pub fn parse_condition(text: &str) -> Result<(String, String), BadCondition> {
    match text.split_once('=') {
        Some((path, value)) if !path.trim().is_empty() => Ok((
            path.trim().trim_start_matches("$.").to_owned(),
            value.trim().to_owned(),
        )),
        _ => Err(BadCondition(text.to_owned())),
    }
}

/// The value at `path` (`a.b[2].c`) of an argument list in the export format.
fn at_path<'a>(args: &'a Json, path: &str) -> Option<&'a Json> {
    let mut cur = args;
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

fn condition_holds(args: &Json, (path, value): &(String, String)) -> bool {
    match at_path(args, path) {
        Some(Json::String(s)) => s == value,
        Some(Json::Null) => value == "null",
        Some(Json::Number(n)) => n.as_f64().is_some_and(|x| value.parse() == Ok(x)),
        Some(Json::Bool(b)) => value.parse() == Ok(*b),
        Some(other) => value.parse::<Json>().is_ok_and(|v| v == *other),
        None => false,
    }
}

/// The calls `filter` selects: the newest first, or the slowest first with `slowest`.
pub fn query_calls(
    storage: &dyn Storage,
    filter: &CallFilter,
) -> Result<Vec<CallRecord>, StorageError> {
    let limit = filter.slowest.unwrap_or(filter.limit);
    let order = if filter.slowest.is_some() {
        RecordOrder::Slowest
    } else {
        RecordOrder::Newest
    };
    let statuses: &[Option<Status>] = if filter.errors {
        &[Some(Status::Error), Some(Status::Unwound)]
    } else {
        &[None]
    };
    let mut out = Vec::new();
    for status in statuses {
        let query = RecordQuery {
            status: *status,
            order,
            // Conditions are checked here, after reading: read everything in scope then.
            limit: filter.conditions.is_empty().then_some(limit),
            ..filter.scope.query()
        };
        out.extend(storage.records(&query)?.into_iter().filter(|r| {
            if filter.conditions.is_empty() {
                return true;
            }
            let args = record_json(r)["args"].clone();
            filter.conditions.iter().all(|c| condition_holds(&args, c))
        }));
    }
    match order {
        RecordOrder::Slowest => {
            out.sort_by(|a, b| b.duration_ns.cmp(&a.duration_ns).then(a.id.cmp(&b.id)))
        }
        _ => out.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then(b.id.cmp(&a.id))),
    }
    out.truncate(limit);
    Ok(out)
}

/// `24h`, `7d`, `30m`, `2w`, `90s` back from `now`, or an RFC 3339 time or `YYYY-MM-DD`.
pub fn parse_since(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(t) = crate::time::parse_rfc3339(text) {
        return Some(t);
    }
    if let Some(t) = crate::ask::parse_date(text) {
        return Some(t);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = text[..split].parse().ok()?;
    let unit = match &text[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    now.checked_sub(Duration::from_secs(n * unit))
}
