//! `CaptureConfig`: every setting of the capture pipeline, with the original Chronicle's
//! key names, loaded from `chronicle.toml` (or built in code) and validated with errors that
//! name the field and say what is allowed. [`configure`] installs one process-wide for the
//! `#[capture]` attribute.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// Where records are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Sqlite,
    Postgresql,
}

/// How calls are chosen for storage (see [`crate::sampling`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplingStrategy {
    /// Each call with probability `sampling_rate`.
    #[default]
    Random,
    /// Novel inputs always; inputs similar to a recent one at `sampling_rate`.
    Clustering,
    /// A rate between `min_rate` and `max_rate` that rises after errors and novel inputs.
    Adaptive,
}

/// What happens when a function reaches `limit_per_function`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// Store no more calls of the function (until the limit is reset).
    #[default]
    Stop,
    /// Go on storing at `overflow_sample_rate`.
    Sample,
}

impl LimitAction {
    /// The name in `chronicle.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitAction::Stop => "stop",
            LimitAction::Sample => "sample",
        }
    }
}

/// A cap on stored calls per distinct value of a field of the arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeLimit {
    /// Only calls of this function (any function when absent).
    #[serde(default)]
    pub function: Option<String>,
    /// Dotted path into the arguments: an argument name first (`order.kind`), or a field
    /// found in any argument (`type`, `payload.type`).
    pub field_path: String,
    /// Calls stored per distinct value at `field_path`.
    pub limit_per_type: u64,
}

/// Every setting of the capture pipeline. Field names are the keys of `chronicle.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    pub storage_backend: StorageBackend,
    /// SQLite file path or `postgres://` DSN; `chronicle.db` when absent (SQLite).
    pub storage_dsn: Option<String>,
    /// 0 to 1.
    pub sampling_rate: f64,
    pub sampling_strategy: SamplingStrategy,
    /// Random sampling happens in the kernel, before anything is read (attach only). Calls
    /// it leaves out are never seen, so `always_capture_errors` and `always_capture_slow`
    /// only apply to the calls it kept; set this to false to sample after the return.
    pub kernel_presample: bool,
    /// 0 to 1: inputs at least this similar to a recent cluster are not novel.
    pub cluster_similarity_threshold: f64,
    /// Adaptive sampling: the rate stays in `[min_rate, max_rate]`.
    pub min_rate: f64,
    pub max_rate: f64,
    /// Adaptive sampling: the rate is multiplied by this after an error.
    pub error_boost_factor: f64,
    /// Adaptive sampling: the rate is multiplied by this after a novel input.
    pub novelty_boost_factor: f64,
    /// Keep every call that returned an error or unwound.
    pub always_capture_errors: bool,
    /// Keep every call slower than `latency_threshold_ms`.
    pub always_capture_slow: bool,
    pub latency_threshold_ms: f64,
    /// Delete records older than this many days (0: keep forever).
    pub retention_days: u32,
    /// Keep at most this many records per function, the newest (0: no cap).
    pub max_records_per_function: u64,
    pub redaction_enabled: bool,
    /// Regular expressions whose matches in string values are redacted, besides the
    /// defaults (emails, SSN-like numbers, payment card numbers).
    pub redaction_patterns: Vec<String>,
    /// Field names whose values are redacted at any depth, case-insensitively, besides
    /// the defaults (`password`, `secret`, `token`, `api_key`, ...).
    pub redaction_fields: Vec<String>,
    /// Replace with `REDACTED-<hash>` (equal values stay equal) instead of `[REDACTED]`.
    pub redaction_hash: bool,
    pub otel_enabled: bool,
    pub otel_service_name: String,
    /// OTLP/HTTP endpoint (`http://127.0.0.1:4318`).
    pub otel_endpoint: String,
    /// Record errors (`Err`, panics, unwinding) as such.
    pub capture_exceptions: bool,
    /// Record durations.
    pub capture_timing: bool,
    /// Bytes of memory read per probe, 64 to 8192.
    pub max_serialized_size: u32,
    pub track_db_calls: bool,
    pub track_http_calls: bool,
    pub track_file_io: bool,
    /// Stored calls per function before `limit_action` applies (none when absent).
    pub limit_per_function: Option<u64>,
    pub limit_action: LimitAction,
    /// With `limit_action = "sample"`: the rate beyond the limit.
    pub overflow_sample_rate: f64,
    pub type_limits: Vec<TypeLimit>,
    /// Token the dashboard requires on every request; without one, a dashboard on a
    /// non-loopback address makes a random one and prints it.
    pub dashboard_token: Option<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            storage_backend: StorageBackend::Sqlite,
            storage_dsn: None,
            sampling_rate: 1.0,
            sampling_strategy: SamplingStrategy::Random,
            kernel_presample: true,
            cluster_similarity_threshold: 0.9,
            min_rate: 0.01,
            max_rate: 1.0,
            error_boost_factor: 2.0,
            novelty_boost_factor: 1.5,
            always_capture_errors: true,
            always_capture_slow: false,
            latency_threshold_ms: 1000.0,
            retention_days: 30,
            max_records_per_function: 0,
            redaction_enabled: true,
            redaction_patterns: Vec::new(),
            redaction_fields: Vec::new(),
            redaction_hash: false,
            otel_enabled: false,
            otel_service_name: "chronicle".to_owned(),
            otel_endpoint: "http://127.0.0.1:4318".to_owned(),
            capture_exceptions: true,
            capture_timing: true,
            max_serialized_size: 4096,
            track_db_calls: false,
            track_http_calls: false,
            track_file_io: false,
            limit_per_function: None,
            limit_action: LimitAction::Stop,
            overflow_sample_rate: 0.01,
            type_limits: Vec::new(),
            dashboard_token: None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{}: {message}", origin, at(*position, key.as_deref()))]
    Syntax {
        origin: String,
        /// Line and column (from 1) of the mistake, when the parser knows them.
        position: Option<(usize, usize)>,
        /// The key on that line, when there is one.
        key: Option<String>,
        message: String,
    },
    #[error("{origin}{}: {field}: {message}", at(*position, None))]
    BadValue {
        origin: String,
        /// Where the key is set.
        position: Option<(usize, usize)>,
        field: String,
        message: String,
    },
    #[error(
        "redaction_patterns: {pattern:?} is not a valid regular expression; fix or remove it:\n\
         {reason}"
    )]
    Pattern { pattern: String, reason: String },
    #[error("{}: unknown key `{key}`{}", origin, suggest(closest))]
    UnknownKey {
        origin: String,
        key: String,
        closest: Vec<String>,
    },
    #[error("{field} = {value} is not allowed: {allowed}")]
    Invalid {
        field: &'static str,
        value: String,
        allowed: String,
    },
}

