//! Approximate distinct-count registers over sliding event-time windows
//! (`distinct_count_approx`): HyperLogLog over the granularity buckets of the window.
//!
//! # Value sets
//!
//! Values are hashed by their canonical bytes with xxh3 (64 bits). A set of values holds up
//! to [`EXACT`] (384) hashes exactly, ascending; past that it becomes a HyperLogLog sketch
//! from [`datasketches`] (Apache DataSketches): 2^12 registers of one byte (`HLL_8`, 4 KiB).
//! 384 is where a DataSketches sketch itself turns from a set of coupons into its register
//! array, and the hashes take about as much room (3 KiB); below, hashes can be enumerated,
//! so adding a small set to a sketch is cheap, and they count exactly. A sketch is fed the 8
//! little-endian bytes of a value's xxh3 hash (the crate takes no precomputed hash; it hashes
//! them with MurmurHash3, seed 9001, as every DataSketches library does): both are fixed
//! algorithms, so stored sketches stay valid across versions.
//!
//! Why this crate: an Apache Software Foundation project, without dependencies and denying
//! unsafe code, whose sketches serialize to the DataSketches binary format (versioned, shared
//! with the Java, C++ and Python libraries, checked on reading), and whose composite estimate
//! reads only the registers. The other candidates measured: `cardinality-estimator`
//! (Cloudflare) is smaller for tiny sets (8 bytes) but is built on tagged pointers and unsafe
//! code, and its only serialization is serde of the raw tagged word (pointer bits included)
//! and an unchecked register array; `hyperloglogplus` serializes serde-derived internal
//! structs (no stable format), counts through `&mut self` and carries a `HashSet` per sketch.
//!
//! # Layout
//!
//! A series keeps one value set per bucket (aligned event time), ordered by time, and one per
//! block: blocks are time-aligned runs of about √n buckets (n: the buckets of the widest
//! window; 38 for a day in minutes), each the union of its buckets. Each window keeps the
//! union of its buckets, `[at - width, at]` where `at` is the bucket of the newest event (or
//! read) in time order, and the union of the buckets from the end of the block holding
//! `at - width` on (its *middle*).
//!
//! An event in time order adds its value to its bucket, its block and each window's unions,
//! and reads each window's union: O(1). A union has no removal, so when `at` moves on and a
//! bucket leaves a window, the window's union is rebuilt: the middle and the at most √n
//! buckets before it. The middle itself is rebuilt from blocks when the window's start enters
//! the next block, once per √n buckets. An event before `at` (out of order) is added to its
//! bucket, its block and the unions whose range holds it (a union only grows), and its own
//! value is the union of its range, from whole blocks and the buckets at both ends. Blocks
//! and window unions are derived: not stored, and rebuilt at the first event in time order
//! after a restore.
//!
//! # Error
//!
//! - Up to 384 distinct values in a window the value is exact (but for two values with one
//!   64-bit hash).
//! - Beyond, it is the composite HyperLogLog estimate of the registers, relative standard
//!   error 1.04 / √4096 ≈ 1.6%. Measured (test `large_sets_stay_within_the_error_bound`) on
//!   windows that fill and slide through 400 to 100 000 values: at most 3.7% off, 1.2% in
//!   the mean; the test fails beyond 6% (3.7 standard errors).
//! - The value is a function of the set of values in the window alone: not of event order,
//!   out-of-order arrival, buckets or restores. Registers are a maximum per register, and
//!   the composite estimate (unlike DataSketches' default HIP estimate) reads only them: the
//!   number of zero registers and the sums of 2^-register, which are exact in an f64. Replays
//!   from a Redis log and restores from checkpoints give the same values; test
//!   `large_values_depend_on_the_set_alone` checks it against one sketch fed the window.
//!
//! # Cost and memory
//!
//! Measured (`benches/approx.rs`), per observe: 0.56 µs for a small key (3 values, an event
//! every 5 minutes, windows of an hour and a day in minutes: every event opens a bucket, and
//! both windows lose one); 0.68 µs for a global key with 100 000 events a day, each a new
//! value (a day in minutes: 1440 buckets of 70 values); 0.35 µs for one with a million events
//! a day over 100 000 values (buckets of 660 values, each a register array); 1.7 µs for a key
//! with a new value every minute (each event rebuilds its window around a sketch of the
//! day); 2.7 µs for the 100 000-a-day key when every 100th event is a minute late (a late
//! event merges its range from blocks and buckets: about 200 µs).
//!
//! A set takes at most about 4.2 KiB (3 KiB of hashes, or 4 KiB of registers), so a series at
//! most that many times its buckets, blocks and twice its windows. Measured for one window of
//! a day in minutes: 184 bytes for one value; 392 bytes for 10 values in one bucket, 1.2 KiB
//! a minute apart; 8.4 KiB for 1000 values in one bucket, 54 KiB a minute apart; 1.4 MiB and
//! 6.1 MiB for the two global keys above.
//!
//! # Binary form
//!
//! [`VERSION`], then the buckets: each its time and its set, either `0` and the hashes (8
//! little-endian bytes each, ascending, as one byte string) or `1` and the DataSketches image
//! of the sketch (as one byte string). Decoding checks every part, the images included
//! (coupons distinct, registers within six bits, counts derived from the registers
//! recomputed), so damaged bytes give a [`WireError`], never a panic later.
//!
//! - `set`: value sets, their unions and their binary form;
//! - `held`: the buckets and the blocks over them;
//! - `hub`: the same series as a relation feature's hub (`linked_distinct_count_approx`,
//!   [`crate::relation`]): one window, whose union is read rather than its estimate.

