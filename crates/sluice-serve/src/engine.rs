//! The engine of `sluice serve`, the only owner of state, behind a mutex: a request handler
//! takes it, processes its records or query, and lets go (a few microseconds for one event).
//! Processing in the handler's own thread, rather than handing each request to an engine
//! thread and back, saves two thread wake-ups per request, which on a busy machine cost more
//! than the work itself. How many requests may wait for it is bounded (see `http.rs`).

use std::io::Write;

use sluice_core::FeatureValue;
use sluice_engine::codec::{escape_json_str, write_canonical, write_computed, write_exact};
use sluice_engine::serve::{KeyFeatures, KeyValue, Processed, QueryError, ServeEngine, Written};

use crate::metrics::Metrics;

/// An HTTP status and a JSON body.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body (JSON).
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON error: `{"reason": ..., "error": ...}`.
    pub fn error(status: u16, reason: &str, message: &str) -> Reply {
        let mut body = Vec::with_capacity(64 + message.len());
        body.extend_from_slice(b"{\"reason\":");
        escape_json_str(&mut body, reason);
        body.extend_from_slice(b",\"error\":");
        escape_json_str(&mut body, message);
        body.push(b'}');
        Reply { status, body }
    }
}

/// The engine and where its dead letters go.
pub struct Core {
    /// The engine.
    pub engine: ServeEngine,
    /// The dead-letter file, if any.
    pub dead_letters: Option<Box<dyn Write + Send>>,
}

impl Core {
    /// Enriches and adds `records` records (one per line of `lines`) and answers: the enriched
    /// event or its dead letter (400) for a single record, an array of them (200) for an
    /// array request.
    pub fn events(
        &mut self,
        lines: Vec<u8>,
        records: usize,
        array: bool,
        metrics: &Metrics,
    ) -> Reply {
        let request = Records {
            lines,
            records,
            array,
        };
        self.events_of(vec![request], metrics)
            .pop()
            .unwrap_or_else(|| Reply::error(500, "internal", "no answer"))
    }

    /// Enriches and adds the records of several requests as one batch, in order, and answers
    /// each (see [`Core::events`]).
    pub fn events_of(&mut self, requests: Vec<Records>, metrics: &Metrics) -> Vec<Reply> {
        let replies = process(&mut self.engine, requests, metrics, &mut self.dead_letters);
        metrics.keys.set(self.engine.live_keys() as u64);
        if let Some(t) = self.engine.traffic() {
            metrics.set_traffic(&t);
        }
        replies
    }

    /// Answers a feature query.
    pub fn query(&mut self, given: &[(String, KeyValue)], at: Option<i64>) -> Reply {
        query(&mut self.engine, given, at)
    }

    /// Flushes the dead letters.
    pub fn flush(&mut self) {
        if let Some(d) = self.dead_letters.as_mut() {
            if let Err(e) = d.flush() {
                tracing::error!("cannot write the dead letters: {e}");
            }
        }
    }
}

/// One request's records: JSONL, how many, and whether the client sent an array.
#[derive(Debug)]
pub struct Records {
    /// One record per line.
    pub lines: Vec<u8>,
    /// The number of records.
    pub records: usize,
    /// Whether the answer is an array.
    pub array: bool,
}

/// Processes the records of several requests as one batch of the engine (one flush to a
/// remote state: one pipelined round trip per node for all of them) and answers each.
fn process(
    engine: &mut ServeEngine,
    requests: Vec<Records>,
    metrics: &Metrics,
    dead_letters: &mut Option<Box<dyn Write + Send>>,
) -> Vec<Reply> {
    let records: usize = requests.iter().map(|r| r.records).sum();
    let mut lines = Vec::with_capacity(requests.iter().map(|r| r.lines.len() + 1).sum());
    for r in &requests {
        lines.extend_from_slice(&r.lines);
        if lines.last().is_some_and(|&b| b != b'\n') {
            lines.push(b'\n');
        }
    }
    let all = |reply: Reply| {
        requests
            .iter()
            .map(|_| Reply {
                status: reply.status,
                body: reply.body.clone(),
            })
            .collect()
    };
    let processed = match engine.process(lines) {
        Ok(p) if p.outcomes.len() == records => p,
        Ok(p) => {
            let message = format!(
                "{records} records in, {} results out: a bug; please report it",
                p.outcomes.len()
            );
            tracing::error!("{message}");
            return all(Reply::error(500, "internal", &message));
        }
        Err(e) => {
            // The state backend failed (a remote store down, a disk error): nothing of these
            // requests is acknowledged, and the server goes on.
            let message = format!("the state backend failed: {e}");
            tracing::error!("{message}");
            return all(Reply::error(503, "unavailable", &message));
        }
    };
    metrics.batches.inc();
    metrics.hub_nulls.inc_by(processed.hub_nulls);
    if !processed.dead.is_empty() {
        if let Some(d) = dead_letters.as_mut() {
            if let Err(e) = d.write_all(&processed.dead).and_then(|()| d.flush()) {
                tracing::error!("cannot write the dead letters: {e}");
            }
        }
    }
    let mut outcomes = processed.outcomes.iter();
    requests
        .iter()
        .map(|r| {
            answer(
                &processed,
                outcomes.by_ref().take(r.records),
                r.array,
                metrics,
            )
        })
        .collect()
}

