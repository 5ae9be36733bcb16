//! The registers of one key: every series of a [`KeySpec`], fed one event at a time.
//!
//! This is the feature logic every state backend shares: a backend only decides where a
//! [`KeyState`] lives (memory, disk, a remote store) and in which key group.

use crate::bucket_start;
use crate::distinct::{DistinctScratch, DistinctSeries};
use crate::numeric::NumericSeries;
use crate::plan::{KeySpec, SeriesKind};
use crate::value::FeatureValue;
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

/// One register series of a key.
#[derive(Debug, Clone)]
pub enum Series {
    /// count / sum / avg / min / max.
    Numeric(NumericSeries),
    /// distinct_count.
    Distinct(DistinctSeries),
}

/// Every register of one key.
#[derive(Debug, Clone)]
pub struct KeyState {
    /// Inline for up to three series (the usual pipeline), so a key is one block of memory.
    series: SmallVec<[Series; 3]>,
}

impl KeyState {
    /// Empty registers for `spec`.
    pub fn new(spec: &KeySpec) -> Self {
        KeyState {
            series: spec
                .series
                .iter()
                .map(|s| match s.kind {
                    SeriesKind::Numeric => Series::Numeric(NumericSeries::new(s)),
                    SeriesKind::Distinct => Series::Distinct(DistinctSeries::new(s)),
                })
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
        for (s, series) in spec.series.iter().zip(self.series.iter_mut()) {
            let field = s.of.map(|i| fields[i]).unwrap_or(FieldObs {
                present: true,
                ..FieldObs::default()
            });
            if !field.present {
                for w in &s.windows {
                    for &(_, slot) in &w.outputs {
                        out[slot] = FeatureValue::Null;
                    }
                }
                continue;
            }
            match series {
                Series::Numeric(n) => n.observe(s, ts, field.num, floor, out),
                Series::Distinct(d) => d.observe(s, ts, field.bytes, floor, scratch, out),
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

    /// Whether no window of an event at or after `floor` can include anything held here: the
    /// key can be dropped without changing any result.
    pub fn is_expired(&self, spec: &KeySpec, floor: i64) -> bool {
        spec.series
            .iter()
            .zip(self.series.iter())
            .all(|(s, series)| {
                let horizon =
                    bucket_start(floor, s.granularity_ms).saturating_sub(s.max_window_ms());
                let newest = match series {
                    Series::Numeric(n) => n.newest(),
                    Series::Distinct(d) => d.newest(),
                };
                newest.is_none_or(|t| t < horizon)
            })
    }

    /// Number of buckets and entries held (a measure of memory).
    pub fn size(&self) -> usize {
        self.series
            .iter()
            .map(|s| match s {
                Series::Numeric(n) => n.len(),
                Series::Distinct(d) => d.len(),
            })
            .sum()
    }
}
