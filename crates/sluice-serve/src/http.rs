//! Routes and handlers of `sluice serve`: authentication, body limits, splitting a body into
//! records, and running them on the engine.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::LengthLimitError;
use serde_json::value::RawValue;
use sluice_engine::serve::KeyValue;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::batcher::Batcher;
use crate::cluster::{Node, FORWARDED};
use crate::dashboard::{self, DashboardInfo, History};
use crate::engine::{Core, Records, Reply};
use crate::metrics::{self as m, Metrics, Route, SharedRegistry};

/// The largest `at` (in absolute value) a feature query accepts, in epoch milliseconds.
const MAX_AT: i64 = 10_000_000_000_000_000; // about 317,000 years

/// What every handler shares.
pub struct AppState {
    /// The engine.
    pub core: Arc<Mutex<Core>>,
    /// One permit per request allowed in at once (`[serve] queue`): beyond, 503 at once, so
    /// memory stays bounded by `queue × max_body` whatever the load.
    pub permits: Arc<Semaphore>,
    /// The number of permits.
    pub capacity: usize,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The registry `/metrics` renders (the server's metrics and any other component's).
    pub registry: SharedRegistry,
    /// Bearer token required on every route but `/healthz`.
    pub token: Option<String>,
    /// Largest request body.
    pub max_body: usize,
    /// This member of a serving cluster, if `[cluster]` is set.
    pub cluster: Option<Arc<Node>>,
    /// With a remote state: the queue of the engine thread, which batches requests.
    pub batcher: Option<Batcher>,
    /// The counters sampled once a second, for the dashboard.
    pub history: Arc<History>,
    /// What the dashboard shows of the pipeline and the state.
    pub dashboard: DashboardInfo,
}

type Shared = State<Arc<AppState>>;

const EVENTS: &str = "/v1/events";
const FEATURES: &str = "/v1/features";
const CLUSTER: &str = "/v1/cluster";
const DASHBOARD: &str = "/v1/dashboard";
const PIPELINE: &str = "/v1/dashboard/pipeline";

/// The routes, every request counted and timed by [`track`].
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(EVENTS, post(events))
        .route(FEATURES, get(features))
        .route(CLUSTER, get(cluster))
        .route("/", get(page))
        .route(DASHBOARD, get(dashboard))
        .route(PIPELINE, get(pipeline))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // After the routes and the fallback: it wraps them all, 404 and 405 answers included.
        .layer(middleware::from_fn_with_state(Arc::clone(&state), track))
        .with_state(state)
}

/// Middleware: counts every request by route and status, and times it from its arrival to
/// its response (the response body is already complete then).
async fn track(State(state): Shared, request: Request, next: Next) -> Response {
    let route = match request.uri().path() {
        EVENTS => Route::Events,
        FEATURES => Route::Features,
        _ => Route::Other,
    };
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .request(route, response.status().as_u16(), started.elapsed());
    response
}

fn json(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        reply.body,
    )
        .into_response()
}

/// Whether the request carries the token (when one is set), compared in constant time.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or(b"");
    constant_time_eq(given, token.as_bytes())
}

