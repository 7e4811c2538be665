//! The pipeline behind `chronicle attach`: redaction before anything is written (the database
//! file's bytes hold no seeded PII), limits from `chronicle.toml` with stored alerts, and
//! `chronicle cleanup`.

use std::path::Path;

use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle_tests::{
    Opt, Running, bpf_available, build_c, chronicle, chronicle_ok, export, scratch,
};
use serde_json::json;

fn attach(dir: &Path, extra: &[&str], functions: &[&str]) -> std::path::PathBuf {
    let shapes = build_c("shapes", Opt::O2);
    let service = Running::start(&shapes, &["--interval-ms", "5"]);
    let db = dir.join("chronicle.db");
    let pid = service.pid().to_string();
    let db_arg = db.to_str().unwrap().to_owned();
    let mut args = vec!["attach", "--pid", &pid, "--duration", "1", "--db", &db_arg];
    args.extend_from_slice(extra);
    for f in functions {
        args.extend(["--func", f]);
    }
    chronicle_ok(&args);
    drop(service);
    db
}

/// Every byte of the database: the file and its write-ahead log.
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        if let Ok(more) = std::fs::read(&path) {
            bytes.extend(more);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn seeded_pii_never_reaches_the_database() {
    if !bpf_available("seeded_pii_never_reaches_the_database") {
        return;
    }
    let dir = scratch("pii_redaction");
    let db = attach(&dir, &[], &["login"]);
    let records = export(&db, "login");
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(
            r["args"],
            json!({"c": {"user": "[REDACTED]", "password": "[REDACTED]"},
                   "note": "card [REDACTED] on file"}),
            "{r}"
        );
    }
    let bytes = database_bytes(&db);
    for secret in ["ada@example.com", "hunter2", "4111 1111 1111 1111"] {
        assert!(
            !contains(&bytes, secret),
            "{secret} found in the database file"
        );
    }
}

#[test]
fn config_file_limits_store_alerts_and_cleanup_deletes() {
    if !bpf_available("config_file_limits_store_alerts_and_cleanup_deletes") {
        return;
    }
    let dir = scratch("config_limits");
    let config = dir.join("chronicle.toml");
    std::fs::write(
        &config,
        "limit_per_function = 3\nredaction_enabled = false\nretention_days = 0\n",
    )
    .unwrap();
    let db = attach(
        &dir,
        &["--config", config.to_str().unwrap()],
        &["login", "sum_pair"],
    );
    // Without redaction the values are stored as they were.
    let logins = export(&db, "login");
    assert_eq!(logins.len(), 3);
    assert_eq!(logins[0]["args"]["c"]["password"], "hunter2");
    assert_eq!(export(&db, "sum_pair").len(), 3);
    let alerts = SqliteStorage::open_existing(&db).unwrap().alerts().unwrap();
    let mut messages: Vec<String> = alerts.iter().map(|a| a.message.clone()).collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            "login reached its limit of 3 stored calls; no more calls are stored",
            "sum_pair reached its limit of 3 stored calls; no more calls are stored",
        ]
    );

    let out = chronicle_ok(&[
        "cleanup",
        "--days",
        "0",
        "--max-per-function",
        "1",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("deleted 4 records from {}\n", db.display())
    );
    assert_eq!(export(&db, "login").len(), 1);
}

#[test]
fn a_bad_config_file_is_a_usage_error_naming_the_key() {
    let dir = scratch("bad_config");
    let config = dir.join("chronicle.toml");
    std::fs::write(&config, "sampling_rate = 2\n").unwrap();
    let out = chronicle(&[
        "attach",
        "--config",
        config.to_str().unwrap(),
        "--pid",
        "1",
        "--func",
        "f",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "chronicle: sampling_rate = 2 is not allowed: a number from 0 to 1\n"
    );
    std::fs::write(&config, "redaction_field = [\"pin\"]\n").unwrap();
    let out = chronicle(&[
        "attach",
        "--config",
        config.to_str().unwrap(),
        "--pid",
        "1",
        "--func",
        "f",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "chronicle: {}: unknown key `redaction_field` (did you mean redaction_fields?)\n",
            config.display()
        )
    );
}
