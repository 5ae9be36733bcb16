//! Relation features (`linked_distinct_count`, and `linked_distinct_count_approx` in buckets of
//! a minute: `/approx`): time per event.
//!
//! - `typical`: users on a few devices each, each device shared by about three users; an event
//!   reads its user's devices and their few events.
//! - `hub/10k`: every event comes from one device shared by 10,000 users within the window
//!   (a day, 10,000 events): each event links its user to the hub and reads the hub's 10,000
//!   events of the day (distinct users: 10,000), the cost `link_limit` bounds. The
//!   approximation reads the hub's window union instead.
//!
//! State is warmed for a window first and time moves on as measured, so the window slides and
//! evicts as in production. Run with `cargo bench -p sluice-core --bench relation`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::relation::{LinkAgg, LinkEvent, LinkIndex, Relation, LINK_LIMIT};

const DAY: i64 = 86_400_000;

/// `(user, device)` of step `i` of a stream.
type Shape = fn(u64) -> (u64, u64);

/// A stream of events at one key and via value per step.
struct Stream {
    index: LinkIndex,
    relation: Relation,
    step: u64,
    /// Events per day.
    per_day: u64,
    /// `(user, device)` of each step.
    shape: Shape,
}

impl Stream {
    fn new(per_day: u64, shape: Shape, agg: LinkAgg) -> Stream {
        Stream {
            index: LinkIndex::new(),
            relation: Relation {
                feature: 0,
                agg,
                by: vec![0],
                via: 1,
                of: Some(0),
                window_ms: DAY,
                via_filter: None,
                filter: None,
                limit: LINK_LIMIT,
            },
            step: 0,
            per_day,
            shape,
        }
    }

    fn next(&mut self) {
        let (user, device) = (self.shape)(self.step);
        let ts = (self.step * DAY as u64 / self.per_day) as i64;
        let (user, device) = (user.to_le_bytes(), device.to_le_bytes());
        let e = LinkEvent {
            ts,
            key: Some(&user),
            via: Some(&device),
            of: Some(&user),
            via_matches: true,
            matches: true,
        };
        black_box(self.index.observe(&self.relation, &e, ts));
        self.step += 1;
    }

    fn warm(mut self) -> Self {
        for _ in 0..self.per_day {
            self.next();
        }
        self
    }
}

fn relation(c: &mut Criterion) {
    let quick = std::env::args().any(|a| a == "--test");
    let mut group = c.benchmark_group("relation");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(3));
    // 100k users, each on 3 of 100k devices: a device has about 3 users.
    let typical: Shape = |i| {
        let user = (i * 7919) % 100_000;
        (user, (user * 3 + i % 3) % 100_000)
    };
    let hub: Shape = |i| (i % 10_000, 0);
    let exact = LinkAgg::DistinctCount;
    let approx = LinkAgg::DistinctCountApprox {
        granularity_ms: 60_000,
    };
    let cases: [(&str, u64, Shape, LinkAgg); 4] = [
        ("typical", 1_000_000, typical, exact),
        ("hub/10k", 10_000, hub, exact),
        ("typical/approx", 1_000_000, typical, approx),
        ("hub/10k/approx", 10_000, hub, approx),
    ];
    for (name, per_day, shape, agg) in cases {
        let mut stream: Option<Stream> = None;
        group.bench_function(name, |b| {
            let s = stream.get_or_insert_with(|| {
                let s = Stream::new(per_day, shape, agg);
                if quick {
                    s
                } else {
                    s.warm()
                }
            });
            b.iter(|| s.next())
        });
    }
    group.finish();
}

criterion_group!(benches, relation);
criterion_main!(benches);
