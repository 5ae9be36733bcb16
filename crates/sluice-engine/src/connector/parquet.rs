//! Parquet files: a source that hands out one row group per batch (decoded on a worker and cut
//! into pieces, so several row groups are decoded in parallel) and a sink that writes typed
//! columns, one row group per engine batch, encoded by the workers.
//!
//! A Parquet source stands at a row: its [`Position`] is `Stream { offset: <row group>, line:
//! <1-based number of the next row> }`, where the row group is the next one once a row group
//! is done, or the current one between two of its pieces. A checkpoint's digest is a hash of
//! the row groups' metadata before that row group, so a resumed run can tell that it reads the
//! file the checkpoint read.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;

use crate::codec::time::TimeFormat;
use crate::connector::sink::{RecordKeys, Sink, SyncJob};
use crate::connector::source::{Batching, Position, Source, SourceBatch};
use crate::dataflow::batch::RawBatch;
use crate::error::{Error, Result};

/// A Parquet file opened for reading by several threads at once (positioned reads).
#[derive(Debug)]
struct SharedFile {
    file: File,
    len: u64,
}

impl Length for SharedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// Reads a [`SharedFile`] from a position, without moving any shared file offset.
struct PositionedRead {
    file: Arc<SharedFile>,
    at: u64,
}

impl Read for PositionedRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// A [`ChunkReader`] over a shared file: every reader gets its own position.
#[derive(Clone)]
struct Chunks(Arc<SharedFile>);

impl Length for Chunks {
    fn len(&self) -> u64 {
        self.0.len
    }
}

impl ChunkReader for Chunks {
    type T = PositionedRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<PositionedRead> {
        Ok(PositionedRead {
            file: Arc::clone(&self.0),
            at: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let mut buf = vec![0; length];
        self.0.file.read_exact_at(&mut buf, start).map_err(|e| {
            parquet::errors::ParquetError::General(format!(
                "cannot read {length} bytes at byte {start}: {e}"
            ))
        })?;
        Ok(buf.into())
    }
}

/// An open Parquet input: its file, metadata and schema, shared by the batches read from it.
pub struct ParquetInput {
    name: String,
    chunks: Chunks,
    meta: ArrowReaderMetadata,
    /// The event time column, when it holds timestamps or dates: its index, converted to what
    /// the time format reads before records are parsed.
    time_column: Option<usize>,
    time_format: TimeFormat,
}

impl std::fmt::Debug for ParquetInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetInput")
            .field("name", &self.name)
            .field("row_groups", &self.row_groups())
            .finish_non_exhaustive()
    }
}

