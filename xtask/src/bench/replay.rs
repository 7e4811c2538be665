//! `cargo xtask bench replay`: replayed calls per second against a rebuilt native binary
//! (the orders fixture v2, `-O2`), one shared child and a fresh child per call, next to the
//! same calls made by gdb in batch mode (`gdb -batch -x calls.gdb`).
//!
//! The calls come from a spec file (the export format) this benchmark writes with the
//! right expected values, so every replayed call must pass. gdb's rate is its time for N
//! calls minus its time for none (start-up and `break main` / `run`), divided by N.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::json;

use super::Args;
use crate::ebpf::workspace_root;

/// `(function, args, return)` of the calls replayed, in the export format.
fn calls(n: usize) -> Vec<(String, serde_json::Value, serde_json::Value, String)> {
    let countries = [
        ("DE", "eu"),
        ("US", "americas"),
        ("JP", "world"),
        ("FR", "eu"),
    ];
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let units = (i % 300) as i64;
                let cents = 100 + (i % 50) as i64;
                let pct = if units >= 100 {
                    10
                } else if units >= 10 {
                    5
                } else {
                    0
                };
                (
                    "make_quote".to_owned(),
                    json!({"units": units, "cents_each": cents}),
                    json!({"subtotal": units * cents, "discount_pct": pct}),
                    format!("make_quote({units}, {cents})"),
                )
            } else {
                let (country, zone) = countries[i % 4];
                (
                    "shipping_zone".to_owned(),
                    json!({"country": country}),
                    json!(zone),
                    format!("shipping_zone(\"{country}\")"),
                )
            }
        })
        .collect()
}

fn spec(
    function: &str,
    calls: &[(String, serde_json::Value, serde_json::Value, String)],
) -> String {
    let records: Vec<serde_json::Value> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.0 == function)
        .map(|(i, (f, args, ret, _))| {
            json!({"id": i, "function": f, "binary": "bench", "build_id": "", "pid": 1, "tid": 1,
                   "timestamp": "2026-01-01T00:00:00Z", "duration_ns": 1000, "status": "ok",
                   "args": args, "return": ret, "replayable": true, "unavailable": {}})
        })
        .collect();
    serde_json::to_string(&records).expect("json")
}

pub fn run(args: &Args) -> Result<()> {
    let root = workspace_root();
    let chronicle = super::release_cli()?;
    let dir = root.join("target/bench/replay");
    std::fs::create_dir_all(&dir)?;
    let fixtures = root.join("tests/fixtures/replay");
    let binary = dir.join("orders-c-v2");
    let status = Command::new("cc")
        .args(["-g", "-O2", "-o"])
        .arg(&binary)
        .arg(fixtures.join("orders_v2.c"))
        .arg(fixtures.join("orders_service.c"))
        .status()
        .context("running cc")?;
    ensure!(status.success(), "building the orders fixture failed");

    let n = args.calls.min(100_000) as usize;
    let all = calls(n);
    println!(
        "replay benchmark: {n} calls (make_quote and shipping_zone alternating) of {}, median of {} runs",
        binary.display(),
        args.runs
    );
    println!(
        "{:<44} {:>12} {:>14}",
        "condition", "calls/s", "µs per call"
    );

    for (label, fresh, count) in [
        ("chronicle replay, one child", false, n),
        ("chronicle replay --fresh-child", true, n.min(500)),
    ] {
        let mut rates = Vec::new();
        for _ in 0..args.runs {
            let mut seconds = 0.0;
            let mut done = 0;
            for function in ["make_quote", "shipping_zone"] {
                let path = dir.join(format!("{function}.json"));
                std::fs::write(&path, spec(function, &all[..count]))?;
                let (secs, passed) = replay(&chronicle, &path, &binary, fresh)?;
                seconds += secs;
                done += passed;
            }
            ensure!(done == count, "only {done} of {count} calls passed");
            rates.push(count as f64 / seconds);
        }
        report(label, &mut rates);
    }

    if Command::new("gdb").arg("--version").output().is_err() {
        println!(
            "{:<44} {:>12}",
            "gdb -batch", "(gdb not installed: apt-get install gdb)"
        );
        return Ok(());
    }
    let count = n.min(2000);
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        let empty = gdb(&dir, &binary, &[])?;
        let full = gdb(&dir, &binary, &all[..count])?;
        rates.push(count as f64 / (full - empty).max(1e-9));
    }
    report(
        &format!("gdb -batch, one session ({count} calls)"),
        &mut rates,
    );
    Ok(())
}

fn report(label: &str, rates: &mut [f64]) {
    rates.sort_by(f64::total_cmp);
    let rate = rates[rates.len() / 2];
    println!("{label:<44} {rate:>12.0} {:>14.1}", 1e6 / rate);
}

/// Replays a spec; returns the replay loop's seconds and the calls that passed.
fn replay(chronicle: &Path, spec: &Path, binary: &Path, fresh: bool) -> Result<(f64, usize)> {
    let mut cmd = Command::new(chronicle);
    cmd.args(["replay", "--json", "--spec"])
        .arg(spec)
        .arg("--binary")
        .arg(binary);
    if fresh {
        cmd.arg("--fresh-child");
    }
    let out = cmd.output().context("running chronicle replay")?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "chronicle replay printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((
        report["duration_s"].as_f64().context("duration_s")?,
        report["passed"].as_u64().context("passed")? as usize,
    ))
}

/// Wall seconds of one gdb session that stops at main and makes `calls`.
fn gdb(
    dir: &Path,
    binary: &Path,
    calls: &[(String, serde_json::Value, serde_json::Value, String)],
) -> Result<f64> {
    let mut script = String::from("set pagination off\nset confirm off\nbreak main\nrun\n");
    for (.., expr) in calls {
        script.push_str(&format!("call {expr}\n"));
    }
    let path = dir.join("calls.gdb");
    std::fs::write(&path, script)?;
    let started = Instant::now();
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&path)
        .arg(binary)
        .output()
        .context("running gdb")?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "gdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('$'))
        .count();
    ensure!(
        results == calls.len(),
        "gdb printed {results} results for {} calls",
        calls.len()
    );
    Ok(seconds)
}
