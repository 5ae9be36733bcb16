//! The relation stage: relation features (`linked_*`), computed by the router over its own
//! link indexes, one event at a time in input order.
//!
//! Their two hops read keys that other shards own, so they are not computed by the shards: the
//! router sees every event once, in input order, before any shard does, and an index fed there
//! gives each event exactly the links of the events received before it (and itself), for any
//! number of workers (`sluice_core::relation`). The cost is one core for all relation
//! features; the shards compute the others in parallel as before.

use sluice_core::relation::{LinkEvent, LinkIndex};
use sluice_core::wire::{Reader, Wire, Writer};
use sluice_core::{FeatureValue, Plan};

use crate::dataflow::batch::{FieldKind, ParsedBatch};
use crate::error::{Error, Result};

/// The link indexes of a pipeline's relation features.
#[derive(Debug, Clone)]
pub struct LinkStage {
    plan: std::sync::Arc<Plan>,
    indexes: Vec<LinkIndex>,
    /// The encoded entity key of the event being processed.
    key: Vec<u8>,
}

impl LinkStage {
    /// The stage of `plan`, if it has relation features.
    pub fn new(plan: std::sync::Arc<Plan>) -> Option<Self> {
        (!plan.relations.is_empty()).then(|| LinkStage {
            indexes: plan.relations.iter().map(|_| LinkIndex::new()).collect(),
            plan,
            key: Vec::new(),
        })
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
        self.indexes.iter().map(|i| i.overflows).sum()
    }

    /// The relation values of every event of a routed batch (`floors[i]`: event `i`'s floor,
    /// `i64::MIN` for a rejected one, which gets nulls), and how many were null for a hub.
    pub fn batch(&mut self, batch: &ParsedBatch, floors: &[i64]) -> (Vec<FeatureValue>, u64) {
        let before = self.overflows();
        let mut out = Vec::with_capacity(batch.events.len() * self.plan.relations.len());
        for (i, event) in batch.events.iter().enumerate() {
            if event.rejection.is_some() {
                out.extend(self.plan.relations.iter().map(|_| FeatureValue::Null));
            } else {
                self.apply(batch, i, event.ts, floors[i], &mut out);
            }
        }
        (out, self.overflows() - before)
    }

    /// Adds accepted event `i` of `batch` (at `ts`; `floor`: the oldest time a later event may
    /// have) and appends its value of every relation feature to `out`.
    pub fn apply(
        &mut self,
        batch: &ParsedBatch,
        i: usize,
        ts: i64,
        floor: i64,
        out: &mut Vec<FeatureValue>,
    ) {
        let n_fields = self.plan.fields.len();
        let field = |f: usize| {
            let slot = &batch.fields[i * n_fields + f];
            (slot.kind != FieldKind::Missing).then(|| &batch.arena[slot.start..slot.end])
        };
        let matched = batch.matched.get(i).copied().unwrap_or(0);
        let matches = |filter: Option<usize>| filter.is_none_or(|b| matched >> b & 1 == 1);
        for (r, index) in self.plan.relations.iter().zip(&mut self.indexes) {
            // Canonical field values concatenated are the canonical encoding of the key.
            self.key.clear();
            let mut complete = true;
            for &f in &r.by {
                match field(f) {
                    Some(bytes) => self.key.extend_from_slice(bytes),
                    None => complete = false,
                }
            }
            let event = LinkEvent {
                ts,
                key: complete.then_some(self.key.as_slice()),
                via: field(r.via),
                of: r.of.and_then(field),
                via_matches: matches(r.via_filter),
                matches: matches(r.filter),
            };
            out.push(index.observe(r, &event, floor));
        }
    }
}
