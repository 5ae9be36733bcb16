//! Relation features through the whole engine against their definition, for several worker
//! counts and batch sizes, in memory, in the embedded store and in a Redis Cluster.
//!
//! Random JSONL streams of users on devices (a few hub devices shared by most users, events
//! without a user or a device, out-of-order and equal times, a type field the filters test),
//! with `linked_distinct_count`, `linked_count` and `linked_distinct_count_approx` features over
//! random windows (and buckets), `via_where` and `where`. The expected value of each feature
//! for each event is the definition of `docs/semantics.md` evaluated by brute force over the
//! events received so far (for the approximation, over whole buckets: with at most ten users
//! it is exact); the output must match it and be byte-identical for every worker count. A
//! second test makes long streams at one hub, so that the approximation reads a hub's sets
//! (more than 64 linked events in a window).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::Value;
use sluice_core::relation::{LinkSpec, LINK_LIMIT};
use sluice_core::{Agg, FeatureSpec, Plan};
use sluice_engine::serve::ServeEngine;
use sluice_engine::state::redis::{ClusterOptions, RedisOptions};
use sluice_engine::state::EmbeddedOptions;
use sluice_engine::{run, InputFormat, Job, Outputs, StateConfig, Stats, StreamSource, TimeFormat};

/// One generated event.
#[derive(Debug, Clone)]
struct Ev {
    ts: i64,
    user: Option<u8>,
    device: Option<u8>,
    kind: bool,
}

/// What a generated relation feature counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Distinct,
    Count,
    /// `linked_distinct_count_approx` in buckets of this many milliseconds.
    Approx(i64),
}

/// One generated relation feature: what it counts, window, and which of the two hops filter
/// on `kind`.
#[derive(Debug, Clone)]
struct Rel {
    kind: Kind,
    window_ms: i64,
    via_where: bool,
    filter: bool,
}

fn line(e: &Ev) -> String {
    let mut fields = vec![format!("\"ts\":{}", e.ts), format!("\"kind\":{}", e.kind)];
    if let Some(u) = e.user {
        fields.push(format!("\"user\":\"u{u}\""));
    }
    if let Some(d) = e.device {
        // Hub devices are numbers, others strings: both are values.
        fields.push(if d >= 8 {
            format!("\"device\":{d}")
        } else {
            format!("\"device\":\"d{d}\"")
        });
    }
    format!("{{{}}}", fields.join(","))
}

/// The definition, for the last of `events` (all accepted so far, in arrival order).
fn expected(r: &Rel, events: &[Ev]) -> Value {
    let e = events.last().expect("the event itself");
    let Some(user) = e.user else {
        return Value::Null;
    };
    // Whole buckets for the approximation: those that start in `[bucket(t) - W, bucket(t)]`.
    let g = match r.kind {
        Kind::Approx(g) => g,
        Kind::Distinct | Kind::Count => 1,
    };
    let t = sluice_core::bucket_start(e.ts, g);
    let inside = |x: &Ev| t - r.window_ms <= x.ts && x.ts < t + g;
    let links: HashSet<u8> = events
        .iter()
        .filter(|x| inside(x) && x.user == Some(user) && (!r.via_where || x.kind))
        .filter_map(|x| x.device)
        .collect();
    let linked: Vec<&Ev> = events
        .iter()
        .filter(|y| inside(y) && (!r.filter || y.kind))
        .filter(|y| y.device.is_some_and(|d| links.contains(&d)))
        .collect();
    if r.kind != Kind::Count {
        // `of` is the user: events without one are not counted.
        let users: HashSet<u8> = linked.iter().filter_map(|y| y.user).collect();
        Value::from(users.len())
    } else {
        Value::from(linked.len())
    }
}

