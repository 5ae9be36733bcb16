//! JSONL byte streams cut into batches of whole lines.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::checkpoint::InputDigest;
use crate::connector::source::{Position, SourceBatch};
use crate::dataflow::batch::RawBatch;
use crate::error::{Error, Result};

/// Reads whole JSONL lines into batches of about `batch_bytes` bytes.
pub(crate) struct LineBatcher {
    feed: Feed,
    name: PathBuf,
    batch_bytes: usize,
    carry: Vec<u8>,
    next_line: u64,
    next_offset: u64,
    /// Of the bytes read so far.
    digest: InputDigest,
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
            .map_err(|error| Error::Input {
                path: name.to_path_buf(),
                error,
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
    pub(crate) fn new(reader: Box<dyn Read + Send>, name: PathBuf, batch_bytes: usize) -> Self {
        LineBatcher {
            feed: Feed::Direct(reader),
            name,
            batch_bytes: batch_bytes.max(1),
            carry: Vec::new(),
            next_line: 1,
            next_offset: 0,
            digest: InputDigest::default(),
            eof: false,
        }
    }

    /// The same batcher for a reader already positioned at byte `offset`, line `line` of its
    /// input (a resumed run), whose bytes before have `digest`.
    pub(crate) fn starting_at(mut self, offset: u64, line: u64, digest: InputDigest) -> Self {
        self.next_offset = offset;
        self.next_line = line;
        self.digest = digest;
        self
    }

    /// Starts reading `reader`, a live input (a pipe, a terminal): a batch is also cut once it
    /// holds at least one whole line and `wait` has passed since its first byte arrived, so a
    /// slow input is not held back until a batch fills.
    pub(crate) fn with_wait(
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
    pub(crate) fn next_batch(&mut self, mut buf: Vec<u8>) -> Result<Option<SourceBatch>> {
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
                        .map_err(|error| Error::Input {
                            path: self.name.clone(),
                            error,
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
        self.next_offset += data.len() as u64;
        self.digest.add(&data);
        Ok(Some(SourceBatch {
            raw: RawBatch::Lines { data, first_line },
            records: lines,
            end: Position::Stream {
                offset: self.next_offset,
                line: self.next_line,
            },
            partitions: Vec::new(),
            digest: self.digest.value(),
            slices: 1,
        }))
    }
}
