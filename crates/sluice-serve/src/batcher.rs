//! Group commit for a remote state (Redis, the embedded store): requests do not take the
//! engine in turn, each waiting for its own round trips; they queue, and one engine thread
//! takes everything queued as one batch of the engine — one flush, one pipelined round trip
//! per node for all of them — and answers each. While a batch waits for Redis, the next one
//! gathers, so the busier the server, the more requests share a round trip.
//!
//! `[serve] batch_wait` makes the thread gather for that long after the first request of a
//! batch: more requests per round trip, each waiting up to that long more.
//!
//! Requests keep their order: the records of the requests of one batch are processed in the
//! order the requests were queued, and a feature query waits for the records queued before
//! it.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::serve::KeyValue;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::engine::{Core, Records, Reply};
use crate::metrics::Metrics;

/// Most requests in one batch (a bound on a batch's size and latency).
const MAX_REQUESTS: usize = 1024;

/// What a request asks of the engine, with the request's permit (`[serve] queue`): a job
/// outlives a client that hangs up, and must still count until it is done.
enum Job {
    Events(Records, oneshot::Sender<Reply>, Permit),
    Query(
        Vec<(String, KeyValue)>,
        Option<i64>,
        oneshot::Sender<Reply>,
        Permit,
    ),
}

/// A request's place in `[serve] queue`, if it holds one.
type Permit = Option<OwnedSemaphorePermit>;

/// The queue in front of the engine thread.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Events(..) => "Events",
            Job::Query(..) => "Query",
        })
    }
}

impl Batcher {
    /// Starts the engine thread over `core`; it ends when every [`Batcher`] is dropped.
    /// `wait`: how long it gathers requests after the first one before taking them.
    pub fn start(
        core: Arc<tokio::sync::Mutex<Core>>,
        metrics: Arc<Metrics>,
        wait: Duration,
    ) -> Batcher {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sluice-engine".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let until = Instant::now() + wait;
                    while jobs.len() < MAX_REQUESTS {
                        let Some(left) = until.checked_duration_since(Instant::now()) else {
                            break;
                        };
                        match rx.recv_timeout(left) {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    while jobs.len() < MAX_REQUESTS {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let mut core = core.blocking_lock();
                    run(&mut core, jobs, &metrics);
                }
            })
            .expect("cannot start the engine thread");
        Batcher { jobs: tx }
    }

    /// Queues a request's records; resolves to its answer.
    pub async fn events(&self, records: Records, permit: Permit) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Events(records, tx, permit), rx).await
    }

    /// Queues a feature query; resolves to its answer.
    pub async fn query(
        &self,
        given: Vec<(String, KeyValue)>,
        at: Option<i64>,
        permit: Permit,
    ) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Query(given, at, tx, permit), rx).await
    }

    async fn send(&self, job: Job, rx: oneshot::Receiver<Reply>) -> Reply {
        if self.jobs.send(job).is_err() {
            return Reply::error(500, "internal", "the engine thread stopped");
        }
        rx.await
            .unwrap_or_else(|_| Reply::error(500, "internal", "the engine failed (a panic)"))
    }
}

/// Runs one batch of jobs in order: each run of record requests as one engine batch, each
/// query on its own.
fn run(core: &mut Core, jobs: Vec<Job>, metrics: &Metrics) {
    let mut records = Vec::new();
    let mut waiting = Vec::new();
    let flush = |core: &mut Core,
                 records: &mut Vec<Records>,
                 waiting: &mut Vec<(oneshot::Sender<Reply>, Permit)>| {
        if records.is_empty() {
            return;
        }
        let replies = core.events_of(std::mem::take(records), metrics);
        for ((tx, _permit), reply) in waiting.drain(..).zip(replies) {
            // A client that hung up no longer waits: its records were added all the same.
            let _ = tx.send(reply);
        }
    };
    for job in jobs {
        match job {
            Job::Events(r, tx, permit) => {
                records.push(r);
                waiting.push((tx, permit));
            }
            Job::Query(given, at, tx, _permit) => {
                flush(core, &mut records, &mut waiting);
                let _ = tx.send(core.query(&given, at));
            }
        }
    }
    flush(core, &mut records, &mut waiting);
}
