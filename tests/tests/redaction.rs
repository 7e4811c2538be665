//! Redaction cannot be bypassed: personal data seeded in arguments, a returned string, a
//! buffer read back at return (`--after`) and a dependency's file path reaches neither the
//! database files, nor `chronicle export`'s output, nor the OTLP collector's socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chronicle_tests::{Opt, bpf_available, build_c, chronicle_ok, scratch};
use serde_json::{Value, json};

const SECRETS: [&str; 4] = [
    "ada.lovelace@example.com",
    "hunter2",
    "4111 1111 1111 1111",
    "4111111111111111",
];

/// An OTLP/HTTP collector on loopback that keeps every byte it was sent.
struct Collector {
    port: u16,
    wire: Arc<Mutex<Vec<u8>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let wire = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (w, b) = (Arc::clone(&wire), Arc::clone(&bodies));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (w, b) = (Arc::clone(&w), Arc::clone(&b));
                std::thread::spawn(move || serve(stream, &w, &b));
            }
        });
        Collector { port, wire, bodies }
    }
}

/// Answers each request on one connection with 200, keeping its bytes and its JSON body.
fn serve(stream: std::net::TcpStream, wire: &Mutex<Vec<u8>>, bodies: &Mutex<Vec<Value>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.extend_from_slice(line.as_bytes());
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        wire.lock().unwrap().extend_from_slice(&head);
        wire.lock().unwrap().extend_from_slice(&body);
        bodies
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            )
            .unwrap();
    }
}

fn file_bytes(paths: &[&Path]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for path in paths {
        if let Ok(more) = std::fs::read(path) {
            bytes.extend(more);
        }
    }
    bytes
}

fn assert_no_secret(bytes: &[u8], place: &str) {
    for secret in SECRETS {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} reached {place}"
        );
    }
}

/// Spans named `name` in every request the collector received.
fn spans_named<'a>(bodies: &'a [Value], name: &str) -> Vec<&'a Value> {
    bodies
        .iter()
        .flat_map(|b| b["resourceSpans"].as_array().unwrap())
        .flat_map(|r| r["scopeSpans"].as_array().unwrap())
        .flat_map(|s| s["spans"].as_array().unwrap())
        .filter(|s| s["name"] == name)
        .collect()
}

#[test]
fn seeded_pii_reaches_neither_disk_nor_wire() {
    let name = "seeded_pii_reaches_neither_disk_nor_wire";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let pii = build_c("pii", Opt::O2);
    let collector = Collector::start();
    let config = dir.join("chronicle.toml");
    std::fs::write(
        &config,
        format!(
            "otel_enabled = true\notel_endpoint = \"http://127.0.0.1:{}\"\n",
            collector.port
        ),
    )
    .unwrap();
    let db = dir.join("chronicle.db");
    let rounds = 5;
    chronicle_ok(&[
        "attach",
        "--progress",
        "0",
        "--config",
        config.to_str().unwrap(),
        "--after",
        "--track-file-io",
        "--func",
        "contact_of",
        "--func",
        "charge",
        "--db",
        db.to_str().unwrap(),
        "--",
        pii.to_str().unwrap(),
        work.to_str().unwrap(),
        &rounds.to_string(),
    ]);

    // Stored, redacted where the data was and nowhere else.
    let export = |function: &str| {
        let out = chronicle_ok(&["export", function, "-o", "-", "--db", db.to_str().unwrap()]);
        assert_no_secret(&out.stdout, "chronicle export's output");
        let records: Value = serde_json::from_slice(&out.stdout).unwrap();
        records.as_array().unwrap().clone()
    };
    let contacts = export("contact_of");
    assert_eq!(contacts.len(), rounds);
    for (i, r) in contacts.iter().enumerate() {
        assert_eq!(r["args"]["customer"], json!(i), "{r}");
        assert_eq!(
            r["return"],
            json!(format!("write to [REDACTED] about order {i}")),
            "{r}"
        );
        assert_eq!(r["after"]["out"], json!("[REDACTED]"), "{r}");
    }
    let charges = export("charge");
    assert_eq!(charges.len(), rounds);
    for (i, r) in charges.iter().enumerate() {
        assert_eq!(
            r["args"],
            json!({"card": "[REDACTED]", "password": "[REDACTED]", "cents": 1999 + i}),
            "{r}"
        );
        assert_eq!(r["return"], json!(0), "{r}");
        let files = r["dependencies"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{r}");
        assert_eq!(
            files[0]["detail"]["path"],
            // The whole file name reads as an address to the email pattern.
            json!(format!("{}/[REDACTED]", work.display())),
            "{r}"
        );
    }

    // The program did write its receipt under the real name: the data was really there.
    assert!(work.join("receipt-ada.lovelace@example.com.txt").exists());
    let wal = dir.join("chronicle.db-wal");
    let shm = dir.join("chronicle.db-shm");
    assert_no_secret(&file_bytes(&[&db, &wal, &shm]), "the database files");

    // The collector received every call as a span, and not one secret byte.
    let bodies = collector.bodies.lock().unwrap().clone();
    assert_eq!(spans_named(&bodies, "contact_of").len(), rounds);
    assert_eq!(spans_named(&bodies, "charge").len(), rounds);
    let wire = collector.wire.lock().unwrap().clone();
    assert!(
        wire.windows(10).any(|w| w == b"[REDACTED]"),
        "the spans carry the redacted values"
    );
    assert_no_secret(&wire, "the OTLP collector");
}
