//! Value registers: the values themselves, in time order, for `first`, `last`, `lag` and
//! `quantile`.
//!
//! A series keeps one entry per added event, ordered by (aligned time, arrival): the window of an
//! event is then a contiguous range found by two binary searches. `first` is the range's first
//! entry, `last` its last, `lag` the last entry before the event is added, and a quantile
//! selects the k-th smallest number of the range (O(n) in the window's values).
//!
//! Without a quantile, only two entries per time are ever read (the first and the newest
//! arrival), so a series without one keeps at most two per time: a key that sends many events
//! within one bucket holds two values for it, not all of them.

use std::collections::VecDeque;

use crate::agg::Agg;
use crate::bucket_start;
use crate::plan::{SeriesSpec, WindowSpec};
use crate::value::FeatureValue;
use crate::wire::{Reader, Wire, WireError, Writer};

/// One kept value: a number (for a numeric field) or the canonical bytes of a string, number
/// or boolean ([`crate::KeyEncoder`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// A number.
    Num(f64),
    /// Canonical bytes: a type tag, the text, its length.
    Text(Box<[u8]>),
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    ts: i64,
    value: Stored,
}

/// Scratch space of value series, shared by all series of a shard: the numbers of a quantile's
/// window, and the text of the string values written out.
#[derive(Debug, Default)]
pub struct ValueScratch {
    nums: Vec<f64>,
    /// Canonical bytes of the [`FeatureValue::Text`] values written since it was last taken.
    pub text: Vec<u8>,
}

/// The value registers of one key and field: every window of a value [`SeriesSpec`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueSeries {
    entries: VecDeque<Entry>,
}

impl ValueSeries {
    /// An empty series.
    pub fn new() -> Self {
        Self::default()
    }

