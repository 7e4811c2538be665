//! The dashboard in a real headless Chromium: live counts from a traced fixture, the
//! sampling control changing what the agent stores, and a non-loopback dashboard refusing a
//! browser without its token.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, SystemTime};

use chronicle::record::{CallRecord, Status, Value};
use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle_tests::browser::Browser;
use chronicle_tests::{Opt, Running, bpf_available, build_c, chronicle_bin, export, scratch};
use serde_json::{Value as Json, json};

const WAIT: Duration = Duration::from_secs(30);

/// A `chronicle` process whose stderr lines arrive on a channel; killed when dropped.
struct Chronicle {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Chronicle {
    fn start(args: &[&str]) -> Chronicle {
        let mut child = Command::new(chronicle_bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chronicle");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Chronicle {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The text after `prefix` on the first stderr line that starts with it.
    fn line_after(&mut self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    let found = line.strip_prefix(prefix).map(str::to_owned);
                    self.seen.push(line);
                    if let Some(rest) = found {
                        return rest;
                    }
                }
                Err(_) => panic!(
                    "no `{prefix}` line; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Stops it as Ctrl-C would and waits; returns the rest of its stderr.
    fn interrupt(mut self) -> String {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.lines.try_iter().collect();
        let all = [self.seen.clone(), rest].concat().join("\n");
        assert!(status.success(), "chronicle exited with {status}:\n{all}");
        all
    }
}

impl Drop for Chronicle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` from the page, as JSON (with the page's own origin and token handling).
fn page_get(browser: &mut Browser, path: &str) -> Json {
    browser.eval(&format!("fetch({path:?}).then(r => r.json())"))
}

/// A function's count as the page shows it.
fn shown(browser: &mut Browser, function: &str, field: &str) -> u64 {
    let text = browser.eval(&format!(
        "document.querySelector('tr[data-function=\"{function}\"] td[data-field=\"{field}\"]')?.textContent ?? ''"
    ));
    text.as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{function} {field} shows {text}"))
}

/// Types `rate` into the page's sampling form, applies it and waits for `saved`.
fn set_rate_in_page(browser: &mut Browser, rate: &str) {
    browser.eval(&format!(
        "(() => {{
            const input = document.getElementById('sampling-rate');
            input.focus();
            input.value = '{rate}';
            input.dispatchEvent(new Event('input', {{bubbles: true}}));
            document.getElementById('sampling-status').textContent = '';
            document.getElementById('sampling-apply').click();
            return true;
        }})()"
    ));
    browser.wait_for(
        "the sampling change to be saved",
        "document.getElementById('sampling-status').textContent === 'saved'",
        WAIT,
    );
}

fn stats_of(browser: &mut Browser, function: &str) -> Json {
    let stats = page_get(browser, "api/stats");
    stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == function)
        .unwrap_or_else(|| panic!("no {function} in {stats}"))
        .clone()
}

#[test]
fn the_page_shows_live_counts_and_its_sampling_rate_changes_what_is_stored() {
    let name = "dashboard_live_in_chromium";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let bank = build_c("bank", Opt::O2);
    let service = Running::start(&bank, &["--interval-ms", "5"]);
    let db = dir.join("chronicle.db");
    let pid = service.pid().to_string();
    let mut attach = Chronicle::start(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "transfer",
        "--func",
        "factorial",
        "--func",
        "classify",
        "--db",
        db.to_str().unwrap(),
        "--dashboard",
        "127.0.0.1:0",
        "--progress",
        "0",
    ]);
    let url = attach.line_after("chronicle: dashboard at ");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );

    let mut browser = Browser::launch(&dir, 1366, 900);
    browser.goto(&url);
    browser.wait_for(
        "the event stream",
        "document.getElementById('conn-state')?.textContent === 'live'",
        WAIT,
    );
    // The stream can open before its first stats event is rendered.
    browser.wait_for(
        "the agent's mode on the page",
        "document.getElementById('mode').textContent !== '…'",
        WAIT,
    );
    assert_eq!(
        browser.eval("document.getElementById('mode').textContent"),
        "live"
    );
    browser.wait_for(
        "transfer calls on the page",
        "Number(document.querySelector('tr[data-function=\"transfer\"] td[data-field=\"calls\"]')?.textContent) >= 40",
        WAIT,
    );
    // Exact decoded values among the recent calls.
    for text in [
        r#"{"from":"alice","to":"bob","cents":1250}"#,
        r#"{"from":"carol","to":"dave","cents":-500}"#,
        r#"{"n":5}"#,
        r#"{"kind":"BROKERAGE","code":0}"#,
    ] {
        browser.wait_for(
            text,
            &format!("document.getElementById('recent').textContent.includes({text:?})"),
            WAIT,
        );
    }
    // The counts move while the page is open, and the page never runs ahead of the agent.
    let before = shown(&mut browser, "transfer", "stored");
    browser.wait_for(
        "the stored count to grow",
        &format!(
            "Number(document.querySelector('tr[data-function=\"transfer\"] td[data-field=\"stored\"]').textContent) > {before}"
        ),
        WAIT,
    );
    let on_page = shown(&mut browser, "transfer", "stored");
    let from_api = stats_of(&mut browser, "transfer")["stored"]
        .as_u64()
        .unwrap();
    assert!(on_page <= from_api, "page {on_page}, agent {from_api}");
    assert_eq!(shown(&mut browser, "transfer", "dropped"), 0);

    // Sampling rate 0 from the page: the kernel keeps counting calls, nothing more is stored.
    set_rate_in_page(&mut browser, "0");
    let zero_from = SystemTime::now();
    assert_eq!(page_get(&mut browser, "api/sampling")["sampling_rate"], 0.0);
    std::thread::sleep(Duration::from_millis(300));
    let held = stats_of(&mut browser, "transfer");
    std::thread::sleep(Duration::from_millis(1500));
    let later = stats_of(&mut browser, "transfer");
    assert_eq!(
        later["stored"], held["stored"],
        "stored nothing at rate 0: {later}"
    );
    assert!(
        later["calls"].as_u64() > held["calls"].as_u64().map(|c| c + 100),
        "the program kept calling: {held} then {later}"
    );
    assert!(later["sampled_out"].as_u64() > held["sampled_out"].as_u64());
    browser.wait_for(
        "sampled-out calls on the page",
        &format!(
            "Number(document.querySelector('tr[data-function=\"transfer\"] td[data-field=\"sampled_out\"]').textContent) >= {}",
            later["sampled_out"]
        ),
        WAIT,
    );
    let zero_until = SystemTime::now();

    // And back to 1.
    set_rate_in_page(&mut browser, "1");
    browser.wait_for(
        "storing again",
        &format!(
            "fetch('api/stats').then(r => r.json()).then(s => s.functions.find(f => f.name === 'transfer').stored > {})",
            later["stored"]
        ),
        WAIT,
    );

    // A per-function limit from the page: the first function to reach it raises an alert.
    let stored_now = stats_of(&mut browser, "factorial")["stored"]
        .as_u64()
        .unwrap();
    let limit = stored_now + 300;
    browser.eval(&format!(
        "(() => {{
            const input = document.getElementById('limit-per-function');
            input.value = '{limit}';
            input.dispatchEvent(new Event('input', {{bubbles: true}}));
            document.getElementById('limits-apply').click();
            return true;
        }})()"
    ));
    browser.wait_for(
        "the limit to be saved",
        "document.getElementById('limits-status').textContent === 'saved'",
        WAIT,
    );
    let alert =
        format!("factorial reached its limit of {limit} stored calls; no more calls are stored");
    browser.wait_for(
        "the alert on the page",
        &format!("document.getElementById('alerts').textContent.includes({alert:?})"),
        WAIT,
    );
    let cell = format!("{limit}/{limit} ⚠");
    browser.wait_for(
        "the limit reached on the page",
        &format!(
            "document.querySelector('tr[data-function=\"factorial\"] td[data-field=\"limit\"]').textContent === {cell:?}"
        ),
        WAIT,
    );
    let shot = browser.screenshot();
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(dir.join("dashboard.png"), &shot).unwrap();
    if let Some(path) = std::env::var_os("CHRONICLE_SCREENSHOT") {
        std::fs::write(path, &shot).unwrap();
    }
    let final_stats = stats_of(&mut browser, "transfer");
    drop(browser);
    let stderr = attach.interrupt();
    drop(service);

    // What the store holds: every call the agent stored, none that started while the rate
    // was 0 (after the change had reached the kernel).
    let records = export(&db, "transfer");
    assert!(
        records.len() as u64 >= final_stats["stored"].as_u64().unwrap(),
        "{stderr}"
    );
    let settled = zero_from + Duration::from_millis(300);
    let during: Vec<&Json> = records
        .iter()
        .filter(|r| {
            let t = chronicle::time::parse_rfc3339(r["timestamp"].as_str().unwrap()).unwrap();
            t >= settled && t < zero_until
        })
        .collect();
    assert_eq!(
        during,
        Vec::<&Json>::new(),
        "calls stored while sampling was 0"
    );
    let first = records
        .iter()
        .find(|r| r["args"]["from"] == "alice")
        .unwrap();
    assert_eq!(
        first["args"],
        json!({"from": "alice", "to": "bob", "cents": 1250})
    );
    assert_eq!(first["return"], 0);
}

#[test]
fn a_non_loopback_dashboard_refuses_a_browser_without_its_token() {
    let dir = scratch("dashboard_token_in_chromium");
    let db = dir.join("chronicle.db");
    write_store(&db);
    let mut server = Chronicle::start(&[
        "dashboard",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    let line = server.line_after("chronicle: dashboard of ");
    let url = line
        .split(" at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no URL in {line}"))
        .to_owned();
    let (address, token) = url
        .strip_prefix("http://0.0.0.0:")
        .and_then(|rest| rest.split_once("/?token="))
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 32, "{token}");
    let base = format!("http://127.0.0.1:{address}/");

    let mut browser = Browser::launch(&dir, 1280, 800);
    browser.goto(&base);
    let refusal = browser.wait_for(
        "the refusal",
        "document.body && document.body.innerText.includes('needs its token') && document.body.innerText",
        WAIT,
    );
    assert!(
        refusal.as_str().unwrap().contains("it ends in ?token="),
        "{refusal}"
    );
    let status = browser.eval("fetch('api/stats').then(r => r.status)");
    assert_eq!(status, 401);
    let status = browser.eval("fetch('api/events').then(r => r.status)");
    assert_eq!(status, 401);
    let status = browser.eval(
        "fetch('api/limits/reset', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)",
    );
    assert_eq!(status, 401);

    // With the token: the read-only view of the store.
    browser.goto(&format!("{base}?token={token}"));
    browser.wait_for(
        "the event stream",
        "document.getElementById('conn-state')?.textContent === 'live'",
        WAIT,
    );
    browser.wait_for(
        "the function row",
        "document.querySelector('tr[data-function=\"orders::quote\"] td[data-field=\"calls\"]')?.textContent === '6'",
        WAIT,
    );
    assert_eq!(
        browser.eval("document.getElementById('mode').textContent"),
        "read-only"
    );
    assert_eq!(
        browser.eval("document.getElementById('total-errors').textContent"),
        "2"
    );
    assert_eq!(
        browser.eval("document.getElementById('sampling-fieldset').disabled"),
        true
    );
    assert_eq!(
        browser.eval("document.querySelector('tr[data-function=\"orders::quote\"] td[data-field=\"sampled_out\"]').textContent"),
        "—"
    );
    browser.wait_for(
        "the recent calls",
        r#"document.getElementById('recent').textContent.includes('{"qty":5}')"#,
        WAIT,
    );
}

/// Six calls of `orders::quote` (`qty` 0..6); `qty` 4 and 5 fail.
fn write_store(path: &Path) {
    let mut storage = SqliteStorage::open(path).unwrap();
    let mut records: Vec<CallRecord> = (0..6u64)
        .map(|qty| CallRecord {
            id: None,
            function: "orders::quote".into(),
            binary: "/srv/orders".into(),
            build_id: "ab12".into(),
            pid: 1,
            tid: 1,
            timestamp: SystemTime::now(),
            duration_ns: Some(1000 * (qty + 1)),
            status: if qty >= 4 { Status::Error } else { Status::Ok },
            args: vec![("qty".into(), Value::UInt(qty))],
            ret: Some(Value::Int(if qty >= 4 { -1 } else { qty as i64 * 100 })),
            unavailable: Vec::new(),
            after: Vec::new(),
            dependencies: Vec::new(),
        })
        .collect();
    storage.insert(&mut records).unwrap();
}
