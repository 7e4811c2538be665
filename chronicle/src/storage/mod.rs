//! Where call records are kept: the [`Storage`] trait, its SQLite and PostgreSQL backends,
//! and the helpers every backend and the CLI share (summaries, percentiles, function-name
//! matching).
//!
//! Backends store values in a lossless encoding of their own (see `codec`), never in the
//! export format, so that what is read back is exactly what was captured.

mod codec;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod story;

use chronicle_symbols::resolve::levenshtein;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::limits::Alert;
use crate::record::{CallRecord, Status};

pub use codec::DecodeError;

/// A store of call records.
///
/// Methods that only read take `&self`; a backend whose client needs `&mut` to query (as the
/// `postgres` crate's does) keeps it in a `RefCell`, which `Send` allows.
pub trait Storage: Send {
    /// Writes `records` in one transaction: all or none. Assigns each record's `id`
    /// (any id it had is replaced); ids grow with insertion order and are never reused.
    fn insert(&mut self, records: &mut [CallRecord]) -> Result<(), StorageError>;

    /// One summary per recorded function, sorted by function name.
    fn functions(&self) -> Result<Vec<FunctionSummary>, StorageError>;

    /// The records that match `query`, oldest first (ties in order of insertion).
    fn records(&self, query: &RecordQuery) -> Result<Vec<CallRecord>, StorageError>;

    /// The names of all recorded functions, sorted.
    fn function_names(&self) -> Result<Vec<String>, StorageError>;

    /// Stores alerts (limits reached), in one transaction.
    fn insert_alerts(&mut self, alerts: &[Alert]) -> Result<(), StorageError>;

    /// Every stored alert, oldest first.
    fn alerts(&self) -> Result<Vec<Alert>, StorageError>;

    /// Deletes the records of calls that started before `cutoff`; returns how many.
    fn delete_before(&mut self, cutoff: SystemTime) -> Result<u64, StorageError>;

    /// Deletes all but the `keep` newest records of `function`; returns how many.
    fn keep_newest(&mut self, function: &str, keep: u64) -> Result<u64, StorageError>;

    /// Counts and duration percentiles of the calls `query` selects (its order and limit do
    /// not apply).
    fn call_stats(&self, query: &RecordQuery) -> Result<CallStats, StorageError>;

    /// The `limit` most common outcomes (status and return value) of the calls `query`
    /// selects, most frequent first (ties: newest example first).
    fn outcomes(
        &self,
        query: &RecordQuery,
        limit: usize,
    ) -> Result<Vec<OutcomeGroup>, StorageError>;

    /// The build IDs `function` was recorded from, in order of first appearance.
    fn build_ids(&self, function: &str) -> Result<Vec<String>, StorageError>;

    /// Calls per `bucket` of time (start of the bucket, calls), oldest first; empty buckets
    /// are left out.
    fn call_volume(
        &self,
        query: &RecordQuery,
        bucket: std::time::Duration,
    ) -> Result<Vec<(SystemTime, u64)>, StorageError>;

    /// Argument lists seen in both `before` and `after` whose outcome (status and return
    /// value) in one set never occurs for them in the other: each such pair of outcomes, the
    /// newest first, at most `limit` of them. Looks at the newest [`CHANGED_OUTPUTS_SCAN`]
    /// calls of each set.
    fn changed_outputs(
        &self,
        before: &RecordQuery,
        after: &RecordQuery,
        limit: usize,
    ) -> Result<Vec<ChangedOutput>, StorageError>;
}

/// An alert read back: `(timestamp_ns, function, kind, key, limit, message)`.
pub(crate) fn alert_from_row(row: (i64, String, String, Option<String>, i64, String)) -> Alert {
    let (ts, function, kind, key, limit, message) = row;
    Alert {
        timestamp: crate::time::from_unix_nanos(ts),
        function,
        // The table's CHECK constraint allows only these two.
        kind: crate::limits::AlertKind::parse(&kind)
            .unwrap_or(crate::limits::AlertKind::FunctionLimit),
        key,
        limit: u64::try_from(limit).unwrap_or(0),
        message,
    }
}

