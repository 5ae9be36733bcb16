//! The value of one feature for one event.

/// A feature value as written to the output.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FeatureValue {
    /// Undefined: a key field or the `of` field is missing on the event.
    #[default]
    Null,
    /// A count.
    Int(u64),
    /// A computed number (sum, avg): printed with 15 significant digits.
    Num(f64),
    /// An observed number (min, max): printed exactly (shortest round trip).
    Exact(f64),
    /// The event's own `of` value (aggregation `last`), copied by the formatter.
    Own,
    /// A kept string, number or boolean (`first`, `last`, `lag` of a field that is not only
    /// numbers): its canonical bytes ([`crate::KeyEncoder`]) at `start..start + len` of the text
    /// that came with the values ([`crate::values::ValueScratch::text`]).
    Text {
        /// Offset of the canonical bytes.
        start: u32,
        /// Their length.
        len: u32,
    },
    /// Not computed: the key's shared state no longer holds everything this event's windows
    /// need (another writer, further ahead in event time, already dropped it). The event goes
    /// to the dead letters as `late` instead of getting a wrong value.
    Beyond,
}

/// The type tag and text of canonical value bytes ([`crate::KeyEncoder`]): `b's'` and the
/// string's UTF-8 bytes, `b'n'` and a JSON number, or `b'b'` and `true` or `false`. `None`
/// for bytes that are not one encoded value.
pub fn canonical_parts(bytes: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let text = rest.get(..rest.len().checked_sub(4)?)?;
    let len = u32::from_le_bytes(rest[text.len()..].try_into().ok()?);
    (len as usize == text.len()).then_some((tag, text))
}

/// Appends UTF-8 bytes as a JSON string literal: `"` and `\\` escaped, control characters as
/// `\\n`, `\\r`, `\\t` or `\\u00XX`, everything else as it is.
pub fn escape_json_bytes(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// The order of a `set`: numbers (by value), then strings (by UTF-8 bytes), then booleans
/// (`false` first), each given as canonical value bytes.
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let rank = |tag: u8| match tag {
        b'n' => 0,
        b's' => 1,
        _ => 2,
    };
    match (canonical_parts(a), canonical_parts(b)) {
        (Some((ta, xa)), Some((tb, xb))) => rank(ta).cmp(&rank(tb)).then_with(|| {
            if ta == b'n' && tb == b'n' {
                let num = |x: &[u8]| {
                    std::str::from_utf8(x)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .unwrap_or(f64::NAN)
                };
                num(xa).total_cmp(&num(xb))
            } else {
                xa.cmp(xb)
            }
        }),
        _ => a.cmp(b),
    }
}

/// Appends the canonical form of a JSON array of canonical values (tag `j`, the array's text,
/// its length), as [`FeatureValue::Text`] holds it.
pub fn write_json_array<'a>(text: &mut Vec<u8>, values: impl Iterator<Item = &'a [u8]>) {
    text.push(b'j');
    let start = text.len();
    text.push(b'[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            text.push(b',');
        }
        match canonical_parts(v) {
            Some((b's', s)) => escape_json_bytes(text, s),
            Some((_, s)) => text.extend_from_slice(s),
            None => text.extend_from_slice(b"null"),
        }
    }
    text.push(b']');
    let len = u32::try_from(text.len() - start).unwrap_or(u32::MAX);
    text.extend_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyEncoder;

    #[test]
    fn sets_sort_numbers_then_strings_then_booleans_and_render_as_json() {
        let mut values: Vec<Vec<u8>> = Vec::new();
        for f in [
            |e: &mut KeyEncoder<'_>| e.str("b\"q"),
            |e: &mut KeyEncoder<'_>| e.num(10.0),
            |e: &mut KeyEncoder<'_>| e.bool(true),
            |e: &mut KeyEncoder<'_>| e.num(9.5),
            |e: &mut KeyEncoder<'_>| e.str("a"),
            |e: &mut KeyEncoder<'_>| e.bool(false),
        ] {
            let mut buf = Vec::new();
            f(&mut KeyEncoder::new(&mut buf));
            values.push(buf);
        }
        values.sort_by(|a, b| canonical_cmp(a, b));
        let mut text = Vec::new();
        write_json_array(&mut text, values.iter().map(Vec::as_slice));
        let (tag, json) = canonical_parts(&text).expect("one value");
        assert_eq!(tag, b'j');
        assert_eq!(
            std::str::from_utf8(json).expect("utf8"),
            r#"[9.5,10,"a","b\"q",false,true]"#
        );
    }
}
