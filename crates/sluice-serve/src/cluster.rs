//! A serving cluster (`[cluster]`): members of one name share the pipeline's Redis Cluster for
//! state and membership, and each request is computed by the member that owns its key.
//!
//! - **Membership**: each member keeps its address in the sorted set
//!   `sluice:<namespace>:cluster:{<name>}` with its last heartbeat (wall-clock milliseconds)
//!   as the score, renewed every `heartbeat`; members older than `ttl` are dropped by whoever
//!   sees them. No consensus of our own: Redis is the one place the members agree on.
//! - **Ownership**: the owner of each of the 256 key groups is the live member with the
//!   highest hash of (address, group) — rendezvous hashing, so that a join or a leave moves
//!   only the groups of that member (about 1/N).
//! - **Routing**: [`Node::route`] finds each record's owner from its first entity key
//!   ([`sluice_engine::serve::RouteKeys`]); the HTTP layer forwards the parts owned elsewhere
//!   over persistent HTTP/1.1 connections and merges the answers in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use redis::Value;
use sluice_core::KEY_GROUPS;
use sluice_engine::serve::RouteKeys;
use sluice_engine::state::redis::{slot_of, Cluster, ClusterOptions, RedisOptions, Request};

use crate::metrics::CountGauge;
use crate::ClusterConfig;

/// Header that marks a request forwarded by another member: it is computed where it arrives,
/// never forwarded again (members may briefly disagree on an owner).
pub const FORWARDED: &str = "x-sluice-forwarded";

/// A live member as this member last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its advertised address (`host:port`).
    pub address: String,
    /// Its last heartbeat, wall-clock milliseconds since the epoch.
    pub heartbeat_ms: i64,
}

/// The membership as of the last heartbeat: the live members, sorted by address, and the
/// owner (an index into them) of each key group.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The live members.
    pub members: Vec<Member>,
    /// Per key group, the index of its owner in `members`.
    owners: Vec<u16>,
}

impl View {
    /// The view of `members` (addresses sorted, owners by rendezvous hashing).
    fn new(mut members: Vec<Member>) -> View {
        members.sort_by(|a, b| a.address.cmp(&b.address));
        let owners = (0..KEY_GROUPS)
            .map(|g| {
                (0..members.len())
                    .max_by_key(|&m| rendezvous(&members[m].address, g))
                    .unwrap_or(0) as u16
            })
            .collect();
        View { members, owners }
    }

    /// The address of group `g`'s owner (`None` without members).
    pub fn owner(&self, g: u32) -> Option<&str> {
        let m = *self.owners.get(g as usize)?;
        self.members.get(usize::from(m)).map(|m| m.address.as_str())
    }

    /// How many key groups `address` owns.
    pub fn groups_of(&self, address: &str) -> usize {
        (0..KEY_GROUPS)
            .filter(|&g| self.owner(g) == Some(address))
            .count()
    }
}

/// The rendezvous weight of member `address` for group `g`: a fixed hash (xxh3) that every
/// member computes alike.
fn rendezvous(address: &str, g: u32) -> u64 {
    let mut bytes = Vec::with_capacity(address.len() + 4);
    bytes.extend_from_slice(address.as_bytes());
    bytes.extend_from_slice(&g.to_le_bytes());
    sluice_core::key_hash(&bytes)
}

/// Counters of a member.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// `sluice_cluster_forwarded_total`: requests (or parts of one) sent to another member.
    pub forwarded: Counter,
    /// `sluice_cluster_forward_failures_total`: of which could not reach the member and were
    /// computed here instead.
    pub forward_failures: Counter,
    /// `sluice_cluster_membership_changes_total`: changes of the set of live members seen.
    pub changes: Counter,
    /// `sluice_cluster_members`: live members.
    pub members: CountGauge,
    /// `sluice_cluster_groups`: key groups this member owns.
    pub groups: CountGauge,
}

