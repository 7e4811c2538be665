//! The embedded default store: one SQLite file in WAL mode.
//!
//! WAL lets `chronicle functions` or the dashboard read while an agent writes;
//! `synchronous=NORMAL` is durable across application crashes (a power loss may lose the
//! last transactions, never corrupt the file), which is the right trade for recordings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params,
    params_from_iter,
};

use super::codec::{EncodedRecord, StoredRecord};
use super::{
    CallStats, ChangedOutput, FunctionSummary, OutcomeGroup, RecordOrder, RecordQuery, Storage,
    StorageError, changed_output, outcome_group, percentile_rank,
};
use crate::limits::Alert;
use crate::record::{CallRecord, Status};
use crate::time;
use std::time::SystemTime;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
/// Never edit one that has landed: append a new file.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_after_values.sql"),
    include_str!("../../migrations/sqlite/0003_alerts.sql"),
    include_str!("../../migrations/sqlite/0004_analysis_indexes.sql"),
    include_str!("../../migrations/sqlite/0005_dependencies.sql"),
    include_str!("../../migrations/sqlite/0006_function_summary.sql"),
];

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const INSERT: &str = "INSERT INTO records \
    (function, binary, build_id, pid, tid, timestamp_ns, duration_ns, status, args, ret, \
     unavailable, replayable, after_values, dependencies) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

const SELECT: &str = "SELECT id, function, binary, build_id, pid, tid, timestamp_ns, \
    duration_ns, status, args, ret, unavailable, after_values, dependencies FROM records";