/// Whether two byte strings are equal, in a time that depends only on their lengths.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn unauthorized() -> Response {
    let mut r = json(Reply::error(
        401,
        "unauthorized",
        "a bearer token is required: Authorization: Bearer <token>",
    ));
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// `response`, with `Connection: close` unless `keep` (when part of the request was not read).
fn closing_unless(keep: bool, mut response: Response) -> Response {
    if !keep {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 503 for a request beyond the `[serve] queue` limit.
fn overloaded() -> Response {
    let mut r = json(Reply::error(
        503,
        "overloaded",
        "too many requests in progress ([serve] queue); retry shortly",
    ));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Runs `work` on the engine, in the handler's own task (memory state; a remote state goes
/// through the [`Batcher`] instead).
async fn on_engine(
    state: &Arc<AppState>,
    _permit: OwnedSemaphorePermit,
    work: impl FnOnce(&mut Core, &Metrics) -> Reply + Send + 'static,
) -> Response {
    let mut core = state.core.lock().await;
    json(work(&mut core, &state.metrics))
}

async fn events(State(state): Shared, headers: HeaderMap, body: Body) -> Response {
    let Ok(permit) = Arc::clone(&state.permits).try_acquire_owned() else {
        return closing_unless(false, overloaded());
    };
    if !authorized(&state, &headers) {
        // Read the body first, so that the connection stays usable for the next request.
        let drained = axum::body::to_bytes(body, state.max_body).await.is_ok();
        return closing_unless(drained, unauthorized());
    }
    let too_large = || {
        // The rest of the body is not read: the connection cannot carry another request.
        closing_unless(
            false,
            json(Reply::error(
                413,
                "too_large",
                &format!(
                    "the body is larger than {} bytes ([serve] max_body)",
                    state.max_body
                ),
            )),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return too_large();
    }
    let bytes: Bytes = match axum::body::to_bytes(body, state.max_body).await {
        Ok(b) => b,
        Err(e) => {
            return if over_limit(&e) {
                too_large()
            } else {
                json(Reply::error(
                    400,
                    "bad_body",
                    &format!("cannot read the body: {e}"),
                ))
            };
        }
    };
    let (lines, records, array) = match split_records(&bytes) {
        Ok(split) => split,
        Err(reply) => return json(reply),
    };
    if records == 0 {
        return json(Reply {
            status: 200,
            body: b"[]".to_vec(),
        });
    }
    if let Some(node) = state
        .cluster
        .as_ref()
        .filter(|_| !headers.contains_key(FORWARDED))
    {
        let owners = node.route(&lines);
        if owners.iter().any(Option::is_some) {
            return routed_events(&state, node, permit, lines, owners, array).await;
        }
    }
    if let Some(batcher) = &state.batcher {
        let request = Records {
            lines,
            records,
            array,
        };
        return json(batcher.events(request, Some(permit)).await);
    }
    on_engine(&state, permit, move |core, metrics| {
        core.events(lines, records, array, metrics)
    })
    .await
}

/// The records of a request some of which other members own: each run of consecutive
/// records with one owner is computed by it (here, or forwarded), one run after the other,
/// so that every record sees those before it as on one server; the answers are merged in
/// order. A member that cannot be reached (nothing was sent) leaves its run to this one: the
/// state is Redis's, whose per-key compare-and-set keeps the result exact. One that does not
/// answer in time fails the request with 503, since it may have applied its run.
async fn routed_events(
    state: &Arc<AppState>,
    node: &Arc<Node>,
    permit: OwnedSemaphorePermit,
    lines: Vec<u8>,
    owners: Vec<Option<String>>,
    array: bool,
) -> Response {
    let records: Vec<&[u8]> = lines.split(|&b| b == b'\n').take(owners.len()).collect();
    let mut items: Vec<Vec<u8>> = Vec::with_capacity(records.len());
    let mut start = 0;
    let _permit = permit;
    while start < records.len() {
        let owner = owners[start].clone();
        let end = (start..records.len())
            .find(|&i| owners[i] != owner)
            .unwrap_or(records.len());
        let run = &records[start..end];
        let mut answer = None;
        if let Some(address) = &owner {
            let mut body = b"[".to_vec();
            body.extend_from_slice(&run.join(&b","[..]));
            body.push(b']');
            match node
                .forward(
                    address,
                    hyper::Method::POST,
                    EVENTS,
                    body,
                    state.token.as_deref(),
                )
                .await
            {
                Ok((200, body)) => answer = Some(body),
                Ok((status, body)) => {
                    return json(Reply { status, body });
                }
                Err(true) => {
                    tracing::warn!(
                        "cluster: {address} cannot be reached; computing its records here"
                    );
                }
                Err(false) => {
                    return json(Reply::error(
                        503,
                        "unavailable",
                        &format!("member {address} did not answer in time; the request may be partly applied"),
                    ));
                }
            }
        }
        let answer = match answer {
            Some(answer) => answer,
            None => {
                let mut run_lines = run.join(&b"\n"[..]);
                run_lines.push(b'\n');
                let n = run.len();
                let local = match &state.batcher {
                    Some(batcher) => {
                        let request = Records {
                            lines: run_lines,
                            records: n,
                            array: true,
                        };
                        batcher.events(request, None).await
                    }
                    None => {
                        let mut core = state.core.lock().await;
                        core.events(run_lines, n, true, &state.metrics)
                    }
                };
                if local.status != 200 {
                    return json(local);
                }
                local.body
            }
        };
        match serde_json::from_slice::<Vec<&RawValue>>(&answer) {
            Ok(got) if got.len() == run.len() => {
                items.extend(got.iter().map(|item| item.get().as_bytes().to_vec()));
            }
            _ => {
                return json(Reply::error(
                    500,
                    "internal",
                    "a member's answer does not match the records it was sent",
                ))
            }
        }
        start = end;
    }
    if !array {
        let item = items.pop().unwrap_or_default();
        // Dead letters start with their reason (see `write_dead_letter`).
        let status = if item.starts_with(b"{\"reason\"") {
            400
        } else {
            200
        };
        return json(Reply { status, body: item });
    }
    let mut body = b"[".to_vec();
    body.extend_from_slice(&items.join(&b","[..]));
    body.push(b']');
    json(Reply { status: 200, body })
}

/// `GET /v1/cluster`: this member and every live one (404 without `[cluster]`).
async fn cluster(State(state): Shared, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match &state.cluster {
        Some(node) => json(Reply {
            status: 200,
            body: node.describe(),
        }),
        None => json(Reply::error(
            404,
            "not_found",
            "this server is not a cluster member (no [cluster] section)",
        )),
    }
}

/// Whether `error`, or an error in its source chain, is the body limit's [`LengthLimitError`]
/// (found by its type: `axum::body::to_bytes` wraps it in an `axum::Error`).
fn over_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<LengthLimitError>())
}

/// Splits a body into one record per line: a JSON array gives its elements, anything else is
/// one record. Line breaks inside a record (pretty-printed JSON) become spaces, which JSON
/// allows between tokens and forbids inside strings, so a record means the same.
fn split_records(body: &[u8]) -> Result<(Vec<u8>, usize, bool), Reply> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(Reply::error(
            400,
            "malformed",
            "empty body; send one JSON event or an array of them",
        ));
    };
    let mut lines = Vec::with_capacity(body.len() + 16);
    let mut push = |text: &[u8]| {
        lines.extend(
            text.iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        lines.push(b'\n');
    };
    if body[first] == b'[' {
        let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
            Reply::error(
                400,
                "malformed",
                &format!("the body starts with `[` but is not a JSON array: {e}"),
            )
        })?;
        for item in &items {
            push(item.get().as_bytes());
        }
        Ok((lines, items.len(), true))
    } else {
        push(body[first..].trim_ascii_end());
        Ok((lines, 1, false))
    }
}

