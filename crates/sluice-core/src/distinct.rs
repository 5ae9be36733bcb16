//! Exact distinct-count registers over sliding event-time windows.
//!
//! Values are interned per series into small integer ids ([`ValueTable`]); the series keeps one
//! entry per (aligned time, value) with its multiplicity, ordered by time, and every window
//! keeps a count per value id and the number of ids with a non-zero count. In-order events are
//! amortised O(1); an out-of-order event's own value is counted by a scan of its window.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64;

use crate::bucket_start;
use crate::plan::SeriesSpec;
use crate::value::FeatureValue;
use crate::Agg;

const NONE: u32 = u32::MAX;
/// Above this many live values a hash index replaces the linear scan.
const LINEAR_LIMIT: usize = 8;

#[derive(Debug, Clone)]
struct Slot {
    bytes: Box<[u8]>,
    /// Entries of the series that refer to this id; 0 means the slot is free.
    refs: u32,
    /// Next id with the same hash (collision chain), or NONE.
    next: u32,
}

/// Interns value byte strings into small, reusable ids.
#[derive(Debug, Clone, Default)]
pub struct ValueTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    index: Option<FxHashMap<u64, u32>>,
}

impl ValueTable {
    /// The id of `bytes`, if interned.
    pub fn find(&self, bytes: &[u8]) -> Option<u32> {
        match &self.index {
            None => self
                .slots
                .iter()
                .position(|s| s.refs > 0 && &*s.bytes == bytes)
                .map(|i| i as u32),
            Some(index) => {
                let mut id = *index.get(&xxh3_64(bytes))?;
                while id != NONE {
                    let slot = &self.slots[id as usize];
                    if &*slot.bytes == bytes {
                        return Some(id);
                    }
                    id = slot.next;
                }
                None
            }
        }
    }

    /// Interns `bytes` and takes a reference to its id.
    pub fn intern(&mut self, bytes: &[u8]) -> u32 {
        if let Some(id) = self.find(bytes) {
            self.slots[id as usize].refs += 1;
            return id;
        }
        let slot = Slot {
            bytes: bytes.into(),
            refs: 1,
            next: NONE,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.live += 1;
        if let Some(index) = &mut self.index {
            let head = index.entry(xxh3_64(bytes)).or_insert(NONE);
            self.slots[id as usize].next = *head;
            *head = id;
        } else if self.live > LINEAR_LIMIT {
            self.build_index();
        }
        id
    }

    fn build_index(&mut self) {
        let mut index = FxHashMap::default();
        for (id, slot) in self.slots.iter_mut().enumerate() {
            slot.next = NONE;
            if slot.refs > 0 {
                let head = index.entry(xxh3_64(&slot.bytes)).or_insert(NONE);
                slot.next = *head;
                *head = id as u32;
            }
        }
        self.index = Some(index);
    }

    /// Drops a reference to `id`, freeing it at zero.
    pub fn release(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        slot.refs -= 1;
        if slot.refs > 0 {
            return;
        }
        let bytes = std::mem::take(&mut slot.bytes);
        let next = slot.next;
        if let Some(index) = &mut self.index {
            let h = xxh3_64(&bytes);
            let head = index.get_mut(&h).expect("an interned value is indexed");
            if *head == id {
                if next == NONE {
                    index.remove(&h);
                } else {
                    *head = next;
                }
            } else {
                let mut prev = *head;
                while self.slots[prev as usize].next != id {
                    prev = self.slots[prev as usize].next;
                }
                self.slots[prev as usize].next = next;
            }
        }
        self.free.push(id);
        self.live -= 1;
    }

    /// Upper bound of ids in use (for sizing per-id arrays).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ts: i64,
    id: u32,
    mult: u32,
}

#[derive(Debug, Clone)]
struct Running {
    start: i64,
    lo: usize,
    counts: Vec<u32>,
    distinct: u64,
}

impl Running {
    #[inline]
    fn add(&mut self, id: u32, n: u32) {
        let i = id as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        if self.counts[i] == 0 {
            self.distinct += 1;
        }
        self.counts[i] += n;
    }

    #[inline]
    fn remove(&mut self, id: u32, n: u32) {
        let c = &mut self.counts[id as usize];
        *c -= n;
        if *c == 0 {
            self.distinct -= 1;
        }
    }
}

/// Scratch space for counting distinct ids in a range, shared by all series of a shard.
#[derive(Debug, Default)]
pub struct DistinctScratch {
    marks: Vec<u32>,
    epoch: u32,
}

/// Distinct-count registers of one key and field: every window of a distinct [`SeriesSpec`].
#[derive(Debug, Clone)]
pub struct DistinctSeries {
    entries: VecDeque<Entry>,
    values: ValueTable,
    windows: Box<[Running]>,
}

impl DistinctSeries {
    /// An empty series for `spec`.
    pub fn new(spec: &SeriesSpec) -> Self {
        DistinctSeries {
            entries: VecDeque::new(),
            values: ValueTable::default(),
            windows: spec
                .windows
                .iter()
                .map(|_| Running {
                    start: i64::MIN,
                    lo: 0,
                    counts: Vec::new(),
                    distinct: 0,
                })
                .collect(),
        }
    }

