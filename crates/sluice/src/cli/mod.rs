//! The command line: `sluice run | serve | check | gen | bench`.

pub mod alloc;
mod progress;
mod run;
mod serve;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice::config::{self, PipelineConfig};
use sluice_bench::duckdb::Leg as DuckLeg;
use sluice_bench::gen::{self, GenFormat, GenKind, GenOptions};
use sluice_core::relation::LinkAgg;
use sluice_core::{format_duration, SeriesKind};

/// Sluice: exact per-event sliding-window features over streams.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline: enrich every input event with its features.
    Run(RunArgs),
    /// Serve a pipeline over HTTP: POST /v1/events, GET /v1/features, /healthz, /metrics.
    Serve(ServeArgs),
    /// Validate a pipeline file and print its plan.
    Check {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Write deterministic synthetic events: flat transactions, or nested logins,
    /// transactions and registers (`--kind nested`).
    Gen(GenArgs),
    /// End-to-end benchmark: generate data, run the benchmark pipeline with each worker count,
    /// compare with a plain serde_json loop.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct users.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Days of event time.
    #[arg(long, default_value_t = 7)]
    days: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Lower each event time by up to this many milliseconds (out-of-order events).
    #[arg(long, default_value_t = 0)]
    disorder: u64,
    /// Worker counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    workers: Vec<usize>,
    /// Runs per worker count.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Working directory for the data and outputs.
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run this other `sluice` binary (say, the previous commit's) interleaved with this one
    /// and print their ratio (the end-to-end benchmark only).
    #[arg(long)]
    against: Option<PathBuf>,
    /// Benchmark Redis state instead: node URLs of a Redis Cluster, comma-separated (for
    /// example from `scripts/redis-cluster.sh start`). Keys are written under a fresh
    /// namespace and deleted afterwards.
    #[arg(long, value_delimiter = ',')]
    redis: Vec<String>,
    /// Benchmark checkpoints instead: throughput with a checkpoint every second against
    /// none, then snapshot and restore times for --keys keys.
    #[arg(long)]
    checkpoints: bool,
    /// With --checkpoints: keys of the in-process snapshot benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Benchmark Kafka instead: topic to topic with one and two processes of a group, and topic
    /// to file with and without checkpoints, on the broker at this address (for example from
    /// `scripts/kafka.sh start`).
    #[arg(long)]
    kafka: Option<String>,
    /// Benchmark `sluice serve` instead: single-event requests at fixed rates (latency
    /// percentiles), then batched requests (events/s).
    #[arg(long)]
    serve: bool,
    /// Benchmark a serving cluster instead (needs --redis): single-event requests at fixed
    /// rates through one server, three members of a `[cluster]` and three plain servers on
    /// the same Redis state, with the Redis round trips, cache hits and conflicts.
    #[arg(long, requires = "redis")]
    cluster: bool,
    /// With --serve or --cluster: single-event request rates, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [5_000, 10_000, 20_000, 30_000])]
    rates: Vec<u64>,
    /// With --serve: seconds per rate.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// With --serve: connections the load is spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// With --serve: events per request in the batched phase.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// With --cluster: the servers' `[serve] batch_wait` (for example 1ms).
    #[arg(long)]
    batch_wait: Option<String>,
    /// With --redis: events run through the naive layout (one key per hourly bucket, one
    /// command per round trip), which is far slower.
    #[arg(long, default_value_t = 2_000)]
    naive_events: u64,
    /// Benchmark the feature language instead: the six-feature pipeline over the transactions
    /// and a 27-feature pipeline over nested events (`sluice gen --kind nested`: `where`
    /// filters, nested paths, derived features, every aggregation), interleaved run by run,
    /// with the ratio of their events/s.
    #[arg(long, conflicts_with_all = ["against", "redis", "checkpoints", "kafka", "serve"])]
    language: bool,
    /// Benchmark relation features instead: the six-feature pipeline over the transactions
    /// and a relation pipeline over nested events (links through shared and hub devices),
    /// interleaved run by run, with the ratio of their events/s. With `--redis URLS`: the
    /// relation pipeline with its links in memory and in the Redis Cluster, interleaved.
    #[arg(long, conflicts_with_all = ["against", "checkpoints", "kafka", "serve", "language"])]
    relations: bool,
    /// Benchmark against DuckDB instead: the six-feature pipeline in Sluice and as SQL window
    /// functions in DuckDB (installed from PyPI into `<target>/duckdb-venv` on first use),
    /// file to file, interleaved round by round (--runs rounds), JSONL and Parquet, with
    /// medians of the wall times, peak memory and a cross-check of the first round's outputs.
    #[arg(
        long,
        conflicts_with_all = [
            "against", "redis", "checkpoints", "kafka", "serve", "cluster", "language", "relations"
        ]
    )]
    vs_duckdb: bool,
    /// With --vs-duckdb: the legs to run, comma-separated (`jsonl`: JSONL in and out;
    /// `parquet`: Parquet in and out).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [DuckLeg::Jsonl, DuckLeg::Parquet],
        requires = "vs_duckdb"
    )]
    duckdb_legs: Vec<DuckLeg>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Input file, or `-` for stdin (overrides the `source` section).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output file, or `-` for stdout (overrides the `sink` section; default stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Dead-letter file (overrides the `dead_letters` section; default stderr).
    #[arg(long)]
    dead_letters: Option<PathBuf>,
    /// Worker threads (default: `workers` of the `engine` section, else the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Input format, when the `source` section does not give it (`jsonl`, `csv` or `parquet`;
    /// a `.csv` or `.parquet` input is read as such). An `--output` ending in `.parquet` is
    /// written as Parquet.
    #[arg(long, value_parser = ["jsonl", "csv", "parquet"])]
    format: Option<String>,
    /// Never show a progress bar (periodic log lines are still written when not on a terminal).
    #[arg(long)]
    quiet: bool,
    /// Also write the run's summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Ignore (and delete) the checkpoints of a `[checkpoint]` section and start over.
    #[arg(long)]
    fresh: bool,
    /// With a Kafka source: stop once every assigned partition has been read to its end (so at
    /// least as far as it went when the run started; as `until_end = true` in `[source]`).
    #[arg(long)]
    until_end: bool,
    /// With a Kafka source and checkpoints: this process's name in the group's shared
    /// checkpoint directory (each process of a group needs its own; its checkpoints go to
    /// `<dir>/instance-NAME`).
    #[arg(long, default_value = "0")]
    instance: String,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Address to listen on (overrides `[serve] listen`; default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Dead-letter file, appended to (overrides the `dead_letters` section; default: none,
    /// rejected records are answered with their reason and counted).
    #[arg(long)]
    dead_letters: Option<PathBuf>,
    /// With `[cluster]`: the address other members reach this one at (`host:port`; default:
    /// the address it listens on).
    #[arg(long)]
    advertise: Option<String>,
}

#[derive(Debug, clap::Args)]
struct GenArgs {
    /// What to generate: `transactions` (flat) or `nested` (logins, transactions and
    /// registers with `user`, `device` and `payload` objects; with `--format csv` the objects
    /// are flattened into dotted headers such as `user.id`, and a missing or null field is an
    /// empty cell).
    #[arg(long, value_enum, default_value_t = GenKind::Transactions)]
    kind: GenKind,
    /// Number of events.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Number of distinct users.
    #[arg(long, default_value_t = 100)]
    users: u64,
    /// Days of event time covered.
    #[arg(long, default_value_t = 1)]
    days: u64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Lower each event time by up to this many milliseconds (out-of-order events).
    #[arg(long, default_value_t = 0)]
    disorder: u64,
    /// Event time of the first event, epoch milliseconds (default 2026-01-01T00:00:00Z).
    #[arg(long, default_value_t = 1_767_225_600_000)]
    start_ms: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GenFormat::Jsonl)]
    format: GenFormat,
    /// Output file (default stdout).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Entry point: parses arguments, runs the command, prints errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(serve::ServeOptions {
            pipeline: args.pipeline,
            listen: args.listen,
            dead_letters: args.dead_letters,
            advertise: args.advertise,
        }),
        Command::Check { pipeline } => check(&pipeline),
        Command::Gen(args) => generate(args),
        Command::Bench(args) => {
            let opts = sluice_bench::BenchOptions {
                events: args.events,
                users: args.users,
                days: args.days,
                seed: args.seed,
                disorder_ms: args.disorder,
                workers: args.workers,
                runs: args.runs.max(1),
                dir: args.dir,
                json: args.json,
                against: args.against,
            };
            let serve_bench = sluice_bench::serve::ServeBench {
                rates: args.rates.clone(),
                seconds: args.seconds.max(1),
                connections: args.connections.max(1),
                batch: args.batch.max(1),
                batch_wait: args.batch_wait.clone(),
            };
            if let Some(brokers) = &args.kafka {
                bench_kafka(&opts, brokers)
            } else if args.cluster {
                alloc::no_huge_pages();
                sluice_bench::cluster::run(&opts, &serve_bench, &args.redis)
            } else if args.serve {
                // The generator's own huge-page faults would stall its threads and show as
                // latency.
                alloc::no_huge_pages();
                sluice_bench::serve::run(&opts, &serve_bench)
            } else if args.checkpoints {
                config::parse(Path::new("bench.toml"), sluice_bench::BENCH_PIPELINE)
                    .map_err(anyhow::Error::from)
                    .and_then(|p| sluice_bench::checkpoints::run(&opts, &p.plan, args.keys))
            } else if args.vs_duckdb {
                bench_duckdb(&opts, &args.duckdb_legs)
            } else if args.language {
                sluice_bench::language::run(&opts)
            } else if args.relations && !args.redis.is_empty() {
                sluice_bench::redis::run_relations(&opts, &args.redis)
            } else if args.relations {
                sluice_bench::language::run_against(&opts, sluice_bench::language::RELATIONS)
            } else if args.redis.is_empty() {
                sluice_bench::e2e::run(&opts)
            } else {
                sluice_bench::redis::run(&opts, &args.redis, args.naive_events)
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `sluice bench --vs-duckdb`: the benchmark pipeline against DuckDB.
fn bench_duckdb(opts: &sluice_bench::BenchOptions, legs: &[DuckLeg]) -> Result<()> {
    let p = config::parse(Path::new("bench.toml"), sluice_bench::BENCH_PIPELINE)?;
    sluice_bench::duckdb::run(
        opts,
        sluice_bench::BENCH_PIPELINE,
        &p.plan,
        &p.time_field,
        legs,
    )
}

fn check(path: &Path) -> Result<()> {
    let p = config::load(path)?;
    print!("{}", describe(&p));
    Ok(())
}

/// The kind of a key's register set, as `sluice check` words it.
fn series_kind(series: &sluice_core::plan::SeriesSpec) -> &'static str {
    match series.kind {
        SeriesKind::Numeric if series.needs_squares => "numeric registers with sums of squares",
        SeriesKind::Numeric => "numeric registers",
        SeriesKind::Distinct => "distinct registers",
        SeriesKind::Values => "value registers",
        SeriesKind::Approx => "HyperLogLog sketches",
    }
}

/// The plan of a pipeline as JSON, for the dashboard of `sluice serve`: the features grouped
/// by key and register set as `sluice check` prints them, each with its definition.
pub(crate) fn describe_json(p: &PipelineConfig) -> serde_json::Value {
    use serde_json::json;
    let plan = &p.plan;
    let fql = |name: &str| {
        p.fql_forms
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, form)| form.clone())
    };
    let feature = |f: usize| {
        let spec = &plan.features[f];
        json!({"name": spec.name, "agg": spec.agg.to_string(), "where": spec.filter, "fql": fql(&spec.name)})
    };
    let keys: Vec<_> = plan
        .keys
        .iter()
        .map(|key| {
            let series: Vec<_> = key
                .series
                .iter()
                .map(|series| {
                    let windows: Vec<_> = series
                        .windows
                        .iter()
                        .map(|w| {
                            let features: Vec<_> = w
                                .outputs
                                .iter()
                                .filter(|&&(_, slot)| !plan.hidden.contains(&key.features[slot]))
                                .map(|&(_, slot)| feature(key.features[slot]))
                                .collect();
                            json!({"window": format_duration(w.width_ms).to_string(), "features": features})
                        })
                        .collect();
                    json!({
                        "kind": series_kind(series),
                        "of": series.of.map_or("events".to_owned(), |f| plan.fields[f].clone()),
                        "where": series.filter.map(|i| plan.filters[i].clone()),
                        "precision": if series.granularity_ms == 1 {
                            "exact".to_owned()
                        } else {
                            format!("{} buckets", format_duration(series.granularity_ms))
                        },
                        "windows": windows,
                    })
                })
                .collect();
            json!({"by": key.by, "series": series})
        })
        .collect();
    let relations: Vec<_> = plan.relations.iter().map(|r| feature(r.feature)).collect();
    let derived: Vec<_> = plan
        .derived
        .iter()
        .map(|d| json!({"name": d.spec.name, "agg": "expr", "expr": d.spec.expr, "fql": fql(&d.spec.name)}))
        .collect();
    json!({
        "path": p.path.display().to_string(),
        "time_field": p.time_field,
        "lateness": format_duration(plan.lateness_ms.max(1)).to_string(),
        "features": plan.outputs.len(),
        "keys": keys,
        "relations": relations,
        "derived": derived,
    })
}