/// `, line 3, column 17, at key `sampling_rate`` (or nothing, when the position is unknown).
fn at(position: Option<(usize, usize)>, key: Option<&str>) -> String {
    let mut out = String::new();
    if let Some((line, column)) = position {
        out = format!(", line {line}, column {column}");
    }
    if let Some(key) = key {
        out.push_str(&format!(", at key `{key}`"));
    }
    out
}

/// Line and column (both from 1, the column in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The bare key set on line `line` (from 1) of `text`: `a_key` in `a_key = ...`.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let (key, _) = text.lines().nth(line - 1)?.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    bare.then(|| key.to_owned())
}

/// Where top-level key `key` is set in `text`: its line, column 1.
fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let line = text.lines().position(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })?;
    Some((line + 1, 1))
}

/// A regex error without its "regex parse error:" heading (the pattern and a caret under
/// the mistake, then the reason).
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    text.strip_prefix("regex parse error:\n")
        .unwrap_or(&text)
        .to_owned()
}

impl ConfigError {
    /// The error for redaction pattern `pattern` that did not compile.
    pub fn pattern(pattern: &str, error: &regex::Error) -> ConfigError {
        ConfigError::Pattern {
            pattern: pattern.to_owned(),
            reason: regex_reason(error),
        }
    }
}

fn suggest(closest: &[String]) -> String {
    match closest {
        [] => "; see the README for the keys".to_owned(),
        names => format!(" (did you mean {}?)", names.join(", ")),
    }
}

/// The keys `chronicle.toml` accepts at its top level.
const KEYS: &[&str] = &[
    "storage_backend",
    "storage_dsn",
    "sampling_rate",
    "sampling_strategy",
    "kernel_presample",
    "cluster_similarity_threshold",
    "min_rate",
    "max_rate",
    "error_boost_factor",
    "novelty_boost_factor",
    "always_capture_errors",
    "always_capture_slow",
    "latency_threshold_ms",
    "retention_days",
    "max_records_per_function",
    "redaction_enabled",
    "redaction_patterns",
    "redaction_fields",
    "redaction_hash",
    "otel_enabled",
    "otel_service_name",
    "otel_endpoint",
    "capture_exceptions",
    "capture_timing",
    "max_serialized_size",
    "track_db_calls",
    "track_http_calls",
    "track_file_io",
    "limit_per_function",
    "limit_action",
    "overflow_sample_rate",
    "type_limits",
    "dashboard_token",
];

