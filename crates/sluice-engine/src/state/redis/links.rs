//! The relation features' link index in a Redis Cluster (see `docs/redis.md`, "Relation
//! features").
//!
//! Per relation feature, two kinds of sorted sets, each hash-tagged by the value it is about,
//! so that one hop is one pipelined round trip per node:
//!
//! - `…:links:{user.id=u1}`: the entity's links, one member per linking event;
//! - `…:linked:{device.id=#7}`: the linked events of one via value, one member per event that
//!   carries it and counts.
//!
//! A member is `e`, the event time, the writer's id and sequence number (8 bytes each, little
//! endian), then the value (the via value for a link, the `of` value for a linked event); its
//! score is the event time (exact in a double: event times are within ±2^48 ms). Writer and
//! sequence make every event's member distinct, and a resent `ZADD` adds nothing twice. Two
//! more members: `h`, the trim mark, whose score is the horizon below which entries were
//! removed, and `v`, the set's version (the writes counted so far), whose score is
//! [`VERSION_ZERO`] minus the version: below every event time, so that trims never reach it,
//! and read with the members in one command. A process caches the sets it read and reads
//! only the version again while it has not changed.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;
use sluice_core::Plan;

use super::cluster::{Cluster, Request};
use super::layout::push_fields;
use super::slot::slot_of;
use super::RedisOptions;
use crate::error::{Error, Result};

/// Version of the member encoding, part of every key name.
const LINKS_VERSION: &str = "l2";

/// The score of member `v` at version 0; version `n` is `VERSION_ZERO - n`. Event times are
/// within ±2.6·10^14 ms, so versions stay below them (and exact in a double up to 8·10^15).
const VERSION_ZERO: i64 = -1_000_000_000_000_000;

/// Trims remove scores from here (inclusive) to the horizon: every event time, never `v`.
const TRIM_FROM: i64 = -500_000_000_000_000;

/// Which of a relation's two sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hop {
    /// An entity's links (`(time, via)`).
    Links,
    /// A via value's linked events (`(time, of)`).
    Linked,
}

/// The key names of one relation feature.
#[derive(Debug, Clone)]
struct RelationKeys {
    /// `sluice:<namespace>:l1-<fingerprint>:links:`.
    links: String,
    /// `sluice:<namespace>:l1-<fingerprint>:linked:`.
    linked: String,
    /// The entity's key fields.
    by: Vec<String>,
    /// `[via field]`.
    via: Vec<String>,
    /// The hash tag of the global entity (`by = []`).
    global: String,
    /// TTL of every write: window, granularity and lateness, in wall-clock milliseconds.
    ttl_ms: i64,
    /// The first of the pipeline's relations with the same sets (this one's index if none
    /// before it has them): only that one writes them.
    owner: usize,
}

/// One set read back.
#[derive(Debug, Default)]
pub struct Stored {
    /// Entries were removed below this time (`None`: never trimmed).
    pub trimmed: Option<i64>,
    /// `(time, value)` of each entry.
    pub entries: Vec<(i64, Vec<u8>)>,
    /// Writes counted so far (`None`: never written).
    pub version: Option<u64>,
}

/// One set as read: its version alone, or the whole set.
#[derive(Debug)]
pub enum Read {
    /// Only the version (`None`: the set was never written, or expired).
    Version(Option<u64>),
    /// The whole set.
    Whole(Stored),
}

/// New entries for one set.
#[derive(Debug)]
pub struct Append<'a> {
    /// The relation feature (index into `Plan::relations`).
    pub relation: usize,
    /// Which set.
    pub hop: Hop,
    /// The encoded entity key (for [`Hop::Links`]) or the via value's canonical bytes.
    pub key: &'a [u8],
    /// Entries older than this are removed first (`None`: no trim).
    pub trim: Option<i64>,
    /// `(time, value)` of each new entry.
    pub entries: Vec<(i64, &'a [u8])>,
}

/// A client for the link sets of a pipeline's relation features.
#[derive(Debug)]
pub struct RedisLinks {
    cluster: Cluster,
    relations: Vec<RelationKeys>,
    writer: u64,
    seq: u64,
}

