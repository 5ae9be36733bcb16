//! Decoding stored registers never panics, whatever the bytes: arbitrary bytes and damaged
//! encodings of real registers either fail to decode or give registers that can be updated
//! and queried (without panicking) under the key spec they were checked against.

use proptest::prelude::*;
use sluice_core::agg::Quantile;
use sluice_core::wire::{Wire, Writer};
use sluice_core::{Agg, FeatureSpec, FeatureValue, FieldObs, KeySpec, KeyState, Plan, Scratch};

fn feature(name: &str, agg: Agg, of: Option<&str>, window_ms: i64, g: i64) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        agg,
        of: of.map(Into::into),
        by: vec!["user".into()],
        window_ms,
        granularity_ms: g,
        filter: None,
    }
}

/// One key spec with every kind of register: two numeric series (one with min and max over
/// two windows), a distinct series with two windows, and a coarser series with sums of
/// squares (a variance and a standard deviation over two windows), and two value series
/// (numbers for a quantile, text for a first and a lag) and a sketch series.
fn plan() -> Plan {
    plan_with(true)
}

/// [`plan`], with (`squares`) or without its variance features (an average instead).
fn plan_with(squares: bool) -> Plan {
    let (var, dev) = if squares {
        (Agg::Variance, Agg::StddevPop)
    } else {
        (Agg::Avg, Agg::Avg)
    };
    Plan::new(
        vec![
            feature("n", Agg::Count, None, 50, 1),
            feature("s", Agg::Sum, Some("amount"), 50, 1),
            feature("lo", Agg::Min, Some("amount"), 200, 1),
            feature("hi", Agg::Max, Some("amount"), 50, 1),
            feature("d", Agg::DistinctCount, Some("device"), 50, 1),
            feature("d2", Agg::DistinctCount, Some("device"), 300, 1),
            feature("g", Agg::Avg, Some("amount"), 100, 10),
            feature("v", var, Some("amount"), 100, 10),
            feature("sd", dev, Some("amount"), 300, 10),
            feature(
                "p",
                Agg::Quantile(Quantile(900_000_000)),
                Some("amount"),
                100,
                1,
            ),
            feature("f", Agg::First, Some("device"), 100, 10),
            feature("l", Agg::Lag, Some("device"), 300, 10),
            feature("a", Agg::DistinctCountApprox, Some("device"), 300, 10),
        ],
        40,
    )
    .expect("valid")
}

/// One event: time, amount, device.
type Event = (i64, i64, u8);

/// Feeds events to `state` the way the engine does (late ones skipped), values to `out`.
fn feed(plan: &Plan, spec: &KeySpec, state: &mut KeyState, newest: &mut i64, events: &[Event]) {
    let mut scratch = Scratch::default();
    let mut out = vec![FeatureValue::Null; spec.features.len()];
    for &(ts, amount, device) in events {
        if ts < *newest - plan.lateness_ms {
            continue;
        }
        *newest = (*newest).max(ts);
        let device = [b'd', device];
        let fields: Vec<FieldObs<'_>> = plan
            .fields
            .iter()
            .map(|name| FieldObs {
                present: true,
                num: amount as f64 / 4.0,
                bytes: if name == "device" { &device } else { b"x" },
            })
            .collect();
        state.observe(
            spec,
            ts,
            &fields,
            0,
            *newest - plan.lateness_ms,
            &mut scratch,
            &mut out,
        );
    }
}

/// Whatever decodes must go on without panicking: more events, queries, expiry.
fn exercise(plan: &Plan, spec: &KeySpec, mut state: KeyState, events: &[Event]) {
    let mut newest = state.newest().unwrap_or(0);
    feed(plan, spec, &mut state, &mut newest, events);
    let mut out = vec![FeatureValue::Null; spec.features.len()];
    let mut scratch = Scratch::default();
    for at in [i64::MIN, newest - 100, newest, newest + 1_000, i64::MAX] {
        state.peek(spec, at, &mut scratch, &mut out);
    }
    let _ = (state.is_expired(spec, newest), state.size());
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0i64..600, -40i64..40, 0u8..12), 0..60).prop_map(|mut v| {
        // Mostly increasing times with some disorder, as a stream has.
        let mut t = 0;
        for e in &mut v {
            t += e.0 % 25;
            e.0 = t - (e.0 % 7) * 5;
        }
        v
    })
}

/// A damage to an encoding.
#[derive(Debug, Clone)]
enum Damage {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Damage::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<usize>().prop_map(Damage::Remove),
        any::<usize>().prop_map(Damage::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize| i % bytes.len();
    match *d {
        Damage::Set(i, b) => {
            let i = at(i);
            bytes[i] = b;
        }
        Damage::Flip(i, bit) => {
            let i = at(i);
            bytes[i] ^= 1 << bit;
        }
        Damage::Insert(i, b) => {
            let i = at(i);
            bytes.insert(i, b);
        }
        Damage::Remove(i) => {
            let i = at(i);
            bytes.remove(i);
        }
        Damage::Truncate(i) => {
            let i = at(i);
            bytes.truncate(i);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes: an error or usable registers, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        more in events(),
    ) {
        let plan = plan();
        let spec = &plan.keys[0];
        if let Ok(state) = KeyState::from_bytes(spec, &bytes) {
            exercise(&plan, spec, state, &more);
        }
    }

    /// Real registers with a few bytes damaged: the damage either is an error or leaves
    /// registers that go on without panicking.
    #[test]
    fn decoding_damaged_registers_never_panics(
        before in events(),
        damages in prop::collection::vec(damage(), 1..4),
        more in events(),
    ) {
        let plan = plan();
        let spec = &plan.keys[0];
        let mut state = KeyState::new(spec);
        let mut newest = i64::MIN / 2;
        feed(&plan, spec, &mut state, &mut newest, &before);
        let mut bytes = Vec::new();
        state.put(&mut Writer::new(&mut bytes, 0));
        let intact = KeyState::from_bytes(spec, &bytes);
        prop_assert!(intact.is_ok(), "{:?}", intact.err());
        for d in &damages {
            apply(&mut bytes, d);
        }
        if let Ok(state) = KeyState::from_bytes(spec, &bytes) {
            exercise(&plan, spec, state, &more);
        }
    }

    /// Sums of squares exactly where the plan has a variance: registers written with them
    /// never decode under the plan without (extra squares), nor the other way round (missing
    /// squares), whatever the events; each under its own plan does.
    #[test]
    fn squares_missing_or_extra_are_an_error(before in events()) {
        for (written, read) in [(true, false), (false, true)] {
            let (wplan, rplan) = (plan_with(written), plan_with(read));
            let (wspec, rspec) = (&wplan.keys[0], &rplan.keys[0]);
            let mut state = KeyState::new(wspec);
            let mut newest = i64::MIN / 2;
            feed(&wplan, wspec, &mut state, &mut newest, &before);
            let mut bytes = Vec::new();
            state.put(&mut Writer::new(&mut bytes, 0));
            prop_assert!(KeyState::from_bytes(wspec, &bytes).is_ok());
            let e = KeyState::from_bytes(rspec, &bytes).err();
            let want = if written {
                "a numeric series has sums of squares but no variance feature"
            } else {
                "a numeric series lacks the sums of squares its variance features need"
            };
            prop_assert_eq!(e.map(|e| e.0), Some(want));
        }
    }
}