/// Applies retention: records older than `days` days (0: none), then all but the newest
/// `max_per_function` of every function (0: no cap). Returns how many were deleted.
pub fn enforce_retention(
    storage: &mut dyn Storage,
    days: u32,
    max_per_function: u64,
) -> Result<u64, StorageError> {
    let mut deleted = 0;
    if days > 0 {
        let cutoff = SystemTime::now()
            .checked_sub(std::time::Duration::from_secs(u64::from(days) * 86_400))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        deleted += storage.delete_before(cutoff)?;
    }
    if max_per_function > 0 {
        for function in storage.function_names()? {
            deleted += storage.keep_newest(&function, max_per_function)?;
        }
    }
    Ok(deleted)
}

/// Which records [`Storage::records`] returns. The default matches every record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordQuery {
    /// Only calls of this function (exact name; see [`match_function`]).
    pub function: Option<String>,
    /// Only calls that ended this way.
    pub status: Option<Status>,
    /// Only calls that started at or after this instant.
    pub since: Option<SystemTime>,
    /// Only calls that started before this instant.
    pub until: Option<SystemTime>,
    /// Only calls of a binary with this build ID.
    pub build_id: Option<String>,
    /// Which records come first (and which `limit` keeps).
    pub order: RecordOrder,
    /// At most this many records, the first in `order`.
    pub limit: Option<usize>,
}

/// The order of [`Storage::records`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordOrder {
    /// Oldest first (ties in order of insertion).
    #[default]
    Oldest,
    /// Newest first.
    Newest,
    /// Longest duration first; calls that never returned last.
    Slowest,
}

/// Counts and latencies of a set of calls (see [`Storage::call_stats`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    pub calls: u64,
    pub errors: u64,
    pub unwound: u64,
    /// Duration percentiles of the calls that returned (`ok` or `error`).
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    pub first_seen: Option<SystemTime>,
    pub last_seen: Option<SystemTime>,
}

/// Calls that ended the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeGroup {
    pub status: Status,
    pub ret: Option<crate::Value>,
    pub count: u64,
    /// The ID of the newest such call.
    pub example_id: i64,
}

/// The same arguments giving different outcomes in two sets of calls.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangedOutput {
    pub args: Vec<(String, crate::Value)>,
    /// `(status, return value, newest call ID)` in the first set, then in the second.
    pub before: (Status, Option<crate::Value>, i64),
    pub after: (Status, Option<crate::Value>, i64),
}

/// The recorded function names, sorted: one index seek per name (a loose index scan)
/// instead of reading every record's name. Valid SQL for SQLite and PostgreSQL.
pub(crate) const DISTINCT_FUNCTIONS: &str = "WITH RECURSIVE f(name) AS ( \
        SELECT MIN(function) FROM records \
        UNION ALL \
        SELECT (SELECT MIN(function) FROM records WHERE function > f.name) FROM f \
        WHERE f.name IS NOT NULL) \
    SELECT name FROM f WHERE name IS NOT NULL";

/// How many of the newest calls of each side [`Storage::changed_outputs`] compares.
pub const CHANGED_OUTPUTS_SCAN: usize = 20_000;

/// The query behind [`Storage::changed_outputs`], for both backends: `before` and `after`
/// are their ` WHERE ...` filters, `limit` the placeholder of the row limit. Outcomes are
/// grouped over both sides at once; those seen on one side only are paired by arguments.
pub(crate) fn changed_outputs_sql(before: &str, after: &str, limit: &str) -> String {
    format!(
        "WITH u AS (SELECT * FROM (SELECT args, status, ret, 0 AS side, id FROM records{before} \
                    ORDER BY timestamp_ns DESC, id DESC LIMIT {CHANGED_OUTPUTS_SCAN}) AS ua \
               UNION ALL SELECT * FROM (SELECT args, status, ret, 1, id FROM records{after} \
                    ORDER BY timestamp_ns DESC, id DESC LIMIT {CHANGED_OUTPUTS_SCAN}) AS ub), \
              g AS (SELECT args, status, ret, MIN(side) AS lo, MAX(side) AS hi, \
                    MAX(CASE WHEN side = 0 THEN id END) AS a_id, \
                    MAX(CASE WHEN side = 1 THEN id END) AS b_id \
                    FROM u GROUP BY args, status, ret), \
              a AS (SELECT args, status, ret, a_id FROM g WHERE hi = 0), \
              b AS (SELECT args, status, ret, b_id FROM g WHERE lo = 1) \
         SELECT a.args, a.status, a.ret, a.a_id, b.status, b.ret, b.b_id \
         FROM a JOIN b ON a.args = b.args \
         ORDER BY b.b_id DESC LIMIT {limit}"
    )
}

