//! The whole engine (parse → router → shards → merge → format) against a brute-force oracle.
//!
//! Random plans (1-6 features over up to 3 key specs, every aggregation, windows of 5, 10 or
//! 50 ms, granularity 1 or 5 ms, lateness 0, 3, 20 or 1000 ms) run over random JSONL text: key
//! fields of several JSON types and spellings (`1`, `1.0` and `1e0` are one key, `"1"` another;
//! `"\u00e9"` and `"é"` one string), two-decimal amounts, times with disorder and runs of equal
//! timestamps, nested objects read by field paths (`n.v`, ``n.`k.d` ``, a key holding a dot,
//! beside a decoy `n.k.d`; sometimes `n` is not an object), blank lines, and bad records of
//! every kind. The input is read in small chunks
//! into small batches, so that windows span many batches and keys many shards.
//!
//! The oracle reads every line with serde_json and decides, in input order:
//! - a blank line is skipped (but counts for line numbers);
//! - `malformed` if the line is not a JSON object, `reserved_field` if it has `features`,
//!   `missing_time` / `bad_time` for the time, `wrong_type` if a key or `of` field holds an
//!   object or array, or a field aggregated by sum/avg/min/max holds a string or boolean (in
//!   this order, as the engine checks them; docs/semantics.md does not rank them);
//! - `late` if an event was accepted before and `ts < newest accepted ts - lateness`;
//! - else accepted: each feature is the aggregation over every accepted event so far (itself
//!   included) with equal key values (by JSON type and value, numbers by numeric value), the
//!   `of` field present and not null, and `bucket(x.ts)` in `[bucket(t) - W, bucket(t)]` with
//!   `bucket(ts) = floor(ts / g) * g`; null if the event lacks a key field (an empty `by` is
//!   one key every event has); an event without the `of` field is not added but reads its
//!   window (empty: a count, sum or distinct count of 0, anything else null; a sample
//!   variance or deviation is null below two values, a population one 0 for one value);
//!   `first` is the `of` of the window's event with the smallest bucket (ties: the earliest
//!   arrival), `last` of the one with the largest (ties: the latest arrival), `lag` the same
//!   among the events before this one, a quantile the k-th smallest, `k = ceil(q·n)`.
//!
//! The output must hold one line per accepted event, in input order, equal to the input line
//! (trailing whitespace trimmed) without its closing `}`, then `,"features":{...}}` with the
//! features in plan order; the dead letters one line per rejected record with its reason, line
//! number and raw text; and both must be byte-identical for two different worker counts.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use proptest::test_runner::TestCaseError;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use sluice_core::agg::Quantile;
use sluice_core::{Agg, FeatureSpec, Plan};
use sluice_engine::state::redis::{ClusterOptions, RedisOptions};
use sluice_engine::state::EmbeddedOptions;
use sluice_engine::{
    run, InputFormat, Job, Outputs, StateConfig, Stats, StreamSource, Summary, TimeFormat,
};

// ---------------------------------------------------------------------------------------------
// Generated input.

/// The key specs a plan draws from; the last one is the global key.
const KEY_SPECS: [&[&str]; 6] = [&["u"], &["d"], &["u", "m"], &["m", "d"], &["n.`k.d`"], &[]];

/// How a record writes its time.
#[derive(Debug, Clone, Copy)]
enum TsForm {
    Int,
    WholeFloat,
    Missing,
    Null,
    Text,
    Fraction,
}

/// One generated record. The clock advances by `advance`; the record's time is the clock
/// minus `back` (disorder without drifting ever later).
#[derive(Debug, Clone)]
struct Rec {
    advance: i64,
    back: i64,
    ts: TsForm,
    u: Option<&'static str>,
    d: Option<&'static str>,
    m: Option<&'static str>,
    v: Option<String>,
    w: Option<String>,
    /// A nested object (or, sometimes, a scalar where an object is expected), as JSON text.
    n: Option<String>,
    extra: Option<&'static str>,
    reserved: bool,
    order: [u8; 9],
    style: u8,
    trailing: &'static str,
}

#[derive(Debug, Clone)]
enum LineGen {
    Blank(&'static str),
    Record(Rec),
    Malformed(Rec, u8, u16),
}

/// A key field value as JSON text (`None`: the field is missing); with `bad`, sometimes an
/// object or array: a `wrong_type` whenever the field is a key or `of` field, whatever the
/// other key fields hold (a missing `u` does not hide a bad `m` in `by = ["u", "m"]`).
fn key_value(bad: bool) -> impl Strategy<Value = Option<&'static str>> {
    let bad: &'static [&'static str] = if bad {
        &["{\"k\":1}", "[1]"]
    } else {
        &["null"]
    };
    prop_oneof![
        24 => select(&["\"a\"", "\"b\""][..]).prop_map(Some),
        8 => select(
            &[
                "\"\\u00e9\"", "\"é\"", "\"q\\\"t\"", "1", "1.0", "1e0", "2", "0", "-0.0",
                "true", "\"1\"",
            ][..]
        )
        .prop_map(Some),
        4 => Just(None),
        2 => Just(Some("null")),
        1 => select(bad).prop_map(Some),
    ]
}

