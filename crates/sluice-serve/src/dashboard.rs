//! The web dashboard of `sluice serve`: one self-contained page at `GET /` (HTML, CSS and
//! JavaScript embedded in the binary, nothing fetched from elsewhere) and the JSON it reads:
//! `GET /v1/dashboard` (traffic, latency, dead letters, state, cluster) and
//! `GET /v1/dashboard/pipeline` (the features as `sluice check` groups them). A key lookup on
//! the page uses `GET /v1/features`.
//!
//! Traffic over the last minutes comes from a sampler that records the counters once a second
//! ([`History`]); latency percentiles come from log-spaced buckets recorded with each request
//! ([`LatencyBuckets`]), over the last minute.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metrics::Metrics;

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// Samples kept: one a second for ten minutes.
const SAMPLES: usize = 600;

/// Seconds over which latency percentiles are computed.
const LATENCY_WINDOW_S: usize = 60;

/// Number of latency buckets: the upper bound of bucket `i` is `10 µs × 1.25^i` (10 µs to
/// about 11 minutes); the last one takes everything above.
const BUCKETS: usize = 80;

/// Request latencies of the API routes (events and features), counted in log-spaced buckets.
#[derive(Debug)]
pub struct LatencyBuckets {
    counts: [AtomicU64; BUCKETS],
}

impl Default for LatencyBuckets {
    fn default() -> Self {
        LatencyBuckets {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The upper bound of bucket `i`, in microseconds.
fn bucket_bound_us(i: usize) -> f64 {
    10.0 * 1.25f64.powi(i as i32)
}

impl LatencyBuckets {
    /// Counts one request that took `took`.
    pub fn record(&self, took: Duration) {
        let us = took.as_secs_f64() * 1e6;
        let i = if us <= 10.0 {
            0
        } else {
            ((us / 10.0).ln() / 1.25f64.ln()).ceil() as usize
        };
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// The percentile `q` (0 to 1) of the requests counted in `counts`, in milliseconds: the
/// upper bound of the bucket that holds it. `None` without requests.
fn percentile_ms(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_bound_us(i) / 1000.0);
        }
    }
    Some(bucket_bound_us(BUCKETS - 1) / 1000.0)
}

/// One sample of the counters.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    events: u64,
    requests: u64,
    latency: [u64; BUCKETS],
}

/// The counters sampled once a second, for the last ten minutes.
#[derive(Debug)]
pub struct History {
    started: Instant,
    samples: Mutex<VecDeque<Sample>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            started: Instant::now(),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl History {
    /// Records the counters now.
    pub fn sample(&self, metrics: &Metrics) {
        let sample = Sample {
            at_ms: now_ms(),
            events: metrics.events.get(),
            requests: metrics.api_requests(),
            latency: metrics.recent_latency.snapshot(),
        };
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples once a second until the server stops (run as a task).
    pub async fn run(history: std::sync::Arc<History>, metrics: std::sync::Arc<Metrics>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            history.sample(&metrics);
        }
    }
}

/// A point of the traffic chart: rates over the second before `t_ms`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Rate {
    /// The end of the second, in epoch milliseconds.
    pub t_ms: u64,
    /// Events enriched per second.
    pub events_per_s: f64,
    /// API requests (events and features) per second.
    pub requests_per_s: f64,
}

/// Latency percentiles of the API routes over the last minute, in milliseconds (bucket upper
/// bounds: at most 25% above the true value).
#[derive(Debug, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Requests counted.
    pub requests: u64,
    /// Over how many seconds.
    pub window_s: u64,
}

impl History {
    /// The rates between consecutive samples, oldest first.
    pub fn rates(&self) -> Vec<Rate> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let s = (b.at_ms.saturating_sub(a.at_ms)).max(1) as f64 / 1000.0;
                Rate {
                    t_ms: b.at_ms,
                    events_per_s: b.events.saturating_sub(a.events) as f64 / s,
                    requests_per_s: b.requests.saturating_sub(a.requests) as f64 / s,
                }
            })
            .collect()
    }

    /// Latency over the last minute: the requests since the sample of a minute ago (or the
    /// oldest), up to `now` (the buckets as they are).
    pub fn latency(&self, now: &LatencyBuckets) -> Latency {
        let now = now.snapshot();
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let from = samples
            .len()
            .checked_sub(LATENCY_WINDOW_S + 1)
            .and_then(|i| samples.get(i))
            .or(samples.front());
        let (window, counts) = match from {
            Some(s) => {
                let window = (now_ms().saturating_sub(s.at_ms) / 1000).max(1);
                let counts: [u64; BUCKETS] =
                    std::array::from_fn(|i| now[i].saturating_sub(s.latency[i]));
                (window, counts)
            }
            None => (self.started.elapsed().as_secs().max(1), now),
        };
        Latency {
            p50_ms: percentile_ms(&counts, 0.5),
            p99_ms: percentile_ms(&counts, 0.99),
            requests: counts.iter().sum(),
            window_s: window,
        }
    }

    /// Seconds since the server started.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// What the dashboard says about the pipeline and the state, given by whoever starts the
/// server.
#[derive(Debug, Clone, Default)]
pub struct DashboardInfo {
    /// The pipeline as JSON (features grouped by key and register set, with definitions).
    pub pipeline: serde_json::Value,
    /// The state backend's name (`memory`, `embedded`, `redis`).
    pub backend: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_bounds_within_a_quarter() {
        let b = LatencyBuckets::default();
        for us in 1..=1000u64 {
            b.record(Duration::from_micros(us * 10));
        }
        let counts = b.snapshot();
        let p50 = percentile_ms(&counts, 0.5).expect("requests");
        let p99 = percentile_ms(&counts, 0.99).expect("requests");
        // True values: 5 ms and 9.9 ms.
        assert!((5.0..=6.25).contains(&p50), "{p50}");
        assert!((9.9..=12.4).contains(&p99), "{p99}");
        assert_eq!(percentile_ms(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let h = History::default();
        let mut samples = h.samples.lock().expect("lock");
        for (i, (events, requests)) in [(0, 0), (10, 2), (40, 5)].into_iter().enumerate() {
            samples.push_back(Sample {
                at_ms: 1_000 * (i as u64 + 1),
                events,
                requests,
                latency: [0; BUCKETS],
            });
        }
        drop(samples);
        let rates = h.rates();
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[1].events_per_s, 30.0);
        assert_eq!(rates[1].requests_per_s, 3.0);
        assert_eq!(rates[1].t_ms, 3_000);
    }
}
