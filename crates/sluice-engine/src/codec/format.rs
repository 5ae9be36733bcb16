//! The output stage: enriched events as JSON lines, and dead letters.

use sluice_core::derived::{Input, Output};
use sluice_core::expr::{Compiled, Type, Val, Value};
use sluice_core::{canonical_parts, Agg, FeatureValue, Plan};
use smallvec::SmallVec;

use crate::codec::parse::slot_text;
use crate::dataflow::batch::{FieldKind, FieldSlot, ParsedBatch, Rejection};

/// The key spec of [`OutputLayout::write_event`]'s `value` that names a relation feature
/// (its slot: the index in `plan.relations`).
pub const RELATION: usize = usize::MAX;

/// Appends `s` as a JSON string literal.
pub fn escape_json_str(out: &mut Vec<u8>, s: &str) {
    escape_json_bytes(out, s.as_bytes());
}

pub use sluice_core::value::escape_json_bytes;

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Appends a computed number (sum, avg) rounded to 15 significant digits, so that a sum of
/// two-decimal amounts prints as `1234.56`, not `1234.5600000000002`. Integral values print
/// without a fraction.
pub fn write_computed(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if !write_15_digits(out, v, false) {
        write_shortest(out, v);
    }
}

/// Appends an observed number exactly: the shortest text that reads back as the same `f64`
/// (integral values without a fraction).
pub fn write_exact(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if !write_15_digits(out, v, true) {
        write_shortest(out, v);
    }
}

fn write_shortest(out: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(v as i64).as_bytes());
    } else {
        let mut b = ryu::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    }
}

/// Writes `v` rounded to 15 significant digits in plain decimal notation, trailing zeros
/// trimmed, when `1e-5 <= |v| < 1e15` (else returns false and writes nothing). With `exact`,
/// only when that text reads back as exactly `v`.
///
/// Integer arithmetic instead of a shortest-round-trip search: the digits are
/// `round(|v| * 10^d)` for the `d` that leaves 15 of them. When the text reads back as `v` it is
/// also the shortest such text (two decimals of at most 15 digits are too far apart to round to
/// the same double), so `exact` output equals ryu's.
///
/// The digits are formatted once, as one integer, and the point is placed among them; the
/// trailing zeros are trimmed on the text. (Splitting the integer at the point instead costs
/// a division by a variable power of ten and a loop of divisions per trailing zero, and this
/// runs for several numbers of every output line.)
fn write_15_digits(out: &mut Vec<u8>, v: f64, exact: bool) -> bool {
    let a = v.abs();
    if a == 0.0 {
        out.push(b'0');
        return true;
    }
    if !(1e-5..1e15).contains(&a) {
        return false;
    }
    // Decimals that leave 15 significant digits, from the table (exact, unlike log10).
    // (Counted rather than searched: the count has no branch to mispredict, and the numbers
    // of consecutive lines differ in magnitude.)
    let decimals = if a >= 1.0 {
        15 - POW10[..16].iter().filter(|&&p| p <= a).count() // digits before the point: 1..=15
    } else {
        14 + POW10[..6].iter().filter(|&&p| a * p < 1.0).count() // leading zeros after it: 0..=4
    };
    let scale = POW10[decimals];
    // `round`, half away from zero: `a * scale` is at most about 1e15 (< 2^50), where adding
    // 0.5 is exact, so truncating after it rounds exactly (`f64::round` is a library call on
    // baseline x86_64; a conversion to `i64` is one instruction, to `u64` several).
    let n = (a * scale + 0.5) as i64 as u64;
    if exact && n as f64 / scale != a {
        return false;
    }
    if v < 0.0 {
        out.push(b'-');
    }
    // `n` has 15 digits, or 16 when rounding carried into a new one: they end the buffer,
    // after zeros enough for the fraction's leading zeros (`decimals` is at most 19), and the
    // last `decimals` of them are the fraction.
    let mut buf = [b'0'; 24];
    write_16_digits(&mut buf[8..], n);
    let first = 24 - if n >= 10u64.pow(15) { 16 } else { 15 };
    let point = 24 - decimals;
    let trailing = trailing_zeros(&buf).min(decimals);
    let end = 24 - trailing;
    // The text is the integer digits (or a 0), then `.` and the fraction if it is not 0.
    // `point >= 5`, so there is room before the digits for the `.` and the `0` moved there.
    let text = if first < point {
        buf.copy_within(first..point, first - 1);
        buf[point - 1] = b'.';
        let int_end = if end > point { end } else { point - 1 };
        &buf[first - 1..int_end]
    } else {
        buf[point - 2] = b'0';
        buf[point - 1] = b'.';
        &buf[point - 2..end]
    };
    out.extend_from_slice(text);
    true
}

