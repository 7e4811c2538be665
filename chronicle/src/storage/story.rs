//! The storage story: one test of the whole [`Storage`] contract that every backend runs
//! against a fresh, empty store.

use std::time::SystemTime;

use super::{
    CallStats, ChangedOutput, FunctionSummary, OutcomeGroup, RecordOrder, RecordQuery, Storage,
};
use crate::limits::{Alert, AlertKind};
use crate::record::{CallRecord, Dependency, DependencyKind, Status, Value};
use crate::time::from_unix_nanos;

pub(crate) const BUILD_A: &str = "0123456789abcdef0123456789abcdef01234567";
pub(crate) const BUILD_B: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// 2026-11-26T19:30:01Z plus `secs`.
pub(crate) fn at(secs: i64) -> SystemTime {
    from_unix_nanos(1_795_721_401_000_000_000 + secs * 1_000_000_000)
}

/// A plain successful call of `function` that started `secs` after the story's epoch.
pub(crate) fn record(function: &str, secs: i64, duration_ns: u64) -> CallRecord {
    CallRecord {
        id: None,
        function: function.into(),
        binary: "/usr/bin/orders".into(),
        build_id: BUILD_A.into(),
        pid: 4242,
        tid: 4243,
        timestamp: at(secs),
        duration_ns: Some(duration_ns),
        status: Status::Ok,
        args: vec![("id".into(), Value::UInt(7))],
        ret: Some(Value::Bool(true)),
        unavailable: vec![],
        after: vec![],
        dependencies: vec![],
    }
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn query(function: &str) -> RecordQuery {
    RecordQuery {
        function: Some(function.into()),
        ..RecordQuery::default()
    }
}

const PROCESS: &str = "orders::process_order";
const VALIDATE: &str = "orders::validate";

/// Runs the story against `storage`, which must be empty.
pub(crate) fn story(storage: &mut dyn Storage) {
    // An empty store.
    assert_eq!(storage.functions().unwrap(), vec![]);
    assert_eq!(storage.function_names().unwrap(), Vec::<String>::new());
    assert_eq!(storage.records(&RecordQuery::default()).unwrap(), vec![]);
    storage.insert(&mut []).unwrap();
    assert_eq!(storage.records(&RecordQuery::default()).unwrap(), vec![]);

    // Every kind of value, and the distinctions the export format loses.
    let mut rich = record(PROCESS, 2, 300);
    rich.args = vec![
        (
            "order".into(),
            Value::Struct(vec![
                ("zone".into(), Value::Enum("EU".into())),
                ("amount".into(), Value::UInt(u64::MAX)),
                ("delta".into(), Value::Int(i64::MIN)),
                ("ratio".into(), Value::Float(0.1)),
                ("note".into(), s("EU")),
                ("raw".into(), Value::Bytes(vec![0xff, 0x00])),
                ("next".into(), Value::Ptr(0x7ffd_1000)),
                ("parent".into(), Value::Null),
                (
                    "tags".into(),
                    Value::Array(vec![s("a"), Value::Bool(false)]),
                ),
            ]),
        ),
        ("zflag".into(), Value::Bool(true)),
        ("amount".into(), Value::Int(-1)),
    ];
    rich.ret = Some(Value::Variant(
        "Ok".into(),
        Box::new(Value::Struct(vec![("id".into(), Value::UInt(99))])),
    ));
    rich.after = vec![
        ("buf".into(), s("filled")),
        (
            "order".into(),
            Value::Struct(vec![("zone".into(), Value::Enum("US".into()))]),
        ),
    ];
    rich.dependencies = vec![
        Dependency {
            kind: DependencyKind::Db,
            offset_ns: 1_500,
            duration_ns: Some(42_000),
            detail: vec![
                ("system".into(), s("sqlite")),
                ("statement".into(), s("INSERT INTO orders VALUES (?1, ?2)")),
                (
                    "params".into(),
                    Value::Array(vec![Value::UInt(u64::MAX), s("book")]),
                ),
            ],
        },
        Dependency {
            kind: DependencyKind::Http,
            offset_ns: 90_000,
            duration_ns: None,
            detail: vec![
                ("method".into(), s("GET")),
                ("target".into(), s("/stock/7")),
                ("status".into(), Value::UInt(200)),
            ],
        },
    ];
    let mut failed = record(PROCESS, 1, 100);
    failed.status = Status::Error;
    failed.ret = Some(Value::Variant("Err".into(), Box::new(s("no stock"))));
    let mut unwound = record(VALIDATE, 0, 0);
    unwound.status = Status::Unwound;
    unwound.duration_ns = None;
    unwound.ret = None;
    unwound.args = vec![];
    unwound.unavailable = vec![
        ("order".into(), "unmapped pointer 0x10".into()),
        ("return".into(), "did not return".into()),
    ];
    let mut newer = record(PROCESS, 3, 200);
    newer.build_id = BUILD_B.into();
    newer.binary = "/opt/orders-v2".into();
    newer.tid = 5000;
    // Same start as `failed`: ties come back in insertion order.
    let mut tie = record(PROCESS, 1, 100);
    tie.args = vec![];
    tie.ret = Some(Value::Null);

    let mut batch = vec![rich, failed, unwound, newer, tie];
    storage.insert(&mut batch).unwrap();
    let ids: Vec<i64> = batch.iter().map(|r| r.id.expect("id assigned")).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids grow: {ids:?}"
    );
    let [rich, failed, unwound, newer, tie] = <[CallRecord; 5]>::try_from(batch).unwrap();

    // Slowest first; equal durations in insertion order; calls that never returned last.
    let slowest = |limit| RecordQuery {
        order: RecordOrder::Slowest,
        limit,
        ..RecordQuery::default()
    };
    assert_eq!(
        storage.records(&slowest(None)).unwrap(),
        vec![
            rich.clone(),
            newer.clone(),
            failed.clone(),
            tie.clone(),
            unwound.clone()
        ]
    );
    assert_eq!(
        storage.records(&slowest(Some(4))).unwrap(),
        vec![rich.clone(), newer.clone(), failed.clone(), tie.clone()]
    );

    // Queries: oldest first, exact values back.
    assert_eq!(
        storage.records(&query(PROCESS)).unwrap(),
        vec![failed.clone(), tie.clone(), rich.clone(), newer.clone()]
    );
    assert_eq!(
        storage.records(&query(VALIDATE)).unwrap(),
        vec![unwound.clone()]
    );
    assert_eq!(
        storage.records(&RecordQuery::default()).unwrap(),
        vec![
            unwound.clone(),
            failed.clone(),
            tie.clone(),
            rich.clone(),
            newer.clone()
        ]
    );
    assert_eq!(
        storage
            .records(&RecordQuery {
                limit: Some(2),
                ..query(PROCESS)
            })
            .unwrap(),
        vec![failed.clone(), tie.clone()]
    );
    assert_eq!(
        storage
            .records(&RecordQuery {
                limit: Some(0),
                ..query(PROCESS)
            })
            .unwrap(),
        vec![]
    );
    assert_eq!(
        storage
            .records(&RecordQuery {
                status: Some(Status::Error),
                ..RecordQuery::default()
            })
            .unwrap(),
        vec![failed.clone()]
    );
    assert_eq!(
        storage
            .records(&RecordQuery {
                status: Some(Status::Unwound),
                ..query(PROCESS)
            })
            .unwrap(),
        vec![]
    );
    assert_eq!(
        storage
            .records(&RecordQuery {
                since: Some(at(2)),
                ..RecordQuery::default()
            })
            .unwrap(),
        vec![rich.clone(), newer.clone()]
    );
    assert_eq!(
        storage
            .records(&RecordQuery {
                until: Some(at(2)),
                ..RecordQuery::default()
            })
            .unwrap(),
        vec![unwound.clone(), failed.clone(), tie.clone()]
    );
    assert_eq!(
        storage
            .records(&RecordQuery {
                since: Some(at(1)),
                until: Some(at(3)),
                limit: Some(10),
                ..query(PROCESS)
            })
            .unwrap(),
        vec![failed.clone(), tie.clone(), rich.clone()]
    );
    assert_eq!(storage.records(&query("process_order")).unwrap(), vec![]);

    assert_eq!(
        storage.function_names().unwrap(),
        vec![PROCESS.to_string(), VALIDATE.to_string()]
    );
    let process_summary = FunctionSummary {
        function: PROCESS.into(),
        calls: 4,
        errors: 1,
        unwound: 0,
        // Durations 100, 100, 200, 300.
        p50_ns: Some(100),
        p99_ns: Some(300),
        first_seen: at(1),
        last_seen: at(3),
        build_ids: vec![BUILD_A.into(), BUILD_B.into()],
        binaries: vec!["/usr/bin/orders".into(), "/opt/orders-v2".into()],
    };
    assert_eq!(
        storage.functions().unwrap(),
        vec![
            process_summary.clone(),
            FunctionSummary {
                function: VALIDATE.into(),
                calls: 1,
                errors: 0,
                unwound: 1,
                p50_ns: None,
                p99_ns: None,
                first_seen: at(0),
                last_seen: at(0),
                build_ids: vec![BUILD_A.into()],
                binaries: vec!["/usr/bin/orders".into()],
            },
        ]
    );

    // A second batch: ids keep growing; a binary without a build ID; an instant before 1970.
    let mut no_build_id = record(VALIDATE, 10, 50);
    no_build_id.build_id = String::new();
    no_build_id.binary = "/lib/libvalidate.so".into();
    no_build_id.id = Some(-5); // Replaced by the store.
    let mut old = record("legacy::clock", 0, 0);
    old.timestamp = from_unix_nanos(-1_500_000_000);
    old.duration_ns = Some(u64::try_from(i64::MAX).unwrap());
    let mut second = vec![no_build_id, old];
    storage.insert(&mut second).unwrap();
    assert!(second[0].id.unwrap() > ids[4]);
    assert!(second[1].id.unwrap() > second[0].id.unwrap());
    let [no_build_id, old] = <[CallRecord; 2]>::try_from(second).unwrap();
    assert_eq!(
        storage.records(&query("legacy::clock")).unwrap(),
        vec![old.clone()]
    );
    assert_eq!(
        storage.records(&query(VALIDATE)).unwrap(),
        vec![unwound.clone(), no_build_id.clone()]
    );
    assert_eq!(
        storage.function_names().unwrap(),
        vec![
            "legacy::clock".to_string(),
            PROCESS.to_string(),
            VALIDATE.to_string()
        ]
    );
    assert_eq!(
        storage.functions().unwrap(),
        vec![
            FunctionSummary {
                function: "legacy::clock".into(),
                calls: 1,
                errors: 0,
                unwound: 0,
                p50_ns: Some(u64::try_from(i64::MAX).unwrap()),
                p99_ns: Some(u64::try_from(i64::MAX).unwrap()),
                first_seen: from_unix_nanos(-1_500_000_000),
                last_seen: from_unix_nanos(-1_500_000_000),
                build_ids: vec![BUILD_A.into()],
                binaries: vec!["/usr/bin/orders".into()],
            },
            process_summary,
            FunctionSummary {
                function: VALIDATE.into(),
                calls: 2,
                errors: 0,
                unwound: 1,
                p50_ns: Some(50),
                p99_ns: Some(50),
                first_seen: at(0),
                last_seen: at(10),
                build_ids: vec![BUILD_A.into()],
                binaries: vec!["/usr/bin/orders".into(), "/lib/libvalidate.so".into()],
            },
        ]
    );

    // Alerts round-trip in order.
    assert_eq!(storage.alerts().unwrap(), vec![]);
    let alerts = vec![
        Alert {
            timestamp: at(5),
            function: PROCESS.into(),
            kind: AlertKind::FunctionLimit,
            key: None,
            limit: 100,
            message: "limit reached".into(),
        },
        Alert {
            timestamp: at(6),
            function: PROCESS.into(),
            kind: AlertKind::TypeLimit,
            key: Some("order.kind=GIFT".into()),
            limit: u64::MAX >> 1,
            message: "type limit reached".into(),
        },
    ];
    storage.insert_alerts(&alerts).unwrap();
    assert_eq!(storage.alerts().unwrap(), alerts);

    analysis(storage);

    // Retention: the newest record of each function stays, then nothing before at(2).
    let count = |storage: &dyn Storage| storage.records(&RecordQuery::default()).unwrap().len();
    let before = count(storage);
    assert_eq!(
        storage.keep_newest(PROCESS, 1).unwrap() as usize,
        before - count(storage)
    );
    let process = storage.records(&query(PROCESS)).unwrap();
    assert_eq!(process.len(), 1);
    assert_eq!(process[0].timestamp, at(3), "the newest {PROCESS} stays");
    assert_eq!(storage.keep_newest("no::such", 1).unwrap(), 0);
    let deleted = storage.delete_before(at(2)).unwrap();
    let left = storage.records(&RecordQuery::default()).unwrap();
    assert!(left.iter().all(|r| r.timestamp >= at(2)), "{left:?}");
    assert!(
        deleted >= 2,
        "legacy::clock and validate's first call are older"
    );
    assert_eq!(super::enforce_retention(storage, 0, 0).unwrap(), 0);
}

