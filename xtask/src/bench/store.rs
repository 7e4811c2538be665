//! `cargo xtask bench store`: how many records per second a backend stores through the
//! `Storage` trait, in batches of [`BATCH`] realistic records (the writer's batches are of
//! this order under load), from one writer or from several at once (`--writers`), each with
//! its own connection, as agents on several hosts would.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chronicle::storage::Storage;
use chronicle::storage::postgres::PostgresStorage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::testing::{DSN_VAR, PgSchema};
use chronicle::time::from_unix_nanos;
use chronicle::{CallRecord, Status, Value};

use super::Args;
use crate::ebpf::workspace_root;

/// Records per `insert`.
const BATCH: usize = 1000;

pub fn run(args: &Args) -> Result<()> {
    let dsn = match args.backend.as_str() {
        "sqlite" => None,
        "postgres" => Some(
            args.dsn
                .clone()
                .or_else(|| std::env::var(DSN_VAR).ok())
                .with_context(|| {
                    format!(
                        "give --dsn or set {DSN_VAR} (`sudo bash scripts/start-postgres.sh` \
                         starts a local server and prints one)"
                    )
                })?,
        ),
        other => bail!("unknown backend `{other}`; available: sqlite, postgres"),
    };
    let records = realistic(args.records);
    let bytes: usize = records
        .iter()
        .map(|r| chronicle::export::record_json(r).to_string().len())
        .sum();
    let writers = args.writers.max(1);
    println!(
        "store benchmark: {} backend, {writers} writer(s), {} records per run ({} bytes each \
         as export JSON) in batches of {BATCH}, median of {} runs",
        args.backend,
        records.len(),
        bytes / records.len().max(1),
        args.runs
    );
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let elapsed = match &dsn {
            None => {
                let path = dir.join(format!("store-{run}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                drop(SqliteStorage::open(&path)?);
                timed(writers, &records, || {
                    Ok(Box::new(SqliteStorage::open(&path)?))
                })?
            }
            Some(dsn) => {
                let schema = PgSchema::create(dsn, "chronicle_bench")
                    .with_context(|| format!("making a schema in {DSN_VAR}'s database"))?;
                drop(PostgresStorage::open(schema.dsn())?);
                timed(writers, &records, || {
                    Ok(Box::new(PostgresStorage::open(schema.dsn())?))
                })?
            }
        };
        let rate = records.len() as f64 / elapsed.as_secs_f64();
        println!("  run {run}: {rate:>10.0} records/s ({elapsed:.2?})");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0} records/s", rates[rates.len() / 2]);
    Ok(())
}

/// Inserts `records` in batches from `writers` threads, each with a store from `open`
/// (opened before the clock starts); returns how long the inserts took. Checks afterwards (not
/// timed) that every record was stored.
fn timed(
    writers: usize,
    records: &[CallRecord],
    open: impl Fn() -> Result<Box<dyn Storage>>,
) -> Result<Duration> {
    let batches: Vec<Vec<CallRecord>> = records.chunks(BATCH).map(<[_]>::to_vec).collect();
    // Batch i goes to writer i % writers.
    let mut shares: Vec<Vec<Vec<CallRecord>>> = (0..writers).map(|_| Vec::new()).collect();
    for (i, batch) in batches.into_iter().enumerate() {
        shares[i % writers].push(batch);
    }
    let stores = (0..writers).map(|_| open()).collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = stores
            .into_iter()
            .zip(shares)
            .map(|(mut storage, mut share)| {
                scope.spawn(move || -> Result<()> {
                    for batch in &mut share {
                        storage.insert(batch)?;
                    }
                    Ok(())
                })
            })
            .collect();
        threads
            .into_iter()
            .try_for_each(|thread| thread.join().expect("a writer panicked"))
    })?;
    let elapsed = start.elapsed();
    let stored: u64 = open()?.functions()?.iter().map(|f| f.calls).sum();
    ensure!(
        stored == records.len() as u64,
        "stored {stored} records of {}",
        records.len()
    );
    Ok(elapsed)
}

/// `n` records shaped like a service's: eight functions, a struct argument with a string,
/// integers, an enum and a small array, a request id, a flag; every 50th call an error.
pub(super) fn realistic(n: usize) -> Vec<CallRecord> {
    const FUNCTIONS: [&str; 8] = [
        "orders::process_order",
        "orders::validate",
        "payments::charge",
        "inventory::reserve",
        "http::handle_request",
        "db::query",
        "cache::get",
        "auth::check_token",
    ];
    (0..n)
        .map(|i| {
            let n = i as u64;
            let failed = i % 50 == 0;
            CallRecord {
                id: None,
                function: FUNCTIONS[i % FUNCTIONS.len()].into(),
                binary: "/srv/orders/bin/orders-service".into(),
                build_id: "5d41402abc4b2a76b9719d911017c592a1b2c3d4".into(),
                pid: 4242,
                tid: 4243 + (i % 8) as u32,
                timestamp: from_unix_nanos(1_795_721_401_000_000_000 + i as i64 * 13_000),
                duration_ns: Some(800 + n * 7919 % 50_000),
                status: if failed { Status::Error } else { Status::Ok },
                args: vec![
                    (
                        "order".into(),
                        Value::Struct(vec![
                            ("id".into(), Value::UInt(n)),
                            (
                                "customer".into(),
                                Value::Str(format!("customer-{:05}", i % 10_000)),
                            ),
                            ("amount_cents".into(), Value::Int((n * 37 % 100_000) as i64)),
                            ("currency".into(), Value::Enum("EUR".into())),
                            (
                                "items".into(),
                                Value::Array(vec![
                                    Value::UInt(n % 97),
                                    Value::UInt(n % 89),
                                    Value::UInt(n % 83),
                                ]),
                            ),
                        ]),
                    ),
                    ("request_id".into(), Value::Str(format!("req-{n:016x}"))),
                    ("retry".into(), Value::Bool(false)),
                ],
                ret: Some(if failed {
                    Value::Variant("Err".into(), Box::new(Value::Str("out of stock".into())))
                } else {
                    Value::Variant("Ok".into(), Box::new(Value::UInt(n)))
                }),
                unavailable: vec![],
                after: vec![],
                dependencies: vec![],
            }
        })
        .collect()
}
