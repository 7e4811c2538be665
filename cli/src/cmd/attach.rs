//! `chronicle attach`: trace functions of a running process (`--pid`) or of a program it
//! starts (`-- PROGRAM ARGS`), storing every call.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::StoreArgs;
use crate::Failure;
#[cfg(target_os = "linux")]
use chronicle::config::{CaptureConfig, SamplingStrategy};

/// Trace functions of a running process or a program, storing each call's arguments and return.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  sudo chronicle attach --pid 4242 --func orders::process_order\n  sudo chronicle attach --func transfer --duration 10 -- ./bank-service --port 8080"
)]
pub struct Args {
    /// Process to trace.
    #[arg(long, conflicts_with = "program", required_unless_present = "program")]
    pub pid: Option<u32>,
    /// Function to trace: demangled (`orders::process_order`, `process_order`) or mangled name.
    #[arg(long = "func", value_name = "SYMBOL", required = true)]
    pub functions: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Stop after this many seconds (default: until Ctrl-C or the process exits).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Longest string captured per value, in bytes; longer ones are truncated and marked.
    #[arg(long, default_value_t = 256, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1..=4000))]
    pub max_string: u16,
    /// How many pointers deep arguments are followed (structs behind pointers, their
    /// pointers, ...); deeper pointers are stored as addresses and marked.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=8))]
    pub max_depth: u8,
    /// Bytes of memory read per probe (all arguments together, or the return value);
    /// what does not fit is marked.
    /// Default: `max_serialized_size` of the config file, 4096.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(64..=8192))]
    pub max_serialized_size: Option<u32>,
    /// Also read what non-const pointer parameters point to when the call returns
    /// (stored as `after`): for functions that fill a buffer or update an object.
    #[arg(long)]
    pub after: bool,
    /// Settings file (chronicle.toml; keys as in the README). Default: ./chronicle.toml
    /// when it exists. Flags override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Keep each call with this probability (0 to 1). With random sampling this is decided
    /// in the kernel before anything is read, and the rest are counted as sampled out.
    #[arg(long, value_name = "RATE", value_parser = rate)]
    pub sampling_rate: Option<f64>,
    /// Sampling strategy: random, clustering (novel inputs always kept) or adaptive.
    #[arg(long, value_name = "STRATEGY")]
    pub sampling_strategy: Option<String>,
    /// Ring buffer between the kernel probes and the reader, in MiB (a power of two): headroom
    /// for bursts (16 MiB hold ~60 000 events of a few scalars and a short string). Events
    /// that do not fit are counted as dropped. The agent maps it twice (its resident set
    /// counts it twice), and the kernel keeps it in memory while tracing.
    #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = ring_size)]
    pub ring_buffer_mb: u32,
    /// Record the files each captured call opens, reads and writes (config: track_file_io).
    #[arg(long)]
    pub track_file_io: bool,
    /// Record the connections each captured call makes and its plain-text HTTP requests
    /// (config: track_http_calls).
    #[arg(long)]
    pub track_http_calls: bool,
    /// Record the SQL each captured call runs through SQLite, with bound parameters
    /// (config: track_db_calls).
    #[arg(long)]
    pub track_db_calls: bool,
    /// Print each captured call as it is stored.
    #[arg(long)]
    pub print: bool,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub progress: f64,
    /// Serve the dashboard on this address while tracing (e.g. 127.0.0.1:8787; port 0 picks
    /// one). An address that is not loopback requires a token, made at start and printed
    /// unless --dashboard-token or the config's dashboard_token gives one.
    #[arg(long, value_name = "ADDR:PORT")]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Token the dashboard requires on every request.
    #[arg(long, value_name = "TOKEN", requires = "dashboard")]
    pub dashboard_token: Option<String>,
    /// Program to start and trace from its first call, with its arguments.
    #[arg(last = true, value_name = "PROGRAM")]
    pub program: Vec<OsString>,
}

#[cfg(not(target_os = "linux"))]
pub fn run(_: Args) -> Result<u8, Failure> {
    Err(Failure::environment(anyhow::anyhow!(
        "attach needs Linux with eBPF; on other systems use the #[capture] attribute"
    )))
}

