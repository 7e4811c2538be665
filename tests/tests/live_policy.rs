//! Policy is live: a sampling change made while the agent runs reaches the in-kernel
//! pre-filter at once, and every call is accounted for (stored or sampled out).
#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chronicle::config::CaptureConfig;
use chronicle::pipeline::{Policy, PolicyHandle};
use chronicle_agent::{AttachOptions, Session, Target};
use chronicle_tests::{Opt, bpf_available, build_c};

#[test]
fn lowering_the_rate_mid_run_reaches_the_kernel() {
    if !bpf_available("lowering_the_rate_mid_run_reaches_the_kernel") {
        return;
    }
    let hot = build_c("hot", Opt::O2);
    let policy = PolicyHandle::new(Policy::from_config(&CaptureConfig::default()).unwrap());
    let options = AttachOptions {
        functions: vec!["cheap".into()],
        sampling_rate: policy.get().kernel_rate(),
        ..AttachOptions::default()
    };
    let target = Target::Program {
        program: hot.into_os_string(),
        args: vec!["100000".into(), "int".into()],
    };
    let mut session = Session::attach(target, options).unwrap();
    session.follow_sampling_rate(policy.kernel_rate_changes());
    let stored = Arc::new(AtomicU64::new(0));
    let counted = stored.clone();
    let mut sink = move |_record| {
        counted.fetch_add(1, Ordering::Relaxed);
    };
    // Once the kernel has seen 10 000 calls, turn sampling down to nothing.
    let mut changed = false;
    let mut on_tick = |stats: &[chronicle_agent::FunctionStats]| {
        if !changed && stats[0].calls >= 10_000 {
            changed = true;
            policy.update(|c| c.sampling_rate = 0.0).unwrap();
        }
    };
    let tick = Duration::from_millis(5);
    let summary = session
        .run(Some(Duration::from_secs(30)), tick, &mut sink, &mut on_tick)
        .unwrap();
    let f = &summary.functions[0];
    let stored = stored.load(Ordering::Relaxed);
    assert_eq!((f.calls, f.dropped), (100_000, 0), "{f:?}");
    assert_eq!(f.records, stored);
    assert_eq!(stored + f.sampled_out, 100_000, "{f:?}");
    // The change lands within a tick and a drain (15 ms: a few thousand calls at most).
    assert!((10_000..30_000).contains(&stored), "stored {stored}: {f:?}");
}
