//! Field values as serde hands them over: the visitors that capture the wanted fields of a JSON
//! record (and validate the rest without building a tree), and the JSON-number test for CSV
//! cells.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::codec::parse::{Extractor, ParseScratch};
use crate::codec::paths::KeyMatch;

/// A field value as captured from a record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Captured {
    Missing,
    Null,
    Int(i64),
    Float(f64),
    /// Text at `start..end` of the scratch text buffer.
    Str(usize, usize),
    Bool(bool),
    Other(&'static str),
}

/// The value of `text` if it is a JSON number.
pub(crate) fn json_number(text: &str) -> Option<Captured> {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return None;
    }
    let mut integral = true;
    if i < b.len() && b[i] == b'.' {
        integral = false;
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        integral = false;
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    if integral {
        if let Ok(v) = text.parse::<i64>() {
            return Some(Captured::Int(v));
        }
    }
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Captured::Float)
}

struct KeySeed<'a> {
    ex: &'a Extractor,
    node: u32,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = KeyMatch;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyMatch, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = KeyMatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyMatch, E> {
        Ok(self.ex.lookup(self.node, v))
    }
}

struct ValueSeed<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Captured;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Captured, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Captured;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Captured, E> {
        Ok(Captured::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Captured, E> {
        Ok(Captured::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Captured, E> {
        Ok(i64::try_from(v).map_or(Captured::Float(v as f64), Captured::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Captured, E> {
        Ok(Captured::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Captured, E> {
        let start = self.0.len();
        self.0.extend_from_slice(v.as_bytes());
        Ok(Captured::Str(start, self.0.len()))
    }

    fn visit_unit<E>(self) -> Result<Captured, E> {
        Ok(Captured::Null)
    }

    fn visit_none<E>(self) -> Result<Captured, E> {
        Ok(Captured::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Captured, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Captured::Other("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Captured, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Captured::Other("an array"))
    }
}

/// Captures the wanted fields of the object at `node` of the extractor's path tree (node 0:
/// the record itself), descending into nested objects that hold wanted fields.
pub(crate) struct LineVisitor<'a> {
    pub(crate) ex: &'a Extractor,
    pub(crate) s: &'a mut ParseScratch,
    pub(crate) node: u32,
}

impl<'de> Visitor<'de> for LineVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (ex, node) = (self.ex, self.node);
        while let Some(key) = map.next_key_seed(KeySeed { ex, node })? {
            match key {
                KeyMatch::Field {
                    wanted,
                    inner: Some(inner),
                } => {
                    let nested = NestedSeed {
                        ex,
                        s: &mut *self.s,
                        node: inner,
                        wanted,
                    };
                    map.next_value_seed(nested)?;
                }
                KeyMatch::Field {
                    wanted: Some(i),
                    inner: None,
                } => {
                    let value = map.next_value_seed(ValueSeed(&mut self.s.text))?;
                    self.s.caps[i] = value;
                }
                KeyMatch::Reserved => {
                    self.s.reserved = true;
                    map.next_value::<IgnoredAny>()?;
                }
                KeyMatch::Field { .. } | KeyMatch::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The value of a key that leads to nested wanted fields (and may be wanted itself): an
/// object is descended into; any other value is captured if wanted.
struct NestedSeed<'a> {
    ex: &'a Extractor,
    s: &'a mut ParseScratch,
    node: u32,
    wanted: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for NestedSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl NestedSeed<'_> {
    fn set(self, value: Captured) {
        if let Some(w) = self.wanted {
            self.s.caps[w] = value;
        }
    }
}

impl<'de> Visitor<'de> for NestedSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.set(Captured::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.set(Captured::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.set(i64::try_from(v).map_or(Captured::Float(v as f64), Captured::Int));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.set(Captured::Float(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.wanted.is_some() {
            let start = self.s.text.len();
            self.s.text.extend_from_slice(v.as_bytes());
            let end = self.s.text.len();
            self.set(Captured::Str(start, end));
        }
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.set(Captured::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.set(Captured::Null);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if let Some(w) = self.wanted {
            self.s.caps[w] = Captured::Other("an object");
        }
        LineVisitor {
            ex: self.ex,
            s: self.s,
            node: self.node,
        }
        .visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.set(Captured::Other("an array"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_json_numbers() {
        assert_eq!(json_number("42"), Some(Captured::Int(42)));
        assert_eq!(json_number("-1.5e3"), Some(Captured::Float(-1500.0)));
        for not in [
            "", "-", "01", "1.", ".5", "1e", "abc", "1 ", "0x10", "NaN", "inf",
        ] {
            assert_eq!(json_number(not), None, "{not}");
        }
    }
}
