//! The buckets of a series and the blocks over them.

use smallvec::SmallVec;

use super::set::{Union, Value, ValueSet};
use crate::bucket_start;
use crate::plan::SeriesSpec;
use crate::wire::{Reader, Wire, WireError, Writer};

/// The values of every event with one aligned time, or of every bucket of one block.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The aligned time (of a block: its start).
    pub ts: i64,
    /// The values.
    pub values: ValueSet,
}

/// Index of the first of `buckets` with a time at or after `start`.
#[inline]
pub fn first_from(buckets: &[Bucket], start: i64) -> usize {
    buckets.partition_point(|b| b.ts < start)
}

/// Buckets in time order. Dropping the oldest leaves them in place, emptied, until they are
/// half of the storage: the others are not moved at every drop.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    items: SmallVec<[Bucket; 1]>,
    /// Number of dropped buckets at the front of `items`.
    head: usize,
}

impl std::ops::Deref for Buckets {
    type Target = [Bucket];

    fn deref(&self) -> &[Bucket] {
        &self.items[self.head..]
    }
}

impl std::ops::DerefMut for Buckets {
    fn deref_mut(&mut self) -> &mut [Bucket] {
        &mut self.items[self.head..]
    }
}

impl Buckets {
    /// `items`, oldest first.
    pub fn from_items(items: SmallVec<[Bucket; 1]>) -> Self {
        Buckets { items, head: 0 }
    }

    /// Inserts `b` at index `i`.
    pub fn insert(&mut self, i: usize, b: Bucket) {
        self.items.insert(self.head + i, b);
    }

    /// Drops the `n` oldest buckets.
    pub fn drop_front(&mut self, n: usize) {
        for b in &mut self.items[self.head..self.head + n] {
            b.values = ValueSet::default();
        }
        self.head += n;
        if 2 * self.head >= self.items.len() {
            self.items.drain(..self.head);
            self.head = 0;
        }
    }

    /// Bytes allocated for the buckets themselves (not their sets).
    pub fn heap_bytes(&self) -> usize {
        if self.items.spilled() {
            self.items.capacity() * size_of::<Bucket>()
        } else {
            0
        }
    }
}

/// Adds `v` to the entry of `entries` at time `t`, making it if needed.
fn add_at(entries: &mut Buckets, t: i64, v: &mut Value) {
    let i = match entries.last() {
        Some(b) if b.ts < t => entries.len(),
        None => 0,
        Some(_) => first_from(entries, t),
    };
    match entries.get_mut(i) {
        Some(b) if b.ts == t => b.values.insert(v),
        _ => {
            let mut values = ValueSet::default();
            values.insert(v);
            entries.insert(i, Bucket { ts: t, values });
        }
    }
}

/// The width of a block for `spec`: about the square root of the widest window's number of
/// buckets, in buckets.
pub fn block_ms(spec: &SeriesSpec) -> i64 {
    let g = spec.granularity_ms.max(1);
    let buckets = spec.max_window_ms() / g + 1;
    ((buckets as f64).sqrt().ceil() as i64)
        .max(1)
        .saturating_mul(g)
}

/// The buckets of a series and the blocks over them.
#[derive(Debug, Clone)]
pub struct Held {
    /// The buckets, oldest first.
    pub buckets: Buckets,
    /// Per block (time-aligned, `block_ms` wide) of two buckets or more, the union of its
    /// buckets; none until the window unions are built (`block_ms` 0).
    pub blocks: Vec<Bucket>,
    /// The width of a block ([`block_ms`] of the series' spec), or 0 before the blocks are
    /// built.
    pub block_ms: i64,
    /// Buckets before this time have been dropped: a block that starts before it may still
    /// hold their values, so its union is not used.
    pub horizon: i64,
}

impl Held {
    /// No buckets, no blocks.
    pub fn new() -> Self {
        Held {
            buckets: Buckets::default(),
            blocks: Vec::new(),
            block_ms: 0,
            horizon: i64::MIN,
        }
    }

