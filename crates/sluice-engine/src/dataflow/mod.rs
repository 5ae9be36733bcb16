//! The dataflow of a run: the threads and the batches flowing between them.
//!
//! ```text
//! source ─▶ reader ─▶ parse ─▶ router ─▶ shard 0..N-1 ─▶ router ─▶ merge + format ─▶ writer ─▶ sinks
//! ```

pub(crate) mod batch;
pub(crate) mod links;
pub(crate) mod pool;
pub(crate) mod router;
pub(crate) mod run;
pub(crate) mod shard;
pub(crate) mod writer;
