//! Sources: read records from a file or stdin into batches.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::dataflow::batch::{CsvRow, RawBatch};
use crate::error::{Error, Result};

/// Record format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// An input stream and its name (a path, or `-` for stdin).
pub struct Input {
    /// Where records come from.
    pub reader: Box<dyn Read + Send>,
    /// A path, or `-` for stdin: used in error messages and dead letters.
    pub name: PathBuf,
    /// Record format.
    pub format: InputFormat,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish()
    }
}

/// Reads whole JSONL lines into batches of about `batch_bytes` bytes.
pub struct LineBatcher {
    feed: Feed,
    name: PathBuf,
    batch_bytes: usize,
    carry: Vec<u8>,
    next_line: u64,
    next_offset: u64,
    eof: bool,
}

/// Where a batcher's bytes come from.
enum Feed {
    /// Straight from the reader: a batch is cut when it is full (files never stall).
    Direct(Box<dyn Read + Send>),
    /// From a thread that reads chunks as they arrive, so that a batch can also be cut once
    /// it holds a whole line and `wait` has passed since its first byte (a slow live input).
    Timed {
        chunks: crossbeam_channel::Receiver<std::io::Result<Vec<u8>>>,
        pending: Vec<u8>,
        at: usize,
        wait: Duration,
    },
}

/// What one read from a feed gave.
enum Fill {
    /// This many bytes.
    Bytes(usize),
    /// The end of the input.
    Eof,
    /// Nothing before the deadline.
    TimedOut,
}

