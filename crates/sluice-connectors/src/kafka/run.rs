//! A run with Kafka at either end: a consumer group's topic as the source (offsets committed
//! once outputs are flushed, or with checkpoints exactly-once state that follows partitions,
//! the run restarted from the checkpoints at every rebalance), and topics as sinks.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use sluice_engine::checkpoint::CheckpointConfig;
use sluice_engine::{InputFormat, Job, OutputFormat, Outputs, Sink, Stats, Summary};

use super::checkpoint::{PartitionCheckpoints, Partitions};
use super::client::{self, SinkHandle, TopicSink, TopicSource};
use super::{KafkaSink, KafkaSource};
use crate::file;

/// Where one output of a Kafka run goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// A file (`-`: stdout).
    File(PathBuf),
    /// A topic.
    Topic(KafkaSink),
    /// Standard error (dead letters only).
    Stderr,
}

/// What a run with Kafka at one end or both needs.
#[derive(Debug)]
pub struct KafkaRun {
    /// The job (its checkpoints and partitions are set here).
    pub job: Job,
    /// The topic read; `None`: `input` is read instead.
    pub source: Option<KafkaSource>,
    /// The input file (`-`: stdin) and its format, without a Kafka source.
    pub input: (PathBuf, InputFormat),
    /// Enriched events.
    pub events: Output,
    /// Dead letters.
    pub dead_letters: Output,
    /// Checkpoints (a Kafka source only; topic outputs refuse them).
    pub checkpoint: Option<CheckpointConfig>,
    /// This process's name in the group's shared checkpoint directory.
    pub instance: String,
    /// Delete this instance's checkpoints first.
    pub fresh: bool,
}

/// What a Kafka run did.
#[derive(Debug, Clone)]
pub struct KafkaSummary {
    /// Of all its runs together.
    pub summary: Summary,
    /// Runs started again from the checkpoints after a rebalance (their rewritten events are
    /// counted again).
    pub restarts: u64,
}

/// Runs `run` to the end of its input (with a Kafka source, SIGTERM or ctrl-c ends the input).
pub fn run(run: KafkaRun, stats: Arc<Stats>) -> Result<KafkaSummary> {
    let started = std::time::Instant::now();
    if run.source.is_some() {
        // SIGTERM and ctrl-c end the topic's input and the run drains; a file input keeps the
        // default (the process stops at once).
        client::stop_on_signals();
    }
    let checkpoints = match (&run.source, &run.checkpoint) {
        (Some(k), Some(c)) => {
            let p = Partitions::open(c, &run.instance, &run.job.plan, &k.topic)?;
            if run.fresh {
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
    let mut restarts = 0;
    let summary = match (&run.source, checkpoints) {
        (Some(source), Some(partitions)) => {
            let consumer = client::consumer(source, Some(Arc::clone(&partitions)), None)?;
            // Old checkpoints are pruned by the source, which knows which ones other processes
            // may still restore.
            let config = run.checkpoint.clone().map(|c| CheckpointConfig {
                dir: partitions.own_dir().to_path_buf(),
                keep: usize::MAX,
                ..c
            });
            let keep = run.checkpoint.as_ref().map_or(1, |c| c.keep);
            loop {
                let assignment = partitions.start_run()?;
                let resume = partitions.resume(&assignment)?;
                let mut topic = TopicSource::for_assignment(
                    Arc::clone(&consumer),
                    Arc::clone(&partitions),
                    assignment.generation,
                    source,
                    PartitionCheckpoints::new(
                        Arc::clone(&partitions),
                        &assignment,
                        Arc::clone(&consumer),
                        keep,
                    ),
                );
                let (outputs, _) = open_outputs(&run, resume.is_some())?;
                if let Some(r) = &resume {
                    eprintln!(
                        "sluice: partitions {:?}: {} restored from checkpoints ({} keys); outputs cut back to this instance's newest checkpoint",
                        assignment.partitions,
                        assignment.restore.len(),
                        r.keys(),
                    );
                }
                let job = run.job.clone().with_checkpoints(config.clone());
                let result = sluice_engine::run_resumed(
                    &job,
                    &mut topic,
                    outputs,
                    Arc::clone(&stats),
                    resume,
                );
                if result.is_ok()
                    && partitions.generation() != assignment.generation
                    && !client::stopping()
                {
                    tracing::info!("kafka: rebalanced; restarting from the checkpoints");
                    restarts += 1;
                    continue;
                }
                break result?;
            }
        }
        (Some(source), None) => {
            let mut topic = TopicSource::open(source)?;
            let (outputs, watched) = open_outputs(&run, false)?;
            // Kafka sinks deliver, and output files are synced, before their input's offsets
            // are committed.
            for w in watched {
                match w {
                    Watched::Topic(h) => topic.watch(h),
                    Watched::File(f) => topic.watch_file(f),
                }
            }
            sluice_engine::run(&run.job, &mut topic, outputs, Arc::clone(&stats))?
        }
        (None, _) => {
            // Topic outputs only: each sink checks its deliveries as it goes and waits for
            // them at the end.
            let (outputs, _) = open_outputs(&run, false)?;
            let (path, format) = &run.input;
            let time = (run.job.time_field.as_str(), run.job.time_format);
            let mut input = file::open_source(path, *format, time)?;
            sluice_engine::run(&run.job, input.as_mut(), outputs, Arc::clone(&stats))?
        }
    };
    Ok(KafkaSummary {
        summary: Summary {
            elapsed: started.elapsed(),
            ..summary
        },
        restarts,
    })
}

/// What the offset committer waits for before it commits: a Kafka sink's deliveries, or an
/// output file's sync.
enum Watched {
    Topic(SinkHandle),
    File(std::fs::File),
}

/// The outputs of one run (files kept for the run to cut back when `resuming`), and what the
/// offset committer must wait for.
fn open_outputs(run: &KafkaRun, resuming: bool) -> Result<(Outputs<'static>, Vec<Watched>)> {
    let mut watched = Vec::new();
    let mut open = |output: &Output, what: &str| -> Result<Box<dyn Sink>> {
        Ok(match output {
            Output::File(path) => {
                let (sink, file) = file::open_sink(path, what, resuming, OutputFormat::Jsonl)?;
                watched.extend(file.map(Watched::File));
                sink
            }
            Output::Topic(k) => {
                let sink = TopicSink::open(k)?;
                watched.push(Watched::Topic(sink.handle()));
                Box::new(sink)
            }
            Output::Stderr => file::stderr_sink(),
        })
    };
    let events = open(&run.events, "output")?;
    let dead_letters = open(&run.dead_letters, "dead-letter file")?;
    Ok((Outputs::new(events, dead_letters), watched))
}