/// Aggregates for `query`, `ask` and the MCP tools, on 100 calls of one function with known
/// durations, outcomes and builds: call `i` (0..100) starts at `at(1000 + i)`, takes
/// `(i + 1)` µs and gets `id = i % 5`; every tenth call fails with `Err("bad")`, the last
/// never returns, the others return `id` — except that build B (calls 50..) returns 30 for
/// `id = 3`.
fn analysis(storage: &mut dyn Storage) {
    const F: &str = "stats::quote";
    let mut calls: Vec<CallRecord> = (0..100)
        .map(|i| {
            let mut r = record(F, 1000 + i, (i as u64 + 1) * 1000);
            let id = (i % 5) as u64;
            r.args = vec![("id".into(), Value::UInt(id))];
            if i >= 50 {
                r.build_id = BUILD_B.into();
            }
            if i == 99 {
                r.status = Status::Unwound;
                r.duration_ns = None;
                r.ret = None;
            } else if i % 10 == 0 {
                r.status = Status::Error;
                r.ret = Some(Value::Variant("Err".into(), Box::new(s("bad"))));
            } else {
                let ret = if i >= 50 && id == 3 { 30 } else { id };
                r.ret = Some(Value::UInt(ret));
            }
            r
        })
        .collect();
    storage.insert(&mut calls).unwrap();
    let id = |i: usize| calls[i].id.unwrap();
    let ok = |n: u64| (Status::Ok, Some(Value::UInt(n)));
    let group = |(status, ret): (Status, Option<Value>), count, i| OutcomeGroup {
        status,
        ret,
        count,
        example_id: id(i),
    };
    let err = (
        Status::Error,
        Some(Value::Variant("Err".into(), Box::new(s("bad")))),
    );
    assert_eq!(
        storage.call_stats(&query(F)).unwrap(),
        CallStats {
            calls: 100,
            errors: 10,
            unwound: 1,
            // 99 calls returned, taking 1..=99 µs: nearest ranks 50, 90, 99 and 99.
            p50_ns: Some(50_000),
            p90_ns: Some(90_000),
            p99_ns: Some(99_000),
            max_ns: Some(99_000),
            first_seen: Some(at(1000)),
            last_seen: Some(at(1099)),
        }
    );
    // Most frequent first; ties: the newest example first.
    assert_eq!(
        storage.outcomes(&query(F), 10).unwrap(),
        vec![
            group(ok(2), 20, 97),
            group(ok(1), 20, 96),
            group(ok(4), 19, 94),
            group(ok(30), 10, 98),
            group(ok(0), 10, 95),
            group(err.clone(), 10, 90),
            group(ok(3), 10, 48),
            group((Status::Unwound, None), 1, 99),
        ]
    );
    assert_eq!(storage.outcomes(&query(F), 2).unwrap().len(), 2);
    // Filters: status, build, time.
    let errors = RecordQuery {
        status: Some(Status::Error),
        ..query(F)
    };
    let stats = storage.call_stats(&errors).unwrap();
    assert_eq!(
        (stats.calls, stats.errors, stats.p50_ns),
        (10, 10, Some(41_000))
    );
    assert_eq!(
        storage.outcomes(&errors, 10).unwrap(),
        vec![group(err, 10, 90)]
    );
    let build_b = RecordQuery {
        build_id: Some(BUILD_B.into()),
        ..query(F)
    };
    let stats = storage.call_stats(&build_b).unwrap();
    assert_eq!(
        (stats.calls, stats.unwound, stats.p50_ns),
        (50, 1, Some(75_000))
    );
    let early = RecordQuery {
        until: Some(at(1010)),
        ..query(F)
    };
    assert_eq!(storage.call_stats(&early).unwrap().calls, 10);
    let none = RecordQuery {
        since: Some(at(5000)),
        ..query(F)
    };
    assert_eq!(
        storage.call_stats(&none).unwrap(),
        CallStats::default(),
        "no calls: zero counts, no percentiles"
    );

    // Orders: slowest first (calls that never returned last), newest first.
    let slowest = RecordQuery {
        order: RecordOrder::Slowest,
        limit: Some(3),
        ..query(F)
    };
    let durations: Vec<Option<u64>> = storage
        .records(&slowest)
        .unwrap()
        .iter()
        .map(|r| r.duration_ns)
        .collect();
    assert_eq!(durations, [Some(99_000), Some(98_000), Some(97_000)]);
    let newest = RecordQuery {
        order: RecordOrder::Newest,
        limit: Some(2),
        ..query(F)
    };
    let ids: Vec<i64> = storage
        .records(&newest)
        .unwrap()
        .iter()
        .map(|r| r.id.unwrap())
        .collect();
    assert_eq!(ids, [id(99), id(98)]);

    // Volume in 50 s buckets aligned to the Unix epoch: at(1000) is 1 s into its bucket.
    let bucket = |secs: i64| from_unix_nanos((1_795_722_400 + secs) * 1_000_000_000);
    assert_eq!(
        storage
            .call_volume(&query(F), std::time::Duration::from_secs(50))
            .unwrap(),
        vec![(bucket(0), 49), (bucket(50), 50), (bucket(100), 1)]
    );

    assert_eq!(storage.build_ids(F).unwrap(), [BUILD_A, BUILD_B]);

    // Same input, different output between builds: only `id = 3` changed (0 fails and
    // succeeds in both; 4 never returning once in B is not a changed output of 4).
    let build_a = RecordQuery {
        build_id: Some(BUILD_A.into()),
        ..query(F)
    };
    assert_eq!(
        storage.changed_outputs(&build_a, &build_b, 10).unwrap(),
        vec![ChangedOutput {
            args: vec![("id".into(), Value::UInt(3))],
            before: (Status::Ok, Some(Value::UInt(3)), id(48)),
            after: (Status::Ok, Some(Value::UInt(30)), id(98)),
        }]
    );
    assert_eq!(
        storage.changed_outputs(&build_a, &build_a, 10).unwrap(),
        vec![]
    );
}

