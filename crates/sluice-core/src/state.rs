//! The registers of one key: every series of a [`KeySpec`], fed one event at a time.
//!
//! This is the feature logic every state backend shares: a backend only decides where a
//! [`KeyState`] lives (memory, disk, a remote store) and in which key group.

use crate::approx::ApproxSeries;
use crate::bucket_start;
use crate::distinct::{DistinctScratch, DistinctSeries};
use crate::numeric::{NumericSeries, Squares};
use crate::plan::{KeySpec, SeriesKind};
use crate::value::FeatureValue;
use crate::values::{Stored, ValueScratch, ValueSeries};
use crate::wire::{Reader, Wire, WireError, Writer};
use smallvec::SmallVec;

/// The value of one `of` field on one event, as the registers need it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldObs<'a> {
    /// Whether the field is present and not null.
    pub present: bool,
    /// Its number, for numeric fields.
    pub num: f64,
    /// Its canonical bytes, for distinct-counted fields.
    pub bytes: &'a [u8],
}

/// Scratch space for updating and reading registers, one per shard; its `values.text` holds
/// the canonical bytes of the [`FeatureValue::Text`] values written, until the caller takes it.
#[derive(Debug, Default)]
pub struct Scratch {
    /// For counting distinct ids in a range.
    pub distinct: DistinctScratch,
    /// For quantiles, and the text of kept values written out.
    pub values: ValueScratch,
}

/// Nulls for every feature of series `s` (a state that lacks the series).
fn null_outputs(s: &crate::plan::SeriesSpec, out: &mut [FeatureValue]) {
    for w in &s.windows {
        for &(_, slot) in &w.outputs {
            out[slot] = FeatureValue::Null;
        }
    }
}

/// Every register of one key.
///
/// Numeric and distinct series are kept in separate arrays (in the order of the key spec's
/// series of each kind) so that neither pays for the other's size, inline for the usual
/// pipeline (two numeric series, one distinct): a key is one block of memory.
///
/// What fewer pipelines need is kept apart, behind one pointer (absent when the key spec has
/// none of it): the sums of squares of numeric series with a variance feature, the value
/// series and the sketch series. A numeric series stays as small as it is without them, and
/// the key grows by that pointer only (504 to 512 bytes, which is still the allocation size
/// class of the memory backend's boxed states).
#[derive(Debug, Clone)]
pub struct KeyState {
    numeric: SmallVec<[NumericSeries; 2]>,
    distinct: SmallVec<[DistinctSeries; 1]>,
    extra: Option<Box<Extra>>,
}

/// The registers of a key that few pipelines have.
#[derive(Debug, Clone, Default)]
struct Extra {
    /// One entry per numeric series (none when no series keeps them): its sums of squares,
    /// if it keeps them.
    squares: SeriesSquares,
    /// The value series (first, last, lag, quantile), in the key spec's order.
    values: SmallVec<[ValueSeries; 1]>,
    /// The sketch series (distinct_count_approx), in the key spec's order.
    approx: SmallVec<[ApproxSeries; 1]>,
}

/// The sums of squares of a key's numeric series, by position.
type SeriesSquares = SmallVec<[Option<Squares>; 2]>;

/// The sums of squares, the value series and the sketch series of a key, to walk alongside
/// its series.
type ExtraIter<'a> = (
    Option<std::slice::IterMut<'a, Option<Squares>>>,
    std::slice::IterMut<'a, ValueSeries>,
    std::slice::IterMut<'a, ApproxSeries>,
);

impl Extra {
    fn is_empty(&self) -> bool {
        self.squares.is_empty() && self.values.is_empty() && self.approx.is_empty()
    }
}

impl KeyState {
    /// The sums of squares per numeric series, if any series keeps them.
    fn squares(&self) -> Option<&SeriesSquares> {
        self.extra
            .as_deref()
            .map(|x| &x.squares)
            .filter(|v| !v.is_empty())
    }

    /// The value series.
    fn values(&self) -> &[ValueSeries] {
        self.extra.as_deref().map_or(&[], |x| x.values.as_slice())
    }

