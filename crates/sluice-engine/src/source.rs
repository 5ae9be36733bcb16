//! Sources: read records from a file or stdin into batches.

use std::io::Read;
use std::path::PathBuf;

use crate::batch::{CsvRow, RawBatch};
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
    reader: Box<dyn Read + Send>,
    name: PathBuf,
    batch_bytes: usize,
    carry: Vec<u8>,
    next_line: u64,
    eof: bool,
}

impl LineBatcher {
    /// Starts reading `reader`.
    pub fn new(reader: Box<dyn Read + Send>, name: PathBuf, batch_bytes: usize) -> Self {
        LineBatcher {
            reader,
            name,
            batch_bytes: batch_bytes.max(1),
            carry: Vec::new(),
            next_line: 1,
            eof: false,
        }
    }

    /// The next batch of whole lines, filled into `buf` (a recycled buffer), or `None` at the
    /// end of the input.
    pub fn next_batch(&mut self, mut buf: Vec<u8>) -> Result<Option<(RawBatch, u64)>> {
        buf.clear();
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        let mut data = buf;
        loop {
            while !self.eof && data.len() < self.batch_bytes {
                let len = data.len();
                data.resize(len + (self.batch_bytes - len).max(64 * 1024), 0);
                let n = loop {
                    match self.reader.read(&mut data[len..]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(source) => {
                            return Err(Error::Input {
                                path: self.name.clone(),
                                source,
                            })
                        }
                    }
                };
                data.truncate(len + n);
                if n == 0 {
                    self.eof = true;
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
        Ok(Some((RawBatch::Lines { data, first_line }, lines)))
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