mod held;
mod hub;
mod set;

use smallvec::SmallVec;

use crate::bucket_start;
use crate::plan::SeriesSpec;
use crate::value::FeatureValue;
use crate::wire::{Reader, Wire, WireError, Writer};
use crate::Agg;
use held::{block_ms, Bucket, Buckets, Held};
pub use set::EXACT;
pub(crate) use set::{Union, Value, ValueSet};

/// The first item of the binary form: a new tag for a new encoding.
pub const VERSION: u64 = 1;

/// The unions of one window, for the series' time `at`.
#[derive(Debug, Clone)]
struct Window {
    /// The union of the buckets in `[at - width, at]`, unless no bucket lies before the
    /// middle (`None`): the middle is then the window's union (and is not copied).
    set: Option<ValueSet>,
    /// The end of the block holding `at - width`.
    middle_from: i64,
    /// The union of the buckets in `[middle_from, at]`.
    middle: ValueSet,
}

impl Window {
    /// The unions of a window of `width` for time `t`, at or after every bucket.
    fn new(held: &Held, width: i64, t: i64) -> Self {
        let start = t.saturating_sub(width);
        let middle_from = held.block_of(start).saturating_add(held.block_ms);
        let mut window = Window {
            set: None,
            middle_from,
            middle: held.union(held.first_from(middle_from), held.buckets.len()),
        };
        window.rebuild(held, start);
        window
    }

    /// The union of the window's buckets.
    #[inline]
    fn union(&self) -> &ValueSet {
        self.set.as_ref().unwrap_or(&self.middle)
    }

    /// Rebuilds the window's union from the buckets from `start` to the middle, and the
    /// middle.
    fn rebuild(&mut self, held: &Held, start: i64) {
        let lo = held.first_from(start);
        let hi = held.first_from(self.middle_from).max(lo);
        self.set = (hi > lo).then(|| {
            let mut union = Union::default();
            for b in &held.buckets[lo..hi] {
                union.add(&b.values);
            }
            union.add(&self.middle);
            union.finish()
        });
    }

    /// Moves the window of `width` on from time `at` to `t` (later, at or after every
    /// bucket).
    fn slide(&mut self, held: &Held, width: i64, at: i64, t: i64) {
        let (old, start) = (at.saturating_sub(width), t.saturating_sub(width));
        let middle_from = held.block_of(start).saturating_add(held.block_ms);
        let moved = middle_from != self.middle_from;
        if moved {
            self.middle_from = middle_from;
            self.middle = held.union(held.first_from(middle_from), held.buckets.len());
        }
        // A new middle may now hold all of the window's buckets.
        if moved || held.first_from(start) > held.first_from(old) {
            self.rebuild(held, start);
        }
    }

