//! The window registers against a brute-force oracle.
//!
//! [`KeyState`] is driven exactly as the engine drives it: one `HashMap<key, KeyState>` per
//! `KeySpec` of a [`Plan`], events in arrival order, a watermark `wm` = the newest accepted
//! event time, events older than `wm - lateness` skipped as late, `floor = wm - lateness` passed
//! to every `observe`, and keys for which `is_expired(spec, floor)` holds dropped now and then
//! (which must never change a result).
//!
//! The contract checked, for every accepted event `e` at time `t` and every feature
//! `agg(of) over W by key where filter` with granularity `g`: the value is the aggregation
//! over every accepted event `x` received so far (`e` included) with the same key, with `of`
//! present, matching the filter, and `bucket(x.ts)` in `[bucket(t) - W, bucket(t)]` (both
//! inclusive), where `bucket(ts) = ts.div_euclid(g) * g`. It is reported for every event with
//! the key fields, also one that lacks `of` or does not match (then it is not added): an
//! empty window gives a count, sum or distinct count of 0 and a null average, minimum,
//! maximum, variance or standard deviation (a sample variance is null below two values, a
//! population one 0 for one value). A feature is null when the event lacks a key field; an
//! empty `by` is one key every event has. `first` is the `of` of the window's event with the
//! smallest bucket (ties: the earliest arrival), `last` of the one with the largest (ties: the
//! latest arrival), `lag` the same as `last` among the events received before `e`, and a
//! quantile the k-th smallest amount, `k = ceil(q·n)`. Filters are opaque here: each event
//! carries random tags, and filter `tag<i>` matches the events with tag `i`.

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;
use sluice_core::agg::Quantile;
use sluice_core::wire::{Reader, Wire, Writer};
use sluice_core::{Agg, FeatureSpec, FeatureValue, FieldObs, KeyEncoder, KeyState, Plan, Scratch};

// ---------------------------------------------------------------------------------------------
// Events and how the harness feeds them to the registers.

/// One generated event. Amounts are integer cents (two-decimal amounts).
#[derive(Debug, Clone, Copy)]
struct Event {
    ts: i64,
    user: Option<u32>,
    device: Option<u32>,
    merchant: Option<u32>,
    cents: Option<i64>,
    /// Bit `i`: the event matches filter `tag<i>`.
    tags: u8,
}

impl Event {
    /// Whether the event matches `filter` (`None`: every event does).
    fn matches(&self, filter: Option<&str>) -> bool {
        filter.is_none_or(|f| {
            let i: u32 = f
                .strip_prefix("tag")
                .and_then(|n| n.parse().ok())
                .expect("tag<i>");
            self.tags >> i & 1 == 1
        })
    }

    /// The canonical bytes of field `name`, if present.
    fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            "user" => self.user.map(|v| format!("u{v}").into_bytes()),
            "device" => self.device.map(|v| format!("d{v}").into_bytes()),
            "merchant" => self.merchant.map(|v| format!("m{v}").into_bytes()),
            "amount" => self.cents.map(|c| {
                let mut b = Vec::new();
                KeyEncoder::new(&mut b).num(c as f64 / 100.0);
                b
            }),
            other => panic!("unknown field {other}"),
        }
    }

    /// The encoded key of `by`, or `None` when a key field is missing.
    fn key(&self, by: &[String]) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let mut enc = KeyEncoder::new(&mut buf);
        for field in by {
            match field.as_str() {
                "user" => enc.int(i64::from(self.user?)),
                "device" => enc.str(&format!("d{}", self.device?)),
                "merchant" => enc.str(&format!("m{}", self.merchant?)),
                other => panic!("unknown key field {other}"),
            }
        }
        Some(buf)
    }
}

fn bucket(ts: i64, g: i64) -> i64 {
    ts.div_euclid(g) * g
}

/// Feeds events to per-key-spec registers the way the engine does.
struct Harness {
    plan: Plan,
    states: Vec<HashMap<Vec<u8>, KeyState>>,
    scratch: Scratch,
    wm: Option<i64>,
    accepted: usize,
    drop_every: usize,
    /// Replace every key's registers by a serialize-deserialize copy (what a checkpoint and
    /// a restore do) after this many accepted events; 0: never.
    roundtrip_every: usize,
}

impl Harness {
    fn new(plan: Plan, drop_every: usize) -> Self {
        Harness {
            states: plan.keys.iter().map(|_| HashMap::new()).collect(),
            plan,
            scratch: Scratch::default(),
            wm: None,
            accepted: 0,
            drop_every: drop_every.max(1),
            roundtrip_every: 0,
        }
    }

    fn floor(&self) -> Option<i64> {
        self.wm.map(|wm| wm - self.plan.lateness_ms)
    }

    /// Processes one event. Returns `None` when it is late, else the value of every feature
    /// (indexed like `plan.features`).
    fn push(&mut self, e: &Event) -> Option<Vec<FeatureValue>> {
        self.push_text(e).map(|(values, _)| values)
    }

    /// [`Harness::push`], with the text that [`FeatureValue::Text`] values point into.
    fn push_text(&mut self, e: &Event) -> Option<(Vec<FeatureValue>, Vec<u8>)> {
        if self.floor().is_some_and(|floor| e.ts < floor) {
            return None;
        }
        let wm = self.wm.map_or(e.ts, |wm| wm.max(e.ts));
        self.wm = Some(wm);
        let floor = wm - self.plan.lateness_ms;
        let bytes: Vec<Option<Vec<u8>>> = self.plan.fields.iter().map(|f| e.bytes(f)).collect();
        let fields: Vec<FieldObs<'_>> = self
            .plan
            .fields
            .iter()
            .zip(&bytes)
            .map(|(name, b)| FieldObs {
                present: b.is_some(),
                num: if name == "amount" {
                    e.cents.map_or(0.0, |c| c as f64 / 100.0)
                } else {
                    0.0
                },
                bytes: b.as_deref().unwrap_or(&[]),
            })
            .collect();
        let matched = self
            .plan
            .filters
            .iter()
            .enumerate()
            .filter(|(_, f)| e.matches(Some(f)))
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let mut values = vec![FeatureValue::Null; self.plan.features.len()];
        for (spec, states) in self.plan.keys.iter().zip(self.states.iter_mut()) {
            let Some(key) = e.key(&spec.by) else {
                continue;
            };
            let mut out = vec![FeatureValue::Null; spec.features.len()];
            states
                .entry(key)
                .or_insert_with(|| KeyState::new(spec))
                .observe(
                    spec,
                    e.ts,
                    &fields,
                    matched,
                    floor,
                    &mut self.scratch,
                    &mut out,
                );
            for (slot, &feature) in spec.features.iter().enumerate() {
                values[feature] = out[slot];
            }
        }
        self.accepted += 1;
        if self.accepted.is_multiple_of(self.drop_every) {
            self.drop_expired(floor);
        }
        if self.roundtrip_every > 0 && self.accepted.is_multiple_of(self.roundtrip_every) {
            for (spec, states) in self.plan.keys.iter().zip(self.states.iter_mut()) {
                for state in states.values_mut() {
                    let mut bytes = Vec::new();
                    state.put(&mut Writer::new(&mut bytes, 0));
                    let mut reader = Reader::new(&bytes, 0);
                    // Decoded and checked against the key spec: every real state passes.
                    *state = KeyState::decode(spec, &mut reader).expect("registers decode");
                    assert!(reader.rest().is_empty(), "registers decode to their end");
                }
            }
        }
        Some((values, std::mem::take(&mut self.scratch.values.text)))
    }

