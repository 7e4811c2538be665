//! The runtime behind `#[capture]`: where records of in-process calls go, and how Rust values
//! become [`Value`]s.
//!
//! Nothing is recorded until a sink is installed: [`init_sqlite`] / [`init`] (records pass
//! through the [`Pipeline`](crate::pipeline::Pipeline) built from [`crate::config::config`]
//! and are written by a [`BatchWriter`]), or [`set_sink`] for a sink of your own. Values map
//! as the eBPF decoder maps them: structs to objects in field order, sequences and tuples to
//! arrays, `Option` to `{"Some": v}` / `{"None": null}`, enums to `{"Variant": payload}`
//! (unit variants to `{"Variant": null}`), `Result::Err` makes the call's status `error`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::monitor::Monitor;
use crate::pipeline::{Outcome, Pipeline, Policy, PolicyHandle};
use crate::record::{CallRecord, Dependency, DependencyKind, Status, Value};
use crate::storage::{Storage, StorageError};
use crate::writer::{BatchWriter, WriterOptions, WriterStats};

static ENABLED: AtomicBool = AtomicBool::new(false);

type Sink = Box<dyn FnMut(CallRecord) + Send>;
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// True when calls are being recorded.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Sends every recorded call to `sink` (as recorded: no pipeline in between).
pub fn set_sink(sink: impl FnMut(CallRecord) + Send + 'static) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(sink));
    ENABLED.store(true, Ordering::Release);
}

