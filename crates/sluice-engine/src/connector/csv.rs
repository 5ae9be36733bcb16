//! CSV byte streams cut into batches of rows.

use std::io::Read;
use std::path::PathBuf;

use crate::connector::source::{Position, SourceBatch};
use crate::dataflow::batch::{CsvRow, RawBatch};
use crate::error::{Error, Result};

/// Reads CSV rows into batches of `rows` rows.
pub(crate) struct CsvBatcher {
    reader: csv::Reader<Box<dyn Read + Send>>,
    header: Vec<String>,
    name: PathBuf,
    rows: usize,
    done: bool,
}

impl CsvBatcher {
    /// Starts reading `reader` and reads its header.
    pub(crate) fn new(reader: Box<dyn Read + Send>, name: PathBuf, rows: usize) -> Result<Self> {
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
            name,
            rows: rows.max(1),
            done: false,
        })
    }

    /// The column names.
    pub(crate) fn header(&self) -> &[String] {
        &self.header
    }

    /// The next batch of rows, or `None` at the end of the input.
    pub(crate) fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
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
                            path: self.name.clone(),
                            error: std::io::Error::other(e.to_string()),
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
        let records = rows.len() as u64;
        let end = Position::Stream {
            offset: self.reader.position().byte(),
            line: self.reader.position().line(),
        };
        Ok(Some(SourceBatch {
            raw: RawBatch::Csv(rows),
            records,
            end,
            partitions: Vec::new(),
            digest: None,
            slices: 1,
        }))
    }
}
