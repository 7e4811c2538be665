//! Hostile data and behaviour in the traced program (`tests/fixtures/hostile.c`): pointers to
//! nothing, a string running into an unmapped page, bytes that are not UTF-8, a huge array, a
//! struct that points to itself, recursion 5 000 deep, 64 threads, fork and exec. Each value
//! is stored exactly or marked with the reason it is not, every call is accounted for, and the
//! program runs exactly as it does untraced.

use std::collections::BTreeMap;
use std::process::Command;

use chronicle_tests::{Opt, bpf_available, build_c, chronicle_bin, export, scratch};
use serde_json::{Value, json};

/// `name ADDRESS` from the program's own output line that starts with `prefix`.
fn address_after(output: &str, prefix: &str, marker: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in {output}"));
    line.split_once(marker)
        .map(|(_, a)| a.trim().to_owned())
        .unwrap_or_else(|| panic!("no {marker} in {line}"))
}

fn hostile_data(opt: Opt) {
    let name = format!("hostile_data_{opt:?}");
    if !bpf_available(&name) {
        return;
    }
    let dir = scratch(&name);
    let hostile = build_c("hostile", opt);
    let plain = Command::new(&hostile).output().unwrap();
    assert!(plain.status.success());
    let db = dir.join("chronicle.db");
    let traced = Command::new(chronicle_bin())
        .args(["attach", "--progress", "0", "--db"])
        .arg(&db)
        .args(["--func", "peek", "--func", "span", "--func", "total"])
        .args(["--func", "depth", "--func", "work", "--func", "spawn", "--"])
        .arg(&hostile)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(
        stderr.contains("(program exited with status 0)"),
        "{stderr}"
    );
    let out = String::from_utf8_lossy(&traced.stdout).into_owned();
    // Same output as untraced, but for the addresses it prints (ASLR).
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                l.split(" at ")
                    .next()
                    .unwrap()
                    .split(" gone ")
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(strip(&out), strip(&String::from_utf8_lossy(&plain.stdout)));
    assert!(out.ends_with("child 3\ndone\n"), "{out}");

    // Pointers to nothing: the address, and why it was not followed.
    let gone = address_after(&out, "peek ", " gone ");
    let peeks = export(&db, "peek");
    let shown = |r: &Value| json!({"args": r["args"], "return": r["return"], "unavailable": r["unavailable"]});
    assert_eq!(
        shown(&peeks[0]),
        json!({"args": {"n": {"ptr": "0x10"}, "deref": 0}, "return": 7,
               "unavailable": {"n": "unreadable memory (errno 14) at 0x10"}})
    );
    assert_eq!(
        shown(&peeks[1]),
        json!({"args": {"n": {"ptr": gone}, "deref": 0}, "return": 7,
               "unavailable": {"n": format!("unreadable memory (errno 14) at {gone}")}})
    );
    // A node that is its own next: followed to the depth limit, then marked.
    let node = address_after(&out, "loop ", " at ");
    assert_eq!(
        shown(&peeks[2]),
        json!({"args": {"n": {"value": 42, "next": {"value": 42, "next": {"value": 42,
                                "next": {"ptr": node}}}}, "deref": 1},
               "return": 42,
               "unavailable": {"n.next.next.next": "not followed: deeper than 3 pointers (max_depth)"}})
    );

    // A string without a NUL before an unmapped page cannot be read whole: marked. Bytes
    // that are not UTF-8 are kept as bytes.
    let edge = address_after(&out, "edge ", " at ");
    let spans = export(&db, "span");
    assert_eq!(
        shown(&spans[0]),
        json!({"args": {"s": {"ptr": edge}, "cap": 16}, "return": 16,
               "unavailable": {"s": format!("unreadable memory (errno 14) at {edge}")}})
    );
    assert_eq!(
        shown(&spans[1]),
        json!({"args": {"s": {"bytes": "fffe206f6b20c328"}, "cap": 64}, "return": 8,
               "unavailable": {}})
    );

    // 800 008 bytes behind a pointer: not read, and said so; the return is exact.
    let big = address_after(&out, "total ", " at ");
    assert_eq!(
        shown(&export(&db, "total")[0]),
        json!({"args": {"b": {"ptr": big}}, "return": 4_999_950_000i64,
               "unavailable": {"b": "not captured: 800008 bytes is more than one read may take (4096)"}})
    );

    // Recursion 5 000 deep: every call stored; the outermost 64 with their returns, the
    // deeper ones marked with the kernel's limit on nested returns.
    let depth = export(&db, "depth");
    assert_eq!(depth.len(), 5001);
    let mut by_outcome: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &depth {
        let n = r["args"]["n"].as_i64().unwrap();
        match r["status"].as_str().unwrap() {
            "ok" => {
                assert_eq!(r["return"], json!(n), "{r}");
                by_outcome.entry("ok".into()).or_default().push(n);
            }
            _ => {
                assert_eq!(
                    r["unavailable"]["return"],
                    "no return seen: the call began with 64 traced calls already open on its \
                     thread, and the kernel reports at most 64 nested returns per thread (deep \
                     recursion)",
                    "{r}"
                );
                by_outcome.entry("deep".into()).or_default().push(n);
            }
        }
    }
    let mut ok = by_outcome.remove("ok").unwrap();
    ok.sort_unstable();
    assert_eq!(ok, (4937..=5000).collect::<Vec<i64>>());
    assert_eq!(by_outcome["deep"].len(), 4937);

    // 64 threads, 100 calls each: all 6 400, exact, on 64 threads; the forked child's call
    // (another process) is not this trace's.
    let work = export(&db, "work");
    assert_eq!(work.len(), 6400);
    let mut per_thread: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut tids = std::collections::BTreeSet::new();
    for r in &work {
        let (t, i) = (
            r["args"]["thread"].as_i64().unwrap(),
            r["args"]["i"].as_i64().unwrap(),
        );
        assert_eq!(r["return"], json!(t * 1000 + i), "{r}");
        per_thread.entry(t).or_default().push(i);
        tids.insert(r["tid"].as_u64().unwrap());
    }
    assert_eq!(tids.len(), 64);
    assert_eq!(per_thread.len(), 64);
    for (t, calls) in per_thread {
        assert_eq!(calls, (0..100).collect::<Vec<i64>>(), "thread {t}");
    }
    let spawn = export(&db, "spawn");
    assert_eq!(
        shown(&spawn[0]),
        json!({"args": {"code": 3}, "return": 3, "unavailable": {}})
    );
}

#[test]
fn hostile_data_at_o0() {
    hostile_data(Opt::O0);
}

#[test]
fn hostile_data_at_o2() {
    hostile_data(Opt::O2);
}