async fn features(
    State(state): Shared,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(permit) = Arc::clone(&state.permits).try_acquire_owned() else {
        return overloaded();
    };
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let Ok(Query(params)) = query else {
        return json(Reply::error(
            400,
            "bad_query",
            "the query string is not valid URL encoding",
        ));
    };
    let mut at = None;
    let mut given = Vec::with_capacity(params.len());
    for (name, value) in params {
        if name == "at" {
            // Within a few hundred thousand years of 1970: window arithmetic stays far from
            // overflow.
            match value.trim().parse::<i64>() {
                Ok(t) if t.abs() <= MAX_AT => at = Some(t),
                _ => {
                    return json(Reply::error(
                        400,
                        "bad_time",
                        &format!("`at` must be epoch milliseconds, got `{value}`"),
                    ))
                }
            }
            continue;
        }
        match key_value(&value) {
            Some(v) => given.push((name, v)),
            None => {
                return json(Reply::error(
                    400,
                    "wrong_type",
                    &format!("`{name}` must be a string, a number or a boolean, got `{value}`"),
                ))
            }
        }
    }
    if let Some(node) = state
        .cluster
        .as_ref()
        .filter(|_| !headers.contains_key(FORWARDED))
    {
        if let Some(address) = node.route_query(&given) {
            let path = format!("{FEATURES}?{}", raw_query.as_deref().unwrap_or(""));
            let token = state.token.as_deref();
            match node
                .forward(&address, hyper::Method::GET, &path, Vec::new(), token)
                .await
            {
                Ok((status, body)) => return json(Reply { status, body }),
                Err(_) => {
                    tracing::warn!("cluster: {address} did not answer a query; answering here");
                }
            }
        }
    }
    if let Some(batcher) = &state.batcher {
        return json(batcher.query(given, at, Some(permit)).await);
    }
    on_engine(&state, permit, move |core, _| core.query(&given, at)).await
}

