//! The web dashboard: live capture counts, limits, alerts and recent calls, with controls
//! for sampling and limits, over a small JSON API and a server-sent event stream.
//!
//! One [`Dashboard`] serves either a running capture ([`Dashboard::live`]: the agent behind
//! `chronicle attach --dashboard`, or a `#[capture]`d service) or a database
//! ([`Dashboard::store`], `chronicle dashboard`, read-only). [`router`] gives an axum
//! [`Router`] to mount in an app of your own; [`serve`] runs one on a thread of its own.
//!
//! # API
//! Paths are relative to where the router is mounted.
//! - `GET /` — the page (HTML, CSS and JS embedded in the binary; no build step).
//! - `GET /api/stats` — everything the page shows; `GET /api/events` — the same object as
//!   server-sent `stats` events, about once a second.
//! - `GET|PUT /api/sampling` — sampling strategy, rates, `always_capture_*`, threshold.
//! - `GET|PUT /api/limits`, `POST /api/limits/reset` — limits and their counts.
//! - `GET /api/alerts` — limit alerts.
//!
//! `PUT` takes any subset of the keys `GET` returns; the change applies to the next record
//! (and, for the agent, to the in-kernel pre-filter at its next drain, within ~10 ms). Bad
//! values are refused with `400 {"error": "..."}` and nothing changes.
//!
//! # Security
//! With a token ([`Dashboard::with_token`]; [`serve`] makes one for any non-loopback
//! address) every request must carry it, as `Authorization: Bearer TOKEN` or `?token=TOKEN`
//! (the page passes it on to its API calls and its event stream). Without one, only
//! requests whose `Host` is a loopback name are answered, which also stops DNS rebinding.
//! Requests that change state must be `application/json` and must not come from another
//! origin (`Origin` differs from `Host`, or `Sec-Fetch-Site` is not `same-origin`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value as Json, json};

use crate::config::CaptureConfig;
use crate::monitor::Monitor;
use crate::pipeline::PolicyHandle;
use crate::storage::{RecordOrder, RecordQuery, Storage, StorageError};
use crate::time::rfc3339;

/// How often the event stream sends a new snapshot.
pub const PUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Calls listed as recent.
const RECENT: usize = 50;

/// The keys `GET /api/sampling` shows and `PUT` accepts.
pub const SAMPLING_KEYS: &[&str] = &[
    "sampling_strategy",
    "sampling_rate",
    "kernel_presample",
    "cluster_similarity_threshold",
    "min_rate",
    "max_rate",
    "error_boost_factor",
    "novelty_boost_factor",
    "always_capture_errors",
    "always_capture_slow",
    "latency_threshold_ms",
];

/// The keys `GET /api/limits` shows and `PUT` accepts.
pub const LIMIT_KEYS: &[&str] = &[
    "limit_per_function",
    "limit_action",
    "overflow_sample_rate",
    "type_limits",
];

/// What a dashboard shows and controls. Cloning shares it.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    token: Option<String>,
    started: Instant,
}

enum Source {
    Live {
        policy: PolicyHandle,
        monitor: Monitor,
    },
    Store {
        storage: Mutex<Box<dyn Storage>>,
        location: String,
        /// The last snapshot, when it was made and how long that took: the store is asked
        /// at most once per [`PUSH_INTERVAL`] however many pages watch, and a store whose
        /// answer takes long (millions of records) is asked less often.
        cache: Mutex<Option<(Instant, Duration, Json)>>,
    },
}

impl Dashboard {
    /// A dashboard of a running capture: its live policy and its pipeline's monitor.
    pub fn live(policy: PolicyHandle, monitor: Monitor) -> Dashboard {
        Dashboard::new(Source::Live { policy, monitor })
    }

    /// A read-only dashboard of what a store holds (`location` names it on the page).
    pub fn store(storage: Box<dyn Storage>, location: impl Into<String>) -> Dashboard {
        Dashboard::new(Source::Store {
            storage: Mutex::new(storage),
            location: location.into(),
            cache: Mutex::new(None),
        })
    }

    fn new(source: Source) -> Dashboard {
        Dashboard {
            inner: Arc::new(Inner {
                source,
                token: None,
                started: Instant::now(),
            }),
        }
    }

