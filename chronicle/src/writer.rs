//! Writes records to storage on a thread of its own, in batches, so that whoever produces
//! records (the agent's event loop, `#[capture]`d code) never waits for a disk.
//!
//! A batch is written when it reaches [`WriterOptions::max_batch`] records or when its oldest
//! record has waited [`WriterOptions::max_delay`], whichever comes first.
//!
//! A batch the database refuses for a reason that may pass (a full disk, a server that went
//! away: [`retryable`]) waits in memory, behind the batches already waiting, and is tried
//! again every [`WriterOptions::retry_every`] and at [`BatchWriter::finish`]; at most [`BACKLOG_BOUND`]
//! records wait, and a batch that does not fit is lost and counted. A batch refused for what
//! it holds (a value the store cannot take) is lost and counted at once. Lost batches keep
//! their first error for [`BatchWriter::finish`].

use std::collections::VecDeque;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::limits::Alert;
use crate::record::CallRecord;
use crate::storage::{Storage, StorageError};

/// How many records may wait in the channel before senders block.
///
/// Two batches: enough that a slow fsync does not stall the producer; bounded, so that a
/// store that cannot keep up makes the producer slow down (and the kernel ring buffer count
/// drops) instead of this process growing without limit (bursts belong in the ring buffer,
/// which holds raw events at a fraction of a record's size). Blocking is the right answer when
/// it is full: losing records here would lose them silently.
pub const CHANNEL_BOUND: usize = 8_192;

/// Most records that wait in memory while the store refuses writes (eight batches).
pub const BACKLOG_BOUND: usize = 8 * 4096;

/// Whether a failed write may be tried again: the database's own errors (a full disk, a
/// lock, a server that went away) may pass; a record the store cannot hold will not; and a
/// PostgreSQL batch whose commit lost its connection may have been stored already.
pub fn retryable(error: &StorageError) -> bool {
    use crate::storage::postgres::{COMMITTING, PostgresError};
    match error {
        StorageError::Sqlite { .. } => true,
        StorageError::Postgres(PostgresError::Query { operation, .. }) => *operation != COMMITTING,
        StorageError::Postgres(PostgresError::Connect { .. }) => true,
        _ => false,
    }
}

/// When the writer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Write as soon as this many records are waiting.
    pub max_batch: usize,
    /// Write at the latest this long after the oldest waiting record arrived.
    pub max_delay: Duration,
    /// Try batches the store refused again this often.
    pub retry_every: Duration,
    /// At [`BatchWriter::finish`], keep trying refused batches this long before counting
    /// them lost.
    pub finish_grace: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch: 4096,
            max_delay: Duration::from_millis(100),
            retry_every: Duration::from_secs(1),
            finish_grace: Duration::from_secs(10),
        }
    }
}

/// What the writer has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records accepted by [`RecordSender::send`].
    pub received: u64,
    /// Records stored.
    pub written: u64,
    /// Batches stored.
    pub batches: u64,
    /// Batches of records, or of alerts, that could not be stored.
    pub write_errors: u64,
    /// Records in those batches.
    pub failed: u64,
    /// Limit alerts stored.
    pub alerts: u64,
    /// Writes the store refused for a reason that may pass (each failed attempt).
    pub retried: u64,
    /// Records waiting in memory for the store to take them again.
    pub waiting: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    write_errors: AtomicU64,
    failed: AtomicU64,
    alerts: AtomicU64,
    retried: AtomicU64,
    waiting: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        WriterStats {
            received: self.received.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            alerts: self.alerts.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }
}

enum Message {
    /// Boxed because the channel allocates all its slots up front: [`CHANNEL_BOUND`] slots
    /// of a pointer each, rather than of a whole record.
    Record(Box<CallRecord>),
    /// Limit alerts: written at once, in a transaction of their own.
    Alerts(Vec<Alert>),
    /// Write what has arrived and stop.
    Finish,
}

/// A thread that writes records to a [`Storage`] in batches.
pub struct BatchWriter {
    sender: SyncSender<Message>,
    counters: Arc<Counters>,
    first_error: Arc<Mutex<Option<StorageError>>>,
    thread: JoinHandle<()>,
}

