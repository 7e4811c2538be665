//! The shared store: one PostgreSQL database that many agents on many hosts write to.
//!
//! Each [`PostgresStorage`] holds one connection (the synchronous `postgres` client), so each
//! writer thread opens its own. A batch goes in as one transaction: ids are taken from the
//! `records` identity sequence first, then the rows are streamed in with binary `COPY`, with
//! no round trip per row. Sequences never give a value twice, so ids are unique across all
//! writers and grow with insertion order within each writer.
//!
//! When the server closes the connection (a restart, an idle timeout), the next call opens a
//! new one. The batch that was in flight fails, and the batch writer counts it; it is not
//! retried, since whether a commit that lost its connection went through cannot be known.
//!
//! The DSN is anything libpq-style the `postgres` crate parses:
//! `postgres://USER:PASSWORD@HOST:PORT/DATABASE` or `host=... user=... dbname=...`. Tables go
//! into the first schema of the connection's `search_path`; to keep several stores in one
//! database, create a schema for each and select it in the DSN
//! (`postgres://.../db?options=-csearch_path%3Dteam_a`). Connections are unencrypted: reach a
//! remote server through a TLS-terminating proxy or an SSH tunnel.

use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::config::Host;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, NoTls};

use super::codec::{EncodedRecord, StoredRecord};
use super::{
    CallStats, ChangedOutput, FunctionSummary, OutcomeGroup, RecordOrder, RecordQuery, Storage,
    StorageError, changed_output, outcome_group, percentile,
};
use crate::limits::Alert;
use crate::record::CallRecord;
use crate::time;

/// Schema migrations, applied in order; `chronicle_schema_version` lists those applied.
/// Never edit one that has landed: append a new file.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_after_values.sql"),
    include_str!("../../migrations/postgres/0003_alerts.sql"),
    include_str!("../../migrations/postgres/0004_analysis_indexes.sql"),
    include_str!("../../migrations/postgres/0005_dependencies.sql"),
];

/// Created by [`migrate`] before the first migration, so that it can be read before any.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS chronicle_schema_version (
    version     INTEGER     PRIMARY KEY,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Key of the advisory lock that serializes migrations: "chronicl" in ASCII.
const MIGRATION_LOCK: i64 = 0x6368_726f_6e69_636c;

/// How long opening waits for the server when the DSN sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const COPY: &str = "COPY records (id, function, \"binary\", build_id, pid, tid, timestamp_ns, \
    duration_ns, status, args, ret, unavailable, replayable, after_values, dependencies) FROM STDIN \
    (FORMAT binary)";

/// Column types of [`COPY`], in order.
const COPY_TYPES: [Type; 15] = [
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
];

const NEXT_IDS: &str =
    "SELECT nextval(pg_get_serial_sequence('records', 'id')) FROM generate_series(1, $1::BIGINT)";

const SELECT: &str = "SELECT id, function, \"binary\", build_id, pid, tid, timestamp_ns, \
    duration_ns, status, args, ret, unavailable, after_values, dependencies FROM records";

/// Why a PostgreSQL store could not be opened or used.
///
/// Messages name the server as `HOST:PORT` and never repeat the password.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "invalid PostgreSQL DSN ({reason}); write it as \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    InvalidDsn {
        /// What the parser objected to; never the DSN itself, which may hold a password.
        reason: String,
        /// The parser's error; its text is `reason`.
        error: postgres::Error,
    },
    /// The server could not be reached, or refused the login or the database.
    #[error(
        "cannot connect to PostgreSQL at {server}: {reason}; check that the server runs and \
         the DSN is right"
    )]
    Connect {
        /// `HOST:PORT (database DB, user USER)`.
        server: String,
        /// The innermost cause, in the server's or the system's words.
        reason: String,
        /// The client's error, kept for programs that look at it; its text is `reason`.
        error: postgres::Error,
    },
    #[error(
        "no chronicle tables in {location}; record some calls into it first, or check the \
         database and search_path in the DSN"
    )]
    NoSchema { location: String },
    #[error(
        "{location} has schema version {found}, newer than the {supported} this chronicle \
         knows; upgrade chronicle"
    )]
    NewerSchema {
        location: String,
        found: u32,
        supported: u32,
    },
    #[error("cannot apply migration {version} to {location}")]
    Migration {
        location: String,
        version: u32,
        #[source]
        source: postgres::Error,
    },
    #[error("PostgreSQL failed while {operation}")]
    Query {
        operation: &'static str,
        #[source]
        source: postgres::Error,
    },
}

