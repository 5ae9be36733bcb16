//! Sluice over HTTP: a pipeline behind an API (axum on tokio), as a library; `sluice serve`
//! wires it to a pipeline file, a listener and signals.
//!
//! - `POST /v1/events`: one JSON event, or an array of them → the enriched event(s), in the
//!   shape of a `sluice run` output line; the events are added to state as `run` adds them.
//! - `GET /v1/features?<by field>=<value>...[&at=<epoch ms>]`: current feature values, no
//!   event added.
//! - `GET /healthz`, `GET /metrics` (Prometheus text, from a [`metrics::SharedRegistry`]
//!   other components may register into: [`Server::with_registry`], [`Server::registry`]).
//!
//! Tokio's threads read and split bodies, then take the engine (behind a mutex)
//! for the few microseconds a request needs. At most `[serve] queue` requests are in
//! progress at once; beyond that a request gets 503 at once, so memory stays bounded under
//! overload. See `docs/serve.md`.

mod batcher;
pub mod cluster;
pub mod dashboard;
mod engine;
mod http;
pub mod metrics;

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, PoisonError};

use sluice_engine::serve::ServeEngine;

use metrics::{Metrics, SharedRegistry};

/// The environment variable that sets the bearer token (over `[serve] token`).
pub const TOKEN_ENV: &str = "SLUICE_SERVE_TOKEN";

/// Default `[serve] listen`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Settings of the server (`[serve]` of a pipeline file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address to listen on (default [`DEFAULT_LISTEN`]).
    pub listen: std::net::SocketAddr,
    /// Bearer token required on every route but `/healthz`, if set.
    pub token: Option<String>,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Requests that may wait for the engine; beyond, 503 at once.
    pub queue: usize,
    /// With a remote state: how long the engine thread gathers requests after the first one
    /// before taking them as one batch (zero: what is queued when it gets free).
    pub batch_wait: std::time::Duration,
    /// `[cluster]`: membership of a serving cluster, if set.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]` of a pipeline file: `sluice serve` as one member of a serving cluster whose
/// state and membership live in the pipeline's Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Members with the same name (and Redis namespace) form one cluster.
    pub name: String,
    /// How often a member renews its heartbeat.
    pub heartbeat: std::time::Duration,
    /// How long a member without a new heartbeat stays a member.
    pub ttl: std::time::Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default address is valid"),
            token: None,
            max_body: 1 << 20,
            queue: 1024,
            batch_wait: std::time::Duration::ZERO,
            cluster: None,
        }
    }
}

/// What a server did, once stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeReport {
    /// Events enriched and added to state.
    pub events: u64,
    /// Records rejected.
    pub dead_letters: u64,
    /// Of which late.
    pub late: u64,
    /// Keys held at the end.
    pub keys: u64,
}

/// A pipeline's engine behind the HTTP routes.
pub struct Server {
    state: Arc<http::AppState>,
    core: Arc<tokio::sync::Mutex<engine::Core>>,
    metrics: Arc<Metrics>,
    registry: SharedRegistry,
}

impl Server {
    /// A server for `engine`. `blocking`: the engine's state may block (Redis waits for the
    /// network, the embedded store for the disk), so it runs on an engine thread of its own
    /// that takes queued requests in batches (group commit, see `batcher.rs`).
    /// `dead_letters`: where rejected records are written, besides the answer.
    /// Its metrics go to a registry of its own (see [`Server::registry`]).
    pub fn new(
        engine: ServeEngine,
        config: &ServeConfig,
        blocking: bool,
        dead_letters: Option<Box<dyn Write + Send>>,
    ) -> Server {
        Server::with_registry(
            engine,
            config,
            blocking,
            dead_letters,
            SharedRegistry::default(),
        )
    }

