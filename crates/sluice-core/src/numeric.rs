//! count / sum / avg / min / max registers over sliding event-time windows.
//!
//! A series keeps one bucket per distinct (aligned) event time, ordered by time, and for each
//! window a running aggregate over the buckets in `[newest - width, newest]`. An in-order event
//! updates the newest bucket and slides every window forward: amortised O(1). An out-of-order
//! event is inserted at its time, added to the running windows it falls in, and its own value
//! is computed over `[t - width, t]` by the cheaper of a direct scan and an adjustment of the
//! running aggregate (min and max always scan).

use smallvec::SmallVec;

use crate::bucket_start;
use crate::deque::SmallDeque;
use crate::minmax::{Extreme, MonoDeque};
use crate::plan::SeriesSpec;
use crate::sum::ExactSum;
use crate::value::FeatureValue;
use crate::wire::{Reader, Wire, WireError, Writer};
use crate::Agg;

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
    /// feature values into `out` (indexed by output slot).
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
        out: &mut [FeatureValue],
    ) {
        let g = spec.granularity_ms;
        let t = bucket_start(ts, g);
        let v = if spec.needs_values { v } else { 0.0 };
        if self.in_order(spec, t) {
            self.observe_in_order(spec, t, v, out);
        } else {
            self.observe_out_of_order(spec, t, v, out);
        }
        self.evict(bucket_start(floor, g).saturating_sub(spec.max_window_ms()));
    }

    /// Whether aligned time `t` is at or after the newest bucket and every running window can
    /// slide forward to it (none has already slid past `t - width` for a read at a later time).
    fn in_order(&self, spec: &SeriesSpec, t: i64) -> bool {
        // Every window is checked, not only the first: a restored state is only known to be
        // consistent window by window.
        self.newest().is_none_or(|newest| t >= newest)
            && spec
                .windows
                .iter()
                .zip(&self.windows)
                .all(|(w, run)| t.saturating_sub(w.width_ms) >= run.start)
    }

    /// Writes the values its windows have for an event at `ts` that is not added (it lacks the
    /// field, or does not match the feature's filter): the same as [`NumericSeries::peek`],
    /// but an event in time order slides the running windows (amortised O(1)) instead of
    /// scanning the buckets.
    pub fn read_at(&mut self, spec: &SeriesSpec, ts: i64, out: &mut [FeatureValue]) {
        let t = bucket_start(ts, spec.granularity_ms);
        if !self.in_order(spec, t) {
            return self.peek(spec, ts, out);
        }
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            advance(run, &self.buckets, t.saturating_sub(w.width_ms));
            for &(agg, slot) in &w.outputs {
                out[slot] = match (agg, run.count) {
                    (Agg::Count, count) => FeatureValue::Int(count),
                    (Agg::Sum, _) => FeatureValue::Num(run.sum.value()),
                    (Agg::Avg | Agg::Min | Agg::Max, 0) => FeatureValue::Null,
                    (Agg::Avg, count) => FeatureValue::Num(run.sum.value() / count as f64),
                    (Agg::Min, _) => FeatureValue::Exact(extreme(&run.extremes, |e| e.min.front())),
                    (Agg::Max, _) => FeatureValue::Exact(extreme(&run.extremes, |e| e.max.front())),
                    (Agg::DistinctCount | Agg::Last, _) => continue,
                };
            }
        }
    }

    fn observe_in_order(&mut self, spec: &SeriesSpec, t: i64, v: f64, out: &mut [FeatureValue]) {
        match self.buckets.back_mut() {
            Some(b) if b.ts == t => b.merge(v),
            _ => self.buckets.push_back(Bucket::new(t, v)),
        }
        let newest = *self.buckets.back().expect("just pushed");
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            run.count += 1;
            if spec.needs_values {
                run.sum.add(v);
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
            advance(run, &self.buckets, t.saturating_sub(w.width_ms));
            for &(agg, slot) in &w.outputs {
                out[slot] = match agg {
                    Agg::Count => FeatureValue::Int(run.count),
                    Agg::Sum => FeatureValue::Num(run.sum.value()),
                    Agg::Avg => FeatureValue::Num(run.sum.value() / run.count as f64),
                    Agg::Min => FeatureValue::Exact(extreme(&run.extremes, |e| e.min.front())),
                    Agg::Max => FeatureValue::Exact(extreme(&run.extremes, |e| e.max.front())),
                    Agg::DistinctCount | Agg::Last => continue,
                };
            }
        }
    }

    fn observe_out_of_order(
        &mut self,
        spec: &SeriesSpec,
        t: i64,
        v: f64,
        out: &mut [FeatureValue],
    ) {
        let p = self.buckets.partition_point(|b| b.ts <= t);
        let idx = if p > 0 && self.buckets[p - 1].ts == t {
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
        let bucket = self.buckets[idx];
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            if t >= run.start {
                run.count += 1;
                run.sum.add(v);
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
            let (count, sum) = range_count_sum(&self.buckets, run, a, idx);
            let (min, max) = if w.needs_min || w.needs_max {
                range_extremes(&self.buckets, run, t, a, idx)
            } else {
                (f64::NAN, f64::NAN)
            };
            for &(agg, slot) in &w.outputs {
                out[slot] = match agg {
                    Agg::Count => FeatureValue::Int(count),
                    Agg::Sum => FeatureValue::Num(sum),
                    Agg::Avg => FeatureValue::Num(sum / count as f64),
                    Agg::Min => FeatureValue::Exact(min),
                    Agg::Max => FeatureValue::Exact(max),
                    Agg::DistinctCount | Agg::Last => continue,
                };
            }
        }
    }

    /// Writes the values its windows would have for an event at `at` without adding one: the
    /// buckets with times in `[bucket(at) - width, bucket(at)]`. An empty window gives a count
    /// and a sum of 0 and a null average, minimum and maximum. Read-only; a scan of the buckets.
    pub fn peek(&self, spec: &SeriesSpec, at: i64, out: &mut [FeatureValue]) {
        let t = bucket_start(at, spec.granularity_ms);
        let end = self.buckets.partition_point(|b| b.ts <= t);
        for w in &spec.windows {
            let start = self
                .buckets
                .partition_point(|b| b.ts < t.saturating_sub(w.width_ms));
            let (mut count, mut sum) = (0u64, ExactSum::default());
            let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
            for b in self.buckets.range(start..end.max(start)) {
                count += u64::from(b.count);
                sum.add_sum(&b.sum);
                min = min.min(b.min);
                max = max.max(b.max);
            }
            for &(agg, slot) in &w.outputs {
                out[slot] = match (agg, count) {
                    (Agg::Count, _) => FeatureValue::Int(count),
                    (Agg::Sum, _) => FeatureValue::Num(sum.value()),
                    (Agg::Avg | Agg::Min | Agg::Max, 0) => FeatureValue::Null,
                    (Agg::Avg, _) => FeatureValue::Num(sum.value() / count as f64),
                    (Agg::Min, _) => FeatureValue::Exact(min),
                    (Agg::Max, _) => FeatureValue::Exact(max),
                    (Agg::DistinctCount | Agg::Last, _) => continue,
                };
            }
        }
    }

    /// Drops buckets older than `horizon`, first from every running window.
    fn evict(&mut self, horizon: i64) {
        if self.buckets.front().is_none_or(|b| b.ts >= horizon) {
            return;
        }
        for run in self.windows.iter_mut() {
            advance(run, &self.buckets, horizon);
        }
        let mut dropped = 0;
        while self.buckets.front().is_some_and(|b| b.ts < horizon) {
            self.buckets.pop_front();
            dropped += 1;
        }
        for run in self.windows.iter_mut() {
            run.lo -= dropped;
        }
    }
}

