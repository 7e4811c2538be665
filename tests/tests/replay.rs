//! Capture the orders service v1 by pid, then replay the calls against rebuilt binaries:
//! v2 (a refactor, same behaviour) passes every call; v2b (a changed express fee) fails
//! exactly the express orders, with the difference; builds that crash or hang give errors
//! with the reason and the calls after them still run.

use std::path::{Path, PathBuf};

use chronicle_tests::OrdersVariant::{V1, V2, V2Changed, V2CrashOnExpress, V2HangOnExpress};
use chronicle_tests::{
    Running, bpf_available, build_id, build_orders_c, build_orders_c_so, build_orders_rust,
    chronicle, chronicle_ok, export, scratch,
};
use serde_json::{Value, json};

/// Attaches to a running service for a second; returns the database.
fn capture(service: &Path, functions: &[&str], name: &str) -> PathBuf {
    let dir = scratch(name);
    let running = Running::start(service, &["--interval-ms", "5"]);
    let db = dir.join("chronicle.db");
    let pid = running.pid().to_string();
    let mut args = vec![
        "attach",
        "--pid",
        &pid,
        "--duration",
        "1",
        "--db",
        db.to_str().unwrap(),
    ];
    for f in functions {
        args.extend(["--func", f]);
    }
    chronicle_ok(&args);
    db
}

