//! The aggregations a feature can compute over its window.

use std::fmt;
use std::str::FromStr;

/// An aggregation over the events of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agg {
    /// Number of events (with the `of` field present, when `of` is given).
    Count,
    /// Sum of a numeric field.
    Sum,
    /// Mean of a numeric field.
    Avg,
    /// Smallest value of a numeric field.
    Min,
    /// Largest value of a numeric field.
    Max,
    /// Exact number of distinct values of a field.
    DistinctCount,
    /// Value of the field on the newest event of the window (under the inclusive contract: the
    /// event's own value).
    Last,
    /// Sample variance of a numeric field: the squared deviations from the mean over `n - 1`
    /// (null below two values).
    Variance,
    /// Sample standard deviation: the square root of [`Agg::Variance`].
    Stddev,
    /// Population variance: the squared deviations from the mean over `n` (0 for one value).
    VariancePop,
    /// Population standard deviation: the square root of [`Agg::VariancePop`].
    StddevPop,
    /// Value of the field on the oldest event of the window (smallest time, ties by arrival).
    First,
    /// Value of the field on the previous event: among the events received before this one,
    /// in the window, the one with the largest time (ties by latest arrival).
    Lag,
    /// The `q` quantile of a numeric field, exact by nearest rank: the k-th smallest value,
    /// `k = ceil(q * n)`, at least 1.
    Quantile(Quantile),
    /// Approximate number of distinct values (HyperLogLog over the window's buckets).
    DistinctCountApprox,
    /// The distinct values themselves, sorted (numbers, then strings, then booleans), the
    /// smallest `limit` of them, as a JSON array.
    Set(u32),
    /// Distinct `of` values over the events linked to the entity through `via` (two hops:
    /// [`crate::relation`]).
    LinkedDistinctCount,
    /// Number of events linked to the entity through `via`.
    LinkedCount,
    /// [`Agg::LinkedDistinctCount`] estimated from HyperLogLog value sets per via value and
    /// bucket (exact up to 384 values): bounded cost at hubs.
    LinkedDistinctCountApprox,
}

/// The default `limit` of a `set`.
pub const SET_LIMIT: u32 = 100;

/// The `q` of a quantile, in billionths: `q` is read to nine decimal places, so that the rank
/// `ceil(q * n)` is computed exactly in integers (in binary floating point `0.7 * 10` is
/// `7.000000000000001`, whose ceiling would be 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Quantile(pub u32);

impl Quantile {
    /// Billionths in one.
    pub const ONE: u32 = 1_000_000_000;

    /// `q` rounded to nine decimal places; `None` unless `0 < q <= 1`.
    pub fn new(q: f64) -> Option<Quantile> {
        let nanos = (q * f64::from(Quantile::ONE)).round();
        (q > 0.0 && q <= 1.0 && nanos >= 1.0).then_some(Quantile(nanos as u32))
    }

    /// Whether `q` is in `(0, 1]` (a `quantile` parsed from its name alone has `q = 0` until
    /// the pipeline gives one).
    pub fn is_valid(self) -> bool {
        (1..=Quantile::ONE).contains(&self.0)
    }

    /// `q` as a number.
    pub fn q(self) -> f64 {
        f64::from(self.0) / f64::from(Quantile::ONE)
    }

    /// The nearest rank among `n >= 1` values: `ceil(q * n)`, between 1 and `n`.
    pub fn rank(self, n: usize) -> usize {
        let n = n as u128;
        let k = (u128::from(self.0) * n).div_ceil(u128::from(Quantile::ONE));
        k.clamp(1, n.max(1)) as usize
    }
}

/// Every aggregation name, as written in a pipeline file.
pub const AGG_NAMES: [&str; 19] = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "distinct_count",
    "last",
    "variance",
    "stddev",
    "variance_pop",
    "stddev_pop",
    "first",
    "lag",
    "quantile",
    "distinct_count_approx",
    "set",
    "linked_distinct_count",
    "linked_count",
    "linked_distinct_count_approx",
];

