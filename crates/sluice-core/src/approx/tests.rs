//! The approximate distinct-count registers against a brute-force oracle, their error on
//! large sets, and their binary form.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::plan::{SeriesKind, WindowSpec};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A series spec of granularity `g` with one window per width, window `i` writing slot `i`.
fn spec(g: i64, widths: &[i64]) -> SeriesSpec {
    SeriesSpec {
        kind: SeriesKind::Approx,
        of: Some(0),
        granularity_ms: g,
        windows: widths
            .iter()
            .enumerate()
            .map(|(i, &width_ms)| WindowSpec {
                width_ms,
                outputs: vec![(Agg::DistinctCountApprox, i)],
                needs_min: false,
                needs_max: false,
            })
            .collect(),
        needs_values: false,
        needs_squares: false,
        filter: None,
    }
}

/// The canonical bytes of test value `v`.
fn bytes(v: u64) -> Vec<u8> {
    format!("v{v}").into_bytes()
}

/// The values written for each window of `spec`.
fn ints(spec: &SeriesSpec, out: &[FeatureValue]) -> Vec<u64> {
    (0..spec.windows.len())
        .map(|i| match out[i] {
            FeatureValue::Int(n) => n,
            other => panic!("window {i}: {other:?}, not a count"),
        })
        .collect()
}

/// Encodes and decodes `series`, checking it against `spec`.
fn round_trip(spec: &SeriesSpec, series: &ApproxSeries, base: i64) -> ApproxSeries {
    let mut buf = Vec::new();
    series.put(&mut Writer::new(&mut buf, base));
    let mut r = Reader::new(&buf, base);
    let decoded = ApproxSeries::get(&mut r).expect("registers decode");
    assert!(r.rest().is_empty(), "registers decode to their end");
    decoded.check(spec).expect("registers fit their spec");
    assert_eq!(decoded.buckets, series.buckets);
    decoded
}

// ---------------------------------------------------------------------------------------------
// Small sets: exact, against a brute-force oracle.

/// Most distinct values the oracle test uses: below the 384 a sketch counts exactly.
const UNIVERSE: u64 = 300;

/// What the harness does with one generated event.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Adds the event.
    Observe,
    /// Reads the event's values without adding it (it lacks the field, or its filter).
    Read,
    /// Peeks at the event's time.
    Peek,
    /// Replaces the series by an encoded and decoded copy, then adds the event.
    RoundTrip,
}

/// One generated event: time advance, how far back it lands, value, what to do.
type Step = (i64, i64, u64, Op);

/// A generated stream: granularity, window widths, lateness, steps.
type Stream = (i64, Vec<i64>, i64, Vec<Step>);

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Observe),
        2 => Just(Op::Read),
        1 => Just(Op::Peek),
        1 => Just(Op::RoundTrip),
    ]
}

/// A stream: granularity, window widths (in buckets), lateness, values drawn from
/// `0..universe`, and steps. Time advances by up to `advance` per event and an event may land
/// up to `back` before the cursor (out of order, and late when past the lateness).
fn stream() -> impl Strategy<Value = Stream> {
    (
        prop_oneof![Just(1i64), Just(5), Just(60)],
        prop::collection::vec(1i64..12, 1..4),
        prop_oneof![Just(0i64), Just(7), Just(200)],
        prop_oneof![Just(0i64), Just(1), Just(10), Just(100)],
        prop_oneof![Just(4u64), Just(40), Just(UNIVERSE)],
    )
        .prop_flat_map(|(g, widths, lateness, advance, universe)| {
            let steps =
                prop::collection::vec((0..=advance, 0..=lateness + 20, 0..universe, op()), 1..300);
            (
                Just(g),
                Just(widths.iter().map(|k| k * g).collect::<Vec<_>>()),
                Just(lateness),
                steps,
            )
        })
}

/// The exact distinct counts of each window for an event at `t`, over `added`.
fn oracle(spec: &SeriesSpec, added: &[(i64, u64)], t: i64) -> Vec<u64> {
    let g = spec.granularity_ms;
    let b = bucket_start(t, g);
    spec.windows
        .iter()
        .map(|w| {
            let values: HashSet<u64> = added
                .iter()
                .filter(|&&(ts, _)| (b - w.width_ms..=b).contains(&bucket_start(ts, g)))
                .map(|&(_, v)| v)
                .collect();
            values.len() as u64
        })
        .collect()
}

