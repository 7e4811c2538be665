//! In-kernel sampling: `attach --sampling-rate R` keeps about R of the calls, counts the rest
//! as sampled out (not as drops), and never loses a kept call.

use chronicle_tests::{Opt, bpf_available, build_c, chronicle, scratch};

/// `(calls, stored, sampled out, unwound, dropped)` from attach's summary table.
fn summary_row(stderr: &str, function: &str) -> [u64; 5] {
    let line = stderr
        .lines()
        .find(|l| l.split_whitespace().next() == Some(function))
        .unwrap_or_else(|| panic!("no summary row for {function} in:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    [numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]]
}

fn traced(test: &str, rate: &str, calls: u64) -> [u64; 5] {
    let dir = scratch(test);
    let hot = build_c("hot", Opt::O2);
    let db = dir.join("chronicle.db");
    let out = chronicle(&[
        "attach",
        "--progress",
        "0",
        "--sampling-rate",
        rate,
        "--func",
        "cheap",
        "--db",
        db.to_str().unwrap(),
        "--",
        hot.to_str().unwrap(),
        &calls.to_string(),
        "int",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    summary_row(&stderr, "cheap")
}

#[test]
fn a_tenth_is_kept_and_the_rest_counted_as_sampled_out() {
    if !bpf_available("a_tenth_is_kept_and_the_rest_counted_as_sampled_out") {
        return;
    }
    let [calls, stored, sampled_out, unwound, dropped] = traced("sampling_tenth", "0.1", 20_000);
    assert_eq!((calls, unwound, dropped), (20_000, 0, 0));
    assert_eq!(stored + sampled_out, 20_000);
    // Binomial(20 000, 0.1): mean 2 000, standard deviation 42; ±300 is over 7 deviations.
    assert!(
        (1_700..=2_300).contains(&stored),
        "stored {stored} of 20 000"
    );
}

#[test]
fn rate_zero_keeps_nothing_and_one_keeps_everything() {
    if !bpf_available("rate_zero_keeps_nothing_and_one_keeps_everything") {
        return;
    }
    assert_eq!(traced("sampling_zero", "0", 5_000), [5_000, 0, 5_000, 0, 0]);
    assert_eq!(traced("sampling_one", "1", 5_000), [5_000, 5_000, 0, 0, 0]);
}

#[test]
fn an_invalid_rate_is_a_usage_error() {
    let out = chronicle(&[
        "attach",
        "--sampling-rate",
        "1.5",
        "--func",
        "f",
        "--pid",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value '1.5' for '--sampling-rate <RATE>': expected a number from 0 to 1, got `1.5`"),
        "{stderr}"
    );
}
