//! A running sum of squares that supports removal without drift, exact for decimal amounts.
//!
//! The second moment a variance needs, kept the way [`crate::ExactSum`] keeps the first: a
//! value that is a whole number of 1e-9 below about 9 million (every amount with at most nine
//! decimals) has an exact square in units of 1e-18, summed in an `i128`; any other value's
//! square is split into two doubles that add up to it exactly (Dekker's product) and summed
//! with Neumaier compensation. An `ExactSum` of `x * x` would not do: squares of amounts above
//! about 3000 leave its fixed range, and a rounded square loses what a variance of large values
//! with small spread (prices near 1e6 moving by cents) is made of.

use crate::sum::as_fixed;
use crate::twofold::{two_product, Dd};
use crate::wire::{Reader, Wire, WireError, Writer};

/// 1e18 (exact in an `f64`): the fixed part counts units of 1e-18.
const SCALE: f64 = 1e18;

/// A running sum of squares that adds values and removes sums of them without drift.
///
/// The sum is `fixed / 1e18 + float + compensation`, exactly. `fixed` holds the squares of
/// short decimals (a square is below 8.2e31, so at least two million of the largest, and 1.7e8
/// of values near 1e6, fit before an overflow moves it into the float part); the float part
/// holds the exact products of every other value, compensated.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SquareSum {
    fixed: i128,
    float: f64,
    compensation: f64,
}

impl SquareSum {
    /// Adds the square of `x`.
    #[inline]
    pub fn add(&mut self, x: f64) {
        match as_fixed(x) {
            Some(units) => {
                let u = i128::from(units);
                self.add_fixed(u * u);
            }
            None => {
                let (p, e) = two_product(x, x);
                self.add_float(p);
                self.add_float(e);
            }
        }
    }

    /// Adds another sum of squares (all of its parts).
    #[inline]
    pub fn add_sum(&mut self, other: &SquareSum) {
        self.add_fixed(other.fixed);
        self.add_float(other.float);
        self.add_float(other.compensation);
    }

    /// Removes another sum of squares, previously added.
    #[inline]
    pub fn sub_sum(&mut self, other: &SquareSum) {
        match other.fixed.checked_neg() {
            Some(units) => self.add_fixed(units),
            // Only a sum of exactly i128::MIN units (a damaged state): through the float part.
            None => self.add_units_as_float(other.fixed, -1.0),
        }
        self.add_float(-other.float);
        self.add_float(-other.compensation);
        // Removing what was added leaves the float part and its compensation as `-c` and `c`
        // (zero, in two parts, which the variance would read as a float part present): the
        // same value as one rounded part and its exact error, so an exact cancellation is 0.
        let Dd { hi, lo } = Dd::two_sum(self.float, self.compensation);
        (self.float, self.compensation) = (hi, lo);
    }

    /// Resets to exactly zero (used when a window becomes empty).
    #[inline]
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The parts: units of 1e-18, and the float part with its compensation.
    #[inline]
    pub fn parts(&self) -> (i128, f64, f64) {
        (self.fixed, self.float, self.compensation)
    }

    #[inline]
    fn add_fixed(&mut self, units: i128) {
        match self.fixed.checked_add(units) {
            Some(f) => self.fixed = f,
            None => {
                self.add_units_as_float(self.fixed, 1.0);
                self.fixed = units;
            }
        }
    }

    /// Adds `sign * units` (of 1e-18) to the float part: the whole part as two exact doubles
    /// and the fraction as a double-double, so that an overflow costs about 1e-32, not a
    /// rounding of the total.
    #[cold]
    fn add_units_as_float(&mut self, units: i128, sign: f64) {
        const UNITS: i128 = 1_000_000_000_000_000_000;
        let whole = Dd::from_i128(units / UNITS); // |whole| < 1.8e20: exact in two doubles
        let fraction = Dd::from_i128(units % UNITS).div(SCALE);
        for part in [whole.hi, whole.lo, fraction.hi, fraction.lo] {
            self.add_float(sign * part);
        }
    }

