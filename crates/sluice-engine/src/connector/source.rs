//! The source side of the seam: what a run reads records from, and where a source stands.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::{InputDigest, SourceCheckpoint};
use crate::connector::csv::CsvBatcher;
use crate::connector::lines::LineBatcher;
use crate::connector::InputFormat;
use crate::dataflow::batch::RawBatch;
use crate::error::Result;

/// Where a source stands: the first record not yet consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A byte stream (a file, stdin): the byte offset and 1-based line of the next record.
    Stream {
        /// Byte offset.
        offset: u64,
        /// Line number.
        line: u64,
    },
    /// A partitioned log (Kafka): the offset of the next message of each partition read.
    Partitions(BTreeMap<u32, i64>),
}

impl Position {
    /// The start of a byte stream.
    pub const START: Position = Position::Stream { offset: 0, line: 1 };

    /// Moves this position past `later`, the end of a batch read after it: a stream takes
    /// `later`; a partitioned log advances each partition `later` names.
    pub fn advance(&mut self, later: &Position) {
        match (self, later) {
            (Position::Partitions(now), Position::Partitions(next)) => {
                for (&p, &o) in next {
                    let at = now.entry(p).or_insert(o);
                    *at = (*at).max(o);
                }
            }
            (this, later) => *this = later.clone(),
        }
    }
}

/// One batch of records read from a source.
#[derive(Debug)]
pub struct SourceBatch {
    pub(crate) raw: RawBatch,
    pub(crate) records: u64,
    /// Where the source stands after this batch (a partitioned source: only the partitions
    /// this batch read).
    pub(crate) end: Position,
    /// A partitioned source: the partition of each record, in record order (else empty).
    pub(crate) partitions: Vec<u32>,
    /// A byte stream: the [`InputDigest`] of its bytes up to `end`.
    pub(crate) digest: Option<u64>,
    /// How many engine batches the parse stage cuts it into (a Parquet row group: several).
    pub(crate) slices: u64,
}

impl SourceBatch {
    /// Messages of a partitioned log, one JSONL line each (every line ends in `\n`):
    /// `origins` holds each line's partition and offset, in line order. `first_line` numbers
    /// the records of the run (for dead letters).
    pub fn partitioned(data: Vec<u8>, first_line: u64, origins: &[(u32, i64)]) -> SourceBatch {
        let mut end = BTreeMap::new();
        for &(p, o) in origins {
            let next = end.entry(p).or_insert(o + 1);
            *next = (*next).max(o + 1);
        }
        SourceBatch {
            raw: RawBatch::Lines { data, first_line },
            records: origins.len() as u64,
            end: Position::Partitions(end),
            partitions: origins.iter().map(|&(p, _)| p).collect(),
            digest: None,
            slices: 1,
        }
    }

    /// Records in the batch.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of the batch as read (0 for CSV rows).
    pub fn bytes(&self) -> usize {
        match &self.raw {
            RawBatch::Lines { data, .. } => data.len(),
            RawBatch::Csv(_) => 0,
            RawBatch::RowGroup(g) => g.compressed_bytes(),
        }
    }
}

/// How a run wants its input cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Approximate bytes of a JSONL batch.
    pub bytes: usize,
    /// Rows of a CSV batch.
    pub csv_rows: usize,
    /// A live source cuts a batch once it holds a record and this long has passed since its
    /// first one arrived, so that a slow input is not held back until a batch fills.
    pub wait: Duration,
    /// Rows of a piece of a Parquet row group: the parse stage cuts a row group into pieces of
    /// about this many rows, each an engine batch (and a row group of a Parquet output).
    pub slice_rows: usize,
    /// The most pieces a row group may be cut into (larger row groups get larger pieces).
    pub max_slices: usize,
}

/// Where a run reads records from. The run calls [`Source::start`] once, then
/// [`Source::next_batch`] on its reader thread until it gives `None`.
pub trait Source: Send {
    /// Names the source in errors and dead letters (a path, `-`, `kafka:<topic>`).
    fn name(&self) -> &str;

    /// Whether records arrive over time (a pipe, a terminal, a topic) rather than being all
    /// there (a file).
    fn is_live(&self) -> bool;

