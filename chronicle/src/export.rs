//! The export format of DESIGN.md: what `chronicle export` writes and other tools read.
//!
//! One JSON object per record with its keys in a fixed order, values as
//! [`Value::to_json`](crate::Value::to_json) renders them. This format is lossy on purpose
//! (a C enum and a string look alike); storage keeps its own exact encoding.

use serde_json::{Map, Value as Json};

use crate::record::{CallRecord, Dependency};
use crate::storage::FunctionSummary;
use crate::time::rfc3339;

/// One record in the export format.
pub fn record_json(r: &CallRecord) -> Json {
    let mut object = Map::new();
    object.insert("id".into(), r.id.into());
    object.insert("function".into(), r.function.clone().into());
    object.insert("binary".into(), r.binary.clone().into());
    object.insert("build_id".into(), r.build_id.clone().into());
    object.insert("pid".into(), r.pid.into());
    object.insert("tid".into(), r.tid.into());
    object.insert("timestamp".into(), rfc3339(r.timestamp).into());
    object.insert("duration_ns".into(), r.duration_ns.into());
    object.insert("status".into(), r.status.as_str().into());
    let args = r
        .args
        .iter()
        .map(|(name, value)| (name.clone(), value.to_json()));
    object.insert("args".into(), Json::Object(args.collect()));
    object.insert(
        "return".into(),
        r.ret.as_ref().map_or(Json::Null, |value| value.to_json()),
    );
    object.insert("replayable".into(), r.replayable().into());
    let unavailable = r
        .unavailable
        .iter()
        .map(|(name, why)| (name.clone(), why.clone().into()));
    object.insert("unavailable".into(), Json::Object(unavailable.collect()));
    // Only with `attach --after`: output parameters as they were at return.
    if !r.after.is_empty() {
        let after = r
            .after
            .iter()
            .map(|(name, value)| (name.clone(), value.to_json()));
        object.insert("after".into(), Json::Object(after.collect()));
    }
    let dependencies = r.dependencies.iter().map(dependency_json).collect();
    object.insert("dependencies".into(), Json::Array(dependencies));
    Json::Object(object)
}

/// `{"kind": "db", "detail": {...}, "duration_ns": N, "offset_ns": N}`.
pub fn dependency_json(d: &Dependency) -> Json {
    let detail = d
        .detail
        .iter()
        .map(|(name, value)| (name.clone(), value.to_json()));
    let mut object = Map::new();
    object.insert("kind".into(), d.kind.as_str().into());
    object.insert("detail".into(), Json::Object(detail.collect()));
    object.insert("duration_ns".into(), d.duration_ns.into());
    object.insert("offset_ns".into(), d.offset_ns.into());
    Json::Object(object)
}

/// A dependency in a few words, from its export-format object: `SELECT`, `GET /stock/7`,
/// `connect 127.0.0.1:80`, `file write /tmp/x`.
pub fn dependency_summary(d: &Json) -> String {
    let text = |name| detail_text(d, name);
    let kind = d["kind"].as_str().unwrap_or("dependency");
    let words: Vec<String> = match kind {
        "db" => vec![
            text("statement")
                .and_then(|q| q.split_whitespace().next().map(str::to_uppercase))
                .unwrap_or_else(|| "db".to_owned()),
        ],
        "http" => [text("method"), text("target")]
            .into_iter()
            .flatten()
            .collect(),
        "net" => ["connect".to_owned()]
            .into_iter()
            .chain(text("address"))
            .collect(),
        "file" => ["file".to_owned()].into_iter().chain(text("op")).collect(),
        other => vec![other.to_owned()],
    };
    if words.is_empty() {
        kind.to_owned()
    } else {
        words.join(" ")
    }
}