fn plan(rels: &[Rel]) -> Plan {
    let features = rels
        .iter()
        .enumerate()
        .map(|(i, r)| FeatureSpec {
            name: format!("r{i}"),
            agg: match r.kind {
                Kind::Distinct => Agg::LinkedDistinctCount,
                Kind::Count => Agg::LinkedCount,
                Kind::Approx(_) => Agg::LinkedDistinctCountApprox,
            },
            of: (r.kind != Kind::Count).then(|| "user".to_owned()),
            by: vec!["user".into()],
            window_ms: r.window_ms,
            granularity_ms: match r.kind {
                Kind::Approx(g) => g,
                Kind::Distinct | Kind::Count => 1,
            },
            filter: r.filter.then(|| "kind == true".to_owned()),
        })
        .collect();
    let links = rels
        .iter()
        .enumerate()
        .map(|(i, r)| LinkSpec {
            feature: i,
            via: "device".into(),
            via_filter: r.via_where.then(|| "kind".to_owned()),
            limit: LINK_LIMIT,
        })
        .collect();
    Plan::new(features, 1_000_000)
        .expect("valid")
        .with_relations(links)
        .expect("valid relations")
}

struct Chunks {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The enriched events of a run.
fn run_engine(
    plan: &Plan,
    input: &str,
    workers: usize,
    chunk: usize,
    state: StateConfig,
) -> String {
    run_with_dead_letters(plan, input, workers, chunk, state).0
}

/// The enriched events and the dead letters of a run.
fn run_with_dead_letters(
    plan: &Plan,
    input: &str,
    workers: usize,
    chunk: usize,
    state: StateConfig,
) -> (String, String) {
    let mut job = Job::new(plan.clone(), "ts", TimeFormat::EpochMs, workers).with_state(state);
    job.batch_bytes = 200;
    let (events, dead) = (Shared::default(), Shared::default());
    let outputs = Outputs::writers(Box::new(events.clone()), Box::new(dead.clone()));
    let mut source = StreamSource::new(
        Box::new(Chunks {
            data: input.as_bytes().to_vec(),
            pos: 0,
            chunk,
        }),
        "in.jsonl",
        InputFormat::Jsonl,
    );
    run(&job, &mut source, outputs, Arc::new(Stats::default())).expect("the run succeeds");
    let text = |s: Shared| String::from_utf8(s.0.lock().expect("lock").clone()).expect("UTF-8");
    (text(events), text(dead))
}

/// Streams of `len` events, one in `1 + hub` on a hub device (8 or 9), the others on eight
/// devices.
fn events(len: std::ops::Range<usize>, hub: u32) -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            prop_oneof![4 => 0i64..30, 1 => -40i64..0, 1 => Just(0)],
            prop::option::weighted(0.9, 0u8..10),
            prop::option::weighted(0.85, prop_oneof![3 => 0u8..8, 2 * hub => 8u8..10]),
            prop::bool::weighted(0.7),
        ),
        len,
    )
    .prop_map(|steps| {
        let mut t = 1_000;
        steps
            .into_iter()
            .map(|(dt, user, device, kind)| {
                t = (t + dt).max(0);
                Ev {
                    ts: t,
                    user,
                    device,
                    kind,
                }
            })
            .collect()
    })
}

fn rels() -> impl Strategy<Value = Vec<Rel>> {
    prop::collection::vec(
        (
            0..3,
            prop::sample::select(vec![5i64, 40, 200, 100_000]),
            prop::sample::select(vec![5i64, 40, 100]),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.3),
        )
            .prop_map(|(kind, window_ms, g, via_where, filter)| Rel {
                kind: match kind {
                    0 => Kind::Distinct,
                    1 => Kind::Count,
                    // The window a whole number of buckets.
                    _ => Kind::Approx(if window_ms % g == 0 { g } else { 5 }),
                },
                window_ms,
                via_where,
                filter,
            }),
        1..4,
    )
}