/// Writes the 16 decimal digits of `n` (`n < 10^16`, zero-padded) into `out`: two digits per
/// step from a table, in two halves of eight (constant divisors only).
#[inline]
fn write_16_digits(out: &mut [u8], n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    // Four independent groups of four digits, so that the steps overlap.
    let (high, low) = ((n / 100_000_000) as u32, (n % 100_000_000) as u32);
    let quads = [high / 10_000, high % 10_000, low / 10_000, low % 10_000];
    for (q, x) in quads.into_iter().enumerate() {
        for (k, pair) in [x / 100, x % 100].into_iter().enumerate() {
            let p = pair as usize * 2;
            out[q * 4 + k * 2] = PAIRS[p];
            out[q * 4 + k * 2 + 1] = PAIRS[p + 1];
        }
    }
}

/// The number of `0` digits that end `buf` (at most 16), a word at a time.
#[inline]
fn trailing_zeros(buf: &[u8; 24]) -> usize {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let word = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes")) ^ ZEROS;
    // Little-endian: the last digit is the most significant byte of the word.
    let last = (word(16).leading_zeros() / 8) as usize;
    if last < 8 {
        last
    } else {
        8 + (word(8).leading_zeros() / 8) as usize
    }
}

/// Output-side view of the plan: feature names as JSON keys, in output order.
#[derive(Debug, Clone)]
pub struct OutputLayout {
    /// `"name":` and what it is, for each output in pipeline order.
    outputs: Vec<(Vec<u8>, Output)>,
    /// `"name":` for each aggregated feature, pre-escaped.
    keys: Vec<Vec<u8>>,
    /// Derived features, compiled: each expression's inputs in the order of its slots.
    derived: Vec<(Compiled, Vec<Input>)>,
    /// The order to compute derived features in.
    derived_order: Vec<usize>,
    /// Fields read by derived features, per event.
    n_expr_fields: usize,
    /// For each feature: (key spec, slot) where its value is computed; `(RELATION, r)` for
    /// relation feature `r`.
    origin: Vec<(usize, usize)>,
    /// For each feature of aggregation `last`: the field it copies.
    own_field: Vec<Option<usize>>,
    /// Features per key spec.
    per_key: Vec<usize>,
}

impl OutputLayout {
    /// Builds the layout of a plan.
    pub fn new(plan: &Plan) -> Self {
        let n = plan.features.len();
        let mut origin = vec![(0, 0); n];
        for (k, key) in plan.keys.iter().enumerate() {
            for (slot, &f) in key.features.iter().enumerate() {
                origin[f] = (k, slot);
            }
        }
        for (r, relation) in plan.relations.iter().enumerate() {
            origin[relation.feature] = (RELATION, r);
        }
        let own_field = plan
            .features
            .iter()
            .map(|f| match (f.agg, &f.of) {
                (Agg::Last, Some(of)) => plan.fields.iter().position(|x| x == of),
                _ => None,
            })
            .collect();
        let key_of = |name: &str| {
            let mut k = Vec::new();
            escape_json_str(&mut k, name);
            k.push(b':');
            k
        };
        let keys: Vec<Vec<u8>> = plan.features.iter().map(|f| key_of(&f.name)).collect();
        let outputs = plan
            .outputs
            .iter()
            .map(|&o| match o {
                Output::Feature(f) => (keys[f].clone(), o),
                Output::Derived(d) => (key_of(&plan.derived[d].spec.name), o),
            })
            .collect();
        let derived = plan
            .derived
            .iter()
            .map(|d| {
                // A planned expression parses, and its paths are its inputs in order; one that
                // did not would give null, keeping every other derived feature in its place.
                let compile = |text: &str| {
                    let mut slot = 0;
                    sluice_core::expr::parse(text)?.compile(|_| {
                        slot += 1;
                        Ok(slot - 1)
                    })
                };
                let compiled = compile(&d.spec.expr)
                    .or_else(|_| compile("null"))
                    .expect("`null` is an expression");
                (compiled, d.inputs.clone())
            })
            .collect();
        OutputLayout {
            outputs,
            derived,
            derived_order: plan.derived_order.clone(),
            n_expr_fields: plan.expr_fields.len(),
            keys,
            origin,
            own_field,
            per_key: plan.keys.iter().map(|k| k.features.len()).collect(),
        }
    }

