//! `cargo xtask bench pipeline`: records per second through the pipeline (limits → sampling
//! → redaction), alone and followed by the store (SQLite file, or PostgreSQL with
//! `--backend postgres`), with the default policy (random sampling at 1, redaction on) and
//! with clustering.

use std::time::Instant;

use anyhow::{Context, Result};
use chronicle::config::{CaptureConfig, SamplingStrategy};
use chronicle::pipeline::{Outcome, Pipeline, Policy, PolicyHandle};
use chronicle::sampling::Rng;
use chronicle::storage::Storage;
use chronicle::storage::postgres::PostgresStorage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::testing::{DSN_VAR, PgSchema};

use super::Args;
use super::store::realistic;
use crate::ebpf::workspace_root;

pub fn run(args: &Args) -> Result<()> {
    let records = realistic(args.records);
    println!(
        "pipeline benchmark: {} realistic records, median of {} runs",
        records.len(),
        args.runs
    );
    println!("{:<52} {:>14}", "condition", "records/s");
    for (label, strategy) in [
        ("random 1.0 + redaction", SamplingStrategy::Random),
        ("clustering 0.1 + redaction", SamplingStrategy::Clustering),
    ] {
        let config = CaptureConfig {
            sampling_strategy: strategy,
            sampling_rate: if strategy == SamplingStrategy::Random {
                1.0
            } else {
                0.1
            },
            kernel_presample: false,
            ..CaptureConfig::default()
        };
        let mut rates = Vec::new();
        for run in 0..args.runs {
            let policy = PolicyHandle::new(Policy::from_config(&config)?);
            let mut pipeline = Pipeline::with_rng(policy, Rng::new(run as u64));
            let input = records.clone();
            let started = Instant::now();
            let mut kept = 0usize;
            for r in input {
                if let Outcome::Store(r) = pipeline.process(r) {
                    kept += std::hint::black_box(r).args.len();
                }
            }
            std::hint::black_box(kept);
            rates.push(records.len() as f64 / started.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{:<52} {:>14.0}",
            format!("pipeline only, {label}"),
            rates[rates.len() / 2]
        );
    }

    // Pipeline, then the store in batches of 1000, as attach's writer does.
    let config = CaptureConfig {
        kernel_presample: false,
        ..CaptureConfig::default()
    };
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let (mut storage, _schema): (Box<dyn Storage>, Option<PgSchema>) =
            match args.backend.as_str() {
                "postgres" => {
                    let dsn = args
                        .dsn
                        .clone()
                        .or_else(|| std::env::var(DSN_VAR).ok())
                        .context("set --dsn or CHRONICLE_TEST_PG_DSN for the postgres backend")?;
                    let schema = PgSchema::create(&dsn, "bench_pipeline")?;
                    (Box::new(PostgresStorage::open(schema.dsn())?), Some(schema))
                }
                _ => {
                    let dir = workspace_root().join("target/bench");
                    std::fs::create_dir_all(&dir)?;
                    let path = dir.join(format!("pipeline-{run}.db"));
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                    }
                    (Box::new(SqliteStorage::open(&path)?), None)
                }
            };
        let policy = PolicyHandle::new(Policy::from_config(&config)?);
        let mut pipeline = Pipeline::with_rng(policy, Rng::new(run as u64));
        let input = records.clone();
        let started = Instant::now();
        let mut batch = Vec::with_capacity(1000);
        for r in input {
            if let Outcome::Store(r) = pipeline.process(r) {
                batch.push(r);
                if batch.len() == 1000 {
                    storage.insert(&mut batch)?;
                    batch.clear();
                }
            }
        }
        storage.insert(&mut batch)?;
        rates.push(records.len() as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{:<52} {:>14.0}",
        format!("pipeline + {} store", args.backend),
        rates[rates.len() / 2]
    );
    Ok(())
}