/// How many outcome groups analyses show.
pub const OUTCOME_GROUPS: usize = 10;

/// What the store knows about one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSummary {
    pub function: String,
    pub calls: u64,
    /// Calls with status `error`.
    pub errors: u64,
    /// Calls with status `unwound`.
    pub unwound: u64,
    /// Median duration of the calls that returned (`ok` or `error`); `None` when none did.
    pub p50_ns: Option<u64>,
    /// 99th-percentile duration of the calls that returned.
    pub p99_ns: Option<u64>,
    /// Start of the oldest call.
    pub first_seen: SystemTime,
    /// Start of the newest call.
    pub last_seen: SystemTime,
    /// Build IDs seen, in order of first appearance; binaries without one are left out.
    pub build_ids: Vec<String>,
    /// Binary paths seen, in order of first appearance.
    pub binaries: Vec<String>,
}

/// Why a store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "cannot create database {}: directory {} does not exist; create it or choose another path",
        path.display(), directory.display()
    )]
    MissingDirectory { path: PathBuf, directory: PathBuf },
    #[error("no database at {}; record some calls first or choose another path", path.display())]
    NotFound { path: PathBuf },
    #[error(
        "{} is not a SQLite database; choose another path or move the file out of the way",
        path.display()
    )]
    NotADatabase { path: PathBuf },
    #[error(
        "{} is a SQLite database of another program (tables: {}), not a chronicle store; \
         it was left unchanged: choose another path",
        path.display(),
        list_tables(tables)
    )]
    ForeignDatabase { path: PathBuf, tables: Vec<String> },
    #[error(
        "database {} is damaged ({detail}); nothing was written to it: restore a copy, \
         recover it (`sqlite3 {} .recover`), or choose another path",
        path.display(),
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "database {} has schema version {found}, newer than the {supported} this chronicle \
         knows; upgrade chronicle",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "database {} cannot be written ({reason}); choose a --db path on a writable file \
         system, where this user may write",
        path.display()
    )]
    ReadOnly { path: PathBuf, reason: String },
    #[error(
        "database {} is read-only and has schema version {found}; this chronicle reads \
         version {supported}: copy it somewhere writable and read the copy (that upgrades it)",
        path.display()
    )]
    ReadOnlyOutdated {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "database {} is on a read-only file system with calls still in its write-ahead log \
         ({}-wal); copy both files somewhere writable and read the copy",
        path.display(),
        path.display()
    )]
    UnmergedLog { path: PathBuf },
    #[error("cannot create database {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot apply migration {version} to database {}", path.display())]
    Migration {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("sqlite failed while {operation}")]
    Sqlite {
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// Opening or using a PostgreSQL store failed; see [`postgres::PostgresError`].
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error("record {id} has an unreadable `{column}` column")]
    Corrupt {
        id: i64,
        column: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error(
        "a call of {function} has a value `{name}` nested deeper than {} levels; it cannot be \
         stored",
        codec::MAX_DEPTH
    )]
    ValueTooDeep { function: String, name: String },
    #[error("a call of {function} has a {field} outside the range the store can hold")]
    OutOfRange {
        function: String,
        field: &'static str,
    },
    #[error("{failed_records} records in {failed_batches} batches could not be written")]
    WritesFailed {
        failed_batches: u64,
        failed_records: u64,
        /// The first failure.
        #[source]
        source: Box<StorageError>,
    },
    #[error("the storage writer thread panicked")]
    WriterPanicked,
    /// A batch that queued behind batches the store was refusing, and was never tried.
    #[error("queued behind batches the store refused ({error})")]
    Waiting { error: String },
}

