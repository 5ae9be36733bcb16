//! `linked_distinct_count_approx` against its definition (exact up to 384 values), its error
//! on large sets, and restores.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;

use super::super::{insert_in_time, LinkAgg, LinkEvent, LinkIndex, Relation, LINK_LIMIT};
use crate::approx::{Value, ValueSet};
use crate::value::FeatureValue;
use crate::wire::{Reader, Wire, Writer};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn relation(granularity_ms: i64, window_ms: i64, limit: usize) -> Relation {
    Relation {
        feature: 0,
        agg: LinkAgg::DistinctCountApprox { granularity_ms },
        by: vec![0],
        via: 1,
        of: Some(2),
        window_ms,
        via_filter: None,
        filter: None,
        limit,
    }
}

/// One generated event: time, entity, via, of, and the two filter bits.
type Ev = (i64, Option<u8>, Option<u8>, Option<u8>, bool, bool);

/// Observes generated event `ev` (the floor given).
fn observe(index: &mut LinkIndex, r: &Relation, ev: Ev, floor: i64) -> FeatureValue {
    let (ts, k, v, o, a, b) = ev;
    let (key, via, of) = ([k.unwrap_or(0)], [v.unwrap_or(0)], [o.unwrap_or(0)]);
    let e = LinkEvent {
        ts,
        key: k.map(|_| &key[..]),
        via: v.map(|_| &via[..]),
        of: o.map(|_| &of[..]),
        via_matches: a,
        matches: b,
    };
    index.observe(r, &e, floor)
}

/// The definition over windows of whole buckets, evaluated over every event so far (the last
/// is the current one): exact, as the approximation is up to 384 values.
fn brute(r: &Relation, events: &[Ev]) -> FeatureValue {
    let &(t, key, ..) = events.last().expect("the event itself");
    let Some(key) = key else {
        return FeatureValue::Null;
    };
    let g = r.agg.granularity_ms();
    let bucket = crate::bucket_start(t, g);
    let inside = |x: &Ev| {
        let b = crate::bucket_start(x.0, g);
        bucket - r.window_ms <= b && b <= bucket
    };
    let links: HashSet<u8> = events
        .iter()
        .filter(|x| inside(x) && x.1 == Some(key) && x.4)
        .filter_map(|x| x.2)
        .collect();
    let distinct: HashSet<u8> = events
        .iter()
        .filter(|y| inside(y) && y.5 && y.2.is_some_and(|v| links.contains(&v)))
        .filter_map(|y| y.3)
        .collect();
    FeatureValue::Int(distinct.len() as u64)
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            prop_oneof![3 => 0i64..4, 1 => -8i64..0],
            prop::option::weighted(0.9, 0u8..6),
            prop::option::weighted(0.9, prop_oneof![4 => 0u8..4, 1 => Just(9u8)]),
            prop::option::weighted(0.9, 0u8..8),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
        ),
        1..200,
    )
    .prop_map(|steps| {
        // Times drift forward with some disorder (a negative step) and equal times.
        let mut t = 0;
        steps
            .into_iter()
            .map(|(dt, k, v, o, a, b)| {
                t = (t + dt).max(0);
                (t, k, v, o, a, b)
            })
            .collect()
    })
}

proptest! {
    /// Every event's value equals the definition over windows of whole buckets (exact: fewer
    /// than 384 values), through hubs (via value 9, which most entities link to, and any
    /// via value with more than 4 linked events in a window), out-of-order and equal times,
    /// both filters and frequent sweeps.
    #[test]
    fn approx_values_match_the_definition_up_to_384_values(
        events in events(),
        g in prop::sample::select(vec![1i64, 2, 5, 10]),
        buckets in 1i64..4,
    ) {
        let r = relation(g, g * buckets * (10 / g).max(1), LINK_LIMIT);
        let mut index = LinkIndex::new();
        for i in 0..events.len() {
            // The floor: the oldest time of this and every later event.
            let floor = events[i..].iter().map(|e| e.0).min().unwrap_or(events[i].0);
            let got = observe(&mut index, &r, events[i], floor);
            prop_assert_eq!(got, brute(&r, &events[..=i]), "event {}", i);
        }
    }
}

