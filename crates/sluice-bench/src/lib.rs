//! Sluice's benchmarks and its data generator (not published).
//!
//! - [`gen`]: deterministic synthetic transactions, and nested multi-type events.
//! - [`e2e`]: the end-to-end benchmark (`sluice bench`): the six-feature pipeline file to file,
//!   against a plain serde_json loop, run as child processes of the `sluice` binary.
//! - [`language`] (`sluice bench --language`): the six-feature pipeline against about twenty
//!   features over nested events (filters, paths, derived features), in the same run.
//! - [`duckdb`] (`sluice bench --vs-duckdb`): the six-feature pipeline against DuckDB running
//!   the same features as SQL window functions, JSONL and Parquet, with a cross-check.
//! - [`checkpoints`], [`redis`], [`serve`] and [`kafka`] (feature `kafka`): the same for
//!   checkpoints, Redis state, `sluice serve` and Kafka.

pub mod checkpoints;
pub mod cluster;
pub mod duckdb;
pub mod e2e;
pub mod gen;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod language;
pub mod redis;
pub mod serve;

pub use e2e::{BenchOptions, RunReport, BENCH_PIPELINE};
pub use language::{LANGUAGE_FEATURES, LANGUAGE_PIPELINE};
