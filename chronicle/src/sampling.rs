//! Sampling: which calls are stored.
//!
//! - **random**: each call with probability `sampling_rate` (on Linux the agent usually
//!   does this in the kernel, before anything is read; see `CaptureConfig::kernel_presample`).
//! - **clustering**: "most requests are the same with slight changes". A call's inputs are
//!   reduced to a set of features, one per leaf of the argument values: its path plus a
//!   coarse form of the value (strings by content, numbers by sign and power of two, bools,
//!   enum names and variant names exactly, sequences by length class). Two calls' similarity
//!   is the Jaccard index of their feature sets (|A ∩ B| / |A ∪ B|, 1 for equal shapes and
//!   near-equal values). Each function keeps up to [`MAX_CLUSTERS`] recent representatives;
//!   a call at least `cluster_similarity_threshold` similar to one of them is sampled at
//!   `sampling_rate`, a novel call is always kept and becomes a representative.
//! - **adaptive**: a per-function rate between `min_rate` and `max_rate`, starting at
//!   `sampling_rate`, multiplied by `error_boost_factor` after an error and by
//!   `novelty_boost_factor` after a novel input, and decaying back by 5 % of the distance
//!   on every other call.
//!
//! Whatever the strategy, `always_capture_errors` keeps calls with status `error` or
//! `unwound`, and `always_capture_slow` calls at least `latency_threshold_ms` long.
//! Decisions are explained ([`Decision`]) and reproducible with a fixed seed.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::config::SamplingStrategy;
use crate::record::{CallRecord, Status, Value};

/// Representatives kept per function by clustering.
pub const MAX_CLUSTERS: usize = 64;

/// The sampling settings the sampler reads per call.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingPolicy {
    pub strategy: SamplingStrategy,
    pub rate: f64,
    pub cluster_similarity_threshold: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    pub error_boost_factor: f64,
    pub novelty_boost_factor: f64,
    pub always_capture_errors: bool,
    pub always_capture_slow: bool,
    pub latency_threshold_ms: f64,
    /// Random sampling already happened (in the kernel): keep what arrives.
    pub presampled: bool,
}

impl Default for SamplingPolicy {
    fn default() -> Self {
        let c = crate::config::CaptureConfig::default();
        SamplingPolicy::from_config(&c)
    }
}

impl SamplingPolicy {
    pub fn from_config(c: &crate::config::CaptureConfig) -> Self {
        SamplingPolicy {
            strategy: c.sampling_strategy,
            rate: c.sampling_rate,
            cluster_similarity_threshold: c.cluster_similarity_threshold,
            min_rate: c.min_rate,
            max_rate: c.max_rate,
            error_boost_factor: c.error_boost_factor,
            novelty_boost_factor: c.novelty_boost_factor,
            always_capture_errors: c.always_capture_errors,
            always_capture_slow: c.always_capture_slow,
            latency_threshold_ms: c.latency_threshold_ms,
            presampled: false,
        }
    }
}

/// Why a call was kept, or that it was not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Drawn at the current rate.
    Sampled,
    /// Status `error` or `unwound`, with `always_capture_errors`.
    Error,
    /// Slower than the threshold, with `always_capture_slow`.
    Slow,
    /// Inputs unlike any recent call (clustering).
    Novel,
    /// Left out.
    SampledOut,
}

impl Decision {
    pub fn kept(self) -> bool {
        self != Decision::SampledOut
    }
}

/// SplitMix64: small, fast, and good enough for sampling; seeded for reproducible tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from the clock and the process id.
    pub fn from_entropy() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        if p <= 0.0 {
            return false;
        }
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Per-function sampling state.
#[derive(Debug)]
pub struct Sampler {
    rng: Rng,
    clusters: HashMap<String, VecDeque<Features>>,
    rates: HashMap<String, f64>,
}

impl Sampler {
    pub fn new(rng: Rng) -> Sampler {
        Sampler {
            rng,
            clusters: HashMap::new(),
            rates: HashMap::new(),
        }
    }

    /// Decides about one call.
    pub fn decide(&mut self, policy: &SamplingPolicy, record: &CallRecord) -> Decision {
        let errored = matches!(record.status, Status::Error | Status::Unwound);
        let slow = record
            .duration_ns
            .is_some_and(|ns| ns as f64 >= policy.latency_threshold_ms * 1e6);
        // Novelty and the adaptive rate learn from every call, kept or not.
        let novel = match policy.strategy {
            SamplingStrategy::Random => false,
            _ => self.observe(policy, record),
        };
        let rate = match policy.strategy {
            SamplingStrategy::Adaptive => self.adapt(policy, &record.function, errored, novel),
            _ => policy.rate,
        };
        if errored && policy.always_capture_errors {
            return Decision::Error;
        }
        if slow && policy.always_capture_slow {
            return Decision::Slow;
        }
        if novel && policy.strategy == SamplingStrategy::Clustering {
            return Decision::Novel;
        }
        if policy.presampled && policy.strategy == SamplingStrategy::Random {
            return Decision::Sampled;
        }
        if self.rng.chance(rate) {
            Decision::Sampled
        } else {
            Decision::SampledOut
        }
    }