    /// The sketch series.
    fn approx(&self) -> &[ApproxSeries] {
        self.extra.as_deref().map_or(&[], |x| x.approx.as_slice())
    }

    /// The sums of squares (if any), the value series and the sketch series of `extra`, for
    /// an update.
    fn extra_mut(extra: &mut Option<Box<Extra>>) -> ExtraIter<'_> {
        match extra.as_deref_mut() {
            Some(x) => (
                (!x.squares.is_empty()).then(|| x.squares.iter_mut()),
                x.values.iter_mut(),
                x.approx.iter_mut(),
            ),
            None => (None, Default::default(), Default::default()),
        }
    }

    /// Empty registers for `spec`.
    pub fn new(spec: &KeySpec) -> Self {
        let of_kind = |kind| spec.series.iter().filter(move |s| s.kind == kind);
        // Most keys have no extra registers: not even an empty `Extra` is built for them
        // (a new key is made for every first event of a key).
        let has_extra = spec
            .series
            .iter()
            .any(|s| s.needs_squares || matches!(s.kind, SeriesKind::Values | SeriesKind::Approx));
        let extra = has_extra.then(|| {
            let squares = if spec.series.iter().any(|s| s.needs_squares) {
                of_kind(SeriesKind::Numeric)
                    .map(|s| s.needs_squares.then(|| Squares::new(s)))
                    .collect()
            } else {
                SmallVec::new()
            };
            Box::new(Extra {
                squares,
                values: of_kind(SeriesKind::Values)
                    .map(|_| ValueSeries::new())
                    .collect(),
                approx: of_kind(SeriesKind::Approx).map(ApproxSeries::new).collect(),
            })
        });
        KeyState {
            numeric: of_kind(SeriesKind::Numeric)
                .map(NumericSeries::new)
                .collect(),
            distinct: of_kind(SeriesKind::Distinct)
                .map(DistinctSeries::new)
                .collect(),
            extra,
        }
    }

    /// Takes an event at `ts` with `fields` (indexed like [`crate::Plan::fields`]) that
    /// matched the filters whose bits are set in `matched` (bit `i`: [`crate::Plan::filters`]
    /// `[i]`), and writes the value of each of the key spec's features into `out` (one per
    /// output slot).
    ///
    /// Each series adds the event when it has the series' field and matches its filter; every
    /// series reports its values at `ts` either way (an empty window: a count, sum or
    /// distinct count of 0, anything else null).
    ///
    /// `floor`: the oldest event time a later event may have (see [`NumericSeries::observe`]).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        spec: &KeySpec,
        ts: i64,
        fields: &[FieldObs<'_>],
        matched: u64,
        floor: i64,
        scratch: &mut Scratch,
        out: &mut [FeatureValue],
    ) {
        let matches = |filter: Option<usize>| filter.is_none_or(|i| matched >> i & 1 == 1);
        let (mut numeric, mut distinct) = (self.numeric.iter_mut(), self.distinct.iter_mut());
        let (mut squares, mut values, mut approx) = Self::extra_mut(&mut self.extra);
        for s in &spec.series {
            let field = s.of.map(|i| fields[i]).unwrap_or(FieldObs {
                present: true,
                ..FieldObs::default()
            });
            let adds = field.present && matches(s.filter);
            // A series is always there for a state made by `new` or checked by `check` (a
            // missing one, which only an unchecked decoded state can lack, leaves nulls).
            match s.kind {
                SeriesKind::Numeric => {
                    let sq = squares
                        .as_mut()
                        .and_then(Iterator::next)
                        .and_then(Option::as_mut);
                    match numeric.next() {
                        Some(series) if adds => series.observe(s, ts, field.num, floor, sq, out),
                        Some(series) => series.read_at(s, ts, sq, out),
                        None => null_outputs(s, out),
                    }
                }
                SeriesKind::Distinct => match distinct.next() {
                    Some(series) => {
                        if adds {
                            series.observe(s, ts, field.bytes, floor, &mut scratch.distinct, out)
                        } else {
                            series.read_at(s, ts, out)
                        }
                        if s.lists {
                            series.write_sets(
                                s,
                                ts,
                                &mut scratch.distinct,
                                &mut scratch.values.text,
                                out,
                            );
                        }
                    }
                    None => null_outputs(s, out),
                },
                SeriesKind::Values => match values.next() {
                    Some(series) if adds => {
                        let value = if s.numbers {
                            Stored::Num(field.num)
                        } else {
                            Stored::Text(field.bytes.into())
                        };
                        series.observe(s, ts, value, floor, &mut scratch.values, out)
                    }
                    Some(series) => series.read_at(s, ts, &mut scratch.values, out),
                    None => null_outputs(s, out),
                },
                SeriesKind::Approx => match approx.next() {
                    Some(series) if adds => series.observe(s, ts, field.bytes, floor, out),
                    Some(series) => series.read_at(s, ts, out),
                    None => null_outputs(s, out),
                },
            }
        }
    }

    /// Writes the value each of the key spec's features would have for an event at `at`,
    /// without adding one (a feature query): windows end at `at`, inclusive. Every value of an
    /// empty window is null but counts, sums and distinct counts (0).
    pub fn peek(&self, spec: &KeySpec, at: i64, scratch: &mut Scratch, out: &mut [FeatureValue]) {
        out.fill(FeatureValue::Null);
        let (mut numeric, mut distinct) = (self.numeric.iter(), self.distinct.iter());
        let mut squares = self.squares().map(|v| v.iter());
        let mut values = self.values().iter();
        let mut approx = self.approx().iter();
        for s in &spec.series {
            match s.kind {
                SeriesKind::Numeric => {
                    let sq = squares
                        .as_mut()
                        .and_then(Iterator::next)
                        .and_then(Option::as_ref);
                    if let Some(series) = numeric.next() {
                        series.peek(s, at, sq, out);
                    }
                }
                SeriesKind::Distinct => {
                    if let Some(series) = distinct.next() {
                        series.peek(s, at, out);
                        if s.lists {
                            series.write_sets(
                                s,
                                at,
                                &mut scratch.distinct,
                                &mut scratch.values.text,
                                out,
                            );
                        }
                    }
                }
                SeriesKind::Values => {
                    if let Some(series) = values.next() {
                        series.peek(s, at, &mut scratch.values, out);
                    }
                }
                SeriesKind::Approx => {
                    if let Some(series) = approx.next() {
                        series.peek(s, at, out);
                    }
                }
            }
        }
    }

    /// Whether no window of an event at or after `floor` can include anything held here: the
    /// key can be dropped without changing any result.
    pub fn is_expired(&self, spec: &KeySpec, floor: i64) -> bool {
        let (mut numeric, mut distinct) = (self.numeric.iter(), self.distinct.iter());
        let mut values = self.values().iter();
        let mut approx = self.approx().iter();
        spec.series.iter().all(|s| {
            let horizon = bucket_start(floor, s.granularity_ms).saturating_sub(s.max_window_ms());
            let newest = match s.kind {
                SeriesKind::Numeric => numeric.next().and_then(NumericSeries::newest),
                SeriesKind::Distinct => distinct.next().and_then(DistinctSeries::newest),
                SeriesKind::Values => values.next().and_then(ValueSeries::newest),
                SeriesKind::Approx => approx.next().and_then(ApproxSeries::newest),
            };
            newest.is_none_or(|t| t < horizon)
        })
    }

    /// The newest event time held in any series (`None`: nothing held). Keys whose newest
    /// event is oldest are the coldest.
    pub fn newest(&self) -> Option<i64> {
        let numeric = self.numeric.iter().filter_map(NumericSeries::newest);
        let distinct = self.distinct.iter().filter_map(DistinctSeries::newest);
        let values = self.values().iter().filter_map(ValueSeries::newest);
        let approx = self.approx().iter().filter_map(ApproxSeries::newest);
        numeric.chain(distinct).chain(values).chain(approx).max()
    }

    /// Checks registers decoded from bytes against the key spec they are used with: one series
    /// of each kind per series of the spec, each fitting its series spec (windows, minimum and
    /// maximum registers, sums of squares, granularity), and the base time being the newest
    /// time held.
    ///
    /// Decoding ([`Wire::get`]) checks the registers' inner consistency; this checks that they
    /// belong to `spec`. A state that passes both is safe to update and query: [`KeyState::decode`]
    /// does both, and is what every reader of stored registers should use.
    pub fn check(&self, spec: &KeySpec) -> Result<(), WireError> {
        let (mut numeric, mut distinct) = (self.numeric.iter(), self.distinct.iter());
        let mut values = self.values().iter();
        let mut approx = self.approx().iter();
        let squares = self.squares();
        if squares.is_some_and(|v| v.len() != self.numeric.len()) {
            return Err(WireError(
                "sums of squares for another number of numeric series",
            ));
        }
        let mut squares = squares.map(|v| v.iter());
        for s in &spec.series {
            match s.kind {
                SeriesKind::Numeric => {
                    let sq = squares
                        .as_mut()
                        .and_then(Iterator::next)
                        .and_then(Option::as_ref);
                    numeric
                        .next()
                        .ok_or(WireError("fewer numeric series than in the plan"))?
                        .check(s, sq)?
                }
                SeriesKind::Distinct => distinct
                    .next()
                    .ok_or(WireError("fewer distinct series than in the plan"))?
                    .check(s)?,
                SeriesKind::Values => values
                    .next()
                    .ok_or(WireError("fewer value series than in the plan"))?
                    .check(s)?,
                SeriesKind::Approx => approx
                    .next()
                    .ok_or(WireError("fewer sketch series than in the plan"))?
                    .check(s)?,
            }
        }
        if values.next().is_some() {
            return Err(WireError("more value series than in the plan"));
        }
        if approx.next().is_some() {
            return Err(WireError("more sketch series than in the plan"));
        }
        if numeric.next().is_some() {
            return Err(WireError("more numeric series than in the plan"));
        }
        if distinct.next().is_some() {
            return Err(WireError("more distinct series than in the plan"));
        }
        Ok(())
    }

    /// Reads registers written by [`Wire::put`] for `spec` and checks them against it: any
    /// structural mismatch (another plan's registers, damage) is an error, never a later panic.
    pub fn decode(spec: &KeySpec, r: &mut Reader<'_>) -> Result<Self, WireError> {
        let state = Self::get(r)?;
        state.check(spec)?;
        Ok(state)
    }

    /// [`KeyState::decode`] of exactly `bytes`: anything after the registers is an error.
    pub fn from_bytes(spec: &KeySpec, bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes, 0);
        let state = Self::decode(spec, &mut r)?;
        if !r.rest().is_empty() {
            return Err(WireError("bytes after the registers"));
        }
        Ok(state)
    }

    /// Number of buckets and entries held (a measure of memory).
    pub fn size(&self) -> usize {
        self.numeric.iter().map(NumericSeries::len).sum::<usize>()
            + self.distinct.iter().map(DistinctSeries::len).sum::<usize>()
            + self.values().iter().map(ValueSeries::len).sum::<usize>()
            + self.approx().iter().map(ApproxSeries::len).sum::<usize>()
    }
}