    /// The start of the block holding aligned time `t`.
    #[inline]
    pub fn block_of(&self, t: i64) -> i64 {
        bucket_start(t, self.block_ms)
    }

    /// Index of the first bucket with a time at or after `start`.
    #[inline]
    pub fn first_from(&self, start: i64) -> usize {
        first_from(&self.buckets, start)
    }

    /// Builds the blocks, `block_ms` wide, from the buckets.
    pub fn build_blocks(&mut self, block_ms: i64) {
        self.block_ms = block_ms;
        self.blocks.clear();
        let mut i = 0;
        while let Some(b) = self.buckets.get(i) {
            let block = self.block_of(b.ts);
            let end = self.first_from(block.saturating_add(block_ms));
            if end - i > 1 {
                let values = self.union_of(i, end);
                self.blocks.push(Bucket { ts: block, values });
            }
            i = end;
        }
    }

    /// Adds `v` to the bucket at aligned time `t` and to its block. A block's union is made
    /// when it comes to hold a second bucket (a block of one bucket would only copy it).
    pub fn add(&mut self, t: i64, v: &mut Value) {
        add_at(&mut self.buckets, t, v);
        if self.block_ms == 0 {
            return;
        }
        let block = self.block_of(t);
        let j = first_from(&self.blocks, block);
        match self.blocks.get_mut(j) {
            Some(b) if b.ts == block => b.values.insert(v),
            _ => {
                let lo = self.first_from(block);
                let hi = self.first_from(block.saturating_add(self.block_ms));
                if hi - lo > 1 {
                    let values = self.union_of(lo, hi);
                    self.blocks.insert(j, Bucket { ts: block, values });
                }
            }
        }
    }

    /// The union of buckets `lo..hi`, bucket by bucket.
    fn union_of(&self, lo: usize, hi: usize) -> ValueSet {
        let mut union = Union::default();
        for b in &self.buckets[lo..hi] {
            union.add(&b.values);
        }
        union.finish()
    }

    /// The union of buckets `lo..hi`: whole blocks where they lie inside, else bucket by
    /// bucket.
    pub fn union(&self, lo: usize, hi: usize) -> ValueSet {
        let mut union = Union::default();
        let mut i = lo;
        while i < hi {
            match self.whole_block(i, hi) {
                Some((block, end)) => {
                    union.add(block);
                    i = end;
                }
                None => {
                    union.add(&self.buckets[i].values);
                    i += 1;
                }
            }
        }
        union.finish()
    }

    /// The union of the block that starts at bucket `i`, and the index after its last
    /// bucket, if that is at most `hi`, it holds more than one bucket (else it has no union)
    /// and no dropped one.
    fn whole_block(&self, i: usize, hi: usize) -> Option<(&ValueSet, usize)> {
        if self.block_ms == 0 {
            return None;
        }
        let start = self.block_of(self.buckets[i].ts);
        let first = i == 0 || self.buckets[i - 1].ts < start;
        if !first || start < self.horizon {
            return None;
        }
        let end = self.first_from(start.saturating_add(self.block_ms));
        if end > hi || end - i < 2 {
            return None;
        }
        let block = self.blocks.get(first_from(&self.blocks, start))?;
        (block.ts == start).then_some((&block.values, end))
    }

    /// Drops buckets older than `horizon`, and blocks that hold none of the others.
    pub fn evict(&mut self, horizon: i64) {
        let n = self.first_from(horizon);
        if n > 0 {
            self.buckets.drop_front(n);
        }
        let n = first_from(
            &self.blocks,
            horizon.saturating_sub(self.block_ms).saturating_add(1),
        );
        if n > 0 {
            self.blocks.drain(..n);
        }
        self.horizon = self.horizon.max(horizon);
    }
}

/// Time, values.
impl Wire for Bucket {
    fn put(&self, w: &mut Writer<'_>) {
        w.ts(self.ts);
        self.values.put(w);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Bucket {
            ts: r.ts()?,
            values: ValueSet::get(r)?,
        })
    }
}