/// Hands records to a [`BatchWriter`]; clone one per producer.
#[derive(Clone)]
pub struct RecordSender {
    sender: SyncSender<Message>,
    counters: Arc<Counters>,
}

/// The writer has finished; the record was not taken.
#[derive(Debug, thiserror::Error)]
#[error("the storage writer has finished; the record was not stored")]
pub struct WriterClosed(pub Box<CallRecord>);

impl RecordSender {
    /// Queues `record` for writing. Returns at once unless [`CHANNEL_BOUND`] records are
    /// already waiting, in which case it blocks until the writer catches up.
    pub fn send(&self, record: CallRecord) -> Result<(), WriterClosed> {
        // Counted before sending so that `received` is never behind `written`.
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.sender
            .send(Message::Record(Box::new(record)))
            .map_err(|mpsc::SendError(message)| {
                self.counters.received.fetch_sub(1, Ordering::Relaxed);
                match message {
                    Message::Record(record) => WriterClosed(record),
                    Message::Alerts(_) | Message::Finish => {
                        unreachable!("this sends a record")
                    }
                }
            })
    }

    /// Queues limit alerts for writing (next to the records, by the same connection).
    /// Returns false when the writer has finished.
    pub fn send_alerts(&self, alerts: Vec<Alert>) -> bool {
        alerts.is_empty() || self.sender.send(Message::Alerts(alerts)).is_ok()
    }
}

impl BatchWriter {
    /// Starts the writer thread, which owns `storage` from now on.
    pub fn spawn(storage: Box<dyn Storage>, opts: WriterOptions) -> BatchWriter {
        let (sender, receiver) = mpsc::sync_channel(CHANNEL_BOUND);
        let counters = Arc::new(Counters::default());
        let first_error = Arc::new(Mutex::new(None));
        let thread = {
            let counters = Arc::clone(&counters);
            let first_error = Arc::clone(&first_error);
            std::thread::Builder::new()
                .name("chronicle-writer".into())
                .spawn(move || {
                    let mut writer = Writer {
                        storage,
                        counters,
                        first_error,
                        batch: Vec::new(),
                        backlog: VecDeque::new(),
                        next_retry: Instant::now(),
                        retry_every: opts.retry_every,
                        finish_grace: opts.finish_grace,
                    };
                    writer.run(&receiver, opts);
                })
                .expect("spawn the storage writer thread")
        };
        BatchWriter {
            sender,
            counters,
            first_error,
            thread,
        }
    }

