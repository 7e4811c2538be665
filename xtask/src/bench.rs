//! Benchmarks (`cargo xtask bench <name>`). Figures go to BENCHMARKS.md by hand, with the
//! command that produced them. Timings live here, never in tests.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::ebpf::workspace_root;

mod ask;
mod deps;
mod lossless;
mod otlp;
mod overhead;
mod pipeline;
mod replay;
mod store;

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark: `capture` (cost of tracing a hot function), `presample` (cost of a
    /// call the in-kernel sampler leaves out), `symbols` (debug info load time and peak
    /// memory for a large binary), `store` (records/s into a backend), `otlp` (spans/s to
    /// a loopback OTLP/HTTP receiver) or `pipeline` (records/s through sampling and
    /// redaction, then the store), `replay` (replayed calls/s against a native binary,
    /// next to gdb), `ask` (time per question over a store of `--records`), `deps` (cost
    /// of dependency tracking on the dependency fixture; use `--calls 2000`), `overhead`
    /// (per-call cost next to bare probes and bpftrace, at -O0, -O2 and -O2 with nops) or
    /// `lossless` (records stored and events dropped at full speed and at fixed rates, and
    /// the agent's memory meanwhile; `--calls` is the full-speed run's).
    pub name: String,
    /// Calls per run (`capture`).
    #[arg(long, default_value_t = 200_000)]
    pub calls: u64,
    /// Records per run (`store`, `otlp`), or in the store `ask` questions.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Runs per condition; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Writer threads for `store`, each with its own connection, sharing the records.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Backend for `store`: `sqlite` or `postgres`.
    #[arg(long, default_value = "sqlite")]
    pub backend: String,
    /// PostgreSQL server for `store --backend postgres` (default: $CHRONICLE_TEST_PG_DSN);
    /// each run writes into a schema of its own, dropped afterwards.
    #[arg(long)]
    pub dsn: Option<String>,
    /// `attach --ring-buffer-mb` for `lossless` and `overhead` (a burst of `--calls` calls is
    /// stored whole when the ring buffer holds it: ~530 bytes per `score` call).
    #[arg(long, default_value_t = 16)]
    pub ring_mb: u32,
}

pub fn run(args: Args) -> Result<()> {
    match args.name.as_str() {
        "capture" => capture(&args, 1.0),
        "presample" => capture(&args, 0.0),
        "symbols" => symbols(&args),
        "store" | "otlp" | "pipeline" | "ask" if cfg!(debug_assertions) => release(),
        "ask" => ask::run(&args),
        "pipeline" => pipeline::run(&args),
        "store" => store::run(&args),
        "otlp" => otlp::run(&args),
        "replay" => replay::run(&args),
        "deps" => deps::run(&args),
        "overhead" => overhead::run(&args),
        "lossless" => lossless::run(&args),
        other => bail!(
            "unknown benchmark `{other}`; available: capture, presample, symbols, store, otlp, \
             pipeline, replay, ask, deps, overhead, lossless"
        ),
    }
}

/// Runs this same command from an optimised build of xtask: `cargo xtask` is a debug build,
/// and the library code these benchmarks time must be measured as users run it.
fn release() -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .current_dir(workspace_root())
        .status()
        .context("running cargo")?;
    ensure!(
        status.success(),
        "the release build of the benchmark failed"
    );
    Ok(())
}

/// Calls/s of `hot.c`'s functions untraced and traced, ns added per call, and whether every
/// call became a record.
fn capture(args: &Args, rate: f64) -> Result<()> {
    ensure!(
        is_root(),
        "the capture benchmark attaches eBPF probes: run it as root"
    );
    let root = workspace_root();
    let chronicle = release_cli()?;
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    println!(
        "capture benchmark: {} calls per run, median of {} runs, sampling rate {rate}",
        args.calls, args.runs
    );
    println!(
        "{:<34} {:>12} {:>14} {:>14} {:>16}",
        "condition", "calls/s", "ns per call", "ns added", "records/calls"
    );
    // -O0 functions start with `push %rbp`, which the kernel emulates; -O2 ones start with an
    // instruction it must single-step out of line, which costs far more in a VM.
    let conditions: &[(&str, &str, &str)] = if rate < 1.0 {
        &[("-O0", "cheap", "int"), ("-O2", "cheap", "int")]
    } else {
        &[
            ("-O0", "cheap", "int"),
            ("-O2", "cheap", "int"),
            ("-O2", "label", "str"),
            ("-O0", "place", "struct"),
            ("-O2", "place", "struct"),
        ]
    };
    for &(opt, function, mode) in conditions {
        let hot = dir.join(format!("hot{opt}"));
        let status = Command::new("cc")
            .args(["-g", opt, "-o"])
            .arg(&hot)
            .arg(root.join("tests/fixtures/hot.c"))
            .status()
            .context("running cc")?;
        ensure!(status.success(), "compiling hot.c failed");
        let base = median(args.runs, || untraced(&hot, args.calls, mode))?;
        let mut traced = Vec::new();
        let mut complete = true;
        let mut worst = (0, 0);
        for run in 0..args.runs {
            let db = dir.join(format!("bench-{function}{opt}-{run}.db"));
            let _ = std::fs::remove_file(&db);
            let (ns, records) =
                traced_run(&chronicle, &hot, &db, function, args.calls, mode, rate)?;
            traced.push(ns);
            let expected = if rate < 1.0 { records } else { args.calls };
            if records != expected {
                complete = false;
                worst = (records, args.calls);
            }
        }
        traced.sort_unstable();
        let traced_ns = traced[traced.len() / 2];
        let per = |ns: u64| ns as f64 / args.calls as f64;
        let label = format!("{function}({mode}) {opt} untraced");
        println!(
            "{label:<34} {:>12.0} {:>14.1} {:>14} {:>16}",
            1e9 / per(base),
            per(base),
            "-",
            "-"
        );
        let label = format!("{function}({mode}) {opt} traced");
        let ratio = if complete {
            "all".to_owned()
        } else {
            format!("{}/{}", worst.0, worst.1)
        };
        println!(
            "{label:<34} {:>12.0} {:>14.1} {:>14.1} {:>16}",
            1e9 / per(traced_ns),
            per(traced_ns),
            per(traced_ns) - per(base),
            ratio
        );
    }
    Ok(())
}

