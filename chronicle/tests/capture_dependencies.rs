//! Dependencies recorded from the inside: `capture::track` and `capture::dependency` attach
//! what a `#[capture]`d function does outside itself to the innermost captured call on its
//! thread, through redaction into a real SQLite file and out in the export format.
//! One test function: recording is process-wide.

use std::future::Future;
use std::time::{Duration, Instant};

use chronicle::capture::{dependency, track};
use chronicle::record::{DependencyKind, Value};
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::storage::{RecordQuery, Storage};
use serde_json::json;

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

#[chronicle::capture(name = "orders::process")]
fn process(id: u64) -> u64 {
    let stock = track(
        DependencyKind::Db,
        vec![
            ("system".into(), s("sqlite")),
            ("statement".into(), s("SELECT qty FROM stock WHERE id = ?1")),
            ("params".into(), Value::Array(vec![Value::UInt(id)])),
        ],
        || id * 10,
    );
    stock + save(id)
}

#[chronicle::capture(name = "orders::save")]
fn save(id: u64) -> u64 {
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    let recorded = dependency(
        DependencyKind::File,
        vec![
            ("path".into(), s("/var/orders/7.json")),
            ("op".into(), s("write")),
            ("bytes".into(), Value::UInt(42)),
            ("owner_email".into(), s("ada@example.com")),
        ],
        started,
        Some(started.elapsed()),
    );
    assert!(recorded);
    id
}

#[chronicle::capture(name = "orders::notify")]
async fn notify(id: u64) -> u64 {
    // An async call may move between threads: it takes no dependencies.
    let taken = dependency(DependencyKind::Net, vec![], Instant::now(), None);
    assert!(!taken);
    id
}

#[test]
fn dependencies_go_to_the_innermost_captured_call_on_the_thread() {
    let dir = std::env::temp_dir().join(format!("chronicle-deps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chronicle.db");

    // Nothing is recorded, nothing is taken, before recording starts.
    assert!(!dependency(
        DependencyKind::Db,
        vec![],
        Instant::now(),
        None
    ));
    let recording = chronicle::capture::init_sqlite(&path).unwrap();
    assert!(
        !dependency(DependencyKind::Db, vec![], Instant::now(), None),
        "outside any captured call"
    );
    assert_eq!(process(7), 77);
    let waker = std::task::Waker::noop();
    let mut future = std::pin::pin!(notify(3));
    let polled = future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    assert_eq!(polled, std::task::Poll::Ready(3));
    recording.finish().unwrap();

    let storage = SqliteStorage::open_existing(&path).unwrap();
    let records = storage.records(&RecordQuery::default()).unwrap();
    let by_name = |name: &str| records.iter().find(|r| r.function == name).unwrap();
    let (process, save, notify) = (
        by_name("orders::process"),
        by_name("orders::save"),
        by_name("orders::notify"),
    );
    let exported = |r| chronicle::export::record_json(r)["dependencies"].clone();
    let mut outer = exported(process);
    let offset = outer[0]["offset_ns"].take();
    let duration = outer[0]["duration_ns"].take();
    assert_eq!(
        outer,
        json!([{"kind": "db", "detail": {"system": "sqlite",
            "statement": "SELECT qty FROM stock WHERE id = ?1", "params": [7]},
            "duration_ns": null, "offset_ns": null}])
    );
    assert!(offset.as_u64().unwrap() < process.duration_ns.unwrap());
    assert!(duration.as_u64().unwrap() < process.duration_ns.unwrap());

    let mut inner = exported(save);
    let took = inner[0]["duration_ns"].take().as_u64().unwrap();
    inner[0]["offset_ns"].take();
    assert_eq!(
        inner,
        json!([{"kind": "file", "detail": {"path": "/var/orders/7.json", "op": "write",
            "bytes": 42, "owner_email": "[REDACTED]"}, "duration_ns": null, "offset_ns": null}])
    );
    assert!(
        (2_000_000..save.duration_ns.unwrap()).contains(&took),
        "{took}"
    );
    assert_eq!(exported(notify), json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}
