//! The dashboard's API with a real server on loopback: exact counts from a live pipeline,
//! validated live changes of sampling and limits, limit alerts and resets, the event
//! stream, the read-only view of a store, tokens, host and origin checks, and the router
//! mounted in an app of one's own.
#![cfg(feature = "dashboard")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use chronicle::config::CaptureConfig;
use chronicle::dashboard::{self, Dashboard, Server};
use chronicle::monitor::Monitor;
use chronicle::pipeline::{Outcome, Pipeline, Policy, PolicyHandle};
use chronicle::record::{CallRecord, Status, Value};
use chronicle::sampling::Rng;
use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use serde_json::{Value as Json, json};

const F: &str = "orders::process_order";

/// Call `i`: an order of kind `express` (even `i`) or `standard`, with an email and a
/// password; takes `(i + 1)` µs; call 9 fails with `Err("Declined")`.
fn call(i: u64) -> CallRecord {
    let kind = if i.is_multiple_of(2) {
        "express"
    } else {
        "standard"
    };
    let (status, ret) = if i == 9 {
        let err = Value::Variant("Err".into(), Box::new(Value::Str("Declined".into())));
        (Status::Error, err)
    } else {
        let ok = Value::Variant("Ok".into(), Box::new(Value::UInt(100 + i)));
        (Status::Ok, ok)
    };
    CallRecord {
        id: None,
        function: F.into(),
        binary: "/srv/orders".into(),
        build_id: "ab12".into(),
        pid: 42,
        tid: 42,
        timestamp: SystemTime::now(),
        duration_ns: Some((i + 1) * 1000),
        status,
        args: vec![
            (
                "order".into(),
                Value::Struct(vec![
                    ("id".into(), Value::UInt(i)),
                    ("kind".into(), Value::Str(kind.into())),
                    ("email".into(), Value::Str(format!("buyer{i}@example.com"))),
                ]),
            ),
            ("password".into(), Value::Str("hunter2".into())),
        ],
        ret: Some(ret),
        unavailable: Vec::new(),
        after: Vec::new(),
        dependencies: Vec::new(),
    }
}

struct Live {
    pipeline: Pipeline,
    server: Server,
}

impl Live {
    fn start() -> Live {
        let config = CaptureConfig {
            kernel_presample: false,
            ..CaptureConfig::default()
        };
        let policy = PolicyHandle::new(Policy::from_config(&config).unwrap());
        let monitor = Monitor::new("test service");
        let pipeline =
            Pipeline::with_rng(policy.clone(), Rng::new(7)).with_monitor(monitor.clone());
        let board = Dashboard::live(policy, monitor);
        let server = dashboard::serve("127.0.0.1:0".parse().unwrap(), board).unwrap();
        Live { pipeline, server }
    }

    /// Passes calls `range` through the pipeline; returns how many were stored.
    fn feed(&mut self, range: std::ops::Range<u64>) -> usize {
        range
            .filter(|&i| matches!(self.pipeline.process(call(i)), Outcome::Store(_)))
            .count()
    }

    fn get(&self, path: &str) -> Response {
        request(self.server.addr(), "GET", path, &[], None)
    }

    fn put(&self, path: &str, body: Json) -> Response {
        send_json(self.server.addr(), "PUT", path, &[], body)
    }

    fn post(&self, path: &str, body: Json) -> Response {
        send_json(self.server.addr(), "POST", path, &[], body)
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    #[track_caller]
    fn json(&self) -> Json {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    fn ok(&self) -> Json {
        assert_eq!(self.status, 200, "{}", self.body);
        self.json()
    }

    #[track_caller]
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

fn send_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Json,
) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, method, path, &all, Some(body.to_string()))
}

/// One HTTP/1.1 request on a new connection. `Host` is the server's address unless given.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        text += &format!("Host: {addr}\r\n");
    }
    for (name, value) in headers {
        text += &format!("{name}: {value}\r\n");
    }
    let body = body.unwrap_or_default();
    text += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(text.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    let mut body = String::new();
    reader.read_to_string(&mut body).unwrap();
    Response {
        status,
        headers,
        body,
    }
}

fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(": ").unwrap();
        headers.push((name.to_owned(), value.to_owned()));
    }
    (status, headers)
}

