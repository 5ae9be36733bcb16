//! Metrics of `sluice serve`, kept with the `prometheus-client` crate and rendered in the
//! Prometheus text format (version 0.0.4) at `GET /metrics`.
//!
//! They live in a [`Registry`] behind a [`SharedRegistry`], so that another component (the
//! `sluice run` loop, say) can register its own metrics next to them and one `/metrics`
//! answers for both. A request costs a few relaxed atomic increments and one short histogram
//! lock; the registry's lock is only taken to register and to render.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::dashboard::LatencyBuckets;

/// A metrics registry several components can register into and one `/metrics` renders.
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// The `Content-Type` of [`render`]'s text: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

impl Route {
    /// Every route, in the order of [`Metrics`]' histograms.
    const ALL: [Route; 3] = [Route::Events, Route::Features, Route::Other];

    /// The value of the `route` label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Events => "events",
            Route::Features => "features",
            Route::Other => "other",
        }
    }
}

/// The value of the `code` label: the status codes counted one by one, anything else `other`
/// (so that the number of series stays bounded).
fn code_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// Upper bounds of the latency histogram's buckets, in seconds (50 µs to 5 s).
const BUCKETS_S: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// The reasons of dead letters (`Rejection::reason`); any other is counted as `other`.
const REASONS: [&str; 7] = [
    "malformed",
    "missing_time",
    "bad_time",
    "wrong_type",
    "reserved_field",
    "invalid_utf8",
    "late",
];

/// Labels of `sluice_dead_letters_by_reason_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Labels of `sluice_http_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    code: &'static str,
}

/// Labels of `sluice_http_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// A gauge of counts.
pub type CountGauge = Gauge<u64, AtomicU64>;

/// Everything the server reports. Each field is a handle on a metric registered in a
/// [`Registry`] by [`Metrics::register`].
#[derive(Debug)]
pub struct Metrics {
    /// `sluice_events_total`: events enriched and added to state.
    pub events: Counter,
    /// `sluice_dead_letters_total`: records rejected (dead letters).
    pub dead_letters: Counter,
    /// `sluice_late_total`: of which late.
    pub late: Counter,
    /// `sluice_engine_batches_total`: requests with records the engine processed.
    pub batches: Counter,
    /// `sluice_relation_hub_nulls_total`: relation feature values left null because a hub
    /// exceeded `link_limit`.
    pub hub_nulls: Counter,
    /// `sluice_keys`: keys in state, as of the engine's last batch.
    pub keys: CountGauge,
    /// With Redis state, as of the engine's last batch: `sluice_redis_round_trips` (flushes,
    /// each one round trip), `sluice_redis_commands`, `sluice_redis_conflicts`,
    /// `sluice_redis_cache_hits` and `sluice_redis_cache_misses` (keys of a flush found in
    /// the cache, or read first).
    pub redis: [CountGauge; 5],
    /// `sluice_queue_depth`: requests in progress (holding a permit), as of the last
    /// `/metrics` request.
    pub queued: CountGauge,
    /// `sluice_queue_capacity`: requests allowed in progress at once (`[serve] queue`).
    pub queue_capacity: CountGauge,
    /// `sluice_dead_letters_by_reason_total{reason}`: dead letters by their reason.
    by_reason: Family<ReasonLabels, Counter>,
    /// Latencies of the API routes (events, features) for the dashboard's percentiles.
    pub recent_latency: LatencyBuckets,
    /// API requests (events, features) finished.
    api_requests: AtomicU64,
    /// `sluice_http_requests_total{route,code}`.
    requests: Family<RequestLabels, Counter>,
    /// `sluice_http_request_duration_seconds{route}`, one histogram per [`Route::ALL`].
    latency: [Histogram; 3],
}

