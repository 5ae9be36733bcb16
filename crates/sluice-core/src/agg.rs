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
}

/// Every aggregation name, as written in a pipeline file.
pub const AGG_NAMES: [&str; 11] = [
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
        }
    }

    /// Whether the aggregation needs an `of` field.
    pub fn needs_of(self) -> bool {
        self != Agg::Count
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

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An aggregation name that is not one of [`AGG_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown aggregation `{0}`; valid: count, sum, avg, min, max, distinct_count, last, \
     variance, stddev, variance_pop, stddev_pop"
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
        assert_eq!(
            err.to_string(),
            format!(
                "unknown aggregation `median`; valid: {}",
                AGG_NAMES.join(", ")
            )
        );
    }
}