impl ParquetInput {
    /// Opens `path` and reads its footer. Fails, naming the file, when it is not a readable
    /// Parquet file or has no column `time_field` (the event time).
    pub fn open(path: &Path, time_field: &str, time_format: TimeFormat) -> Result<ParquetInput> {
        let name = path.display().to_string();
        let bad = |message: String| Error::Input {
            path: PathBuf::from(&name),
            error: io::Error::other(message),
        };
        let file = File::open(path).map_err(|error| Error::Input {
            path: path.to_owned(),
            error,
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let chunks = Chunks(Arc::new(SharedFile { file, len }));
        let meta = ArrowReaderMetadata::load(&chunks, ArrowReaderOptions::new())
            .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
        let schema = meta.schema();
        let top = time_field.split('.').next().unwrap_or(time_field);
        let Some((index, field)) = schema.column_with_name(top) else {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(bad(format!(
                "has no column `{top}` for the event time ([event] time); its columns are: {}",
                columns.join(", ")
            )));
        };
        let time_column = (top == time_field
            && matches!(
                field.data_type(),
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            ))
        .then_some(index);
        Ok(ParquetInput {
            name,
            chunks,
            meta,
            time_column,
            time_format,
        })
    }

    /// The columns of the file.
    pub fn schema(&self) -> &SchemaRef {
        self.meta.schema()
    }

    /// Number of row groups.
    pub fn row_groups(&self) -> usize {
        self.meta.metadata().num_row_groups()
    }

    /// Rows of row group `i`.
    fn rows_of(&self, i: usize) -> u64 {
        self.meta.metadata().row_group(i).num_rows().max(0) as u64
    }

    /// A digest of the row groups before `upto`: their row counts, sizes and offsets.
    pub fn digest(&self, upto: usize) -> u64 {
        let mut bytes = Vec::with_capacity(upto * 24);
        for g in self.meta.metadata().row_groups().iter().take(upto) {
            bytes.extend_from_slice(&g.num_rows().to_le_bytes());
            bytes.extend_from_slice(&g.compressed_size().to_le_bytes());
            let offset = g.columns().first().map_or(0, |c| c.byte_range().0);
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// Decodes row group `index` into one record batch.
    fn decode(&self, index: usize) -> std::result::Result<RecordBatch, String> {
        let rows = self.rows_of(index) as usize;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.chunks.clone(),
            self.meta.clone(),
        )
        .with_row_groups(vec![index])
        .with_batch_size(rows.max(1))
        .build()
        .map_err(|e| e.to_string())?;
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        match batches.len() {
            1 => Ok(batches.into_iter().next().expect("one batch")),
            _ => arrow_select::concat::concat_batches(self.schema(), &batches)
                .map_err(|e| e.to_string()),
        }
    }

    /// The columns of `batch` as the parse stage reads them: a timestamp or date time column
    /// becomes what the time format reads (epoch milliseconds or seconds, or RFC 3339 text).
    fn for_parsing(&self, batch: &RecordBatch) -> std::result::Result<RecordBatch, String> {
        let Some(i) = self.time_column else {
            return Ok(batch.clone());
        };
        let utc: Arc<str> = Arc::from("+00:00");
        let cast = |a: &ArrayRef, to: &DataType| {
            arrow_cast::cast(a, to).map_err(|e| format!("time column: {e}"))
        };
        let column = batch.column(i);
        let time = match self.time_format {
            TimeFormat::EpochMs => cast(
                &cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
                &DataType::Int64,
            )?,
            TimeFormat::EpochS => cast(
                &cast(column, &DataType::Timestamp(TimeUnit::Second, None))?,
                &DataType::Int64,
            )?,
            TimeFormat::Rfc3339 => cast(
                &cast(
                    column,
                    &DataType::Timestamp(TimeUnit::Millisecond, Some(utc)),
                )?,
                &DataType::Utf8,
            )?,
        };
        let mut columns = batch.columns().to_vec();
        columns[i] = time;
        let fields: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(j, f)| {
                if j == i {
                    Arc::new(
                        f.as_ref()
                            .clone()
                            .with_data_type(columns[i].data_type().clone()),
                    )
                } else {
                    Arc::clone(f)
                }
            })
            .collect();
        RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)
            .map_err(|e| e.to_string())
    }
}

/// One row group of a Parquet input, to decode on a worker.
#[derive(Debug, Clone)]
pub struct RowGroup {
    /// The input it belongs to.
    pub(crate) input: Arc<ParquetInput>,
    /// Its index in the file.
    pub(crate) index: usize,
    /// The 1-based number of its first row in the file.
    pub(crate) first_row: u64,
    /// Its rows.
    pub(crate) rows: u64,
    /// Rows at its start already processed (a run resumed in the middle of it).
    pub(crate) skip: u64,
    /// How many engine batches the rest is cut into.
    pub(crate) slices: u64,
    /// The digest of the row groups before it, and up to it (see [`ParquetInput::digest`]).
    pub(crate) digests: (u64, u64),
}

impl RowGroup {
    /// Its compressed size in the file.
    pub(crate) fn compressed_bytes(&self) -> usize {
        let size = self
            .input
            .meta
            .metadata()
            .row_group(self.index)
            .compressed_size();
        size.max(0) as usize
    }

    /// Decodes the row group; the error says which row group of which file failed.
    pub(crate) fn decode(&self) -> std::result::Result<DecodedGroup, String> {
        let decoded = self.input.decode(self.index).and_then(|columns| {
            let parsing = self.input.for_parsing(&columns)?;
            Ok(DecodedGroup { columns, parsing })
        });
        decoded.map_err(|e| format!("{} cannot be read: {e}", self.describe()))
    }

    /// Names it in messages: its index, file and rows.
    pub(crate) fn describe(&self) -> String {
        format!(
            "row group {} of {} (rows {}..{})",
            self.index,
            self.input.name,
            self.first_row,
            self.first_row + self.rows
        )
    }

    /// The row ranges (0-based, within the row group) of its pieces, after the skipped rows.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = std::ops::Range<u64>> + '_ {
        let rest = self.rows.saturating_sub(self.skip);
        let n = self.slices.clamp(1, rest.max(1));
        let per = rest.div_ceil(n).max(1);
        (0..n).map(move |j| {
            let start = self.skip + j * per;
            start.min(self.rows)..(start + per).min(self.rows)
        })
    }

