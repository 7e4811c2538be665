//! Dependencies collected from outside the process: a captured function writes a file, fails
//! to open one, runs SQL through SQLite and makes an HTTP request on loopback; the stored
//! children must be exactly what it did, attributed to the innermost captured call.

use chronicle_tests::{
    Opt, bpf_available, build_c_with, chronicle, chronicle_bin, export, scratch,
};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// What one run of the fixture under `attach` left.
struct Run {
    orders: Vec<Value>,
    charges: Vec<Value>,
    /// The fixture's server port.
    port: u16,
    /// `attach`'s.
    stderr: String,
    /// The directory the fixture wrote its files to.
    files: String,
    db: std::path::PathBuf,
}

/// Runs the fixture under `attach` with `flags`.
fn run(test: &str, flags: &[&str]) -> Option<Run> {
    if !bpf_available(test) {
        return None;
    }
    let fixture = build_c_with("deps", Opt::O2, &["-lsqlite3"]);
    let dir = scratch(test);
    let db = dir.join("chronicle.db");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut args = vec![
        "attach",
        "--func",
        "process_order",
        "--func",
        "charge",
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "--",
        fixture.to_str().unwrap(),
        files.to_str().unwrap(),
        "2",
    ]);
    let out = chronicle(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let port = stdout
        .lines()
        .find_map(|l| l.strip_prefix("port "))
        .unwrap_or_else(|| panic!("fixture printed no port: {stdout}"))
        .parse()
        .unwrap();
    assert!(stdout.contains("done 2"), "{stdout}");
    Some(Run {
        orders: export(&db, "process_order"),
        charges: export(&db, "charge"),
        port,
        stderr,
        files: files.to_str().unwrap().to_owned(),
        db,
    })
}

/// The dependencies without their timings, which are checked separately.
fn untimed(record: &Value) -> Vec<Value> {
    record["dependencies"]
        .as_array()
        .expect("dependencies array")
        .iter()
        .map(|d| json!({"kind": d["kind"], "detail": d["detail"]}))
        .collect()
}

#[track_caller]
fn check_timings(record: &Value) {
    let call = record["duration_ns"].as_u64().expect("call duration");
    let mut last_offset = 0;
    for d in record["dependencies"].as_array().unwrap() {
        let offset = d["offset_ns"].as_u64().expect("offset");
        let duration = d["duration_ns"]
            .as_u64()
            .expect("finished dependencies have durations");
        assert!(offset >= last_offset, "in the order they started: {record}");
        assert!(
            offset + duration <= call,
            "inside the call ({offset} + {duration} > {call}): {d}"
        );
        last_offset = offset;
    }
}

const RESPONSE_BYTES: u64 = 66;

/// The dependencies of `process_order(id, 3)` with every switch on, in order.
fn expected_order(dir: &str, port: u16, id: i64) -> Vec<Value> {
    let request =
        format!("GET /stock/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    vec![
        json!({"kind": "file", "detail": {
                    "path": format!("{dir}/order-{id}.txt"), "op": "open write close",
                    "bytes_read": 0, "bytes_written": format!("order {id} x3\n").len()}}),
        json!({"kind": "file", "detail": {
                    "path": format!("{dir}/missing/none.txt"), "op": "open",
                    "bytes_read": 0, "bytes_written": 0,
                    "error": "No such file or directory (errno 2)"}}),
        json!({"kind": "db", "detail": {
                    "system": "sqlite",
                    "statement": "INSERT INTO orders(id, qty, note) VALUES (?1, ?2, ?3)",
                    "params": [id, 3_000_000_000_000i64, "gift wrap"], "rows": 0}}),
        json!({"kind": "db", "detail": {
                    "system": "sqlite",
                    "statement": "SELECT count(*) FROM orders WHERE id >= ?1",
                    "params": [id], "rows": 1}}),
        json!({"kind": "db", "detail": {
                    "system": "sqlite",
                    "statement": "UPDATE stock SET n = n - 1 WHERE id = 1",
                    "params": []}}),
        json!({"kind": "http", "detail": {
                    "method": "GET", "target": format!("/stock/{id}"),
                    "host": format!("127.0.0.1:{port}"), "status": 200,
                    "address": format!("127.0.0.1:{port}"), "tls": false,
                    "sent": request.len(), "received": RESPONSE_BYTES}}),
    ]
}

