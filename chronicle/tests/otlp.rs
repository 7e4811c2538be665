//! The OTLP exporter against a real OTLP/HTTP receiver on loopback. The receiver parses each
//! body with the official protobuf-JSON schema (`opentelemetry-proto`), so a payload that is
//! not valid OTLP fails here before any field is compared.

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chronicle::otlp::{OtlpConfig, OtlpExporter, OtlpStats};
use chronicle::time::from_unix_nanos;
use chronicle::{CallRecord, Status, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// One request as the receiver saw it.
struct Received {
    method: String,
    path: String,
    content_type: String,
    body: Vec<u8>,
}

impl Received {
    /// The body as the official schema reads it.
    #[track_caller]
    fn parse(&self) -> ExportTraceServiceRequest {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a valid OTLP/JSON ExportTraceServiceRequest ({e}):\n{}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1: records every request and answers what `respond` says
/// for the n-th one (counting from 0).
struct Collector {
    server: Arc<tiny_http::Server>,
    endpoint: String,
    received: Receiver<Received>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(mut respond: impl FnMut(usize) -> (u16, String) + Send + 'static) -> Collector {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let (sender, received) = mpsc::channel();
        let thread = {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                for (n, mut request) in server.incoming_requests().enumerate() {
                    let mut body = Vec::new();
                    request.as_reader().read_to_end(&mut body).unwrap();
                    let content_type = request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Content-Type"))
                        .map(|h| h.value.to_string())
                        .unwrap_or_default();
                    let _ = sender.send(Received {
                        method: request.method().to_string(),
                        path: request.url().to_owned(),
                        content_type,
                        body,
                    });
                    let (status, text) = respond(n);
                    let response = tiny_http::Response::from_string(text)
                        .with_status_code(status)
                        .with_header(
                            "Content-Type: application/json"
                                .parse::<tiny_http::Header>()
                                .unwrap(),
                        );
                    let _ = request.respond(response);
                }
            })
        };
        Collector {
            server,
            endpoint: format!("http://127.0.0.1:{port}"),
            received,
            thread: Some(thread),
        }
    }

    /// Answers every request with 200 and an empty (full success) response.
    fn accepting() -> Collector {
        Collector::start(|_| (200, "{}".into()))
    }

    /// Every request received so far.
    fn requests(&self) -> Vec<Received> {
        self.received.try_iter().collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn config(collector: &Collector) -> OtlpConfig {
    OtlpConfig {
        endpoint: collector.endpoint.clone(),
        service_name: "orders-service".into(),
        max_batch: 100,
        // Batches go out when full or on finish, never on a timer, so counts are exact.
        max_delay: Duration::from_secs(3600),
        retry_delay: Duration::from_millis(5),
        ..OtlpConfig::default()
    }
}

const BUILD: &str = "0123456789abcdef0123456789abcdef01234567";
const START_NS: i64 = 1_795_721_401_123_456_789;

fn call(function: &str, offset_ns: i64) -> CallRecord {
    CallRecord {
        id: None,
        function: function.into(),
        binary: "/srv/orders".into(),
        build_id: BUILD.into(),
        pid: 4242,
        tid: 4243,
        timestamp: from_unix_nanos(START_NS + offset_ns),
        duration_ns: Some(1500),
        status: Status::Ok,
        args: vec![("id".into(), Value::UInt(7))],
        ret: Some(Value::Bool(true)),
        unavailable: vec![],
        after: vec![],
        dependencies: vec![],
    }
}

/// An attribute as `key=value`, with the value's OTLP type: `s:` string, `i:` int.
fn attributes(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => format!("s:{s}"),
                Some(any_value::Value::IntValue(i)) => format!("i:{i}"),
                other => format!("unexpected {other:?}"),
            };
            format!("{}={value}", kv.key)
        })
        .collect()
}