/// Runs `events` through the engine with `rels` and checks every value against the
/// definition, and that 2 and 4 workers and the embedded store write the same bytes.
/// Checks the output of `rels` over `events` against the definition, for 1, 2 and 4 workers,
/// embedded state and, when a Redis Cluster is there, Redis state: one run, the stream cut in
/// two runs at `split`, and two writers taking turns every `turn` events.
fn check(
    events: &[Ev],
    rels: &[Rel],
    chunk: usize,
    split: prop::sample::Index,
    turn: usize,
) -> Result<(), TestCaseError> {
    let plan = plan(rels);
    let input: String = events.iter().map(|e| line(e) + "\n").collect();
    let one = run_engine(&plan, &input, 1, chunk, StateConfig::Memory);
    let lines: Vec<Value> = one
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    prop_assert_eq!(
        lines.len(),
        events.len(),
        "no event is late (lateness 1000 s)"
    );
    for (i, got) in lines.iter().enumerate() {
        for (j, r) in rels.iter().enumerate() {
            let want = expected(r, &events[..=i]);
            prop_assert_eq!(
                &got["features"][format!("r{j}")],
                &want,
                "event {} ({}), feature {:?}",
                i,
                line(&events[i]),
                r
            );
        }
    }
    for workers in [2, 4] {
        let other = run_engine(&plan, &input, workers, chunk, StateConfig::Memory);
        prop_assert_eq!(&other, &one, "{} workers", workers);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = StateConfig::Embedded(EmbeddedOptions {
        dir: dir.path().to_owned(),
        memory_cap: 1,
    });
    prop_assert_eq!(
        &run_engine(&plan, &input, 3, chunk, embedded),
        &one,
        "embedded"
    );

    // Redis: the links live in the cluster. One run, then the stream in two runs (a
    // restart with another worker count) that share the namespace.
    if let Some(urls) = redis_urls() {
        let options = redis_options(urls);
        let redis = run_engine(&plan, &input, 2, chunk, StateConfig::Redis(options));
        prop_assert_eq!(&redis, &one, "Redis state");
        let cut = split.index(events.len() + 1);
        let (first, second) = events.split_at(cut);
        let text = |evs: &[Ev]| evs.iter().map(|e| line(e) + "\n").collect::<String>();
        let options = redis_options(redis_urls().unwrap_or_default());
        let mut both = run_engine(
            &plan,
            &text(first),
            1,
            chunk,
            StateConfig::Redis(options.clone()),
        );
        both += &run_engine(&plan, &text(second), 3, chunk, StateConfig::Redis(options));
        prop_assert_eq!(&both, &one, "Redis state, restarted after {} events", cut);

        // Two writers taking turns, batch by batch: each must see the other's links
        // (its cached sets changed versions), so together they give the one-run output.
        let options = redis_options(redis_urls().unwrap_or_default());
        let state = StateConfig::Redis(options);
        let engine = || {
            ServeEngine::new(plan.clone(), "ts", TimeFormat::EpochMs, &state, "test")
                .expect("engine")
        };
        let mut writers = [engine(), engine()];
        let mut turns = String::new();
        for (n, part) in events.chunks(turn).enumerate() {
            let processed = writers[n % 2]
                .process(text(part).into_bytes())
                .expect("batch");
            turns += &String::from_utf8(processed.events).expect("UTF-8");
        }
        prop_assert_eq!(
            &turns,
            &one,
            "two writers taking turns every {} events",
            turn
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn relation_features_match_their_definition_for_any_worker_count(
        events in events(1..120, 1),
        rels in rels(),
        chunk in 7usize..300,
        split in any::<prop::sample::Index>(),
        turn in 1usize..20,
    ) {
        check(&events, &rels, chunk, split, turn)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Long streams, most events at the two hub devices: the approximation reads hubs'
    /// sets, built at a first read, slid, merged out of order and evicted.
    #[test]
    fn approximate_relations_at_hubs_match_their_definition_for_any_worker_count(
        events in events(300..500, 4),
        g in prop::sample::select(vec![5i64, 40, 100]),
        buckets in prop::sample::select(vec![1i64, 5, 50]),
        via_where in prop::bool::weighted(0.3),
        filter in prop::bool::weighted(0.3),
        chunk in 7usize..300,
        split in any::<prop::sample::Index>(),
        turn in 1usize..20,
    ) {
        let rels = [
            Rel { kind: Kind::Approx(g), window_ms: g * buckets, via_where, filter },
            Rel { kind: Kind::Distinct, window_ms: g * buckets, via_where, filter },
        ];
        check(&events, &rels, chunk, split, turn)?;
    }
}

/// With Redis state, a writer whose windows reach below where another writer (ahead in event
/// time) trimmed the shared links gets no wrong value: such an event is a `late` dead letter.
#[test]
fn a_window_below_another_writers_trim_is_late() {
    let Some(urls) = redis_urls() else {
        return;
    };
    let rel = Rel {
        kind: Kind::Count,
        window_ms: 10,
        via_where: false,
        filter: false,
    };
    let mut plan = plan(&[rel]);
    plan.lateness_ms = 0;
    let options = redis_options(urls);
    let ev = |ts| {
        line(&Ev {
            ts,
            user: Some(1),
            device: Some(1),
            kind: true,
        }) + "\n"
    };
    let state = || StateConfig::Redis(options.clone());
    // A first writer adds a link at 100; a second one, at 200, trims what is older than
    // 190 (a set is trimmed once its oldest entry is a quarter window behind).
    for ts in [100, 200] {
        let (out, dead) = run_with_dead_letters(&plan, &ev(ts), 1, 1000, state());
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(dead.is_empty(), "{dead}");
    }
    let (out, dead) =
        run_with_dead_letters(&plan, &(ev(150) + &ev(195) + &ev(205)), 1, 1000, state());
    let dead: Vec<Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().all(|d| d["reason"] == "late"), "{dead:?}");
    assert_eq!(dead[0]["line"], 1);
    assert_eq!(dead[1]["line"], 2);
    let out: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0]["features"]["r0"], 2,
        "the events at 200 and 205: {out:?}"
    );
}

/// An approximate relation's window starts at its bucket's start: what the Redis sets keep
/// after a trim reaches back that far, so a second run at a small lateness still reads, in
/// the same bucket, the links of the first (the memory run's value, not a `late` event).
#[test]
fn approximate_relations_trim_at_the_bucket_start() {
    let Some(urls) = redis_urls() else {
        return;
    };
    let rel = Rel {
        kind: Kind::Approx(10),
        window_ms: 20,
        via_where: false,
        filter: false,
    };
    let mut plan = plan(&[rel]);
    plan.lateness_ms = 0;
    let ev = |ts, user| {
        line(&Ev {
            ts,
            user: Some(user),
            device: Some(1),
            kind: true,
        }) + "\n"
    };
    let runs = [ev(100, 1), ev(129, 2), ev(129, 3)];
    let one = run_engine(&plan, &runs.concat(), 1, 1000, StateConfig::Memory);
    assert!(
        one.ends_with("\"r0\":3}}\n"),
        "u1, u2 and u3 in [100, 130): {one}"
    );
    // Three writers in turn: the second may trim below 100 (its bucket's start minus the
    // window), not below 109 (its time minus the window).
    let options = redis_options(urls);
    let mut out = String::new();
    for run in &runs {
        let state = StateConfig::Redis(options.clone());
        let (events, dead) = run_with_dead_letters(&plan, run, 1, 1000, state);
        assert!(dead.is_empty(), "{dead}");
        out += &events;
    }
    assert_eq!(out, one);
}

/// URLs of the test Redis Cluster (see `scripts/test.sh`), or `None` to skip; required (a
/// panic) when `SLUICE_REQUIRE_REDIS` or `CI` is set.
fn redis_urls() -> Option<Vec<String>> {
    match std::env::var("SLUICE_REDIS_URLS") {
        Ok(u) if !u.trim().is_empty() => Some(u.split(',').map(|s| s.trim().to_owned()).collect()),
        _ => {
            assert!(
                std::env::var_os("SLUICE_REQUIRE_REDIS").is_none()
                    && std::env::var_os("CI").is_none(),
                "this test needs a Redis Cluster but SLUICE_REDIS_URLS is not set; run scripts/test.sh"
            );
            None
        }
    }
}

static NAMESPACES: AtomicU64 = AtomicU64::new(0);

/// Redis settings with a namespace no other run uses.
fn redis_options(urls: Vec<String>) -> RedisOptions {
    RedisOptions {
        urls,
        namespace: format!(
            "relations-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        ),
        flush_keys: 64,
        cluster: ClusterOptions::default(),
    }
}