/// This member of a serving cluster: its view of the membership, kept by a heartbeat thread,
/// and the client it forwards with.
pub struct Node {
    /// The address other members reach this one at.
    pub me: String,
    view: RwLock<View>,
    routes: Mutex<RouteKeys>,
    /// The pooled HTTP client for forwarded requests.
    pub client: Client<HttpConnector, Full<Bytes>>,
    /// Longest wait for another member's answer.
    pub timeout: Duration,
    /// Counters.
    pub metrics: ClusterMetrics,
    stop: AtomicBool,
    heartbeat: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The membership set's Redis key.
fn members_key(namespace: &str, name: &str) -> String {
    format!("sluice:{namespace}:cluster:{{{name}}}")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The heartbeat's Redis side: the set's key and slot, and a client.
struct Beat {
    cluster: Cluster,
    key: String,
    slot: u16,
    me: String,
    ttl: Duration,
}

impl Beat {
    /// Renews this member's heartbeat, drops the members past their TTL and reads the live
    /// ones: one pipeline.
    fn beat(&mut self) -> sluice_engine::Result<Vec<Member>> {
        let now = now_ms();
        let ttl = self.ttl.as_millis() as i64;
        let mut add = redis::cmd("ZADD");
        add.arg(&self.key).arg(now).arg(&self.me);
        let mut drop = redis::cmd("ZREMRANGEBYSCORE");
        drop.arg(&self.key)
            .arg("-inf")
            .arg(format!("({}", now - ttl));
        let mut read = redis::cmd("ZRANGE");
        read.arg(&self.key).arg(0).arg(-1).arg("WITHSCORES");
        // The set itself outlives every member by far, and goes when the cluster is gone.
        let mut expire = redis::cmd("PEXPIRE");
        expire.arg(&self.key).arg(ttl * 100);
        let requests: Vec<Request> = [add, drop, read, expire]
            .into_iter()
            .map(|cmd| Request {
                slot: self.slot,
                cmd,
            })
            .collect();
        let replies = self.cluster.exec(&requests)?;
        let Some(Value::Array(items)) = replies.get(2) else {
            return Ok(Vec::new());
        };
        let mut members = Vec::new();
        for pair in items.chunks(2) {
            let [Value::BulkString(address), score] = pair else {
                continue;
            };
            let heartbeat_ms = match score {
                Value::Double(d) => *d as i64,
                Value::BulkString(b) => {
                    String::from_utf8_lossy(b).parse::<f64>().unwrap_or(0.0) as i64
                }
                _ => 0,
            };
            members.push(Member {
                address: String::from_utf8_lossy(address).into_owned(),
                heartbeat_ms,
            });
        }
        Ok(members)
    }

    /// Leaves the cluster: removes this member's heartbeat.
    fn leave(&mut self) {
        let mut rem = redis::cmd("ZREM");
        rem.arg(&self.key).arg(&self.me);
        if let Err(e) = self.cluster.exec(&[Request {
            slot: self.slot,
            cmd: rem,
        }]) {
            tracing::warn!("cluster: cannot remove this member's heartbeat: {e}");
        }
    }
}

impl Node {
    /// Joins the cluster `config` as `me`: the first heartbeat is sent (and the membership
    /// read) before this returns, then a thread renews it every `heartbeat` until
    /// [`Node::leave`].
    pub fn join(
        config: &ClusterConfig,
        me: String,
        redis: &RedisOptions,
        routes: RouteKeys,
    ) -> sluice_engine::Result<Arc<Node>> {
        let options = ClusterOptions {
            retry_timeout: config.ttl / 2,
            ..redis.cluster.clone()
        };
        let key = members_key(&redis.namespace, &config.name);
        let mut beat = Beat {
            cluster: Cluster::connect(&redis.urls, &[], options)?,
            slot: slot_of(key.as_bytes()),
            key,
            me: me.clone(),
            ttl: config.ttl,
        };
        let members = beat.beat()?;
        let node = Arc::new(Node {
            me,
            view: RwLock::new(View::default()),
            routes: Mutex::new(routes),
            client: {
                // No Nagle: a forwarded request written in two pieces must not wait for the
                // delayed acknowledgement of the first (40 ms stalls otherwise).
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build(connector)
            },
            timeout: Duration::from_secs(5),
            metrics: ClusterMetrics::default(),
            stop: AtomicBool::new(false),
            heartbeat: Mutex::new(None),
        });
        node.update(members);
        let interval = config.heartbeat;
        let weak = Arc::downgrade(&node);
        let thread = std::thread::Builder::new()
            .name("sluice-heartbeat".into())
            .spawn(move || loop {
                let started = Instant::now();
                while started.elapsed() < interval {
                    std::thread::sleep(Duration::from_millis(20).min(interval));
                    match weak.upgrade() {
                        Some(node) if !node.stop.load(Ordering::Relaxed) => {}
                        _ => {
                            beat.leave();
                            return;
                        }
                    }
                }
                match beat.beat() {
                    Ok(members) => match weak.upgrade() {
                        Some(node) => node.update(members),
                        None => return,
                    },
                    Err(e) => tracing::warn!("cluster: heartbeat failed: {e}"),
                }
            })
            .map_err(|_| sluice_engine::Error::Stage("heartbeat"))?;
        *node
            .heartbeat
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(node)
    }

    /// Takes a new list of live members (this one always among them).
    fn update(&self, mut members: Vec<Member>) {
        if !members.iter().any(|m| m.address == self.me) {
            members.push(Member {
                address: self.me.clone(),
                heartbeat_ms: now_ms(),
            });
        }
        let mut view = self.view.write().unwrap_or_else(PoisonError::into_inner);
        let before: Vec<&str> = view.members.iter().map(|m| m.address.as_str()).collect();
        let mut after: Vec<&str> = members.iter().map(|m| m.address.as_str()).collect();
        after.sort_unstable();
        if before != after {
            tracing::info!("cluster: members {after:?}");
            if !view.members.is_empty() {
                self.metrics.changes.inc();
            }
        }
        *view = View::new(members);
        self.metrics.members.set(view.members.len() as u64);
        self.metrics.groups.set(view.groups_of(&self.me) as u64);
    }

    /// The membership as last seen.
    pub fn view(&self) -> View {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The member each record of `lines` (JSONL) goes to: `None` for this one (a record
    /// without a key, or whose group this member owns).
    pub fn route(&self, lines: &[u8]) -> Vec<Option<String>> {
        let groups = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .groups(lines);
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        groups
            .into_iter()
            .map(|g| {
                let owner = view.owner(g?)?;
                (owner != self.me).then(|| owner.to_owned())
            })
            .collect()
    }

    /// The member a feature query for `given` goes to (`None`: this one).
    pub fn route_query(
        &self,
        given: &[(String, sluice_engine::serve::KeyValue)],
    ) -> Option<String> {
        let g = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .query_group(given)?;
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let owner = view.owner(g)?;
        (owner != self.me).then(|| owner.to_owned())
    }

    /// `GET /v1/cluster`: `{"self": ADDR, "members": [{"address", "groups",
    /// "heartbeat_ms_ago"}, ...]}`.
    pub fn describe(&self) -> Vec<u8> {
        let view = self.view();
        let now = now_ms();
        let members: Vec<serde_json::Value> = view
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "address": m.address,
                    "groups": view.groups_of(&m.address),
                    "heartbeat_ms_ago": (now - m.heartbeat_ms).max(0),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"self": self.me, "members": members}))
            .unwrap_or_default()
    }

    /// Stops the heartbeat and removes this member from the cluster (its groups move to the
    /// others at their next heartbeat).
    pub fn leave(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .heartbeat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Sends `body` to member `address` (`path_and_query`: the route and query), marked as
    /// forwarded, with `token` if set; returns the status and the body. `Err(true)`: the
    /// member could not be reached (nothing was sent to it); `Err(false)`: it may have got
    /// the request but did not answer in time.
    pub async fn forward(
        &self,
        address: &str,
        method: hyper::Method,
        path_and_query: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), bool> {
        self.metrics.forwarded.inc();
        let uri = format!("http://{address}{path_and_query}");
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(FORWARDED, "1")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let Ok(request) = request.body(Full::new(Bytes::from(body))) else {
            return Err(true);
        };
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.is_connect())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| false)?
                .to_bytes();
            Ok::<_, bool>((status, body.to_vec()))
        })
        .await;
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(unreached)) => {
                self.metrics.forward_failures.inc();
                Err(unreached)
            }
            Err(_) => {
                self.metrics.forward_failures.inc();
                Err(false)
            }
        }
    }
}
