//! The fast path for ordinary JSONL records: one pass over the bytes that validates the
//! object and captures the wanted fields, without serde's per-value machinery.
//!
//! It accepts only what it can fully validate itself: strings without escapes, numbers,
//! literals and nesting up to a modest depth. Anything else (an escape, a syntax error, deep
//! nesting, a number out of range) returns `false`, and the caller parses the line with
//! serde_json instead, which also words the error of a bad record. So the fast path never
//! accepts a record serde_json would reject, and captures the same values for the ones it
//! accepts (numbers are parsed with the standard library's correctly rounded parser).

use crate::codec::field::{json_number_bytes, Captured};
use crate::codec::parse::{Extractor, ParseScratch};
use crate::codec::paths::KeyMatch;

/// Deepest nesting the fast path skips; deeper records go to serde_json.
const MAX_DEPTH: usize = 64;

/// Scans `line` (a whole record) into `s.caps` / `s.text` / `s.reserved`. Returns false when
/// the caller must parse the line with serde_json instead (the scratch may then be partly
/// filled and must be reset).
pub(crate) fn scan_line(ex: &Extractor, line: &[u8], s: &mut ParseScratch) -> bool {
    let mut sc = Scanner { b: line, i: 0 };
    sc.object_fields(ex, s).is_some()
}