/// Creates the empty file a new database goes into, readable and writable by its owner only
/// (mode 0600); fails with `AlreadyExists` when there is one. [`SqliteStorage::open`] uses
/// it; a caller that must give the file to someone else first (the CLI under sudo) too.
#[cfg(unix)]
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A SQLite file holding call records.
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStorage {
    /// Opens the database at `path`, creating it (but not its directory) when missing, and
    /// brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        // Only a directory that is really absent (or not a directory) is "missing"; one we may
        // not enter is left to the open below, whose error names the path.
        if let Some(directory) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
            && match std::fs::metadata(directory) {
                Ok(meta) => !meta.is_dir(),
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            }
        {
            return Err(StorageError::MissingDirectory {
                path: path.to_owned(),
                directory: directory.to_owned(),
            });
        }
        // Records hold arguments and return values: a new database is for its owner only.
        // SQLite gives its WAL and shared-memory files the database file's mode (and, when
        // it runs as root, its owner).
        #[cfg(unix)]
        {
            if let Err(source) = create_private_file(path)
                && source.kind() != std::io::ErrorKind::AlreadyExists
            {
                if not_writable(&source) {
                    return Err(StorageError::ReadOnly {
                        path: path.to_owned(),
                        reason: source.to_string(),
                    });
                }
                return Err(StorageError::Create {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        Self::open_with(path, OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// Opens the database at `path` only if it exists: for readers, which must not leave an
    /// empty database behind when given a wrong path.
    pub fn open_existing(path: &Path) -> Result<Self, StorageError> {
        if !path.exists() {
            return Err(StorageError::NotFound {
                path: path.to_owned(),
            });
        }
        Self::open_with(path, OpenFlags::empty())
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens for reading and writing. A store SQLite cannot open that way because the file
    /// or its file system is read-only is opened read-only and unchanged (`immutable`) for a
    /// reader (`create` empty), and refused with [`StorageError::ReadOnly`] for a writer.
    fn open_with(path: &Path, create: OpenFlags) -> Result<Self, StorageError> {
        let writer = !create.is_empty();
        let opened = Self::open_read_write(path, create);
        let refused = match &opened {
            // A WAL store on a read-only file system cannot even be read this way: SQLite
            // must create its shared-memory file.
            Err(StorageError::Open { source, .. })
                if source.sqlite_error_code() == Some(ErrorCode::CannotOpen) =>
            {
                write_refused(path)
            }
            // SQLite opened it read-only by itself (the file is not writable).
            Ok(storage)
                if writer && storage.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) =>
            {
                Some(write_refused(path).unwrap_or_else(|| "the file is read-only".into()))
            }
            _ => None,
        };
        match refused {
            Some(reason) if writer => Err(StorageError::ReadOnly {
                path: path.to_owned(),
                reason,
            }),
            Some(_) if opened.is_err() => Self::open_immutable(path),
            _ => opened,
        }
    }

    /// A reader's view of a store that cannot be written: SQLite is told the file will not
    /// change (`immutable=1`), so it needs no lock or shared-memory file beside it.
    fn open_immutable(path: &Path) -> Result<Self, StorageError> {
        let open_error = |source: rusqlite::Error| StorageError::Open {
            path: path.to_owned(),
            source,
        };
        // An immutable reader ignores the write-ahead log: calls still in it would be missing.
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        if std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
            return Err(StorageError::UnmergedLog {
                path: path.to_owned(),
            });
        }
        let uri = format!("file:{}?immutable=1", uri_path(path));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(uri, flags).map_err(open_error)?;
        refuse_foreign(&conn, path, open_error)?;
        let supported = u32::try_from(MIGRATIONS.len()).expect("a few migrations");
        let found = user_version(&conn).map_err(open_error)?;
        let path = path.to_owned();
        if found > supported {
            return Err(StorageError::NewerSchema {
                path,
                found,
                supported,
            });
        }
        if found < supported {
            return Err(StorageError::ReadOnlyOutdated {
                path,
                found,
                supported,
            });
        }
        conn.pragma_update(None, "cache_size", -8192)
            .map_err(sqlite("setting the cache size"))?;
        Ok(SqliteStorage { conn, path })
    }

    fn open_read_write(path: &Path, create: OpenFlags) -> Result<Self, StorageError> {
        // Without SQLITE_OPEN_URI, so that a file named `file:x` is just a file.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | create;
        let open_error = |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => StorageError::NotADatabase {
                path: path.to_owned(),
            },
            Some(ErrorCode::CannotOpen) if !path.exists() => StorageError::NotFound {
                path: path.to_owned(),
            },
            _ => StorageError::Open {
                path: path.to_owned(),
                source,
            },
        };
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        // The first statement that reads the file: a file that is not a database fails here.
        // Nothing is written before we know the file is ours: setting WAL mode rewrites the
        // header, and migrations would add tables to another program's database.
        refuse_foreign(&conn, path, open_error)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        // 8 MiB of page cache (the default is 2 MiB): inserts touch five B-trees (the table
        // and its four indexes) whose interior pages then stay in memory. 64 MiB helped the
        // store benchmark by a few percent, and cost the agent its footprint.
        conn.pragma_update(None, "cache_size", -8192)
            .map_err(open_error)?;
        migrate(&mut conn, path)?;
        Ok(SqliteStorage {
            conn,
            path: path.to_owned(),
        })
    }

    /// Reads every page (`PRAGMA quick_check`): a store whose pages are damaged would take
    /// records and then fail to write them. Costs a read of the whole file.
    pub fn check_integrity(&self) -> Result<(), StorageError> {
        let damaged = |detail: String| StorageError::Damaged {
            path: self.path.clone(),
            detail,
        };
        let result: String = self
            .conn
            .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
            .map_err(|e| damaged(e.to_string()))?;
        if result == "ok" {
            return Ok(());
        }
        // `*** in database main ***` heads the list of problems.
        let problems: Vec<&str> = result
            .lines()
            .filter(|line| !line.starts_with("***"))
            .collect();
        Err(damaged(problems.join("; ")))
    }

    /// The schema version: how many migrations have been applied.
    pub fn schema_version(&self) -> Result<u32, StorageError> {
        user_version(&self.conn).map_err(sqlite("reading the schema version"))
    }
}

/// Adds a batch of inserted records to `function_totals` and `function_builds` (migration
/// 0006), in the insert's transaction: one statement per function and per build.
fn add_to_summaries(
    tx: &rusqlite::Transaction<'_>,
    records: &[CallRecord],
) -> rusqlite::Result<()> {
    use std::collections::BTreeMap;
    let mut totals: BTreeMap<&str, [i64; 4]> = BTreeMap::new();
    let mut builds: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    for r in records {
        let [calls, errors, unwound, timed] = totals.entry(&r.function).or_default();
        *calls += 1;
        *errors += i64::from(r.status == Status::Error);
        *unwound += i64::from(r.status == Status::Unwound);
        *timed += i64::from(r.status != Status::Unwound && r.duration_ns.is_some());
        *builds
            .entry((&r.function, &r.build_id, &r.binary))
            .or_default() += 1;
    }
    let mut add_totals = tx.prepare_cached(
        "INSERT INTO function_totals VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (function) DO UPDATE SET calls = calls + excluded.calls, \
         errors = errors + excluded.errors, unwound = unwound + excluded.unwound, \
         timed = timed + excluded.timed",
    )?;
    for (function, [calls, errors, unwound, timed]) in totals {
        add_totals.execute(params![function, calls, errors, unwound, timed])?;
    }
    let mut add_builds = tx.prepare_cached(
        "INSERT INTO function_builds VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (function, build_id, binary) DO UPDATE SET calls = calls + excluded.calls",
    )?;
    for ((function, build_id, binary), calls) in builds {
        add_builds.execute(params![function, build_id, binary, calls])?;
    }
    Ok(())
}

impl SqliteStorage {
    /// At most `limit` records that `filter` selects, in `order`.
    fn select(
        &self,
        filter: &str,
        mut values: Vec<SqlValue>,
        order: &str,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StorageError> {
        let read = sqlite("reading records");
        let sql = format!("{SELECT}{filter} ORDER BY {order} LIMIT ?");
        // A negative LIMIT means no limit in SQLite.
        values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(-1)));
        let mut select = self.conn.prepare_cached(&sql).map_err(&read)?;
        let mut rows = select.query(params_from_iter(values)).map_err(&read)?;
        let mut records = Vec::new();
        while let Some(row) = rows.next().map_err(&read)? {
            records.push(decode_row(row)?);
        }
        Ok(records)
    }

    /// The counts of every call of `function` (its row of `function_totals`) and its first
    /// and last instants (the ends of the timestamp index), without percentiles; and how many
    /// of its calls returned with a duration. `None` when none is stored.
    fn function_totals(&self, function: &str) -> rusqlite::Result<Option<(CallStats, u64)>> {
        let totals = self
            .conn
            .prepare_cached(
                "SELECT calls, errors, unwound, timed FROM function_totals WHERE function = ?1",
            )?
            .query_row([function], |row| {
                Ok((
                    CallStats {
                        calls: non_negative(row, 0)?,
                        errors: non_negative(row, 1)?,
                        unwound: non_negative(row, 2)?,
                        ..CallStats::default()
                    },
                    non_negative(row, 3)?,
                ))
            })
            .optional()?;
        let Some((mut stats, timed)) = totals else {
            return Ok(None);
        };
        // MIN and MAX apart: SQLite answers each alone from an end of the index.
        let bound = |aggregate: &str| {
            self.conn
                .prepare_cached(&format!(
                    "SELECT {aggregate}(timestamp_ns) FROM records WHERE function = ?1"
                ))?
                .query_row([function], |row| row.get::<_, Option<i64>>(0))
        };
        stats.first_seen = bound("MIN")?.map(time::from_unix_nanos);
        stats.last_seen = bound("MAX")?.map(time::from_unix_nanos);
        Ok(Some((stats, timed)))
    }

    /// Percentiles `ps` of the durations of `function`'s calls that returned, `timed` of them,
    /// each one walk of the duration index: only those asked for are read.
    fn returned_percentiles<const N: usize>(
        &self,
        function: &str,
        timed: u64,
        ps: [u32; N],
    ) -> rusqlite::Result<[Option<u64>; N]> {
        let of_function = [SqlValue::Text(function.to_owned())];
        let ranked = DurationRanks {
            conn: &self.conn,
            filter: RETURNED_CALLS_OF_FUNCTION,
            values: &of_function,
            n: timed,
        };
        let mut values = [None; N];
        for (value, p) in values.iter_mut().zip(ps) {
            *value = ranked.percentile(p)?;
        }
        Ok(values)
    }

    /// The `(build ID, binary)` pairs `function` was recorded from (`function_builds`), in
    /// the order of their earliest call; ties go to the lowest record id at that instant.
    fn builds_in_order(&self, function: &str) -> rusqlite::Result<Vec<(String, String)>> {
        let mut builds = self
            .conn
            .prepare_cached("SELECT build_id, binary FROM function_builds WHERE function = ?1")?;
        // Both from the end of `records_function_build`, whose entries carry the rowid.
        let mut first = self.conn.prepare_cached(
            "SELECT timestamp_ns, MIN(id) FROM records \
             WHERE function = ?1 AND build_id = ?2 AND binary = ?3 AND timestamp_ns = \
             (SELECT MIN(timestamp_ns) FROM records \
              WHERE function = ?1 AND build_id = ?2 AND binary = ?3)",
        )?;
        let mut ordered = Vec::new();
        for pair in builds.query_map([function], |row| Ok((row.get(0)?, row.get(1)?)))? {
            let (build_id, binary): (String, String) = pair?;
            let key: (Option<i64>, Option<i64>) = first
                .query_row([function, &build_id, &binary], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            ordered.push((key, build_id, binary));
        }
        ordered.sort();
        Ok(ordered
            .into_iter()
            .map(|(_, build_id, binary)| (build_id, binary))
            .collect())
    }
}

/// Why `path`, which exists, cannot be opened for writing (a read-only file system, no
/// permission); `None` when it can.
fn write_refused(path: &Path) -> Option<String> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Err(e) if not_writable(&e) => Some(e.to_string()),
        _ => None,
    }
}

fn not_writable(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

/// `path` as the path of a `file:` URI: bytes other than unreserved ones and `/` escaped.
fn uri_path(path: &Path) -> String {
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    let mut uri = String::new();
    for &byte in &bytes {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

/// Refuses a database that has tables but is not a chronicle store (`ForeignDatabase`);
/// reading fails with `open_error`'s error.
fn refuse_foreign(
    conn: &Connection,
    path: &Path,
    open_error: impl Fn(rusqlite::Error) -> StorageError,
) -> Result<(), StorageError> {
    let tables = table_names(conn).map_err(&open_error)?;
    if !tables.is_empty() && !is_chronicle_store(conn).map_err(&open_error)? {
        return Err(StorageError::ForeignDatabase {
            path: path.to_owned(),
            tables,
        });
    }
    Ok(())
}

/// The tables of a database, by name.
fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement =
        conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?;
    let names = statement.query_map([], |row| row.get(0))?;
    names.collect()
}

/// Whether a database that has tables is a Chronicle store: its `records` table has the
/// columns every schema version has had.
fn is_chronicle_store(conn: &Connection) -> rusqlite::Result<bool> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('records')")?;
    let columns: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(["function", "binary", "build_id", "args", "timestamp_ns"]
        .iter()
        .all(|c| columns.iter().any(|have| have == c)))
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    let supported = u32::try_from(MIGRATIONS.len()).expect("a few migrations");
    let open_error = |source| StorageError::Open {
        path: path.to_owned(),
        source,
    };
    if user_version(conn).map_err(open_error)? == supported {
        return Ok(());
    }
    // IMMEDIATE takes the write lock before reading the version again, so two processes
    // opening a new file at once do not both apply the same migration.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error)?;
    let found = user_version(&tx).map_err(open_error)?;
    if found > supported {
        return Err(StorageError::NewerSchema {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found as usize) {
        let migration_error = |source| StorageError::Migration {
            path: path.to_owned(),
            version,
            source,
        };
        tx.execute_batch(sql).map_err(migration_error)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migration_error)?;
    }
    tx.commit().map_err(open_error)
}

/// An integer column that holds a `u64` below 2^63 (rusqlite reads `u64` only with its
/// `fallible_uint` feature).
fn non_negative(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(index)?;
    u64::try_from(n).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Integer,
            Box::new(e),
        )
    })
}

