//! A Redis Cluster client that sends each flush as one pipeline per node.
//!
//! Requests carry their hash slot; a flush groups them by the node that owns the slot and sends
//! every node's pipeline at once, so a flush costs one round trip however many keys it holds.
//! Redirections and failures are handled per request:
//!
//! - `MOVED`: the slot map is reloaded (`CLUSTER SLOTS`) and the request goes to the new owner.
//! - `ASK` (a slot being migrated): the request is sent once more to the named node, preceded
//!   by `ASKING`.
//! - `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, a refused or dropped connection, a
//!   timeout: the request is retried with exponential backoff (10 ms doubling to 1 s) until
//!   `retry_timeout` has passed, then the flush fails with an error naming the node.
//! - `NOSCRIPT` (a node restarted and lost its script cache): the scripts are loaded again.
//!
//! A retried request may have run already (its reply was lost with the connection). Requests
//! must therefore be safe to run twice; the state backend's commits are, because each one is
//! conditional on the version it read and carries its writer's token.
//!
//! A single Redis (cluster support disabled) works too: every slot maps to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, ServerErrorKind, Value};

use super::slot::SLOTS;
use crate::error::{Error, Result};

/// How the client connects and retries.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Give up on a request after retrying for this long.
    pub retry_timeout: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Timeout of one pipeline's reply.
    pub response_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            retry_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// One command and the slot of the key it touches.
#[derive(Debug)]
pub struct Request {
    /// Hash slot of the command's key.
    pub slot: u16,
    /// The command.
    pub cmd: Cmd,
}

/// Counters of the traffic a client sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Flushes: each costs one round trip of latency (its per-node pipelines go out together).
    pub flushes: u64,
    /// Pipelines sent (one per node per flush attempt).
    pub pipelines: u64,
    /// Commands sent, retries included.
    pub commands: u64,
    /// Commands sent again after a redirection or failure.
    pub retries: u64,
    /// Commits that found the key changed by another writer (and were computed again).
    pub conflicts: u64,
    /// Keys of a flush found in the writer's cache.
    pub cache_hits: u64,
    /// Keys of a flush read from Redis first.
    pub cache_misses: u64,
}

impl Traffic {
    /// The sum of two counters.
    pub fn plus(self, o: Traffic) -> Traffic {
        Traffic {
            flushes: self.flushes + o.flushes,
            pipelines: self.pipelines + o.pipelines,
            commands: self.commands + o.commands,
            retries: self.retries + o.retries,
            conflicts: self.conflicts + o.conflicts,
            cache_hits: self.cache_hits + o.cache_hits,
            cache_misses: self.cache_misses + o.cache_misses,
        }
    }
}

struct Node {
    addr: String,
    conn: Option<MultiplexedConnection>,
}

/// A connection to a Redis Cluster or a single Redis. Not shared between threads: each shard
/// worker owns one, with its own single-threaded runtime.
pub struct Cluster {
    seeds: Vec<String>,
    nodes: Vec<Node>,
    /// Node index of each slot.
    slots: Vec<usize>,
    scripts: Vec<String>,
    script_bodies: Vec<String>,
    options: ClusterOptions,
    runtime: tokio::runtime::Runtime,
    traffic: Traffic,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.addr).collect::<Vec<_>>(),
            )
            .field("traffic", &self.traffic)
            .finish()
    }
}

fn backend_error(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: "redis",
        message: message.into(),
    }
}

/// `host:port` of a `redis://host:port[/db]` URL.
fn addr_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

async fn connect(
    addr: &str,
    options: &ClusterOptions,
) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// What to do with one failed request.
enum Outcome {
    /// Retry after a backoff (and reload the slot map).
    Retry,
    /// The slot moved: reload the slot map and retry at once.
    Moved,
    /// Send once to this node with `ASKING`.
    Ask(String),
    /// The scripts are missing on that node.
    NoScript,
}

/// What to do with a failed request of a flush (`None`: fail the flush). The one place that
/// decides which Redis failures are retried; an engine [`Error`] is never retried (see
/// there).
fn classify(err: &redis::RedisError) -> Option<Outcome> {
    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
        return Some(Outcome::Retry);
    }
    match err.kind() {
        redis::ErrorKind::Server(ServerErrorKind::Moved) => Some(Outcome::Moved),
        redis::ErrorKind::Server(ServerErrorKind::Ask) => err
            .redirect_node()
            .map(|(host, port)| Outcome::Ask(format!("{host}:{port}"))),
        redis::ErrorKind::Server(
            ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown,
        ) => Some(Outcome::Retry),
        redis::ErrorKind::Server(ServerErrorKind::NoScript) => Some(Outcome::NoScript),
        _ => None,
    }
}