#[test]
fn spans_are_valid_otlp_with_exact_fields() {
    let collector = Collector::accepting();
    let exporter = OtlpExporter::spawn(config(&collector)).unwrap();
    let spans = exporter.sender();

    let mut ok = call("orders::process_order", 0);
    ok.id = Some(41);
    ok.args = vec![
        (
            "order".into(),
            Value::Struct(vec![
                ("zone".into(), Value::Enum("EU".into())),
                ("amount".into(), Value::UInt(u64::MAX)),
            ]),
        ),
        ("note".into(), Value::Str("gift \"wrap\"".into())),
    ];
    ok.ret = Some(Value::Int(-1));
    let mut failed = call("orders::process_order", 1_000_000);
    failed.status = Status::Error;
    failed.duration_ns = Some(2_500_000);
    failed.ret = Some(Value::Variant(
        "Err".into(),
        Box::new(Value::Str("no stock".into())),
    ));
    let mut unwound = call("orders::validate", 2_000_000);
    unwound.status = Status::Unwound;
    unwound.duration_ns = None;
    unwound.ret = None;
    unwound.args = vec![];
    unwound.unavailable = vec![
        ("order".into(), "unmapped pointer 0x10".into()),
        ("return".into(), "thread exited".into()),
    ];
    for record in [&ok, &failed, &unwound] {
        assert!(spans.send(record));
    }
    let stats = exporter.finish();
    assert_eq!(
        stats,
        OtlpStats {
            queued: 3,
            exported: 3,
            requests: 1,
            ..OtlpStats::default()
        }
    );

    let requests = collector.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/traces");
    assert_eq!(request.content_type, "application/json");
    let export = request.parse();

    assert_eq!(export.resource_spans.len(), 1);
    let resource_spans = &export.resource_spans[0];
    assert_eq!(
        attributes(&resource_spans.resource.as_ref().unwrap().attributes),
        ["service.name=s:orders-service"]
    );
    assert_eq!(resource_spans.scope_spans.len(), 1);
    let scope_spans = &resource_spans.scope_spans[0];
    let scope = scope_spans.scope.as_ref().unwrap();
    assert_eq!(scope.name, "chronicle");
    assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));

    let spans = &scope_spans.spans;
    assert_eq!(spans.len(), 3);
    let start = START_NS as u64;
    let expect = [
        (
            "orders::process_order",
            start,
            start + 1500,
            None,
            vec![
                "code.function=s:orders::process_order",
                "chronicle.binary=s:/srv/orders",
                "chronicle.build_id=s:0123456789abcdef0123456789abcdef01234567",
                "process.pid=i:4242",
                "thread.id=i:4243",
                "chronicle.status=s:ok",
                "chronicle.record_id=i:41",
                r#"chronicle.arg.order=s:{"zone":"EU","amount":18446744073709551615}"#,
                r#"chronicle.arg.note=s:"gift \"wrap\"""#,
                "chronicle.return=s:-1",
            ],
        ),
        (
            "orders::process_order",
            start + 1_000_000,
            start + 1_000_000 + 2_500_000,
            Some(r#"returned an error: {"Err":"no stock"}"#),
            vec![
                "code.function=s:orders::process_order",
                "chronicle.binary=s:/srv/orders",
                "chronicle.build_id=s:0123456789abcdef0123456789abcdef01234567",
                "process.pid=i:4242",
                "thread.id=i:4243",
                "chronicle.status=s:error",
                "chronicle.arg.id=s:7",
                r#"chronicle.return=s:{"Err":"no stock"}"#,
            ],
        ),
        (
            "orders::validate",
            start + 2_000_000,
            // Never returned: no duration, so the span ends where it started.
            start + 2_000_000,
            Some("did not return: thread exited"),
            vec![
                "code.function=s:orders::validate",
                "chronicle.binary=s:/srv/orders",
                "chronicle.build_id=s:0123456789abcdef0123456789abcdef01234567",
                "process.pid=i:4242",
                "thread.id=i:4243",
                "chronicle.status=s:unwound",
                "chronicle.unavailable.order=s:unmapped pointer 0x10",
                "chronicle.unavailable.return=s:thread exited",
            ],
        ),
    ];
    for (span, (name, start, end, error, attrs)) in spans.iter().zip(expect) {
        assert_eq!(span.name, name);
        assert_eq!(span.kind, SpanKind::Internal as i32, "{name}");
        assert_eq!(span.start_time_unix_nano, start, "{name}");
        assert_eq!(span.end_time_unix_nano, end, "{name}");
        assert_eq!(attributes(&span.attributes), attrs, "{name}");
        match error {
            None => assert!(
                span.status
                    .as_ref()
                    .is_none_or(|s| s.code == StatusCode::Unset as i32),
                "{name}: {:?}",
                span.status
            ),
            Some(message) => {
                let status = span.status.as_ref().unwrap();
                assert_eq!(status.code, StatusCode::Error as i32, "{name}");
                assert_eq!(status.message, message);
            }
        }
        assert_eq!(span.trace_id.len(), 16, "{name}");
        assert_eq!(span.span_id.len(), 8, "{name}");
        assert!(span.trace_id.iter().any(|b| *b != 0));
        assert!(span.span_id.iter().any(|b| *b != 0));
        assert!(span.parent_span_id.is_empty(), "every call is a root span");
    }
    assert_ne!(spans[0].trace_id, spans[1].trace_id);
    assert_ne!(spans[1].trace_id, spans[2].trace_id);
}

