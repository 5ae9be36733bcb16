//! Checkpoints: consistent snapshots of local state plus the input and output positions they
//! correspond to, so that a run killed at any moment resumes with byte-identical output.
//!
//! Layout under the checkpoint directory (format version 6, see `docs/checkpoints.md`):
//!
//! ```text
//! chk-0000000007/
//!   shard-0.bin      one file per shard: "SLUICEKG", format (u32 LE), then the key groups:
//!   shard-1.bin      group, per key spec [(encoded key, registers)], in `sluice_core::wire` form
//!   manifest.json    written last, atomically (temp file, fsync, rename, fsync directory)
//! ```
//!
//! A checkpoint is complete when its manifest exists, parses, has this format version and every
//! file it lists has the recorded size and CRC-32. Anything else is reported and skipped in
//! favour of the previous complete checkpoint.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_core::wire::{Reader, Wire, WireError, Writer};
use sluice_core::{KeyState, KEY_GROUPS};

use crate::connector::Position;
use crate::error::{Error, Result};
use crate::state::prefetch::{prefetch, prefetch_ptr};

/// Version of the checkpoint format written. Format 7 added the value series (first, last,
/// lag, quantile) to each key's registers.
pub const FORMAT_VERSION: u32 = 7;

/// Formats this build reads: 6 is 7 without value series (no pipeline of format 6 had any).
/// A checkpoint of another format is refused, naming both.
pub const READABLE_FORMATS: [u32; 2] = [6, 7];

/// Whether a checkpoint of `format` can be read.
pub fn readable(format: u32) -> bool {
    READABLE_FORMATS.contains(&format)
}

/// The file of a checkpoint holding the relation features' link indexes (written by the
/// router; every other file is a shard file).
pub const LINKS_FILE: &str = "links.bin";

/// Magic bytes at the start of the links file.
const LINKS_MAGIC: &[u8; 8] = b"SLUICELK";

/// Writes the links file of a checkpoint: the magic, the format version, then `body`.
pub fn write_links(dir: &Path, body: &[u8]) -> Result<FileEntry> {
    let mut bytes = Vec::with_capacity(body.len() + 12);
    bytes.extend_from_slice(LINKS_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(body);
    write_file(dir, LINKS_FILE, &bytes)
}

/// The body of a verified checkpoint's links file, if it has one.
pub fn load_links(root: &Path, manifest: &Manifest) -> Result<Option<Vec<u8>>> {
    if !manifest.files.iter().any(|f| f.name == LINKS_FILE) {
        return Ok(None);
    }
    let path = checkpoint_dir(root, manifest.id).join(LINKS_FILE);
    let bytes = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
    if bytes.len() < 12 || &bytes[..8] != LINKS_MAGIC {
        return Err(ckpt_error(format!(
            "{}: not a Sluice links file",
            path.display()
        )));
    }
    Ok(Some(bytes[12..].to_vec()))
}

/// Magic bytes at the start of a shard file.
const SHARD_MAGIC: &[u8; 8] = b"SLUICEKG";

/// Where and how often checkpoints are taken.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Time between two checkpoints.
    pub interval: Duration,
    /// Complete checkpoints kept (older ones are deleted).
    pub keep: usize,
}

/// Where a byte-stream input stood at a checkpoint: everything before it is reflected in the
/// state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Byte offset of the first record not yet read.
    pub offset: u64,
    /// Its 1-based line number.
    pub line: u64,
    /// [`InputDigest`] of the bytes before `offset`: a resumed run checks that it reads the
    /// same input, not only one at least as long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

/// A digest of an input up to a position: its first and its last (up to) 4 KiB before the
/// position. Cheap to keep while reading and to recompute from a file, it tells apart
/// another file of the same length, and still accepts a file that was appended to.
#[derive(Debug, Default, Clone)]
pub struct InputDigest {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl InputDigest {
    /// Bytes at each end that the digest covers.
    pub const SPAN: usize = 4096;

    /// Takes the next bytes of the input.
    pub fn add(&mut self, data: &[u8]) {
        if self.head.len() < Self::SPAN {
            let n = (Self::SPAN - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        if data.len() >= Self::SPAN {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - Self::SPAN..]);
        } else {
            self.tail.extend_from_slice(data);
            let extra = self.tail.len().saturating_sub(Self::SPAN);
            self.tail.drain(..extra);
        }
    }

