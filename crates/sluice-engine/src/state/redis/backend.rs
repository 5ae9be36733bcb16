//! The Redis state backend: each entity key's event log lives in Redis, its registers are
//! rebuilt from the log in a local cache, and every update is a conditional append.
//!
//! Per flush (a shard's batch, split at `flush_keys` keys):
//!
//! 1. Keys not in the cache are read (one `EVALSHA read` per key, one pipeline per node) and
//!    their registers rebuilt by replaying the log through the same [`KeyState`] code the
//!    memory backend runs.
//! 2. Every update is computed locally, in input order, and each key's new entries are sent
//!    as one `EVALSHA commit` conditional on the key's epoch and version (one pipeline per
//!    node). The commit also trims entries no window can reach and renews the key's TTL.
//! 3. A commit that finds another version (another process appended) gets the current log
//!    back in the same reply; the key is rebuilt from it and its updates are computed and
//!    committed again. A value is only ever output once the state it was computed from has
//!    been committed: concurrent processes lose no update, and each event sees every event
//!    committed before it.
//!
//! So a flush costs one round trip when its keys are cached, two when some are not, whatever
//! the number of events in it.

use std::collections::{HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use redis::Value;
use sluice_core::{FeatureValue, KeyState, Plan, Scratch};

use super::cluster::{Cluster, ClusterOptions, Request, Traffic};
use super::layout::{horizon, KeyLayout};
use super::scripts::{COMMIT, COMMIT_SCRIPT, READ, READ_SCRIPT};
use super::slot::slot_of;
use crate::error::{Error, Result};
use crate::state::{StateBackend, Update};

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Node URLs (`redis://host:port`); any one reachable node of a cluster is enough.
    pub urls: Vec<String>,
    /// Prefix of every key, after `sluice:`.
    pub namespace: String,
    /// Most keys per flush (a batch with more keys is sent in several flushes).
    pub flush_keys: usize,
    /// Connection and retry settings.
    pub cluster: ClusterOptions,
}

/// Replays run with no eviction: the log may hold entries out of time order.
const REPLAY_FLOOR: i64 = i64::MIN / 4;

/// Most attempts to commit one key in one flush before giving up (each failed attempt means
/// another process committed to the key in between).
const MAX_ATTEMPTS: usize = 1000;

/// Fewest updates between two sweeps of the cache for cold keys.
const MIN_SWEEP_INTERVAL: usize = 1 << 16;

/// A key's registers as of a version of its log.
#[derive(Debug)]
struct Cached {
    name: Vec<u8>,
    slot: u16,
    state: KeyState,
    /// Epoch of the log (empty: the key does not exist in Redis).
    epoch: Vec<u8>,
    version: u64,
    base: u64,
    /// Newest event time among trimmed entries.
    trimmed: Option<i64>,
    /// Event time of each held entry, `base..version`.
    times: VecDeque<i64>,
    /// With `[event] id`: the token of each held entry, and the set of them.
    tokens: VecDeque<(u64, u64)>,
    seen: HashSet<(u64, u64)>,
}

/// An update whose event id its key had already applied: its values are those of the first
/// application, read back from the log once the flush is committed.
#[derive(Debug)]
struct Repeat {
    spec: usize,
    key: Vec<u8>,
    token: (u64, u64),
    /// Where its values go in the flush's output.
    at: usize,
}

/// A flush's work on one key: the indices of its updates, in order.
struct Work {
    spec: usize,
    key: Vec<u8>,
    updates: Vec<usize>,
}

/// What a commit sends, kept to interpret the reply.
struct Commit {
    work: usize,
    entries: usize,
    first_token: (u64, u64),
    expected_version: u64,
    new_epoch: Vec<u8>,
    new_base: u64,
    new_trimmed: Option<i64>,
}

/// State in a Redis Cluster (or a single Redis), shared by every process of a pipeline.
#[derive(Debug)]
pub struct RedisBackend {
    cluster: Cluster,
    layouts: Vec<KeyLayout>,
    ttl_ms: Vec<i64>,
    flush_keys: usize,
    cache: HashMap<(usize, Vec<u8>), Cached>,
    scratch: Scratch,
    writer: u64,
    seq: u64,
    since_sweep: usize,
    floor: i64,
    conflicts: u64,
    /// Whether events carry ids (`[event] id`): keys then remember their entries' tokens.
    ids: bool,
    /// Per work of the current flush, its repeated events (recomputed with the work).
    repeats: HashMap<usize, Vec<Repeat>>,
    cache_hits: u64,
    cache_misses: u64,
}

