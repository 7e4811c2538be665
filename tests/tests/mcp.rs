//! `chronicle mcp` in a real MCP session over stdio: initialize, tools/list, tools/call,
//! responses matched by id, against a store written with the library. `run_replay` and
//! `generate_tests` run against the C orders fixture.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime};

use chronicle::record::{CallRecord, Status, Value};
use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle_tests::OrdersVariant::{V1, V2, V2Changed};
use chronicle_tests::{build_orders_c, chronicle_bin, scratch};
use serde_json::{Value as Json, json};

/// A client speaking newline-delimited JSON-RPC to `chronicle mcp`.
struct Session {
    child: std::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Responses read but not asked for yet, by id.
    pending: HashMap<u64, Json>,
}

impl Session {
    fn start(db: &std::path::Path) -> Session {
        let mut child = Command::new(chronicle_bin())
            .args(["mcp", "--db", db.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start chronicle mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Session {
            child,
            stdin,
            stdout,
            pending: HashMap::new(),
        };
        s.send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "chronicle-tests", "version": "1"}}}),
        );
        let init = s.response(1);
        assert_eq!(init["result"]["serverInfo"]["name"], "chronicle");
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(init["result"]["capabilities"]["tools"], json!({}));
        s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    fn send(&mut self, message: Json) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The response with this id, reading (and keeping) others that come first.
    fn response(&mut self, id: u64) -> Json {
        loop {
            if let Some(r) = self.pending.remove(&id) {
                return r;
            }
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "chronicle mcp closed stdout while waiting for {id}");
            let message: Json = serde_json::from_str(&line).unwrap();
            if let Some(got) = message["id"].as_u64() {
                self.pending.insert(got, message);
            }
        }
    }

    fn call_request(id: u64, tool: &str, arguments: Json) -> Json {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": tool, "arguments": arguments}})
    }

    /// Calls a tool; returns `(is_error, text)`.
    fn call(&mut self, id: u64, tool: &str, arguments: Json) -> (bool, String) {
        self.send(Self::call_request(id, tool, arguments));
        Self::content(&self.response(id))
    }

    fn content(r: &Json) -> (bool, String) {
        let result = &r["result"];
        assert!(result.is_object(), "{r}");
        let text = result["content"][0]["text"].as_str().unwrap().to_owned();
        (result["isError"] == json!(true), text)
    }

    fn json(&mut self, id: u64, tool: &str, arguments: Json) -> Json {
        let (error, text) = self.call(id, tool, arguments);
        assert!(!error, "{tool}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls of `make_quote(units, cents_each)` as the C orders v1 returned them, recorded from
/// `binary`, the newest a minute ago; the last one fails by status.
fn store(name: &str, binary: &std::path::Path) -> std::path::PathBuf {
    let db = scratch(name).join("chronicle.db");
    let mut storage = SqliteStorage::open(&db).unwrap();
    let now = SystemTime::now();
    let quotes = [
        (15, 1250, 18750, 5),
        (5, 999, 4995, 0),
        (200, 1500, 300_000, 10),
        (10, 30_000, 300_000, 5),
    ];
    let mut records: Vec<CallRecord> = quotes
        .iter()
        .enumerate()
        .map(|(i, &(units, cents, subtotal, pct))| CallRecord {
            id: None,
            function: "make_quote".into(),
            binary: binary.to_str().unwrap().into(),
            build_id: chronicle_tests::build_id(binary),
            pid: 1,
            tid: 1,
            timestamp: now - Duration::from_secs(60 * (5 - i as u64)),
            duration_ns: Some(1000 * (i as u64 + 1)),
            status: if i == 3 { Status::Error } else { Status::Ok },
            args: vec![
                ("units".into(), Value::Int(units)),
                ("cents_each".into(), Value::Int(cents)),
            ],
            ret: Some(Value::Struct(vec![
                ("subtotal".into(), Value::Int(subtotal)),
                ("discount_pct".into(), Value::Int(pct)),
            ])),
            unavailable: vec![],
            after: vec![],
            dependencies: vec![],
        })
        .collect();
    storage.insert(&mut records).unwrap();
    db
}

#[test]
fn an_agent_session() {
    let v1 = build_orders_c(V1).service;
    let db = store("mcp_session", &v1);
    let mut s = Session::start(&db);

    s.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let list = s.response(2);
    let tools = list["result"]["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "ask",
            "drift",
            "error_analysis",
            "export_examples",
            "function_signature",
            "generate_tests",
            "list_functions",
            "query_calls",
            "run_replay",
            "slowest_calls",
        ]
    );
    for t in tools {
        assert!(t["description"].as_str().unwrap().len() > 80, "{t}");
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
    }
    let query = tools.iter().find(|t| t["name"] == "query_calls").unwrap();
    assert_eq!(query["inputSchema"]["required"], json!(["function"]));
    assert!(
        query["inputSchema"]["properties"]["where"]["description"]
            .as_str()
            .unwrap()
            .contains("PATH=VALUE")
    );

    // Two requests in flight: the answers are told apart by id, whatever their order.
    s.send(Session::call_request(10, "list_functions", json!({})));
    s.send(Session::call_request(
        11,
        "query_calls",
        json!({"function": "make_quote", "errors": true}),
    ));
    let (_, queried) = Session::content(&s.response(11));
    let (_, listed) = Session::content(&s.response(10));
    let listed: Json = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["function"], "make_quote");
    assert_eq!(
        (&listed[0]["calls"], &listed[0]["errors"]),
        (&json!(4), &json!(1))
    );
    let queried: Json = serde_json::from_str(&queried).unwrap();
    assert_eq!(queried.as_array().unwrap().len(), 1);
    assert_eq!(
        queried[0]["args"],
        json!({"units": 10, "cents_each": 30000})
    );

    let q = s.json(
        12,
        "query_calls",
        json!({"function": "make_quote", "where": ["units=5"]}),
    );
    assert_eq!(q[0]["return"], json!({"subtotal": 4995, "discount_pct": 0}));

    let slow = s.json(
        13,
        "slowest_calls",
        json!({"function": "make_quote", "n": 2}),
    );
    let ids: Vec<&Json> = slow["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["call_id"])
        .collect();
    assert_eq!(ids, [&json!(4), &json!(3)]);
    assert_eq!(slow["stats"]["max_ms"], json!(0.004));

    let errors = s.json(14, "error_analysis", json!({"function": "make_quote"}));
    assert_eq!(
        (&errors["failing_calls"], &errors["total_calls"]),
        (&json!(1), &json!(4))
    );
    assert_eq!(
        errors["groups"][0]["value"],
        json!({"subtotal": 300000, "discount_pct": 5})
    );

    let examples = s.json(
        15,
        "export_examples",
        json!({"function": "make_quote", "count": 2}),
    );
    assert_eq!(examples["examples"].as_array().unwrap().len(), 2);

    let drift = s.json(
        16,
        "drift",
        json!({"function": "make_quote", "since": "1h"}),
    );
    assert_eq!(
        (&drift["before"]["calls"], &drift["after"]["calls"]),
        (&json!(0), &json!(4))
    );
    let (error, text) = s.call(
        17,
        "drift",
        json!({"function": "make_quote", "before_build": "abc"}),
    );
    assert!(error);
    assert_eq!(text, "give both before_build and after_build, or neither");

    let sig = s.json(18, "function_signature", json!({"function": "make_quote"}));
    assert_eq!(
        sig["signature"],
        "make_quote(units: int, cents_each: int) -> struct quote"
    );
    assert_eq!(sig["build_id"], chronicle_tests::build_id(&v1));

    let answer = s.json(
        19,
        "ask",
        json!({"question": "how often is make_quote called?"}),
    );
    assert_eq!(
        (&answer["type"], &answer["calls"]),
        (&json!("frequency"), &json!(4))
    );

    // Unknown names are tool errors that say what to do.
    let (error, text) = s.call(20, "error_analysis", json!({"function": "make_qoute"}));
    assert!(error);
    assert_eq!(
        text,
        "no function named `make_qoute` has been recorded (closest: make_quote); call \
         list_functions for the recorded names"
    );

    // Replay against the refactor: the three real calls pass; the one stored as an error
    // (the real function never fails) is caught. Then a binary that does not exist.
    let report = s.json(
        21,
        "run_replay",
        json!({"function": "make_quote",
        "binary": build_orders_c(V2).service.to_str().unwrap()}),
    );
    assert_eq!(
        (&report["passed"], &report["failed"], &report["errors"]),
        (&json!(3), &json!(1), &json!(0))
    );
    assert_eq!(
        report["results"][3]["difference"][0]["text"],
        "$status: \"error\" → \"ok\""
    );
    let report = s.json(
        22,
        "run_replay",
        json!({"function": "make_quote",
        "binary": build_orders_c(V2Changed).service.to_str().unwrap(), "limit": 2}),
    );
    assert_eq!(report["total"], 2);
    let (error, text) = s.call(
        23,
        "run_replay",
        json!({"function": "make_quote", "binary": "/nonexistent"}),
    );
    assert!(error && text.contains("/nonexistent"), "{text}");

    let out = db.with_file_name("generated");
    let generated = s.json(
        24,
        "generate_tests",
        json!({"function": "make_quote",
        "output_dir": out.to_str().unwrap(), "lang": "spec"}),
    );
    let path = generated["path"].as_str().unwrap();
    let spec: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(spec.as_array().unwrap().len(), 4);
    assert_eq!(generated["call_ids"].as_array().unwrap().len(), 4);
}
