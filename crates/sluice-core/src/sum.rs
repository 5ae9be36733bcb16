//! A running sum that supports removal without drift, and is exact for decimal amounts.

use crate::twofold::Dd;
use crate::wire::{Reader, Wire, WireError, Writer};

/// Scale of the fixed-point part: values with at most nine decimals are summed exactly.
const SCALE: f64 = 1e9;
/// Largest magnitude whose scaled value is still an exact integer in an `f64` (2^53 / 1e9).
const FIXED_LIMIT: f64 = 9.007e6;

/// A running sum that adds and removes values without drift.
///
/// Values that are decimals with at most nine digits after the point (amounts, prices, counts)
/// below about 9 million are summed exactly as integers of 1e-9: a window of `-0.30, 0.20,
/// 0.10` sums to exactly 0, and `0.1 + 0.2` prints `0.3`. Other values are summed in a
/// Neumaier-compensated `f64` pair, whose error stays near one rounding of the result instead of
/// growing with every addition and removal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExactSum {
    /// Units of 1e-9. On the rare overflow of an `i64` (a sum beyond 9.2e9) it is moved into
    /// the float part, which costs one rounding: the total is always `fixed / 1e9 + float`.
    fixed: i64,
    sum: f64,
    compensation: f64,
}

/// `x` in units of 1e-9, when that is exact (the decimal the double was written as).
#[inline]
pub(crate) fn as_fixed(x: f64) -> Option<i64> {
    if x.abs() >= FIXED_LIMIT {
        return None;
    }
    let scaled = x * SCALE;
    // Round half away from zero by truncation: `f64::round` is a library call on baseline
    // x86_64 and showed up in profiles; the cast is one instruction (|scaled| < 2^53 here).
    let units = (scaled + 0.5f64.copysign(scaled)) as i64;
    ((units as f64 - scaled).abs() < 1e-3).then_some(units)
}

impl ExactSum {
    /// Adds `x`.
    #[inline]
    pub fn add(&mut self, x: f64) {
        match as_fixed(x) {
            Some(units) => self.add_fixed(units),
            None => self.add_float(x),
        }
    }

    /// Removes `x`, previously added.
    #[inline]
    pub fn sub(&mut self, x: f64) {
        match as_fixed(x) {
            Some(units) => self.add_fixed(-units),
            None => self.add_float(-x),
        }
    }

    #[inline]
    fn add_fixed(&mut self, units: i64) {
        match self.fixed.checked_add(units) {
            Some(f) => self.fixed = f,
            None => {
                self.add_units_as_float(self.fixed, 1.0);
                self.fixed = units;
            }
        }
    }

    /// Adds `sign * units` (units of 1e-9) to the float part: the whole part (exact in a
    /// double, below 2^34) and the fraction as a double-double, so that it costs about 1e-25
    /// instead of a rounding of the total (about 1e-6 near the i64 limit), and a variance
    /// computed from this sum stays exact to the last digits.
    #[cold]
    fn add_units_as_float(&mut self, units: i64, sign: f64) {
        const UNITS: i64 = 1_000_000_000;
        let fraction = Dd::new((units % UNITS) as f64).div(SCALE);
        for part in [(units / UNITS) as f64, fraction.hi, fraction.lo] {
            self.add_float(sign * part);
        }
    }