/// A detail field of a dependency's export-format object as text: strings as they are,
/// other values as JSON; `None` when absent.
pub(crate) fn detail_text(d: &Json, name: &str) -> Option<String> {
    match &d["detail"][name] {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Records in the export format: a JSON array.
pub fn export_json(records: &[CallRecord]) -> Json {
    Json::Array(records.iter().map(record_json).collect())
}

/// A function summary as `chronicle functions --json` prints it.
pub fn function_summary_json(f: &FunctionSummary) -> Json {
    let mut object = Map::new();
    object.insert("function".into(), f.function.clone().into());
    object.insert("calls".into(), f.calls.into());
    object.insert("errors".into(), f.errors.into());
    object.insert("unwound".into(), f.unwound.into());
    object.insert("p50_ns".into(), f.p50_ns.into());
    object.insert("p99_ns".into(), f.p99_ns.into());
    object.insert("first_seen".into(), rfc3339(f.first_seen).into());
    object.insert("last_seen".into(), rfc3339(f.last_seen).into());
    object.insert("build_ids".into(), f.build_ids.clone().into());
    object.insert("binaries".into(), f.binaries.clone().into());
    Json::Object(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::{Status, Value};
    use crate::storage::story::{BUILD_A, BUILD_B, at, record};
    use crate::time::from_unix_nanos;

    /// Compares rendered text, so that key order counts (maps compare equal in any order).
    #[track_caller]
    fn check(actual: Json, expect: Json) {
        assert_eq!(
            serde_json::to_string_pretty(&actual).unwrap(),
            serde_json::to_string_pretty(&expect).unwrap()
        );
    }

    #[test]
    fn a_full_record() {
        let mut r = record("orders::process_order", 0, 1500);
        r.id = Some(42);
        r.timestamp = from_unix_nanos(1_795_721_401_123_456_789);
        r.args = vec![
            (
                "order".into(),
                Value::Struct(vec![
                    ("zone".into(), Value::Enum("EU".into())),
                    ("amount".into(), Value::UInt(u64::MAX)),
                    ("delta".into(), Value::Int(i64::MIN)),
                    ("ratio".into(), Value::Float(0.5)),
                    ("raw".into(), Value::Bytes(vec![0xff, 0x00])),
                    ("next".into(), Value::Ptr(0x7ffd_1000)),
                    (
                        "tags".into(),
                        Value::Array(vec![Value::Str("a".into()), Value::Null]),
                    ),
                ]),
            ),
            ("zflag".into(), Value::Bool(true)),
            ("count".into(), Value::Int(-3)),
        ];
        r.ret = Some(Value::Variant(
            "Err".into(),
            Box::new(Value::Str("no stock".into())),
        ));
        r.status = Status::Error;
        check(
            record_json(&r),
            json!({
                "id": 42,
                "function": "orders::process_order",
                "binary": "/usr/bin/orders",
                "build_id": BUILD_A,
                "pid": 4242,
                "tid": 4243,
                "timestamp": "2026-11-26T19:30:01.123456789Z",
                "duration_ns": 1500,
                "status": "error",
                "args": {
                    "order": {
                        "zone": "EU",
                        "amount": 18446744073709551615u64,
                        "delta": -9223372036854775808i64,
                        "ratio": 0.5,
                        "raw": {"bytes": "ff00"},
                        "next": {"ptr": "0x7ffd1000"},
                        "tags": ["a", null]
                    },
                    "zflag": true,
                    "count": -3
                },
                "return": {"Err": "no stock"},
                "replayable": true,
                "unavailable": {},
                "dependencies": []
            }),
        );
    }

    #[test]
    fn an_unwound_unreplayable_record() {
        let mut r = record("parse", 0, 0);
        r.build_id = BUILD_B.into();
        r.status = Status::Unwound;
        r.duration_ns = None;
        r.ret = None;
        r.args = vec![("len".into(), Value::UInt(3))];
        r.unavailable = vec![
            ("buf".into(), "unmapped pointer 0x10".into()),
            ("return".into(), "did not return".into()),
        ];
        check(
            record_json(&r),
            json!({
                "id": null,
                "function": "parse",
                "binary": "/usr/bin/orders",
                "build_id": BUILD_B,
                "pid": 4242,
                "tid": 4243,
                "timestamp": "2026-11-26T19:30:01Z",
                "duration_ns": null,
                "status": "unwound",
                "args": {"len": 3},
                "return": null,
                "replayable": false,
                "unavailable": {"buf": "unmapped pointer 0x10", "return": "did not return"},
                "dependencies": []
            }),
        );
    }

    #[test]
    fn only_the_return_value_missing_is_still_replayable() {
        let mut r = record("f", 0, 7);
        r.unavailable = vec![("return".into(), "float in xmm0".into())];
        r.ret = None;
        let json = record_json(&r);
        assert_eq!(json["replayable"], json!(true));
        assert_eq!(json["return"], json!(null));
        assert_eq!(json["unavailable"], json!({"return": "float in xmm0"}));

        // Parts of the return value likewise; parts of an argument are inputs.
        r.unavailable = vec![("return.items[3]".into(), "unreadable".into())];
        assert_eq!(record_json(&r)["replayable"], json!(true));
        r.unavailable = vec![("returned".into(), "not a return path".into())];
        assert_eq!(record_json(&r)["replayable"], json!(false));
        r.unavailable = vec![("order.customer".into(), "max_depth".into())];
        assert_eq!(record_json(&r)["replayable"], json!(false));
    }

    #[test]
    fn an_array_of_records() {
        let mut first = record("f", 0, 1);
        first.id = Some(1);
        first.args = vec![];
        first.ret = Some(Value::Null);
        let mut second = first.clone();
        second.id = Some(2);
        second.timestamp = at(1);
        second.status = Status::Ok;
        let exported = export_json(&[first, second]);
        assert_eq!(exported.as_array().unwrap().len(), 2);
        check(exported[1]["id"].clone(), json!(2));
        check(
            exported[1]["timestamp"].clone(),
            json!("2026-11-26T19:30:02Z"),
        );
        check(exported[0]["args"].clone(), json!({}));
        check(export_json(&[]), json!([]));
    }

    #[test]
    fn a_function_summary() {
        let summary = FunctionSummary {
            function: "orders::process_order".into(),
            calls: 4,
            errors: 1,
            unwound: 0,
            p50_ns: Some(1200),
            p99_ns: None,
            first_seen: at(0),
            last_seen: from_unix_nanos(1_795_721_402_500_000_000),
            build_ids: vec![BUILD_A.into(), BUILD_B.into()],
            binaries: vec!["/usr/bin/orders".into()],
        };
        check(
            function_summary_json(&summary),
            json!({
                "function": "orders::process_order",
                "calls": 4,
                "errors": 1,
                "unwound": 0,
                "p50_ns": 1200,
                "p99_ns": null,
                "first_seen": "2026-11-26T19:30:01Z",
                "last_seen": "2026-11-26T19:30:02.500Z",
                "build_ids": [BUILD_A, BUILD_B],
                "binaries": ["/usr/bin/orders"]
            }),
        );
    }
}
