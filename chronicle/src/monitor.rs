//! What a running capture is doing, shared between the thread that captures and whoever
//! watches it (the dashboard, the CLI's progress lines): per-function counts from the kernel
//! and from the pipeline, limit counters, alerts, the latest stored calls, latency
//! percentiles and a per-second history.
//!
//! The [`Pipeline`](crate::pipeline::Pipeline) keeps its limit counters here, so a limit
//! reset from another thread applies to the next record. One lock is taken per record; a
//! watcher takes it about once a second to copy a [`Snapshot`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::limits::{Alert, LimitPolicy, Limits};
use crate::pipeline::PipelineStats;
use crate::record::{CallRecord, Status};
use crate::writer::WriterStats;

/// How many stored calls the monitor keeps for watchers.
pub const RECENT_CALLS: usize = 50;
/// At most this many calls a second go into the recent list (copying every call at full
/// rate would cost more than it shows).
pub const RECENT_PER_SECOND: u32 = 20;
/// Durations kept per function for percentiles: the latest ones.
pub const LATENCY_WINDOW: usize = 1024;
/// Seconds of per-second history.
pub const HISTORY_SECONDS: usize = 300;
/// Alerts kept in memory (the oldest go first; stored alerts are kept by the store).
pub const MAX_ALERTS: usize = 1000;

/// Counts the agent reads from its kernel maps, per traced function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCounts {
    /// Entry probe hits.
    pub calls: u64,
    /// Left out by in-kernel sampling.
    pub sampled_out: u64,
    /// Lost because the ring buffer was full.
    pub dropped: u64,
    /// Values marked unreadable by the decoder.
    pub fetch_errors: u64,
}

/// A shared monitor; cloning shares it.
#[derive(Clone, Debug)]
pub struct Monitor {
    state: Arc<Mutex<State>>,
    /// Alerts wait in `unstored_alerts`: lets [`Monitor::take_alerts`] skip the lock.
    alerts_waiting: Arc<AtomicBool>,
}

type WriterProbe = Box<dyn Fn() -> WriterStats + Send>;

struct State {
    started: Instant,
    source: String,
    /// Calls are counted by the kernel (the agent reports them); otherwise each record the
    /// pipeline sees is a call.
    kernel_side: bool,
    functions: BTreeMap<String, Live>,
    pub(crate) limits: Limits,
    alerts: VecDeque<Alert>,
    alerts_total: u64,
    unstored_alerts: Vec<Alert>,
    recent: VecDeque<CallRecord>,
    recent_second: u64,
    recent_in_second: u32,
    history: VecDeque<Point>,
    writer: Option<WriterProbe>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("source", &self.source)
            .field("functions", &self.functions.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Live {
    pipeline: PipelineStats,
    kernel: KernelCounts,
    errors: u64,
    unwound: u64,
    durations: VecDeque<u64>,
}

/// One second of history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Unix seconds.
    pub t: u64,
    pub calls: u64,
    pub stored: u64,
    pub errors: u64,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new("")
    }
}

impl Monitor {
    /// A monitor whose snapshots name `source` (`pid 4242 (orders)`, a service name).
    pub fn new(source: impl Into<String>) -> Monitor {
        Monitor {
            state: Arc::new(Mutex::new(State {
                started: Instant::now(),
                source: source.into(),
                kernel_side: false,
                functions: BTreeMap::new(),
                limits: Limits::default(),
                alerts: VecDeque::new(),
                alerts_total: 0,
                unstored_alerts: Vec::new(),
                recent: VecDeque::new(),
                recent_second: 0,
                recent_in_second: 0,
                history: VecDeque::new(),
                writer: None,
            })),
            alerts_waiting: Arc::new(AtomicBool::new(false)),
        }
    }

