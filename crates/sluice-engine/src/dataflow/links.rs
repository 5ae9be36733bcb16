//! The relation stage: relation features (`linked_*`), computed by the router over its own
//! link indexes, one event at a time in input order.
//!
//! Their two hops read keys that other shards own, so they are not computed by the shards: the
//! router sees every event once, in input order, before any shard does, and an index fed there
//! gives each event exactly the links of the events received before it (and itself), for any
//! number of workers (`sluice_core::relation`). The cost is one core for all relation
//! features; the shards compute the others in parallel as before.
//!
//! With Redis state the links live in the cluster (`state::redis::links`): the indexes cache
//! the sets read, checked by version each batch (see `docs/redis.md`).

use std::collections::{HashMap, HashSet};

use sluice_core::relation::{LinkEvent, LinkIndex, Relation};
use sluice_core::wire::{Reader, Wire, Writer};
use sluice_core::{FeatureValue, Plan};

use crate::dataflow::batch::{FieldKind, ParsedBatch};
use crate::error::{Error, Result};
use crate::state::redis::links::{Append, Hop, Read, Stored};
use crate::state::redis::{RedisLinks, RedisOptions};

/// The link indexes of a pipeline's relation features.
#[derive(Debug)]
pub struct LinkStage {
    plan: std::sync::Arc<Plan>,
    indexes: Vec<LinkIndex>,
    /// The encoded entity key of the event being processed.
    key: Vec<u8>,
    /// With Redis state: the shared link sets, which the indexes cache.
    redis: Option<RedisLinks>,
    /// Overflows of indexes dropped since (with Redis state).
    past_overflows: u64,
    /// With Redis state: the sets held in the indexes, with the version and trim mark they
    /// were read at.
    cached: HashMap<SetId, Cached>,
}

/// A link set held in an index.
#[derive(Debug, Clone, Copy)]
struct Cached {
    /// Its version when read (or written by this process since).
    version: Option<u64>,
    /// Its trim mark when read.
    mark: Option<i64>,
    /// A lower bound of its entries' times (`None`: it has none).
    oldest: Option<i64>,
}

/// Most link sets a process caches before it forgets them all and reads them again as they
/// are needed (a bound on memory).
const CACHED_SETS: usize = 1 << 21;

/// The fields of accepted event `i` of `batch` that relation `r` reads (`key`: where to
/// encode the entity key).
fn link_event<'a>(
    plan: &Plan,
    batch: &'a ParsedBatch,
    i: usize,
    r: &Relation,
    key: &'a mut Vec<u8>,
) -> LinkEvent<'a> {
    let n_fields = plan.fields.len();
    let field = |f: usize| {
        let slot = &batch.fields[i * n_fields + f];
        (slot.kind != FieldKind::Missing).then(|| &batch.arena[slot.start..slot.end])
    };
    let matched = batch.matched.get(i).copied().unwrap_or(0);
    let matches = |filter: Option<usize>| filter.is_none_or(|b| matched >> b & 1 == 1);
    // Canonical field values concatenated are the canonical encoding of the key.
    key.clear();
    let mut complete = true;
    for &f in &r.by {
        match field(f) {
            Some(bytes) => key.extend_from_slice(bytes),
            None => complete = false,
        }
    }
    LinkEvent {
        ts: batch.events[i].ts,
        key: complete.then_some(key.as_slice()),
        via: field(r.via),
        of: r.of.and_then(field),
        via_matches: matches(r.via_filter),
        matches: matches(r.filter),
    }
}

/// One link set: the relation (index into `Plan::relations`), the hop, and the entity key or
/// via value.
type SetId = (usize, Hop, Vec<u8>);

/// `(time, value)` entries of a link set.
type Entries = Vec<(i64, Vec<u8>)>;

/// Whether an event makes a link, and whether it counts as a linked event.
fn roles(r: &Relation, e: &LinkEvent<'_>) -> (bool, bool) {
    let links = e.key.is_some() && e.via.is_some() && e.via_matches;
    let counts = e.via.is_some() && e.matches && (r.of.is_none() || e.of.is_some());
    (links, counts)
}

impl LinkStage {
    /// The stage of `plan`, if it has relation features.
    pub fn new(plan: std::sync::Arc<Plan>) -> Option<Self> {
        (!plan.relations.is_empty()).then(|| LinkStage {
            indexes: plan.relations.iter().map(|_| LinkIndex::new()).collect(),
            plan,
            key: Vec::new(),
            redis: None,
            past_overflows: 0,
            cached: HashMap::new(),
        })
    }

