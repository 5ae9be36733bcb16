//! `sluice run`: a pipeline file over its input, to its outputs, with a progress report and a
//! summary. Files and stdin/stdout run here; a run with Kafka at either end is handed to the
//! Kafka connector.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sluice::config::{PipelineConfig, SinkConfig, SourceConfig};
use sluice_connectors::file;
use sluice_engine::checkpoint;
use sluice_engine::{InputFormat, Job, OutputFormat, Outputs, Position, Stats, Summary};

use super::progress::Progress;
use super::RunArgs;

/// Where a run reads and writes, from the pipeline file and the command line.
struct Ends {
    input: PathBuf,
    format: InputFormat,
    output: PathBuf,
    output_format: OutputFormat,
    dead_letters: Option<PathBuf>,
    /// Whether Kafka is at either end.
    kafka: bool,
}

fn ends(args: &RunArgs, pipeline: &PipelineConfig) -> Result<Ends> {
    let input = match (&args.input, &pipeline.source) {
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
        Some("csv") => InputFormat::Csv,
        Some("parquet") => InputFormat::Parquet,
        Some(_) => InputFormat::Jsonl,
        None if input.extension().is_some_and(|e| e == "parquet") => InputFormat::Parquet,
        None if pipeline.source.is_none() && input.extension().is_some_and(|e| e == "csv") => {
            InputFormat::Csv
        }
        None => pipeline.format,
    };
    let output = match (&args.output, &pipeline.sink) {
        (Some(p), _) => p.clone(),
        (None, Some(SinkConfig::File(p))) => p.clone(),
        (None, Some(SinkConfig::Kafka(k))) => PathBuf::from(format!("kafka:{}", k.topic)),
        _ => PathBuf::from("-"),
    };
    let output_format = match &args.output {
        Some(p) if p.extension().is_some_and(|e| e == "parquet") => OutputFormat::Parquet,
        Some(p) if p.extension().is_some_and(|e| e == "csv") => OutputFormat::Csv,
        Some(_) => OutputFormat::Jsonl,
        None => pipeline.output_format,
    };
    let dead_letters = args
        .dead_letters
        .clone()
        .or_else(|| pipeline.dead_letters.clone());
    let kafka = (args.input.is_none() && matches!(pipeline.source, Some(SourceConfig::Kafka(_))))
        || (args.output.is_none() && matches!(pipeline.sink, Some(SinkConfig::Kafka(_))))
        || (dead_letters.is_none() && pipeline.dead_letter_topic.is_some());
    if kafka && (format == InputFormat::Parquet || output_format != OutputFormat::Jsonl) {
        anyhow::bail!(
            "a run with Kafka at one end reads and writes JSONL at the other (Parquet and CSV \
             outputs are for runs between files)"
        );
    }
    if output_format == OutputFormat::Parquet && output.as_os_str() == "-" {
        anyhow::bail!("a Parquet output is a file: give --output PATH.parquet");
    }
    Ok(Ends {
        input,
        format,
        output,
        output_format,
        dead_letters,
        kafka,
    })
}

/// Runs `sluice run`.
pub fn run(args: RunArgs) -> Result<()> {
    let pipeline = sluice::Pipeline::load(&args.pipeline)?;
    let config = pipeline.config();
    anyhow::ensure!(args.workers != Some(0), "--workers must be at least 1");
    let ends = ends(&args, config)?;
    let job = pipeline.job(args.workers);
    let input_len = std::fs::metadata(&ends.input)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    // A live input (a pipe, a topic) is cut into batches by time as well as size.
    let job = job.with_batch_wait(Duration::from_millis(config.batch_wait_ms.max(0) as u64));
    let stats = Arc::new(Stats::default());
    let progress = Progress::start(Arc::clone(&stats), input_len, args.quiet);
    let started = Instant::now();
    let result = if ends.kafka {
        run_kafka(&args, config, &ends, job.clone(), Arc::clone(&stats))
    } else {
        run_files(&args, config, &ends, &job, Arc::clone(&stats)).map(|s| (s, 0))
    };
    progress.finish();
    let (mut summary, restarts) = result?;
    summary.elapsed = started.elapsed();
    report(&args, config, &ends, &job, &stats, &summary, restarts)
}