/// `chronicle replay FUNC --binary BINARY --json EXTRA...`: the report and the exit code.
fn replay(db: &Path, function: &str, binary: &Path, extra: &[&str]) -> (Value, i32) {
    let mut args = vec![
        "replay",
        function,
        "--binary",
        binary.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    let out = chronicle(&args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "replay {args:?} printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.code().unwrap_or(-1))
}

/// `(passed, failed, errors, skipped)` of a report, checked against its total.
fn counts(report: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| report[k].as_u64().unwrap();
    let c = (n("passed"), n("failed"), n("errors"), n("skipped"));
    assert_eq!(c.0 + c.1 + c.2 + c.3, n("total"), "{report}");
    c
}

/// Every call of `function` in `db` replays against `binary` and passes.
#[track_caller]
fn check_all_pass(db: &Path, function: &str, binary: &Path) {
    let records = export(db, function);
    assert!(
        records.len() >= 8,
        "{function}: only {} calls captured",
        records.len()
    );
    let (report, code) = replay(db, function, binary, &[]);
    assert_eq!(
        counts(&report),
        (records.len() as u64, 0, 0, 0),
        "{function}: {report:#}"
    );
    assert_eq!(code, 0);
    assert_eq!(report["function"], function);
    assert_eq!(
        report["binary"],
        binary.canonicalize().unwrap().to_str().unwrap()
    );
}

/// Call IDs of the records whose argument `arg` has `express` set.
fn express_ids(
    db: &Path,
    function: &str,
    arg: &str,
    is_express: impl Fn(&Value) -> bool,
) -> Vec<i64> {
    export(db, function)
        .iter()
        .filter(|r| is_express(&r["args"][arg]["express"]))
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn c_service_replays_on_a_refactor_and_catches_a_changed_fee() {
    if !bpf_available("c_service_replays_on_a_refactor_and_catches_a_changed_fee") {
        return;
    }
    let functions = ["order_total", "order_tier", "make_quote", "shipping_zone"];
    let v1 = build_orders_c(V1).service;
    let db = capture(&v1, &[&functions[..], &["with_tax"]].concat(), "replay-c");

    // The captured values are exact, so the replay has something to compare.
    let first = &export(&db, "make_quote")[0];
    assert_eq!(first["args"], json!({"units": 15, "cents_each": 1250}));
    assert_eq!(
        first["return"],
        json!({"subtotal": 18750, "discount_pct": 5})
    );

    let v2 = build_orders_c(V2).service;
    for f in functions {
        check_all_pass(&db, f, &v2);
    }

    // v2b charges 650 instead of 500 for express orders: exactly those calls fail.
    let v2b = build_orders_c(V2Changed).service;
    let (report, code) = replay(&db, "order_total", &v2b, &[]);
    assert_eq!(code, 1, "a failed call makes the exit status 1");
    let express = express_ids(&db, "order_total", "o", |e| e == &json!(1));
    let records = export(&db, "order_total");
    assert_eq!(
        counts(&report),
        (
            (records.len() - express.len()) as u64,
            express.len() as u64,
            0,
            0
        )
    );
    for result in report["results"].as_array().unwrap() {
        let id = result["call_id"].as_i64().unwrap();
        let record = records.iter().find(|r| r["id"] == id).unwrap();
        let expected = record["return"].as_i64().unwrap();
        if express.contains(&id) {
            assert_eq!(result["status"], "failed");
            assert_eq!(
                result["difference"],
                json!([{"path": "$", "expected": expected, "actual": expected + 150,
                        "text": format!("$: {expected} → {}", expected + 150)}])
            );
        } else {
            assert_eq!(result["status"], "passed", "{result}");
        }
    }
    // No tier changes with the new fee.
    let (report, _) = replay(&db, "order_tier", &v2b, &[]);
    assert_eq!(counts(&report).1, 0);

    // The human report.
    let out = chronicle(&[
        "replay",
        "order_total",
        "--binary",
        v2b.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--limit",
        "4",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "Replay Report: order_total\n{}\nBinary:       {} (build {})\nCaptured on:  {} (build {})\n\
             Total calls:  4\nPassed:       2 (50.0%)\nFailed:       2\nErrors:       0\n",
            "=".repeat(50),
            v2b.canonicalize().unwrap().display(),
            &build_id(&v2b)[..12],
            v1.display(),
            &build_id(&v1)[..12],
        )),
        "{text}"
    );
    assert!(
        text.contains("\nfailed call ") && text.contains("  $: 1524 → 1674\n"),
        "{text}"
    );

    // Crashes and hangs are errors with their reason; the calls after them still run in a
    // new child.
    let (report, code) = replay(
        &db,
        "order_total",
        &build_orders_c(V2CrashOnExpress).service,
        &["--limit", "8"],
    );
    assert_eq!(code, 1);
    assert_eq!(counts(&report), (4, 0, 4, 0), "{report:#}");
    for r in report["results"].as_array().unwrap() {
        if r["status"] == "error" {
            assert!(
                r["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("crashed with SIGSEGV at 0x"),
                "{r}"
            );
        }
    }
    let (report, _) = replay(
        &db,
        "order_total",
        &build_orders_c(V2HangOnExpress).service,
        &["--limit", "4", "--timeout-ms", "200"],
    );
    assert_eq!(counts(&report), (2, 0, 2, 0), "{report:#}");
    let reasons: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["timed out after 200 ms (--timeout-ms)"; 2]);

    // A fresh child per call gives the same results.
    let (report, _) = replay(&db, "make_quote", &v2, &["--limit", "8", "--fresh-child"]);
    assert_eq!(counts(&report), (8, 0, 0, 0));

    // The same functions in a shared library, loaded into a host process.
    let (report, _) = replay(
        &db,
        "order_total",
        &build_orders_c_so(V2Changed),
        &["--limit", "8"],
    );
    assert_eq!(counts(&report), (4, 4, 0, 0), "{report:#}");
    let (report, _) = replay(&db, "shipping_zone", &build_orders_c_so(V2), &[]);
    assert_eq!(counts(&report).0, export(&db, "shipping_zone").len() as u64);

    // A spec file (the export format) replays like the store.
    let spec = db.with_file_name("order_total.json");
    chronicle_ok(&[
        "export",
        "order_total",
        "-o",
        spec.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--limit",
        "8",
    ]);
    let out = chronicle(&[
        "replay",
        "--spec",
        spec.to_str().unwrap(),
        "--binary",
        v2b.to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts(&report), (4, 4, 0, 0));
    assert_eq!(report["function"], "order_total");

    // `with_tax(double amount, int pct)` gets `amount` in xmm0, which probes cannot read:
    // its calls are skipped and counted with the reason, and the exit status stays 0.
    let taxed = export(&db, "with_tax");
    let (report, code) = replay(&db, "with_tax", &v2, &[]);
    assert_eq!((counts(&report), code), ((0, 0, 0, taxed.len() as u64), 0));
    assert_eq!(
        report["skipped_reasons"],
        json!({"input amount was not captured: in FP register": taxed.len()})
    );
    // With the amounts filled in (a spec), the call passes `amount` in xmm0 and reads the
    // double returned in xmm0.
    // The last expectation is wrong on purpose: floats are compared, not assumed.
    let spec: Vec<Value> = [
        (1250.0, 1487.5),
        (999.0, 1188.81),
        (30000.0, 35700.0),
        (1500.0, 1785.5),
    ]
    .iter()
    .enumerate()
    .map(|(i, (amount, taxed))| {
        let mut r = export(&db, "with_tax")[0].clone();
        r["id"] = json!(i);
        r["args"] = json!({"amount": amount, "pct": 19});
        r["return"] = json!(taxed);
        r["unavailable"] = json!({});
        r
    })
    .collect();
    let spec_path = db.with_file_name("with_tax.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = chronicle(&[
        "replay",
        "--spec",
        spec_path.to_str().unwrap(),
        "--binary",
        v2.to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts(&report), (3, 1, 0, 0), "{report:#}");
    assert_eq!(
        report["results"][3]["difference"][0]["text"],
        "$: 1785.5 → 1785.0"
    );

    // Ignoring the return value makes the changed fee pass.
    let (report, code) = replay(&db, "order_total", &v2b, &["--limit", "8", "--ignore", "$"]);
    assert_eq!((counts(&report), code), ((8, 0, 0, 0), 0));
}

#[test]
fn rust_service_replays_on_a_refactor_and_catches_a_changed_fee() {
    if !bpf_available("rust_service_replays_on_a_refactor_and_catches_a_changed_fee") {
        return;
    }
    let functions = [
        "orders::order_total",
        "orders::shipping_zone",
        "orders::quote",
        "orders::label",
    ];
    let db = capture(&build_orders_rust(V1).service, &functions, "replay-rust");

    // `Result` returns decode exactly; `Err` is status error.
    let quotes: Vec<Value> = export(&db, "orders::quote")[..4]
        .iter()
        .map(|r| json!([r["args"], r["return"], r["status"]]))
        .collect();
    assert_eq!(
        quotes,
        [
            json!([{"units": 3, "cents_each": 1250}, {"Ok": 3750}, "ok"]),
            json!([{"units": 1, "cents_each": 999}, {"Ok": 999}, "ok"]),
            json!([{"units": 0, "cents_each": 1500}, {"Err": "NoUnits"}, "error"]),
            json!([{"units": 2000, "cents_each": 30}, {"Err": "TooMany"}, "error"]),
        ]
    );

    let v2 = build_orders_rust(V2).service;
    for f in functions {
        check_all_pass(&db, f, &v2);
    }

    let v2b = build_orders_rust(V2Changed).service;
    let (report, code) = replay(&db, "orders::order_total", &v2b, &[]);
    assert_eq!(code, 1);
    let express = express_ids(&db, "orders::order_total", "order", |e| e == &json!(true));
    let total = export(&db, "orders::order_total").len();
    assert_eq!(
        counts(&report),
        ((total - express.len()) as u64, express.len() as u64, 0, 0)
    );
    let texts: std::collections::BTreeSet<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["difference"].as_array().unwrap())
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["$: 1499 → 1649", "$: 60500 → 60650"].into());
    for f in ["orders::shipping_zone", "orders::quote", "orders::label"] {
        check_all_pass(&db, f, &v2b);
    }
}