    #[inline]
    fn add_float(&mut self, x: f64) {
        let t = self.float + x;
        if self.float.abs() >= x.abs() {
            self.compensation += (self.float - t) + x;
        } else {
            self.compensation += (x - t) + self.float;
        }
        self.float = t;
    }
}

/// A tag (0: a whole number of units of 1e-18, 1: with a float part), the units as two
/// integers (the high 64 bits signed, the low 64 bits unsigned), then the float part and its
/// compensation if tagged 1.
impl Wire for SquareSum {
    fn put(&self, w: &mut Writer<'_>) {
        let tagged = self.float.to_bits() != 0 || self.compensation.to_bits() != 0;
        w.u(u64::from(tagged));
        w.i((self.fixed >> 64) as i64);
        w.u(self.fixed as u64);
        if tagged {
            w.f(self.float);
            w.f(self.compensation);
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let tag = r.u()?;
        let fixed = (i128::from(r.i()?) << 64) | i128::from(r.u()?);
        let (float, compensation) = match tag {
            0 => (0.0, 0.0),
            1 => (r.f()?, r.f()?),
            _ => return Err(WireError("an unknown kind of sum of squares")),
        };
        Ok(SquareSum {
            fixed,
            float,
            compensation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &SquareSum) -> SquareSum {
        let mut bytes = Vec::new();
        s.put(&mut Writer::new(&mut bytes, 0));
        let mut r = Reader::new(&bytes, 0);
        let back = SquareSum::get(&mut r).expect("decodes");
        assert!(r.rest().is_empty());
        back
    }

    #[test]
    fn decimals_square_exactly() {
        let mut s = SquareSum::default();
        for x in [1_000_000.37, -0.01, 3000.5] {
            s.add(x);
        }
        // 1000000.37^2 + 0.01^2 + 3000.5^2, in units of 1e-18.
        let want =
            1_000_000_370_000_000i128.pow(2) + 10_000_000i128.pow(2) + 3_000_500_000_000i128.pow(2);
        assert_eq!(s.parts(), (want, 0.0, 0.0));
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn other_values_square_exactly_in_two_parts() {
        let x = 1.0 / 3.0;
        let mut s = SquareSum::default();
        s.add(x);
        let (fixed, p, e) = s.parts();
        assert_eq!(fixed, 0);
        assert_eq!(p, x * x);
        // p + e is x^2 exactly: (p - x^2) computed with a fused multiply-add is -e.
        assert_eq!(x.mul_add(x, -p), e);
        assert_eq!(round_trip(&s).parts(), s.parts());
        let mut t = s;
        t.sub_sum(&s);
        assert_eq!(t.parts().1 + t.parts().2, 0.0);
    }

    #[test]
    fn overflow_moves_the_fixed_part_without_rounding_the_total() {
        let x = 9_000_000.0; // 9e15 units, square 8.1e31 units of 1e-18
        let mut s = SquareSum::default();
        let n = 2_200_000; // 1.78e38 units: beyond i128
        for _ in 0..n {
            s.add(x);
        }
        let (fixed, float, compensation) = s.parts();
        let total = fixed as f64 / SCALE + float + compensation;
        let want = n as f64 * x * x;
        assert!(((total - want) / want).abs() < 1e-15, "{total} vs {want}");
        assert!(float != 0.0, "moved into the float part");
        assert_eq!(round_trip(&s).parts(), s.parts());
        // Negative and large units round-trip too.
        let mut neg = SquareSum::default();
        neg.sub_sum(&s);
        assert_eq!(round_trip(&neg).parts(), neg.parts());
    }

    #[test]
    fn unknown_tags_are_an_error() {
        assert!(SquareSum::get(&mut Reader::new(&[2, 0, 0], 0)).is_err());
        assert!(SquareSum::get(&mut Reader::new(&[1, 0, 0, 0], 0)).is_err());
    }
}
