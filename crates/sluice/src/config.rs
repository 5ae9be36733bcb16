//! The pipeline file: TOML → typed configuration → validated [`PipelineConfig`].
//!
//! Every error names the file, the line and column, and what would be valid.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use sluice_connectors::kafka::{KafkaSink, KafkaSource, Start};
use sluice_core::agg::Quantile;
use sluice_core::derived::DerivedSpec;
use sluice_core::fql::Link;
use sluice_core::{parse_duration, Agg, FeatureSpec, FieldPath, Plan};
use sluice_engine::checkpoint::CheckpointConfig;
use sluice_engine::state::redis::{ClusterOptions, RedisOptions};
use sluice_engine::state::EmbeddedOptions;
use sluice_engine::{InputFormat, OutputFormat, StateConfig, TimeFormat};
pub use sluice_serve::{ClusterConfig, ServeConfig};
use toml::Spanned;

/// Default lateness: how far behind the newest event time an event may arrive and still be
/// computed exactly. Five minutes covers the usual client clock skew and retry delays while
/// adding little state next to windows of hours or days.
pub const DEFAULT_LATENESS: &str = "5m";

/// `[event]`: where the event time is and how late events may be.
///
/// There is no `id` (an event id field): accepted and ignored until now, it is an unknown
/// field, so that it can come back with a meaning.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSection {
    /// Field holding the event time. Default `ts`.
    time: Option<Spanned<String>>,
    /// `epoch_ms` (default), `epoch_s` or `rfc3339`.
    #[serde(default, deserialize_with = "opt_choice")]
    time_format: Option<Spanned<TimeFormatName>>,
    /// Accepted lateness behind the newest event time. Default `5m`.
    lateness: Option<Spanned<String>>,
    /// Field holding the event type, for StreamFQL features (`fql`).
    #[serde(rename = "type")]
    event_type: Option<Spanned<String>>,
    /// Field holding each event's id: with Redis state, an event a key has already applied
    /// (a retry) is not applied again, and gets its first values.
    id: Option<Spanned<String>>,
}

/// `[source]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    /// `file` (default when `path` is set), `stdin` or `kafka`.
    #[serde(default, deserialize_with = "opt_choice")]
    kind: Option<Spanned<SourceKind>>,
    /// Input file, relative to the pipeline file.
    path: Option<String>,
    /// `jsonl` (default) or `csv`.
    #[serde(default, deserialize_with = "opt_choice")]
    format: Option<Spanned<FormatName>>,
    /// Kafka: bootstrap brokers.
    brokers: Option<Spanned<Vec<String>>>,
    /// Kafka: the topic.
    topic: Option<Spanned<String>>,
    /// Kafka: the consumer group. Default `sluice`.
    group: Option<Spanned<String>>,
    /// Kafka: `earliest` (default) or `latest`, without a committed offset.
    #[serde(default, deserialize_with = "opt_choice")]
    start: Option<Spanned<StartName>>,
    /// Kafka: stop once the assigned partitions are read to their end (as `--until-end`).
    until_end: Option<bool>,
}

/// `[sink]` (kinds [`SinkKind`]), and `[dead_letters]` (kinds [`DeadLetterKind`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "K: Choice"))]
struct SinkSection<K> {
    /// `file` (default when `path` is set), `stdout` (`[sink]` only) or `kafka`.
    #[serde(default, deserialize_with = "opt_choice")]
    kind: Option<Spanned<K>>,
    /// Output file, relative to the pipeline file.
    path: Option<String>,
    /// Kafka: bootstrap brokers.
    brokers: Option<Spanned<Vec<String>>>,
    /// Kafka: the topic.
    topic: Option<Spanned<String>>,
    /// Kafka: the event field whose value keys the messages.
    key: Option<Spanned<String>>,
    /// Kafka: `compression.type`. Default `lz4`.
    #[serde(default, deserialize_with = "opt_choice")]
    compression: Option<Spanned<Compression>>,
    /// A file's format: `jsonl` (default) or `parquet` (inferred from a `.parquet` path).
    #[serde(default, deserialize_with = "opt_choice")]
    format: Option<Spanned<OutputFormatName>>,
}

/// `[state]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateSection {
    /// `memory` (default), `redis` or `embedded`.
    #[serde(default, deserialize_with = "opt_choice")]
    backend: Option<Spanned<BackendName>>,
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
    /// With a remote state: how long the engine thread gathers requests after the first
    /// before it takes them as one batch. Default 0 (what is queued when it gets free).
    batch_wait: Option<Spanned<String>>,
}

/// One `[[feature]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureSection {
    name: Spanned<String>,
    #[serde(default, deserialize_with = "opt_choice")]
    agg: Option<Spanned<AggName>>,
    of: Option<Spanned<String>>,
    by: Option<Spanned<OneOrMany>>,
    window: Option<Spanned<String>>,
    /// A derived feature: an expression over event fields and other features, instead of
    /// `agg`, `of`, `by`, `window`, `granularity` and `where`.
    expr: Option<Spanned<String>>,
    /// A StreamFQL feature (`SUM(1d, transaction, amount, user_id)`), instead of every other
    /// setting.
    fql: Option<Spanned<String>>,
    /// Bucket width; default exact.
    granularity: Option<Spanned<String>>,
    /// The quantile of `agg = "quantile"`, in (0, 1].
    q: Option<Spanned<f64>>,
    /// How many values a `set` lists at most (default 100).
    limit: Option<Spanned<i64>>,
    /// A relation feature's linking field.
    via: Option<Spanned<String>>,
    /// Which events make links (hop 1) of a relation feature.
    via_where: Option<Spanned<String>>,
    /// Most linked events a relation feature reads for one value (default 100 000); for
    /// `linked_distinct_count_approx`, most links.
    link_limit: Option<Spanned<i64>>,
    /// Which events are added to the feature's state (a CEL-subset condition).
    #[serde(rename = "where")]
    filter: Option<Spanned<String>>,
}