/// A two-decimal amount in cents as JSON text: `12.30`, or the shortest form `12.3`.
fn cents_text(cents: i64, shortest: bool) -> String {
    if shortest {
        format!("{}", cents as f64 / 100.0)
    } else {
        let sign = if cents < 0 { "-" } else { "" };
        let a = cents.abs();
        format!("{sign}{}.{:02}", a / 100, a % 100)
    }
}

fn amount() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => (
            prop_oneof![-300i64..3000, select(vec![0i64, 10, 20, -30, 100, 1230, 2500])],
            any::<bool>()
        )
            .prop_map(|(c, shortest)| Some(cents_text(c, shortest))),
        2 => Just(None),
        1 => Just(Some("null".to_owned())),
        1 => select(&["\"12.00\"", "true"][..]).prop_map(|s| Some(s.to_owned())),
    ]
}

fn rec() -> impl Strategy<Value = Rec> {
    let time = (
        prop_oneof![4 => Just(0i64), 5 => 1i64..=3, 1 => 4i64..=30],
        prop_oneof![12 => Just(0i64), 3 => 1i64..=4, 1 => 5i64..=30],
        prop_oneof![
            80 => Just(TsForm::Int),
            2 => Just(TsForm::WholeFloat),
            1 => Just(TsForm::Missing),
            1 => Just(TsForm::Null),
            1 => Just(TsForm::Text),
            1 => Just(TsForm::Fraction),
        ],
    );
    let keys = (key_value(true), key_value(true), key_value(true));
    let amounts = (
        amount(),
        prop_oneof![3 => Just(None), 2 => amount()],
        nested(),
    );
    let other = (
        prop::option::weighted(
            0.2,
            select(
                &[
                    "\"hi\"",
                    "{\"a\":[1,{\"b\":null}]}",
                    "[1,2,3]",
                    "3.5e2",
                    "\"features\"",
                ][..],
            ),
        ),
        prop::bool::weighted(0.01),
    );
    let layout = (
        proptest::array::uniform9(any::<u8>()),
        0u8..8,
        select(&["", "", "", "", " ", "\t", "\r"][..]),
    );
    (time, keys, amounts, other, layout).prop_map(
        |(
            (advance, back, ts),
            (u, d, m),
            (v, w, n),
            (extra, reserved),
            (order, style, trailing),
        )| {
            Rec {
                advance,
                back,
                ts,
                u,
                d,
                m,
                v,
                w,
                n,
                extra,
                reserved,
                order,
                style,
                trailing,
            }
        },
    )
}

/// The nested field `n`: an object with an amount `v` and a key `k.d` (a key holding a dot),
/// either of them missing, or a scalar where the object is expected (its paths are missing).
fn nested() -> impl Strategy<Value = Option<String>> {
    let object = (amount(), key_value(true), any::<bool>()).prop_map(|(v, k, deeper)| {
        let mut parts = Vec::new();
        if let Some(v) = v {
            parts.push(format!("\"v\":{v}"));
        }
        if let Some(k) = k {
            parts.push(format!("\"k.d\":{k}"));
        }
        if deeper {
            parts.push("\"k\":{\"d\":\"not this\"}".to_owned());
        }
        Some(format!("{{{}}}", parts.join(",")))
    });
    prop_oneof![
        3 => Just(None),
        6 => object,
        1 => select(&["5", "\"text\"", "null", "[1]"][..]).prop_map(|s| Some(s.to_owned())),
    ]
}

fn line_gen() -> impl Strategy<Value = LineGen> {
    prop_oneof![
        1 => select(&["", "  ", "\t", "\r"][..]).prop_map(LineGen::Blank),
        2 => (rec(), 0u8..6, any::<u16>()).prop_map(|(r, k, c)| LineGen::Malformed(r, k, c)),
        30 => rec().prop_map(LineGen::Record),
    ]
}

/// The text of a record at time `ts`, without trailing whitespace.
fn render_rec(r: &Rec, ts: i64) -> String {
    let ts_text = match r.ts {
        TsForm::Int => Some(ts.to_string()),
        TsForm::WholeFloat => Some(format!("{ts}.0")),
        TsForm::Missing => None,
        TsForm::Null => Some("null".to_owned()),
        TsForm::Text => Some("\"soon\"".to_owned()),
        TsForm::Fraction => Some(format!("{ts}.5")),
    };
    let own = |s: Option<&str>| s.map(str::to_owned);
    let candidates = [
        ("ts", ts_text),
        ("u", own(r.u)),
        ("d", own(r.d)),
        ("m", own(r.m)),
        ("v", r.v.clone()),
        ("w", r.w.clone()),
        ("n", r.n.clone()),
        ("x", own(r.extra)),
        ("features", r.reserved.then(|| "{\"f0\":1}".to_owned())),
    ];
    let mut fields: Vec<(u8, &str, String)> = candidates
        .into_iter()
        .zip(r.order)
        .filter_map(|((name, value), o)| value.map(|v| (o, name, v)))
        .collect();
    fields.sort_by_key(|&(o, name, _)| (o, name));
    let sep = if r.style & 1 != 0 { ", " } else { "," };
    let colon = if r.style & 2 != 0 { ": " } else { ":" };
    let mut s = String::from(if r.style & 4 != 0 { "{ " } else { "{" });
    for (i, (_, name, value)) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        s.push_str(&format!("\"{name}\"{colon}{value}"));
    }
    s.push_str(if r.style & 4 != 0 { " }" } else { "}" });
    s
}

