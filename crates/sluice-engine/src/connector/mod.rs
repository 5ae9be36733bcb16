//! The seam between the engine and the outside: a run reads [`Source`]s and writes [`Sink`]s.
//!
//! A source yields batches of records with a typed [`Position`] (a byte offset and line, or
//! Kafka partition offsets) and says whether it is live; a sink takes formatted lines, flushes,
//! makes what it holds durable and can be cut back to a checkpoint's length. Files, stdin and
//! stdout are [`StreamSource`] and [`StreamSink`]; Kafka implements the traits in
//! `sluice-connectors`.

mod csv;
mod lines;
pub mod parquet;
mod sink;
mod source;

pub use parquet::{ParquetInput, ParquetSink, ParquetSource};
pub use sink::{RecordKeys, Sink, StreamSink, SyncJob};
pub use source::{Acknowledge, Batching, Position, Source, SourceBatch, StreamSource};

/// Record format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// CSV with a header row.
    Csv,
    /// A Parquet file.
    Parquet,
}

/// Record format of an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// One JSON object per line: the event's fields and `"features"`.
    #[default]
    Jsonl,
    /// CSV with a header row: the input's columns and one column per feature.
    Csv,
    /// A Parquet file: the input's columns and one typed column per feature.
    Parquet,
}
