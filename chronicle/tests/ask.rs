//! `chronicle ask` and the analyses behind it, on records with a known distribution in a
//! real SQLite store: 60 calls of `orders::process_order`, one a minute from 10:00 UTC,
//! call `i` with `qty = i % 6 + 1` (1..=6, taking `qty` µs), `country` fixed per `qty`
//! (DE, US, JP, ...), build A for calls 0..30 and B after; `qty = 6` fails with
//! `Err("OutOfStock")`, the others return `Ok(qty * 100)` — except that build B returns
//! `Ok(250)` for `qty = 2`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chronicle::record::{CallRecord, Dependency, DependencyKind, Status, Value};
use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::testgen::BehaviorAgent;
use serde_json::{Value as Json, json};

const F: &str = "orders::process_order";
const BUILD_A: &str = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111";
const BUILD_B: &str = "bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222";
/// 2026-11-26T10:00:00Z, a Thursday.
const BASE: u64 = 1_795_687_200;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(BASE + secs)
}

fn store(test: &str) -> (tempdir::Dir, SqliteStorage) {
    let dir = tempdir::Dir::new(test);
    let mut storage = SqliteStorage::open(&dir.0.join("chronicle.db")).unwrap();
    let countries = ["DE", "US", "JP"];
    let mut records: Vec<CallRecord> = (0..60u64)
        .map(|i| {
            let qty = i % 6 + 1;
            let build_b = i >= 30;
            let (status, ret) = if qty == 6 {
                (
                    Status::Error,
                    Value::Variant("Err".into(), Box::new(Value::Str("OutOfStock".into()))),
                )
            } else {
                let total = if build_b && qty == 2 { 250 } else { qty * 100 };
                (
                    Status::Ok,
                    Value::Variant("Ok".into(), Box::new(Value::UInt(total))),
                )
            };
            CallRecord {
                id: None,
                function: F.into(),
                binary: "/srv/orders".into(),
                build_id: if build_b { BUILD_B } else { BUILD_A }.into(),
                pid: 1,
                tid: 1,
                timestamp: at(i * 60),
                duration_ns: Some(qty * 1000),
                status,
                args: vec![(
                    "order".into(),
                    Value::Struct(vec![
                        ("qty".into(), Value::UInt(qty)),
                        (
                            "country".into(),
                            Value::Str(countries[(i % 3) as usize].into()),
                        ),
                    ]),
                )],
                ret: Some(ret),
                unavailable: vec![],
                after: vec![],
                dependencies: dependencies(i, qty),
            }
        })
        .collect();
    storage.insert(&mut records).unwrap();
    (dir, storage)
}

/// What call `i` did outside itself: every call that did not fail looks its price up
/// (taking `i` µs); even quantities also ask the stock service.
fn dependencies(i: u64, qty: u64) -> Vec<Dependency> {
    if qty == 6 {
        return vec![];
    }
    let mut list = vec![Dependency {
        kind: DependencyKind::Db,
        offset_ns: 100,
        duration_ns: Some(i * 1000),
        detail: vec![
            ("system".into(), Value::Str("sqlite".into())),
            (
                "statement".into(),
                Value::Str("SELECT price FROM items WHERE qty = ?1".into()),
            ),
            ("params".into(), Value::Array(vec![Value::UInt(qty)])),
        ],
    }];
    if qty.is_multiple_of(2) {
        list.push(Dependency {
            kind: DependencyKind::Http,
            offset_ns: 200,
            duration_ns: None,
            detail: vec![
                ("method".into(), Value::Str("GET".into())),
                ("target".into(), Value::Str("/stock".into())),
                ("status".into(), Value::UInt(200)),
            ],
        });
    }
    list
}

/// Minimal temp dir, removed on drop.
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("chronicle-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn ask(storage: &dyn Storage, question: &str) -> Json {
    // Friday 2026-11-27 12:00 UTC: "yesterday" is the day of the calls.
    let now = UNIX_EPOCH + Duration::from_secs(BASE + 26 * 3600);
    BehaviorAgent::new(storage).query_at(question, now).unwrap()
}