/// A function name that does not name exactly one recorded function.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoSuchFunction {
    #[error(
        "no function named `{query}` has been recorded{}; run `chronicle functions` to list \
         the recorded functions",
        closest_hint(closest)
    )]
    NotFound { query: String, closest: Vec<String> },
    #[error(
        "`{query}` matches several recorded functions ({}); pass the full name, or run \
         `chronicle functions` to list them",
        matches.join(", ")
    )]
    Ambiguous { query: String, matches: Vec<String> },
}

/// Up to five table names, then how many more.
fn list_tables(tables: &[String]) -> String {
    let mut text = tables
        .iter()
        .take(5)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > 5 {
        text.push_str(&format!(" and {} more", tables.len() - 5));
    }
    text
}

fn closest_hint(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!(" (closest: {})", closest.join(", "))
    }
}

/// Resolves a function name given by a user against the recorded names: an exact match, else
/// the one name that ends in `::query` (`process_order` finds `orders::process_order`).
pub fn match_function(query: &str, known: &[String]) -> Result<String, NoSuchFunction> {
    if let Some(exact) = known.iter().find(|name| *name == query) {
        return Ok(exact.clone());
    }
    let suffix = format!("::{query}");
    // C++ names carry their parameter list; a query may leave it out.
    let matches: Vec<String> = known
        .iter()
        .filter(|name| {
            let bare = without_params(name);
            name.ends_with(&suffix) || bare == query || bare.ends_with(&suffix)
        })
        .cloned()
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one match")),
        0 => Err(NoSuchFunction::NotFound {
            query: query.to_owned(),
            closest: closest(query, known),
        }),
        _ => Err(NoSuchFunction::Ambiguous {
            query: query.to_owned(),
            matches,
        }),
    }
}

/// A demangled C++ name without its parameter list and qualifiers:
/// `ns::f(int) const` → `ns::f`. Parentheses inside template arguments are kept.
fn without_params(name: &str) -> &str {
    let mut depth = 0i32;
    for (i, c) in name.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            '(' if depth == 0 && i > 0 => return &name[..i],
            _ => {}
        }
    }
    name
}

/// Up to three known names that look like a misspelling of `query`, best first: compared
/// case-insensitively with the whole name and with its last `::` segment.
fn closest(query: &str, known: &[String]) -> Vec<String> {
    let query = query.to_lowercase();
    let threshold = (query.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &String)> = known
        .iter()
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let last = lower.rsplit("::").next().unwrap_or(&lower);
            let distance = if lower.contains(&query) {
                0
            } else {
                levenshtein(&query, &lower).min(levenshtein(&query, last))
            };
            (distance <= threshold).then_some((distance, name))
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(3)
        .map(|(_, name)| name.clone())
        .collect()
}

/// The `p`th percentile (0–100) of `sorted` by the nearest-rank method: the smallest value
/// that at least `p`% of the values are less than or equal to.
pub(crate) fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    debug_assert!(sorted.is_sorted());
    let rank = percentile_rank(sorted.len() as u64, p)?;
    Some(sorted[rank as usize - 1])
}

/// The 1-based nearest rank of percentile `p` among `n` sorted values.
pub(crate) fn percentile_rank(n: u64, p: u32) -> Option<u64> {
    (n > 0).then(|| (n * u64::from(p)).div_ceil(100).max(1))
}

/// An outcome group from its stored columns.
pub(crate) fn outcome_group(
    status: &str,
    ret: Option<&str>,
    count: u64,
    example_id: i64,
) -> Result<OutcomeGroup, StorageError> {
    let (status, ret) = stored_outcome(status, ret, example_id)?;
    Ok(OutcomeGroup {
        status,
        ret,
        count,
        example_id,
    })
}

fn stored_outcome(
    status: &str,
    ret: Option<&str>,
    id: i64,
) -> Result<(Status, Option<crate::Value>), StorageError> {
    let corrupt = |column| move |source| StorageError::Corrupt { id, column, source };
    let parsed = Status::parse(status).ok_or_else(|| {
        corrupt("status")(DecodeError::Unexpected {
            expected: "ok, error or unwound",
            found: status.to_owned(),
        })
    })?;
    let ret = ret
        .map(codec::decode_value)
        .transpose()
        .map_err(corrupt("ret"))?;
    Ok((parsed, ret))
}

