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
    json_number_bytes(text.as_bytes())
}

/// Powers of ten exact in an `f64`, for the fast path of [`json_number_bytes`].
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// [`json_number`] of raw bytes (anything but ASCII is not a number).
///
/// Integers of up to 18 digits and decimals of up to 15 digits without an exponent (amounts,
/// prices, epoch times: nearly every number of a record) are computed while validating: a
/// decimal's digits form an integer below 2^53 and its power of ten is exact, so one division
/// gives the correctly rounded value, the same as the standard library's parser (this is its
/// own first fast path, without its setup). Anything else goes to that parser.
pub(crate) fn json_number_bytes(b: &[u8]) -> Option<Captured> {
    let negative = b.first() == Some(&b'-');
    let mut i = usize::from(negative);
    let int_start = i;
    // The digits as one integer, while there are at most 18 of them (no overflow).
    let mut digits: u64 = 0;
    let mut count = 0usize;
    while i < b.len() && b[i].is_ascii_digit() {
        digits = digits.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
        i += 1;
    }
    count += i - int_start;
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return None;
    }
    let mut integral = true;
    let mut decimals = 0;
    if i < b.len() && b[i] == b'.' {
        integral = false;
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            digits = digits.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
            i += 1;
        }
        if i == s {
            return None;
        }
        decimals = i - s;
        count += decimals;
    }
    let mut exponent = false;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        integral = false;
        exponent = true;
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
    // Only ASCII from here on.
    if integral {
        if count <= 18 {
            // `digits` < 10^18 < 2^63: no overflow, and `-0` is 0 as `i64::from_str` has it.
            let v = digits as i64;
            return Some(Captured::Int(if negative { -v } else { v }));
        }
        if let Ok(v) = std::str::from_utf8(b).ok()?.parse::<i64>() {
            return Some(Captured::Int(v));
        }
    } else if !exponent && count <= 15 {
        // Both operands exact (< 10^15 < 2^53, and 10^decimals with decimals <= 15): the
        // quotient is correctly rounded. The sign is applied after, as the parser does
        // (`-0.0` stays negative zero).
        let v = digits as f64 / POW10[decimals];
        return Some(Captured::Float(if negative { -v } else { v }));
    }
    std::str::from_utf8(b)
        .ok()?
        .parse::<f64>()
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
    fn fast_numbers_match_the_standard_parser() {
        let mut x: u64 = 11;
        for i in 0..200_000u32 {
            x = crate::codec::lcg(x);
            let digits = (x >> 8) % 10u64.pow(1 + (x % 19) as u32);
            let point = (x >> 3) % 20;
            let mut text = digits.to_string();
            if point > 0 && (point as usize) < text.len() + 3 {
                let at = text.len().saturating_sub(point as usize);
                let (a, b) = text.split_at(at);
                let zeros = (point as usize).saturating_sub(text.len());
                let a = if a.is_empty() { "0" } else { a };
                text = format!("{a}.{}{b}", "0".repeat(zeros));
            }
            if i % 2 == 1 {
                text.insert(0, '-');
            }
            let expected = if text.contains('.') {
                text.parse::<f64>().ok().map(Captured::Float)
            } else {
                text.parse::<i64>().ok().map(Captured::Int)
            };
            let got = json_number(&text);
            match (got, expected) {
                (Some(Captured::Float(a)), Some(Captured::Float(b))) => {
                    assert_eq!(a.to_bits(), b.to_bits(), "{text}")
                }
                (got, expected) => assert_eq!(got, expected, "{text}"),
            }
        }
        assert_eq!(json_number("-0"), Some(Captured::Int(0)));
        let negative_zero = json_number("-0.0");
        assert!(
            matches!(negative_zero, Some(Captured::Float(z)) if z == 0.0 && z.is_sign_negative())
        );
        assert_eq!(
            json_number("9223372036854775807"),
            Some(Captured::Int(i64::MAX))
        );
        assert_eq!(
            json_number("9223372036854775808"),
            Some(Captured::Float(9223372036854775808.0))
        );
    }

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
