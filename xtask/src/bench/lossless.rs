//! `cargo xtask bench lossless`: what `chronicle attach` stores when a function is called as
//! fast as a program can call it, and at fixed rates below that; the agent's memory while it
//! does (its resident set, sampled every 100 ms).
//!
//! `score(long, long, long, const char *)` from `tests/fixtures/hot.c` at -O0, sampling 1.0,
//! SQLite. For each condition: calls made, records stored, events the ring buffer could not
//! hold (entries and returns, counted by the kernel), whether every call is accounted for
//! (stored, or lost with a dropped event), and the agent's median and peak RSS.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::{Args, is_root, parse_elapsed, release_cli};
use crate::ebpf::workspace_root;

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        is_root(),
        "the lossless benchmark attaches eBPF probes: run it as root"
    );
    let root = workspace_root();
    let chronicle = release_cli()?;
    let dir = root.join("target/bench/lossless");
    std::fs::create_dir_all(&dir)?;
    let hot = dir.join("hot-O0");
    let status = Command::new("cc")
        .args(["-g", "-O0", "-o"])
        .arg(&hot)
        .arg(root.join("tests/fixtures/hot.c"))
        .status()
        .context("running cc")?;
    ensure!(status.success(), "compiling hot.c failed");
    println!(
        "lossless benchmark: score(long, long, long, const char *) at -O0, sampling 1.0, SQLite, \
         ring buffer {} MiB",
        args.ring_mb
    );
    println!(
        "{:<22} {:>9} {:>10} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "rate (calls/s)", "calls", "achieved", "stored", "dropped", "exact", "RSS med", "RSS peak"
    );
    // Full speed first, then fixed rates: each runs about ten seconds (at most --calls).
    let mut conditions = vec![(0u64, args.calls)];
    for rate in [10_000u64, 20_000, 40_000, 80_000] {
        conditions.push((rate, args.calls.min(rate * 10)));
    }
    for (rate, calls) in conditions {
        let db = dir.join("lossless.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let run = attach(&chronicle, &hot, &db, calls, rate, args.ring_mb)?;
        let listed = Command::new(&chronicle)
            .args(["functions", "--json", "--db"])
            .arg(&db)
            .output()?;
        let list: serde_json::Value =
            serde_json::from_slice(&listed.stdout).context("chronicle functions --json")?;
        let stored = list[0]["calls"].as_u64().unwrap_or(0);
        // Every call is accounted for: one whose entry did not fit is one dropped event (its
        // return stays silent); one whose return did not fit is a dropped event and a record
        // stored as unwound.
        let exact = run.counted_calls == calls
            && run.orphan_returns == 0
            && run.dropped == (calls - stored) + run.unwound;
        let label = if rate == 0 {
            "as fast as it can".to_owned()
        } else {
            rate.to_string()
        };
        println!(
            "{label:<22} {calls:>9} {:>10.0} {stored:>10} {:>10} {:>9} {:>7.1} MB {:>6.1} MB",
            calls as f64 / (run.loop_ns as f64 / 1e9),
            run.dropped,
            if exact { "yes" } else { "NO" },
            run.rss_median_kb as f64 / 1024.0,
            run.rss_peak_kb as f64 / 1024.0,
        );
    }
    Ok(())
}

struct Run {
    /// The fixture's own loop time.
    loop_ns: u64,
    /// Calls the kernel counted (the summary's `calls` column).
    counted_calls: u64,
    /// Events the ring buffer could not hold (the summary's `dropped` column).
    dropped: u64,
    /// Calls stored as unwound (their return event was dropped).
    unwound: u64,
    /// Returns whose entry event was dropped.
    orphan_returns: u64,
    rss_median_kb: u64,
    rss_peak_kb: u64,
}

fn attach(
    chronicle: &Path,
    hot: &Path,
    db: &Path,
    calls: u64,
    rate: u64,
    ring_mb: u32,
) -> Result<Run> {
    let mut child = Command::new(chronicle)
        .args(["attach", "--progress", "0", "--func", "score"])
        .args(["--ring-buffer-mb", &ring_mb.to_string(), "--db"])
        .arg(db)
        .arg("--")
        .arg(hot)
        .args([&calls.to_string(), "score", &rate.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running chronicle attach")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut samples = Vec::new();
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if let Some(kb) = resident_kb(&status_path) {
            // The first second is symbol loading and attaching, not the steady state.
            if started.elapsed() >= Duration::from_secs(1) {
                samples.push(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout)?;
    child.stderr.take().unwrap().read_to_string(&mut stderr)?;
    ensure!(child.wait()?.success(), "chronicle attach failed: {stderr}");
    // The summary table's row: name, calls, stored, sampled out, unwound, dropped, errors.
    let row: Vec<u64> = stderr
        .lines()
        .find(|l| l.starts_with("score "))
        .with_context(|| format!("no summary row for score in: {stderr}"))?
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    ensure!(row.len() >= 5, "unexpected summary row in: {stderr}");
    let orphan_returns = stderr
        .lines()
        .find_map(|l| l.trim().split_once(" returns had no entry event"))
        .map_or(Ok(0), |(n, _)| n.parse())
        .context("the count of returns without an entry")?;
    samples.sort_unstable();
    Ok(Run {
        loop_ns: parse_elapsed(&stdout)?,
        counted_calls: row[0],
        dropped: row[4],
        unwound: row[3],
        orphan_returns,
        rss_median_kb: samples.get(samples.len() / 2).copied().unwrap_or(0),
        rss_peak_kb: samples.last().copied().unwrap_or(0),
    })
}

/// `VmRSS` of a process, in kB, while it runs.
fn resident_kb(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
