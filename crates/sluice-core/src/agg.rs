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
}

/// Every aggregation name, as written in a pipeline file.
pub const AGG_NAMES: [&str; 7] = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "distinct_count",
    "last",
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
        }
    }

    /// Whether the aggregation needs an `of` field.
    pub fn needs_of(self) -> bool {
        self != Agg::Count
    }

    /// Whether the `of` field must hold numbers.
    pub fn is_numeric(self) -> bool {
        matches!(self, Agg::Sum | Agg::Avg | Agg::Min | Agg::Max)
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An aggregation name that is not one of [`AGG_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown aggregation `{0}`; valid: count, sum, avg, min, max, distinct_count, last")]
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
        assert!(err.to_string().contains("distinct_count"));
    }
}