/// The newest time (absolute), then the numeric series (each with its sums of squares, if
/// any), the distinct series, the value series and the sketch series with times relative to
/// it. Decoding checks each series' inner
/// consistency and that the base time is the newest time held, but not the plan: see
/// [`KeyState::decode`].
impl Wire for KeyState {
    fn put(&self, w: &mut Writer<'_>) {
        let base = self.newest().unwrap_or(0);
        w.set_base(0);
        w.i(base);
        w.set_base(base);
        w.u(self.numeric.len() as u64);
        for (i, series) in self.numeric.iter().enumerate() {
            let sq = self.squares().and_then(|v| v.get(i)?.as_ref());
            series.put_with(sq, w);
        }
        w.seq(&self.distinct);
        w.seq(self.values());
        w.seq(self.approx());
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::read(r, true)
    }
}

impl KeyState {
    /// Reads registers written before value and sketch series existed (checkpoint format 6):
    /// the same encoding without them.
    pub fn get_without_values(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::read(r, false)
    }

    /// [`Wire::get`]; `values`: whether the encoding has the value and sketch series.
    fn read(r: &mut Reader<'_>, values: bool) -> Result<Self, WireError> {
        r.set_base(0);
        let base = r.i()?;
        r.set_base(base);
        let n = r.count()?;
        let mut numeric = SmallVec::with_capacity(n);
        let mut squares: SeriesSquares = SmallVec::with_capacity(n);
        for _ in 0..n {
            let (series, sq) = NumericSeries::get_with(r)?;
            numeric.push(series);
            squares.push(sq);
        }
        let distinct = r.seq()?;
        let extra = Extra {
            squares: if squares.iter().any(Option::is_some) {
                squares
            } else {
                SmallVec::new()
            },
            values: if values { r.seq()? } else { SmallVec::new() },
            approx: if values { r.seq()? } else { SmallVec::new() },
        };
        let state = KeyState {
            numeric,
            distinct,
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        };
        if state.newest().unwrap_or(0) != base {
            return Err(WireError("a base time that is not the newest time held"));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::feature;
    use crate::plan::{FeatureSpec, Plan};
    use crate::Agg;

    /// Key spec 0 (by user): two numeric series (count; sum and max of amount over two
    /// windows) and one distinct series. Key spec 1 (by device): one numeric series.
    fn plan() -> Plan {
        Plan::new(
            vec![
                feature("n", Agg::Count, None, &["user"], 60_000),
                feature("s", Agg::Sum, Some("amount"), &["user"], 60_000),
                feature("m", Agg::Max, Some("amount"), &["user"], 600_000),
                feature("d", Agg::DistinctCount, Some("device"), &["user"], 60_000),
                feature("c", Agg::Count, None, &["device"], 60_000),
            ],
            10_000,
        )
        .expect("valid")
    }

    /// A state of `spec` fed a few events, some out of order and some repeated.
    fn fed(plan: &Plan, spec: &KeySpec) -> KeyState {
        let mut state = KeyState::new(spec);
        let mut scratch = Scratch::default();
        let mut out = vec![FeatureValue::Null; spec.features.len()];
        let devices: [&[u8]; 3] = [b"d1", b"d2", b"d1"];
        for (i, ts) in [1_000i64, 5_000, 3_000, 5_000, 70_000, 65_000]
            .into_iter()
            .enumerate()
        {
            let fields: Vec<FieldObs<'_>> = plan
                .fields
                .iter()
                .map(|_| FieldObs {
                    present: true,
                    num: i as f64 * 1.5,
                    bytes: devices[i % 3],
                })
                .collect();
            state.observe(spec, ts, &fields, 0, ts - 10_000, &mut scratch, &mut out);
        }
        state
    }

    fn encode(state: &KeyState) -> Vec<u8> {
        let mut bytes = Vec::new();
        state.put(&mut Writer::new(&mut bytes, 0));
        bytes
    }

    /// Feeds a decoded state one more event and queries it: must not panic.
    fn exercise(plan: &Plan, spec: &KeySpec, mut state: KeyState) {
        let fields = vec![
            FieldObs {
                present: true,
                num: 2.0,
                bytes: b"d9",
            };
            plan.fields.len()
        ];
        let mut out = vec![FeatureValue::Null; spec.features.len()];
        let mut scratch = Scratch::default();
        state.observe(spec, 2_000, &fields, 0, 0, &mut scratch, &mut out);
        state.peek(spec, 100_000, &mut scratch, &mut out);
        let _ = state.is_expired(spec, 1_000_000);
    }

    #[test]
    fn registers_round_trip_against_their_spec() {
        let plan = plan();
        for spec in &plan.keys {
            let state = fed(&plan, spec);
            let decoded = KeyState::from_bytes(spec, &encode(&state)).expect("decodes");
            assert_eq!(encode(&decoded), encode(&state));
            exercise(&plan, spec, decoded);
        }
    }

    #[test]
    fn registers_of_another_key_spec_are_an_error() {
        let plan = plan();
        let (user, device) = (&plan.keys[0], &plan.keys[1]);
        // Extra series: a user's three series read as a device's one.
        let e = KeyState::from_bytes(device, &encode(&fed(&plan, user))).expect_err("extra");
        assert_eq!(e.0, "more numeric series than in the plan");
        // Missing series.
        let e = KeyState::from_bytes(user, &encode(&fed(&plan, device))).expect_err("missing");
        assert_eq!(e.0, "fewer numeric series than in the plan");
    }

    #[test]
    fn registers_of_another_plan_are_an_error() {
        let plan = plan();
        let bytes = encode(&fed(&plan, &plan.keys[0]));
        let other = |features: Vec<FeatureSpec>| Plan::new(features, 10_000).expect("valid");
        // Another window width for the max: the amount series has one window, not two.
        let fewer_windows = other(vec![
            feature("n", Agg::Count, None, &["user"], 60_000),
            feature("s", Agg::Sum, Some("amount"), &["user"], 60_000),
            feature("m", Agg::Max, Some("amount"), &["user"], 60_000),
            feature("d", Agg::DistinctCount, Some("device"), &["user"], 60_000),
        ]);
        // No max: no window needs the extremes the registers hold.
        let no_max = other(vec![
            feature("n", Agg::Count, None, &["user"], 60_000),
            feature("s", Agg::Sum, Some("amount"), &["user"], 60_000),
            feature("m", Agg::Sum, Some("amount"), &["user"], 600_000),
            feature("d", Agg::DistinctCount, Some("device"), &["user"], 60_000),
        ]);
        // A coarser granularity: bucket times are not aligned to it.
        let mut coarse = vec![
            feature("n", Agg::Count, None, &["user"], 60_000),
            feature("s", Agg::Sum, Some("amount"), &["user"], 60_000),
            feature("m", Agg::Max, Some("amount"), &["user"], 600_000),
            feature("d", Agg::DistinctCount, Some("device"), &["user"], 60_000),
        ];
        for f in &mut coarse {
            f.granularity_ms = 60_000;
        }
        // No distinct series.
        let no_distinct = other(vec![
            feature("n", Agg::Count, None, &["user"], 60_000),
            feature("s", Agg::Sum, Some("amount"), &["user"], 60_000),
            feature("m", Agg::Max, Some("amount"), &["user"], 600_000),
        ]);
        for (what, plan) in [
            ("fewer windows", fewer_windows),
            ("no max", no_max),
            ("coarse", other(coarse)),
            ("no distinct", no_distinct),
        ] {
            let e = KeyState::from_bytes(&plan.keys[0], &bytes);
            assert!(e.is_err(), "{what}: {e:?}");
        }
    }

    #[test]
    fn truncated_or_extended_registers_are_an_error() {
        let plan = plan();
        let spec = &plan.keys[0];
        let bytes = encode(&fed(&plan, spec));
        for cut in 0..bytes.len() {
            assert!(
                KeyState::from_bytes(spec, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = KeyState::from_bytes(spec, &longer).expect_err("extended");
        assert_eq!(e.0, "bytes after the registers");
    }

    /// A key spec whose amount series has a variance (beside a sum and a max) over two
    /// windows, or, with `variance` false, the same series without it.
    fn variance_plan(variance: bool) -> Plan {
        let agg = if variance { Agg::StddevPop } else { Agg::Avg };
        Plan::new(
            vec![
                feature("s", Agg::Sum, Some("amount"), &["user"], 60_000),
                feature("v", agg, Some("amount"), &["user"], 600_000),
                feature("m", Agg::Max, Some("amount"), &["user"], 60_000),
                feature("n", Agg::Count, None, &["user"], 60_000),
            ],
            10_000,
        )
        .expect("valid")
    }

    #[test]
    fn sums_of_squares_round_trip_and_fit_only_a_plan_with_a_variance() {
        let (with, without) = (variance_plan(true), variance_plan(false));
        let (with_spec, without_spec) = (&with.keys[0], &without.keys[0]);
        let state = fed(&with, with_spec);
        let bytes = encode(&state);
        let decoded = KeyState::from_bytes(with_spec, &bytes).expect("decodes");
        assert_eq!(encode(&decoded), bytes);
        exercise(&with, with_spec, decoded);
        // Extra: squares where the plan has no variance.
        let e = KeyState::from_bytes(without_spec, &bytes).expect_err("extra squares");
        assert_eq!(
            e.0,
            "a numeric series has sums of squares but no variance feature"
        );
        // Missing: a state without squares read under the plan with a variance.
        let plain = encode(&fed(&without, without_spec));
        let e = KeyState::from_bytes(with_spec, &plain).expect_err("missing squares");
        assert_eq!(
            e.0,
            "a numeric series lacks the sums of squares its variance features need"
        );
        // Without a variance, the encoding is the one it was before variances existed.
        assert!(state.squares().is_some() && fed(&without, without_spec).extra.is_none());
    }

    /// A series without a variance is as large as before variances existed, and the sums of
    /// squares cost a key one pointer (still one 512-byte block in the memory backend).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn registers_without_a_variance_do_not_grow() {
        assert_eq!(std::mem::size_of::<NumericSeries>(), 136);
        assert_eq!(std::mem::size_of::<KeyState>(), 512);
    }

    /// A state of one numeric series (one window, no extremes) written field by field.
    fn numeric_state(buckets: &[(i64, u64)], window: (i64, u64, u64)) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes, 0);
        let base = buckets.iter().map(|b| b.0).max().unwrap_or(0);
        w.i(base);
        w.set_base(base);
        w.u(1); // one numeric series
        w.u(buckets.len() as u64);
        for &(ts, count) in buckets {
            w.ts(ts);
            w.u(count);
            w.u(0); // sum: whole units
            w.i(0);
            w.f(1.0); // min
            if count != 1 {
                w.f(1.0); // max
            }
        }
        w.u(1); // one window
        let (start, lo, count) = window;
        w.ts(start);
        w.u(lo);
        w.u(count);
        w.u(0);
        w.i(0);
        w.u(0); // no extremes
        w.u(0); // no distinct series
        w.u(0); // no value series
        w.u(0); // no sketch series
        bytes
    }

    /// Registers without sums of squares keep the layout they had before variances existed
    /// (written here field by field), both ways; the layout of checkpoint format 6 is the same
    /// without the (empty) lists of value and sketch series, and still reads back.
    #[test]
    fn the_layout_without_variances_is_unchanged() {
        let plan = Plan::new(vec![feature("n", Agg::Count, None, &["u"], 100)], 0).expect("valid");
        let spec = &plan.keys[0];
        let bytes = numeric_state(&[(10, 1), (20, 2)], (i64::MIN, 0, 3));
        let state = KeyState::from_bytes(spec, &bytes).expect("decodes");
        assert_eq!(encode(&state), bytes);
        let format6 = &bytes[..bytes.len() - 2];
        let mut r = Reader::new(format6, 0);
        let old = KeyState::get_without_values(&mut r).expect("format 6 decodes");
        assert!(r.rest().is_empty());
        assert_eq!(encode(&old), bytes);
    }

    #[test]
    fn inconsistent_numeric_registers_are_an_error() {
        let plan = Plan::new(vec![feature("n", Agg::Count, None, &["u"], 100)], 0).expect("valid");
        let spec = &plan.keys[0];
        let ok = numeric_state(&[(10, 1), (20, 2)], (i64::MIN, 0, 3));
        exercise(
            &plan,
            spec,
            KeyState::from_bytes(spec, &ok).expect("consistent"),
        );
        for (what, bytes, message) in [
            (
                "count",
                numeric_state(&[(10, 1), (20, 2)], (i64::MIN, 0, 4)),
                "a window's count does not add up to its buckets",
            ),
            (
                "order",
                numeric_state(&[(20, 1), (10, 2)], (i64::MIN, 0, 3)),
                "buckets out of time order",
            ),
            (
                "lo",
                numeric_state(&[(10, 1), (20, 2)], (i64::MIN, 3, 0)),
                "a window starts beyond its series' buckets",
            ),
            (
                "start",
                numeric_state(&[(10, 1), (20, 2)], (15, 0, 3)),
                "a window's first bucket does not match its start time",
            ),
            (
                "empty bucket",
                numeric_state(&[(10, 0), (20, 2)], (i64::MIN, 0, 2)),
                "an empty bucket",
            ),
        ] {
            let e = KeyState::from_bytes(spec, &bytes).expect_err(what);
            assert_eq!(e.0, message, "{what}");
        }
    }

    /// A state of one distinct series (one window over every entry) written field by field:
    /// `entries` as (time, id, multiplicity), `values` as (bytes, references, count).
    fn distinct_state(
        entries: &[(i64, u64, u64)],
        values: &[(&[u8], u64, u64)],
        live: u64,
    ) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes, 0);
        let base = entries.iter().map(|e| e.0).max().unwrap_or(0);
        w.i(base);
        w.set_base(base);
        w.u(0); // no numeric series
        w.u(1); // one distinct series
        w.u(entries.len() as u64);
        for &(ts, id, mult) in entries {
            w.ts(ts);
            w.u(id);
            w.u(mult);
        }
        w.u(values.len() as u64);
        for &(value, refs, count) in values {
            w.bytes(value);
            w.u(refs);
            w.u(0); // no chain link
            w.u(1);
            w.u(count);
        }
        w.u(0); // no free slot
        w.u(live);
        w.u(0); // no hash index
        w.u(1); // one window
        w.ts(i64::MIN);
        w.u(0);
        w.u(values.iter().filter(|v| v.2 > 0).count() as u64);
        w.u(0); // no value series
        w.u(0); // no sketch series
        bytes
    }

