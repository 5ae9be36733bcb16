//! Relation features: links across entities, two hops (`linked_distinct_count`,
//! `linked_count`).
//!
//! For an event `e` with key `k` at time `t`, over window `W`:
//!
//! - hop 1, the links: `L = { x.via : x received no later than e, x.by = k, via_where(x),
//!   t - W <= x.t <= t }`;
//! - hop 2: the events `y` received no later than `e` with `y.via` in `L`, `where(y)` and
//!   `t - W <= y.t <= t`; `linked_distinct_count` is the number of distinct `y.of` among them,
//!   `linked_count` their number.
//!
//! A [`LinkIndex`] holds both hops of one feature: per entity key its `(time, via)` links, and
//! per via value its `(time, of)` events, each in time order. It is fed every event in input
//! order by one owner (the engine's router), so an event sees exactly the events received
//! before it and itself, whatever the number of workers: the definition, evaluated directly.
//!
//! Cost: an event reads its links and, for each, the linked events in the window. At a hub (a
//! device shared by 10 000 users) that is unbounded, so the events read per value are capped
//! (`limit`): beyond it the value is `null` (never a wrong number) and the overflow is counted.
//!
//! `linked_distinct_count_approx` reads the same index over windows of whole buckets and
//! counts the distinct `of` values with HyperLogLog value sets kept per hub and bucket, so
//! that a hub costs a union of its window's sets, not a scan of its events (`sketch`).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::value::FeatureValue;
use crate::wire::{Reader, Wire, WireError, Writer};

mod sketch;

/// Which number a relation feature gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkAgg {
    /// Distinct `of` values of the linked events.
    DistinctCount,
    /// Number of linked events.
    Count,
    /// Distinct `of` values of the linked events, estimated (exact up to 384), over windows
    /// of whole buckets of `granularity_ms` (the window a multiple of it).
    DistinctCountApprox {
        /// Bucket width in milliseconds.
        granularity_ms: i64,
    },
}

impl LinkAgg {
    /// The bucket width of the windows: 1 ms (exact) but for
    /// [`LinkAgg::DistinctCountApprox`].
    pub fn granularity_ms(self) -> i64 {
        match self {
            LinkAgg::DistinctCountApprox { granularity_ms } => granularity_ms,
            LinkAgg::DistinctCount | LinkAgg::Count => 1,
        }
    }
}

/// One relation feature, planned: its fields and filters as indices into the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Index of the feature in [`crate::Plan::features`].
    pub feature: usize,
    /// What it counts.
    pub agg: LinkAgg,
    /// The entity's key fields (indices into [`crate::Plan::fields`]); none: one global key.
    pub by: Vec<usize>,
    /// The linking field (index into [`crate::Plan::fields`]).
    pub via: usize,
    /// The counted field (index into [`crate::Plan::fields`]); `None` for a `linked_count`
    /// of every linked event.
    pub of: Option<usize>,
    /// Window width in milliseconds.
    pub window_ms: i64,
    /// Which events make links (hop 1): index into [`crate::Plan::filters`].
    pub via_filter: Option<usize>,
    /// Which linked events count (hop 2): index into [`crate::Plan::filters`].
    pub filter: Option<usize>,
    /// Most linked events read for one value (for [`LinkAgg::DistinctCountApprox`], most
    /// links: the entity's linking events in the window); beyond, the value is null.
    pub limit: usize,
}

impl Relation {
    /// The oldest time the window of an event at `t` reaches: `t - W`, or for an approximate
    /// relation the start of `t`'s bucket minus `W`.
    pub fn window_start(&self, t: i64) -> i64 {
        crate::bucket_start(t, self.agg.granularity_ms()).saturating_sub(self.window_ms)
    }
}

/// Fewest events between two sweeps of expired entries (few in unit tests, so that their
/// streams sweep often).
const MIN_SWEEP: usize = if cfg!(test) { 8 } else { 4096 };

/// Default [`Relation::limit`].
pub const LINK_LIMIT: usize = 100_000;

