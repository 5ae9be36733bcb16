//! `sluice serve`: a pipeline file's engine behind [`sluice_serve::Server`], on a tokio runtime,
//! until SIGTERM or ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use sluice::StateConfig;
use sluice_engine::serve::RouteKeys;
use sluice_serve::cluster::Node;
use sluice_serve::TOKEN_ENV;

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
    /// With `[cluster]`: the address other members reach this one at (default: the address
    /// it listens on).
    pub advertise: Option<String>,
}

/// Runs the server until SIGTERM or ctrl-c; requests in flight finish first.
pub fn run(opts: ServeOptions) -> Result<()> {
    if !super::alloc::no_huge_pages() {
        tracing::warn!("cannot turn transparent huge pages off: expect millisecond latency spikes");
    }
    let pipeline = sluice::Pipeline::load(&opts.pipeline)?;
    let mut config = pipeline.config().serve.clone();
    config.listen = opts.listen.unwrap_or(config.listen);
    if let Some(token) = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        config.token = Some(token);
    }
    let listen = config.listen;
    if !listen.ip().is_loopback() && config.token.is_none() {
        tracing::warn!(
            "listening on {listen}, beyond this machine, without a token: anyone who can reach it can add events and read features; set [serve] token or {TOKEN_ENV}"
        );
    }
    let dead_path = opts
        .dead_letters
        .clone()
        .or_else(|| pipeline.config().dead_letters.clone());
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
    let backend = match &pipeline.config().state {
        StateConfig::Memory => "memory",
        StateConfig::Redis(_) => "redis",
        _ => "embedded",
    };
    let server = pipeline.server(&config, dead_letters)?.with_dashboard(
        sluice_serve::dashboard::DashboardInfo {
            pipeline: super::describe_json(pipeline.config()),
            backend: backend.to_owned(),
        },
    );
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
    let report = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let server = match (&config.cluster, &pipeline.config().state) {
            (Some(cluster), StateConfig::Redis(redis)) => {
                let c = pipeline.config();
                let me = opts.advertise.clone().unwrap_or_else(|| addr.to_string());
                let routes = RouteKeys::new(&c.plan, &c.time_field, c.time_format);
                let node = tokio::task::block_in_place(|| Node::join(cluster, me.clone(), redis, routes))
                    .with_context(|| format!("cannot join cluster `{}`", cluster.name))?;
                eprintln!(
                    "sluice: member {me} of cluster `{}` ({} members)",
                    cluster.name,
                    node.view().members.len()
                );
                server.with_cluster(node)
            }
            _ => server,
        };
        eprintln!(
            "sluice: serving {} on http://{addr} (POST /v1/events, GET /v1/features, /healthz, /metrics; dashboard at /)",
            opts.pipeline.display()
        );
        server
            .serve(listener, shutdown_signal())
            .await
            .context("the HTTP server failed")
    })?;
    eprintln!(
        "sluice: stopped; {} events enriched, {} dead letters ({} late), {} keys",
        report.events, report.dead_letters, report.late, report.keys
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