    /// As [`Server::new`], with the server's metrics registered in `registry`, which
    /// `GET /metrics` renders whole: what other components register there is served too.
    /// The server's metric names start with `sluice_` (see `docs/serve.md`); a registry must
    /// not hold two metrics of the same name.
    pub fn with_registry(
        engine: ServeEngine,
        config: &ServeConfig,
        blocking: bool,
        dead_letters: Option<Box<dyn Write + Send>>,
        registry: SharedRegistry,
    ) -> Server {
        let metrics =
            Metrics::register(&mut registry.write().unwrap_or_else(PoisonError::into_inner));
        metrics.queue_capacity.set(config.queue as u64);
        let metrics = Arc::new(metrics);
        let core = Arc::new(tokio::sync::Mutex::new(engine::Core {
            engine,
            dead_letters,
        }));
        let state = Arc::new(http::AppState {
            core: Arc::clone(&core),
            permits: Arc::new(tokio::sync::Semaphore::new(config.queue)),
            capacity: config.queue,
            metrics: Arc::clone(&metrics),
            registry: Arc::clone(&registry),
            token: config.token.clone(),
            max_body: config.max_body,
            cluster: None,
            batcher: blocking.then(|| {
                batcher::Batcher::start(Arc::clone(&core), Arc::clone(&metrics), config.batch_wait)
            }),
            history: Arc::new(dashboard::History::default()),
            dashboard: dashboard::DashboardInfo::default(),
        });
        Server {
            state,
            core,
            metrics,
            registry,
        }
    }

    /// The same server as member `node` of a serving cluster: requests are routed to the
    /// owners of their keys, `GET /v1/cluster` describes the membership, and the cluster's
    /// metrics are served. Call before [`Server::serve`] (or [`Server::router`]).
    pub fn with_cluster(mut self, node: Arc<cluster::Node>) -> Server {
        {
            let mut registry = self
                .registry
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let m = &node.metrics;
            registry.register(
                "sluice_cluster_forwarded",
                "Requests or parts of one sent to the member owning their keys",
                m.forwarded.clone(),
            );
            registry.register(
                "sluice_cluster_forward_failures",
                "Forwarded requests whose member could not be reached or did not answer",
                m.forward_failures.clone(),
            );
            registry.register(
                "sluice_cluster_membership_changes",
                "Changes of the set of live members seen",
                m.changes.clone(),
            );
            registry.register("sluice_cluster_members", "Live members", m.members.clone());
            registry.register(
                "sluice_cluster_groups",
                "Key groups this member owns",
                m.groups.clone(),
            );
        }
        match Arc::get_mut(&mut self.state) {
            Some(state) => state.cluster = Some(node),
            None => panic!("Server::with_cluster after the server's routes were taken"),
        }
        self
    }

    /// The same server, its dashboard showing `info` (the pipeline, the state backend). Call
    /// before [`Server::serve`] (or [`Server::router`]).
    pub fn with_dashboard(mut self, info: dashboard::DashboardInfo) -> Server {
        match Arc::get_mut(&mut self.state) {
            Some(state) => state.dashboard = info,
            None => panic!("Server::with_dashboard after the server's routes were taken"),
        }
        self
    }

    /// The registry `GET /metrics` renders, for other components to register their metrics
    /// in (behind a lock: take it only to register, never across an `await`).
    pub fn registry(&self) -> SharedRegistry {
        Arc::clone(&self.registry)
    }

    /// The routes, to mount in a larger axum application.
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.state))
    }

    /// Serves `listener` until `shutdown` resolves; requests in flight finish first, then
    /// the dead letters are flushed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<ServeReport> {
        // No Nagle: a response written in two pieces must not wait for the client's delayed
        // acknowledgement of the first.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        // A member leaves the cluster as soon as it is asked to stop, so that the others
        // take its groups while it finishes the requests in flight.
        let node = self.state.cluster.clone();
        let shutdown = async move {
            shutdown.await;
            if let Some(node) = node {
                // Leaving waits for the heartbeat thread: not on the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || node.leave()).await;
            }
        };
        let sampler = tokio::spawn(dashboard::History::run(
            Arc::clone(&self.state.history),
            Arc::clone(&self.metrics),
        ));
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        sampler.abort();
        self.core.lock().await.flush();
        served?;
        Ok(ServeReport {
            events: self.metrics.events.get(),
            dead_letters: self.metrics.dead_letters.get(),
            late: self.metrics.late.get(),
            keys: self.metrics.keys.get(),
        })
    }
}
