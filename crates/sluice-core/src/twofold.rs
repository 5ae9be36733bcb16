//! Error-free transformations and double-double arithmetic: sums, products and quotients of
//! doubles carried as an unevaluated pair `hi + lo` (about 106 significant bits), for the few
//! places where one rounding is too many (a variance's cancellation, the overflow of a sum's
//! fixed part).

/// `a` split into two halves of 26 bits each (Veltkamp), so that products of halves are exact.
#[inline]
fn split(a: f64) -> (f64, f64) {
    let c = 134_217_729.0 * a; // 2^27 + 1
    let hi = c - (c - a);
    (hi, a - hi)
}

/// `a * b` as the rounded product and its exact error (Dekker): `p + e == a * b` exactly,
/// unless the product overflows or underflows.
#[inline]
pub(crate) fn two_product(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    let ((ah, al), (bh, bl)) = (split(a), split(b));
    let e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    (p, e)
}

/// A double-double: the unevaluated sum `hi + lo` with `|lo| <= ulp(hi) / 2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dd {
    pub hi: f64,
    pub lo: f64,
}

impl Dd {
    /// `a`, exactly.
    pub fn new(a: f64) -> Dd {
        Dd { hi: a, lo: 0.0 }
    }

    /// `a + b` exactly (Knuth).
    pub fn two_sum(a: f64, b: f64) -> Dd {
        let s = a + b;
        let bb = s - a;
        Dd {
            hi: s,
            lo: (a - (s - bb)) + (b - bb),
        }
    }

    /// `a + b` exactly, when `|a| >= |b|` (Dekker).
    fn fast_two_sum(a: f64, b: f64) -> Dd {
        let s = a + b;
        Dd {
            hi: s,
            lo: b - (s - a),
        }
    }

    /// An integer, within one part in 2^106.
    pub fn from_i128(v: i128) -> Dd {
        let hi = v as f64;
        Dd::fast_two_sum(hi, v.saturating_sub(hi as i128) as f64)
    }

    pub fn neg(self) -> Dd {
        Dd {
            hi: -self.hi,
            lo: -self.lo,
        }
    }

    pub fn add(self, o: Dd) -> Dd {
        let s = Dd::two_sum(self.hi, o.hi);
        let t = Dd::two_sum(self.lo, o.lo);
        let s = Dd::fast_two_sum(s.hi, s.lo + t.hi);
        Dd::fast_two_sum(s.hi, s.lo + t.lo)
    }

    pub fn mul(self, o: Dd) -> Dd {
        let (p, e) = two_product(self.hi, o.hi);
        Dd::fast_two_sum(p, e + (self.hi * o.lo + self.lo * o.hi))
    }

    pub fn div(self, d: f64) -> Dd {
        let q1 = self.hi / d;
        let (p, e) = two_product(q1, d);
        let s = Dd::two_sum(self.hi, -p);
        let q2 = (s.hi + ((s.lo - e) + self.lo)) / d;
        Dd::fast_two_sum(q1, q2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_quotients_keep_what_one_double_loses() {
        let x = 1.0 / 3.0;
        let (p, e) = two_product(x, x);
        assert_eq!(x.mul_add(x, -p), e, "the exact error of the product");
        // 0.1 = 1/10: hi is the double nearest 0.1, lo the rest (about -5.55e-18).
        let tenth = Dd::new(1.0).div(10.0);
        assert_eq!(tenth.hi, 0.1);
        assert!(
            (tenth.lo + 5.551115123125783e-18).abs() < 1e-32,
            "{}",
            tenth.lo
        );
        // (2^60 + 1) - 2^60 survives in a double-double, not in a double.
        let big = Dd::from_i128((1 << 60) + 1).add(Dd::from_i128(1 << 60).neg());
        assert_eq!(big.hi + big.lo, 1.0);
        let sq = Dd::new(3.0).mul(Dd::new(3.0));
        assert_eq!((sq.hi, sq.lo), (9.0, 0.0));
    }
}
