//! `chronicle functions`: what has been recorded, one line per function.

use std::io::Write;

use anyhow::Context;
use chronicle::export::function_summary_json;
use chronicle::storage::FunctionSummary;
use chronicle::time::rfc3339_seconds;

use super::{StoreArgs, open_store};
use crate::Failure;

/// List the recorded functions with call counts, errors, latency and build IDs.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    let storage = open_store(&args.store)?;
    let summaries = storage
        .functions()
        .with_context(|| format!("reading {}", args.store.location()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let array: Vec<_> = summaries.iter().map(function_summary_json).collect();
        let text = serde_json::to_string_pretty(&array).context("rendering json")?;
        writeln!(out, "{text}").context("writing to stdout")?;
    } else if summaries.is_empty() {
        writeln!(
            out,
            "no calls recorded in {}; run `chronicle attach` to record some",
            args.store.location()
        )
        .context("writing to stdout")?;
    } else {
        out.write_all(table(&summaries).as_bytes())
            .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(crate::exit::OK)
}

const BUILD_ID_CHARS: usize = 12;

/// The summaries as an aligned table: text left-aligned, numbers right-aligned.
fn table(summaries: &[FunctionSummary]) -> String {
    const HEADER: [&str; 9] = [
        "FUNCTION",
        "CALLS",
        "ERRORS",
        "UNWOUND",
        "P50",
        "P99",
        "FIRST SEEN",
        "LAST SEEN",
        "BUILD IDS",
    ];
    const RIGHT: [bool; 9] = [false, true, true, true, true, true, false, false, false];
    let mut rows: Vec<[String; 9]> = vec![HEADER.map(String::from)];
    for f in summaries {
        let build_ids: Vec<&str> = f
            .build_ids
            .iter()
            .map(|id| id.get(..BUILD_ID_CHARS).unwrap_or(id))
            .collect();
        rows.push([
            f.function.clone(),
            f.calls.to_string(),
            f.errors.to_string(),
            f.unwound.to_string(),
            f.p50_ns.map_or_else(|| "-".into(), human_duration),
            f.p99_ns.map_or_else(|| "-".into(), human_duration),
            rfc3339_seconds(f.first_seen),
            rfc3339_seconds(f.last_seen),
            if build_ids.is_empty() {
                "-".into()
            } else {
                build_ids.join(",")
            },
        ]);
    }
    super::render_table(&rows, &RIGHT)
}

/// `850ns`, `1.2µs`, `3.4ms`, `2.0s`: one decimal in the largest unit that keeps the number
/// below 1000.
pub(crate) fn human_duration(ns: u64) -> String {
    if ns < 1000 {
        return format!("{ns}ns");
    }
    let mut value = ns as f64 / 1000.0;
    for unit in ["µs", "ms"] {
        // Decide on the rounded value, so 999_960ns is `1.0ms`, not `1000.0µs`.
        if format!("{value:.1}").parse::<f64>().unwrap_or(value) < 1000.0 {
            return format!("{value:.1}{unit}");
        }
        value /= 1000.0;
    }
    format!("{value:.1}s")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn human_durations() {
        let cases = [
            (0, "0ns"),
            (999, "999ns"),
            (1000, "1.0µs"),
            (1234, "1.2µs"),
            (999_940, "999.9µs"),
            (999_960, "1.0ms"),
            (3_400_000, "3.4ms"),
            (2_000_000_000, "2.0s"),
            (125_000_000_000, "125.0s"),
        ];
        for (ns, expect) in cases {
            assert_eq!(human_duration(ns), expect, "{ns}ns");
        }
    }

    #[test]
    fn aligned_table() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let summaries = [
            FunctionSummary {
                function: "orders::process_order".into(),
                calls: 1200,
                errors: 3,
                unwound: 0,
                p50_ns: Some(1234),
                p99_ns: Some(3_400_000),
                first_seen: at(1_795_721_401),
                last_seen: at(1_795_721_461),
                build_ids: vec![
                    "0123456789abcdef0123456789abcdef01234567".into(),
                    "fedcba9876543210".into(),
                ],
                binaries: vec!["/usr/bin/orders".into()],
            },
            FunctionSummary {
                function: "main".into(),
                calls: 1,
                errors: 0,
                unwound: 1,
                p50_ns: None,
                p99_ns: None,
                first_seen: at(0),
                last_seen: at(0),
                build_ids: vec![],
                binaries: vec!["/usr/bin/orders".into()],
            },
        ];
        assert_eq!(
            table(&summaries),
            "\
FUNCTION               CALLS  ERRORS  UNWOUND    P50    P99  FIRST SEEN            LAST SEEN             BUILD IDS
orders::process_order   1200       3        0  1.2µs  3.4ms  2026-11-26T19:30:01Z  2026-11-26T19:31:01Z  0123456789ab,fedcba987654
main                       1       0        1      -      -  1970-01-01T00:00:00Z  1970-01-01T00:00:00Z  -
"
        );
    }
}
