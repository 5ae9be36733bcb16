//! How keys and events are written in Redis: key names with a hash tag per entity key, and
//! the binary log entries of one event.

use sluice_core::{FieldObs, KeySpec, Plan, SeriesKind};

/// Version of the entry encoding; part of every key name, so that a changed encoding never
/// reads an old one.
const LAYOUT_VERSION: &str = "v1";

/// Names the Redis keys of one key spec and encodes its log entries.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    /// `sluice:<namespace>:<fingerprint>:`: everything before the hash tag.
    prefix: String,
    /// The hash tag of the global key (`by = []`): `global-<fingerprint>`.
    global_tag: String,
    by: Vec<String>,
    /// Plan field indices whose values the log keeps, ascending.
    fields: Vec<usize>,
    /// Whether a series of the key spec has a filter: entries then hold the matched filters.
    filtered: bool,
}

impl KeyLayout {
    /// The layout of `plan.keys[spec]` under `namespace`.
    ///
    /// The fingerprint covers the key fields, the aggregated fields and how they are bucketed
    /// and kept (kind, granularity, widest window, lateness): pipelines that agree on these
    /// share logs, any other pipeline gets its own keys instead of misreading or trimming
    /// another's.
    pub fn new(plan: &Plan, spec: usize, namespace: &str) -> Self {
        let key = &plan.keys[spec];
        let mut fields: Vec<usize> = key.series.iter().filter_map(|s| s.of).collect();
        fields.sort_unstable();
        fields.dedup();
        let mut identity = format!(
            "{LAYOUT_VERSION};by={:?};lateness={}",
            key.by, plan.lateness_ms
        );
        for s in &key.series {
            identity.push_str(&format!(
                ";{}:{}:{}:{}",
                match s.kind {
                    SeriesKind::Numeric => "num",
                    SeriesKind::Distinct => "distinct",
                    SeriesKind::Values => "values",
                    SeriesKind::Approx => "approx",
                },
                s.of.map_or("", |i| plan.fields[i].as_str()),
                s.granularity_ms,
                s.max_window_ms()
            ));
            if let Some(filter) = s.filter {
                identity.push_str(&format!(":where={}", plan.filters[filter]));
            }
        }
        // The matched bits are numbered by the plan's filters: their list is part of the
        // entries' meaning.
        let filtered = key.series.iter().any(|s| s.filter.is_some());
        if filtered {
            identity.push_str(&format!(";filters={:?}", plan.filters));
        }
        let fingerprint = sluice_core::key_hash(identity.as_bytes()) as u32;
        KeyLayout {
            prefix: format!("sluice:{namespace}:{LAYOUT_VERSION}-{fingerprint:08x}:"),
            global_tag: format!("global-{fingerprint:08x}"),
            by: key.by.clone(),
            fields,
            filtered,
        }
    }

