//! The library API: a [`Pipeline`] built from TOML or in code, run over an input and outputs,
//! or served over HTTP.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use sluice_core::derived::DerivedSpec;
use sluice_core::{parse_duration, Agg, FeatureSpec, Plan};
use sluice_engine::serve::ServeEngine;
use sluice_engine::{Job, Outputs, Source, StateConfig, Stats, StreamSource, Summary, TimeFormat};
use sluice_serve::{ServeConfig, Server};

use crate::config::{self, ConfigError, PipelineConfig};

/// Features over a stream of events: what a pipeline file describes.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: PipelineConfig,
}

impl Pipeline {
    /// A pipeline from the text of a pipeline file; relative paths in it are relative to the
    /// current directory.
    pub fn from_toml(text: &str) -> Result<Pipeline, ConfigError> {
        Pipeline::parse(Path::new("pipeline.toml"), text)
    }

    /// A pipeline from the text of the pipeline file at `path` (named in errors; relative paths
    /// in it are relative to its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigError> {
        Ok(Pipeline {
            config: config::parse(path, text)?,
        })
    }

    /// Reads the pipeline file at `path`.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        Ok(Pipeline {
            config: config::load(path)?,
        })
    }

    /// Starts a pipeline in code.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// Everything the pipeline file said.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The features, grouped by key and register set.
    pub fn plan(&self) -> &Plan {
        &self.config.plan
    }

    /// The engine's job for `workers` threads (default: `[engine] workers`, else the cores).
    pub fn job(&self, workers: Option<usize>) -> Job {
        let c = &self.config;
        let workers = workers
            .or(c.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Job::new(c.plan.clone(), c.time_field.clone(), c.time_format, workers)
            .with_state(c.state.clone())
    }

    /// Runs the pipeline over JSONL records from `input` to the end: enriched events to
    /// `events`, rejected records to `dead_letters`, each in input order. Checkpoints and the
    /// `[source]`/`[sink]` sections are the command line's business and are not used here.
    pub fn run<'a>(
        &self,
        input: impl Read + Send + 'static,
        events: impl Write + Send + 'a,
        dead_letters: impl Write + Send + 'a,
    ) -> Result<Summary, sluice_engine::Error> {
        let mut source = StreamSource::new(Box::new(input), "input", self.config.format);
        let outputs = Outputs::writers(Box::new(events), Box::new(dead_letters));
        self.run_with(&mut source, outputs)
    }

    /// Runs the pipeline over any source (a file, a Kafka topic, your own [`Source`]) into
    /// any sinks, to the end of the source.
    pub fn run_with(
        &self,
        source: &mut dyn Source,
        outputs: Outputs<'_>,
    ) -> Result<Summary, sluice_engine::Error> {
        sluice_engine::run(&self.job(None), source, outputs, Arc::new(Stats::default()))
    }

    /// The engine that serves this pipeline one request at a time (state as configured).
    pub fn serve_engine(&self) -> Result<ServeEngine, sluice_engine::Error> {
        let c = &self.config;
        ServeEngine::new(
            c.plan.clone(),
            &c.time_field,
            c.time_format,
            &c.state,
            "http",
        )
    }

    /// An HTTP server for this pipeline with the settings `config` (see the pipeline's own in
    /// [`PipelineConfig::serve`]); rejected records also go to `dead_letters`.
    pub fn server(
        &self,
        config: &ServeConfig,
        dead_letters: Option<Box<dyn Write + Send>>,
    ) -> Result<Server, sluice_engine::Error> {
        let blocking = !matches!(self.config.state, StateConfig::Memory);
        Ok(Server::new(
            self.serve_engine()?,
            config,
            blocking,
            dead_letters,
        ))
    }
}

/// One feature, for [`PipelineBuilder::feature`].
#[derive(Debug, Clone)]
pub struct Feature {
    name: String,
    agg: Agg,
    of: Option<String>,
    by: Vec<String>,
    window: String,
    granularity: Option<String>,
    filter: Option<String>,
}

impl Feature {
    /// Feature `name`: `agg` over every event of its key in a window of `window` (`"1d"`,
    /// `"90s"`, ...). The key is given by [`Feature::by`]; without it, the feature is over the
    /// global key (every event).
    pub fn new(name: impl Into<String>, agg: Agg, window: impl Into<String>) -> Feature {
        Feature {
            name: name.into(),
            agg,
            of: None,
            by: Vec::new(),
            window: window.into(),
            granularity: None,
            filter: None,
        }
    }

    /// The aggregated field.
    pub fn of(mut self, field: impl Into<String>) -> Feature {
        self.of = Some(field.into());
        self
    }

