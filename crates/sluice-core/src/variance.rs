//! The variance of a window, from its count, sum ([`ExactSum`]) and sum of squares
//! ([`SquareSum`]).
//!
//! `M2 = Σx² - (Σx)²/n` is the textbook cancellation trap: for prices near 1e6 that move by
//! cents, `Σx²` and `(Σx)²/n` agree in their first eleven digits or more. Both sums are exact
//! here for short decimals, so the difference is computed exactly in integers (`exact_m2`),
//! and a window of equal values gives exactly 0. When a sum has a float part (other values,
//! or an overflowed fixed part) the difference is computed in double-double arithmetic (about
//! 32 significant digits, the crate's `twofold` module), from sums that are themselves
//! compensated: the result is then within about 1e-15 relative of the variance of the values
//! as read, plus about `1e-31 · Σx²/M2` (negligible unless the spread is below 1e-15 of the
//! mean).

use crate::square::SquareSum;
use crate::sum::ExactSum;
use crate::twofold::Dd;

/// Which variance: over `n - 1` (sample) or `n` (population).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divisor {
    /// Divide by `n - 1`: undefined below two values.
    Sample,
    /// Divide by `n`: 0 for one value.
    Population,
}

/// The variance of `n` values with sum `sum` and sum of squares `squares`: `None` for no
/// value, or one with [`Divisor::Sample`], or a result that is not finite (squares beyond
/// 1e308). Never negative.
pub fn variance(n: u64, sum: &ExactSum, squares: &SquareSum, divisor: Divisor) -> Option<f64> {
    let d = match (divisor, n) {
        (_, 0) | (Divisor::Sample, 1) => return None,
        (Divisor::Population, 1) => return Some(0.0),
        (Divisor::Sample, n) => (n - 1) as f64,
        (Divisor::Population, n) => n as f64,
    };
    let (s, s_float, s_comp) = sum.parts();
    let (q, q_float, q_comp) = squares.parts();
    let exact = (s_float == 0.0 && s_comp == 0.0 && q_float == 0.0 && q_comp == 0.0)
        .then(|| exact_m2(n, s, q))
        .flatten();
    // In units of 1e-18 when exact, else in the values' own units.
    let v = match exact {
        Some(m2) => m2 / d / 1e18,
        None => {
            let sum = Dd::from_i128(i128::from(s))
                .div(1e9)
                .add(Dd::two_sum(s_float, s_comp));
            let squares = Dd::from_i128(q).div(1e18).add(Dd::two_sum(q_float, q_comp));
            let m2 = squares.add(sum.mul(sum).div(n as f64).neg());
            (m2.hi + m2.lo) / d
        }
    };
    v.is_finite().then_some(v.max(0.0))
}