#[test]
fn dependencies_are_child_spans_of_their_call() {
    use chronicle::record::{Dependency, DependencyKind};
    let collector = Collector::accepting();
    let exporter = OtlpExporter::spawn(config(&collector)).unwrap();
    let mut record = call("orders::process_order", 0);
    record.duration_ns = Some(90_000);
    record.dependencies = vec![
        Dependency {
            kind: DependencyKind::Db,
            offset_ns: 1_000,
            duration_ns: Some(20_000),
            detail: vec![
                ("system".into(), Value::Str("sqlite".into())),
                (
                    "statement".into(),
                    Value::Str("select qty from stock where id = ?1".into()),
                ),
                ("params".into(), Value::Array(vec![Value::UInt(7)])),
            ],
        },
        Dependency {
            kind: DependencyKind::Http,
            offset_ns: 30_000,
            duration_ns: None,
            detail: vec![
                ("method".into(), Value::Str("GET".into())),
                ("target".into(), Value::Str("/stock/7".into())),
                ("status".into(), Value::UInt(200)),
            ],
        },
    ];
    assert!(exporter.sender().send(&record));
    exporter.finish();
    let export = collector.requests()[0].parse();
    let spans = &export.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 3);
    let (call, db, http) = (&spans[0], &spans[1], &spans[2]);
    assert!(call.parent_span_id.is_empty());
    let start = START_NS as u64;
    let expect = [
        (
            db,
            "SELECT",
            SpanKind::Client,
            start + 1_000,
            start + 21_000,
            vec![
                "chronicle.dependency.kind=s:db",
                "db.system.name=s:sqlite",
                "db.query.text=s:select qty from stock where id = ?1",
                r#"chronicle.detail.system=s:"sqlite""#,
                r#"chronicle.detail.statement=s:"select qty from stock where id = ?1""#,
                "chronicle.detail.params=s:[7]",
            ],
        ),
        (
            http,
            "GET /stock/7",
            SpanKind::Client,
            start + 30_000,
            // Not finished when the call returned: ends with the call.
            start + 90_000,
            vec![
                "chronicle.dependency.kind=s:http",
                "http.request.method=s:GET",
                "url.path=s:/stock/7",
                "http.response.status_code=i:200",
                r#"chronicle.detail.method=s:"GET""#,
                r#"chronicle.detail.target=s:"/stock/7""#,
                "chronicle.detail.status=s:200",
            ],
        ),
    ];
    for (span, name, kind, begin, end, attrs) in expect {
        assert_eq!(span.name, name);
        assert_eq!(span.kind, kind as i32, "{name}");
        assert_eq!(span.trace_id, call.trace_id, "{name}: same trace");
        assert_eq!(span.parent_span_id, call.span_id, "{name}: under the call");
        assert_ne!(span.span_id, call.span_id);
        assert_eq!(
            (span.start_time_unix_nano, span.end_time_unix_nano),
            (begin, end),
            "{name}"
        );
        assert_eq!(attributes(&span.attributes), attrs, "{name}");
    }
    assert_ne!(db.span_id, http.span_id);
}

#[test]
fn batches_follow_max_batch() {
    let collector = Collector::accepting();
    let exporter = OtlpExporter::spawn(OtlpConfig {
        max_batch: 4,
        ..config(&collector)
    })
    .unwrap();
    let spans = exporter.sender();
    for i in 0..10 {
        assert!(spans.send(&call("f", i)));
    }
    let stats = exporter.finish();
    assert_eq!(
        stats,
        OtlpStats {
            queued: 10,
            exported: 10,
            requests: 3,
            ..OtlpStats::default()
        }
    );
    let sizes: Vec<usize> = collector
        .requests()
        .iter()
        .map(|r| r.parse().resource_spans[0].scope_spans[0].spans.len())
        .collect();
    assert_eq!(sizes, [4, 4, 2]);
}

#[test]
fn retryable_failures_are_retried() {
    let collector = Collector::start(|n| match n {
        0 => (503, "busy".into()),
        1 => (429, "slow down".into()),
        _ => (200, "{}".into()),
    });
    let exporter = OtlpExporter::spawn(config(&collector)).unwrap();
    let spans = exporter.sender();
    for i in 0..3 {
        spans.send(&call("f", i));
    }
    let stats = exporter.finish();
    assert_eq!(
        stats,
        OtlpStats {
            queued: 3,
            exported: 3,
            requests: 3,
            failed_requests: 2,
            last_error: Some(format!(
                "POST {}/v1/traces: the collector answered 429: slow down",
                collector.endpoint
            )),
            ..OtlpStats::default()
        }
    );
    // Every attempt carried the same spans.
    let bodies: Vec<Vec<u8>> = collector.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|body| *body == bodies[0]));
}

