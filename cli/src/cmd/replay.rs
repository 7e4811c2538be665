//! `chronicle replay`: make the recorded calls of a function again against a rebuilt binary
//! and report what changed.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chronicle::replay::{IgnoreRules, ReplayCase, ReplayEngine, ReplayTarget, detect_noise};
use chronicle::storage::match_function;

use super::{StoreArgs, open_store};
use crate::Failure;

/// Replay recorded calls of a function against a rebuilt binary and compare the results.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    chronicle replay orders::process_order --binary target/release/orders\n  \
    chronicle replay process_order --binary ./orders-v2 --ignore '$.created_at' --json\n  \
    chronicle replay --spec calls.json --binary ./liborders.so\n\n\
    Exit status: 0 when every call passed (or was skipped), 1 when any failed or errored.")]
pub struct Args {
    /// Function: its full name, or the last part of it when that is unique. Optional with
    /// --spec (which names it).
    #[arg(value_name = "FUNC", required_unless_present = "spec")]
    pub function: Option<String>,
    /// The rebuilt executable or shared library (.so) to call.
    #[arg(long, value_name = "PATH")]
    pub binary: PathBuf,
    /// Replay at most this many calls (the oldest).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Replay the calls in a spec file (the export format) instead of the store.
    #[arg(long, value_name = "FILE.json")]
    pub spec: Option<PathBuf>,
    /// A call still running after this long is killed and counts as an error.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Run every call in a new process (for functions that keep global state).
    #[arg(long)]
    pub fresh_child: bool,
    /// Do not compare the value at this path of the return value: `$.created_at`,
    /// `$.items[*].id`, `$..trace_id`. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub ignore: Vec<String>,
    /// Do not compare paths this regex matches (`_at$`). Repeatable.
    #[arg(long, value_name = "REGEX")]
    pub ignore_regex: Vec<String>,
    /// Find noisy fields first: replay each call twice against this (old) binary and
    /// ignore whatever differs between the two runs.
    #[arg(long, value_name = "OLD_BINARY")]
    pub noise_from: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    let mut ignore = IgnoreRules::default();
    for path in &args.ignore {
        ignore = ignore.path(path)?;
    }
    for re in &args.ignore_regex {
        ignore = ignore.regex(re)?;
    }

    let (function, cases) = match &args.spec {
        Some(spec) => read_spec(spec, args.function.as_deref())?,
        None => {
            let storage = open_store(&args.store)?;
            let reading = || format!("reading {}", args.store.location());
            let known = storage.function_names().with_context(reading)?;
            let function = match_function(args.function.as_deref().unwrap_or_default(), &known)?;
            let cases = ReplayEngine::new(storage.as_ref())
                .cases(&function, args.limit)
                .with_context(reading)?;
            (function, cases)
        }
    };
    let cases: Vec<ReplayCase> = match args.limit {
        Some(n) => cases.into_iter().take(n).collect(),
        None => cases,
    };

    let mut target = native_target(&args.binary, &args)?;
    if let Some(old) = &args.noise_from {
        let mut old = native_target(old, &args)?;
        let noise = detect_noise(&cases, old.as_mut());
        if !noise.describe().is_empty() {
            eprintln!(
                "ignoring fields that differ between two runs of {}: {}",
                old.name(),
                noise.describe().join(", ")
            );
        }
        ignore = ignore.merge(noise);
    }

    let show_progress = !args.json && std::io::stderr().is_terminal();
    let mut engine = ReplayEngine::without_storage().ignore(ignore);
    if show_progress {
        engine = engine.on_progress(|done, total| {
            if done == total || done % 50 == 0 {
                eprint!("\rreplaying {done}/{total}");
                if done == total {
                    eprint!("\r\x1b[K");
                }
            }
        });
    }
    let report = engine.replay_cases(&function, &cases, target.as_mut());

    let mut out = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json()).context("rendering json")?;
        writeln!(out, "{text}").context("writing to stdout")?;
    } else {
        write!(out, "{report}").context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(if report.ok() {
        crate::exit::OK
    } else {
        crate::exit::DIFFERENCES
    })
}

fn read_spec(path: &PathBuf, function: Option<&str>) -> Result<(String, Vec<ReplayCase>), Failure> {
    let reading = || format!("reading {}", path.display());
    let text = std::fs::read_to_string(path).with_context(reading)?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(reading)?;
    let cases = ReplayCase::from_export(&json).with_context(reading)?;
    let known: Vec<String> = {
        let mut names: Vec<String> = cases.iter().map(|c| c.function.clone()).collect();
        names.sort();
        names.dedup();
        names
    };
    let function = match (function, known.as_slice()) {
        (Some(f), _) => match_function(f, &known)?,
        (None, [one]) => one.clone(),
        (None, []) => return Err(anyhow::anyhow!("{} holds no calls", path.display()).into()),
        (None, many) => {
            return Err(anyhow::anyhow!(
                "{} holds calls of several functions ({}); name one",
                path.display(),
                many.join(", ")
            )
            .into());
        }
    };
    let cases = cases
        .into_iter()
        .filter(|c| c.function == function)
        .collect();
    Ok((function, cases))
}

#[cfg(target_os = "linux")]
fn native_target(binary: &std::path::Path, args: &Args) -> Result<Box<dyn ReplayTarget>, Failure> {
    use chronicle_agent::replay::{NativeOptions, NativeTarget, ReplayTargetError};
    let options = NativeOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        fresh_child: args.fresh_child,
    };
    match NativeTarget::new(binary, options) {
        Ok(target) => Ok(Box::new(target)),
        Err(e @ ReplayTargetError::Spawn { .. }) => Err(Failure::environment(e)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn native_target(binary: &std::path::Path, args: &Args) -> Result<Box<dyn ReplayTarget>, Failure> {
    let _ = (args.timeout_ms, args.fresh_child);
    Err(Failure::environment(anyhow::anyhow!(
        "replaying against a native binary ({}) needs Linux and ptrace; \
         replay #[capture]d Rust functions in-process with ReplayEngine::replay_with",
        binary.display()
    )))
}