/// Wall time and peak RSS of `chronicle symbols` on a large binary with debug info: the
/// dev build of Chronicle's own CLI (DWARF of every crate it links).
fn symbols(args: &Args) -> Result<()> {
    let root = workspace_root();
    for (profile, flags) in [("release", &["--release"][..]), ("debug", &[][..])] {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "chronicle-cli"])
            .args(flags)
            .current_dir(&root)
            .status()?;
        ensure!(status.success(), "building chronicle ({profile}) failed");
    }
    let tool = root.join("target/release/chronicle");
    let subject = root.join("target/debug/chronicle");
    let size = std::fs::metadata(&subject)?.len();
    println!(
        "symbols benchmark: `chronicle symbols` on {} ({:.0} MB), median of {} runs",
        subject.display(),
        size as f64 / 1e6,
        args.runs
    );
    println!("{:<44} {:>10} {:>12}", "query", "seconds", "peak RSS MB");
    for filter in ["chronicle_agent::session::Session::attach", "storage::"] {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            let out = Command::new("/usr/bin/time")
                .args(["-f", "%e %M"])
                .arg(&tool)
                .arg("symbols")
                .arg(&subject)
                .args(["--filter", filter, "--json"])
                .output()
                .context("running /usr/bin/time (apt-get install time)")?;
            ensure!(out.status.success(), "chronicle symbols failed");
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().context("no timing from /usr/bin/time")?;
            let mut parts = last.split_whitespace();
            let secs: f64 = parts.next().context("seconds")?.parse()?;
            let kb: f64 = parts.next().context("max rss")?.parse()?;
            let found: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            runs.push((secs, kb, found.as_array().map_or(0, Vec::len)));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (secs, kb, n) = runs[runs.len() / 2];
        let label = format!("--filter {filter} ({n} functions)");
        println!("{label:<44} {secs:>10.2} {:>12.0}", kb / 1024.0);
    }
    Ok(())
}

/// Builds the release `chronicle` binary; returns its path.
fn release_cli() -> Result<std::path::PathBuf> {
    let root = workspace_root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "chronicle-cli"])
        .current_dir(&root)
        .status()?;
    ensure!(status.success(), "building chronicle failed");
    Ok(root.join("target/release/chronicle"))
}

fn median(runs: usize, mut f: impl FnMut() -> Result<u64>) -> Result<u64> {
    let mut v = (0..runs).map(|_| f()).collect::<Result<Vec<_>>>()?;
    v.sort_unstable();
    Ok(v[v.len() / 2])
}

fn parse_elapsed(stdout: &str) -> Result<u64> {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "elapsed_ns")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("hot printed no elapsed_ns")
}

fn untraced(hot: &Path, calls: u64, mode: &str) -> Result<u64> {
    let out = Command::new(hot)
        .arg(calls.to_string())
        .arg(mode)
        .output()?;
    parse_elapsed(&String::from_utf8_lossy(&out.stdout))
}

fn traced_run(
    chronicle: &Path,
    hot: &Path,
    db: &Path,
    function: &str,
    calls: u64,
    mode: &str,
    rate: f64,
) -> Result<(u64, u64)> {
    let out = Command::new(chronicle)
        .args(["attach", "--progress", "0", "--func", function])
        .args(["--sampling-rate", &rate.to_string(), "--db"])
        .arg(db)
        .arg("--")
        .arg(hot)
        .arg(calls.to_string())
        .arg(mode)
        .output()?;
    ensure!(
        out.status.success(),
        "chronicle attach failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = parse_elapsed(&String::from_utf8_lossy(&out.stdout))?;
    let listed = Command::new(chronicle)
        .args(["functions", "--json", "--db"])
        .arg(db)
        .output()?;
    let list: serde_json::Value =
        serde_json::from_slice(&listed.stdout).context("chronicle functions --json")?;
    // With nothing sampled there is nothing stored, and no function listed.
    let records = list[0]["calls"].as_u64().unwrap_or(0);
    Ok((ns, records))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