/// A run over files or stdin/stdout, resumed from the newest checkpoint when there is one.
fn run_files(
    args: &RunArgs,
    config: &PipelineConfig,
    ends: &Ends,
    job: &Job,
    stats: Arc<Stats>,
) -> Result<Summary> {
    let resume = match &config.checkpoint {
        Some(c) if args.fresh => {
            let n = checkpoint::clear(&c.dir)?;
            if n > 0 {
                eprintln!(
                    "sluice: --fresh: deleted {n} checkpoint(s) in {}",
                    c.dir.display()
                );
            }
            None
        }
        Some(c) => {
            let (resume, skipped) = checkpoint::find_resume(c, &config.plan)?;
            for reason in &skipped {
                eprintln!("sluice: skipping a checkpoint: {reason}");
            }
            resume
        }
        None => None,
    };
    let time = (job.time_field.as_str(), job.time_format);
    let mut source = match &resume {
        Some(r) => file::open_source_at(&ends.input, ends.format, time, r)?,
        None => file::open_source(&ends.input, ends.format, time)?,
    };
    let resuming = resume.is_some();
    let events = match ends.output_format {
        OutputFormat::Parquet => file::open_parquet_sink(&ends.output)?,
        format => file::open_sink(&ends.output, "output", resuming, format)?.0,
    };
    let dead_letters = match &ends.dead_letters {
        Some(p) => file::open_sink(p, "dead-letter file", resuming, OutputFormat::Jsonl)?.0,
        None => file::stderr_sink(),
    };
    if let (Some(r), Some(c)) = (&resume, &config.checkpoint) {
        if let (Position::Stream { offset, line }, InputFormat::Parquet) =
            (&r.position, ends.format)
        {
            eprintln!(
                "sluice: resuming from checkpoint {} in {}: input row {line} (row group {offset}), {} keys; --fresh starts over",
                r.id,
                c.dir.display(),
                r.keys(),
            );
        } else if let Position::Stream { offset, line } = r.position {
            eprintln!(
                "sluice: resuming from checkpoint {} in {}: input line {line} (byte {offset}), {} keys; --fresh starts over",
                r.id,
                c.dir.display(),
                r.keys(),
            );
        }
    }
    let job = job.clone().with_checkpoints(config.checkpoint.clone());
    tracing::debug!(workers = job.workers, input = %ends.input.display(), "starting run");
    let outputs = Outputs::new(events, dead_letters);
    Ok(sluice_engine::run_resumed(
        &job,
        source.as_mut(),
        outputs,
        stats,
        resume,
    )?)
}

#[cfg(feature = "kafka")]
fn run_kafka(
    args: &RunArgs,
    config: &PipelineConfig,
    ends: &Ends,
    job: Job,
    stats: Arc<Stats>,
) -> Result<(Summary, u64)> {
    use sluice_connectors::kafka::run::{self, KafkaRun, Output};
    let source = match (&args.input, &config.source) {
        (None, Some(SourceConfig::Kafka(k))) => Some(sluice_connectors::kafka::KafkaSource {
            until_end: k.until_end || args.until_end,
            ..k.clone()
        }),
        _ => None,
    };
    let events = match (&args.output, &config.sink) {
        (None, Some(SinkConfig::Kafka(k))) => Output::Topic(k.clone()),
        _ => Output::File(ends.output.clone()),
    };
    let dead_letters = match (&ends.dead_letters, &config.dead_letter_topic) {
        (Some(p), _) => Output::File(p.clone()),
        (None, Some(k)) => Output::Topic(k.clone()),
        (None, None) => Output::Stderr,
    };
    let done = run::run(
        KafkaRun {
            job,
            source,
            input: (ends.input.clone(), ends.format),
            events,
            dead_letters,
            checkpoint: config.checkpoint.clone(),
            instance: args.instance.clone(),
            fresh: args.fresh,
        },
        stats,
    )?;
    Ok((done.summary, done.restarts))
}