/// `Σx² - (Σx)²/n` in units of 1e-18, from the sum `s` (units of 1e-9) and the sum of squares
/// `q` (units of 1e-18) of `n` values: exact up to the final rounding to an `f64` (and two
/// more when `n · M2` is beyond an `i128`). `None` when an intermediate is beyond an `i128`.
///
/// With `s = a·n + r` (`0 <= r < n`): `(Σx)²/n = a²n + 2ar + r²/n`, so
/// `M2 = D - r²/n` with the integer `D = q - a²n - 2ar`, and `n·M2 = n·D - r²`.
fn exact_m2(n: u64, s: i64, q: i128) -> Option<f64> {
    let (n, s) = (i128::from(n), i128::from(s));
    let (a, r) = (s.div_euclid(n), s.rem_euclid(n));
    let d = q
        .checked_sub(a.checked_mul(a)?.checked_mul(n)?)?
        .checked_sub(a.checked_mul(r)?.checked_mul(2)?)?;
    let r2 = r.checked_mul(r)?;
    Some(match d.checked_mul(n) {
        Some(nd) => nd.checked_sub(r2)? as f64 / n as f64,
        // n·D beyond an i128: D is then far larger than r²/n (< n), which costs nothing.
        None => d as f64 - r2 as f64 / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums of `values` (as their doubles) and the sample and population variance.
    fn var(values: &[f64]) -> (Option<f64>, Option<f64>) {
        let (mut s, mut q) = (ExactSum::default(), SquareSum::default());
        for &x in values {
            s.add(x);
            q.add(x);
        }
        let n = values.len() as u64;
        (
            variance(n, &s, &q, Divisor::Sample),
            variance(n, &s, &q, Divisor::Population),
        )
    }

    /// The exact variances of integer cents, as doubles: `(n·Σc² - (Σc)²) / (n·(n-1)) / 1e4`.
    fn cents_var(cents: &[i64]) -> (f64, f64) {
        let n = cents.len() as i128;
        let s: i128 = cents.iter().map(|&c| i128::from(c)).sum();
        let q: i128 = cents.iter().map(|&c| i128::from(c) * i128::from(c)).sum();
        let num = (n * q - s * s) as f64;
        (num / (n * (n - 1)) as f64 / 1e4, num / (n * n) as f64 / 1e4)
    }

    fn rel(got: f64, want: f64) -> f64 {
        if want == 0.0 {
            got.abs()
        } else {
            ((got - want) / want).abs()
        }
    }

    #[test]
    fn few_values() {
        assert_eq!(var(&[]), (None, None));
        assert_eq!(var(&[5.25]), (None, Some(0.0)));
        assert_eq!(var(&[1.0, 3.0]), (Some(2.0), Some(1.0)));
        assert_eq!(var(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).1, Some(4.0));
    }

    #[test]
    fn equal_values_give_exactly_zero() {
        for x in [0.1, 1_000_000.37, -3.5, 8_999_999.999_999] {
            assert_eq!(var(&[x; 7]), (Some(0.0), Some(0.0)), "{x}");
        }
        // Not decimals: the double-double path, still never negative.
        let (s, p) = var(&[1.0 / 3.0; 7]);
        assert!(s.is_some_and(|v| (0.0..1e-30).contains(&v)), "{s:?}");
        assert!(p.is_some_and(|v| (0.0..1e-30).contains(&v)), "{p:?}");
    }

    #[test]
    fn large_offsets_keep_their_spread() {
        // 1e6 plus cents: the naive formula in doubles loses about 11 of 16 digits here.
        let mut x: u64 = 7;
        let cents: Vec<i64> = (0..5_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                100_000_000 + (x >> 33) as i64 % 1000
            })
            .collect();
        let values: Vec<f64> = cents.iter().map(|&c| c as f64 / 100.0).collect();
        let (s, p) = var(&values);
        let (want_s, want_p) = cents_var(&cents);
        assert!(rel(s.expect("n > 1"), want_s) < 1e-15, "{s:?} vs {want_s}");
        assert!(rel(p.expect("n > 0"), want_p) < 1e-15, "{p:?} vs {want_p}");
        let n = values.len() as f64;
        let naive = (values.iter().map(|v| v * v).sum::<f64>()
            - values.iter().sum::<f64>().powi(2) / n)
            / (n - 1.0);
        assert!(
            rel(naive, want_s) > 1e-9,
            "the test tells the naive way apart"
        );
    }

    #[test]
    fn the_double_double_path_matches_the_exact_one() {
        // The same values with the sum forced through the float part: 1e6 plus cents, with
        // one value that is not a short decimal added and removed.
        let cents: Vec<i64> = (0..300).map(|i| 100_000_000 + (i * 37) % 1000).collect();
        let (mut s, mut q) = (ExactSum::default(), SquareSum::default());
        let third = 1.0 / 3.0;
        s.add(third);
        let mut q_third = SquareSum::default();
        q_third.add(third);
        q.add_sum(&q_third);
        for &c in &cents {
            s.add(c as f64 / 100.0);
            q.add(c as f64 / 100.0);
        }
        s.sub(third);
        q.sub_sum(&q_third);
        let n = cents.len() as u64;
        let got = variance(n, &s, &q, Divisor::Sample).expect("n > 1");
        assert!(rel(got, cents_var(&cents).0) < 1e-13, "{got}");
    }

    #[test]
    fn overflow_of_the_sum_keeps_the_precision() {
        // 20 000 values near 1e6: the sum's fixed part (i64 units of 1e-9) overflows near
        // 9.2e9 and moves into its float part.
        let cents: Vec<i64> = (0..20_000)
            .map(|i| 100_000_000 + (i * 7919) % 1000)
            .collect();
        let values: Vec<f64> = cents.iter().map(|&c| c as f64 / 100.0).collect();
        let (s, p) = var(&values);
        let (want_s, want_p) = cents_var(&cents);
        assert!(rel(s.expect("n > 1"), want_s) < 1e-12, "{s:?} vs {want_s}");
        assert!(rel(p.expect("n > 0"), want_p) < 1e-12, "{p:?} vs {want_p}");
    }

    #[test]
    fn exact_m2_handles_every_range() {
        // Small: 1, 2, 3, 4 → M2 = 5 (units of 1e-18 for units of 1e-9).
        assert_eq!(exact_m2(4, 10, 30), Some(5.0));
        // Negative sums divide toward minus infinity: -1, -2 → M2 = 0.5.
        assert_eq!(exact_m2(2, -3, 5), Some(0.5));
        // Large: 9e15, 9e15, 0 (the largest short decimals) → M2 = 2·(9e15)²/3.
        let big = 9_000_000_000_000_000i128;
        let m2 = exact_m2(3, (2 * big) as i64, 2 * big * big).expect("fits");
        assert!(rel(m2, (2 * big * big) as f64 / 3.0) < 1e-15, "{m2}");
        // n·D beyond an i128 (registers no real values produce, but decodable).
        assert_eq!(exact_m2(3, 0, 10i128.pow(38)), Some(1e38));
        // Inconsistent (damaged) registers never panic.
        assert!(exact_m2(1, i64::MIN, i128::MIN).is_none());
        assert!(exact_m2(u64::MAX, i64::MAX, i128::MAX).is_some());
    }

    #[test]
    fn huge_values_give_none_not_a_panic() {
        let (s, p) = var(&[1e200, -1e200, 3.0]);
        assert_eq!((s, p), (None, None));
    }
}