impl FeatureSection {
    /// The settings of an aggregated feature, each with its span if it is given: a derived
    /// or StreamFQL feature takes none of them.
    fn aggregation_settings(&self) -> [(&'static str, Option<Range<usize>>); 11] {
        let f = self;
        [
            ("agg", f.agg.as_ref().map(Spanned::span)),
            ("of", f.of.as_ref().map(Spanned::span)),
            ("by", f.by.as_ref().map(Spanned::span)),
            ("window", f.window.as_ref().map(Spanned::span)),
            ("granularity", f.granularity.as_ref().map(Spanned::span)),
            ("where", f.filter.as_ref().map(Spanned::span)),
            ("q", f.q.as_ref().map(Spanned::span)),
            ("limit", f.limit.as_ref().map(Spanned::span)),
            ("via", f.via.as_ref().map(Spanned::span)),
            ("via_where", f.via_where.as_ref().map(Spanned::span)),
            ("link_limit", f.link_limit.as_ref().map(Spanned::span)),
        ]
    }
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
    sink: Option<SinkSection<SinkKind>>,
    dead_letters: Option<SinkSection<DeadLetterKind>>,
    state: Option<StateSection>,
    checkpoint: Option<CheckpointSection>,
    engine: Option<EngineSection>,
    serve: Option<ServeSection>,
    cluster: Option<ClusterSection>,
    #[serde(default)]
    feature: Vec<FeatureSection>,
}

/// `[cluster]`: `sluice serve` as a member of a serving cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    /// Members with the same name (and Redis namespace) form one cluster.
    name: Option<Spanned<String>>,
    /// How often a member renews its heartbeat. Default `1s`.
    heartbeat: Option<Spanned<String>>,
    /// How long a member without a heartbeat stays a member. Default `5s`.
    ttl: Option<Spanned<String>>,
}

/// A setting that takes one of a few names: an enum whose derived `Deserialize` (with
/// `rename_all = "snake_case"`) lists the valid names, read through [`choice`] so that an
/// unknown name is reported as `unknown <WHAT> `<name>`; valid: <names>` at its position.
trait Choice: DeserializeOwned {
    /// What the setting is, in messages: `aggregation`, `state backend`...
    const WHAT: &'static str;
}

/// Declares the enum of a [`Choice`] setting: its variants' snake_case names are the valid
/// names, in this order.
macro_rules! choice_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, [$($(#[$vdoc:meta])* $variant:ident),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Choice for $name {
            const WHAT: &'static str = $what;
        }
    };
}

choice_enum!(
    /// `[event] time_format`.
    TimeFormatName, "time format", [EpochMs, EpochS, Rfc3339]
);
choice_enum!(
    /// `[source] format`.
    FormatName, "source format", [Jsonl, Csv, Parquet]
);
choice_enum!(
    /// `[sink] format`.
    OutputFormatName, "sink format", [Jsonl, Csv, Parquet]
);
choice_enum!(
    /// `[source] kind`.
    SourceKind, "source kind", [File, Stdin, Kafka]
);
choice_enum!(
    /// `[source] start`.
    StartName, "start", [Earliest, Latest]
);
choice_enum!(
    /// `[sink] kind`.
    SinkKind, "sink kind", [File, Stdout, Kafka]
);
choice_enum!(
    /// `[dead_letters] kind`.
    DeadLetterKind, "dead-letter kind", [File, Kafka]
);
choice_enum!(
    /// Kafka `compression` of `[sink]` and `[dead_letters]`.
    Compression, "compression", [None, Snappy, Lz4]
);
choice_enum!(
    /// `[state] backend`.
    BackendName, "state backend", [Memory, Redis, Embedded]
);
choice_enum!(
    /// `[[feature]] agg`: the names of [`Agg`], in the order of `AGG_NAMES`.
    AggName, "aggregation", [
        Count, Sum, Avg, Min, Max, DistinctCount, Last, Variance, Stddev, VariancePop, StddevPop,
        First, Lag, Quantile, DistinctCountApprox, Set, LinkedDistinctCount, LinkedCount,
        LinkedDistinctCountApprox
    ]
);

impl From<AggName> for Agg {
    fn from(a: AggName) -> Agg {
        match a {
            AggName::Count => Agg::Count,
            AggName::Sum => Agg::Sum,
            AggName::Avg => Agg::Avg,
            AggName::Min => Agg::Min,
            AggName::Max => Agg::Max,
            AggName::DistinctCount => Agg::DistinctCount,
            AggName::Last => Agg::Last,
            AggName::Variance => Agg::Variance,
            AggName::Stddev => Agg::Stddev,
            AggName::VariancePop => Agg::VariancePop,
            AggName::StddevPop => Agg::StddevPop,
            AggName::First => Agg::First,
            AggName::Lag => Agg::Lag,
            // `q` comes from its own key (checked where the feature is read).
            AggName::Quantile => Agg::Quantile(Default::default()),
            AggName::DistinctCountApprox => Agg::DistinctCountApprox,
            AggName::Set => Agg::Set(sluice_core::agg::SET_LIMIT),
            AggName::LinkedDistinctCount => Agg::LinkedDistinctCount,
            AggName::LinkedCount => Agg::LinkedCount,
            AggName::LinkedDistinctCountApprox => Agg::LinkedDistinctCountApprox,
        }
    }
}

impl From<TimeFormatName> for TimeFormat {
    fn from(t: TimeFormatName) -> TimeFormat {
        match t {
            TimeFormatName::EpochMs => TimeFormat::EpochMs,
            TimeFormatName::EpochS => TimeFormat::EpochS,
            TimeFormatName::Rfc3339 => TimeFormat::Rfc3339,
        }
    }
}

impl From<OutputFormatName> for OutputFormat {
    fn from(f: OutputFormatName) -> OutputFormat {
        match f {
            OutputFormatName::Jsonl => OutputFormat::Jsonl,
            OutputFormatName::Csv => OutputFormat::Csv,
            OutputFormatName::Parquet => OutputFormat::Parquet,
        }
    }
}

impl From<FormatName> for InputFormat {
    fn from(f: FormatName) -> InputFormat {
        match f {
            FormatName::Jsonl => InputFormat::Jsonl,
            FormatName::Csv => InputFormat::Csv,
            FormatName::Parquet => InputFormat::Parquet,
        }
    }
}

