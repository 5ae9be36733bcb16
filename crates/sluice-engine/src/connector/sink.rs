//! The sink side of the seam: where formatted records go.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use std::sync::Arc;

use crate::connector::parquet::{EncodedRowGroup, RowGroupEncoder};
use crate::connector::OutputFormat;

/// Makes what a sink had written when it was created durable; run on any thread.
pub type SyncJob = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// The message key of each record of a formatted batch, for sinks that key their records.
#[derive(Debug, Default)]
pub struct RecordKeys {
    bytes: Vec<u8>,
    /// Per record: its key's range in `bytes`, or `u32::MAX` as the start for no key.
    ranges: Vec<(u32, u32)>,
}

impl RecordKeys {
    /// The key of the next record (`None`: no key).
    pub(crate) fn push(&mut self, key: Option<&[u8]>) {
        match key {
            Some(k) => {
                let start = self.bytes.len() as u32;
                self.bytes.extend_from_slice(k);
                self.ranges.push((start, self.bytes.len() as u32));
            }
            None => self.ranges.push((u32::MAX, 0)),
        }
    }

    /// The key of record `i` of the batch.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let &(start, end) = self.ranges.get(i)?;
        (start != u32::MAX).then(|| &self.bytes[start as usize..end as usize])
    }

    /// Records with an entry.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Where a run writes enriched events or dead letters. The writer thread calls it in input
/// order; a sink need not be `Sync`.
pub trait Sink: Send {
    /// Takes whole lines, each ending in `\n`, one per record; `keys` holds each record's
    /// message key when the sink names a [`Sink::key_field`].
    fn write(&mut self, lines: &[u8], keys: Option<&RecordKeys>) -> io::Result<()>;

    /// What the sink writes: JSONL or CSV lines (through [`Sink::write`]), or Parquet
    /// row groups (through [`Sink::write_row_group`]).
    fn output_format(&self) -> OutputFormat {
        OutputFormat::Jsonl
    }

    /// A columnar sink: the schema of every batch it will take, before the first.
    fn set_schema(&mut self, _schema: arrow_schema::SchemaRef) -> io::Result<()> {
        Ok(())
    }

    /// A Parquet sink (after [`Sink::set_schema`]): what encodes its row groups, shared
    /// with the workers.
    fn row_group_encoder(&self) -> Option<Arc<RowGroupEncoder>> {
        None
    }

    /// A Parquet sink: appends the row group of one batch, in input order.
    fn write_row_group(&mut self, _group: EncodedRowGroup) -> io::Result<()> {
        Err(io::Error::other("this output takes lines, not row groups"))
    }

    /// Hands what is buffered on (to the file, the network) without waiting for it to be
    /// durable.
    fn flush(&mut self) -> io::Result<()>;

    /// A job that returns once everything written so far is durable (a file synced, messages
    /// acknowledged), to run on a helper thread while writing goes on; `None` when the sink
    /// has nothing to make durable (stdout).
    fn sync(&mut self) -> io::Result<Option<SyncJob>>;

    /// Cuts the output back to `len` bytes, what a checkpoint had written, before a resumed
    /// run writes; returns the length it now has. A sink that cannot take back what it wrote
    /// fails unless `len` is 0 (or, for diagnostics such as stderr, goes on from 0).
    fn cut_back(&mut self, len: u64) -> io::Result<u64>;

    /// The field of the event whose value keys each message (a keyed sink such as Kafka).
    fn key_field(&self) -> Option<&str> {
        None
    }

    /// After the last write: flushes and waits for what a sink must deliver before the run
    /// may end (a remote sink's acknowledgements).
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// Writes at least this long bypass a file sink's buffer.
const DIRECT_WRITE: usize = 64 * 1024;

/// A sink over any writer (stdout, a buffer) or a file, which it can sync and cut back.
pub struct StreamSink<'a> {
    out: Out<'a>,
    format: OutputFormat,
    what: String,
    name: String,
    appends: bool,
}

enum Out<'a> {
    Writer(BufWriter<Box<dyn Write + Send + 'a>>),
    File(BufWriter<File>),
}

impl<'a> StreamSink<'a> {
    /// Writes to `writer` (nothing to sync, cannot be cut back). `what` says what it holds in
    /// errors ("output", "dead letters").
    pub fn new(writer: Box<dyn Write + Send + 'a>, what: impl Into<String>) -> Self {
        StreamSink {
            out: Out::Writer(BufWriter::with_capacity(1 << 20, writer)),
            format: OutputFormat::Jsonl,
            what: what.into(),
            name: "the output stream".into(),
            appends: false,
        }
    }

    /// Writes to `writer`, which a resumed run appends to instead of cutting it back
    /// (diagnostics such as stderr: what came after the checkpoint is written again).
    pub fn appending(writer: Box<dyn Write + Send + 'a>, what: impl Into<String>) -> Self {
        StreamSink {
            appends: true,
            ..StreamSink::new(writer, what)
        }
    }

    /// Writes to `file` from its current end; syncs it and cuts it back when asked.
    pub fn file(mut file: File, what: impl Into<String>) -> io::Result<Self> {
        file.seek(SeekFrom::End(0))?;
        Ok(StreamSink {
            out: Out::File(BufWriter::with_capacity(1 << 20, file)),
            format: OutputFormat::Jsonl,
            what: what.into(),
            name: "the output file".into(),
            appends: false,
        })
    }

    /// The same sink, writing lines of `format` (JSONL or CSV).
    pub fn with_format(mut self, format: OutputFormat) -> Self {
        self.format = format;
        self
    }

    /// The same sink, named `name` (a path, `stdout`) in errors.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.out {
            Out::Writer(w) => w,
            Out::File(w) => w,
        }
    }
}

impl Sink for StreamSink<'_> {
    fn output_format(&self) -> OutputFormat {
        self.format
    }

    fn write(&mut self, lines: &[u8], _keys: Option<&RecordKeys>) -> io::Result<()> {
        // A formatted batch (hundreds of KiB) goes straight to the file after what is
        // buffered, instead of being copied through the buffer first.
        if lines.len() >= DIRECT_WRITE {
            if let Out::File(w) = &mut self.out {
                w.flush()?;
                return w.get_mut().write_all(lines);
            }
        }
        self.writer().write_all(lines)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }

    fn sync(&mut self) -> io::Result<Option<SyncJob>> {
        self.writer().flush()?;
        let Out::File(w) = &self.out else {
            return Ok(None);
        };
        let file = w.get_ref().try_clone()?;
        Ok(Some(Box::new(move || file.sync_data())))
    }

    fn cut_back(&mut self, len: u64) -> io::Result<u64> {
        let Out::File(w) = &mut self.out else {
            if len == 0 || self.appends {
                return Ok(0);
            }
            return Err(io::Error::other(format!(
                "cannot resume into {}: the {} written before the checkpoint cannot be taken \
                 back; write it to a file or run with --fresh",
                self.name, self.what
            )));
        };
        w.flush()?;
        let file = w.get_mut();
        let now = file.metadata()?.len();
        if now < len {
            return Err(io::Error::other(format!(
                "{} {} has {now} bytes but the checkpoint wrote {len}: it was changed since; \
                 run with --fresh to start over",
                self.what, self.name
            )));
        }
        file.set_len(len)?;
        file.seek(SeekFrom::Start(len))?;
        Ok(len)
    }
}