    /// The current adaptive rate of a function (the base rate before any call).
    pub fn rate(&self, policy: &SamplingPolicy, function: &str) -> f64 {
        self.rates
            .get(function)
            .copied()
            .unwrap_or_else(|| policy.rate.clamp(policy.min_rate, policy.max_rate))
    }

    fn adapt(&mut self, p: &SamplingPolicy, function: &str, errored: bool, novel: bool) -> f64 {
        let base = p.rate.clamp(p.min_rate, p.max_rate);
        let rate = self.rates.entry(function.to_owned()).or_insert(base);
        let mut next = *rate;
        if errored {
            next *= p.error_boost_factor;
        }
        if novel {
            next *= p.novelty_boost_factor;
        }
        if !errored && !novel {
            next = base + (next - base) * 0.95;
        }
        *rate = next.clamp(p.min_rate, p.max_rate);
        *rate
    }

    /// Records a call's inputs; true when they are novel.
    fn observe(&mut self, policy: &SamplingPolicy, record: &CallRecord) -> bool {
        let features = features(&record.args);
        let reps = self.clusters.entry(record.function.clone()).or_default();
        let best = reps
            .iter()
            .enumerate()
            .map(|(i, rep)| (i, similarity(rep, &features)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, s)) if s >= policy.cluster_similarity_threshold => {
                // Most recently matched first: the least useful representative goes first.
                let rep = reps.remove(i).expect("index from the iteration");
                reps.push_front(rep);
                false
            }
            _ => {
                reps.push_front(features);
                reps.truncate(MAX_CLUSTERS);
                true
            }
        }
    }
}

/// A call's features, each hashed to 64 bits, sorted and without duplicates.
pub type Features = Vec<u64>;

/// Jaccard similarity of two feature sets (1 when both are empty).
pub fn similarity(a: &Features, b: &Features) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common as f64 / (a.len() + b.len() - common) as f64
}

