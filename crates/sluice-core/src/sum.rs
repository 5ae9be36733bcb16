//! A running sum that supports removal without drift.

/// Neumaier-compensated sum: adds and removes values while keeping the error near one rounding
/// of the result, so that millions of additions and evictions of two-decimal amounts stay within
/// 1e-15 relative of the exact decimal sum instead of drifting like a plain `f64`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExactSum {
    sum: f64,
    compensation: f64,
}

impl ExactSum {
    /// Adds `x`.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// Removes `x`, previously added.
    #[inline]
    pub fn sub(&mut self, x: f64) {
        self.add(-x);
    }

    /// Adds another compensated sum (both of its parts).
    #[inline]
    pub fn add_sum(&mut self, other: &ExactSum) {
        self.add(other.sum);
        self.add(other.compensation);
    }

    /// Removes another compensated sum, previously added.
    #[inline]
    pub fn sub_sum(&mut self, other: &ExactSum) {
        self.sub(other.sum);
        self.sub(other.compensation);
    }

    /// Resets to exactly zero (used when a window becomes empty).
    #[inline]
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The current sum.
    #[inline]
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(rel < 1e-15, "compensated drifted: {rel}");
        // The plain sum is what this type exists to avoid; make sure the test can tell.
        assert!(((plain - exact) / exact).abs() > rel);
    }
}