    /// Requires `token` on every request.
    pub fn with_token(self, token: impl Into<String>) -> Dashboard {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(_) => panic!("with_token is called on a dashboard before it is shared"),
        };
        Dashboard {
            inner: Arc::new(Inner {
                token: Some(token.into()),
                ..inner
            }),
        }
    }

    /// The token requests must carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.inner.token.as_deref()
    }

    /// What `GET /api/stats` returns.
    pub fn stats(&self) -> Result<Json, DashboardError> {
        match &self.inner.source {
            Source::Live { policy, monitor } => Ok(live_stats(
                &policy.get().config,
                monitor,
                self.inner.started,
            )),
            Source::Store {
                storage,
                location,
                cache,
            } => {
                let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((made, took, stats)) = cache.as_ref()
                    && made.elapsed() < PUSH_INTERVAL.max(*took * 5)
                {
                    return Ok(stats.clone());
                }
                let storage = storage.lock().unwrap_or_else(|e| e.into_inner());
                let started = Instant::now();
                let stats = store_stats(storage.as_ref(), location, self.inner.started)?;
                *cache = Some((Instant::now(), started.elapsed(), stats.clone()));
                Ok(stats)
            }
        }
    }

    /// What `GET /api/sampling` returns.
    pub fn sampling(&self) -> Result<Json, DashboardError> {
        Ok(pick(&self.config()?, SAMPLING_KEYS))
    }

    /// What `GET /api/limits` returns: the settings and the counts against them.
    pub fn limits(&self) -> Result<Json, DashboardError> {
        let Source::Live { policy, monitor } = &self.inner.source else {
            return Err(DashboardError::ReadOnly);
        };
        let policy = policy.get();
        let mut limits = pick(&policy.config, LIMIT_KEYS);
        let snapshot = monitor.snapshot(&policy.limits);
        let functions: Vec<Json> = snapshot
            .functions
            .iter()
            .map(|f| {
                json!({
                    "function": f.name,
                    "stored": f.limit.as_ref().map_or(f.stored, |l| l.stored),
                    "limit": policy.limits.per_function,
                    "reached": f.limit.as_ref().is_some_and(|l| l.reached),
                })
            })
            .collect();
        limits["counts"] = json!({"functions": functions, "types": snapshot.type_limits});
        Ok(limits)
    }

    /// Changes sampling settings (any subset of [`SAMPLING_KEYS`]); returns them all.
    pub fn update_sampling(&self, change: &Json) -> Result<Json, DashboardError> {
        self.update(change, SAMPLING_KEYS)?;
        self.sampling()
    }

    /// Changes limit settings (any subset of [`LIMIT_KEYS`]); returns [`Self::limits`].
    pub fn update_limits(&self, change: &Json) -> Result<Json, DashboardError> {
        self.update(change, LIMIT_KEYS)?;
        self.limits()
    }

    /// Starts limit counts again: all, one function's, or one type key of a function.
    pub fn reset_limits(
        &self,
        function: Option<&str>,
        key: Option<&str>,
    ) -> Result<Json, DashboardError> {
        let Source::Live { monitor, .. } = &self.inner.source else {
            return Err(DashboardError::ReadOnly);
        };
        if key.is_some() && function.is_none() {
            return Err(DashboardError::BadRequest(
                "a type key is reset per function: give \"function\" with \"key\"".into(),
            ));
        }
        monitor.reset_limits(function, key);
        let what = match (function, key) {
            (None, _) => "all limits".to_owned(),
            (Some(f), None) => format!("limits of {f}"),
            (Some(f), Some(k)) => format!("{k} of {f}"),
        };
        Ok(json!({ "reset": what }))
    }

    /// Limit alerts, oldest first.
    pub fn alerts(&self) -> Result<Json, DashboardError> {
        let alerts = match &self.inner.source {
            Source::Live { policy, monitor } => monitor.snapshot(&policy.get().limits).alerts,
            Source::Store { storage, .. } => {
                storage.lock().unwrap_or_else(|e| e.into_inner()).alerts()?
            }
        };
        Ok(json!({ "alerts": alerts }))
    }

    fn config(&self) -> Result<CaptureConfig, DashboardError> {
        match &self.inner.source {
            Source::Live { policy, .. } => Ok(policy.get().config.clone()),
            Source::Store { .. } => Err(DashboardError::ReadOnly),
        }
    }

    fn update(&self, change: &Json, allowed: &[&str]) -> Result<(), DashboardError> {
        let Source::Live { policy, .. } = &self.inner.source else {
            return Err(DashboardError::ReadOnly);
        };
        let Json::Object(change) = change else {
            return Err(DashboardError::BadRequest(
                "send a JSON object of the settings to change".into(),
            ));
        };
        let current = policy.get().config.clone();
        let mut merged = serde_json::to_value(&current).expect("a config serializes");
        for (key, value) in change {
            if !allowed.contains(&key.as_str()) {
                return Err(DashboardError::BadRequest(format!(
                    "unknown setting `{key}`; this endpoint takes {}",
                    allowed.join(", ")
                )));
            }
            // One key at a time, so that a wrong type names its field.
            let mut one = serde_json::to_value(&current).expect("a config serializes");
            one[key] = value.clone();
            if let Err(e) = serde_json::from_value::<CaptureConfig>(one) {
                return Err(DashboardError::BadRequest(format!("{key}: {e}")));
            }
            merged[key] = value.clone();
        }
        let config: CaptureConfig = serde_json::from_value(merged)
            .map_err(|e| DashboardError::BadRequest(e.to_string()))?;
        policy.update(|c| *c = config)?;
        Ok(())
    }
}