    /// The key fields; none (the default) is the global key, which every event has.
    pub fn by<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Feature {
        self.by = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Buckets of this width instead of exact windows (see `docs/semantics.md`).
    pub fn granularity(mut self, width: impl Into<String>) -> Feature {
        self.granularity = Some(width.into());
        self
    }

    /// Adds to the feature's state only the events matching `condition` (a `where` filter,
    /// see `docs/expressions.md`); every event with the key still reads the value.
    pub fn filter(mut self, condition: impl Into<String>) -> Feature {
        self.filter = Some(condition.into());
        self
    }
}

/// A pipeline written in code; see [`Pipeline::builder`].
#[derive(Debug, Clone, Default)]
pub struct PipelineBuilder {
    time_field: Option<String>,
    time_format: TimeFormat,
    lateness: Option<String>,
    state: StateConfig,
    workers: Option<usize>,
    features: Vec<Feature>,
    /// Derived features: `(name, expression, position among all features)`.
    derived: Vec<(String, String, usize)>,
}

/// A pipeline written in code that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feature `{feature}`: {message}")]
pub struct BuildError {
    /// The feature at fault (empty for the pipeline's own settings).
    pub feature: String,
    /// What is wrong.
    pub message: String,
}

impl PipelineBuilder {
    /// The field holding the event time (default `ts`) and how it is written.
    pub fn time(mut self, field: impl Into<String>, format: TimeFormat) -> Self {
        self.time_field = Some(field.into());
        self.time_format = format;
        self
    }

    /// How far behind the newest event an event may be (default 5m).
    pub fn lateness(mut self, lateness: impl Into<String>) -> Self {
        self.lateness = Some(lateness.into());
        self
    }

    /// Where state lives (default memory).
    pub fn state(mut self, state: StateConfig) -> Self {
        self.state = state;
        self
    }

    /// Worker threads (default the number of cores).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Adds a feature.
    pub fn feature(mut self, feature: Feature) -> Self {
        self.features.push(feature);
        self
    }

    /// Adds a derived feature: `expression` over the event's fields and the other features
    /// (see `docs/semantics.md`, "Derived features").
    pub fn derived(mut self, name: impl Into<String>, expression: impl Into<String>) -> Self {
        let position = self.features.len() + self.derived.len();
        self.derived
            .push((name.into(), expression.into(), position));
        self
    }

    /// The pipeline, once every feature is valid.
    pub fn build(self) -> Result<Pipeline, BuildError> {
        let error = |feature: &str, message: String| BuildError {
            feature: feature.to_owned(),
            message,
        };
        let duration = |feature: &str, what: &str, text: &str| {
            parse_duration(text).map_err(|e| error(feature, format!("{what} `{text}`: {e}")))
        };
        let lateness_ms = duration(
            "",
            "lateness",
            self.lateness.as_deref().unwrap_or(config::DEFAULT_LATENESS),
        )?;
        let mut specs = Vec::with_capacity(self.features.len());
        for f in &self.features {
            specs.push(FeatureSpec {
                name: f.name.clone(),
                agg: f.agg,
                of: f.of.clone(),
                by: f.by.clone(),
                window_ms: duration(&f.name, "window", &f.window)?,
                granularity_ms: match &f.granularity {
                    Some(g) => duration(&f.name, "granularity", g)?,
                    None => 1,
                },
                filter: f.filter.clone(),
            });
        }
        let derived = self
            .derived
            .into_iter()
            .map(|(name, expr, position)| DerivedSpec {
                name,
                expr,
                position,
            })
            .collect();
        let plan = Plan::new(specs, lateness_ms)
            .and_then(|plan| plan.with_derived(derived))
            .map_err(|e| error(&e.name, e.to_string()))?;
        let mut config = PipelineConfig::for_plan(plan);
        if let Some(field) = self.time_field {
            config.time_field = field;
        }
        config.time_format = self.time_format;
        config.state = self.state;
        config.workers = self.workers;
        Ok(Pipeline { config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline in code with a filter and a derived feature equals its TOML form, event for
    /// event.
    #[test]
    fn filters_and_derived_features_in_code_equal_their_toml_form() {
        let in_code = Pipeline::builder()
            .derived("share", "amount / spent_1h")
            .feature(
                Feature::new("spent_1h", Agg::Sum, "1h")
                    .of("amount")
                    .by(["user.id"])
                    .filter("kind == 'buy'"),
            )
            .build()
            .expect("valid");
        let from_toml = Pipeline::from_toml(
            r#"
            [[feature]]
            name = "share"
            expr = "amount / spent_1h"

            [[feature]]
            name = "spent_1h"
            agg = "sum"
            of = "amount"
            by = "user.id"
            window = "1h"
            where = 'kind == "buy"'
            "#,
        )
        .expect("valid");
        let input = concat!(
            r#"{"user":{"id":"u1"},"kind":"buy","amount":30,"ts":1000}"#,
            "\n",
            r#"{"user":{"id":"u1"},"kind":"refund","amount":10,"ts":2000}"#,
            "\n",
            r#"{"user":{"id":"u1"},"kind":"buy","amount":10,"ts":3000}"#,
            "\n",
        );
        let run = |p: &Pipeline| {
            let (mut out, mut dead) = (Vec::new(), Vec::new());
            p.run(input.as_bytes(), &mut out, &mut dead).expect("runs");
            assert!(dead.is_empty());
            String::from_utf8(out).expect("utf8")
        };
        let out = run(&in_code);
        assert_eq!(out, run(&from_toml));
        let features: Vec<&str> = out
            .lines()
            .map(|l| &l[l.find("\"features\"").expect("features")..])
            .collect();
        assert_eq!(
            features,
            [
                r#""features":{"share":1,"spent_1h":30}}"#,
                r#""features":{"share":0.333333333333333,"spent_1h":30}}"#,
                r#""features":{"share":0.25,"spent_1h":40}}"#,
            ]
        );
    }
}