impl Cluster {
    /// Connects to the first reachable of `urls` and loads the slot map and `scripts` (Lua
    /// sources, later run with [`Cluster::script_sha`]).
    pub fn connect(urls: &[String], scripts: &[&str], options: ClusterOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| backend_error(format!("cannot start the I/O runtime: {e}")))?;
        let mut cluster = Cluster {
            seeds: urls.iter().map(|u| addr_of(u)).collect(),
            nodes: Vec::new(),
            slots: Vec::new(),
            scripts: Vec::new(),
            script_bodies: Vec::new(),
            options,
            runtime,
            traffic: Traffic::default(),
        };
        cluster.script_bodies = scripts.iter().map(|s| s.to_string()).collect();
        let deadline = Instant::now() + cluster.options.retry_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            match cluster
                .refresh_topology()
                .and_then(|()| cluster.load_scripts())
            {
                Ok(()) => return Ok(cluster),
                Err(e) if Instant::now() >= deadline => {
                    return Err(backend_error(format!(
                        "giving up after retrying for {:?}: {}",
                        cluster.options.retry_timeout,
                        match e {
                            Error::Backend { message, .. } => message,
                            other => other.to_string(),
                        }
                    )))
                }
                Err(_) => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Loads every script on every master and records their SHA1s.
    fn load_scripts(&mut self) -> Result<()> {
        let mut shas = Vec::with_capacity(self.script_bodies.len());
        for body in self.script_bodies.clone() {
            shas.push(self.load_script_everywhere(&body)?);
        }
        self.scripts = shas;
        Ok(())
    }

    /// The SHA1 of script `i` (as passed to [`Cluster::connect`]), for `EVALSHA`.
    pub fn script_sha(&self, i: usize) -> &str {
        &self.scripts[i]
    }

    /// Traffic sent so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Addresses (`host:port`) of the nodes that own slots.
    pub fn masters(&self) -> Vec<String> {
        let mut owners = self.slots.clone();
        owners.sort_unstable();
        owners.dedup();
        owners
            .into_iter()
            .map(|i| self.nodes[i].addr.clone())
            .collect()
    }

    fn node_index(&mut self, addr: &str) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n.addr == addr) {
            return i;
        }
        self.nodes.push(Node {
            addr: addr.to_string(),
            conn: None,
        });
        self.nodes.len() - 1
    }

    /// A connection to node `i`, opened if needed.
    fn conn(&mut self, i: usize) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = &self.nodes[i].conn {
            return Ok(c.clone());
        }
        let addr = self.nodes[i].addr.clone();
        let c = self.runtime.block_on(connect(&addr, &self.options))?;
        self.nodes[i].conn = Some(c.clone());
        Ok(c)
    }

    /// Reloads the slot map from the first node (known or seed) that answers.
    fn refresh_topology(&mut self) -> Result<()> {
        let mut candidates: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        candidates.extend(self.seeds.iter().cloned());
        let mut last_error = String::from("no Redis URL given");
        for addr in candidates {
            let i = self.node_index(&addr);
            let mut conn = match self.conn(i) {
                Ok(c) => c,
                Err(e) => {
                    last_error = format!("{addr}: {e}");
                    self.nodes[i].conn = None;
                    continue;
                }
            };
            let reply: redis::RedisResult<Value> = self
                .runtime
                .block_on(redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn));
            match reply {
                Ok(Value::Array(ranges)) => {
                    let mut slots = vec![usize::MAX; SLOTS];
                    for range in ranges {
                        let Some((start, end, addr)) = parse_slot_range(&range) else {
                            continue;
                        };
                        let owner = self.node_index(&addr);
                        if start < SLOTS {
                            slots[start..=end.min(SLOTS - 1)].fill(owner);
                        }
                    }
                    if let Some(s) = slots.iter().position(|&n| n == usize::MAX) {
                        last_error = format!("{addr}: slot {s} has no owner (cluster not ready)");
                        continue;
                    }
                    self.slots = slots;
                    return Ok(());
                }
                Ok(other) => {
                    last_error = format!("{addr}: unexpected CLUSTER SLOTS reply {other:?}")
                }
                Err(e) if e.to_string().contains("cluster support disabled") => {
                    // A single Redis: it owns every slot.
                    self.slots = vec![i; SLOTS];
                    return Ok(());
                }
                Err(e) => {
                    if classify(&e).is_some() {
                        self.nodes[i].conn = None;
                    }
                    last_error = format!("{addr}: {e}");
                }
            }
        }
        Err(backend_error(format!(
            "cannot reach any Redis node: {last_error}"
        )))
    }

    fn load_script_everywhere(&mut self, body: &str) -> Result<String> {
        let owners: Vec<usize> = {
            let mut o = self.slots.clone();
            o.sort_unstable();
            o.dedup();
            o
        };
        let mut sha = String::new();
        for i in owners {
            sha = self.load_script(i, body).map_err(|e| {
                backend_error(format!(
                    "cannot load a script on {}: {e}",
                    self.nodes[i].addr
                ))
            })?;
        }
        Ok(sha)
    }

    fn load_script(&mut self, node: usize, body: &str) -> redis::RedisResult<String> {
        let mut conn = self.conn(node)?;
        self.runtime.block_on(
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(body)
                .query_async(&mut conn),
        )
    }

    /// Sends every request and returns their replies in order. Requests for one node go out as
    /// one pipeline, all nodes at once; failed requests are retried as described in the module
    /// documentation. Replies are never error values.
    pub fn exec(&mut self, requests: &[Request]) -> Result<Vec<Value>> {
        let mut replies: Vec<Option<Value>> = vec![None; requests.len()];
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut ask: HashMap<usize, usize> = HashMap::new();
        let deadline = Instant::now() + self.options.retry_timeout;
        let mut backoff = Duration::from_millis(10);
        let mut first = true;
        while !pending.is_empty() {
            if !first {
                self.traffic.retries += pending.len() as u64;
            }
            first = false;
            let mut round = self.exec_round(requests, &pending, &mut ask, &mut replies)?;
            pending = std::mem::take(&mut round.next);
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let (addr, e) = round.last_error.unwrap_or_default();
                return Err(backend_error(format!(
                    "giving up after retrying for {:?}: {addr}: {e}",
                    self.options.retry_timeout
                )));
            }
            self.recover(round, &mut backoff);
        }
        Ok(replies
            .into_iter()
            .map(|r| r.unwrap_or(Value::Nil))
            .collect())
    }

    /// Sends the `pending` requests, one pipeline per node (the slot's owner, or the node an
    /// ASK named), and files their replies; returns what must be retried and why.
    fn exec_round(
        &mut self,
        requests: &[Request],
        pending: &[usize],
        ask: &mut HashMap<usize, usize>,
        replies: &mut [Option<Value>],
    ) -> Result<Round> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for &r in pending {
            let node = ask
                .get(&r)
                .copied()
                .unwrap_or(self.slots[requests[r].slot as usize]);
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, g)) => g.push(r),
                None => groups.push((node, vec![r])),
            }
        }
        let mut round = Round::default();
        let mut sends = Vec::with_capacity(groups.len());
        for (node, group) in &groups {
            match self.conn(*node) {
                Ok(conn) => {
                    let mut pipe = Pipeline::with_capacity(group.len() * 2);
                    pipe.ignore_errors();
                    for r in group {
                        if ask.contains_key(r) {
                            pipe.cmd("ASKING").ignore();
                        }
                        pipe.add_command(requests[*r].cmd.clone());
                    }
                    sends.push((*node, group, conn, pipe));
                }
                Err(e) => {
                    self.nodes[*node].conn = None;
                    round.failed(self.nodes[*node].addr.clone(), e.to_string(), group);
                }
            }
        }
        self.traffic.flushes += 1;
        self.traffic.pipelines += sends.len() as u64;
        self.traffic.commands += sends.iter().map(|s| s.1.len() as u64).sum::<u64>();
        let results = self.runtime.block_on(join_all(sends.iter_mut().map(
            |(_, _, conn, pipe)| async move {
                pipe.query_async::<Vec<redis::RedisResult<Value>>>(conn)
                    .await
            },
        )));
        for ((node, group, _, _), result) in sends.iter().zip(results) {
            match result {
                Ok(values) => self.file_replies(*node, group, values, ask, replies, &mut round)?,
                Err(e) => {
                    // The connection failed: any of these may or may not have run.
                    if classify(&e).is_none() {
                        return Err(backend_error(format!("{}: {e}", self.nodes[*node].addr)));
                    }
                    self.nodes[*node].conn = None;
                    round.failed(self.nodes[*node].addr.clone(), e.to_string(), group);
                }
            }
        }
        Ok(round)
    }

    /// Files the replies of one node's pipeline: values into `replies`, redirections and
    /// retryable errors into `round`; any other error fails.
    fn file_replies(
        &mut self,
        node: usize,
        group: &[usize],
        values: Vec<redis::RedisResult<Value>>,
        ask: &mut HashMap<usize, usize>,
        replies: &mut [Option<Value>],
        round: &mut Round,
    ) -> Result<()> {
        for (&r, reply) in group.iter().zip(values) {
            let err = match reply {
                Ok(Value::ServerError(e)) => redis::RedisError::from(e),
                Ok(v) => {
                    replies[r] = Some(v);
                    ask.remove(&r);
                    continue;
                }
                Err(e) => e,
            };
            ask.remove(&r);
            match classify(&err) {
                Some(Outcome::Moved) => round.reload = true,
                Some(Outcome::Ask(addr)) => {
                    let target = self.node_index(&addr);
                    ask.insert(r, target);
                }
                Some(Outcome::Retry) => {
                    round.wait = true;
                    round.reload = true;
                }
                Some(Outcome::NoScript) => round.reload_scripts.push(node),
                None => {
                    return Err(backend_error(format!(
                        "{} answered an error: {err}",
                        self.nodes[node].addr
                    )))
                }
            }
            round.last_error = Some((self.nodes[node].addr.clone(), err.to_string()));
            round.next.push(r);
        }
        Ok(())
    }

    /// Between two rounds: backs off, reloads the slot map, and loads the scripts again
    /// where they were lost, as the round asked.
    fn recover(&mut self, round: Round, backoff: &mut Duration) {
        if round.wait {
            std::thread::sleep(*backoff);
            *backoff = (*backoff * 2).min(Duration::from_secs(1));
        }
        if round.reload {
            // A failed reload keeps the old map; the next attempt tells.
            let _ = self.refresh_topology();
        }
        let mut nodes = round.reload_scripts;
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            for body in self.script_bodies.clone() {
                if let Err(e) = self.load_script(node, &body) {
                    // The next round reconnects and reports what still fails.
                    tracing::debug!(node = %self.nodes[node].addr, "cannot load a script: {e}");
                    self.nodes[node].conn = None;
                }
            }
        }
    }
}