#[test]
fn windows_are_whole_buckets() {
    // Buckets of 10, a window of 20: an event at 35 reads buckets 10, 20 and 30, times 10 to
    // 39, including an event at 39 received before it, not the one at 9.
    let r = relation(10, 20, LINK_LIMIT);
    let mut index = LinkIndex::new();
    let ev = |ts, user: u8, of: u8| (ts, Some(user), Some(1), Some(of), true, true);
    for (ts, of) in [(9, 1), (10, 2), (39, 3)] {
        observe(&mut index, &r, ev(ts, 0, of), 0);
    }
    assert_eq!(
        observe(&mut index, &r, ev(35, 5, 4), 0),
        FeatureValue::Int(3)
    );
    // Buckets 20 to 40: values 3 (at 39) and 4 (at 35 and 40).
    assert_eq!(
        observe(&mut index, &r, ev(40, 5, 4), 0),
        FeatureValue::Int(2)
    );
    // Out of order: buckets 0 to 20, values 1, 2 and 5.
    assert_eq!(
        observe(&mut index, &r, ev(29, 6, 5), 0),
        FeatureValue::Int(3)
    );
}

#[test]
fn entries_inserted_beside_the_sets_are_read() {
    // A hub (more than 4 linked events), then one more entry put in its list directly, as an
    // index rebuilt from stored entries does: the hub's sets no longer hold the list and are
    // built again.
    let r = relation(10, 100, LINK_LIMIT);
    let mut index = LinkIndex::new();
    for user in 0u8..6 {
        let got = observe(
            &mut index,
            &r,
            (50, Some(user), Some(1), Some(user), true, true),
            0,
        );
        assert_eq!(got, FeatureValue::Int(u64::from(user) + 1));
    }
    assert_eq!(index.sketches.hubs.len(), 1, "via value 1 is a hub");
    let (via, of) = (index.values.id(&[1]), index.values.id(&[77]));
    insert_in_time(index.linked.get_mut(&via).expect("linked"), 55, of);
    assert_eq!(index.value(&r, &[0], 56), FeatureValue::Int(7));
}

#[test]
fn the_limit_bounds_the_links_read_not_the_linked_events() {
    let r = relation(10, 100, 3);
    let mut index = LinkIndex::new();
    // 1000 users on one device: each reads one link and the hub's 1000 users.
    let mut last = FeatureValue::Null;
    for user in 0u16..1000 {
        let key = user.to_le_bytes();
        let e = LinkEvent {
            ts: 1,
            key: Some(&key),
            via: Some(b"hub"),
            of: Some(&key),
            via_matches: true,
            matches: true,
        };
        last = index.observe(&r, &e, 0);
    }
    assert!(
        matches!(last, FeatureValue::Int(n) if n.abs_diff(1000) < 60),
        "{last:?}"
    );
    assert_eq!(index.overflows, 0);
    // A user with four linking events in the window: null, counted.
    for (ts, device) in [(2, b"a"), (3, b"b"), (4, b"a")] {
        let e = LinkEvent {
            ts,
            key: Some(b"u"),
            via: Some(device),
            of: Some(b"u"),
            via_matches: true,
            matches: true,
        };
        assert!(matches!(index.observe(&r, &e, 0), FeatureValue::Int(1)));
    }
    let e = LinkEvent {
        ts: 5,
        key: Some(b"u"),
        via: Some(b"hub"),
        of: Some(b"u"),
        via_matches: true,
        matches: true,
    };
    assert_eq!(index.observe(&r, &e, 0), FeatureValue::Null);
    assert_eq!(index.overflows, 1);
}

/// The reference estimate of a set of values: one value set fed each value once.
fn reference<'a>(values: impl Iterator<Item = &'a [u8]>) -> u64 {
    let mut set = ValueSet::default();
    for v in values {
        set.insert(&mut Value::new(v));
    }
    set.estimate()
}

/// A generated stream at scale: event `i` of `per_day` a day, `(user, device)` by `shape`.
struct Stream {
    per_day: u64,
    shape: fn(u64) -> (u64, u64),
    granularities: &'static [i64],
}

impl Stream {
    fn ts(&self, i: u64) -> i64 {
        (i * DAY as u64 / self.per_day) as i64
    }
}