    /// The newest entry time, if any.
    pub fn newest(&self) -> Option<i64> {
        self.entries.back().map(|e| e.ts)
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an event at `ts` with `value` and writes its windows' values into `out`. `floor`
    /// as for [`crate::NumericSeries::observe`]: entries no later event's window can reach are
    /// dropped.
    #[inline(never)] // off the path of pipelines without them
    pub fn observe(
        &mut self,
        spec: &SeriesSpec,
        ts: i64,
        value: Stored,
        floor: i64,
        scratch: &mut ValueScratch,
        out: &mut [FeatureValue],
    ) {
        let t = bucket_start(ts, spec.granularity_ms);
        let at = self.entries.partition_point(|e| e.ts <= t);
        // The previous event (before this one is added): the newest entry up to `t`.
        let previous = at.checked_sub(1);
        let replaces = !spec.every_value
            && at >= 2
            && self.entries[at - 1].ts == t
            && self.entries[at - 2].ts == t;
        for w in &spec.windows {
            let lo = t.saturating_sub(w.width_ms);
            let lag = previous.filter(|&i| self.entries[i].ts >= lo);
            self.write_lag(w, lag, scratch, out);
        }
        let end = if replaces {
            self.entries[at - 1] = Entry { ts: t, value };
            at
        } else {
            self.entries.insert(at, Entry { ts: t, value });
            at + 1
        };
        for w in &spec.windows {
            let start = self.start_of(t, w);
            self.write_range(w, start..end, Some(end - 1), scratch, out);
        }
        let horizon = bucket_start(floor, spec.granularity_ms).saturating_sub(spec.max_window_ms());
        let old = self.entries.partition_point(|e| e.ts < horizon);
        self.entries.drain(..old);
    }

    /// Writes the values its windows have for an event at `ts` that is not added (`lag` is
    /// then the newest value, like `last`).
    #[inline(never)] // off the path of pipelines without them
    pub fn read_at(
        &self,
        spec: &SeriesSpec,
        ts: i64,
        scratch: &mut ValueScratch,
        out: &mut [FeatureValue],
    ) {
        let t = bucket_start(ts, spec.granularity_ms);
        let end = self.entries.partition_point(|e| e.ts <= t);
        for w in &spec.windows {
            let start = self.start_of(t, w).min(end);
            let newest = (start < end).then(|| end - 1);
            self.write_lag(w, newest, scratch, out);
            self.write_range(w, start..end, None, scratch, out);
        }
    }

    /// Index of the first entry of window `w` of an event at aligned time `t`.
    fn start_of(&self, t: i64, w: &WindowSpec) -> usize {
        let lo = t.saturating_sub(w.width_ms);
        self.entries.partition_point(|e| e.ts < lo)
    }

    /// Writes window `w`'s `lag` features: entry `lag`, or null.
    fn write_lag(
        &self,
        w: &WindowSpec,
        lag: Option<usize>,
        scratch: &mut ValueScratch,
        out: &mut [FeatureValue],
    ) {
        for &(agg, slot) in &w.outputs {
            if agg == Agg::Lag {
                out[slot] = lag.map_or(FeatureValue::Null, |i| {
                    self.entries[i].value.write(&mut scratch.text)
                });
            }
        }
    }

    /// Writes window `w`'s `first`, `last` and quantile features over the entries in `range`.
    /// `own`: the index of the event's own entry, when it was just added (its `last` is then
    /// its own value, which the output copies from the event).
    fn write_range(
        &self,
        w: &WindowSpec,
        range: std::ops::Range<usize>,
        own: Option<usize>,
        scratch: &mut ValueScratch,
        out: &mut [FeatureValue],
    ) {
        let mut gathered = false;
        for &(agg, slot) in &w.outputs {
            out[slot] = match agg {
                _ if range.is_empty() && agg != Agg::Lag => FeatureValue::Null,
                Agg::First => self.entries[range.start].value.write(&mut scratch.text),
                Agg::Last if own.is_some() => match self.entries[range.end - 1].value {
                    Stored::Num(v) => FeatureValue::Exact(v),
                    Stored::Text(_) => FeatureValue::Own,
                },
                Agg::Last => self.entries[range.end - 1].value.write(&mut scratch.text),
                Agg::Quantile(q) => {
                    if !gathered {
                        scratch.nums.clear();
                        let nums = self.entries.range(range.clone()).map(|e| match e.value {
                            Stored::Num(v) => v,
                            // A value series of a quantile holds numbers only.
                            Stored::Text(_) => f64::NAN,
                        });
                        scratch.nums.extend(nums);
                        gathered = true;
                    }
                    let k = q.rank(scratch.nums.len());
                    let (_, v, _) = scratch.nums.select_nth_unstable_by(k - 1, f64::total_cmp);
                    FeatureValue::Exact(*v)
                }
                _ => continue,
            };
        }
    }

    /// Checks decoded registers against the series they are for: entry times aligned to its
    /// granularity, and numbers exactly when the series keeps numbers.
    pub fn check(&self, spec: &SeriesSpec) -> Result<(), WireError> {
        let g = spec.granularity_ms;
        if self.entries.iter().any(|e| bucket_start(e.ts, g) != e.ts) {
            return Err(WireError(
                "an entry time is not aligned to the series' granularity",
            ));
        }
        if self
            .entries
            .iter()
            .any(|e| matches!(e.value, Stored::Num(_)) != spec.numbers)
        {
            return Err(WireError(
                "a value of another type than the series keeps (number or text)",
            ));
        }
        Ok(())
    }
}

impl Stored {
    /// The value as a feature value: a number as itself, text appended to `text`.
    fn write(&self, text: &mut Vec<u8>) -> FeatureValue {
        match self {
            Stored::Num(v) => FeatureValue::Exact(*v),
            Stored::Text(bytes) => {
                let start = text.len() as u32;
                text.extend_from_slice(bytes);
                FeatureValue::Text {
                    start,
                    len: bytes.len() as u32,
                }
            }
        }
    }
}

/// The number of entries, then each: its time (relative to the state's base), `0` and a number
/// or `1` and canonical bytes.
impl Wire for ValueSeries {
    fn put(&self, w: &mut Writer<'_>) {
        w.u(self.entries.len() as u64);
        for e in &self.entries {
            w.ts(e.ts);
            match &e.value {
                Stored::Num(v) => {
                    w.u(0);
                    w.f(*v);
                }
                Stored::Text(bytes) => {
                    w.u(1);
                    w.bytes(bytes);
                }
            }
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let n = r.count()?;
        let mut entries = VecDeque::with_capacity(n);
        for _ in 0..n {
            let ts = r.ts()?;
            let value = match r.u()? {
                0 => Stored::Num(r.f()?),
                1 => Stored::Text(r.bytes()?.into()),
                _ => return Err(WireError("a value that is neither a number nor text")),
            };
            entries.push_back(Entry { ts, value });
        }
        if entries
            .iter()
            .zip(entries.iter().skip(1))
            .any(|(a, b)| a.ts > b.ts)
        {
            return Err(WireError("values out of time order"));
        }
        Ok(ValueSeries { entries })
    }
}