fn sqlite(operation: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |source| StorageError::Sqlite { operation, source }
}

/// ` WHERE ...` (or nothing) selecting what `query` asks for, and its parameters.
fn filter(query: &RecordQuery) -> (String, Vec<SqlValue>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(function) = &query.function {
        conditions.push("function = ?");
        values.push(SqlValue::Text(function.clone()));
    }
    if let Some(status) = query.status {
        conditions.push("status = ?");
        values.push(SqlValue::Text(status.as_str().to_owned()));
    }
    if let Some(build_id) = &query.build_id {
        conditions.push("build_id = ?");
        values.push(SqlValue::Text(build_id.clone()));
    }
    // An instant beyond what the store can hold is before or after every record.
    let nanos = |t: SystemTime| {
        time::to_unix_nanos(t).unwrap_or(if t < std::time::UNIX_EPOCH {
            i64::MIN
        } else {
            i64::MAX
        })
    };
    if let Some(since) = query.since {
        conditions.push("timestamp_ns >= ?");
        values.push(SqlValue::Integer(nanos(since)));
    }
    if let Some(until) = query.until {
        conditions.push("timestamp_ns < ?");
        values.push(SqlValue::Integer(nanos(until)));
    }
    if conditions.is_empty() {
        return (String::new(), values);
    }
    (format!(" WHERE {}", conditions.join(" AND ")), values)
}

