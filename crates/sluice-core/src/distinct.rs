//! Exact distinct-count registers over sliding event-time windows.
//!
//! Values are interned per series into small integer ids ([`ValueTable`]); the series keeps one
//! entry per (aligned time, value) with its multiplicity, ordered by time, and every window
//! keeps a count per value id and the number of ids with a non-zero count. In-order events are
//! amortised O(1); an out-of-order event's own value is counted by a scan of its window.

use rustc_hash::FxHashMap;
use smallvec::{smallvec, SmallVec};
use xxhash_rust::xxh3::xxh3_64;

use crate::bucket_start;
use crate::deque::SmallDeque;
use crate::plan::SeriesSpec;
use crate::value::FeatureValue;
use crate::wire::{Reader, Wire, WireError, Writer};
use crate::Agg;

const NONE: u32 = u32::MAX;
/// Above this many values a hash index replaces the linear scan.
const LINEAR_LIMIT: usize = 8;

/// One interned value: its bytes (inline when short), references, hash chain, and its count in
/// each window of the series (kept here, next to the value, so an update touches one place).
#[derive(Debug, Clone)]
struct Slot {
    bytes: SmallVec<[u8; 16]>,
    /// Entries of the series that refer to this id; 0 means the slot is free.
    refs: u32,
    /// Next id with the same hash (collision chain), or NONE.
    next: u32,
    /// Occurrences in each window's running range.
    counts: SmallVec<[u32; 2]>,
}

/// Interns value byte strings into small, reusable ids.
#[derive(Debug, Clone)]
pub struct ValueTable {
    slots: SmallVec<[Slot; 2]>,
    /// First free slot; free slots are chained through `next`.
    free: u32,
    live: u32,
    index: Option<Box<FxHashMap<u64, u32>>>,
}

impl Default for ValueTable {
    fn default() -> Self {
        ValueTable {
            slots: SmallVec::new(),
            free: NONE,
            live: 0,
            index: None,
        }
    }
}

impl ValueTable {
    /// The id of `bytes`, if interned.
    pub fn find(&self, bytes: &[u8]) -> Option<u32> {
        match &self.index {
            None => self
                .slots
                .iter()
                .position(|s| s.refs > 0 && s.bytes.as_slice() == bytes)
                .map(|i| i as u32),
            Some(index) => {
                let mut id = *index.get(&xxh3_64(bytes))?;
                while id != NONE {
                    let slot = &self.slots[id as usize];
                    if slot.bytes.as_slice() == bytes {
                        return Some(id);
                    }
                    id = slot.next;
                }
                None
            }
        }
    }

    /// Interns `bytes` and takes a reference to its id. A new id starts with `windows` zero
    /// counts.
    pub fn intern(&mut self, bytes: &[u8], windows: usize) -> u32 {
        if let Some(id) = self.find(bytes) {
            self.slots[id as usize].refs += 1;
            return id;
        }
        let slot = Slot {
            bytes: SmallVec::from_slice(bytes),
            refs: 1,
            next: NONE,
            counts: smallvec![0; windows],
        };
        let id = if self.free == NONE {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        } else {
            let id = self.free;
            self.free = self.slots[id as usize].next;
            self.slots[id as usize] = slot;
            id
        };
        self.live += 1;
        if let Some(index) = &mut self.index {
            let head = index.entry(xxh3_64(bytes)).or_insert(NONE);
            self.slots[id as usize].next = *head;
            *head = id;
        } else if self.live() > LINEAR_LIMIT {
            self.build_index();
        }
        id
    }

    /// Number of values interned.
    pub fn live(&self) -> usize {
        self.live as usize
    }

    fn build_index(&mut self) {
        let mut index = FxHashMap::default();
        // Free slots keep their `next`: it chains the free list.
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if slot.refs > 0 {
                slot.next = NONE;
                let head = index.entry(xxh3_64(&slot.bytes)).or_insert(NONE);
                slot.next = *head;
                *head = id as u32;
            }
        }
        self.index = Some(Box::new(index));
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
        self.slots[id as usize].next = self.free;
        self.free = id;
        self.live -= 1;
    }

    /// Upper bound of ids in use (for sizing per-id arrays).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Adds `n` occurrences of `id` to window `w`; returns whether the value is new there.
    #[inline]
    fn add(&mut self, w: usize, id: u32, n: u32) -> bool {
        let c = &mut self.slots[id as usize].counts[w];
        *c += n;
        *c == n
    }

    /// Removes `n` occurrences of `id` from window `w`; returns whether the value left it.
    #[inline]
    fn remove(&mut self, w: usize, id: u32, n: u32) -> bool {
        let c = &mut self.slots[id as usize].counts[w];
        *c -= n;
        *c == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ts: i64,
    id: u32,
    mult: u32,
}