    /// Prepares reading; fails when the input cannot be read at all (a bad CSV header).
    fn start(&mut self, batching: &Batching) -> Result<()>;

    /// The CSV header, for a CSV source (after [`Source::start`]).
    fn csv_header(&self) -> Option<&[String]> {
        None
    }

    /// The columns of a Parquet source (after [`Source::start`]).
    fn parquet_schema(&self) -> Option<arrow_schema::SchemaRef> {
        None
    }

    /// The next batch, filled into `buf` (a recycled buffer) where the source reads bytes;
    /// `None` at the end of the input.
    fn next_batch(&mut self, buf: Vec<u8>) -> Result<Option<SourceBatch>>;

    /// A source that acknowledges what is processed (Kafka offsets without checkpoints):
    /// told where the outputs stand after each flush.
    fn acknowledger(&mut self) -> Option<Box<dyn Acknowledge>> {
        None
    }

    /// A partitioned source's part in completing checkpoints.
    fn checkpoints(&mut self) -> Option<Box<dyn SourceCheckpoint>> {
        None
    }
}

/// Learns which input is processed, to acknowledge it upstream.
pub trait Acknowledge: Send {
    /// The outputs of every record before `upto` are flushed to the sinks; `last`: the run's
    /// last flush. An error stops the run.
    fn flushed(&mut self, upto: &Position, last: bool) -> std::io::Result<()>;
}

/// A byte stream of JSONL lines or CSV rows (a file, stdin, any reader).
pub struct StreamSource {
    name: String,
    format: InputFormat,
    live: bool,
    start: (u64, u64),
    digest: InputDigest,
    state: Stream,
}

enum Stream {
    Unstarted(Box<dyn Read + Send>),
    Lines(LineBatcher),
    Csv(CsvBatcher),
    Taken,
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl StreamSource {
    /// Reads `reader`, named `name`, in `format`; not live, from its first byte.
    pub fn new(reader: Box<dyn Read + Send>, name: impl Into<String>, format: InputFormat) -> Self {
        StreamSource {
            name: name.into(),
            format,
            live: false,
            start: (0, 1),
            digest: InputDigest::default(),
            state: Stream::Unstarted(reader),
        }
    }

    /// The same source, live or not (see [`Source::is_live`]).
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// The same source for a reader already positioned at byte `offset`, line `line` of its
    /// input (a resumed run), whose bytes before have `digest`: batches carry their true
    /// positions and digests.
    pub fn starting_at(mut self, offset: u64, line: u64, digest: InputDigest) -> Self {
        self.start = (offset, line);
        self.digest = digest;
        self
    }
}

impl Source for StreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_live(&self) -> bool {
        self.live
    }

    fn start(&mut self, batching: &Batching) -> Result<()> {
        let Stream::Unstarted(reader) = std::mem::replace(&mut self.state, Stream::Taken) else {
            return Ok(());
        };
        let name = PathBuf::from(&self.name);
        self.state = match self.format {
            InputFormat::Jsonl => {
                let lines = if self.live {
                    LineBatcher::with_wait(reader, name, batching.bytes, batching.wait)?
                } else {
                    LineBatcher::new(reader, name, batching.bytes)
                };
                let digest = std::mem::take(&mut self.digest);
                Stream::Lines(lines.starting_at(self.start.0, self.start.1, digest))
            }
            InputFormat::Csv => Stream::Csv(CsvBatcher::new(reader, name, batching.csv_rows)?),
            InputFormat::Parquet => {
                return Err(crate::error::Error::Input {
                    path: name,
                    error: std::io::Error::other(
                        "a Parquet file is read by a Parquet source, not as a byte stream",
                    ),
                })
            }
        };
        Ok(())
    }

    fn csv_header(&self) -> Option<&[String]> {
        match &self.state {
            Stream::Csv(b) => Some(b.header()),
            _ => None,
        }
    }

    fn next_batch(&mut self, buf: Vec<u8>) -> Result<Option<SourceBatch>> {
        match &mut self.state {
            Stream::Lines(b) => b.next_batch(buf),
            Stream::Csv(b) => b.next_batch(),
            Stream::Unstarted(_) | Stream::Taken => Ok(None),
        }
    }
}