#[test]
fn a_captured_call_records_its_files_sql_and_http_requests_exactly() {
    let test = "a_captured_call_records_its_files_sql_and_http_requests_exactly";
    let Some(Run {
        orders,
        charges,
        port,
        stderr,
        files: dir,
        ..
    }) = run(
        test,
        &["--track-file-io", "--track-http-calls", "--track-db-calls"],
    )
    else {
        return;
    };
    assert_eq!(orders.len(), 2, "{stderr}");
    for (i, record) in orders.iter().enumerate() {
        let id = 7 + i as i64;
        assert_eq!(record["args"], json!({"id": id, "qty": 3}));
        assert_eq!(
            untimed(record),
            expected_order(&dir, port, id),
            "{record:#}"
        );
        check_timings(record);
    }
    // The nested captured call has its own file, and process_order does not repeat it.
    assert_eq!(charges.len(), 2);
    for record in &charges {
        assert_eq!(record["args"], json!({"cents": 750}));
        assert_eq!(
            untimed(record),
            [json!({"kind": "file", "detail": {
                "path": format!("{dir}/ledger.txt"), "op": "open write close",
                "bytes_read": 0, "bytes_written": "charged 750\n".len()}})]
        );
        check_timings(record);
    }
    assert!(
        stderr.contains("chronicle: dependencies: 14 recorded from"),
        "{stderr}"
    );
    assert!(
        stderr.contains("0 dropped (ring buffer full), 0 not attributable"),
        "{stderr}"
    );
}

