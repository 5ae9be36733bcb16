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
//! sequence make every event's member distinct, and a resent `ZADD` adds nothing twice. The
//! member `h` is the set's trim mark: its score is the horizon below which entries were
//! removed.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;
use sluice_core::Plan;

use super::cluster::{Cluster, Request};
use super::layout::push_fields;
use super::slot::slot_of;
use super::RedisOptions;
use crate::error::{Error, Result};

/// Version of the member encoding, part of every key name.
const LINKS_VERSION: &str = "l1";

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
    /// TTL of every write: window plus lateness, in wall-clock milliseconds.
    ttl_ms: i64,
    /// Whether this relation writes its sets: the first of the pipeline's relations with
    /// the same sets does, the others (the same links, another aggregation) only read them.
    writes: bool,
}

/// One set read back.
#[derive(Debug, Default)]
pub struct Stored {
    /// Entries were removed below this time (`None`: never trimmed).
    pub trimmed: Option<i64>,
    /// `(time, value)` of each entry.
    pub entries: Vec<(i64, Vec<u8>)>,
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
    /// Entries older than this are removed (trimming is skipped for `i64::MIN`).
    pub horizon: i64,
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
                    "{LINKS_VERSION};by={:?};via={};of={:?};via_where={};where={};window={};lateness={}",
                    r.by.iter().map(|&f| name(f)).collect::<Vec<_>>(),
                    name(r.via),
                    r.of.map(name),
                    filter(r.via_filter),
                    filter(r.filter),
                    r.window_ms,
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
                    ttl_ms: r.window_ms.saturating_add(plan.lateness_ms).max(1000),
                    writes: true,
                }
            })
            .collect::<Vec<RelationKeys>>();
        let mut relations = relations;
        for i in 0..relations.len() {
            relations[i].writes = !relations[..i].iter().any(|o| o.links == relations[i].links);
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

    /// Reads whole sets, one pipeline per node: `(relation, hop, key)` each.
    pub fn read(&mut self, sets: &[(usize, Hop, &[u8])]) -> Result<Vec<Stored>> {
        let requests: Vec<Request> = sets
            .iter()
            .map(|&(relation, hop, key)| {
                let name = self.name(relation, hop, key);
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(&name).arg(0).arg(-1).arg("WITHSCORES");
                Request {
                    slot: slot_of(&name),
                    cmd,
                }
            })
            .collect();
        let replies = self.cluster.exec(&requests)?;
        replies.into_iter().map(decode_set).collect()
    }

    /// Adds entries, trims below each set's horizon and renews its TTL: four commands per
    /// set, one pipeline per node. Of relations with the same sets only the first writes. Each command may be resent safely: members are distinct
    /// per event, the mark only rises, trimming is idempotent.
    pub fn append(&mut self, appends: &[Append<'_>]) -> Result<()> {
        let mut requests = Vec::with_capacity(appends.len() * 4);
        for a in appends.iter().filter(|a| self.relations[a.relation].writes) {
            let name = self.name(a.relation, a.hop, a.key);
            let slot = slot_of(&name);
            let ttl_ms = self.relations[a.relation].ttl_ms;
            if a.horizon > i64::MIN {
                // The mark first: a reader never sees entries gone without a mark that says so.
                let mut mark = redis::cmd("ZADD");
                mark.arg(&name).arg("GT").arg(a.horizon).arg("h");
                let mut trim = redis::cmd("ZREMRANGEBYSCORE");
                trim.arg(&name).arg("-inf").arg(format!("({}", a.horizon));
                requests.push(Request { slot, cmd: mark });
                requests.push(Request { slot, cmd: trim });
            }
            if !a.entries.is_empty() {
                let mut add = redis::cmd("ZADD");
                add.arg(&name);
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
                requests.push(Request { slot, cmd: add });
            }
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(&name).arg(ttl_ms);
            requests.push(Request { slot, cmd: expire });
        }
        self.cluster.exec(&requests)?;
        Ok(())
    }
}

/// A `ZRANGE … WITHSCORES` reply as a [`Stored`] set.
fn decode_set(reply: Value) -> Result<Stored> {
    let bad = |why: &str| Error::Backend {
        backend: "redis",
        message: format!("a relation feature's link set: {why}"),
    };
    let items = match reply {
        Value::Array(items) => items,
        Value::Nil => Vec::new(),
        _ => return Err(bad("not an array")),
    };
    let mut stored = Stored::default();
    let mut items = items.into_iter();
    while let (Some(member), Some(score)) = (items.next(), items.next()) {
        let Value::BulkString(member) = member else {
            return Err(bad("a member that is not a string"));
        };
        if member == b"h" {
            let score = match score {
                Value::BulkString(s) => String::from_utf8_lossy(&s).parse::<f64>().ok(),
                Value::Double(d) => Some(d),
                _ => None,
            };
            stored.trimmed = Some(score.ok_or_else(|| bad("a mark without a score"))? as i64);
            continue;
        }
        if member.len() < 25 || member[0] != b'e' {
            return Err(bad("a member of another layout"));
        }
        let ts = i64::from_le_bytes(member[1..9].try_into().expect("8 bytes"));
        stored.entries.push((ts, member[25..].to_vec()));
    }
    Ok(stored)
}
