//! Start a Rust service under `chronicle attach -- PROGRAM` and check that every call from
//! the first one on was stored, with exact values.

use std::collections::BTreeMap;

use chronicle_tests::{Opt, bpf_available, build_id, build_rust, chronicle_ok, export, scratch};
use serde_json::json;

const ROUNDS: u64 = 25;

#[test]
fn attach_to_program_from_its_first_call() {
    let name = "attach_to_program_from_its_first_call";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let inventory = build_rust("inventory", Opt::O0);
    let db = dir.join("chronicle.db");
    let rounds = ROUNDS.to_string();
    let out = chronicle_ok(&[
        "attach",
        "--db",
        db.to_str().unwrap(),
        "--func",
        "reserve_stock",
        "--func",
        "inventory::fib",
        "--func",
        "widest",
        "--func",
        "pricing::quote",
        "--func",
        "audit",
        "--",
        inventory.to_str().unwrap(),
        "--iterations",
        &rounds,
        "--interval-ms",
        "1",
    ]);
    // The program's own output passes through unchanged.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("ready ") && stdout.ends_with("done\n"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("program exited with status 0"), "{stderr}");

    let reserve = export(&db, "inventory::reserve_stock");
    assert_eq!(
        reserve.len() as u64,
        2 * ROUNDS,
        "every call from the first one is stored"
    );
    let mut seen = BTreeMap::new();
    for r in &reserve {
        assert_eq!(r["function"], "inventory::reserve_stock");
        assert_eq!(r["build_id"], build_id(&inventory));
        assert_eq!(r["status"], "ok");
        assert_eq!(r["replayable"], true);
        assert_eq!(r["unavailable"], json!({}));
        *seen
            .entry((r["args"].to_string(), r["return"].to_string()))
            .or_insert(0) += 1;
    }
    let expect: BTreeMap<(String, String), u64> = [
        (json!({"sku": 42, "quantity": 3, "express": true}), json!(6)),
        (
            json!({"sku": 7, "quantity": -5, "express": false}),
            json!(-1),
        ),
    ]
    .into_iter()
    .map(|(a, r)| ((a.to_string(), r.to_string()), ROUNDS))
    .collect();
    assert_eq!(seen, expect);

    // fib(4) makes 9 calls; each record pairs n with fib(n).
    let fibs = export(&db, "fib");
    assert_eq!(fibs.len() as u64, 9 * ROUNDS);
    let fib = |n: u64| -> u64 { (0..n).fold((0, 1), |(a, b), _| (b, a + b)).0 };
    for r in &fibs {
        let n = r["args"]["n"].as_u64().unwrap();
        assert_eq!(r["return"], json!(fib(n)), "{r}");
    }

    let widest = export(&db, "widest");
    assert_eq!(widest.len() as u64, ROUNDS);
    let expect_ret =
        u64::MAX.wrapping_add((i64::MIN as u64) ^ 255 ^ (-1i8 as u64) ^ 65535 ^ (-32768i16 as u64));
    for r in &widest {
        assert_eq!(
            r["args"],
            json!({"a": u64::MAX, "b": i64::MIN, "c": 255, "d": -1, "e": 65535, "f": -32768}),
        );
        assert_eq!(r["return"], json!(expect_ret));
    }

    let quotes = export(&db, "pricing::quote");
    assert_eq!(quotes.len() as u64, ROUNDS);
    assert!(quotes.iter().all(
        |r| r["args"] == json!({"units": 12, "cents_each": 199}) && r["return"] == json!(2388)
    ));

    // Two worker threads, told apart by tid.
    let audits = export(&db, "audit");
    let mut tids: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for r in &audits {
        let worker = r["args"]["worker"].as_u64().unwrap();
        let step = r["args"]["step"].as_u64().unwrap();
        assert_eq!(r["return"], json!(worker * 1000 + step), "{r}");
        tids.entry(worker)
            .or_default()
            .insert(r["tid"].as_u64().unwrap());
    }
    assert_eq!(tids.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert!(tids[&1].is_disjoint(&tids[&2]));
}
