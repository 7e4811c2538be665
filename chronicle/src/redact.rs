//! Redaction, applied to every record before anything is written or exported: matches of
//! regular expressions in string values (defaults: emails, SSN-like numbers, payment card
//! numbers that pass the Luhn check), and whole values of fields with sensitive names
//! (`password`, `token`, ... at any depth, case-insensitively) in arguments, return values
//! and `after` values.
//!
//! The replacement is `[REDACTED]`, or with hashing `REDACTED-<12 hex digits of SHA-256>` of
//! the redacted text, so equal secrets stay equal (replay comparisons, clustering) without
//! being readable.

use regex::Regex;
use sha2::{Digest, Sha256};

use crate::record::CallRecord;
use crate::record::Value;

/// Field names redacted by default (compared case-insensitively, also as a `_`-separated
/// part of a longer name: `db_password`, `token_id`).
pub const DEFAULT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "credentials",
    "private_key",
    "ssn",
    "card_number",
    "cvv",
];

/// Patterns redacted by default: emails, US SSN-like numbers, payment card numbers.
pub const DEFAULT_PATTERNS: &[&str] = &[
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    r"\b\d{3}-\d{2}-\d{4}\b",
    r"\b\d(?:[ -]?\d){12,18}\b",
];

/// Index of the card-number pattern in [`DEFAULT_PATTERNS`]: its matches must pass Luhn.
const CARD_PATTERN: usize = 2;

/// A compiled set of redaction rules.
#[derive(Clone, Debug)]
pub struct Redactor {
    patterns: Vec<(Regex, bool)>,
    /// All patterns at once: most strings match none, and one scan says so.
    any: regex::RegexSet,
    /// Sensitive field names, whole or as a `_`-separated part, any case.
    fields: Regex,
    hash: bool,
}

/// Why a redactor could not be built.
#[derive(Debug, thiserror::Error)]
#[error("redaction pattern {pattern:?} is not a valid regular expression: {source}")]
pub struct PatternError {
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

impl Redactor {
    /// The default rules plus `patterns` and `fields`.
    pub fn new(
        patterns: &[String],
        fields: &[String],
        hash: bool,
    ) -> Result<Redactor, PatternError> {
        let mut compiled = Vec::new();
        for (i, p) in DEFAULT_PATTERNS.iter().enumerate() {
            compiled.push((
                Regex::new(p).expect("default patterns compile"),
                i == CARD_PATTERN,
            ));
        }
        for p in patterns {
            let regex = Regex::new(p).map_err(|source| PatternError {
                pattern: p.clone(),
                source,
            })?;
            compiled.push((regex, false));
        }
        let any = regex::RegexSet::new(compiled.iter().map(|(r, _)| r.as_str()))
            .expect("patterns that compiled one by one compile as a set");
        // One pattern for every sensitive name, as a whole name or a `_`-separated part:
        // matching it is one scan, where testing each name cost a substring search per name
        // and field (a few percent of the capture thread at full rate).
        let alternatives: Vec<String> = DEFAULT_FIELDS
            .iter()
            .map(|f| f.to_string())
            .chain(fields.iter().map(|f| f.to_lowercase()))
            .map(|f| regex::escape(&f))
            .collect();
        let fields = Regex::new(&format!("(?i)(?:^|_)(?:{})(?:_|$)", alternatives.join("|")))
            .expect("escaped names compile");
        Ok(Redactor {
            patterns: compiled,
            any,
            fields,
            hash,
        })
    }

    /// Redacts a record in place; returns how many values or matches were replaced.
    pub fn redact(&self, record: &mut CallRecord) -> u64 {
        let mut count = 0;
        for (name, value) in record.args.iter_mut().chain(record.after.iter_mut()) {
            count += self.field(name, value);
        }
        if let Some(ret) = record.ret.as_mut() {
            count += self.value(ret);
        }
        // SQL parameters, paths, headers: the same rules by name and by pattern.
        for dependency in &mut record.dependencies {
            for (name, value) in &mut dependency.detail {
                count += self.field(name, value);
            }
        }
        count
    }

    /// A sensitive name, or one with a sensitive name as a `_`-separated part.
    fn sensitive(&self, name: &str) -> bool {
        self.fields.is_match(name)
    }

    fn field(&self, name: &str, value: &mut Value) -> u64 {
        if self.sensitive(name) && !matches!(value, Value::Null) {
            *value = Value::Str(self.replacement(&value.to_json().to_string()));
            return 1;
        }
        self.value(value)
    }

    fn value(&self, value: &mut Value) -> u64 {
        match value {
            Value::Str(text) => self.text(text),
            Value::Bytes(bytes) => {
                let mut text = String::from_utf8_lossy(bytes).into_owned();
                let n = self.text(&mut text);
                if n > 0 {
                    *value = Value::Str(text);
                }
                n
            }
            Value::Struct(fields) => fields.iter_mut().map(|(n, v)| self.field(n, v)).sum(),
            Value::Array(items) => items.iter_mut().map(|v| self.value(v)).sum(),
            Value::Variant(_, payload) => self.value(payload),
            Value::Null
            | Value::Bool(_)
            | Value::Int(_)
            | Value::UInt(_)
            | Value::Float(_)
            | Value::Enum(_)
            | Value::Ptr(_) => 0,
        }
    }

    /// Replaces every match in `text`; returns the number of matches replaced.
    fn text(&self, text: &mut String) -> u64 {
        if !self.any.is_match(text) {
            return 0;
        }
        let mut count = 0;
        for (regex, luhn) in &self.patterns {
            if !regex.is_match(text) {
                continue;
            }
            let mut out = String::with_capacity(text.len());
            let mut last = 0;
            for m in regex.find_iter(text) {
                if *luhn && !luhn_ok(m.as_str()) {
                    continue;
                }
                out.push_str(&text[last..m.start()]);
                out.push_str(&self.replacement(m.as_str()));
                last = m.end();
                count += 1;
            }
            out.push_str(&text[last..]);
            *text = out;
        }
        count
    }