/// A PostgreSQL database holding call records.
pub struct PostgresStorage {
    /// In a `RefCell` because the client needs `&mut` even to read; see [`Storage`].
    client: RefCell<Client>,
    /// To reconnect when the server closed the connection (a restart, an idle timeout).
    config: Config,
    location: String,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password.
        f.debug_struct("PostgresStorage")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PostgresStorage {
    /// Connects to the database `dsn` names, creating Chronicle's tables when they are
    /// missing and bringing them up to date.
    pub fn open(dsn: &str) -> Result<Self, StorageError> {
        Self::open_with(dsn, true)
    }

    /// Connects to the database `dsn` names only if Chronicle's tables are there: for
    /// readers, which must not create tables in a database they were wrongly pointed at.
    pub fn open_existing(dsn: &str) -> Result<Self, StorageError> {
        Self::open_with(dsn, false)
    }

    /// Where this store lives, without the password: `postgres://USER@HOST:PORT/DATABASE`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The schema version: how many migrations have been applied.
    pub fn schema_version(&self) -> Result<u32, StorageError> {
        let mut client = self.connection()?;
        Ok(applied(&mut *client)
            .map_err(failed("reading the schema version"))?
            .unwrap_or(0))
    }

    fn open_with(dsn: &str, create: bool) -> Result<Self, StorageError> {
        let config: Config = dsn.parse().map_err(|error| PostgresError::InvalidDsn {
            reason: innermost(&error),
            error,
        })?;
        Self::open_config(config, create)
    }

    fn open_config(mut config: Config, create: bool) -> Result<Self, StorageError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("chronicle");
        }
        let location = location(&config);
        let mut client = connect(&config)?;
        let supported = u32::try_from(MIGRATIONS.len()).expect("a few migrations");
        match applied(&mut client).map_err(failed("reading the schema version"))? {
            Some(found) if found == supported => {}
            Some(found) if found > supported => {
                return Err(PostgresError::NewerSchema {
                    location,
                    found,
                    supported,
                }
                .into());
            }
            None if !create => return Err(PostgresError::NoSchema { location }.into()),
            _ => migrate(&mut client, &location)?,
        }
        Ok(PostgresStorage {
            client: RefCell::new(client),
            config,
            location,
        })
    }

    /// The connection, opened again if the server has closed it.
    fn connection(&self) -> Result<RefMut<'_, Client>, StorageError> {
        let mut client = self.client.borrow_mut();
        if client.is_closed() {
            *client = connect(&self.config)?;
        }
        Ok(client)
    }
}

/// `dsn` as it is safe to print: `postgres://USER@HOST:PORT/DATABASE`, without the password
/// or any other setting; `None` when `dsn` does not parse.
pub fn display_dsn(dsn: &str) -> Option<String> {
    dsn.parse().ok().map(|config| location(&config))
}

fn connect(config: &Config) -> Result<Client, PostgresError> {
    config
        .connect(NoTls)
        .map_err(|error| PostgresError::Connect {
            server: server(config),
            reason: innermost(&error),
            error,
        })
}

/// `HOST:PORT (database DB, user USER)`, for messages about connecting.
fn server(config: &Config) -> String {
    let mut text = hosts(config);
    let mut details = Vec::new();
    if let Some(database) = config.get_dbname() {
        details.push(format!("database {database}"));
    }
    if let Some(user) = config.get_user() {
        details.push(format!("user {user}"));
    }
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

/// `postgres://USER@HOST:PORT/DATABASE`, for messages about a store that was reached.
fn location(config: &Config) -> String {
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let database = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("postgres://{user}{}/{database}", hosts(config))
}

/// `HOST:PORT[,HOST:PORT...]`; the port is 5432 unless the DSN says otherwise.
fn hosts(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| match ports {
        [] => 5432,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(5432),
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(dir) => format!("{}:{}", dir.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        "(no host)".to_owned()
    } else {
        hosts.join(",")
    }
}

/// The deepest cause of `error`, which is the part a person can act on: the server's message
/// (`password authentication failed for user "x"`) or the system's (`Connection refused`).
fn innermost(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db.message().to_owned();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The operation of an error at the commit of a batch: whether the server committed it before
/// the connection broke cannot be known, so such a batch is not written again (it could be
/// stored twice).
pub const COMMITTING: &str = "committing records";

fn failed(operation: &'static str) -> impl Fn(postgres::Error) -> StorageError {
    move |source| PostgresError::Query { operation, source }.into()
}

/// How many migrations have been applied; `None` when Chronicle has never been here.
fn applied(client: &mut impl GenericClient) -> Result<Option<u32>, postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('chronicle_schema_version') IS NOT NULL",
            &[],
        )?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let version: i32 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM chronicle_schema_version",
            &[],
        )?
        .get(0);
    // A negative version is nothing this code wrote; treat it as newer, which refuses it.
    Ok(Some(u32::try_from(version).unwrap_or(u32::MAX)))
}