/// Runs a stream through a series the way the engine does (events older than the newest
/// time minus the lateness are late and skipped), checking every value against the oracle.
fn check_stream(g: i64, widths: &[i64], lateness: i64, steps: &[Step]) {
    let spec = spec(g, widths);
    let mut series = ApproxSeries::new(&spec);
    let mut added: Vec<(i64, u64)> = Vec::new();
    let (mut cursor, mut wm) = (0i64, i64::MIN);
    let mut out = vec![FeatureValue::Null; widths.len()];
    for (i, &(advance, back, v, op)) in steps.iter().enumerate() {
        cursor += advance;
        let ts = cursor - back;
        if wm != i64::MIN && ts < wm - lateness {
            continue;
        }
        wm = wm.max(ts);
        let floor = wm - lateness;
        match op {
            Op::Observe | Op::RoundTrip => {
                if matches!(op, Op::RoundTrip) {
                    series = round_trip(&spec, &series, wm);
                }
                added.push((ts, v));
                series.observe(&spec, ts, &bytes(v), floor, &mut out);
            }
            Op::Read => series.read_at(&spec, ts, &mut out),
            Op::Peek => series.peek(&spec, ts, &mut out),
        }
        let want = oracle(&spec, &added, ts);
        assert_eq!(ints(&spec, &out), want, "step {i}: {op:?} at {ts}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn small_sets_are_exact((g, widths, lateness, steps) in stream()) {
        check_stream(g, &widths, lateness, &steps);
    }
}

#[test]
fn the_test_values_have_distinct_coupons() {
    // The oracle test expects exact counts up to 300 values; a collision of two of its
    // values' coupons (a sketch's exact counting is of coupons) would make it fail.
    let coupons: HashSet<Coupon> = (0..UNIVERSE).map(|v| coupon(xxh3_64(&bytes(v)))).collect();
    assert_eq!(coupons.len() as u64, UNIVERSE);
}

#[test]
fn windows_cover_whole_buckets_at_both_edges() {
    let spec = spec(10, &[20]);
    let mut series = ApproxSeries::new(&spec);
    let mut out = vec![FeatureValue::Null];
    let mut observe = |ts: i64, v: u64, series: &mut ApproxSeries| {
        series.observe(&spec, ts, &bytes(v), 0, &mut out);
        ints(&spec, &out)[0]
    };
    assert_eq!(observe(0, 1, &mut series), 1);
    assert_eq!(
        observe(9, 1, &mut series),
        1,
        "an equal value in one bucket"
    );
    assert_eq!(observe(15, 2, &mut series), 2);
    // Bucket 20's window holds buckets 0, 10 and 20.
    assert_eq!(observe(29, 3, &mut series), 3);
    // Bucket 30's window has lost bucket 0 (value 1).
    assert_eq!(observe(30, 3, &mut series), 2);
    // Out of order, into bucket 0 again: its window is buckets -20 to 0.
    assert_eq!(observe(5, 4, &mut series), 2);
    assert_eq!(observe(31, 5, &mut series), 3);
    series.peek(&spec, 50, &mut out);
    assert_eq!(ints(&spec, &out), [2], "bucket 50 sees buckets 30 to 50");
    series.peek(&spec, -100, &mut out);
    assert_eq!(ints(&spec, &out), [0], "an empty window");
}

// ---------------------------------------------------------------------------------------------
// Large sets: the error of the estimate.

/// The reference estimate of a set of values: one sketch fed each value once.
fn reference(values: impl Iterator<Item = u64>) -> u64 {
    let mut set = ValueSet::new();
    for v in values {
        set.insert(xxh3_64(&bytes(v)));
    }
    set.estimate()
}

#[test]
fn large_sets_stay_within_the_error_bound() {
    // 100 000 events a day, each with a new value, for two and a half days; windows of an
    // hour (60 buckets of a minute) and a day (24 of an hour, and 1440 of a minute). Every
    // 500th event is read and compared with the exact count: the number of events in the
    // window, as every value is new. Windows fill, slide and hold 4 000 to 100 000 values.
    let step = DAY / 100_000;
    let cases = [(MINUTE, vec![HOUR, DAY]), (HOUR, vec![DAY])];
    let mut worst = 0.0f64;
    for (g, widths) in cases {
        let spec = spec(g, &widths);
        let mut series = ApproxSeries::new(&spec);
        let mut out = vec![FeatureValue::Null; widths.len()];
        let (mut sum, mut reads) = (0.0, 0);
        let events = 250_000u64;
        for i in 0..events {
            let ts = i as i64 * step;
            series.observe(&spec, ts, &bytes(i), ts, &mut out);
            if i % 500 != 0 && i != events - 1 {
                continue;
            }
            let b = bucket_start(ts, g);
            for (j, w) in widths.iter().enumerate() {
                // Events in buckets `b - w ..= b`: from the first with a time at or after
                // `b - w` to this one.
                let first = ((b - w).max(0) as u64).div_ceil(step as u64);
                let exact = i + 1 - first;
                let got = ints(&spec, &out)[j];
                if exact <= 384 {
                    assert_eq!(got, exact, "exact below 384 values");
                    continue;
                }
                let err = (got as f64 - exact as f64) / exact as f64;
                worst = worst.max(err.abs());
                sum += err.abs();
                reads += 1;
                assert!(err.abs() < 0.06, "{exact} values estimated as {got}");
                if i % 50_000 == 0 {
                    // The value depends on the set of values alone.
                    assert_eq!(got, reference(first..=i), "{exact} values at {i}");
                }
            }
        }
        eprintln!(
            "granularity {g} ms: mean relative error {:.4}, worst so far {worst:.4}, {reads} reads",
            sum / reads as f64
        );
        // A restore gives the same values.
        let last = (events - 1) as i64 * step;
        let mut before = vec![FeatureValue::Null; widths.len()];
        series.peek(&spec, last, &mut before);
        round_trip(&spec, &series, last).read_at(&spec, last, &mut out);
        assert_eq!(out, before);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// A series of one window of a day in minutes, after `n` values arriving `gap` apart.
fn filled(n: u64, gap: i64) -> ApproxSeries {
    let spec = spec(MINUTE, &[DAY]);
    let mut series = ApproxSeries::new(&spec);
    let mut out = vec![FeatureValue::Null];
    for v in 0..n {
        let ts = v as i64 * gap;
        series.observe(&spec, ts, &bytes(v), ts, &mut out);
    }
    series
}

#[test]
fn memory_is_small_for_small_sets_and_bounded() {
    for (n, gap, most) in [
        (1, 0, 100),
        (10, 0, 400),
        (10, MINUTE, 1_000),
        (1000, 0, 9_000),
        (1000, MINUTE, 80_000),
    ] {
        let bytes = filled(n, gap).memory();
        eprintln!("{n} values {gap} ms apart: {bytes} bytes");
        assert!(bytes <= most, "{n} values {gap} ms apart: {bytes} bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// The binary form.

/// A series with buckets of every kind: a few hashes, a sketch of coupons, registers.
fn every_kind() -> (SeriesSpec, ApproxSeries) {
    let spec = spec(MINUTE, &[HOUR, DAY]);
    let mut series = ApproxSeries::new(&spec);
    let mut out = vec![FeatureValue::Null; 2];
    for (minute, n) in [(0, 3), (1, 100), (2, 1000), (3, 1)] {
        for v in 0..n {
            let ts = minute * MINUTE + v as i64;
            series.observe(&spec, ts, &bytes(v + 10_000 * minute as u64), 0, &mut out);
        }
    }
    (spec, series)
}

fn encode(series: &ApproxSeries) -> Vec<u8> {
    let mut buf = Vec::new();
    series.put(&mut Writer::new(&mut buf, 0));
    buf
}

#[test]
fn registers_round_trip() {
    let (spec, series) = every_kind();
    let kinds: Vec<_> = series
        .buckets
        .iter()
        .map(|b| matches!(b.values, ValueSet::Few(_)))
        .collect();
    assert_eq!(kinds, [true, false, false, true]);
    let mut decoded = round_trip(&spec, &series, 0);
    // The copy answers as the original, and goes on as it.
    let (mut a, mut b) = (vec![FeatureValue::Null; 2], vec![FeatureValue::Null; 2]);
    let mut original = series.clone();
    for (ts, v) in [(3 * MINUTE, 7), (2 * MINUTE, 8), (70 * MINUTE, 9)] {
        original.observe(&spec, ts, &bytes(v), 0, &mut a);
        decoded.observe(&spec, ts, &bytes(v), 0, &mut b);
        assert_eq!(a, b);
    }
    assert_eq!(encode(&decoded).len(), encode(&original).len());
}

#[test]
fn another_version_or_damaged_sketches_are_errors() {
    let (_, series) = every_kind();
    let buf = encode(&series);
    let get = |bytes: &[u8]| ApproxSeries::get(&mut Reader::new(bytes, 0)).map(|_| ());
    assert!(get(&buf).is_ok());
    let mut other = buf.clone();
    other[0] = 2;
    assert_eq!(
        get(&other),
        Err(WireError(
            "approximate distinct-count registers of an unknown version"
        ))
    );
    // A register past six bits, and an empty coupon, in the images of buckets 2 and 1.
    let image = |minute: usize| match &series.buckets[minute].values {
        ValueSet::Sketch(s) => s.serialize(),
        ValueSet::Few(_) => unreachable!("bucket {minute} is a sketch"),
    };
    let find = |needle: &[u8]| {
        buf.windows(needle.len())
            .position(|w| w == needle)
            .expect("the image is in the bytes")
    };
    let mut damaged = buf.clone();
    let at = find(&image(2)) + image::REGISTERS + 17;
    damaged[at] = 200;
    assert!(get(&damaged).is_err());
    let mut damaged = buf.clone();
    let at = find(&image(1)) + image::SET_COUPONS;
    damaged[at..at + 4].fill(0);
    assert!(get(&damaged).is_err());
}

proptest! {
    #[test]
    fn damaged_bytes_are_an_error_or_usable(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (spec, series) = every_kind();
        let mut buf = encode(&series);
        for (at, byte) in edits {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        if truncate {
            buf.truncate(cut.index(buf.len()));
        }
        let Ok(mut decoded) = ApproxSeries::get(&mut Reader::new(&buf, 0)) else {
            return Ok(());
        };
        if decoded.check(&spec).is_err() {
            return Ok(());
        }
        // Whatever decodes and fits is safe to use.
        let mut out = vec![FeatureValue::Null; 2];
        decoded.peek(&spec, 2 * MINUTE, &mut out);
        decoded.observe(&spec, MINUTE, b"x", 0, &mut out);
        decoded.read_at(&spec, 5 * MINUTE, &mut out);
        decoded.observe(&spec, 5 * MINUTE, b"y", 0, &mut out);
    }
}
