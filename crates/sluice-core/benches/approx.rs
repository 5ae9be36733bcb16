//! Approximate distinct-count registers (`distinct_count_approx`): time per observe and
//! memory per key.
//!
//! - `small`: a cold key, a user with three usual devices, one event every 5 minutes, windows
//!   of an hour and a day in minutes.
//! - `hot/100k`: one global key (every event), 100 000 events a day each with a new value,
//!   a window of a day in minutes (1440 buckets of about 70 values).
//! - `hot/1m`: the same key with a million events a day drawn from 100 000 values (1440
//!   buckets of about 660 values, each a register array).
//! - `sparse`: a key with one event a minute, each a new value, over a day in minutes: every
//!   event opens a bucket and one leaves the window, so every event rebuilds the window.
//! - `late`: the hot key (100k) where every 100th event is a minute late (out of order: its
//!   value is merged from the blocks and buckets of its range).
//!
//! State is warmed for longer than the window, and time moves on as measured, so windows
//! slide and evict as in production (the day of events is replayed day after day). Memory
//! (`ApproxSeries::memory`) is printed before the timings.
//!
//! Run with `cargo bench -p sluice-core --bench approx`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::plan::{SeriesKind, SeriesSpec, WindowSpec};
use sluice_core::{Agg, ApproxSeries, FeatureValue};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A small deterministic PRNG (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An approx series spec of granularity `g` with one window per width.
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

/// One day of events of one key, `(time, value bytes)`, replayed day after day.
struct Replay {
    spec: SeriesSpec,
    series: ApproxSeries,
    events: Vec<(i64, Box<[u8]>)>,
    out: Vec<FeatureValue>,
    pos: usize,
    offset: i64,
    wm: i64,
}

impl Replay {
    /// `count` events evenly over a day, values from `value`; every `late`th event (0: none)
    /// a minute late.
    fn new(spec: SeriesSpec, count: u64, late: u64, mut value: impl FnMut(u64) -> u64) -> Self {
        let step = DAY / count as i64;
        let events = (0..count)
            .map(|i| {
                let delay = if late > 0 && i % late == late - 1 {
                    MINUTE
                } else {
                    0
                };
                let ts = (i as i64 * step - delay).max(0);
                (ts, format!("v{}", value(i)).into_bytes().into())
            })
            .collect();
        Replay {
            series: ApproxSeries::new(&spec),
            out: vec![FeatureValue::Null; spec.windows.len()],
            spec,
            events,
            pos: 0,
            offset: 0,
            wm: i64::MIN,
        }
    }

    #[inline]
    fn step(&mut self) {
        let (ts, value) = &self.events[self.pos];
        let ts = ts + self.offset;
        self.wm = self.wm.max(ts);
        let floor = self.wm - 2 * MINUTE;
        self.series
            .observe(&self.spec, ts, value, floor, &mut self.out);
        black_box(&self.out);
        self.pos += 1;
        if self.pos == self.events.len() {
            self.pos = 0;
            self.offset += DAY;
        }
    }

    /// Replays `days` days.
    fn warm(mut self, days: i64) -> Self {
        while self.offset < days * DAY {
            self.step();
        }
        self
    }
}

/// A replay of one of the cases below, from its name.
fn replay(name: &str) -> Replay {
    let day_in_minutes = || spec(MINUTE, &[DAY]);
    match name {
        "small" => Replay::new(spec(MINUTE, &[HOUR, DAY]), 288, 0, |i| i % 3),
        "hot/100k" => Replay::new(day_in_minutes(), 100_000, 0, |i| i),
        "hot/1m" => {
            let mut rng = Rng(0x5EED_0002);
            Replay::new(day_in_minutes(), 1_000_000, 0, move |_| {
                rng.next() % 100_000
            })
        }
        "sparse" => Replay::new(day_in_minutes(), 1440, 0, |i| i),
        "late" => Replay::new(day_in_minutes(), 100_000, 100, |i| i),
        other => unreachable!("no case {other}"),
    }
}

const CASES: [&str; 5] = ["small", "hot/100k", "hot/1m", "sparse", "late"];

/// Memory of one key after `n` values of one window of a day in minutes, `gap` apart.
fn memory(n: u64, gap: i64) -> usize {
    let spec = spec(MINUTE, &[DAY]);
    let mut series = ApproxSeries::new(&spec);
    let mut out = vec![FeatureValue::Null];
    for v in 0..n {
        let ts = v as i64 * gap;
        series.observe(&spec, ts, format!("v{v}").as_bytes(), ts, &mut out);
    }
    series.memory()
}

fn approx(c: &mut Criterion) {
    // `cargo bench -- --test` runs every benchmark once: skip the warm-up there.
    let quick = std::env::args().any(|a| a == "--test");
    for n in [1, 10, 1000] {
        println!(
            "memory per key, {n} values: {} bytes in one bucket, {} bytes a minute apart",
            memory(n, 0),
            memory(n, MINUTE)
        );
    }
    let mut group = c.benchmark_group("approx");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for name in CASES {
        // Made at the first run of the benchmark: not for those a filter leaves out.
        let mut state: Option<Replay> = None;
        group.bench_function(name, |b| {
            let replay = state.get_or_insert_with(|| {
                let replay = replay(name).warm(if quick { 0 } else { 2 });
                println!(
                    "{name}: {} buckets, {} bytes",
                    replay.series.len(),
                    replay.series.memory()
                );
                replay
            });
            b.iter(|| replay.step())
        });
    }
    group.finish();
}

criterion_group!(benches, approx);
criterion_main!(benches);
