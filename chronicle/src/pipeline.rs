//! The pipeline every record passes through before it is stored or exported, from the eBPF
//! agent and from `#[capture]` alike: limits → sampling → redaction.
//!
//! Policy is live: a [`PolicyHandle`] is shared by the pipeline and whoever changes it (the
//! CLI, the dashboard); the pipeline reads it per record, and its generation number tells
//! other consumers (the agent's in-kernel pre-filter) that it changed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::config::{CaptureConfig, ConfigError, SamplingStrategy};
use crate::limits::{Alert, LimitPolicy, Verdict};
use crate::monitor::Monitor;
use crate::record::CallRecord;
use crate::redact::Redactor;
use crate::sampling::{Decision, Rng, Sampler, SamplingPolicy};

/// Everything the pipeline decides with; changed as a whole through [`PolicyHandle`].
#[derive(Clone, Debug)]
pub struct Policy {
    pub sampling: SamplingPolicy,
    pub limits: LimitPolicy,
    /// `None` when redaction is off.
    pub redactor: Option<Redactor>,
    /// The configuration this policy was built from.
    pub config: CaptureConfig,
}

impl Policy {
    /// Builds a policy from a validated configuration.
    pub fn from_config(config: &CaptureConfig) -> Result<Policy, ConfigError> {
        config.validate()?;
        let redactor = if config.redaction_enabled {
            Some(
                Redactor::new(
                    &config.redaction_patterns,
                    &config.redaction_fields,
                    config.redaction_hash,
                )
                .map_err(|e| ConfigError::pattern(&e.pattern, &e.source))?,
            )
        } else {
            None
        };
        Ok(Policy {
            sampling: SamplingPolicy::from_config(config),
            limits: LimitPolicy::from_config(config),
            redactor,
            config: config.clone(),
        })
    }

    /// The rate the agent's in-kernel pre-filter should apply: the sampling rate for random
    /// sampling with `kernel_presample`, otherwise 1 (everything reaches the pipeline).
    pub fn kernel_rate(&self) -> f64 {
        let c = &self.config;
        if c.kernel_presample && c.sampling_strategy == SamplingStrategy::Random {
            c.sampling_rate
        } else {
            1.0
        }
    }
}

/// A shared, live policy. Cloning shares it.
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    inner: Arc<RwLock<Arc<Policy>>>,
    generation: Arc<AtomicU64>,
}