    /// The digest of the bytes taken so far (`None` before any).
    pub fn value(&self) -> Option<u64> {
        (!self.head.is_empty()).then(|| {
            let mut both = self.head.clone();
            both.extend_from_slice(&self.tail);
            sluice_core::key_hash(&both)
        })
    }

    /// The digest of the first `len` bytes of `input`, read from it, to compare with a
    /// checkpoint's and to go on from.
    pub fn read(
        input: &mut (impl std::io::Read + std::io::Seek),
        len: u64,
    ) -> std::io::Result<InputDigest> {
        use std::io::SeekFrom;
        let span = (Self::SPAN as u64).min(len);
        let mut head = vec![0; span as usize];
        input.seek(SeekFrom::Start(0))?;
        input.read_exact(&mut head)?;
        let mut tail = vec![0; span as usize];
        input.seek(SeekFrom::Start(len - span))?;
        input.read_exact(&mut tail)?;
        Ok(InputDigest { head, tail })
    }
}

/// Where the outputs stood at a checkpoint: their lengths once every event before the source
/// position was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPosition {
    /// Bytes of enriched events.
    pub events_bytes: u64,
    /// Bytes of dead letters.
    pub dead_letters_bytes: u64,
}

/// A checkpoint in progress: the router puts it between two batches.
#[derive(Debug, Clone)]
pub struct Barrier {
    /// Checkpoint number.
    pub id: u64,
    /// The first batch after it.
    pub before_seq: u64,
    /// Input position of that batch.
    pub position: Position,
    /// [`InputDigest`] of a byte-stream input before it.
    pub digest: Option<u64>,
    /// Newest event time before it.
    pub newest: Option<i64>,
    /// With a partitioned source: the newest event time of each partition before it.
    pub newest_by: Vec<(u32, i64)>,
    /// When the router started it.
    pub started: std::time::Instant,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

/// The manifest of a complete checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// Checkpoint number, increasing.
    pub id: u64,
    /// Wall-clock time it completed (epoch milliseconds).
    pub created_ms: u64,
    /// Fingerprint of the pipeline's features: state is only restored into the same plan.
    pub plan: String,
    /// Shards that wrote it (any number may restore it).
    pub shards: usize,
    /// The input position, for a byte-stream input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePosition>,
    /// The output positions.
    pub sink: SinkPosition,
    /// Newest event time seen, for lateness.
    pub newest: Option<i64>,
    /// Shard files.
    pub files: Vec<FileEntry>,
    /// With a partitioned source (Kafka): where each partition this process read stood. The
    /// state of a partition's keys is its key group ([`sluice_core::partition_group`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionPosition>,
}

/// Where one partition of a partitioned source stood at a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// The partition.
    pub partition: u32,
    /// The offset of its first message not reflected in the checkpoint.
    pub offset: i64,
    /// Its newest event time, for lateness.
    pub newest: Option<i64>,
}

/// A partitioned source's part in completing a checkpoint: it records where each partition
/// stood and may refuse to complete it (its partitions were taken away meanwhile).
pub trait SourceCheckpoint: Send {
    /// Completes a checkpoint taken where the partitions stood at `offsets` (the next offset
    /// of each partition read), with these newest event times per partition: calls `commit`
    /// with the partitions' positions (which writes the manifest), or does not call it when
    /// the checkpoint must not complete. Returns whether it was committed.
    fn complete(
        &mut self,
        offsets: &std::collections::BTreeMap<u32, i64>,
        newest_by: &[(u32, i64)],
        commit: &mut dyn FnMut(Vec<PartitionPosition>) -> Result<()>,
    ) -> Result<bool>;
}

/// What a run resumes from: a verified checkpoint's positions and key groups.
#[derive(Debug)]
pub struct Resume {
    /// The checkpoint's number (the run's next checkpoint follows it).
    pub id: u64,
    /// Where the source stood.
    pub position: Position,
    /// A byte-stream source: the [`InputDigest`] of its bytes before `position`.
    pub digest: Option<u64>,
    /// Where the outputs stood.
    pub sink: SinkPosition,
    /// The newest event time before it, for lateness.
    pub newest: Option<i64>,
    /// A partitioned source: the newest event time of each partition.
    pub newest_by: Vec<(u32, i64)>,
    /// Its key groups.
    pub groups: Vec<GroupSnapshot>,
    /// The relation features' link indexes, if the pipeline has relation features.
    pub links: Option<Vec<u8>>,
}