/// Stops recording and drops the sink.
pub fn disable() {
    ENABLED.store(false, Ordering::Release);
    SINK.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// Records go through the pipeline (of the process-wide configuration) into `storage`;
/// recording stops and pending records are written when the guard is dropped or finished.
pub fn init(storage: Box<dyn Storage>) -> Result<CaptureGuard, crate::config::ConfigError> {
    // No kernel in between here: every sampling decision is the pipeline's.
    let config = crate::config::CaptureConfig {
        kernel_presample: false,
        ..crate::config::config()
    };
    let policy = PolicyHandle::new(Policy::from_config(&config)?);
    let name = std::path::Path::new(&binary().0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let monitor = Monitor::new(format!("pid {} ({name})", std::process::id()));
    let mut pipeline = Pipeline::new(policy.clone()).with_monitor(monitor.clone());
    let writer = BatchWriter::spawn(storage, WriterOptions::default());
    monitor.watch_writer(writer.stats_source());
    let sender = writer.sender();
    set_sink(move |record| {
        if let Outcome::Store(record) = pipeline.process(record) {
            let _ = sender.send(record);
        }
        // Limit alerts are stored as they are raised.
        sender.send_alerts(pipeline.take_alerts());
    });
    Ok(CaptureGuard {
        writer: Some(writer),
        policy,
        monitor,
    })
}

/// [`init`] with a SQLite file.
pub fn init_sqlite(path: &std::path::Path) -> Result<CaptureGuard, InitError> {
    let storage = crate::storage::sqlite::SqliteStorage::open(path)?;
    Ok(init(Box::new(storage))?)
}

/// Why recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Keeps recording on; see [`init`].
pub struct CaptureGuard {
    writer: Option<BatchWriter>,
    policy: PolicyHandle,
    monitor: Monitor,
}

impl CaptureGuard {
    /// The live policy: change sampling, limits or redaction while recording.
    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    /// What the pipeline has done so far (counts, limits, alerts, recent calls): for
    /// `chronicle::dashboard::Dashboard::live(guard.policy().clone(), guard.monitor().clone())`.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Stops recording and writes what is pending.
    pub fn finish(mut self) -> Result<WriterStats, StorageError> {
        disable();
        self.writer.take().expect("not finished yet").finish()
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            disable();
            let _ = writer.finish();
        }
    }
}

/// Records what the innermost captured call running on this thread did outside itself (a
/// query, a request, a file): `detail` as in the export format (`statement`, `params`;
/// `method`, `target`, `status`; `path`, `bytes`), started at `started`, taking `duration`.
/// Returns false, and records nothing, when no synchronous captured call is running on this
/// thread (async captured calls may move between threads and take none).
pub fn dependency(
    kind: DependencyKind,
    detail: Vec<(String, Value)>,
    started: Instant,
    duration: Option<std::time::Duration>,
) -> bool {
    if !is_enabled() {
        return false;
    }
    let Some((id, call_started)) = ACTIVE.with(|active| active.borrow().last().copied()) else {
        return false;
    };
    let dependency = Dependency {
        kind,
        offset_ns: nanos(started.saturating_duration_since(call_started)),
        duration_ns: duration.map(nanos),
        detail,
    };
    DEPENDENCIES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(id)
        .or_default()
        .push(dependency);
    ANY_DEPENDENCIES.store(true, Ordering::Release);
    true
}

/// Runs `f` and records it as a dependency of the innermost captured call on this thread
/// (see [`dependency`]).
pub fn track<T>(kind: DependencyKind, detail: Vec<(String, Value)>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    dependency(kind, detail, started, Some(started.elapsed()));
    result
}

fn nanos(d: std::time::Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

thread_local! {
    /// The synchronous captured calls running on this thread, innermost last.
    static ACTIVE: std::cell::RefCell<Vec<(u64, Instant)>> = const { std::cell::RefCell::new(Vec::new()) };
}
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);
/// Dependencies of running calls, by call; only touched once [`dependency`] has been used.
static DEPENDENCIES: Mutex<Option<HashMap<u64, Vec<Dependency>>>> = Mutex::new(None);
static ANY_DEPENDENCIES: AtomicBool = AtomicBool::new(false);

/// A call being recorded (made by `#[capture]`'s expansion).
#[doc(hidden)]
pub struct Call {
    name: &'static str,
    /// 0 for async calls, which are not on a thread's stack.
    id: u64,
    timestamp: SystemTime,
    started: Instant,
    args: Vec<(String, Value)>,
    unavailable: Vec<(String, String)>,
    finished: bool,
}

impl Call {
    /// Starts recording a call, or `None` when capture is off (then `args` is not run).
    #[inline]
    pub fn begin(
        name: &'static str,
        args: impl FnOnce() -> Vec<(&'static str, Result<Value, String>)>,
        skipped: &[&'static str],
    ) -> Option<Call> {
        let mut call = Self::begin_async(name, args, skipped)?;
        call.id = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        ACTIVE.with(|active| active.borrow_mut().push((call.id, call.started)));
        Some(call)
    }

    /// [`Self::begin`] for an async function, whose dependencies are not tracked.
    #[inline]
    pub fn begin_async(
        name: &'static str,
        args: impl FnOnce() -> Vec<(&'static str, Result<Value, String>)>,
        skipped: &[&'static str],
    ) -> Option<Call> {
        if !is_enabled() {
            return None;
        }
        let mut recorded = Vec::new();
        let mut unavailable: Vec<(String, String)> = skipped
            .iter()
            .map(|s| (s.to_string(), "skipped (#[capture(skip(..))])".to_owned()))
            .collect();
        for (n, v) in args() {
            match v {
                Ok(v) => recorded.push((n.to_owned(), v)),
                Err(e) => unavailable.push((n.to_owned(), format!("not serializable: {e}"))),
            }
        }
        Some(Call {
            name,
            id: 0,
            timestamp: SystemTime::now(),
            started: Instant::now(),
            args: recorded,
            unavailable,
            finished: false,
        })
    }

    /// Records the return value.
    pub fn finish<R: Serialize + ?Sized>(&mut self, result: &R, is_result: bool) {
        self.finished = true;
        let duration = self.started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let (ret, status) = match to_value(result) {
            Ok(v) => {
                let failed = is_result && matches!(&v, Value::Variant(n, _) if n == "Err");
                (Some(v), if failed { Status::Error } else { Status::Ok })
            }
            Err(e) => {
                self.unavailable
                    .push(("return".into(), format!("not serializable: {e}")));
                (None, Status::Ok)
            }
        };
        self.emit(Some(duration), ret, status);
    }

    fn emit(&mut self, duration_ns: Option<u64>, ret: Option<Value>, status: Status) {
        let mut dependencies = Vec::new();
        if self.id != 0 {
            let id = self.id;
            ACTIVE.with(|active| {
                let mut active = active.borrow_mut();
                if let Some(at) = active.iter().rposition(|(i, _)| *i == id) {
                    active.remove(at);
                }
            });
            if ANY_DEPENDENCIES.load(Ordering::Acquire)
                && let Some(map) = DEPENDENCIES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
            {
                dependencies = map.remove(&id).unwrap_or_default();
            }
        }
        let record = CallRecord {
            id: None,
            function: self.name.to_owned(),
            binary: binary().0.clone(),
            build_id: binary().1.clone(),
            pid: std::process::id(),
            tid: thread_id(),
            timestamp: self.timestamp,
            duration_ns,
            status,
            args: std::mem::take(&mut self.args),
            ret,
            unavailable: std::mem::take(&mut self.unavailable),
            after: Vec::new(),
            dependencies,
        };
        if let Some(sink) = SINK.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            sink(record);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let reason = if std::thread::panicking() {
            "the function panicked"
        } else {
            "the future was dropped before it completed"
        };
        self.unavailable.push(("return".into(), reason.into()));
        self.emit(None, None, Status::Unwound);
    }
}

/// The running executable and its GNU build ID (empty when it has none, or is not ELF).
fn binary() -> &'static (String, String) {
    static BINARY: OnceLock<(String, String)> = OnceLock::new();
    BINARY.get_or_init(|| {
        let Ok(exe) = std::env::current_exe() else {
            return (String::new(), String::new());
        };
        let build_id = chronicle_symbols::ElfFile::open(&exe)
            .ok()
            .and_then(|e| e.build_id().map(str::to_owned))
            .unwrap_or_default();
        (exe.display().to_string(), build_id)
    })
}

/// The kernel's thread id on Linux (`/proc/thread-self`), elsewhere a per-process counter.
fn thread_id() -> u32 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local! {
        static TID: u32 = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed));
    }
    TID.with(|t| *t)
}

/// A Rust value as a [`Value`] (see the module docs for the mapping).
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, String> {
    value.serialize(ValueSerializer).map_err(|e| e.0)
}

mod ser {
    use serde::ser::{self, Serialize};

    use crate::record::Value;

    #[derive(Debug)]
    pub struct Error(pub String);

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Error {}
    impl ser::Error for Error {
        fn custom<T: std::fmt::Display>(msg: T) -> Self {
            Error(msg.to_string())
        }
    }

    pub struct ValueSerializer;

    type R = Result<Value, Error>;

    fn variant(name: &str, payload: Value) -> Value {
        Value::Variant(name.to_owned(), Box::new(payload))
    }

    impl ser::Serializer for ValueSerializer {
        type Ok = Value;
        type Error = Error;
        type SerializeSeq = Seq;
        type SerializeTuple = Seq;
        type SerializeTupleStruct = Seq;
        type SerializeTupleVariant = Seq;
        type SerializeMap = Map;
        type SerializeStruct = Map;
        type SerializeStructVariant = Map;

        fn serialize_bool(self, v: bool) -> R {
            Ok(Value::Bool(v))
        }
        fn serialize_i8(self, v: i8) -> R {
            Ok(Value::Int(v.into()))
        }
        fn serialize_i16(self, v: i16) -> R {
            Ok(Value::Int(v.into()))
        }
        fn serialize_i32(self, v: i32) -> R {
            Ok(Value::Int(v.into()))
        }
        fn serialize_i64(self, v: i64) -> R {
            Ok(Value::Int(v))
        }
        fn serialize_i128(self, v: i128) -> R {
            i64::try_from(v)
                .map(Value::Int)
                .map_err(|_| Error(format!("128-bit value {v} does not fit in 64 bits")))
        }
        fn serialize_u8(self, v: u8) -> R {
            Ok(Value::UInt(v.into()))
        }
        fn serialize_u16(self, v: u16) -> R {
            Ok(Value::UInt(v.into()))
        }
        fn serialize_u32(self, v: u32) -> R {
            Ok(Value::UInt(v.into()))
        }
        fn serialize_u64(self, v: u64) -> R {
            Ok(Value::UInt(v))
        }
        fn serialize_u128(self, v: u128) -> R {
            u64::try_from(v)
                .map(Value::UInt)
                .map_err(|_| Error(format!("128-bit value {v} does not fit in 64 bits")))
        }
        fn serialize_f32(self, v: f32) -> R {
            Ok(Value::Float(v.into()))
        }
        fn serialize_f64(self, v: f64) -> R {
            Ok(Value::Float(v))
        }
        fn serialize_char(self, v: char) -> R {
            Ok(Value::Str(v.to_string()))
        }
        fn serialize_str(self, v: &str) -> R {
            Ok(Value::Str(v.to_owned()))
        }
        fn serialize_bytes(self, v: &[u8]) -> R {
            Ok(Value::Bytes(v.to_vec()))
        }
        fn serialize_none(self) -> R {
            Ok(variant("None", Value::Null))
        }
        fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
            Ok(variant("Some", v.serialize(self)?))
        }
        fn serialize_unit(self) -> R {
            Ok(Value::Null)
        }
        fn serialize_unit_struct(self, _: &'static str) -> R {
            Ok(Value::Null)
        }
        fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> R {
            Ok(variant(v, Value::Null))
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
            v.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            name: &'static str,
            v: &T,
        ) -> R {
            Ok(variant(name, v.serialize(self)?))
        }
        fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Error> {
            Ok(Seq::new(None, len.unwrap_or(0)))
        }
        fn serialize_tuple(self, len: usize) -> Result<Seq, Error> {
            Ok(Seq::new(None, len))
        }
        fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq, Error> {
            Ok(Seq::new(None, len))
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            name: &'static str,
            len: usize,
        ) -> Result<Seq, Error> {
            Ok(Seq::new(Some(name), len))
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Map, Error> {
            Ok(Map::new(None))
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Map, Error> {
            Ok(Map::new(None))
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            name: &'static str,
            _: usize,
        ) -> Result<Map, Error> {
            Ok(Map::new(Some(name)))
        }
    }

    pub struct Seq {
        variant: Option<&'static str>,
        items: Vec<Value>,
    }

    impl Seq {
        fn new(variant: Option<&'static str>, len: usize) -> Seq {
            Seq {
                variant,
                items: Vec::with_capacity(len.min(4096)),
            }
        }
        fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
            self.items.push(v.serialize(ValueSerializer)?);
            Ok(())
        }
        fn done(self) -> R {
            let array = Value::Array(self.items);
            Ok(match self.variant {
                Some(name) => variant(name, array),
                None => array,
            })
        }
    }

    macro_rules! seq_impl {
        ($($t:ident :: $m:ident),*) => {$(
            impl ser::$t for Seq {
                type Ok = Value;
                type Error = Error;
                fn $m<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                    self.push(v)
                }
                fn end(self) -> R {
                    self.done()
                }
            }
        )*};
    }
    seq_impl!(
        SerializeSeq::serialize_element,
        SerializeTuple::serialize_element,
        SerializeTupleStruct::serialize_field,
        SerializeTupleVariant::serialize_field
    );

    pub struct Map {
        variant: Option<&'static str>,
        fields: Vec<(String, Value)>,
        key: Option<String>,
    }

    impl Map {
        fn new(variant: Option<&'static str>) -> Map {
            Map {
                variant,
                fields: Vec::new(),
                key: None,
            }
        }
        fn done(self) -> R {
            let object = Value::Struct(self.fields);
            Ok(match self.variant {
                Some(name) => variant(name, object),
                None => object,
            })
        }
    }

    impl ser::SerializeMap for Map {
        type Ok = Value;
        type Error = Error;
        fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
            // String keys stay strings; other keys are written as their JSON.
            self.key = Some(match key.serialize(ValueSerializer)? {
                Value::Str(s) => s,
                other => other.to_json().to_string(),
            });
            Ok(())
        }
        fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
            let key = self.key.take().unwrap_or_default();
            self.fields.push((key, v.serialize(ValueSerializer)?));
            Ok(())
        }
        fn end(self) -> R {
            self.done()
        }
    }

    macro_rules! struct_impl {
        ($($t:ident),*) => {$(
            impl ser::$t for Map {
                type Ok = Value;
                type Error = Error;
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    v: &T,
                ) -> Result<(), Error> {
                    self.fields.push((key.to_owned(), v.serialize(ValueSerializer)?));
                    Ok(())
                }
                fn end(self) -> R {
                    self.done()
                }
            }
        )*};
    }
    struct_impl!(SerializeStruct, SerializeStructVariant);
}

use ser::ValueSerializer;
