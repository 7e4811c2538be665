//! The lossless encoding of values in storage.
//!
//! The export format is meant for people and other tools and loses distinctions (a C enum
//! and a string are both JSON strings; `u64::MAX` and `i64::MIN` need a reader that keeps
//! 64-bit integers). Storage must give back exactly what was captured, so it uses its own
//! tagged JSON: plain JSON only for `null`, booleans, strings and arrays, and a one-key
//! object for everything else:
//!
//! | value | stored as |
//! |---|---|
//! | `Int(-1)` | `{"i":-1}` |
//! | `UInt(18446744073709551615)` | `{"u":18446744073709551615}` |
//! | `Float(1.5)` | `{"f":"1.5"}` (Rust's shortest exact text; also `NaN`, `inf`, `-inf`) |
//! | `Bytes([0xff])` | `{"b":"ff"}` |
//! | `Enum("RED")` | `{"e":"RED"}` |
//! | `Ptr(4096)` | `{"p":4096}` |
//! | `Struct([("x", ..), ("y", ..)])` | `{"s":["x",..,"y",..]}` |
//! | `Variant("Some", ..)` | `{"v":["Some",..]}` |
//!
//! Named lists (struct fields, call arguments) are flat `[name, value, ...]` arrays rather
//! than objects so that order and duplicate names survive, and so that each level of a value
//! costs at most two levels of JSON nesting: serde_json refuses to parse more than 128.

use serde_json::{Value as Json, json};

use super::StorageError;
use crate::record::{CallRecord, Dependency, DependencyKind, Status, Value};
use crate::time;

/// Values nested deeper than this cannot be stored (two JSON levels per value level, plus
/// one for the argument list, must stay under serde_json's parse limit of 128).
pub(crate) const MAX_DEPTH: usize = 60;

/// A stored value that this version cannot read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON")]
    Json(#[from] serde_json::Error),
    #[error("expected {expected}, found `{found}`")]
    Unexpected {
        expected: &'static str,
        found: String,
    },
}

/// A value nested more than [`MAX_DEPTH`] levels deep.
#[derive(Debug)]
pub(crate) struct TooDeep;

pub(crate) fn encode_value(value: &Value) -> Result<String, TooDeep> {
    Ok(to_json(value, 0)?.to_string())
}

pub(crate) fn encode_fields(fields: &[(String, Value)]) -> Result<String, TooDeep> {
    Ok(fields_to_json(fields, 0)?.to_string())
}

pub(crate) fn decode_value(text: &str) -> Result<Value, DecodeError> {
    from_json(&serde_json::from_str(text)?)
}

pub(crate) fn decode_fields(text: &str) -> Result<Vec<(String, Value)>, DecodeError> {
    fields_from_json(&serde_json::from_str(text)?)
}

/// Dependencies as `[[kind, offset_ns, duration_ns | null, [name, value, ...]], ...]`.
pub(crate) fn encode_dependencies(dependencies: &[Dependency]) -> Result<String, TooDeep> {
    let list = dependencies
        .iter()
        .map(|d| {
            Ok(json!([
                d.kind.as_str(),
                d.offset_ns,
                d.duration_ns,
                fields_to_json(&d.detail, 1)?
            ]))
        })
        .collect::<Result<Vec<Json>, TooDeep>>()?;
    Ok(Json::Array(list).to_string())
}

pub(crate) fn decode_dependencies(text: &str) -> Result<Vec<Dependency>, DecodeError> {
    let unexpected = |found: &Json| DecodeError::Unexpected {
        expected: "[kind, offset_ns, duration_ns, fields]",
        found: found.to_string(),
    };
    let json: Json = serde_json::from_str(text)?;
    let Json::Array(list) = &json else {
        return Err(unexpected(&json));
    };
    list.iter()
        .map(|item| match item.as_array().map(Vec::as_slice) {
            Some([kind, offset, duration, detail]) => Ok(Dependency {
                kind: kind
                    .as_str()
                    .and_then(DependencyKind::parse)
                    .ok_or_else(|| unexpected(item))?,
                offset_ns: offset.as_u64().ok_or_else(|| unexpected(item))?,
                duration_ns: match duration {
                    Json::Null => None,
                    d => Some(d.as_u64().ok_or_else(|| unexpected(item))?),
                },
                detail: fields_from_json(detail)?,
            }),
            _ => Err(unexpected(item)),
        })
        .collect()
}