impl Resume {
    /// Resumes from `manifest` with its loaded key groups: a partitioned source from its
    /// partitions' offsets, a byte stream from its offset and line.
    pub fn new(manifest: &Manifest, groups: Vec<GroupSnapshot>) -> Resume {
        let position = match manifest.source {
            Some(s) if manifest.partitions.is_empty() => Position::Stream {
                offset: s.offset,
                line: s.line,
            },
            _ => Position::Partitions(
                manifest
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.offset))
                    .collect(),
            ),
        };
        Resume {
            id: manifest.id,
            position,
            digest: manifest.source.and_then(|s| s.digest),
            sink: manifest.sink,
            newest: manifest.newest,
            newest_by: manifest
                .partitions
                .iter()
                .filter_map(|p| Some((p.partition, p.newest?)))
                .collect(),
            groups,
            links: None,
        }
    }

    /// Keys restored, over every key group and key spec.
    pub fn keys(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.tables.iter().map(Vec::len).sum::<usize>())
            .sum()
    }
}

/// The keys of one key group, per key spec, as snapshotted.
#[derive(Debug, Default)]
pub struct GroupSnapshot {
    /// The key group.
    pub group: u32,
    /// Per key spec: `(encoded key, registers)`.
    pub tables: Vec<Vec<(Vec<u8>, KeyState)>>,
}

/// A borrowed [`GroupSnapshot`], written without copying the state.
#[derive(Debug)]
pub struct GroupSnapshotRef<'a> {
    /// The key group.
    pub group: u32,
    /// Per key spec: `(encoded key, registers)`.
    pub tables: Vec<Vec<(&'a [u8], &'a KeyState)>>,
}

fn ckpt_error(message: impl Into<String>) -> Error {
    Error::Checkpoint(message.into())
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    ckpt_error(format!("cannot {what} {}: {e}", path.display()))
}

/// The directory of checkpoint `id`.
pub fn checkpoint_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("chk-{id:010}"))
}