/// The first event of the stream at `path`: `(event name, data)`.
fn first_event(addr: SocketAddr, path: &str) -> (u16, String, Json) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let text = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200);
    let content_type = headers.iter().find(|(n, _)| n == "content-type").unwrap();
    assert_eq!(content_type.1, "text/event-stream");
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked");
    assert!(chunked, "{headers:?}");
    let (mut event, mut data) = (String::new(), String::new());
    let mut line = String::new();
    while data.is_empty() || !line.trim().is_empty() {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data = d.trim().to_owned();
        }
    }
    (status, event, serde_json::from_str(&data).unwrap())
}

#[test]
fn live_counts_latency_recent_calls_and_history_are_exact() {
    let mut live = Live::start();
    assert_eq!(live.feed(0..10), 10);
    let stats = live.get("/api/stats").ok();
    assert_eq!(stats["mode"], "live");
    assert_eq!(stats["source"], "test service");
    assert_eq!(stats["controls"], true);
    assert_eq!(
        stats["totals"],
        json!({"calls": 10, "seen": 10, "sampled_out": 0, "limited": 0, "stored": 10,
               "dropped": 0, "errors": 1, "written": 0, "write_failed": 0})
    );
    assert_eq!(
        stats["functions"],
        json!([{
            "name": F, "calls": 10, "seen": 10, "sampled_out": 0, "limited": 0, "stored": 10,
            "dropped": 0, "redacted": 20, "errors": 1, "error_rate": 0.1, "unwound": 0,
            "fetch_errors": 0,
            "latency_ns": {"p50": 5000, "p90": 9000, "p99": 10000, "max": 10000, "samples": 10},
            "limit": null,
        }])
    );
    // Newest first, as stored: redacted.
    let recent = stats["recent"].as_array().unwrap();
    let ids: Vec<u64> = recent
        .iter()
        .map(|r| r["args"]["order"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..10).rev().collect::<Vec<_>>());
    assert_eq!(
        recent[0]["args"],
        json!({"order": {"id": 9, "kind": "standard", "email": "[REDACTED]"}, "password": "[REDACTED]"})
    );
    assert_eq!(recent[0]["status"], "error");
    assert_eq!(recent[0]["return"], json!({"Err": "Declined"}));
    assert_eq!(recent[1]["return"], json!({"Ok": 108}));
    assert_eq!(recent[1]["duration_ns"], 9000);
    assert!(!live.get("/api/stats").body.contains("example.com"));
    let points = stats["series"]["points"].as_array().unwrap();
    let sum = |key: &str| points.iter().map(|p| p[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("calls"), sum("stored"), sum("errors")), (10, 10, 1));
    assert_eq!(stats["series"]["interval_s"], 1);
}