/// The columns of a record that every backend stores encoded.
pub(crate) struct EncodedRecord {
    pub(crate) timestamp_ns: i64,
    pub(crate) duration_ns: Option<i64>,
    pub(crate) args: String,
    pub(crate) ret: Option<String>,
    pub(crate) unavailable: String,
    /// `None` when the record has no `after` values.
    pub(crate) after: Option<String>,
    /// `None` when the record has no dependencies.
    pub(crate) dependencies: Option<String>,
}

impl EncodedRecord {
    /// Encodes `record`, or says which of its values cannot be stored.
    pub(crate) fn encode(record: &CallRecord) -> Result<EncodedRecord, StorageError> {
        let out_of_range = |field| StorageError::OutOfRange {
            function: record.function.clone(),
            field,
        };
        let too_deep = |name: &str| StorageError::ValueTooDeep {
            function: record.function.clone(),
            name: name.to_owned(),
        };
        let args = encode_fields(&record.args).map_err(|TooDeep| {
            let (name, _) = record
                .args
                .iter()
                .find(|(_, value)| encode_value(value).is_err())
                .expect("the argument that is too deep");
            too_deep(name)
        })?;
        Ok(EncodedRecord {
            timestamp_ns: time::to_unix_nanos(record.timestamp)
                .ok_or_else(|| out_of_range("timestamp"))?,
            duration_ns: record
                .duration_ns
                .map(i64::try_from)
                .transpose()
                .map_err(|_| out_of_range("duration"))?,
            args,
            ret: record
                .ret
                .as_ref()
                .map(encode_value)
                .transpose()
                .map_err(|TooDeep| too_deep("return"))?,
            unavailable: serde_json::to_string(&record.unavailable)
                .expect("string pairs always serialize"),
            after: if record.after.is_empty() {
                None
            } else {
                Some(encode_fields(&record.after).map_err(|TooDeep| too_deep("after"))?)
            },
            dependencies: if record.dependencies.is_empty() {
                None
            } else {
                Some(
                    encode_dependencies(&record.dependencies)
                        .map_err(|TooDeep| too_deep("dependencies"))?,
                )
            },
        })
    }
}

/// A record's columns as a backend read them, before decoding.
pub(crate) struct StoredRecord {
    pub(crate) id: i64,
    pub(crate) function: String,
    pub(crate) binary: String,
    pub(crate) build_id: String,
    pub(crate) pid: i64,
    pub(crate) tid: i64,
    pub(crate) timestamp_ns: i64,
    pub(crate) duration_ns: Option<i64>,
    pub(crate) status: String,
    pub(crate) args: String,
    pub(crate) ret: Option<String>,
    pub(crate) unavailable: String,
    pub(crate) after: Option<String>,
    pub(crate) dependencies: Option<String>,
}