#[cfg(target_os = "linux")]
pub fn run(args: Args) -> Result<u8, Failure> {
    use chronicle::config::StorageBackend;
    use chronicle::dashboard::Dashboard;
    use chronicle::monitor::{KernelCounts, Monitor};
    use chronicle::otlp::{OtlpConfig, OtlpExporter};
    use chronicle::pipeline::{Outcome, Pipeline, Policy, PolicyHandle};
    use chronicle::writer::{BatchWriter, WriterOptions};
    use chronicle_agent::{AttachOptions, Session, StopReason, Target, Tracking, sys};

    let duration = match args.duration {
        Some(secs) if !(secs.is_finite() && secs > 0.0) => {
            return Err(anyhow::anyhow!(
                "--duration must be a positive number of seconds, got {secs}"
            )
            .into());
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let target = match (args.pid, args.program.split_first()) {
        (Some(pid), _) => Target::Pid(pid),
        (None, Some((program, rest))) => Target::Program {
            program: program.clone(),
            args: rest.to_vec(),
        },
        (None, None) => {
            return Err(anyhow::anyhow!("give --pid PID or -- PROGRAM [ARGS...]").into());
        }
    };
    let config = load_config(&args)?;
    let policy = PolicyHandle::new(Policy::from_config(&config)?);
    let monitor = Monitor::new(match &target {
        Target::Pid(pid) => format!("pid {pid}"),
        Target::Program { program, .. } => program.to_string_lossy().into_owned(),
    });
    monitor.count_calls_in_kernel();
    let mut pipeline = Pipeline::new(policy.clone()).with_monitor(monitor.clone());
    let mut store = args.store.clone();
    if store.dsn.is_none() && store.db == std::path::Path::new("chronicle.db") {
        match (config.storage_backend, &config.storage_dsn) {
            (StorageBackend::Postgresql, Some(dsn)) => store.dsn = Some(dsn.clone()),
            (StorageBackend::Sqlite, Some(path)) => store.db = PathBuf::from(path),
            (StorageBackend::Postgresql, None) => {
                return Err(anyhow::anyhow!(
                    "storage_backend = \"postgresql\" needs storage_dsn (or pass --dsn)"
                )
                .into());
            }
            (StorageBackend::Sqlite, None) => {}
        }
    }
    super::check_store(&store)?;
    let storage = super::create_store(&store)?;
    let writer = BatchWriter::spawn(storage, WriterOptions::default());
    monitor.watch_writer(writer.stats_source());
    let sender = writer.sender();
    let exporter = if config.otel_enabled {
        let otlp = OtlpConfig {
            endpoint: config.otel_endpoint.clone(),
            service_name: config.otel_service_name.clone(),
            ..OtlpConfig::default()
        };
        Some(OtlpExporter::spawn(otlp).context("starting the OTLP exporter")?)
    } else {
        None
    };
    let spans = exporter.as_ref().map(OtlpExporter::sender);

    sys::install_stop_handlers().context("installing signal handlers")?;
    let options = AttachOptions {
        functions: args.functions.clone(),
        max_string: args.max_string,
        max_depth: args.max_depth,
        max_bytes: args
            .max_serialized_size
            .unwrap_or(config.max_serialized_size),
        capture_after: args.after,
        sampling_rate: policy.get().kernel_rate(),
        ring_buffer_bytes: args.ring_buffer_mb * 1024 * 1024,
        tracking: Tracking {
            files: args.track_file_io || config.track_file_io,
            network: args.track_http_calls || config.track_http_calls,
            db: args.track_db_calls || config.track_db_calls,
        },
        ..Default::default()
    };
    let mut session = Session::attach(target, options.clone()).map_err(|e| {
        if e.is_environment() {
            Failure::environment(e)
        } else {
            Failure::from(e)
        }
    })?;
    // Policy changes (dashboard, API) reach the in-kernel pre-filter at the next drain.
    session.follow_sampling_rate(policy.kernel_rate_changes());
    monitor.set_source(format!("pid {}", session.pid()));
    let dashboard = match args.dashboard {
        Some(addr) => {
            let mut dashboard = Dashboard::live(policy.clone(), monitor.clone());
            if let Some(token) = args
                .dashboard_token
                .clone()
                .or(config.dashboard_token.clone())
            {
                dashboard = dashboard.with_token(token);
            }
            let server = chronicle::dashboard::serve(addr, dashboard).map_err(|e| {
                anyhow::Error::from(e)
                    .context("starting the dashboard (choose another address with --dashboard)")
            })?;
            eprintln!("chronicle: dashboard at {}", server.url());
            Some(server)
        }
        None => None,
    };
    let mut err = std::io::stderr().lock();
    for f in session.functions() {
        let build = if f.build_id.is_empty() {
            "no build id".to_owned()
        } else {
            format!("build {}", short(&f.build_id))
        };
        writeln!(
            err,
            "chronicle: tracing {} in {} ({build}) of pid {}",
            f.signature,
            f.binary.display(),
            session.pid()
        )?;
        for note in &f.notes {
            writeln!(err, "chronicle:   {note}")?;
        }
    }
    drop(err);

    // Printing stops quietly if stdout goes away (`| head`); capture goes on.
    let mut print = args.print;
    let mut not_written = 0u64;
    let mut stdout = std::io::stdout().lock();
    let mut alerts = 0usize;
    let mut sink = |record: chronicle::CallRecord| {
        let record = match pipeline.process(record) {
            Outcome::Store(record) => record,
            Outcome::SampledOut | Outcome::Limited => {
                // Stored at once, by the writer, so a dashboard or query sees them now.
                let raised = pipeline.take_alerts();
                for alert in &raised {
                    eprintln!("chronicle: alert: {}", alert.message);
                }
                alerts += raised.len();
                sender.send_alerts(raised);
                return;
            }
        };
        if print && writeln!(stdout, "{}", one_line(&record)).is_err() {
            print = false;
        }
        if let Some(spans) = &spans {
            spans.send(&record);
        }
        if sender.send(record).is_err() {
            not_written += 1;
        }
    };
    let progress = if args.progress > 0.0 {
        Duration::from_secs_f64(args.progress)
    } else {
        Duration::MAX
    };
    // The dashboard wants kernel counts more often than progress lines come.
    let tick = if dashboard.is_some() {
        progress.min(Duration::from_millis(250))
    } else {
        progress
    };
    let publish = |stats: &[chronicle_agent::FunctionStats]| {
        for s in stats {
            let counts = KernelCounts {
                calls: s.calls,
                sampled_out: s.sampled_out,
                dropped: s.dropped,
                fetch_errors: s.fetch_errors,
            };
            monitor.set_kernel_counts(&s.name, counts);
        }
    };
    let mut last_progress = std::time::Instant::now();
    let mut on_tick = |stats: &[chronicle_agent::FunctionStats]| {
        publish(stats);
        if last_progress.elapsed() < progress {
            return;
        }
        last_progress = std::time::Instant::now();
        let parts: Vec<String> = stats
            .iter()
            .map(|s| {
                format!(
                    "{}: {} calls, {} stored, {} dropped",
                    s.name, s.calls, s.records, s.dropped
                )
            })
            .collect();
        eprintln!("chronicle: {}", parts.join("; "));
    };
    let summary = session.run(duration, tick, &mut sink, &mut on_tick)?;
    publish(&summary.functions);
    drop(session);
    drop(sender);
    let last = pipeline.take_alerts();
    alerts += last.len();
    if !last.is_empty() {
        writer.sender().send_alerts(last);
    }
    // The summary is printed whatever the store did; a store that lost records makes the
    // exit status say so afterwards.
    let final_stats = writer.stats_source();
    let lost = writer.finish().err();
    let written = final_stats();
    let otlp = exporter.map(OtlpExporter::finish);
    // Retention goes through a connection of its own, now that the writer is done.
    let expired = if lost.is_some() {
        Ok(0)
    } else {
        super::create_store(&store)
            .map_err(|f| f.error)
            .and_then(|mut maintenance| {
                chronicle::storage::enforce_retention(
                    maintenance.as_mut(),
                    config.retention_days,
                    config.max_records_per_function,
                )
                .map_err(anyhow::Error::from)
            })
            .context("applying retention")
    };

    let why = match summary.reason {
        StopReason::Duration => "duration reached".to_owned(),
        StopReason::Signal => "interrupted".to_owned(),
        StopReason::TargetExited => match summary.exit {
            Some(sys::ExitStatus::Code(code)) => format!("program exited with status {code}"),
            Some(sys::ExitStatus::Signal(sig)) => format!("program killed by signal {sig}"),
            None => "process exited".to_owned(),
        },
    };
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "chronicle: stopped after {:.1}s ({why}); {} records written to {}",
        summary.elapsed.as_secs_f64(),
        written.written,
        args.store.location()
    )?;
    writeln!(
        err,
        "{:<40} {:>10} {:>10} {:>11} {:>9} {:>9} {:>12}",
        "function", "calls", "stored", "sampled out", "unwound", "dropped", "fetch errors"
    )?;
    for f in &summary.functions {
        writeln!(
            err,
            "{:<40} {:>10} {:>10} {:>11} {:>9} {:>9} {:>12}",
            f.name, f.calls, f.records, f.sampled_out, f.unwound, f.dropped, f.fetch_errors
        )?;
        if f.orphan_returns > 0 {
            writeln!(
                err,
                "  {} returns had no entry event (the call began before tracing, or its entry was dropped) and were not stored",
                f.orphan_returns
            )?;
        }
    }
    if summary.dropped() > 0 {
        writeln!(
            err,
            "chronicle: {} events were dropped because the ring buffer was full",
            summary.dropped()
        )?;
    }
    let deps = &summary.dependencies;
    if options.tracking.any() {
        writeln!(
            err,
            "chronicle: dependencies: {} recorded from {} events; {} dropped (ring buffer full), {} not attributable to a captured call",
            deps.recorded, deps.events, deps.dropped, deps.unattributed
        )?;
        if deps.unknown_descriptors > 0 {
            writeln!(
                err,
                "chronicle: {} reads and writes on descriptors opened before tracing and closed before they could be identified were not recorded",
                deps.unknown_descriptors
            )?;
        }
    }
    for (function, p) in pipeline.stats() {
        if p.sampled_out + p.limited + p.redacted > 0 {
            writeln!(
                err,
                "  {function}: pipeline kept {} of {} (sampled out {}, over limits {}), {} values redacted",
                p.stored, p.seen, p.sampled_out, p.limited, p.redacted
            )?;
        }
    }
    if alerts > 0 {
        writeln!(
            err,
            "chronicle: {alerts} limit alerts raised, {} stored",
            written.alerts
        )?;
    }
    let expired = match expired {
        Ok(n) => n,
        Err(error) => {
            writeln!(err, "chronicle: warning: {error:#}")?;
            0
        }
    };
    if expired > 0 {
        writeln!(
            err,
            "chronicle: retention deleted {expired} records (retention_days {}, max_records_per_function {})",
            config.retention_days, config.max_records_per_function
        )?;
    }
    if let Some(otlp) = otlp {
        writeln!(
            err,
            "chronicle: OTLP: {} spans exported to {}, {} dropped{}",
            otlp.exported,
            config.otel_endpoint,
            otlp.dropped(),
            otlp.last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )?;
    }
    if not_written > 0 {
        writeln!(
            err,
            "chronicle: {not_written} records were not written: the storage writer stopped"
        )?;
    }
    if written.retried > 0 && lost.is_none() {
        writeln!(
            err,
            "chronicle: the store refused {} writes for a while; every record was stored once \
             it took them again",
            written.retried
        )?;
    }
    if let Some(error) = lost {
        return Err(Failure {
            code: crate::exit::ENVIRONMENT,
            error: anyhow::Error::new(error).context(format!(
                "{} of {} records could not be stored in {} (they waited in memory for the \
                 store, up to {} records, and were counted)",
                written.failed,
                written.received,
                args.store.location(),
                chronicle::writer::BACKLOG_BOUND
            )),
        });
    }
    Ok(crate::exit::OK)
}

/// The config file named by --config, or ./chronicle.toml when present, with flags applied.
#[cfg(target_os = "linux")]
fn load_config(args: &Args) -> Result<CaptureConfig, Failure> {
    let default = PathBuf::from("chronicle.toml");
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None => default.is_file().then_some(default),
    };
    let mut config = match &path {
        Some(path) => CaptureConfig::load(path)?,
        None => CaptureConfig::default(),
    };
    if let Some(rate) = args.sampling_rate {
        config.sampling_rate = rate;
    }
    if let Some(strategy) = &args.sampling_strategy {
        config.sampling_strategy = match strategy.as_str() {
            "random" => SamplingStrategy::Random,
            "clustering" => SamplingStrategy::Clustering,
            "adaptive" => SamplingStrategy::Adaptive,
            other => {
                return Err(anyhow::anyhow!(
                    "--sampling-strategy must be random, clustering or adaptive, got `{other}`"
                )
                .into());
            }
        };
    }
    if let Some(size) = args.max_serialized_size {
        config.max_serialized_size = size;
    }
    config.validate()?;
    Ok(config)
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a number from 0 to 1, got `{text}`")),
    }
}

