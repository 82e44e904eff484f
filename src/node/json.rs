//! JSON values that keep an object's keys in the order they were written, for editing a user's
//! Ignition override without reordering it.
//!
//! `serde_json::Value` sorts object keys unless its `preserve_order` feature is on, and that
//! feature is crate-wide: it would change the key order of every JSON document prestage writes
//! from `json!` values. This type is used only where a user's JSON is read back and written out.
//!
//! Parsing refuses a key written twice in one object (Go's decoder, which Ignition and Assisted
//! Service use, would silently keep the last one). Errors name a position and a key, never the
//! text around it: overrides may hold secrets. Output is ASCII (every other character `\u`
//! escaped), so it survives any YAML scalar style.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON value with ordered object keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as serde_json holds it.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, keys in their written order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses `text` (one JSON value, surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<Json, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The value of any serializable `v`, keys in their serialization order.
    pub fn of<T: Serialize>(v: &T) -> Result<Json, String> {
        let text = serde_json::to_string(v).map_err(|e| e.to_string())?;
        Json::parse(&text)
    }

    /// What kind of value this is, for messages (`a JSON {kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "list",
            Json::Object(_) => "object",
        }
    }

    /// The value of `key`, when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The same, mutable.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(m) => m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Equal as JSON values: objects compared as maps (key order ignored), numbers by value.
    pub fn same(&self, other: &Json) -> bool {
        match (self, other) {
            (Json::Object(a), Json::Object(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| {
                        b.iter()
                            .find(|(k2, _)| k2 == k)
                            .is_some_and(|(_, v2)| v.same(v2))
                    })
            }
            (Json::Array(a), Json::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// Compact JSON, ASCII only.
    pub fn to_compact(&self) -> String {
        ascii(&serde_json::to_string(self).unwrap_or_default())
    }

    /// JSON indented by two spaces, ASCII only.
    pub fn to_pretty(&self) -> String {
        ascii(&serde_json::to_string_pretty(self).unwrap_or_default())
    }
}

/// Escapes every non-ASCII character of JSON text as `\uXXXX` (surrogate pairs above the BMP).
/// Outside strings JSON is ASCII, so only string contents change, to equal values.
fn ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Json::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        Ok(Json::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut m: Vec<(String, Json)> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.iter().any(|(seen, _)| *seen == k) {
                return Err(de::Error::custom(format!("the key `{k}` is written twice")));
            }
            let v = map.next_value()?;
            m.push((k, v));
        }
        Ok(Json::Object(m))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_and_text_is_ascii() {
        let j = Json::parse(r#"{"z": 1, "a": {"y": [true, null], "b": "é𝄞"}, "m": 1.5}"#).unwrap();
        assert_eq!(
            j.to_compact(),
            r#"{"z":1,"a":{"y":[true,null],"b":"\u00e9\ud834\udd1e"},"m":1.5}"#
        );
        let back = Json::parse(&j.to_pretty()).unwrap();
        let other =
            Json::parse(r#"{"m": 1.5, "a": {"b": "é𝄞", "y": [true, null]}, "z": 1.0}"#).unwrap();
        assert!(j.same(&other) && j != other);
        assert_eq!(back, j);
        assert_eq!(
            back.get("a")
                .and_then(|a| a.get("b"))
                .and_then(Json::as_str),
            Some("é𝄞")
        );
    }

    #[test]
    fn twice_written_keys_and_bad_text_are_refused_without_quoting_it() {
        let e = Json::parse(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(e.contains("`a` is written twice"), "{e}");
        let e = Json::parse(r#"{"password": "hunter2""#).unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("line 1"), "{e}");
    }
}