impl From<StartName> for Start {
    fn from(s: StartName) -> Start {
        match s {
            StartName::Earliest => Start::Earliest,
            StartName::Latest => Start::Latest,
        }
    }
}

impl Compression {
    /// The librdkafka `compression.type`.
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Why a name is not one of a [`Choice`]'s: the valid names, as serde's derived code lists
/// them when it meets an unknown variant.
#[derive(Debug)]
struct NameError {
    valid: &'static [&'static str],
    message: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NameError {}

impl serde::de::Error for NameError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NameError {
            valid: &[],
            message: msg.to_string(),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        NameError {
            valid: expected,
            message: format!("unknown variant `{variant}`"),
        }
    }
}

/// Reads a [`Choice`] setting: a string, then its variant. The error of an unknown name
/// lists the valid ones; TOML gives it the position of the value.
fn choice<'de, D, T>(d: D) -> Result<Spanned<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Choice,
{
    let name = Spanned::<String>::deserialize(d)?;
    let value = T::deserialize(serde::de::value::StrDeserializer::<NameError>::new(
        name.get_ref(),
    ))
    .map_err(|e| {
        if e.valid.is_empty() {
            D::Error::custom(format!("invalid {} `{}`: {e}", T::WHAT, name.get_ref()))
        } else {
            D::Error::custom(format!(
                "unknown {} `{}`; valid: {}",
                T::WHAT,
                name.get_ref(),
                e.valid.join(", ")
            ))
        }
    })?;
    Ok(Spanned::new(name.span(), value))
}

