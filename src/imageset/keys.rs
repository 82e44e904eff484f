//! Struct keys matched as Go's `encoding/json` matches them, for files that Go programs read
//! through JSON rules (oc-mirror decodes its `ImageSetConfiguration` with `sigs.k8s.io/yaml`,
//! i.e. YAML converted to JSON, then `encoding/json`).
//!
//! [`GoKeys`] wraps any serde [`Deserializer`]. Wherever a struct is deserialized, each key of
//! the mapping is matched against that struct's field names (and serde aliases), which serde
//! hands to `deserialize_struct`: an exact match is preferred, else the first field whose name
//! is equal under case folding, and the field is then seen under that canonical name. A key that
//! matches no field in any case is passed on unchanged, so a struct with
//! `deny_unknown_fields` still rejects it by name. Two keys of one mapping naming the same field
//! (`additionalImages` and `additionalimages`) are refused: Go would silently keep the last.
//! Keys of plain maps, and the insides of enums, are left as they are (as Go leaves map keys).
//!
//! Folding: Go compares the simple case folds of names (`bytes.EqualFold`). For ASCII field
//! names that is ASCII case-insensitivity plus the two non-ASCII characters whose folding orbit
//! holds an ASCII letter, KELVIN SIGN (U+212A, `k`) and LATIN SMALL LETTER LONG S (U+017F, `s`),
//! which is exactly what [`fold_eq`] implements; field names must be ASCII.

use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

fn fold(c: char) -> char {
    match c {
        '\u{212A}' => 'K',
        '\u{17F}' => 'S',
        c => c.to_ascii_uppercase(),
    }
}

/// Whether `key` names the ASCII field name `field` under Go's case folding.
pub fn fold_eq(key: &str, field: &str) -> bool {
    key.chars().map(fold).eq(field.chars().map(fold))
}

/// The field among `fields` that `key` names: itself when it is one, else the first that is
/// equal under case folding.
pub fn canonical(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| fold_eq(key, f)))
        .copied()
}

/// A deserializer whose structs match their keys as Go's `encoding/json` does.
pub struct GoKeys<D>(pub D);

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method(Wrap::new(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for GoKeys<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Wrap::new(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Wrap::new(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Wrap::new(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_tuple_struct(name, len, Wrap::new(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrap = Wrap {
            visitor,
            fields: Some(fields),
        };
        self.0.deserialize_struct(name, fields, wrap)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Wrap::new(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor passing nested deserializers on wrapped; `fields` when it visits a struct.
struct Wrap<V> {
    visitor: V,
    fields: Option<&'static [&'static str]>,
}

impl<V> Wrap<V> {
    fn new(visitor: V) -> Wrap<V> {
        Wrap {
            visitor,
            fields: None,
        }
    }
}

macro_rules! visit {
    ($($method:ident($t:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $t) -> Result<Self::Value, E> {
                self.visitor.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        self.visitor.visit_some(GoKeys(d))
    }

    fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        self.visitor.visit_newtype_struct(GoKeys(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_seq(Seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_map(Map {
            map,
            fields: self.fields,
            seen: Vec::new(),
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_enum(data)
    }
}

/// A seed deserializing its value through [`GoKeys`].
struct Seed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(GoKeys(d))
    }
}

struct Seq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// A mapping; the keys of a struct's mapping are matched against its `fields`, `seen` holding
/// (canonical, as written) for the keys read so far.
struct Map<A> {
    map: A,
    fields: Option<&'static [&'static str]>,
    seen: Vec<(&'static str, String)>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.fields {
            Some(fields) => self.map.next_key_seed(Key {
                seed,
                fields,
                seen: &mut self.seen,
            }),
            None => self.map.next_key_seed(Seed(seed)),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A struct key: read as a string, handed on under its canonical name.
struct Key<'a, S> {
    seed: S,
    fields: &'static [&'static str],
    seen: &'a mut Vec<(&'static str, String)>,
}

struct KeyName;

impl Visitor<'_> for KeyName {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Key<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let key = d.deserialize_str(KeyName)?;
        let Some(name) = canonical(&key, self.fields) else {
            // No field in any case: the struct names it in its own error.
            return self.seed.deserialize(key.into_deserializer());
        };
        if let Some((_, first)) = self.seen.iter().find(|(c, _)| *c == name) {
            let msg = if *first == key {
                "given twice".to_string()
            } else {
                format!("the same field as `{first}` (keys match regardless of case)")
            };
            // Handing the key on first puts it in the error's path; what the seed makes of it
            // is dropped.
            let _ = self
                .seed
                .deserialize(StrDeserializer::<D::Error>::new(&key));
            return Err(de::Error::custom(msg));
        }
        self.seen.push((name, key));
        self.seed
            .deserialize(StrDeserializer::<D::Error>::new(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_folding() {
        let fields = &["skipTLS", "imageURL", "name", "Name2"];
        assert_eq!(canonical("skipTLS", fields), Some("skipTLS"));
        assert_eq!(canonical("skipTls", fields), Some("skipTLS"));
        assert_eq!(canonical("SKIPTLS", fields), Some("skipTLS"));
        assert_eq!(canonical("imageurl", fields), Some("imageURL"));
        // Go folds KELVIN SIGN to k and LONG S to s.
        assert_eq!(canonical("\u{17F}kipTL\u{17F}", fields), Some("skipTLS"));
        assert_eq!(canonical("na\u{212A}e", &["nake"]), Some("nake"));
        assert_eq!(canonical("skip_tls", fields), None);
        assert_eq!(canonical("namé", fields), None);
        // Exact first, then the first fold match in field order.
        assert_eq!(canonical("name", &["Name", "name"]), Some("name"));
        assert_eq!(canonical("NAME", &["Name", "name"]), Some("Name"));
    }
}
