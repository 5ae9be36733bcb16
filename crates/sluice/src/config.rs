//! The pipeline file: TOML → typed configuration → validated [`PipelineConfig`].
//!
//! Every error names the file, the line and column, and what would be valid.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_connectors::kafka::{KafkaSink, KafkaSource, Start};
use sluice_core::{parse_duration, Agg, FeatureSpec, Plan};
use sluice_engine::checkpoint::CheckpointConfig;
use sluice_engine::state::redis::{ClusterOptions, RedisOptions};
use sluice_engine::state::spill::EmbeddedOptions;
use sluice_engine::{InputFormat, StateConfig, TimeFormat};
pub use sluice_serve::ServeConfig;
use toml::Spanned;

/// Default lateness: how far behind the newest event time an event may arrive and still be
/// computed exactly. Five minutes covers the usual client clock skew and retry delays while
/// adding little state next to windows of hours or days.
pub const DEFAULT_LATENESS: &str = "5m";

/// `[event]`: where the event time is and how late events may be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSection {
    /// Field holding the event time. Default `ts`.
    time: Option<Spanned<String>>,
    /// `epoch_ms` (default), `epoch_s` or `rfc3339`.
    time_format: Option<Spanned<String>>,
    /// Field holding an event id (informational).
    #[allow(dead_code)]
    id: Option<String>,
    /// Accepted lateness behind the newest event time. Default `5m`.
    lateness: Option<Spanned<String>>,
}

/// `[source]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    /// `file` (default when `path` is set), `stdin` or `kafka`.
    kind: Option<Spanned<String>>,
    /// Input file, relative to the pipeline file.
    path: Option<String>,
    /// `jsonl` (default) or `csv`.
    format: Option<Spanned<String>>,
    /// Kafka: bootstrap brokers.
    brokers: Option<Spanned<Vec<String>>>,
    /// Kafka: the topic.
    topic: Option<Spanned<String>>,
    /// Kafka: the consumer group. Default `sluice`.
    group: Option<Spanned<String>>,
    /// Kafka: `earliest` (default) or `latest`, without a committed offset.
    start: Option<Spanned<String>>,
    /// Kafka: stop once the assigned partitions are read to their end (as `--until-end`).
    until_end: Option<bool>,
}

/// `[sink]`, and `[dead_letters]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkSection {
    /// `file` (default when `path` is set), `stdout` or `kafka`.
    kind: Option<Spanned<String>>,
    /// Output file, relative to the pipeline file.
    path: Option<String>,
    /// Kafka: bootstrap brokers.
    brokers: Option<Spanned<Vec<String>>>,
    /// Kafka: the topic.
    topic: Option<Spanned<String>>,
    /// Kafka: the event field whose value keys the messages.
    key: Option<Spanned<String>>,
    /// Kafka: `compression.type`. Default `lz4`.
    compression: Option<Spanned<String>>,
}

/// `[state]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateSection {
    /// `memory` (default) or `redis`.
    backend: Option<Spanned<String>>,
    /// Redis node URLs, for `redis`.
    urls: Option<Spanned<Vec<String>>>,
    /// Key prefix after `sluice:`, for `redis`. Default `default`.
    namespace: Option<Spanned<String>>,
    /// Most keys per pipeline flush, for `redis`. Default 1024.
    flush_keys: Option<Spanned<i64>>,
    /// How long to retry a failing Redis node before the run fails. Default `30s`.
    retry_timeout: Option<Spanned<String>>,
    /// Memory budget of the embedded backend (`256MB`); the rest goes to disk.
    memory_cap: Option<Spanned<String>>,
    /// Directory of the embedded backend's store. Default: the system temp directory.
    path: Option<Spanned<String>>,
}

/// `[checkpoint]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointSection {
    /// Directory of the checkpoints, relative to the pipeline file.
    path: Spanned<String>,
    /// Time between checkpoints. Default `5s`.
    interval: Option<Spanned<String>>,
    /// Complete checkpoints kept. Default 3.
    keep: Option<Spanned<i64>>,
}

