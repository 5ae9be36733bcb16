//! Batches: the unit of work between stages. A batch holds raw records as read, then what the
//! parse stage extracted from each of them.

use arrow_array::RecordBatch;

use crate::connector::parquet::RowGroup;
use crate::connector::Position;

/// Raw records of one batch, as read from the source.
#[derive(Debug)]
pub enum RawBatch {
    /// Whole JSONL lines separated by `\n`; `first_line` is the 1-based line number of the first.
    Lines {
        /// The bytes of the lines.
        data: Vec<u8>,
        /// Line number of the first line.
        first_line: u64,
    },
    /// CSV rows, already split into fields by the reader.
    Csv(Vec<CsvRow>),
    /// A row group of a Parquet file, decoded by the parse stage (on a worker).
    RowGroup(RowGroup),
}

/// One CSV row or the error the CSV reader gave for it.
#[derive(Debug)]
pub struct CsvRow {
    /// 1-based line number where the row starts.
    pub line: u64,
    /// The fields, or why the row could not be read.
    pub fields: Result<csv::ByteRecord, String>,
}

/// A range of bytes in either the raw batch data or the parse arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// Whether the bytes are in [`ParsedBatch::arena`] (else in the raw lines).
    pub in_arena: bool,
    /// Start offset.
    pub start: usize,
    /// End offset (exclusive).
    pub end: usize,
}

/// Why a record went to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short, stable code: `malformed`, `missing_time`, `bad_time`, `wrong_type`,
    /// `reserved_field`, `invalid_utf8`, `late`.
    pub reason: &'static str,
    /// A human-readable explanation naming the field and what was expected.
    pub message: String,
}

/// What the parse stage extracted from one record.
#[derive(Debug, Clone)]
pub struct Event {
    /// Source position: 1-based line number.
    pub line: u64,
    /// Event time in epoch milliseconds.
    pub ts: i64,
    /// The record as read (for dead letters).
    pub raw: Span,
    /// The JSON object text without its closing brace (for the output).
    pub body: Span,
    /// Set when the record is rejected.
    pub rejection: Option<Box<Rejection>>,
}

/// The value type of an extracted field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldKind {
    /// Absent or null.
    #[default]
    Missing,
    /// A number (in [`FieldSlot::num`]).
    Num,
    /// A string (its text follows the tag byte in the arena).
    Str,
    /// A boolean.
    Bool,
    /// An object or an array (only in fields read by derived features).
    Other,
}

/// An extracted `of` field of one event.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldSlot {
    /// Its type.
    pub kind: FieldKind,
    /// Its number, for [`FieldKind::Num`].
    pub num: f64,
    /// Its canonical bytes (type tag then text) in the arena.
    pub start: usize,
    /// End of the canonical bytes.
    pub end: usize,
}

/// An encoded key of one event for one key spec.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeySlot {
    /// Whether every key field was present.
    pub present: bool,
    /// Hash of the encoded key ([`sluice_core::key_hash`]); its key group follows from it.
    pub hash: u64,
    /// Encoded key in the arena.
    pub start: usize,
    /// End of the encoded key.
    pub end: usize,
}

/// A batch after parsing.
#[derive(Debug)]
pub struct ParsedBatch {
    /// Position of the batch in the input (0, 1, 2, ...).
    pub seq: u64,
    /// The records as read.
    pub raw: RawBatch,
    /// One per record, in input order.
    pub events: Vec<Event>,
    /// `events.len() * plan.keys.len()` keys, event-major.
    pub keys: Vec<KeySlot>,
    /// `events.len() * plan.fields.len()` fields, event-major.
    pub fields: Vec<FieldSlot>,
    /// With filters: per event, the filters it matched (bit `i`: `plan.filters[i]`); else
    /// empty.
    pub matched: Vec<u64>,
    /// `events.len() * plan.expr_fields.len()` fields read by derived features, event-major;
    /// a string's slot holds its text in the arena.
    pub expr_values: Vec<FieldSlot>,
    /// Bytes referred to by spans and slots.
    pub arena: Vec<u8>,
    /// Where the source stands after this batch.
    pub end: Position,
    /// A partitioned source: the partition of each record (else empty).
    pub partitions: Vec<u32>,
    /// A byte stream: the digest of its bytes up to `end` (see
    /// [`crate::checkpoint::InputDigest`]).
    pub digest: Option<u64>,
    /// With an output key field (a keyed sink): each event's key text in the arena, or
    /// `None` (else empty).
    pub output_keys: Vec<Option<(usize, usize)>>,
    /// A Parquet row group written to a columnar output: its columns as read (one row per
    /// event, rejected ones included).
    pub columns: Option<RecordBatch>,
}

impl ParsedBatch {
    /// An empty batch numbered `seq`.
    pub(crate) fn empty(seq: u64) -> ParsedBatch {
        ParsedBatch {
            seq,
            raw: RawBatch::Csv(Vec::new()),
            events: Vec::new(),
            keys: Vec::new(),
            fields: Vec::new(),
            matched: Vec::new(),
            expr_values: Vec::new(),
            arena: Vec::new(),
            end: Position::START,
            partitions: Vec::new(),
            digest: None,
            output_keys: Vec::new(),
            columns: None,
        }
    }

    /// The bytes of a span.
    pub fn bytes(&self, span: Span) -> &[u8] {
        if span.in_arena {
            &self.arena[span.start..span.end]
        } else {
            match &self.raw {
                RawBatch::Lines { data, .. } => &data[span.start..span.end],
                RawBatch::Csv(_) | RawBatch::RowGroup(_) => &[],
            }
        }
    }
}