/// Why a dashboard request failed.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "this dashboard shows a database and cannot change capture settings; start `chronicle attach --dashboard ADDR` to change sampling and limits while tracing"
    )]
    ReadOnly,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = match self {
            DashboardError::ReadOnly => StatusCode::CONFLICT,
            DashboardError::BadRequest(_) | DashboardError::Config(_) => StatusCode::BAD_REQUEST,
            DashboardError::Storage(_) | DashboardError::Bind { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, axum::Json(json!({ "error": self.to_string() }))).into_response()
    }
}

fn pick(config: &CaptureConfig, keys: &[&str]) -> Json {
    let all = serde_json::to_value(config).expect("a config serializes");
    let picked: Map<String, Json> = keys
        .iter()
        .map(|k| ((*k).to_owned(), all[*k].clone()))
        .collect();
    Json::Object(picked)
}

fn live_stats(config: &CaptureConfig, monitor: &Monitor, started: Instant) -> Json {
    let policy = crate::limits::LimitPolicy::from_config(config);
    let snapshot = monitor.snapshot(&policy);
    let recent: Vec<Json> = snapshot.recent.iter().map(recent_call).collect();
    json!({
        "mode": "live",
        "source": snapshot.source,
        "generated_at": rfc3339(SystemTime::now()),
        "uptime_s": started.elapsed().as_secs_f64().max(snapshot.uptime_s),
        "controls": true,
        "totals": snapshot.totals,
        "functions": snapshot.functions,
        "type_limits": snapshot.type_limits,
        "alerts": snapshot.alerts,
        "alerts_total": snapshot.alerts_total,
        "recent": recent,
        "series": {"interval_s": 1, "points": snapshot.history},
    })
}

fn recent_call(r: &crate::CallRecord) -> Json {
    let full = crate::export::record_json(r);
    json!({
        "id": r.id,
        "function": r.function,
        "timestamp": full["timestamp"],
        "duration_ns": r.duration_ns,
        "status": r.status.as_str(),
        "args": full["args"],
        "return": full["return"],
        "unavailable": full["unavailable"],
    })
}

