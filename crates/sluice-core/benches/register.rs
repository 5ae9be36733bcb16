//! Register updates: one event through the registers of its key, in steady state.
//!
//! A synthetic day of transactions (log-uniform skewed users, 1–3 usual devices per user, a few
//! foreign devices, two-decimal amounts, one event every 100 ms on average) is replayed day
//! after day with time moving on, so windows fill up and then evict as in production. State is
//! warmed for longer than the widest window before measuring. Keys are resolved to a `Vec`
//! index up front: this measures the registers, not the key lookup.
//!
//! Run with `cargo bench -p sluice-core --bench register`; each benchmark reports the time per
//! event (`Throughput::Elements(1)` per iteration).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::{Agg, FeatureSpec, FeatureValue, FieldObs, KeyState, Plan, Scratch};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const USERS: u64 = 20_000;
const LATENESS: i64 = 5 * MINUTE;

/// One pre-generated event.
struct Event {
    ts: i64,
    user: u32,
    amount: f64,
    device: Box<[u8]>,
}

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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One day of events; `disorder` is the fraction of events delayed by up to the lateness.
fn day(disorder: f64) -> Vec<Event> {
    let mut rng = Rng(0x5EED_0001);
    let mut events = Vec::new();
    let mut ts = 0;
    while ts < DAY {
        ts += rng.below(200) as i64;
        // Log-uniform users: user 0 gets about 7% of the events, most users a handful a day.
        let user = ((USERS as f64).powf(rng.unit()) as u64).saturating_sub(1);
        let device = if rng.below(100) < 3 {
            rng.below(1_000_000)
        } else {
            (user * 7 + rng.below(1 + user % 3)) % 1_000_000
        };
        let delay = if rng.unit() < disorder {
            rng.below(LATENESS as u64 + 1) as i64
        } else {
            0
        };
        events.push(Event {
            ts: (ts - delay).max(0),
            user: user as u32,
            amount: (1 + rng.below(100_000)) as f64 / 100.0,
            device: format!("d{device}").into_bytes().into(),
        });
    }
    events
}

/// Registers of every user for one plan, fed the day over and over.
struct Replay {
    plan: Plan,
    amount: Option<usize>,
    device: Option<usize>,
    states: Vec<KeyState>,
    scratch: Scratch,
    out: Vec<FeatureValue>,
    events: Vec<Event>,
    pos: usize,
    offset: i64,
    wm: i64,
}

impl Replay {
    fn new(features: Vec<FeatureSpec>, disorder: f64) -> Self {
        let plan = Plan::new(features, LATENESS).expect("valid plan");
        let spec = &plan.keys[0];
        let field = |name: &str| plan.fields.iter().position(|f| f == name);
        Replay {
            amount: field("amount"),
            device: field("device_id"),
            states: (0..USERS).map(|_| KeyState::new(spec)).collect(),
            scratch: Scratch::default(),
            out: vec![FeatureValue::Null; spec.features.len()],
            events: day(disorder),
            pos: 0,
            offset: 0,
            wm: i64::MIN,
            plan,
        }
    }

    #[inline]
    fn step(&mut self) {
        let e = &self.events[self.pos];
        let ts = e.ts + self.offset;
        self.wm = self.wm.max(ts);
        let mut fields = [FieldObs::default(); 2];
        if let Some(i) = self.amount {
            fields[i] = FieldObs {
                present: true,
                num: e.amount,
                bytes: &[],
            };
        }
        if let Some(i) = self.device {
            fields[i] = FieldObs {
                present: true,
                num: 0.0,
                bytes: &e.device,
            };
        }
        self.states[e.user as usize].observe(
            &self.plan.keys[0],
            ts,
            &fields[..self.plan.fields.len()],
            0,
            self.wm - LATENESS,
            &mut self.scratch,
            &mut self.out,
        );
        black_box(&self.out);
        self.pos += 1;
        if self.pos == self.events.len() {
            self.pos = 0;
            self.offset += DAY;
        }
    }

    /// Replays until event time has moved `span` past the start.
    fn warm(&mut self, span: i64) {
        let until = self.offset + span;
        while self.offset < until {
            self.step();
        }
    }
}

fn feature(name: &str, agg: Agg, of: Option<&str>, window_ms: i64) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        agg,
        of: of.map(Into::into),
        by: vec!["user_id".into()],
        window_ms,
        granularity_ms: 1,
        filter: None,
    }
}

/// The benchmark pipeline: by user_id, sum/max/avg/count of amount over 1d, count over 1h,
/// distinct_count(device_id) over 7d.
fn six_features() -> Vec<FeatureSpec> {
    vec![
        feature("amount_sum_1d", Agg::Sum, Some("amount"), DAY),
        feature("amount_max_1d", Agg::Max, Some("amount"), DAY),
        feature("amount_avg_1d", Agg::Avg, Some("amount"), DAY),
        feature("tx_count_1d", Agg::Count, Some("amount"), DAY),
        feature("tx_count_1h", Agg::Count, None, HOUR),
        feature("devices_7d", Agg::DistinctCount, Some("device_id"), 7 * DAY),
    ]
}

/// `features` and a standard deviation of `amount` over 1d: the amount series then keeps sums
/// of squares (what a variance costs the series it shares).
fn with_stddev(mut features: Vec<FeatureSpec>) -> Vec<FeatureSpec> {
    features.push(feature("amount_sd_1d", Agg::Stddev, Some("amount"), DAY));
    features
}

fn register(c: &mut Criterion) {
    // `cargo bench -- --test` runs every benchmark once: skip the week of warm-up there.
    let quick = std::env::args().any(|a| a == "--test");
    let cases: Vec<(&str, Vec<FeatureSpec>, f64)> = vec![
        ("count/1h", vec![feature("n", Agg::Count, None, HOUR)], 0.0),
        (
            "sum/1d",
            vec![feature("s", Agg::Sum, Some("amount"), DAY)],
            0.0,
        ),
        (
            "max/1d",
            vec![feature("m", Agg::Max, Some("amount"), DAY)],
            0.0,
        ),
        (
            "distinct_count/7d",
            vec![feature("d", Agg::DistinctCount, Some("device_id"), 7 * DAY)],
            0.0,
        ),
        ("six_features", six_features(), 0.0),
        ("six_features/with_stddev", with_stddev(six_features()), 0.0),
        (
            "sum/1d/out_of_order",
            vec![feature("s", Agg::Sum, Some("amount"), DAY)],
            0.1,
        ),
        (
            "distinct_count/7d/out_of_order",
            vec![feature("d", Agg::DistinctCount, Some("device_id"), 7 * DAY)],
            0.1,
        ),
        ("six_features/out_of_order", six_features(), 0.1),
    ];
    let mut group = c.benchmark_group("register");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    for (name, features, disorder) in cases {
        let widest = features.iter().map(|f| f.window_ms).max().unwrap_or(0);
        let mut features = Some(features);
        // Built and warmed on first use, so that a filter skips the warm-up of other cases.
        let mut replay: Option<Replay> = None;
        group.bench_function(name, |b| {
            let replay = replay.get_or_insert_with(|| {
                let mut r = Replay::new(features.take().unwrap_or_default(), disorder);
                if !quick {
                    r.warm(widest + DAY);
                }
                r
            });
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    replay.step();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, register);
criterion_main!(benches);
