//! The binary form of numeric registers, and the checks of decoded ones.
//!
//! A state read from bytes that pass their checksum may still be structurally wrong (written
//! for another plan, or damaged before its checksum was taken). Every invariant the update
//! code relies on is checked, so that a state that passes can be updated and queried without
//! panicking.

use smallvec::SmallVec;

use super::{Bucket, Extremes, NumericSeries, Running, Squares};
use crate::bucket_start;
use crate::minmax::MonoDeque;
use crate::plan::SeriesSpec;
use crate::square::SquareSum;
use crate::sum::ExactSum;
use crate::wire::{Reader, Wire, WireError, Writer};

/// A window's kind bit: it has minimum and maximum deques.
const EXTREMES: u64 = 1;
/// A window's kind bit: its series keeps sums of squares (every window of it has this bit).
const SQUARES: u64 = 2;

impl NumericSeries {
    /// Checks decoded registers against the series they are for: as many windows, minimum
    /// and maximum registers exactly where a feature needs them, sums of squares exactly when
    /// a feature is a variance, and bucket times aligned to the granularity. (Their inner
    /// consistency is checked when they are decoded.)
    pub fn check(&self, spec: &SeriesSpec, squares: Option<&Squares>) -> Result<(), WireError> {
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
        match (squares, spec.needs_squares) {
            (None, true) => {
                return Err(WireError(
                    "a numeric series lacks the sums of squares its variance features need",
                ))
            }
            (Some(_), false) => {
                return Err(WireError(
                    "a numeric series has sums of squares but no variance feature",
                ))
            }
            (Some(sq), true) => self.validate_squares(sq)?,
            (None, false) => {}
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

    /// Sums of squares fit their series: one per bucket and one per window.
    fn validate_squares(&self, sq: &Squares) -> Result<(), WireError> {
        if sq.buckets.len() != self.buckets.len() || sq.windows.len() != self.windows.len() {
            return Err(WireError(
                "sums of squares do not match their series' buckets and windows",
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

    /// Writes the registers (see [`NumericSeries::get_with`]), with the series' sums of
    /// squares if it keeps them.
    pub fn put_with(&self, squares: Option<&Squares>, w: &mut Writer<'_>) {
        w.seq(self.buckets.as_slice());
        w.u(self.windows.len() as u64);
        for (i, run) in self.windows.iter().enumerate() {
            let square = squares.map(|sq| sq.windows.get(i).copied().unwrap_or_default());
            put_window(run, square, w);
        }
        if let Some(sq) = squares {
            w.seq(sq.buckets.as_slice());
        }
    }

    /// Reads registers written by [`NumericSeries::put_with`]: buckets, then windows, then
    /// (when the windows say so) one sum of squares per bucket. Checks their inner
    /// consistency (see [`NumericSeries::check`] for the check against the plan).
    pub fn get_with(r: &mut Reader<'_>) -> Result<(Self, Option<Squares>), WireError> {
        let buckets = r.deque()?;
        let n = r.count()?;
        let mut windows = SmallVec::with_capacity(n);
        let mut window_squares: SmallVec<[Option<SquareSum>; 1]> = SmallVec::with_capacity(n);
        for _ in 0..n {
            let (run, square) = get_window(r)?;
            windows.push(run);
            window_squares.push(square);
        }
        let series = NumericSeries { buckets, windows };
        series.validate()?;
        let squares = match window_squares.iter().filter(|s| s.is_some()).count() {
            0 => None,
            k if k == n => {
                let sq = Squares {
                    buckets: r.deque()?,
                    windows: window_squares.into_iter().flatten().collect(),
                };
                series.validate_squares(&sq)?;
                Some(sq)
            }
            _ => {
                return Err(WireError(
                    "sums of squares on some windows of a series only",
                ))
            }
        };
        Ok((series, squares))
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

/// Start, first bucket, count, sum, then the kind (bit 0: extremes, bit 1: squares), the
/// minimum and maximum deques if it has extremes, and the window's sum of squares if squares.
/// Kinds 0 and 1 are the whole layout of windows of series without a variance.
fn put_window(run: &Running, square: Option<SquareSum>, w: &mut Writer<'_>) {
    w.ts(run.start);
    w.u(run.lo as u64);
    w.u(run.count);
    run.sum.put(w);
    let kind = (if run.extremes.is_some() { EXTREMES } else { 0 })
        | (if square.is_some() { SQUARES } else { 0 });
    w.u(kind);
    if let Some(e) = &run.extremes {
        e.min.put(w);
        e.max.put(w);
    }
    if let Some(s) = square {
        s.put(w);
    }
}

fn get_window(r: &mut Reader<'_>) -> Result<(Running, Option<SquareSum>), WireError> {
    let (start, lo, count, sum) = (r.ts()?, r.index()?, r.u()?, ExactSum::get(r)?);
    let kind = r.u()?;
    if kind > (EXTREMES | SQUARES) {
        return Err(WireError("an unknown kind of window"));
    }
    let extremes = if kind & EXTREMES != 0 {
        Some(Box::new(Extremes {
            min: MonoDeque::get(r)?,
            max: MonoDeque::get(r)?,
        }))
    } else {
        None
    };
    let square = if kind & SQUARES != 0 {
        Some(SquareSum::get(r)?)
    } else {
        None
    };
    let run = Running {
        start,
        lo,
        count,
        sum,
        extremes,
    };
    Ok((run, square))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::feature;
    use crate::plan::Plan;
    use crate::value::FeatureValue;
    use crate::Agg;

    /// A series with a variance over two windows, fed a few events, and its squares.
    fn fed() -> (SeriesSpec, NumericSeries, Squares) {
        let plan = Plan::new(
            vec![
                feature("v", Agg::Variance, Some("x"), &["u"], 10),
                feature("s", Agg::Stddev, Some("x"), &["u"], 100),
            ],
            5,
        )
        .expect("valid");
        let spec = plan.keys[0].series[0].clone();
        let (mut series, mut sq) = (NumericSeries::new(&spec), Squares::new(&spec));
        let mut out = [FeatureValue::Null; 2];
        for (ts, v) in [(1, 1.5), (4, 2.0), (4, -3.25), (2, 7.0), (30, 0.1)] {
            series.observe(&spec, ts, v, ts - 5, Some(&mut sq), &mut out);
        }
        (spec, series, sq)
    }

    fn decode(bytes: &[u8]) -> Result<(NumericSeries, Option<Squares>), WireError> {
        NumericSeries::get_with(&mut Reader::new(bytes, 0))
    }

    #[test]
    fn squares_round_trip_and_must_cover_every_window_and_bucket() {
        let (spec, series, sq) = fed();
        let mut bytes = Vec::new();
        series.put_with(Some(&sq), &mut Writer::new(&mut bytes, 0));
        let (back, back_sq) = decode(&bytes).expect("decodes");
        back.check(&spec, back_sq.as_ref()).expect("fits");
        assert_eq!(
            back_sq.expect("squares").buckets.len(),
            series.buckets.len()
        );

        // The second window without its sum of squares.
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes, 0);
        w.seq(series.buckets.as_slice());
        w.u(2);
        put_window(&series.windows[0], Some(sq.windows[0]), &mut w);
        put_window(&series.windows[1], None, &mut w);
        w.seq(sq.buckets.as_slice());
        let e = decode(&bytes).err();
        assert_eq!(
            e,
            Some(WireError(
                "sums of squares on some windows of a series only"
            ))
        );

        // One bucket's sum of squares missing.
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes, 0);
        w.seq(series.buckets.as_slice());
        w.u(2);
        for (run, s) in series.windows.iter().zip(&sq.windows) {
            put_window(run, Some(*s), &mut w);
        }
        w.seq(&sq.buckets.as_slice()[1..]);
        let e = decode(&bytes).err();
        let want = "sums of squares do not match their series' buckets and windows";
        assert_eq!(e, Some(WireError(want)));

        // No squares at all: decodes, but does not fit the plan.
        let mut bytes = Vec::new();
        series.put_with(None, &mut Writer::new(&mut bytes, 0));
        let (back, back_sq) = decode(&bytes).expect("decodes");
        assert!(back_sq.is_none());
        assert!(back.check(&spec, None).is_err());
    }
}