fn decode_row(row: &rusqlite::Row<'_>) -> Result<CallRecord, StorageError> {
    let read = sqlite("reading records");
    StoredRecord {
        id: row.get(0).map_err(&read)?,
        function: row.get(1).map_err(&read)?,
        binary: row.get(2).map_err(&read)?,
        build_id: row.get(3).map_err(&read)?,
        pid: row.get(4).map_err(&read)?,
        tid: row.get(5).map_err(&read)?,
        timestamp_ns: row.get(6).map_err(&read)?,
        duration_ns: row.get(7).map_err(&read)?,
        status: row.get(8).map_err(&read)?,
        args: row.get(9).map_err(&read)?,
        ret: row.get(10).map_err(&read)?,
        unavailable: row.get(11).map_err(&read)?,
        after: row.get(12).map_err(&read)?,
        dependencies: row.get(13).map_err(&read)?,
    }
    .decode()
}

impl Storage for SqliteStorage {
    fn insert(&mut self, records: &mut [CallRecord]) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let write = sqlite("inserting records");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&write)?;
        let mut ids = Vec::with_capacity(records.len());
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(&write)?;
            for record in records.iter() {
                let row = EncodedRecord::encode(record)?;
                insert
                    .execute(params![
                        record.function,
                        record.binary,
                        record.build_id,
                        record.pid,
                        record.tid,
                        row.timestamp_ns,
                        row.duration_ns,
                        record.status.as_str(),
                        row.args,
                        row.ret,
                        row.unavailable,
                        record.replayable(),
                        row.after,
                        row.dependencies,
                    ])
                    .map_err(&write)?;
                ids.push(tx.last_insert_rowid());
            }
        }
        add_to_summaries(&tx, records).map_err(&write)?;
        tx.commit().map_err(&write)?;
        // Only now: a failed transaction must not leave ids on records that were not stored.
        for (record, id) in records.iter_mut().zip(ids) {
            record.id = Some(id);
        }
        Ok(())
    }

    fn functions(&self) -> Result<Vec<FunctionSummary>, StorageError> {
        // Counts and builds from the summary tables of migration 0006 (kept by `insert` and a
        // delete trigger); the first and last instants and the percentiles from the indexes.
        let read = sqlite("summarizing functions");
        let mut totals = self
            .conn
            .prepare_cached("SELECT function FROM function_totals ORDER BY function")
            .map_err(&read)?;
        let functions = totals
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(&read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&read)?;
        let mut summaries = Vec::with_capacity(functions.len());
        for function in functions {
            let Some((stats, timed)) = self.function_totals(&function).map_err(&read)? else {
                continue;
            };
            let (Some(first_seen), Some(last_seen)) = (stats.first_seen, stats.last_seen) else {
                continue;
            };
            // The list shows p50 and p99 only: the p90 and maximum walks are not made.
            let [p50_ns, p99_ns] = self
                .returned_percentiles(&function, timed, [50, 99])
                .map_err(&read)?;
            let mut build_ids = Vec::new();
            let mut binaries = Vec::new();
            for (build_id, binary) in self.builds_in_order(&function).map_err(&read)? {
                if !build_id.is_empty() && !build_ids.contains(&build_id) {
                    build_ids.push(build_id);
                }
                if !binaries.contains(&binary) {
                    binaries.push(binary);
                }
            }
            summaries.push(FunctionSummary {
                function,
                calls: stats.calls,
                errors: stats.errors,
                unwound: stats.unwound,
                p50_ns,
                p99_ns,
                first_seen,
                last_seen,
                build_ids,
                binaries,
            });
        }
        Ok(summaries)
    }

    fn records(&self, query: &RecordQuery) -> Result<Vec<CallRecord>, StorageError> {
        let (filter, values) = filter(query);
        let limit = query.limit.unwrap_or(usize::MAX);
        match query.order {
            RecordOrder::Oldest => self.select(&filter, values, "timestamp_ns, id", limit),
            RecordOrder::Newest => {
                self.select(&filter, values, "timestamp_ns DESC, id DESC", limit)
            }
            // Calls with a duration, then those without, in two statements: each walks the
            // duration index in order (one ORDER BY `duration_ns IS NULL, ...` sorted every
            // call in scope to keep the first few: 84 ms instead of 1 for 125 000 calls).
            RecordOrder::Slowest => {
                let and = if filter.is_empty() { " WHERE" } else { " AND" };
                let returned = format!("{filter}{and} duration_ns IS NOT NULL");
                let mut records =
                    self.select(&returned, values.clone(), "duration_ns DESC, id", limit)?;
                if records.len() < limit {
                    let running = format!("{filter}{and} duration_ns IS NULL");
                    let rest = limit - records.len();
                    records.extend(self.select(&running, values, "id", rest)?);
                }
                Ok(records)
            }
        }
    }

    fn call_stats(&self, query: &RecordQuery) -> Result<CallStats, StorageError> {
        let read = sqlite("summarizing calls");
        if let RecordQuery {
            function: Some(function),
            status: None,
            since: None,
            until: None,
            build_id: None,
            ..
        } = query
        {
            let Some((mut stats, timed)) = self.function_totals(function).map_err(&read)? else {
                return Ok(CallStats::default());
            };
            [stats.p50_ns, stats.p90_ns, stats.p99_ns, stats.max_ns] = self
                .returned_percentiles(function, timed, [50, 90, 99, 100])
                .map_err(read)?;
            return Ok(stats);
        }
        let (filter, values) = filter(query);
        // Each statement reads one covering index (see migration 0004), not the records.
        let mut stats = CallStats::default();
        // Calls, durations and first and last instants by status in one pass over the
        // duration index (the planner would take the outcome index, which lacks the
        // durations, and read every record). The pass reads every entry in scope anyway;
        // MIN and MAX on their own took 380 ms for a build's calls: no index has the build
        // right before the instant.
        let source = if query.function.is_some() {
            "records INDEXED BY records_function_duration"
        } else {
            "records"
        };
        let by_status = format!(
            "SELECT status, COUNT(*), COUNT(duration_ns), MIN(timestamp_ns), MAX(timestamp_ns) \
             FROM {source}{filter} GROUP BY status"
        );
        let mut with_duration = 0;
        let (mut first, mut last) = (None::<i64>, None::<i64>);
        let mut select = self.conn.prepare_cached(&by_status).map_err(&read)?;
        let mut rows = select
            .query(params_from_iter(values.iter()))
            .map_err(&read)?;
        while let Some(row) = rows.next().map_err(&read)? {
            let status: String = row.get(0).map_err(&read)?;
            let n = non_negative(row, 1).map_err(&read)?;
            stats.calls += n;
            if status != "unwound" {
                with_duration += non_negative(row, 2).map_err(&read)?;
            }
            match status.as_str() {
                "error" => stats.errors += n,
                "unwound" => stats.unwound += n,
                _ => {}
            }
            let (min, max): (i64, i64) = (row.get(3).map_err(&read)?, row.get(4).map_err(&read)?);
            first = Some(first.map_or(min, |f| f.min(min)));
            last = Some(last.map_or(max, |l| l.max(max)));
        }
        stats.first_seen = first.map(time::from_unix_nanos);
        stats.last_seen = last.map(time::from_unix_nanos);
        let returned = if filter.is_empty() {
            " WHERE duration_ns IS NOT NULL AND status != 'unwound'".to_owned()
        } else {
            format!("{filter} AND duration_ns IS NOT NULL AND status != 'unwound'")
        };
        let ranked = DurationRanks {
            conn: &self.conn,
            filter: &returned,
            values: &values,
            n: with_duration,
        };
        stats.p50_ns = ranked.percentile(50).map_err(&read)?;
        stats.p90_ns = ranked.percentile(90).map_err(&read)?;
        stats.p99_ns = ranked.percentile(99).map_err(&read)?;
        stats.max_ns = ranked.percentile(100).map_err(&read)?;
        Ok(stats)
    }

    fn outcomes(
        &self,
        query: &RecordQuery,
        limit: usize,
    ) -> Result<Vec<OutcomeGroup>, StorageError> {
        let read = sqlite("grouping outcomes");
        let (filter, mut values) = filter(query);
        values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let groups = format!(
            "SELECT status, ret, COUNT(*), MAX(id) FROM records{filter} \
             GROUP BY status, ret ORDER BY COUNT(*) DESC, MAX(id) DESC LIMIT ?"
        );
        let mut select = self.conn.prepare_cached(&groups).map_err(&read)?;
        let rows = select
            .query_map(params_from_iter(values), |row| {
                Ok((row.get(0)?, row.get(1)?, non_negative(row, 2)?, row.get(3)?))
            })
            .map_err(&read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&read)?;
        rows.into_iter()
            .map(
                |(status, ret, count, id): (String, Option<String>, u64, i64)| {
                    outcome_group(&status, ret.as_deref(), count, id)
                },
            )
            .collect()
    }

    fn build_ids(&self, function: &str) -> Result<Vec<String>, StorageError> {
        let builds = self
            .builds_in_order(function)
            .map_err(sqlite("listing builds"))?;
        let mut build_ids: Vec<String> = Vec::new();
        for (build_id, _) in builds {
            if !build_ids.contains(&build_id) {
                build_ids.push(build_id);
            }
        }
        Ok(build_ids)
    }

    fn call_volume(
        &self,
        query: &RecordQuery,
        bucket: Duration,
    ) -> Result<Vec<(SystemTime, u64)>, StorageError> {
        let read = sqlite("counting calls over time");
        let (filter, mut values) = filter(query);
        let width = i64::try_from(bucket.as_nanos()).unwrap_or(i64::MAX).max(1);
        let sql = format!(
            "SELECT (timestamp_ns / ?) * ? AS bucket, COUNT(*) FROM records{filter} \
             GROUP BY bucket ORDER BY bucket"
        );
        values.insert(0, SqlValue::Integer(width));
        values.insert(0, SqlValue::Integer(width));
        let mut select = self.conn.prepare_cached(&sql).map_err(&read)?;
        let rows = select
            .query_map(params_from_iter(values), |row| {
                Ok((time::from_unix_nanos(row.get(0)?), non_negative(row, 1)?))
            })
            .map_err(&read)?;
        rows.collect::<Result<_, _>>().map_err(read)
    }

    fn changed_outputs(
        &self,
        before: &RecordQuery,
        after: &RecordQuery,
        limit: usize,
    ) -> Result<Vec<ChangedOutput>, StorageError> {
        let read = sqlite("comparing outcomes");
        let (a, mut values) = filter(before);
        let (b, b_values) = filter(after);
        values.extend(b_values);
        values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = super::changed_outputs_sql(&a, &b, "?");
        let mut select = self.conn.prepare_cached(&sql).map_err(&read)?;
        let rows = select
            .query_map(params_from_iter(values), |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    (
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get(3)?,
                    ),
                    (
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get(6)?,
                    ),
                ))
            })
            .map_err(&read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&read)?;
        rows.into_iter()
            .map(|(args, before, after)| changed_output(&args, before, after))
            .collect()
    }

    fn function_names(&self) -> Result<Vec<String>, StorageError> {
        let read = sqlite("listing functions");
        let mut select = self
            .conn
            .prepare_cached(super::DISTINCT_FUNCTIONS)
            .map_err(&read)?;
        select
            .query_map([], |row| row.get(0))
            .map_err(&read)?
            .collect::<Result<_, _>>()
            .map_err(&read)
    }

    fn insert_alerts(&mut self, alerts: &[Alert]) -> Result<(), StorageError> {
        let write = sqlite("inserting alerts");
        let tx = self.conn.transaction().map_err(&write)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO alerts (timestamp_ns, function, kind, key, limit_value, message) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&write)?;
            for a in alerts {
                insert
                    .execute(params![
                        time::to_unix_nanos(a.timestamp).unwrap_or(0),
                        a.function,
                        a.kind.as_str(),
                        a.key,
                        i64::try_from(a.limit).unwrap_or(i64::MAX),
                        a.message,
                    ])
                    .map_err(&write)?;
            }
        }
        tx.commit().map_err(&write)
    }

    fn alerts(&self) -> Result<Vec<Alert>, StorageError> {
        let read = sqlite("reading alerts");
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT timestamp_ns, function, kind, key, limit_value, message FROM alerts \
                 ORDER BY id",
            )
            .map_err(&read)?;
        let rows = select
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })
            .map_err(&read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&read)?;
        Ok(rows.into_iter().map(super::alert_from_row).collect())
    }

    fn delete_before(&mut self, cutoff: SystemTime) -> Result<u64, StorageError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM records WHERE timestamp_ns < ?1",
                params![time::to_unix_nanos(cutoff).unwrap_or(i64::MIN)],
            )
            .map_err(sqlite("deleting old records"))?;
        Ok(n as u64)
    }

    fn keep_newest(&mut self, function: &str, keep: u64) -> Result<u64, StorageError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM records WHERE function = ?1 AND id NOT IN \
                 (SELECT id FROM records WHERE function = ?1 \
                  ORDER BY timestamp_ns DESC, id DESC LIMIT ?2)",
                params![function, i64::try_from(keep).unwrap_or(i64::MAX)],
            )
            .map_err(sqlite("trimming records"))?;
        Ok(n as u64)
    }
}