    /// The newest entry time, if any.
    pub fn newest(&self) -> Option<i64> {
        self.entries.back().map(|e| e.ts)
    }

    /// Number of (time, value) entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an event at `ts` with value `value` (its canonical bytes) and writes the distinct
    /// counts of its windows into `out`. `floor` as for [`crate::NumericSeries::observe`].
    pub fn observe(
        &mut self,
        spec: &SeriesSpec,
        ts: i64,
        value: &[u8],
        floor: i64,
        scratch: &mut DistinctScratch,
        out: &mut [FeatureValue],
    ) {
        let g = spec.granularity_ms;
        let t = bucket_start(ts, g);
        // One reference per entry: released again below if the event merges into an entry.
        let id = self.values.intern(value);
        match self.newest() {
            Some(newest) if t < newest => self.observe_out_of_order(spec, t, id, scratch, out),
            _ => self.observe_in_order(spec, t, id, out),
        }
        self.evict(bucket_start(floor, g).saturating_sub(spec.max_window_ms()));
    }

    /// Index of the entry for `(t, id)` among entries `..end` that share time `t`, if any.
    fn find_entry(&self, end: usize, t: i64, id: u32) -> Option<usize> {
        (0..end)
            .rev()
            .take_while(|&i| self.entries[i].ts == t)
            .find(|&i| self.entries[i].id == id)
    }

    fn observe_in_order(&mut self, spec: &SeriesSpec, t: i64, id: u32, out: &mut [FeatureValue]) {
        match self.find_entry(self.entries.len(), t, id) {
            Some(i) => {
                self.entries[i].mult += 1;
                self.values.release(id);
            }
            None => {
                self.entries.push_back(Entry { ts: t, id, mult: 1 });
            }
        }
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            run.add(id, 1);
            // Saturating: a start before i64::MIN means the window holds everything.
            advance(run, &self.entries, t.saturating_sub(w.width_ms));
            write(w.outputs.as_slice(), run.distinct, out);
        }
    }

    fn observe_out_of_order(
        &mut self,
        spec: &SeriesSpec,
        t: i64,
        id: u32,
        scratch: &mut DistinctScratch,
        out: &mut [FeatureValue],
    ) {
        let p = self.entries.partition_point(|e| e.ts <= t);
        match self.find_entry(p, t, id) {
            Some(i) => {
                self.entries[i].mult += 1;
                self.values.release(id);
            }
            None => {
                self.entries.insert(p, Entry { ts: t, id, mult: 1 });
                for run in self.windows.iter_mut() {
                    if t < run.start {
                        run.lo += 1;
                    }
                }
            }
        }
        let end = self.entries.partition_point(|e| e.ts <= t);
        if scratch.marks.len() < self.values.capacity() {
            scratch.marks.resize(self.values.capacity(), 0);
        }
        for (w, run) in spec.windows.iter().zip(self.windows.iter_mut()) {
            if t >= run.start {
                run.add(id, 1);
            }
            let start = t.saturating_sub(w.width_ms);
            let a = self.entries.partition_point(|e| e.ts < start);
            scratch.epoch = scratch.epoch.wrapping_add(1);
            if scratch.epoch == 0 {
                scratch.marks.fill(0);
                scratch.epoch = 1;
            }
            let mut distinct = 0;
            for e in self.entries.range(a..end) {
                let m = &mut scratch.marks[e.id as usize];
                if *m != scratch.epoch {
                    *m = scratch.epoch;
                    distinct += 1;
                }
            }
            write(w.outputs.as_slice(), distinct, out);
        }
    }

    fn evict(&mut self, horizon: i64) {
        if self.entries.front().is_none_or(|e| e.ts >= horizon) {
            return;
        }
        for run in self.windows.iter_mut() {
            advance(run, &self.entries, horizon);
        }
        let mut dropped = 0;
        while let Some(e) = self.entries.front() {
            if e.ts >= horizon {
                break;
            }
            self.values.release(e.id);
            self.entries.pop_front();
            dropped += 1;
        }
        for run in self.windows.iter_mut() {
            run.lo -= dropped;
        }
    }
}

#[inline]
fn write(outputs: &[(Agg, usize)], distinct: u64, out: &mut [FeatureValue]) {
    for &(_, slot) in outputs {
        out[slot] = FeatureValue::Int(distinct);
    }
}

#[inline]
fn advance(run: &mut Running, entries: &VecDeque<Entry>, start: i64) {
    if start <= run.start {
        return;
    }
    run.start = start;
    while let Some(e) = entries.get(run.lo) {
        if e.ts >= start {
            break;
        }
        run.remove(e.id, e.mult);
        run.lo += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_table_reuses_ids_and_survives_many_values() {
        let mut t = ValueTable::default();
        let ids: Vec<u32> = (0..100u32)
            .map(|i| t.intern(format!("v{i}").as_bytes()))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(t.find(format!("v{i}").as_bytes()), Some(id));
        }
        for &id in &ids[..50] {
            t.release(id);
        }
        assert_eq!(t.find(b"v3"), None);
        assert_eq!(t.find(b"v73"), Some(ids[73]));
        let again = t.intern(b"new");
        assert!(ids[..50].contains(&again), "freed ids are reused");
    }
}
