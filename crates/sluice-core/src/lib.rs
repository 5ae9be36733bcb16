//! Sluice core: the pure part of the engine.
//!
//! Everything here is deterministic and free of I/O, threads and clocks, so it can be
//! property-tested against a brute-force oracle on its own.
//!
//! - [`fql`]: StreamFQL, the book's feature language, translated into features.
//! - [`duration`]: human durations (`90s`, `15m`, `1h`, `7d`) in milliseconds.
//! - [`expr`]: the expression language of `where` filters and derived `expr` features.
//! - [`agg`]: the aggregations a feature can use.
//! - [`plan`]: features grouped by the key and the register series they share.
//! - [`key`]: key encoding, hashing and key groups.
//! - [`deque`]: a deque with inline storage for the first few items.
//! - [`derived`]: derived features, expressions over fields and other features.
//! - [`sum`]: a drift-free running sum that supports removal, exact for short decimals.
//! - [`square`]: the same for sums of squares (exact squares of short decimals).
//! - [`variance`]: variances from a count, a sum and a sum of squares, without cancellation.
//! - `twofold`: error-free products and double-double arithmetic for the two above.
//! - [`minmax`]: monotonic deques for the minimum and maximum of a sliding window.
//! - [`numeric`]: count/sum/avg/min/max/variance registers over sliding windows.
//! - [`path`]: field paths into nested events (`user.id`, `` payload.`geo.ip` ``).
//! - [`distinct`]: exact distinct-count registers over sliding windows.
//! - [`approx`]: approximate distinct-count registers (HyperLogLog) over sliding windows.
//! - [`state`]: the registers of one key, fed one event at a time.
//! - [`value`]: the value of one feature for one event.
//! - [`values`]: value registers (the values themselves) for first, last, lag and quantile.
//! - [`ranked`]: an ordered multiset with k-th lookup, the running window of a quantile.
//! - [`relation`]: relation features, links across entities over two hops.
//! - [`wire`]: the compact binary form of registers, for checkpoints and the embedded store.

pub mod agg;
pub mod approx;
pub mod deque;
pub mod derived;
pub mod distinct;
pub mod duration;
pub mod expr;
pub mod fql;
pub mod key;
pub mod minmax;
pub mod numeric;
pub mod path;
pub mod plan;
pub mod ranked;
pub mod relation;
pub mod square;
pub mod state;
pub mod sum;
mod twofold;
pub mod value;
pub mod values;
pub mod variance;
pub mod wire;

pub use agg::Agg;
pub use approx::ApproxSeries;
pub use distinct::{DistinctScratch, DistinctSeries};
pub use duration::{format_duration, parse_duration, DurationError};
pub use key::{
    group_of, id_token, key_group, key_hash, partition_group, shard_of, KeyEncoder, KEY_GROUPS,
};
pub use numeric::NumericSeries;
pub use path::{FieldPath, PathError};
pub use plan::{FeatureSpec, KeySpec, Plan, PlanError, SeriesKind, SeriesSpec, WindowSpec};
pub use square::SquareSum;
pub use state::{FieldObs, KeyState, Scratch};
pub use sum::ExactSum;
pub use value::{canonical_parts, FeatureValue};
pub use values::{Stored, ValueScratch, ValueSeries};

/// Aligns an event time to the start of its bucket of width `granularity_ms` (>= 1).
///
/// With the default granularity of 1 ms this is the identity: the exact mode. Times in the
/// first bucket below `i64::MIN` (a query at "the beginning of time") give `i64::MIN`.
#[inline]
pub fn bucket_start(ts: i64, granularity_ms: i64) -> i64 {
    if granularity_ms <= 1 {
        ts
    } else {
        ts.div_euclid(granularity_ms).saturating_mul(granularity_ms)
    }
}