#[test]
fn sampling_changes_apply_to_the_next_record_and_bad_values_change_nothing() {
    let mut live = Live::start();
    let sampling = live.get("/api/sampling").ok();
    assert_eq!(
        sampling,
        json!({"sampling_strategy": "random", "sampling_rate": 1.0, "kernel_presample": false,
               "cluster_similarity_threshold": 0.9, "min_rate": 0.01, "max_rate": 1.0,
               "error_boost_factor": 2.0, "novelty_boost_factor": 1.5,
               "always_capture_errors": true, "always_capture_slow": false,
               "latency_threshold_ms": 1000.0})
    );
    let changed = live
        .put(
            "/api/sampling",
            json!({"sampling_rate": 0.0, "always_capture_errors": false}),
        )
        .ok();
    assert_eq!(changed["sampling_rate"], 0.0);
    assert_eq!(changed["always_capture_errors"], false);
    assert_eq!(
        live.feed(0..10),
        0,
        "rate 0 keeps nothing, not even the error"
    );
    live.put("/api/sampling", json!({"always_capture_errors": true}))
        .ok();
    assert_eq!(live.feed(0..10), 1, "errors only");
    let stats = live.get("/api/stats").ok();
    assert_eq!(stats["functions"][0]["sampled_out"], 19);
    assert_eq!(stats["functions"][0]["stored"], 1);

    let refused = [
        (
            json!({"sampling_rate": 2}),
            "sampling_rate = 2 is not allowed: a number from 0 to 1",
        ),
        (
            json!({"sampling_rate": "high"}),
            "sampling_rate: invalid type: string \"high\", expected f64",
        ),
        (
            json!({"sampling_strategy": "psychic"}),
            "sampling_strategy: unknown variant `psychic`, expected one of `random`, `clustering`, `adaptive`",
        ),
        (
            json!({"limit_per_function": 5}),
            "unknown setting `limit_per_function`; this endpoint takes sampling_strategy, sampling_rate, kernel_presample, cluster_similarity_threshold, min_rate, max_rate, error_boost_factor, novelty_boost_factor, always_capture_errors, always_capture_slow, latency_threshold_ms",
        ),
        (json!([1]), "send a JSON object of the settings to change"),
        (
            json!({"min_rate": 0.5, "max_rate": 0.25}),
            "min_rate = 0.5 is not allowed: at most max_rate (0.25)",
        ),
    ];
    for (body, message) in refused {
        assert_eq!(
            live.put("/api/sampling", body.clone()).error(400),
            message,
            "{body}"
        );
    }
    let body = request(
        live.server.addr(),
        "PUT",
        "/api/sampling",
        &[("Content-Type", "application/json")],
        Some("{".into()),
    );
    assert!(
        body.error(400).starts_with("the body is not JSON: "),
        "{body:?}"
    );
    let unchanged = live.get("/api/sampling").ok();
    assert_eq!(
        (
            unchanged["sampling_rate"].as_f64(),
            unchanged["sampling_strategy"].as_str()
        ),
        (Some(0.0), Some("random"))
    );
}

#[test]
fn limits_alert_once_count_per_type_and_reset() {
    let mut live = Live::start();
    live.feed(0..10);
    let limits = live
        .put(
            "/api/limits",
            json!({"limit_per_function": 12, "type_limits": [{"field_path": "order.kind", "limit_per_type": 6}]}),
        )
        .ok();
    assert_eq!(limits["limit_per_function"], 12);
    assert_eq!(limits["limit_action"], "stop");
    assert_eq!(
        limits["type_limits"],
        json!([{"function": null, "field_path": "order.kind", "limit_per_type": 6}])
    );
    assert_eq!(
        live.feed(10..20),
        2,
        "12 stored in all, then the limit stops the rest"
    );
    let limits = live.get("/api/limits").ok();
    assert_eq!(
        limits["counts"],
        json!({
            "functions": [{"function": F, "stored": 12, "limit": 12, "reached": true}],
            "types": [
                {"function": F, "field_path": "order.kind", "key": "order.kind=express", "stored": 1, "limit": 6, "reached": false},
                {"function": F, "field_path": "order.kind", "key": "order.kind=standard", "stored": 1, "limit": 6, "reached": false},
            ],
        })
    );
    let stats = live.get("/api/stats").ok();
    assert_eq!(stats["functions"][0]["limited"], 8);
    assert_eq!(
        stats["functions"][0]["limit"],
        json!({"limit": 12, "stored": 12, "action": "stop", "reached": true})
    );
    let alerts = live.get("/api/alerts").ok()["alerts"].clone();
    assert_eq!(
        alerts.as_array().unwrap().len(),
        1,
        "one alert per limit: {alerts}"
    );
    assert_eq!(alerts[0]["kind"], "function_limit");
    assert_eq!(alerts[0]["limit"], 12);
    assert_eq!(
        alerts[0]["message"],
        "orders::process_order reached its limit of 12 stored calls; no more calls are stored"
    );
    assert_eq!(stats["alerts"], alerts);

    // A type limit: one express order per key from now on.
    let reset = live.post("/api/limits/reset", json!({})).ok();
    assert_eq!(reset, json!({"reset": "all limits"}));
    live.put("/api/limits", json!({"limit_per_function": null, "type_limits": [{"function": "process_order", "field_path": "order.kind", "limit_per_type": 1}]})).ok();
    assert_eq!(live.feed(0..4), 2, "one express and one standard");
    let alerts = live.get("/api/alerts").ok()["alerts"].clone();
    assert_eq!(
        alerts[1]["message"],
        "orders::process_order: order.kind=express reached its limit of 1 stored calls; no more are stored"
    );
    let reset = live
        .post(
            "/api/limits/reset",
            json!({"function": F, "key": "order.kind=express"}),
        )
        .ok();
    assert_eq!(
        reset["reset"],
        "order.kind=express of orders::process_order"
    );
    assert_eq!(
        live.feed(0..4),
        1,
        "express again, standard still at its limit"
    );

    assert_eq!(
        live.post("/api/limits/reset", json!({"key": "order.kind=express"}))
            .error(400),
        "a type key is reset per function: give \"function\" with \"key\""
    );
    assert_eq!(
        live.put("/api/limits", json!({"limit_action": "explode"}))
            .error(400),
        "limit_action: unknown variant `explode`, expected `stop` or `sample`"
    );
    assert_eq!(
        live.put(
            "/api/limits",
            json!({"type_limits": [{"field_path": "kind"}]})
        )
        .error(400),
        "type_limits: missing field `limit_per_type`"
    );
}

