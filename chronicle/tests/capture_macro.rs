//! `#[capture]` on sync and async functions and methods, into the real pipeline and a real
//! SQLite file: exact stored JSON, errors, panics, dropped futures, skip, name override.
//! One test function: recording is process-wide.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use chronicle::capture;
use chronicle::export::record_json;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::storage::{RecordQuery, Storage};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Serialize, Clone)]
struct Order {
    id: u64,
    kind: Kind,
    items: Vec<(String, u32)>,
    note: Option<String>,
}

#[derive(Serialize, Clone)]
enum Kind {
    Retail,
    Wholesale { tier: u8 },
}

#[derive(Serialize, Debug)]
enum OrderError {
    OutOfStock(String),
}

#[capture]
fn total(order: &Order, discount: u32) -> u64 {
    order.items.iter().map(|(_, q)| u64::from(*q)).sum::<u64>() * 100 - u64::from(discount)
}

#[capture(name = "orders::check")]
fn check(order: Order) -> Result<u64, OrderError> {
    if order.items.is_empty() {
        return Err(OrderError::OutOfStock("nothing".into()));
    }
    Ok(order.id)
}

#[capture(skip(secret_handle))]
fn with_skip(secret_handle: std::rc::Rc<u8>, n: i32) -> i32 {
    n + i32::from(*secret_handle)
}

#[capture]
fn explode(n: u8) -> u8 {
    if n > 0 {
        panic!("boom");
    }
    n
}

struct Counter {
    step: u32,
}

#[derive(Serialize)]
struct Snapshot {
    step: u32,
}

impl Counter {
    #[capture(self)]
    fn next(&self, x: u32) -> u32 {
        x + self.step
    }
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Snapshot { step: self.step }.serialize(s)
    }
}

#[capture]
async fn fetch(id: u64) -> Option<String> {
    Pending(1).await;
    (id > 0).then(|| format!("item-{id}"))
}

/// Pending `n` times, then ready.
struct Pending(u32);

impl Future for Pending {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            Poll::Ready(())
        } else {
            self.0 -= 1;
            Poll::Pending
        }
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The stored records without the per-call fields.
fn stored(db: &std::path::Path) -> Vec<Value> {
    let storage = SqliteStorage::open_existing(db).unwrap();
    storage
        .records(&RecordQuery::default())
        .unwrap()
        .iter()
        .map(|r| {
            let mut j = record_json(r);
            let o = j.as_object_mut().unwrap();
            for k in [
                "id",
                "timestamp",
                "duration_ns",
                "pid",
                "tid",
                "build_id",
                "binary",
                "dependencies",
            ] {
                o.remove(k);
            }
            j
        })
        .collect()
}

#[test]
fn captured_calls_are_stored_exactly() {
    let order = Order {
        id: 7,
        kind: Kind::Wholesale { tier: 2 },
        items: vec![("A-1".into(), 2), ("B-2".into(), 1)],
        note: None,
    };
    // Off: nothing is recorded, behaviour unchanged.
    assert_eq!(total(&order, 50), 250);

    let dir = std::env::temp_dir().join(format!("chronicle-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("calls.db");
    let _ = std::fs::remove_file(&db);
    let guard = capture::init_sqlite(&db).unwrap();
    assert!(capture::is_enabled());

    assert_eq!(total(&order, 50), 250);
    assert_eq!(check(order.clone()).unwrap(), 7);
    let empty = Order {
        items: vec![],
        kind: Kind::Retail,
        note: Some("rush".into()),
        ..order.clone()
    };
    assert!(check(empty).is_err());
    assert_eq!(with_skip(std::rc::Rc::new(1), 41), 42);
    assert!(
        std::panic::catch_unwind(|| explode(1)).is_err(),
        "the panic propagates"
    );
    assert_eq!(Counter { step: 3 }.next(4), 7);
    assert_eq!(block_on(fetch(9)).as_deref(), Some("item-9"));
    {
        // Polled once, then dropped before completing.
        let mut f = Box::pin(fetch(1));
        let _ = f.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    }
    guard.finish().unwrap();
    assert!(!capture::is_enabled());

    let module = "capture_macro";
    let order_json = json!({"id": 7, "kind": {"Wholesale": {"tier": 2}},
                            "items": [["A-1", 2], ["B-2", 1]], "note": {"None": null}});
    assert_eq!(
        stored(&db),
        [
            json!({"function": format!("{module}::total"), "status": "ok",
                   "args": {"order": order_json, "discount": 50}, "return": 250,
                   "replayable": true, "unavailable": {}}),
            json!({"function": "orders::check", "status": "ok", "args": {"order": order_json},
                   "return": {"Ok": 7}, "replayable": true, "unavailable": {}}),
            json!({"function": "orders::check", "status": "error",
                   "args": {"order": {"id": 7, "kind": {"Retail": null}, "items": [],
                                      "note": {"Some": "rush"}}},
                   "return": {"Err": {"OutOfStock": "nothing"}}, "replayable": true,
                   "unavailable": {}}),
            json!({"function": format!("{module}::with_skip"), "status": "ok",
                   "args": {"n": 41}, "return": 42, "replayable": false,
                   "unavailable": {"secret_handle": "skipped (#[capture(skip(..))])"}}),
            json!({"function": format!("{module}::explode"), "status": "unwound",
                   "args": {"n": 1}, "return": null, "replayable": true,
                   "unavailable": {"return": "the function panicked"}}),
            json!({"function": format!("{module}::next"), "status": "ok",
                   "args": {"self": {"step": 3}, "x": 4}, "return": 7, "replayable": true,
                   "unavailable": {}}),
            json!({"function": format!("{module}::fetch"), "status": "ok", "args": {"id": 9},
                   "return": {"Some": "item-9"}, "replayable": true, "unavailable": {}}),
            json!({"function": format!("{module}::fetch"), "status": "unwound", "args": {"id": 1},
                   "return": null, "replayable": true,
                   "unavailable": {"return": "the future was dropped before it completed"}}),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
