//! `cargo xtask bench ask`: how long `chronicle ask` takes per intent over a store of
//! `--records` calls (the figures use 1 000 000) of eight functions (the `store` benchmark's
//! records; the second half from another build), SQLite, with the analysis indexes.
//! The store is built once under `target/bench/ask/` and reused while it has the right size.

use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result};
use chronicle::ask::answer;
use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;

use super::Args;
use super::store::realistic;
use crate::ebpf::workspace_root;

pub fn run(args: &Args) -> Result<()> {
    let n = args.records.max(1);
    let dir = workspace_root().join("target/bench/ask");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join(format!("chronicle-{n}.db"));
    let mut storage = SqliteStorage::open(&db).context("opening the bench store")?;
    let stored: u64 = storage.functions()?.iter().map(|f| f.calls).sum();
    if stored != n as u64 {
        drop(storage);
        std::fs::remove_file(&db).ok();
        storage = SqliteStorage::open(&db)?;
        let started = Instant::now();
        let mut records = realistic(n);
        for (i, r) in records.iter_mut().enumerate() {
            if i >= n / 2 {
                r.build_id = "7f3c9e01d2a4b5c6d7e8f90a1b2c3d4e5f6a7b8c".into();
            }
        }
        for chunk in records.chunks_mut(10_000) {
            storage.insert(chunk)?;
        }
        println!(
            "built a store of {n} records in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    // Questions go through the store as `chronicle ask` opens it.
    drop(storage);
    let storage = SqliteStorage::open_existing(&db)?;
    let per_function = storage
        .functions()?
        .iter()
        .find(|f| f.function == "orders::process_order")
        .map_or(0, |f| f.calls);
    // The records start at 2026-11-26T19:30:01Z, 13 µs apart.
    let now = UNIX_EPOCH + Duration::from_secs(1_795_721_401 + 3600);
    let questions = [
        (
            "error_analysis",
            "What inputs cause errors in process_order?",
        ),
        (
            "performance",
            "Show me the 10 slowest calls to process_order",
        ),
        (
            "drift (builds)",
            "How did process_order change between builds 5d41402a and 7f3c9e01?",
        ),
        (
            "drift (time)",
            "How has process_order changed in the last 2 hours?",
        ),
        ("frequency", "How often is process_order called per minute?"),
        (
            "input_distribution",
            "What do the inputs to process_order look like?",
        ),
        ("examples", "Show me 5 examples of process_order"),
        ("functions", "Which functions were recorded?"),
        ("help", "What is the meaning of life?"),
    ];
    println!(
        "ask benchmark: {n} records in SQLite ({per_function} of orders::process_order), median of {} runs",
        args.runs
    );
    println!("{:<22} {:>10}  question", "intent", "ms");
    for (label, q) in questions {
        let mut times = Vec::new();
        for _ in 0..args.runs {
            let started = Instant::now();
            let a = answer(&storage, q, now)?;
            times.push(started.elapsed());
            anyhow::ensure!(
                a["type"] != "help" || label == "help",
                "{q} was not understood: {a}"
            );
        }
        times.sort();
        let ms = times[times.len() / 2].as_secs_f64() * 1e3;
        println!("{label:<22} {ms:>10.1}  {q}");
    }
    Ok(())
}