/// The exact distinct users linked to `user` at `t` over `events` (time, user, device), in
/// buckets of `g` over a window of `w`, and the reference estimate of them.
fn exact(events: &VecDeque<(i64, u64, u64)>, user: u64, t: i64, g: i64, w: i64) -> (u64, u64) {
    let bucket = crate::bucket_start(t, g);
    let inside = |ts: i64| (bucket - w..bucket + g).contains(&ts);
    let devices: HashSet<u64> = events
        .iter()
        .filter(|e| inside(e.0) && e.1 == user)
        .map(|e| e.2)
        .collect();
    let users: HashSet<u64> = events
        .iter()
        .filter(|e| inside(e.0) && devices.contains(&e.2))
        .map(|e| e.1)
        .collect();
    let bytes: Vec<[u8; 8]> = users.iter().map(|u| u.to_le_bytes()).collect();
    (users.len() as u64, reference(bytes.iter().map(|b| &b[..])))
}

#[test]
fn large_sets_stay_within_the_error_bound() {
    // A day's window. One hub shared by a new user at every event (50 000 a day), in buckets
    // of a minute and of an hour; and, in hours, three hubs that 6 000 users each visit five
    // times a day, on any of them (so a user's links are several hubs, whose sets are
    // merged). A day and a half of each: windows fill and slide. Every 1000th event is
    // read against the exact count over the same buckets (a brute-force scan), and checked to
    // be the estimate of one value set fed those users: the set alone decides the value.
    let streams = [
        Stream {
            per_day: 50_000,
            shape: |i| (i, 0),
            granularities: &[MINUTE, HOUR],
        },
        Stream {
            per_day: 30_000,
            shape: |i| ((i * 7919) % 6_000, i % 3),
            granularities: &[HOUR],
        },
    ];
    let (mut worst, mut sum, mut reads) = (0.0f64, 0.0, 0);
    for stream in &streams {
        for &g in stream.granularities {
            let r = relation(g, DAY, LINK_LIMIT);
            let mut index = LinkIndex::new();
            let mut events = VecDeque::new();
            let n = stream.per_day * 3 / 2;
            for i in 0..n {
                let ts = stream.ts(i);
                let (user, device) = (stream.shape)(i);
                let (key, via) = (user.to_le_bytes(), device.to_le_bytes());
                let e = LinkEvent {
                    ts,
                    key: Some(&key),
                    via: Some(&via),
                    of: Some(&key),
                    via_matches: true,
                    matches: true,
                };
                let got = index.observe(&r, &e, ts);
                events.push_back((ts, user, device));
                while events.front().is_some_and(|e| e.0 < ts - DAY - g) {
                    events.pop_front();
                }
                if i % 1000 != 0 && i != n - 1 {
                    continue;
                }
                let FeatureValue::Int(got) = got else {
                    panic!("event {i}: {got:?}");
                };
                let (want, set) = exact(&events, user, ts, g, DAY);
                assert_eq!(got, set, "event {i}: the estimate of the window's set");
                if want <= 384 {
                    assert_eq!(got, want, "exact up to 384 values");
                    continue;
                }
                let err = (got as f64 - want as f64) / want as f64;
                worst = worst.max(err.abs());
                sum += err.abs();
                reads += 1;
                assert!(err.abs() < 0.06, "{want} users estimated as {got}");
            }
            assert!(
                index.sketches.hubs.len() <= 3,
                "only hubs keep sets: {}",
                index.sketches.hubs.len()
            );
        }
    }
    eprintln!(
        "linked_distinct_count_approx: mean relative error {:.4}, worst {worst:.4}, {reads} reads",
        sum / f64::from(reads)
    );
}

/// Encodes and decodes `index`.
fn round_trip(index: &LinkIndex) -> LinkIndex {
    let mut bytes = Vec::new();
    index.put(&mut Writer::new(&mut bytes, 0));
    LinkIndex::get(&mut Reader::new(&bytes, 0)).expect("decodes")
}