/// A query parameter as a key value: JSON when it reads as a number, a boolean or a quoted
/// string (`42`, `true`, `"42"`), else the text itself as a string (`u42`).
fn key_value(text: &str) -> Option<KeyValue> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Number(n)) => n.as_f64().map(KeyValue::Num),
        Ok(serde_json::Value::Bool(b)) => Some(KeyValue::Bool(b)),
        Ok(serde_json::Value::String(s)) => Some(KeyValue::Str(s)),
        Ok(_) => None,
        Err(_) => Some(KeyValue::Str(text.to_owned())),
    }
}

/// `GET /`: the dashboard page. With a token, the page too needs it: as the API's header, or
/// once as `?token=` (the page then keeps it for its requests and drops it from the address).
async fn page(
    State(state): Shared,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let given = query.ok().and_then(|Query(params)| {
        params
            .into_iter()
            .find_map(|(name, value)| (name == "token").then_some(value))
    });
    let by_query = match (&state.token, given) {
        (Some(token), Some(given)) => constant_time_eq(token.as_bytes(), given.as_bytes()),
        _ => false,
    };
    if !by_query && !authorized(&state, &headers) {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            "<!doctype html><html lang=\"en\"><title>Sluice: token required</title>\
             <p>This server requires a token: open <code>/?token=&lt;token&gt;</code>.</p></html>",
        )
            .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        dashboard::PAGE,
    )
        .into_response()
}

/// What `GET /v1/dashboard` answers.
#[derive(serde::Serialize)]
struct DashboardView<'a> {
    now_ms: u64,
    uptime_s: u64,
    backend: &'a str,
    events: u64,
    dead_letters: u64,
    late: u64,
    keys: u64,
    api_requests: u64,
    api_failures: u64,
    dead_letters_by_reason: std::collections::BTreeMap<&'static str, u64>,
    latency: dashboard::Latency,
    rates: Vec<dashboard::Rate>,
    redis: Option<std::collections::BTreeMap<&'static str, u64>>,
    cluster: Option<serde_json::Value>,
    queue: (u64, u64),
}

/// `GET /v1/dashboard`: the live figures of the page.
async fn dashboard(State(state): Shared, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let m = &state.metrics;
    let redis = (state.dashboard.backend == "redis").then(|| {
        [
            "round_trips",
            "commands",
            "conflicts",
            "cache_hits",
            "cache_misses",
        ]
        .into_iter()
        .zip(m.redis.iter().map(|g| g.get()))
        .collect()
    });
    let cluster = state
        .cluster
        .as_ref()
        .and_then(|node| serde_json::from_slice(&node.describe()).ok());
    let view = DashboardView {
        now_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        uptime_s: state.history.uptime_s(),
        backend: &state.dashboard.backend,
        events: m.events.get(),
        dead_letters: m.dead_letters.get(),
        late: m.late.get(),
        keys: m.keys.get(),
        api_requests: m.api_requests(),
        api_failures: m.api_failures(),
        dead_letters_by_reason: m.dead_letters_by_reason().into_iter().collect(),
        latency: state.history.latency(&m.recent_latency),
        rates: state.history.rates(),
        redis,
        cluster,
        queue: (
            (state.capacity - state.permits.available_permits()) as u64,
            state.capacity as u64,
        ),
    };
    match serde_json::to_vec(&view) {
        Ok(body) => json(Reply { status: 200, body }),
        Err(e) => json(Reply::error(500, "internal", &e.to_string())),
    }
}

/// `GET /v1/dashboard/pipeline`: the features grouped by key and register set.
async fn pipeline(State(state): Shared, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match serde_json::to_vec(&state.dashboard.pipeline) {
        Ok(body) => json(Reply { status: 200, body }),
        Err(e) => json(Reply::error(500, "internal", &e.to_string())),
    }
}

async fn healthz() -> Response {
    json(Reply {
        status: 200,
        body: b"{\"status\":\"ok\"}".to_vec(),
    })
}

