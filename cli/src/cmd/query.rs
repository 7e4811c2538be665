//! `chronicle query`: the recorded calls of a function, filtered, as a table or JSON.

use std::io::Write;
use std::time::SystemTime;

use anyhow::Context;
use chronicle::analysis::{
    CallFilter, Scope, call_json, parse_condition, parse_since, query_calls,
};
use chronicle::export::{dependency_json, dependency_summary};
use chronicle::storage::match_function;
use chronicle::time::rfc3339_seconds;

use super::functions::human_duration;
use super::{StoreArgs, open_store, render_table};
use crate::Failure;

/// Show recorded calls of a function: the newest, the failed or the slowest ones.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    chronicle query process_order --errors --since 24h\n  \
    chronicle query process_order --slowest 10\n  \
    chronicle query process_order --where order.customer.name=alice --json")]
pub struct Args {
    /// Function: its full name, or the last part of it when that is unique.
    #[arg(value_name = "FUNC")]
    pub function: String,
    /// Only calls that failed (status error or unwound).
    #[arg(long)]
    pub errors: bool,
    /// The N slowest calls, slowest first.
    #[arg(long, value_name = "N", conflicts_with = "limit")]
    pub slowest: Option<usize>,
    /// Only calls since then: 30m, 24h, 7d, 2w, or a date (2026-11-01) or RFC 3339 time.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only calls whose argument at PATH reads VALUE (order.customer.name=alice,
    /// items[0].qty=3). Repeatable; all must hold.
    #[arg(long = "where", value_name = "PATH=VALUE")]
    pub conditions: Vec<String>,
    /// At most this many calls (newest first).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Print the calls as a JSON array (the export format).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    let storage = open_store(&args.store)?;
    let reading = || format!("reading {}", args.store.location());
    let known = storage.function_names().with_context(reading)?;
    let function = match_function(&args.function, &known)?;
    let since = match &args.since {
        Some(text) => Some(parse_since(text, SystemTime::now()).ok_or_else(|| {
            anyhow::anyhow!(
                "--since {text}: write a duration (30m, 24h, 7d, 2w) or a date (2026-11-01)"
            )
        })?),
        None => None,
    };
    let conditions = args
        .conditions
        .iter()
        .map(|c| parse_condition(c))
        .collect::<Result<Vec<_>, _>>()?;
    let filter = CallFilter {
        scope: Scope {
            since,
            ..Scope::function(function)
        },
        errors: args.errors,
        slowest: args.slowest,
        conditions,
        limit: args.limit,
    };
    let calls = query_calls(storage.as_ref(), &filter).with_context(reading)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json: Vec<_> = calls.iter().map(chronicle::export::record_json).collect();
        let text = serde_json::to_string_pretty(&json).context("rendering json")?;
        writeln!(out, "{text}").context("writing to stdout")?;
    } else if calls.is_empty() {
        writeln!(out, "no calls of {} match", filter.scope.function)
            .context("writing to stdout")?;
    } else {
        // What the calls did outside themselves, when any did.
        let with_dependencies = calls.iter().any(|r| !r.dependencies.is_empty());
        let mut header = vec!["ID", "STARTED", "DURATION", "STATUS", "ARGS", "RETURN"];
        if with_dependencies {
            header.push("MADE");
        }
        let mut rows: Vec<Vec<String>> = vec![header.into_iter().map(String::from).collect()];
        for r in &calls {
            let j = call_json(r);
            let mut row = vec![
                r.id.map_or("-".into(), |id| id.to_string()),
                rfc3339_seconds(r.timestamp),
                r.duration_ns.map_or_else(|| "-".into(), human_duration),
                r.status.as_str().into(),
                clip(&compact(&j["args"]), 60),
                clip(&j["return"].to_string(), 40),
            ];
            if with_dependencies {
                let made: Vec<String> = r
                    .dependencies
                    .iter()
                    .map(|d| dependency_summary(&dependency_json(d)))
                    .collect();
                row.push(clip(&made.join("; "), 50));
            }
            rows.push(row);
        }
        let right = [true, false, true, false, false, false, false];
        out.write_all(render_table(&rows, &right[..rows[0].len()]).as_bytes())
            .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(crate::exit::OK)
}

/// `name=value, ...` of an argument object.
fn compact(args: &serde_json::Value) -> String {
    match args.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => args.to_string(),
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}
