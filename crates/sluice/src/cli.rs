//! The command line: `sluice run | serve | check | gen | bench`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_core::{format_duration, SeriesKind};
use sluice_engine::checkpoint::{CheckpointConfig, SinkPosition};
use sluice_engine::{Input, Job, Outputs, Stats};

use crate::config::{self, Pipeline, SinkConfig, SourceConfig};
use crate::gen::{self, GenFormat, GenOptions};
use crate::progress::Progress;

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
    /// Write deterministic synthetic transactions.
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
    /// With --serve: single-event request rates, comma-separated.
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
    /// With --redis: events run through the naive layout (one key per hourly bucket, one
    /// command per round trip), which is far slower.
    #[arg(long, default_value_t = 2_000)]
    naive_events: u64,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
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
    /// Input format, when the `source` section does not give it (`jsonl` or `csv`; a `.csv` input
    /// path implies csv).
    #[arg(long, value_parser = ["jsonl", "csv"])]
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
}

#[derive(Debug, clap::Args)]
struct GenArgs {
    /// Number of transactions.
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
        Command::Run(args) => run(args),
        Command::Serve(args) => crate::serve::run(crate::serve::ServeOptions {
            pipeline: args.pipeline,
            listen: args.listen,
            dead_letters: args.dead_letters,
        }),
        Command::Check { pipeline } => check(&pipeline),
        Command::Gen(args) => generate(args),
        Command::Bench(args) => {
            let opts = crate::bench::BenchOptions {
                events: args.events,
                users: args.users,
                days: args.days,
                seed: args.seed,
                disorder_ms: args.disorder,
                workers: args.workers,
                runs: args.runs.max(1),
                dir: args.dir,
                json: args.json,
            };
            if let Some(brokers) = &args.kafka {
                crate::bench_kafka::run(&opts, brokers)
            } else if args.serve {
                crate::bench_serve::run(
                    &opts,
                    &crate::bench_serve::ServeBench {
                        rates: args.rates,
                        seconds: args.seconds.max(1),
                        connections: args.connections.max(1),
                        batch: args.batch.max(1),
                    },
                )
            } else if args.checkpoints {
                crate::bench_checkpoint::run(&opts, args.keys)
            } else if args.redis.is_empty() {
                crate::bench::run(&opts)
            } else {
                crate::bench_redis::run(&opts, &args.redis, args.naive_events)
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

fn open_input(path: &Path) -> Result<Box<dyn io::Read + Send>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(io::stdin()))
    } else {
        let f =
            File::open(path).with_context(|| format!("cannot open input {}", path.display()))?;
        Ok(Box::new(f))
    }
}

