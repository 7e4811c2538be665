//! OTLP span export: each captured call becomes one OpenTelemetry span, sent to a collector
//! over OTLP/HTTP with the JSON encoding, in batches, from a thread of its own.
//!
//! Feed it next to the storage writer. [`SpanSender::send`] never blocks: when the queue is
//! full the span is counted as dropped, because capture must not wait for a collector. Every
//! span that is not exported is counted ([`OtlpStats`]); nothing is lost silently.
//!
//! ```no_run
//! use chronicle::otlp::{OtlpConfig, OtlpExporter};
//! # fn records() -> Vec<chronicle::CallRecord> { vec![] }
//!
//! let exporter = OtlpExporter::spawn(OtlpConfig {
//!     endpoint: "http://127.0.0.1:4318".into(),
//!     service_name: "orders".into(),
//!     ..OtlpConfig::default()
//! })?;
//! let spans = exporter.sender(); // one clone per producer thread
//! for record in records() {
//!     spans.send(&record); // then hand `record` to the storage writer
//! }
//! let stats = exporter.finish(); // sends what is queued, then stops
//! if stats.dropped() > 0 {
//!     eprintln!("{} spans were not exported: {stats:?}", stats.dropped());
//! }
//! # Ok::<(), chronicle::otlp::OtlpError>(())
//! ```
//!
//! **A span** is named after the function; it starts at the call's timestamp and ends
//! `duration_ns` later (a call that never returned has no duration and ends where it
//! started). Its status is unset for `ok` and an error for `error` and `unwound`, with a
//! message. Attributes: `code.function`, `chronicle.binary`, `chronicle.build_id`,
//! `process.pid`, `thread.id`, `chronicle.status`, `chronicle.record_id` (once stored),
//! `chronicle.arg.<name>` and `chronicle.return` (the export format's JSON, as a string) and
//! `chronicle.unavailable.<name>` (why a value was not read). The resource carries
//! `service.name`.
//!
//! **Dependencies** (files, connections, HTTP, database statements the call made) are child
//! spans of the call's span: same trace, `parentSpanId` the call's, starting `offset_ns` after
//! it and lasting `duration_ns` (to the call's end when unknown). Kind `CLIENT` (`INTERNAL`
//! for files); named `SELECT`, `GET /stock/7`, `connect 127.0.0.1:80`, `file write`; with
//! `chronicle.dependency.kind`, `chronicle.detail.<name>` for every detail field (the export
//! format's JSON, as a string) and the semantic-convention names where one fits
//! (`db.system.name`, `db.query.text`, `http.request.method`, `url.path`,
//! `http.response.status_code`, `server.address`, `file.path`).
//!
//! **Ids.** Chronicle does not know yet which call called which, so every span is the root of
//! its own trace. Trace and span id are a hash of the call's identity (function, binary,
//! build ID, pid, tid, start, duration), not random: exporting the same call twice (say, live
//! and again from storage) gives the same ids, and a collector can tell it is one span.
//!
//! **Transport.** Plain `http://` only, to keep a TLS stack out of every program that links
//! Chronicle: for an `https://` collector, run an OpenTelemetry Collector (or any sidecar)
//! on the host and point the exporter at it. Failed requests are retried with exponential
//! backoff when the OTLP specification calls them retryable (no connection, timeouts, 429,
//! 502, 503, 504; `Retry-After` is honoured up to [`MAX_RETRY_AFTER`]); the spans of a batch
//! that still fails are counted in [`OtlpStats::dropped_send_failed`].

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value as Json;

use crate::record::{CallRecord, Dependency, DependencyKind, Status};

/// The longest `Retry-After` a collector can make the exporter wait.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// `SPAN_KIND_INTERNAL`: a call inside the application.
const SPAN_KIND_INTERNAL: u32 = 1;
/// `SPAN_KIND_CLIENT`: a request to something outside it.
const SPAN_KIND_CLIENT: u32 = 3;
/// `STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: u32 = 2;