/// [`choice`] for an optional setting (with `#[serde(default)]`).
fn opt_choice<'de, D, T>(d: D) -> Result<Option<Spanned<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Choice,
{
    choice(d).map(Some)
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
    /// The output file's format.
    pub output_format: OutputFormat,
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
    /// Each StreamFQL feature's name and its translation as `[[feature]]` TOML.
    pub fql_forms: Vec<(String, String)>,
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
            output_format: OutputFormat::Jsonl,
            dead_letters: None,
            dead_letter_topic: None,
            workers: None,
            state: StateConfig::Memory,
            batch_wait_ms: parse_duration(DEFAULT_BATCH_WAIT)
                .expect("the default batch wait is valid"),
            checkpoint: None,
            serve: ServeConfig::default(),
            fql_forms: Vec::new(),
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

    /// A field path (`user.id`, `` payload.`geo.ip` ``) in its canonical form; `span` is where
    /// it was written.
    fn path(&self, text: &str, span: Range<usize>) -> Result<String, ConfigError> {
        FieldPath::parse(text)
            .map(|p| p.to_string())
            .map_err(|e| self.error(Some(span), e.to_string()))
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
    let time_field = match event.and_then(|e| e.time.as_ref()) {
        None => "ts".to_owned(),
        Some(t) => src.path(t.get_ref(), t.span())?,
    };
    let time_format = event
        .and_then(|e| e.time_format.as_ref())
        .map_or(TimeFormat::EpochMs, |t| (*t.get_ref()).into());
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
            match &s.format {
                Some(f) => format = (*f.get_ref()).into(),
                None if s.path.as_deref().is_some_and(|p| p.ends_with(".parquet")) => {
                    format = InputFormat::Parquet
                }
                None => {}
            }
            let kind = s.kind.as_ref().map_or(SourceKind::File, |k| *k.get_ref());
            if let (SourceKind::Stdin, InputFormat::Parquet) = (kind, format) {
                return Err(src.error(
                    s.format.as_ref().map(Spanned::span),
                    "a Parquet input is read from a file (its footer is at the end); valid with \
                     kind = \"stdin\": format = \"jsonl\" or \"csv\"",
                ));
            }
            match (kind, &s.path) {
                (SourceKind::Stdin, _) => Some(SourceConfig::Stdin),
                (SourceKind::Kafka, _) => Some(SourceConfig::Kafka(kafka_source(&src, s)?)),
                (SourceKind::File, Some(p)) => Some(SourceConfig::File(resolve(p))),
                (SourceKind::File, None) => {
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
    let mut output_format = OutputFormat::Jsonl;
    let sink = match &file.sink {
        None => None,
        Some(s) => {
            let kind = s.kind.as_ref().map_or(SinkKind::File, |k| *k.get_ref());
            output_format = match (&s.format, &s.path) {
                (Some(f), _) => (*f.get_ref()).into(),
                (None, Some(p)) if p.ends_with(".parquet") => OutputFormat::Parquet,
                (None, Some(p)) if p.ends_with(".csv") => OutputFormat::Csv,
                (None, _) => OutputFormat::Jsonl,
            };
            if output_format == OutputFormat::Parquet && kind != SinkKind::File {
                return Err(src.error(
                    s.format
                        .as_ref()
                        .map(Spanned::span)
                        .or(s.kind.as_ref().map(Spanned::span)),
                    "a Parquet output is a file; valid: kind = \"file\" with a path, or \
                     format = \"jsonl\"",
                ));
            }
            if output_format != OutputFormat::Jsonl && kind == SinkKind::Kafka {
                return Err(src.error(
                    s.format.as_ref().map(Spanned::span),
                    "a Kafka sink writes one JSON message per event; valid: format = \"jsonl\"",
                ));
            }
            match (kind, &s.path) {
                (SinkKind::Stdout, _) => Some(SinkConfig::Stdout),
                (SinkKind::Kafka, _) => Some(SinkConfig::Kafka(kafka_sink(&src, s, "sink")?)),
                (SinkKind::File, Some(p)) => Some(SinkConfig::File(resolve(p))),
                (SinkKind::File, None) => {
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
        Some(c) => Some(checkpoint_config(&src, c, &state, format, &resolve)?),
    };
    if let (Some(c), OutputFormat::Parquet) = (&file.checkpoint, output_format) {
        return Err(src.error(
            Some(c.path.span()),
            "a Parquet output cannot be cut back to a checkpoint (its footer is written at the \
             end): write the output as JSONL with [checkpoint], or remove [checkpoint]",
        ));
    }

    let mut serve = serve_config(&src, file.serve.as_ref())?;
    if let Some(c) = &file.cluster {
        serve.cluster = Some(cluster_config(&src, c, &state, file.state.as_ref())?);
    }
    let (dead_letters, dead_letter_topic) = match &file.dead_letters {
        None => (None, None),
        Some(d) => dead_letters_config(&src, d, &resolve)?,
    };

    let type_field = match event.and_then(|e| e.event_type.as_ref()) {
        None => None,
        Some(t) => Some(src.path(t.get_ref(), t.span())?),
    };
    let (mut plan, fql_forms) =
        plan_config(&src, &file.feature, lateness_ms, type_field.as_deref())?;
    if let Some(id) = event.and_then(|e| e.id.as_ref()) {
        let field = src.path(id.get_ref(), id.span())?;
        if !matches!(state, StateConfig::Redis(_)) {
            return Err(src.error(
                Some(id.span()),
                "[event] id needs [state] backend = \"redis\": ids make retries against the \
                 shared state apply once (with local state a run is exactly once through \
                 [checkpoint])",
            ));
        }
        if let Some(r) = plan.relations.first() {
            return Err(src.error(
                Some(id.span()),
                format!(
                    "[event] id is not supported with relation features yet (feature `{}`)",
                    plan.features[r.feature].name
                ),
            ));
        }
        plan = plan.with_event_id(&field);
    }
    if let Some(r) = plan.relations.first() {
        // A consumer group splits a topic's partitions among processes, and a relation
        // feature's links cross keys: they must be where every process reads them.
        let local = !matches!(state, StateConfig::Redis(_));
        if local && matches!(source, Some(SourceConfig::Kafka(_))) {
            let span = file
                .source
                .as_ref()
                .and_then(|s| s.kind.as_ref())
                .map(Spanned::span);
            return Err(src.error(
                span,
                format!(
                    "feature `{}` is a relation feature: with a Kafka source it needs \
                     [state] backend = \"redis\", since a consumer group splits the partitions \
                     among processes and the links of every event must be in one place",
                    plan.features[r.feature].name
                ),
            ));
        }
    }
    Ok(PipelineConfig {
        path: path.to_owned(),
        plan,
        time_field,
        time_format,
        source,
        format,
        sink,
        output_format,
        dead_letters,
        dead_letter_topic,
        workers,
        state,
        batch_wait_ms,
        checkpoint,
        serve,
        fql_forms,
    })
}

/// `[checkpoint]`, given the state backend and input format it must work with.
fn checkpoint_config(
    src: &Source<'_>,
    c: &CheckpointSection,
    state: &StateConfig,
    format: InputFormat,
    resolve: &impl Fn(&str) -> PathBuf,
) -> Result<CheckpointConfig, ConfigError> {
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
    Ok(CheckpointConfig {
        dir: resolve(c.path.get_ref()),
        interval: std::time::Duration::from_millis(interval_ms as u64),
        keep,
    })
}

/// `[dead_letters]`: a file, or a Kafka topic.
fn dead_letters_config(
    src: &Source<'_>,
    d: &SinkSection<DeadLetterKind>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> Result<(Option<PathBuf>, Option<KafkaSink>), ConfigError> {
    if let Some(f) = &d.format {
        return Err(src.error(
            Some(f.span()),
            "[dead_letters] takes no `format`: dead letters are JSONL, one per line with its \
             reason; remove it",
        ));
    }
    if let Some(key) = &d.key {
        return Err(src.error(
            Some(key.span()),
            "[dead_letters] takes no `key`: dead letters are not keyed (a rejected record may \
             have no usable field); remove it",
        ));
    }
    match (d.kind.as_ref().map(|k| *k.get_ref()), &d.path) {
        (Some(DeadLetterKind::Kafka), _) => Ok((None, Some(kafka_sink(src, d, "dead_letters")?))),
        (Some(DeadLetterKind::File) | None, Some(p)) => Ok((Some(resolve(p)), None)),
        (Some(DeadLetterKind::File) | None, None) => Err(src.error(
            d.kind.as_ref().map(Spanned::span),
            "[dead_letters] needs `path`, e.g. path = \"dead_letters.jsonl\" (or kind = \"kafka\" with brokers and topic)",
        )),
    }
}

/// The `[[feature]]`s, planned; a planning error points at the setting at fault.
fn plan_config(
    src: &Source<'_>,
    features: &[FeatureSection],
    lateness_ms: i64,
    type_field: Option<&str>,
) -> Result<(Plan, Vec<(String, String)>), ConfigError> {
    if features.is_empty() {
        return Err(src.error(
            None,
            "no [[feature]] defined; add one, e.g.\n[[feature]]\nname = \"user_amount_1d\"\nagg = \"sum\"\nof = \"amount\"\nby = [\"user_id\"]\nwindow = \"1d\"",
        ));
    }
    let mut specs = Vec::with_capacity(features.len());
    // Index in `features` of each aggregated feature, and the derived ones.
    let mut aggregated = Vec::new();
    let mut derived = Vec::new();
    // The hidden parts of StreamFQL features, after every written feature.
    let mut hidden: Vec<(usize, FeatureSpec, Option<Link>)> = Vec::new();
    let mut fql_forms = Vec::new();
    let mut links = Vec::new();
    for (position, f) in features.iter().enumerate() {
        if let Some(fql) = &f.fql {
            let t = fql_feature(src, f, fql, type_field)?;
            fql_forms.push((f.name.get_ref().clone(), fql_toml(f.name.get_ref(), &t)));
            let mut parts = t.aggregations.into_iter();
            match t.expr {
                None => {
                    let a = parts.next().expect("one aggregation without an expression");
                    aggregated.push(position);
                    if let Some(link) = a.link.clone() {
                        links.push(fql_link(link, specs.len()));
                    }
                    specs.push(fql_spec(src, fql, a)?);
                }
                Some(expr) => derived.push(DerivedSpec {
                    name: f.name.get_ref().clone(),
                    expr,
                    position,
                }),
            }
            for part in parts {
                let link = part.link.clone();
                hidden.push((position, fql_spec(src, fql, part)?, link));
            }
            continue;
        }
        if let Some(expr) = &f.expr {
            derived.push(derived_feature(src, f, expr, position)?);
            continue;
        }
        aggregated.push(position);
        if let Some(link) = link_spec(src, f, specs.len())? {
            links.push(link);
        }
        specs.push(aggregated_feature(src, f)?);
    }
    let hidden_names: Vec<String> = hidden.iter().map(|(_, s, _)| s.name.clone()).collect();
    for (position, spec, link) in hidden {
        aggregated.push(position);
        if let Some(link) = link {
            links.push(fql_link(link, specs.len()));
        }
        specs.push(spec);
    }
    let plan = Plan::new(specs, lateness_ms).map_err(|e| {
        let f = &features[aggregated[e.feature]];
        let span = match e.field {
            "of" => {
                f.of.as_ref()
                    .map(Spanned::span)
                    .or(f.agg.as_ref().map(Spanned::span))
            }
            "by" => f.by.as_ref().map(Spanned::span),
            "window" => f.window.as_ref().map(Spanned::span),
            "granularity" => f
                .granularity
                .as_ref()
                .or(f.window.as_ref())
                .map(Spanned::span),
            "where" => f.filter.as_ref().map(Spanned::span),
            "q" => f.q.as_ref().map(Spanned::span),
            "limit" => f.limit.as_ref().map(Spanned::span),
            _ => None,
        };
        src.error(Some(span.unwrap_or(f.name.span())), e.to_string())
    })?;
    let plan = plan.with_relations(links).map_err(|e| {
        let f = &features[aggregated[e.feature]];
        let span = match e.field {
            "via_where" => f.via_where.as_ref().map(Spanned::span),
            "where" => f.filter.as_ref().map(Spanned::span),
            "granularity" => f.granularity.as_ref().map(Spanned::span),
            _ => f
                .via
                .as_ref()
                .map(Spanned::span)
                .or(f.agg.as_ref().map(Spanned::span)),
        };
        src.error(Some(span.unwrap_or(f.name.span())), e.to_string())
    })?;
    let plan = plan.with_derived(derived).map_err(|e| {
        let f = &features[e.feature];
        let span = f
            .expr
            .as_ref()
            .or(f.fql.as_ref())
            .filter(|_| e.field == "expr");
        src.error(
            Some(span.map_or(f.name.span(), Spanned::span)),
            e.to_string(),
        )
    })?;
    Ok((plan.hide(&hidden_names), fql_forms))
}

/// A StreamFQL feature, translated; it takes no other setting.
fn fql_feature(
    src: &Source<'_>,
    f: &FeatureSection,
    fql: &Spanned<String>,
    type_field: Option<&str>,
) -> Result<sluice_core::fql::Translated, ConfigError> {
    let expr = ("expr", f.expr.as_ref().map(Spanned::span));
    let others = f.aggregation_settings().into_iter().chain([expr]);
    if let Some((name, span)) = others.into_iter().find(|(_, s)| s.is_some()) {
        return Err(src.error(
            span,
            format!(
                "feature `{}` is written in StreamFQL (`fql`): it takes no `{name}`",
                f.name.get_ref()
            ),
        ));
    }
    sluice_core::fql::translate(f.name.get_ref(), fql.get_ref(), type_field).map_err(|e| {
        src.error(
            Some(fql.span()),
            format!("feature `{}`: {e}", f.name.get_ref()),
        )
    })
}

/// The relation settings of a StreamFQL relation feature (index `feature` among the
/// aggregated features).
fn fql_link(link: Link, feature: usize) -> sluice_core::relation::LinkSpec {
    sluice_core::relation::LinkSpec {
        feature,
        via: link.via,
        via_filter: link.via_filter,
        limit: sluice_core::relation::LINK_LIMIT,
    }
}

/// One aggregation of a StreamFQL feature as a feature spec.
fn fql_spec(
    src: &Source<'_>,
    fql: &Spanned<String>,
    a: sluice_core::fql::Aggregation,
) -> Result<FeatureSpec, ConfigError> {
    let window_ms =
        parse_duration(&a.window).map_err(|e| src.error(Some(fql.span()), e.to_string()))?;
    Ok(FeatureSpec {
        name: a.name,
        agg: a.agg,
        of: a.of,
        by: a.by,
        window_ms,
        granularity_ms: 1,
        filter: a.filter,
    })
}

/// A StreamFQL feature's translation, as the `[[feature]]` sections one would write.
fn fql_toml(name: &str, t: &sluice_core::fql::Translated) -> String {
    let quote = |s: &str| format!("{:?}", s);
    let mut out = String::new();
    if let Some(expr) = &t.expr {
        out.push_str(&format!(
            "[[feature]]\nname = {}\nexpr = {}\n",
            quote(name),
            quote(expr)
        ));
    }
    for a in &t.aggregations {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "[[feature]]\nname = {}\nagg = {}\n",
            quote(&a.name),
            quote(a.agg.name())
        ));
        if let Some(of) = &a.of {
            out.push_str(&format!("of = {}\n", quote(of)));
        }
        if let Some(link) = &a.link {
            out.push_str(&format!("via = {}\n", quote(&link.via)));
            if let Some(w) = &link.via_filter {
                out.push_str(&format!("via_where = {}\n", quote(w)));
            }
        }
        let by: Vec<String> = a.by.iter().map(|b| quote(b)).collect();
        out.push_str(&format!(
            "by = [{}]\nwindow = {}\n",
            by.join(", "),
            quote(&a.window)
        ));
        if let Some(w) = &a.filter {
            out.push_str(&format!("where = {}\n", quote(w)));
        }
    }
    out
}

/// A derived feature: `expr` and no aggregation settings.
fn derived_feature(
    src: &Source<'_>,
    f: &FeatureSection,
    expr: &Spanned<String>,
    position: usize,
) -> Result<DerivedSpec, ConfigError> {
    let settings = f.aggregation_settings();
    if let Some((name, span)) = settings.into_iter().find(|(_, s)| s.is_some()) {
        return Err(src.error(
            span,
            format!(
                "feature `{}` is derived (`expr`): it takes no `{name}`; an aggregated feature \
                 takes `agg`, `by` and `window` instead of `expr`",
                f.name.get_ref()
            ),
        ));
    }
    Ok(DerivedSpec {
        name: f.name.get_ref().clone(),
        expr: expr.get_ref().clone(),
        position,
    })
}

/// The relation settings of aggregated feature `f` (index `feature` among them), if it has
/// `via`; `via_where` and `link_limit` without `via` are errors.
fn link_spec(
    src: &Source<'_>,
    f: &FeatureSection,
    feature: usize,
) -> Result<Option<sluice_core::relation::LinkSpec>, ConfigError> {
    let name = f.name.get_ref();
    let Some(via) = &f.via else {
        let stray = f.via_where.as_ref().map(Spanned::span);
        if let Some(span) = stray.or(f.link_limit.as_ref().map(Spanned::span)) {
            return Err(src.error(
                Some(span),
                format!("feature `{name}`: `via_where` and `link_limit` belong to relation features, which need `via`"),
            ));
        }
        return Ok(None);
    };
    let limit = match &f.link_limit {
        None => sluice_core::relation::LINK_LIMIT,
        Some(l) => match usize::try_from(*l.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(src.error(
                    Some(l.span()),
                    format!("feature `{name}`: `link_limit` must be a whole number of at least 1, e.g. link_limit = 100000"),
                ))
            }
        },
    };
    Ok(Some(sluice_core::relation::LinkSpec {
        feature,
        via: src.path(via.get_ref(), via.span())?,
        via_filter: f.via_where.as_ref().map(|w| w.get_ref().clone()),
        limit,
    }))
}

/// An aggregated feature: `agg`, `by` and `window` are required.
fn aggregated_feature(src: &Source<'_>, f: &FeatureSection) -> Result<FeatureSpec, ConfigError> {
    let name = f.name.get_ref();
    let missing = |what: &str, example: &str| {
        src.error(
            Some(f.name.span()),
            format!(
                "feature `{name}` needs `{what}` (e.g. {example}), or `expr` for a derived \
                 feature"
            ),
        )
    };
    let agg = f
        .agg
        .as_ref()
        .ok_or_else(|| missing("agg", "agg = \"sum\""))?;
    let by =
        f.by.as_ref()
            .ok_or_else(|| missing("by", "by = [\"user_id\"]"))?;
    let window = f
        .window
        .as_ref()
        .ok_or_else(|| missing("window", "window = \"1d\""))?;
    let by_fields = match by.get_ref() {
        OneOrMany::One(s) => vec![s.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    let by_fields = by_fields
        .iter()
        .map(|b| src.path(b, by.span()))
        .collect::<Result<Vec<_>, _>>()?;
    let of = match &f.of {
        None => None,
        Some(o) => Some(src.path(o.get_ref(), o.span())?),
    };
    let agg = match (Agg::from(*agg.get_ref()), &f.q) {
        (Agg::Quantile(_), None) => return Err(missing("q", "q = 0.9")),
        (Agg::Quantile(_), Some(q)) => {
            Agg::Quantile(Quantile::new(*q.get_ref()).ok_or_else(|| {
                src.error(
                    Some(q.span()),
                    format!("feature `{name}`: `q` must be a number in (0, 1], e.g. q = 0.9"),
                )
            })?)
        }
        (_, Some(q)) => {
            return Err(src.error(
                Some(q.span()),
                format!("feature `{name}`: `q` belongs to `agg = \"quantile\"` only"),
            ))
        }
        (agg, None) => agg,
    };
    let agg = match (agg, &f.limit) {
        (Agg::Set(_), Some(limit)) => match u32::try_from(*limit.get_ref()) {
            Ok(n) if n >= 1 => Agg::Set(n),
            _ => {
                return Err(src.error(
                    Some(limit.span()),
                    format!("feature `{name}`: `limit` must be a whole number of at least 1, e.g. limit = 100"),
                ))
            }
        },
        (_, Some(limit)) => {
            return Err(src.error(
                Some(limit.span()),
                format!("feature `{name}`: `limit` belongs to `agg = \"set\"` only"),
            ))
        }
        (agg, None) => agg,
    };
    Ok(FeatureSpec {
        name: name.clone(),
        agg,
        of,
        by: by_fields,
        window_ms: src.duration(window)?,
        granularity_ms: match &f.granularity {
            None => 1,
            Some(g) => src.duration(g)?,
        },
        filter: f.filter.as_ref().map(|w| w.get_ref().clone()),
    })
}

/// The brokers and topic of a Kafka section; `span` is that of its `kind`.
fn brokers_and_topic(
    src: &Source<'_>,
    brokers: &Option<Spanned<Vec<String>>>,
    topic: &Option<Spanned<String>>,
    span: Option<Range<usize>>,
    section: &str,
) -> Result<(Vec<String>, String), ConfigError> {
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
    let kind = s.kind.as_ref().map(Spanned::span);
    let (brokers, topic) = brokers_and_topic(src, &s.brokers, &s.topic, kind, "source")?;
    let start = s
        .start
        .as_ref()
        .map_or(Start::Earliest, |st| (*st.get_ref()).into());
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
fn kafka_sink<K>(
    src: &Source<'_>,
    s: &SinkSection<K>,
    section: &str,
) -> Result<KafkaSink, ConfigError> {
    let kind = s.kind.as_ref().map(Spanned::span);
    let (brokers, topic) = brokers_and_topic(src, &s.brokers, &s.topic, kind, section)?;
    let compression = s
        .compression
        .as_ref()
        .map_or(Compression::Lz4, |c| *c.get_ref())
        .name()
        .to_owned();
    Ok(KafkaSink {
        brokers,
        topic,
        key: match &s.key {
            None => None,
            Some(k) => Some(src.path(k.get_ref(), k.span())?),
        },
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
    let batch_wait = match s.and_then(|s| s.batch_wait.as_ref()) {
        None => Duration::ZERO,
        Some(w) if is_zero_duration(w.get_ref()) => Duration::ZERO,
        Some(w) => match src.duration(w)? {
            ms @ 1..=1000 => Duration::from_millis(ms as u64),
            _ => {
                return Err(src.error(
                    Some(w.span()),
                    "batch_wait must be between 0 and 1s: every request waits up to it",
                ))
            }
        },
    };
    Ok(ServeConfig {
        listen,
        token,
        max_body,
        queue,
        batch_wait,
        cluster: None,
    })
}

/// The `[cluster]` section: a name, and Redis state (which holds the membership).
fn cluster_config(
    src: &Source<'_>,
    c: &ClusterSection,
    state: &StateConfig,
    state_section: Option<&StateSection>,
) -> Result<ClusterConfig, ConfigError> {
    let name = match &c.name {
        Some(n) if !n.get_ref().trim().is_empty() && !n.get_ref().contains(['{', '}']) => {
            n.get_ref().clone()
        }
        Some(n) => {
            return Err(src.error(
                Some(n.span()),
                "a cluster name must be a non-empty string without `{` or `}`",
            ))
        }
        None => {
            return Err(src.error(
                None,
                "[cluster] needs a `name`: members with the same name form one cluster",
            ))
        }
    };
    if !matches!(state, StateConfig::Redis(_)) {
        let span = state_section
            .and_then(|s| s.backend.as_ref())
            .map(Spanned::span);
        return Err(src.error(
            span,
            "[cluster] needs [state] backend = \"redis\": the Redis Cluster holds the state \
             and the membership of a serving cluster",
        ));
    }
    let millis = |d: &Option<Spanned<String>>, default: u64| -> Result<Duration, ConfigError> {
        match d {
            None => Ok(Duration::from_millis(default)),
            Some(d) => Ok(Duration::from_millis(src.duration(d)?.max(1) as u64)),
        }
    };
    let heartbeat = millis(&c.heartbeat, 1000)?;
    let ttl = millis(&c.ttl, 5000)?;
    if ttl < heartbeat * 2 {
        let span = c.ttl.as_ref().or(c.heartbeat.as_ref()).map(Spanned::span);
        return Err(src.error(
            span,
            "the cluster `ttl` must be at least twice the `heartbeat`, or members drop out \
             between two heartbeats",
        ));
    }
    Ok(ClusterConfig {
        name,
        heartbeat,
        ttl,
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
    let backend = st
        .backend
        .as_ref()
        .map_or(BackendName::Memory, |b| *b.get_ref());
    let embedded_only = [
        st.memory_cap.as_ref().map(Spanned::span),
        st.path.as_ref().map(Spanned::span),
    ];
    if backend != BackendName::Embedded {
        if let Some(span) = embedded_only.into_iter().flatten().next() {
            return Err(src.error(Some(span), "this setting is for backend = \"embedded\""));
        }
    }
    if backend == BackendName::Embedded {
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
    if backend == BackendName::Memory {
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
    fn language_mistakes_name_the_line_and_the_column_inside_the_expression() {
        let e = err(&format!(
            "{BASE}agg = \"count\"\nwindow = \"1d\"\nwhere = \"a == \"\n"
        ));
        assert!(
            e.starts_with("p.toml:6:9: feature `f`: `where`: 1:5: expected an expression"),
            "{e}"
        );
        let e = err("[[feature]]\nname = \"d\"\nexpr = \"d + 1\"\n");
        assert!(
            e.starts_with(
                "p.toml:3:8: feature `d`: derived features read each other in a cycle: d -> d"
            ),
            "{e}"
        );
        let e = err("[[feature]]\nname = \"d\"\nexpr = \"1\"\nby = \"u\"\n");
        assert!(
            e.starts_with("p.toml:4:6: feature `d` is derived (`expr`): it takes no `by`"),
            "{e}"
        );
        let e = err("[[feature]]\nname = \"q\"\nfql = \"SUM(1d, tx, amount, u)\"\n");
        assert!(
            e.starts_with("p.toml:3:7: feature `q`: fql at column 9: the event type `tx` needs the type field"),
            "{e}"
        );
        let e = err("[[feature]]\nname = \"q\"\nfql = \"COUNT(1h, *, u)\"\nwindow = \"1d\"\n");
        assert!(
            e.starts_with(
                "p.toml:4:10: feature `q` is written in StreamFQL (`fql`): it takes no `window`"
            ),
            "{e}"
        );
        let e = err("[[feature]]\nname = \"a\"\nby = \"u\"\nwindow = \"1d\"\n");
        assert!(e.starts_with("p.toml:2:8: feature `a` needs `agg`"), "{e}");
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
    fn serve_batch_wait_is_bounded() {
        let features = format!("{BASE}agg = \"count\"\nwindow = \"1d\"\n");
        let p = parse(
            Path::new("p.toml"),
            &format!("[serve]\nbatch_wait = \"2ms\"\n{features}"),
        )
        .expect("valid");
        assert_eq!(p.serve.batch_wait, Duration::from_millis(2));
        let e = err(&format!("[serve]\nbatch_wait = \"2s\"\n{features}"));
        assert!(
            e.starts_with("p.toml:2:14: batch_wait must be between 0 and 1s"),
            "{e}"
        );
    }

    #[test]
    fn an_event_id_needs_redis_state() {
        let features = format!("{BASE}agg = \"count\"\nwindow = \"1d\"\n");
        let e = err(&format!(
            "[event]\ntime = \"t\"\nid = \"txn_id\"\n{features}"
        ));
        assert!(
            e.starts_with("p.toml:3:6: [event] id needs [state] backend = \"redis\""),
            "{e}"
        );
        let redis = "[state]\nbackend = \"redis\"\nurls = [\"redis://h:7000\"]\n";
        let p = parse(
            Path::new("p.toml"),
            &format!("[event]\ntime = \"t\"\nid = \"txn.id\"\n{redis}{features}"),
        )
        .expect("valid");
        let id = p.plan.id_field.expect("an id field");
        assert_eq!(p.plan.fields[id], "txn.id");
    }

    #[test]
    fn every_choice_names_its_position_and_the_valid_names() {
        let feature = "[[feature]]\nname = \"f\"\nagg = \"count\"\nby = \"u\"\nwindow = \"1h\"\n";
        let kafka = "brokers = [\"b:9092\"]\ntopic = \"t\"\n";
        for (text, want) in [
            (
                "[event]\ntime_format = \"iso\"\n".to_owned(),
                "p.toml:2:15: unknown time format `iso`; valid: epoch_ms, epoch_s, rfc3339",
            ),
            (
                "[source]\npath = \"x\"\nformat = \"xml\"\n".to_owned(),
                "p.toml:3:10: unknown source format `xml`; valid: jsonl, csv",
            ),
            (
                "[source]\nkind = \"http\"\n".to_owned(),
                "p.toml:2:8: unknown source kind `http`; valid: file, stdin, kafka",
            ),
            (
                format!("[source]\nkind = \"kafka\"\n{kafka}start = \"now\"\n"),
                "p.toml:5:9: unknown start `now`; valid: earliest, latest",
            ),
            (
                "[sink]\nkind = \"stdin\"\n".to_owned(),
                "p.toml:2:8: unknown sink kind `stdin`; valid: file, stdout, kafka",
            ),
            (
                "[dead_letters]\nkind = \"stdout\"\n".to_owned(),
                "p.toml:2:8: unknown dead-letter kind `stdout`; valid: file, kafka",
            ),
            (
                format!("[dead_letters]\nkind = \"kafka\"\n{kafka}compression = \"zstd\"\n"),
                "p.toml:5:15: unknown compression `zstd`; valid: none, snappy, lz4",
            ),
            (
                format!("[dead_letters]\nkind = \"kafka\"\n{kafka}key = \"user_id\"\n"),
                "p.toml:5:7: [dead_letters] takes no `key`",
            ),
            (
                "[state]\nbackend = \"Memory\"\n".to_owned(),
                "p.toml:2:11: unknown state backend `Memory`; valid: memory, redis, embedded",
            ),
            (
                format!("{BASE}agg = \"distinctCount\"\n"),
                "p.toml:4:7: unknown aggregation `distinctCount`; valid: count, sum, avg, min, max, distinct_count, last, variance, stddev, variance_pop, stddev_pop",
            ),
            (
                format!("{BASE}agg = 5\n"),
                "p.toml:4:7: invalid type: integer `5`, expected a string",
            ),
        ] {
            let e = err(&format!("{text}{feature}"));
            assert!(e.starts_with(want), "{e}\nwanted: {want}");
        }
    }

    #[test]
    fn valid_choices_map_to_their_settings() {
        let feature = "[[feature]]\nname = \"f\"\nagg = \"count\"\nby = \"u\"\nwindow = \"1h\"\n";
        let p = parse(
            Path::new("p.toml"),
            &format!("[event]\ntime_format = \"rfc3339\"\n[source]\nkind = \"stdin\"\nformat = \"csv\"\n[sink]\nkind = \"stdout\"\n[state]\nbackend = \"embedded\"\n{feature}"),
        )
        .expect("valid");
        assert_eq!(p.time_format, TimeFormat::Rfc3339);
        assert_eq!(p.source, Some(SourceConfig::Stdin));
        assert_eq!(p.format, InputFormat::Csv);
        assert_eq!(p.sink, Some(SinkConfig::Stdout));
        assert!(matches!(p.state, StateConfig::Embedded(_)));
        let p = parse(
            Path::new("p.toml"),
            &format!("[dead_letters]\nkind = \"kafka\"\nbrokers = [\"b:9092\"]\ntopic = \"t\"\ncompression = \"snappy\"\n{feature}"),
        )
        .expect("valid");
        assert_eq!(
            p.dead_letter_topic.map(|t| t.compression),
            Some("snappy".to_owned())
        );
        // The aggregation names are those of the core, in its order.
        let valid = AggName::deserialize(serde::de::value::StrDeserializer::<NameError>::new(
            "median",
        ))
        .expect_err("unknown")
        .valid;
        assert_eq!(valid, sluice_core::agg::AGG_NAMES);
        for name in sluice_core::agg::AGG_NAMES {
            let agg =
                AggName::deserialize(serde::de::value::StrDeserializer::<NameError>::new(name))
                    .expect("a valid name");
            assert_eq!(Agg::from(agg).name(), name);
        }
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

    #[test]
    fn relation_features_from_kafka_need_redis_state() {
        let text = "[source]\nkind = \"kafka\"\nbrokers = [\"b:9092\"]\ntopic = \"t\"\n\
                    [[feature]]\nname = \"r\"\nagg = \"linked_count\"\nby = \"u\"\nvia = \"d\"\n\
                    window = \"1d\"\n";
        let e = err(text);
        assert!(
            e.contains("p.toml:2:8: feature `r` is a relation feature: with a Kafka source it needs [state] backend = \"redis\""),
            "{e}"
        );
        let shared = format!("{text}[state]\nbackend = \"redis\"\nurls = [\"redis://h:7000\"]\n");
        assert!(parse(Path::new("p.toml"), &shared).is_ok());
    }

    #[test]
    fn approximate_relations_take_a_granularity() {
        use sluice_core::relation::LinkAgg;
        let relation = |agg: &str, more: &str| {
            format!(
                "[[feature]]\nname = \"r\"\nagg = \"{agg}\"\nby = \"u\"\nvia = \"d\"\nof = \"u\"\nwindow = \"1d\"\n{more}"
            )
        };
        let text = relation(
            "linked_distinct_count_approx",
            "granularity = \"1h\"\nlink_limit = 50\n",
        );
        let p = parse(Path::new("p.toml"), &text).expect("valid");
        let r = &p.plan.relations[0];
        assert_eq!(
            r.agg,
            LinkAgg::DistinctCountApprox {
                granularity_ms: 3_600_000
            }
        );
        assert_eq!(r.limit, 50);
        let e = err(&relation("linked_distinct_count_approx", ""));
        assert!(
            e.contains("p.toml:7:10: feature `r`: `linked_distinct_count_approx` keeps one sketch per bucket and needs a `granularity`"),
            "{e}"
        );
        let e = err(&relation(
            "linked_distinct_count_approx",
            "granularity = \"7h\"\n",
        ));
        assert!(
            e.contains("p.toml:8:15: feature `r`: the window must be a whole number of granularity buckets"),
            "{e}"
        );
        let e = err(&relation("linked_distinct_count", "granularity = \"1h\"\n"));
        assert!(
            e.contains("p.toml:8:15: feature `r`: `linked_distinct_count` is exact: it takes no `granularity` (buckets: `linked_distinct_count_approx`)"),
            "{e}"
        );
    }
}