/// Renders the lines, advancing the clock from `base`.
fn render(lines: &[LineGen], base: i64) -> Vec<String> {
    let mut clock = base;
    lines
        .iter()
        .map(|line| match line {
            LineGen::Blank(s) => (*s).to_owned(),
            LineGen::Record(r) => {
                clock += r.advance;
                format!("{}{}", render_rec(r, clock - r.back), r.trailing)
            }
            LineGen::Malformed(r, kind, cut) => {
                clock += r.advance;
                let text = render_rec(r, clock - r.back);
                match kind {
                    0 => {
                        // A proper prefix of an object is never a valid object.
                        let mut at = 1 + usize::from(*cut) % (text.len() - 1);
                        while !text.is_char_boundary(at) {
                            at -= 1;
                        }
                        text[..at].to_owned()
                    }
                    1 => "[1,2]".to_owned(),
                    2 => format!("{},}}", &text[..text.len() - 1]),
                    3 => format!("{text} x"),
                    4 => "not json".to_owned(),
                    _ => "\"str\"".to_owned(),
                }
            }
        })
        .collect()
}

/// One test case: a plan, the input lines, and two runs' settings
/// `(workers, batch_bytes, read chunk)` with different worker counts.
#[derive(Clone)]
struct Case {
    features: Vec<FeatureSpec>,
    lateness: i64,
    lines: Vec<String>,
    final_newline: bool,
    runs: [(usize, usize, usize); 2],
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Case {{ lateness: {}, runs: {:?}",
            self.lateness, self.runs
        )?;
        for s in &self.features {
            writeln!(
                f,
                "  {} = {}({}) over {} ms (g {}) by {:?}",
                s.name,
                s.agg,
                s.of.as_deref().unwrap_or(""),
                s.window_ms,
                s.granularity_ms,
                s.by
            )?;
        }
        for (i, line) in self.lines.iter().enumerate() {
            writeln!(f, "  {:>3}: {line:?}", i + 1)?;
        }
        write!(f, "  final newline: {} }}", self.final_newline)
    }
}

impl Case {
    fn input(&self) -> String {
        let mut s = self.lines.join("\n");
        if self.final_newline {
            s.push('\n');
        }
        s
    }
}