/// Where and how spans are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (`http://127.0.0.1:4318`); spans are POSTed to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Send as soon as this many spans are waiting.
    pub max_batch: usize,
    /// Send at the latest this long after the oldest waiting span arrived.
    pub max_delay: Duration,
    /// Spans that may wait to be sent; beyond that they are dropped and counted.
    pub queue_capacity: usize,
    /// Attempts per batch, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled before each next one.
    pub retry_delay: Duration,
    /// Longest a single request may take, connecting included.
    pub timeout: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: "http://127.0.0.1:4318".into(),
            service_name: "chronicle".into(),
            max_batch: 512,
            max_delay: Duration::from_secs(1),
            queue_capacity: 8192,
            max_attempts: 4,
            retry_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(
        "OTLP endpoint `{endpoint}` is not an http:// URL; chronicle sends plain OTLP/HTTP, so \
         for https run an OpenTelemetry Collector on this host and point chronicle at it"
    )]
    UnsupportedEndpoint { endpoint: String },
    #[error("cannot start the OTLP exporter thread")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
}

/// What the exporter has done with the spans it was given.
///
/// Once [`OtlpExporter::finish`] has returned,
/// `queued == exported + rejected + dropped_send_failed`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtlpStats {
    /// Spans taken into the queue.
    pub queued: u64,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans the collector answered it rejected (an OTLP partial success).
    pub rejected: u64,
    /// Spans not queued because the queue was full (or the exporter had finished).
    pub dropped_queue_full: u64,
    /// Spans in batches that still failed after every attempt, or that the collector refused
    /// outright (a 4xx other than 429).
    pub dropped_send_failed: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Requests that failed (no connection, a timeout, an error status).
    pub failed_requests: u64,
    /// Why the last failed request failed, in the transport's or the collector's words.
    pub last_error: Option<String>,
}

impl OtlpStats {
    /// Spans that will never reach the collector, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.rejected + self.dropped_queue_full + self.dropped_send_failed
    }
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    exported: AtomicU64,
    rejected: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_send_failed: AtomicU64,
    requests: AtomicU64,
    failed_requests: AtomicU64,
}

/// What the exporter thread and the handles share.
struct Shared {
    counters: Counters,
    last_error: Mutex<Option<String>>,
    /// False once [`OtlpExporter::finish`] has begun. Senders queue under the read lock, so
    /// every span queued before `finish` is ahead of its stop message in the queue: none can
    /// slip in behind it and be lost uncounted.
    open: RwLock<bool>,
}

