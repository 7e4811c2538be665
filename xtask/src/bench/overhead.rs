//! `cargo xtask bench overhead`: the per-call cost of capturing a hot function, side by side
//! in one run: `score(long, long, long, const char *)` from `tests/fixtures/hot.c`, built at
//! -O0, -O2, and -O2 with `-fpatchable-function-entry=5`, under
//! (a) no probe, (b) bare entry + return probes (bpftrace with empty actions: the floor),
//! (b') a bare entry probe alone, (c) Chronicle storing every call in SQLite,
//! (d) Chronicle at sampling 0.01 (decided in the kernel), and (e) bpftrace printing the same
//! values (three integers, the string, the return value) to a file.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use super::{Args, is_root, parse_elapsed, release_cli};
use crate::ebpf::workspace_root;

/// The traced function.
const FUNCTION: &str = "score";

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        is_root(),
        "the overhead benchmark attaches eBPF probes: run it as root"
    );
    ensure!(
        Command::new("bpftrace").arg("--version").output().is_ok(),
        "the overhead benchmark compares with bpftrace: apt-get install bpftrace"
    );
    let root = workspace_root();
    let chronicle = release_cli()?;
    let dir = root.join("target/bench/overhead");
    std::fs::create_dir_all(&dir)?;
    println!(
        "overhead benchmark: {FUNCTION}(long, long, long, const char *) -> long, {} calls per run, \
         median of {} runs (conditions round-robin)",
        args.calls, args.runs
    );
    println!(
        "{:<12} {:<34} {:>12} {:>12} {:>10}",
        "build", "condition", "ns per call", "ns added", "records"
    );
    let builds: &[(&str, &[&str])] = &[
        ("-O0", &["-O0"]),
        ("-O2", &["-O2"]),
        ("-O2 +nops", &["-O2", "-fpatchable-function-entry=5"]),
    ];
    for &(label, flags) in builds {
        let hot = dir.join(format!("hot{}", label.replace([' ', '+'], "")));
        let status = Command::new("cc")
            .args(["-g"])
            .args(flags)
            .arg("-o")
            .arg(&hot)
            .arg(root.join("tests/fixtures/hot.c"))
            .status()
            .context("running cc")?;
        ensure!(status.success(), "compiling hot.c failed");
        let hot_s = hot.to_str().context("utf-8 path")?;
        let calls = args.calls.to_string();
        let bare = format!("uprobe:{hot_s}:{FUNCTION} {{}} uretprobe:{hot_s}:{FUNCTION} {{}}");
        let entry_only = format!("uprobe:{hot_s}:{FUNCTION} {{}}");
        let printing = format!(
            "uprobe:{hot_s}:{FUNCTION} {{ printf(\"%d %d %d %s\\n\", arg0, arg1, arg2, str(arg3)); }} \
             uretprobe:{hot_s}:{FUNCTION} {{ printf(\"%d\\n\", retval); }}"
        );
        let conditions: Vec<(&str, Condition)> = vec![
            ("(a) no probe", Condition::Plain),
            ("(b) bare entry + return probes", Condition::Bpftrace(bare)),
            ("(b') bare entry probe", Condition::Bpftrace(entry_only)),
            (
                "(c) chronicle, every call stored",
                Condition::Chronicle(1.0),
            ),
            ("(d) chronicle, sampling 0.01", Condition::Chronicle(0.01)),
            (
                "(e) bpftrace printing to a file",
                Condition::Bpftrace(printing),
            ),
        ];
        let mut times = vec![Vec::new(); conditions.len()];
        let mut stored = vec![Vec::new(); conditions.len()];
        for run in 0..args.runs {
            for (i, (_, condition)) in conditions.iter().enumerate() {
                let (ns, records) =
                    condition.run(&chronicle, &hot, &calls, &dir, run, args.ring_mb)?;
                times[i].push(ns);
                stored[i].push(records);
            }
        }
        let per = |ns: u64| ns as f64 / args.calls as f64;
        let medians: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_unstable();
                per(t[t.len() / 2])
            })
            .collect();
        for (i, (name, condition)) in conditions.iter().enumerate() {
            let records = match condition {
                Condition::Chronicle(rate) if *rate >= 1.0 => {
                    if stored[i].iter().all(|&n| n == Some(args.calls)) {
                        "all".to_owned()
                    } else {
                        format!("{:?}", stored[i])
                    }
                }
                Condition::Chronicle(_) => format!("~{}", stored[i][0].unwrap_or(0)),
                _ => "-".to_owned(),
            };
            let added = if i == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}", medians[i] - medians[0])
            };
            println!(
                "{label:<12} {name:<34} {:>12.0} {added:>12} {records:>10}",
                medians[i]
            );
        }
        let added = |i: usize| medians[i] - medians[0];
        println!(
            "{label:<12} ratios: (c)/(e) = {:.2}, (c)/(b) = {:.2}, (d)/(b') = {:.2}",
            added(3) / added(5),
            added(3) / added(1),
            added(4) / added(2)
        );
    }
    Ok(())
}

enum Condition {
    Plain,
    Bpftrace(String),
    Chronicle(f64),
}

impl Condition {
    /// Runs the fixture once; returns its loop time and, for Chronicle, the records stored.
    fn run(
        &self,
        chronicle: &Path,
        hot: &Path,
        calls: &str,
        dir: &Path,
        run: usize,
        ring_mb: u32,
    ) -> Result<(u64, Option<u64>)> {
        let command = format!("{} {calls} score", hot.display());
        let out = match self {
            Condition::Plain => Command::new(hot).args([calls, "score"]).output()?,
            Condition::Bpftrace(program) => Command::new("bpftrace")
                .arg("-o")
                .arg(dir.join("bpftrace.out"))
                .args(["-e", program, "-c", &command])
                .output()
                .context("running bpftrace")?,
            Condition::Chronicle(rate) => {
                let db = dir.join(format!("overhead-{run}.db"));
                let _ = std::fs::remove_file(&db);
                let out = Command::new(chronicle)
                    .args(["attach", "--progress", "0", "--func", FUNCTION])
                    .args(["--sampling-rate", &rate.to_string()])
                    .args(["--ring-buffer-mb", &ring_mb.to_string(), "--db"])
                    .arg(&db)
                    .arg("--")
                    .arg(hot)
                    .args([calls, "score"])
                    .output()?;
                ensure!(
                    out.status.success(),
                    "chronicle attach failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let listed = Command::new(chronicle)
                    .args(["functions", "--json", "--db"])
                    .arg(&db)
                    .output()?;
                let list: serde_json::Value =
                    serde_json::from_slice(&listed.stdout).context("chronicle functions --json")?;
                let ns = parse_elapsed(&String::from_utf8_lossy(&out.stdout))?;
                return Ok((ns, Some(list[0]["calls"].as_u64().unwrap_or(0))));
            }
        };
        let ns = parse_elapsed(&String::from_utf8_lossy(&out.stdout))
            .with_context(|| format!("no timing: {}", String::from_utf8_lossy(&out.stderr)))?;
        Ok((ns, None))
    }
}