    // A panic while the lock is held (there are none by design) leaves counts that are
    // still counts: carry on with them.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_source(&self, source: impl Into<String>) {
        self.lock().source = source.into();
    }

    /// From now on calls are the kernel's entry counts ([`Self::set_kernel_counts`]).
    pub fn count_calls_in_kernel(&self) {
        self.lock().kernel_side = true;
    }

    /// The agent's latest kernel counts for `function` (totals since attach).
    pub fn set_kernel_counts(&self, function: &str, counts: KernelCounts) {
        let mut state = self.lock();
        let previous = state.live(function).kernel.calls;
        state.live(function).kernel = counts;
        let now = unix_seconds();
        state.point(now).calls += counts.calls.saturating_sub(previous);
    }

    /// Where [`Snapshot::totals`] gets the writer's counts from.
    pub fn watch_writer(&self, probe: impl Fn() -> WriterStats + Send + 'static) {
        self.lock().writer = Some(Box::new(probe));
    }

    /// Starts a limit's count again: every limit, one function's, or one type key's.
    pub fn reset_limits(&self, function: Option<&str>, key: Option<&str>) {
        self.lock().limits.reset(function, key);
    }

    /// Alerts raised since the last call (to be stored). Cheap when there are none.
    pub fn take_alerts(&self) -> Vec<Alert> {
        if !self.alerts_waiting.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut self.lock().unstored_alerts)
    }

    /// The pipeline's counts per function.
    pub fn pipeline_stats(&self) -> BTreeMap<String, PipelineStats> {
        self.lock()
            .functions
            .iter()
            .map(|(name, live)| (name.clone(), live.pipeline.clone()))
            .collect()
    }

    /// Runs `f` with the state the pipeline updates (one lock per record).
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut Recorder<'_>) -> T) -> T {
        let mut state = self.lock();
        let result = f(&mut Recorder { state: &mut state });
        if !state.unstored_alerts.is_empty() {
            self.alerts_waiting.store(true, Ordering::Release);
        }
        result
    }

    /// A copy of everything, for watchers. `policy` gives the limits that apply.
    pub fn snapshot(&self, policy: &LimitPolicy) -> Snapshot {
        let state = self.lock();
        let writer = state.writer.as_ref().map(|probe| probe());
        let functions: Vec<FunctionSnapshot> = state
            .functions
            .iter()
            .map(|(name, live)| {
                let p = &live.pipeline;
                // Kernel counts are read every few hundred ms, records arrive all the time:
                // every record seen was a call, so the larger is the better lower bound.
                let calls = if state.kernel_side {
                    live.kernel.calls.max(p.seen)
                } else {
                    p.seen
                };
                let stored_count = state.limits.stored(name);
                FunctionSnapshot {
                    name: name.clone(),
                    calls,
                    seen: p.seen,
                    sampled_out: live.kernel.sampled_out + p.sampled_out,
                    limited: p.limited,
                    stored: p.stored,
                    dropped: live.kernel.dropped,
                    redacted: p.redacted,
                    errors: live.errors + live.unwound,
                    error_rate: ratio(live.errors + live.unwound, p.seen),
                    unwound: live.unwound,
                    fetch_errors: live.kernel.fetch_errors,
                    latency_ns: Latency::of(&live.durations),
                    limit: policy.per_function.map(|limit| FunctionLimit {
                        limit,
                        stored: stored_count,
                        action: policy.action.as_str(),
                        reached: stored_count >= limit,
                    }),
                }
            })
            .collect();
        let mut totals = Totals::default();
        for f in &functions {
            totals.calls += f.calls;
            totals.seen += f.seen;
            totals.sampled_out += f.sampled_out;
            totals.limited += f.limited;
            totals.stored += f.stored;
            totals.dropped += f.dropped;
            totals.errors += f.errors;
        }
        if let Some(w) = writer {
            totals.written = w.written;
            totals.write_failed = w.failed;
        }
        Snapshot {
            uptime_s: state.started.elapsed().as_secs_f64(),
            source: state.source.clone(),
            totals,
            functions,
            type_limits: state.limits.type_counts(policy),
            alerts: state.alerts.iter().cloned().collect(),
            alerts_total: state.alerts_total,
            recent: state.recent.iter().rev().cloned().collect(),
            history: state.history.iter().copied().collect(),
        }
    }
}

/// The pipeline's view of the state while it handles one record.
pub(crate) struct Recorder<'a> {
    state: &'a mut State,
}

impl Recorder<'_> {
    pub(crate) fn limits(&mut self) -> &mut Limits {
        &mut self.state.limits
    }

    pub(crate) fn stats(&mut self, function: &str) -> &mut PipelineStats {
        &mut self.state.live(function).pipeline
    }

    /// Counts a call that reached the pipeline (before any decision about it).
    pub(crate) fn seen(&mut self, record: &CallRecord) {
        let kernel_side = self.state.kernel_side;
        let live = self.state.live(&record.function);
        live.pipeline.seen += 1;
        match record.status {
            Status::Ok => {}
            Status::Error => live.errors += 1,
            Status::Unwound => live.unwound += 1,
        }
        if let Some(ns) = record.duration_ns {
            if live.durations.len() == LATENCY_WINDOW {
                live.durations.pop_front();
            }
            live.durations.push_back(ns);
        }
        let failed = record.status != Status::Ok;
        let point = self.state.point(unix_seconds());
        if !kernel_side {
            point.calls += 1;
        }
        point.errors += u64::from(failed);
    }

    /// Counts a stored call and keeps a copy for watchers (a few a second).
    pub(crate) fn stored(&mut self, record: &CallRecord) {
        let now = unix_seconds();
        self.state.live(&record.function).pipeline.stored += 1;
        self.state.point(now).stored += 1;
        let state = &mut *self.state;
        if state.recent_second != now {
            state.recent_second = now;
            state.recent_in_second = 0;
        }
        if state.recent_in_second < RECENT_PER_SECOND {
            state.recent_in_second += 1;
            if state.recent.len() == RECENT_CALLS {
                state.recent.pop_front();
            }
            state.recent.push_back(record.clone());
        }
    }

    pub(crate) fn alerts(&mut self, alerts: Vec<Alert>) {
        for alert in alerts {
            if self.state.alerts.len() == MAX_ALERTS {
                self.state.alerts.pop_front();
            }
            self.state.alerts_total += 1;
            self.state.alerts.push_back(alert.clone());
            self.state.unstored_alerts.push(alert);
        }
    }
}