    /// The same stage keeping its links in the Redis Cluster of `options`.
    pub fn in_redis(mut self, options: &RedisOptions) -> Result<Self> {
        self.redis = Some(RedisLinks::connect(&self.plan, options)?);
        Ok(self)
    }

    /// The link indexes, encoded for a checkpoint: their number, then each
    /// ([`sluice_core::relation::LinkIndex`]'s binary form).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, 0);
        w.u(self.indexes.len() as u64);
        for index in &self.indexes {
            index.put(&mut w);
        }
        out
    }

    /// The same stage with the link indexes of a checkpoint (`bytes` from
    /// [`LinkStage::encode`]).
    pub fn restore(mut self, bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| {
            Error::Checkpoint(format!(
                "cannot restore the relation features' links: {why}"
            ))
        };
        let mut r = Reader::new(bytes, 0);
        let n = r.count().map_err(|e| bad(e.to_string()))?;
        if n != self.indexes.len() {
            return Err(bad(format!(
                "{n} link indexes, the plan has {} relation features",
                self.indexes.len()
            )));
        }
        for index in &mut self.indexes {
            *index = LinkIndex::get(&mut r).map_err(|e| bad(e.to_string()))?;
        }
        if !r.rest().is_empty() {
            return Err(bad("bytes after the last index".into()));
        }
        Ok(self)
    }

    /// Values that were null because a hub exceeded its `limit`, so far.
    pub fn overflows(&self) -> u64 {
        self.past_overflows + self.indexes.iter().map(|i| i.overflows).sum::<u64>()
    }

    /// The relation values of every event of a routed batch (`floors[i]`: event `i`'s floor,
    /// `i64::MIN` for a rejected one, which gets nulls), and how many were null for a hub.
    pub fn batch(
        &mut self,
        batch: &ParsedBatch,
        floors: &[i64],
    ) -> Result<(Vec<FeatureValue>, u64)> {
        let before = self.overflows();
        let out = if let Some(mut redis) = self.redis.take() {
            let out = self.batch_in_redis(&mut redis, batch, floors);
            self.redis = Some(redis);
            out?
        } else {
            let mut out = Vec::with_capacity(batch.events.len() * self.plan.relations.len());
            for (i, event) in batch.events.iter().enumerate() {
                if event.rejection.is_some() {
                    out.extend(self.plan.relations.iter().map(|_| FeatureValue::Null));
                    continue;
                }
                for (r, index) in self.plan.relations.iter().zip(&mut self.indexes) {
                    let e = link_event(&self.plan, batch, i, r, &mut self.key);
                    out.push(index.observe(r, &e, floors[i]));
                }
            }
            out
        };
        Ok((out, self.overflows() - before))
    }

    /// Relation feature `r`'s value for the entity with encoded key `key` at time `at`
    /// (default: the entity's newest link; without links the value is 0), without adding
    /// anything; and the time used. With Redis state the entity's links and their linked
    /// events are read from the cluster (two round trips); a window below another writer's
    /// trim mark gives null.
    pub fn query(
        &mut self,
        r: usize,
        key: &[u8],
        at: Option<i64>,
    ) -> Result<(FeatureValue, Option<i64>)> {
        let relation = &self.plan.relations[r];
        let Some(redis) = self.redis.as_mut() else {
            let index = &mut self.indexes[r];
            return Ok(match at.or_else(|| index.newest_link(key)) {
                Some(t) => (index.value(relation, key, t), Some(t)),
                None => (FeatureValue::Int(0), None),
            });
        };
        let links = redis
            .read_whole(&[(r, Hop::Links, key)])?
            .pop()
            .unwrap_or_default();
        let Some(t) = at.or_else(|| links.entries.iter().map(|e| e.0).max()) else {
            return Ok((FeatureValue::Int(0), None));
        };
        let lo = relation.window_start(t);
        let mut vias: Vec<&[u8]> = links
            .entries
            .iter()
            .filter(|(ts, _)| *ts >= lo)
            .map(|(_, via)| &via[..])
            .collect();
        vias.sort_unstable();
        vias.dedup();
        let sets: Vec<(usize, Hop, &[u8])> = vias.iter().map(|&v| (r, Hop::Linked, v)).collect();
        let linked = redis.read_whole(&sets)?;
        let marks = std::iter::once(&links)
            .chain(&linked)
            .filter_map(|s| s.trimmed);
        if marks.max().is_some_and(|h| lo < h) {
            return Ok((FeatureValue::Null, Some(t)));
        }
        let mut index = LinkIndex::new();
        for (ts, via) in &links.entries {
            index.load_link(key, *ts, via);
        }
        for (via, set) in vias.iter().zip(&linked) {
            for (ts, of) in &set.entries {
                index.load_linked(via, *ts, of);
            }
        }
        let value = index.value(relation, key, t);
        self.past_overflows += index.overflows;
        Ok((value, Some(t)))
    }

    /// [`LinkStage::batch`] over the link sets in Redis: bring the sets of the batch's
    /// entities and via values up to date (round trip 1), then those of the via values they
    /// link to (round trip 2), compute every event in input order on the indexes, and append
    /// the batch's links and linked events (round trip 3) before any value is output.
    ///
    /// The indexes cache the sets read: a set is read whole once, then only its version,
    /// unless another writer changed it (a third read, for those sets only). An event whose
    /// window reaches below a trim mark of the sets its batch reads (another writer, ahead in
    /// event time, trimmed them) gets [`FeatureValue::Beyond`] (a `late` dead letter) and
    /// adds nothing.
    fn batch_in_redis(
        &mut self,
        redis: &mut RedisLinks,
        batch: &ParsedBatch,
        floors: &[i64],
    ) -> Result<Vec<FeatureValue>> {
        let plan = std::sync::Arc::clone(&self.plan);
        let n_rel = plan.relations.len();
        if self.cached.len() > CACHED_SETS {
            self.forget_all();
        }
        let accepted = || (0..batch.events.len()).filter(|&i| batch.events[i].rejection.is_none());
        // Per relation, the oldest time a window of this batch reaches.
        let mut lo = vec![i64::MAX; n_rel];
        let mut sets: Vec<SetId> = Vec::new();
        let mut known: HashSet<SetId> = HashSet::new();
        let mut want = |set: SetId, sets: &mut Vec<_>| {
            if known.insert(set.clone()) {
                sets.push(set);
            }
        };
        for i in accepted() {
            for (ri, r) in plan.relations.iter().enumerate() {
                let e = link_event(&plan, batch, i, r, &mut self.key);
                lo[ri] = lo[ri].min(r.window_start(e.ts));
                if let Some(key) = e.key {
                    want((ri, Hop::Links, key.to_vec()), &mut sets);
                }
                if let (Some(via), (true, _)) = (e.via, roles(r, &e)) {
                    want((ri, Hop::Linked, via.to_vec()), &mut sets);
                }
            }
        }
        self.sync(redis, &sets)?;
        // Round trip 2: the via values the entities link to within the batch's windows.
        let first = sets.len();
        for i in 0..first {
            let (r, hop, key) = sets[i].clone();
            if hop == Hop::Links {
                for via in self.indexes[r].vias_from(&key, lo[r]) {
                    want((r, Hop::Linked, via.to_vec()), &mut sets);
                }
            }
        }
        self.sync(redis, &sets[first..])?;
        let mut trimmed = vec![i64::MIN; n_rel];
        for set in &sets {
            if let Some(h) = self.cached.get(set).and_then(|c| c.mark) {
                trimmed[set.0] = trimmed[set.0].max(h);
            }
        }

        let mut out = Vec::with_capacity(batch.events.len() * n_rel);
        // New entries per set, in order of first appearance.
        let mut appends: Vec<(SetId, Entries)> = Vec::new();
        let mut at: HashMap<SetId, usize> = HashMap::new();
        let mut push = |set: SetId, entry: (i64, Vec<u8>)| {
            let n = appends.len();
            let slot = *at.entry(set.clone()).or_insert(n);
            if slot == n {
                appends.push((set, Vec::new()));
            }
            appends[slot].1.push(entry);
        };
        let mut horizon = i64::MIN;
        for (i, event) in batch.events.iter().enumerate() {
            if event.rejection.is_some() {
                out.extend(plan.relations.iter().map(|_| FeatureValue::Null));
                continue;
            }
            horizon = floors[i];
            for (ri, r) in plan.relations.iter().enumerate() {
                let e = link_event(&plan, batch, i, r, &mut self.key);
                if r.window_start(e.ts) < trimmed[ri] {
                    out.push(FeatureValue::Beyond);
                    continue;
                }
                out.push(self.indexes[ri].observe(r, &e, floors[i]));
                let (links, counts) = roles(r, &e);
                if let (true, Some(key), Some(via)) = (links, e.key, e.via) {
                    push((ri, Hop::Links, key.to_vec()), (e.ts, via.to_vec()));
                }
                if let (true, Some(via)) = (counts, e.via) {
                    let of = e.of.unwrap_or_default().to_vec();
                    push((ri, Hop::Linked, via.to_vec()), (e.ts, of));
                }
            }
        }
        // Trim a set once its oldest entry is a quarter of a window behind the horizon:
        // entries just below the horizon cost less than a trim per write.
        let trim = |set: &SetId, cached: &HashMap<SetId, Cached>| {
            let r = &plan.relations[set.0];
            let horizon = (horizon > i64::MIN).then(|| r.window_start(horizon))?;
            let oldest = cached.get(set).map_or(Some(i64::MIN), |c| c.oldest)?;
            (oldest < horizon.saturating_sub(r.window_ms / 4)).then_some(horizon)
        };
        let requests: Vec<Append<'_>> = appends
            .iter()
            .map(|(set, entries)| Append {
                relation: set.0,
                hop: set.1,
                key: &set.2,
                trim: trim(set, &self.cached),
                entries: entries.iter().map(|(ts, v)| (*ts, &v[..])).collect(),
            })
            .collect();
        let versions = redis.append(&requests)?;
        for (a, (set, entries)) in requests.iter().zip(&appends) {
            if let Some(c) = self.cached.get_mut(set) {
                // After a trim at `h` every entry left is at `h` or later.
                let kept = match a.trim {
                    Some(h) => c.oldest.map(|o| o.max(h)),
                    None => c.oldest,
                };
                let added = entries.iter().map(|e| e.0).min();
                c.oldest = match (kept, added) {
                    (Some(k), Some(a)) => Some(k.min(a)),
                    (k, a) => k.or(a),
                };
                if let Some(h) = a.trim {
                    c.mark = Some(c.mark.map_or(h, |m| m.max(h)));
                }
            }
        }
        // A cached set stays valid if this write is the only one since it was read; the
        // relations that share an owner's sets take the owner's new version.
        let written: HashMap<(usize, Hop, &[u8]), u64> = appends
            .iter()
            .zip(&versions)
            .filter_map(|((set, _), v)| v.map(|v| ((set.0, set.1, &set.2[..]), v)))
            .collect();
        for (set, _) in &appends {
            let Some(&version) = written.get(&(redis.owner(set.0), set.1, &set.2[..])) else {
                continue;
            };
            let current = self.cached.get(set).and_then(|c| c.version).unwrap_or(0);
            if version == current + 1 {
                if let Some(c) = self.cached.get_mut(set) {
                    c.version = Some(version);
                }
            } else {
                self.forget(set);
            }
        }
        Ok(out)
    }

    /// Brings `sets` up to date in the indexes: reads the versions of those cached and the
    /// whole of the others, then reads again the cached ones another writer changed.
    fn sync(&mut self, redis: &mut RedisLinks, sets: &[SetId]) -> Result<()> {
        let asks: Vec<(usize, Hop, &[u8], bool)> = sets
            .iter()
            .map(|s| (s.0, s.1, &s.2[..], !self.cached.contains_key(s)))
            .collect();
        let mut stale = Vec::new();
        for (set, read) in sets.iter().zip(redis.read(&asks)?) {
            match read {
                Read::Whole(stored) => self.load(set, stored),
                Read::Version(v) if self.cached.get(set).map(|c| c.version) != Some(v) => {
                    stale.push(set);
                }
                Read::Version(_) => {}
            }
        }
        if !stale.is_empty() {
            let asks: Vec<(usize, Hop, &[u8])> =
                stale.iter().map(|s| (s.0, s.1, &s.2[..])).collect();
            for (set, stored) in stale.into_iter().zip(redis.read_whole(&asks)?) {
                self.load(set, stored);
            }
        }
        Ok(())
    }

    /// Replaces a set's entries in its index with those read.
    fn load(&mut self, set: &SetId, stored: Stored) {
        let (r, hop, key) = set;
        let index = &mut self.indexes[*r];
        match hop {
            Hop::Links => {
                index.forget_links(key);
                for (ts, via) in &stored.entries {
                    index.load_link(key, *ts, via);
                }
            }
            Hop::Linked => {
                index.forget_linked(key);
                for (ts, of) in &stored.entries {
                    index.load_linked(key, *ts, of);
                }
            }
        }
        let cached = Cached {
            version: stored.version,
            mark: stored.trimmed,
            oldest: stored.entries.iter().map(|e| e.0).min(),
        };
        self.cached.insert(set.clone(), cached);
    }

    /// Drops a set from the cache and its entries from its index (read whole when next
    /// needed).
    fn forget(&mut self, set: &SetId) {
        self.cached.remove(set);
        match set.1 {
            Hop::Links => self.indexes[set.0].forget_links(&set.2),
            Hop::Linked => self.indexes[set.0].forget_linked(&set.2),
        }
    }

    /// Drops every cached set and starts the indexes afresh.
    fn forget_all(&mut self) {
        self.past_overflows = self.overflows();
        self.cached.clear();
        self.indexes = self
            .plan
            .relations
            .iter()
            .map(|_| LinkIndex::new())
            .collect();
    }
}
