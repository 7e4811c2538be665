//! Replaying `#[capture]`d calls against in-process closures: record real calls into
//! SQLite, then check a faithful rewrite passes and a changed one fails with the exact
//! differences. One test function: recording is process-wide.

use chronicle::capture;
use chronicle::replay::{IgnoreRules, ReplayCase, ReplayEngine, ResultStatus};
use chronicle::storage::sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone)]
struct Order {
    id: u64,
    items: Vec<(String, u32)>,
    express: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Quote {
    total_cents: u64,
    issued_at: u64,
}

#[derive(Serialize, Debug)]
enum QuoteError {
    Empty,
}

static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000);

#[capture(name = "orders::quote")]
fn quote(order: &Order) -> Result<Quote, QuoteError> {
    if order.items.is_empty() {
        return Err(QuoteError::Empty);
    }
    let units: u64 = order.items.iter().map(|(_, q)| u64::from(*q)).sum();
    Ok(Quote {
        total_cents: units * 250 + if order.express { 500 } else { 0 },
        issued_at: CLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    })
}

/// The rewrite: same prices, another clock.
fn quote_v2(order: &Order, express_fee: u64) -> Result<Quote, QuoteError> {
    let units = order.items.iter().fold(0u64, |n, (_, q)| n + u64::from(*q));
    match units {
        0 => Err(QuoteError::Empty),
        _ => Ok(Quote {
            total_cents: 250 * units + u64::from(order.express) * express_fee,
            issued_at: 99,
        }),
    }
}

#[test]
fn closures_replay_captured_calls() {
    let dir = std::env::temp_dir().join(format!("chronicle-replay-closure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("chronicle.db");
    let guard = capture::init_sqlite(&db).unwrap();
    let orders = [
        Order {
            id: 1,
            items: vec![("A".into(), 2)],
            express: false,
        },
        Order {
            id: 2,
            items: vec![("A".into(), 1), ("B".into(), 3)],
            express: true,
        },
        Order {
            id: 3,
            items: vec![],
            express: true,
        },
    ];
    for o in &orders {
        let _ = quote(o);
    }
    guard.finish().unwrap();

    let storage = SqliteStorage::open_existing(&db).unwrap();
    let replay = |fee: u64, ignore: IgnoreRules| {
        ReplayEngine::new(&storage)
            .ignore(ignore)
            .replay_with("orders::quote", None, |case: &ReplayCase| {
                let order: Order = case.arg("order")?;
                Ok(quote_v2(&order, fee))
            })
            .unwrap()
    };

    // The clock differs on every call: without an ignore rule each Ok call fails on it.
    let noisy = replay(500, IgnoreRules::default());
    assert_eq!((noisy.passed, noisy.failed, noisy.errors), (1, 2, 0));
    let diffs: Vec<String> = noisy
        .results
        .iter()
        .flat_map(|r| r.difference.iter().map(ToString::to_string))
        .collect();
    assert_eq!(
        diffs,
        ["$.Ok.issued_at: 1000 → 99", "$.Ok.issued_at: 1001 → 99"]
    );

    let ignore = || IgnoreRules::default().path("$.Ok.issued_at").unwrap();
    let same = replay(500, ignore());
    assert_eq!(
        (same.passed, same.failed, same.errors, same.skipped),
        (3, 0, 0, 0)
    );
    assert!(same.ok());

    // A changed fee fails exactly the express order that has items; the empty one is
    // still `Err(Empty)` with status error on both sides.
    let changed = replay(650, ignore());
    assert_eq!((changed.passed, changed.failed), (2, 1));
    let failed = changed
        .results
        .iter()
        .find(|r| r.status == ResultStatus::Failed)
        .unwrap();
    assert_eq!(
        failed.difference[0].to_string(),
        "$.Ok.total_cents: 1500 → 1650"
    );

    // A closure error is a replay error with its reason.
    let broken = ReplayEngine::new(&storage)
        .replay_with("orders::quote", Some(1), |case: &ReplayCase| {
            case.arg::<u32>("order").map(|_| 0)
        })
        .unwrap();
    assert_eq!(broken.errors, 1);
    assert!(
        broken.results[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("argument `order`: invalid type: map, expected u32"),
        "{:?}",
        broken.results[0].reason
    );
    let _ = std::fs::remove_dir_all(&dir);
}