#[test]
fn a_batch_that_keeps_failing_is_counted_as_dropped() {
    let collector = Collector::start(|_| (503, "overloaded".into()));
    let exporter = OtlpExporter::spawn(OtlpConfig {
        max_attempts: 3,
        ..config(&collector)
    })
    .unwrap();
    let spans = exporter.sender();
    for i in 0..5 {
        spans.send(&call("f", i));
    }
    let stats = exporter.finish();
    assert_eq!(
        stats,
        OtlpStats {
            queued: 5,
            dropped_send_failed: 5,
            requests: 3,
            failed_requests: 3,
            last_error: Some(format!(
                "POST {}/v1/traces: the collector answered 503: overloaded",
                collector.endpoint
            )),
            ..OtlpStats::default()
        }
    );
    assert_eq!(stats.dropped(), 5);
    assert_eq!(collector.requests().len(), 3);
}

#[test]
fn a_refusal_is_not_retried() {
    let collector = Collector::start(|_| (400, r#"{"message":"bad payload"}"#.into()));
    let exporter = OtlpExporter::spawn(config(&collector)).unwrap();
    exporter.sender().send(&call("f", 0));
    let stats = exporter.finish();
    assert_eq!(
        stats,
        OtlpStats {
            queued: 1,
            dropped_send_failed: 1,
            requests: 1,
            failed_requests: 1,
            last_error: Some(format!(
                r#"POST {}/v1/traces: the collector answered 400: {{"message":"bad payload"}}"#,
                collector.endpoint
            )),
            ..OtlpStats::default()
        }
    );
}

#[test]
fn a_partial_success_counts_the_rejected_spans() {
    let collector = Collector::start(|_| {
        (
            200,
            r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"too old"}}"#.into(),
        )
    });
    let exporter = OtlpExporter::spawn(config(&collector)).unwrap();
    let spans = exporter.sender();
    spans.send(&call("f", 0));
    spans.send(&call("f", 1));
    let stats = exporter.finish();
    assert_eq!(
        stats,
        OtlpStats {
            queued: 2,
            exported: 1,
            rejected: 1,
            requests: 1,
            ..OtlpStats::default()
        }
    );
    assert_eq!(stats.dropped(), 1);
}

#[test]
fn no_collector_is_counted_not_fatal() {
    // Nothing listens on port 1.
    let exporter = OtlpExporter::spawn(OtlpConfig {
        endpoint: "http://127.0.0.1:1/".into(),
        max_attempts: 2,
        retry_delay: Duration::from_millis(1),
        ..OtlpConfig::default()
    })
    .unwrap();
    exporter.sender().send(&call("f", 0));
    let stats = exporter.finish();
    let error = stats.last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("POST http://127.0.0.1:1/v1/traces: "),
        "{error}"
    );
    assert_eq!(
        stats,
        OtlpStats {
            queued: 1,
            dropped_send_failed: 1,
            requests: 2,
            failed_requests: 2,
            last_error: Some(error),
            ..OtlpStats::default()
        }
    );
}

/// A collector that does not answer must not hold up capture: once the queue is full, spans
/// are dropped (and counted) at once.
#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let (open_gate, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let collector = Collector::start(move |n| {
        if n == 0 {
            gate.lock().unwrap().recv().unwrap();
        }
        (200, "{}".into())
    });
    let exporter = OtlpExporter::spawn(OtlpConfig {
        max_batch: 1,
        queue_capacity: 4,
        ..config(&collector)
    })
    .unwrap();
    let spans = exporter.sender();
    assert!(spans.send(&call("f", 0)));
    // The exporter thread now waits for the collector's answer to the first span...
    let first = collector.received.recv().unwrap();
    // ...so four more fill the queue and the next two are dropped without waiting.
    let queued: Vec<bool> = (1..7).map(|i| spans.send(&call("f", i))).collect();
    assert_eq!(queued, [true, true, true, true, false, false]);
    open_gate.send(()).unwrap();
    let stats = exporter.finish();
    assert_eq!(
        stats,
        OtlpStats {
            queued: 5,
            exported: 5,
            dropped_queue_full: 2,
            requests: 5,
            ..OtlpStats::default()
        }
    );
    assert_eq!(
        first.parse().resource_spans[0].scope_spans[0].spans.len(),
        1
    );
    // Spans sent after finish are counted too.
    assert!(!spans.send(&call("f", 9)));
}
