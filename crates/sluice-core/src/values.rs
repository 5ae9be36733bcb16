//! Value registers: the values themselves, in time order, for `first`, `last`, `lag` and
//! `quantile`.
//!
//! A series keeps one entry per added event, ordered by (aligned time, arrival): the window of an
//! event is then a contiguous range found by two binary searches. `first` is the range's first
//! entry, `last` its last, `lag` the last entry before the event is added, and a quantile
//! the k-th smallest number of the range.
//!
//! Without a quantile, only two entries per time are ever read (the first and the newest
//! arrival), so a series without one keeps at most two per time: a key that sends many events
//! within one bucket holds two values for it, not all of them.
//!
//! With a quantile, each window also keeps its running range's numbers in a [`Ranked`]
//! multiset while events come in time order: an event adds its number and removes those that
//! left the window, and the k-th smallest is a walk over sorted blocks, so a hot key with
//! thousands of values in its window is not re-selected on every event. An event out of
//! order selects from its own range. The running ranges are derived: not stored, rebuilt at
//! the first event in time order after a restore.

use std::collections::VecDeque;

use crate::agg::Agg;
use crate::bucket_start;
use crate::plan::{SeriesSpec, WindowSpec};
use crate::ranked::Ranked;
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
    /// For a series with a quantile, per window: its running range (empty until built).
    running: Vec<Running>,
}

/// The running range of one window: the entries from `lo` on, whose times are at or after
/// `start`, and their numbers.
#[derive(Debug, Clone, Default, PartialEq)]
struct Running {
    start: i64,
    lo: usize,
    numbers: Ranked,
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
        let in_order = self.slides_to(spec, t);
        if let Stored::Num(v) = value {
            self.enter_running(t, v);
        }
        let end = if replaces {
            self.entries[at - 1] = Entry { ts: t, value };
            at
        } else {
            self.entries.insert(at, Entry { ts: t, value });
            at + 1
        };
        if in_order {
            self.slide(spec, t);
        }
        for (j, w) in spec.windows.iter().enumerate() {
            let start = self.start_of(t, w);
            let running = self.running.get(j).filter(|_| in_order);
            self.write_range(w, start..end, Some(end - 1), running, scratch, out);
        }
        let horizon = bucket_start(floor, spec.granularity_ms).saturating_sub(spec.max_window_ms());
        let old = self.entries.partition_point(|e| e.ts < horizon);
        self.entries.drain(..old);
        self.drained(old);
    }

    /// Whether an event at aligned time `t` is in time order for the running ranges: a series
    /// with a quantile, `t` at or after every entry, and every window able to slide to it.
    fn slides_to(&self, spec: &SeriesSpec, t: i64) -> bool {
        spec.every_value
            && self.newest().is_none_or(|newest| t >= newest)
            && (self.running.len() != spec.windows.len()
                || crate::numeric::windows_slide_to(spec, self.running.iter().map(|r| r.start), t))
    }

    /// A number added at `t`, before its entry is inserted: into each running range that
    /// covers `t`, else the range's first entry moves one place on.
    fn enter_running(&mut self, t: i64, v: f64) {
        for run in &mut self.running {
            if t >= run.start {
                run.numbers.insert(v);
            } else {
                run.lo += 1;
            }
        }
    }

    /// Slides (or, after a restore, builds) each window's running range to end at `t`.
    fn slide(&mut self, spec: &SeriesSpec, t: i64) {
        if self.running.len() != spec.windows.len() {
            self.running = spec
                .windows
                .iter()
                .map(|w| {
                    let start = t.saturating_sub(w.width_ms);
                    let lo = self.entries.partition_point(|e| e.ts < start);
                    let mut numbers = Ranked::new();
                    for e in self.entries.range(lo..) {
                        if let Stored::Num(v) = e.value {
                            numbers.insert(v);
                        }
                    }
                    Running { start, lo, numbers }
                })
                .collect();
            return;
        }
        for (w, run) in spec.windows.iter().zip(&mut self.running) {
            run.start = t.saturating_sub(w.width_ms);
            while let Some(e) = self.entries.get(run.lo).filter(|e| e.ts < run.start) {
                if let Stored::Num(v) = e.value {
                    run.numbers.remove(v);
                }
                run.lo += 1;
            }
        }
    }

    /// `old` entries were dropped from the front: none of them was in a running range (they
    /// are older than every window of a later event), so each range's first entry moves back.
    fn drained(&mut self, old: usize) {
        if old == 0 {
            return;
        }
        if self.running.iter().any(|run| run.lo < old) {
            // Not expected; rebuilt at the next event in time order rather than trusted.
            self.running.clear();
        }
        for run in &mut self.running {
            run.lo -= old;
        }
    }

    /// Writes the values its windows have for an event at `ts` that is not added (`lag` is
    /// then the newest value, like `last`): as [`ValueSeries::peek`], but an event in time
    /// order slides the running ranges of a quantile instead of selecting.
    #[inline(never)] // off the path of pipelines without them
    pub fn read_at(
        &mut self,
        spec: &SeriesSpec,
        ts: i64,
        scratch: &mut ValueScratch,
        out: &mut [FeatureValue],
    ) {
        let t = bucket_start(ts, spec.granularity_ms);
        let in_order = self.slides_to(spec, t);
        if in_order {
            self.slide(spec, t);
        }
        self.read(spec, t, in_order, scratch, out);
    }

    /// Writes the values its windows would have for an event at `at` without adding one.
    /// Read-only.
    pub fn peek(
        &self,
        spec: &SeriesSpec,
        at: i64,
        scratch: &mut ValueScratch,
        out: &mut [FeatureValue],
    ) {
        self.read(
            spec,
            bucket_start(at, spec.granularity_ms),
            false,
            scratch,
            out,
        );
    }

    /// The values of the windows ending at aligned time `t`; `running`: the running ranges
    /// end at `t`.
    fn read(
        &self,
        spec: &SeriesSpec,
        t: i64,
        running: bool,
        scratch: &mut ValueScratch,
        out: &mut [FeatureValue],
    ) {
        let end = self.entries.partition_point(|e| e.ts <= t);
        for (j, w) in spec.windows.iter().enumerate() {
            let start = self.start_of(t, w).min(end);
            let newest = (start < end).then(|| end - 1);
            self.write_lag(w, newest, scratch, out);
            let run = self.running.get(j).filter(|_| running);
            self.write_range(w, start..end, None, run, scratch, out);
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
    /// its own value, which the output copies from the event). `running`: the window's running
    /// range when it is exactly `range` (quantiles then read its ranks).
    fn write_range(
        &self,
        w: &WindowSpec,
        range: std::ops::Range<usize>,
        own: Option<usize>,
        running: Option<&Running>,
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
                Agg::Quantile(q) if running.is_some_and(|r| r.numbers.len() == range.len()) => {
                    let numbers = &running.expect("checked").numbers;
                    numbers
                        .kth(q.rank(numbers.len()))
                        .map_or(FeatureValue::Null, FeatureValue::Exact)
                }
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
        Ok(ValueSeries {
            entries,
            running: Vec::new(),
        })
    }
}