    /// A generous estimate of the bytes the features add to one output line.
    pub fn bytes_per_event(&self) -> usize {
        16 + self.keys.iter().map(|k| k.len() + 24).sum::<usize>()
    }

    /// Number of feature values an event of key spec `k` produces.
    pub fn per_key(&self, k: usize) -> usize {
        self.per_key[k]
    }

    /// Appends the enriched event: its body, then `"features":{...}}` and a newline.
    /// `value(k, slot)` gives the value computed for key spec `k` (or relation feature `slot`
    /// when `k` is [`RELATION`]), or `None` if the event has no such key; `text(k)` the text
    /// that key spec's [`FeatureValue::Text`] values point into (asked only for those).
    #[inline]
    pub fn write_event<'t>(
        &self,
        out: &mut Vec<u8>,
        batch: &ParsedBatch,
        event: usize,
        n_fields: usize,
        value: impl Fn(usize, usize) -> Option<FeatureValue>,
        text: impl Fn(usize) -> &'t [u8],
    ) {
        let e = &batch.events[event];
        let body = batch.bytes(e.body);
        out.extend_from_slice(body);
        let feature = |f: usize| {
            let (k, slot) = self.origin[f];
            value(k, slot).unwrap_or(FeatureValue::Null)
        };
        let text_of = |f: usize| text(self.origin[f].0);
        let derived = if self.derived.is_empty() {
            Vec::new()
        } else {
            self.derive(batch, event, n_fields, &feature, &text_of)
        };
        // A body holds at least the time field, so the object is never empty here.
        out.extend_from_slice(b",\"features\":{");
        for (i, (key, output)) in self.outputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            match *output {
                Output::Feature(f) => match feature(f) {
                    FeatureValue::Text { start, len } => write_text(out, text_of(f), start, len),
                    value => self.write_feature(out, batch, event, n_fields, f, value),
                },
                Output::Derived(d) => derived[d].write(out),
            }
        }
        out.extend_from_slice(b"}}\n");
    }

    /// Each output value of one event, in output order, as `emit(output, cell)`: what
    /// [`OutputLayout::write_event`] writes as JSON, for a columnar output. `value` and `text`
    /// as there.
    pub(crate) fn cells<'t>(
        &self,
        batch: &ParsedBatch,
        event: usize,
        n_fields: usize,
        value: impl Fn(usize, usize) -> Option<FeatureValue>,
        text: impl Fn(usize) -> &'t [u8],
        mut emit: impl FnMut(usize, Cell<'_>),
    ) {
        let feature = |f: usize| {
            let (k, slot) = self.origin[f];
            value(k, slot).unwrap_or(FeatureValue::Null)
        };
        let text_of = |f: usize| text(self.origin[f].0);
        let derived = if self.derived.is_empty() {
            Vec::new()
        } else {
            self.derive(batch, event, n_fields, &feature, &text_of)
        };
        for (i, (_, output)) in self.outputs.iter().enumerate() {
            let cell = match *output {
                Output::Feature(f) => match feature(f) {
                    FeatureValue::Null | FeatureValue::Beyond => Cell::Null,
                    FeatureValue::Int(n) => Cell::Int(n),
                    FeatureValue::Num(v) => Cell::Num(v),
                    FeatureValue::Exact(v) => Cell::Exact(v),
                    FeatureValue::Text { start, len } => {
                        Cell::canonical(text_at(text_of(f), start, len))
                    }
                    FeatureValue::Own => match self.own_field[f] {
                        Some(field) => {
                            let slot = &batch.fields[event * n_fields + field];
                            match slot.kind {
                                FieldKind::Missing | FieldKind::Other => Cell::Null,
                                FieldKind::Num => Cell::Exact(slot.num),
                                FieldKind::Str => Cell::Str(slot_text(&batch.arena, slot)),
                                FieldKind::Bool => {
                                    Cell::Bool(slot_text(&batch.arena, slot) == b"true")
                                }
                            }
                        }
                        None => Cell::Null,
                    },
                },
                Output::Derived(d) => match &derived[d] {
                    DerivedValue::Null => Cell::Null,
                    DerivedValue::Num(n) => Cell::Num(*n),
                    DerivedValue::Bool(b) => Cell::Bool(*b),
                    DerivedValue::Str(s) => Cell::Str(s.as_bytes()),
                },
            };
            emit(i, cell);
        }
    }

    /// The static type of each output in output order, for a columnar output's schema.
    pub(crate) fn output_types(&self, plan: &Plan) -> Vec<(String, CellType)> {
        self.outputs
            .iter()
            .map(|&(_, output)| match output {
                Output::Feature(f) => {
                    let spec = &plan.features[f];
                    let numeric_of = spec
                        .of
                        .as_ref()
                        .and_then(|of| plan.fields.iter().position(|x| x == of))
                        .is_some_and(|i| plan.numeric_fields[i]);
                    let ty = match spec.agg {
                        Agg::Count
                        | Agg::DistinctCount
                        | Agg::DistinctCountApprox
                        | Agg::LinkedCount
                        | Agg::LinkedDistinctCount
                        | Agg::LinkedDistinctCountApprox => CellType::Int,
                        agg if agg.is_numeric() => CellType::Float,
                        Agg::First | Agg::Last | Agg::Lag if numeric_of => CellType::Float,
                        // The rest: kept values of any type, and `set`'s arrays.
                        _ => CellType::Text,
                    };
                    (spec.name.clone(), ty)
                }
                Output::Derived(d) => {
                    let ty = match self.derived[d].0.ty() {
                        Type::Num => CellType::Float,
                        Type::Bool => CellType::Bool,
                        Type::Str | Type::Null | Type::Any => CellType::Text,
                    };
                    (plan.derived[d].spec.name.clone(), ty)
                }
            })
            .collect()
    }

    /// Writes the value of aggregated feature `f` (not a [`FeatureValue::Text`]: see
    /// [`write_text`]).
    #[inline(always)]
    fn write_feature(
        &self,
        out: &mut Vec<u8>,
        batch: &ParsedBatch,
        event: usize,
        n_fields: usize,
        f: usize,
        value: FeatureValue,
    ) {
        match value {
            FeatureValue::Text { .. } => out.extend_from_slice(b"null"),
            FeatureValue::Null | FeatureValue::Beyond => out.extend_from_slice(b"null"),
            FeatureValue::Int(n) => {
                let mut b = itoa::Buffer::new();
                out.extend_from_slice(b.format(n).as_bytes());
            }
            FeatureValue::Num(v) => write_computed(out, v),
            FeatureValue::Exact(v) => write_exact(out, v),
            FeatureValue::Own => {
                let field = self.own_field[f].expect("`Own` values come from `last` features");
                let slot = &batch.fields[event * n_fields + field];
                match slot.kind {
                    FieldKind::Missing | FieldKind::Other => out.extend_from_slice(b"null"),
                    FieldKind::Num => write_exact(out, slot.num),
                    FieldKind::Bool | FieldKind::Str => {
                        let text = slot_text(&batch.arena, slot);
                        if slot.kind == FieldKind::Str {
                            escape_json_bytes(out, text);
                        } else {
                            out.extend_from_slice(text);
                        }
                    }
                }
            }
        }
    }

    /// The derived features of one event (indexed like `plan.derived`), each computed after
    /// those it reads.
    #[inline(never)]
    fn derive<'t>(
        &self,
        batch: &ParsedBatch,
        event: usize,
        n_fields: usize,
        feature: &impl Fn(usize) -> FeatureValue,
        text_of: &impl Fn(usize) -> &'t [u8],
    ) -> Vec<DerivedValue> {
        let mut values = vec![DerivedValue::Null; self.derived.len()];
        for &d in &self.derived_order {
            let (compiled, sources) = &self.derived[d];
            let value = {
                let inputs: SmallVec<[Value<'_>; 8]> = sources
                    .iter()
                    .map(|source| match *source {
                        Input::Feature(f) => match feature(f) {
                            FeatureValue::Text { start, len } => {
                                canonical_value(text_at(text_of(f), start, len))
                            }
                            value => self.feature_input(batch, event, n_fields, f, value),
                        },
                        Input::Derived(j) => values[j].as_value(),
                        Input::Field(i) => {
                            let slot = &batch.expr_values[event * self.n_expr_fields + i];
                            slot_value(&batch.arena, slot, false)
                        }
                    })
                    .collect();
                DerivedValue::from(compiled.eval(inputs.as_slice()))
            };
            values[d] = value;
        }
        values
    }

    /// Aggregated feature `f`'s value as an expression reads it.
    fn feature_input<'b>(
        &self,
        batch: &'b ParsedBatch,
        event: usize,
        n_fields: usize,
        f: usize,
        value: FeatureValue,
    ) -> Value<'b> {
        match value {
            FeatureValue::Text { .. } => Value::Missing,
            FeatureValue::Null | FeatureValue::Beyond => Value::Missing,
            FeatureValue::Int(n) => Value::Num(n as f64),
            FeatureValue::Num(v) | FeatureValue::Exact(v) => Value::Num(v),
            FeatureValue::Own => match self.own_field[f] {
                Some(field) => {
                    slot_value(&batch.arena, &batch.fields[event * n_fields + field], true)
                }
                None => Value::Missing,
            },
        }
    }
}

