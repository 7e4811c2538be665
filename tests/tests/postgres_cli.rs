//! `chronicle functions` and `chronicle export` with `--dsn`: the commands read a PostgreSQL
//! store filled through the library exactly as they read a SQLite file.

use chronicle::storage::Storage;
use chronicle::storage::postgres::{PostgresStorage, display_dsn};
use chronicle::testing::PgSchema;
use chronicle::time::from_unix_nanos;
use chronicle::{CallRecord, Status, Value};
use chronicle_tests::{chronicle, chronicle_ok, scratch};

const BUILD: &str = "0123456789abcdef0123456789abcdef01234567";

/// A call that started `ms` milliseconds after 2026-11-26T19:30:01Z.
fn call(function: &str, ms: i64, duration_ns: Option<u64>, status: Status) -> CallRecord {
    CallRecord {
        id: None,
        function: function.into(),
        binary: "/srv/orders".into(),
        build_id: BUILD.into(),
        pid: 4242,
        tid: 4243,
        timestamp: from_unix_nanos(1_795_721_401_000_000_000 + ms * 1_000_000),
        duration_ns,
        status,
        args: vec![],
        ret: None,
        unavailable: vec![],
        after: vec![],
        dependencies: vec![],
    }
}

fn filled(schema: &PgSchema) {
    let mut ok = call("orders::process_order", 0, Some(1500), Status::Ok);
    ok.args = vec![
        (
            "order".into(),
            Value::Struct(vec![
                ("zone".into(), Value::Enum("EU".into())),
                ("amount".into(), Value::UInt(u64::MAX)),
            ]),
        ),
        ("note".into(), Value::Str("gift".into())),
    ];
    ok.ret = Some(Value::Int(-1));
    let mut failed = call("orders::process_order", 250, Some(2500), Status::Error);
    failed.args = vec![("order".into(), Value::Ptr(0x7ffd_1000))];
    failed.ret = Some(Value::Variant(
        "Err".into(),
        Box::new(Value::Str("no stock".into())),
    ));
    let mut unwound = call("orders::validate", 100, None, Status::Unwound);
    unwound.unavailable = vec![
        ("order".into(), "unmapped pointer 0x10".into()),
        ("return".into(), "thread exited".into()),
    ];
    let mut storage = PostgresStorage::open(schema.dsn()).unwrap();
    storage.insert(&mut [ok, unwound, failed]).unwrap();
}

#[track_caller]
fn stdout_of(args: &[&str]) -> String {
    String::from_utf8(chronicle_ok(args).stdout).unwrap()
}

