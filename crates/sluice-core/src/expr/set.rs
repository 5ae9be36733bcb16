//! The constant elements of an `in` list, by type, for membership tests without allocation.

use rustc_hash::FxHashSet;

use super::compile::{Const, Node};
use super::value::Value;

/// Lists up to this long are scanned; longer ones are searched (numbers) or hashed (strings).
const SCAN: usize = 8;

/// The constant elements of an `in` list.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ConstSet {
    /// Sorted by `total_cmp`, no `-0`, no duplicates.
    nums: Vec<f64>,
    strs: Strs,
    has_false: bool,
    has_true: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Strs {
    Few(Vec<Box<str>>),
    Many(FxHashSet<Box<str>>),
}

impl Default for Strs {
    fn default() -> Strs {
        Strs::Few(Vec::new())
    }
}

impl ConstSet {
    /// Splits compiled list elements into the constant ones (a set) and the others. A `null`
    /// constant is dropped: it never matches.
    pub(crate) fn split(items: Vec<Node>) -> (ConstSet, Vec<Node>) {
        let mut set = ConstSet::default();
        let mut strs = Vec::new();
        let mut rest = Vec::new();
        for item in items {
            match item {
                // +0 turns -0 into 0, so that a sorted search finds both.
                Node::Const(Const::Num(n)) => set.nums.push(n + 0.0),
                Node::Const(Const::Str(s)) => strs.push(s),
                Node::Const(Const::Bool(b)) => {
                    set.has_true |= b;
                    set.has_false |= !b;
                }
                Node::Const(Const::Null) => {}
                other => rest.push(other),
            }
        }
        set.nums.sort_by(f64::total_cmp);
        set.nums.dedup();
        strs.sort();
        strs.dedup();
        set.strs = if strs.len() <= SCAN {
            Strs::Few(strs)
        } else {
            Strs::Many(strs.into_iter().collect())
        };
        (set, rest)
    }

    /// Whether `v` equals an element of its own type.
    #[inline]
    pub(crate) fn contains(&self, v: Value<'_>) -> bool {
        match v {
            Value::Num(n) => {
                if self.nums.len() <= SCAN {
                    self.nums.contains(&n)
                } else {
                    let n = n + 0.0;
                    self.nums.binary_search_by(|p| p.total_cmp(&n)).is_ok()
                }
            }
            Value::Str(s) => match &self.strs {
                Strs::Few(few) => few.iter().any(|p| **p == *s),
                Strs::Many(many) => many.contains(s),
            },
            Value::Bool(true) => self.has_true,
            Value::Bool(false) => self.has_false,
            Value::Missing | Value::Other => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: Vec<Const>) -> ConstSet {
        let (set, rest) = ConstSet::split(items.into_iter().map(Node::Const).collect());
        assert!(rest.is_empty());
        set
    }

    #[test]
    fn short_and_long_lists_find_the_same_elements() {
        for n in [1usize, SCAN, SCAN + 1, 40] {
            let nums = set((0..n).map(|i| Const::Num(i as f64 - 1.0)).collect());
            let strs = set((0..n).map(|i| Const::Str(format!("s{i}").into())).collect());
            for i in 0..n {
                assert!(nums.contains(Value::Num(i as f64 - 1.0)), "{n} {i}");
                assert!(strs.contains(Value::Str(&format!("s{i}"))), "{n} {i}");
            }
            assert!(nums.contains(Value::Num(-0.0)) == (n > 1), "{n}: -0 is 0");
            assert!(!nums.contains(Value::Num(0.5)) && !nums.contains(Value::Str("0")));
            assert!(!strs.contains(Value::Str("s")) && !strs.contains(Value::Num(0.0)));
            assert!(!strs.contains(Value::Missing) && !strs.contains(Value::Other));
        }
        let bools = set(vec![Const::Bool(true), Const::Null]);
        assert!(bools.contains(Value::Bool(true)) && !bools.contains(Value::Bool(false)));
    }
}