    /// Adds `v`, of a bucket at `t` in the window's range.
    #[inline]
    fn add(&mut self, t: i64, v: &mut Value) {
        if t >= self.middle_from {
            self.middle.insert(v);
        }
        match &mut self.set {
            Some(set) => set.insert(v),
            None if t >= self.middle_from => {}
            None => {
                let mut set = self.middle.clone();
                set.insert(v);
                self.set = Some(set);
            }
        }
    }
}

/// Approximate distinct-count registers of one key and field: every window of a
/// [`SeriesSpec`] of kind approx.
#[derive(Debug, Clone)]
pub struct ApproxSeries {
    held: Held,
    /// The aligned time the window unions are for: at or after every bucket.
    at: i64,
    /// Per window, its unions; none until the first event or read in time order (a new or
    /// decoded series).
    windows: SmallVec<[Window; 1]>,
}

impl ApproxSeries {
    /// An empty series for `spec` (its unions are made at the first event).
    pub fn new(_spec: &SeriesSpec) -> Self {
        Self::empty()
    }

    /// A series without buckets or unions.
    fn empty() -> Self {
        ApproxSeries {
            held: Held::new(),
            at: i64::MIN,
            windows: SmallVec::new(),
        }
    }

    /// The newest bucket time, if any.
    pub fn newest(&self) -> Option<i64> {
        self.held.buckets.last().map(|b| b.ts)
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        self.held.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.held.buckets.is_empty()
    }

    /// Bytes of memory the series holds: itself and what it allocates (within the allocator's
    /// rounding).
    pub fn memory(&self) -> usize {
        let sets = self.held.buckets.iter().chain(&self.held.blocks);
        let windows = self
            .windows
            .iter()
            .flat_map(|w| w.set.iter().chain([&w.middle]));
        size_of::<Self>()
            + self.held.buckets.heap_bytes()
            + self.held.blocks.capacity() * size_of::<Bucket>()
            + if self.windows.spilled() {
                self.windows.capacity() * size_of::<Window>()
            } else {
                0
            }
            + sets
                .map(|b| &b.values)
                .chain(windows)
                .map(ValueSet::heap_bytes)
                .sum::<usize>()
    }

    /// Adds an event at `ts` with value `value` (its canonical bytes) and writes the
    /// approximate distinct counts of its windows into `out`. `floor` as for
    /// [`crate::NumericSeries::observe`].
    #[inline(never)] // off the path of pipelines without them
    pub fn observe(
        &mut self,
        spec: &SeriesSpec,
        ts: i64,
        value: &[u8],
        floor: i64,
        out: &mut [FeatureValue],
    ) {
        let g = spec.granularity_ms;
        let t = bucket_start(ts, g);
        let mut v = Value::new(value);
        if self.in_order(t) {
            self.slide(spec, t);
            self.held.add(t, &mut v);
            for (w, window) in spec.windows.iter().zip(self.windows.iter_mut()) {
                window.add(t, &mut v);
                write(&w.outputs, window.union().estimate(), out);
            }
        } else {
            self.held.add(t, &mut v);
            for (w, window) in spec.windows.iter().zip(self.windows.iter_mut()) {
                if t >= self.at.saturating_sub(w.width_ms) {
                    window.add(t, &mut v);
                }
            }
            self.write_at(spec, t, out);
        }
        self.held
            .evict(bucket_start(floor, g).saturating_sub(spec.max_window_ms()));
    }

    /// Writes the approximate distinct counts its windows have for an event at `ts` that is
    /// not added: as [`ApproxSeries::peek`], but an event in time order moves the window
    /// unions on to it instead of merging its range.
    #[inline(never)] // off the path of pipelines without them
    pub fn read_at(&mut self, spec: &SeriesSpec, ts: i64, out: &mut [FeatureValue]) {
        let t = bucket_start(ts, spec.granularity_ms);
        if !self.in_order(t) {
            return self.write_at(spec, t, out);
        }
        self.slide(spec, t);
        for (w, window) in spec.windows.iter().zip(&self.windows) {
            write(&w.outputs, window.union().estimate(), out);
        }
    }