fn run(args: RunArgs) -> Result<()> {
    let pipeline = config::load(&args.pipeline)?;
    let kafka_source = match (&args.input, &pipeline.source) {
        (None, Some(SourceConfig::Kafka(k))) => Some(crate::kafka::KafkaSource {
            until_end: k.until_end || args.until_end,
            ..k.clone()
        }),
        _ => None,
    };
    let input_path = match (&args.input, &pipeline.source) {
        (Some(p), _) => p.clone(),
        (None, Some(SourceConfig::File(p))) => p.clone(),
        (None, Some(SourceConfig::Stdin)) => PathBuf::from("-"),
        (None, Some(SourceConfig::Kafka(k))) => PathBuf::from(format!("kafka:{}", k.topic)),
        (None, None) => anyhow::bail!(
            "no input: give --input PATH (or - for stdin), or a [source] section in {}",
            args.pipeline.display()
        ),
    };
    let format = match args.format.as_deref() {
        Some("csv") => sluice_engine::InputFormat::Csv,
        Some(_) => sluice_engine::InputFormat::Jsonl,
        None if pipeline.source.is_none() && input_path.extension().is_some_and(|e| e == "csv") => {
            sluice_engine::InputFormat::Csv
        }
        None => pipeline.format,
    };
    let kafka_sink = match (&args.output, &pipeline.sink) {
        (None, Some(SinkConfig::Kafka(k))) => Some(k.clone()),
        _ => None,
    };
    let output_path = match (&args.output, &pipeline.sink) {
        (Some(p), _) => p.clone(),
        (None, Some(SinkConfig::File(p))) => p.clone(),
        (None, Some(SinkConfig::Kafka(k))) => PathBuf::from(format!("kafka:{}", k.topic)),
        _ => PathBuf::from("-"),
    };
    let dead_path = args
        .dead_letters
        .clone()
        .or_else(|| pipeline.dead_letters.clone());
    let workers = args
        .workers
        .or(pipeline.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");

    let input_len = std::fs::metadata(&input_path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    // A Kafka source with checkpoints: exactly-once state, restored per partition, and a run
    // restarted from the checkpoints at every rebalance (see `kafka_checkpoint`).
    let kafka_checkpoints = match (&kafka_source, &pipeline.checkpoint) {
        (Some(k), Some(c)) => {
            let p = crate::kafka_checkpoint::Partitions::open(
                c,
                &args.instance,
                &pipeline.plan,
                &k.topic,
            )?;
            if args.fresh {
                let n = sluice_engine::checkpoint::clear(p.own_dir())?;
                eprintln!(
                    "sluice: --fresh: deleted {n} checkpoint(s) in {}",
                    p.own_dir().display()
                );
            }
            Some(Arc::new(p))
        }
        _ => None,
    };
    let shared_consumer = match (&kafka_source, &kafka_checkpoints) {
        (Some(k), Some(p)) => {
            crate::kafka::stop_on_signals();
            Some(crate::kafka::consumer(k, Some(Arc::clone(p)), None)?)
        }
        _ => None,
    };
    let checkpoint_config = match (&kafka_checkpoints, &pipeline.checkpoint) {
        // Old checkpoints are pruned by the source, which knows which ones other processes
        // may still restore.
        (Some(p), Some(c)) => Some(CheckpointConfig {
            dir: p.own_dir().to_path_buf(),
            keep: usize::MAX,
            ..c.clone()
        }),
        _ => pipeline.checkpoint.clone(),
    };
    let job = Job::new(
        pipeline.plan.clone(),
        pipeline.time_field.clone(),
        pipeline.time_format,
        workers,
    )
    .with_state(pipeline.state.clone())
    .with_checkpoints(checkpoint_config)
    .with_batch_wait(
        input_len
            .is_none()
            .then(|| std::time::Duration::from_millis(pipeline.batch_wait_ms.max(0) as u64)),
    );
    let stats = Arc::new(Stats::default());
    let progress = Progress::start(Arc::clone(&stats), input_len, args.quiet);
    let started = std::time::Instant::now();
    // Runs started again from the checkpoints after a rebalance (their outputs since the
    // checkpoint were cut back and written again, and are counted again).
    let mut restarts = 0u64;
    let result = loop {
        let assignment = kafka_checkpoints
            .as_ref()
            .map(|p| p.start_run())
            .transpose()?;
        let resume = match (&kafka_checkpoints, &assignment) {
            (Some(p), Some(a)) => p.resume(a)?,
            _ => match &pipeline.checkpoint {
                Some(c) => crate::resume::find(c, &pipeline.plan, args.fresh)?,
                None => None,
            },
        };
        let mut committer = None;
        let mut partitions: Option<Arc<dyn sluice_engine::router::LinePartitions>> = None;
        let marks: crate::kafka::Marks = Arc::default();
        let input = Input {
            reader: match (&resume, &kafka_source, &shared_consumer) {
                (_, Some(k), Some(consumer)) => {
                    partitions = Some(Arc::new(crate::kafka::MarksPartitions(Arc::clone(&marks))));
                    Box::new(crate::kafka::KafkaReader::for_assignment(
                        Arc::clone(consumer),
                        Arc::clone(kafka_checkpoints.as_ref().context("checkpoints")?),
                        assignment.as_ref().map_or(0, |a| a.generation),
                        k.until_end,
                        Arc::clone(&marks),
                    ))
                }
                (_, Some(k), None) => {
                    crate::kafka::stop_on_signals();
                    let (reader, c) = crate::kafka::KafkaReader::open(k)?;
                    committer = Some(c);
                    partitions = Some(reader.line_partitions());
                    Box::new(reader)
                }
                (Some(r), None, _) => {
                    crate::resume::open_input_at(&input_path, r.manifest.source.offset)?
                }
                (None, None, _) => open_input(&input_path)?,
            },
            name: input_path.clone(),
            format,
        };
        let sink = resume.as_ref().map(|r| r.manifest.sink);
        // Kafka sinks, whose deliveries are waited for before offsets are committed (or, without
        // a Kafka source, every second and at the end).
        let mut kafka_sinks = Vec::new();
        let mut kafka_writer = |k: &crate::kafka::KafkaSink| -> Result<Box<dyn Write + Send>> {
            let w = crate::kafka::KafkaWriter::open(k)?;
            kafka_sinks.push(w.handle());
            Ok(Box::new(w))
        };
        let (events, events_file) = match &kafka_sink {
            Some(k) => (kafka_writer(k)?, None),
            None => {
                crate::resume::open_output(&output_path, "output", sink.map(|s| s.events_bytes))?
            }
        };
        let (dead_letters, dead_letters_file) = match (&dead_path, &pipeline.dead_letter_topic) {
            (Some(p), _) => crate::resume::open_output(
                p,
                "dead-letter file",
                sink.map(|s| s.dead_letters_bytes),
            )?,
            (None, Some(k)) => (kafka_writer(k)?, None),
            (None, None) => (Box::new(io::stderr()) as Box<dyn Write + Send>, None),
        };
        let source_checkpoint: Option<Box<dyn sluice_engine::checkpoint::SourceCheckpoint>> = match (
            &kafka_checkpoints,
            &assignment,
            &shared_consumer,
            &pipeline.checkpoint,
        ) {
            (Some(p), Some(a), Some(consumer), Some(c)) => Some(Box::new(
                crate::kafka_checkpoint::PartitionCheckpoints::new(
                    Arc::clone(p),
                    a,
                    Arc::clone(&marks),
                    kafka_sinks.clone(),
                    Arc::clone(consumer),
                    c.keep,
                ),
            )),
            _ => None,
        };
        let on_flushed: Option<sluice_engine::run::OnFlushed> = match committer {
            Some(mut c) => {
                for h in kafka_sinks {
                    c.watch(h)?;
                }
                // Output files are synced before their input's offsets are committed.
                for f in [&events_file, &dead_letters_file].into_iter().flatten() {
                    c.watch_file(f.try_clone().context("cannot share an output file")?)?;
                }
                Some(Box::new(move |records, last| c.flushed(records, last)))
            }
            None if !kafka_sinks.is_empty() => {
                let mut check = crate::kafka::DeliveryCheck::new(kafka_sinks);
                Some(Box::new(move |records, last| check.flushed(records, last)))
            }
            None => None,
        };
        let outputs = Outputs {
            events,
            dead_letters,
            start: SinkPosition {
                events_bytes: sink.map_or(0, |s| s.events_bytes),
                dead_letters_bytes: if dead_letters_file.is_some() {
                    sink.map_or(0, |s| s.dead_letters_bytes)
                } else {
                    0
                },
            },
            events_file,
            dead_letters_file,
            on_flushed,
            source_checkpoint,
        };
        if let Some(r) = &resume {
            let keys: usize = r
                .groups
                .iter()
                .map(|g| g.tables.iter().map(Vec::len).sum::<usize>())
                .sum();
            match &assignment {
                Some(a) => eprintln!(
                    "sluice: partitions {:?}: {} restored from checkpoints ({keys} keys); outputs cut back to this instance's newest checkpoint",
                    a.partitions,
                    a.restore.len(),
                ),
                None => eprintln!(
                    "sluice: resuming from checkpoint {} in {}: input line {} (byte {}), {keys} keys; --fresh starts over",
                    r.manifest.id,
                    pipeline.checkpoint.as_ref().map_or(String::new(), |c| c.dir.display().to_string()),
                    r.manifest.source.line,
                    r.manifest.source.offset,
                ),
            }
        }
        let job = job.clone().with_partitions(partitions);
        tracing::debug!(workers, input = %input_path.display(), "starting run");
        let result = sluice_engine::run_resumed(&job, input, outputs, Arc::clone(&stats), resume);
        if let (Some(p), Some(a)) = (&kafka_checkpoints, &assignment) {
            if result.is_ok() && p.generation() != a.generation && !crate::kafka::stopping() {
                tracing::info!("kafka: rebalanced; restarting from the checkpoints");
                restarts += 1;
                continue;
            }
        }
        break result.map(|mut s| {
            s.elapsed = started.elapsed();
            s
        });
    };
    progress.finish();
    let summary = result?;
    let peak_mb = peak_rss_mb();
    if let Some(path) = &args.summary_json {
        let report = crate::bench::RunReport {
            records: summary.records,
            events: summary.events,
            dead_letters: summary.dead_letters,
            workers: job.workers,
            seconds: summary.elapsed.as_secs_f64(),
            events_per_sec: summary.records_per_sec(),
            peak_memory_mb: peak_mb,
            round_trips: summary.traffic.map(|t| t.flushes),
            commands: summary.traffic.map(|t| t.commands),
            checkpoints: Some(stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed)),
            longest_stall_ms: Some(
                stats
                    .snapshot_stall_us
                    .load(std::sync::atomic::Ordering::Relaxed) as f64
                    / 1000.0,
            ),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let peak = peak_mb.map_or_else(String::new, |mb| format!(", peak memory {mb} MB"));
    let first = crate::kafka::first_message().map_or_else(String::new, |first| {
        format!(
            ", first message after {:.2}s",
            first.duration_since(started).as_secs_f64()
        )
    });
    let dead_to = match (&dead_path, &pipeline.dead_letter_topic) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(k)) => format!("kafka:{}", k.topic),
        (None, None) => "stderr".into(),
    };
    let checkpoints = stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed);
    let checkpointed = if checkpoints > 0 {
        format!(
            ", {checkpoints} checkpoints (longest shard stall {:.1} ms)",
            stats
                .snapshot_stall_us
                .load(std::sync::atomic::Ordering::Relaxed) as f64
                / 1000.0
        )
    } else {
        String::new()
    };
    let checkpointed = if restarts > 0 {
        format!("{checkpointed}, {restarts} restarts from the checkpoints after rebalances (events written again are counted again)")
    } else {
        checkpointed
    };
    let spill_moves = stats.spill_moves.load(std::sync::atomic::Ordering::Relaxed);
    let spilled = if matches!(pipeline.state, sluice_engine::StateConfig::Embedded(_)) {
        format!(
            ", {} keys on disk at the end ({spill_moves} moves between memory and disk)",
            stats
                .keys_on_disk
                .load(std::sync::atomic::Ordering::Relaxed)
        )
    } else {
        String::new()
    };
    let remote = summary.traffic.map_or_else(String::new, |t| {
        format!(
            ", {} round trips ({:.4} per event), {} commands, {} retried, {} conflicts",
            t.flushes,
            t.flushes as f64 / summary.events.max(1) as f64,
            t.commands,
            t.retries,
            t.conflicts
        )
    });
    eprintln!(
        "sluice: {} events written, {} dead letters ({} late) to {dead_to}, {} workers, {:.2}s, {:.0} events/s{peak}{first}{remote}{spilled}{checkpointed}",
        summary.events,
        summary.dead_letters,
        summary.late,
        job.workers,
        summary.elapsed.as_secs_f64(),
        summary.records_per_sec(),
    );
    Ok(())
}