fn kinds(record: &Value) -> Vec<String> {
    record["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn each_switch_collects_only_its_own_kind() {
    let switches: &[(&str, &[&str], &[&str])] = &[
        ("--track-file-io", &["file", "file"], &["file"]),
        ("--track-http-calls", &["http"], &[]),
        ("--track-db-calls", &["db", "db", "db"], &[]),
    ];
    for &(switch, in_order, in_charge) in switches {
        let test = format!("each_switch_collects_only_its_own_kind{switch}");
        let Some(Run {
            orders, charges, ..
        }) = run(&test, &[switch])
        else {
            return;
        };
        for record in &orders {
            assert_eq!(kinds(record), in_order, "{switch}: {record:#}");
        }
        for record in &charges {
            assert_eq!(kinds(record), in_charge, "{switch}: {record:#}");
        }
    }
    let test = "each_switch_collects_only_its_own_kind_off";
    let Some(Run {
        orders,
        charges,
        stderr,
        ..
    }) = run(test, &[])
    else {
        return;
    };
    assert!(
        orders
            .iter()
            .chain(&charges)
            .all(|r| r["dependencies"] == json!([]))
    );
    assert!(!stderr.contains("dependencies:"), "{stderr}");
}

#[test]
fn https_requests_are_read_as_plaintext_from_libssl() {
    let test = "https_requests_are_read_as_plaintext_from_libssl";
    if !bpf_available(test) {
        return;
    }
    let fixture = build_c_with("tls", Opt::O2, &["-lssl", "-lcrypto"]);
    let dir = scratch(test);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/CN=localhost", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let db = dir.join("chronicle.db");
    let out = chronicle(&[
        "attach",
        "--func",
        "fetch_quote",
        "--track-http-calls",
        "--db",
        db.to_str().unwrap(),
        "--",
        fixture.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port: u16 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("port "))
        .expect("port line")
        .parse()
        .unwrap();
    let records = export(&db, "fetch_quote");
    assert_eq!(records.len(), 2);
    let response = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nquote\n";
    for (i, record) in records.iter().enumerate() {
        let id = 7 + i as i64;
        // Call 0 used SSL_write/SSL_read, call 1 SSL_write_ex/SSL_read_ex.
        assert_eq!(record["args"], json!({"id": id, "ex": i}));
        assert_eq!(record["return"], json!(response.len()));
        let request = format!(
            "GET /quote/{id} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            untimed(record),
            [json!({"kind": "http", "detail": {
                "method": "GET", "target": format!("/quote/{id}"),
                "host": format!("localhost:{port}"), "status": 200,
                "address": format!("127.0.0.1:{port}"), "tls": true,
                "sent": request.len(), "received": response.len()}})],
            "the handshake and the encrypted records are not counted: {record:#}"
        );
        check_timings(record);
    }
}

#[test]
fn postgres_queries_through_libpq_with_parameters_rows_and_errors() {
    let test = "postgres_queries_through_libpq_with_parameters_rows_and_errors";
    // Skips (or, where PostgreSQL is required, fails) like every PostgreSQL test.
    let Some(_schema) = chronicle::testing::PgSchema::new(test) else {
        return;
    };
    if !bpf_available(test) {
        return;
    }
    let dsn = std::env::var(chronicle::testing::DSN_VAR).unwrap();
    let fixture = build_c_with("pg", Opt::O2, &["-I/usr/include/postgresql", "-lpq"]);
    let db = scratch(test).join("chronicle.db");
    let out = chronicle(&[
        "attach",
        "--func",
        "lookup",
        "--track-db-calls",
        "--db",
        db.to_str().unwrap(),
        "--",
        fixture.to_str().unwrap(),
        &dsn,
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("done 2"));
    let records = export(&db, "lookup");
    assert_eq!(records.len(), 2);
    for (i, record) in records.iter().enumerate() {
        let id = 2 + i as i64;
        let who = ["alice", "bob"][i];
        assert_eq!(record["args"], json!({"id": id, "who": who}));
        assert_eq!(record["return"], json!(1 + id + 1000));
        assert_eq!(
            untimed(record),
            [
                json!({"kind": "db", "detail": {
                    "system": "postgresql",
                    "statement": "SELECT $1::int * 2 AS doubled, $2::text AS who, $3::text AS nothing",
                    "params": [id.to_string(), who, null], "rows": 1}}),
                json!({"kind": "db", "detail": {
                    "system": "postgresql",
                    "statement": "SELECT n FROM generate_series(1, $1::int) AS n",
                    "params": [id.to_string()], "rows": id}}),
                json!({"kind": "db", "detail": {
                    "system": "postgresql",
                    "statement": "SELECT no_such_column FROM pg_class",
                    "params": [],
                    "error": "PGRES_FATAL_ERROR: ERROR:  column \"no_such_column\" does not exist\nLINE 1: SELECT no_such_column FROM pg_class\n               ^"}}),
            ],
            "{record:#}"
        );
        check_timings(record);
    }
}

#[test]
fn a_running_process_is_tracked_through_its_mapped_libraries() {
    let test = "a_running_process_is_tracked_through_its_mapped_libraries";
    if !bpf_available(test) {
        return;
    }
    let fixture = build_c_with("deps", Opt::O2, &["-lsqlite3"]);
    let dir = scratch(test);
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let _ = std::fs::remove_file(files.join("go"));
    let mut service = Command::new(&fixture)
        .args([files.to_str().unwrap(), "2", "wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(service.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    let words: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(words[0], "ready", "{ready}");
    let (pid, port): (&str, u16) = (words[1], words[3].parse().unwrap());
    let db = dir.join("chronicle.db");
    let mut agent = Command::new(chronicle_bin())
        .args([
            "attach",
            "--pid",
            pid,
            "--func",
            "process_order",
            "--func",
            "charge",
        ])
        .args([
            "--track-file-io",
            "--track-http-calls",
            "--track-db-calls",
            "--db",
        ])
        .arg(&db)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both functions are probed once attach says what it traces.
    let mut stderr = BufReader::new(agent.stderr.take().unwrap());
    let mut said = String::new();
    while said.matches("chronicle: tracing").count() < 2 {
        let before = said.len();
        stderr.read_line(&mut said).unwrap();
        assert!(said.len() > before, "attach stopped early: {said}");
    }
    std::fs::write(files.join("go"), "").unwrap();
    assert!(service.wait().unwrap().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(agent.wait().unwrap().success(), "{said}{rest}");
    let orders = export(&db, "process_order");
    assert_eq!(orders.len(), 2, "{said}{rest}");
    let dir = files.to_str().unwrap();
    for (i, record) in orders.iter().enumerate() {
        // The cached statement was prepared before attach: its text was never seen.
        let mut expected = expected_order(dir, port, 7 + i as i64);
        expected[3]["detail"]["statement"] = json!("(prepared before tracing began)");
        assert_eq!(untimed(record), expected, "{record:#}\n{said}{rest}");
    }
}

#[test]
fn dependency_details_are_redacted_before_they_are_stored() {
    let test = "dependency_details_are_redacted_before_they_are_stored";
    let config = scratch(&format!("{test}-config")).join("chronicle.toml");
    std::fs::write(&config, "redaction_patterns = ['gift \\w+']\n").unwrap();
    let Some(Run { orders, db, .. }) = run(
        test,
        &["--track-db-calls", "--config", config.to_str().unwrap()],
    ) else {
        return;
    };
    for record in &orders {
        assert_eq!(
            record["dependencies"][0]["detail"]["params"][2], "[REDACTED]",
            "{record:#}"
        );
    }
    // The database and whatever write-ahead log is left.
    for suffix in ["", "-wal", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        assert!(
            !bytes.windows(9).any(|w| w == b"gift wrap"),
            "the bound text never reaches {path}"
        );
    }
}