#[test]
fn the_event_stream_pushes_stats() {
    let mut live = Live::start();
    live.feed(0..3);
    let (_, event, data) = first_event(live.server.addr(), "/api/events");
    assert_eq!(event, "stats");
    assert_eq!(data["totals"]["stored"], 3);
    assert_eq!(data["functions"][0]["name"], F);
}

#[test]
fn the_page_and_its_assets_are_served() {
    let live = Live::start();
    let page = live.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body.contains("<title>Chronicle"),
        "{}",
        &page.body[..200]
    );
    assert!(page.body.contains("<base href=\"/\">"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let script = live.get("/app.js");
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(script.body.contains("EventSource"));
    assert_eq!(
        live.get("/app.css").header("content-type"),
        Some("text/css; charset=utf-8")
    );
}

#[test]
fn without_a_token_only_loopback_hosts_are_answered() {
    let live = Live::start();
    let addr = live.server.addr();
    assert_eq!(live.server.token(), None);
    assert_eq!(live.server.url(), format!("http://{addr}/"));
    for host in ["evil.example", "evil.example:80", "10.1.2.3:8787"] {
        let refused = request(addr, "GET", "/api/stats", &[("Host", host)], None);
        assert_eq!(
            refused.error(403),
            "this dashboard has no token and answers only on a loopback address (127.0.0.1, localhost, [::1]); set a token to serve it elsewhere"
        );
    }
    for host in ["localhost:8787", "127.0.0.1", "[::1]:1"] {
        assert_eq!(
            request(addr, "GET", "/api/stats", &[("Host", host)], None).status,
            200
        );
    }
}

/// Without a token a loopback dashboard answers only its own user: the same request from
/// another local user (`nobody`, through `runuser`) is refused. Needs root to switch users.
#[test]
#[cfg(target_os = "linux")]
fn without_a_token_other_local_users_are_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        assert!(
            std::env::var("CHRONICLE_REQUIRE_BPF").as_deref() != Ok("1"),
            "needs root to act as another user"
        );
        eprintln!("NOT RUN: without_a_token_other_local_users_are_refused needs root");
        return;
    }
    let live = Live::start();
    let port = live.server.addr().port();
    assert_eq!(live.get("/api/stats").status, 200);
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port}; \
         printf 'GET /api/stats HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nConnection: close\\r\\n\\r\\n' >&3; \
         cat <&3"
    );
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "bash", "-c", &script])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{reply}");
    assert!(
        reply.ends_with(
            "{\"error\":\"this dashboard has no token and answers only the user who started \
             it; user 65534 asked: start it with a token (--dashboard-token) to share it\"}"
        ),
        "{reply}"
    );
}

#[cfg(target_os = "linux")]
unsafe extern "C" {
    fn geteuid() -> u32;
}

#[test]
fn changes_from_other_sites_or_not_in_json_are_refused() {
    let live = Live::start();
    let addr = live.server.addr();
    let cross = "cross-site request refused: change settings from the dashboard's own page or with a same-origin client";
    let body = json!({"sampling_rate": 0.5});
    for headers in [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "http://127.0.0.1:1")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
    ] {
        let r = send_json(addr, "PUT", "/api/sampling", &headers, body.clone());
        assert_eq!(r.error(403), cross, "{headers:?}");
        let r = send_json(addr, "POST", "/api/limits/reset", &headers, json!({}));
        assert_eq!(r.error(403), cross, "{headers:?}");
    }
    let form = request(
        addr,
        "PUT",
        "/api/sampling",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("sampling_rate=0".into()),
    );
    assert_eq!(
        form.error(415),
        "send the change as JSON with `Content-Type: application/json`"
    );
    assert_eq!(
        live.get("/api/sampling").ok()["sampling_rate"],
        1.0,
        "nothing changed"
    );
    let origin = format!("http://{addr}");
    let same = [
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    assert_eq!(
        send_json(addr, "PUT", "/api/sampling", &same, body).ok()["sampling_rate"],
        0.5
    );
}

