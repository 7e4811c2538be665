//! `chronicle generate-tests`: tests generated from calls captured on v1 of the orders
//! fixtures compile and pass against v1 and its same-behaviour refactor v2, and fail against
//! v2b exactly on the express orders of `order_total`; the rendering of a fixed set of
//! records is pinned; usage errors exit 2 and say what to do.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use chronicle::record::{CallRecord, Status, Value};
use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::testgen::{self, Target};
use chronicle::time::from_unix_nanos;
use chronicle_tests::{
    OrdersVariant, Running, bpf_available, build_orders_c, build_orders_rust, chronicle,
    chronicle_ok, export, scratch,
};

const VARIANTS: [OrdersVariant; 3] = [
    OrdersVariant::V1,
    OrdersVariant::V2,
    OrdersVariant::V2Changed,
];

/// Attaches to `service` for a second and records `functions` into `dir/chronicle.db`.
fn capture(service: &Path, dir: &Path, functions: &[&str]) -> PathBuf {
    let running = Running::start(service, &["--interval-ms", "5"]);
    let db = dir.join("chronicle.db");
    let pid = running.pid().to_string();
    let db_arg = db.to_str().unwrap().to_owned();
    let mut args = vec!["attach", "--pid", &pid, "--duration", "1", "--db", &db_arg];
    for f in functions {
        args.extend(["--func", f]);
    }
    chronicle_ok(&args);
    drop(running);
    db
}