    /// Writes the approximate distinct counts its windows would have for an event at `at`
    /// without adding one: the values of buckets with times in `[bucket(at) - width,
    /// bucket(at)]`. Read-only: a window's union when it covers those buckets, else a union
    /// of blocks and buckets.
    pub fn peek(&self, spec: &SeriesSpec, at: i64, out: &mut [FeatureValue]) {
        self.write_at(spec, bucket_start(at, spec.granularity_ms), out);
    }

    /// Whether aligned time `t` is at or after the newest bucket and the time of the window
    /// unions, which can then move on to it.
    fn in_order(&self, t: i64) -> bool {
        self.newest().is_none_or(|newest| t >= newest) && (self.windows.is_empty() || t >= self.at)
    }

    /// Moves the window unions on to aligned time `t` (in order), building them (and the
    /// blocks) first if there are none.
    fn slide(&mut self, spec: &SeriesSpec, t: i64) {
        if self.windows.is_empty() {
            self.held.build_blocks(block_ms(spec));
            let held = &self.held;
            self.windows = spec
                .windows
                .iter()
                .map(|w| Window::new(held, w.width_ms, t))
                .collect();
        } else if t > self.at {
            for (w, window) in spec.windows.iter().zip(self.windows.iter_mut()) {
                window.slide(&self.held, w.width_ms, self.at, t);
            }
        }
        self.at = t;
    }

    /// Writes each window's estimate over the buckets with times in `[t - width, t]`: its
    /// union's when that covers exactly those buckets, else a union merged now.
    fn write_at(&self, spec: &SeriesSpec, t: i64, out: &mut [FeatureValue]) {
        let held = &self.held;
        let end = held.buckets.partition_point(|b| b.ts <= t);
        for (j, w) in spec.windows.iter().enumerate() {
            let start = held.first_from(t.saturating_sub(w.width_ms));
            let covered = end == held.buckets.len()
                && start == held.first_from(self.at.saturating_sub(w.width_ms));
            let estimate = match self.windows.get(j) {
                Some(window) if covered => window.union().estimate(),
                _ => held.union(start, end.max(start)).estimate(),
            };
            write(&w.outputs, estimate, out);
        }
    }
}

/// Writes `estimate` to every approximate distinct-count output of a window.
#[inline]
fn write(outputs: &[(Agg, usize)], estimate: u64, out: &mut [FeatureValue]) {
    for &(agg, slot) in outputs {
        if agg == Agg::DistinctCountApprox {
            out[slot] = FeatureValue::Int(estimate);
        }
    }
}

/// [`VERSION`], then the buckets; blocks and window unions are rebuilt, not stored.
/// Decoding checks the buckets' inner consistency (see [`ApproxSeries::check`] for the check
/// against the plan).
impl Wire for ApproxSeries {
    fn put(&self, w: &mut Writer<'_>) {
        w.u(VERSION);
        w.seq(&self.held.buckets);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        if r.u()? != VERSION {
            return Err(WireError(
                "approximate distinct-count registers of an unknown version",
            ));
        }
        let buckets: SmallVec<[Bucket; 1]> = r.seq()?;
        if buckets.windows(2).any(|p| p[0].ts >= p[1].ts) {
            return Err(WireError("buckets out of time order"));
        }
        let mut series = ApproxSeries::empty();
        series.held.buckets = Buckets::from_items(buckets);
        Ok(series)
    }
}

impl ApproxSeries {
    /// Checks decoded registers against the series they are for: bucket times aligned to the
    /// granularity, and as many window unions as windows (a decoded series has none yet).
    /// (Their inner consistency is checked when they are decoded.)
    pub fn check(&self, spec: &SeriesSpec) -> Result<(), WireError> {
        if !self.windows.is_empty() && self.windows.len() != spec.windows.len() {
            return Err(WireError(
                "an approximate distinct series has another number of windows than in the plan",
            ));
        }
        let g = spec.granularity_ms;
        if self
            .held
            .buckets
            .iter()
            .any(|b| bucket_start(b.ts, g) != b.ts)
        {
            return Err(WireError(
                "a bucket time is not aligned to the series' granularity",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