fn backend_error(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: "redis",
        message: message.into(),
    }
}

impl RedisBackend {
    /// Connects to the cluster and loads the scripts. `writer_salt` distinguishes writers
    /// started in the same instant (for example the shards of one process).
    pub fn connect(plan: &Plan, options: &RedisOptions, writer_salt: u64) -> Result<Self> {
        let cluster = Cluster::connect(&options.urls, &[READ, COMMIT], options.cluster.clone())?;
        let layouts = (0..plan.keys.len())
            .map(|k| KeyLayout::new(plan, k, &options.namespace))
            .collect();
        let ttl_ms = plan
            .keys
            .iter()
            .map(|k| {
                let widest = k
                    .series
                    .iter()
                    .map(|s| s.max_window_ms() + s.granularity_ms)
                    .max()
                    .unwrap_or(0);
                (widest + plan.lateness_ms).max(1000)
            })
            .collect();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let writer = sluice_core::key_hash(
            format!("{nanos}:{}:{writer_salt}", std::process::id()).as_bytes(),
        );
        Ok(RedisBackend {
            cluster,
            layouts,
            ttl_ms,
            flush_keys: options.flush_keys.max(1),
            cache: HashMap::new(),
            scratch: Scratch::default(),
            writer,
            seq: 0,
            since_sweep: 0,
            floor: i64::MIN,
            conflicts: 0,
            ids: plan.id_field.is_some(),
            repeats: HashMap::new(),
            cache_hits: 0,
            cache_misses: 0,
        })
    }