    /// A feature query at `at` for the keys of `e`, without adding `e` (indexed like
    /// `plan.features`; null where `e` lacks a key field).
    fn peek(&mut self, e: &Event, at: i64) -> (Vec<FeatureValue>, Vec<u8>) {
        let mut values = vec![FeatureValue::Null; self.plan.features.len()];
        for (spec, states) in self.plan.keys.iter().zip(&self.states) {
            let Some(key) = e.key(&spec.by) else {
                continue;
            };
            let mut out = vec![FeatureValue::Null; spec.features.len()];
            match states.get(&key) {
                Some(state) => state.peek(spec, at, &mut self.scratch, &mut out),
                None => KeyState::new(spec).peek(spec, at, &mut self.scratch, &mut out),
            }
            for (slot, &feature) in spec.features.iter().enumerate() {
                values[feature] = out[slot];
            }
        }
        (values, std::mem::take(&mut self.scratch.values.text))
    }

    fn drop_expired(&mut self, floor: i64) {
        for (spec, states) in self.plan.keys.iter().zip(self.states.iter_mut()) {
            states.retain(|_, s| !s.is_expired(spec, floor));
        }
    }

    fn live_keys(&self) -> usize {
        self.states.iter().map(HashMap::len).sum()
    }

    fn total_size(&self) -> usize {
        self.states
            .iter()
            .flat_map(|m| m.values())
            .map(KeyState::size)
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: every accepted event, scanned for every feature of every event.

struct Oracle {
    features: Vec<FeatureSpec>,
    events: Vec<Event>,
    /// Per feature, accepted event indices by key.
    by_key: Vec<HashMap<Vec<u8>, Vec<usize>>>,
}

/// What a feature should be, with what a sum is allowed to deviate by.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// A variance (`root`: its square root, a standard deviation): the exact variance of the
    /// decimal amounts, and how far the variance of the doubles the registers are given may be
    /// from it (see [`spread`]).
    Spread {
        variance: f64,
        representation: f64,
        root: bool,
    },
    Null,
    Int(u64),
    /// An exact value in cents over a divisor (1 for a sum, the count for an average), and the
    /// absolute scale the relative tolerance applies to.
    Num {
        cents: i64,
        divisor: u64,
        scale: f64,
    },
    Exact(f64),
    /// The `of` value of accepted event `j` (first, last, lag).
    Of(usize),
    /// A `set`: its canonical form (a JSON array).
    Set(Vec<u8>),
}

impl Oracle {
    fn new(features: Vec<FeatureSpec>) -> Self {
        Oracle {
            by_key: features.iter().map(|_| HashMap::new()).collect(),
            features,
            events: Vec::new(),
        }
    }

    /// Records an accepted event and returns the expected value of every feature.
    fn push(&mut self, e: Event) -> Vec<Expected> {
        let i = self.events.len();
        self.events.push(e);
        let mut expected = Vec::with_capacity(self.features.len());
        for (f, index) in self.features.iter().zip(self.by_key.iter_mut()) {
            let Some(key) = e.key(&f.by) else {
                expected.push(Expected::Null);
                continue;
            };
            let list = index.entry(key).or_default();
            list.push(i);
            // `lag`: among the events received before this one.
            let seen = if f.agg == Agg::Lag {
                &list[..list.len() - 1]
            } else {
                &list[..]
            };
            expected.push(aggregate(
                &self.events,
                f,
                seen,
                bucket(e.ts, f.granularity_ms),
            ));
        }
        expected
    }