/// The features of a call's arguments (see the module docs).
pub fn features(args: &[(String, Value)]) -> Features {
    let mut out = Vec::new();
    for (name, value) in args {
        collect(name, value, &mut out, 0);
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn hash(path: &str, leaf: &str) -> u64 {
    // Fixed keys: the same features hash the same in every run.
    let mut h = std::hash::DefaultHasher::new();
    path.hash(&mut h);
    leaf.hash(&mut h);
    h.finish()
}

fn collect(path: &str, value: &Value, out: &mut Vec<u64>, depth: u32) {
    if depth > 16 || out.len() > 512 {
        return;
    }
    let mut leaf = |v: String| {
        out.push(hash(path, &v));
    };
    match value {
        Value::Null => leaf("null".into()),
        Value::Bool(b) => leaf(b.to_string()),
        Value::Int(i) => leaf(magnitude(i.signum(), i.unsigned_abs())),
        Value::UInt(u) => leaf(magnitude(1, *u)),
        Value::Float(f) => leaf(magnitude(f.signum() as i64, f.abs() as u64)),
        Value::Str(s) => leaf(format!("s:{s}")),
        Value::Bytes(b) => leaf(format!("b:{}", b.len())),
        Value::Enum(e) => leaf(format!("e:{e}")),
        Value::Ptr(_) => leaf("ptr".into()),
        Value::Struct(fields) => {
            for (n, v) in fields {
                collect(&format!("{path}.{n}"), v, out, depth + 1);
            }
        }
        Value::Array(items) => {
            out.push(hash(
                path,
                &format!("#{}", magnitude(1, items.len() as u64)),
            ));
            for v in items.iter().take(16) {
                collect(&format!("{path}[]"), v, out, depth + 1);
            }
        }
        Value::Variant(name, payload) => {
            collect(&format!("{path}:{name}"), payload, out, depth + 1)
        }
    }
}

/// Sign and power of two: 100 and 120 are alike, 100 and 10 000 are not.
fn magnitude(sign: i64, abs: u64) -> String {
    let bits = 64 - abs.leading_zeros();
    format!("n{}{bits}", if sign < 0 { "-" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::record;

    fn policy(strategy: SamplingStrategy, rate: f64) -> SamplingPolicy {
        SamplingPolicy {
            strategy,
            rate,
            ..SamplingPolicy::default()
        }
    }

    fn call(function: &str, args: Vec<(&str, Value)>) -> CallRecord {
        let mut r = record(function);
        r.args = args.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        r
    }

    #[test]
    fn random_rate_within_tolerance() {
        for (rate, seed) in [(0.1, 1), (0.5, 2), (0.01, 3)] {
            let mut s = Sampler::new(Rng::new(seed));
            let p = policy(SamplingStrategy::Random, rate);
            let r = record("f");
            let kept = (0..100_000).filter(|_| s.decide(&p, &r).kept()).count();
            // Binomial standard deviation at 100 000 draws is at most 158; allow 5.
            let expected = rate * 100_000.0;
            let sd = (100_000.0 * rate * (1.0 - rate)).sqrt();
            assert!(
                (kept as f64 - expected).abs() < 5.0 * sd,
                "rate {rate}: kept {kept}"
            );
        }
    }

    #[test]
    fn errors_slow_calls_and_presampled_calls_are_kept() {
        let mut s = Sampler::new(Rng::new(9));
        let mut p = policy(SamplingStrategy::Random, 0.0);
        let mut failed = record("f");
        failed.status = Status::Error;
        assert_eq!(s.decide(&p, &failed), Decision::Error);
        failed.status = Status::Unwound;
        assert_eq!(s.decide(&p, &failed), Decision::Error);
        p.always_capture_errors = false;
        assert_eq!(s.decide(&p, &failed), Decision::SampledOut);
        let mut slow = record("f");
        slow.duration_ns = Some(2_000_000_000);
        assert_eq!(s.decide(&p, &slow), Decision::SampledOut);
        p.always_capture_slow = true;
        assert_eq!(s.decide(&p, &slow), Decision::Slow);
        p.presampled = true;
        assert_eq!(s.decide(&p, &record("f")), Decision::Sampled);
    }

    #[test]
    fn clustering_keeps_every_novel_input_and_thins_near_duplicates() {
        let mut s = Sampler::new(Rng::new(4));
        let p = policy(SamplingStrategy::Clustering, 0.05);
        let order = |kind: &str, qty: u64, note: &str| {
            call(
                "process_order",
                vec![(
                    "order",
                    Value::Struct(vec![
                        ("kind".into(), Value::Enum(kind.into())),
                        ("qty".into(), Value::UInt(qty)),
                        ("note".into(), Value::Str(note.into())),
                        ("tags".into(), Value::Array(vec![Value::Str("a".into())])),
                    ]),
                )],
            )
        };
        // The same shape with quantities of the same magnitude: one novel call, then thinned.
        let mut kept = 0;
        for i in 0..2000u64 {
            let d = s.decide(&p, &order("RETAIL", 100 + i % 20, "std"));
            if i == 0 {
                assert_eq!(d, Decision::Novel);
            }
            kept += usize::from(d.kept());
        }
        assert!(
            (60..=140).contains(&kept),
            "kept {kept} of 2000 near-duplicates"
        );
        // Every different kind, magnitude or note is novel the first time it is seen.
        for (kind, qty, note) in [
            ("WHOLESALE", 100, "std"),
            ("RETAIL", 1_000_000, "std"),
            ("RETAIL", 100, "gift"),
        ] {
            assert_eq!(s.decide(&p, &order(kind, qty, note)), Decision::Novel);
        }
        // Other functions have their own clusters.
        assert_eq!(s.decide(&p, &call("other", vec![])), Decision::Novel);
    }

    #[test]
    fn similarity_of_features() {
        let a = features(&[
            ("x".into(), Value::UInt(100)),
            ("s".into(), Value::Str("a".into())),
        ]);
        let b = features(&[
            ("x".into(), Value::UInt(120)),
            ("s".into(), Value::Str("a".into())),
        ]);
        let c = features(&[
            ("x".into(), Value::UInt(100)),
            ("s".into(), Value::Str("b".into())),
        ]);
        assert_eq!(similarity(&a, &b), 1.0);
        assert_eq!(similarity(&a, &c), 1.0 / 3.0);
    }

    #[test]
    fn adaptive_rises_on_errors_and_decays() {
        let mut s = Sampler::new(Rng::new(5));
        let p = SamplingPolicy {
            strategy: SamplingStrategy::Adaptive,
            rate: 0.1,
            min_rate: 0.05,
            max_rate: 0.8,
            error_boost_factor: 2.0,
            novelty_boost_factor: 1.0,
            always_capture_errors: false,
            ..SamplingPolicy::default()
        };
        let ok = record("f");
        let mut failed = record("f");
        failed.status = Status::Error;
        // Warm up the clusters so later calls are not novel.
        s.decide(&p, &ok);
        assert!((s.rate(&p, "f") - 0.1).abs() < 1e-9);
        for _ in 0..3 {
            s.decide(&p, &failed);
        }
        assert!((s.rate(&p, "f") - 0.8).abs() < 1e-9, "{}", s.rate(&p, "f"));
        for _ in 0..200 {
            s.decide(&p, &ok);
        }
        assert!((s.rate(&p, "f") - 0.1).abs() < 0.001, "{}", s.rate(&p, "f"));
        // With the rate boosted, more of the calls are kept: count over a fixed seed.
        let kept_high = {
            for _ in 0..3 {
                s.decide(&p, &failed);
            }
            (0..20).filter(|_| s.decide(&p, &ok).kept()).count()
        };
        assert!(kept_high >= 5, "kept {kept_high} of 20 right after errors");
    }
}