    /// Traffic sent so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            conflicts: self.conflicts,
            cache_hits: self.cache_hits,
            cache_misses: self.cache_misses,
            ..self.cluster.traffic()
        }
    }

    fn sweep(&mut self, plan: &Plan) {
        let floor = self.floor;
        self.cache
            .retain(|(spec, _), c| !c.state.is_expired(&plan.keys[*spec], floor));
        self.since_sweep = 0;
    }

    /// Rebuilds a key's registers from a log reply `{e, v, b, h, entries...}` (or `{''}`).
    fn rebuild(
        &mut self,
        plan: &Plan,
        spec: usize,
        name: Vec<u8>,
        log: &[Value],
    ) -> Result<Cached> {
        let key_spec = &plan.keys[spec];
        let layout = &self.layouts[spec];
        let bytes = |v: &Value| -> Result<Vec<u8>> {
            match v {
                Value::BulkString(b) => Ok(b.clone()),
                Value::SimpleString(s) => Ok(s.as_bytes().to_vec()),
                Value::Int(i) => Ok(i.to_string().into_bytes()),
                other => Err(backend_error(format!("unexpected log reply {other:?}"))),
            }
        };
        let number = |v: &Value| -> Result<i64> {
            String::from_utf8_lossy(&bytes(v)?)
                .parse()
                .map_err(|_| backend_error(format!("unexpected number in log reply {v:?}")))
        };
        let slot = slot_of(&name);
        let mut cached = Cached {
            name,
            slot,
            state: KeyState::new(key_spec),
            epoch: Vec::new(),
            version: 0,
            base: 0,
            trimmed: None,
            times: VecDeque::new(),
            tokens: VecDeque::new(),
            seen: HashSet::new(),
        };
        let epoch = bytes(
            log.first()
                .ok_or_else(|| backend_error("empty log reply"))?,
        )?;
        if epoch.is_empty() {
            return Ok(cached);
        }
        if log.len() < 4 {
            return Err(backend_error("truncated log reply"));
        }
        cached.epoch = epoch;
        cached.version = number(&log[1])? as u64;
        cached.base = number(&log[2])? as u64;
        let trimmed = bytes(&log[3])?;
        if !trimmed.is_empty() {
            cached.trimmed = Some(number(&log[3])?);
        }
        let mut fields = Vec::new();
        let mut out = vec![FeatureValue::Null; key_spec.features.len()];
        for entry in &log[4..] {
            let Value::BulkString(entry) = entry else {
                return Err(backend_error(format!("unexpected log entry {entry:?}")));
            };
            let (token, ts, matched) = layout
                .decode_entry(entry, plan.fields.len(), &mut fields)
                .ok_or_else(|| {
                backend_error(format!(
                    "malformed log entry in {}",
                    String::from_utf8_lossy(&cached.name)
                ))
            })?;
            cached.state.observe(
                key_spec,
                ts,
                &fields,
                matched,
                REPLAY_FLOOR,
                &mut self.scratch,
                &mut out,
            );
            cached.times.push_back(ts);
            if self.ids {
                cached.tokens.push_back(token);
                cached.seen.insert(token);
            }
        }
        Ok(cached)
    }

    /// Reads and rebuilds every key of `works` that is not cached.
    fn load_missing(&mut self, plan: &Plan, works: &[Work]) -> Result<()> {
        let mut missing = Vec::new();
        let mut requests = Vec::new();
        for w in works {
            // A flush holds each key once, so only the cache needs checking.
            let ck = (w.spec, w.key.clone());
            if self.cache.contains_key(&ck) {
                self.cache_hits += 1;
                continue;
            }
            self.cache_misses += 1;
            let name = self.layouts[w.spec].redis_key(&w.key);
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.cluster.script_sha(READ_SCRIPT))
                .arg(1)
                .arg(&name);
            requests.push(Request {
                slot: slot_of(&name),
                cmd,
            });
            missing.push((ck, name));
        }
        if requests.is_empty() {
            return Ok(());
        }
        let replies = self.cluster.exec(&requests)?;
        for ((ck, name), reply) in missing.into_iter().zip(replies) {
            let Value::Array(log) = reply else {
                return Err(backend_error(format!("unexpected read reply {reply:?}")));
            };
            let cached = self.rebuild(plan, ck.0, name, &log)?;
            self.cache.insert(ck, cached);
        }
        Ok(())
    }

    /// Computes the updates of one key on its cached registers, writing their values to
    /// `out`, and returns the commit request.
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &mut self,
        plan: &Plan,
        work_index: usize,
        work: &Work,
        updates: &[Update<'_>],
        offsets: &[usize],
        out: &mut [FeatureValue],
        entry: &mut Vec<u8>,
    ) -> Result<(Request, Commit)> {
        let key_spec = &plan.keys[work.spec];
        let layout = &self.layouts[work.spec];
        let cached = self
            .cache
            .get_mut(&(work.spec, work.key.clone()))
            .ok_or_else(|| backend_error("key not loaded"))?;
        let mut cmd = redis::cmd("EVALSHA");
        let new_epoch = if cached.epoch.is_empty() {
            format!("{:016x}{:08x}", self.writer, self.seq).into_bytes()
        } else {
            cached.epoch.clone()
        };
        cmd.arg(self.cluster.script_sha(COMMIT_SCRIPT))
            .arg(1)
            .arg(&cached.name)
            .arg(&cached.epoch)
            .arg(cached.version)
            .arg(&new_epoch);
        let mut floor = i64::MIN;
        let mut entries = Vec::with_capacity(work.updates.len());
        let mut repeats = Vec::new();
        // The token of the first entry appended, by which a lost reply's commit is known.
        let mut first_token = None;
        for &i in &work.updates {
            let u = &updates[i];
            if cached.trimmed.is_some_and(|t| t >= horizon(key_spec, u.ts)) {
                // Its windows reach below what another writer already dropped: refused (a
                // `late` dead letter), not computed wrong, and not added to the log.
                let at = offsets[i];
                out[at..at + key_spec.features.len()].fill(FeatureValue::Beyond);
                continue;
            }
            let token = match u.id {
                Some(id) if self.ids => {
                    if cached.seen.contains(&id) {
                        // Applied already (a retry): not again; its first values are read
                        // back once the flush is committed.
                        repeats.push(Repeat {
                            spec: work.spec,
                            key: work.key.clone(),
                            token: id,
                            at: offsets[i],
                        });
                        continue;
                    }
                    id
                }
                _ => {
                    self.seq += 1;
                    (self.writer, self.seq - 1)
                }
            };
            layout.encode_entry(token, u.ts, u.fields, u.matched, entry);
            first_token.get_or_insert(token);
            entries.push(entry.clone());
            if self.ids {
                cached.tokens.push_back(token);
                cached.seen.insert(token);
            }
            let at = offsets[i];
            cached.state.observe(
                key_spec,
                u.ts,
                u.fields,
                u.matched,
                u.floor,
                &mut self.scratch,
                &mut out[at..at + key_spec.features.len()],
            );
            cached.times.push_back(u.ts);
            floor = floor.max(u.floor);
        }
        self.repeats.insert(work_index, repeats);
        // Trim the oldest entries no window can reach any more.
        let limit = horizon(key_spec, floor);
        let trim = cached.times.iter().take_while(|&&t| t < limit).count();
        let new_trimmed = cached
            .times
            .iter()
            .take(trim)
            .copied()
            .max()
            .map(|t| cached.trimmed.map_or(t, |old| old.max(t)));
        let new_base = cached.base + trim as u64;
        cmd.arg(new_base)
            .arg(new_trimmed.map(|t| t.to_string()).unwrap_or_default())
            .arg(self.ttl_ms[work.spec]);
        for e in &entries {
            cmd.arg(e);
        }
        let commit = Commit {
            work: work_index,
            entries: entries.len(),
            first_token: first_token.unwrap_or((self.writer, self.seq)),
            expected_version: cached.version,
            new_epoch,
            new_base,
            new_trimmed,
        };
        Ok((
            Request {
                slot: cached.slot,
                cmd,
            },
            commit,
        ))
    }

    /// Whether a log reply holds `commit`'s own entries right after the version it expected:
    /// the commit ran although its reply was lost.
    fn holds_own_commit(&self, plan: &Plan, spec: usize, commit: &Commit, log: &[Value]) -> bool {
        let number = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).parse::<u64>().ok(),
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        };
        let (Some(version), Some(base)) =
            (log.get(1).and_then(number), log.get(2).and_then(number))
        else {
            return false;
        };
        if base > commit.expected_version
            || version < commit.expected_version + commit.entries as u64
        {
            return false;
        }
        let at = 4 + (commit.expected_version - base) as usize;
        let Some(Value::BulkString(entry)) = log.get(at) else {
            return false;
        };
        let mut fields = Vec::new();
        self.layouts[spec]
            .decode_entry(entry, plan.fields.len(), &mut fields)
            .is_some_and(|(token, _, _)| token == commit.first_token)
    }

    /// Writes the values of repeated events: each key's log is read (one pipeline) and
    /// replayed up to the entry of the event's first application, whose values they are. An
    /// entry trimmed since gets [`FeatureValue::Beyond`] (a `late` dead letter).
    fn answer_repeats(
        &mut self,
        plan: &Plan,
        repeats: Vec<Repeat>,
        out: &mut [FeatureValue],
    ) -> Result<()> {
        if repeats.is_empty() {
            return Ok(());
        }
        let requests: Vec<Request> = repeats
            .iter()
            .map(|r| {
                let name = self.layouts[r.spec].redis_key(&r.key);
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(self.cluster.script_sha(READ_SCRIPT))
                    .arg(1)
                    .arg(&name);
                Request {
                    slot: slot_of(&name),
                    cmd,
                }
            })
            .collect();
        let replies = self.cluster.exec(&requests)?;
        for (r, reply) in repeats.iter().zip(replies) {
            let key_spec = &plan.keys[r.spec];
            let values = &mut out[r.at..r.at + key_spec.features.len()];
            values.fill(FeatureValue::Beyond);
            let Value::Array(log) = reply else {
                return Err(backend_error(format!("unexpected read reply {reply:?}")));
            };
            let mut state = KeyState::new(key_spec);
            let mut fields = Vec::new();
            let mut scratch = vec![FeatureValue::Null; key_spec.features.len()];
            for entry in log.iter().skip(4) {
                let Value::BulkString(entry) = entry else {
                    return Err(backend_error(format!("unexpected log entry {entry:?}")));
                };
                let (token, ts, matched) = self.layouts[r.spec]
                    .decode_entry(entry, plan.fields.len(), &mut fields)
                    .ok_or_else(|| backend_error("malformed log entry"))?;
                let target: &mut [FeatureValue] = if token == r.token {
                    &mut *values
                } else {
                    &mut scratch
                };
                state.observe(
                    key_spec,
                    ts,
                    &fields,
                    matched,
                    REPLAY_FLOOR,
                    &mut self.scratch,
                    target,
                );
                if token == r.token {
                    break;
                }
            }
        }
        Ok(())
    }

    fn flush(
        &mut self,
        plan: &Plan,
        works: &[Work],
        updates: &[Update<'_>],
        offsets: &[usize],
        out: &mut [FeatureValue],
    ) -> Result<()> {
        self.load_missing(plan, works)?;
        self.repeats.clear();
        let mut todo: Vec<usize> = (0..works.len()).collect();
        let mut entry = Vec::new();
        for _attempt in 0..MAX_ATTEMPTS {
            if todo.is_empty() {
                let repeats: Vec<Repeat> = self.repeats.drain().flat_map(|(_, r)| r).collect();
                return self.answer_repeats(plan, repeats, out);
            }
            let mut requests = Vec::with_capacity(todo.len());
            let mut commits = Vec::with_capacity(todo.len());
            for &w in &todo {
                let (request, commit) =
                    self.compute(plan, w, &works[w], updates, offsets, out, &mut entry)?;
                requests.push(request);
                commits.push(commit);
            }
            let replies = self.cluster.exec(&requests)?;
            let mut again = Vec::new();
            for (commit, reply) in commits.into_iter().zip(replies) {
                let work = &works[commit.work];
                let ck = (work.spec, work.key.clone());
                let Value::Array(items) = reply else {
                    return Err(backend_error(format!("unexpected commit reply {reply:?}")));
                };
                if matches!(items.first(), Some(Value::Int(1))) {
                    let cached = self
                        .cache
                        .get_mut(&ck)
                        .ok_or_else(|| backend_error("key not loaded"))?;
                    cached.epoch = commit.new_epoch;
                    cached.version += commit.entries as u64;
                    let trimmed = (commit.new_base - cached.base) as usize;
                    cached.times.drain(..trimmed);
                    for token in cached.tokens.drain(..trimmed.min(cached.tokens.len())) {
                        cached.seen.remove(&token);
                    }
                    cached.base = commit.new_base;
                    cached.trimmed = commit.new_trimmed;
                    continue;
                }
                // Another writer got there first, or this commit ran and its reply was lost:
                // either way the log in the reply is the truth.
                let log = &items[1..];
                let own = self.holds_own_commit(plan, work.spec, &commit, log);
                let name = self
                    .cache
                    .get(&ck)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let rebuilt = self.rebuild(plan, work.spec, name, log)?;
                self.cache.insert(ck, rebuilt);
                if !own {
                    self.conflicts += 1;
                    again.push(commit.work);
                }
            }
            todo = again;
        }
        Err(backend_error(format!(
            "gave up after {MAX_ATTEMPTS} attempts: other writers keep changing the same keys"
        )))
    }
}

