//! The registers of one key: every series of a [`KeySpec`], fed one event at a time.
//!
//! This is the feature logic every state backend shares: a backend only decides where a
//! [`KeyState`] lives (memory, disk, a remote store) and in which key group.

use crate::bucket_start;
use crate::distinct::{DistinctScratch, DistinctSeries};
use crate::numeric::NumericSeries;
use crate::plan::{KeySpec, SeriesKind};
use crate::value::FeatureValue;
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

/// Every register of one key.
///
/// Numeric and distinct series are kept in separate arrays (in the order of the key spec's
/// series of each kind) so that neither pays for the other's size, inline for the usual
/// pipeline (two numeric series, one distinct): a key is one block of memory.
#[derive(Debug, Clone)]
pub struct KeyState {
    numeric: SmallVec<[NumericSeries; 2]>,
    distinct: SmallVec<[DistinctSeries; 1]>,
}

impl KeyState {
    /// Empty registers for `spec`.
    pub fn new(spec: &KeySpec) -> Self {
        let of_kind = |kind| spec.series.iter().filter(move |s| s.kind == kind);
        KeyState {
            numeric: of_kind(SeriesKind::Numeric)
                .map(NumericSeries::new)
                .collect(),
            distinct: of_kind(SeriesKind::Distinct)
                .map(DistinctSeries::new)
                .collect(),
        }
    }

    /// Adds an event at `ts` with `fields` (indexed like [`crate::Plan::fields`]) and writes the
    /// value of each of the key spec's features into `out` (one per output slot).
    ///
    /// `floor`: the oldest event time a later event may have (see [`NumericSeries::observe`]).
    pub fn observe(
        &mut self,
        spec: &KeySpec,
        ts: i64,
        fields: &[FieldObs<'_>],
        floor: i64,
        scratch: &mut DistinctScratch,
        out: &mut [FeatureValue],
    ) {
        let (mut numeric, mut distinct) = (self.numeric.iter_mut(), self.distinct.iter_mut());
        for s in &spec.series {
            let field = s.of.map(|i| fields[i]).unwrap_or(FieldObs {
                present: true,
                ..FieldObs::default()
            });
            match s.kind {
                SeriesKind::Numeric => {
                    let series = numeric.next().expect("one numeric series per numeric spec");
                    if field.present {
                        series.observe(s, ts, field.num, floor, out);
                        continue;
                    }
                }
                SeriesKind::Distinct => {
                    let series = distinct
                        .next()
                        .expect("one distinct series per distinct spec");
                    if field.present {
                        series.observe(s, ts, field.bytes, floor, scratch, out);
                        continue;
                    }
                }
            }
            for w in &s.windows {
                for &(_, slot) in &w.outputs {
                    out[slot] = FeatureValue::Null;
                }
            }
        }
        for &(slot, field) in &spec.own {
            out[slot] = if fields[field].present {
                FeatureValue::Own
            } else {
                FeatureValue::Null
            };
        }
    }

    /// Writes the value each of the key spec's features would have for an event at `at`,
    /// without adding one (a feature query): windows end at `at`, inclusive. `last` (which is
    /// an event's own value) is null, as is every value of an empty window but counts and sums.
    pub fn peek(&self, spec: &KeySpec, at: i64, out: &mut [FeatureValue]) {
        out.fill(FeatureValue::Null);
        let (mut numeric, mut distinct) = (self.numeric.iter(), self.distinct.iter());
        for s in &spec.series {
            match s.kind {
                SeriesKind::Numeric => {
                    if let Some(series) = numeric.next() {
                        series.peek(s, at, out);
                    }
                }
                SeriesKind::Distinct => {
                    if let Some(series) = distinct.next() {
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
        spec.series.iter().all(|s| {
            let horizon = bucket_start(floor, s.granularity_ms).saturating_sub(s.max_window_ms());
            let newest = match s.kind {
                SeriesKind::Numeric => numeric.next().and_then(NumericSeries::newest),
                SeriesKind::Distinct => distinct.next().and_then(DistinctSeries::newest),
            };
            newest.is_none_or(|t| t < horizon)
        })
    }

    /// The newest event time held in any series (`None`: nothing held). Keys whose newest
    /// event is oldest are the coldest.
    pub fn newest(&self) -> Option<i64> {
        let numeric = self.numeric.iter().filter_map(NumericSeries::newest);
        let distinct = self.distinct.iter().filter_map(DistinctSeries::newest);
        numeric.chain(distinct).max()
    }

    /// Number of buckets and entries held (a measure of memory).
    pub fn size(&self) -> usize {
        self.numeric.iter().map(NumericSeries::len).sum::<usize>()
            + self.distinct.iter().map(DistinctSeries::len).sum::<usize>()
    }
}

/// The newest time (absolute), then the numeric and the distinct series with times relative
/// to it.
impl Wire for KeyState {
    fn put(&self, w: &mut Writer<'_>) {
        let base = self.newest().unwrap_or(0);
        w.set_base(0);
        w.i(base);
        w.set_base(base);
        w.seq(&self.numeric);
        w.seq(&self.distinct);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.set_base(0);
        let base = r.i()?;
        r.set_base(base);
        Ok(KeyState {
            numeric: r.seq()?,
            distinct: r.seq()?,
        })
    }
}