    /// Where the source stands after the piece that ends at row `end` (0-based, exclusive) of
    /// the row group: the next row group once it is done, else this one at the next row.
    pub(crate) fn position_after(&self, end: u64) -> (Position, u64) {
        if end >= self.rows {
            let position = Position::Stream {
                offset: self.index as u64 + 1,
                line: self.first_row + self.rows,
            };
            (position, self.digests.1)
        } else {
            let position = Position::Stream {
                offset: self.index as u64,
                line: self.first_row + end,
            };
            (position, self.digests.0)
        }
    }
}

/// A decoded row group: its columns as read, and the same with the time column as the parse
/// stage reads it.
pub(crate) struct DecodedGroup {
    pub(crate) columns: RecordBatch,
    pub(crate) parsing: RecordBatch,
}

/// Appends the rows of `batch` as JSON lines (nulls written out).
pub(crate) fn json_lines(
    batch: &RecordBatch,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(out);
    writer.write(batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// Reads a Parquet file one row group per batch.
#[derive(Debug)]
pub struct ParquetSource {
    input: Arc<ParquetInput>,
    next: usize,
    next_row: u64,
    /// Rows of the next row group already processed (a run resumed in the middle of it).
    skip: u64,
    slice_rows: usize,
    max_slices: usize,
}

impl ParquetSource {
    /// Reads `input` from its first row group.
    pub fn new(input: ParquetInput) -> Self {
        ParquetSource {
            input: Arc::new(input),
            next: 0,
            next_row: 1,
            skip: 0,
            slice_rows: usize::MAX,
            max_slices: 1,
        }
    }

    /// Reads `input` from the row group a checkpoint stands at (`position`, with the digest it
    /// recorded), once it is known to be the file the checkpoint read.
    pub fn resuming(input: ParquetInput, position: &Position, digest: Option<u64>) -> Result<Self> {
        let refuse = |what: String| Error::Input {
            path: PathBuf::from(&input.name),
            error: io::Error::other(format!(
                "{what}: not the input the checkpoint was taken on; run with --fresh to \
                     start over"
            )),
        };
        let &Position::Stream { offset, line } = position else {
            return Err(refuse(
                "the checkpoint was taken on a partitioned source".into(),
            ));
        };
        let group = offset as usize;
        if group > input.row_groups() {
            return Err(refuse(format!(
                "has {} row groups but the checkpoint is at row group {group}",
                input.row_groups()
            )));
        }
        // A checkpoint stands at the start of row group `group`, or inside it (at a piece).
        let before: u64 = (0..group).map(|g| input.rows_of(g)).sum();
        let rows = if group < input.row_groups() {
            input.rows_of(group)
        } else {
            0
        };
        let inside = line.checked_sub(before + 1).filter(|&skip| skip <= rows);
        let Some(skip) = inside.filter(|_| digest.is_none_or(|d| d == input.digest(group))) else {
            return Err(refuse(format!(
                "differs from the checkpoint's in its first {group} row groups"
            )));
        };
        Ok(ParquetSource {
            input: Arc::new(input),
            next: group,
            next_row: before + 1,
            skip,
            slice_rows: usize::MAX,
            max_slices: 1,
        })
    }
}

impl Source for ParquetSource {
    fn name(&self) -> &str {
        &self.input.name
    }

    fn is_live(&self) -> bool {
        false
    }

    fn start(&mut self, batching: &Batching) -> Result<()> {
        self.slice_rows = batching.slice_rows.max(1);
        self.max_slices = batching.max_slices.max(1);
        Ok(())
    }

    fn parquet_schema(&self) -> Option<SchemaRef> {
        Some(Arc::clone(self.input.schema()))
    }

    fn next_batch(&mut self, _buf: Vec<u8>) -> Result<Option<SourceBatch>> {
        if self.next >= self.input.row_groups() {
            return Ok(None);
        }
        let index = self.next;
        let rows = self.input.rows_of(index);
        let skip = std::mem::take(&mut self.skip).min(rows);
        let rest = (rows - skip) as usize;
        let slices = rest.div_ceil(self.slice_rows).clamp(1, self.max_slices) as u64;
        let group = RowGroup {
            input: Arc::clone(&self.input),
            index,
            first_row: self.next_row,
            rows,
            skip,
            slices,
            digests: (self.input.digest(index), self.input.digest(index + 1)),
        };
        self.next += 1;
        self.next_row += rows;
        let (end, digest) = group.position_after(rows);
        Ok(Some(SourceBatch {
            raw: RawBatch::RowGroup(group),
            records: rest as u64,
            end,
            partitions: Vec::new(),
            digest: Some(digest),
            slices,
        }))
    }
}

/// Rows per row group of a Parquet output (as DuckDB writes them).
pub const OUTPUT_ROW_GROUP_ROWS: usize = 122_880;

/// Encodes record batches as Parquet row groups, on any thread: the workers encode the row
/// groups of their batches in parallel, and the sink only appends them to the file in order.
pub struct RowGroupEncoder {
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
}

impl std::fmt::Debug for RowGroupEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowGroupEncoder").finish_non_exhaustive()
    }
}