impl StateBackend for RedisBackend {
    /// A feature query (see [`StateBackend::peek`]): the key is read afresh, since other
    /// writers may have appended to it since it was cached.
    fn peek(
        &mut self,
        plan: &Plan,
        key_spec: usize,
        _hash: u64,
        key: &[u8],
        at: Option<i64>,
        out: &mut [FeatureValue],
    ) -> Result<Option<i64>> {
        let ck = (key_spec, key.to_vec());
        self.cache.remove(&ck);
        let work = Work {
            spec: key_spec,
            key: key.to_vec(),
            updates: Vec::new(),
        };
        self.load_missing(plan, std::slice::from_ref(&work))?;
        let state = self.cache.get(&ck).map(|c| &c.state);
        Ok(crate::state::peek_state(
            &plan.keys[key_spec],
            state,
            at,
            &mut self.scratch,
            out,
        ))
    }

    fn apply(
        &mut self,
        plan: &Plan,
        updates: &[Update<'_>],
        out: &mut Vec<FeatureValue>,
    ) -> Result<()> {
        let start = out.len();
        let mut offsets = Vec::with_capacity(updates.len());
        let mut total = start;
        for u in updates {
            offsets.push(total - start);
            total += plan.keys[u.key_spec].features.len();
        }
        out.resize(total, FeatureValue::Null);
        let out = &mut out[start..];
        // Group the updates by key, in order of first appearance, a flush per `flush_keys`.
        let mut works: Vec<Work> = Vec::new();
        let mut index: HashMap<(usize, &[u8]), usize> = HashMap::new();
        let mut first = 0;
        for (i, u) in updates.iter().enumerate() {
            let w = *index.entry((u.key_spec, u.key)).or_insert_with(|| {
                works.push(Work {
                    spec: u.key_spec,
                    key: u.key.to_vec(),
                    updates: Vec::new(),
                });
                works.len() - 1
            });
            works[w].updates.push(i);
            if works.len() - first >= self.flush_keys && w + 1 == works.len() {
                // Full: later updates of these keys go to the next flush, in order.
                self.flush(plan, &works[first..], updates, &offsets, out)?;
                first = works.len();
                index.clear();
            }
            // The latest, not the highest: with lateness per partition the floor goes back
            // when a slower partition shows up, and its keys must not be swept meanwhile.
            self.floor = u.floor;
        }
        if first < works.len() {
            self.flush(plan, &works[first..], updates, &offsets, out)?;
        }
        self.since_sweep += updates.len();
        if self.since_sweep >= (4 * self.cache.len()).max(MIN_SWEEP_INTERVAL) {
            self.sweep(plan);
        }
        Ok(())
    }

    fn live_keys(&self) -> usize {
        self.cache.len()
    }

    fn take_text(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch.values.text)
    }
}