fn migrate(client: &mut Client, location: &str) -> Result<(), StorageError> {
    let supported = u32::try_from(MIGRATIONS.len()).expect("a few migrations");
    let failed = failed("migrating the schema");
    let mut tx = client.transaction().map_err(&failed)?;
    // Two agents starting at once against a new database: the second waits here, then
    // finds the migrations applied.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(&failed)?;
    tx.batch_execute(VERSION_TABLE).map_err(&failed)?;
    let found = applied(&mut tx).map_err(&failed)?.unwrap_or(0);
    if found > supported {
        return Err(PostgresError::NewerSchema {
            location: location.to_owned(),
            found,
            supported,
        }
        .into());
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found as usize) {
        let migration_error = |source| PostgresError::Migration {
            location: location.to_owned(),
            version,
            source,
        };
        tx.batch_execute(sql).map_err(migration_error)?;
        tx.execute(
            "INSERT INTO chronicle_schema_version (version) VALUES ($1)",
            &[&i32::try_from(version).expect("a few migrations")],
        )
        .map_err(migration_error)?;
    }
    tx.commit().map_err(&failed)
}

/// A count, which SQL gives as a signed integer.
fn count(n: i64) -> u64 {
    u64::try_from(n).expect("counts are never negative")
}

/// An instant as stored; one beyond what the store can hold is before or after every record.
/// Query parameters owned until the query runs, numbered `$1`, `$2`, ...
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync>>);

impl Params {
    /// Adds a parameter; returns its placeholder.
    fn push(&mut self, value: impl ToSql + Sync + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    /// ` WHERE ...` (or nothing) selecting what `query` asks for.
    fn filter(&mut self, query: &RecordQuery) -> String {
        let mut conditions = Vec::new();
        if let Some(function) = &query.function {
            conditions.push(format!("function = {}", self.push(function.clone())));
        }
        if let Some(status) = query.status {
            conditions.push(format!(
                "status = {}",
                self.push(status.as_str().to_owned())
            ));
        }
        if let Some(build_id) = &query.build_id {
            conditions.push(format!("build_id = {}", self.push(build_id.clone())));
        }
        if let Some(since) = query.since {
            conditions.push(format!(
                "timestamp_ns >= {}",
                self.push(nanos_clamped(since))
            ));
        }
        if let Some(until) = query.until {
            conditions.push(format!(
                "timestamp_ns < {}",
                self.push(nanos_clamped(until))
            ));
        }
        if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect()
    }
}

fn nanos_clamped(t: SystemTime) -> i64 {
    time::to_unix_nanos(t).unwrap_or(if t < UNIX_EPOCH { i64::MIN } else { i64::MAX })
}

impl Storage for PostgresStorage {
    fn insert(&mut self, records: &mut [CallRecord]) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        // Encoded before anything is sent: a value that cannot be stored refuses the batch
        // without a round trip.
        let encoded = records
            .iter()
            .map(EncodedRecord::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let write = failed("inserting records");
        let mut client = self.connection()?;
        let mut tx = client.transaction().map_err(&write)?;
        let wanted = i64::try_from(records.len()).expect("a batch fits in memory");
        let mut ids: Vec<i64> = tx
            .query(NEXT_IDS, &[&wanted])
            .map_err(&write)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(ids.len(), records.len(), "one id per record");
        // Within a session each nextval is larger than the last (other writers take the values
        // in between); the rows may come back in any order, so sort to give them out in order.
        ids.sort_unstable();
        let sink = tx.copy_in(COPY).map_err(&write)?;
        let mut writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
        for ((record, row), id) in records.iter().zip(&encoded).zip(&ids) {
            writer
                .write(&[
                    id,
                    &record.function,
                    &record.binary,
                    &record.build_id,
                    &i64::from(record.pid),
                    &i64::from(record.tid),
                    &row.timestamp_ns,
                    &row.duration_ns,
                    &record.status.as_str(),
                    &row.args,
                    &row.ret,
                    &row.unavailable,
                    &record.replayable(),
                    &row.after,
                    &row.dependencies,
                ])
                .map_err(&write)?;
        }
        writer.finish().map_err(&write)?;
        tx.commit().map_err(failed(COMMITTING))?;
        // Only now: a failed transaction must not leave ids on records that were not stored.
        for (record, id) in records.iter_mut().zip(ids) {
            record.id = Some(id);
        }
        Ok(())
    }