/// Checks of decoded registers: a state read from bytes that pass their checksum may still be
/// structurally wrong (written for another plan, or damaged before its checksum was taken).
/// Every invariant the update code relies on is checked, so that a state that passes can be
/// updated and queried without panicking.
impl NumericSeries {
    /// Checks decoded registers against the series they are for: as many windows, minimum
    /// and maximum registers exactly where a feature needs them, and bucket times aligned to
    /// the granularity. (Their inner consistency is checked when they are decoded.)
    pub fn check(&self, spec: &SeriesSpec) -> Result<(), WireError> {
        if self.windows.len() != spec.windows.len() {
            return Err(WireError(
                "a numeric series has another number of windows than in the plan",
            ));
        }
        for (run, w) in self.windows.iter().zip(&spec.windows) {
            // A window may start anywhere: reads of events that were not added slide windows
            // past the newest bucket, and the update code decides per event whether it is in
            // order for every window (`in_order`).
            let fits = match &run.extremes {
                None => !w.needs_min && !w.needs_max,
                Some(e) => {
                    let stray_min = !w.needs_min && !e.min.is_empty();
                    let stray_max = !w.needs_max && !e.max.is_empty();
                    (w.needs_min || w.needs_max) && !stray_min && !stray_max
                }
            };
            if !fits {
                return Err(WireError(
                    "a numeric window's minimum and maximum registers do not match the plan's features",
                ));
            }
        }
        let g = spec.granularity_ms;
        if self
            .buckets
            .as_slice()
            .iter()
            .any(|b| bucket_start(b.ts, g) != b.ts)
        {
            return Err(WireError(
                "a bucket time is not aligned to the series' granularity",
            ));
        }
        Ok(())
    }