/// The durations of the calls that returned, sorted: what percentiles rank.
fn returned_durations<'a>(calls: impl IntoIterator<Item = &'a CallRecord>) -> Vec<u64> {
    let mut durations: Vec<u64> = calls
        .into_iter()
        .filter(|r| r.status != Status::Unwound)
        .filter_map(|r| r.duration_ns)
        .collect();
    durations.sort_unstable();
    durations
}

/// What [`Storage::functions`] must say, worked out from every stored record: counts,
/// nearest-rank percentiles of the calls that returned, first and last start, and the builds
/// and binaries in the order of their earliest call (ties: the lowest id at that instant).
pub(crate) fn summaries_from_records(storage: &dyn Storage) -> Vec<FunctionSummary> {
    use std::collections::BTreeMap;
    let all = storage.records(&RecordQuery::default()).unwrap();
    let mut by_function: BTreeMap<&str, Vec<&CallRecord>> = BTreeMap::new();
    for r in &all {
        by_function.entry(&r.function).or_default().push(r);
    }
    by_function
        .into_iter()
        .map(|(function, calls)| {
            let durations = returned_durations(calls.iter().copied());
            // (earliest start, lowest id then) of each (build, binary).
            let mut builds: BTreeMap<(&str, &str), (SystemTime, i64)> = BTreeMap::new();
            for r in &calls {
                let first = (r.timestamp, r.id.unwrap());
                builds
                    .entry((&r.build_id, &r.binary))
                    .and_modify(|seen| *seen = (*seen).min(first))
                    .or_insert(first);
            }
            let mut builds: Vec<_> = builds.into_iter().collect();
            builds.sort_by_key(|&(_, first)| first);
            let mut build_ids: Vec<String> = Vec::new();
            let mut binaries: Vec<String> = Vec::new();
            for ((build_id, binary), _) in builds {
                if !build_id.is_empty() && !build_ids.iter().any(|b| b == build_id) {
                    build_ids.push(build_id.to_owned());
                }
                if !binaries.iter().any(|b| b == binary) {
                    binaries.push(binary.to_owned());
                }
            }
            let count = |status| calls.iter().filter(|r| r.status == status).count() as u64;
            FunctionSummary {
                function: function.to_owned(),
                calls: calls.len() as u64,
                errors: count(Status::Error),
                unwound: count(Status::Unwound),
                p50_ns: super::percentile(&durations, 50),
                p99_ns: super::percentile(&durations, 99),
                first_seen: calls.iter().map(|r| r.timestamp).min().unwrap(),
                last_seen: calls.iter().map(|r| r.timestamp).max().unwrap(),
                build_ids,
                binaries,
            }
        })
        .collect()
}