#[cfg(not(feature = "kafka"))]
fn run_kafka(
    _: &RunArgs,
    _: &PipelineConfig,
    _: &Ends,
    _: Job,
    _: Arc<Stats>,
) -> Result<(Summary, u64)> {
    anyhow::bail!("this sluice was built without Kafka support (the `kafka` feature)")
}

/// Prints the summary line (and writes `--summary-json`).
fn report(
    args: &RunArgs,
    config: &PipelineConfig,
    ends: &Ends,
    job: &Job,
    stats: &Stats,
    summary: &Summary,
    restarts: u64,
) -> Result<()> {
    let peak_mb = peak_rss_mb();
    let checkpoints = stats.checkpoints.load(Relaxed);
    let stall_ms = stats.snapshot_stall_us.load(Relaxed) as f64 / 1000.0;
    if let Some(path) = &args.summary_json {
        let report = sluice_bench::RunReport {
            records: summary.records,
            events: summary.events,
            dead_letters: summary.dead_letters,
            workers: job.workers,
            seconds: summary.elapsed.as_secs_f64(),
            events_per_sec: summary.records_per_sec(),
            peak_memory_mb: peak_mb,
            round_trips: summary.traffic.map(|t| t.flushes),
            commands: summary.traffic.map(|t| t.commands),
            checkpoints: Some(checkpoints),
            longest_stall_ms: Some(stall_ms),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut line = format!(
        "sluice: {} events written, {} dead letters ({} late) to {}, {} workers, {:.2}s, {:.0} events/s",
        summary.events,
        summary.dead_letters,
        summary.late,
        dead_letters_name(config, ends),
        job.workers,
        summary.elapsed.as_secs_f64(),
        summary.records_per_sec(),
    );
    if let Some(mb) = peak_mb {
        line.push_str(&format!(", peak memory {mb} MB"));
    }
    if summary.link_overflows > 0 {
        line.push_str(&format!(
            ", {} relation values null at hubs over their link_limit",
            summary.link_overflows
        ));
    }
    #[cfg(feature = "kafka")]
    if let Some(first) = sluice_connectors::kafka::first_message() {
        let after = first.saturating_duration_since(Instant::now() - summary.elapsed);
        line.push_str(&format!(
            ", first message after {:.2}s",
            after.as_secs_f64()
        ));
    }
    if let Some(t) = summary.traffic {
        line.push_str(&format!(
            ", {} round trips ({:.4} per event), {} commands, {} retried, {} conflicts",
            t.flushes,
            t.flushes as f64 / summary.events.max(1) as f64,
            t.commands,
            t.retries,
            t.conflicts
        ));
    }
    if matches!(config.state, sluice_engine::StateConfig::Embedded(_)) {
        line.push_str(&format!(
            ", {} keys on disk at the end ({} moves between memory and disk)",
            stats.keys_on_disk.load(Relaxed),
            stats.spill_moves.load(Relaxed)
        ));
    }
    if checkpoints > 0 {
        line.push_str(&format!(
            ", {checkpoints} checkpoints (longest shard stall {stall_ms:.1} ms)"
        ));
    }
    if restarts > 0 {
        line.push_str(&format!(", {restarts} restarts from the checkpoints after rebalances (events written again are counted again)"));
    }
    eprintln!("{line}");
    Ok(())
}

fn dead_letters_name(config: &PipelineConfig, ends: &Ends) -> String {
    match (&ends.dead_letters, &config.dead_letter_topic) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(k)) => format!("kafka:{}", k.topic),
        (None, None) => "stderr".into(),
    }
}

/// Peak resident memory of this process in MB (Linux).
fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
