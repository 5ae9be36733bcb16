//! The dataflow of a run: the threads and the batches flowing between them.
//!
//! ```text
//! reader ─▶ parse ─▶ router ─▶ shard 0..N-1 ─▶ router ─▶ merge + format ─▶ writer ─▶ sink
//! ```

pub mod batch;
pub mod pool;
pub mod router;
pub mod run;
pub(crate) mod shard;
pub(crate) mod writer;