impl Feed {
    /// A feed read by a helper thread; fails when the thread cannot start (the input would
    /// otherwise look empty).
    fn timed(
        mut reader: Box<dyn Read + Send>,
        wait: Duration,
        name: &std::path::Path,
    ) -> Result<Feed> {
        let (tx, rx) = crossbeam_channel::bounded(4);
        // Detached: it ends at the end of the input, or when the batcher is gone.
        std::thread::Builder::new()
            .name("sluice-input".into())
            .spawn(move || loop {
                let mut chunk = vec![0; 64 * 1024];
                match reader.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        if tx.send(Ok(chunk)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })
            .map_err(|source| Error::Input {
                path: name.to_path_buf(),
                source,
            })?;
        Ok(Feed::Timed {
            chunks: rx,
            pending: Vec::new(),
            at: 0,
            wait,
        })
    }

    /// Reads into `buf`, waiting at most until `deadline` (when set) on a timed feed.
    fn fill(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> std::io::Result<Fill> {
        match self {
            Feed::Direct(reader) => loop {
                match reader.read(buf) {
                    Ok(0) => return Ok(Fill::Eof),
                    Ok(n) => return Ok(Fill::Bytes(n)),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Feed::Timed {
                chunks,
                pending,
                at,
                ..
            } => loop {
                if *at < pending.len() {
                    let n = buf.len().min(pending.len() - *at);
                    buf[..n].copy_from_slice(&pending[*at..*at + n]);
                    *at += n;
                    return Ok(Fill::Bytes(n));
                }
                let next = match deadline {
                    Some(d) => match chunks.recv_deadline(d) {
                        Ok(c) => c,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            return Ok(Fill::TimedOut)
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            return Ok(Fill::Eof)
                        }
                    },
                    None => match chunks.recv() {
                        Ok(c) => c,
                        Err(_) => return Ok(Fill::Eof),
                    },
                };
                *pending = next?;
                *at = 0;
            },
        }
    }

    fn wait(&self) -> Option<Duration> {
        match self {
            Feed::Direct(_) => None,
            Feed::Timed { wait, .. } => Some(*wait),
        }
    }
}

impl LineBatcher {
    /// Starts reading `reader`; batches are cut when full.
    pub fn new(reader: Box<dyn Read + Send>, name: PathBuf, batch_bytes: usize) -> Self {
        LineBatcher {
            feed: Feed::Direct(reader),
            name,
            batch_bytes: batch_bytes.max(1),
            carry: Vec::new(),
            next_line: 1,
            next_offset: 0,
            eof: false,
        }
    }

    /// The same batcher for a reader already positioned at byte `offset`, line `line` of its
    /// input (a resumed run): batches carry their true positions.
    pub fn starting_at(mut self, offset: u64, line: u64) -> Self {
        self.next_offset = offset;
        self.next_line = line;
        self
    }

    /// Starts reading `reader`, a live input (a pipe, a terminal): a batch is also cut once it
    /// holds at least one whole line and `wait` has passed since its first byte arrived, so a
    /// slow input is not held back until a batch fills.
    pub fn with_wait(
        reader: Box<dyn Read + Send>,
        name: PathBuf,
        batch_bytes: usize,
        wait: Duration,
    ) -> Result<Self> {
        Ok(LineBatcher {
            feed: Feed::timed(reader, wait, &name)?,
            ..LineBatcher::new(Box::new(std::io::empty()), name, batch_bytes)
        })
    }

    /// The next batch of whole lines, filled into `buf` (a recycled buffer), or `None` at the
    /// end of the input.
    pub fn next_batch(&mut self, mut buf: Vec<u8>) -> Result<Option<(RawBatch, u64)>> {
        buf.clear();
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        let mut data = buf;
        let wait = self.feed.wait();
        let mut deadline = (!data.is_empty())
            .then(Instant::now)
            .zip(wait)
            .map(|(t, w)| t + w);
        loop {
            while !self.eof && data.len() < self.batch_bytes {
                let len = data.len();
                data.resize(len + (self.batch_bytes - len).max(64 * 1024), 0);
                // Wait for more only until the deadline, and only once a whole line is here.
                let until = deadline.filter(|_| memchr::memchr(b'\n', &data[..len]).is_some());
                let filled =
                    self.feed
                        .fill(&mut data[len..], until)
                        .map_err(|source| Error::Input {
                            path: self.name.clone(),
                            source,
                        })?;
                match filled {
                    Fill::Bytes(n) => {
                        data.truncate(len + n);
                        if deadline.is_none() {
                            deadline = wait.map(|w| Instant::now() + w);
                        }
                    }
                    Fill::Eof => {
                        data.truncate(len);
                        self.eof = true;
                    }
                    Fill::TimedOut => {
                        data.truncate(len);
                        break;
                    }
                }
            }
            if data.is_empty() {
                return Ok(None);
            }
            if self.eof {
                break;
            }
            match memchr::memrchr(b'\n', &data) {
                Some(last) => {
                    self.carry.extend_from_slice(&data[last + 1..]);
                    data.truncate(last + 1);
                    break;
                }
                // One line longer than a batch: keep reading until it ends.
                None => self.batch_bytes = data.len() * 2,
            }
        }
        let lines =
            memchr::memchr_iter(b'\n', &data).count() as u64 + u64::from(!data.ends_with(b"\n"));
        let first_line = self.next_line;
        self.next_line += lines;
        let offset = self.next_offset;
        self.next_offset += data.len() as u64;
        Ok(Some((
            RawBatch::Lines {
                data,
                first_line,
                offset,
            },
            lines,
        )))
    }
}

/// Reads CSV rows into batches of `rows` rows.
pub struct CsvBatcher {
    reader: csv::Reader<Box<dyn Read + Send>>,
    header: Vec<String>,
    rows: usize,
    done: bool,
}

impl CsvBatcher {
    /// Starts reading `reader` and reads its header.
    pub fn new(reader: Box<dyn Read + Send>, name: PathBuf, rows: usize) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(reader);
        let header = reader
            .headers()
            .map_err(|e| Error::CsvHeader {
                path: name.clone(),
                message: e.to_string(),
            })?
            .iter()
            .map(str::to_owned)
            .collect();
        Ok(CsvBatcher {
            reader,
            header,
            rows: rows.max(1),
            done: false,
        })
    }

    /// The column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The next batch of rows, or `None` at the end of the input.
    pub fn next_batch(&mut self) -> Result<Option<(RawBatch, u64)>> {
        if self.done {
            return Ok(None);
        }
        let mut rows = Vec::with_capacity(self.rows);
        let mut record = csv::ByteRecord::new();
        while rows.len() < self.rows {
            let line = self.reader.position().line() + 1;
            match self.reader.read_byte_record(&mut record) {
                Ok(true) => rows.push(CsvRow {
                    line: record.position().map_or(line, |p| p.line()),
                    fields: Ok(record.clone()),
                }),
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    if let csv::ErrorKind::Io(_) = e.kind() {
                        return Err(Error::Input {
                            path: PathBuf::from("csv input"),
                            source: std::io::Error::other(e.to_string()),
                        });
                    }
                    rows.push(CsvRow {
                        line,
                        fields: Err(e.to_string()),
                    });
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len() as u64;
        Ok(Some((RawBatch::Csv(rows), n)))
    }
}