    fn call_stats(&self, query: &RecordQuery) -> Result<CallStats, StorageError> {
        let read = failed("summarizing calls");
        let mut params = Params::default();
        let filter = params.filter(query);
        let returned = if filter.is_empty() {
            " WHERE duration_ns IS NOT NULL AND status <> 'unwound'".to_owned()
        } else {
            format!("{filter} AND duration_ns IS NOT NULL AND status <> 'unwound'")
        };
        let mut client = self.connection()?;
        let row = client
            .query_one(
                format!(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'error'), \
                     COUNT(*) FILTER (WHERE status = 'unwound'), MIN(timestamp_ns), \
                     MAX(timestamp_ns) FROM records{filter}"
                )
                .as_str(),
                &params.refs(),
            )
            .map_err(&read)?;
        let count = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        let (calls, errors, unwound) = (count(0), count(1), count(2));
        let first: Option<i64> = row.get(3);
        let last: Option<i64> = row.get(4);
        // Nearest rank, as everywhere in Chronicle: the first value whose cumulative share
        // reaches p.
        let row = client
            .query_one(
                format!(
                    "SELECT percentile_disc(ARRAY[0.5, 0.9, 0.99, 1.0]) \
                     WITHIN GROUP (ORDER BY duration_ns) FROM records{returned}"
                )
                .as_str(),
                &params.refs(),
            )
            .map_err(&read)?;
        let ranks: Option<Vec<Option<i64>>> = row.get(0);
        let at = |i: usize| {
            ranks
                .as_ref()
                .and_then(|r| r.get(i).copied().flatten())
                .map(|n| n.max(0) as u64)
        };
        let (p50_ns, p90_ns, p99_ns, max_ns) = (at(0), at(1), at(2), at(3));
        Ok(CallStats {
            calls,
            errors,
            unwound,
            p50_ns,
            p90_ns,
            p99_ns,
            max_ns,
            first_seen: first.map(time::from_unix_nanos),
            last_seen: last.map(time::from_unix_nanos),
        })
    }