async fn metrics(State(state): Shared, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let waiting = state.capacity - state.permits.available_permits();
    state.metrics.queued.set(waiting as u64);
    match m::render(&state.registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(m::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => json(Reply::error(
            500,
            "internal",
            &format!("cannot render the metrics: {e}"),
        )),
    }
}

async fn not_found() -> Response {
    json(Reply::error(
        404,
        "not_found",
        "no such route; valid: POST /v1/events, GET /v1/features, GET /v1/cluster, GET / (the \
         dashboard), GET /v1/dashboard, GET /v1/dashboard/pipeline, GET /healthz, GET /metrics",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SharedRegistry;
    use crate::{ServeConfig, Server};
    use prometheus_client::metrics::counter::Counter;
    use sluice_core::{Agg, FeatureSpec, Plan};
    use sluice_engine::serve::ServeEngine;
    use sluice_engine::state::StateConfig;
    use sluice_engine::TimeFormat;
    use tower::ServiceExt;

    /// A feature over an hour.
    fn feature(name: &str, agg: Agg, of: Option<&str>, by: &[&str]) -> FeatureSpec {
        FeatureSpec {
            name: name.into(),
            agg,
            of: of.map(Into::into),
            by: by.iter().map(|b| b.to_string()).collect(),
            window_ms: 3_600_000,
            granularity_ms: 1,
            filter: None,
        }
    }

    /// A server counting events by `user_id` over an hour, with a 1 KB body limit.
    fn server(registry: SharedRegistry) -> Server {
        server_of(vec![feature("n", Agg::Count, None, &["user_id"])], registry)
    }

    /// A server of `features`, with a 1 KB body limit.
    fn server_of(features: Vec<FeatureSpec>, registry: SharedRegistry) -> Server {
        let plan = Plan::new(features, 300_000).expect("plan");
        let engine = ServeEngine::new(
            plan,
            "ts",
            TimeFormat::EpochMs,
            &StateConfig::Memory,
            "http",
        )
        .expect("engine");
        let config = ServeConfig {
            max_body: 1024,
            ..ServeConfig::default()
        };
        Server::with_registry(engine, &config, false, None, registry)
    }

    async fn call(router: &Router, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
        send(router, method, path, None, body).await
    }

    /// A request with the bearer token `token`, when given.
    async fn send(
        router: &Router,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body)).expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn every_answer_is_counted_and_the_registry_is_shared() {
        let registry = SharedRegistry::default();
        let theirs = Counter::<u64>::default();
        registry.write().expect("lock").register(
            "sluice_other",
            "Another component's",
            theirs.clone(),
        );
        theirs.inc_by(5);
        let server = server(SharedRegistry::clone(&registry));
        let router = server.router();
        let event = b"{\"user_id\":\"a\",\"ts\":1}".to_vec();
        assert_eq!(call(&router, "POST", EVENTS, event).await.0, 200);
        assert_eq!(call(&router, "GET", EVENTS, Vec::new()).await.0, 405);
        assert_eq!(call(&router, "GET", "/nothing", Vec::new()).await.0, 404);
        let (status, text) = call(&router, "GET", "/metrics", Vec::new()).await;
        assert_eq!(status, 200);
        for line in [
            "sluice_events_total 1\n",
            "sluice_engine_batches_total 1\n",
            "sluice_keys 1\n",
            "sluice_queue_capacity 1024\n",
            "sluice_http_requests_total{route=\"events\",code=\"200\"} 1\n",
            "sluice_http_requests_total{route=\"events\",code=\"405\"} 1\n",
            "sluice_http_requests_total{route=\"other\",code=\"404\"} 1\n",
            "sluice_http_request_duration_seconds_count{route=\"events\"} 2\n",
            "sluice_other_total 5\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(Arc::ptr_eq(&server.registry(), &registry));
    }

    /// The global key (`by = []`) answers a query without key fields, and only such a query.
    #[tokio::test]
    async fn the_global_key_answers_a_query_without_key_fields() {
        let features = vec![
            feature("all", Agg::Count, None, &[]),
            feature("spread", Agg::Variance, Some("x"), &[]),
            feature("n", Agg::Count, None, &["user_id"]),
        ];
        let router = server_of(features, SharedRegistry::default()).router();
        for (user, x, ts) in [("a", 1.5, 1), ("b", 2.5, 2), ("a", 4.0, 3)] {
            let event = format!("{{\"user_id\":\"{user}\",\"x\":{x},\"ts\":{ts}}}");
            assert_eq!(
                call(&router, "POST", EVENTS, event.into_bytes()).await.0,
                200
            );
        }
        // 1.5, 2.5, 4.0: mean 8/3, squared deviations 49/36 + 1/36 + 64/36 = 114/36, over 2:
        // 57/36.
        let (status, text) = call(&router, "GET", FEATURES, Vec::new()).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            text,
            r#"{"keys":[{"by":{},"at":3,"features":{"all":3,"spread":1.58333333333333}}]}"#
        );
        let (status, text) = call(&router, "GET", "/v1/features?at=2", Vec::new()).await;
        assert_eq!(
            (status, text.contains(r#""all":2,"spread":0.5}"#)),
            (200, true),
            "{text}"
        );
        // An entity query answers for the entity only.
        let (status, text) = call(&router, "GET", "/v1/features?user_id=a", Vec::new()).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            text,
            r#"{"keys":[{"by":{"user_id":"a"},"at":3,"features":{"n":2}}]}"#
        );
        // A misspelt key field is an error, not the global answer.
        let (status, text) = call(&router, "GET", "/v1/features?usr=a", Vec::new()).await;
        assert_eq!(status, 400, "{text}");
        assert!(
            text.contains("none (the global key: a query without key fields)"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_recognised_by_its_error_type() {
        let router = server(SharedRegistry::default()).router();
        // No Content-Length: the limit is only found while reading the body.
        let big = format!("[{}]", vec!["{\"user_id\":\"a\",\"ts\":1}"; 100].join(","));
        let (status, text) = call(&router, "POST", EVENTS, big.into_bytes()).await;
        assert_eq!(status, 413, "{text}");
        assert!(text.starts_with("{\"reason\":\"too_large\""), "{text}");

        let limited = axum::body::to_bytes(Body::from(vec![b' '; 11]), 10).await;
        assert!(over_limit(&limited.expect_err("over the limit")));
        // Another error is not taken for it, whatever its message says.
        let other = axum::Error::new(std::io::Error::other("length limit exceeded"));
        assert!(!over_limit(&other));
    }

    #[test]
    fn bodies_split_into_records() {
        let (lines, n, array) = split_records(b" [{\"a\":1},\n {\"b\":\n2}] ").expect("array");
        assert_eq!((n, array), (2, true));
        assert_eq!(lines, b"{\"a\":1}\n{\"b\": 2}\n");
        let (lines, n, array) = split_records(b"{\"a\":\r\n1}\n").expect("one");
        assert_eq!((n, array), (1, false));
        assert_eq!(lines, b"{\"a\":  1}\n");
        assert_eq!(
            split_records(b"  ").map(|_| ()).expect_err("empty").status,
            400
        );
        assert_eq!(
            split_records(b"[1,").map(|_| ()).expect_err("cut").status,
            400
        );
        // Not an object: one record, rejected by the engine with a reason like `run` does.
        assert_eq!(split_records(b"nonsense").expect("one").1, 1);
    }

    #[test]
    fn query_values_are_typed_like_event_fields() {
        assert_eq!(key_value("u42"), Some(KeyValue::Str("u42".into())));
        assert_eq!(key_value("\"42\""), Some(KeyValue::Str("42".into())));
        assert_eq!(key_value("42"), Some(KeyValue::Num(42.0)));
        assert_eq!(key_value("true"), Some(KeyValue::Bool(true)));
        assert_eq!(key_value("null"), None);
        assert_eq!(key_value("[1]"), None);
    }

    /// A GET with the bearer token `token`.
    async fn get_with(router: &Router, path: &str, token: &str) -> (u16, String) {
        send(router, "GET", path, Some(token), Vec::new()).await
    }

    fn parse(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[tokio::test]
    async fn the_dashboard_answers_in_an_empty_state() {
        let info = DashboardInfo {
            pipeline: serde_json::json!({"keys": [{"by": ["user_id"]}]}),
            backend: "memory".into(),
        };
        let router = server(SharedRegistry::default())
            .with_dashboard(info)
            .router();
        let (status, page) = call(&router, "GET", "/", Vec::new()).await;
        assert_eq!(status, 200);
        assert!(page.contains("<title>Sluice dashboard</title>"));
        // Nothing is fetched from elsewhere: no external script, style sheet, image or font.
        for external in ["src=", "href=", "url(", "@import"] {
            assert!(!page.contains(external), "the page refers to {external}");
        }
        let (status, text) = call(&router, "GET", DASHBOARD, Vec::new()).await;
        assert_eq!(status, 200, "{text}");
        let d = parse(&text);
        assert_eq!(d["backend"], "memory");
        assert_eq!(d["events"], 0);
        assert_eq!(d["keys"], 0);
        assert_eq!(d["dead_letters_by_reason"], serde_json::json!({}));
        assert_eq!(d["latency"]["p50_ms"], serde_json::Value::Null);
        assert_eq!(d["latency"]["requests"], 0);
        assert_eq!(d["rates"], serde_json::json!([]));
        assert_eq!(d["redis"], serde_json::Value::Null);
        assert_eq!(d["cluster"], serde_json::Value::Null);
        assert_eq!(d["queue"], serde_json::json!([0, 1024]));
        assert_eq!(d["api_failures"], 0);
        let (status, text) = call(&router, "GET", PIPELINE, Vec::new()).await;
        assert_eq!(status, 200);
        assert_eq!(parse(&text)["keys"][0]["by"][0], "user_id");
    }

    #[tokio::test]
    async fn the_dashboard_counts_dead_letters_by_reason_and_times_requests() {
        let router = server(SharedRegistry::default()).router();
        for event in [
            &b"{\"user_id\":\"a\",\"ts\":1000000}"[..],
            b"{\"user_id\":\"a\",\"ts\":1000001}",
            b"{\"user_id\":",
            b"{\"user_id\":\"b\"}",
            b"{\"user_id\":\"a\",\"ts\":1}",
        ] {
            call(&router, "POST", EVENTS, event.to_vec()).await;
        }
        call(&router, "GET", "/v1/features?user_id=a", Vec::new()).await;
        let d = parse(&call(&router, "GET", DASHBOARD, Vec::new()).await.1);
        assert_eq!(d["events"], 2);
        assert_eq!(d["dead_letters"], 3);
        assert_eq!(
            d["dead_letters_by_reason"],
            serde_json::json!({"malformed": 1, "missing_time": 1, "late": 1})
        );
        assert_eq!(d["keys"], 1);
        // Six API requests (the dashboard's own are not counted), timed.
        assert_eq!(d["api_requests"], 6);
        assert_eq!(d["latency"]["requests"], 6);
        assert!(d["latency"]["p99_ms"].as_f64().is_some_and(|p| p > 0.0));
    }

    #[tokio::test]
    async fn the_dashboard_needs_the_token() {
        let plan =
            Plan::new(vec![feature("n", Agg::Count, None, &["user_id"])], 300_000).expect("plan");
        let engine = ServeEngine::new(
            plan,
            "ts",
            TimeFormat::EpochMs,
            &StateConfig::Memory,
            "http",
        )
        .expect("engine");
        let config = ServeConfig {
            token: Some("t0k en".into()),
            ..ServeConfig::default()
        };
        let router = Server::new(engine, &config, false, None).router();
        for path in ["/", "/?token=wrong", DASHBOARD, PIPELINE] {
            assert_eq!(
                call(&router, "GET", path, Vec::new()).await.0,
                401,
                "{path}"
            );
        }
        assert_eq!(get_with(&router, DASHBOARD, "wrong").await.0, 401);
        // The page by header, or once by query (percent-encoded).
        assert_eq!(get_with(&router, "/", "t0k en").await.0, 200);
        assert_eq!(
            call(&router, "GET", "/?token=t0k%20en", Vec::new()).await.0,
            200
        );
        assert_eq!(
            call(&router, "GET", "/?a=1&token=t0k+en", Vec::new())
                .await
                .0,
            200
        );
        for path in [DASHBOARD, PIPELINE] {
            assert_eq!(get_with(&router, path, "t0k en").await.0, 200, "{path}");
        }
    }
}