    /// The inner consistency of decoded registers: buckets in strictly increasing time order
    /// and never empty; each window's first bucket matching its start, its count adding up to
    /// its buckets, its minimum and maximum deques in time order over buckets it holds.
    fn validate(&self) -> Result<(), WireError> {
        let buckets = self.buckets.as_slice();
        if buckets.iter().any(|b| b.count == 0) {
            return Err(WireError("an empty bucket"));
        }
        if buckets.windows(2).any(|p| p[0].ts >= p[1].ts) {
            return Err(WireError("buckets out of time order"));
        }
        for run in &self.windows {
            let (before, inside) = buckets
                .split_at_checked(run.lo)
                .ok_or(WireError("a window starts beyond its series' buckets"))?;
            if before.last().is_some_and(|b| b.ts >= run.start)
                || inside.first().is_some_and(|b| b.ts < run.start)
            {
                return Err(WireError(
                    "a window's first bucket does not match its start time",
                ));
            }
            let count: u64 = inside.iter().map(|b| u64::from(b.count)).sum();
            if count != run.count {
                return Err(WireError("a window's count does not add up to its buckets"));
            }
            if let Some(e) = &run.extremes {
                for deque in [&e.min, &e.max] {
                    check_deque(deque, inside)?;
                }
            }
        }
        Ok(())
    }
}

/// A minimum or maximum deque holds bucket times of its window, in strictly increasing order.
fn check_deque(deque: &MonoDeque, inside: &[Bucket]) -> Result<(), WireError> {
    let mut previous = None;
    for t in deque.times() {
        if previous.is_some_and(|p| p >= t) {
            return Err(WireError("a minimum or maximum deque out of time order"));
        }
        if inside.binary_search_by_key(&t, |b| b.ts).is_err() {
            return Err(WireError(
                "a minimum or maximum deque refers to a bucket outside its window",
            ));
        }
        previous = Some(t);
    }
    Ok(())
}

/// Moves a running window's start forward to `start`, removing the buckets it leaves.
#[inline]
fn advance(run: &mut Running, buckets: &SmallDeque<[Bucket; 1]>, start: i64) {
    if start <= run.start {
        return;
    }
    run.start = start;
    while let Some(b) = buckets.get(run.lo) {
        if b.ts >= start {
            break;
        }
        run.count -= u64::from(b.count);
        run.sum.sub_sum(&b.sum);
        if let Some(e) = &mut run.extremes {
            e.min.expire(b.ts);
            e.max.expire(b.ts);
        }
        run.lo += 1;
    }
    if run.count == 0 {
        run.sum.clear();
        if let Some(e) = &mut run.extremes {
            e.min.clear();
            e.max.clear();
        }
    }
}

/// The front of a window's min or max deque (NaN if missing: never for a non-empty window).
#[inline]
fn extreme(extremes: &Option<Box<Extremes>>, front: impl Fn(&Extremes) -> Option<f64>) -> f64 {
    extremes.as_deref().and_then(front).unwrap_or(f64::NAN)
}