/// `[engine]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineSection {
    /// Worker threads (shards). Default: the number of CPU cores.
    workers: Option<Spanned<i64>>,
    /// Longest a batch of a live input waits to fill. Default `10ms`.
    batch_wait: Option<Spanned<String>>,
}

/// `[serve]`: settings of `sluice serve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSection {
    /// Address to listen on. Default `127.0.0.1:8080`.
    listen: Option<Spanned<String>>,
    /// Bearer token required on every route but `/healthz`.
    token: Option<Spanned<String>>,
    /// Largest request body. Default `1MB`.
    max_body: Option<Spanned<String>>,
    /// Requests waiting for the engine before new ones get 503. Default 1024.
    queue: Option<Spanned<i64>>,
}

/// One `[[feature]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureSection {
    name: Spanned<String>,
    agg: Spanned<String>,
    of: Option<Spanned<String>>,
    by: Spanned<OneOrMany>,
    window: Spanned<String>,
    /// Bucket width; default exact.
    granularity: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    event: Option<EventSection>,
    source: Option<SourceSection>,
    sink: Option<SinkSection>,
    dead_letters: Option<SinkSection>,
    state: Option<StateSection>,
    checkpoint: Option<CheckpointSection>,
    engine: Option<EngineSection>,
    serve: Option<ServeSection>,
    #[serde(default)]
    feature: Vec<FeatureSection>,
}

/// Where the records come from, per the pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A file.
    File(PathBuf),
    /// Standard input.
    Stdin,
    /// A Kafka topic, through a consumer group.
    Kafka(KafkaSource),
}

/// Where the enriched events (or the dead letters) go, per the pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// A file.
    File(PathBuf),
    /// Standard output.
    Stdout,
    /// A Kafka topic.
    Kafka(KafkaSink),
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The features, grouped.
    pub plan: Plan,
    /// Event time field.
    pub time_field: String,
    /// Event time format.
    pub time_format: TimeFormat,
    /// Input, if configured.
    pub source: Option<SourceConfig>,
    /// Input record format.
    pub format: InputFormat,
    /// Output, if configured.
    pub sink: Option<SinkConfig>,
    /// Dead-letter file, if configured.
    pub dead_letters: Option<PathBuf>,
    /// Dead-letter topic, if configured.
    pub dead_letter_topic: Option<KafkaSink>,
    /// Worker threads, if configured.
    pub workers: Option<usize>,
    /// Where state lives.
    pub state: StateConfig,
    /// Longest a batch of a live input (not a regular file) waits to fill, in milliseconds.
    pub batch_wait_ms: i64,
    /// Checkpoints, if configured.
    pub checkpoint: Option<CheckpointConfig>,
    /// `sluice serve` settings.
    pub serve: ServeConfig,
}

impl PipelineConfig {
    /// The configuration of a pipeline file holding only these features: every other
    /// setting at its default.
    pub fn for_plan(plan: Plan) -> PipelineConfig {
        PipelineConfig {
            path: PathBuf::from("pipeline.toml"),
            plan,
            time_field: "ts".to_owned(),
            time_format: TimeFormat::default(),
            source: None,
            format: InputFormat::Jsonl,
            sink: None,
            dead_letters: None,
            dead_letter_topic: None,
            workers: None,
            state: StateConfig::Memory,
            batch_wait_ms: parse_duration(DEFAULT_BATCH_WAIT)
                .expect("the default batch wait is valid"),
            checkpoint: None,
            serve: ServeConfig::default(),
        }
    }
}

/// Default `[engine] batch_wait`: the latency a slow live input may add before its events are
/// processed; also the longest a Redis request waits to be flushed with others.
pub const DEFAULT_BATCH_WAIT: &str = "10ms";

