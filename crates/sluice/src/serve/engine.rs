//! The engine thread of `sluice serve`: the only owner of state. Requests reach it through a
//! bounded queue; whatever has queued up while it worked is processed as one batch (group
//! commit), in arrival order, and each request gets its own reply.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use sluice_core::FeatureValue;
use sluice_engine::format::{escape_json_str, write_computed, write_exact};
use sluice_engine::serve::{KeyFeatures, KeyValue, QueryError, ServeEngine, Written};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;

/// Most requests merged into one batch.
const MAX_JOBS: usize = 256;

/// Most bytes of records merged into one batch.
const MAX_BYTES: usize = 4 << 20;

/// A request for the engine.
pub enum Job {
    /// Records to enrich and add: one per line.
    Events {
        /// The records, each ending with `\n`.
        lines: Vec<u8>,
        /// How many.
        records: usize,
        /// Whether the request was a JSON array (the reply is then an array).
        array: bool,
        /// Where the reply goes.
        reply: oneshot::Sender<Reply>,
    },
    /// A feature query.
    Query {
        /// The key fields given.
        given: Vec<(String, KeyValue)>,
        /// The time the windows end at, if given.
        at: Option<i64>,
        /// Where the reply goes.
        reply: oneshot::Sender<Reply>,
    },
}

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

/// Starts the engine thread. It stops once every sender of `rx` is gone and the queue is
/// empty, after flushing the dead letters.
pub fn spawn(
    mut engine: ServeEngine,
    mut rx: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
    mut dead_letters: Option<Box<dyn Write + Send>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-engine".into())
        .spawn(move || {
            let mut pending: Option<Job> = None;
            loop {
                let first = match pending.take() {
                    Some(job) => job,
                    None => match rx.blocking_recv() {
                        Some(job) => job,
                        None => break,
                    },
                };
                match first {
                    Job::Query { given, at, reply } => {
                        let _ = reply.send(query(&mut engine, &given, at));
                    }
                    Job::Events {
                        lines,
                        records,
                        array,
                        reply,
                    } => {
                        // Group commit: take every event request already waiting.
                        let mut batch = vec![(records, array, reply)];
                        let mut all = lines;
                        while batch.len() < MAX_JOBS && all.len() < MAX_BYTES {
                            match rx.try_recv() {
                                Ok(Job::Events {
                                    lines,
                                    records,
                                    array,
                                    reply,
                                }) => {
                                    all.extend_from_slice(&lines);
                                    batch.push((records, array, reply));
                                }
                                Ok(query) => {
                                    pending = Some(query);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        process(&mut engine, all, batch, &metrics, &mut dead_letters);
                    }
                }
                metrics.keys.store(engine.live_keys() as u64, Relaxed);
            }
            if let Some(d) = dead_letters.as_mut() {
                if let Err(e) = d.flush() {
                    tracing::error!("cannot write the dead letters: {e}");
                }
            }
        })
}

/// Processes one batch of event requests and answers each.
fn process(
    engine: &mut ServeEngine,
    lines: Vec<u8>,
    batch: Vec<(usize, bool, oneshot::Sender<Reply>)>,
    metrics: &Metrics,
    dead_letters: &mut Option<Box<dyn Write + Send>>,
) {
    let expected: usize = batch.iter().map(|(n, _, _)| n).sum();
    let processed = match engine.process(lines) {
        Ok(p) if p.outcomes.len() == expected => p,
        Ok(p) => {
            let message = format!(
                "{} records in, {} results out: a bug; please report it",
                expected,
                p.outcomes.len()
            );
            tracing::error!("{message}");
            for (_, _, reply) in batch {
                let _ = reply.send(Reply::error(500, "internal", &message));
            }
            return;
        }
        Err(e) => {
            // The state backend failed (a remote store down, a disk error): nothing of this
            // batch is acknowledged, and the server goes on.
            let message = format!("the state backend failed: {e}");
            tracing::error!("{message}");
            for (_, _, reply) in batch {
                let _ = reply.send(Reply::error(503, "unavailable", &message));
            }
            return;
        }
    };
    metrics.batches.fetch_add(1, Relaxed);
    if !processed.dead.is_empty() {
        if let Some(d) = dead_letters.as_mut() {
            if let Err(e) = d.write_all(&processed.dead).and_then(|()| d.flush()) {
                tracing::error!("cannot write the dead letters: {e}");
            }
        }
    }
    let line = |w: &Written| -> (&[u8], bool) {
        let (bytes, r, ok) = match w {
            Written::Event(r) => (&processed.events, r, true),
            Written::Dead(r) => (&processed.dead, r, false),
        };
        let text = &bytes[r.clone()];
        (text.strip_suffix(b"\n").unwrap_or(text), ok)
    };
    let (mut events, mut dead, mut late) = (0u64, 0u64, 0u64);
    let mut outcomes = processed.outcomes.iter();
    for (records, array, reply) in batch {
        let mut body = Vec::new();
        let mut status = 200;
        if array {
            body.push(b'[');
        }
        for i in 0..records {
            let Some(w) = outcomes.next() else { break };
            let (text, ok) = line(w);
            if ok {
                events += 1;
            } else {
                dead += 1;
                late += u64::from(text.starts_with(b"{\"reason\":\"late\""));
                if !array {
                    status = 400;
                }
            }
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(text);
        }
        if array {
            body.push(b']');
        }
        let _ = reply.send(Reply { status, body });
    }
    metrics.events.fetch_add(events, Relaxed);
    metrics.dead_letters.fetch_add(dead, Relaxed);
    metrics.late.fetch_add(late, Relaxed);
}

/// Answers a feature query.
fn query(engine: &mut ServeEngine, given: &[(String, KeyValue)], at: Option<i64>) -> Reply {
    match engine.query(given, at) {
        Err(e) => Reply::error(503, "unavailable", &format!("the state backend failed: {e}")),
        Ok(Err(QueryError::NoKey { valid })) => {
            let lists: Vec<String> = valid.iter().map(|by| by.join(" and ")).collect();
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