/// The plan of a pipeline, for people.
fn describe(p: &PipelineConfig) -> String {
    let plan = &p.plan;
    let mut s = format!(
        "pipeline {}: ok\n  event time: field `{}` ({}), lateness {}\n  {} features over {} keys\n",
        p.path.display(),
        p.time_field,
        p.time_format.name(),
        format_duration(plan.lateness_ms.max(1)),
        plan.outputs.len(),
        plan.keys.len(),
    );
    if plan.lateness_ms == 0 {
        s = s.replace("lateness 1ms", "lateness 0");
    }
    for key in &plan.keys {
        if key.by.is_empty() {
            s.push_str("  key [] (global: one key that every event has)\n");
        } else {
            s.push_str(&format!("  key [{}]\n", key.by.join(", ")));
        }
        for series in &key.series {
            let of = series
                .of
                .map_or("events".to_owned(), |f| format!("`{}`", plan.fields[f]));
            let kind = series_kind(series);
            let precision = if series.granularity_ms == 1 {
                "exact".to_owned()
            } else {
                format!("{} buckets", format_duration(series.granularity_ms))
            };
            let filter = series
                .filter
                .map_or(String::new(), |i| format!(" where {}", plan.filters[i]));
            s.push_str(&format!(
                "    {kind} of {of}{filter} ({precision}), shared by:\n"
            ));
            for w in &series.windows {
                let names: Vec<String> = w
                    .outputs
                    .iter()
                    .map(|&(agg, slot)| {
                        format!("{} ({agg})", plan.features[key.features[slot]].name)
                    })
                    .collect();
                s.push_str(&format!(
                    "      window {}: {}\n",
                    format_duration(w.width_ms),
                    names.join(", ")
                ));
            }
        }
    }
    if !plan.relations.is_empty() {
        s.push_str("  relation features (two hops, computed in input order by the router):\n");
        for r in &plan.relations {
            let f = &plan.features[r.feature];
            let field = |i: usize| format!("`{}`", plan.fields[i]);
            let by: Vec<String> = r.by.iter().map(|&i| field(i)).collect();
            let filter = |i: Option<usize>| {
                i.map_or(String::new(), |i| format!(" where {}", plan.filters[i]))
            };
            let (buckets, limit) = match r.agg {
                LinkAgg::DistinctCountApprox { granularity_ms } => (
                    format!(
                        " in {} buckets (HyperLogLog sets at hubs)",
                        format_duration(granularity_ms)
                    ),
                    "links",
                ),
                LinkAgg::DistinctCount | LinkAgg::Count => (String::new(), "linked events"),
            };
            s.push_str(&format!(
                "    {} ({}): key [{}], links via {}{}, counts {}{} over {}{buckets}, at most {} {limit} read\n",
                f.name,
                f.agg,
                by.join(", "),
                field(r.via),
                filter(r.via_filter),
                r.of.map_or("events".to_owned(), field),
                filter(r.filter),
                format_duration(r.window_ms),
                r.limit
            ));
        }
    }
    for (name, toml) in &p.fql_forms {
        s.push_str(&format!("  fql feature `{name}`, as TOML:\n"));
        for line in toml.lines() {
            if line.is_empty() {
                s.push('\n');
            } else {
                s.push_str(&format!("    {line}\n"));
            }
        }
    }
    if !plan.derived.is_empty() {
        s.push_str("  derived (computed per event, in this order):\n");
        for &d in &plan.derived_order {
            let d = &plan.derived[d].spec;
            s.push_str(&format!("    {} = {}\n", d.name, d.expr));
        }
    }
    s
}

fn generate(args: GenArgs) -> Result<()> {
    let opts = GenOptions {
        events: args.events,
        users: args.users,
        days: args.days,
        seed: args.seed,
        disorder_ms: args.disorder,
        start_ms: args.start_ms,
        format: args.format,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
        }
        _ => Box::new(io::stdout().lock()),
    };
    gen::write_events(args.kind, &opts, &mut out).context("cannot write generated events")?;
    Ok(())
}

#[cfg(feature = "kafka")]
fn bench_kafka(opts: &sluice_bench::BenchOptions, brokers: &str) -> Result<()> {
    sluice_bench::kafka::run(opts, brokers)
}

#[cfg(not(feature = "kafka"))]
fn bench_kafka(_: &sluice_bench::BenchOptions, _: &str) -> Result<()> {
    anyhow::bail!("this sluice was built without Kafka support (the `kafka` feature)")
}