/// A configuration error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The pipeline file.
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The text of that line.
    pub line_text: Option<String>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.path.display(), self.message)?
            }
            None => write!(f, "{}: {}", self.path.display(), self.message)?,
        }
        if let (Some(text), Some((line, col))) = (&self.line_text, self.position) {
            let width = line.to_string().len();
            write!(
                f,
                "\n{:width$} |\n{line} | {text}\n{:width$} | {:>col$}",
                "", "", "^"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let position = span.map(|s| {
            let before = &self.text[..s.start.min(self.text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        });
        ConfigError {
            path: self.path.to_owned(),
            line_text: position
                .and_then(|(line, _)| self.text.lines().nth(line - 1).map(str::to_owned)),
            position,
            message: message.into(),
        }
    }

    fn duration(&self, s: &Spanned<String>) -> Result<i64, ConfigError> {
        parse_duration(s.get_ref()).map_err(|e| self.error(Some(s.span()), e.to_string()))
    }

    fn choice<T>(
        &self,
        s: &Spanned<String>,
        what: &str,
        valid: &[(&str, T)],
    ) -> Result<T, ConfigError>
    where
        T: Copy,
    {
        valid
            .iter()
            .find(|(name, _)| name == s.get_ref())
            .map(|&(_, v)| v)
            .ok_or_else(|| {
                let names: Vec<&str> = valid.iter().map(|(n, _)| *n).collect();
                self.error(
                    Some(s.span()),
                    format!(
                        "unknown {what} `{}`; valid: {}",
                        s.get_ref(),
                        names.join(", ")
                    ),
                )
            })
    }
}

/// Whether `text` is zero written as a duration: `0`, or zeros followed by a unit.
fn is_zero_duration(text: &str) -> bool {
    let rest = text.trim().trim_start_matches('0');
    text.trim().starts_with('0') && ["", "ms", "s", "m", "h", "d"].contains(&rest)
}

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        position: None,
        line_text: None,
        message: format!("cannot read the pipeline file: {e}"),
    })?;
    parse(path, &text)
}