impl Metrics {
    /// Creates the server's metrics and registers them in `registry`, under their full names
    /// (`sluice_...`).
    pub fn register(registry: &mut Registry) -> Metrics {
        let latency_family = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(BUCKETS_S.iter().copied())
        });
        // Every route's histogram is shown from the start, even before its first request.
        let latency = Route::ALL.map(|route| {
            latency_family
                .get_or_create(&RouteLabels {
                    route: route.label(),
                })
                .clone()
        });
        let metrics = Metrics {
            events: Counter::default(),
            dead_letters: Counter::default(),
            late: Counter::default(),
            batches: Counter::default(),
            hub_nulls: Counter::default(),
            keys: CountGauge::default(),
            redis: Default::default(),
            queued: CountGauge::default(),
            queue_capacity: CountGauge::default(),
            by_reason: Family::default(),
            recent_latency: LatencyBuckets::default(),
            api_requests: AtomicU64::new(0),
            requests: Family::default(),
            latency,
        };
        // prometheus-client appends `_total` to counter names, and a `.` to help texts.
        let counters = [
            (
                "sluice_events",
                "Events enriched and added to state",
                &metrics.events,
            ),
            (
                "sluice_dead_letters",
                "Records rejected, with a dead letter",
                &metrics.dead_letters,
            ),
            ("sluice_late", "Records rejected as late", &metrics.late),
            (
                "sluice_engine_batches",
                "Requests with records the engine processed",
                &metrics.batches,
            ),
            (
                "sluice_relation_hub_nulls",
                "Relation feature values left null because a hub exceeded link_limit",
                &metrics.hub_nulls,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let gauges = [
            ("sluice_keys", "Keys held in state", &metrics.keys),
            (
                "sluice_queue_depth",
                "Requests in progress",
                &metrics.queued,
            ),
            (
                "sluice_queue_capacity",
                "Requests allowed in progress at once before new ones get 503",
                &metrics.queue_capacity,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let redis = [
            (
                "sluice_redis_round_trips",
                "Redis round trips (flushes) of the state",
            ),
            ("sluice_redis_commands", "Redis commands sent for the state"),
            (
                "sluice_redis_conflicts",
                "Commits that found a key changed by another writer",
            ),
            (
                "sluice_redis_cache_hits",
                "Keys of a flush found in this server's cache",
            ),
            (
                "sluice_redis_cache_misses",
                "Keys of a flush read from Redis first",
            ),
        ];
        for ((name, help), gauge) in redis.into_iter().zip(&metrics.redis) {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "sluice_dead_letters_by_reason",
            "Records rejected, by the reason of their dead letter",
            metrics.by_reason.clone(),
        );
        registry.register(
            "sluice_http_requests",
            "HTTP requests by route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "sluice_http_request_duration_seconds",
            "Time from a request's arrival to its response",
            latency_family,
        );
        metrics
    }

    /// Sets the Redis gauges from the state's traffic so far.
    pub fn set_traffic(&self, t: &sluice_engine::state::redis::Traffic) {
        let values = [
            t.flushes,
            t.commands,
            t.conflicts,
            t.cache_hits,
            t.cache_misses,
        ];
        for (gauge, v) in self.redis.iter().zip(values) {
            gauge.set(v);
        }
    }

    /// Counts a finished request.
    pub fn request(&self, route: Route, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.label(),
                code: code_label(status),
            })
            .inc();
        // `Route::ALL` lists the routes in declaration order.
        self.latency[route as usize].observe(took.as_secs_f64());
        if route != Route::Other {
            self.recent_latency.record(took);
            self.api_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// API requests (events, features) answered `500` or `503` (the state backend failed, or
    /// the server was overloaded) so far.
    pub fn api_failures(&self) -> u64 {
        let mut n = 0;
        for route in [Route::Events, Route::Features] {
            for code in ["500", "503"] {
                let labels = RequestLabels {
                    route: route.label(),
                    code,
                };
                n += self.requests.get(&labels).map_or(0, |c| c.get());
            }
        }
        n
    }

    /// API requests (events, features) finished so far.
    pub fn api_requests(&self) -> u64 {
        self.api_requests.load(Ordering::Relaxed)
    }

    /// Counts a dead letter whose text starts with its reason (`{"reason":"late",...`).
    pub fn dead_letter(&self, text: &[u8]) {
        let reason = text
            .strip_prefix(b"{\"reason\":\"")
            .and_then(|rest| REASONS.iter().find(|r| rest.starts_with(r.as_bytes())))
            .copied()
            .unwrap_or("other");
        self.by_reason.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Dead letters by reason, the reasons seen so far.
    pub fn dead_letters_by_reason(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .chain(&["other"])
            .filter_map(|&reason| {
                let n = self.by_reason.get(&ReasonLabels { reason })?.get();
                (n > 0).then_some((reason, n))
            })
            .collect()
    }
}

/// The Prometheus text exposition (version 0.0.4, no `# EOF` line) of everything in
/// `registry`. Fails only if a metric registered by someone else fails to encode.
pub fn render(registry: &SharedRegistry) -> Result<String, std::fmt::Error> {
    // A panic elsewhere while holding the lock leaves the metrics themselves intact.
    let registry = registry.read().unwrap_or_else(PoisonError::into_inner);
    let mut out = String::with_capacity(4096);
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(registry: Registry) -> String {
        render(&Arc::new(RwLock::new(registry))).expect("render")
    }

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.events.inc_by(3);
        m.keys.set(7);
        m.request(Route::Events, 200, Duration::from_micros(80));
        m.request(Route::Events, 200, Duration::from_micros(700));
        m.request(Route::Events, 400, Duration::from_micros(30));
        m.request(Route::Other, 418, Duration::from_micros(30));
        let text = rendered(registry);
        for line in [
            "# HELP sluice_events_total Events enriched and added to state.\n",
            "# TYPE sluice_events_total counter\n",
            "sluice_events_total 3\n",
            "sluice_dead_letters_total 0\n",
            "# TYPE sluice_keys gauge\nsluice_keys 7\n",
            "# TYPE sluice_http_requests_total counter\n",
            "sluice_http_requests_total{route=\"events\",code=\"200\"} 2\n",
            "sluice_http_requests_total{route=\"events\",code=\"400\"} 1\n",
            "sluice_http_requests_total{route=\"other\",code=\"other\"} 1\n",
            "# TYPE sluice_http_request_duration_seconds histogram\n",
            "sluice_http_request_duration_seconds_bucket{route=\"events\",le=\"0.0001\"} 2\n",
            "sluice_http_request_duration_seconds_bucket{route=\"events\",le=\"0.001\"} 3\n",
            "sluice_http_request_duration_seconds_bucket{route=\"events\",le=\"+Inf\"} 3\n",
            "sluice_http_request_duration_seconds_count{route=\"events\"} 3\n",
            // Histograms of routes without requests yet are there too.
            "sluice_http_request_duration_seconds_count{route=\"features\"} 0\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains("..\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn other_components_render_with_the_server() {
        let registry = SharedRegistry::default();
        let m = Metrics::register(&mut registry.write().expect("lock"));
        let theirs = Counter::<u64>::default();
        registry
            .write()
            .expect("lock")
            .register("sluice_run_lines", "Lines read", theirs.clone());
        theirs.inc();
        m.late.inc();
        let text = render(&registry).expect("render");
        assert!(text.contains("sluice_run_lines_total 1\n"), "{text}");
        assert!(text.contains("sluice_late_total 1\n"), "{text}");
    }
}