fn agg_of() -> impl Strategy<Value = (Agg, Option<&'static str>)> {
    const ANY: &[&str] = &["v", "u", "d", "m", "w", "n.v", "n.`k.d`"];
    prop_oneof![
        prop::option::of(select(ANY)).prop_map(|of| (Agg::Count, of)),
        (
            select(&[Agg::Sum, Agg::Avg, Agg::Min, Agg::Max][..]),
            select(&["v", "v", "v", "w", "n.v"][..])
        )
            .prop_map(|(agg, of)| (agg, Some(of))),
        (
            select(&[Agg::Variance, Agg::Stddev, Agg::VariancePop, Agg::StddevPop][..]),
            select(&["v", "v", "w", "n.v"][..])
        )
            .prop_map(|(agg, of)| (agg, Some(of))),
        (select(&[Agg::DistinctCount, Agg::Last][..]), select(ANY))
            .prop_map(|(agg, of)| (agg, Some(of))),
        (
            select(
                &[
                    Agg::First,
                    Agg::Last,
                    Agg::Lag,
                    Agg::DistinctCountApprox,
                    Agg::Set(2),
                    Agg::Set(100)
                ][..]
            ),
            select(ANY)
        )
            .prop_map(|(agg, of)| (agg, Some(of))),
        (
            select(&[Quantile(500_000_000), Quantile(900_000_000), Quantile(1)][..]),
            select(&["v", "v", "w", "n.v"][..])
        )
            .prop_map(|(q, of)| (Agg::Quantile(q), Some(of))),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let feature = (
        agg_of(),
        any::<Index>(),
        select(&[5i64, 10, 50][..]),
        select(&[1i64, 5][..]),
        prop::option::weighted(0.4, 0..FILTERS.len()),
    );
    let plan = (
        subsequence(vec![0usize, 1, 2, 3, 4, 5], 1..=3),
        prop::collection::vec(feature, 1..=6),
        select(&[0i64, 3, 20, 1000][..]),
    );
    let input = (
        prop::collection::vec(line_gen(), 1..=120),
        select(&[0i64, -37, 1_000_000][..]),
        any::<bool>(),
    );
    let runs = (
        (0usize..4, 0usize..3),
        proptest::array::uniform2((64usize..=512, 16usize..=256)),
    );
    (plan, input, runs).prop_map(
        |((pool, fs, lateness), (lines, base, final_newline), ((w, j), sizes))| {
            const WORKERS: [usize; 4] = [1, 2, 3, 5];
            let features = fs
                .into_iter()
                .enumerate()
                .map(
                    |(i, ((agg, of), k, window_ms, granularity_ms, filter))| FeatureSpec {
                        name: format!("f{i}"),
                        agg,
                        of: of.map(str::to_owned),
                        by: KEY_SPECS[pool[k.index(pool.len())]]
                            .iter()
                            .map(|s| (*s).to_owned())
                            .collect(),
                        window_ms,
                        // Sketches are per bucket: never exact.
                        granularity_ms: if agg == Agg::DistinctCountApprox {
                            5
                        } else {
                            granularity_ms
                        },
                        filter: filter.map(|i| FILTERS[i].to_owned()),
                    },
                )
                .collect();
            Case {
                features,
                lateness,
                lines: render(&lines, base),
                final_newline,
                runs: [
                    (WORKERS[w], sizes[0].0, sizes[0].1),
                    (WORKERS[(w + 1 + j) % 4], sizes[1].0, sizes[1].1),
                ],
            }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// The filters a feature may have, over the amount fields (numbers, the string `"12.00"`,
/// `true`, `null` or missing): each is evaluated by hand in [`filter_matches`].
const FILTERS: [&str; 5] = [
    "v > 10",
    "w <= 5 || v == 0",
    "!(v >= 20) && has(w)",
    "v in [10, 20.5, '12.00']",
    "n.v != 1.5",
];

/// The index in [`FILTERS`] of a feature's filter (the plan keeps the text as written when it
/// is already canonical, which these are).
fn filter_index(text: &str) -> usize {
    FILTERS
        .iter()
        .position(|f| *f == text)
        .unwrap_or_else(|| panic!("unknown filter {text}"))
}

/// Kleene's three-valued logic: `None` is unknown.
type Tri = Option<bool>;

fn and(a: Tri, b: Tri) -> Tri {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Tri, b: Tri) -> Tri {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// A numeric comparison: unknown unless the field is a number.
fn num(obj: &Map<String, Value>, path: &str, test: impl Fn(f64) -> bool) -> Tri {
    match field(obj, path) {
        Field::Val(Val::Num(v)) => Some(test(v)),
        _ => None,
    }
}

/// Whether filter `FILTERS[i]` matches (is true, not unknown) on `obj`.
fn filter_matches(i: usize, obj: &Map<String, Value>) -> bool {
    let truth = match i {
        0 => num(obj, "v", |v| v > 10.0),
        1 => or(num(obj, "w", |w| w <= 5.0), num(obj, "v", |v| v == 0.0)),
        2 => and(
            num(obj, "v", |v| v >= 20.0).map(|t| !t),
            Some(matches!(field(obj, "w"), Field::Val(_) | Field::Bad)),
        ),
        3 => match field(obj, "v") {
            Field::Val(Val::Num(v)) => Some(v == 10.0 || v == 20.5),
            Field::Val(Val::Str(s)) => Some(s == "12.00"),
            Field::Val(Val::Bool(_)) => Some(false),
            Field::Absent | Field::Bad => None,
        },
        4 => num(obj, "n.v", |v| v != 1.5),
        _ => unreachable!("five filters"),
    };
    truth == Some(true)
}

/// A present, non-null field value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// A value's identity: JSON type and value, numbers by numeric value (`-0` is `0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Canon {
    Str(String),
    Num(u64),
    Bool(bool),
}

impl Val {
    fn canon(&self) -> Canon {
        match self {
            Val::Str(s) => Canon::Str(s.clone()),
            Val::Num(v) => Canon::Num((v + 0.0).to_bits()),
            Val::Bool(b) => Canon::Bool(*b),
        }
    }
}

enum Field {
    Absent,
    Bad,
    Val(Val),
}

/// The field at path `name` (`n.v`, ``n.`k.d` ``): absent when a level on the way is not an
/// object.
fn field(obj: &Map<String, Value>, name: &str) -> Field {
    let path = sluice_core::FieldPath::parse(name).expect("a valid path");
    let (last, outer) = path.keys().split_last().expect("at least one key");
    let mut obj = obj;
    for key in outer {
        match obj.get(key) {
            Some(Value::Object(inner)) => obj = inner,
            _ => return Field::Absent,
        }
    }
    match obj.get(last) {
        None | Some(Value::Null) => Field::Absent,
        Some(Value::String(s)) => Field::Val(Val::Str(s.clone())),
        Some(Value::Number(n)) => Field::Val(Val::Num(n.as_f64().expect("a finite number"))),
        Some(Value::Bool(b)) => Field::Val(Val::Bool(*b)),
        Some(_) => Field::Bad,
    }
}

struct Accepted {
    ts: i64,
    obj: Map<String, Value>,
}

impl Accepted {
    fn get(&self, name: &str) -> Option<Val> {
        match field(&self.obj, name) {
            Field::Val(v) => Some(v),
            _ => None,
        }
    }

    fn key(&self, by: &[String]) -> Option<Vec<Canon>> {
        by.iter().map(|f| self.get(f).map(|v| v.canon())).collect()
    }
}

/// The expected value of one feature.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Null,
    Int(u64),
    /// Sum or average `.0` (the exact decimal result), within 1e-9 relative (1e-12 absolute
    /// near zero). Two-decimal amounts are summed as decimals, so cancellation gives exactly 0
    /// (0.10 + 0.20 - 0.30 prints `0`); `.1`, the sum of magnitudes, is kept for messages.
    Approx(f64, f64),
    /// Min or max: exactly.
    Exact(f64),
    /// A variance or standard deviation of two-decimal amounts, computed from exact integer
    /// cents: within 1e-12 relative (the engine's are exact decimal variances within a few
    /// roundings, printed with 15 significant digits), so exactly 0 when it is 0.
    Spread(f64),
    /// `first`, `last`, `lag`: a kept value.
    Value(Val),
    /// `set`: the JSON array.
    Set(Value),
}

#[derive(Debug, Default)]
struct Outcome {
    /// Accepted events: (index of the line, expected feature values).
    events: Vec<(usize, Vec<Expect>)>,
    /// Rejected records: (index of the line, reason).
    dead: Vec<(usize, &'static str)>,
    late: u64,
}

fn bucket(ts: i64, g: i64) -> i64 {
    ts.div_euclid(g) * g
}

fn cents(v: f64) -> i64 {
    (v * 100.0).round() as i64
}

fn trim_end(line: &str) -> &str {
    line.trim_end_matches(|c: char| c.is_ascii_whitespace())
}

/// Validates a non-blank line: its time and fields, or the reason it is rejected.
fn validate(
    features: &[FeatureSpec],
    text: &str,
) -> Result<(i64, Map<String, Value>), &'static str> {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return Err("malformed");
    };
    if obj.contains_key("features") {
        return Err("reserved_field");
    }
    let ts = match obj.get("ts") {
        None | Some(Value::Null) => return Err("missing_time"),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f.fract() == 0.0 => f as i64,
            _ => return Err("bad_time"),
        },
        Some(_) => return Err("bad_time"),
    };
    for f in features {
        for name in &f.by {
            if matches!(field(&obj, name), Field::Bad) {
                return Err("wrong_type");
            }
        }
    }
    // An `of` field is type-checked when the event would be added to a feature aggregating
    // it (one without a filter, or whose filter matches); it must hold numbers when any
    // feature sums, averages, or takes the minimum or maximum of it.
    for f in features {
        let Some(of) = &f.of else {
            continue;
        };
        let users = features.iter().filter(|g| g.of.as_ref() == Some(of));
        let checked = users.clone().any(|g| {
            g.filter
                .as_ref()
                .is_none_or(|text| filter_matches(filter_index(text), &obj))
        });
        let numeric = users.clone().any(|g| g.agg.is_numeric());
        if !checked {
            continue;
        }
        match field(&obj, of) {
            Field::Bad => return Err("wrong_type"),
            Field::Val(Val::Str(_) | Val::Bool(_)) if numeric => return Err("wrong_type"),
            _ => {}
        }
    }
    Ok((ts, obj))
}

/// The value of feature `f` for the newest of `accepted`.
fn feature_value(f: &FeatureSpec, accepted: &[Accepted]) -> Expect {
    let e = accepted.last().expect("the event itself");
    let Some(key) = e.key(&f.by) else {
        return Expect::Null;
    };
    let matches = |x: &Accepted| {
        f.filter
            .as_ref()
            .is_none_or(|text| filter_matches(filter_index(text), &x.obj))
    };
    // `lag`: among the events before this one.
    let seen = if f.agg == Agg::Lag {
        &accepted[..accepted.len() - 1]
    } else {
        accepted
    };
    let g = f.granularity_ms;
    let b = bucket(e.ts, g);
    let in_window: Vec<(i64, Option<Val>)> = seen
        .iter()
        .filter(|x| x.key(&f.by).as_ref() == Some(&key))
        .filter(|x| (b - f.window_ms..=b).contains(&bucket(x.ts, g)))
        .filter(|x| matches(x))
        .map(|x| (bucket(x.ts, g), f.of.as_ref().and_then(|of| x.get(of))))
        .filter(|(_, v)| f.of.is_none() || v.is_some())
        .collect();
    // In arrival order: the first of the smallest bucket, the last of the largest.
    let first = in_window.iter().min_by_key(|(b, _)| *b);
    let last = in_window.iter().max_by_key(|(b, _)| *b);
    let kept = |x: Option<&(i64, Option<Val>)>| {
        x.and_then(|(_, v)| v.clone())
            .map_or(Expect::Null, Expect::Value)
    };
    let of_values: Vec<Option<Val>> = accepted
        .iter()
        .filter(|x| x.key(&f.by).as_ref() == Some(&key))
        .filter(|x| (b - f.window_ms..=b).contains(&bucket(x.ts, g)))
        .filter(|x| matches(x))
        .map(|x| f.of.as_ref().map(|of| x.get(of)).unwrap_or(None))
        .filter(|v| f.of.is_none() || v.is_some())
        .collect();
    let nums = || {
        of_values.iter().map(|v| match v {
            Some(Val::Num(n)) => *n,
            other => panic!("a numeric field holds {other:?}"),
        })
    };
    let n = of_values.len() as u64;
    match f.agg {
        // An event without `of` is not added, but reads its window, which may be empty.
        Agg::Avg | Agg::Min | Agg::Max if n == 0 => Expect::Null,
        Agg::Count => Expect::Int(n),
        // Exact below 384 values (far more than a case has).
        Agg::DistinctCount | Agg::DistinctCountApprox => Expect::Int(
            of_values
                .iter()
                .map(|v| v.as_ref().expect("present").canon())
                .collect::<HashSet<_>>()
                .len() as u64,
        ),
        Agg::Sum => Expect::Approx(
            nums().map(cents).sum::<i64>() as f64 / 100.0,
            nums().map(f64::abs).sum(),
        ),
        Agg::Avg => Expect::Approx(
            nums().map(cents).sum::<i64>() as f64 / 100.0 / n as f64,
            nums().map(f64::abs).sum::<f64>() / n as f64,
        ),
        Agg::Min => Expect::Exact(nums().fold(f64::INFINITY, f64::min)),
        Agg::Max => Expect::Exact(nums().fold(f64::NEG_INFINITY, f64::max)),
        Agg::Variance | Agg::Stddev | Agg::VariancePop | Agg::StddevPop => {
            spread(f.agg, nums().map(cents))
        }
        Agg::LinkedDistinctCount | Agg::LinkedCount | Agg::LinkedDistinctCountApprox => {
            unreachable!("not generated here")
        }
        Agg::Set(_) if n == 0 => Expect::Null,
        Agg::Set(limit) => {
            let mut values: Vec<Val> = Vec::new();
            for v in of_values.iter().flatten() {
                if !values.iter().any(|w| w.canon() == v.canon()) {
                    values.push(v.clone());
                }
            }
            // Numbers by value, then strings by UTF-8 bytes, then false before true.
            let rank = |v: &Val| match v {
                Val::Num(_) => 0,
                Val::Str(_) => 1,
                Val::Bool(_) => 2,
            };
            values.sort_by(|a, b| {
                rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
                    (Val::Num(x), Val::Num(y)) => x.total_cmp(y),
                    (Val::Str(x), Val::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
                    (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
                    _ => std::cmp::Ordering::Equal,
                })
            });
            Expect::Set(Value::Array(
                values
                    .into_iter()
                    .take(limit as usize)
                    .map(|v| match v {
                        Val::Num(x) => serde_json::json!(x),
                        Val::Str(s) => Value::String(s),
                        Val::Bool(b) => Value::Bool(b),
                    })
                    .collect(),
            ))
        }
        Agg::First => kept(first),
        Agg::Last | Agg::Lag => kept(last),
        Agg::Quantile(_) if n == 0 => Expect::Null,
        Agg::Quantile(q) => {
            let mut sorted: Vec<f64> = nums().collect();
            sorted.sort_by(f64::total_cmp);
            Expect::Exact(sorted[q.rank(sorted.len()) - 1])
        }
    }
}

/// The variance (or standard deviation) of amounts given in integer cents, exactly up to the
/// final roundings: `(n·Σc² - (Σc)²) / (n·d) / 1e4` with `d` = `n - 1` (sample) or `n`.
fn spread(agg: Agg, cents: impl Iterator<Item = i64>) -> Expect {
    let population = matches!(agg, Agg::VariancePop | Agg::StddevPop);
    let (mut n, mut s, mut q) = (0i128, 0i128, 0i128);
    for c in cents {
        n += 1;
        s += i128::from(c);
        q += i128::from(c) * i128::from(c);
    }
    if n == 0 || (n == 1 && !population) {
        return Expect::Null;
    }
    let d = if population { n } else { n - 1 };
    let variance = (n * q - s * s) as f64 / (n * d) as f64 / 1e4;
    Expect::Spread(if matches!(agg, Agg::Stddev | Agg::StddevPop) {
        variance.sqrt()
    } else {
        variance
    })
}

fn oracle(features: &[FeatureSpec], lateness: i64, lines: &[String]) -> Outcome {
    let mut out = Outcome::default();
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut newest: Option<i64> = None;
    for (i, line) in lines.iter().enumerate() {
        let text = trim_end(line);
        if text.is_empty() {
            continue;
        }
        let (ts, obj) = match validate(features, text) {
            Ok(ok) => ok,
            Err(reason) => {
                out.dead.push((i, reason));
                continue;
            }
        };
        if newest.is_some_and(|n| ts < n - lateness) {
            out.dead.push((i, "late"));
            out.late += 1;
            continue;
        }
        newest = Some(newest.map_or(ts, |n| n.max(ts)));
        accepted.push(Accepted { ts, obj });
        let values = features
            .iter()
            .map(|f| feature_value(f, &accepted))
            .collect();
        out.events.push((i, values));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Running the engine.

/// Yields its data at most `chunk` bytes per read, so that batches stay small.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("UTF-8 output")
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs the engine; returns (events, dead letters, summary).
fn run_engine(
    plan: &Plan,
    input: &str,
    run_shape: (usize, usize, usize),
) -> (String, String, Summary) {
    run_engine_with(plan, input, run_shape, StateConfig::Memory)
}

/// Runs the engine with state in `state`.
fn run_engine_with(
    plan: &Plan,
    input: &str,
    (workers, batch_bytes, chunk): (usize, usize, usize),
    state: StateConfig,
) -> (String, String, Summary) {
    let mut job = Job::new(plan.clone(), "ts", TimeFormat::EpochMs, workers).with_state(state);
    job.batch_bytes = batch_bytes;
    let events = Shared::default();
    let dead = Shared::default();
    let outputs = Outputs::writers(Box::new(events.clone()), Box::new(dead.clone()));
    let mut input = StreamSource::new(
        Box::new(Trickle {
            data: input.as_bytes().to_vec(),
            pos: 0,
            chunk,
        }),
        "in.jsonl",
        InputFormat::Jsonl,
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(&job, &mut input, outputs, Arc::new(Stats::default())));
    });
    let summary = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the run hung")
        .expect("the run succeeds");
    (events.text(), dead.text(), summary)
}

/// A JSON object's entries in their written order.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V)
    }
}