/// Writes a [`FeatureValue::Text`]: the canonical bytes at `start..start + len` of `text`.
#[cold]
fn write_text(out: &mut Vec<u8>, text: &[u8], start: u32, len: u32) {
    write_canonical(out, text_at(text, start, len));
}

/// The canonical bytes at `start..start + len` of `text` (none if out of range).
fn text_at(text: &[u8], start: u32, len: u32) -> &[u8] {
    text.get(start as usize..start as usize + len as usize)
        .unwrap_or_default()
}

/// Appends canonical value bytes ([`sluice_core::KeyEncoder`]) as JSON: a string, a number, a
/// boolean, a `set`'s array (tag `j`), or `null` for bytes that are not one value.
pub fn write_canonical(out: &mut Vec<u8>, canonical: &[u8]) {
    match canonical_parts(canonical) {
        Some((b's', text)) => escape_json_bytes(out, text),
        Some((b'n' | b'b' | b'j', text)) => out.extend_from_slice(text),
        _ => out.extend_from_slice(b"null"),
    }
}

/// Canonical value bytes as an expression reads them.
fn canonical_value(canonical: &[u8]) -> Value<'_> {
    match canonical_parts(canonical) {
        Some((b's', text)) => std::str::from_utf8(text).map_or(Value::Missing, Value::Str),
        Some((b'n', text)) => std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .map_or(Value::Missing, Value::Num),
        Some((b'b', text)) => Value::Bool(text == b"true"),
        // A `set`: a JSON array, present but equal to nothing.
        Some((b'j', _)) => Value::Other,
        _ => Value::Missing,
    }
}

