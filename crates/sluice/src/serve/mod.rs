//! `sluice serve`: the pipeline behind an HTTP API (axum on tokio).
//!
//! - `POST /v1/events`: one JSON event, or an array of them → the enriched event(s), in the
//!   shape of a `sluice run` output line; the events are added to state as `run` adds them.
//! - `GET /v1/features?<by field>=<value>...[&at=<epoch ms>]`: current feature values, no
//!   event added.
//! - `GET /healthz`, `GET /metrics` (Prometheus text).
//!
//! Tokio's threads read and split bodies, then take the engine ([`engine`], behind a mutex)
//! for the few microseconds a request needs. At most `[serve] queue` requests are in
//! progress at once; beyond that a request gets 503 at once, so memory stays bounded under
//! overload. See `docs/serve.md`.

mod engine;
mod http;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_engine::serve::ServeEngine;

use crate::config;
use metrics::Metrics;

/// The environment variable that sets the bearer token (over `[serve] token`).
pub const TOKEN_ENV: &str = "SLUICE_SERVE_TOKEN";

/// What `sluice serve` was asked to do.
#[derive(Debug)]
pub struct ServeOptions {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Address to listen on (over `[serve] listen`).
    pub listen: Option<SocketAddr>,
    /// Dead-letter file (over `[dead_letters] path`); default: none, the client gets the
    /// reason in the response.
    pub dead_letters: Option<PathBuf>,
}

/// Runs the server until SIGTERM or ctrl-c; requests in flight finish first.
pub fn run(opts: ServeOptions) -> Result<()> {
    if !crate::alloc::no_huge_pages() {
        tracing::warn!("cannot turn transparent huge pages off: expect millisecond latency spikes");
    }
    let pipeline = config::load(&opts.pipeline)?;
    let serve = &pipeline.serve;
    let listen = opts.listen.unwrap_or(serve.listen);
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| serve.token.clone());
    if !listen.ip().is_loopback() && token.is_none() {
        tracing::warn!(
            "listening on {listen}, beyond this machine, without a token: anyone who can reach it can add events and read features; set [serve] token or {TOKEN_ENV}"
        );
    }
    let dead_path = opts
        .dead_letters
        .clone()
        .or_else(|| pipeline.dead_letters.clone());
    let dead_letters: Option<Box<dyn std::io::Write + Send>> = match &dead_path {
        None => None,
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open dead-letter file {}", p.display()))?;
            Some(Box::new(std::io::BufWriter::new(f)))
        }
    };
    let engine = ServeEngine::new(
        pipeline.plan.clone(),
        &pipeline.time_field,
        pipeline.time_format,
        &pipeline.state,
        "http",
    )?;
    let metrics = Arc::new(Metrics::default());
    metrics
        .queue_capacity
        .store(serve.queue as u64, std::sync::atomic::Ordering::Relaxed);
    let core = Arc::new(tokio::sync::Mutex::new(engine::Core {
        engine,
        dead_letters,
    }));
    let state = Arc::new(http::AppState {
        core: Arc::clone(&core),
        permits: Arc::new(tokio::sync::Semaphore::new(serve.queue)),
        capacity: serve.queue,
        // Redis waits for the network, the embedded store for the disk.
        remote: !matches!(pipeline.state, sluice_engine::StateConfig::Memory),
        metrics: Arc::clone(&metrics),
        token,
        max_body: serve.max_body,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("SLUICE_HTTP_THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        )
        .enable_all()
        .thread_name("sluice-http")
        .build()
        .context("cannot start the HTTP runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "sluice: serving {} on http://{addr} (POST /v1/events, GET /v1/features, /healthz, /metrics)",
            opts.pipeline.display()
        );
        // No Nagle: a response written in two pieces must not wait for the client's delayed
        // acknowledgement of the first.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the HTTP server failed")
    });
    drop(runtime);
    core.blocking_lock().flush();
    served?;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "sluice: stopped; {} events enriched, {} dead letters ({} late), {} keys",
        load(&metrics.events),
        load(&metrics.dead_letters),
        load(&metrics.late),
        load(&metrics.keys)
    );
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("sluice: shutting down; finishing the requests in flight");
}