/// Validates pipeline text read from `path` (used for messages and relative paths).
pub fn parse(path: &Path, text: &str) -> Result<PipelineConfig, ConfigError> {
    let src = Source { path, text };
    let file: PipelineFile =
        toml::from_str(text).map_err(|e| src.error(e.span(), e.message().trim_end()))?;
    let base = path.parent().unwrap_or(Path::new("")).to_owned();
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() || p.as_os_str() == "-" {
            p
        } else {
            base.join(p)
        }
    };

    let event = file.event.as_ref();
    let time_field = event
        .and_then(|e| e.time.as_ref())
        .map_or_else(|| "ts".to_owned(), |t| t.get_ref().clone());
    let time_format = match event.and_then(|e| e.time_format.as_ref()) {
        None => TimeFormat::EpochMs,
        Some(s) => src.choice(
            s,
            "time format",
            &[
                ("epoch_ms", TimeFormat::EpochMs),
                ("epoch_s", TimeFormat::EpochS),
                ("rfc3339", TimeFormat::Rfc3339),
            ],
        )?,
    };
    let lateness_ms = match event.and_then(|e| e.lateness.as_ref()) {
        None => parse_duration(DEFAULT_LATENESS).expect("the default lateness is valid"),
        // "0", "0s", "0ms"...: no lateness at all (durations are otherwise positive).
        Some(s) if is_zero_duration(s.get_ref()) => 0,
        Some(s) => src.duration(s)?,
    };

    let mut format = InputFormat::Jsonl;
    let source = match &file.source {
        None => None,
        Some(s) => {
            if let Some(f) = &s.format {
                format = src.choice(
                    f,
                    "source format",
                    &[("jsonl", InputFormat::Jsonl), ("csv", InputFormat::Csv)],
                )?;
            }
            let kind = match &s.kind {
                None => "file",
                Some(k) => src.choice(
                    k,
                    "source kind",
                    &[("file", "file"), ("stdin", "stdin"), ("kafka", "kafka")],
                )?,
            };
            match (kind, &s.path) {
                ("stdin", _) => Some(SourceConfig::Stdin),
                ("kafka", _) => Some(SourceConfig::Kafka(kafka_source(&src, s)?)),
                (_, Some(p)) => Some(SourceConfig::File(resolve(p))),
                (_, None) => {
                    return Err(src.error(
                        s.kind.as_ref().map(Spanned::span),
                        "[source] of kind `file` needs `path`, e.g. path = \"transactions.jsonl\" (or kind = \"stdin\")",
                    ))
                }
            }
        }
    };
    if let (Some(SourceConfig::Kafka(_)), Some(f)) = (
        &source,
        file.source.as_ref().and_then(|s| s.format.as_ref()),
    ) {
        if format != InputFormat::Jsonl {
            return Err(src.error(
                Some(f.span()),
                "a Kafka source reads JSON messages; valid: format = \"jsonl\" (one record per message)",
            ));
        }
    }
    let sink = match &file.sink {
        None => None,
        Some(s) => {
            let kind = match &s.kind {
                None => "file",
                Some(k) => src.choice(
                    k,
                    "sink kind",
                    &[("file", "file"), ("stdout", "stdout"), ("kafka", "kafka")],
                )?,
            };
            match (kind, &s.path) {
                ("stdout", _) => Some(SinkConfig::Stdout),
                ("kafka", _) => Some(SinkConfig::Kafka(kafka_sink(&src, s, "sink")?)),
                (_, Some(p)) => Some(SinkConfig::File(resolve(p))),
                (_, None) => {
                    return Err(src.error(
                        s.kind.as_ref().map(Spanned::span),
                        "[sink] of kind `file` needs `path`, e.g. path = \"features.jsonl\" (or kind = \"stdout\")",
                    ))
                }
            }
        }
    };
    let state = match &file.state {
        None => StateConfig::Memory,
        Some(st) => state_config(&src, st)?,
    };
    let workers = match file.engine.as_ref().and_then(|e| e.workers.as_ref()) {
        None => None,
        Some(w) if (1..=256).contains(w.get_ref()) => Some(*w.get_ref() as usize),
        Some(w) => return Err(src.error(Some(w.span()), "workers must be between 1 and 256")),
    };

    let batch_wait_ms = match file.engine.as_ref().and_then(|e| e.batch_wait.as_ref()) {
        None => parse_duration(DEFAULT_BATCH_WAIT).expect("the default batch wait is valid"),
        Some(s) if is_zero_duration(s.get_ref()) => 0,
        Some(s) => src.duration(s)?,
    };

    let checkpoint = match &file.checkpoint {
        None => None,
        Some(c) => {
            if c.path.get_ref().contains("://") {
                return Err(src.error(
                    Some(c.path.span()),
                    "object storage is not supported yet; valid: a directory (local or on a shared file system)",
                ));
            }
            if matches!(state, StateConfig::Redis(_)) {
                return Err(src.error(
                    Some(c.path.span()),
                    "checkpoints are for local state; with backend = \"redis\" the state is kept in Redis",
                ));
            }
            if format == InputFormat::Csv {
                return Err(src.error(
                    Some(c.path.span()),
                    "checkpoints need JSONL input (a CSV position cannot be resumed yet)",
                ));
            }
            let interval_ms = match &c.interval {
                None => 5_000,
                Some(i) => src.duration(i)?,
            };
            let keep = match &c.keep {
                None => 3,
                Some(k) if (1..=1000).contains(k.get_ref()) => *k.get_ref() as usize,
                Some(k) => return Err(src.error(Some(k.span()), "keep must be between 1 and 1000")),
            };
            Some(CheckpointConfig {
                dir: resolve(c.path.get_ref()),
                interval: std::time::Duration::from_millis(interval_ms as u64),
                keep,
            })
        }
    };

    let serve = serve_config(&src, file.serve.as_ref())?;
    let (dead_letters, dead_letter_topic) = match &file.dead_letters {
        None => (None, None),
        Some(d) => match &d.kind {
            Some(k) if src.choice(k, "dead-letter kind", &[("file", "file"), ("kafka", "kafka")])? == "kafka" => {
                (None, Some(kafka_sink(&src, d, "dead_letters")?))
            }
            _ => match &d.path {
                Some(p) => (Some(resolve(p)), None),
                None => {
                    return Err(src.error(
                        d.kind.as_ref().map(Spanned::span),
                        "[dead_letters] needs `path`, e.g. path = \"dead_letters.jsonl\" (or kind = \"kafka\" with brokers and topic)",
                    ))
                }
            },
        },
    };

    if file.feature.is_empty() {
        return Err(src.error(
            None,
            "no [[feature]] defined; add one, e.g.\n[[feature]]\nname = \"user_amount_1d\"\nagg = \"sum\"\nof = \"amount\"\nby = [\"user_id\"]\nwindow = \"1d\"",
        ));
    }
    let aggs: Vec<(&str, Agg)> = sluice_core::agg::AGG_NAMES
        .iter()
        .map(|n| (*n, n.parse::<Agg>().expect("every listed name parses")))
        .collect();
    let mut specs = Vec::with_capacity(file.feature.len());
    for f in &file.feature {
        let agg = src.choice(&f.agg, "aggregation", &aggs)?;
        let by = match f.by.get_ref() {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        specs.push(FeatureSpec {
            name: f.name.get_ref().clone(),
            agg,
            of: f.of.as_ref().map(|o| o.get_ref().clone()),
            by,
            window_ms: src.duration(&f.window)?,
            granularity_ms: match &f.granularity {
                None => 1,
                Some(g) => src.duration(g)?,
            },
        });
    }
    let plan = Plan::new(specs, lateness_ms).map_err(|e| {
        let f = &file.feature[e.feature];
        let span = match e.field {
            "of" => f.of.as_ref().map_or(f.agg.span(), Spanned::span),
            "by" => f.by.span(),
            "window" => f.window.span(),
            "granularity" => f
                .granularity
                .as_ref()
                .map_or(f.window.span(), Spanned::span),
            _ => f.name.span(),
        };
        src.error(Some(span), e.to_string())
    })?;
    Ok(PipelineConfig {
        path: path.to_owned(),
        plan,
        time_field,
        time_format,
        source,
        format,
        sink,
        dead_letters,
        dead_letter_topic,
        workers,
        state,
        batch_wait_ms,
        checkpoint,
        serve,
    })
}