/// The value of a field slot for an expression: `canonical` slots (the aggregated `of` fields)
/// hold a string as key bytes, others (fields of derived features) its plain text.
fn slot_value<'b>(arena: &'b [u8], slot: &FieldSlot, canonical: bool) -> Value<'b> {
    match slot.kind {
        FieldKind::Missing => Value::Missing,
        FieldKind::Num => Value::Num(slot.num),
        FieldKind::Bool if canonical => Value::Bool(slot_text(arena, slot) == b"true"),
        FieldKind::Bool => Value::Bool(slot.num != 0.0),
        FieldKind::Other => Value::Other,
        FieldKind::Str => {
            let text = if canonical {
                slot_text(arena, slot)
            } else {
                &arena[slot.start..slot.end]
            };
            std::str::from_utf8(text).map_or(Value::Missing, Value::Str)
        }
    }
}

/// One output value of one event, for a columnar output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    /// No value.
    Null,
    /// A count.
    Int(u64),
    /// A computed number (text: 15 significant digits).
    Num(f64),
    /// An observed number (text: exactly).
    Exact(f64),
    /// A boolean.
    Bool(bool),
    /// A string's UTF-8 bytes.
    Str(&'a [u8]),
    /// A kept number, as its JSON text.
    Number(&'a [u8]),
    /// Other JSON text (a `set`'s array).
    Json(&'a [u8]),
}

impl<'a> Cell<'a> {
    /// The cell of canonical value bytes ([`sluice_core::KeyEncoder`]).
    fn canonical(canonical: &'a [u8]) -> Cell<'a> {
        match canonical_parts(canonical) {
            Some((b's', text)) => Cell::Str(text),
            Some((b'n', text)) => Cell::Number(text),
            Some((b'b', text)) => Cell::Bool(text == b"true"),
            Some((b'j', text)) => Cell::Json(text),
            _ => Cell::Null,
        }
    }
}

/// The column type of an output, from its aggregation or its expression's static type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellType {
    /// 64-bit integers (counts).
    Int,
    /// Doubles.
    Float,
    /// Booleans.
    Bool,
    /// UTF-8 text: a string as it is, any other value as its JSON text.
    Text,
}

/// A derived feature's value for one event, owned (a string result outlives the inputs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DerivedValue {
    Null,
    Num(f64),
    Bool(bool),
    Str(String),
}

impl From<Val<'_>> for DerivedValue {
    fn from(v: Val<'_>) -> Self {
        match v {
            Val::Null => DerivedValue::Null,
            Val::Num(n) => DerivedValue::Num(n),
            Val::Bool(b) => DerivedValue::Bool(b),
            Val::Str(s) => DerivedValue::Str(s.to_owned()),
        }
    }
}