/// One event as a relation feature sees it: canonical bytes of its fields (`None`: missing).
#[derive(Debug, Clone, Copy)]
pub struct LinkEvent<'a> {
    /// Event time.
    pub ts: i64,
    /// The encoded entity key, if every `by` field is present.
    pub key: Option<&'a [u8]>,
    /// The `via` value.
    pub via: Option<&'a [u8]>,
    /// The `of` value.
    pub of: Option<&'a [u8]>,
    /// Whether it matches `via_where`.
    pub via_matches: bool,
    /// Whether it matches `where`.
    pub matches: bool,
}

/// Interned canonical values: each distinct value once, named by a small id.
#[derive(Debug, Clone, Default)]
struct Values {
    ids: FxHashMap<Box<[u8]>, u32>,
    bytes: Vec<Box<[u8]>>,
}

impl Values {
    /// The id of `value`, interned if new.
    fn id(&mut self, value: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.bytes.len() as u32;
        self.bytes.push(value.into());
        self.ids.insert(value.into(), id);
        id
    }
}

/// Time-ordered `(time, value id)` lists.
type Timed = VecDeque<(i64, u32)>;

/// The links and linked events of one relation feature.
///
/// Via and `of` values are interned ([`Values`]): the lists hold ids, an event's read marks
/// ids in an array (no hashing per linked event), and the table is rebuilt from the live
/// entries at each sweep, so values that left every window are forgotten.
#[derive(Debug, Clone, Default)]
pub struct LinkIndex {
    values: Values,
    /// Per entity key: `(time, via id)` of its linking events.
    links: FxHashMap<Box<[u8]>, Timed>,
    /// Per via id: `(time, of id)` of the events that carry it and count (for a
    /// `linked_count` without `of`, the id of the empty value).
    linked: FxHashMap<u32, Timed>,
    /// Per value id: the read (`epoch`) that last counted it as an `of` value.
    marks: Vec<u32>,
    /// Per value id: the read that last followed it as a via value.
    via_marks: Vec<u32>,
    epoch: u32,
    /// The value sets of hubs, for [`LinkAgg::DistinctCountApprox`] (derived from `linked`).
    sketches: sketch::Sketches,
    /// Events since the last sweep of expired entries.
    since_sweep: usize,
    /// Values that were null because a hub exceeded the limit.
    pub overflows: u64,
}

/// Starts a read: a new `epoch` for the marks, grown to cover the `n` interned values (and
/// cleared when the epoch wraps).
fn next_read(marks: &mut Vec<u32>, via_marks: &mut Vec<u32>, epoch: &mut u32, n: usize) {
    if marks.len() < n {
        marks.resize(n, 0);
        via_marks.resize(n, 0);
    }
    *epoch = epoch.wrapping_add(1);
    if *epoch == 0 {
        marks.fill(0);
        via_marks.fill(0);
        *epoch = 1;
    }
}

/// Inserts `item` at time `ts` after every entry at or before `ts`.
fn insert_in_time(list: &mut Timed, ts: i64, item: u32) {
    let at = list.partition_point(|e| e.0 <= ts);
    list.insert(at, (ts, item));
}

/// The entries of `list` in `[lo, hi]`.
fn in_window(list: &Timed, lo: i64, hi: i64) -> std::ops::Range<usize> {
    list.partition_point(|e| e.0 < lo)..list.partition_point(|e| e.0 <= hi)
}