impl StoredRecord {
    /// The record these columns hold, or which column cannot be read back.
    pub(crate) fn decode(self) -> Result<CallRecord, StorageError> {
        let id = self.id;
        let corrupt = |column| move |source| StorageError::Corrupt { id, column, source };
        let status = Status::parse(&self.status).ok_or_else(|| {
            corrupt("status")(DecodeError::Unexpected {
                expected: "ok, error or unwound",
                found: self.status.clone(),
            })
        })?;
        let duration_ns = match self.duration_ns {
            None => None,
            Some(ns) => Some(u64::try_from(ns).map_err(|_| {
                corrupt("duration_ns")(DecodeError::Unexpected {
                    expected: "a duration of zero or more",
                    found: ns.to_string(),
                })
            })?),
        };
        let thread_id = |column, n: i64| {
            u32::try_from(n).map_err(|_| {
                corrupt(column)(DecodeError::Unexpected {
                    expected: "a 32-bit process or thread id",
                    found: n.to_string(),
                })
            })
        };
        Ok(CallRecord {
            id: Some(id),
            pid: thread_id("pid", self.pid)?,
            tid: thread_id("tid", self.tid)?,
            function: self.function,
            binary: self.binary,
            build_id: self.build_id,
            timestamp: time::from_unix_nanos(self.timestamp_ns),
            duration_ns,
            status,
            args: decode_fields(&self.args).map_err(corrupt("args"))?,
            ret: self
                .ret
                .as_deref()
                .map(decode_value)
                .transpose()
                .map_err(corrupt("ret"))?,
            unavailable: serde_json::from_str(&self.unavailable)
                .map_err(|e| corrupt("unavailable")(DecodeError::Json(e)))?,
            after: match self.after.as_deref() {
                Some(text) => decode_fields(text).map_err(corrupt("after_values"))?,
                None => Vec::new(),
            },
            dependencies: match self.dependencies.as_deref() {
                Some(text) => decode_dependencies(text).map_err(corrupt("dependencies"))?,
                None => Vec::new(),
            },
        })
    }
}

fn to_json(value: &Value, depth: usize) -> Result<Json, TooDeep> {
    if depth >= MAX_DEPTH {
        return Err(TooDeep);
    }
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Str(s) => Json::String(s.clone()),
        Value::Int(i) => json!({ "i": i }),
        Value::UInt(u) => json!({ "u": u }),
        Value::Float(f) => json!({ "f": format!("{f:?}") }),
        Value::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            json!({ "b": hex })
        }
        Value::Enum(name) => json!({ "e": name }),
        Value::Ptr(addr) => json!({ "p": addr }),
        Value::Struct(fields) => json!({ "s": fields_to_json(fields, depth + 1)? }),
        Value::Array(items) => Json::Array(
            items
                .iter()
                .map(|item| to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Variant(name, payload) => json!({ "v": [name, to_json(payload, depth + 1)?] }),
    })
}

fn fields_to_json(fields: &[(String, Value)], depth: usize) -> Result<Json, TooDeep> {
    let mut flat = Vec::with_capacity(fields.len() * 2);
    for (name, value) in fields {
        flat.push(Json::String(name.clone()));
        flat.push(to_json(value, depth)?);
    }
    Ok(Json::Array(flat))
}

fn from_json(json: &Json) -> Result<Value, DecodeError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(from_json).collect::<Result<_, _>>()?),
        Json::Object(map) if map.len() == 1 => {
            let (tag, inner) = map.iter().next().expect("one entry");
            match tag.as_str() {
                "i" => Value::Int(inner.as_i64().ok_or_else(|| unexpected("an i64", inner))?),
                "u" => Value::UInt(inner.as_u64().ok_or_else(|| unexpected("a u64", inner))?),
                "f" => Value::Float(
                    inner
                        .as_str()
                        .and_then(|text| text.parse().ok())
                        .ok_or_else(|| unexpected("a float as text", inner))?,
                ),
                "b" => Value::Bytes(
                    inner
                        .as_str()
                        .and_then(parse_hex)
                        .ok_or_else(|| unexpected("hex", inner))?,
                ),
                "e" => Value::Enum(string(inner, "an enumerator name")?),
                "p" => Value::Ptr(
                    inner
                        .as_u64()
                        .ok_or_else(|| unexpected("an address", inner))?,
                ),
                "s" => Value::Struct(fields_from_json(inner)?),
                "v" => match inner.as_array().map(Vec::as_slice) {
                    Some([Json::String(name), payload]) => {
                        Value::Variant(name.clone(), Box::new(from_json(payload)?))
                    }
                    _ => return Err(unexpected("[variant, payload]", inner)),
                },
                _ => return Err(unexpected("a value tag (i, u, f, b, e, p, s, v)", json)),
            }
        }
        _ => return Err(unexpected("a tagged value", json)),
    })
}

