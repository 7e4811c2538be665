//! Decoded values: what a function received or returned, as exact as the bytes allow.
//!
//! `Value` serializes to the export format of DESIGN.md: integers as exact JSON numbers,
//! strings as strings, pointers not followed as `{"ptr": "0x..."}`, C enums by enumerator
//! name, Rust enums as `{"Variant": payload}`, structs as objects, arrays as arrays.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A null pointer, `None`-like absence, or the unit type.
    Null,
    Bool(bool),
    /// Any signed integer (every width fits).
    Int(i64),
    /// Any unsigned integer (every width fits).
    UInt(u64),
    Float(f64),
    /// A text string (C string, `&str`, `String`, `std::string`). A single C `char` is a
    /// one-character string.
    Str(String),
    /// A byte string that is not valid UTF-8; serialized as `{"bytes": "<hex>"}`.
    Bytes(Vec<u8>),
    /// A C/C++ enumerator, by name.
    Enum(String),
    /// A pointer that was not followed; serialized as `{"ptr": "0x..."}`.
    Ptr(u64),
    /// Fields in declaration order.
    Struct(Vec<(String, Value)>),
    Array(Vec<Value>),
    /// A Rust enum variant with its payload: `{"Variant": payload}`.
    Variant(String, Box<Value>),
}

impl Value {
    /// A string value from raw bytes: `Str` when they are UTF-8, `Bytes` otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Value {
        match std::str::from_utf8(bytes) {
            Ok(s) => Value::Str(s.to_owned()),
            Err(_) => Value::Bytes(bytes.to_vec()),
        }
    }

    /// The JSON form used by the export format.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("Value serialization is infallible")
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(text) | Value::Enum(text) => s.serialize_str(text),
            Value::Bytes(bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("bytes", &hex)?;
                map.end()
            }
            Value::Ptr(addr) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("ptr", &format!("{addr:#x}"))?;
                map.end()
            }
            Value::Struct(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Variant(name, payload) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(name, payload)?;
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Value;
    use serde_json::json;

    #[track_caller]
    fn check(value: Value, expect: serde_json::Value) {
        assert_eq!(value.to_json(), expect);
    }

    #[test]
    fn export_format() {
        check(Value::UInt(u64::MAX), json!(18446744073709551615u64));
        check(Value::Int(i64::MIN), json!(-9223372036854775808i64));
        check(Value::Ptr(0x7ffd_1000), json!({"ptr": "0x7ffd1000"}));
        check(Value::Enum("RED".into()), json!("RED"));
        check(Value::Bytes(vec![0xff, 0x00]), json!({"bytes": "ff00"}));
        check(
            Value::Variant("Err".into(), Box::new(Value::Str("no stock".into()))),
            json!({"Err": "no stock"}),
        );
        check(
            Value::Struct(vec![("b".into(), Value::Int(1)), ("a".into(), Value::Null)]),
            json!({"b": 1, "a": null}),
        );
    }
}
