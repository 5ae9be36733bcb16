//! A double-ended queue that keeps its first few items inline.
//!
//! Most keys of a real stream are cold: a handful of events in their windows. Keeping those
//! inline in the key's state saves a pointer chase (a cache miss) per series per event; hot keys
//! spill to the heap as usual. Items are contiguous (a `SmallVec` with a moving head), so ranges
//! are plain slices; `pop_front` is amortised O(1) by compacting once the head passes half.

use std::ops::{Index, IndexMut, Range, RangeBounds};

use smallvec::{Array, SmallVec};

/// A deque of `Copy` items with inline storage for `A::size()` of them.
#[derive(Clone)]
pub struct SmallDeque<A: Array>
where
    A::Item: Copy,
{
    buf: SmallVec<A>,
    head: usize,
}

impl<A: Array> SmallDeque<A>
where
    A::Item: Copy,
{
    /// An empty deque.
    pub fn new() -> Self {
        SmallDeque {
            buf: SmallVec::new(),
            head: 0,
        }
    }

    /// A deque holding `items`, front first.
    pub fn from_items(items: SmallVec<A>) -> Self {
        SmallDeque {
            buf: items,
            head: 0,
        }
    }

    /// The items, front first.
    #[inline]
    pub fn as_slice(&self) -> &[A::Item] {
        &self.buf[self.head..]
    }

    /// Number of items.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether there are no items.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first item.
    #[inline]
    pub fn front(&self) -> Option<&A::Item> {
        self.buf.get(self.head)
    }

    /// The last item.
    #[inline]
    pub fn back(&self) -> Option<&A::Item> {
        if self.is_empty() {
            None
        } else {
            self.buf.last()
        }
    }

    /// The last item, mutably.
    #[inline]
    pub fn back_mut(&mut self) -> Option<&mut A::Item> {
        if self.is_empty() {
            None
        } else {
            self.buf.last_mut()
        }
    }

    /// Item `i` from the front.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&A::Item> {
        self.buf.get(self.head + i)
    }

    /// Appends at the back.
    #[inline]
    pub fn push_back(&mut self, item: A::Item) {
        self.buf.push(item);
    }

    /// Removes the last item.
    #[inline]
    pub fn pop_back(&mut self) -> Option<A::Item> {
        if self.is_empty() {
            None
        } else {
            self.buf.pop()
        }
    }

    /// Removes the first item.
    #[inline]
    pub fn pop_front(&mut self) -> Option<A::Item> {
        let item = *self.buf.get(self.head)?;
        self.head += 1;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head >= 16 && 2 * self.head >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        Some(item)
    }

    /// The item at position `i` from the front, mutably.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut A::Item> {
        self.buf.get_mut(self.head + i)
    }

    /// Inserts at position `i` from the front.
    #[inline]
    pub fn insert(&mut self, i: usize, item: A::Item) {
        self.buf.insert(self.head + i, item);
    }

    /// Removes the item at position `i` from the front.
    #[inline]
    pub fn remove(&mut self, i: usize) -> A::Item {
        self.buf.remove(self.head + i)
    }

    /// Removes the items in `range` (positions from the front).
    pub fn drain(&mut self, range: Range<usize>) {
        self.buf
            .drain(self.head + range.start..self.head + range.end);
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }

    /// The items in `range` (positions from the front).
    #[inline]
    pub fn range<R: RangeBounds<usize>>(&self, range: R) -> std::slice::Iter<'_, A::Item> {
        let s = self.as_slice();
        let start = match range.start_bound() {
            std::ops::Bound::Included(&a) => a,
            std::ops::Bound::Excluded(&a) => a + 1,
            std::ops::Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            std::ops::Bound::Included(&b) => b + 1,
            std::ops::Bound::Excluded(&b) => b,
            std::ops::Bound::Unbounded => s.len(),
        };
        s[start..end].iter()
    }

    /// The first position whose item does not satisfy `pred` (items must be partitioned).
    #[inline]
    pub fn partition_point(&self, pred: impl FnMut(&A::Item) -> bool) -> usize {
        self.as_slice().partition_point(pred)
    }
}

impl<A: Array> Default for SmallDeque<A>
where
    A::Item: Copy,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Array> std::fmt::Debug for SmallDeque<A>
where
    A::Item: Copy + std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<A: Array> Index<usize> for SmallDeque<A>
where
    A::Item: Copy,
{
    type Output = A::Item;

    #[inline]
    fn index(&self, i: usize) -> &A::Item {
        &self.buf[self.head + i]
    }
}

impl<A: Array> IndexMut<usize> for SmallDeque<A>
where
    A::Item: Copy,
{
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut A::Item {
        &mut self.buf[self.head + i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn behaves_like_vecdeque() {
        let mut d: SmallDeque<[u32; 2]> = SmallDeque::new();
        let mut m: VecDeque<u32> = VecDeque::new();
        let mut x: u64 = 3;
        for i in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (x >> 33) % 6 {
                0 | 1 => {
                    d.push_back(i);
                    m.push_back(i);
                }
                2 => assert_eq!(d.pop_front(), m.pop_front()),
                3 if !m.is_empty() => {
                    let at = (x >> 40) as usize % (m.len() + 1);
                    d.insert(at, i);
                    m.insert(at, i);
                }
                4 if !m.is_empty() => {
                    let at = (x >> 40) as usize % m.len();
                    assert_eq!(d.remove(at), m.remove(at).expect("in range"));
                }
                _ => assert_eq!(d.pop_back(), m.pop_back()),
            }
            assert_eq!(d.len(), m.len());
            assert_eq!(d.front(), m.front());
            assert_eq!(d.back(), m.back());
            if !m.is_empty() {
                let mid = m.len() / 2;
                assert_eq!(d[mid], m[mid]);
                assert!(d.range(mid..).copied().eq(m.range(mid..).copied()));
            }
        }
    }
}