fn fields_from_json(json: &Json) -> Result<Vec<(String, Value)>, DecodeError> {
    let flat = json.as_array().filter(|flat| flat.len().is_multiple_of(2));
    let flat = flat.ok_or_else(|| unexpected("a [name, value, ...] list", json))?;
    flat.chunks_exact(2)
        .map(|pair| Ok((string(&pair[0], "a field name")?, from_json(&pair[1])?)))
        .collect()
}

fn string(json: &Json, expected: &'static str) -> Result<String, DecodeError> {
    json.as_str()
        .map(str::to_owned)
        .ok_or_else(|| unexpected(expected, json))
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unexpected(expected: &'static str, found: &Json) -> DecodeError {
    let mut found = found.to_string();
    if found.len() > 80 {
        let mut cut = 77;
        while !found.is_char_boundary(cut) {
            cut -= 1;
        }
        found.truncate(cut);
        found.push_str("...");
    }
    DecodeError::Unexpected { expected, found }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes, checks the stored text, decodes, and checks the value came back exactly.
    #[track_caller]
    fn check(value: Value, expect: &str) {
        let text = encode_value(&value).unwrap();
        assert_eq!(text, expect);
        assert_eq!(decode_value(&text).unwrap(), value);
    }

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    #[test]
    fn every_variant_round_trips() {
        check(Value::Null, "null");
        check(Value::Bool(true), "true");
        check(Value::Bool(false), "false");
        check(Value::Int(i64::MIN), r#"{"i":-9223372036854775808}"#);
        check(Value::Int(i64::MAX), r#"{"i":9223372036854775807}"#);
        check(Value::Int(0), r#"{"i":0}"#);
        check(Value::UInt(u64::MAX), r#"{"u":18446744073709551615}"#);
        check(Value::UInt(0), r#"{"u":0}"#);
        check(Value::Float(1.5), r#"{"f":"1.5"}"#);
        check(Value::Float(0.1), r#"{"f":"0.1"}"#);
        check(Value::Float(-0.0), r#"{"f":"-0.0"}"#);
        check(Value::Float(f64::MAX), r#"{"f":"1.7976931348623157e308"}"#);
        check(
            Value::Float(f64::MIN_POSITIVE),
            r#"{"f":"2.2250738585072014e-308"}"#,
        );
        check(Value::Float(5e-324), r#"{"f":"5e-324"}"#);
        check(Value::Float(f64::INFINITY), r#"{"f":"inf"}"#);
        check(Value::Float(f64::NEG_INFINITY), r#"{"f":"-inf"}"#);
        check(s("héllo \"q\"\n"), r#""héllo \"q\"\n""#);
        check(s(""), r#""""#);
        check(Value::Bytes(vec![0xff, 0x00, 0x7f]), r#"{"b":"ff007f"}"#);
        check(Value::Bytes(vec![]), r#"{"b":""}"#);
        check(Value::Enum("RED".into()), r#"{"e":"RED"}"#);
        check(Value::Ptr(0x7ffd_1000), r#"{"p":2147291136}"#);
        check(Value::Ptr(u64::MAX), r#"{"p":18446744073709551615}"#);
        check(
            Value::Struct(vec![
                ("z".into(), Value::Int(1)),
                ("a".into(), s("x")),
                ("z".into(), Value::Null),
            ]),
            r#"{"s":["z",{"i":1},"a","x","z",null]}"#,
        );
        check(Value::Struct(vec![]), r#"{"s":[]}"#);
        check(
            Value::Array(vec![Value::UInt(1), s("a"), Value::Null]),
            r#"[{"u":1},"a",null]"#,
        );
        check(Value::Array(vec![]), "[]");
        check(
            Value::Variant("Err".into(), Box::new(Value::Enum("E".into()))),
            r#"{"v":["Err",{"e":"E"}]}"#,
        );
        check(
            Value::Variant("None".into(), Box::new(Value::Null)),
            r#"{"v":["None",null]}"#,
        );
    }

    #[test]
    fn nan_stays_nan() {
        let text = encode_value(&Value::Float(f64::NAN)).unwrap();
        assert_eq!(text, r#"{"f":"NaN"}"#);
        assert!(matches!(decode_value(&text).unwrap(), Value::Float(f) if f.is_nan()));
    }

    #[test]
    fn lookalikes_stay_distinct() {
        // A struct whose only field is named like a tag is not mistaken for that tag.
        check(
            Value::Struct(vec![("i".into(), Value::Int(1))]),
            r#"{"s":["i",{"i":1}]}"#,
        );
        check(s("RED"), r#""RED""#);
        check(Value::Enum("RED".into()), r#"{"e":"RED"}"#);
        check(
            Value::Variant("x".into(), Box::new(Value::Int(1))),
            r#"{"v":["x",{"i":1}]}"#,
        );
    }

    #[test]
    fn fields_keep_order_and_duplicates() {
        let fields = vec![
            ("b".to_string(), Value::UInt(2)),
            ("a".to_string(), Value::Array(vec![Value::Bool(true)])),
            ("b".to_string(), Value::Null),
        ];
        let text = encode_fields(&fields).unwrap();
        assert_eq!(text, r#"["b",{"u":2},"a",[true],"b",null]"#);
        assert_eq!(decode_fields(&text).unwrap(), fields);
        assert_eq!(encode_fields(&[]).unwrap(), "[]");
        assert_eq!(decode_fields("[]").unwrap(), vec![]);
    }

    fn nested(depth: usize) -> Value {
        let mut value = Value::Int(0);
        for _ in 1..depth {
            value = Value::Struct(vec![("next".into(), value)]);
        }
        value
    }

    #[test]
    fn depth_limit() {
        let deepest = nested(MAX_DEPTH);
        let text = encode_fields(&[("list".into(), deepest.clone())]).unwrap();
        assert_eq!(
            decode_fields(&text).unwrap(),
            vec![("list".into(), deepest)]
        );
        assert!(encode_value(&nested(MAX_DEPTH + 1)).is_err());
    }

    #[track_caller]
    fn check_error(text: &str, expect: &str) {
        assert_eq!(decode_value(text).unwrap_err().to_string(), expect);
    }

    #[test]
    fn rejects_what_it_did_not_write() {
        check_error("{", "not valid JSON");
        check_error("1", "expected a tagged value, found `1`");
        check_error(
            r#"{"x":1}"#,
            r#"expected a value tag (i, u, f, b, e, p, s, v), found `{"x":1}`"#,
        );
        check_error(
            r#"{"i":1,"u":2}"#,
            r#"expected a tagged value, found `{"i":1,"u":2}`"#,
        );
        check_error(r#"{"i":1.5}"#, "expected an i64, found `1.5`");
        check_error(r#"{"u":-1}"#, "expected a u64, found `-1`");
        check_error(r#"{"f":"x"}"#, r#"expected a float as text, found `"x"`"#);
        check_error(r#"{"b":"f"}"#, r#"expected hex, found `"f"`"#);
        check_error(r#"{"b":"zz"}"#, r#"expected hex, found `"zz"`"#);
        check_error(
            r#"{"s":["a"]}"#,
            r#"expected a [name, value, ...] list, found `["a"]`"#,
        );
        check_error(r#"{"s":[1,null]}"#, "expected a field name, found `1`");
        check_error(
            r#"{"v":["A"]}"#,
            r#"expected [variant, payload], found `["A"]`"#,
        );
        check_error(r#"{"e":1}"#, "expected an enumerator name, found `1`");
        check_error(r#"[{"u":1},2]"#, "expected a tagged value, found `2`");
        let text = format!(r#"{{"zz":"{}"}}"#, "a".repeat(100));
        assert_eq!(
            decode_value(&text).unwrap_err().to_string(),
            format!(
                "expected a value tag (i, u, f, b, e, p, s, v), found `{{\"zz\":\"{}...`",
                "a".repeat(70)
            )
        );
    }
}
