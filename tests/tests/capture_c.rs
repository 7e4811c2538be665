//! Attach to a running C service by pid and check the exact values stored.

use std::collections::BTreeSet;

use chronicle_tests::{
    Opt, Running, bpf_available, build_c, build_id, chronicle_ok, export, scratch,
};
use serde_json::{Value, json};

/// `(args, return, status)` of every stored call, without the per-call fields.
fn calls(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| json!({"args": r["args"], "return": r["return"], "status": r["status"], "unavailable": r["unavailable"]}).to_string())
        .collect()
}

#[track_caller]
fn check_calls(records: &[Value], expect: &[Value]) {
    let expect: BTreeSet<String> = expect.iter().map(Value::to_string).collect();
    assert_eq!(calls(records), expect);
}

fn attached_bank(opt: Opt, name: &str) -> Option<std::path::PathBuf> {
    if !bpf_available(name) {
        return None;
    }
    let dir = scratch(name);
    let bank = build_c("bank", opt);
    let service = Running::start(&bank, &["--interval-ms", "5"]);
    let db = dir.join("chronicle.db");
    let pid = service.pid().to_string();
    let mut args = vec![
        "attach",
        "--pid",
        &pid,
        "--duration",
        "1.5",
        "--db",
        db.to_str().unwrap(),
    ];
    for f in [
        "transfer",
        "mix",
        "factorial",
        "classify",
        "greeting",
        "tally",
        "jump_out",
        "quit_thread",
    ] {
        args.extend(["--func", f]);
    }
    chronicle_ok(&args);
    drop(service);

    // Common fields, on one record.
    let records = export(&db, "transfer");
    let first = &records[0];
    assert_eq!(first["function"], "transfer");
    assert_eq!(first["binary"], bank.to_str().unwrap());
    assert_eq!(first["build_id"], build_id(&bank));
    assert_eq!(first["pid"], json!(pid.parse::<u32>().unwrap()));
    assert_eq!(first["dependencies"], json!([]));
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    for r in &records {
        assert!(r["duration_ns"].as_u64().unwrap() > 0, "{r}");
    }
    Some(db)
}

fn check_bank(db: &std::path::Path) {
    let long = "x".repeat(256);
    check_calls(
        &export(db, "transfer"),
        &[
            json!({"args": {"from": "alice", "to": "bob", "cents": 1250}, "return": 0, "status": "ok", "unavailable": {}}),
            json!({"args": {"from": "carol", "to": "dave", "cents": -500}, "return": -22, "status": "ok", "unavailable": {}}),
            json!({"args": {"from": long, "to": "erin", "cents": i64::MAX}, "return": 0, "status": "ok",
                   "unavailable": {"from": "truncated: longer than 256 bytes"}}),
            json!({"args": {"from": null, "to": "frank", "cents": 1}, "return": -2, "status": "ok", "unavailable": {}}),
        ],
    );
    let transfers = export(db, "transfer");
    for r in &transfers {
        let truncated = r["unavailable"].as_object().unwrap().contains_key("from");
        assert_eq!(r["replayable"], json!(!truncated), "{r}");
    }

    check_calls(
        &export(db, "mix"),
        &[
            json!({"args": {"big": u64::MAX, "tiny": -128, "small": -32768, "byte": 255, "flag": true, "letter": "Z"},
                 "return": u64::MAX ^ ((-128i64 - 32768 + 255 + 1 + 90) as u64), "status": "ok", "unavailable": {}}),
        ],
    );

    // Recursion: every record pairs n with n!.
    let factorials = export(db, "factorial");
    check_calls(
        &factorials,
        &[1u64, 2, 6, 24, 120]
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"args": {"n": i + 1}, "return": f, "status": "ok", "unavailable": {}}))
            .collect::<Vec<_>>(),
    );

    check_calls(
        &export(db, "classify"),
        &[
            json!({"args": {"kind": "BROKERAGE", "code": 0}, "return": "BROKERAGE", "status": "ok", "unavailable": {}}),
            json!({"args": {"kind": "CHECKING", "code": 7}, "return": "SAVINGS", "status": "ok", "unavailable": {}}),
        ],
    );
    check_calls(
        &export(db, "greeting"),
        &[
            json!({"args": {"name": "world"}, "return": "hello, world", "status": "ok", "unavailable": {}}),
        ],
    );

    // Two threads: each record's return is worker * 1000 + step, and each worker is one thread.
    let tallies = export(db, "tally");
    let mut tids = std::collections::BTreeMap::new();
    for r in &tallies {
        let (worker, step) = (
            r["args"]["worker"].as_i64().unwrap(),
            r["args"]["step"].as_i64().unwrap(),
        );
        assert!(worker == 1 || worker == 2, "{r}");
        assert_eq!(r["return"], json!(worker * 1000 + step), "{r}");
        tids.entry(worker)
            .or_insert_with(BTreeSet::new)
            .insert(r["tid"].as_u64().unwrap());
    }
    assert_eq!(tids.len(), 2, "both workers were seen");
    assert!(tids.values().all(|t| t.len() == 1));
    assert_ne!(tids[&1], tids[&2]);

    // Calls that never return are stored as unwound, with their arguments.
    for (function, code, reason) in [
        (
            "jump_out",
            3,
            "the call never returned (its frame was reused)",
        ),
        (
            "quit_thread",
            9,
            "the thread exited before the call returned",
        ),
    ] {
        let records = export(db, function);
        assert!(!records.is_empty(), "{function} was recorded");
        for r in records
            .iter()
            .filter(|r| r["status"] != "unwound" || r["unavailable"]["return"] != reason)
        {
            // Only the very last call may still have been running when tracing stopped.
            assert_eq!(
                r["unavailable"]["return"], "tracing stopped while the call was running",
                "{r}"
            );
        }
        for r in &records {
            assert_eq!(r["status"], "unwound", "{r}");
            assert_eq!(r["args"], json!({"code": code}));
            assert_eq!(r["return"], Value::Null);
            assert_eq!(r["duration_ns"], Value::Null);
        }
    }
}

#[test]
fn attach_by_pid_decodes_c_values_at_o0() {
    if let Some(db) = attached_bank(Opt::O0, "attach_by_pid_decodes_c_values_at_o0") {
        check_bank(&db);
    }
}

#[test]
fn attach_by_pid_decodes_c_values_at_o2() {
    if let Some(db) = attached_bank(Opt::O2, "attach_by_pid_decodes_c_values_at_o2") {
        check_bank(&db);
    }
}

#[test]
fn functions_lists_what_was_captured() {
    if let Some(db) = attached_bank(Opt::O0, "functions_lists_what_was_captured") {
        let out = chronicle_ok(&["functions", "--json", "--db", db.to_str().unwrap()]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: BTreeSet<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "classify",
                "factorial",
                "greeting",
                "jump_out",
                "mix",
                "quit_thread",
                "tally",
                "transfer"
            ]
            .into()
        );
        for f in list.as_array().unwrap() {
            assert!(f["calls"].as_u64().unwrap() > 0, "{f}");
        }
    }
}