impl Agg {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::DistinctCount => "distinct_count",
            Agg::Last => "last",
            Agg::Variance => "variance",
            Agg::Stddev => "stddev",
            Agg::VariancePop => "variance_pop",
            Agg::StddevPop => "stddev_pop",
            Agg::First => "first",
            Agg::Lag => "lag",
            Agg::Quantile(_) => "quantile",
            Agg::DistinctCountApprox => "distinct_count_approx",
            Agg::Set(_) => "set",
            Agg::LinkedDistinctCount => "linked_distinct_count",
            Agg::LinkedCount => "linked_count",
            Agg::LinkedDistinctCountApprox => "linked_distinct_count_approx",
        }
    }

    /// Whether the aggregation needs an `of` field.
    pub fn needs_of(self) -> bool {
        !matches!(self, Agg::Count | Agg::LinkedCount)
    }

    /// Whether the aggregation is a relation feature (computed over links, not registers).
    pub fn is_linked(self) -> bool {
        matches!(
            self,
            Agg::LinkedDistinctCount | Agg::LinkedCount | Agg::LinkedDistinctCountApprox
        )
    }

    /// Whether the `of` field must hold numbers.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Agg::Sum
                | Agg::Avg
                | Agg::Min
                | Agg::Max
                | Agg::Variance
                | Agg::Stddev
                | Agg::VariancePop
                | Agg::StddevPop
                | Agg::Quantile(_)
        )
    }

    /// Whether the aggregation keeps the values themselves (first, last, lag, quantile): a
    /// value series. (`last` is the event's own value when the event is added, and the
    /// series' newest value otherwise.)
    pub fn keeps_values(self) -> bool {
        matches!(self, Agg::First | Agg::Last | Agg::Lag | Agg::Quantile(_))
    }

    /// Whether an empty window gives 0 rather than null.
    pub fn is_zero_when_empty(self) -> bool {
        matches!(
            self,
            Agg::Count
                | Agg::Sum
                | Agg::DistinctCount
                | Agg::DistinctCountApprox
                | Agg::LinkedDistinctCount
                | Agg::LinkedCount
                | Agg::LinkedDistinctCountApprox
        )
    }

    /// Whether the aggregation needs sums of squares (the variances and standard deviations).
    pub fn needs_squares(self) -> bool {
        matches!(
            self,
            Agg::Variance | Agg::Stddev | Agg::VariancePop | Agg::StddevPop
        )
    }
}

/// The name; a quantile with its `q`: `quantile(0.9)`.
impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Agg::Quantile(q) if q.is_valid() => write!(f, "quantile({})", q.q()),
            _ => f.write_str(self.name()),
        }
    }
}

/// An aggregation name that is not one of [`AGG_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown aggregation `{0}`; valid: count, sum, avg, min, max, distinct_count, last, \
     variance, stddev, variance_pop, stddev_pop, first, lag, quantile, distinct_count_approx, set, \
     linked_distinct_count, linked_count, linked_distinct_count_approx"
)]
pub struct UnknownAgg(pub String);

impl FromStr for Agg {
    type Err = UnknownAgg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "distinct_count" => Agg::DistinctCount,
            "last" => Agg::Last,
            "variance" => Agg::Variance,
            "stddev" => Agg::Stddev,
            "variance_pop" => Agg::VariancePop,
            "stddev_pop" => Agg::StddevPop,
            "first" => Agg::First,
            "lag" => Agg::Lag,
            "quantile" => Agg::Quantile(Quantile::default()),
            "distinct_count_approx" => Agg::DistinctCountApprox,
            "set" => Agg::Set(SET_LIMIT),
            "linked_distinct_count" => Agg::LinkedDistinctCount,
            "linked_count" => Agg::LinkedCount,
            "linked_distinct_count_approx" => Agg::LinkedDistinctCountApprox,
            other => return Err(UnknownAgg(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in AGG_NAMES {
            let agg: Agg = name.parse().expect("valid name");
            assert_eq!(agg.name(), name);
        }
        let err = "median".parse::<Agg>().expect_err("unknown");
        for (q, n, k) in [
            (0.7, 10, 7),
            (0.5, 1, 1),
            (0.5, 4, 2),
            (0.9, 11, 10),
            (1.0, 3, 3),
        ] {
            assert_eq!(Quantile::new(q).expect("valid").rank(n), k, "q={q} n={n}");
        }
        assert_eq!(Quantile::new(1e-12), None);
        assert_eq!(Quantile::new(1.5), None);
        assert_eq!(
            err.to_string(),
            format!(
                "unknown aggregation `median`; valid: {}",
                AGG_NAMES.join(", ")
            )
        );
    }
}
