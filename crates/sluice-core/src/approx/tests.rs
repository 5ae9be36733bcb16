//! The approximate distinct-count registers against a brute-force oracle, their error on
//! large sets, and their binary form.

use std::collections::HashSet;

use proptest::prelude::*;

use datasketches::hll::{HllSketch, HllType};

use super::set::{self, Value, ValueSet, EXACT};
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
        numbers: false,
        every_value: false,
        lists: false,
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
    assert_eq!(decoded.held.buckets[..], series.held.buckets[..]);
    decoded
}

// ---------------------------------------------------------------------------------------------
// Small sets: exact, against a brute-force oracle.

/// Most distinct values the oracle test uses: below the 384 counted exactly.
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

/// The values in each window for an event at `t`, over `added`.
fn oracle(spec: &SeriesSpec, added: &[(i64, u64)], t: i64) -> Vec<HashSet<u64>> {
    let g = spec.granularity_ms;
    let b = bucket_start(t, g);
    spec.windows
        .iter()
        .map(|w| {
            added
                .iter()
                .filter(|&&(ts, _)| (b - w.width_ms..=b).contains(&bucket_start(ts, g)))
                .map(|&(_, v)| v)
                .collect()
        })
        .collect()
}

/// Runs a stream through a series the way the engine does (events older than the newest
/// time minus the lateness are late and skipped), checking every value against the oracle:
/// the number of values in the window, or (`exact` false) the estimate of a sketch fed them.
fn check_stream(g: i64, widths: &[i64], lateness: i64, steps: &[Step], exact: bool) {
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
        let want: Vec<u64> = oracle(&spec, &added, ts)
            .into_iter()
            .map(|set| match exact {
                true => set.len() as u64,
                false => reference(set.into_iter()),
            })
            .collect();
        assert_eq!(ints(&spec, &out), want, "step {i}: {op:?} at {ts}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn small_sets_are_exact((g, widths, lateness, steps) in stream()) {
        check_stream(g, &widths, lateness, &steps, true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Windows of up to about 1000 values: sketches, merged in every way the series merges them
    /// (blocks, middles, out-of-order ranges, restores), give the estimate of one sketch fed
    /// the window's values: the value depends on the set alone.
    #[test]
    fn large_values_depend_on_the_set_alone(
        g in prop_oneof![Just(1i64), Just(7)],
        widths in prop::collection::vec(300i64..900, 1..3),
        steps in prop::collection::vec((0..=1i64, 0..=30i64, 0..5000u64, op()), 500..1000),
    ) {
        let widths: Vec<i64> = widths.iter().map(|w| w / g * g).collect();
        check_stream(g, &widths, 25, &steps, false);
    }
}

#[test]
fn sets_count_exactly_up_to_384_values() {
    // One bucket, and 1000 buckets of one value each (their window's union is rebuilt as
    // they come and go): exact to 384 values, a sketch from 385.
    for gap in [0, 1] {
        let spec = spec(1, &[400]);
        let mut series = ApproxSeries::new(&spec);
        let mut out = vec![FeatureValue::Null];
        for v in 0..1000 {
            let ts = v as i64 * gap;
            series.observe(&spec, ts, &bytes(v), ts, &mut out);
            let exact = (v + 1).min(if gap == 0 { u64::MAX } else { 401 });
            let got = ints(&spec, &out)[0];
            if exact <= EXACT as u64 {
                assert_eq!(got, exact, "gap {gap}, value {v}");
            } else {
                assert!(got.abs_diff(exact) * 20 < exact, "{got} for {exact}");
            }
        }
        let sketch = matches!(series.windows[0].union(), ValueSet::Sketch(_));
        assert!(sketch, "gap {gap}: more than 384 values is a sketch");
    }
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
    let mut set = ValueSet::default();
    for v in values {
        set.insert(&mut Value::new(&bytes(v)));
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
    let cases = [
        (1, 0, 200),
        (10, 0, 400),
        (10, MINUTE, 1_200),
        (1000, 0, 9_000),
        (1000, MINUTE, 60_000),
    ];
    let measured: Vec<usize> = cases
        .iter()
        .map(|&(n, gap, _)| filled(n, gap).memory())
        .collect();
    eprintln!(
        "an exact distinct series is {} bytes itself, this {}",
        size_of::<crate::DistinctSeries>(),
        size_of::<ApproxSeries>()
    );
    for (&(n, gap, most), bytes) in cases.iter().zip(&measured) {
        eprintln!("{n} values {gap} ms apart: {bytes} bytes (at most {most})");
    }
    for (&(n, gap, most), bytes) in cases.iter().zip(measured) {
        assert!(bytes <= most, "{n} values {gap} ms apart: {bytes} bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// The binary form.

/// A series with buckets of every kind: a few hashes, many hashes, a sketch.
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

/// The binary form of `series`, with times relative to 0.
fn encode(series: &ApproxSeries) -> Vec<u8> {
    let mut buf = Vec::new();
    series.put(&mut Writer::new(&mut buf, 0));
    buf
}

#[test]
fn registers_round_trip() {
    let (spec, series) = every_kind();
    let kinds: Vec<_> = series
        .held
        .buckets
        .iter()
        .map(|b| matches!(b.values, ValueSet::Few(_)))
        .collect();
    assert_eq!(kinds, [true, true, false, true]);
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
    // A register past six bits in the image of bucket 2.
    let ValueSet::Sketch(sketch) = &series.held.buckets[2].values else {
        unreachable!("bucket 2 is a sketch");
    };
    let image = sketch.serialize();
    let at = buf
        .windows(image.len())
        .position(|w| w == image)
        .expect("the image is in the bytes");
    let mut damaged = buf.clone();
    damaged[at + set::image::REGISTERS + 17] = 200;
    assert_eq!(
        get(&damaged),
        Err(WireError("a damaged HyperLogLog sketch"))
    );
}

#[test]
fn sketch_images_of_coupons_are_checked() {
    // A sketch written before it reaches its register array (which, past 384 values, only
    // two values with one coupon make happen) is a list or a set of coupons.
    let mut sketch = HllSketch::new(set::LG_K, HllType::Hll8).expect("valid");
    for v in 0..3 {
        sketch.update_with_coupon(set::coupon(v));
    }
    let image = sketch.serialize();
    assert!(set::sketch_from_image(&image).is_ok());
    let mut damaged = image.clone();
    damaged[set::image::LIST_COUPONS..set::image::LIST_COUPONS + 4].fill(0);
    assert!(set::sketch_from_image(&damaged).is_err());
    let mut repeated = image.clone();
    repeated.copy_within(set::image::LIST_COUPONS..set::image::LIST_COUPONS + 4, 12);
    assert!(set::sketch_from_image(&repeated).is_err());
    for v in 3..100 {
        sketch.update_with_coupon(set::coupon(v));
    }
    assert!(set::sketch_from_image(&sketch.serialize()).is_ok());
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

proptest! {
    #[test]
    fn damaged_sketch_images_are_an_error_or_usable(
        edits in prop::collection::vec((0usize..64, any::<u8>()), 1..4),
        values in prop_oneof![Just(3u64), Just(100), Just(1000)],
    ) {
        // A list, a hash set and a register array of coupons, damaged in their preambles
        // and first coupons or registers.
        let mut sketch = HllSketch::new(set::LG_K, HllType::Hll8).expect("valid");
        for v in 0..values {
            sketch.update_with_coupon(set::coupon(v));
        }
        let mut image = sketch.serialize();
        for (at, byte) in edits {
            if let Some(b) = image.get_mut(at) {
                *b = byte;
            }
        }
        if let Ok(sketch) = set::sketch_from_image(&image) {
            let mut set = ValueSet::Sketch(Box::new(sketch));
            set.estimate();
            set.insert(&mut Value::new(b"x"));
            let mut union = set::Union::default();
            union.add(&set);
            union.add(&set);
            union.add(&ValueSet::default());
            union.finish().estimate();
        }
    }
}