/// The calls of one function (`?`) that returned with a duration: the ones percentiles rank
/// ([`FunctionSummary::p50_ns`]); `function_totals.timed` counts them.
const RETURNED_CALLS_OF_FUNCTION: &str =
    " WHERE function = ? AND duration_ns IS NOT NULL AND status != 'unwound'";

/// Percentiles of the durations a filter selects, read by rank from the duration index
/// (`records_function_duration`): SQLite steps over the index entries below the rank without
/// returning them, instead of handing every duration to Rust to sort.
struct DurationRanks<'c> {
    conn: &'c Connection,
    filter: &'c str,
    values: &'c [SqlValue],
    n: u64,
}

impl DurationRanks<'_> {
    /// The nearest-rank percentile `p` (100: the maximum); `None` without durations.
    fn percentile(&self, p: u32) -> rusqlite::Result<Option<u64>> {
        let Some(rank) = percentile_rank(self.n, p) else {
            return Ok(None);
        };
        // Walk from whichever end is nearer.
        let (order, offset) = if rank * 2 <= self.n {
            ("", rank - 1)
        } else {
            (" DESC", self.n - rank)
        };
        let sql = format!(
            "SELECT duration_ns FROM records{} ORDER BY duration_ns{order} LIMIT 1 OFFSET ?",
            self.filter
        );
        let mut values = self.values.to_vec();
        values.push(SqlValue::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
        self.conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(values), |row| non_negative(row, 0))
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    #[test]
    fn story() {
        let dir = TempDir::new();
        let mut storage = SqliteStorage::open(&dir.path().join("chronicle.db")).unwrap();
        super::super::story::story(&mut storage);
    }

    #[test]
    fn summary_story() {
        let dir = TempDir::new();
        let mut storage = SqliteStorage::open(&dir.path().join("chronicle.db")).unwrap();
        super::super::story::summary_story(&mut storage);
    }

    #[test]
    fn persists_and_migrates_once() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        let mut records = vec![crate::storage::story::record("f", 1, 10)];
        {
            let mut storage = SqliteStorage::open(&path).unwrap();
            assert_eq!(storage.schema_version().unwrap(), MIGRATIONS.len() as u32);
            storage.insert(&mut records).unwrap();
        }
        let storage = SqliteStorage::open_existing(&path).unwrap();
        assert_eq!(storage.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert_eq!(storage.path(), path);
        assert_eq!(storage.records(&RecordQuery::default()).unwrap(), records);
        let mode: String = storage
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let synchronous: i64 = storage
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(synchronous, 1, "NORMAL");
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_is_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        let mut storage = SqliteStorage::open(&path).unwrap();
        storage
            .insert(&mut [crate::storage::story::record("f", 1, 10)])
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("chronicle.db-wal")), 0o600);
        assert_eq!(mode(&dir.path().join("chronicle.db-shm")), 0o600);
        // An existing file keeps the mode its owner gave it.
        drop(storage);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        SqliteStorage::open(&path).unwrap();
        assert_eq!(mode(&path), 0o640);
    }

    #[test]
    fn missing_directory() {
        let dir = TempDir::new();
        let path = dir.path().join("nope").join("chronicle.db");
        let error = SqliteStorage::open(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot create database {}: directory {} does not exist; create it or choose \
                 another path",
                path.display(),
                dir.path().join("nope").display()
            )
        );
        assert!(!dir.path().join("nope").exists());
    }

    #[test]
    fn missing_file_is_not_created_by_readers() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        let error = SqliteStorage::open_existing(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "no database at {}; record some calls first or choose another path",
                path.display()
            )
        );
        assert!(!path.exists());
    }

    #[test]
    fn not_a_database() {
        let dir = TempDir::new();
        let path = dir.path().join("notes.txt");
        std::fs::write(
            &path,
            "these are not the records you are looking for\n".repeat(20),
        )
        .unwrap();
        for error in [
            SqliteStorage::open(&path).unwrap_err(),
            SqliteStorage::open_existing(&path).unwrap_err(),
        ] {
            assert_eq!(
                error.to_string(),
                format!(
                    "{} is not a SQLite database; choose another path or move the file out of \
                     the way",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn another_programs_database_is_refused_and_left_unchanged() {
        let dir = TempDir::new();
        let path = dir.path().join("app.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
                 CREATE TABLE records (id INTEGER PRIMARY KEY, note TEXT);
                 INSERT INTO users (name) VALUES ('alice');",
            )
            .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        for error in [
            SqliteStorage::open(&path).unwrap_err(),
            SqliteStorage::open_existing(&path).unwrap_err(),
        ] {
            assert_eq!(
                error.to_string(),
                format!(
                    "{} is a SQLite database of another program (tables: records, users), not \
                     a chronicle store; it was left unchanged: choose another path",
                    path.display()
                )
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!dir.path().join("app.db-wal").exists());
    }

    #[test]
    fn upgrades_a_version_1_database_keeping_its_records() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO records (function, binary, build_id, pid, tid, timestamp_ns, \
                 duration_ns, status, args, ret, unavailable, replayable) \
                 VALUES ('f', '/bin/f', '', 1, 1, 0, 5, 'ok', '[]', NULL, '[]', 1)",
                [],
            )
            .unwrap();
        }
        let storage = SqliteStorage::open(&path).unwrap();
        assert_eq!(storage.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let records = storage.records(&RecordQuery::default()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].function.as_str(), records[0].after.len()),
            ("f", 0)
        );
    }

    #[test]
    fn upgrading_to_the_summary_tables_counts_the_records_already_stored() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            // Three functions, two builds, every status, equal start times.
            for i in 0..40_i64 {
                let function = ["f", "g", "h"][(i % 3) as usize];
                let (build, binary) = if i % 4 == 0 {
                    ("b1", "/bin/b1")
                } else {
                    ("", "/bin/dev")
                };
                let status = ["ok", "error", "unwound", "ok", "ok"][(i % 5) as usize];
                let duration = (status != "unwound").then_some(i * 7 % 13);
                conn.execute(
                    "INSERT INTO records (function, binary, build_id, pid, tid, timestamp_ns, \
                     duration_ns, status, args, ret, unavailable, replayable) \
                     VALUES (?1, ?2, ?3, 1, 1, ?4, ?5, ?6, '[]', NULL, '[]', 1)",
                    params![function, binary, build, 1000 - i / 2, duration, status],
                )
                .unwrap();
            }
        }
        let mut storage = SqliteStorage::open(&path).unwrap();
        let expected = crate::storage::story::summaries_from_records(&storage);
        assert_eq!(expected.len(), 3);
        assert_eq!(storage.functions().unwrap(), expected);
        storage
            .insert(&mut [crate::storage::story::record("g", -5, 1)])
            .unwrap();
        let expected = crate::storage::story::summaries_from_records(&storage);
        assert_eq!(storage.functions().unwrap(), expected);
    }

    #[test]
    fn uri_paths_escape_what_a_uri_would_read() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/data/a b?c#d%e\xff/x.db"));
        assert_eq!(uri_path(path), "/data/a%20b%3Fc%23d%25e%FF/x.db");
    }

    #[test]
    fn newer_schema() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        drop(SqliteStorage::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        assert_eq!(
            SqliteStorage::open(&path).unwrap_err().to_string(),
            format!(
                "database {} has schema version 7, newer than the {} this chronicle knows; \
                 upgrade chronicle",
                path.display(),
                MIGRATIONS.len()
            )
        );
    }

    #[test]
    fn corrupt_rows_name_the_record() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        let mut storage = SqliteStorage::open(&path).unwrap();
        storage
            .insert(&mut [crate::storage::story::record("f", 1, 10)])
            .unwrap();
        storage
            .conn
            .execute("UPDATE records SET args = '[\"a\", 5]'", [])
            .unwrap();
        let error = storage.records(&RecordQuery::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "record 1 has an unreadable `args` column"
        );
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "expected a tagged value, found `5`"
        );
    }

    #[test]
    fn too_deep_values_are_refused_whole() {
        let dir = TempDir::new();
        let mut storage = SqliteStorage::open(&dir.path().join("chronicle.db")).unwrap();
        let mut deep = crate::Value::Null;
        for _ in 0..super::super::codec::MAX_DEPTH {
            deep = crate::Value::Array(vec![deep]);
        }
        let mut fine = crate::storage::story::record("f", 1, 10);
        let mut bad = crate::storage::story::record("g", 2, 10);
        bad.args.push(("list".into(), deep));
        fine.id = None;
        let mut batch = [fine, bad];
        assert_eq!(
            storage.insert(&mut batch).unwrap_err().to_string(),
            "a call of g has a value `list` nested deeper than 60 levels; it cannot be stored"
        );
        assert_eq!(batch[0].id, None);
        assert_eq!(storage.records(&RecordQuery::default()).unwrap(), vec![]);
    }
}