/// The answer to one request from its records' `outcomes` in `processed`.
fn answer<'a>(
    processed: &Processed,
    outcomes: impl Iterator<Item = &'a Written>,
    array: bool,
    metrics: &Metrics,
) -> Reply {
    let (mut events, mut dead, mut late) = (0u64, 0u64, 0u64);
    let mut body = Vec::new();
    let mut status = 200;
    if array {
        body.push(b'[');
    }
    for (i, w) in outcomes.enumerate() {
        let (bytes, r) = match w {
            Written::Event(r) => {
                events += 1;
                (&processed.events, r)
            }
            Written::Dead(r) => {
                dead += 1;
                if !array {
                    status = 400;
                }
                (&processed.dead, r)
            }
        };
        let text = &bytes[r.clone()];
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        // Dead letters start with their reason (see `write_dead_letter`).
        if matches!(w, Written::Dead(_)) {
            late += u64::from(text.starts_with(b"{\"reason\":\"late\""));
            metrics.dead_letter(text);
        }
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(text);
    }
    if array {
        body.push(b']');
    }
    metrics.events.inc_by(events);
    metrics.dead_letters.inc_by(dead);
    metrics.late.inc_by(late);
    Reply { status, body }
}

/// Answers a feature query.
fn query(engine: &mut ServeEngine, given: &[(String, KeyValue)], at: Option<i64>) -> Reply {
    match engine.query(given, at) {
        Err(e) => Reply::error(503, "unavailable", &format!("the state backend failed: {e}")),
        Ok(Err(QueryError::NoKey { valid })) => {
            let lists: Vec<String> = valid
                .iter()
                .map(|by| match by.is_empty() {
                    true => "none (the global key: a query without key fields)".to_owned(),
                    false => by.join(" and "),
                })
                .collect();
            Reply::error(
                400,
                "no_key",
                &format!(
                    "no feature has all its `by` fields among the query parameters; give every field of one of: {}",
                    lists.join("; ")
                ),
            )
        }
        Ok(Err(QueryError::TooOld { oldest })) => Reply::error(
            400,
            "too_old",
            &format!(
                "`at` is older than {oldest}, the newest event time minus the lateness: state before that is not kept"
            ),
        ),
        Ok(Ok(keys)) => Reply {
            status: 200,
            body: render(given, &keys),
        },
    }
}

/// `{"keys":[{"by":{...},"at":...,"features":{...}}]}`.
fn render(given: &[(String, KeyValue)], keys: &[KeyFeatures]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"keys\":[");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"by\":{");
        for (j, field) in k.by.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            escape_json_str(&mut out, field);
            out.push(b':');
            match given.iter().find(|(name, _)| name == field).map(|(_, v)| v) {
                Some(KeyValue::Str(s)) => escape_json_str(&mut out, s),
                Some(KeyValue::Num(n)) => write_exact(&mut out, *n),
                Some(KeyValue::Bool(b)) => {
                    out.extend_from_slice(if *b { b"true" } else { b"false" })
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"},\"at\":");
        match k.at {
            Some(at) => out.extend_from_slice(itoa::Buffer::new().format(at).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"features\":{");
        for (j, (name, v)) in k.features.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            escape_json_str(&mut out, name);
            out.push(b':');
            match *v {
                FeatureValue::Int(n) => {
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes())
                }
                FeatureValue::Num(x) => write_computed(&mut out, x),
                FeatureValue::Exact(x) => write_exact(&mut out, x),
                FeatureValue::Text { start, len } => {
                    let (start, len) = (start as usize, len as usize);
                    write_canonical(&mut out, k.text.get(start..start + len).unwrap_or_default())
                }
                FeatureValue::Null | FeatureValue::Own | FeatureValue::Beyond => {
                    out.extend_from_slice(b"null")
                }
            }
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]}");
    out
}