    /// What a feature query at `at` should give for feature `fi` and the key of `e`: the same
    /// windows, ending at `bucket(at)`, without adding an event.
    fn query(&self, fi: usize, e: &Event, at: i64) -> Expected {
        let f = &self.features[fi];
        let Some(key) = e.key(&f.by) else {
            return Expected::Null;
        };
        let empty = Vec::new();
        let list = self.by_key[fi].get(&key).unwrap_or(&empty);
        aggregate(&self.events, f, list, bucket(at, f.granularity_ms))
    }
}

/// The aggregate of feature `f` over the events `list` (of one key) in buckets `[hi - W, hi]`
/// that have `of` and match the filter. An empty window's average, minimum and maximum are
/// null.
fn aggregate(events: &[Event], f: &FeatureSpec, list: &[usize], hi: i64) -> Expected {
    let of = f.of.as_deref();
    let g = f.granularity_ms;
    let lo = hi - f.window_ms;
    let mut count = 0u64;
    let mut cents = 0i64;
    let mut squares = 0i128;
    let mut beyond_exact = 0f64;
    let mut negative = false;
    let mut min = i64::MAX;
    let mut max = i64::MIN;
    let mut distinct: HashSet<Vec<u8>> = HashSet::new();
    // (bucket, event) of the oldest and the newest event in the window, and every amount.
    let mut first: Option<(i64, usize)> = None;
    let mut last: Option<(i64, usize)> = None;
    let mut amounts = Vec::new();
    for &j in list {
        let x = &events[j];
        let b = bucket(x.ts, g);
        if b < lo || b > hi || !x.matches(f.filter.as_deref()) {
            continue;
        }
        let value = match of {
            None => None,
            Some(of) => match x.bytes(of) {
                None => continue,
                Some(v) => Some(v),
            },
        };
        count += 1;
        if first.is_none_or(|(fb, _)| b < fb) {
            first = Some((b, j));
        }
        if last.is_none_or(|(lb, _)| b >= lb) {
            last = Some((b, j));
        }
        if let Some(c) = x.cents.filter(|_| of == Some("amount")) {
            amounts.push(c);
            cents += c;
            squares += i128::from(c) * i128::from(c);
            if c.abs() as f64 / 100.0 >= EXACT_BELOW {
                beyond_exact = beyond_exact.max(c.abs() as f64 / 100.0);
            }
            negative |= c < 0;
            min = min.min(c);
            max = max.max(c);
        }
        if let Some(v) = value {
            distinct.insert(v);
        }
    }
    // Relative 1e-9 of the exact result; when signs mix (refunds), of the result or one
    // unit, whichever is larger: the inputs themselves are binary approximations of
    // decimals, so an exactly-zero decimal sum (0.10 + 0.20 - 0.30) is only near zero.
    let scale = if negative {
        (cents.abs() as f64 / 100.0).max(1.0)
    } else {
        cents.abs() as f64 / 100.0
    };
    match f.agg {
        Agg::Variance | Agg::Stddev | Agg::VariancePop | Agg::StddevPop => {
            spread(f.agg, count, cents, squares, beyond_exact)
        }
        Agg::Avg | Agg::Min | Agg::Max if count == 0 => Expected::Null,
        Agg::Count => Expected::Int(count),
        // Exact below 384 values (far more than a case has).
        Agg::DistinctCount | Agg::DistinctCountApprox => Expected::Int(distinct.len() as u64),
        Agg::Sum => Expected::Num {
            cents,
            divisor: 1,
            scale,
        },
        Agg::Avg => Expected::Num {
            cents,
            divisor: count,
            scale: scale / count as f64,
        },
        Agg::Min => Expected::Exact(min as f64 / 100.0),
        Agg::Max => Expected::Exact(max as f64 / 100.0),
        Agg::First => first.map_or(Expected::Null, |(_, j)| Expected::Of(j)),
        Agg::Last | Agg::Lag => last.map_or(Expected::Null, |(_, j)| Expected::Of(j)),
        Agg::Quantile(q) if count > 0 => {
            amounts.sort_unstable();
            Expected::Exact(amounts[q.rank(amounts.len()) - 1] as f64 / 100.0)
        }
        Agg::Quantile(_) => Expected::Null,
        Agg::LinkedDistinctCount | Agg::LinkedCount | Agg::LinkedDistinctCountApprox => {
            unreachable!("not a key's register")
        }
        Agg::Set(_) if distinct.is_empty() => Expected::Null,
        Agg::Set(limit) => {
            let mut values: Vec<Vec<u8>> = distinct.into_iter().collect();
            values.sort_by(|a, b| sluice_core::value::canonical_cmp(a, b));
            let mut text = Vec::new();
            let listed = values.iter().take(limit as usize).map(Vec::as_slice);
            sluice_core::value::write_json_array(&mut text, listed);
            Expected::Set(text)
        }
    }
}

/// Two-decimal amounts below this (2^23) reach the registers as exact decimals: their double
/// is within 4.7e-10 of the decimal, which the registers recover (docs/semantics.md). Larger
/// ones may reach them as the nearest double.
const EXACT_BELOW: f64 = 8_388_608.0;

/// The expected variance of `n` amounts with `cents` and `squares` the sum of their cents and
/// of their squares, exactly (integers), `beyond` the largest amount beyond [`EXACT_BELOW`] (0
/// if none).
///
/// Amounts beyond the exact range reach the registers as doubles `X + δ` with
/// `|δ| <= ε·|X|` (ε: f64::EPSILON, twice the rounding of the nearest double), so their
/// variance may differ from the decimals' by, with `M2 = Σ(X - mean)²` and `d` the divisor,
/// `|Σ2(X-mean)(δ-mean δ) + Σ(δ-mean δ)²| / d <= (2·√(M2·n)·δ + n·δ²) / d`
/// (Cauchy-Schwarz): that is `representation`, 0 for amounts in the exact range.
fn spread(agg: Agg, n: u64, cents: i64, squares: i128, beyond: f64) -> Expected {
    let population = matches!(agg, Agg::VariancePop | Agg::StddevPop);
    let root = matches!(agg, Agg::Stddev | Agg::StddevPop);
    if n == 0 || (n == 1 && !population) {
        return Expected::Null;
    }
    let (n, s) = (i128::from(n), i128::from(cents));
    let d = if population { n } else { n - 1 };
    // n·M2 in cents², exactly.
    let n_m2 = n * squares - s * s;
    let variance = n_m2 as f64 / (n * d) as f64 / 1e4;
    let m2 = n_m2 as f64 / n as f64 / 1e4;
    let delta = f64::EPSILON * beyond;
    let nf = n as f64;
    let representation = (2.0 * (m2 * nf).sqrt() * delta + nf * delta * delta) / d as f64;
    Expected::Spread {
        variance,
        representation,
        root,
    }
}

/// Whether a variance (or its root) is within tolerance: `1e-12` relative for the arithmetic
/// (the registers compute exact decimal variances within a few roundings, about 1e-15, and
/// other ones in double-double arithmetic) plus the representation bound of [`spread`]; for a
/// root, through `|√a - √b| <= min(|a - b| / √b, √|a - b|)`.
fn spread_matches(variance: f64, representation: f64, root: bool, got: f64) -> bool {
    let tolerance = 1e-12 * variance + representation;
    if !root {
        return (got - variance).abs() <= tolerance;
    }
    let want = variance.sqrt();
    let through = if want > 0.0 {
        (tolerance / want).min(tolerance.sqrt())
    } else {
        tolerance.sqrt()
    };
    (got - want).abs() <= through + 1e-12 * want
}

/// Whether `got` is what `expected` says; `text` is what [`FeatureValue::Text`] values point
/// into, `events` the accepted events, `of` the feature's field and `own` the event being
/// checked (`None` for a query).
fn matches_value(
    expected: &Expected,
    got: &FeatureValue,
    text: &[u8],
    events: &[Event],
    of: Option<&str>,
    own: Option<usize>,
) -> bool {
    if let (Expected::Set(want), FeatureValue::Text { start, len }) = (expected, got) {
        return text.get(*start as usize..(*start + *len) as usize) == Some(&want[..]);
    }
    let Expected::Of(j) = *expected else {
        return matches(expected, got);
    };
    let of = of.expect("first, last and lag have `of`");
    let want = events[j].bytes(of).expect("kept values are present");
    match *got {
        FeatureValue::Own => own == Some(j),
        FeatureValue::Exact(v) => {
            of == "amount"
                && events[j]
                    .cents
                    .is_some_and(|c| (c as f64 / 100.0).to_bits() == v.to_bits())
        }
        FeatureValue::Text { start, len } => {
            text.get(start as usize..(start + len) as usize) == Some(&want[..])
        }
        _ => false,
    }
}

fn matches(expected: &Expected, got: &FeatureValue) -> bool {
    match (expected, got) {
        (
            Expected::Spread {
                variance,
                representation,
                root,
            },
            FeatureValue::Num(v),
        ) => spread_matches(*variance, *representation, *root, *v),
        (Expected::Null, FeatureValue::Null) => true,
        (Expected::Int(a), FeatureValue::Int(b)) => a == b,
        (Expected::Exact(a), FeatureValue::Exact(b)) => a.to_bits() == b.to_bits(),
        (
            Expected::Num {
                cents,
                divisor,
                scale,
            },
            FeatureValue::Num(v),
        ) => {
            let exact = *cents as f64 / 100.0 / *divisor as f64;
            (v - exact).abs() <= 1e-9 * scale
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Generated cases.

/// How the next event's time is chosen.
#[derive(Debug, Clone, Copy)]
enum TimeOp {
    /// `wm + dt` (in order when `dt >= 0`).
    Advance(i64),
    /// The previous event's time again (a run of equal timestamps).
    Same,
    /// `wm - d`: out of order, late when `d > lateness`.
    Back(i64),
    /// `wm - lateness + d`: right at the lateness bound.
    AtLateness(i64),
    /// `x.ts ± (W + d)` for an earlier accepted event `x` and a window `W` of the plan: places
    /// events exactly on (and next to) window boundaries, in both directions.
    Boundary {
        pick: usize,
        window: usize,
        d: i64,
        forward: bool,
    },
}

/// Raw event payload; values are reduced modulo the case's alphabets.
#[derive(Debug, Clone, Copy)]
struct Payload {
    user: Option<u32>,
    device: Option<u32>,
    merchant: Option<u32>,
    cents: Option<i64>,
    tags: u8,
}

/// `(aggregation, of)` choices: several aggregations over the same field, so series are shared.
const AGGS: [(Agg, Option<&str>); 28] = [
    (Agg::Count, None),
    (Agg::Count, Some("amount")),
    (Agg::Sum, Some("amount")),
    (Agg::Avg, Some("amount")),
    (Agg::Min, Some("amount")),
    (Agg::Max, Some("amount")),
    (Agg::DistinctCount, Some("device")),
    (Agg::DistinctCount, Some("merchant")),
    (Agg::Last, Some("amount")),
    (Agg::DistinctCount, Some("user")),
    (Agg::Count, Some("merchant")),
    (Agg::DistinctCount, Some("amount")),
    (Agg::Last, Some("merchant")),
    (Agg::Variance, Some("amount")),
    (Agg::Stddev, Some("amount")),
    (Agg::VariancePop, Some("amount")),
    (Agg::StddevPop, Some("amount")),
    (Agg::First, Some("amount")),
    (Agg::First, Some("merchant")),
    (Agg::Lag, Some("amount")),
    (Agg::Lag, Some("merchant")),
    (Agg::Quantile(Quantile(500_000_000)), Some("amount")),
    (Agg::Quantile(Quantile(900_000_000)), Some("amount")),
    (Agg::DistinctCountApprox, Some("device")),
    (Agg::DistinctCountApprox, Some("amount")),
    (Agg::Set(3), Some("device")),
    (Agg::Set(100), Some("merchant")),
    (Agg::Set(2), Some("amount")),
];

/// Key specs; the empty one is the global key.
const BYS: [&[&str]; 5] = [
    &["user"],
    &["device"],
    &["user", "device"],
    &["merchant"],
    &[],
];

#[derive(Debug, Clone)]
struct Case {
    /// `(agg index, by index, window index, coarse granularity)`.
    features: Vec<(usize, usize, usize, bool)>,
    /// Per feature: its filter `tag<i>`, if any.
    filters: Vec<Option<u8>>,
    /// The coarse granularity (1 means every feature is exact).
    granularity: i64,
    /// Window widths in units of the coarse granularity.
    windows: Vec<i64>,
    lateness: i64,
    drop_every: usize,
    users_hot: u32,
    users: u32,
    devices: u32,
    merchants: u32,
    base: i64,
    ops: Vec<(TimeOp, Payload)>,
}

fn time_op() -> impl Strategy<Value = TimeOp> {
    prop_oneof![
        5 => (0i64..25).prop_map(TimeOp::Advance),
        1 => (0i64..400).prop_map(TimeOp::Advance),
        3 => Just(TimeOp::Same),
        2 => (0i64..60).prop_map(TimeOp::Back),
        1 => (-2i64..=2).prop_map(TimeOp::AtLateness),
        3 => (any::<usize>(), 0usize..4, prop_oneof![3 => -1i64..=1, 1 => -11i64..=11], any::<bool>())
            .prop_map(|(pick, window, d, forward)| TimeOp::Boundary { pick, window, d, forward }),
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    let cents = prop_oneof![
        2 => Just(None),
        10 => (1i64..100_000).prop_map(Some),
        1 => (0i64..3).prop_map(Some),
        1 => (-50_000i64..50_000).prop_map(Some),
        1 => (1_000_000_000i64..1_000_000_100).prop_map(Some),
    ];
    (
        prop::option::weighted(0.95, any::<u32>()),
        prop::option::weighted(0.9, any::<u32>()),
        prop::option::weighted(0.9, any::<u32>()),
        cents,
        prop_oneof![2 => Just(0b111u8), 3 => any::<u8>()],
    )
        .prop_map(|(user, device, merchant, cents, tags)| Payload {
            user,
            device,
            merchant,
            cents,
            tags,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(
            (0..AGGS.len(), 0..BYS.len(), 0usize..4, any::<bool>()),
            1..10,
        ),
        prop_oneof![Just(1i64), Just(10i64), Just(7i64)],
        prop::collection::vec(
            prop::sample::select(vec![1i64, 2, 3, 5, 10, 30, 100, 1000]),
            1..4,
        ),
        prop_oneof![Just(0i64), 1i64..30, Just(100), Just(1_000_000)],
        1usize..30,
        (1u32..4, 4u32..200),
        (
            prop_oneof![Just(2u32), Just(4), Just(40)],
            prop_oneof![Just(3u32), Just(60)],
        ),
        prop_oneof![Just(0i64), -1000i64..1000, Just(1_767_225_600_000)],
        prop::collection::vec((time_op(), payload()), 1..200),
        prop::collection::vec(prop::option::weighted(0.4, 0u8..3), 10),
    )
        .prop_map(
            |(
                features,
                granularity,
                windows,
                lateness,
                drop_every,
                (users_hot, users),
                (devices, merchants),
                base,
                ops,
                filters,
            )| Case {
                features,
                filters,
                granularity,
                windows,
                lateness,
                drop_every,
                users_hot,
                users,
                devices,
                merchants,
                base,
                ops,
            },
        )
}

impl Case {
    fn feature_specs(&self) -> Vec<FeatureSpec> {
        self.features
            .iter()
            .enumerate()
            .map(|(i, &(agg, by, window, coarse))| {
                let (mut agg, of) = AGGS[agg];
                // Sketches are per bucket: an exact case counts exactly instead.
                let coarse = coarse || agg == Agg::DistinctCountApprox;
                if agg == Agg::DistinctCountApprox && self.granularity == 1 {
                    agg = Agg::DistinctCount;
                }
                FeatureSpec {
                    name: format!("f{i}"),
                    agg,
                    of: of.map(Into::into),
                    by: BYS[by].iter().map(|s| s.to_string()).collect(),
                    window_ms: self.windows[window % self.windows.len()] * self.granularity,
                    granularity_ms: if coarse { self.granularity } else { 1 },
                    filter: self.filters[i].map(|t| format!("tag{t}")),
                }
            })
            .collect()
    }

    fn event(&self, ts: i64, p: &Payload) -> Event {
        // Skewed users: about 70% of events go to a few hot keys.
        let user = p.user.map(|u| {
            if u % 10 < 7 {
                (u / 10) % self.users_hot
            } else {
                self.users_hot + (u / 10) % self.users
            }
        });
        Event {
            ts,
            user,
            device: p.device.map(|d| d % self.devices),
            merchant: p.merchant.map(|m| m % self.merchants),
            cents: p.cents,
            tags: p.tags,
        }
    }
}

/// Runs a case: every accepted event's features against the oracle.
fn check(case: &Case) -> Result<(), TestCaseError> {
    check_with(case, 0)
}

/// [`check`], with the registers serialized and deserialized every `roundtrip_every` events.
fn check_with(case: &Case, roundtrip_every: usize) -> Result<(), TestCaseError> {
    let specs = case.feature_specs();
    let plan =
        Plan::new(specs.clone(), case.lateness).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut harness = Harness::new(plan, case.drop_every);
    harness.roundtrip_every = roundtrip_every;
    let mut oracle = Oracle::new(specs.clone());
    let mut last = case.base;
    for (n, (op, payload)) in case.ops.iter().enumerate() {
        let wm = harness.wm.unwrap_or(case.base);
        let ts = match *op {
            TimeOp::Advance(dt) => wm + dt,
            TimeOp::Same => last,
            TimeOp::Back(d) => wm - d,
            TimeOp::AtLateness(d) => wm - case.lateness.min(10_000) + d,
            TimeOp::Boundary {
                pick,
                window,
                d,
                forward,
            } => {
                let x = if oracle.events.is_empty() {
                    case.base
                } else {
                    oracle.events[pick % oracle.events.len()].ts
                };
                let w = case.windows[window % case.windows.len()] * case.granularity;
                if forward {
                    x + w + d
                } else {
                    x - w - d
                }
            }
        };
        let event = case.event(ts, payload);
        let Some((got, text)) = harness.push_text(&event) else {
            continue;
        };
        last = ts;
        let expected = oracle.push(event);
        let own = oracle.events.len() - 1;
        for (i, (want, got)) in expected.iter().zip(&got).enumerate() {
            let of = specs[i].of.as_deref();
            prop_assert!(
                matches_value(want, got, &text, &oracle.events, of, Some(own)),
                "op {n}, event {:?}: feature {:?}\n expected {want:?}\n got {got:?}",
                event,
                specs[i],
            );
        }
        // Feature queries for this event's keys, at the oldest time still exact (the floor),
        // at the event's own time, and a window width past the newest time.
        let floor = harness.floor().unwrap_or(ts);
        let ahead =
            harness.wm.unwrap_or(ts) + case.windows[n % case.windows.len()] * case.granularity;
        for at in [floor, ts, ahead] {
            let (got, text) = harness.peek(&event, at);
            for (i, got) in got.iter().enumerate() {
                let want = oracle.query(i, &event, at);
                let of = specs[i].of.as_deref();
                prop_assert!(
                    matches_value(&want, got, &text, &oracle.events, of, None),
                    "op {n}, query at {at} for {:?}: feature {:?}\n expected {want:?}\n got {got:?}",
                    event,
                    specs[i],
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn registers_match_brute_force(case in case()) {
        check(&case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Checkpoints restore registers that go on exactly as the originals: every key's state is
    /// replaced by a serialized copy every few events, and the oracle still agrees.
    #[test]
    fn registers_restored_from_their_serialization_go_on_exactly(
        case in case(),
        every in 1usize..7,
    ) {
        check_with(&case, every)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written boundary cases: the exact rule, spelled out.

fn feature(
    name: &str,
    agg: Agg,
    of: Option<&str>,
    window_ms: i64,
    granularity_ms: i64,
) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        agg,
        of: of.map(Into::into),
        by: vec!["user".into()],
        window_ms,
        granularity_ms,
        filter: None,
    }
}

fn at(ts: i64, cents: i64) -> Event {
    Event {
        ts,
        user: Some(1),
        device: Some(u32::try_from(cents % 3).expect("small")),
        merchant: None,
        cents: Some(cents),
        tags: 0,
    }
}

#[test]
fn window_bounds_are_inclusive() {
    let plan = Plan::new(
        vec![
            feature("n", Agg::Count, None, 10, 1),
            feature("s", Agg::Sum, Some("amount"), 10, 1),
        ],
        0,
    )
    .expect("valid");
    let mut h = Harness::new(plan, 1);
    let counts: Vec<FeatureValue> = [
        at(0, 100),
        at(10, 200),
        at(10, 300),
        at(11, 400),
        at(21, 500),
    ]
    .iter()
    .map(|e| h.push(e).expect("in order")[0])
    .collect();
    // t=10 sees t=0 (10 - 10 = 0 is inside); t=11 no longer does; equal times see each other.
    assert_eq!(
        counts,
        [1, 2, 3, 3, 2].map(FeatureValue::Int).to_vec(),
        "counts over [t - 10, t]"
    );
}

#[test]
fn granularity_covers_whole_buckets() {
    let plan = Plan::new(vec![feature("n", Agg::Count, None, 20, 10)], 0).expect("valid");
    let mut h = Harness::new(plan, 1);
    // Buckets: 5 → 0, 29 → 20 (covers buckets 0..=20), 30 → 30 (covers 10..=30).
    let counts: Vec<FeatureValue> = [at(5, 1), at(29, 1), at(30, 1)]
        .iter()
        .map(|e| h.push(e).expect("in order")[0])
        .collect();
    assert_eq!(counts, [1, 2, 2].map(FeatureValue::Int).to_vec());
}

#[test]
fn late_events_are_skipped_and_out_of_order_ones_are_exact() {
    let plan = Plan::new(
        vec![
            feature("n", Agg::Count, None, 10, 1),
            feature("m", Agg::Min, Some("amount"), 10, 1),
        ],
        5,
    )
    .expect("valid");
    let mut h = Harness::new(plan, 1);
    assert_eq!(h.push(&at(100, 7)).expect("first")[0], FeatureValue::Int(1));
    // 95 is exactly at the lateness bound: accepted, and its window [85, 95] holds only itself.
    let v = h.push(&at(95, 9)).expect("at the bound");
    assert_eq!(v, vec![FeatureValue::Int(1), FeatureValue::Exact(0.09)]);
    assert!(h.push(&at(94, 1)).is_none(), "94 < 100 - 5 is late");
    // 105 sees 95..=105: both earlier events.
    let v = h.push(&at(105, 8)).expect("in order");
    assert_eq!(v, vec![FeatureValue::Int(3), FeatureValue::Exact(0.07)]);
}

// ---------------------------------------------------------------------------------------------
// Long streams.

/// A small deterministic PRNG (PCG-style LCG), so the long tests need no strategy machinery.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Exact windowed cent moments of one key: its events ordered by time and, per window, the
/// running totals of the events at or after the window's start (`newest - width`).
struct CentWindows {
    entries: VecDeque<(i64, i64)>,
    newest: i64,
    runs: Vec<CentRun>,
}

/// Count, sum and sum of squares of some cents, exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Moments {
    n: i64,
    sum: i64,
    squares: i128,
}

impl Moments {
    fn of(entries: impl Iterator<Item = i64>) -> Moments {
        entries.fold(Moments::default(), |m, c| m.plus(c, 1))
    }

    /// With `c` added (`sign` 1) or removed (`sign` -1).
    fn plus(self, c: i64, sign: i64) -> Moments {
        Moments {
            n: self.n + sign,
            sum: self.sum + sign * c,
            squares: self.squares + i128::from(sign * c) * i128::from(c),
        }
    }

    fn add(self, o: Moments) -> Moments {
        Moments {
            n: self.n + o.n,
            sum: self.sum + o.sum,
            squares: self.squares + o.squares,
        }
    }

    fn sub(self, o: Moments) -> Moments {
        Moments {
            n: self.n - o.n,
            sum: self.sum - o.sum,
            squares: self.squares - o.squares,
        }
    }

    /// The sample variance of the values `c / unit` (cents: `unit` 100), from exact
    /// integers: `(n·Σc² - (Σc)²) / (n·(n-1)) / unit²`, a few roundings of an exact rational.
    fn sample_variance(self, unit: f64) -> f64 {
        let n = i128::from(self.n);
        let s = i128::from(self.sum);
        (n * self.squares - s * s) as f64 / (n * (n - 1)) as f64 / (unit * unit)
    }
}

struct CentRun {
    width: i64,
    /// Index of the first entry at or after the start.
    lo: usize,
    /// Totals of `entries[lo..]`.
    total: Moments,
}

impl CentWindows {
    fn new(windows: &[i64]) -> Self {
        CentWindows {
            entries: VecDeque::new(),
            newest: i64::MIN,
            runs: windows
                .iter()
                .map(|&width| CentRun {
                    width,
                    lo: 0,
                    total: Moments::default(),
                })
                .collect(),
        }
    }

    fn range(&self, range: std::ops::Range<usize>) -> Moments {
        Moments::of(self.entries.range(range).map(|e| e.1))
    }

    /// Adds `cents` at `ts` and returns the exact totals of each window ending at `ts`;
    /// entries no window of an event at or after `floor` can reach are forgotten.
    fn push(&mut self, ts: i64, cents: i64, floor: i64, out: &mut Vec<Moments>) {
        out.clear();
        let p = self.entries.partition_point(|e| e.0 <= ts);
        self.entries.insert(p, (ts, cents));
        if ts >= self.newest {
            self.newest = ts;
            for run in &mut self.runs {
                run.total = run.total.plus(cents, 1);
                while self.entries[run.lo].0 < ts - run.width {
                    run.total = run.total.plus(self.entries[run.lo].1, -1);
                    run.lo += 1;
                }
                out.push(run.total);
            }
        } else {
            for i in 0..self.runs.len() {
                let (width, lo) = (self.runs[i].width, self.runs[i].lo);
                let a = self.entries.partition_point(|e| e.0 < ts - width);
                if p >= lo {
                    self.runs[i].total = self.runs[i].total.plus(cents, 1);
                    // The window [ts - width, ts] is the run, less what follows `ts`, plus what
                    // precedes the run's start: both at most the lateness wide.
                    let after = self.range(p + 1..self.entries.len());
                    out.push(self.runs[i].total.sub(after).add(self.range(a..lo)));
                } else {
                    self.runs[i].lo += 1;
                    out.push(self.range(a..p + 1));
                }
            }
        }
        let widest = self.runs.iter().map(|r| r.width).max().unwrap_or(0);
        let horizon = (floor - widest).min(self.newest - widest);
        let dropped = self.entries.partition_point(|e| e.0 < horizon);
        self.entries.drain(..dropped);
        for run in &mut self.runs {
            run.lo -= dropped;
        }
    }
}

/// Millions of two-decimal amounts, including huge ones that enter and leave the windows, with
/// windows that evict on every event: every sum stays within 1e-9 relative of the exact cents.
#[test]
fn long_stream_sums_do_not_drift() {
    const EVENTS: usize = 5_000_000;
    const KEYS: u64 = 4;
    let windows = [1_000i64, 20_000];
    let lateness = 50;
    let plan = Plan::new(
        vec![
            feature("s1", Agg::Sum, Some("amount"), windows[0], 1),
            feature("s2", Agg::Sum, Some("amount"), windows[1], 1),
        ],
        lateness,
    )
    .expect("valid");
    let spec = &plan.keys[0];
    let mut states: Vec<KeyState> = (0..KEYS).map(|_| KeyState::new(spec)).collect();
    let mut oracles: Vec<CentWindows> = (0..KEYS).map(|_| CentWindows::new(&windows)).collect();
    let mut scratch = Scratch::default();
    let mut rng = Lcg(0x5EED);
    let mut out = [FeatureValue::Null; 2];
    let mut exact = Vec::new();
    let mut wm = 1_767_225_600_000i64;
    let mut worst = 0.0f64;
    for n in 0..EVENTS {
        wm += i64::from(rng.below(4) == 0);
        let ts = if rng.below(100) == 0 {
            wm - rng.below(lateness as u64 + 1) as i64
        } else {
            wm
        };
        let key = rng.below(KEYS) as usize;
        // Keys differ in scale (up to 1.00, 100.00, 10 000.00, 1 000 000.00); now and then a
        // huge amount (about 1.2e10) passes through a window of small ones: after it leaves, a
        // plain f64 sum would be off by about one unit in the last place of 1.2e10.
        let cents = match rng.below(2000) {
            0 => 1_234_567_890_123 + rng.below(1000) as i64,
            1 => 1,
            _ => 1 + rng.below(100 * 100u64.pow(key as u32)) as i64,
        };
        let field = [FieldObs {
            present: true,
            num: cents as f64 / 100.0,
            bytes: &[],
        }];
        states[key].observe(spec, ts, &field, 0, wm - lateness, &mut scratch, &mut out);
        oracles[key].push(ts, cents, wm - lateness, &mut exact);
        for (got, want) in out.iter().zip(&exact) {
            let FeatureValue::Num(got) = *got else {
                panic!("sum is a number, got {got:?}");
            };
            let want = want.sum as f64 / 100.0;
            let rel = ((got - want) / want).abs();
            worst = worst.max(rel);
            assert!(
                rel <= 1e-9,
                "event {n}: sum {got} vs exact {want} (relative {rel:e})"
            );
        }
    }
    // Far tighter than the contract: compensated sums stay within a few ulps (2.2e-16 here).
    assert!(worst < 1e-12, "worst relative error {worst:e}");
}

/// A million amounts in windows that evict on every event, a few out of order, over keys
/// that are hard for a variance: 1 000 000.00 plus up to 10.00 (the spread is eleven digits
/// below the squares; the wide window's sum, about 20 000 amounts, overflows its fixed part),
/// 8 000 000.00 plus up to 1.00 (squares near the top of the exact range), small amounts with
/// refunds, and 10 000 000.00 plus up to 1000.00 (beyond the exact range: read as doubles).
/// Every sample variance and standard deviation stays within 1e-9 relative of the exact one,
/// computed from integer cents in i128. For the last key the doubles themselves differ from
/// the decimals (by up to 9.3e-10 each); their exact variance is computed too, from the
/// doubles as integers of 2^-29, and the registers' arithmetic is checked against it.
#[test]
fn long_stream_variances_stay_exact() {
    const EVENTS: usize = 1_000_000;
    const KEYS: usize = 4;
    let windows = [1_000i64, 20_000];
    let lateness = 50;
    let plan = Plan::new(
        vec![
            feature("v1", Agg::Variance, Some("amount"), windows[0], 1),
            feature("v2", Agg::Variance, Some("amount"), windows[1], 1),
            feature("s2", Agg::Stddev, Some("amount"), windows[1], 1),
        ],
        lateness,
    )
    .expect("valid");
    let spec = &plan.keys[0];
    let mut states: Vec<KeyState> = (0..KEYS).map(|_| KeyState::new(spec)).collect();
    let mut oracles: Vec<CentWindows> = (0..KEYS).map(|_| CentWindows::new(&windows)).collect();
    // The last key's doubles as integers of 2^-29 (exact between 2^23 and 2^24), less 1e7.
    const ULPS: f64 = 536_870_912.0;
    let mut doubles = CentWindows::new(&windows);
    let mut exact_doubles = Vec::new();
    let mut worst_doubles = 0.0f64;
    let mut scratch = Scratch::default();
    let mut rng = Lcg(0x5A5A);
    let mut out = [FeatureValue::Null; 3];
    let mut exact = Vec::new();
    let mut wm = 1_767_225_600_000i64;
    let mut worst = [0.0f64; KEYS];
    for n in 0..EVENTS {
        wm += i64::from(rng.below(4) == 0);
        let ts = if rng.below(100) == 0 {
            wm - rng.below(lateness as u64 + 1) as i64
        } else {
            wm
        };
        let key = rng.below(KEYS as u64) as usize;
        let cents = match key {
            0 => 100_000_000 + rng.below(1_000) as i64,
            1 => 800_000_000 + rng.below(100) as i64,
            2 => rng.below(20_000) as i64 - 5_000,
            _ => 1_000_000_000 + rng.below(100_000) as i64,
        };
        let field = [FieldObs {
            present: true,
            num: cents as f64 / 100.0,
            bytes: &[],
        }];
        states[key].observe(spec, ts, &field, 0, wm - lateness, &mut scratch, &mut out);
        oracles[key].push(ts, cents, wm - lateness, &mut exact);
        if key == KEYS - 1 {
            let ulps = (field[0].num * ULPS) as i64 - (1e7 * ULPS) as i64;
            doubles.push(ts, ulps, wm - lateness, &mut exact_doubles);
            for (got, m) in out[..2].iter().zip(&exact_doubles) {
                if let (FeatureValue::Num(got), true) = (got, m.n >= 2) {
                    let want = m.sample_variance(ULPS);
                    worst_doubles = worst_doubles.max(((got - want) / want).abs());
                }
            }
        }
        let wants = [exact[0], exact[1], exact[1]];
        for (i, (got, m)) in out.iter().zip(wants).enumerate() {
            if m.n < 2 {
                assert_eq!(*got, FeatureValue::Null, "event {n}: one value");
                continue;
            }
            let FeatureValue::Num(got) = *got else {
                panic!("event {n}: a variance is a number, got {got:?}");
            };
            let want = if i == 2 {
                m.sample_variance(100.0).sqrt()
            } else {
                m.sample_variance(100.0)
            };
            let rel = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            worst[key] = worst[key].max(rel);
            assert!(
                rel <= 1e-9,
                "event {n}, key {key}, feature {i}: {got} vs exact {want} (relative {rel:e})"
            );
        }
    }
    // Far tighter than the contract: a few roundings where the amounts are exact decimals,
    // and beyond, the doubles' own distance from the decimals (about 2 · 9.3e-10 / 290 for a
    // spread of 290) while the variance of the doubles is as exact.
    assert!(worst[..3].iter().all(|&w| w < 1e-14), "worst: {worst:?}");
    assert!(worst[3] < 1e-10, "worst: {worst:?}");
    assert!(
        worst_doubles < 1e-14,
        "worst against the doubles: {worst_doubles:e}"
    );
}

/// A long stream over many keys with steadily advancing time: dropping expired keys keeps the
/// number of live keys and the registers held bounded by what the active windows need.
#[test]
fn memory_stays_bounded_by_the_active_window() {
    const EVENTS: i64 = 200_000;
    const DROP_EVERY: usize = 500;
    let lateness = 100;
    let max_window = 1_000;
    let max_granularity = 100;
    let plan = Plan::new(
        vec![
            feature("sum", Agg::Sum, Some("amount"), max_window, 1),
            feature("max", Agg::Max, Some("amount"), 300, 1),
            feature("n", Agg::Count, None, 200, 1),
            feature("coarse", Agg::Count, None, max_window, max_granularity),
            feature("devices", Agg::DistinctCount, Some("device"), max_window, 1),
            feature("last", Agg::Last, Some("amount"), 10, 1),
        ],
        lateness,
    )
    .expect("valid");
    let series = plan.keys[0].series.len();
    let mut h = Harness::new(plan, DROP_EVERY);
    let mut rng = Lcg(42);
    let mut recent: VecDeque<i64> = VecDeque::new();
    let mut max_live = 0;
    let mut max_size = 0;
    let hot = Some(0);
    for n in 0..EVENTS {
        let wm = 1_000_000 + n;
        let ts = if rng.below(10) == 0 {
            wm - rng.below(lateness as u64 + 1) as i64
        } else {
            wm
        };
        let user = if rng.below(5) == 0 {
            hot
        } else {
            Some(1 + rng.below(100_000) as u32)
        };
        let e = Event {
            ts,
            user,
            device: Some(rng.below(50) as u32),
            merchant: None,
            cents: Some(1 + rng.below(100_000) as i64),
            tags: 0,
        };
        h.push(&e).expect("never late");
        // The watermark bounds the event time from above and keeps `recent` sorted.
        recent.push_back(wm);
        if (n as usize + 1).is_multiple_of(DROP_EVERY) {
            // A key held after a drop has an event no older than its own horizon at its last
            // observe, which is at most a window, the lateness and a bucket behind the floor.
            let floor = h.floor().expect("events seen");
            let horizon = floor - 2 * (max_window + lateness + max_granularity);
            while recent.front().is_some_and(|&t| t < horizon) {
                recent.pop_front();
            }
            let live = h.live_keys();
            let size = h.total_size();
            assert!(
                live <= recent.len(),
                "event {n}: {live} live keys, {} recent events",
                recent.len()
            );
            assert!(
                size <= series * recent.len(),
                "event {n}: {size} registers held, {} recent events",
                recent.len()
            );
            max_live = max_live.max(live);
            max_size = max_size.max(size);
        }
    }
    // Far beyond every window and the lateness, everything expires.
    let floor = h.floor().expect("events seen") + max_window + max_granularity + lateness + 1;
    h.drop_expired(floor);
    assert_eq!(
        h.live_keys(),
        0,
        "every key expires once time has moved past its windows"
    );
    assert!(max_live < 4_000, "{max_live} live keys");
    assert!(max_size < 4_000 * series, "{max_size} registers held");
}

/// Windows as long as a duration can be, over times far before the epoch: the window start
/// `t - W` is below `i64::MIN`, and the window holds everything up to `t`.
#[test]
fn huge_windows_do_not_overflow() {
    let huge = sluice_core::parse_duration("100000000000d").expect("fits in i64");
    let plan = Plan::new(
        vec![
            feature("n", Agg::Count, None, huge, 1),
            feature("s", Agg::Sum, Some("amount"), huge, 1),
            feature("d", Agg::DistinctCount, Some("device"), huge, 1),
            feature("c", Agg::Count, None, huge, 10),
        ],
        1_000,
    )
    .expect("valid");
    let mut h = Harness::new(plan, 1);
    let base = -1_000_000_000_000_000_000i64;
    // Devices are cents % 3: 1, 2, 1. The third event is out of order: it sees the first only.
    let got: Vec<Vec<FeatureValue>> = [at(base, 100), at(base + 1_000, 200), at(base + 500, 301)]
        .iter()
        .map(|e| h.push(e).expect("accepted"))
        .collect();
    let row = |n, s, d| {
        vec![
            FeatureValue::Int(n),
            FeatureValue::Num(s),
            FeatureValue::Int(d),
            FeatureValue::Int(n),
        ]
    };
    assert_eq!(got, vec![row(1, 1.0, 1), row(2, 3.0, 2), row(2, 4.01, 1)]);
}

/// Found by the restore property: a value beyond the exact range (10 000 000.01) leaves the
/// window; the equal amounts left must have a variance of exactly 0. (Removing its square from
/// the window's float part left the parts `-c` and `c`, which read as about 6e-36.)
#[test]
fn a_large_value_leaving_the_window_leaves_an_exact_variance() {
    let plan =
        Plan::new(vec![feature("v", Agg::Variance, Some("amount"), 50, 1)], 0).expect("valid");
    let mut h = Harness::new(plan, 1);
    let values: Vec<FeatureValue> = [
        at(50, 1_000_000_001),
        at(51, 2),
        at(60, 2),
        at(101, 2),
        at(101, 2),
    ]
    .iter()
    .map(|e| h.push(e).expect("in order")[0])
    .collect();
    assert_eq!(
        &values[3..],
        [FeatureValue::Num(0.0), FeatureValue::Num(0.0)]
    );
}