impl RedisLinks {
    /// Connects to the cluster of `options` for the relation features of `plan`.
    pub fn connect(plan: &Plan, options: &RedisOptions) -> Result<Self> {
        let cluster = Cluster::connect(&options.urls, &[], options.cluster.clone())?;
        let relations = plan
            .relations
            .iter()
            .map(|r| {
                let name = |f: usize| plan.fields[f].clone();
                let filter = |f: Option<usize>| f.map_or(String::new(), |i| plan.filters[i].clone());
                // Pipelines that agree on what the sets hold share them; any other gets its own.
                let identity = format!(
                    "{LINKS_VERSION};by={:?};via={};of={:?};via_where={};where={};window={};granularity={};lateness={}",
                    r.by.iter().map(|&f| name(f)).collect::<Vec<_>>(),
                    name(r.via),
                    r.of.map(name),
                    filter(r.via_filter),
                    filter(r.filter),
                    r.window_ms,
                    r.agg.granularity_ms(),
                    plan.lateness_ms
                );
                let fingerprint = sluice_core::key_hash(identity.as_bytes()) as u32;
                let prefix = format!("sluice:{}:{LINKS_VERSION}-{fingerprint:08x}", options.namespace);
                RelationKeys {
                    links: format!("{prefix}:links:"),
                    linked: format!("{prefix}:linked:"),
                    by: r.by.iter().map(|&f| name(f)).collect(),
                    via: vec![name(r.via)],
                    global: format!("global-{fingerprint:08x}"),
                    ttl_ms: (r.window_ms + r.agg.granularity_ms())
                        .saturating_add(plan.lateness_ms)
                        .max(1000),
                    owner: 0,
                }
            })
            .collect::<Vec<RelationKeys>>();
        let mut relations = relations;
        for i in 0..relations.len() {
            relations[i].owner = (0..=i)
                .find(|&o| relations[o].links == relations[i].links)
                .unwrap_or(i);
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let writer =
            sluice_core::key_hash(format!("{nanos}:{}:links", std::process::id()).as_bytes());
        Ok(RedisLinks {
            cluster,
            relations,
            writer,
            seq: 0,
        })
    }

    /// The first relation with the same sets as `relation` (which writes them).
    pub fn owner(&self, relation: usize) -> usize {
        self.relations[relation].owner
    }

    /// The Redis key of a set: the prefix, then the entity's fields or the via value as the
    /// hash tag.
    fn name(&self, relation: usize, hop: Hop, key: &[u8]) -> Vec<u8> {
        let keys = &self.relations[relation];
        let (prefix, fields) = match hop {
            Hop::Links => (&keys.links, &keys.by),
            Hop::Linked => (&keys.linked, &keys.via),
        };
        let mut out = Vec::with_capacity(prefix.len() + key.len() + 16);
        out.extend_from_slice(prefix.as_bytes());
        out.push(b'{');
        if fields.is_empty() {
            out.extend_from_slice(keys.global.as_bytes());
        }
        push_fields(&mut out, fields, key);
        out.push(b'}');
        out
    }

    /// Reads sets, one pipeline per node: per `(relation, hop, key, whole)` the whole set
    /// (`ZRANGE … WITHSCORES`) or only its version (`ZSCORE … v`).
    pub fn read(&mut self, sets: &[(usize, Hop, &[u8], bool)]) -> Result<Vec<Read>> {
        let requests: Vec<Request> = sets
            .iter()
            .map(|&(relation, hop, key, whole)| {
                let name = self.name(relation, hop, key);
                let cmd = if whole {
                    let mut cmd = redis::cmd("ZRANGE");
                    cmd.arg(&name).arg(0).arg(-1).arg("WITHSCORES");
                    cmd
                } else {
                    let mut cmd = redis::cmd("ZSCORE");
                    cmd.arg(&name).arg("v");
                    cmd
                };
                Request {
                    slot: slot_of(&name),
                    cmd,
                }
            })
            .collect();
        let replies = self.cluster.exec(&requests)?;
        sets.iter()
            .zip(replies)
            .map(|(&(.., whole), reply)| match whole {
                true => decode_set(reply).map(Read::Whole),
                false => decode_score(reply)?
                    .map(version_of)
                    .transpose()
                    .map(Read::Version),
            })
            .collect()
    }

    /// Reads whole sets.
    pub fn read_whole(&mut self, sets: &[(usize, Hop, &[u8])]) -> Result<Vec<Stored>> {
        let asks: Vec<_> = sets
            .iter()
            .map(|&(r, hop, key)| (r, hop, key, true))
            .collect();
        Ok(self
            .read(&asks)?
            .into_iter()
            .map(|read| match read {
                Read::Whole(set) => set,
                Read::Version(_) => Stored::default(),
            })
            .collect())
    }

    /// Adds entries (and `v` at version 0 if the set is new: `ZADD NX`, since every entry
    /// is new too), counts the write in the version (`ZINCRBY -1 v`) and renews the TTL,
    /// after a trim when asked (`ZADD GT` of the mark, then `ZREMRANGEBYSCORE` below it):
    /// three or five commands per set, one pipeline per node. Returns each set's new version.
    /// Each command may be resent after a lost reply: members are distinct per event (writer
    /// and sequence), the mark only rises, trimming is idempotent, and a version that jumps
    /// only makes readers read the set again. Of relations with the same sets only the first
    /// writes (the others' versions come back as `None`).
    pub fn append(&mut self, appends: &[Append<'_>]) -> Result<Vec<Option<u64>>> {
        let mut requests = Vec::with_capacity(appends.len() * 3);
        let mut versions = Vec::with_capacity(appends.len());
        for a in appends {
            if self.owner(a.relation) != a.relation {
                versions.push(None);
                continue;
            }
            let name = self.name(a.relation, a.hop, a.key);
            let slot = slot_of(&name);
            if let Some(horizon) = a.trim.filter(|&h| h > TRIM_FROM) {
                // The mark first: a reader never sees entries gone without a mark that says so.
                let mut mark = redis::cmd("ZADD");
                mark.arg(&name).arg("GT").arg(horizon).arg("h");
                let mut trim = redis::cmd("ZREMRANGEBYSCORE");
                trim.arg(&name).arg(TRIM_FROM).arg(format!("({horizon}"));
                requests.push(Request { slot, cmd: mark });
                requests.push(Request { slot, cmd: trim });
            }
            let mut add = redis::cmd("ZADD");
            add.arg(&name).arg("NX");
            for &(ts, value) in &a.entries {
                let mut member = Vec::with_capacity(25 + value.len());
                member.push(b'e');
                member.extend_from_slice(&ts.to_le_bytes());
                member.extend_from_slice(&self.writer.to_le_bytes());
                member.extend_from_slice(&self.seq.to_le_bytes());
                member.extend_from_slice(value);
                self.seq += 1;
                add.arg(ts).arg(member);
            }
            add.arg(VERSION_ZERO).arg("v");
            requests.push(Request { slot, cmd: add });
            // The version after the entries: a reader that sees the new version sees them.
            let mut incr = redis::cmd("ZINCRBY");
            incr.arg(&name).arg(-1).arg("v");
            versions.push(Some(requests.len()));
            requests.push(Request { slot, cmd: incr });
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(&name).arg(self.relations[a.relation].ttl_ms);
            requests.push(Request { slot, cmd: expire });
        }
        let replies = self.cluster.exec(&requests)?;
        versions
            .into_iter()
            .map(|at| match at {
                None => Ok(None),
                Some(i) => match decode_score(replies[i].clone())? {
                    Some(score) => version_of(score).map(Some),
                    None => Err(bad_set("no version after a write")),
                },
            })
            .collect()
    }
}

/// The error of a set that does not read as one.
fn bad_set(why: &str) -> Error {
    Error::Backend {
        backend: "redis",
        message: format!("a relation feature's link set: {why}"),
    }
}

/// A score reply (`ZSCORE`, `ZINCRBY`, or a score in `ZRANGE … WITHSCORES`).
fn decode_score(reply: Value) -> Result<Option<f64>> {
    match reply {
        Value::Nil => Ok(None),
        Value::Double(d) => Ok(Some(d)),
        Value::Int(i) => Ok(Some(i as f64)),
        Value::BulkString(b) => String::from_utf8_lossy(&b)
            .parse()
            .map(Some)
            .map_err(|_| bad_set("a score that is not a number")),
        _ => Err(bad_set("a score that is not a number")),
    }
}

/// The version that the score of member `v` stands for.
fn version_of(score: f64) -> Result<u64> {
    let n = VERSION_ZERO as f64 - score;
    if n < 0.0 || n.fract() != 0.0 || n > 1e15 {
        return Err(bad_set("a version out of range"));
    }
    Ok(n as u64)
}

/// A `ZRANGE … WITHSCORES` reply as a [`Stored`] set.
fn decode_set(reply: Value) -> Result<Stored> {
    let items = match reply {
        Value::Array(items) => items,
        Value::Nil => Vec::new(),
        _ => return Err(bad_set("not an array")),
    };
    let mut stored = Stored::default();
    let mut items = items.into_iter();
    while let (Some(member), Some(score)) = (items.next(), items.next()) {
        let Value::BulkString(member) = member else {
            return Err(bad_set("a member that is not a string"));
        };
        match &member[..] {
            b"h" | b"v" => {
                let score =
                    decode_score(score)?.ok_or_else(|| bad_set("a mark without a score"))?;
                if member == b"h" {
                    stored.trimmed = Some(score as i64);
                } else {
                    stored.version = Some(version_of(score)?);
                }
            }
            [b'e', ..] if member.len() >= 25 => {
                let ts = i64::from_le_bytes(member[1..9].try_into().expect("8 bytes"));
                stored.entries.push((ts, member[25..].to_vec()));
            }
            _ => return Err(bad_set("a member of another layout")),
        }
    }
    Ok(stored)
}