impl CaptureConfig {
    /// Parses and validates a `chronicle.toml` text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<CaptureConfig, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let position = e.span().map(|span| line_column(text, span.start));
            ConfigError::Syntax {
                origin: origin.to_owned(),
                position,
                key: position.and_then(|(line, _)| key_on_line(text, line)),
                message: e.message().trim_end().to_owned(),
            }
        })?;
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                let mut closest: Vec<(usize, &str)> = KEYS
                    .iter()
                    .map(|k| (chronicle_symbols::resolve::levenshtein(key, k), *k))
                    .filter(|(d, _)| *d <= 3)
                    .collect();
                closest.sort();
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_owned(),
                    key: key.clone(),
                    closest: closest
                        .into_iter()
                        .take(2)
                        .map(|(_, k)| k.to_owned())
                        .collect(),
                });
            }
        }
        let config: CaptureConfig = match CaptureConfig::deserialize(table.clone()) {
            Ok(config) => config,
            Err(e) => {
                // Name the key: the first one that does not deserialize on its own.
                for (key, value) in &table {
                    let mut single = toml::Table::new();
                    single.insert(key.clone(), value.clone());
                    if let Err(e) = CaptureConfig::deserialize(single) {
                        return Err(ConfigError::BadValue {
                            origin: origin.to_owned(),
                            position: key_position(text, key),
                            field: key.clone(),
                            message: e.message().to_owned(),
                        });
                    }
                }
                return Err(ConfigError::Syntax {
                    origin: origin.to_owned(),
                    position: None,
                    key: None,
                    message: e.message().to_owned(),
                });
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a `chronicle.toml` file.
    pub fn load(path: &Path) -> Result<CaptureConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Checks every value; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: String, allowed: &str| {
            Err(ConfigError::Invalid {
                field,
                value,
                allowed: allowed.to_owned(),
            })
        };
        let unit = [
            ("sampling_rate", self.sampling_rate),
            (
                "cluster_similarity_threshold",
                self.cluster_similarity_threshold,
            ),
            ("min_rate", self.min_rate),
            ("max_rate", self.max_rate),
            ("overflow_sample_rate", self.overflow_sample_rate),
        ];
        for (field, v) in unit {
            if !(0.0..=1.0).contains(&v) {
                return invalid(field, v.to_string(), "a number from 0 to 1");
            }
        }
        if self.min_rate > self.max_rate {
            return invalid(
                "min_rate",
                self.min_rate.to_string(),
                &format!("at most max_rate ({})", self.max_rate),
            );
        }
        for (field, v) in [
            ("error_boost_factor", self.error_boost_factor),
            ("novelty_boost_factor", self.novelty_boost_factor),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return invalid(field, v.to_string(), "a number of at least 1");
            }
        }
        if !(self.latency_threshold_ms.is_finite() && self.latency_threshold_ms >= 0.0) {
            return invalid(
                "latency_threshold_ms",
                self.latency_threshold_ms.to_string(),
                "a number of milliseconds, 0 or more",
            );
        }
        if !(64..=8192).contains(&self.max_serialized_size) {
            return invalid(
                "max_serialized_size",
                self.max_serialized_size.to_string(),
                "64 to 8192 bytes",
            );
        }
        if self.limit_per_function == Some(0) {
            return invalid(
                "limit_per_function",
                "0".into(),
                "1 or more (or leave it out)",
            );
        }
        for pattern in &self.redaction_patterns {
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(ConfigError::pattern(pattern, &e));
            }
        }
        for limit in &self.type_limits {
            if limit.field_path.is_empty() || limit.field_path.split('.').any(str::is_empty) {
                return invalid(
                    "type_limits.field_path",
                    format!("{:?}", limit.field_path),
                    "a dotted path such as `type` or `payload.type`",
                );
            }
            if limit.limit_per_type == 0 {
                return invalid("type_limits.limit_per_type", "0".into(), "1 or more");
            }
        }
        if self.otel_enabled && !self.otel_endpoint.starts_with("http://") {
            return invalid(
                "otel_endpoint",
                format!("{:?}", self.otel_endpoint),
                "an http:// URL of an OTLP/HTTP receiver",
            );
        }
        Ok(())
    }
}

static GLOBAL: RwLock<Option<CaptureConfig>> = RwLock::new(None);

