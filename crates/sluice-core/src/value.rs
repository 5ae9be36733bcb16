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