/// What one round of [`Cluster::exec`] leaves to the next.
#[derive(Default)]
struct Round {
    /// Requests to send again.
    next: Vec<usize>,
    /// Back off before the next round (a node failed or asked to retry).
    wait: bool,
    /// Reload the slot map.
    reload: bool,
    /// Nodes that lost their scripts.
    reload_scripts: Vec<usize>,
    /// The last error seen: the node's address and the error.
    last_error: Option<(String, String)>,
}

impl Round {
    /// A node could not be reached: its requests are retried after a back-off and a reload.
    fn failed(&mut self, addr: String, error: String, group: &[usize]) {
        self.next.extend(group.iter().copied());
        self.wait = true;
        self.reload = true;
        self.last_error = Some((addr, error));
    }
}

fn parse_slot_range(range: &Value) -> Option<(usize, usize, String)> {
    let Value::Array(items) = range else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(i) => usize::try_from(*i).ok(),
        _ => None,
    };
    let start = int(items.first()?)?;
    let end = int(items.get(1)?)?;
    let Value::Array(master) = items.get(2)? else {
        return None;
    };
    let host = match master.first()? {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let port = match master.get(1)? {
        Value::Int(p) => *p,
        _ => return None,
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    Some((start, end, format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_addresses() {
        assert_eq!(addr_of("redis://127.0.0.1:7000"), "127.0.0.1:7000");
        assert_eq!(addr_of("redis://:pw@host:6379/0"), "host:6379");
        assert_eq!(addr_of("host:1"), "host:1");
    }
}