/// The brokers and topic of a Kafka section.
fn brokers_and_topic(
    src: &Source<'_>,
    brokers: &Option<Spanned<Vec<String>>>,
    topic: &Option<Spanned<String>>,
    kind: &Option<Spanned<String>>,
    section: &str,
) -> Result<(Vec<String>, String), ConfigError> {
    let span = kind.as_ref().map(Spanned::span);
    let brokers = match brokers {
        Some(b) if !b.get_ref().is_empty() => b.get_ref().clone(),
        Some(b) => {
            return Err(src.error(
                Some(b.span()),
                "no brokers; valid: e.g. brokers = [\"127.0.0.1:9092\"]",
            ))
        }
        None => {
            return Err(src.error(
                span,
                format!(
                "[{section}] of kind `kafka` needs `brokers`, e.g. brokers = [\"127.0.0.1:9092\"]"
            ),
            ))
        }
    };
    let topic = match topic {
        Some(t) if !t.get_ref().trim().is_empty() => t.get_ref().clone(),
        _ => {
            return Err(src.error(
                span,
                format!("[{section}] of kind `kafka` needs `topic`, e.g. topic = \"transactions\""),
            ))
        }
    };
    Ok((brokers, topic))
}

/// `[source] kind = "kafka"`.
fn kafka_source(src: &Source<'_>, s: &SourceSection) -> Result<KafkaSource, ConfigError> {
    let (brokers, topic) = brokers_and_topic(src, &s.brokers, &s.topic, &s.kind, "source")?;
    let start = match &s.start {
        None => Start::Earliest,
        Some(st) => src.choice(
            st,
            "start",
            &[("earliest", Start::Earliest), ("latest", Start::Latest)],
        )?,
    };
    Ok(KafkaSource {
        brokers,
        topic,
        group: s
            .group
            .as_ref()
            .map_or_else(|| "sluice".to_owned(), |g| g.get_ref().clone()),
        start,
        until_end: s.until_end.unwrap_or(false),
    })
}

/// `kind = "kafka"` in `[sink]` or `[dead_letters]`.
fn kafka_sink(src: &Source<'_>, s: &SinkSection, section: &str) -> Result<KafkaSink, ConfigError> {
    let (brokers, topic) = brokers_and_topic(src, &s.brokers, &s.topic, &s.kind, section)?;
    let compression = match &s.compression {
        None => "lz4".to_owned(),
        Some(c) => src
            .choice(
                c,
                "compression",
                &[("none", "none"), ("snappy", "snappy"), ("lz4", "lz4")],
            )?
            .to_owned(),
    };
    Ok(KafkaSink {
        brokers,
        topic,
        key: s.key.as_ref().map(|k| k.get_ref().clone()),
        compression,
    })
}

