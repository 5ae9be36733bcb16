//! A run with Kafka at either end: a consumer group's topic as the source (offsets committed
//! once outputs are flushed, or with checkpoints exactly-once state that follows partitions,
//! the run restarted from the checkpoints at every rebalance), and topics as sinks.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_engine::checkpoint::{CheckpointConfig, SinkPosition, SourceCheckpoint};
use sluice_engine::dataflow::router::LinePartitions;
use sluice_engine::{Input, InputFormat, Job, Outputs, Resume, Stats, Summary};

use super::checkpoint::{PartitionCheckpoints, Partitions};
use super::client::{
    self, DeliveryCheck, KafkaReader, KafkaWriter, Marks, MarksPartitions, SinkHandle,
};
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
                let marks: Marks = Arc::default();
                let reader = KafkaReader::for_assignment(
                    Arc::clone(&consumer),
                    Arc::clone(&partitions),
                    assignment.generation,
                    source.until_end,
                    Arc::clone(&marks),
                );
                let (mut outputs, sinks) = open_outputs(&run, resume.as_ref())?;
                outputs.source_checkpoint = Some(Box::new(PartitionCheckpoints::new(
                    Arc::clone(&partitions),
                    &assignment,
                    Arc::clone(&marks),
                    sinks,
                    Arc::clone(&consumer),
                    keep,
                )) as Box<dyn SourceCheckpoint>);
                if let Some(r) = &resume {
                    eprintln!(
                        "sluice: partitions {:?}: {} restored from checkpoints ({} keys); outputs cut back to this instance's newest checkpoint",
                        assignment.partitions,
                        assignment.restore.len(),
                        r.keys(),
                    );
                }
                let job = run
                    .job
                    .clone()
                    .with_checkpoints(config.clone())
                    .with_partitions(Some(
                        Arc::new(MarksPartitions(marks)) as Arc<dyn LinePartitions>
                    ));
                let input = topic_input(&run, source, Box::new(reader));
                let result =
                    sluice_engine::run_resumed(&job, input, outputs, Arc::clone(&stats), resume);
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
            let (reader, mut committer) = KafkaReader::open(source)?;
            let partitions = reader.line_partitions();
            let (mut outputs, sinks) = open_outputs(&run, None)?;
            for h in sinks {
                committer.watch(h)?;
            }
            // Output files are synced before their input's offsets are committed.
            for f in [&outputs.events_file, &outputs.dead_letters_file]
                .into_iter()
                .flatten()
            {
                committer.watch_file(f.try_clone().context("cannot share an output file")?)?;
            }
            outputs.on_flushed = Some(Box::new(move |records, last| {
                committer.flushed(records, last)
            }));
            let job = run.job.clone().with_partitions(Some(partitions));
            let input = topic_input(&run, source, Box::new(reader));
            sluice_engine::run(&job, input, outputs, Arc::clone(&stats))?
        }
        (None, _) => {
            // Topic outputs only: deliveries are checked every second and at the end.
            let (mut outputs, sinks) = open_outputs(&run, None)?;
            let mut check = DeliveryCheck::new(sinks);
            outputs.on_flushed = Some(Box::new(move |records, last| check.flushed(records, last)));
            let (path, format) = &run.input;
            let input = Input {
                reader: file::open_input(path)?,
                name: path.clone(),
                format: *format,
            };
            sluice_engine::run(&run.job, input, outputs, Arc::clone(&stats))?
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

fn topic_input(run: &KafkaRun, source: &KafkaSource, reader: Box<KafkaReader>) -> Input {
    Input {
        reader,
        name: PathBuf::from(format!("kafka:{}", source.topic)),
        format: run.input.1,
    }
}

/// The outputs of one run (files cut back to `resume`'s positions), and the Kafka sinks among
/// them, whose deliveries are waited for before offsets are committed.
fn open_outputs(
    run: &KafkaRun,
    resume: Option<&Resume>,
) -> Result<(Outputs<'static>, Vec<SinkHandle>)> {
    let sink = resume.map(|r| r.manifest.sink);
    let mut sinks = Vec::new();
    let mut open = |output: &Output,
                    what: &str,
                    keep: Option<u64>|
     -> Result<(Box<dyn Write + Send>, Option<std::fs::File>)> {
        Ok(match output {
            Output::File(path) => file::open_output(path, what, keep)?,
            Output::Topic(k) => {
                let w = KafkaWriter::open(k)?;
                sinks.push(w.handle());
                (Box::new(w), None)
            }
            Output::Stderr => (Box::new(io::stderr()), None),
        })
    };
    let (events, events_file) = open(&run.events, "output", sink.map(|s| s.events_bytes))?;
    let (dead_letters, dead_letters_file) = open(
        &run.dead_letters,
        "dead-letter file",
        sink.map(|s| s.dead_letters_bytes),
    )?;
    let start = SinkPosition {
        events_bytes: sink.map_or(0, |s| s.events_bytes),
        dead_letters_bytes: if dead_letters_file.is_some() {
            sink.map_or(0, |s| s.dead_letters_bytes)
        } else {
            0
        },
    };
    let outputs = Outputs {
        start,
        events_file,
        dead_letters_file,
        ..Outputs::new(events, dead_letters)
    };
    Ok((outputs, sinks))
}
