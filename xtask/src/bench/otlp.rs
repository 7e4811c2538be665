//! `cargo xtask bench otlp`: spans per second from `SpanSender::send` to a loopback OTLP/HTTP
//! receiver that reads each body and answers 200, end to end (conversion to OTLP/JSON,
//! batching, HTTP).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Result, ensure};
use chronicle::otlp::{OtlpConfig, OtlpExporter};

use super::Args;
use super::store::realistic;

pub fn run(args: &Args) -> Result<()> {
    let server = Arc::new(
        tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| anyhow::anyhow!("starting the receiver: {e}"))?,
    );
    let port = server.server_addr().to_ip().expect("a TCP listener").port();
    let received = Arc::new(AtomicU64::new(0));
    let receiver = {
        let server = Arc::clone(&server);
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                received.fetch_add(body.len() as u64, Ordering::Relaxed);
                let _ = request.respond(tiny_http::Response::from_string("{}"));
            }
        })
    };

    let records = realistic(args.records);
    let config = OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        service_name: "bench".into(),
        // Room for every span: this measures throughput, not what a full queue drops.
        queue_capacity: records.len(),
        ..OtlpConfig::default()
    };
    println!(
        "otlp benchmark: {} spans per run, batches of {}, median of {} runs",
        records.len(),
        config.max_batch,
        args.runs
    );
    let mut rates = Vec::new();
    for run in 0..args.runs {
        received.store(0, Ordering::Relaxed);
        let exporter = OtlpExporter::spawn(config.clone())?;
        let spans = exporter.sender();
        let start = Instant::now();
        for record in &records {
            spans.send(record);
        }
        let stats = exporter.finish();
        let elapsed = start.elapsed();
        ensure!(
            stats.exported == records.len() as u64,
            "exported {} of {} spans: {stats:?}",
            stats.exported,
            records.len()
        );
        let rate = records.len() as f64 / elapsed.as_secs_f64();
        println!(
            "  run {run}: {rate:>10.0} spans/s ({elapsed:.2?}, {} bytes of JSON per span, {} \
             requests)",
            received.load(Ordering::Relaxed) / records.len() as u64,
            stats.requests
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0} spans/s", rates[rates.len() / 2]);
    server.unblock();
    let _ = receiver.join();
    Ok(())
}