/// The summaries agree with the records after every change: inserts in and out of time
/// order, equal start times, several builds and binaries, and deletes (by age, by count)
/// that take a function's or a build's first or last call, or all of them.
#[track_caller]
fn check_summaries(storage: &dyn Storage, step: &str) {
    let expected = summaries_from_records(storage);
    let got = storage.functions().unwrap();
    assert_eq!(got, expected, "after {step}");
    for summary in &expected {
        let stats = storage.call_stats(&query(&summary.function)).unwrap();
        let all = storage.records(&query(&summary.function)).unwrap();
        let durations = returned_durations(&all);
        let want = CallStats {
            calls: summary.calls,
            errors: summary.errors,
            unwound: summary.unwound,
            p50_ns: summary.p50_ns,
            p90_ns: super::percentile(&durations, 90),
            p99_ns: summary.p99_ns,
            max_ns: durations.last().copied(),
            first_seen: Some(summary.first_seen),
            last_seen: Some(summary.last_seen),
        };
        assert_eq!(stats, want, "{} after {step}", summary.function);
    }
}

/// Runs the summary story against `storage`, which must be empty.
pub(crate) fn summary_story(storage: &mut dyn Storage) {
    let call = |function: &str, secs: i64, duration: u64, status: Status, build: usize| {
        let mut r = record(function, secs, duration);
        r.status = status;
        if status == Status::Unwound {
            r.duration_ns = None;
            r.ret = None;
        }
        (r.build_id, r.binary) = match build {
            0 => (BUILD_A.into(), "/usr/bin/orders".into()),
            1 => (BUILD_B.into(), "/opt/orders-v2".into()),
            // A binary without a build ID, and the first build under another path.
            2 => (String::new(), "/tmp/orders-dev".into()),
            _ => (BUILD_A.into(), "/srv/orders".into()),
        };
        r
    };
    use Status::{Error, Ok, Unwound};
    let mut first = vec![
        call(PROCESS, 10, 500, Ok, 0),
        call(PROCESS, 10, 700, Error, 1),
        call(PROCESS, 11, 300, Ok, 0),
        call(PROCESS, 12, 0, Unwound, 2),
        call(PROCESS, 14, 900, Ok, 3),
        call(VALIDATE, 10, 50, Ok, 0),
        call(VALIDATE, 13, 60, Unwound, 0),
        call("cache::get", 20, 5, Ok, 1),
        call("cache::get", 20, 7, Error, 1),
    ];
    storage.insert(&mut first).unwrap();
    check_summaries(storage, "the first batch");
    // Older calls arriving later (another agent's batch), one with the same start as the
    // first build's first call.
    let mut second = vec![
        call(PROCESS, 5, 100, Ok, 1),
        call(PROCESS, 10, 200, Ok, 2),
        call(VALIDATE, 30, 40, Error, 3),
        call("cache::get", 20, 9, Ok, 0),
    ];
    storage.insert(&mut second).unwrap();
    check_summaries(storage, "older calls");
    // Takes PROCESS's first call (build 1 moves to its next one) and nothing else.
    assert_eq!(storage.delete_before(at(10)).unwrap(), 1);
    check_summaries(storage, "deleting the oldest call");
    // Takes the calls at 10 s: first calls of PROCESS, VALIDATE and builds 0 and 2.
    assert_eq!(storage.delete_before(at(11)).unwrap(), 4);
    check_summaries(storage, "deleting first calls");
    // Keeps PROCESS's two newest: its last build stays, the unwound call goes.
    assert_eq!(storage.keep_newest(PROCESS, 2).unwrap(), 1);
    check_summaries(storage, "keeping the newest");
    assert_eq!(storage.keep_newest("cache::get", 0).unwrap(), 3);
    check_summaries(storage, "emptying a function");
    assert!(
        storage
            .functions()
            .unwrap()
            .iter()
            .all(|f| f.function != "cache::get")
    );
    assert_eq!(
        storage.call_stats(&query("cache::get")).unwrap(),
        CallStats::default()
    );
    storage.delete_before(at(1000)).unwrap();
    assert_eq!(storage.functions().unwrap(), vec![]);
    let mut again = vec![call(VALIDATE, 40, 10, Ok, 1)];
    storage.insert(&mut again).unwrap();
    check_summaries(storage, "a new call in an emptied store");
}
