//! Attach to running C, C++ and Rust programs built at -O0 and -O2 and check the exact
//! decoded values of structs, unions, arrays, enums, strings, pointers followed to a depth,
//! aggregates passed and returned by value, C++ classes and std::string, and Rust
//! `&str`, `String`, `Vec`, slices, `Box`, `Option`, `Result` and enums.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chronicle_tests::{
    Opt, Running, bpf_available, build_c, chronicle, chronicle_ok, export, scratch,
};
use serde_json::{Value, json};

/// Attaches to `program` for a while, tracing `functions`; returns the database.
fn capture(test: &str, program: &Path, functions: &[&str]) -> PathBuf {
    let dir = scratch(test);
    let service = Running::start(program, &["--interval-ms", "5"]);
    let db = dir.join("chronicle.db");
    let pid = service.pid().to_string();
    let mut args = vec!["attach", "--pid", &pid, "--duration", "1.5", "--db"];
    let db_arg = db.to_str().unwrap().to_owned();
    args.push(&db_arg);
    for f in functions {
        args.extend(["--func", f]);
    }
    chronicle_ok(&args);
    drop(service);
    db
}

/// The distinct `{args, return, status, unavailable}` of a function's records; every
/// call of the fixtures is made with the same values, so there is exactly one.
#[track_caller]
fn only_call(db: &Path, function: &str) -> Value {
    let records = export(db, function);
    assert!(!records.is_empty(), "no records of {function}");
    let distinct: BTreeMap<String, Value> = records
        .iter()
        .map(|r| {
            let v = json!({"args": r["args"], "return": r["return"], "status": r["status"],
                           "unavailable": r["unavailable"], "replayable": r["replayable"]});
            (v.to_string(), v)
        })
        .collect();
    assert_eq!(distinct.len(), 1, "{function}: {distinct:#?}");
    distinct.into_values().next().unwrap()
}

