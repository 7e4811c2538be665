//! Capture limits: at most N stored calls per function (then stop, or go on at a low
//! rate), and at most N per distinct value of a field of the arguments (`type`,
//! `payload.type`). Reaching a limit raises an [`Alert`] once; limits can be reset. Limits
//! only decide what is stored: the traced function always runs normally.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{LimitAction, TypeLimit};
use crate::record::{CallRecord, Value};
use crate::sampling::Rng;

/// The limit settings the pipeline reads per call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LimitPolicy {
    pub per_function: Option<u64>,
    pub action: LimitAction,
    pub overflow_sample_rate: f64,
    pub per_type: Vec<TypeLimit>,
}

impl LimitPolicy {
    pub fn from_config(c: &crate::config::CaptureConfig) -> Self {
        LimitPolicy {
            per_function: c.limit_per_function,
            action: c.limit_action,
            overflow_sample_rate: c.overflow_sample_rate,
            per_type: c.type_limits.clone(),
        }
    }
}

/// Which limit an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    FunctionLimit,
    TypeLimit,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::FunctionLimit => "function_limit",
            AlertKind::TypeLimit => "type_limit",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        match s {
            "function_limit" => Some(AlertKind::FunctionLimit),
            "type_limit" => Some(AlertKind::TypeLimit),
            _ => None,
        }
    }
}

/// A limit was reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub timestamp: SystemTime,
    pub function: String,
    pub kind: AlertKind,
    /// `field_path=value` for type limits.
    pub key: Option<String>,
    pub limit: u64,
    pub message: String,
}

/// What the limits say about a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over a limit: not stored.
    Limited,
}

/// Counts per function and per type key.
#[derive(Debug, Default)]
pub struct Limits {
    stored: HashMap<String, u64>,
    per_type: HashMap<(String, String), u64>,
    alerted: std::collections::HashSet<(String, Option<String>)>,
}

impl Limits {
    /// Checks a call before it is sampled; new alerts go to `alerts`.
    pub fn check(
        &mut self,
        policy: &LimitPolicy,
        record: &CallRecord,
        rng: &mut Rng,
        alerts: &mut Vec<Alert>,
    ) -> Verdict {
        if let Some(limit) = policy.per_function {
            let stored = self.stored.get(&record.function).copied().unwrap_or(0);
            if stored >= limit {
                self.alert(
                    alerts,
                    record,
                    AlertKind::FunctionLimit,
                    None,
                    limit,
                    || {
                        let then = match policy.action {
                            LimitAction::Stop => "no more calls are stored".to_owned(),
                            LimitAction::Sample => format!(
                                "further calls are stored at rate {}",
                                policy.overflow_sample_rate
                            ),
                        };
                        format!(
                            "{} reached its limit of {limit} stored calls; {then}",
                            record.function
                        )
                    },
                );
                let sampled =
                    policy.action == LimitAction::Sample && rng.chance(policy.overflow_sample_rate);
                if !sampled {
                    return Verdict::Limited;
                }
            }
        }
        for limit in applicable(policy, &record.function) {
            let Some(key) = type_key(record, &limit.field_path) else {
                continue;
            };
            let slot = (record.function.clone(), key.clone());
            let stored = self.per_type.get(&slot).copied().unwrap_or(0);
            if stored >= limit.limit_per_type {
                let n = limit.limit_per_type;
                self.alert(
                    alerts,
                    record,
                    AlertKind::TypeLimit,
                    Some(key.clone()),
                    n,
                    || {
                        format!(
                            "{}: {key} reached its limit of {n} stored calls; no more are stored",
                            record.function
                        )
                    },
                );
                return Verdict::Limited;
            }
        }
        Verdict::Allow
    }

    /// Counts a call that was stored.
    pub fn commit(&mut self, policy: &LimitPolicy, record: &CallRecord) {
        *self.stored.entry(record.function.clone()).or_default() += 1;
        for limit in applicable(policy, &record.function) {
            if let Some(key) = type_key(record, &limit.field_path) {
                *self
                    .per_type
                    .entry((record.function.clone(), key))
                    .or_default() += 1;
            }
        }
    }

    /// Stored calls of `function` counted against its limit.
    pub fn stored(&self, function: &str) -> u64 {
        self.stored.get(function).copied().unwrap_or(0)
    }

    /// Every type key counted so far with the limit that applies to it now, sorted by
    /// function and key. Keys no limit applies to any more are left out.
    pub fn type_counts(&self, policy: &LimitPolicy) -> Vec<crate::monitor::TypeCount> {
        let mut counts: Vec<crate::monitor::TypeCount> = self
            .per_type
            .iter()
            .filter_map(|((function, key), &stored)| {
                let (path, _) = key.split_once('=')?;
                let limit = applicable(policy, function).find(|l| l.field_path == path)?;
                Some(crate::monitor::TypeCount {
                    function: function.clone(),
                    field_path: path.to_owned(),
                    key: key.clone(),
                    stored,
                    limit: limit.limit_per_type,
                    reached: stored >= limit.limit_per_type,
                })
            })
            .collect();
        counts.sort_by(|a, b| (&a.function, &a.key).cmp(&(&b.function, &b.key)));
        counts
    }

    /// Starts counting again: everything, one function, or one type key of a function.
    pub fn reset(&mut self, function: Option<&str>, key: Option<&str>) {
        match (function, key) {
            (None, _) => *self = Limits::default(),
            (Some(f), None) => {
                self.stored.remove(f);
                self.per_type.retain(|(func, _), _| func != f);
                self.alerted.retain(|(func, _)| func != f);
            }
            (Some(f), Some(k)) => {
                self.per_type.remove(&(f.to_owned(), k.to_owned()));
                self.alerted.remove(&(f.to_owned(), Some(k.to_owned())));
            }
        }
    }