/// A window's running range: entries `lo..` (those with `ts >= start`) and how many distinct
/// values they hold.
#[derive(Debug, Clone, Copy)]
struct Running {
    start: i64,
    lo: usize,
    distinct: u64,
}

/// Scratch space for counting distinct ids in a range, shared by all series of a shard.
#[derive(Debug, Default)]
pub struct DistinctScratch {
    marks: Vec<u32>,
    epoch: u32,
    /// The ids of a window listed by a `set`.
    ids: Vec<u32>,
}

/// Distinct-count registers of one key and field: every window of a distinct [`SeriesSpec`].
#[derive(Debug, Clone)]
pub struct DistinctSeries {
    entries: SmallDeque<[Entry; 2]>,
    values: ValueTable,
    windows: SmallVec<[Running; 1]>,
}

impl DistinctSeries {
    /// An empty series for `spec`.
    pub fn new(spec: &SeriesSpec) -> Self {
        DistinctSeries {
            entries: SmallDeque::new(),
            values: ValueTable::default(),
            windows: spec
                .windows
                .iter()
                .map(|_| Running {
                    start: i64::MIN,
                    lo: 0,
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
        let id = self.values.intern(value, self.windows.len());
        if self.in_order(spec, t) {
            self.observe_in_order(spec, t, id, out);
        } else {
            self.observe_out_of_order(spec, t, id, scratch, out);
        }
        self.evict(bucket_start(floor, g).saturating_sub(spec.max_window_ms()));
    }

    /// Whether aligned time `t` is at or after the newest entry and every running window can
    /// slide forward to it (see [`crate::NumericSeries::read_at`]).
    fn in_order(&self, spec: &SeriesSpec, t: i64) -> bool {
        self.newest().is_none_or(|newest| t >= newest)
            && crate::numeric::windows_slide_to(spec, self.windows.iter().map(|r| r.start), t)
    }

    /// Writes the distinct counts its windows have for an event at `ts` that is not added: as
    /// [`DistinctSeries::peek`], but an event in time order slides the running windows instead
    /// of scanning.
    pub fn read_at(&mut self, spec: &SeriesSpec, ts: i64, out: &mut [FeatureValue]) {
        let t = bucket_start(ts, spec.granularity_ms);
        if !self.in_order(spec, t) {
            return self.peek(spec, ts, out);
        }
        for (j, (w, run)) in spec.windows.iter().zip(self.windows.iter_mut()).enumerate() {
            advance(
                j,
                run,
                &self.entries,
                &mut self.values,
                t.saturating_sub(w.width_ms),
            );
            write(&w.outputs, run.distinct, out);
        }
    }

    /// Writes the distinct counts its windows would have for an event at `at` without adding
    /// one: the values of entries with times in `[bucket(at) - width, bucket(at)]`. Read-only.
    pub fn peek(&self, spec: &SeriesSpec, at: i64, out: &mut [FeatureValue]) {
        let t = bucket_start(at, spec.granularity_ms);
        let end = self.entries.partition_point(|e| e.ts <= t);
        let mut ids: Vec<u32> = Vec::new();
        for w in &spec.windows {
            self.window_ids(t.saturating_sub(w.width_ms), end, &mut ids);
            write(w.outputs.as_slice(), ids.len() as u64, out);
        }
    }

    /// The distinct value ids of entries `..end` with times from `lo` on, into `ids`.
    fn window_ids(&self, lo: i64, end: usize, ids: &mut Vec<u32>) {
        let start = self.entries.partition_point(|e| e.ts < lo);
        ids.clear();
        ids.extend(self.entries.range(start..end.max(start)).map(|e| e.id));
        ids.sort_unstable();
        ids.dedup();
    }

    /// Writes the `set` features of its windows for an event at `at` (after the event, if it
    /// was added): the distinct values of `[bucket(at) - width, bucket(at)]`, sorted
    /// ([`crate::value::canonical_cmp`]), the smallest `limit`, as a JSON array appended to
    /// `text`. It lists the window's entries: O(n log n) in the window's distinct values.
    pub fn write_sets(
        &self,
        spec: &SeriesSpec,
        at: i64,
        scratch: &mut DistinctScratch,
        text: &mut Vec<u8>,
        out: &mut [FeatureValue],
    ) {
        let t = bucket_start(at, spec.granularity_ms);
        let end = self.entries.partition_point(|e| e.ts <= t);
        let ids = &mut scratch.ids;
        for w in &spec.windows {
            let limits = w.outputs.iter().filter_map(|&(agg, slot)| match agg {
                Agg::Set(limit) => Some((limit, slot)),
                _ => None,
            });
            let mut listed: Option<Vec<&[u8]>> = None;
            for (limit, slot) in limits {
                let values = listed.get_or_insert_with(|| {
                    self.window_ids(t.saturating_sub(w.width_ms), end, ids);
                    let mut values: Vec<&[u8]> = ids
                        .iter()
                        .map(|&id| self.values.slots[id as usize].bytes.as_slice())
                        .collect();
                    values.sort_by(|a, b| crate::value::canonical_cmp(a, b));
                    values
                });
                if values.is_empty() {
                    // An empty window: null, as for every aggregation but the counts and sums.
                    out[slot] = FeatureValue::Null;
                    continue;
                }
                let start = text.len() as u32;
                let listed = values.iter().take(limit as usize).copied();
                crate::value::write_json_array(text, listed);
                out[slot] = FeatureValue::Text {
                    start,
                    len: text.len() as u32 - start,
                };
            }
        }
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
            None => self.entries.push_back(Entry { ts: t, id, mult: 1 }),
        }
        for (j, w) in spec.windows.iter().enumerate() {
            let run = &mut self.windows[j];
            run.distinct += u64::from(self.values.add(j, id, 1));
            // Saturating: a start before i64::MIN means the window holds everything.
            advance(
                j,
                run,
                &self.entries,
                &mut self.values,
                t.saturating_sub(w.width_ms),
            );
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
        // Entries `..end` have times <= t.
        let end = self.entries.partition_point(|e| e.ts <= t);
        for (j, w) in spec.windows.iter().enumerate() {
            let mut run = self.windows[j];
            if t >= run.start {
                run.distinct += u64::from(self.values.add(j, id, 1));
                self.windows[j] = run;
            }
            let a = self
                .entries
                .partition_point(|e| e.ts < t.saturating_sub(w.width_ms));
            // The cheaper of counting `a..end` directly and adjusting the running range `lo..`.
            // When the event lies before the running range (`end <= lo`) the direct count is
            // never dearer, so the adjustment only runs when `a..end` overlaps `lo..`.
            let direct = end - a;
            let adjust = (self.entries.len() - end) + a.abs_diff(run.lo);
            let distinct = if direct <= adjust {
                self.count_range(a, end, scratch)
            } else {
                self.count_adjusted(j, run, a, end)
            };
            write(w.outputs.as_slice(), distinct, out);
        }
    }

    /// Distinct values among entries `a..end`, by marking ids.
    fn count_range(&self, a: usize, end: usize, scratch: &mut DistinctScratch) -> u64 {
        if scratch.marks.len() < self.values.capacity() {
            scratch.marks.resize(self.values.capacity(), 0);
        }
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
        distinct
    }

    /// Distinct values among entries `a..end`, from window `j`'s running counts over `lo..`:
    /// the counts are shifted to `a..end`, read, and shifted back.
    fn count_adjusted(&mut self, j: usize, run: Running, a: usize, end: usize) -> u64 {
        let len = self.entries.len();
        let mut distinct = run.distinct as i64;
        let (added, removed) = if a < run.lo {
            (a..run.lo, run.lo..run.lo)
        } else {
            (run.lo..run.lo, run.lo..a)
        };
        for i in (end..len).chain(removed.clone()) {
            let e = self.entries[i];
            distinct -= i64::from(self.values.remove(j, e.id, e.mult));
        }
        for i in added.clone() {
            let e = self.entries[i];
            distinct += i64::from(self.values.add(j, e.id, e.mult));
        }
        for i in (end..len).chain(removed) {
            let e = self.entries[i];
            self.values.add(j, e.id, e.mult);
        }
        for i in added {
            let e = self.entries[i];
            self.values.remove(j, e.id, e.mult);
        }
        distinct as u64
    }

    fn evict(&mut self, horizon: i64) {
        if self.entries.front().is_none_or(|e| e.ts >= horizon) {
            return;
        }
        for (j, run) in self.windows.iter_mut().enumerate() {
            advance(j, run, &self.entries, &mut self.values, horizon);
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

/// Moves window `j`'s start forward to `start`, removing the entries it leaves.
#[inline]
fn advance(
    j: usize,
    run: &mut Running,
    entries: &SmallDeque<[Entry; 2]>,
    values: &mut ValueTable,
    start: i64,
) {
    if start <= run.start {
        return;
    }
    run.start = start;
    while let Some(e) = entries.get(run.lo) {
        if e.ts >= start {
            break;
        }
        run.distinct -= u64::from(values.remove(j, e.id, e.mult));
        run.lo += 1;
    }
}

/// An id that may be [`NONE`], written as id + 1 so that `NONE` takes one byte.
fn put_link(w: &mut Writer<'_>, id: u32) {
    w.u(u64::from(id.wrapping_add(1)));
}

fn get_link(r: &mut Reader<'_>) -> Result<u32, WireError> {
    Ok(r.u32()?.wrapping_sub(1))
}

/// Value bytes, references, chain link, per-window counts.
impl Wire for Slot {
    fn put(&self, w: &mut Writer<'_>) {
        w.bytes(&self.bytes);
        w.u(u64::from(self.refs));
        put_link(w, self.next);
        w.seq(&self.counts);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Slot {
            bytes: SmallVec::from_slice(r.bytes()?),
            refs: r.u32()?,
            next: get_link(r)?,
            counts: r.seq()?,
        })
    }
}

/// Slots, free-list head, live count, whether the hash index exists. The index itself is
/// rebuilt on reading (its chains may come back in another order, which no lookup depends on).
impl Wire for ValueTable {
    fn put(&self, w: &mut Writer<'_>) {
        w.seq(&self.slots);
        put_link(w, self.free);
        w.u(u64::from(self.live));
        w.u(u64::from(self.index.is_some()));
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let mut table = ValueTable {
            slots: r.seq()?,
            free: get_link(r)?,
            live: r.u32()?,
            index: None,
        };
        let links_ok = |id: u32| id == NONE || (id as usize) < table.slots.len();
        if !links_ok(table.free) || !table.slots.iter().all(|s| links_ok(s.next)) {
            return Err(WireError("a value link beyond the table"));
        }
        table.validate()?;
        match r.u()? {
            0 => {}
            1 => table.build_index(),
            _ => return Err(WireError("an unknown kind of value index")),
        }
        Ok(table)
    }
}

impl ValueTable {
    /// The inner consistency of a decoded table (links are already known to be in range):
    /// the live count matches the referenced values, the free list runs through exactly the
    /// unreferenced slots, once each, and no value is interned twice.
    fn validate(&self) -> Result<(), WireError> {
        let live = self.slots.iter().filter(|s| s.refs > 0).count();
        if live != self.live as usize {
            return Err(WireError(
                "a value table's live count does not add up to its values",
            ));
        }
        let mut seen = vec![false; self.slots.len()];
        let (mut id, mut free) = (self.free, 0);
        while id != NONE {
            let i = id as usize;
            let slot = self
                .slots
                .get(i)
                .ok_or(WireError("a value link beyond the table"))?;
            if seen[i] || slot.refs > 0 {
                return Err(WireError(
                    "a value table's free list runs through a value in use, or in a loop",
                ));
            }
            seen[i] = true;
            free += 1;
            id = slot.next;
        }
        if free != self.slots.len() - live {
            return Err(WireError("a value table's free list misses unused slots"));
        }
        let mut values: Vec<&[u8]> = self
            .slots
            .iter()
            .filter(|s| s.refs > 0)
            .map(|s| s.bytes.as_slice())
            .collect();
        values.sort_unstable();
        if values.windows(2).any(|p| p[0] == p[1]) {
            return Err(WireError("a value interned twice"));
        }
        Ok(())
    }
}

/// Time, value id, multiplicity.
impl Wire for Entry {
    fn put(&self, w: &mut Writer<'_>) {
        w.ts(self.ts);
        w.u(u64::from(self.id));
        w.u(u64::from(self.mult));
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Entry {
            ts: r.ts()?,
            id: r.u32()?,
            mult: r.u32()?,
        })
    }
}

/// Start, first entry, distinct values.
impl Wire for Running {
    fn put(&self, w: &mut Writer<'_>) {
        w.ts(self.start);
        w.u(self.lo as u64);
        w.u(self.distinct);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Running {
            start: r.ts()?,
            lo: r.index()?,
            distinct: r.u()?,
        })
    }
}

/// Entries, value table, windows. Decoding checks their inner consistency (see
/// [`DistinctSeries::check`] for the check against the plan).
impl Wire for DistinctSeries {
    fn put(&self, w: &mut Writer<'_>) {
        w.seq(self.entries.as_slice());
        self.values.put(w);
        w.seq(&self.windows);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let series = DistinctSeries {
            entries: r.deque()?,
            values: ValueTable::get(r)?,
            windows: r.seq()?,
        };
        series.validate()?;
        Ok(series)
    }
}

/// Checks of decoded registers: a state read from bytes that pass their checksum may still be
/// structurally wrong (written for another plan, or damaged before its checksum was taken).
/// Every invariant the update code relies on is checked, so that a state that passes can be
/// updated and queried without panicking.
impl DistinctSeries {
    /// Checks decoded registers against the series they are for: as many windows, and entry
    /// times aligned to the granularity. (Their inner consistency is checked when they are
    /// decoded.)
    pub fn check(&self, spec: &SeriesSpec) -> Result<(), WireError> {
        if self.windows.len() != spec.windows.len() {
            return Err(WireError(
                "a distinct series has another number of windows than in the plan",
            ));
        }
        let g = spec.granularity_ms;
        if self
            .entries
            .as_slice()
            .iter()
            .any(|e| bucket_start(e.ts, g) != e.ts)
        {
            return Err(WireError(
                "an entry time is not aligned to the series' granularity",
            ));
        }
        Ok(())
    }

    /// The inner consistency of decoded registers: entries in time order, each referring to a
    /// value and occurring at least once; every value's references and per-window counts
    /// adding up to the entries; each window's first entry matching its start and its
    /// distinct count adding up to its counts.
    fn validate(&self) -> Result<(), WireError> {
        let entries = self.entries.as_slice();
        let slots = &self.values.slots;
        if entries.iter().any(|e| e.id as usize >= slots.len()) {
            return Err(WireError("an entry refers to no value"));
        }
        if entries.iter().any(|e| e.mult == 0) {
            return Err(WireError("an entry that occurs no time"));
        }
        if entries.windows(2).any(|p| p[0].ts > p[1].ts) {
            return Err(WireError("entries out of time order"));
        }
        if slots.iter().any(|s| s.counts.len() != self.windows.len()) {
            return Err(WireError(
                "a value has counts for another number of windows than its series",
            ));
        }
        let mut tally = vec![0u64; slots.len()];
        for e in entries {
            tally[e.id as usize] += 1;
        }
        if slots
            .iter()
            .zip(&tally)
            .any(|(s, &n)| u64::from(s.refs) != n)
        {
            return Err(WireError(
                "a value's references do not add up to its entries",
            ));
        }
        for (j, run) in self.windows.iter().enumerate() {
            let (before, inside) = entries
                .split_at_checked(run.lo)
                .ok_or(WireError("a window starts beyond its series' entries"))?;
            if before.last().is_some_and(|e| e.ts >= run.start)
                || inside.first().is_some_and(|e| e.ts < run.start)
            {
                return Err(WireError(
                    "a window's first entry does not match its start time",
                ));
            }
            tally.fill(0);
            for e in inside {
                tally[e.id as usize] += u64::from(e.mult);
            }
            if slots
                .iter()
                .zip(&tally)
                .any(|(s, &n)| u64::from(s.counts[j]) != n)
            {
                return Err(WireError(
                    "a window's value counts do not add up to its entries",
                ));
            }
            if tally.iter().filter(|&&n| n > 0).count() as u64 != run.distinct {
                return Err(WireError(
                    "a window's distinct count does not add up to its values",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_table_reuses_ids_and_survives_many_values() {
        let mut t = ValueTable::default();
        let ids: Vec<u32> = (0..100u32)
            .map(|i| t.intern(format!("v{i}").as_bytes(), 1))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(t.find(format!("v{i}").as_bytes()), Some(id));
        }
        for &id in &ids[..50] {
            t.release(id);
        }
        assert_eq!(t.find(b"v3"), None);
        assert_eq!(t.find(b"v73"), Some(ids[73]));
        let again = t.intern(b"new", 1);
        assert!(ids[..50].contains(&again), "freed ids are reused");
    }
}