/// Peak resident memory of this process in MB (Linux).
fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn check(path: &Path) -> Result<()> {
    let p = config::load(path)?;
    print!("{}", describe(&p));
    Ok(())
}

/// The plan of a pipeline, for people.
fn describe(p: &Pipeline) -> String {
    let plan = &p.plan;
    let mut s = format!(
        "pipeline {}: ok\n  event time: field `{}` ({}), lateness {}\n  {} features over {} keys\n",
        p.path.display(),
        p.time_field,
        p.time_format.name(),
        format_duration(plan.lateness_ms.max(1)),
        plan.features.len(),
        plan.keys.len(),
    );
    if plan.lateness_ms == 0 {
        s = s.replace("lateness 1ms", "lateness 0");
    }
    for key in &plan.keys {
        s.push_str(&format!("  key [{}]\n", key.by.join(", ")));
        for series in &key.series {
            let of = series
                .of
                .map_or("events".to_owned(), |f| format!("`{}`", plan.fields[f]));
            let kind = match series.kind {
                SeriesKind::Numeric => "numeric registers",
                SeriesKind::Distinct => "distinct registers",
            };
            let precision = if series.granularity_ms == 1 {
                "exact".to_owned()
            } else {
                format!("{} buckets", format_duration(series.granularity_ms))
            };
            s.push_str(&format!("    {kind} of {of} ({precision}), shared by:\n"));
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
        for &(slot, field) in &key.own {
            s.push_str(&format!(
                "    {} (last): the event's own `{}`\n",
                plan.features[key.features[slot]].name, plan.fields[field]
            ));
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
    gen::write_transactions(&opts, &mut out).context("cannot write generated events")?;
    Ok(())
}