/// Runs `chronicle generate-tests` and returns the path of the file it wrote.
fn generate(db: &Path, function: &str, out: &Path, extra: &[&str]) -> (PathBuf, String) {
    let mut args = vec![
        "generate-tests",
        function,
        "-o",
        out.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let stdout = String::from_utf8(chronicle_ok(&args).stdout).unwrap();
    let first = stdout.lines().next().unwrap_or_default();
    let path = first
        .split_whitespace()
        .find(|w| w.starts_with(out.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no path in {stdout:?}"));
    (PathBuf::from(path), stdout)
}

#[track_caller]
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Ids of the records whose order (argument `arg`) is an express order.
fn express_ids(db: &Path, function: &str, arg: &str) -> BTreeSet<i64> {
    export(db, function)
        .iter()
        .filter(|r| {
            let express = &r["args"][arg]["express"];
            express == true || express == 1
        })
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// `fn call_17()` → 17, for every test of a generated Rust file.
fn rust_test_ids(source: &str) -> BTreeSet<i64> {
    source
        .lines()
        .filter_map(|l| {
            l.strip_prefix("fn call_")?
                .strip_suffix("() {")?
                .parse()
                .ok()
        })
        .collect()
}

/// Call ids of `ok case N (call ID)` and of `FAIL case N: ... (call ID: ...)` lines.
fn c_results(output: &str) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let id_after = |line: &str| -> i64 {
        let rest = &line[line.rfind("(call ").expect("call id") + 6..];
        rest.split([')', ':']).next().unwrap().parse().unwrap()
    };
    let passed = output
        .lines()
        .filter(|l| l.starts_with("ok case "))
        .map(id_after)
        .collect();
    let failed = output
        .lines()
        .filter(|l| l.starts_with("FAIL case "))
        .map(id_after)
        .collect();
    (passed, failed)
}

/// Call ids of libtest's `test call_N ... ok|FAILED` lines.
fn rust_results(output: &str) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let mut passed = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("test call_") else {
            continue;
        };
        let (id, result) = rest.split_once(" ... ").unwrap();
        let id: i64 = id.parse().unwrap();
        match result {
            "ok" => passed.insert(id),
            "FAILED" => failed.insert(id),
            other => panic!("unexpected result {other:?}"),
        };
    }
    (passed, failed)
}

#[test]
fn rust_tests_pass_on_v1_and_v2_and_fail_on_changed_express_orders() {
    if !bpf_available("rust_tests_pass_on_v1_and_v2_and_fail_on_changed_express_orders") {
        return;
    }
    let dir = scratch("generate_tests_rust");
    let v1 = build_orders_rust(OrdersVariant::V1);
    let functions = [
        "orders::order_total",
        "orders::shipping_zone",
        "orders::quote",
        "orders::label",
    ];
    let db = capture(&v1.service, &dir, &functions);
    let out = dir.join("generated");
    let rlib = v1.rlib.to_str().unwrap();

    for function in functions {
        let (path, stdout) = generate(&db, function, &out, &["--link", rlib]);
        let source = std::fs::read_to_string(&path).unwrap();
        let ids = rust_test_ids(&source);
        // Four distinct inputs in the service's loop, each a cluster of its own.
        assert_eq!(ids.len(), 4, "{function}:\n{source}");
        assert!(
            stdout.contains(&format!("for {function}: 4 calls")),
            "{stdout}"
        );
        assert!(stdout.contains("build: cd "), "{stdout}");
        let express = express_ids(&db, function, "order");

        for variant in VARIANTS {
            let build = build_orders_rust(variant);
            let exe = out.join(format!(
                "{}-{}",
                path.file_stem().unwrap().to_str().unwrap(),
                variant.name()
            ));
            let (ok, text) = run(Command::new("rustc")
                .args(["--edition", "2021", "--test", "-o"])
                .arg(&exe)
                .arg(&path)
                .arg("--extern")
                .arg(format!("orders={}", build.rlib.display())));
            assert!(ok, "{function} tests do not compile:\n{text}\n{source}");
            let (ok, text) = run(&mut Command::new(&exe));
            let (passed, failed) = rust_results(&text);
            let expect_failed: BTreeSet<i64> =
                if variant == OrdersVariant::V2Changed && function == "orders::order_total" {
                    ids.intersection(&express).copied().collect()
                } else {
                    BTreeSet::new()
                };
            assert_eq!(failed, expect_failed, "{function} on {variant:?}:\n{text}");
            assert_eq!(ok, failed.is_empty(), "{text}");
            assert_eq!(
                passed,
                ids.difference(&failed).copied().collect(),
                "{function} on {variant:?}:\n{text}"
            );
        }
    }
    // The express orders are bob's and dave's.
    let total = std::fs::read_to_string(out.join("orders_order_total_test.rs")).unwrap();
    let express = express_ids(&db, "orders::order_total", "order");
    assert_eq!(
        rust_test_ids(&total).intersection(&express).count(),
        2,
        "{total}"
    );

    // quote's errors are in, and render as the enum's variants.
    let quote = std::fs::read_to_string(out.join("orders_quote_test.rs")).unwrap();
    for expected in [
        "Ok(3750u64)",
        "Err(orders::QuoteError::NoUnits)",
        "Err(orders::QuoteError::TooMany)",
    ] {
        assert!(quote.contains(expected), "{expected} missing:\n{quote}");
    }

    // A spec is the export format of the chosen records.
    let (spec, _) = generate(&db, "quote", &out, &["--lang", "spec"]);
    assert_eq!(spec, out.join("orders_quote.replay.json"));
    let spec: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
    let ids: Vec<i64> = spec.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let exported: Vec<serde_json::Value> = export(&db, "orders::quote")
        .into_iter()
        .filter(|r| ids.contains(&r["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(spec, exported);
    let statuses: BTreeSet<&str> = spec.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, BTreeSet::from(["error", "ok"]));
}

#[test]
fn c_tests_pass_on_v1_and_v2_and_fail_on_changed_express_orders() {
    if !bpf_available("c_tests_pass_on_v1_and_v2_and_fail_on_changed_express_orders") {
        return;
    }
    let dir = scratch("generate_tests_c");
    let v1 = build_orders_c(OrdersVariant::V1);
    let functions = ["order_total", "order_tier", "make_quote", "shipping_zone"];
    let db = capture(&v1.service, &dir, &functions);
    let out = dir.join("generated");

    for function in functions {
        // Without --link the build command names what to link with a placeholder.
        let (path, stdout) = generate(&db, function, &out, &[]);
        assert!(
            stdout.contains(&format!(
                "cc -std=c11 -g -o {function}_test {function}_test.c OBJECTS_DEFINING_{function}"
            )),
            "{stdout}"
        );
        let (path2, stdout) = generate(
            &db,
            function,
            &out,
            &["--link", v1.object.to_str().unwrap()],
        );
        assert_eq!(path, path2);
        let source = std::fs::read_to_string(&path).unwrap();
        let build = format!(
            "cc -std=c11 -g -o {function}_test {function}_test.c {}",
            v1.object.display()
        );
        assert!(stdout.contains(&build), "{stdout}");
        assert!(source.contains(&build), "{source}");
        let express = express_ids(&db, function, "o");

        let mut ids = None;
        for variant in VARIANTS {
            let build = build_orders_c(variant);
            let exe = out.join(format!("{function}_test-{}", variant.name()));
            let (ok, text) = run(Command::new("cc")
                .args(["-std=c11", "-Wall", "-Werror", "-g", "-o"])
                .arg(&exe)
                .arg(&path)
                .arg(&build.object));
            assert!(ok, "{function} tests do not compile:\n{text}\n{source}");
            let (ok, text) = run(&mut Command::new(&exe));
            let (passed, failed) = c_results(&text);
            let all: BTreeSet<i64> = passed.union(&failed).copied().collect();
            assert_eq!(all.len(), 4, "{function} on {variant:?}:\n{text}");
            assert_eq!(ids.get_or_insert(all.clone()), &all);
            let expect_failed: BTreeSet<i64> =
                if variant == OrdersVariant::V2Changed && function == "order_total" {
                    all.intersection(&express).copied().collect()
                } else {
                    BTreeSet::new()
                };
            assert_eq!(failed, expect_failed, "{function} on {variant:?}:\n{text}");
            assert_eq!(ok, failed.is_empty(), "{text}");
        }
        if function == "order_total" {
            assert_eq!(ids.unwrap().intersection(&express).count(), 2);
        }
    }
}

/// A fixed record of `function` as captured from `/srv/orders` (build `b1d0`).
fn record(
    id: i64,
    function: &str,
    args: Vec<(&str, Value)>,
    ret: Value,
    status: Status,
) -> CallRecord {
    CallRecord {
        id: Some(id),
        function: function.into(),
        binary: "/srv/orders".into(),
        build_id: "b1d0".into(),
        pid: 7,
        tid: 7,
        timestamp: from_unix_nanos(1_795_721_401_000_000_000 + id),
        duration_ns: Some(1000),
        status,
        args: args.into_iter().map(|(n, v)| (n.into(), v)).collect(),
        ret: Some(ret),
        unavailable: Vec::new(),
        after: Vec::new(),
        dependencies: Vec::new(),
    }
}

fn variant(name: &str, payload: Value) -> Value {
    Value::Variant(name.into(), Box::new(payload))
}

#[test]
fn rust_rendering_is_pinned() {
    let build = build_orders_rust(OrdersVariant::V1);
    let sig = testgen::load_signature(&build.service, "orders::quote").unwrap();
    let quote = |id, units, ret, status| {
        record(
            id,
            "orders::quote",
            vec![
                ("units", Value::UInt(units)),
                ("cents_each", Value::UInt(1250)),
            ],
            ret,
            status,
        )
    };
    let records = [
        quote(1, 3, variant("Ok", Value::UInt(3750)), Status::Ok),
        quote(
            2,
            0,
            variant("Err", Value::Enum("NoUnits".into())),
            Status::Error,
        ),
    ];
    let refs: Vec<&CallRecord> = records.iter().collect();
    let target = Target {
        function: "orders::quote",
        binary: Path::new("/srv/orders"),
        link: &[PathBuf::from("/lib/liborders.rlib")],
    };
    let rendered = testgen::rust::render(&target, &sig, &refs, Path::new("orders_quote_test.rs"));
    assert_eq!(
        rendered.text,
        r#"//! Regression tests for `orders::quote`, generated by `chronicle generate-tests` from 2 recorded calls.
//! Recorded from /srv/orders (build ID b1d0).
//!
//! Each test calls the function with the captured arguments and asserts the captured
//! return value, so the return type needs `PartialEq` and `Debug`. Build and run against
//! the crate `orders`:
//!
//!     rustc --edition 2021 --test orders_quote_test.rs --extern orders=/lib/liborders.rlib -L dependency=/lib -o orders_quote_test && ./orders_quote_test

/// Call 1, captured 2026-11-26T19:30:01.000000001Z (status `ok`).
#[test]
fn call_1() {
    assert_eq!(
        orders::quote(3u32, 1250u32),
        Ok(3750u64),
    );
}

/// Call 2, captured 2026-11-26T19:30:01.000000002Z (status `error`).
#[test]
fn call_2() {
    assert_eq!(
        orders::quote(0u32, 1250u32),
        Err(orders::QuoteError::NoUnits),
    );
}
"#
    );
    assert_eq!(rendered.call_ids, [1, 2]);
    assert_eq!(rendered.run, "./orders_quote_test");
}

#[test]
fn c_rendering_is_pinned() {
    let build = build_orders_c(OrdersVariant::V1);
    let sig = testgen::load_signature(&build.service, "make_quote").unwrap();
    let records = [record(
        5,
        "make_quote",
        vec![("units", Value::Int(15)), ("cents_each", Value::Int(-2))],
        Value::Struct(vec![
            ("subtotal".into(), Value::Int(-30)),
            ("discount_pct".into(), Value::Int(5)),
        ]),
        Status::Ok,
    )];
    let refs: Vec<&CallRecord> = records.iter().collect();
    let target = Target {
        function: "make_quote",
        binary: Path::new("/srv/orders"),
        link: &[],
    };
    let rendered = testgen::c::render(&target, &sig, &refs, Path::new("make_quote_test.c"));
    let text = &rendered.text;
    // The helpers between the prototype and the cases are the same in every file.
    let helpers = text.find("\nstatic inline int fail_int").unwrap();
    let cases = text.find("\n/* Call 5").unwrap();
    assert_eq!(
        &text[..helpers],
        r#"/* Regression tests for `make_quote`, generated by `chronicle generate-tests` from 1 recorded call.
 * Recorded from /srv/orders (build ID b1d0).
 *
 * Build against the objects or library that define `make_quote`, and run:
 *
 *     cc -std=c11 -g -o make_quote_test make_quote_test.c OBJECTS_DEFINING_make_quote && ./make_quote_test
 *
 * Prints `ok case N (call ID)` or `FAIL case N: expected X got Y (call ID: what)`;
 * exits 1 when a case failed.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

struct quote;
struct quote {
    long int subtotal;
    int discount_pct;
};

struct quote make_quote(int units, int cents_each);
"#
    );
    assert_eq!(
        &text[cases..],
        r#"
/* Call 5, captured 2026-11-26T19:30:01.000000005Z (status `ok`). */
static int case_1(void)
{
    int failed = 0;
    int arg_units = 15;
    int arg_cents_each = -2;
    struct quote got = make_quote(arg_units, arg_cents_each);
    if (got.subtotal != -30LL)
        failed += fail_int(1, "call 5: return.subtotal", -30LL, (long long)got.subtotal);
    if (got.discount_pct != 5)
        failed += fail_int(1, "call 5: return.discount_pct", 5, (long long)got.discount_pct);
    return failed;
}

int main(void)
{
    int failed = 0;
    failed += report(1, 5, case_1());
    if (failed)
        printf("%d of 1 cases failed\n", failed);
    return failed ? 1 : 0;
}
"#
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_to_do() {
    let dir = scratch("generate_tests_usage");
    let db = dir.join("chronicle.db");
    let mut unread = record(1, "orders::order_total", vec![], Value::UInt(1), Status::Ok);
    unread.unavailable = vec![("order".into(), "unreadable memory".into())];
    let mut unwound = record(2, "orders::label", vec![], Value::Null, Status::Unwound);
    unwound.ret = None;
    SqliteStorage::open(&db)
        .unwrap()
        .insert(&mut [unread, unwound])
        .unwrap();
    let db_arg = db.to_str().unwrap();
    let out_arg = dir.join("out");
    let out_arg = out_arg.to_str().unwrap();

    let check = |args: &[&str], expect: &str| {
        let mut all = vec!["generate-tests"];
        all.extend_from_slice(args);
        all.extend(["-o", out_arg, "--db", db_arg]);
        let out = chronicle(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expect, "{args:?}");
    };
    check(
        &["nope"],
        "chronicle: generating tests for `nope`: no function named `nope` has been recorded; \
         run `chronicle functions` to list the recorded functions\n",
    );
    check(
        &["order_total"],
        "chronicle: generating tests for `order_total`: none of the 1 recorded calls of \
         `orders::order_total` can become a test (1 with inputs that were not read exactly); \
         record more calls with `chronicle attach`\n",
    );
    check(
        &["orders::label"],
        "chronicle: generating tests for `orders::label`: none of the 1 recorded calls of \
         `orders::label` can become a test (1 that never returned); record more calls with \
         `chronicle attach`\n",
    );
    // A spec takes calls that never returned; the recorded binary need not exist for it.
    let out = chronicle_ok(&[
        "generate-tests",
        "orders::label",
        "--lang",
        "spec",
        "-o",
        out_arg,
        "--db",
        db_arg,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!(
            "wrote replay spec {out_arg}/orders_label.replay.json for orders::label: 1 call\n"
        )),
        "{out:?}"
    );
    // Rust or C tests need the binary's DWARF.
    let mut ok = record(3, "orders::order_total", vec![], Value::UInt(1), Status::Ok);
    ok.binary = dir.join("gone").display().to_string();
    SqliteStorage::open(&db).unwrap().insert(&mut [ok]).unwrap();
    let out = chronicle(&[
        "generate-tests",
        "order_total",
        "-o",
        out_arg,
        "--db",
        db_arg,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "chronicle: generating tests for `order_total`: cannot read {}/gone (pass the \
             function's binary with --binary PATH, or use --lang spec): ",
            dir.display()
        )),
        "{stderr}"
    );
    let out = chronicle(&[
        "generate-tests",
        "order_total",
        "--lang",
        "go",
        "-o",
        out_arg,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown test language `go`: use rust, c or spec"),
        "{out:?}"
    );
}