/// Marks (sets the high bit of) the bytes of `w`, eight bytes read little-endian, that a
/// string scan must look at one by one: a quote, a backslash, a control character, or a byte
/// of a non-ASCII character. The lowest mark is exact (a higher one may be false: a borrow
/// only runs upwards from a byte that is itself marked), which is all the scan uses.
#[inline]
fn special(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    zero_byte(w ^ (ONES * u64::from(b'"')))
        | zero_byte(w ^ (ONES * u64::from(b'\\')))
        | below_space
        | (w & HIGH)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// The top-level object, capturing wanted fields; then only whitespace may follow.
    fn object_fields(&mut self, ex: &Extractor, s: &mut ParseScratch) -> Option<()> {
        self.ws();
        self.object(ex, s, 0, 0)?;
        self.ws();
        (self.i == self.b.len()).then_some(())
    }

    /// The object at `node` of the extractor's path tree, at nesting `depth`: captures its
    /// wanted fields and descends into the objects that hold more.
    fn object(
        &mut self,
        ex: &Extractor,
        s: &mut ParseScratch,
        node: u32,
        depth: usize,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.items(b'}', |sc| {
            // `string` has checked it is UTF-8.
            let (a, z) = sc.string()?;
            let name = &sc.b[a..z];
            sc.ws();
            sc.eat(b':')?;
            sc.ws();
            match ex.lookup_bytes(node, name) {
                KeyMatch::Field {
                    wanted,
                    inner: Some(inner),
                } if sc.peek() == Some(b'{') => {
                    if depth >= MAX_DEPTH {
                        return None;
                    }
                    if let Some(w) = wanted {
                        s.caps[w] = Captured::Other("an object");
                    }
                    sc.object(ex, s, inner, depth + 1)?;
                }
                KeyMatch::Field {
                    wanted: Some(w), ..
                } => s.caps[w] = sc.value(&mut s.text)?,
                KeyMatch::Reserved => {
                    s.reserved = true;
                    sc.skip(depth)?;
                }
                KeyMatch::Field { .. } | KeyMatch::Other => sc.skip(depth)?,
            }
            Some(())
        })
    }

    /// Comma-separated items up to `close` (the opening bracket already consumed).
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes or control characters; returns its content's range.
    #[inline]
    fn string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut high = false;
        loop {
            // Eight bytes at a time up to the first one that needs a look.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let marks = special(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                if marks != 0 {
                    self.i += (marks.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            let c = self.peek()?;
            match c {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                0x80.. => high = true,
                _ => {}
            }
            self.i += 1;
        }
        let end = self.i;
        self.i += 1;
        if high && std::str::from_utf8(&self.b[start..end]).is_err() {
            return None;
        }
        Some((start, end))
    }

    /// A wanted field's value.
    fn value(&mut self, text: &mut Vec<u8>) -> Option<Captured> {
        match self.peek()? {
            b'"' => {
                let (a, z) = self.string()?;
                let start = text.len();
                text.extend_from_slice(&self.b[a..z]);
                Some(Captured::Str(start, text.len()))
            }
            b'{' => self.skip(0).map(|()| Captured::Other("an object")),
            b'[' => self.skip(0).map(|()| Captured::Other("an array")),
            b't' => self.literal(b"true").map(|()| Captured::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Captured::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Captured::Null),
            _ => self.number(),
        }
    }

    #[inline]
    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(lit)
            .then(|| self.i += lit.len())
    }

    /// A JSON number (the grammar and parsing of [`crate::codec::field::json_number`], shared
    /// with CSV cells).
    fn number(&mut self) -> Option<Captured> {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.i += 1;
        }
        json_number_bytes(&self.b[start..self.i])
    }

    /// Skips any value, validating it.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                self.i += 1;
                self.items(b'}', |sc| {
                    sc.string()?;
                    sc.ws();
                    sc.eat(b':')?;
                    sc.ws();
                    sc.skip(depth + 1)
                })
            }
            b'[' => {
                self.i += 1;
                self.items(b']', |sc| sc.skip(depth + 1))
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::field::LineVisitor;
    use crate::codec::time::TimeFormat;
    use proptest::prelude::*;
    use serde::de::Deserializer;
    use sluice_core::{Agg, FeatureSpec, Plan};

    fn extractor() -> Extractor {
        let feature = |name: &str, agg, of: Option<&str>, by: &str| FeatureSpec {
            name: name.into(),
            agg,
            of: of.map(Into::into),
            by: vec![by.into()],
            window_ms: 10,
            granularity_ms: 1,
            filter: None,
        };
        let plan = Plan::new(
            vec![
                feature("a", Agg::Sum, Some("v"), "u"),
                feature("b", Agg::DistinctCount, Some("d"), "k"),
                // Nested paths, one also wanted as a whole (an object is captured as such).
                feature("c", Agg::Max, Some("u.v"), "u.`ts.u`"),
                feature("e", Agg::Count, None, "v.u.ts"),
            ],
            0,
        )
        .expect("valid plan");
        Extractor::new(&plan, "ts", TimeFormat::EpochMs)
    }

    #[test]
    fn special_marks_the_first_byte_to_look_at() {
        let mut x: u64 = 5;
        for _ in 0..100_000 {
            x = crate::codec::lcg(x);
            // Mostly ordinary ASCII, with some of each kind of byte to look at.
            let bytes: [u8; 8] = std::array::from_fn(|k| match (x >> (k * 8)) as u8 {
                0..=3 => b'"',
                4..=7 => b'\\',
                8..=11 => (x >> 60) as u8,
                12..=15 => 0x80 | (x >> 56) as u8,
                b => 0x20 + b % 0x5f,
            });
            let look = |c: u8| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c);
            let expected = bytes.iter().position(|&c| look(c));
            let marks = special(u64::from_le_bytes(bytes));
            let first = (marks != 0).then(|| (marks.trailing_zeros() / 8) as usize);
            assert_eq!(first, expected, "{bytes:?}");
        }
    }

    /// What a scratch holds, with strings resolved.
    fn captured(s: &ParseScratch) -> Vec<(String, Option<String>)> {
        s.caps
            .iter()
            .map(|c| match *c {
                Captured::Str(a, z) => (
                    "str".into(),
                    Some(String::from_utf8_lossy(&s.text[a..z]).into()),
                ),
                Captured::Float(v) => (format!("float {:x}", v.to_bits()), None),
                other => (format!("{other:?}"), None),
            })
            .collect()
    }

    fn fresh(ex: &Extractor) -> ParseScratch {
        let mut s = ParseScratch::default();
        s.caps.resize(ex.wanted(), Captured::Missing);
        s
    }

    fn check(line: &[u8]) {
        let ex = extractor();
        let mut fast = fresh(&ex);
        let accepted = scan_line(&ex, line, &mut fast);
        let mut slow = fresh(&ex);
        let mut de = serde_json::Deserializer::from_slice(line);
        let serde_ok = de
            .deserialize_map(LineVisitor {
                ex: &ex,
                s: &mut slow,
                node: 0,
            })
            .and_then(|()| de.end())
            .is_ok();
        if accepted {
            assert!(
                serde_ok,
                "fast path accepted what serde_json rejects: {:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(
                captured(&fast),
                captured(&slow),
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(fast.reserved, slow.reserved);
        }
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\u{e9}\"\\\\ \t]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("u".to_owned()),
                            Just("v".to_owned()),
                            Just("ts".to_owned()),
                            Just("ts.u".to_owned()),
                            Just("features".to_owned()),
                            "[a-z]{1,3}"
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn fast_path_agrees_with_serde_json(
            fields in prop::collection::vec((prop_oneof![Just("u"), Just("v"), Just("ts"), Just("k"), Just("d"), Just("features"), Just("x")], json()), 0..7),
            pretty in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            mutate in 0u8..6,
            byte in any::<u8>(),
        ) {
            let object = serde_json::Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
            let text = if pretty { serde_json::to_string_pretty(&object) } else { serde_json::to_string(&object) }.expect("serialise");
            let mut line = text.into_bytes();
            check(&line);
            // Damaged versions must never be accepted where serde_json rejects them.
            let at = cut.index(line.len() + 1);
            match mutate {
                0 => line.truncate(at),
                1 => line.insert(at, byte),
                2 if at < line.len() => line[at] = byte,
                3 => line.extend_from_slice(b" x"),
                4 => line.insert(at.min(line.len()), b','),
                _ => line.splice(at..at, *b"01").for_each(drop),
            }
            check(&line);
        }
    }

    #[test]
    fn ordinary_records_take_the_fast_path() {
        let ex = extractor();
        let mut s = fresh(&ex);
        let line = br#"{"event_id":"e1","u":"u42","d":"d7","v":12.30,"ts":1767225600000,"nested":{"a":[1,2,{"b":null}]}}"#;
        assert!(scan_line(&ex, line, &mut s));
        let mut s = fresh(&ex);
        assert!(
            !scan_line(&ex, br#"{"u":"a\"b","ts":1}"#, &mut s),
            "escapes go to serde_json"
        );
        let mut s = fresh(&ex);
        assert!(
            !scan_line(&ex, br#"{"u":1,"ts":1e400}"#, &mut s),
            "out of range goes to serde_json"
        );
    }
}