impl DerivedValue {
    fn as_value(&self) -> Value<'_> {
        match self {
            DerivedValue::Null => Value::Missing,
            DerivedValue::Num(n) => Value::Num(*n),
            DerivedValue::Bool(b) => Value::Bool(*b),
            DerivedValue::Str(s) => Value::Str(s),
        }
    }

    /// Appends it as JSON: numbers as computed values (15 significant digits).
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            DerivedValue::Null => out.extend_from_slice(b"null"),
            DerivedValue::Num(n) => write_computed(out, *n),
            DerivedValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            DerivedValue::Str(s) => escape_json_str(out, s),
        }
    }
}

/// Appends one dead letter: `{"reason":..,"error":..,"source":..,"line":..,"raw":..}`.
pub fn write_dead_letter(
    out: &mut Vec<u8>,
    source: &str,
    line: u64,
    raw: &[u8],
    rejection: &Rejection,
) {
    out.extend_from_slice(b"{\"reason\":");
    escape_json_str(out, rejection.reason);
    out.extend_from_slice(b",\"error\":");
    escape_json_str(out, &rejection.message);
    out.extend_from_slice(b",\"source\":");
    escape_json_str(out, source);
    out.extend_from_slice(b",\"line\":");
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(line).as_bytes());
    match std::str::from_utf8(raw) {
        Ok(text) => {
            out.extend_from_slice(b",\"raw\":");
            escape_json_str(out, text);
        }
        Err(_) => {
            // Not UTF-8: keep every byte, as hex.
            out.extend_from_slice(b",\"raw_hex\":\"");
            for &c in raw {
                out.extend_from_slice(format!("{c:02x}").as_bytes());
            }
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn computed(v: f64) -> String {
        let mut out = Vec::new();
        write_computed(&mut out, v);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn computed_numbers_print_cleanly() {
        assert_eq!(computed(0.1 + 0.2), "0.3");
        assert_eq!(computed(1234.5600000000002), "1234.56");
        assert_eq!(computed(36.0), "36");
        assert_eq!(computed(-2.5), "-2.5");
        assert_eq!(computed(1.0 / 3.0), "0.333333333333333");
        assert_eq!(computed(1e-20), "1e-20");
        assert_eq!(computed(f64::NAN), "null");
    }

    #[test]
    fn exact_numbers_read_back_and_match_the_shortest_text() {
        let mut x: u64 = 99;
        for i in 0..200_000 {
            x = crate::codec::lcg(x);
            let v = match i % 4 {
                0 => (x >> 40) as f64 / 100.0,
                1 => f64::from_bits(x >> 2),
                2 => (x >> 11) as f64 * 1e-9,
                _ => -((x >> 30) as f64) / 7.0,
            };
            if !v.is_finite() {
                continue;
            }
            let mut out = Vec::new();
            write_exact(&mut out, v);
            let text = String::from_utf8(out).expect("utf8");
            assert_eq!(text.parse::<f64>().expect("a number"), v, "{text}");
            let mut shortest = Vec::new();
            write_shortest(&mut shortest, v);
            let shortest = String::from_utf8(shortest).expect("utf8");
            if !shortest.contains('e') {
                assert_eq!(text, shortest);
            }
        }
    }

    #[test]
    fn computed_numbers_keep_15_significant_digits() {
        assert_eq!(computed(0.000012345678901234567), "0.0000123456789012346");
        assert_eq!(computed(0.5), "0.5");
        assert_eq!(computed(999.99999999999999), "1000");
        assert_eq!(computed(123456789012345.6), "123456789012346");
        assert_eq!(computed(-0.1 - 0.2), "-0.3");
        assert_eq!(computed(0.0), "0");
    }

    /// The former integer split (quotient and remainder by the power of ten), as a reference.
    fn split_reference(v: f64, exact: bool) -> Option<String> {
        let a = v.abs();
        if a == 0.0 {
            return Some("0".into());
        }
        if !(1e-5..1e15).contains(&a) {
            return None;
        }
        let decimals = if a >= 1.0 {
            15 - POW10[..16].partition_point(|&p| p <= a)
        } else {
            14 + POW10[..6].partition_point(|&p| a * p < 1.0)
        };
        let scale = POW10[decimals];
        let n = (a * scale).round();
        if exact && n / scale != a {
            return None;
        }
        let n = n as u64;
        let unit = 10u64.pow(decimals as u32);
        let (int, mut frac) = (n / unit, n % unit);
        let mut text = String::new();
        if v < 0.0 {
            text.push('-');
        }
        text.push_str(&int.to_string());
        if frac > 0 {
            let mut width = decimals;
            while frac % 10 == 0 {
                frac /= 10;
                width -= 1;
            }
            text.push_str(&format!(".{frac:0width$}"));
        }
        Some(text)
    }

    #[test]
    fn digits_match_the_integer_split() {
        let mut x: u64 = 7;
        for i in 0..300_000 {
            x = crate::codec::lcg(x);
            let v = match i % 6 {
                0 => (x >> 40) as f64 / 100.0,
                1 => f64::from_bits(x >> 2),
                2 => (x >> 11) as f64 * 1e-9,
                3 => -((x >> 30) as f64) / 7.0,
                4 => ((x >> 44) as f64 + 0.5) * POW10[(x % 20) as usize] / 1e5,
                _ => 1.0 / ((x >> 20) as f64 + 1.0),
            };
            if !v.is_finite() {
                continue;
            }
            for exact in [false, true] {
                let mut out = Vec::new();
                let written = write_15_digits(&mut out, v, exact);
                let text = written.then(|| String::from_utf8(out).expect("utf8"));
                assert_eq!(text, split_reference(v, exact), "{v:e} exact {exact}");
            }
        }
    }

    #[test]
    fn escapes_strings() {
        let mut out = Vec::new();
        escape_json_str(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
    }
}