    #[inline]
    fn add_float(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// Adds another sum (all of its parts).
    #[inline]
    pub fn add_sum(&mut self, other: &ExactSum) {
        self.add_fixed(other.fixed);
        self.add_float(other.sum);
        self.add_float(other.compensation);
    }

    /// Removes another sum, previously added.
    #[inline]
    pub fn sub_sum(&mut self, other: &ExactSum) {
        match other.fixed.checked_neg() {
            Some(units) => self.add_fixed(units),
            // Only a sum of exactly i64::MIN units: remove it through the float part.
            None => self.add_units_as_float(other.fixed, -1.0),
        }
        self.add_float(-other.sum);
        self.add_float(-other.compensation);
        // As for sums of squares: an exact cancellation leaves both parts 0, not `-c` and `c`.
        let Dd { hi, lo } = Dd::two_sum(self.sum, self.compensation);
        (self.sum, self.compensation) = (hi, lo);
    }

    /// Resets to exactly zero (used when a window becomes empty).
    #[inline]
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The parts of the sum: units of 1e-9, and the float part with its compensation (the
    /// sum is `units / 1e9 + float + compensation`, exactly).
    #[inline]
    pub fn parts(&self) -> (i64, f64, f64) {
        (self.fixed, self.sum, self.compensation)
    }

    /// The current sum.
    #[inline]
    pub fn value(&self) -> f64 {
        let fixed = self.fixed as f64 / SCALE;
        if self.sum == 0.0 && self.compensation == 0.0 {
            fixed
        } else {
            fixed + (self.sum + self.compensation)
        }
    }
}

/// A tag (0: a whole number of units of 1e-9, 1: with a float part), the units, then the float
/// part and its compensation if tagged 1.
impl Wire for ExactSum {
    fn put(&self, w: &mut Writer<'_>) {
        // Bit patterns, not values: a float part of -0.0 must come back as -0.0.
        if self.sum.to_bits() == 0 && self.compensation.to_bits() == 0 {
            w.u(0);
            w.i(self.fixed);
        } else {
            w.u(1);
            w.i(self.fixed);
            w.f(self.sum);
            w.f(self.compensation);
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let tag = r.u()?;
        let fixed = r.i()?;
        match tag {
            0 => Ok(ExactSum {
                fixed,
                sum: 0.0,
                compensation: 0.0,
            }),
            1 => Ok(ExactSum {
                fixed,
                sum: r.f()?,
                compensation: r.f()?,
            }),
            _ => Err(WireError("an unknown kind of sum")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_part_overflow_spills_without_losing_the_sum() {
        let mut s = ExactSum::default();
        let big = 9.0e6; // fixed-point eligible, 9e15 units
        for _ in 0..3000 {
            s.add(big);
        }
        s.add(0.25);
        assert!((s.value() - (3000.0 * big + 0.25)).abs() < 1e-3);
        for _ in 0..3000 {
            s.sub(big);
        }
        assert!((s.value() - 0.25).abs() < 1e-3, "{}", s.value());
        // The spill keeps the fraction: the float part holds the spilled units within 1e-15,
        // where one rounding of their total (9.2e9) would be off by up to 1e-6.
        let x = 8_000_000.001;
        let mut one = ExactSum::default();
        one.add(x);
        let u = one.parts().0;
        let n = i64::MAX / u + 1; // the last addition overflows the fixed part
        let mut s = ExactSum::default();
        for _ in 0..n {
            s.add(x);
        }
        let (units, float, compensation) = s.parts();
        assert_eq!(units, u, "the overflowing addition starts a new fixed part");
        let spilled = i128::from(n - 1) * i128::from(u);
        let fraction = (float - (spilled / 1_000_000_000) as f64) + compensation;
        let want = (spilled % 1_000_000_000) as f64 / SCALE;
        assert!((fraction - want).abs() < 1e-15, "{fraction} vs {want}");
    }

    #[test]
    fn decimals_sum_exactly() {
        let mut s = ExactSum::default();
        for x in [-0.30, 0.20, 0.10] {
            s.add(x);
        }
        assert_eq!(s.value(), 0.0);
        let mut s = ExactSum::default();
        s.add(0.1);
        s.add(0.2);
        assert_eq!(s.value(), 0.3);
        let mut s = ExactSum::default();
        s.add(1_000_000.01);
        s.add(-1_000_000.00);
        assert_eq!(s.value(), 0.01);
        // Not a short decimal: the float part, still exact on removal.
        let mut s = ExactSum::default();
        s.add(1.0 / 3.0);
        s.add(2.5);
        s.sub(1.0 / 3.0);
        assert_eq!(s.value(), 2.5);
        // Too large for the fixed part.
        let mut s = ExactSum::default();
        s.add(1.2e10);
        s.add(0.25);
        s.sub(1.2e10);
        assert_eq!(s.value(), 0.25);
    }

    #[test]
    fn removal_does_not_drift() {
        let mut s = ExactSum::default();
        let mut plain = 0.0f64;
        let mut cents: i64 = 0;
        let mut window = std::collections::VecDeque::new();
        let mut x: u64 = 12345;
        for _ in 0..2_000_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let c = ((x >> 33) % 100_000) as i64 + 1;
            let v = c as f64 / 100.0;
            s.add(v);
            plain += v;
            cents += c;
            window.push_back((c, v));
            if window.len() > 1000 {
                let (c, v) = window.pop_front().expect("non-empty");
                s.sub(v);
                plain -= v;
                cents -= c;
            }
        }
        let exact = cents as f64 / 100.0;
        let rel = ((s.value() - exact) / exact).abs();
        assert!(rel < 1e-15, "drifted: {rel}");
        // The plain sum is what this type exists to avoid; make sure the test can tell.
        assert!(((plain - exact) / exact).abs() > rel);
    }
}
