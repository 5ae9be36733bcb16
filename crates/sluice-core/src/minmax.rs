//! Monotonic deques: the minimum (or maximum) of a sliding window in amortised O(1).
//!
//! The deque holds `(bucket time, value)` for the buckets that are the minimum of everything
//! after them; values strictly increase from front to back for a minimum (decrease for a
//! maximum), so the front is the window's minimum.

use crate::deque::SmallDeque;
use crate::wire::{Reader, Wire, WireError, Writer};

/// Which extreme a [`MonoDeque`] tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extreme {
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
}

impl Extreme {
    /// Whether `a` is at least as good as `b` (so `b` can never be the answer while `a` lives).
    #[inline]
    fn dominates(self, a: f64, b: f64) -> bool {
        match self {
            Extreme::Min => a <= b,
            Extreme::Max => a >= b,
        }
    }
}

/// A monotonic deque over the buckets of a running window.
#[derive(Debug, Clone, Default)]
pub struct MonoDeque {
    items: SmallDeque<[(i64, f64); 2]>,
}

impl MonoDeque {
    /// The extreme value of the window, if it is not empty.
    #[inline]
    pub fn front(&self) -> Option<f64> {
        self.items.front().map(|&(_, v)| v)
    }

    /// The bucket time and value of the window's extreme, if the window is not empty.
    #[inline]
    pub fn front_entry(&self) -> Option<(i64, f64)> {
        self.items.front().copied()
    }

    /// Records that the newest bucket `ts` (no bucket after it) now has extreme `v`.
    #[inline]
    pub fn push_newest(&mut self, which: Extreme, ts: i64, v: f64) {
        if let Some(&(bt, bv)) = self.items.back() {
            if bt == ts && which.dominates(bv, v) {
                return;
            }
        }
        while let Some(&(_, bv)) = self.items.back() {
            if which.dominates(v, bv) {
                self.items.pop_back();
            } else {
                break;
            }
        }
        self.items.push_back((ts, v));
    }

    /// Records that bucket `ts`, somewhere inside the window, now has extreme `v` (it only ever
    /// improves: buckets merge values, they never lose one while in the window).
    pub fn insert(&mut self, which: Extreme, ts: i64, v: f64) {
        let mut q = self.items.partition_point(|&(t, _)| t < ts);
        if let Some(&(t, old)) = self.items.get(q) {
            if t == ts {
                if which.dominates(old, v) {
                    return;
                }
                self.items.remove(q);
            }
        }
        // `q` is now the first bucket after `ts`: the extreme of everything after it.
        if let Some(&(_, after)) = self.items.get(q) {
            if which.dominates(after, v) {
                return;
            }
        }
        let mut r = q;
        while r > 0 && which.dominates(v, self.items[r - 1].1) {
            r -= 1;
        }
        self.items.drain(r..q);
        q = r;
        self.items.insert(q, (ts, v));
    }

    /// Bucket `ts` left the window (from the front).
    #[inline]
    pub fn expire(&mut self, ts: i64) {
        if self.items.front().is_some_and(|&(t, _)| t == ts) {
            self.items.pop_front();
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Whether the deque holds nothing.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The bucket times held, front first (for checking decoded registers).
    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        self.items.as_slice().iter().map(|&(t, _)| t)
    }
}

/// Its items: bucket time and value.
impl Wire for MonoDeque {
    fn put(&self, w: &mut Writer<'_>) {
        w.seq(self.items.as_slice());
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(MonoDeque { items: r.deque()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn matches_brute_force_with_inserts() {
        let mut x: u64 = 7;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for which in [Extreme::Min, Extreme::Max] {
            let mut mono = MonoDeque::default();
            let mut model: BTreeMap<i64, f64> = BTreeMap::new();
            let mut newest = 0i64;
            for _ in 0..5000 {
                let v = (next() % 50) as f64;
                let r = next() % 10;
                if r < 6 || model.is_empty() {
                    newest += (next() % 3) as i64;
                    let e = model.entry(newest).or_insert(v);
                    *e = if which == Extreme::Min {
                        e.min(v)
                    } else {
                        e.max(v)
                    };
                    mono.push_newest(which, newest, *e);
                } else if r < 8 {
                    let lo = *model.keys().next().expect("non-empty");
                    let ts = lo + (next() as i64 % (newest - lo + 1));
                    let e = model.entry(ts).or_insert(v);
                    *e = if which == Extreme::Min {
                        e.min(v)
                    } else {
                        e.max(v)
                    };
                    mono.insert(which, ts, *e);
                } else {
                    let (&ts, _) = model.iter().next().expect("non-empty");
                    model.remove(&ts);
                    mono.expire(ts);
                }
                let want = model.values().copied().reduce(|a, b| {
                    if which == Extreme::Min {
                        a.min(b)
                    } else {
                        a.max(b)
                    }
                });
                assert_eq!(mono.front(), want);
            }
        }
    }
}
