//! count / sum / avg / min / max / variance registers over sliding event-time windows.
//!
//! A series keeps one bucket per distinct (aligned) event time, ordered by time, and for each
//! window a running aggregate over the buckets in `[newest - width, newest]`. An in-order event
//! updates the newest bucket and slides every window forward: amortised O(1). An out-of-order
//! event is inserted at its time, added to the running windows it falls in, and its own value
//! is computed over `[t - width, t]` by the cheaper of a direct scan and an adjustment of the
//! running aggregate (min and max always scan).
//!
//! A series with a variance feature also keeps sums of squares ([`Squares`]: per bucket and
//! per window, updated in step with the buckets and windows). They live beside the series,
//! passed in by [`crate::KeyState`], so that a series without a variance does not grow.
//!
//! - `range`: sliding a window, and the totals of a range of buckets;
//! - `decode`: the binary form and the checks of decoded registers.

mod decode;
mod range;

use smallvec::SmallVec;

use crate::bucket_start;
use crate::deque::SmallDeque;
use crate::minmax::{Extreme, MonoDeque};
use crate::plan::{SeriesSpec, WindowSpec};
use crate::square::SquareSum;
use crate::sum::ExactSum;
use crate::value::FeatureValue;
use crate::variance::{variance, Divisor};
use crate::Agg;
use range::{advance, extreme, range_extremes, range_totals, Totals};

/// The merged values of every event with one aligned time.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    ts: i64,
    count: u32,
    sum: ExactSum,
    min: f64,
    max: f64,
}

impl Bucket {
    fn new(ts: i64, v: f64) -> Self {
        let mut sum = ExactSum::default();
        sum.add(v);
        Bucket {
            ts,
            count: 1,
            sum,
            min: v,
            max: v,
        }
    }