/// Replays the captured calls of each function against the binary they came from: every
/// one must pass, which proves the arguments were rebuilt exactly (registers, stack,
/// structs by value, pointers, strings, hidden return pointers).
#[track_caller]
fn replays_cleanly(db: &Path, binary: &Path, functions: &[&str]) {
    for f in functions {
        let records = export(db, f).len().min(20);
        let out = chronicle(&[
            "replay",
            f,
            "--binary",
            binary.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--json",
            "--limit",
            "20",
        ]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{f}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        let counts = [
            &report["passed"],
            &report["failed"],
            &report["errors"],
            &report["skipped"],
        ];
        assert_eq!(
            counts,
            [&json!(records), &json!(0), &json!(0), &json!(0)],
            "{f}: {report:#}"
        );
    }
}

#[track_caller]
fn check(db: &Path, function: &str, args: Value, ret: Value) {
    let call = only_call(db, function);
    assert_eq!(
        call,
        json!({"args": args, "return": ret, "status": "ok", "unavailable": {}, "replayable": true}),
        "{function}"
    );
}

fn c_types(opt: Opt, test: &str) {
    if !bpf_available(test) {
        return;
    }
    let shapes = build_c("shapes", opt);
    let functions = [
        "order_total",
        "make_pair",
        "make_big",
        "sum_pair",
        "sum_big",
        "list_len",
        "widths",
        "read_number",
        "status_name",
    ];
    let db = capture(test, &shapes, &functions);
    check(
        &db,
        "order_total",
        json!({"o": {
            "id": 90001,
            "customer": {"id": 7, "name": "Ada", "tier": "gold"},
            "items": [
                {"sku": "SKU-1", "qty": 2, "price_cents": 1999},
                {"sku": "SKU-22", "qty": 1, "price_cents": 500},
            ],
            "n_items": 2,
            "status": "SHIPPED",
            "gift": true,
            "weight": 1.5,
            "express": 1,
            "priority": 5,
        }}),
        json!(4498),
    );
    check(
        &db,
        "make_pair",
        json!({"a": -3, "b": 1u64 << 40}),
        json!({"a": -3, "b": 1u64 << 40}),
    );
    check(
        &db,
        "make_big",
        json!({"base": 100}),
        json!({"v": [100, 101, 102, 103]}),
    );
    check(
        &db,
        "sum_pair",
        json!({"p": {"a": -5, "b": 6_000_000_000i64}}),
        json!(5_999_999_995i64),
    );
    check(
        &db,
        "sum_big",
        json!({"b": {"v": [10, 20, 30, 40]}}),
        json!(100),
    );
    check(
        &db,
        "list_len",
        json!({"n": {"value": 1, "next": {"value": 2, "next": {"value": 3, "next": null}}}}),
        json!(3),
    );
    check(
        &db,
        "widths",
        json!({"a": -8, "b": 200, "c": -1600, "d": 65000, "e": -320000, "f": 4_000_000_000u32,
               "g": -64, "h": u64::MAX}),
        json!(3_999_743_527i64),
    );
    check(
        &db,
        "read_number",
        json!({"n": {"i": 0x0102030405060708i64, "bytes": [8, 7, 6, 5, 4, 3, 2, 1]}}),
        json!(0x0102030405060708i64),
    );
    check(
        &db,
        "status_name",
        json!({"s": "CANCELLED", "codes": "abc"}),
        json!("cancelled"),
    );
    replays_cleanly(&db, &shapes, &functions);
}

#[test]
fn c_types_at_o0() {
    c_types(Opt::O0, "c_types_at_o0");
}

#[test]
fn c_types_at_o2() {
    c_types(Opt::O2, "c_types_at_o2");
}

/// Every distinct `{args, return, status}` of a function, with `unavailable` empty.
#[track_caller]
fn check_all(db: &Path, function: &str, expect: &[(Value, Value, &str)]) {
    let records = export(db, function);
    let got: BTreeMap<String, Value> = records
        .iter()
        .map(|r| {
            assert_eq!(r["unavailable"], json!({}), "{function}: {r}");
            let v = json!({"args": r["args"], "return": r["return"], "status": r["status"]});
            (v.to_string(), v)
        })
        .collect();
    let want: BTreeMap<String, Value> = expect
        .iter()
        .map(|(args, ret, status)| {
            let v = json!({"args": args, "return": ret, "status": status});
            (v.to_string(), v)
        })
        .collect();
    assert_eq!(got, want, "{function}");
}

fn rust_types(opt: Opt, test: &str) {
    if !bpf_available(test) {
        return;
    }
    let kinds = chronicle_tests::build_rust("kinds", opt);
    let functions = [
        "kinds::greet",
        "kinds::total",
        "kinds::checkout",
        "kinds::area",
        "kinds::sum",
        "kinds::boxed",
        "kinds::maybe",
        "kinds::pair",
        "kinds::letters",
        "kinds::owned",
    ];
    let db = capture(test, &kinds, &functions);
    check(
        &db,
        "kinds::greet",
        json!({"name": "world", "times": 2}),
        json!("world world"),
    );
    let order = json!({
        "id": 7,
        "items": [
            {"sku": "A-1", "qty": 2, "price_cents": 150},
            {"sku": "B-22", "qty": 1, "price_cents": 1000},
        ],
        "note": {"Some": "leave at door"},
        "coupon": {"None": null},
    });
    check(&db, "kinds::total", json!({"order": order}), json!(1300));
    check_all(
        &db,
        "kinds::checkout",
        &[
            (
                json!({"order": order, "budget": 5000}),
                json!({"Ok": 1300}),
                "ok",
            ),
            (
                json!({"order": order, "budget": 100}),
                json!({"Err": {"OverBudget": "1300 > 100"}}),
                "error",
            ),
        ],
    );
    check_all(
        &db,
        "kinds::area",
        &[
            (json!({"shape": {"Circle": 5}}), json!(75), "ok"),
            (
                json!({"shape": {"Rect": {"w": 3, "h": 4}}}),
                json!(12),
                "ok",
            ),
            (json!({"shape": {"Empty": null}}), json!(0), "ok"),
        ],
    );
    check(&db, "kinds::sum", json!({"values": [1, -2, 30]}), json!(29));
    check(
        &db,
        "kinds::boxed",
        json!({"item": {"sku": "C-3", "qty": 4, "price_cents": 99}}),
        json!(4),
    );
    check_all(
        &db,
        "kinds::maybe",
        &[
            (json!({"x": {"Some": 41}}), json!({"Some": 42}), "ok"),
            (json!({"x": {"None": null}}), json!({"None": null}), "ok"),
        ],
    );
    check(
        &db,
        "kinds::pair",
        json!({"a": 7, "b": -9}),
        json!([8, -18]),
    );
    check(
        &db,
        "kinds::letters",
        json!({"c": "é", "upper": true}),
        json!("É"),
    );
    check(&db, "kinds::owned", json!({"tags": ["x", "yz"]}), json!(3));
    replays_cleanly(&db, &kinds, &functions);
}

#[test]
fn rust_types_at_o0() {
    rust_types(Opt::O0, "rust_types_at_o0");
}

#[test]
fn rust_types_at_o2() {
    rust_types(Opt::O2, "rust_types_at_o2");
}

fn cpp_types(opt: Opt, test: &str) {
    if !bpf_available(test) {
        return;
    }
    let store = chronicle_tests::build_cpp("store", opt);
    let area_point = "store::area(store::Point const&)";
    let area_ints = "store::area(int, int)";
    let functions = [
        "store::Account::projected",
        "store::Account::describe",
        area_point,
        area_ints,
        "store::shift",
        "store::shout",
    ];
    let db = capture(test, &store, &functions);
    let grace = json!({"id_": 42, "owner_": "Grace Hopper", "tier_": "Gold", "balance_": 1000});
    check(
        &db,
        "store::Account::projected(long) const",
        json!({"this": grace, "cents": 250}),
        json!(1250),
    );
    check(
        &db,
        "store::Account::describe",
        json!({"this": grace, "prefix": "acct"}),
        json!("acct 42 Grace Hopper"),
    );
    check(&db, area_point, json!({"p": {"x": 3, "y": 4}}), json!(12));
    check(&db, area_ints, json!({"w": 5, "h": 6}), json!(30));
    check(
        &db,
        "store::shift",
        json!({"p": {"x": 1, "y": 2}, "dx": 10}),
        json!({"x": 11, "y": 12}),
    );
    check(&db, "store::shout", json!({"s": "hey"}), json!("HEY!"));
    // `shout` takes and returns std::string by value: through hidden pointers, because the
    // class has a destructor.
    replays_cleanly(&db, &store, &functions);
}

#[test]
fn cpp_types_at_o0() {
    cpp_types(Opt::O0, "cpp_types_at_o0");
}

#[test]
fn cpp_types_at_o2() {
    cpp_types(Opt::O2, "cpp_types_at_o2");
}

/// `attach --after`: output parameters are read again at return.
fn after_values(opt: Opt, test: &str) {
    if !bpf_available(test) {
        return;
    }
    let dir = scratch(test);
    let mut dbs = Vec::new();
    for (program, functions) in [
        (
            build_c("shapes", opt),
            vec!["fill_label", "bump", "list_len"],
        ),
        (
            chronicle_tests::build_rust("kinds", opt),
            vec!["kinds::restock"],
        ),
    ] {
        let service = Running::start(&program, &["--interval-ms", "5"]);
        let db = dir.join(format!(
            "{}.db",
            program.file_name().unwrap().to_string_lossy()
        ));
        let pid = service.pid().to_string();
        let db_arg = db.to_str().unwrap().to_owned();
        let mut args = vec![
            "attach",
            "--after",
            "--pid",
            &pid,
            "--duration",
            "1.5",
            "--db",
            &db_arg,
        ];
        for f in &functions {
            args.extend(["--func", f]);
        }
        chronicle_ok(&args);
        drop(service);
        dbs.push(db);
    }
    let after = |db: &Path, function: &str| -> Value {
        let records = export(db, function);
        let distinct: BTreeMap<String, Value> = records
            .iter()
            .map(|r| {
                let v = json!({"args": r["args"], "after": r["after"], "unavailable": r["unavailable"],
                               "replayable": r["replayable"]});
                (v.to_string(), v)
            })
            .collect();
        assert_eq!(distinct.len(), 1, "{function}: {distinct:#?}");
        distinct.into_values().next().unwrap()
    };
    assert_eq!(
        after(&dbs[0], "fill_label"),
        json!({"args": {"buf": "", "len": 16, "prefix": "ord"}, "after": {"buf": "ord-42"},
               "unavailable": {}, "replayable": true})
    );
    assert_eq!(
        after(&dbs[0], "bump"),
        json!({"args": {"p": {"a": 1, "b": 2}}, "after": {"p": {"a": 2, "b": 3}},
               "unavailable": {}, "replayable": true})
    );
    // Pointers to const are inputs only.
    assert_eq!(after(&dbs[0], "list_len")["after"], Value::Null);
    assert_eq!(
        after(&dbs[1], "kinds::restock"),
        json!({"args": {"item": {"sku": "D-4", "qty": 1, "price_cents": 5}, "to": 10},
               "after": {"item": {"sku": "D-4-R", "qty": 10, "price_cents": 5}},
               "unavailable": {}, "replayable": true})
    );

    // Replay compares output parameters too: the real calls pass, and a spec whose
    // `after` was edited fails on exactly the edited field.
    let shapes = build_c("shapes", opt);
    let kinds = chronicle_tests::build_rust("kinds", opt);
    replays_cleanly(&dbs[0], &shapes, &["fill_label", "bump"]);
    replays_cleanly(&dbs[1], &kinds, &["kinds::restock"]);
    let mut records = export(&dbs[0], "bump");
    records.truncate(1);
    records[0]["after"]["p"]["a"] = json!(99);
    let spec = dir.join("bump.json");
    std::fs::write(&spec, serde_json::to_string(&records).unwrap()).unwrap();
    let out = chronicle(&[
        "replay",
        "--spec",
        spec.to_str().unwrap(),
        "--binary",
        shapes.to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 1, "{report:#}");
    assert_eq!(
        report["results"][0]["difference"][0]["text"],
        "$after.p.a: 99 → 2"
    );
}

#[test]
fn after_values_at_o0() {
    after_values(Opt::O0, "after_values_at_o0");
}

#[test]
fn after_values_at_o2() {
    after_values(Opt::O2, "after_values_at_o2");
}