/// `[serve]`, with defaults.
fn serve_config(src: &Source<'_>, s: Option<&ServeSection>) -> Result<ServeConfig, ConfigError> {
    let listen = match s.and_then(|s| s.listen.as_ref()) {
        None => ServeConfig::default().listen,
        Some(l) => l.get_ref().parse().map_err(|_| {
            src.error(
                Some(l.span()),
                format!(
                    "invalid address `{}`; valid: an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    l.get_ref()
                ),
            )
        })?,
    };
    let token = match s.and_then(|s| s.token.as_ref()) {
        Some(t) if t.get_ref().trim().is_empty() => {
            return Err(src.error(
                Some(t.span()),
                "an empty token; valid: a secret string, or leave `token` out",
            ))
        }
        t => t.map(|t| t.get_ref().clone()),
    };
    let max_body = match s.and_then(|s| s.max_body.as_ref()) {
        None => ServeConfig::default().max_body,
        Some(m) => parse_size(m.get_ref()).ok_or_else(|| {
            src.error(
                Some(m.span()),
                format!(
                    "invalid size `{}`; valid: a number and a unit, e.g. 64KB, 1MB",
                    m.get_ref()
                ),
            )
        })?,
    };
    let queue = match s.and_then(|s| s.queue.as_ref()) {
        None => ServeConfig::default().queue,
        Some(q) if (1..=1_000_000).contains(q.get_ref()) => *q.get_ref() as usize,
        Some(q) => return Err(src.error(Some(q.span()), "queue must be between 1 and 1000000")),
    };
    Ok(ServeConfig {
        listen,
        token,
        max_body,
        queue,
    })
}

/// A size such as `64MB`: a number and B, KB, MB or GB (powers of 1024).
fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number.parse().ok()?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&b| b > 0)
}

/// `p` relative to the directory of the pipeline file `pipeline`.
fn resolve_path(pipeline: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        pipeline.parent().unwrap_or(Path::new("")).join(p)
    }
}