    fn outcomes(
        &self,
        query: &RecordQuery,
        limit: usize,
    ) -> Result<Vec<OutcomeGroup>, StorageError> {
        let mut params = Params::default();
        let filter = params.filter(query);
        let limit = params.push(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self
            .connection()?
            .query(
                format!(
                    "SELECT status, ret, COUNT(*), MAX(id) FROM records{filter} \
                     GROUP BY status, ret ORDER BY COUNT(*) DESC, MAX(id) DESC \
                     LIMIT {limit}::BIGINT"
                )
                .as_str(),
                &params.refs(),
            )
            .map_err(failed("grouping outcomes"))?;
        rows.iter()
            .map(|r| {
                let status: String = r.get(0);
                let ret: Option<String> = r.get(1);
                outcome_group(&status, ret.as_deref(), r.get::<_, i64>(2) as u64, r.get(3))
            })
            .collect()
    }

    fn build_ids(&self, function: &str) -> Result<Vec<String>, StorageError> {
        let rows = self
            .connection()?
            .query(
                "SELECT build_id FROM records WHERE function = $1 \
                 GROUP BY build_id ORDER BY MIN(timestamp_ns), MIN(id)",
                &[&function],
            )
            .map_err(failed("listing builds"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn call_volume(
        &self,
        query: &RecordQuery,
        bucket: Duration,
    ) -> Result<Vec<(SystemTime, u64)>, StorageError> {
        let read = failed("counting calls over time");
        let mut params = Params::default();
        let width = params.push(i64::try_from(bucket.as_nanos()).unwrap_or(i64::MAX).max(1));
        let filter = params.filter(query);
        let rows = self
            .connection()?
            .query(
                format!(
                    "SELECT (timestamp_ns / {width}::BIGINT) * {width}::BIGINT AS bucket, COUNT(*) \
                     FROM records{filter} GROUP BY bucket ORDER BY bucket"
                )
                .as_str(),
                &params.refs(),
            )
            .map_err(&read)?;
        Ok(rows
            .iter()
            .map(|r| (time::from_unix_nanos(r.get(0)), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn changed_outputs(
        &self,
        before: &RecordQuery,
        after: &RecordQuery,
        limit: usize,
    ) -> Result<Vec<ChangedOutput>, StorageError> {
        let read = failed("comparing outcomes");
        let mut params = Params::default();
        let a = params.filter(before);
        let b = params.filter(after);
        let limit = params.push(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self
            .connection()?
            .query(
                super::changed_outputs_sql(&a, &b, &format!("{limit}::BIGINT")).as_str(),
                &params.refs(),
            )
            .map_err(&read)?;
        rows.iter()
            .map(|r| {
                let args: String = r.get(0);
                changed_output(
                    &args,
                    (r.get(1), r.get(2), r.get(3)),
                    (r.get(4), r.get(5), r.get(6)),
                )
            })
            .collect()
    }

    fn functions(&self) -> Result<Vec<FunctionSummary>, StorageError> {
        let read = failed("summarizing functions");
        let mut client = self.connection()?;
        // Binaries and build IDs per function, in order of first appearance.
        let mut seen: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
        for row in client
            .query(
                "SELECT function, build_id, \"binary\" FROM records \
                 GROUP BY function, build_id, \"binary\" \
                 ORDER BY function, MIN(timestamp_ns), MIN(id)",
                &[],
            )
            .map_err(&read)?
        {
            let (build_ids, binaries) = seen.entry(row.get(0)).or_default();
            let build_id: String = row.get(1);
            let binary: String = row.get(2);
            if !build_id.is_empty() && !build_ids.contains(&build_id) {
                build_ids.push(build_id);
            }
            if !binaries.contains(&binary) {
                binaries.push(binary);
            }
        }
        let rows = client
            .query(
                "SELECT function, COUNT(*), \
                   COUNT(*) FILTER (WHERE status = 'error'), \
                   COUNT(*) FILTER (WHERE status = 'unwound'), \
                   MIN(timestamp_ns), MAX(timestamp_ns), \
                   array_agg(duration_ns ORDER BY duration_ns) \
                     FILTER (WHERE duration_ns IS NOT NULL AND status <> 'unwound') \
                 FROM records GROUP BY function ORDER BY function",
                &[],
            )
            .map_err(&read)?;
        rows.iter()
            .map(|row| {
                let function: String = row.get(0);
                let durations: Option<Vec<i64>> = row.get(6);
                let sorted: Vec<u64> = durations
                    .unwrap_or_default()
                    .into_iter()
                    .map(|ns| u64::try_from(ns).expect("the schema CHECKs durations >= 0"))
                    .collect();
                let (build_ids, binaries) = seen.remove(&function).unwrap_or_default();
                Ok(FunctionSummary {
                    function,
                    calls: count(row.get(1)),
                    errors: count(row.get(2)),
                    unwound: count(row.get(3)),
                    p50_ns: percentile(&sorted, 50),
                    p99_ns: percentile(&sorted, 99),
                    first_seen: time::from_unix_nanos(row.get(4)),
                    last_seen: time::from_unix_nanos(row.get(5)),
                    build_ids,
                    binaries,
                })
            })
            .collect()
    }

    fn records(&self, query: &RecordQuery) -> Result<Vec<CallRecord>, StorageError> {
        let read = failed("reading records");
        let mut params = Params::default();
        let filter = params.filter(query);
        let order = match query.order {
            RecordOrder::Oldest => "timestamp_ns, id",
            RecordOrder::Newest => "timestamp_ns DESC, id DESC",
            RecordOrder::Slowest => "duration_ns DESC NULLS LAST, id",
        };
        // LIMIT NULL means no limit.
        let limit = params.push(query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
        let sql = format!("{SELECT}{filter} ORDER BY {order} LIMIT {limit}::BIGINT");
        let params = params.refs();
        let rows = self
            .connection()?
            .query(sql.as_str(), &params)
            .map_err(&read)?;
        rows.iter()
            .map(|row| {
                StoredRecord {
                    id: row.get(0),
                    function: row.get(1),
                    binary: row.get(2),
                    build_id: row.get(3),
                    pid: row.get(4),
                    tid: row.get(5),
                    timestamp_ns: row.get(6),
                    duration_ns: row.get(7),
                    status: row.get(8),
                    args: row.get(9),
                    ret: row.get(10),
                    unavailable: row.get(11),
                    after: row.get(12),
                    dependencies: row.get(13),
                }
                .decode()
            })
            .collect()
    }

    fn function_names(&self) -> Result<Vec<String>, StorageError> {
        let rows = self
            .connection()?
            .query(super::DISTINCT_FUNCTIONS, &[])
            .map_err(failed("listing functions"))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn insert_alerts(&mut self, alerts: &[Alert]) -> Result<(), StorageError> {
        let write = failed("inserting alerts");
        let mut client = self.connection()?;
        let mut tx = client.transaction().map_err(&write)?;
        for a in alerts {
            tx.execute(
                "INSERT INTO alerts (timestamp_ns, function, kind, key, limit_value, message) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &time::to_unix_nanos(a.timestamp).unwrap_or(0),
                    &a.function,
                    &a.kind.as_str(),
                    &a.key,
                    &i64::try_from(a.limit).unwrap_or(i64::MAX),
                    &a.message,
                ],
            )
            .map_err(&write)?;
        }
        tx.commit().map_err(&write)
    }

    fn alerts(&self) -> Result<Vec<Alert>, StorageError> {
        let rows = self
            .connection()?
            .query(
                "SELECT timestamp_ns, function, kind, key, limit_value, message FROM alerts \
                 ORDER BY id",
                &[],
            )
            .map_err(failed("reading alerts"))?;
        Ok(rows
            .iter()
            .map(|r| {
                super::alert_from_row((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            })
            .collect())
    }

    fn delete_before(&mut self, cutoff: SystemTime) -> Result<u64, StorageError> {
        self.connection()?
            .execute(
                "DELETE FROM records WHERE timestamp_ns < $1",
                &[&time::to_unix_nanos(cutoff).unwrap_or(i64::MIN)],
            )
            .map_err(failed("deleting old records"))
    }

    fn keep_newest(&mut self, function: &str, keep: u64) -> Result<u64, StorageError> {
        self.connection()?
            .execute(
                "DELETE FROM records WHERE function = $1 AND id NOT IN \
                 (SELECT id FROM records WHERE function = $1 \
                  ORDER BY timestamp_ns DESC, id DESC LIMIT $2)",
                &[&function, &i64::try_from(keep).unwrap_or(i64::MAX)],
            )
            .map_err(failed("trimming records"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::record::Value;
    use crate::storage::story::record;
    use crate::testing::PgSchema;

    /// What `PostgresStorage` calls the test server.
    fn location_of(schema: &PgSchema) -> String {
        location(&schema.dsn().parse().unwrap())
    }

    fn one_value(storage: &PostgresStorage, sql: &str) -> i64 {
        storage
            .client
            .borrow_mut()
            .query_one(sql, &[])
            .unwrap()
            .get(0)
    }

    #[test]
    fn story() {
        let Some(schema) = PgSchema::new("storage::postgres::tests::story") else {
            return;
        };
        let mut storage = PostgresStorage::open(schema.dsn()).unwrap();
        super::super::story::story(&mut storage);
    }

    #[test]
    fn summary_story() {
        let Some(schema) = PgSchema::new("storage::postgres::tests::summary_story") else {
            return;
        };
        let mut storage = PostgresStorage::open(schema.dsn()).unwrap();
        super::super::story::summary_story(&mut storage);
    }

    #[test]
    fn persists_and_migrates_once() {
        let Some(schema) = PgSchema::new("storage::postgres::tests::persists_and_migrates_once")
        else {
            return;
        };
        let mut records = vec![record("f", 1, 10)];
        {
            let mut storage = PostgresStorage::open(schema.dsn()).unwrap();
            assert_eq!(storage.schema_version().unwrap(), MIGRATIONS.len() as u32);
            storage.insert(&mut records).unwrap();
        }
        let storage = PostgresStorage::open_existing(schema.dsn()).unwrap();
        assert_eq!(storage.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert_eq!(storage.records(&RecordQuery::default()).unwrap(), records);
        drop(PostgresStorage::open(schema.dsn()).unwrap());
        assert_eq!(
            one_value(&storage, "SELECT COUNT(*) FROM chronicle_schema_version"),
            MIGRATIONS.len() as i64,
            "each migration recorded once"
        );
        // The location names the server and user, never the password.
        let config: Config = schema.dsn().parse().unwrap();
        let location = storage.location();
        assert_eq!(location, location_of(&schema));
        assert_eq!(
            location,
            format!(
                "postgres://{}@{}/{}",
                config.get_user().unwrap(),
                hosts(&config),
                config.get_dbname().unwrap()
            )
        );
        assert_eq!(
            format!("{storage:?}"),
            format!("PostgresStorage {{ location: {location:?}, .. }}")
        );
    }

    #[test]
    fn readers_do_not_create_tables() {
        let Some(schema) = PgSchema::new("storage::postgres::tests::readers_do_not_create_tables")
        else {
            return;
        };
        let error = PostgresStorage::open_existing(schema.dsn()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "no chronicle tables in {}; record some calls into it first, or check the \
                 database and search_path in the DSN",
                location_of(&schema)
            )
        );
        let storage = PostgresStorage::open(schema.dsn()).unwrap();
        assert_eq!(
            one_value(
                &storage,
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()"
            ),
            3,
            "records, alerts and chronicle_schema_version, created by open, not open_existing"
        );
    }

    #[test]
    fn newer_schema() {
        let Some(mut schema) = PgSchema::new("storage::postgres::tests::newer_schema") else {
            return;
        };
        drop(PostgresStorage::open(schema.dsn()).unwrap());
        schema.execute("INSERT INTO chronicle_schema_version (version) VALUES (7)");
        let expect = format!(
            "{} has schema version 7, newer than the {} this chronicle knows; upgrade chronicle",
            location_of(&schema),
            MIGRATIONS.len()
        );
        for error in [
            PostgresStorage::open(schema.dsn()).unwrap_err(),
            PostgresStorage::open_existing(schema.dsn()).unwrap_err(),
        ] {
            assert_eq!(error.to_string(), expect);
        }
    }

    #[test]
    fn connection_refused_says_what_to_do() {
        // Port 1 on loopback: nothing listens there, so this needs no server.
        let error = PostgresStorage::open("postgres://chronicle:s3cret@127.0.0.1:1/records")
            .unwrap_err()
            .to_string();
        let prefix = "cannot connect to PostgreSQL at 127.0.0.1:1 (database records, user \
                      chronicle): ";
        let suffix = "; check that the server runs and the DSN is right";
        assert!(
            error.starts_with(prefix) && error.ends_with(suffix),
            "{error}"
        );
        let reason = &error[prefix.len()..error.len() - suffix.len()];
        assert!(reason.contains("refused"), "{reason}");
        assert!(!error.contains("s3cret"));

        let error = PostgresStorage::open("host=127.0.0.1 port=1 user=u password=s3cret")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot connect to PostgreSQL at 127.0.0.1:1 (user u): "),
            "{error}"
        );
    }

    #[test]
    fn dsns_display_without_their_password() {
        for (dsn, expect) in [
            (
                "postgres://rec:s3cret@db.example:6432/calls?sslmode=disable",
                Some("postgres://rec@db.example:6432/calls"),
            ),
            (
                "host=10.0.0.5 user=rec password=s3cret",
                Some("postgres://rec@10.0.0.5:5432/rec"),
            ),
            ("postgresql://a:7,b:8/db", Some("postgres://a:7,b:8/db")),
            ("postgres://u:p@h:port/db", None),
        ] {
            assert_eq!(display_dsn(dsn).as_deref(), expect, "{dsn}");
        }
    }

    #[test]
    fn invalid_dsn() {
        let error = PostgresStorage::open("postgres://u:s3cret@localhost:port/db").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid PostgreSQL DSN (invalid value for option `port`); write it as \
             postgres://USER:PASSWORD@HOST:PORT/DATABASE"
        );
    }

    #[test]
    fn wrong_password_names_the_user() {
        let Some(schema) = PgSchema::new("storage::postgres::tests::wrong_password_names_the_user")
        else {
            return;
        };
        let mut config: Config = schema.dsn().parse().unwrap();
        config.password("certainly not the password");
        let user = config.get_user().unwrap().to_owned();
        let error = PostgresStorage::open_config(config, true).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{message}"
        );
        assert!(message.ends_with("; check that the server runs and the DSN is right"));
    }

    #[test]
    fn corrupt_rows_name_the_record() {
        let Some(mut schema) =
            PgSchema::new("storage::postgres::tests::corrupt_rows_name_the_record")
        else {
            return;
        };
        let mut storage = PostgresStorage::open(schema.dsn()).unwrap();
        let mut batch = [record("f", 1, 10)];
        storage.insert(&mut batch).unwrap();
        schema.execute("UPDATE records SET args = '[\"a\", 5]'");
        let error = storage.records(&RecordQuery::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "record {} has an unreadable `args` column",
                batch[0].id.unwrap()
            )
        );
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "expected a tagged value, found `5`"
        );
    }

    #[test]
    fn too_deep_values_are_refused_whole() {
        let Some(schema) =
            PgSchema::new("storage::postgres::tests::too_deep_values_are_refused_whole")
        else {
            return;
        };
        let mut storage = PostgresStorage::open(schema.dsn()).unwrap();
        let mut deep = Value::Null;
        for _ in 0..super::super::codec::MAX_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let fine = record("f", 1, 10);
        let mut bad = record("g", 2, 10);
        bad.args.push(("list".into(), deep));
        let mut batch = [fine, bad];
        assert_eq!(
            storage.insert(&mut batch).unwrap_err().to_string(),
            "a call of g has a value `list` nested deeper than 60 levels; it cannot be stored"
        );
        assert_eq!(batch[0].id, None);
        assert_eq!(storage.records(&RecordQuery::default()).unwrap(), vec![]);
    }

    #[test]
    fn reconnects_after_the_server_closes_the_connection() {
        let Some(mut schema) = PgSchema::new(
            "storage::postgres::tests::reconnects_after_the_server_closes_the_connection",
        ) else {
            return;
        };
        let mut storage = PostgresStorage::open(schema.dsn()).unwrap();
        let backend = one_value(&storage, "SELECT pg_backend_pid()::BIGINT");
        schema.execute(&format!("SELECT pg_terminate_backend({backend})"));
        // The batch in flight fails (and a writer counts it): whether a commit that lost its
        // connection went through cannot be known, so it is not retried.
        let mut first = [record("f", 1, 10)];
        assert!(storage.insert(&mut first).is_err());
        assert_eq!(first[0].id, None);
        let mut second = [record("f", 2, 10)];
        storage.insert(&mut second).unwrap();
        assert_eq!(storage.records(&RecordQuery::default()).unwrap(), second);
    }

    /// Agents on many hosts write to one database at once: every record arrives exactly once,
    /// ids are unique, and each agent's ids grow in the order it inserted.
    #[test]
    fn concurrent_writers_lose_nothing() {
        const AGENTS: u32 = 8;
        const BATCHES: u32 = 25;
        const BATCH: u32 = 200;
        let Some(schema) =
            PgSchema::new("storage::postgres::tests::concurrent_writers_lose_nothing")
        else {
            return;
        };
        let barrier = Arc::new(Barrier::new(AGENTS as usize));
        let agents: Vec<_> = (0..AGENTS)
            .map(|agent| {
                let dsn = schema.dsn().to_owned();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    // All open at once against an empty schema: one applies the migration,
                    // the others wait for it.
                    barrier.wait();
                    let mut storage = PostgresStorage::open(&dsn).unwrap();
                    barrier.wait();
                    let mut assigned = Vec::new();
                    for b in 0..BATCHES {
                        let mut batch: Vec<CallRecord> = (0..BATCH)
                            .map(|i| {
                                let seq = b * BATCH + i;
                                let mut r = record("agent::work", i64::from(seq), 10);
                                r.pid = 1000 + agent;
                                r.args = vec![("seq".into(), Value::UInt(u64::from(seq)))];
                                r
                            })
                            .collect();
                        storage.insert(&mut batch).unwrap();
                        assigned.extend(batch.iter().map(|r| ((r.pid, seq_of(r)), r.id.unwrap())));
                    }
                    assigned
                })
            })
            .collect();
        let mut assigned = BTreeMap::new();
        for agent in agents {
            let ids = agent.join().unwrap();
            assert!(
                ids.windows(2).all(|pair| pair[0].1 < pair[1].1),
                "an agent's ids grow with its insertions"
            );
            for (key, id) in ids {
                assert_eq!(assigned.insert(key, id), None, "{key:?} assigned twice");
            }
        }
        let total = (AGENTS * BATCHES * BATCH) as usize;
        assert_eq!(assigned.len(), total);
        let unique: HashSet<i64> = assigned.values().copied().collect();
        assert_eq!(unique.len(), total, "ids are unique across agents");

        let storage = PostgresStorage::open_existing(schema.dsn()).unwrap();
        let stored: BTreeMap<(u32, u64), i64> = storage
            .records(&RecordQuery::default())
            .unwrap()
            .iter()
            .map(|r| ((r.pid, seq_of(r)), r.id.unwrap()))
            .collect();
        assert_eq!(
            one_value(&storage, "SELECT COUNT(*) FROM records"),
            total as i64
        );
        assert_eq!(
            stored, assigned,
            "every record stored once, under the id it was given"
        );
        assert_eq!(storage.functions().unwrap()[0].calls, total as u64);
    }

    fn seq_of(record: &CallRecord) -> u64 {
        match record.args.as_slice() {
            [(_, Value::UInt(seq))] => *seq,
            other => panic!("unexpected args {other:?}"),
        }
    }
}