    fn alert(
        &mut self,
        alerts: &mut Vec<Alert>,
        record: &CallRecord,
        kind: AlertKind,
        key: Option<String>,
        limit: u64,
        message: impl FnOnce() -> String,
    ) {
        if self.alerted.insert((record.function.clone(), key.clone())) {
            alerts.push(Alert {
                timestamp: SystemTime::now(),
                function: record.function.clone(),
                kind,
                key,
                limit,
                message: message(),
            });
        }
    }
}

fn applicable<'a>(
    policy: &'a LimitPolicy,
    function: &'a str,
) -> impl Iterator<Item = &'a TypeLimit> {
    policy.per_type.iter().filter(move |l| {
        l.function
            .as_deref()
            .is_none_or(|f| f == function || function.ends_with(&format!("::{f}")))
    })
}

/// `field_path=value` for a call: the path starts at an argument name, or else at a field
/// of any argument (the first that has it).
pub fn type_key(record: &CallRecord, field_path: &str) -> Option<String> {
    let parts: Vec<&str> = field_path.split('.').collect();
    let found = record
        .args
        .iter()
        .find(|(name, _)| name == parts[0])
        .and_then(|(_, v)| lookup(v, &parts[1..]))
        .or_else(|| record.args.iter().find_map(|(_, v)| lookup(v, &parts)));
    let value = found?;
    let text = match value {
        Value::Str(s) | Value::Enum(s) => s.clone(),
        Value::Variant(name, _) => name.clone(),
        other => other.to_json().to_string(),
    };
    Some(format!("{field_path}={text}"))
}

fn lookup<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    match value {
        Value::Struct(fields) => fields
            .iter()
            .find(|(n, _)| n == first)
            .and_then(|(_, v)| lookup(v, rest)),
        Value::Variant(_, payload) => lookup(payload, path),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::record;

    fn order(kind: &str) -> CallRecord {
        let mut r = record("shop::process_order");
        r.args = vec![(
            "order".into(),
            Value::Struct(vec![(
                "payload".into(),
                Value::Struct(vec![("type".into(), Value::Enum(kind.into()))]),
            )]),
        )];
        r
    }

    fn run(
        limits: &mut Limits,
        policy: &LimitPolicy,
        r: &CallRecord,
        alerts: &mut Vec<Alert>,
    ) -> Verdict {
        let v = limits.check(policy, r, &mut Rng::new(1), alerts);
        if v == Verdict::Allow {
            limits.commit(policy, r);
        }
        v
    }

    #[test]
    fn per_function_stop_alerts_once_and_resets() {
        let policy = LimitPolicy {
            per_function: Some(3),
            ..LimitPolicy::default()
        };
        let mut limits = Limits::default();
        let mut alerts = Vec::new();
        let r = record("f");
        let verdicts: Vec<Verdict> = (0..5)
            .map(|_| run(&mut limits, &policy, &r, &mut alerts))
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Limited,
                Verdict::Limited
            ]
        );
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].kind, alerts[0].limit, alerts[0].message.as_str()),
            (
                AlertKind::FunctionLimit,
                3,
                "f reached its limit of 3 stored calls; no more calls are stored"
            )
        );
        limits.reset(Some("f"), None);
        assert_eq!(run(&mut limits, &policy, &r, &mut alerts), Verdict::Allow);
    }

    #[test]
    fn per_function_sample_goes_on_at_the_overflow_rate() {
        let policy = LimitPolicy {
            per_function: Some(10),
            action: LimitAction::Sample,
            overflow_sample_rate: 0.1,
            ..LimitPolicy::default()
        };
        let mut limits = Limits::default();
        let mut alerts = Vec::new();
        let mut rng = Rng::new(7);
        let r = record("f");
        let mut kept = 0;
        for _ in 0..10_010 {
            if limits.check(&policy, &r, &mut rng, &mut alerts) == Verdict::Allow {
                limits.commit(&policy, &r);
                kept += 1;
            }
        }
        // 10 under the limit, then ~1 000 of 10 000 (sd 30).
        assert!((10 + 850..=10 + 1150).contains(&kept), "kept {kept}");
        assert_eq!(alerts.len(), 1);
    }

    #[test]
    fn per_type_by_nested_field_path() {
        let policy = LimitPolicy {
            per_type: vec![TypeLimit {
                function: Some("process_order".into()),
                field_path: "payload.type".into(),
                limit_per_type: 2,
            }],
            ..LimitPolicy::default()
        };
        let mut limits = Limits::default();
        let mut alerts = Vec::new();
        let seq = ["GIFT", "GIFT", "GIFT", "RETAIL", "RETAIL", "RETAIL", "GIFT"];
        let verdicts: Vec<Verdict> = seq
            .iter()
            .map(|k| run(&mut limits, &policy, &order(k), &mut alerts))
            .collect();
        use Verdict::{Allow, Limited};
        assert_eq!(
            verdicts,
            [Allow, Allow, Limited, Allow, Allow, Limited, Limited]
        );
        let keys: Vec<_> = alerts.iter().map(|a| a.key.clone().unwrap()).collect();
        assert_eq!(keys, ["payload.type=GIFT", "payload.type=RETAIL"]);
        // The same path from the argument name.
        assert_eq!(
            type_key(&order("X"), "order.payload.type").as_deref(),
            Some("order.payload.type=X")
        );
        assert_eq!(type_key(&order("X"), "missing"), None);
        limits.reset(Some("shop::process_order"), Some("payload.type=GIFT"));
        assert_eq!(
            run(&mut limits, &policy, &order("GIFT"), &mut alerts),
            Allow
        );
    }
}
