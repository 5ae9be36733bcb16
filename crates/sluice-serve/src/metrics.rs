//! Counters of `sluice serve`, rendered in the Prometheus text format (version 0.0.4) at
//! `GET /metrics`. Plain atomics: a request costs a few relaxed increments, no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The routes requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/events`.
    Events,
    /// `GET /v1/features`.
    Features,
    /// Everything else (health, metrics, unknown paths).
    Other,
}

const ROUTES: [(Route, &str); 3] = [
    (Route::Events, "events"),
    (Route::Features, "features"),
    (Route::Other, "other"),
];

/// The status codes counted one by one; anything else is counted as `other`.
const CODES: [u16; 9] = [200, 400, 401, 404, 405, 413, 429, 500, 503];

/// Upper bounds of the latency histogram's buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// A latency histogram with cumulative rendering.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events enriched and added to state.
    pub events: AtomicU64,
    /// Records rejected (dead letters).
    pub dead_letters: AtomicU64,
    /// Of which late.
    pub late: AtomicU64,
    /// Keys in state, as of the engine's last batch.
    pub keys: AtomicU64,
    /// Requests in progress (holding a permit), as of the last `/metrics` request.
    pub queued: AtomicU64,
    /// Requests allowed in progress at once (`[serve] queue`).
    pub queue_capacity: AtomicU64,
    /// Requests with records the engine processed.
    pub batches: AtomicU64,
    requests: [[AtomicU64; CODES.len() + 1]; ROUTES.len()],
    latency: [Histogram; ROUTES.len()],
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, route: Route, status: u16, took: Duration) {
        let r = ROUTES.iter().position(|(x, _)| *x == route).unwrap_or(2);
        let c = CODES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(CODES.len());
        self.requests[r][c].fetch_add(1, Relaxed);
        self.latency[r].observe(took);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        };
        counter(
            "sluice_events_total",
            "Events enriched and added to state.",
            &self.events,
        );
        counter(
            "sluice_dead_letters_total",
            "Records rejected, with a dead letter.",
            &self.dead_letters,
        );
        counter("sluice_late_total", "Records rejected as late.", &self.late);
        counter(
            "sluice_engine_batches_total",
            "Requests with records the engine processed.",
            &self.batches,
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "sluice_keys",
            "Keys held in state.",
            self.keys.load(Relaxed),
        );
        gauge(
            "sluice_queue_depth",
            "Requests in progress.",
            self.queued.load(Relaxed),
        );
        gauge(
            "sluice_queue_capacity",
            "Requests allowed in progress at once before new ones get 503.",
            self.queue_capacity.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP sluice_http_requests_total HTTP requests by route and status.\n# TYPE sluice_http_requests_total counter"
        );
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            for (c, n) in self.requests[r].iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let code = CODES.get(c).map_or("other".to_owned(), u16::to_string);
                    let _ = writeln!(
                        out,
                        "sluice_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP sluice_http_request_duration_seconds Time from a request's arrival to its response.\n# TYPE sluice_http_request_duration_seconds histogram"
        );
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            let h = &self.latency[r];
            let mut cumulative = 0;
            for (i, &bound) in BUCKETS_US.iter().enumerate() {
                cumulative += h.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "sluice_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{}\"}} {cumulative}",
                    bound as f64 / 1e6
                );
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(
                out,
                "sluice_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "sluice_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "sluice_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.events.fetch_add(3, Relaxed);
        m.request(Route::Events, 200, Duration::from_micros(80));
        m.request(Route::Events, 200, Duration::from_micros(700));
        m.request(Route::Events, 400, Duration::from_micros(30));
        let text = m.render();
        assert!(text.contains("sluice_events_total 3\n"), "{text}");
        assert!(text.contains("sluice_http_requests_total{route=\"events\",code=\"200\"} 2\n"));
        assert!(text.contains("sluice_http_requests_total{route=\"events\",code=\"400\"} 1\n"));
        assert!(text.contains(
            "sluice_http_request_duration_seconds_bucket{route=\"events\",le=\"0.0001\"} 2\n"
        ));
        assert!(text.contains(
            "sluice_http_request_duration_seconds_bucket{route=\"events\",le=\"0.001\"} 3\n"
        ));
        assert!(text.contains("sluice_http_request_duration_seconds_count{route=\"events\"} 3\n"));
    }
}