/// A changed output from its stored columns: the arguments, then `(status, ret, id)` of
/// each side.
pub(crate) fn changed_output(
    args: &str,
    before: (String, Option<String>, i64),
    after: (String, Option<String>, i64),
) -> Result<ChangedOutput, StorageError> {
    let id = after.2;
    let args = codec::decode_fields(args).map_err(|source| StorageError::Corrupt {
        id,
        column: "args",
        source,
    })?;
    let (s1, r1) = stored_outcome(&before.0, before.1.as_deref(), before.2)?;
    let (s2, r2) = stored_outcome(&after.0, after.1.as_deref(), after.2)?;
    Ok(ChangedOutput {
        args,
        before: (s1, r1, before.2),
        after: (s2, r2, after.2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[1, 2], 50), Some(1));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 99), Some(4));
        assert_eq!(percentile(&[1, 2, 3, 4], 0), Some(1));
        assert_eq!(percentile(&[1, 2, 3, 4], 100), Some(4));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 99), Some(99));
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99), Some(990));
        assert_eq!(percentile(&thousand, 50), Some(500));
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[track_caller]
    fn check(query: &str, known: &[&str], expect: Result<&str, &str>) {
        let got = match_function(query, &names(known)).map_err(|error| error.to_string());
        assert_eq!(got.as_deref().map_err(String::as_str), expect);
    }

    #[test]
    fn cpp_names_match_without_their_parameters() {
        let known = [
            "shop::Cart::total(int) const",
            "shop::area(shop::Point const&)",
            "shop::area(int, int)",
            "std::vector<std::function<void (int)>>::size() const",
        ];
        check(
            "shop::Cart::total",
            &known,
            Ok("shop::Cart::total(int) const"),
        );
        check("total", &known, Ok("shop::Cart::total(int) const"));
        check("shop::area(int, int)", &known, Ok("shop::area(int, int)"));
        check(
            "std::vector<std::function<void (int)>>::size",
            &known,
            Ok("std::vector<std::function<void (int)>>::size() const"),
        );
        check(
            "area",
            &known,
            Err(
                "`area` matches several recorded functions (shop::area(shop::Point const&), \
                 shop::area(int, int)); pass the full name, or run `chronicle functions` to \
                 list them",
            ),
        );
    }

    #[test]
    fn matches_function_names() {
        let known = [
            "orders::process_order",
            "orders::validate",
            "payments::validate",
            "process_order_batch",
            "main",
        ];
        check("main", &known, Ok("main"));
        check("orders::process_order", &known, Ok("orders::process_order"));
        check("process_order", &known, Ok("orders::process_order"));
        check("orders::validate", &known, Ok("orders::validate"));
        check(
            "validate",
            &known,
            Err(
                "`validate` matches several recorded functions (orders::validate, \
                 payments::validate); pass the full name, or run `chronicle functions` to \
                 list them",
            ),
        );
        check(
            "proces_order",
            &known,
            Err(
                "no function named `proces_order` has been recorded (closest: \
                 orders::process_order); run `chronicle functions` to list the recorded \
                 functions",
            ),
        );
        check(
            "Main",
            &known,
            Err(
                "no function named `Main` has been recorded (closest: main); run \
                 `chronicle functions` to list the recorded functions",
            ),
        );
        check(
            "rs::validate",
            &known,
            Err(
                "no function named `rs::validate` has been recorded (closest: \
                 orders::validate, payments::validate); run `chronicle functions` to list \
                 the recorded functions",
            ),
        );
        check(
            "zzz",
            &known,
            Err(
                "no function named `zzz` has been recorded; run `chronicle functions` to \
                 list the recorded functions",
            ),
        );
        check(
            "main",
            &[],
            Err(
                "no function named `main` has been recorded; run `chronicle functions` to \
                 list the recorded functions",
            ),
        );
        // Only whole `::` segments match, but a substring is offered as the closest name.
        assert_eq!(
            match_function("der", &names(&["orders::process_order"])),
            Err(NoSuchFunction::NotFound {
                query: "der".into(),
                closest: names(&["orders::process_order"])
            })
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("µs", "us"), 1);
    }
}