/// The same shape as [`live_stats`], from what a store holds; counts only a live capture
/// knows (sampled out, limited, dropped) are `null`.
fn store_stats(
    storage: &dyn Storage,
    location: &str,
    started: Instant,
) -> Result<Json, StorageError> {
    let summaries = storage.functions()?;
    let mut totals = json!({"calls": 0, "seen": 0, "sampled_out": null, "limited": null,
        "stored": 0, "dropped": null, "errors": 0, "written": null, "write_failed": null});
    let mut sum = |key: &str, n: u64| {
        totals[key] = json!(totals[key].as_u64().unwrap_or(0) + n);
    };
    let mut functions = Vec::new();
    for f in &summaries {
        let errors = f.errors + f.unwound;
        for key in ["calls", "seen", "stored"] {
            sum(key, f.calls);
        }
        sum("errors", errors);
        let latency = f.p50_ns.map(|p50| {
            json!({"p50": p50, "p90": null, "p99": f.p99_ns, "max": null, "samples": f.calls})
        });
        functions.push(json!({
            "name": f.function, "calls": f.calls, "seen": f.calls, "sampled_out": null,
            "limited": null, "stored": f.calls, "dropped": null, "redacted": null,
            "errors": errors, "error_rate": if f.calls == 0 { 0.0 } else { errors as f64 / f.calls as f64 },
            "unwound": f.unwound, "fetch_errors": null, "latency_ns": latency, "limit": null,
            "last_seen": rfc3339(f.last_seen),
        }));
    }
    let recent: Vec<Json> = storage
        .records(&RecordQuery {
            order: RecordOrder::Newest,
            limit: Some(RECENT),
            ..RecordQuery::default()
        })?
        .iter()
        .map(recent_call)
        .collect();
    let now = SystemTime::now();
    let since = now - Duration::from_secs(crate::monitor::HISTORY_SECONDS as u64 - 1);
    let window = RecordQuery {
        since: Some(since),
        ..RecordQuery::default()
    };
    let second = Duration::from_secs(1);
    let calls = storage.call_volume(&window, second)?;
    let mut errors = std::collections::HashMap::new();
    for status in [crate::Status::Error, crate::Status::Unwound] {
        let query = RecordQuery {
            status: Some(status),
            ..window.clone()
        };
        for (t, n) in storage.call_volume(&query, second)? {
            *errors.entry(t).or_insert(0u64) += n;
        }
    }
    let points: Vec<Json> = calls
        .iter()
        .map(|(t, n)| {
            let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            json!({"t": secs, "calls": n, "stored": n, "errors": errors.get(t).copied().unwrap_or(0)})
        })
        .collect();
    let alerts = storage.alerts()?;
    Ok(json!({
        "mode": "store",
        "source": location,
        "generated_at": rfc3339(now),
        "uptime_s": started.elapsed().as_secs_f64(),
        "controls": false,
        "totals": totals,
        "functions": functions,
        "type_limits": [],
        "alerts_total": alerts.len(),
        "alerts": alerts,
        "recent": recent,
        "series": {"interval_s": 1, "points": points},
    }))
}

const INDEX_HTML: &str = include_str!("dashboard/assets/index.html");
const APP_CSS: &str = include_str!("dashboard/assets/app.css");
const APP_JS: &str = include_str!("dashboard/assets/app.js");

/// An axum router serving `dashboard`; mount it with `Router::nest("/chronicle", ..)` and
/// the page is at `/chronicle`.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use chronicle::dashboard::{Dashboard, router};
///
/// let recording = chronicle::capture::init_sqlite("chronicle.db".as_ref())?;
/// let board = Dashboard::live(recording.policy().clone(), recording.monitor().clone());
/// let app: axum::Router = axum::Router::new().nest("/chronicle", router(board));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }),
        )
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route("/api/stats", get(stats))
        .route("/api/events", get(events))
        .route("/api/sampling", get(sampling).put(put_sampling))
        .route("/api/limits", get(limits).put(put_limits))
        .route("/api/limits/reset", post(reset_limits))
        .route("/api/alerts", get(alerts))
        .layer(middleware::from_fn_with_state(dashboard.clone(), guard))
        .with_state(dashboard)
}