    #[test]
    fn inconsistent_distinct_registers_are_an_error() {
        let plan = Plan::new(
            vec![feature("d", Agg::DistinctCount, Some("x"), &["u"], 100)],
            0,
        )
        .expect("valid");
        let spec = &plan.keys[0];
        let ok = distinct_state(&[(10, 0, 2), (20, 1, 1)], &[(b"a", 1, 2), (b"b", 1, 1)], 2);
        exercise(
            &plan,
            spec,
            KeyState::from_bytes(spec, &ok).expect("consistent"),
        );
        for (what, bytes, message) in [
            (
                "id",
                distinct_state(&[(10, 0, 2), (20, 5, 1)], &[(b"a", 1, 2), (b"b", 1, 1)], 2),
                "an entry refers to no value",
            ),
            (
                "refs",
                distinct_state(&[(10, 0, 2), (20, 1, 1)], &[(b"a", 2, 2), (b"b", 1, 1)], 2),
                "a value's references do not add up to its entries",
            ),
            (
                "counts",
                distinct_state(&[(10, 0, 2), (20, 1, 1)], &[(b"a", 1, 1), (b"b", 1, 1)], 2),
                "a window's value counts do not add up to its entries",
            ),
            (
                "live",
                distinct_state(&[(10, 0, 2), (20, 1, 1)], &[(b"a", 1, 2), (b"b", 1, 1)], 3),
                "a value table's live count does not add up to its values",
            ),
            (
                "twice",
                distinct_state(&[(10, 0, 2), (20, 1, 1)], &[(b"a", 1, 2), (b"a", 1, 1)], 2),
                "a value interned twice",
            ),
            (
                "order",
                distinct_state(&[(20, 0, 2), (10, 1, 1)], &[(b"a", 1, 2), (b"b", 1, 1)], 2),
                "entries out of time order",
            ),
            (
                "multiplicity",
                distinct_state(&[(10, 0, 0), (20, 1, 1)], &[(b"a", 1, 0), (b"b", 1, 1)], 2),
                "an entry that occurs no time",
            ),
        ] {
            let e = KeyState::from_bytes(spec, &bytes).expect_err(what);
            assert_eq!(e.0, message, "{what}");
        }
    }
}
