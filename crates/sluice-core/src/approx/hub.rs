//! An [`ApproxSeries`] as the value sets of one via value of a relation feature
//! (`linked_distinct_count_approx`, [`crate::relation`]): one window and no outputs; the
//! relation reads the window's union, to merge it with those of the entity's other via values.

use std::borrow::Cow;

use super::held::block_ms;
use super::set::{Value, ValueSet};
use super::ApproxSeries;
use crate::bucket_start;
use crate::plan::SeriesSpec;

impl ApproxSeries {
    /// Adds `v` at `ts`. Until the first read the series holds buckets only, as a decoded one
    /// (a series is built from a via value's stored events this way); after, the blocks and
    /// window unions follow, as at [`ApproxSeries::observe`].
    pub(crate) fn add(&mut self, spec: &SeriesSpec, ts: i64, v: &mut Value) {
        let t = bucket_start(ts, spec.granularity_ms);
        if self.windows.is_empty() {
            self.held.add(t, v);
            return;
        }
        if self.in_order(t) {
            self.slide(spec, t);
        }
        self.held.add(t, v);
        // Out of order, `t` is before `at` (`at` is at or after every bucket).
        for (w, window) in spec.windows.iter().zip(self.windows.iter_mut()) {
            if t >= self.at.saturating_sub(w.width_ms) {
                window.add(t, v);
            }
        }
    }

    /// The union of the buckets of the first window of `spec` for a read at `ts`: those with
    /// times in `[bucket(ts) - width, bucket(ts)]`. A read in time order moves the window
    /// union on to it and borrows it; else it is the window's union if that covers the same
    /// buckets, or a union of blocks and buckets merged now.
    pub(crate) fn window_set(&mut self, spec: &SeriesSpec, ts: i64) -> Cow<'_, ValueSet> {
        let t = bucket_start(ts, spec.granularity_ms);
        if self.in_order(t) {
            self.slide(spec, t);
            return self.windows.first().map_or_else(
                || Cow::Owned(ValueSet::default()),
                |w| Cow::Borrowed(w.union()),
            );
        }
        if self.held.block_ms == 0 {
            // Not read yet, and read out of order: the blocks first, so that a range is
            // merged from them.
            self.held.build_blocks(block_ms(spec));
        }
        let held = &self.held;
        let width = spec.max_window_ms();
        let end = held.buckets.partition_point(|b| b.ts <= t);
        let start = held.first_from(t.saturating_sub(width));
        match self.windows.first() {
            Some(window)
                if end == held.buckets.len()
                    && start == held.first_from(self.at.saturating_sub(width)) =>
            {
                Cow::Borrowed(window.union())
            }
            _ => Cow::Owned(held.union(start, end.max(start))),
        }
    }

    /// Drops the buckets before `horizon`. The window unions are dropped too (and rebuilt at
    /// the next read) when a window may hold some of their values: a union has no removal,
    /// and sliding rebuilds it only when a bucket still held leaves it.
    pub(crate) fn evict_before(&mut self, spec: &SeriesSpec, horizon: i64) {
        self.held.evict(horizon);
        if self.at.saturating_sub(spec.max_window_ms()) < horizon {
            self.windows.clear();
        }
    }
}
