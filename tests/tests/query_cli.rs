//! `chronicle query` and `chronicle ask` through the binary, on a store written with the
//! library (no tracing needed): exact tables, JSON, filters and usage errors.

use std::time::{Duration, SystemTime};

use chronicle::record::{CallRecord, Dependency, DependencyKind, Status, Value};
use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle_tests::{chronicle, chronicle_bin, chronicle_ok, scratch};
use serde_json::{Value as Json, json};

/// Four calls of `orders::process_order`, the newest a minute ago, one a minute apart.
fn store(name: &str) -> std::path::PathBuf {
    // Build the binary first: the times below are relative to now.
    chronicle_bin();
    let db = scratch(name).join("chronicle.db");
    let mut storage = SqliteStorage::open(&db).unwrap();
    let now = SystemTime::now();
    let call = |i: u64, customer: &str, qty: u64, status: Status, ret: Value| CallRecord {
        id: None,
        function: "orders::process_order".into(),
        binary: "/srv/orders".into(),
        build_id: "ab12".into(),
        pid: 1,
        tid: 1,
        // Call 0 is the oldest: four minutes ago.
        timestamp: now - Duration::from_secs(60 * (4 - i)),
        duration_ns: Some(1000 * (i + 1) * (i + 1)),
        status,
        args: vec![(
            "order".into(),
            Value::Struct(vec![
                ("customer".into(), Value::Str(customer.into())),
                ("qty".into(), Value::UInt(qty)),
            ]),
        )],
        ret: Some(ret),
        unavailable: vec![],
        after: vec![],
        dependencies: vec![],
    };
    let err = |e: &str| Value::Variant("Err".into(), Box::new(Value::Str(e.into())));
    let ok = |n: u64| Value::Variant("Ok".into(), Box::new(Value::UInt(n)));
    // The newest call looked its price up and asked the stock service.
    let mut newest = call(3, "carol", 1, Status::Ok, ok(100));
    let text = |t: &str| Value::Str(t.into());
    newest.dependencies = vec![
        Dependency {
            kind: DependencyKind::Db,
            offset_ns: 100,
            duration_ns: Some(2000),
            detail: vec![("statement".into(), text("select price from items"))],
        },
        Dependency {
            kind: DependencyKind::Http,
            offset_ns: 3000,
            duration_ns: Some(9000),
            detail: vec![
                ("method".into(), text("GET")),
                ("target".into(), text("/stock")),
            ],
        },
    ];
    storage
        .insert(&mut [
            call(0, "alice", 2, Status::Ok, ok(200)),
            call(1, "bob", 0, Status::Error, err("Empty")),
            call(2, "alice", 5, Status::Ok, ok(500)),
            newest,
        ])
        .unwrap();
    db
}

fn query_json(db: &std::path::Path, extra: &[&str]) -> Vec<Json> {
    let mut args = vec![
        "query",
        "process_order",
        "--json",
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = chronicle_ok(&args);
    serde_json::from_slice::<Vec<Json>>(&out.stdout).unwrap()
}

fn ids(records: &[Json]) -> Vec<i64> {
    records.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

#[test]
fn query_filters_and_orders() {
    let db = store("query_filters_and_orders");
    // Newest first; ids are 1..=4 in insertion order.
    assert_eq!(ids(&query_json(&db, &[])), [4, 3, 2, 1]);
    assert_eq!(ids(&query_json(&db, &["--limit", "2"])), [4, 3]);
    assert_eq!(ids(&query_json(&db, &["--errors"])), [2]);
    // Durations are 1, 4, 9, 16 µs.
    assert_eq!(ids(&query_json(&db, &["--slowest", "2"])), [4, 3]);
    assert_eq!(
        ids(&query_json(&db, &["--where", "order.customer=alice"])),
        [3, 1]
    );
    assert_eq!(
        ids(&query_json(
            &db,
            &["--where", "order.customer=alice", "--where", "order.qty=5"]
        )),
        [3]
    );
    // Calls 0 and 1 started 4 and 3 minutes ago.
    assert_eq!(ids(&query_json(&db, &["--since", "150s"])), [4, 3]);
    let first = &query_json(&db, &["--errors"])[0];
    assert_eq!(
        first["args"],
        json!({"order": {"customer": "bob", "qty": 0}})
    );
    assert_eq!(first["return"], json!({"Err": "Empty"}));
    assert_eq!(first["dependencies"], json!([]));
    assert_eq!(
        query_json(&db, &["--limit", "1"])[0]["dependencies"],
        json!([
            {"kind": "db", "detail": {"statement": "select price from items"}, "duration_ns": 2000, "offset_ns": 100},
            {"kind": "http", "detail": {"method": "GET", "target": "/stock"}, "duration_ns": 9000, "offset_ns": 3000},
        ])
    );

    // The table: one line per call, columns aligned.
    let out = chronicle_ok(&[
        "query",
        "process_order",
        "--slowest",
        "2",
        "--db",
        db.to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID  STARTED"), "{text}");
    assert!(
        lines[1].starts_with(" 4  ")
            && lines[1].contains(
                "  16.0µs  ok      order={\"customer\":\"carol\",\"qty\":1}  {\"Ok\":100}  SELECT; GET /stock"
            ),
        "{text}"
    );
    assert!(
        lines[2].starts_with(" 3  ")
            && lines[2].contains(
                "   9.0µs  ok      order={\"customer\":\"alice\",\"qty\":5}  {\"Ok\":500}"
            ),
        "{text}"
    );

    // Usage errors say what to write.
    let out = chronicle(&[
        "query",
        "process_order",
        "--where",
        "customer",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "chronicle: --where customer: write it as PATH=VALUE, e.g. order.customer.name=alice or qty=3"
    );
    let out = chronicle(&[
        "query",
        "process_order",
        "--since",
        "soon",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "chronicle: --since soon: write a duration (30m, 24h, 7d, 2w) or a date (2026-11-01)"
    );
    let out = chronicle(&["query", "proces_order", "--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("orders::process_order"));
}

#[test]
fn ask_answers_json() {
    let db = store("ask_answers_json");
    let ask = |q: &str| -> Json {
        let out = chronicle_ok(&["ask", q, "--db", db.to_str().unwrap()]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let a = ask("What inputs cause errors in process_order?");
    assert_eq!(
        (&a["type"], &a["failing_calls"], &a["total_calls"]),
        (&json!("error_analysis"), &json!(1), &json!(4))
    );
    assert_eq!(
        a["groups"][0]["example"]["args"],
        json!({"order": {"customer": "bob", "qty": 0}})
    );
    let a = ask("show me the slowest calls of process_order today");
    assert_eq!(a["type"], "performance");
    assert_eq!(a["slowest"][0]["call_id"], 4);
    // One function recorded: a question that names none is about it.
    let a = ask("how often is it called?");
    assert_eq!((&a["type"], &a["calls"]), (&json!("frequency"), &json!(4)));
    let a = ask("sing me a song");
    assert_eq!(a["type"], "help");
}