/// Encodes a shard's groups into the bytes of its file.
pub fn encode_shard(groups: &[GroupSnapshotRef<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_shard_into(groups, &mut out)?;
    Ok(out)
}

/// Encodes a shard's groups into `out`, replacing its contents; a reused buffer keeps its
/// capacity (a run streams its files with [`ShardFileWriter`] instead).
pub fn encode_shard_into(groups: &[GroupSnapshotRef<'_>], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    write_shard_header(out);
    encode_groups(groups, out)
}

/// Appends a shard file's header (magic and format version) to `out`.
pub fn write_shard_header(out: &mut Vec<u8>) {
    out.extend_from_slice(SHARD_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
}

/// Size of the chunks a shard file is streamed in.
const CHUNK: usize = 4 << 20;

/// Chunks a shard may have handed to its file writer and not yet got back.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Written chunks kept for the next ones, across checkpoints: fresh memory is slow to fault in
/// (it showed up as a sixth of a checkpointed run's CPU time), and every checkpoint needs the
/// same few chunks.
static SPARE_CHUNKS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// At most this many spare chunks are kept (64 MB).
const SPARE_CHUNKS_MAX: usize = 16;

fn spare_chunk() -> Vec<u8> {
    SPARE_CHUNKS
        .lock()
        .ok()
        .and_then(|mut spare| spare.pop())
        .unwrap_or_else(|| Vec::with_capacity(CHUNK))
}

fn give_back_chunk(mut chunk: Vec<u8>) {
    chunk.clear();
    if let Ok(mut spare) = SPARE_CHUNKS.lock() {
        if spare.len() < SPARE_CHUNKS_MAX {
            spare.push(chunk);
        }
    }
}

/// Streams a shard file to disk while it is being encoded: full chunks go to a helper thread
/// that writes them (computing the CRC on the way) and gives them back for reuse. A snapshot
/// thus needs a few chunks of memory, not a copy of the state, and the encoder only waits
/// when the disk falls behind.
pub struct ShardFileWriter {
    current: Vec<u8>,
    full: Option<crossbeam_channel::Sender<Vec<u8>>>,
    done: Option<std::thread::JoinHandle<Result<FileEntry>>>,
}

impl ShardFileWriter {
    /// Starts writing `dir/name`.
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        let path = dir.join(name);
        let mut file = File::create(&path).map_err(|e| io_error("create", &path, e))?;
        let (full, to_write) = crossbeam_channel::bounded::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let name = name.to_owned();
        let done = std::thread::Builder::new()
            .name("sluice-snapshot".into())
            .spawn(move || -> Result<FileEntry> {
                let mut hasher = crc32fast::Hasher::new();
                let mut bytes = 0u64;
                for chunk in to_write {
                    file.write_all(&chunk)
                        .map_err(|e| io_error("write", &path, e))?;
                    hasher.update(&chunk);
                    bytes += chunk.len() as u64;
                    give_back_chunk(chunk);
                }
                file.sync_all().map_err(|e| io_error("sync", &path, e))?;
                Ok(FileEntry {
                    name,
                    bytes,
                    crc32: hasher.finalize(),
                })
            })
            .map_err(|e| ckpt_error(format!("cannot start a snapshot writer: {e}")))?;
        let mut current = spare_chunk();
        write_shard_header(&mut current);
        Ok(ShardFileWriter {
            current,
            full: Some(full),
            done: Some(done),
        })
    }

    /// Hands the current chunk to the helper and starts another (`last`: none).
    fn send_current(&mut self, last: bool) -> std::io::Result<()> {
        let next = if last { Vec::new() } else { spare_chunk() };
        let chunk = std::mem::replace(&mut self.current, next);
        let gone = || std::io::Error::other("the snapshot writer stopped");
        self.full
            .as_ref()
            .ok_or_else(gone)?
            .send(chunk)
            .map_err(|_| gone())
    }

    /// Hands over the last chunk and returns at once; once the file is written and synced (or
    /// has failed), its entry is passed to `then` on a helper thread.
    pub fn finish(mut self, then: impl FnOnce(Result<FileEntry>) + Send + 'static) {
        let sent = if self.current.is_empty() {
            give_back_chunk(std::mem::take(&mut self.current));
            Ok(())
        } else {
            self.send_current(true)
        };
        self.full = None; // closes the channel: the helper writes what is left and syncs
        let done = self.done.take();
        let finish = move || match done.map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => sent
                .map_err(|e| ckpt_error(format!("cannot write a snapshot: {e}")))
                .and(r),
            _ => Err(ckpt_error("the snapshot writer panicked")),
        };
        // The job travels to the helper through a slot, so that it can still be run here if
        // the helper cannot start: the shard then waits for its file, but the checkpoint is
        // still completed or failed, never left hanging.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(move || then(finish()))));
        let theirs = std::sync::Arc::clone(&slot);
        let spawned = std::thread::Builder::new()
            .name("sluice-snapshot-done".into())
            .spawn(move || run_once(&theirs));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread to finish a snapshot ({e}); finishing it here");
            run_once(&slot);
        }
    }
}

/// Runs the job in `slot` unless someone already took it.
fn run_once<F: FnOnce()>(slot: &std::sync::Mutex<Option<F>>) {
    let job = slot.lock().ok().and_then(|mut s| s.take());
    if let Some(job) = job {
        job();
    }
}

/// Where a shard file's body is encoded: a buffer that may be handed on between keys.
pub trait ShardSink {
    /// The buffer to append to.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Called between keys: hands the buffer on once it holds a chunk.
    fn key_done(&mut self) -> Result<()>;

    /// Appends the count of key groups that follow.
    fn groups(&mut self, count: usize) {
        Writer::new(self.buf(), 0).u(count as u64);
    }

    /// Appends a key group's header: its number and how many key specs (tables) follow.
    fn group(&mut self, group: u32, specs: usize) {
        let mut w = Writer::new(self.buf(), 0);
        w.u(u64::from(group));
        w.u(specs as u64);
    }

    /// Appends the count of keys of the table that follows.
    fn table(&mut self, keys: usize) {
        Writer::new(self.buf(), 0).u(keys as u64);
    }