impl LinkIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds event `e` (if it makes a link or counts) and returns the feature's value for it.
    /// `floor`: the oldest time a later event may have; entries no later window reaches are
    /// dropped now and then.
    pub fn observe(&mut self, r: &Relation, e: &LinkEvent<'_>, floor: i64) -> FeatureValue {
        let counts = e.matches && (r.of.is_none() || e.of.is_some());
        // Interned once, for either hop.
        let via = e
            .via
            .filter(|_| e.via_matches || counts)
            .map(|v| self.values.id(v));
        if let (Some(key), Some(via), true) = (e.key, via, e.via_matches) {
            match self.links.get_mut(key) {
                Some(list) => insert_in_time(list, e.ts, via),
                None => {
                    self.links.insert(key.into(), VecDeque::from([(e.ts, via)]));
                }
            }
        }
        if let (Some(via), true) = (via, counts) {
            let of = self.values.id(e.of.unwrap_or_default());
            insert_in_time(self.linked.entry(via).or_default(), e.ts, of);
            self.sketches.add(via, e.ts, e.of.unwrap_or_default());
        }
        let value = match e.key {
            Some(key) => self.value(r, key, e.ts),
            None => FeatureValue::Null,
        };
        self.since_sweep += 1;
        if self.since_sweep >= (4 * (self.links.len() + self.linked.len())).max(MIN_SWEEP) {
            let g = r.agg.granularity_ms();
            self.sweep(crate::bucket_start(floor, g).saturating_sub(r.window_ms));
        }
        value
    }

    /// The value for key `key` at time `t`, without adding anything.
    pub fn value(&mut self, r: &Relation, key: &[u8], t: i64) -> FeatureValue {
        if let LinkAgg::DistinctCountApprox { granularity_ms } = r.agg {
            return self.approx_value(r, granularity_ms, key, t);
        }
        let lo = t.saturating_sub(r.window_ms);
        let Some(links) = self.links.get(key) else {
            return FeatureValue::Int(0);
        };
        next_read(
            &mut self.marks,
            &mut self.via_marks,
            &mut self.epoch,
            self.values.bytes.len(),
        );
        let (mut read, mut count, mut distinct) = (0usize, 0u64, 0u64);
        for &(_, via) in links.range(in_window(links, lo, t)) {
            // Each via value once, however many links to it the window holds.
            let seen = &mut self.via_marks[via as usize];
            if *seen == self.epoch {
                continue;
            }
            *seen = self.epoch;
            let Some(events) = self.linked.get(&via) else {
                continue;
            };
            let range = in_window(events, lo, t);
            read += range.len();
            if read > r.limit {
                self.overflows += 1;
                return FeatureValue::Null;
            }
            count += range.len() as u64;
            if r.agg == LinkAgg::DistinctCount {
                for &(_, of) in events.range(range) {
                    let mark = &mut self.marks[of as usize];
                    distinct += u64::from(*mark != self.epoch);
                    *mark = self.epoch;
                }
            }
        }
        FeatureValue::Int(match r.agg {
            LinkAgg::Count => count,
            _ => distinct,
        })
    }

    /// The time of entity `key`'s newest link, if it has any.
    pub fn newest_link(&self, key: &[u8]) -> Option<i64> {
        self.links
            .get(key)
            .and_then(|list| list.back())
            .map(|e| e.0)
    }

    /// Forgets entity `key`'s links (before loading them again from shared state).
    pub fn forget_links(&mut self, key: &[u8]) {
        self.links.remove(key);
    }

    /// Forgets the linked events of via value `via` (before loading them again).
    pub fn forget_linked(&mut self, via: &[u8]) {
        if let Some(&id) = self.values.ids.get(via) {
            self.linked.remove(&id);
            self.sketches.forget(id);
        }
    }

    /// The distinct via values entity `key` links to at `lo` or later.
    pub fn vias_from(&self, key: &[u8], lo: i64) -> Vec<&[u8]> {
        let Some(list) = self.links.get(key) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = list
            .range(list.partition_point(|e| e.0 < lo)..)
            .map(|e| e.1)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| &*self.values.bytes[id as usize])
            .collect()
    }

    /// Inserts a stored link: entity `key` had an event carrying `via` at `ts` (for an index
    /// rebuilt from shared state, before the events that follow it are observed).
    pub fn load_link(&mut self, key: &[u8], ts: i64, via: &[u8]) {
        let via = self.values.id(via);
        match self.links.get_mut(key) {
            Some(list) => insert_in_time(list, ts, via),
            None => {
                self.links.insert(key.into(), VecDeque::from([(ts, via)]));
            }
        }
    }

    /// Inserts a stored linked event: an event carrying `via` and counted, with `of` (empty
    /// for a `linked_count` without `of`) at `ts`.
    pub fn load_linked(&mut self, via: &[u8], ts: i64, of: &[u8]) {
        let via = self.values.id(via);
        let of = self.values.id(of);
        insert_in_time(self.linked.entry(via).or_default(), ts, of);
    }

    /// Drops entries older than `horizon` (for an approximate relation, a bucket start) and
    /// keys left with none, and re-interns the values still referred to.
    fn sweep(&mut self, horizon: i64) {
        let mut kept = Values::default();
        let old = std::mem::take(&mut self.values.bytes);
        let remap = |id: u32, kept: &mut Values| kept.id(&old[id as usize]);
        self.links.retain(|_, list| {
            let gone = list.partition_point(|e| e.0 < horizon);
            list.drain(..gone);
            !list.is_empty()
        });
        for list in self.links.values_mut() {
            for entry in list.iter_mut() {
                entry.1 = remap(entry.1, &mut kept);
            }
        }
        let linked = std::mem::take(&mut self.linked);
        let mut hubs = self.sketches.take();
        for (via, mut list) in linked {
            let gone = list.partition_point(|e| e.0 < horizon);
            list.drain(..gone);
            if list.is_empty() {
                continue;
            }
            for entry in list.iter_mut() {
                entry.1 = remap(entry.1, &mut kept);
            }
            let id = remap(via, &mut kept);
            if let Some(hub) = hubs.remove(&via) {
                self.sketches.carry(hub, id, gone, list.len(), horizon);
            }
            self.linked.insert(id, list);
        }
        self.values = kept;
        self.marks.clear();
        self.via_marks.clear();
        self.since_sweep = 0;
    }

    /// Entities and via values held (a measure of memory).
    pub fn len(&self) -> usize {
        self.links.len() + self.linked.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.linked.is_empty()
    }
}