#[test]
fn functions_and_export_read_a_postgres_store() {
    let Some(schema) = PgSchema::new("functions_and_export_read_a_postgres_store") else {
        return;
    };
    filled(&schema);
    let dsn = schema.dsn();

    assert_eq!(
        stdout_of(&["functions", "--dsn", dsn, "--json"]),
        r#"[
  {
    "function": "orders::process_order",
    "calls": 2,
    "errors": 1,
    "unwound": 0,
    "p50_ns": 1500,
    "p99_ns": 2500,
    "first_seen": "2026-11-26T19:30:01Z",
    "last_seen": "2026-11-26T19:30:01.250Z",
    "build_ids": [
      "0123456789abcdef0123456789abcdef01234567"
    ],
    "binaries": [
      "/srv/orders"
    ]
  },
  {
    "function": "orders::validate",
    "calls": 1,
    "errors": 0,
    "unwound": 1,
    "p50_ns": null,
    "p99_ns": null,
    "first_seen": "2026-11-26T19:30:01.100Z",
    "last_seen": "2026-11-26T19:30:01.100Z",
    "build_ids": [
      "0123456789abcdef0123456789abcdef01234567"
    ],
    "binaries": [
      "/srv/orders"
    ]
  }
]
"#
    );

    assert_eq!(
        stdout_of(&["functions", "--dsn", dsn]),
        "\
FUNCTION               CALLS  ERRORS  UNWOUND    P50    P99  FIRST SEEN            LAST SEEN             BUILD IDS
orders::process_order      2       1        0  1.5µs  2.5µs  2026-11-26T19:30:01Z  2026-11-26T19:30:01Z  0123456789ab
orders::validate           1       0        1      -      -  2026-11-26T19:30:01Z  2026-11-26T19:30:01Z  0123456789ab
"
    );

    // Ids come from the schema's own sequence, so they start at 1 in insertion order.
    let out = chronicle_ok(&["export", "process_order", "-o", "-", "--dsn", dsn]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        r#"[
  {
    "id": 1,
    "function": "orders::process_order",
    "binary": "/srv/orders",
    "build_id": "0123456789abcdef0123456789abcdef01234567",
    "pid": 4242,
    "tid": 4243,
    "timestamp": "2026-11-26T19:30:01Z",
    "duration_ns": 1500,
    "status": "ok",
    "args": {
      "order": {
        "zone": "EU",
        "amount": 18446744073709551615
      },
      "note": "gift"
    },
    "return": -1,
    "replayable": true,
    "unavailable": {},
    "dependencies": []
  },
  {
    "id": 3,
    "function": "orders::process_order",
    "binary": "/srv/orders",
    "build_id": "0123456789abcdef0123456789abcdef01234567",
    "pid": 4242,
    "tid": 4243,
    "timestamp": "2026-11-26T19:30:01.250Z",
    "duration_ns": 2500,
    "status": "error",
    "args": {
      "order": {
        "ptr": "0x7ffd1000"
      }
    },
    "return": {
      "Err": "no stock"
    },
    "replayable": true,
    "unavailable": {},
    "dependencies": []
  }
]
"#
    );
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "exported 2 records of orders::process_order to stdout\n"
    );

    let file = scratch("functions_and_export_read_a_postgres_store").join("validate.json");
    let file = file.to_str().unwrap();
    assert_eq!(
        stdout_of(&["export", "validate", "-o", file, "--dsn", dsn]),
        format!("exported 1 record of orders::validate to {file}\n")
    );
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(
        exported,
        serde_json::json!([{
            "id": 2,
            "function": "orders::validate",
            "binary": "/srv/orders",
            "build_id": BUILD,
            "pid": 4242,
            "tid": 4243,
            "timestamp": "2026-11-26T19:30:01.100Z",
            "duration_ns": null,
            "status": "unwound",
            "args": {},
            "return": null,
            "replayable": false,
            "unavailable": {"order": "unmapped pointer 0x10", "return": "thread exited"},
            "dependencies": []
        }])
    );
}

#[test]
fn readers_leave_an_empty_database_alone() {
    let Some(schema) = PgSchema::new("readers_leave_an_empty_database_alone") else {
        return;
    };
    let out = chronicle(&["functions", "--dsn", schema.dsn()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "chronicle: no chronicle tables in {}; record some calls into it first, or check \
             the database and search_path in the DSN\n",
            display_dsn(schema.dsn()).unwrap()
        )
    );
    // Still empty: a store opened for writing finds nothing recorded.
    let storage = PostgresStorage::open(schema.dsn()).unwrap();
    assert_eq!(storage.function_names().unwrap(), Vec::<String>::new());
}

/// Needs no server: nothing listens on port 1.
#[test]
fn dsn_errors_say_what_to_do() {
    let out = chronicle(&[
        "functions",
        "--db",
        "chronicle.db",
        "--dsn",
        "postgres://u@127.0.0.1/db",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: the argument '--db <PATH>' cannot be used with '--dsn <DSN>'"),
        "{stderr}"
    );

    let out = chronicle(&[
        "export",
        "process_order",
        "-o",
        "-",
        "--dsn",
        "postgres://recorder:s3cret@127.0.0.1:1/records",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an unreachable server is the environment"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "chronicle: cannot connect to PostgreSQL at 127.0.0.1:1 (database records, user \
             recorder): "
        ) && stderr.ends_with("; check that the server runs and the DSN is right\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");

    let out = chronicle(&["functions", "--dsn", "postgres://u@127.0.0.1:port/db"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "chronicle: invalid PostgreSQL DSN (invalid value for option `port`); write it as \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE\n"
    );
}