impl PolicyHandle {
    pub fn new(policy: Policy) -> PolicyHandle {
        PolicyHandle {
            inner: Arc::new(RwLock::new(Arc::new(policy))),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The current policy (cheap: an `Arc` clone).
    pub fn get(&self) -> Arc<Policy> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Incremented by every successful [`Self::update`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A source of in-kernel sampling rates for the agent to follow
    /// (`Session::follow_sampling_rate`): it returns the policy's kernel rate each time the
    /// policy has changed since it was last asked, and `None` otherwise.
    pub fn kernel_rate_changes(&self) -> impl FnMut() -> Option<f64> + Send + 'static {
        let handle = self.clone();
        let mut seen = handle.generation();
        move || {
            let now = handle.generation();
            (now != seen).then(|| {
                seen = now;
                handle.get().kernel_rate()
            })
        }
    }

    /// Changes the configuration; the new policy applies to the next record. Invalid
    /// values are refused with the field named, and nothing changes.
    pub fn update(&self, change: impl FnOnce(&mut CaptureConfig)) -> Result<(), ConfigError> {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut config = guard.config.clone();
        change(&mut config);
        *guard = Arc::new(Policy::from_config(&config)?);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// What the pipeline did with one function's calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PipelineStats {
    pub seen: u64,
    /// Left out by sampling (in user space; the kernel's own count is the agent's).
    pub sampled_out: u64,
    /// Not stored because of a limit.
    pub limited: u64,
    pub stored: u64,
    /// Values or matches replaced by redaction.
    pub redacted: u64,
}

/// What became of a record.
// Returned by value and matched at once; boxing the record would cost an allocation per
// stored call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Store (and export) this, redacted.
    Store(CallRecord),
    SampledOut,
    Limited,
}

/// The pipeline: a sampler of its own, and counters, limits and alerts in a shared
/// [`Monitor`] (so the dashboard can watch them and reset limits while records flow).
#[derive(Debug)]
pub struct Pipeline {
    policy: PolicyHandle,
    sampler: Sampler,
    rng: Rng,
    monitor: Monitor,
}

impl Pipeline {
    pub fn new(policy: PolicyHandle) -> Pipeline {
        Self::with_rng(policy, Rng::from_entropy())
    }

    /// A pipeline whose random decisions follow `rng` (tests, benchmarks).
    pub fn with_rng(policy: PolicyHandle, rng: Rng) -> Pipeline {
        let mut rng = rng;
        let sampler = Sampler::new(Rng::new(rng.next_u64()));
        Pipeline {
            policy,
            sampler,
            rng,
            monitor: Monitor::default(),
        }
    }

    /// Counts into `monitor` (shared with watchers) from now on.
    pub fn with_monitor(mut self, monitor: Monitor) -> Pipeline {
        self.monitor = monitor;
        self
    }

    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    /// The counts, limits and alerts of this pipeline, for watchers.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Passes one record through limits, sampling and redaction.
    pub fn process(&mut self, mut record: CallRecord) -> Outcome {
        let policy = self.policy.get();
        let Pipeline {
            sampler,
            rng,
            monitor,
            ..
        } = self;
        monitor.with_state(|state| {
            state.seen(&record);
            let mut alerts = Vec::new();
            let verdict = state
                .limits()
                .check(&policy.limits, &record, rng, &mut alerts);
            if !alerts.is_empty() {
                state.alerts(alerts);
            }
            if verdict == Verdict::Limited {
                state.stats(&record.function).limited += 1;
                return Outcome::Limited;
            }
            let mut sampling = policy.sampling.clone();
            sampling.presampled = policy.kernel_rate() < 1.0;
            if sampler.decide(&sampling, &record) == Decision::SampledOut {
                state.stats(&record.function).sampled_out += 1;
                return Outcome::SampledOut;
            }
            state.limits().commit(&policy.limits, &record);
            if let Some(redactor) = &policy.redactor {
                state.stats(&record.function).redacted += redactor.redact(&mut record);
            }
            if !policy.config.capture_timing {
                record.duration_ns = None;
            }
            state.stored(&record);
            Outcome::Store(record)
        })
    }

    /// Per-function counts so far.
    pub fn stats(&self) -> BTreeMap<String, PipelineStats> {
        self.monitor.pipeline_stats()
    }

    /// Alerts raised since the last call.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        self.monitor.take_alerts()
    }

    /// Starts a limit's count again (all limits, one function's, or one type key's).
    pub fn reset_limits(&mut self, function: Option<&str>, key: Option<&str>) {
        self.monitor.reset_limits(function, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Value;
    use crate::test_util::record;

    fn handle(config: CaptureConfig) -> PolicyHandle {
        PolicyHandle::new(Policy::from_config(&config).unwrap())
    }

    #[test]
    fn limits_then_sampling_then_redaction() {
        let policy = handle(CaptureConfig {
            limit_per_function: Some(2),
            ..CaptureConfig::default()
        });
        let mut p = Pipeline::with_rng(policy, Rng::new(1));
        let mut r = record("login");
        r.args = vec![("password".into(), Value::Str("hunter2".into()))];
        let stored: Vec<_> = (0..3)
            .map(|_| match p.process(r.clone()) {
                Outcome::Store(r) => Some(r.args[0].1.clone()),
                _ => None,
            })
            .collect();
        let redacted = Some(Value::Str("[REDACTED]".into()));
        assert_eq!(stored, [redacted.clone(), redacted, None]);
        assert_eq!(
            p.stats()["login"],
            PipelineStats {
                seen: 3,
                sampled_out: 0,
                limited: 1,
                stored: 2,
                redacted: 2,
            }
        );
        assert_eq!(p.take_alerts().len(), 1);
        assert!(p.take_alerts().is_empty());
        p.reset_limits(None, None);
        assert!(matches!(p.process(r), Outcome::Store(_)));
    }

    #[test]
    fn live_updates_apply_to_the_next_record_and_refuse_bad_values() {
        let policy = handle(CaptureConfig {
            kernel_presample: false,
            ..CaptureConfig::default()
        });
        let mut p = Pipeline::with_rng(policy.clone(), Rng::new(2));
        assert!(matches!(p.process(record("f")), Outcome::Store(_)));
        let generation = policy.generation();
        policy.update(|c| c.sampling_rate = 0.0).unwrap();
        assert_eq!(policy.generation(), generation + 1);
        assert!(matches!(p.process(record("f")), Outcome::SampledOut));
        let err = policy.update(|c| c.sampling_rate = 2.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sampling_rate = 2 is not allowed: a number from 0 to 1"
        );
        assert_eq!(policy.generation(), generation + 1);
        assert_eq!(policy.get().config.sampling_rate, 0.0);
    }

    #[test]
    fn kernel_rate_changes_report_each_change_once() {
        let policy = handle(CaptureConfig::default());
        let mut changes = policy.kernel_rate_changes();
        assert_eq!(changes(), None);
        policy.update(|c| c.sampling_rate = 0.25).unwrap();
        assert_eq!(changes(), Some(0.25));
        assert_eq!(changes(), None);
        // Sampling after the return leaves the kernel keeping everything.
        policy.update(|c| c.kernel_presample = false).unwrap();
        assert_eq!(changes(), Some(1.0));
    }

    #[test]
    fn kernel_presampling_is_not_repeated_in_user_space() {
        let policy = handle(CaptureConfig {
            sampling_rate: 0.1,
            ..CaptureConfig::default()
        });
        assert_eq!(policy.get().kernel_rate(), 0.1);
        let mut p = Pipeline::with_rng(policy.clone(), Rng::new(3));
        let kept = (0..1000)
            .filter(|_| matches!(p.process(record("f")), Outcome::Store(_)))
            .count();
        assert_eq!(kept, 1000, "what the kernel kept is all stored");
        policy.update(|c| c.kernel_presample = false).unwrap();
        assert_eq!(policy.get().kernel_rate(), 1.0);
        let kept = (0..1000)
            .filter(|_| matches!(p.process(record("f")), Outcome::Store(_)))
            .count();
        assert!((50..=150).contains(&kept), "kept {kept}");
    }
}