async fn page(OriginalUri(uri): OriginalUri) -> Response {
    // The page's links are relative (`app.js`, `api/stats`) and resolve against the path it
    // was served at: `/chronicle` in an app that nests the router there, `/` on its own.
    let mut base = uri.path().to_owned();
    if !base.ends_with('/') {
        base.push('/');
    }
    let base = format!("<base href=\"{}\">", escape_attribute(&base));
    let html = INDEX_HTML.replacen("<head>", &format!("<head>\n{base}"), 1);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

fn escape_attribute(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

async fn stats(State(d): State<Dashboard>) -> Result<axum::Json<Json>, DashboardError> {
    blocking(move || d.stats()).await.map(axum::Json)
}

async fn events(
    State(d): State<Dashboard>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold((d, true), |(d, first)| async move {
        if !first {
            tokio::time::sleep(PUSH_INTERVAL).await;
        }
        let d2 = d.clone();
        let event = match blocking(move || d2.stats()).await {
            Ok(stats) => Event::default().event("stats").data(stats.to_string()),
            Err(e) => Event::default()
                .event("failure")
                .data(json!({"error": e.to_string()}).to_string()),
        };
        Some((Ok(event), (d, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn sampling(State(d): State<Dashboard>) -> Result<axum::Json<Json>, DashboardError> {
    d.sampling().map(axum::Json)
}

async fn put_sampling(
    State(d): State<Dashboard>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Json>, DashboardError> {
    d.update_sampling(&parse(&body)?).map(axum::Json)
}

async fn limits(State(d): State<Dashboard>) -> Result<axum::Json<Json>, DashboardError> {
    d.limits().map(axum::Json)
}

async fn put_limits(
    State(d): State<Dashboard>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Json>, DashboardError> {
    d.update_limits(&parse(&body)?).map(axum::Json)
}

async fn reset_limits(
    State(d): State<Dashboard>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Json>, DashboardError> {
    let body = if body.is_empty() {
        json!({})
    } else {
        parse(&body)?
    };
    let field = |name: &str| -> Result<Option<String>, DashboardError> {
        match &body[name] {
            Json::Null => Ok(None),
            Json::String(s) => Ok(Some(s.clone())),
            other => Err(DashboardError::BadRequest(format!(
                "{name} must be a string, got {other}"
            ))),
        }
    };
    let (function, key) = (field("function")?, field("key")?);
    d.reset_limits(function.as_deref(), key.as_deref())
        .map(axum::Json)
}

async fn alerts(State(d): State<Dashboard>) -> Result<axum::Json<Json>, DashboardError> {
    blocking(move || d.alerts()).await.map(axum::Json)
}

fn parse(body: &[u8]) -> Result<Json, DashboardError> {
    serde_json::from_slice(body)
        .map_err(|e| DashboardError::BadRequest(format!("the body is not JSON: {e}")))
}

/// Store queries block; they run off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DashboardError> + Send + 'static,
) -> Result<T, DashboardError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Token, host and origin checks for every request.
async fn guard(State(d): State<Dashboard>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let refused = match check(&d, request.method(), request.uri(), request.headers()) {
        Ok(()) => check_peer_user(&d, peer).err(),
        Err(refusal) => Some(refusal),
    };
    let mut response = match refused {
        None => next.run(request).await,
        Some(refusal) => refusal,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        "nosniff".parse().expect("valid"),
    );
    headers.insert(header::X_FRAME_OPTIONS, "DENY".parse().expect("valid"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
            .parse()
            .expect("valid"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        "no-referrer".parse().expect("valid"),
    );
    response
}

/// Without a token a loopback dashboard is its user's alone: a connection from another local
/// user (its socket's owner in `/proc/net/tcp*`) is refused. The user is the one running
/// Chronicle, and under sudo the one who ran sudo (whose browser connects), and root.
/// Connections whose owner cannot be found (another network namespace) are refused too.
/// Elsewhere than Linux the loopback address and the `Host` check are what there is.
#[cfg(not(target_os = "linux"))]
#[allow(clippy::result_large_err)]
fn check_peer_user(_: &Dashboard, _: Option<SocketAddr>) -> Result<(), Response> {
    Ok(())
}

#[cfg(target_os = "linux")]
#[allow(clippy::result_large_err)]
fn check_peer_user(d: &Dashboard, peer: Option<SocketAddr>) -> Result<(), Response> {
    let (Some(peer), None) = (peer, d.token()) else {
        return Ok(());
    };
    let owner = socket_owner(peer);
    if owner.is_some_and(|uid| allowed_users().contains(&uid)) {
        return Ok(());
    }
    Err(refuse(
        StatusCode::FORBIDDEN,
        &match owner {
            Some(uid) => format!(
                "this dashboard has no token and answers only the user who started it; user \
                 {uid} asked: start it with a token (--dashboard-token) to share it"
            ),
            None => "this dashboard has no token and answers only the user who started it, \
                     and the connection's user could not be told: start it with a token \
                     (--dashboard-token)"
                .to_owned(),
        },
    ))
}

/// Who may use a dashboard without a token: this process's user, root, and `SUDO_UID`.
#[cfg(target_os = "linux")]
fn allowed_users() -> Vec<u32> {
    // SAFETY: geteuid has no preconditions.
    let mut users = vec![unsafe { geteuid() }, 0];
    if let Some(uid) = std::env::var("SUDO_UID").ok().and_then(|u| u.parse().ok()) {
        users.push(uid);
    }
    users
}

#[cfg(target_os = "linux")]
unsafe extern "C" {
    fn geteuid() -> u32;
}

/// The user owning the local TCP socket bound to `addr` (a loopback client's end), from the
/// kernel's socket tables.
#[cfg(target_os = "linux")]
fn socket_owner(addr: SocketAddr) -> Option<u32> {
    let (table, wanted) = match addr {
        SocketAddr::V4(a) => (
            "/proc/net/tcp",
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            ),
        ),
        SocketAddr::V6(a) => {
            let words: String = a
                .ip()
                .octets()
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
                .collect();
            ("/proc/net/tcp6", format!("{words}:{:04X}", a.port()))
        }
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&wanted.as_str()))
            .then(|| fields.get(7)?.parse().ok())
            .flatten()
    })
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

#[allow(clippy::result_large_err)]
fn check(
    d: &Dashboard,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // The page's own script and style carry nothing secret, and a browser fetches them
    // without the token.
    let asset = method == Method::GET && matches!(uri.path(), "/app.css" | "/app.js");
    match d.token() {
        Some(_) if asset => {}
        Some(token) => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "));
            let query = uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|pair| pair.strip_prefix("token="))
                    .map(percent_decode)
            });
            let given = bearer.map(str::to_owned).or(query).unwrap_or_default();
            if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "this dashboard needs its token: open the URL chronicle printed at start (it ends in ?token=...) or send `Authorization: Bearer TOKEN`",
                ));
            }
        }
        None if !is_loopback_host(host) => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "this dashboard has no token and answers only on a loopback address (127.0.0.1, localhost, [::1]); set a token to serve it elsewhere",
            ));
        }
        None => {}
    }
    if method != Method::GET && method != Method::HEAD {
        let site = headers.get("sec-fetch-site").and_then(|h| h.to_str().ok());
        let origin_host = headers
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok())
            .map(|o| o.split_once("://").map_or(o, |(_, rest)| rest));
        let cross = matches!(site, Some(s) if s != "same-origin" && s != "none")
            || origin_host.is_some_and(|o| !o.eq_ignore_ascii_case(host));
        if cross {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "cross-site request refused: change settings from the dashboard's own page or with a same-origin client",
            ));
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the change as JSON with `Content-Type: application/json`",
            ));
        }
    }
    Ok(())
}