impl Shared {
    fn snapshot(&self) -> OtlpStats {
        let counters = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        OtlpStats {
            queued: get(&counters.queued),
            exported: get(&counters.exported),
            rejected: get(&counters.rejected),
            dropped_queue_full: get(&counters.dropped_queue_full),
            dropped_send_failed: get(&counters.dropped_send_failed),
            requests: get(&counters.requests),
            failed_requests: get(&counters.failed_requests),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn failed(&self, error: String) {
        self.counters
            .failed_requests
            .fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

enum Message {
    Record(Box<CallRecord>),
    Finish,
}

/// A thread that turns call records into spans and sends them to a collector.
pub struct OtlpExporter {
    sender: SyncSender<Message>,
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

/// Hands records to an [`OtlpExporter`]; clone one per producer.
#[derive(Clone)]
pub struct SpanSender {
    sender: SyncSender<Message>,
    shared: Arc<Shared>,
}

impl SpanSender {
    /// Queues a span for `record`. Never blocks: returns `false`, and counts the span in
    /// [`OtlpStats::dropped_queue_full`], when the queue is full or the exporter has finished.
    pub fn send(&self, record: &CallRecord) -> bool {
        let counters = &self.shared.counters;
        let open = self.shared.open.read().unwrap_or_else(|e| e.into_inner());
        let sent = if *open {
            self.sender
                .try_send(Message::Record(Box::new(record.clone())))
                .map_err(|(TrySendError::Full(_) | TrySendError::Disconnected(_))| ())
        } else {
            Err(())
        };
        match sent {
            Ok(()) => {
                counters.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(()) => {
                counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl OtlpExporter {
    /// Starts the exporter thread. Fails only for an endpoint it cannot send to; a collector
    /// that is not there (yet) shows in the counters.
    pub fn spawn(config: OtlpConfig) -> Result<OtlpExporter, OtlpError> {
        let Some(base) = config.endpoint.strip_prefix("http://") else {
            return Err(OtlpError::UnsupportedEndpoint {
                endpoint: config.endpoint,
            });
        };
        let url = format!("http://{}/v1/traces", base.trim_end_matches('/'));
        // At least one slot: with none, every send would wait for the thread to take it.
        let (sender, receiver) = mpsc::sync_channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            last_error: Mutex::new(None),
            open: RwLock::new(true),
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("chronicle-otlp".into())
                .spawn(move || {
                    Exporter {
                        agent,
                        url,
                        config,
                        shared,
                    }
                    .run(&receiver);
                })
                .map_err(|source| OtlpError::Spawn { source })?
        };
        Ok(OtlpExporter {
            sender,
            shared,
            thread,
        })
    }

    /// A handle for producers.
    pub fn sender(&self) -> SpanSender {
        SpanSender {
            sender: self.sender.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> OtlpStats {
        self.shared.snapshot()
    }

    /// Sends every span queued before this call (retrying as configured), stops the thread
    /// and returns the final counts. Spans sent by other [`SpanSender`]s from now on are
    /// counted as dropped.
    pub fn finish(self) -> OtlpStats {
        *self.shared.open.write().unwrap_or_else(|e| e.into_inner()) = false;
        // The thread may be gone (it panicked); joining tells, and the counts stand.
        let _ = self.sender.send(Message::Finish);
        drop(self.sender);
        let _ = self.thread.join();
        self.shared.snapshot()
    }
}

struct Exporter {
    agent: ureq::Agent,
    url: String,
    config: OtlpConfig,
    shared: Arc<Shared>,
}

/// How one request ended.
enum Outcome {
    /// 2xx; the collector may still have rejected some spans.
    Accepted { rejected: u64 },
    /// Worth trying again, after at least this long when the collector said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Trying again would fail the same way.
    Refused { error: String },
}

impl Exporter {
    fn run(&mut self, receiver: &Receiver<Message>) {
        let max_batch = self.config.max_batch.max(1);
        let mut batch = Vec::new();
        let mut deadline = Instant::now();
        loop {
            let message = if batch.is_empty() {
                receiver.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                receiver.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            };
            match message {
                Ok(Message::Record(record)) => {
                    if batch.is_empty() {
                        deadline = Instant::now() + self.config.max_delay;
                    }
                    batch.push(*record);
                    if batch.len() >= max_batch {
                        self.send(&mut batch);
                    }
                }
                Ok(Message::Finish) => {
                    loop {
                        match receiver.try_recv() {
                            Ok(Message::Record(record)) => {
                                batch.push(*record);
                                if batch.len() >= max_batch {
                                    self.send(&mut batch);
                                }
                            }
                            Ok(Message::Finish) => {}
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    self.send(&mut batch);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => self.send(&mut batch),
                Err(RecvTimeoutError::Disconnected) => {
                    self.send(&mut batch);
                    return;
                }
            }
        }
    }

    /// Sends `batch` (retrying as configured), counts the outcome and empties it.
    fn send(&mut self, batch: &mut Vec<CallRecord>) {
        if batch.is_empty() {
            return;
        }
        let counters = &self.shared.counters;
        let spans = batch.len() as u64;
        let body = export_request(batch, &self.config.service_name);
        batch.clear();
        let mut delay = self.config.retry_delay;
        for attempt in 1..=self.config.max_attempts.max(1) {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            match self.post(&body) {
                Outcome::Accepted { rejected } => {
                    let rejected = rejected.min(spans);
                    counters
                        .exported
                        .fetch_add(spans - rejected, Ordering::Relaxed);
                    counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                    return;
                }
                Outcome::Refused { error } => {
                    self.shared.failed(error);
                    break;
                }
                Outcome::Retry { error, after } => {
                    self.shared.failed(error);
                    if attempt < self.config.max_attempts {
                        std::thread::sleep(after.map_or(delay, |after| after.max(delay)));
                        delay = delay.saturating_mul(2);
                    }
                }
            }
        }
        counters
            .dropped_send_failed
            .fetch_add(spans, Ordering::Relaxed);
    }

    fn post(&self, body: &str) -> Outcome {
        let response = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(body);
        let mut response = match response {
            Ok(response) => response,
            Err(error) => {
                return Outcome::Retry {
                    error: format!("POST {}: {error}", self.url),
                    after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        // Collectors answer with a small JSON object; more than this is not worth reading.
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        match status {
            200..=299 => Outcome::Accepted {
                rejected: rejected_spans(&text),
            },
            429 | 502..=504 => Outcome::Retry {
                error: format!("POST {}: the collector answered {status}: {text}", self.url),
                after: retry_after,
            },
            _ => Outcome::Refused {
                error: format!("POST {}: the collector answered {status}: {text}", self.url),
            },
        }
    }
}

/// `partialSuccess.rejectedSpans` of an export response; an int64, which OTLP/JSON writes
/// as a string but a collector may write as a number.
fn rejected_spans(response: &str) -> u64 {
    let Ok(json) = serde_json::from_str::<Json>(response) else {
        return 0;
    };
    match &json["partialSuccess"]["rejectedSpans"] {
        Json::String(n) => n.parse().unwrap_or(0),
        n => n.as_u64().unwrap_or(0),
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `records`: one resource, one scope, one span
/// per record (see the module documentation for a span's fields). This is the body the
/// exporter POSTs.
pub fn export_request(records: &[CallRecord], service_name: &str) -> String {
    let request = wire::Request {
        resource_spans: [wire::ResourceSpans {
            resource: wire::Resource {
                attributes: [wire::KeyValue::string("service.name", service_name)],
            },
            scope_spans: [wire::ScopeSpans {
                scope: wire::Scope {
                    name: "chronicle",
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans: records.iter().flat_map(spans).collect(),
            }],
        }],
    };
    serde_json::to_string(&request).expect("OTLP wire types always serialize")
}

/// The call's span, then one child span per dependency.
fn spans(record: &CallRecord) -> Vec<wire::Span<'_>> {
    let call = span(record);
    let mut all = Vec::with_capacity(1 + record.dependencies.len());
    let parent_start: u64 = call.start_time_unix_nano.parse().unwrap_or(0);
    let parent_end: u64 = call.end_time_unix_nano.parse().unwrap_or(0);
    let parent_id = u64::from_str_radix(&call.span_id, 16).unwrap_or(1);
    for (i, d) in (1u64..).zip(&record.dependencies) {
        all.push(dependency_span(
            d,
            &call,
            parent_id,
            i,
            parent_start,
            parent_end,
        ));
    }
    all.insert(0, call);
    all
}

fn dependency_span<'a>(
    d: &'a Dependency,
    parent: &wire::Span<'_>,
    parent_id: u64,
    index: u64,
    parent_start: u64,
    parent_end: u64,
) -> wire::Span<'a> {
    use wire::KeyValue;
    let json = crate::export::dependency_json(d);
    let text = |name| crate::export::detail_text(&json, name);
    let name = crate::export::dependency_summary(&json);
    let start = parent_start.saturating_add(d.offset_ns);
    let end = d
        .duration_ns
        .map_or(parent_end.max(start), |ns| start.saturating_add(ns));
    let mut attributes = vec![KeyValue::string(
        "chronicle.dependency.kind",
        d.kind.as_str(),
    )];
    for (field, key) in [
        ("system", "db.system.name"),
        ("statement", "db.query.text"),
        ("method", "http.request.method"),
        ("target", "url.path"),
        ("address", "server.address"),
        ("path", "file.path"),
    ] {
        if let Some(value) = text(field) {
            attributes.push(KeyValue::string(key, value));
        }
    }
    if let Some(status) = text("status").and_then(|s| s.parse::<i64>().ok()) {
        attributes.push(KeyValue::int("http.response.status_code", status));
    }
    for (field, value) in &d.detail {
        attributes.push(KeyValue::string(
            format!("chronicle.detail.{field}"),
            value.to_json().to_string(),
        ));
    }
    let mut id = splitmix64(parent_id.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    if id == 0 {
        id = 1;
    }
    wire::Span {
        trace_id: parent.trace_id.clone(),
        span_id: hex(&id.to_be_bytes()),
        parent_span_id: Some(parent.span_id.clone()),
        name: name.into(),
        kind: if d.kind == DependencyKind::File {
            SPAN_KIND_INTERNAL
        } else {
            SPAN_KIND_CLIENT
        },
        start_time_unix_nano: start.to_string(),
        end_time_unix_nano: end.to_string(),
        attributes,
        status: None,
    }
}

fn span(record: &CallRecord) -> wire::Span<'_> {
    use wire::KeyValue;
    // OTLP times are unsigned; a call before 1970 (a clock gone wrong) starts at the epoch.
    let start = record
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let end = start.saturating_add(record.duration_ns.unwrap_or(0));
    let (trace_id, span_id) = ids(record, start);
    let mut attributes = Vec::with_capacity(
        8 + record.args.len() + record.unavailable.len() + usize::from(record.ret.is_some()),
    );
    attributes.extend([
        KeyValue::string("code.function", &record.function),
        KeyValue::string("chronicle.binary", &record.binary),
        KeyValue::string("chronicle.build_id", &record.build_id),
        KeyValue::int("process.pid", i64::from(record.pid)),
        KeyValue::int("thread.id", i64::from(record.tid)),
        KeyValue::string("chronicle.status", record.status.as_str()),
    ]);
    if let Some(id) = record.id {
        attributes.push(KeyValue::int("chronicle.record_id", id));
    }
    for (name, value) in &record.args {
        attributes.push(KeyValue::string(
            format!("chronicle.arg.{name}"),
            value.to_json().to_string(),
        ));
    }
    if let Some(ret) = &record.ret {
        attributes.push(KeyValue::string(
            "chronicle.return",
            ret.to_json().to_string(),
        ));
    }
    for (name, reason) in &record.unavailable {
        attributes.push(KeyValue::string(
            format!("chronicle.unavailable.{name}"),
            reason.as_str(),
        ));
    }
    let message = match record.status {
        Status::Ok => None,
        Status::Error => Some(match &record.ret {
            Some(ret) => format!("returned an error: {}", ret.to_json()),
            None => "returned an error".to_owned(),
        }),
        Status::Unwound => Some(
            match record.unavailable.iter().find(|(name, _)| name == "return") {
                Some((_, reason)) => format!("did not return: {reason}"),
                None => "did not return normally".to_owned(),
            },
        ),
    };
    wire::Span {
        trace_id: hex(&trace_id),
        span_id: hex(&span_id),
        parent_span_id: None,
        name: record.function.as_str().into(),
        kind: SPAN_KIND_INTERNAL,
        start_time_unix_nano: start.to_string(),
        end_time_unix_nano: end.to_string(),
        attributes,
        status: message.map(|message| wire::SpanStatus {
            code: STATUS_CODE_ERROR,
            message,
        }),
    }
}

/// The OTLP/JSON shapes the exporter writes, serialized straight from the records' fields:
/// a `serde_json::Value` tree per span cost most of the exporter's time.
mod wire {
    use std::borrow::Cow;

    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Request<'a> {
        pub(super) resource_spans: [ResourceSpans<'a>; 1],
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ResourceSpans<'a> {
        pub(super) resource: Resource<'a>,
        pub(super) scope_spans: [ScopeSpans<'a>; 1],
    }

    #[derive(Serialize)]
    pub(super) struct Resource<'a> {
        pub(super) attributes: [KeyValue<'a>; 1],
    }

    #[derive(Serialize)]
    pub(super) struct ScopeSpans<'a> {
        pub(super) scope: Scope,
        pub(super) spans: Vec<Span<'a>>,
    }

    #[derive(Serialize)]
    pub(super) struct Scope {
        pub(super) name: &'static str,
        pub(super) version: &'static str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Span<'a> {
        /// Hex, as OTLP/JSON writes ids (not base64, as protobuf's JSON mapping would).
        pub(super) trace_id: String,
        pub(super) span_id: String,
        /// Only for dependencies, under their call's span.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) parent_span_id: Option<String>,
        pub(super) name: Cow<'a, str>,
        pub(super) kind: u32,
        /// 64-bit integers are decimal strings in OTLP/JSON.
        pub(super) start_time_unix_nano: String,
        pub(super) end_time_unix_nano: String,
        pub(super) attributes: Vec<KeyValue<'a>>,
        /// Absent (unset) for calls that returned normally.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) status: Option<SpanStatus>,
    }

    #[derive(Serialize)]
    pub(super) struct SpanStatus {
        pub(super) code: u32,
        pub(super) message: String,
    }

    #[derive(Serialize)]
    pub(super) struct KeyValue<'a> {
        key: Cow<'a, str>,
        value: AnyValue<'a>,
    }

    impl<'a> KeyValue<'a> {
        pub(super) fn string(key: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
            KeyValue {
                key: key.into(),
                value: AnyValue::String(value.into()),
            }
        }

        pub(super) fn int(key: impl Into<Cow<'a, str>>, value: i64) -> Self {
            KeyValue {
                key: key.into(),
                value: AnyValue::Int(value.to_string()),
            }
        }
    }

    /// Serialized as `{"stringValue": ...}` or `{"intValue": "..."}`.
    #[derive(Serialize)]
    enum AnyValue<'a> {
        #[serde(rename = "stringValue")]
        String(Cow<'a, str>),
        #[serde(rename = "intValue")]
        Int(String),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Trace and span id from the call's identity: FNV-1a over its fields, spread into 24 bytes
/// by SplitMix64. Neither id is ever all zeros, which OTLP reserves for "invalid".
fn ids(record: &CallRecord, start: u64) -> ([u8; 16], [u8; 8]) {
    let mut hash = Fnv1a::default();
    for text in [&record.function, &record.binary, &record.build_id] {
        hash.write_usize(text.len());
        hash.write(text.as_bytes());
    }
    hash.write_u32(record.pid);
    hash.write_u32(record.tid);
    hash.write_u64(start);
    hash.write_u64(record.duration_ns.map_or(u64::MAX, |ns| ns));
    let seed = hash.finish();
    let word = |i: u64| splitmix64(seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let mut trace = [0; 16];
    trace[..8].copy_from_slice(&word(1).to_be_bytes());
    trace[8..].copy_from_slice(&word(2).to_be_bytes());
    let mut span = word(3).to_be_bytes();
    if trace == [0; 16] {
        trace[15] = 1;
    }
    if span == [0; 8] {
        span[7] = 1;
    }
    (trace, span)
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::story::record;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = record("f", 1, 10);
        let start = 1_795_721_402_000_000_000;
        assert_eq!(ids(&a, start), ids(&a.clone(), start));
        let mut b = a.clone();
        b.tid += 1;
        assert_ne!(ids(&a, start).0, ids(&b, start).0);
        assert_ne!(ids(&a, start).1, ids(&b, start).1);
        // The stored id is not part of the identity: live and stored exports agree.
        let mut stored = a.clone();
        stored.id = Some(7);
        assert_eq!(ids(&a, start), ids(&stored, start));
    }

    #[test]
    fn partial_success_in_either_integer_form() {
        assert_eq!(rejected_spans(""), 0);
        assert_eq!(rejected_spans("{}"), 0);
        assert_eq!(
            rejected_spans(r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"x"}}"#),
            3
        );
        assert_eq!(
            rejected_spans(r#"{"partialSuccess":{"rejectedSpans":2}}"#),
            2
        );
    }

    #[test]
    fn only_plain_http() {
        let error = OtlpExporter::spawn(OtlpConfig {
            endpoint: "https://collector.example:4318".into(),
            ..OtlpConfig::default()
        })
        .err()
        .unwrap();
        assert_eq!(
            error.to_string(),
            "OTLP endpoint `https://collector.example:4318` is not an http:// URL; chronicle \
             sends plain OTLP/HTTP, so for https run an OpenTelemetry Collector on this host \
             and point chronicle at it"
        );
    }
}
