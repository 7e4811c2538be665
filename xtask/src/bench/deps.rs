//! `cargo xtask bench deps`: what dependency tracking costs the traced program, on the
//! dependency fixture (`tests/fixtures/deps.c`: each `process_order` writes a file, fails to
//! open one, runs three SQL statements through SQLite and makes an HTTP request on loopback;
//! a nested captured `charge` writes a file), untraced, traced without tracking, and traced
//! with each switch and all three. Also what the syscall tracepoints cost other processes,
//! which pass through them too: `dd bs=1` syscalls per second with and without an agent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::{Args, is_root, median, parse_elapsed, release_cli};
use crate::ebpf::workspace_root;

/// Dependencies each loop iteration makes (six in `process_order`, one in `charge`).
const PER_CALL: u64 = 7;

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        is_root(),
        "the deps benchmark attaches eBPF probes: run it as root"
    );
    let root = workspace_root();
    let chronicle = release_cli()?;
    let dir = root.join("target/bench/deps");
    std::fs::create_dir_all(&dir)?;
    let fixture = dir.join("deps-O2");
    let status = Command::new("cc")
        .args(["-g", "-O2", "-pthread", "-o"])
        .arg(&fixture)
        .arg(root.join("tests/fixtures/deps.c"))
        .arg("-lsqlite3")
        .status()
        .context("running cc")?;
    ensure!(
        status.success(),
        "compiling deps.c failed (is libsqlite3-dev installed?)"
    );
    let files = dir.join("files");
    std::fs::create_dir_all(&files)?;
    println!(
        "deps benchmark: {} process_order calls per run, median of {} runs",
        args.calls, args.runs
    );
    println!(
        "{:<32} {:>14} {:>14} {:>14} {:>20}",
        "condition", "µs per call", "quartiles", "µs added", "dependencies"
    );
    let conditions: &[(&str, Option<&[&str]>, u64)] = &[
        ("untraced", None, 0),
        ("traced, no tracking", Some(&[]), 0),
        ("traced, --track-file-io", Some(&["--track-file-io"]), 3),
        (
            "traced, --track-http-calls",
            Some(&["--track-http-calls"]),
            1,
        ),
        ("traced, --track-db-calls", Some(&["--track-db-calls"]), 3),
        (
            "traced, all three",
            Some(&["--track-file-io", "--track-http-calls", "--track-db-calls"]),
            PER_CALL,
        ),
    ];
    // Round-robin over the conditions, so drift in the machine's speed (this fixture makes a
    // TCP connection per call) falls on all of them alike.
    let mut times = vec![Vec::new(); conditions.len()];
    let mut complete = vec![true; conditions.len()];
    for run in 0..args.runs {
        for (i, &(_, flags, per_call)) in conditions.iter().enumerate() {
            let Some(flags) = flags else {
                let out = Command::new(&fixture)
                    .arg(&files)
                    .arg(args.calls.to_string())
                    .output()?;
                times[i].push(parse_elapsed(&String::from_utf8_lossy(&out.stdout))?);
                continue;
            };
            let db = dir.join(format!("bench-{run}.db"));
            let _ = std::fs::remove_file(&db);
            let out = Command::new(&chronicle)
                .args(["attach", "--progress", "0"])
                .args(["--func", "process_order", "--func", "charge"])
                .args(flags)
                .arg("--db")
                .arg(&db)
                .arg("--")
                .arg(&fixture)
                .arg(&files)
                .arg(args.calls.to_string())
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(out.status.success(), "chronicle attach failed: {stderr}");
            times[i].push(parse_elapsed(&String::from_utf8_lossy(&out.stdout))?);
            let recorded = stderr
                .split("dependencies: ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            complete[i] &= recorded == per_call * args.calls;
        }
    }
    let per = |ns: u64| ns as f64 / args.calls as f64 / 1000.0;
    for t in &mut times {
        t.sort_unstable();
    }
    let medians: Vec<f64> = times.iter().map(|t| per(t[t.len() / 2])).collect();
    // The spread between runs, to read the differences against: the quartiles.
    let spread: Vec<String> = times
        .iter()
        .map(|t| {
            format!(
                "{:.0}–{:.0}",
                per(t[t.len() / 4]),
                per(t[(3 * t.len()) / 4])
            )
        })
        .collect();
    for (i, &(label, flags, per_call)) in conditions.iter().enumerate() {
        let (added, recorded) = match flags {
            None => ("-".to_owned(), "-".to_owned()),
            Some([]) => (format!("{:.1}", medians[i] - medians[0]), "none".to_owned()),
            Some(_) => (
                format!("{:.1}", medians[i] - medians[1]),
                if complete[i] {
                    format!("all, {per_call}/call")
                } else {
                    "MISSING".to_owned()
                },
            ),
        };
        println!(
            "{label:<32} {:>14.1} {:>14} {added:>14} {recorded:>20}",
            medians[i], spread[i]
        );
    }
    println!("(µs added: tracing over untraced; tracking over traced without tracking)");
    other_processes(&chronicle, &dir, args.runs)
}

/// Syscalls per second of `dd if=/dev/zero of=/dev/null bs=1 count=2000000` (two syscalls
/// per byte), alone and while an agent tracks files and network in another process.
fn other_processes(chronicle: &Path, dir: &Path, runs: usize) -> Result<()> {
    const BYTES: u64 = 2_000_000;
    let dd = || -> Result<u64> {
        let started = Instant::now();
        let status = Command::new("dd")
            .args([
                "if=/dev/zero",
                "of=/dev/null",
                "bs=1",
                &format!("count={BYTES}"),
            ])
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success(), "dd failed");
        Ok(started.elapsed().as_nanos() as u64)
    };
    let alone = median(runs, dd)?;
    let mut sleeper = Command::new("sleep").arg("600").spawn()?;
    let db = dir.join("bench-other.db");
    let _ = std::fs::remove_file(&db);
    let mut agent = Command::new(chronicle)
        .args([
            "attach",
            "--progress",
            "0",
            "--pid",
            &sleeper.id().to_string(),
        ])
        .args([
            "--func",
            "clock_nanosleep",
            "--track-file-io",
            "--track-http-calls",
        ])
        .arg("--db")
        .arg(&db)
        .stderr(Stdio::piped())
        .spawn()?;
    // Attached once the agent reports what it traces.
    std::thread::sleep(Duration::from_secs(3));
    let with_agent = median(runs, dd);
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let with_agent = with_agent?;
    let per_syscall = |ns: u64| ns as f64 / (2 * BYTES) as f64;
    println!(
        "\nanother process's syscalls (dd bs=1, {} syscalls): {:.0} ns each alone, {:.0} ns with \
         an agent tracking files and network elsewhere (+{:.0} ns)",
        2 * BYTES,
        per_syscall(alone),
        per_syscall(with_agent),
        per_syscall(with_agent) - per_syscall(alone)
    );
    Ok(())
}