/// One encoded row group, ready to append.
pub struct EncodedRowGroup {
    chunks: Vec<ArrowColumnChunk>,
    rows: usize,
}

impl std::fmt::Debug for EncodedRowGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedRowGroup")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl RowGroupEncoder {
    /// Encodes `batch` (of the output's schema) as one row group.
    pub fn encode(&self, batch: &RecordBatch) -> parquet::errors::Result<EncodedRowGroup> {
        let mut writers = self.factory.create_column_writers(0)?;
        let mut next = writers.iter_mut();
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                let writer = next.next().ok_or_else(|| {
                    parquet::errors::ParquetError::General("more leaves than columns".into())
                })?;
                writer.write(&leaf)?;
            }
        }
        let chunks = writers
            .into_iter()
            .map(ArrowColumnWriter::close)
            .collect::<parquet::errors::Result<Vec<_>>>()?;
        Ok(EncodedRowGroup {
            chunks,
            rows: batch.num_rows(),
        })
    }
}

/// Writes enriched events as a Parquet file: the input's columns and one typed column per
/// feature (see [`crate::codec::columns`]), one row group per batch, encoded by the workers.
/// The file is written under a temporary name and takes its own name when the run finishes,
/// so a reader never sees a file without its footer.
pub struct ParquetSink {
    path: PathBuf,
    partial: PathBuf,
    file: Option<File>,
    writer: Option<SerializedFileWriter<File>>,
    encoder: Option<Arc<RowGroupEncoder>>,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// Creates the output `path` (first as `<path>.partial`).
    pub fn create(path: &Path) -> io::Result<ParquetSink> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial)?;
        Ok(ParquetSink {
            path: path.to_owned(),
            partial,
            file: Some(file),
            writer: None,
            encoder: None,
        })
    }

    fn not_started() -> io::Error {
        io::Error::other("the Parquet output was not given its schema")
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, lines: &[u8], _keys: Option<&RecordKeys>) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        Err(io::Error::other(
            "a Parquet output takes columns, not lines",
        ))
    }

    fn output_format(&self) -> crate::connector::OutputFormat {
        crate::connector::OutputFormat::Parquet
    }

    fn set_schema(&mut self, schema: SchemaRef) -> io::Result<()> {
        let file = self.file.take().ok_or_else(Self::not_started)?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP_ROWS))
            .build();
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let props = Arc::new(props);
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)
            .map_err(io::Error::other)?;
        let writer = SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), props)
            .map_err(io::Error::other)?;
        let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
        self.encoder = Some(Arc::new(RowGroupEncoder { factory, schema }));
        self.writer = Some(writer);
        Ok(())
    }

    fn row_group_encoder(&self) -> Option<Arc<RowGroupEncoder>> {
        self.encoder.clone()
    }

    fn write_row_group(&mut self, group: EncodedRowGroup) -> io::Result<()> {
        if group.rows == 0 {
            return Ok(());
        }
        let writer = self.writer.as_mut().ok_or_else(Self::not_started)?;
        let mut row_group = writer.next_row_group().map_err(io::Error::other)?;
        for chunk in group.chunks {
            chunk
                .append_to_row_group(&mut row_group)
                .map_err(io::Error::other)?;
        }
        row_group.close().map_err(io::Error::other)?;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        // A Parquet file is complete only at the end, when its footer is written.
        Ok(())
    }

    fn sync(&mut self) -> io::Result<Option<SyncJob>> {
        Ok(None)
    }

    fn cut_back(&mut self, len: u64) -> io::Result<u64> {
        if len == 0 {
            return Ok(0);
        }
        Err(io::Error::other(
            "a Parquet output cannot be cut back to a checkpoint; run with --fresh",
        ))
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let file = writer.into_inner().map_err(io::Error::other)?;
        file.sync_data()?;
        std::fs::rename(&self.partial, &self.path)
    }
}