    fn merge(&mut self, v: f64) {
        self.count += 1;
        self.sum.add(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// Running aggregate of one window over buckets `lo..` (those with `ts >= start`).
#[derive(Debug, Clone, Default)]
struct Running {
    start: i64,
    lo: usize,
    count: u64,
    sum: ExactSum,
    /// Only for windows with a min or max feature: boxed, so that the common case stays small.
    extremes: Option<Box<Extremes>>,
}

/// Monotonic deques of a window's buckets.
#[derive(Debug, Clone, Default)]
struct Extremes {
    min: MonoDeque,
    max: MonoDeque,
}

/// Numeric registers of one key and field: every window of a [`SeriesSpec`] of kind numeric.
#[derive(Debug, Clone)]
pub struct NumericSeries {
    buckets: SmallDeque<[Bucket; 1]>,
    windows: SmallVec<[Running; 1]>,
}

/// Sums of squares of one numeric series with a variance feature: one per bucket, in the
/// series' bucket order, and one per window, over the window's running buckets.
#[derive(Debug, Clone, Default)]
pub struct Squares {
    buckets: SmallDeque<[SquareSum; 1]>,
    windows: SmallVec<[SquareSum; 1]>,
}

impl Squares {
    /// Empty sums for `spec` (one per window).
    pub fn new(spec: &SeriesSpec) -> Self {
        Squares {
            buckets: SmallDeque::new(),
            windows: spec.windows.iter().map(|_| SquareSum::default()).collect(),
        }
    }

    /// The bucket sums and an iterator over the window sums, borrowed apart.
    fn split(&mut self) -> (&[SquareSum], std::slice::IterMut<'_, SquareSum>) {
        (self.buckets.as_slice(), self.windows.iter_mut())
    }

    /// Records value `v` in bucket `idx`: a new bucket when `new`, else one more value.
    fn record(&mut self, idx: usize, new: bool, v: f64) {
        // Positions past the end only come with sums that do not fit their series, which
        // `NumericSeries::check` refuses: ignored rather than a panic.
        if new && idx <= self.buckets.len() {
            let mut s = SquareSum::default();
            s.add(v);
            self.buckets.insert(idx, s);
        } else if let Some(s) = self.buckets.get_mut(idx).filter(|_| !new) {
            s.add(v);
        }
    }
}

/// The value of `agg` over a window of `count` values with sum `sum` and (when the series keeps
/// them) sum of squares `squares`; `extreme` gives its minimum or maximum (asked only when the
/// window is not empty). `None` for the aggregations of other registers.
#[inline]
fn value(
    agg: Agg,
    count: u64,
    sum: &ExactSum,
    squares: Option<&SquareSum>,
    extreme: impl Fn(Extreme) -> f64,
) -> Option<FeatureValue> {
    Some(match (agg, count) {
        (Agg::Count, _) => FeatureValue::Int(count),
        (Agg::Sum, _) => FeatureValue::Num(sum.value()),
        (
            Agg::DistinctCount
            | Agg::Last
            | Agg::First
            | Agg::Lag
            | Agg::Quantile(_)
            | Agg::DistinctCountApprox
            | Agg::Set(_)
            | Agg::LinkedDistinctCount
            | Agg::LinkedCount
            | Agg::LinkedDistinctCountApprox,
            _,
        ) => return None,
        (_, 0) => FeatureValue::Null,
        (Agg::Avg, _) => FeatureValue::Num(sum.value() / count as f64),
        (Agg::Min, _) => FeatureValue::Exact(extreme(Extreme::Min)),
        (Agg::Max, _) => FeatureValue::Exact(extreme(Extreme::Max)),
        (Agg::Variance | Agg::Stddev | Agg::VariancePop | Agg::StddevPop, _) => {
            let divisor = match agg {
                Agg::Variance | Agg::Stddev => Divisor::Sample,
                _ => Divisor::Population,
            };
            let root = matches!(agg, Agg::Stddev | Agg::StddevPop);
            match squares.and_then(|q| variance(count, sum, q, divisor)) {
                Some(v) => FeatureValue::Num(if root { v.sqrt() } else { v }),
                None => FeatureValue::Null,
            }
        }
    })
}

/// Writes the values of window `w`'s features into `out` (see [`value`]).
#[inline]
fn write_window(
    w: &WindowSpec,
    count: u64,
    sum: &ExactSum,
    squares: Option<&SquareSum>,
    extreme: impl Fn(Extreme) -> f64,
    out: &mut [FeatureValue],
) {
    for &(agg, slot) in &w.outputs {
        if let Some(v) = value(agg, count, sum, squares, &extreme) {
            out[slot] = v;
        }
    }
}

/// Whether every running window of a series, starting at `starts`, can slide forward to
/// aligned time `t` (none has slid past `t - width` already, for a read at a later time).
/// Every window is checked, not only the first: a restored state is only known to be
/// consistent window by window.
pub(crate) fn windows_slide_to(
    spec: &SeriesSpec,
    starts: impl Iterator<Item = i64>,
    t: i64,
) -> bool {
    spec.windows
        .iter()
        .zip(starts)
        .all(|(w, start)| t.saturating_sub(w.width_ms) >= start)
}

impl NumericSeries {
    /// An empty series for `spec`.
    pub fn new(spec: &SeriesSpec) -> Self {
        NumericSeries {
            buckets: SmallDeque::new(),
            windows: spec
                .windows
                .iter()
                .map(|w| Running {
                    start: i64::MIN,
                    extremes: (w.needs_min || w.needs_max).then(Box::default),
                    ..Running::default()
                })
                .collect(),
        }
    }

    /// The newest bucket time, if any.
    pub fn newest(&self) -> Option<i64> {
        self.buckets.back().map(|b| b.ts)
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Adds an event at `ts` with value `v` (ignored unless `spec.needs_values`) and writes its
    /// feature values into `out` (indexed by output slot). `squares`: the series' sums of
    /// squares, when it has a variance feature.
    ///
    /// `floor` is the oldest event time a later event may still have (newest event time seen
    /// minus lateness): buckets that no window of such an event can reach are dropped.
    /// The caller guarantees `ts >= floor`.
    pub fn observe(
        &mut self,
        spec: &SeriesSpec,
        ts: i64,
        v: f64,
        floor: i64,
        mut squares: Option<&mut Squares>,
        out: &mut [FeatureValue],
    ) {
        let g = spec.granularity_ms;
        let t = bucket_start(ts, g);
        let v = if spec.needs_values { v } else { 0.0 };
        if self.in_order(spec, t) {
            self.observe_in_order(spec, t, v, squares.as_deref_mut(), out);
        } else {
            self.observe_out_of_order(spec, t, v, squares.as_deref_mut(), out);
        }
        self.evict(
            bucket_start(floor, g).saturating_sub(spec.max_window_ms()),
            squares,
        );
    }

    /// Whether aligned time `t` is at or after the newest bucket and every running window can
    /// slide forward to it (none has already slid past `t - width` for a read at a later time).
    fn in_order(&self, spec: &SeriesSpec, t: i64) -> bool {
        self.newest().is_none_or(|newest| t >= newest)
            && windows_slide_to(spec, self.windows.iter().map(|r| r.start), t)
    }

    /// Writes the values its windows have for an event at `ts` that is not added (it lacks the
    /// field, or does not match the feature's filter): the same as [`NumericSeries::peek`],
    /// but an event in time order slides the running windows (amortised O(1)) instead of
    /// scanning the buckets.
    pub fn read_at(
        &mut self,
        spec: &SeriesSpec,
        ts: i64,
        squares: Option<&mut Squares>,
        out: &mut [FeatureValue],
    ) {
        let t = bucket_start(ts, spec.granularity_ms);
        if !self.in_order(spec, t) {
            return self.peek(spec, ts, squares.map(|s| &*s), out);
        }
        let (sq_buckets, mut sq_windows) = squares.map(Squares::split).unzip();
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            let mut run_sq = sq_windows.as_mut().and_then(Iterator::next);
            let sq = run_sq.as_deref_mut().zip(sq_buckets);
            advance(run, &self.buckets, t.saturating_sub(w.width_ms), sq);
            let run = &*run;
            let extreme = |which| extreme(&run.extremes, which);
            write_window(w, run.count, &run.sum, run_sq.as_deref(), extreme, out);
        }
    }

    fn observe_in_order(
        &mut self,
        spec: &SeriesSpec,
        t: i64,
        v: f64,
        mut squares: Option<&mut Squares>,
        out: &mut [FeatureValue],
    ) {
        match self.buckets.back_mut() {
            Some(b) if b.ts == t => {
                b.merge(v);
                if let Some(sq) = squares.as_deref_mut() {
                    sq.record(sq.buckets.len().saturating_sub(1), false, v);
                }
            }
            _ => {
                self.buckets.push_back(Bucket::new(t, v));
                if let Some(sq) = squares.as_deref_mut() {
                    sq.record(sq.buckets.len(), true, v);
                }
            }
        }
        let newest = *self.buckets.back().expect("just pushed");
        let (sq_buckets, mut sq_windows) = squares.map(Squares::split).unzip();
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            let mut run_sq = sq_windows.as_mut().and_then(Iterator::next);
            run.count += 1;
            if spec.needs_values {
                run.sum.add(v);
            }
            if let Some(q) = run_sq.as_deref_mut() {
                q.add(v);
            }
            if let Some(e) = &mut run.extremes {
                if w.needs_min {
                    e.min.push_newest(Extreme::Min, t, newest.min);
                }
                if w.needs_max {
                    e.max.push_newest(Extreme::Max, t, newest.max);
                }
            }
            // Saturating: a start before i64::MIN means the window holds everything.
            let sq = run_sq.as_deref_mut().zip(sq_buckets);
            advance(run, &self.buckets, t.saturating_sub(w.width_ms), sq);
            let run = &*run;
            let extreme = |which| extreme(&run.extremes, which);
            write_window(w, run.count, &run.sum, run_sq.as_deref(), extreme, out);
        }
    }

    fn observe_out_of_order(
        &mut self,
        spec: &SeriesSpec,
        t: i64,
        v: f64,
        mut squares: Option<&mut Squares>,
        out: &mut [FeatureValue],
    ) {
        let p = self.buckets.partition_point(|b| b.ts <= t);
        let merged = p > 0 && self.buckets[p - 1].ts == t;
        let idx = if merged {
            self.buckets[p - 1].merge(v);
            p - 1
        } else {
            self.buckets.insert(p, Bucket::new(t, v));
            for run in self.windows.iter_mut() {
                if t < run.start {
                    run.lo += 1;
                }
            }
            p
        };
        if let Some(sq) = squares.as_deref_mut() {
            sq.record(idx, !merged, v);
        }
        let bucket = self.buckets[idx];
        let (sq_buckets, mut sq_windows) = squares.map(Squares::split).unzip();
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            let mut run_sq = sq_windows.as_mut().and_then(Iterator::next);
            if t >= run.start {
                run.count += 1;
                run.sum.add(v);
                if let Some(q) = run_sq.as_deref_mut() {
                    q.add(v);
                }
                if let Some(e) = &mut run.extremes {
                    if w.needs_min {
                        e.min.insert(Extreme::Min, t, bucket.min);
                    }
                    if w.needs_max {
                        e.max.insert(Extreme::Max, t, bucket.max);
                    }
                }
            }
            let start = t.saturating_sub(w.width_ms);
            let a = self.buckets.partition_point(|b| b.ts < start);
            let sq = run_sq.as_deref().zip(sq_buckets);
            let totals = range_totals(&self.buckets, run, sq, a, idx);
            let (min, max) = if w.needs_min || w.needs_max {
                range_extremes(&self.buckets, run, t, a, idx)
            } else {
                (f64::NAN, f64::NAN)
            };
            let extreme = |which| if which == Extreme::Min { min } else { max };
            let sq = run_sq.is_some().then_some(&totals.squares);
            write_window(w, totals.count, &totals.sum, sq, extreme, out);
        }
    }

    /// Writes the values its windows would have for an event at `at` without adding one: the
    /// buckets with times in `[bucket(at) - width, bucket(at)]`. An empty window gives a count
    /// and a sum of 0 and null for everything else. Read-only; a scan of the buckets.
    pub fn peek(
        &self,
        spec: &SeriesSpec,
        at: i64,
        squares: Option<&Squares>,
        out: &mut [FeatureValue],
    ) {
        let t = bucket_start(at, spec.granularity_ms);
        let end = self.buckets.partition_point(|b| b.ts <= t);
        let sq_buckets = squares.map(|s| s.buckets.as_slice());
        for w in &spec.windows {
            let start = self
                .buckets
                .partition_point(|b| b.ts < t.saturating_sub(w.width_ms));
            let mut totals = Totals::default();
            let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
            for i in start..end.max(start) {
                let b = &self.buckets[i];
                totals.add(b, sq_buckets.and_then(|q| q.get(i)));
                min = min.min(b.min);
                max = max.max(b.max);
            }
            let extreme = |which| if which == Extreme::Min { min } else { max };
            let sq = squares.is_some().then_some(&totals.squares);
            write_window(w, totals.count, &totals.sum, sq, extreme, out);
        }
    }

    /// Drops buckets older than `horizon` (and their sums of squares), first from every
    /// running window.
    fn evict(&mut self, horizon: i64, squares: Option<&mut Squares>) {
        if self.buckets.front().is_none_or(|b| b.ts >= horizon) {
            return;
        }
        let (sq_buckets, mut sq_windows) = match squares {
            Some(sq) => {
                let (b, w) = (&mut sq.buckets, &mut sq.windows);
                (Some(b), Some(w.iter_mut()))
            }
            None => (None, None),
        };
        for run in self.windows.iter_mut() {
            let run_sq = sq_windows.as_mut().and_then(Iterator::next);
            let sq = run_sq.zip(sq_buckets.as_deref().map(SmallDeque::as_slice));
            advance(run, &self.buckets, horizon, sq);
        }
        let mut dropped = 0;
        while self.buckets.front().is_some_and(|b| b.ts < horizon) {
            self.buckets.pop_front();
            dropped += 1;
        }
        if let Some(b) = sq_buckets {
            for _ in 0..dropped {
                b.pop_front();
            }
        }
        for run in self.windows.iter_mut() {
            run.lo -= dropped;
        }
    }
}