/// Decodes a query parameter (`%XX` escapes, `+` for a space).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_loopback_host(host: &str) -> bool {
    // `name:port`, `[v6]:port` or a bare name.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token: 128 bits from the system's random source, hex.
pub fn new_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_err() {
        // No /dev/urandom (not Linux): the standard library's per-process random hash keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A dashboard served on a thread of its own; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    token: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (the port is chosen when `serve` was given port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token requests must carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The page's URL, with the token when there is one.
    pub fn url(&self) -> String {
        match &self.token {
            Some(token) => format!("http://{}/?token={token}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Serves `dashboard` on `addr`. An address that is not loopback gets a new token unless
/// the dashboard has one.
pub fn serve(addr: SocketAddr, dashboard: Dashboard) -> Result<Server, DashboardError> {
    let dashboard = if dashboard.token().is_none() && !addr.ip().is_loopback() {
        dashboard.with_token(new_token())
    } else {
        dashboard
    };
    let token = dashboard.token().map(str::to_owned);
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| DashboardError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| DashboardError::Bind { addr, source })?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(dashboard);
    let thread = std::thread::Builder::new()
        .name("chronicle-dashboard".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("chronicle: dashboard: {e}");
                        return;
                    }
                };
                // Not a graceful shutdown: event streams never end by themselves.
                tokio::select! {
                    served = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    ) => {
                        if let Err(e) = served {
                            eprintln!("chronicle: dashboard stopped: {e}");
                        }
                    }
                    _ = stopped => {}
                }
            });
            runtime.shutdown_background();
        })
        .expect("spawn the dashboard thread");
    Ok(Server {
        addr,
        token,
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1:8787",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "127.3.2.1",
            "app.localhost:9",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "10.0.0.1:8787",
            "evil.example:8787",
            "[::2]:80",
            "localhost.evil.example",
            "0.0.0.0:1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(percent_decode("a%2Bb%2f+c%zz%4"), "a+b/ c%zz%4");
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), b.as_bytes()));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