fn matches(expect: &Expect, got: &Value) -> bool {
    match expect {
        Expect::Null => got.is_null(),
        Expect::Int(n) => got.as_u64() == Some(*n),
        Expect::Approx(x, _) => got
            .as_f64()
            .is_some_and(|g| (g - x).abs() <= 1e-9 * x.abs() + 1e-12),
        Expect::Exact(x) => got.as_f64() == Some(*x),
        Expect::Spread(x) => got.as_f64().is_some_and(|g| (g - x).abs() <= 1e-12 * x),
        Expect::Value(Val::Num(x)) => got.as_f64() == Some(*x),
        Expect::Value(Val::Str(s)) => got.as_str() == Some(s),
        Expect::Value(Val::Bool(b)) => got.as_bool() == Some(*b),
        Expect::Set(Value::Array(want)) => got.as_array().is_some_and(|got| {
            got.len() == want.len()
                && got
                    .iter()
                    .zip(want)
                    .all(|(g, w)| match (g.as_f64(), w.as_f64()) {
                        (Some(g), Some(w)) => g == w,
                        _ => g == w,
                    })
        }),
        Expect::Set(_) => false,
    }
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let plan = Plan::new(case.features.clone(), case.lateness).expect("a valid plan");
    let input = case.input();
    let (events, dead, summary) = run_engine(&plan, &input, case.runs[0]);
    let (events2, dead2, _) = run_engine(&plan, &input, case.runs[1]);
    prop_assert_eq!(&events, &events2, "events differ between worker counts");
    prop_assert_eq!(&dead, &dead2, "dead letters differ between worker counts");

    let want = oracle(&case.features, case.lateness, &case.lines);

    // Enriched events.
    let got: Vec<&str> = events.lines().collect();
    prop_assert_eq!(
        got.len(),
        want.events.len(),
        "number of output events\n{}",
        events
    );
    for (out, (i, values)) in got.iter().zip(&want.events) {
        let line_no = i + 1;
        let text = trim_end(&case.lines[*i]);
        let prefix = format!("{},\"features\":", &text[..text.len() - 1]);
        prop_assert!(
            out.starts_with(&prefix) && out.ends_with('}'),
            "line {}: output {:?} does not extend the input {:?}",
            line_no,
            out,
            text
        );
        prop_assert!(
            serde_json::from_str::<Map<String, Value>>(out).is_ok(),
            "line {}: output {:?} is not a JSON object",
            line_no,
            out
        );
        let object = &out[prefix.len()..out.len() - 1];
        let Ok(Ordered(features)) = serde_json::from_str::<Ordered>(object) else {
            return Err(TestCaseError::fail(format!(
                "line {line_no}: features {object:?} are not a JSON object"
            )));
        };
        let names: Vec<&str> = features.iter().map(|(n, _)| n.as_str()).collect();
        let want_names: Vec<&str> = case.features.iter().map(|f| f.name.as_str()).collect();
        prop_assert_eq!(names, want_names, "line {}: feature names", line_no);
        for ((name, value), expect) in features.iter().zip(values) {
            prop_assert!(
                matches(expect, value),
                "line {}: feature {} is {} but the oracle says {:?}\n  input:  {}\n  output: {}",
                line_no,
                name,
                value,
                expect,
                text,
                out
            );
        }
    }

    // Dead letters.
    let got: Vec<&str> = dead.lines().collect();
    prop_assert_eq!(
        got.len(),
        want.dead.len(),
        "number of dead letters\n{}",
        dead
    );
    for (out, (i, reason)) in got.iter().zip(&want.dead) {
        let letter: Value = serde_json::from_str(out).expect("a dead letter is JSON");
        let text = trim_end(&case.lines[*i]);
        prop_assert_eq!(
            (
                letter["reason"].as_str(),
                letter["line"].as_u64(),
                letter["raw"].as_str(),
                letter["source"].as_str()
            ),
            (
                Some(*reason),
                Some(*i as u64 + 1),
                Some(text),
                Some("in.jsonl")
            ),
            "dead letter {}",
            out
        );
        prop_assert!(letter["error"].is_string(), "dead letter {}", out);
    }

    // Counters.
    // Lines read, blank ones included; an empty input has none.
    let records = input.lines().count();
    prop_assert_eq!(
        (
            summary.records,
            summary.events,
            summary.dead_letters,
            summary.late
        ),
        (
            records as u64,
            want.events.len() as u64,
            want.dead.len() as u64,
            want.late
        ),
        "summary"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 320, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_oracle(case in case()) {
        check(&case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The embedded backend with a tiny memory budget (keys go to disk and come back all the
    /// time) gives the memory backend's output byte for byte.
    #[test]
    fn embedded_state_matches_memory_state(case in case(), cap in 1usize..20_000) {
        let plan = Plan::new(case.features.clone(), case.lateness).expect("a valid plan");
        let input = case.input();
        let (events, dead, _) = run_engine(&plan, &input, case.runs[0]);
        let dir = tempfile::tempdir().expect("temp dir");
        let options = EmbeddedOptions { dir: dir.path().to_owned(), memory_cap: cap };
        let (e_events, e_dead, _) =
            run_engine_with(&plan, &input, case.runs[1], StateConfig::Embedded(options));
        prop_assert_eq!(&events, &e_events, "events differ between memory and embedded state");
        prop_assert_eq!(&dead, &e_dead, "dead letters differ between memory and embedded state");
    }
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

static NAMESPACES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Redis settings with a namespace no other run uses.
fn redis_options(flush_keys: usize) -> RedisOptions {
    RedisOptions {
        urls: redis_urls().unwrap_or_default(),
        namespace: format!(
            "oracle-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
        flush_keys,
        cluster: ClusterOptions::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The Redis backend gives the memory backend's output byte for byte (and the memory
    /// backend is checked against the oracle above), with small flushes so that keys span many.
    #[test]
    fn redis_state_matches_memory_state(
        case in case(),
        flush_keys in 1usize..8,
        split in 0.0f64..1.0,
    ) {
        let Some(urls) = redis_urls() else {
            return Ok(());
        };
        let plan = Plan::new(case.features.clone(), case.lateness).expect("a valid plan");
        let input = case.input();
        let (events, dead, _) = run_engine(&plan, &input, case.runs[0]);
        let options = RedisOptions { urls, ..redis_options(flush_keys) };
        let (r_events, r_dead, summary) =
            run_engine_with(&plan, &input, case.runs[1], StateConfig::Redis(options));
        prop_assert_eq!(&events, &r_events, "events differ between memory and Redis state");
        prop_assert_eq!(&dead, &r_dead, "dead letters differ between memory and Redis state");
        prop_assert!(summary.traffic.is_some(), "Redis traffic is counted");

        // A restart: the first part of the stream in one run, the rest in another with an
        // empty cache, which rebuilds each key from its log in Redis. Without late events
        // (the second run judges lateness afresh) the events are the same as one run's.
        if dead.contains("\"reason\":\"late\"") {
            return Ok(());
        }
        let cut = input
            .match_indices('\n')
            .map(|(i, _)| i + 1)
            .nth((split * case.lines.len() as f64) as usize)
            .unwrap_or(input.len());
        let (first, second) = input.split_at(cut);
        let options = RedisOptions {
            ..redis_options(flush_keys)
        };
        let (e1, _, _) = run_engine_with(&plan, first, case.runs[0], StateConfig::Redis(options.clone()));
        let (e2, _, _) = run_engine_with(&plan, second, case.runs[1], StateConfig::Redis(options));
        prop_assert_eq!(&events, &(e1 + &e2), "events differ after a restart on Redis state");
    }
}