    fn replacement(&self, secret: &str) -> String {
        if self.hash {
            let digest = Sha256::digest(secret.as_bytes());
            let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("REDACTED-{hex}")
        } else {
            "[REDACTED]".to_owned()
        }
    }
}

/// The Luhn checksum of the digits in `text` (spaces and dashes ignored).
fn luhn_ok(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if !i.is_multiple_of(2) {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::record;
    use serde_json::json;

    fn redacted(redactor: &Redactor, args: Vec<(&str, Value)>) -> (serde_json::Value, u64) {
        let mut r = record("f");
        r.args = args.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let n = redactor.redact(&mut r);
        let json: serde_json::Map<String, serde_json::Value> = r
            .args
            .iter()
            .map(|(n, v)| (n.clone(), v.to_json()))
            .collect();
        (json.into(), n)
    }

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    #[test]
    fn default_patterns_in_strings_at_any_depth() {
        let r = Redactor::new(&[], &[], false).unwrap();
        let (json, n) = redacted(
            &r,
            vec![
                ("note", s("mail ada@example.co.uk or call")),
                ("memo", s("id 123-45-6789.")),
                ("card", s("4111 1111 1111 1111")),
                // Not a valid card number (Luhn): an order id stays.
                ("order", s("4111111111111112")),
                (
                    "nested",
                    Value::Array(vec![Value::Variant(
                        "Some".into(),
                        Box::new(Value::Bytes(b"to bob@example.com\xff".to_vec())),
                    )]),
                ),
            ],
        );
        assert_eq!(
            json,
            json!({
                "note": "mail [REDACTED] or call",
                "memo": "id [REDACTED].",
                "card": "[REDACTED]",
                "order": "4111111111111112",
                "nested": [{"Some": "to [REDACTED]\u{fffd}"}],
            })
        );
        assert_eq!(n, 4);
    }

    #[test]
    fn sensitive_fields_case_insensitive_at_any_depth() {
        let r = Redactor::new(&[], &["PIN".into()], false).unwrap();
        let (json, n) = redacted(
            &r,
            vec![
                ("Password", s("hunter2")),
                (
                    "user",
                    Value::Struct(
                        vec![
                            ("name", s("ada")),
                            ("API_KEY", Value::UInt(1234)),
                            ("db_password", s("x")),
                            ("pin", Value::Int(7)),
                            ("tokens_left", Value::Int(3)),
                            ("secret", Value::Null),
                        ]
                        .into_iter()
                        .map(|(n, v)| (n.to_owned(), v))
                        .collect(),
                    ),
                ),
            ],
        );
        assert_eq!(
            json,
            json!({
                "Password": "[REDACTED]",
                "user": {"name": "ada", "API_KEY": "[REDACTED]", "db_password": "[REDACTED]",
                         "pin": "[REDACTED]", "tokens_left": 3, "secret": null},
            })
        );
        assert_eq!(n, 4);
    }

    #[test]
    fn hashing_keeps_equal_values_equal() {
        let r = Redactor::new(&[r"order-\d+".into()], &[], true).unwrap();
        let (json, _) = redacted(
            &r,
            vec![
                ("a", s("order-42")),
                ("b", s("order-42")),
                ("c", s("order-43")),
                ("token", s("t0k3n")),
            ],
        );
        let a = json["a"].as_str().unwrap();
        assert!(
            a.starts_with("REDACTED-") && a.len() == "REDACTED-".len() + 12,
            "{a}"
        );
        assert_eq!(json["a"], json["b"]);
        assert_ne!(json["a"], json["c"]);
        assert_ne!(json["token"], "t0k3n");
    }

    #[test]
    fn return_and_after_values_too() {
        let r = Redactor::new(&[], &[], false).unwrap();
        let mut rec = record("f");
        rec.ret = Some(Value::Struct(vec![("token".into(), s("abc"))]));
        rec.after = vec![("buf".into(), s("ada@example.com"))];
        assert_eq!(r.redact(&mut rec), 2);
        assert_eq!(rec.ret.unwrap().to_json(), json!({"token": "[REDACTED]"}));
        assert_eq!(rec.after[0].1, s("[REDACTED]"));
    }

    #[test]
    fn dependency_details_too() {
        use crate::record::{Dependency, DependencyKind};
        let r = Redactor::new(&[], &[], false).unwrap();
        let mut rec = record("f");
        rec.args.clear();
        rec.dependencies = vec![Dependency {
            kind: DependencyKind::Db,
            offset_ns: 0,
            duration_ns: None,
            detail: vec![
                (
                    "statement".into(),
                    s("SELECT id FROM users WHERE email = 'ada@example.com'"),
                ),
                (
                    "params".into(),
                    Value::Struct(vec![
                        ("api_key".into(), s("k-123")),
                        ("n".into(), Value::UInt(1)),
                    ]),
                ),
            ],
        }];
        assert_eq!(r.redact(&mut rec), 2);
        let json = crate::export::dependency_json(&rec.dependencies[0]);
        assert_eq!(
            json["detail"],
            json!({"statement": "SELECT id FROM users WHERE email = '[REDACTED]'",
                   "params": {"api_key": "[REDACTED]", "n": 1}})
        );
    }

    #[test]
    fn invalid_pattern_is_an_error() {
        let e = Redactor::new(&["[".into()], &[], false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("redaction pattern \"[\" is not a valid"),
            "{e}"
        );
    }
}