fn ring_size(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(mb) if mb.is_power_of_two() && mb <= 1024 => Ok(mb),
        _ => Err(format!(
            "expected a power of two from 1 to 1024, got `{text}`"
        )),
    }
}

fn short(build_id: &str) -> &str {
    &build_id[..build_id.len().min(12)]
}

/// `transfer(from="alice", to="bob", cents=1250) -> 0  [12.3µs]`
#[cfg(target_os = "linux")]
fn one_line(record: &chronicle::CallRecord) -> String {
    let args: Vec<String> = record
        .args
        .iter()
        .map(|(name, value)| format!("{name}={}", value.to_json()))
        .collect();
    let ret = match (&record.ret, record.status) {
        (_, chronicle::Status::Unwound) => " unwound".to_owned(),
        (Some(v), _) => format!(" -> {}", v.to_json()),
        (None, _) => String::new(),
    };
    let took = record
        .duration_ns
        .map(|ns| format!("  [{}]", super::functions::human_duration(ns)))
        .unwrap_or_default();
    let missing = if record.unavailable.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = record
            .unavailable
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect();
        format!("  (not read: {})", parts.join("; "))
    };
    format!(
        "[tid {}] {}({}){ret}{took}{missing}",
        record.tid,
        record.function,
        args.join(", ")
    )
}