/// `[state]`: the backend and its settings; settings of another backend are an error.
fn state_config(src: &Source<'_>, st: &StateSection) -> Result<StateConfig, ConfigError> {
    let backend = match &st.backend {
        None => "memory",
        Some(b) => src.choice(
            b,
            "state backend",
            &[
                ("memory", "memory"),
                ("redis", "redis"),
                ("embedded", "embedded"),
            ],
        )?,
    };
    let embedded_only = [
        st.memory_cap.as_ref().map(Spanned::span),
        st.path.as_ref().map(Spanned::span),
    ];
    if backend != "embedded" {
        if let Some(span) = embedded_only.into_iter().flatten().next() {
            return Err(src.error(Some(span), "this setting is for backend = \"embedded\""));
        }
    }
    if backend == "embedded" {
        let memory_cap = match &st.memory_cap {
            None => 256 << 20,
            Some(m) => parse_size(m.get_ref()).ok_or_else(|| {
                src.error(
                    Some(m.span()),
                    format!(
                        "invalid size `{}`; valid: a number and a unit, e.g. 64MB, 512KB, 2GB",
                        m.get_ref()
                    ),
                )
            })?,
        };
        let dir = match &st.path {
            None => std::env::temp_dir().join("sluice-embedded"),
            Some(p) => resolve_path(src.path, p.get_ref()),
        };
        return Ok(StateConfig::Embedded(EmbeddedOptions { dir, memory_cap }));
    }
    if backend == "memory" {
        let redis_only = [
            st.urls.as_ref().map(Spanned::span),
            st.namespace.as_ref().map(Spanned::span),
            st.flush_keys.as_ref().map(Spanned::span),
            st.retry_timeout.as_ref().map(Spanned::span),
        ];
        if let Some(span) = redis_only.into_iter().flatten().next() {
            return Err(src.error(
                Some(span),
                "this setting is for backend = \"redis\"; the memory backend has none",
            ));
        }
        return Ok(StateConfig::Memory);
    }
    let urls = match &st.urls {
        Some(u) if !u.get_ref().is_empty() => u.get_ref().clone(),
        other => {
            return Err(src.error(
                other
                    .as_ref()
                    .map(Spanned::span)
                    .or(st.backend.as_ref().map(Spanned::span)),
                "backend = \"redis\" needs `urls`, e.g. urls = [\"redis://127.0.0.1:7000\"]",
            ))
        }
    };
    for (i, url) in urls.iter().enumerate() {
        if !url.starts_with("redis://") {
            return Err(src.error(
                st.urls.as_ref().map(Spanned::span),
                format!("urls[{i}] `{url}` is not a redis:// URL; valid: redis://HOST:PORT"),
            ));
        }
    }
    let namespace = match &st.namespace {
        None => "default".to_owned(),
        Some(n) => {
            let ok = !n.get_ref().is_empty()
                && n.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !ok {
                return Err(src.error(
                    Some(n.span()),
                    "namespace must be letters, digits, `_`, `-` or `.`",
                ));
            }
            n.get_ref().clone()
        }
    };
    let flush_keys = match &st.flush_keys {
        None => 1024,
        Some(f) if (1..=1_000_000).contains(f.get_ref()) => *f.get_ref() as usize,
        Some(f) => {
            return Err(src.error(Some(f.span()), "flush_keys must be between 1 and 1000000"))
        }
    };
    let mut cluster = ClusterOptions::default();
    if let Some(t) = &st.retry_timeout {
        cluster.retry_timeout = std::time::Duration::from_millis(src.duration(t)? as u64);
    }
    Ok(StateConfig::Redis(RedisOptions {
        urls,
        namespace,
        flush_keys,
        cluster,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("p.toml"), text)
            .expect_err("invalid")
            .to_string()
    }

    const BASE: &str = "[[feature]]\nname = \"f\"\nby = [\"user_id\"]\n";

    #[test]
    fn valid_pipeline_parses() {
        let p = parse(
            Path::new("dir/p.toml"),
            "[event]\ntime = \"t\"\n[source]\npath = \"in.csv\"\nformat = \"csv\"\n[[feature]]\nname = \"f\"\nagg = \"sum\"\nof = \"amount\"\nby = \"user_id\"\nwindow = \"1d\"\n",
        )
        .expect("valid");
        assert_eq!(p.time_field, "t");
        assert_eq!(
            p.source,
            Some(SourceConfig::File(PathBuf::from("dir/in.csv")))
        );
        assert_eq!(p.format, InputFormat::Csv);
        assert_eq!(p.plan.lateness_ms, 300_000);
        for zero in ["0", "0s", "0ms", "00m"] {
            let text =
                format!("[event]\nlateness = \"{zero}\"\n{BASE}agg = \"count\"\nwindow = \"1d\"\n");
            let p = parse(Path::new("p.toml"), &text).expect("zero lateness");
            assert_eq!(p.plan.lateness_ms, 0, "{zero}");
        }
        assert!(err(&format!(
            "[event]\nlateness = \"0x\"\n{BASE}agg = \"count\"\nwindow = \"1d\"\n"
        ))
        .contains("p.toml:2:12"));
    }

    #[test]
    fn errors_name_line_column_and_valid_values() {
        let e = err(&format!("{BASE}agg = \"median\"\nwindow = \"1d\"\n"));
        assert!(
            e.starts_with("p.toml:4:7: unknown aggregation `median`; valid: count, sum"),
            "{e}"
        );
        let e = err(&format!("{BASE}agg = \"count\"\nwindow = \"7x\"\n"));
        assert!(e.starts_with("p.toml:5:10: invalid duration `7x`"), "{e}");
        assert!(e.contains("valid:"), "{e}");
        let e = err(&format!("{BASE}agg = \"sum\"\nwindow = \"1d\"\n"));
        assert!(
            e.starts_with("p.toml:4:7: feature `f`: `sum` needs `of`"),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}agg = \"count\"\nwindow = \"1d\"\nwindw = \"1d\"\n"
        ));
        assert!(
            e.starts_with("p.toml:6:1: unknown field `windw`, expected one of"),
            "{e}"
        );
        let e = err("[state]\nbackend = \"cassandra\"\n");
        assert!(
            e.contains(
                "p.toml:2:11: unknown state backend `cassandra`; valid: memory, redis, embedded"
            ),
            "{e}"
        );
        let e = err("[[feature]\n");
        assert!(e.starts_with("p.toml:1:"), "{e}");
    }

    #[test]
    fn kafka_and_serve_settings_are_checked() {
        let feature = "[[feature]]\nname = \"f\"\nagg = \"count\"\nby = \"u\"\nwindow = \"1h\"\n";
        let e = err(&format!(
            "[source]\nkind = \"kafka\"\ntopic = \"t\"\n{feature}"
        ));
        assert!(
            e.contains("p.toml:2:8: [source] of kind `kafka` needs `brokers`"),
            "{e}"
        );
        let e = err(&format!(
            "[sink]\nkind = \"kafka\"\nbrokers = [\"b:9092\"]\ntopic = \"t\"\ncompression = \"brotli\"\n{feature}"
        ));
        assert!(
            e.contains("p.toml:5:15: unknown compression `brotli`; valid: none, snappy, lz4"),
            "{e}"
        );
        let checkpointed = parse(
            Path::new("p.toml"),
            &format!("[source]\nkind = \"kafka\"\nbrokers = [\"b:9092\"]\ntopic = \"t\"\n[sink]\nkind = \"kafka\"\nbrokers = [\"b:9092\"]\ntopic = \"o\"\n[checkpoint]\npath = \"c\"\n{feature}"),
        )
        .expect("Kafka with checkpoints");
        assert!(checkpointed.checkpoint.is_some());
        let e = err(&format!("[serve]\nlisten = \"localhost\"\n{feature}"));
        assert!(
            e.contains("p.toml:2:10: invalid address `localhost`"),
            "{e}"
        );
        let e = err(&format!("[serve]\nmax_body = \"big\"\n{feature}"));
        assert!(e.contains("p.toml:2:12: invalid size `big`"), "{e}");
        let ok = parse(
            Path::new("p.toml"),
            &format!("[source]\nkind = \"kafka\"\nbrokers = [\"b:9092\"]\ntopic = \"t\"\nstart = \"latest\"\n{feature}"),
        )
        .expect("valid");
        assert_eq!(
            ok.source,
            Some(SourceConfig::Kafka(KafkaSource {
                brokers: vec!["b:9092".into()],
                topic: "t".into(),
                group: "sluice".into(),
                start: Start::Latest,
                until_end: false,
            }))
        );
    }

    #[test]
    fn state_and_checkpoint_settings_are_checked() {
        let feature = "[[feature]]\nname = \"f\"\nagg = \"count\"\nby = \"u\"\nwindow = \"1h\"\n";
        let e = err(&format!(
            "[state]\nbackend = \"embedded\"\nmemory_cap = \"lots\"\n{feature}"
        ));
        assert!(
            e.contains("p.toml:3:14: invalid size `lots`; valid: a number and a unit"),
            "{e}"
        );
        let e = err(&format!("[state]\nmemory_cap = \"1GB\"\n{feature}"));
        assert!(
            e.contains("p.toml:2:14: this setting is for backend = \"embedded\""),
            "{e}"
        );
        let e = err(&format!(
            "[state]\nbackend = \"redis\"\nurls = [\"redis://h:1\"]\n[checkpoint]\npath = \"c\"\n{feature}"
        ));
        assert!(
            e.contains("p.toml:5:8: checkpoints are for local state"),
            "{e}"
        );
        let e = err(&format!("[checkpoint]\npath = \"s3://b/p\"\n{feature}"));
        assert!(
            e.contains("p.toml:2:8: object storage is not supported yet"),
            "{e}"
        );
        let e = err(&format!(
            "[checkpoint]\npath = \"c\"\ninterval = \"5x\"\n{feature}"
        ));
        assert!(e.contains("p.toml:3:12:"), "{e}");
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("2 GB"), Some(2 << 30));
        assert_eq!(parse_size("0MB"), None);
    }
}