    /// The Redis key of an encoded key: the prefix, then `{field=value,...}` as the hash tag,
    /// so that everything of one entity key sits in one slot. Values are written readably and
    /// injectively: strings as text (with `%`, `{`, `}`, `,`, `=` and control bytes
    /// percent-escaped, and a leading `#` or `!` escaped), numbers as `#42`, booleans as
    /// `!true`.
    ///
    /// The global key (`by = []`) has the tag `{global-<fingerprint>}`: an empty `{}` is no
    /// hash tag in Redis Cluster (the whole name would be hashed), and a tag without `=` is
    /// never one of an entity key. The fingerprint spreads the global keys of different
    /// pipelines over the slots.
    pub fn redis_key(&self, encoded: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + encoded.len() + 16);
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'{');
        if self.by.is_empty() {
            out.extend_from_slice(self.global_tag.as_bytes());
        }
        push_fields(&mut out, &self.by, encoded);
        out.push(b'}');
        out
    }

    /// Encodes one event's entry: the writer's token, the event time, the filters it matched
    /// (when the key spec has filters) and the kept fields.
    pub fn encode_entry(
        &self,
        token: (u64, u64),
        ts: i64,
        fields: &[FieldObs<'_>],
        matched: u64,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.extend_from_slice(&token.0.to_le_bytes());
        out.extend_from_slice(&token.1.to_le_bytes());
        out.extend_from_slice(&ts.to_le_bytes());
        if self.filtered {
            out.extend_from_slice(&matched.to_le_bytes());
        }
        for &f in &self.fields {
            let obs = fields[f];
            if obs.present {
                out.push(1);
                out.extend_from_slice(&obs.num.to_le_bytes());
                out.extend_from_slice(&(obs.bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(obs.bytes);
            } else {
                out.push(0);
            }
        }
    }

    /// Decodes an entry into its token, time and matched filters, and its fields (`fields` is
    /// resized to the plan's field count; fields the log does not keep are absent). `None` if
    /// it is malformed.
    pub fn decode_entry<'a>(
        &self,
        entry: &'a [u8],
        n_fields: usize,
        fields: &mut Vec<FieldObs<'a>>,
    ) -> Option<((u64, u64), i64, u64)> {
        fields.clear();
        fields.resize(n_fields, FieldObs::default());
        let mut r = Reader(entry);
        let token = (r.u64()?, r.u64()?);
        let ts = r.u64()? as i64;
        let matched = if self.filtered { r.u64()? } else { 0 };
        for &f in &self.fields {
            if r.take(1)?[0] == 1 {
                let num = f64::from_bits(r.u64()?);
                let len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
                fields[f] = FieldObs {
                    present: true,
                    num,
                    bytes: r.take(len)?,
                };
            }
        }
        r.0.is_empty().then_some((token, ts, matched))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Appends `name=value,...` for the fields `names` of an encoded key (canonical values
/// concatenated), written readably and injectively as [`KeyLayout::redis_key`] describes.
pub fn push_fields(out: &mut Vec<u8>, names: &[String], encoded: &[u8]) {
    let values = split_encoded(encoded);
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        escape_into(out, name.as_bytes(), false);
        out.push(b'=');
        match values.get(i) {
            Some((b's', text)) => escape_into(out, text, true),
            Some((b'b', text)) => {
                out.push(b'!');
                out.extend_from_slice(text);
            }
            Some((_, text)) => {
                out.push(b'#');
                out.extend_from_slice(text);
            }
            None => {}
        }
    }
}

/// The `(tag, text)` of each field of an encoded key (tag, text, then the text's u32 length:
/// read from the end).
fn split_encoded(mut encoded: &[u8]) -> Vec<(u8, &[u8])> {
    let mut values = Vec::new();
    while encoded.len() >= 5 {
        let (rest, len) = encoded.split_at(encoded.len() - 4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len + 1 {
            break;
        }
        let (rest, text) = rest.split_at(rest.len() - len);
        let (rest, tag) = rest.split_at(rest.len() - 1);
        values.push((tag[0], text));
        encoded = rest;
    }
    values.reverse();
    values
}

fn escape_into(out: &mut Vec<u8>, text: &[u8], value: bool) {
    for (i, &b) in text.iter().enumerate() {
        let special = matches!(b, b'%' | b'{' | b'}' | b',' | b'=')
            || b < 0x20
            || b == 0x7f
            || (value && i == 0 && matches!(b, b'#' | b'!'));
        if special {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

/// The oldest event time any window of `key` may still need once no event older than `floor`
/// can arrive: entries and registers before it can be dropped.
pub fn horizon(key: &KeySpec, floor: i64) -> i64 {
    key.series
        .iter()
        .map(|s| {
            sluice_core::bucket_start(floor, s.granularity_ms).saturating_sub(s.max_window_ms())
        })
        .min()
        .unwrap_or(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{FeatureSpec, KeyEncoder};

    fn plan() -> Plan {
        let f = |name: &str, agg: &str, of: Option<&str>, by: &[&str]| FeatureSpec {
            name: name.into(),
            agg: agg.parse().expect("agg"),
            of: of.map(Into::into),
            by: by.iter().map(|s| s.to_string()).collect(),
            window_ms: 3_600_000,
            granularity_ms: 1,
            filter: None,
        };
        Plan::new(
            vec![
                f("s", "sum", Some("amount"), &["user_id", "merchant"]),
                f(
                    "d",
                    "distinct_count",
                    Some("device"),
                    &["user_id", "merchant"],
                ),
            ],
            300_000,
        )
        .expect("plan")
    }

    #[test]
    fn key_names_are_readable_tagged_and_injective() {
        let plan = plan();
        let layout = KeyLayout::new(&plan, 0, "test");
        let key = |f: &dyn Fn(&mut KeyEncoder<'_>)| {
            let mut buf = Vec::new();
            f(&mut KeyEncoder::new(&mut buf));
            String::from_utf8(layout.redis_key(&buf)).expect("utf8")
        };
        let a = key(&|e| {
            e.str("u42");
            e.int(7)
        });
        assert!(a.ends_with(":{user_id=u42,merchant=#7}"), "{a}");
        assert!(a.starts_with("sluice:test:v1-"), "{a}");
        let b = key(&|e| {
            e.str("u42");
            e.str("7")
        });
        assert!(b.ends_with(":{user_id=u42,merchant=7}"), "{b}");
        let c = key(&|e| {
            e.str("a,merchant=#7}");
            e.str("#x")
        });
        assert!(
            c.ends_with(":{user_id=a%2Cmerchant%3D#7%7D,merchant=%23x}"),
            "{c}"
        );
    }

    #[test]
    fn the_global_key_has_an_explicit_tag() {
        let f = |by: &[&str]| FeatureSpec {
            name: format!("n{}", by.len()),
            agg: "count".parse().expect("agg"),
            of: None,
            by: by.iter().map(|s| s.to_string()).collect(),
            window_ms: 60_000,
            granularity_ms: 1,
            filter: None,
        };
        let plan = Plan::new(vec![f(&[]), f(&["u"])], 0).expect("plan");
        let layout = KeyLayout::new(&plan, 0, "test");
        let name = String::from_utf8(layout.redis_key(&[])).expect("utf8");
        let tag = name
            .strip_prefix(&layout.prefix)
            .and_then(|t| t.strip_prefix("{global-"))
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(tag.len(), 8, "{name}");
        // One slot, the tag's (not the whole name's), the same on every call.
        let slot = crate::state::redis::slot_of(name.as_bytes());
        assert_eq!(
            slot,
            crate::state::redis::slot_of(&name.as_bytes()[layout.prefix.len()..])
        );
        assert_eq!(layout.redis_key(&[]), name.as_bytes());
        // An entity key of the same pipeline has another prefix and an `=` in its tag.
        let mut u = Vec::new();
        KeyEncoder::new(&mut u).str("u1");
        let other =
            String::from_utf8(KeyLayout::new(&plan, 1, "test").redis_key(&u)).expect("utf8");
        assert!(
            other.ends_with("{u=u1}") && !other.starts_with(&layout.prefix),
            "{other}"
        );
    }

    #[test]
    fn entries_round_trip() {
        let plan = plan();
        let layout = KeyLayout::new(&plan, 0, "test");
        let fields = vec![
            FieldObs {
                present: true,
                num: 12.5,
                bytes: b"n12.5",
            },
            FieldObs::default(),
        ];
        let mut buf = Vec::new();
        layout.encode_entry((7, 9), -5, &fields, 0b101, &mut buf);
        let mut decoded = Vec::new();
        let (token, ts, matched) = layout.decode_entry(&buf, 2, &mut decoded).expect("decodes");
        // Without filters in the key spec, no matched bits are kept.
        assert_eq!((token, ts, matched), ((7, 9), -5, 0));
        assert!(decoded[0].present && decoded[0].num == 12.5 && decoded[0].bytes == b"n12.5");
        assert!(!decoded[1].present);
        assert!(layout
            .decode_entry(&buf[..buf.len() - 1], 2, &mut decoded)
            .is_none());
    }
}