/// Call id of call `i` (ids start at 1 in a new store).
fn id(i: i64) -> i64 {
    i + 1
}

#[test]
fn errors_are_grouped_with_examples() {
    let (_dir, storage) = store("errors_are_grouped_with_examples");
    let a = ask(&storage, "What inputs cause errors in process_order?");
    assert_eq!(a["type"], "error_analysis");
    assert_eq!(a["function"], F);
    assert_eq!(
        (&a["total_calls"], &a["failing_calls"], &a["errors"]),
        (&json!(60), &json!(10), &json!(10))
    );
    assert_eq!(a["error_rate"], json!(10.0 / 60.0));
    assert_eq!(a["groups"].as_array().unwrap().len(), 1);
    let g = &a["groups"][0];
    assert_eq!(
        (
            &g["status"],
            &g["value"],
            &g["count"],
            &g["share"],
            &g["example_call_id"]
        ),
        (
            &json!("error"),
            &json!({"Err": "OutOfStock"}),
            &json!(10),
            &json!(1.0),
            &json!(id(59))
        )
    );
    assert_eq!(
        g["example"]["args"],
        json!({"order": {"qty": 6, "country": "JP"}})
    );
}

#[test]
fn performance_has_percentiles_slowest_calls_and_correlations() {
    let (_dir, storage) = store("performance_has_percentiles_slowest_calls_and_correlations");
    let a = ask(&storage, "Show me the 3 slowest calls to process_order");
    assert_eq!(a["type"], "performance");
    // 10 calls each of 1..=6 µs: nearest ranks 30, 54, 60.
    assert_eq!(
        (
            &a["stats"]["p50_ms"],
            &a["stats"]["p90_ms"],
            &a["stats"]["p99_ms"]
        ),
        (&json!(0.003), &json!(0.006), &json!(0.006))
    );
    let slowest: Vec<&Json> = a["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["call_id"])
        .collect();
    assert_eq!(slowest, [&json!(id(5)), &json!(id(11)), &json!(id(17))]);
    // Duration is qty µs: a perfect correlation; the country's length never varies.
    assert_eq!(
        a["correlations"],
        json!([{"input": "order.qty", "feature": "value", "correlation": 1.0, "calls": 60}])
    );
}

#[test]
fn drift_between_builds_finds_the_changed_output() {
    let (_dir, storage) = store("drift_between_builds_finds_the_changed_output");
    let a = ask(
        &storage,
        "How did process_order change between builds aaaa1111 and bbbb2222?",
    );
    assert_eq!(a["type"], "drift");
    assert_eq!(a["before"]["scope"], json!({"build_id": BUILD_A}));
    assert_eq!(a["after"]["scope"], json!({"build_id": BUILD_B}));
    assert_eq!(
        (&a["before"]["calls"], &a["after"]["calls"]),
        (&json!(30), &json!(30))
    );
    assert_eq!(a["changes"]["call_volume"], json!(1.0));
    assert_eq!(a["changes"]["error_rate"], json!(0.0));
    assert_eq!(
        a["changed_outputs"],
        json!([{
            "args": {"order": {"qty": 2, "country": "US"}},
            "before": {"status": "ok", "return": {"Ok": 200}, "call_id": id(25)},
            "after": {"status": "ok", "return": {"Ok": 250}, "call_id": id(55)},
        }])
    );
    let shares: Vec<(Json, Json, Json)> = a["output_distribution"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["value"] == json!({"Ok": 200}) || o["value"] == json!({"Ok": 250}))
        .map(|o| {
            (
                o["value"].clone(),
                o["before_share"].clone(),
                o["after_share"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            (json!({"Ok": 200}), json!(5.0 / 30.0), json!(0.0)),
            (json!({"Ok": 250}), json!(0.0), json!(5.0 / 30.0)),
        ]
    );
    assert_eq!(a["new_input_shapes"], json!([]));

    // By time: yesterday (the day of every call) against the day before (none).
    let a = ask(&storage, "Did process_order regress yesterday?");
    assert_eq!(
        (&a["before"]["calls"], &a["after"]["calls"]),
        (&json!(0), &json!(60))
    );
    assert_eq!(a["after"]["scope"]["since"], "2026-11-26T00:00:00Z");
    assert_eq!(
        a["new_input_shapes"],
        json!([{"order": {"country": "string", "qty": "number"}}])
    );
}

#[test]
fn frequency_distribution_examples_functions_and_help() {
    let (_dir, storage) = store("frequency_distribution_examples_functions_and_help");
    let a = ask(&storage, "How often is process_order called per hour?");
    assert_eq!(a["type"], "frequency");
    assert_eq!(a["calls"], 60);
    assert_eq!(
        a["buckets"],
        json!([{"start": "2026-11-26T10:00:00Z", "calls": 60}])
    );
    assert_eq!(a["calls_per_hour"], json!(60.0 / (59.0 / 60.0)));

    let a = ask(&storage, "What do the inputs to process_order look like?");
    assert_eq!(a["type"], "input_distribution");
    assert_eq!(
        a["inputs"]["order.qty"],
        json!({"numbers": {"count": 60, "min": 1.0, "max": 6.0, "mean": 3.5, "distinct": 6}})
    );
    assert_eq!(
        a["inputs"]["order.country"],
        json!({"strings": {"count": 60, "distinct": 3, "top": [
            {"value": "DE", "count": 20}, {"value": "JP", "count": 20}, {"value": "US", "count": 20}]}})
    );

    let a = ask(&storage, "give me 3 examples of process_order");
    let ids: Vec<&Json> = a["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["call_id"])
        .collect();
    assert_eq!(ids, [&json!(id(59)), &json!(id(58)), &json!(id(57))]);

    let a = ask(&storage, "Which functions were recorded?");
    assert_eq!(a["type"], "functions");
    assert_eq!(a["functions"][0]["function"], F);
    assert_eq!(a["functions"][0]["calls"], 60);

    let a = ask(&storage, "what is the meaning of life");
    assert_eq!(a["type"], "help");
    assert_eq!(a["functions"], json!([F]));
    assert_eq!(
        a["examples"][0],
        "What inputs cause errors in orders::process_order?"
    );
}

#[test]
fn what_a_function_calls() {
    let (_dir, storage) = store("what_a_function_calls");
    let a = ask(&storage, "What does process_order call?");
    assert_eq!(a["type"], "dependencies");
    assert_eq!(a["function"], F);
    assert_eq!(
        (&a["calls_read"], &a["sampled"]),
        (&json!(60), &json!(false))
    );
    // qty 6 (every sixth call) fails before calling anything.
    assert_eq!(a["calls_with_dependencies"], 50);
    let db = &a["dependencies"][0];
    assert_eq!(
        (&db["kind"], &db["what"], &db["count"], &db["calls"]),
        (
            &json!("db"),
            &json!("SELECT price FROM items WHERE qty = ?1"),
            &json!(50),
            &json!(50)
        )
    );
    assert_eq!(db["share_of_calls"], json!(50.0 / 60.0));
    // Durations i µs for the 50 calls i with qty != 6: nearest-rank median and max.
    let mut durations: Vec<u64> = (0..60u64)
        .filter(|i| i % 6 != 5)
        .map(|i| i * 1000)
        .collect();
    durations.sort_unstable();
    assert_eq!(db["p50_ns"], json!(durations[24]));
    assert_eq!(db["max_ns"], json!(58_000));
    // The newest call first: call 58 (qty 5).
    assert_eq!(db["example_call_id"], json!(id(58)));
    assert_eq!(
        db["example"],
        json!({"system": "sqlite", "statement": "SELECT price FROM items WHERE qty = ?1", "params": [5]})
    );
    let http = &a["dependencies"][1];
    assert_eq!(
        (
            &http["kind"],
            &http["what"],
            &http["count"],
            &http["p50_ns"]
        ),
        (
            &json!("http"),
            &json!("GET /stock"),
            &json!(20),
            &Json::Null
        )
    );
    assert_eq!(http["example_call_id"], json!(id(57)));
    assert_eq!(a["dependencies"].as_array().unwrap().len(), 2);
}
