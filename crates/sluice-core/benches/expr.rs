//! Expression evaluation: typical `where` filters and a derived `expr`, compiled once and
//! evaluated per event.
//!
//! A fixed batch of synthetic events (a status, an amount that is sometimes missing, an event
//! type) sits behind a small [`Fields`] implementation, as the engine's extracted fields would;
//! each iteration evaluates the next event of the batch.
//!
//! Run with `cargo bench -p sluice-core --bench expr`; each benchmark reports the time per
//! evaluation (`Throughput::Elements(1)` per iteration).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::expr::{parse, Compiled, Fields, Value};

/// One event's extracted fields.
struct Row<'a> {
    status: Value<'a>,
    amount: Value<'a>,
    kind: Value<'a>,
}

impl Fields for Row<'_> {
    #[inline]
    fn get(&self, slot: u32) -> Value<'_> {
        match slot {
            0 => self.status,
            1 => self.amount,
            2 => self.kind,
            _ => Value::Missing,
        }
    }
}

const STATUSES: [&str; 3] = ["ok", "failed", "pending"];
const KINDS: [&str; 5] = ["login", "register", "pay", "logout", "refund"];

/// 1024 events from a fixed seed (SplitMix64).
fn rows() -> Vec<Row<'static>> {
    let mut state = 0x5EED_0002_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..1024)
        .map(|_| Row {
            status: Value::Str(STATUSES[(next() % 3) as usize]),
            amount: match next() % 10 {
                0 => Value::Missing,
                _ => Value::Num((next() % 50_000) as f64 / 100.0),
            },
            kind: Value::Str(KINDS[(next() % 5) as usize]),
        })
        .collect()
}

fn compile(text: &str) -> Compiled {
    let ast = parse(text).expect("valid expression");
    ast.compile(|path| match path[0].as_str() {
        "status" => Ok(0),
        "amount" => Ok(1),
        "type" => Ok(2),
        other => Err(format!("unknown field {other}")),
    })
    .expect("known fields")
}

fn expr(c: &mut Criterion) {
    let rows = rows();
    let mut group = c.benchmark_group("expr");
    group.throughput(Throughput::Elements(1));
    let long_list: Vec<String> = (0..32).map(|i| format!("'kind{i}'")).collect();
    let long_in = format!("type in [{}, 'pay']", long_list.join(", "));
    for (name, text) in [
        ("filter/and_cmp", r#"status == "failed" && amount > 100"#),
        ("filter/in", r#"type in ["login", "register"]"#),
        ("filter/in_33", long_in.as_str()),
        (
            "filter/mixed",
            r#"(type in ["pay", "refund"] || status.startsWith("fail")) && has(amount)"#,
        ),
    ] {
        let filter = compile(text);
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(filter.eval_filter(black_box(&rows[i])))
            })
        });
    }
    let derived = compile("status == 'failed' ? coalesce(amount, 0) * 1.2 : round(amount / 3)");
    let mut i = 0;
    group.bench_function("derived/arith", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(derived.eval(black_box(&rows[i])));
        })
    });
    group.finish();
}

criterion_group!(benches, expr);
criterion_main!(benches);