/// Minimum and maximum of buckets `a..=idx` (those with times in `[t - width, t]`).
///
/// When bucket `t` lies in the running window (`lo..`), the range is `a..lo` (buckets that left
/// the running window, few for a slightly late event) plus `lo..=idx`; the running window's
/// minimum (maximum) covers `lo..=idx` too whenever its time is at most `t`, which is the usual
/// case, so only `a..lo` is scanned. Otherwise the whole range is scanned.
fn range_extremes(
    buckets: &SmallDeque<[Bucket; 1]>,
    run: &Running,
    t: i64,
    a: usize,
    idx: usize,
) -> (f64, f64) {
    let scan = |range: std::ops::Range<usize>,
                pick: fn(&Bucket) -> f64,
                better: fn(f64, f64) -> f64,
                init: f64| { buckets.range(range).map(pick).fold(init, better) };
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let from_running = |front: Option<(i64, f64)>| front.filter(|&(ts, _)| ts <= t).map(|(_, v)| v);
    let (run_min, run_max) = match (&run.extremes, t >= run.start) {
        (Some(e), true) => (
            from_running(e.min.front_entry()),
            from_running(e.max.front_entry()),
        ),
        _ => (None, None),
    };
    let split = if t >= run.start {
        run.lo.max(a)
    } else {
        idx + 1
    };
    match run_min {
        Some(v) => min = v.min(scan(a..split, |b| b.min, f64::min, f64::INFINITY)),
        None => min = min.min(scan(a..idx + 1, |b| b.min, f64::min, f64::INFINITY)),
    }
    match run_max {
        Some(v) => max = v.max(scan(a..split, |b| b.max, f64::max, f64::NEG_INFINITY)),
        None => max = max.max(scan(a..idx + 1, |b| b.max, f64::max, f64::NEG_INFINITY)),
    }
    (min, max)
}

/// Count and sum of buckets `a..=b`, by a direct scan or by adjusting the running aggregate of
/// `lo..`, whichever touches fewer buckets.
fn range_count_sum(
    buckets: &SmallDeque<[Bucket; 1]>,
    run: &Running,
    a: usize,
    b: usize,
) -> (u64, f64) {
    let direct = b + 1 - a;
    let adjust = (buckets.len() - 1 - b) + a.abs_diff(run.lo);
    let mut count: u64;
    let mut sum: ExactSum;
    let add = |count: &mut u64, sum: &mut ExactSum, x: &Bucket| {
        *count += u64::from(x.count);
        sum.add_sum(&x.sum);
    };
    let remove = |count: &mut u64, sum: &mut ExactSum, x: &Bucket| {
        *count -= u64::from(x.count);
        sum.sub_sum(&x.sum);
    };
    if direct <= adjust {
        count = 0;
        sum = ExactSum::default();
        for x in buckets.range(a..=b) {
            add(&mut count, &mut sum, x);
        }
    } else {
        count = run.count;
        sum = run.sum;
        for x in buckets.range(b + 1..) {
            remove(&mut count, &mut sum, x);
        }
        if a < run.lo {
            for x in buckets.range(a..run.lo) {
                add(&mut count, &mut sum, x);
            }
        } else {
            for x in buckets.range(run.lo..a) {
                remove(&mut count, &mut sum, x);
            }
        }
    }
    (count, sum.value())
}

/// Time, count, sum, minimum, and the maximum unless the bucket holds one value.
impl Wire for Bucket {
    fn put(&self, w: &mut Writer<'_>) {
        w.ts(self.ts);
        w.u(u64::from(self.count));
        self.sum.put(w);
        w.f(self.min);
        if self.count != 1 {
            w.f(self.max);
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let (ts, count, sum, min) = (r.ts()?, r.u32()?, ExactSum::get(r)?, r.f()?);
        let max = if count == 1 { min } else { r.f()? };
        Ok(Bucket {
            ts,
            count,
            sum,
            min,
            max,
        })
    }
}

/// Start, first bucket, count, sum, then 0, or 1 and the minimum and maximum deques.
impl Wire for Running {
    fn put(&self, w: &mut Writer<'_>) {
        w.ts(self.start);
        w.u(self.lo as u64);
        w.u(self.count);
        self.sum.put(w);
        match &self.extremes {
            None => w.u(0),
            Some(e) => {
                w.u(1);
                e.min.put(w);
                e.max.put(w);
            }
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let (start, lo, count, sum) = (r.ts()?, r.index()?, r.u()?, ExactSum::get(r)?);
        let extremes = match r.u()? {
            0 => None,
            1 => Some(Box::new(Extremes {
                min: MonoDeque::get(r)?,
                max: MonoDeque::get(r)?,
            })),
            _ => return Err(WireError("an unknown kind of window")),
        };
        Ok(Running {
            start,
            lo,
            count,
            sum,
            extremes,
        })
    }
}

/// Buckets, then windows. Decoding checks their inner consistency (see
/// [`NumericSeries::check`] for the check against the plan).
impl Wire for NumericSeries {
    fn put(&self, w: &mut Writer<'_>) {
        w.seq(self.buckets.as_slice());
        w.seq(&self.windows);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let series = NumericSeries {
            buckets: r.deque()?,
            windows: r.seq()?,
        };
        series.validate()?;
        Ok(series)
    }
}