impl State {
    fn live(&mut self, function: &str) -> &mut Live {
        // Looked up before inserting so that the common case allocates nothing.
        if !self.functions.contains_key(function) {
            self.functions.insert(function.to_owned(), Live::default());
        }
        self.functions.get_mut(function).expect("inserted above")
    }

    /// The history point of second `now`, starting new ones (and empty ones for quiet
    /// seconds) as time passes.
    fn point(&mut self, now: u64) -> &mut Point {
        let last = self.history.back().map(|p| p.t);
        match last {
            Some(t) if t >= now => {}
            _ => {
                let from = last.map_or(now, |t| {
                    (t + 1).max(now.saturating_sub(HISTORY_SECONDS as u64 - 1))
                });
                for t in from..=now {
                    if self.history.len() == HISTORY_SECONDS {
                        self.history.pop_front();
                    }
                    self.history.push_back(Point {
                        t,
                        ..Point::default()
                    });
                }
            }
        }
        self.history.back_mut().expect("a point was pushed")
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Everything a watcher shows, at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub uptime_s: f64,
    pub source: String,
    pub totals: Totals,
    pub functions: Vec<FunctionSnapshot>,
    pub type_limits: Vec<TypeCount>,
    /// Oldest first; at most [`MAX_ALERTS`].
    pub alerts: Vec<Alert>,
    /// Alerts raised since the start, including any no longer kept.
    pub alerts_total: u64,
    /// Stored calls, newest first.
    #[serde(skip)]
    pub recent: Vec<CallRecord>,
    /// Per second, oldest first.
    pub history: Vec<Point>,
}

/// Sums over all functions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub calls: u64,
    pub seen: u64,
    pub sampled_out: u64,
    pub limited: u64,
    pub stored: u64,
    pub dropped: u64,
    pub errors: u64,
    /// Records the storage writer has written.
    pub written: u64,
    /// Records in batches the writer could not write.
    pub write_failed: u64,
}

/// One function's counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunctionSnapshot {
    pub name: String,
    /// Entry probe hits (attach) or calls made (`#[capture]`).
    pub calls: u64,
    /// Records that reached the pipeline.
    pub seen: u64,
    /// Left out by sampling, in the kernel and in the pipeline.
    pub sampled_out: u64,
    /// Not stored because of a limit.
    pub limited: u64,
    pub stored: u64,
    /// Lost because the ring buffer was full.
    pub dropped: u64,
    /// Values replaced by redaction.
    pub redacted: u64,
    /// Calls that returned an error or unwound (of those seen).
    pub errors: u64,
    pub error_rate: f64,
    pub unwound: u64,
    pub fetch_errors: u64,
    /// Of the latest [`LATENCY_WINDOW`] calls seen; `None` without durations.
    pub latency_ns: Option<Latency>,
    /// The per-function limit, when one is set.
    pub limit: Option<FunctionLimit>,
}

/// Nearest-rank percentiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// How many durations these come from.
    pub samples: usize,
}

impl Latency {
    fn of(durations: &VecDeque<u64>) -> Option<Latency> {
        if durations.is_empty() {
            return None;
        }
        let mut sorted: Vec<u64> = durations.iter().copied().collect();
        sorted.sort_unstable();
        let rank = |p| nearest_rank(&sorted, p).expect("not empty");
        Some(Latency {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            samples: sorted.len(),
        })
    }
}

/// The nearest-rank `p` percentile (0 to 1) of sorted values, as the stores compute theirs;
/// `None` when there are none.
pub(crate) fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
}

/// A function's stored count against its limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FunctionLimit {
    pub limit: u64,
    pub stored: u64,
    pub action: &'static str,
    pub reached: bool,
}

/// Stored calls with one value at a limited field path, against the limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeCount {
    pub function: String,
    pub field_path: String,
    /// `field_path=value`.
    pub key: String,
    pub stored: u64,
    pub limit: u64,
    pub reached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_fills_quiet_seconds_and_keeps_five_minutes() {
        let monitor = Monitor::new("test");
        let mut state = monitor.lock();
        state.point(1000).calls += 1;
        state.point(1003).calls += 2;
        let points: Vec<(u64, u64)> = state.history.iter().map(|p| (p.t, p.calls)).collect();
        assert_eq!(points, [(1000, 1), (1001, 0), (1002, 0), (1003, 2)]);
        state.point(5000).stored += 1;
        assert_eq!(state.history.len(), HISTORY_SECONDS);
        assert_eq!(state.history.front().unwrap().t, 5000 - 299);
        assert_eq!(state.history.back().unwrap().stored, 1);
        // A clock that steps back adds to the newest second.
        state.point(4000).errors += 1;
        assert_eq!(state.history.back().unwrap().errors, 1);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let durations: VecDeque<u64> = (1..=100).rev().collect();
        assert_eq!(
            Latency::of(&durations),
            Some(Latency {
                p50: 50,
                p90: 90,
                p99: 99,
                max: 100,
                samples: 100
            })
        );
        assert_eq!(Latency::of(&VecDeque::new()), None);
    }
}