    /// Appends one key and its registers.
    fn key(&mut self, key: &[u8], state: &KeyState) -> Result<()> {
        let mut w = Writer::new(self.buf(), 0);
        w.bytes(key);
        state.put(&mut w);
        self.key_done()
    }

    /// Appends one key and its registers already in their binary form (from the embedded
    /// store, which keeps them so).
    fn key_encoded(&mut self, key: &[u8], state: &[u8]) -> Result<()> {
        let buf = self.buf();
        Writer::new(buf, 0).bytes(key);
        buf.extend_from_slice(state);
        self.key_done()
    }
}

impl ShardSink for Vec<u8> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self
    }

    fn key_done(&mut self) -> Result<()> {
        Ok(())
    }
}

impl ShardSink for ShardFileWriter {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.current
    }

    fn key_done(&mut self) -> Result<()> {
        if self.current.len() >= CHUNK {
            self.send_current(false)
                .map_err(|e| ckpt_error(format!("cannot write a snapshot: {e}")))?;
        }
        Ok(())
    }
}

/// How many keys ahead [`encode_groups`] prefetches.
const PREFETCH_AHEAD: usize = 8;

/// Encodes a shard's groups (the body of its file, after the header) into `sink`.
pub fn encode_groups(groups: &[GroupSnapshotRef<'_>], sink: &mut impl ShardSink) -> Result<()> {
    sink.groups(groups.len());
    for g in groups {
        sink.group(g.group, g.tables.len());
        for table in &g.tables {
            sink.table(table.len());
            for (i, &(key, state)) in table.iter().enumerate() {
                // Keys are scattered over the heap: start loading a few keys ahead, so that
                // their cache misses overlap with this key's encoding.
                if let Some(&(next_key, next_state)) = table.get(i + PREFETCH_AHEAD) {
                    prefetch_ptr(next_key.as_ptr(), 1);
                    prefetch(next_state, 4);
                }
                sink.key(key, state)?;
            }
        }
    }
    Ok(())
}

/// Decodes a shard file's body, written in checkpoint format `format`.
fn decode_groups(body: &[u8], format: u32) -> std::result::Result<Vec<GroupSnapshot>, WireError> {
    let mut r = Reader::new(body, 0);
    let count = r.count()?;
    let mut groups = Vec::with_capacity(count);
    for _ in 0..count {
        let group = r.u32()?;
        if group >= KEY_GROUPS {
            return Err(WireError("a key group beyond 255"));
        }
        let specs = r.count()?;
        let mut tables = Vec::with_capacity(specs);
        for _ in 0..specs {
            let keys = r.count()?;
            let mut table = Vec::with_capacity(keys);
            for _ in 0..keys {
                let key = r.bytes()?.to_vec();
                let state = if format >= 7 {
                    KeyState::get(&mut r)?
                } else {
                    KeyState::get_without_values(&mut r)?
                };
                table.push((key, state));
            }
            tables.push(table);
        }
        groups.push(GroupSnapshot { group, tables });
    }
    if !r.rest().is_empty() {
        return Err(WireError("bytes after the last key group"));
    }
    Ok(groups)
}

/// Checks a shard file's header (magic and format version) and returns the format.
fn check_header(header: &[u8], path: &Path) -> Result<u32> {
    if header.len() < SHARD_MAGIC.len() + 4 || &header[..SHARD_MAGIC.len()] != SHARD_MAGIC {
        return Err(ckpt_error(format!(
            "{}: not a Sluice shard file",
            path.display()
        )));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if !readable(version) {
        return Err(ckpt_error(format!(
            "{}: format {version}, this build reads {READABLE_FORMATS:?}",
            path.display()
        )));
    }
    Ok(version)
}

/// Decodes a shard file's bytes.
pub fn decode_shard(bytes: &[u8], path: &Path) -> Result<Vec<GroupSnapshot>> {
    let format = check_header(bytes, path)?;
    decode_groups(&bytes[SHARD_MAGIC.len() + 4..], format)
        .map_err(|e| ckpt_error(format!("{}: cannot decode state: {e}", path.display())))
}

/// Reads and decodes a shard file.
pub fn read_shard(path: &Path) -> Result<Vec<GroupSnapshot>> {
    let bytes = fs::read(path).map_err(|e| io_error("read", path, e))?;
    decode_shard(&bytes, path)
}

/// Size and CRC-32 of a file, read in chunks.
fn file_crc(path: &Path) -> Result<(u64, u32)> {
    let mut f = File::open(path).map_err(|e| io_error("read", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| io_error("read", path, e))?;
        if n == 0 {
            return Ok((len, hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// Writes `bytes` to `dir/name` durably and returns its entry.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileEntry> {
    fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    let path = dir.join(name);
    let mut f = File::create(&path).map_err(|e| io_error("create", &path, e))?;
    f.write_all(bytes)
        .map_err(|e| io_error("write", &path, e))?;
    f.sync_all().map_err(|e| io_error("sync", &path, e))?;
    Ok(FileEntry {
        name: name.to_owned(),
        bytes: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, e))
}

/// Completes a checkpoint: writes its manifest atomically, then deletes all but the newest
/// `keep` complete checkpoints (and any older incomplete one).
pub fn commit(root: &Path, manifest: &Manifest, keep: usize) -> Result<()> {
    let dir = checkpoint_dir(root, manifest.id);
    fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
    let tmp = dir.join("manifest.json.tmp");
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| ckpt_error(format!("cannot encode the manifest: {e}")))?;
    let mut f = File::create(&tmp).map_err(|e| io_error("create", &tmp, e))?;
    f.write_all(&text).map_err(|e| io_error("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
    fs::rename(&tmp, dir.join("manifest.json")).map_err(|e| io_error("rename", &tmp, e))?;
    sync_dir(&dir)?;
    sync_dir(root)?;
    let mut ids = list(root)?;
    ids.sort_unstable();
    let newer_kept: Vec<u64> = ids
        .iter()
        .rev()
        .copied()
        .filter(|&id| id <= manifest.id && checkpoint_dir(root, id).join("manifest.json").is_file())
        .take(keep.max(1))
        .collect();
    let oldest_kept = newer_kept.last().copied().unwrap_or(manifest.id);
    for id in ids.into_iter().filter(|&id| id < oldest_kept) {
        let _ = fs::remove_dir_all(checkpoint_dir(root, id));
    }
    Ok(())
}

/// Checkpoint numbers present under `root` (complete or not).
pub fn list(root: &Path) -> Result<Vec<u64>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read", root, e)),
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("chk-")?
                .parse::<u64>()
                .ok()
        })
        .collect())
}

/// Reads and verifies checkpoint `id`: its manifest and the size and CRC of every file.
pub fn verify(root: &Path, id: u64) -> Result<Manifest> {
    let dir = checkpoint_dir(root, id);
    let path = dir.join("manifest.json");
    let text = fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ckpt_error(format!(
            "{}: no manifest (the checkpoint did not complete)",
            dir.display()
        )),
        _ => io_error("read", &path, e),
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| ckpt_error(format!("{}: bad manifest: {e}", path.display())))?;
    if !readable(manifest.format) || manifest.id != id {
        return Err(ckpt_error(format!(
            "{}: format {} id {}, expected a format in {READABLE_FORMATS:?} and id {id}",
            path.display(),
            manifest.format,
            manifest.id
        )));
    }
    for f in &manifest.files {
        let p = dir.join(&f.name);
        let (bytes, crc) = file_crc(&p)?;
        if bytes != f.bytes || crc != f.crc32 {
            return Err(ckpt_error(format!(
                "{}: {bytes} bytes with CRC {crc:08x}, the manifest says {} bytes with CRC {:08x}",
                p.display(),
                f.bytes,
                f.crc32
            )));
        }
    }
    Ok(manifest)
}

/// The newest complete checkpoint under `root`, and why each newer one was skipped.
pub fn latest(root: &Path) -> Result<(Option<Manifest>, Vec<String>)> {
    let mut ids = list(root)?;
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut skipped = Vec::new();
    for id in ids {
        match verify(root, id) {
            Ok(m) => return Ok((Some(m), skipped)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Ok((None, skipped))
}

/// Reads every key group of a verified checkpoint.
pub fn load_groups(root: &Path, manifest: &Manifest) -> Result<Vec<GroupSnapshot>> {
    let dir = checkpoint_dir(root, manifest.id);
    // One thread per file: decoding (and the memory it fills) is most of a restore.
    let parts: Vec<Result<Vec<GroupSnapshot>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = manifest
            .files
            .iter()
            .filter(|f| f.name != LINKS_FILE)
            .map(|f| {
                let path = dir.join(&f.name);
                scope.spawn(move || read_shard(&path))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ckpt_error("a decoding thread panicked")))
            })
            .collect()
    });
    let mut groups = Vec::new();
    for part in parts {
        groups.extend(part?);
    }
    Ok(groups)
}

/// Deletes every checkpoint under `root` (for `--fresh`).
pub fn clear(root: &Path) -> Result<usize> {
    let ids = list(root)?;
    for &id in &ids {
        let dir = checkpoint_dir(root, id);
        fs::remove_dir_all(&dir).map_err(|e| io_error("delete", &dir, e))?;
    }
    Ok(ids.len())
}

/// The checkpoint of `config` a run of `plan` resumes from, if any, and the reasons newer
/// ones were skipped (damaged or incomplete). A checkpoint taken with other features or
/// lateness is an error: its state cannot be restored into this plan.
pub fn find_resume(
    config: &CheckpointConfig,
    plan: &sluice_core::Plan,
) -> Result<(Option<Resume>, Vec<String>)> {
    let (latest, skipped) = latest(&config.dir)?;
    let Some(manifest) = latest else {
        return Ok((None, skipped));
    };
    if manifest.plan != crate::plan_fingerprint(plan) {
        return Err(ckpt_error(format!(
            "checkpoint {} in {} was taken with other features or lateness; \
             run with --fresh to start over (its checkpoints will be deleted)",
            manifest.id,
            config.dir.display()
        )));
    }
    let started = std::time::Instant::now();
    let groups = load_groups(&config.dir, &manifest)?;
    let links = load_links(&config.dir, &manifest)?;
    tracing::info!(
        id = manifest.id,
        millis = started.elapsed().as_millis() as u64,
        "checkpoint loaded"
    );
    let mut resume = Resume::new(&manifest, groups);
    resume.links = links;
    Ok((Some(resume), skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: u64) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            id,
            created_ms: 0,
            plan: "p".into(),
            shards: 1,
            source: Some(SourcePosition {
                offset: 10,
                line: 2,
                digest: None,
            }),
            sink: SinkPosition::default(),
            newest: Some(5),
            files: Vec::new(),
            partitions: Vec::new(),
        }
    }

    fn take(root: &Path, id: u64, payload: &[u8]) {
        let entry = write_file(&checkpoint_dir(root, id), "shard-0.bin", payload).expect("write");
        let mut m = manifest(id);
        m.files.push(entry);
        commit(root, &m, 2).expect("commit");
    }

    /// Two keys of a pipeline with every kind of register, a few events each.
    fn states() -> Vec<(Vec<u8>, KeyState)> {
        use sluice_core::{FeatureSpec, FeatureValue, FieldObs, Plan};
        let f = |name: &str, agg: &str, of: Option<&str>, window_ms| FeatureSpec {
            name: name.into(),
            agg: agg.parse().expect("agg"),
            of: of.map(Into::into),
            by: vec!["user_id".into()],
            window_ms,
            granularity_ms: 1,
            filter: None,
        };
        let plan = Plan::new(
            vec![
                f("s", "sum", Some("amount"), 3_600_000),
                f("m", "max", Some("amount"), 60_000),
                f("d", "distinct_count", Some("device"), 3_600_000),
            ],
            300_000,
        )
        .expect("plan");
        let spec = &plan.keys[0];
        let (amount, device) = (
            plan.fields
                .iter()
                .position(|f| f == "amount")
                .expect("amount"),
            plan.fields
                .iter()
                .position(|f| f == "device")
                .expect("device"),
        );
        let mut scratch = sluice_core::Scratch::default();
        let mut out = vec![FeatureValue::Null; spec.features.len()];
        (0..2u8)
            .map(|k| {
                let mut state = KeyState::new(spec);
                for i in 0..12i64 {
                    let mut fields = vec![FieldObs::default(); plan.fields.len()];
                    fields[amount] = FieldObs {
                        present: true,
                        num: 0.1 * i as f64 + f64::from(k),
                        bytes: b"",
                    };
                    let name = [b'd', b'0' + (i % 5) as u8];
                    fields[device] = FieldObs {
                        present: true,
                        num: 0.0,
                        bytes: &name,
                    };
                    let ts = 1_767_225_600_000 + i * 7_000 - (i % 3) * 1_000;
                    state.observe(spec, ts, &fields, 0, ts - 300_000, &mut scratch, &mut out);
                }
                (vec![b's', b'u', b'0' + k], state)
            })
            .collect()
    }

    #[test]
    fn shard_files_round_trip_and_any_damage_is_an_error() {
        let states = states();
        let refs = vec![GroupSnapshotRef {
            group: 7,
            tables: vec![states.iter().map(|(k, s)| (k.as_slice(), s)).collect()],
        }];
        let bytes = encode_shard(&refs).expect("encode");
        let path = Path::new("shard-0.bin");
        let decoded = decode_shard(&bytes, path).expect("decode");
        let again: Vec<GroupSnapshotRef<'_>> = decoded
            .iter()
            .map(|g| GroupSnapshotRef {
                group: g.group,
                tables: g
                    .tables
                    .iter()
                    .map(|t| t.iter().map(|(k, s)| (k.as_slice(), s)).collect())
                    .collect(),
            })
            .collect();
        assert_eq!(encode_shard(&again).expect("encode"), bytes);

        // Every truncation, and a byte too many, fails cleanly.
        for len in 12..bytes.len() {
            assert!(decode_shard(&bytes[..len], path).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_shard(&longer, path).is_err());
    }

    #[test]
    fn the_newest_complete_checkpoint_wins_and_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        take(root, 1, b"one");
        take(root, 2, b"two");
        take(root, 3, b"three");
        // Only the last two are kept.
        assert_eq!(list(root).expect("list").len(), 2);
        assert_eq!(latest(root).expect("latest").0.map(|m| m.id), Some(3));

        // A flipped byte in the newest: the previous one is used, and the reason is given.
        let shard = checkpoint_dir(root, 3).join("shard-0.bin");
        fs::write(&shard, b"thrEe").expect("corrupt");
        let (m, skipped) = latest(root).expect("latest");
        assert_eq!(m.map(|m| m.id), Some(2));
        assert!(skipped[0].contains("CRC"), "{skipped:?}");

        // A checkpoint without a manifest (killed while writing) is skipped too.
        write_file(&checkpoint_dir(root, 4), "shard-0.bin", b"four").expect("write");
        let (m, skipped) = latest(root).expect("latest");
        assert_eq!(m.map(|m| m.id), Some(2));
        assert!(skipped[0].contains("no manifest"), "{skipped:?}");

        // A truncated file.
        let shard = checkpoint_dir(root, 2).join("shard-0.bin");
        fs::write(&shard, b"tw").expect("truncate");
        assert_eq!(latest(root).expect("latest").0, None);
    }

    #[test]
    fn the_input_digest_kept_while_reading_equals_the_one_read_from_the_file() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut seed = 7u64;
        for len in [0, 1, 100, 4096, 4097, 8191, 8192, 8193, 12_345, 20_000] {
            let mut kept = InputDigest::default();
            let mut at = 0;
            while at < len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let n = ((seed >> 33) as usize % 5000 + 1).min(len - at);
                kept.add(&data[at..at + n]);
                at += n;
            }
            let mut file = std::io::Cursor::new(data.clone());
            let mut read = InputDigest::read(&mut file, len as u64).expect("read");
            assert_eq!(kept.value(), read.value(), "{len} bytes");
            // Going on from a digest read back is going on from the one kept.
            kept.add(&data[len..]);
            read.add(&data[len..]);
            assert_eq!(kept.value(), read.value(), "{len} bytes, then the rest");
        }
        let mut other = data.clone();
        other[5000] ^= 1;
        let digest = |d: Vec<u8>| {
            InputDigest::read(&mut std::io::Cursor::new(d), 9000)
                .expect("read")
                .value()
        };
        assert_ne!(digest(data.clone()), digest(other));
    }
}