#[test]
fn an_index_restored_from_its_bytes_goes_on_alike() {
    // Small: restored at every event. Then a hub of thousands of users, restored now and then
    // (its sets are built again from its linked events at the first read).
    let r = relation(5, 20, LINK_LIMIT);
    let (mut a, mut b) = (LinkIndex::new(), LinkIndex::new());
    for i in 0u8..60 {
        let ev = (
            i64::from(i) / 2,
            Some(i % 5),
            Some(i % 3),
            Some(i % 7),
            true,
            i % 4 != 0,
        );
        let want = observe(&mut a, &r, ev, 0);
        b = round_trip(&b);
        assert_eq!(observe(&mut b, &r, ev, 0), want, "event {i}");
    }
    let r = relation(MINUTE, HOUR, LINK_LIMIT);
    let (mut a, mut b) = (LinkIndex::new(), LinkIndex::new());
    for i in 0u64..20_000 {
        let ts = (i * 1000) as i64;
        // Late now and then, across a bucket.
        let ts = if i % 97 == 0 { ts - 90_000 } else { ts };
        let user = (i * 7919) % 5_000;
        let (key, via) = (user.to_le_bytes(), (i % 2).to_le_bytes());
        let e = LinkEvent {
            ts,
            key: Some(&key),
            via: Some(&via),
            of: Some(&key),
            via_matches: true,
            matches: true,
        };
        let want = a.observe(&r, &e, ts - 100_000);
        if i % 2_500 == 0 {
            b = round_trip(&b);
            assert!(b.sketches.hubs.is_empty(), "sets are not stored");
        }
        assert_eq!(b.observe(&r, &e, ts - 100_000), want, "event {i}");
    }
}

#[test]
fn hubs_leave_with_their_events() {
    let r = relation(MINUTE, HOUR, LINK_LIMIT);
    let mut index = LinkIndex::new();
    for i in 0u64..5_000 {
        let ts = (i * 1000) as i64;
        let user = i % 500;
        let e = LinkEvent {
            ts,
            key: Some(&user.to_le_bytes()),
            via: Some(b"hub"),
            of: Some(&user.to_le_bytes()),
            via_matches: true,
            matches: true,
        };
        index.observe(&r, &e, ts);
    }
    assert_eq!(index.sketches.hubs.len(), 1);
    // Then events on small devices, one an hour on each: the hub's events leave every window.
    for i in 0u64..5_000 {
        let ts = DAY + (i * 30 * MINUTE as u64) as i64;
        let device = (i % 100).to_le_bytes();
        let e = LinkEvent {
            ts,
            key: Some(&device),
            via: Some(&device),
            of: Some(&device),
            via_matches: true,
            matches: true,
        };
        index.observe(&r, &e, ts);
    }
    assert!(index.sketches.hubs.is_empty(), "no hub left");
}

#[test]
fn a_sweep_past_a_hubs_window_start_rebuilds_its_union() {
    // Buckets of 1 ms, a window of 100 (blocks of 11). A hub's window union is made at 23 and
    // slid to 103 (`[3, 103]`, holding `x` at 5); a sweep then drops what is before 6, `x`
    // included; at 107 the window (`[7, 107]`) starts in the same block and no bucket still
    // held has left it: the union must not be merely slid on, or `x` would still count.
    let r = relation(1, 100, LINK_LIMIT);
    let mut index = LinkIndex::new();
    let hub = |ts: i64, user: u8| (ts, Some(user), Some(9), Some(user), true, true);
    let floor = |ts: i64| if ts > 100 { ts } else { 0 };
    for (ts, user) in [(5, 100), (20, 1), (21, 2), (22, 3), (23, 4), (103, 5)] {
        observe(&mut index, &r, hub(ts, user), floor(ts));
    }
    assert_eq!(index.sketches.hubs.len(), 1);
    let via = index.values.id(&[9]);
    let mut swept = false;
    for _ in 0..1000 {
        observe(
            &mut index,
            &r,
            (106, Some(7), None, Some(7), true, true),
            106,
        );
        let first = index.linked.get(&via).and_then(|l| l.front()).map(|e| e.0);
        if first == Some(20) {
            swept = true;
            break;
        }
    }
    assert!(swept, "a sweep dropped `x`");
    assert_eq!(index.sketches.hubs.len(), 1, "the hub is kept");
    assert_eq!(
        observe(&mut index, &r, hub(107, 6), 107),
        FeatureValue::Int(6),
        "users 1 to 6"
    );
}
