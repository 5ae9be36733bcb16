//! Sliding a running window forward, and the totals of a range of buckets.

use super::{Bucket, Extremes, Running};
use crate::deque::SmallDeque;
use crate::minmax::Extreme;
use crate::square::SquareSum;
use crate::sum::ExactSum;

/// Count, sum and sum of squares of some buckets (the squares stay zero for a series without).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Totals {
    pub count: u64,
    pub sum: ExactSum,
    pub squares: SquareSum,
}

impl Totals {
    /// Adds bucket `b`, with its sum of squares `q` if the series keeps them.
    #[inline]
    pub fn add(&mut self, b: &Bucket, q: Option<&SquareSum>) {
        self.count += u64::from(b.count);
        self.sum.add_sum(&b.sum);
        if let Some(q) = q {
            self.squares.add_sum(q);
        }
    }

    /// Removes bucket `b` (added before), with its sum of squares `q`.
    #[inline]
    fn sub(&mut self, b: &Bucket, q: Option<&SquareSum>) {
        self.count = self.count.saturating_sub(u64::from(b.count));
        self.sum.sub_sum(&b.sum);
        if let Some(q) = q {
            self.squares.sub_sum(q);
        }
    }
}

/// Moves a running window's start forward to `start`, removing the buckets it leaves (and
/// their squares from `squares`: the window's sum of squares and the buckets' ones).
#[inline]
pub(super) fn advance(
    run: &mut Running,
    buckets: &SmallDeque<[Bucket; 1]>,
    start: i64,
    mut squares: Option<(&mut SquareSum, &[SquareSum])>,
) {
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
        if let Some((q, per_bucket)) = &mut squares {
            if let Some(bq) = per_bucket.get(run.lo) {
                q.sub_sum(bq);
            }
        }
        if let Some(e) = &mut run.extremes {
            e.min.expire(b.ts);
            e.max.expire(b.ts);
        }
        run.lo += 1;
    }
    if run.count == 0 {
        run.sum.clear();
        if let Some((q, _)) = squares {
            q.clear();
        }
        if let Some(e) = &mut run.extremes {
            e.min.clear();
            e.max.clear();
        }
    }
}

/// The front of a window's min or max deque (NaN if missing: never for a non-empty window).
#[inline]
pub(super) fn extreme(extremes: &Option<Box<Extremes>>, which: Extreme) -> f64 {
    let front = |e: &Extremes| match which {
        Extreme::Min => e.min.front(),
        Extreme::Max => e.max.front(),
    };
    extremes.as_deref().and_then(front).unwrap_or(f64::NAN)
}

/// Minimum and maximum of buckets `a..=idx` (those with times in `[t - width, t]`).
///
/// When bucket `t` lies in the running window (`lo..`), the range is `a..lo` (buckets that left
/// the running window, few for a slightly late event) plus `lo..=idx`; the running window's
/// minimum (maximum) covers `lo..=idx` too whenever its time is at most `t`, which is the usual
/// case, so only `a..lo` is scanned. Otherwise the whole range is scanned.
pub(super) fn range_extremes(
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

/// Totals of buckets `a..=b`, by a direct scan or by adjusting the running aggregate of
/// `lo..`, whichever touches fewer buckets. `squares`: the window's running sum of squares
/// and the buckets' ones, when the series keeps them.
pub(super) fn range_totals(
    buckets: &SmallDeque<[Bucket; 1]>,
    run: &Running,
    squares: Option<(&SquareSum, &[SquareSum])>,
    a: usize,
    b: usize,
) -> Totals {
    let direct = b + 1 - a;
    let adjust = (buckets.len() - 1 - b) + a.abs_diff(run.lo);
    let bucket_squares = |i: usize| squares.and_then(|(_, per_bucket)| per_bucket.get(i));
    let mut totals;
    if direct <= adjust {
        totals = Totals::default();
        for i in a..=b {
            totals.add(&buckets[i], bucket_squares(i));
        }
    } else {
        totals = Totals {
            count: run.count,
            sum: run.sum,
            squares: squares.map(|(q, _)| *q).unwrap_or_default(),
        };
        for i in b + 1..buckets.len() {
            totals.sub(&buckets[i], bucket_squares(i));
        }
        if a < run.lo {
            for i in a..run.lo {
                totals.add(&buckets[i], bucket_squares(i));
            }
        } else {
            for i in run.lo..a {
                totals.sub(&buckets[i], bucket_squares(i));
            }
        }
    }
    totals
}
