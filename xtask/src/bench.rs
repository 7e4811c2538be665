//! Benchmarks (`cargo xtask bench <name>`). Figures go to BENCHMARKS.md by hand, with the
//! command that produced them. Timings live here, never in tests.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::ebpf::workspace_root;

mod otlp;
mod store;

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark: `capture` (cost of tracing a hot function), `store` (records/s into
    /// a backend) or `otlp` (spans/s to a loopback OTLP/HTTP receiver).
    pub name: String,
    /// Calls per run (`capture`).
    #[arg(long, default_value_t = 200_000)]
    pub calls: u64,
    /// Records per run (`store`, `otlp`).
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
}

pub fn run(args: Args) -> Result<()> {
    match args.name.as_str() {
        "capture" => capture(&args),
        "store" | "otlp" if cfg!(debug_assertions) => release(),
        "store" => store::run(&args),
        "otlp" => otlp::run(&args),
        other => bail!("unknown benchmark `{other}`; available: capture, store, otlp"),
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
fn capture(args: &Args) -> Result<()> {
    ensure!(
        is_root(),
        "the capture benchmark attaches eBPF probes: run it as root"
    );
    let root = workspace_root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "chronicle-cli"])
        .current_dir(&root)
        .status()?;
    ensure!(status.success(), "building chronicle failed");
    let chronicle = root.join("target/release/chronicle");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    println!(
        "capture benchmark: {} calls per run, median of {} runs",
        args.calls, args.runs
    );
    println!(
        "{:<34} {:>12} {:>14} {:>14} {:>16}",
        "condition", "calls/s", "ns per call", "ns added", "records/calls"
    );
    // -O0 functions start with `push %rbp`, which the kernel emulates; -O2 ones start with an
    // instruction it must single-step out of line, which costs far more in a VM.
    for (opt, function, mode) in [
        ("-O0", "cheap", "int"),
        ("-O2", "cheap", "int"),
        ("-O2", "label", "str"),
    ] {
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
            let (ns, records) = traced_run(&chronicle, &hot, &db, function, args.calls, mode)?;
            traced.push(ns);
            if records != args.calls {
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
) -> Result<(u64, u64)> {
    let out = Command::new(chronicle)
        .args(["attach", "--progress", "0", "--func", function, "--db"])
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
    let records = list[0]["calls"]
        .as_u64()
        .context("chronicle functions printed no calls count")?;
    Ok((ns, records))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