/// Installs the process-wide configuration (used by `#[capture]`), after validating it.
pub fn configure(config: CaptureConfig) -> Result<(), ConfigError> {
    config.validate()?;
    *GLOBAL.write().unwrap_or_else(|e| e.into_inner()) = Some(config);
    Ok(())
}

/// The process-wide configuration: what [`configure`] installed, or the defaults.
pub fn config() -> CaptureConfig {
    GLOBAL
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn error(text: &str) -> String {
        CaptureConfig::from_toml_str(text, "chronicle.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_original_keys_and_tables() {
        let config = CaptureConfig::from_toml_str(
            r#"
            storage_backend = "postgresql"
            storage_dsn = "postgres://chronicle@127.0.0.1/chronicle"
            sampling_rate = 0.25
            sampling_strategy = "clustering"
            cluster_similarity_threshold = 0.8
            retention_days = 7
            max_records_per_function = 1000
            redaction_patterns = ['order-\d+']
            redaction_fields = ["pin"]
            otel_enabled = true
            otel_service_name = "orders"
            limit_per_function = 500
            limit_action = "sample"
            overflow_sample_rate = 0.05

            [[type_limits]]
            function = "process_order"
            field_path = "order.kind"
            limit_per_type = 10
            "#,
            "chronicle.toml",
        )
        .unwrap();
        assert_eq!(config.storage_backend, StorageBackend::Postgresql);
        assert_eq!(config.sampling_strategy, SamplingStrategy::Clustering);
        assert_eq!(
            (
                config.sampling_rate,
                config.retention_days,
                config.limit_per_function
            ),
            (0.25, 7, Some(500))
        );
        assert_eq!(config.limit_action, LimitAction::Sample);
        assert_eq!(
            config.type_limits,
            [TypeLimit {
                function: Some("process_order".into()),
                field_path: "order.kind".into(),
                limit_per_type: 10,
            }]
        );
        // Everything not given keeps its default.
        assert!(config.always_capture_errors && config.redaction_enabled);
        assert_eq!(config.max_serialized_size, 4096);
    }

    #[test]
    fn mistakes_name_the_field() {
        assert_eq!(
            error("sampling_rat = 0.5"),
            "chronicle.toml: unknown key `sampling_rat` (did you mean sampling_rate?)"
        );
        assert_eq!(
            error("sampling_rate = 1.5"),
            "sampling_rate = 1.5 is not allowed: a number from 0 to 1"
        );
        assert_eq!(
            error("sampling_strategy = \"smart\""),
            "chronicle.toml, line 1, column 1: sampling_strategy: unknown variant `smart`, \
             expected one of `random`, `clustering`, `adaptive`"
        );
        assert_eq!(
            error("redaction_patterns = ['(unclosed']"),
            "redaction_patterns: \"(unclosed\" is not a valid regular expression; fix or \
             remove it:\n    (unclosed\n    ^\nerror: unclosed group"
        );
        assert_eq!(
            error("min_rate = 0.5\nmax_rate = 0.2"),
            "min_rate = 0.5 is not allowed: at most max_rate (0.2)"
        );
        assert_eq!(
            error("sampling_rate = 0.5\nretention_days = \"forever\""),
            "chronicle.toml, line 2, column 1: retention_days: invalid type: string \
             \"forever\", expected u32"
        );
    }

    #[test]
    fn syntax_errors_give_line_column_and_key() {
        assert_eq!(
            error("sampling_rate = 0.5\nretention_days = "),
            "chronicle.toml, line 2, column 18, at key `retention_days`: string values must \
             be quoted, expected literal string"
        );
        assert_eq!(
            error("# limits\n[[type_limits]\nfunction = \"f\"\n"),
            "chronicle.toml, line 2, column 15: unclosed array table, expected `]`"
        );
        assert_eq!(
            error("sampling_rate = 0.5\nsampling_rate = 0.2\n"),
            "chronicle.toml, line 2, column 1, at key `sampling_rate`: duplicate key"
        );
        // Columns count characters, not bytes.
        assert_eq!(
            error("otel_service_name = \"café\" x"),
            "chronicle.toml, line 1, column 28, at key `otel_service_name`: unexpected key or \
             value, expected newline, `#`"
        );
    }

    #[test]
    fn configure_validates_and_installs() {
        let bad = CaptureConfig {
            max_serialized_size: 10,
            ..CaptureConfig::default()
        };
        assert!(configure(bad).is_err());
        let good = CaptureConfig {
            sampling_rate: 0.5,
            ..CaptureConfig::default()
        };
        configure(good.clone()).unwrap();
        assert_eq!(config(), good);
    }
}