#[test]
fn a_non_loopback_address_gets_a_token_that_every_request_needs() {
    let config = CaptureConfig::default();
    let policy = PolicyHandle::new(Policy::from_config(&config).unwrap());
    let board = Dashboard::live(policy, Monitor::new("x"));
    let server = dashboard::serve("0.0.0.0:0".parse().unwrap(), board).unwrap();
    let token = server.token().expect("a token was made").to_owned();
    assert_eq!(token.len(), 32);
    let port = server.addr().port();
    assert_eq!(
        server.url(),
        format!("http://0.0.0.0:{port}/?token={token}")
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let needs = "this dashboard needs its token: open the URL chronicle printed at start (it ends in ?token=...) or send `Authorization: Bearer TOKEN`";
    for path in [
        "/",
        "/api/stats",
        "/api/events",
        "/api/sampling",
        "/api/alerts",
        "/api/stats?token=wrong",
    ] {
        assert_eq!(
            request(addr, "GET", path, &[], None).error(401),
            needs,
            "{path}"
        );
    }
    let wrong = format!("Bearer {}", "0".repeat(32));
    assert_eq!(
        request(
            addr,
            "GET",
            "/api/stats",
            &[("Authorization", &wrong)],
            None
        )
        .error(401),
        needs
    );
    let put = send_json(
        addr,
        "PUT",
        "/api/sampling",
        &[],
        json!({"sampling_rate": 0}),
    );
    assert_eq!(put.error(401), needs);

    let bearer = format!("Bearer {token}");
    assert_eq!(
        request(
            addr,
            "GET",
            "/api/stats",
            &[("Authorization", &bearer)],
            None
        )
        .ok()["mode"],
        "live"
    );
    assert_eq!(
        request(addr, "GET", &format!("/?token={token}"), &[], None).status,
        200
    );
    let (_, event, _) = first_event(addr, &format!("/api/events?token={token}"));
    assert_eq!(event, "stats");
    let put = send_json(
        addr,
        "PUT",
        "/api/sampling",
        &[("Authorization", &bearer)],
        json!({"sampling_rate": 0.25}),
    );
    assert_eq!(put.ok()["sampling_rate"], 0.25);
    // The page's script and style are not secret; the browser fetches them without it.
    assert_eq!(request(addr, "GET", "/app.js", &[], None).status, 200);
}

#[test]
fn a_store_is_shown_read_only() {
    let dir =
        std::env::temp_dir().join(format!("chronicle-dashboard-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chronicle.db");
    let mut storage = SqliteStorage::open(&path).unwrap();
    let mut records: Vec<CallRecord> = (0..10).map(call).collect();
    storage.insert(&mut records).unwrap();
    let board = Dashboard::store(Box::new(storage), path.display().to_string());
    let server = dashboard::serve("127.0.0.1:0".parse().unwrap(), board).unwrap();
    let addr = server.addr();
    let stats = request(addr, "GET", "/api/stats", &[], None).ok();
    assert_eq!(stats["mode"], "store");
    assert_eq!(stats["controls"], false);
    assert_eq!(stats["source"], path.display().to_string());
    let f = &stats["functions"][0];
    assert_eq!(
        (
            f["name"].as_str(),
            f["calls"].as_u64(),
            f["errors"].as_u64()
        ),
        (Some(F), Some(10), Some(1))
    );
    assert_eq!(f["error_rate"], 0.1);
    assert_eq!(
        (
            f["latency_ns"]["p50"].as_u64(),
            f["latency_ns"]["p99"].as_u64()
        ),
        (Some(5000), Some(10000))
    );
    assert_eq!(
        f["sampled_out"],
        Json::Null,
        "a store does not know what was sampled out"
    );
    let ids: Vec<u64> = stats["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=10).rev().collect::<Vec<_>>());
    let points = stats["series"]["points"].as_array().unwrap();
    let calls: u64 = points.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
    let errors: u64 = points.iter().map(|p| p["errors"].as_u64().unwrap()).sum();
    assert_eq!((calls, errors), (10, 1));
    let read_only = "this dashboard shows a database and cannot change capture settings; start `chronicle attach --dashboard ADDR` to change sampling and limits while tracing";
    assert_eq!(
        request(addr, "GET", "/api/sampling", &[], None).error(409),
        read_only
    );
    let put = send_json(
        addr,
        "PUT",
        "/api/sampling",
        &[],
        json!({"sampling_rate": 0.5}),
    );
    assert_eq!(put.error(409), read_only);
    assert_eq!(
        send_json(addr, "POST", "/api/limits/reset", &[], json!({})).error(409),
        read_only
    );
    assert_eq!(
        request(addr, "GET", "/api/alerts", &[], None).ok(),
        json!({"alerts": []})
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_router_mounts_under_a_prefix_in_an_app_of_ones_own() {
    let config = CaptureConfig::default();
    let policy = PolicyHandle::new(Policy::from_config(&config).unwrap());
    let board = Dashboard::live(policy, Monitor::new("app"));
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .nest("/chronicle", dashboard::router(board));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    assert_eq!(request(addr, "GET", "/health", &[], None).body, "ok");
    // The page's relative links resolve under the prefix.
    let page = request(addr, "GET", "/chronicle?token=x", &[], None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<head>\n<base href=\"/chronicle/\">"));
    assert_eq!(
        request(addr, "GET", "/chronicle/app.js", &[], None).status,
        200
    );
    assert_eq!(
        request(addr, "GET", "/chronicle/api/stats", &[], None).ok()["source"],
        "app"
    );
}

#[chronicle::capture(name = "orders::quote")]
fn quote(qty: u64) -> Result<u64, String> {
    if qty == 0 {
        Err("empty order".into())
    } else {
        Ok(qty * 100)
    }
}

/// The only test here that records through `#[capture]` (recording is process-wide).
#[test]
fn a_capture_service_serves_its_own_dashboard() {
    let dir = std::env::temp_dir().join(format!(
        "chronicle-dashboard-capture-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let recording = chronicle::capture::init_sqlite(&dir.join("chronicle.db")).unwrap();
    let board = Dashboard::live(recording.policy().clone(), recording.monitor().clone());
    let server = dashboard::serve("127.0.0.1:0".parse().unwrap(), board).unwrap();
    let addr = server.addr();
    for qty in 0..5 {
        let _ = quote(qty);
    }
    // The writer stores in batches, at the latest 100 ms after a record arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = request(addr, "GET", "/api/stats", &[], None).ok();
        if stats["totals"]["written"] == 5 || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        stats["totals"],
        json!({"calls": 5, "seen": 5, "sampled_out": 0, "limited": 0, "stored": 5,
               "dropped": 0, "errors": 1, "written": 5, "write_failed": 0})
    );
    assert_eq!(stats["functions"][0]["name"], "orders::quote");
    assert!(
        stats["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("pid {} (", std::process::id()))
    );
    assert_eq!(stats["recent"][0]["args"], json!({"qty": 4}));
    assert_eq!(stats["recent"][0]["return"], json!({"Ok": 400}));
    assert_eq!(stats["recent"][4]["return"], json!({"Err": "empty order"}));
    // A change from the dashboard reaches the recording service.
    let put = send_json(
        addr,
        "PUT",
        "/api/sampling",
        &[],
        json!({"sampling_rate": 0.0, "always_capture_errors": false}),
    );
    assert_eq!(put.ok()["sampling_rate"], 0.0);
    let _ = quote(7);
    assert_eq!(recording.policy().get().config.sampling_rate, 0.0);
    let stats = request(addr, "GET", "/api/stats", &[], None).ok();
    assert_eq!(
        (
            stats["totals"]["calls"].as_u64(),
            stats["totals"]["stored"].as_u64()
        ),
        (Some(6), Some(5))
    );
    drop(server);
    recording.finish().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