/// The overflow count, then the links and the linked events: each map as its number of keys,
/// then per key its bytes (the via value's, for the linked events) and its list (the number
/// of entries, then each time and value's bytes). Times are absolute (the writer's base is not
/// used). Decoding checks that every list is in time order. The value sets of an approximate
/// relation are derived from the linked events: not stored, built again when first read.
impl Wire for LinkIndex {
    fn put(&self, w: &mut Writer<'_>) {
        let bytes = |id: u32| &*self.values.bytes[id as usize];
        let put_list = |w: &mut Writer<'_>, list: &Timed| {
            w.u(list.len() as u64);
            for &(ts, id) in list {
                w.i(ts);
                w.bytes(bytes(id));
            }
        };
        w.u(self.overflows);
        w.u(self.links.len() as u64);
        for (key, list) in &self.links {
            w.bytes(key);
            put_list(w, list);
        }
        w.u(self.linked.len() as u64);
        for (&via, list) in &self.linked {
            w.bytes(bytes(via));
            put_list(w, list);
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let mut index = LinkIndex {
            overflows: r.u()?,
            ..LinkIndex::default()
        };
        let get_list = |r: &mut Reader<'_>, values: &mut Values| -> Result<Timed, WireError> {
            let n = r.count()?;
            let mut list = VecDeque::with_capacity(n);
            for _ in 0..n {
                let ts = r.i()?;
                if list.back().is_some_and(|&(last, _)| last > ts) {
                    return Err(WireError("links out of time order"));
                }
                list.push_back((ts, values.id(r.bytes()?)));
            }
            Ok(list)
        };
        for _ in 0..r.count()? {
            let key: Box<[u8]> = r.bytes()?.into();
            let list = get_list(r, &mut index.values)?;
            if index.links.insert(key, list).is_some() {
                return Err(WireError("a link key stored twice"));
            }
        }
        for _ in 0..r.count()? {
            let via = index.values.id(r.bytes()?);
            let list = get_list(r, &mut index.values)?;
            if index.linked.insert(via, list).is_some() {
                return Err(WireError("a linked value stored twice"));
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// One generated event: time, entity, via, of, and the two filter bits.
    type Ev = (i64, Option<u8>, Option<u8>, Option<u8>, bool, bool);

    fn relation(agg: LinkAgg, limit: usize) -> Relation {
        Relation {
            feature: 0,
            agg,
            by: vec![0],
            via: 1,
            of: Some(2),
            window_ms: 10,
            via_filter: None,
            filter: None,
            limit,
        }
    }

    /// The definition, evaluated over every event so far (the last is the current one).
    fn brute(r: &Relation, events: &[Ev]) -> FeatureValue {
        let &(t, key, ..) = events.last().expect("the event itself");
        let Some(key) = key else {
            return FeatureValue::Null;
        };
        let inside = |x: &Ev| t - r.window_ms <= x.0 && x.0 <= t;
        let links: HashSet<u8> = events
            .iter()
            .filter(|x| inside(x) && x.1 == Some(key) && x.4)
            .filter_map(|x| x.2)
            .collect();
        let ys: Vec<&Ev> = events
            .iter()
            .filter(|y| inside(y) && y.5 && y.2.is_some_and(|v| links.contains(&v)))
            .filter(|y| r.of.is_none() || y.3.is_some())
            .collect();
        FeatureValue::Int(match r.agg {
            LinkAgg::Count => ys.len() as u64,
            _ => ys.iter().filter_map(|y| y.3).collect::<HashSet<_>>().len() as u64,
        })
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
            1..150,
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
        /// Every event's value equals the definition over the events so far, for both
        /// aggregations; via value 9 is a hub most entities link to.
        #[test]
        fn link_values_match_the_definition(events in events(), distinct in any::<bool>()) {
            let agg = if distinct { LinkAgg::DistinctCount } else { LinkAgg::Count };
            let r = relation(agg, LINK_LIMIT);
            let mut index = LinkIndex::new();
            for i in 0..events.len() {
                let (ts, k, v, o, a, b) = events[i];
                let (key, via, of) = ([k.unwrap_or(0)], [v.unwrap_or(0)], [o.unwrap_or(0)]);
                let e = LinkEvent {
                    ts,
                    key: k.map(|_| &key[..]),
                    via: v.map(|_| &via[..]),
                    of: o.map(|_| &of[..]),
                    via_matches: a,
                    matches: b,
                };
                // The floor: the oldest time of this and every later event, as the engine's
                // lateness guarantees; sweeping what is older than their windows changes
                // nothing.
                let floor = events[i..].iter().map(|e| e.0).min().unwrap_or(ts);
                let got = index.observe(&r, &e, floor);
                prop_assert_eq!(got, brute(&r, &events[..=i]), "event {}", i);
            }
        }
    }

    #[test]
    fn a_hub_beyond_the_limit_is_null_and_counted() {
        let r = relation(LinkAgg::DistinctCount, 5);
        let mut index = LinkIndex::new();
        let mut last = FeatureValue::Null;
        for user in 0u8..8 {
            let e = LinkEvent {
                ts: 1,
                key: Some(&[user][..]),
                via: Some(b"hub"),
                of: Some(&[user][..]),
                via_matches: true,
                matches: true,
            };
            last = index.observe(&r, &e, 0);
        }
        assert_eq!(last, FeatureValue::Null);
        assert_eq!(
            index.overflows, 3,
            "users 6, 7 and 8 read 6, 7 and 8 linked events"
        );
    }

    #[test]
    fn an_index_restored_from_its_bytes_goes_on_alike() {
        let r = relation(LinkAgg::DistinctCount, LINK_LIMIT);
        let (mut a, mut b) = (LinkIndex::new(), LinkIndex::new());
        for i in 0u8..40 {
            let (key, via, of) = ([i % 5], [i % 3], [i % 7]);
            let e = LinkEvent {
                ts: i64::from(i),
                key: Some(&key),
                via: Some(&via),
                of: Some(&of),
                via_matches: true,
                matches: i % 4 != 0,
            };
            let want = a.observe(&r, &e, 0);
            let mut bytes = Vec::new();
            b.put(&mut Writer::new(&mut bytes, 0));
            b = LinkIndex::get(&mut Reader::new(&bytes, 0)).expect("decodes");
            assert_eq!(b.observe(&r, &e, 0), want, "event {i}");
        }
        let mut bytes = Vec::new();
        a.put(&mut Writer::new(&mut bytes, 0));
        for len in 0..bytes.len() {
            assert!(
                LinkIndex::get(&mut Reader::new(&bytes[..len], 0)).is_err(),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn expired_entries_are_dropped() {
        let r = relation(LinkAgg::Count, LINK_LIMIT);
        let mut index = LinkIndex::new();
        for ts in 0..10_000 {
            let key = [(ts % 7) as u8];
            let e = LinkEvent {
                ts,
                key: Some(&key),
                via: Some(&key),
                of: Some(&key),
                via_matches: true,
                matches: true,
            };
            index.observe(&r, &e, ts);
        }
        let held: usize = index.links.values().map(VecDeque::len).sum();
        assert!(
            index.values.bytes.len() < 100,
            "values are forgotten at sweeps"
        );
        assert!(held < 5_000, "{held} links held");
    }
}

/// The relation settings of one `linked_*` feature, as written: its other settings (`by`,
/// `of`, `window`, `where`) are those of its [`crate::FeatureSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Index of the feature in the pipeline's features.
    pub feature: usize,
    /// The linking field (a path).
    pub via: String,
    /// Which events make links (`via_where`), as written.
    pub via_filter: Option<String>,
    /// Most linked events read for one value, or links for `linked_distinct_count_approx`
    /// ([`LINK_LIMIT`] by default).
    pub limit: usize,
}

impl crate::Plan {
    /// Plans the relation features: each `linked_*` feature with its [`LinkSpec`]. Their
    /// fields are extracted as canonical values and their filters join the plan's.
    pub fn with_relations(mut self, links: Vec<LinkSpec>) -> Result<Self, crate::PlanError> {
        for link in &links {
            let f = &self.features[link.feature];
            if !f.agg.is_linked() {
                return Err(crate::PlanError {
                    feature: link.feature,
                    name: f.name.clone(),
                    field: "via",
                    message: format!(
                        "`via` belongs to `linked_distinct_count`, `linked_count` and \
                         `linked_distinct_count_approx`, not `{}`",
                        f.agg
                    ),
                });
            }
        }
        for i in 0..self.features.len() {
            let f = self.features[i].clone();
            if !f.agg.is_linked() {
                continue;
            }
            let err = |field: &'static str, message: String| crate::PlanError {
                feature: i,
                name: f.name.clone(),
                field,
                message,
            };
            // `linked_distinct_count_approx` needs one (checked with the window by
            // [`crate::Plan::new`]).
            if f.granularity_ms != 1 && f.agg != crate::Agg::LinkedDistinctCountApprox {
                return Err(err(
                    "granularity",
                    format!(
                        "`{}` is exact: it takes no `granularity` (buckets: \
                         `linked_distinct_count_approx`)",
                        f.agg
                    ),
                ));
            }
            let Some(link) = links.iter().find(|l| l.feature == i) else {
                return Err(err(
                    "via",
                    format!(
                        "`{}` needs `via`, the field that links entities, e.g. via = \"device.id\"",
                        f.agg
                    ),
                ));
            };
            let via_filter = match &link.via_filter {
                Some(text) => {
                    let ast = crate::expr::parse_filter(text)
                        .map_err(|e| err("via_where", format!("`via_where`: {e}")))?;
                    Some(self.filter_index(&ast.to_string()).ok_or_else(|| {
                        err(
                            "via_where",
                            format!(
                                "more than {} distinct filters in one pipeline",
                                crate::plan::MAX_FILTERS
                            ),
                        )
                    })?)
                }
                None => None,
            };
            let filter = match &f.filter {
                Some(text) => Some(self.filter_index(text).ok_or_else(|| {
                    err(
                        "where",
                        format!(
                            "more than {} distinct filters in one pipeline",
                            crate::plan::MAX_FILTERS
                        ),
                    )
                })?),
                None => None,
            };
            let mut canonical = |name: &str| {
                let field = self.field_index(name);
                self.distinct_fields[field] = true;
                field
            };
            let relation = Relation {
                feature: i,
                agg: match f.agg {
                    crate::Agg::LinkedCount => LinkAgg::Count,
                    crate::Agg::LinkedDistinctCountApprox => LinkAgg::DistinctCountApprox {
                        granularity_ms: f.granularity_ms,
                    },
                    _ => LinkAgg::DistinctCount,
                },
                by: f.by.iter().map(|b| canonical(b)).collect(),
                via: canonical(&link.via),
                of: f.of.as_deref().map(&mut canonical),
                window_ms: f.window_ms,
                via_filter,
                filter,
                limit: link.limit.max(1),
            };
            self.relations.push(relation);
        }
        Ok(self)
    }

    /// The index of filter `text` (canonical) in [`crate::Plan::filters`], added if new;
    /// `None` when the plan already has the most filters.
    fn filter_index(&mut self, text: &str) -> Option<usize> {
        if let Some(i) = self.filters.iter().position(|t| t == text) {
            return Some(i);
        }
        if self.filters.len() == crate::plan::MAX_FILTERS {
            return None;
        }
        self.filters.push(text.to_owned());
        Some(self.filters.len() - 1)
    }
}