    /// A handle for producers.
    pub fn sender(&self) -> RecordSender {
        RecordSender {
            sender: self.sender.clone(),
            counters: Arc::clone(&self.counters),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// The counts so far, from anywhere (for a [`Monitor`](crate::monitor::Monitor)).
    pub fn stats_source(&self) -> impl Fn() -> WriterStats + Send + Sync + 'static {
        let counters = Arc::clone(&self.counters);
        move || counters.snapshot()
    }

    /// Writes everything sent before this call and stops the thread. Records sent by other
    /// [`RecordSender`]s while this runs are either written or given back by `send`.
    ///
    /// Fails with [`StorageError::WritesFailed`] (holding the first error) when any batch
    /// could not be written.
    pub fn finish(self) -> Result<WriterStats, StorageError> {
        // The thread may have exited already (it panicked); joining tells.
        let _ = self.sender.send(Message::Finish);
        drop(self.sender);
        if self.thread.join().is_err() {
            return Err(StorageError::WriterPanicked);
        }
        let stats = self.counters.snapshot();
        let first_error = self
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match first_error {
            None => Ok(stats),
            Some(first) => Err(StorageError::WritesFailed {
                failed_batches: stats.write_errors,
                failed_records: stats.failed,
                source: Box::new(first),
            }),
        }
    }
}

struct Writer {
    storage: Box<dyn Storage>,
    counters: Arc<Counters>,
    first_error: Arc<Mutex<Option<StorageError>>>,
    batch: Vec<CallRecord>,
    /// Batches the store refused for a reason that may pass, oldest first.
    backlog: VecDeque<(Vec<CallRecord>, StorageError)>,
    next_retry: Instant,
    retry_every: Duration,
    finish_grace: Duration,
}

impl Writer {
    fn run(&mut self, receiver: &Receiver<Message>, opts: WriterOptions) {
        let max_batch = opts.max_batch.max(1);
        let mut deadline = Instant::now();
        loop {
            let message = if self.batch.is_empty() && self.backlog.is_empty() {
                receiver.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                let wake = if self.batch.is_empty() {
                    self.next_retry
                } else if self.backlog.is_empty() {
                    deadline
                } else {
                    deadline.min(self.next_retry)
                };
                receiver.recv_timeout(wake.saturating_duration_since(Instant::now()))
            };
            match message {
                Ok(Message::Record(record)) => {
                    if self.batch.is_empty() {
                        deadline = Instant::now() + opts.max_delay;
                    }
                    self.batch.push(*record);
                    if self.batch.len() >= max_batch {
                        self.flush();
                    }
                }
                Ok(Message::Alerts(alerts)) => self.write_alerts(&alerts),
                Ok(Message::Finish) => {
                    // Take what is already queued; later sends fail once the receiver is gone.
                    loop {
                        match receiver.try_recv() {
                            Ok(Message::Record(record)) => {
                                self.batch.push(*record);
                                if self.batch.len() >= max_batch {
                                    self.flush();
                                }
                            }
                            Ok(Message::Alerts(alerts)) => self.write_alerts(&alerts),
                            Ok(Message::Finish) => {}
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    self.flush();
                    self.give_up();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.retry(false);
                    if Instant::now() >= deadline {
                        self.flush();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    self.give_up();
                    return;
                }
            }
        }
    }

    fn write_alerts(&mut self, alerts: &[Alert]) {
        match self.storage.insert_alerts(alerts) {
            Ok(()) => {
                self.counters
                    .alerts
                    .fetch_add(alerts.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(error);
            }
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.retry(false);
        if !self.backlog.is_empty() {
            // Behind the batches already waiting: the store takes them in order.
            let error = match self.backlog.back() {
                Some((_, StorageError::Waiting { error })) => error.clone(),
                Some((_, error)) => error.to_string(),
                None => String::new(),
            };
            self.wait_or_lose(batch, StorageError::Waiting { error });
            return;
        }
        match self.storage.insert(&mut batch) {
            Ok(()) => self.stored(batch.len()),
            Err(error) if retryable(&error) => {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                self.next_retry = Instant::now() + self.retry_every;
                self.wait_or_lose(batch, error);
            }
            Err(error) => self.lose(batch.len(), error),
        }
    }

    fn stored(&self, records: usize) {
        self.counters
            .written
            .fetch_add(records as u64, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
    }

    fn lose(&self, records: usize, error: StorageError) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        self.counters
            .failed
            .fetch_add(records as u64, Ordering::Relaxed);
        // The first error that says why: a batch that only queued behind refused ones gives
        // way to one the store itself refused.
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        let queued = |e: &Option<StorageError>| matches!(e, Some(StorageError::Waiting { .. }));
        if first.is_none() || (queued(&first) && !matches!(error, StorageError::Waiting { .. })) {
            *first = Some(error);
        }
    }

    /// Keeps a refused batch for later, or loses it when [`BACKLOG_BOUND`] records wait.
    fn wait_or_lose(&mut self, batch: Vec<CallRecord>, error: StorageError) {
        let waiting = self.counters.waiting.load(Ordering::Relaxed) as usize;
        if waiting + batch.len() > BACKLOG_BOUND {
            self.lose(batch.len(), error);
            return;
        }
        self.counters
            .waiting
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.backlog.push_back((batch, error));
    }

    /// Tries the waiting batches again, oldest first, when it is time (or now, `force`).
    fn retry(&mut self, force: bool) {
        if self.backlog.is_empty() || (!force && Instant::now() < self.next_retry) {
            return;
        }
        while let Some((batch, _)) = self.backlog.front_mut() {
            match self.storage.insert(batch) {
                Ok(()) => {
                    let (batch, _) = self.backlog.pop_front().expect("the front batch");
                    self.counters
                        .waiting
                        .fetch_sub(batch.len() as u64, Ordering::Relaxed);
                    self.stored(batch.len());
                }
                Err(error) => {
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    self.next_retry = Instant::now() + self.retry_every;
                    if let Some((_, last)) = self.backlog.front_mut() {
                        *last = error;
                    }
                    return;
                }
            }
        }
    }

    /// At the end: tries for up to [`WriterOptions::finish_grace`], then what still waits is
    /// lost and counted.
    fn give_up(&mut self) {
        let until = Instant::now() + self.finish_grace;
        self.retry(true);
        while !self.backlog.is_empty() && Instant::now() + self.retry_every <= until {
            std::thread::sleep(self.retry_every);
            self.retry(true);
        }
        while let Some((batch, error)) = self.backlog.pop_front() {
            self.counters
                .waiting
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            self.lose(batch.len(), error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::story::record;
    use crate::storage::{FunctionSummary, RecordQuery};
    use crate::test_util::TempDir;

    #[test]
    fn writes_in_batches_and_flushes_on_finish() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        let storage = SqliteStorage::open(&path).unwrap();
        let opts = WriterOptions {
            max_batch: 3,
            max_delay: Duration::from_secs(3600),
            retry_every: Duration::from_secs(1),
            finish_grace: Duration::ZERO,
        };
        let writer = BatchWriter::spawn(Box::new(storage), opts);
        let sender = writer.sender();
        let expected: Vec<CallRecord> = (0..7).map(|i| record("f", i, 10)).collect();
        for record in &expected {
            sender.send(record.clone()).unwrap();
        }
        let stats = writer.finish().unwrap();
        assert_eq!(
            stats,
            WriterStats {
                received: 7,
                written: 7,
                batches: 3,
                write_errors: 0,
                failed: 0,
                alerts: 0,
                retried: 0,
                waiting: 0,
            }
        );
        assert_eq!(
            sender.send(record("f", 8, 10)).unwrap_err().to_string(),
            "the storage writer has finished; the record was not stored"
        );

        let stored = SqliteStorage::open_existing(&path).unwrap();
        let got = stored.records(&RecordQuery::default()).unwrap();
        let ids: Vec<Option<i64>> = got.iter().map(|r| r.id).collect();
        assert_eq!(ids, (1..=7).map(Some).collect::<Vec<_>>());
        let without_ids: Vec<CallRecord> = got
            .into_iter()
            .map(|r| CallRecord { id: None, ..r })
            .collect();
        assert_eq!(without_ids, expected);
    }

    #[test]
    fn alerts_are_written_as_they_come() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        let writer = BatchWriter::spawn(
            Box::new(SqliteStorage::open(&path).unwrap()),
            WriterOptions {
                max_batch: 100,
                max_delay: Duration::from_secs(3600),
                retry_every: Duration::from_secs(1),
                finish_grace: Duration::ZERO,
            },
        );
        let alert = Alert {
            timestamp: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(7),
            function: "f".into(),
            kind: crate::limits::AlertKind::FunctionLimit,
            key: None,
            limit: 3,
            message: "f reached its limit of 3 stored calls; no more calls are stored".into(),
        };
        let sender = writer.sender();
        assert!(sender.send_alerts(Vec::new()));
        assert!(sender.send_alerts(vec![alert.clone()]));
        // Written before the batch of records is due, and before finish.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.stats().alerts == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stored = SqliteStorage::open_existing(&path)
            .unwrap()
            .alerts()
            .unwrap();
        assert_eq!(stored, [alert]);
        assert_eq!(writer.finish().unwrap().alerts, 1);
    }

    #[test]
    fn many_senders() {
        let dir = TempDir::new();
        let path = dir.path().join("chronicle.db");
        let writer = BatchWriter::spawn(
            Box::new(SqliteStorage::open(&path).unwrap()),
            WriterOptions::default(),
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sender = writer.sender();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        sender.send(record(&format!("f{t}"), i, 1)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let stats = writer.finish().unwrap();
        assert_eq!(
            (stats.received, stats.written, stats.write_errors),
            (1000, 1000, 0)
        );
        let stored = SqliteStorage::open_existing(&path).unwrap();
        let calls: Vec<(String, u64)> = stored
            .functions()
            .unwrap()
            .into_iter()
            .map(
                |FunctionSummary {
                     function, calls, ..
                 }| (function, calls),
            )
            .collect();
        assert_eq!(
            calls,
            vec![
                ("f0".into(), 250),
                ("f1".into(), 250),
                ("f2".into(), 250),
                ("f3".into(), 250)
            ]
        );
    }

    #[test]
    fn writes_a_partial_batch_after_max_delay() {
        let dir = TempDir::new();
        let storage = SqliteStorage::open(&dir.path().join("chronicle.db")).unwrap();
        let opts = WriterOptions {
            max_batch: 1000,
            max_delay: Duration::from_millis(1),
            retry_every: Duration::from_secs(1),
            finish_grace: Duration::ZERO,
        };
        let writer = BatchWriter::spawn(Box::new(storage), opts);
        writer.sender().send(record("f", 0, 10)).unwrap();
        // Not a timing assertion: waits (generously) for the flush that max_delay triggers.
        let give_up = Instant::now() + Duration::from_secs(30);
        while writer.stats().written == 0 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            writer.stats(),
            WriterStats {
                received: 1,
                written: 1,
                batches: 1,
                write_errors: 0,
                failed: 0,
                alerts: 0,
                retried: 0,
                waiting: 0,
            }
        );
        assert_eq!(writer.finish().unwrap().batches, 1);
    }

    /// The methods the writer never calls, for test stores.
    macro_rules! unused_by_the_writer {
        () => {
            fn functions(&self) -> Result<Vec<FunctionSummary>, StorageError> {
                unreachable!()
            }
            fn records(&self, _: &RecordQuery) -> Result<Vec<CallRecord>, StorageError> {
                unreachable!()
            }
            fn function_names(&self) -> Result<Vec<String>, StorageError> {
                unreachable!()
            }
            fn insert_alerts(&mut self, _: &[crate::limits::Alert]) -> Result<(), StorageError> {
                unreachable!()
            }
            fn alerts(&self) -> Result<Vec<crate::limits::Alert>, StorageError> {
                unreachable!()
            }
            fn delete_before(&mut self, _: std::time::SystemTime) -> Result<u64, StorageError> {
                unreachable!()
            }
            fn keep_newest(&mut self, _: &str, _: u64) -> Result<u64, StorageError> {
                unreachable!()
            }
            fn call_stats(
                &self,
                _: &RecordQuery,
            ) -> Result<crate::storage::CallStats, StorageError> {
                unreachable!()
            }
            fn build_ids(&self, _: &str) -> Result<Vec<String>, StorageError> {
                unreachable!()
            }
            fn outcomes(
                &self,
                _: &RecordQuery,
                _: usize,
            ) -> Result<Vec<crate::storage::OutcomeGroup>, StorageError> {
                unreachable!()
            }
            fn call_volume(
                &self,
                _: &RecordQuery,
                _: std::time::Duration,
            ) -> Result<Vec<(std::time::SystemTime, u64)>, StorageError> {
                unreachable!()
            }
            fn changed_outputs(
                &self,
                _: &RecordQuery,
                _: &RecordQuery,
                _: usize,
            ) -> Result<Vec<crate::storage::ChangedOutput>, StorageError> {
                unreachable!()
            }
        };
    }

    /// Fails every other batch, starting with the first.
    struct Flaky {
        calls: u32,
    }

    impl Storage for Flaky {
        fn insert(&mut self, _: &mut [CallRecord]) -> Result<(), StorageError> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                Err(StorageError::OutOfRange {
                    function: format!("f{}", self.calls),
                    field: "timestamp",
                })
            } else {
                Ok(())
            }
        }
        unused_by_the_writer!();
    }

    #[test]
    fn write_errors_are_counted_and_reported() {
        let opts = WriterOptions {
            max_batch: 2,
            max_delay: Duration::from_secs(3600),
            retry_every: Duration::from_secs(1),
            finish_grace: Duration::ZERO,
        };
        let writer = BatchWriter::spawn(Box::new(Flaky { calls: 0 }), opts);
        let sender = writer.sender();
        for i in 0..5 {
            sender.send(record("f", i, 10)).unwrap();
        }
        let error = writer.finish().unwrap_err();
        assert_eq!(
            error.to_string(),
            "3 records in 2 batches could not be written"
        );
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "a call of f1 has a timestamp outside the range the store can hold"
        );
    }

    /// Refuses writes as a full disk does until `until` attempts were made, then takes
    /// them; keeps what it took.
    struct FullUntil {
        until: u32,
        attempts: u32,
        taken: Arc<Mutex<Vec<std::time::SystemTime>>>,
    }

    impl Storage for FullUntil {
        fn insert(&mut self, records: &mut [CallRecord]) -> Result<(), StorageError> {
            self.attempts += 1;
            if self.attempts <= self.until {
                return Err(StorageError::Sqlite {
                    operation: "inserting records",
                    source: rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                        None,
                    ),
                });
            }
            self.taken
                .lock()
                .unwrap()
                .extend(records.iter().map(|r| r.timestamp));
            Ok(())
        }
        unused_by_the_writer!();
    }

    #[test]
    fn refused_batches_wait_and_are_written_in_order_when_the_store_recovers() {
        let opts = WriterOptions {
            max_batch: 2,
            max_delay: Duration::from_secs(3600),
            retry_every: Duration::from_millis(1),
            finish_grace: Duration::from_secs(30),
        };
        let taken = Arc::new(Mutex::new(Vec::new()));
        let store = FullUntil {
            until: 3,
            attempts: 0,
            taken: Arc::clone(&taken),
        };
        let writer = BatchWriter::spawn(Box::new(store), opts);
        let sender = writer.sender();
        for i in 0..6 {
            sender.send(record("f", i, 10)).unwrap();
        }
        let stats = writer.finish().unwrap();
        assert_eq!(
            (stats.written, stats.failed, stats.retried, stats.waiting),
            (6, 0, 3, 0)
        );
        let expected: Vec<_> = (0..6).map(|i| record("f", i, 10).timestamp).collect();
        assert_eq!(*taken.lock().unwrap(), expected);
    }

    #[test]
    fn what_does_not_fit_in_the_backlog_is_lost_and_counted() {
        let opts = WriterOptions {
            max_batch: 4096,
            max_delay: Duration::from_secs(3600),
            retry_every: Duration::from_secs(3600),
            finish_grace: Duration::ZERO,
        };
        let store = FullUntil {
            until: u32::MAX,
            attempts: 0,
            taken: Arc::default(),
        };
        let writer = BatchWriter::spawn(Box::new(store), opts);
        let sender = writer.sender();
        let sent = BACKLOG_BOUND + 2 * 4096;
        for i in 0..sent {
            sender.send(record("f", i as i64, 10)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while writer.stats().failed < 2 * 4096 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stats = writer.stats();
        assert_eq!(
            (stats.waiting, stats.failed),
            (BACKLOG_BOUND as u64, 2 * 4096)
        );
        let error = writer.finish().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{sent} records in {} batches could not be written",
                sent / 4096
            )
        );
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "sqlite failed while inserting records"
        );
    }

    struct Panics;

    impl Storage for Panics {
        fn insert(&mut self, _: &mut [CallRecord]) -> Result<(), StorageError> {
            panic!("storage bug")
        }
        unused_by_the_writer!();
    }

    #[test]
    fn a_panicking_store_is_reported() {
        let opts = WriterOptions {
            max_batch: 1,
            max_delay: Duration::from_secs(3600),
            retry_every: Duration::from_secs(1),
            finish_grace: Duration::ZERO,
        };
        let writer = BatchWriter::spawn(Box::new(Panics), opts);
        writer.sender().send(record("f", 0, 10)).unwrap();
        assert!(matches!(writer.finish(), Err(StorageError::WriterPanicked)));
    }
}
