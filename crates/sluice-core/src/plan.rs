//! The plan: features grouped by the key they are computed over and the register series they
//! share.
//!
//! Features with the same `by` fields form a [`KeySpec`]: one state lookup per event and key.
//! Within it, features over the same `of` field and granularity share one [`SeriesSpec`] (one
//! register set), and features with the same window width share one [`WindowSpec`].

use crate::agg::Agg;

/// One `[[feature]]` of a pipeline, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    /// Output name, unique within the pipeline.
    pub name: String,
    /// The aggregation.
    pub agg: Agg,
    /// The aggregated field (required for every aggregation but `count`).
    pub of: Option<String>,
    /// The key fields; none: one global key that every event has.
    pub by: Vec<String>,
    /// Window width in milliseconds.
    pub window_ms: i64,
    /// Bucket width in milliseconds; 1 means exact.
    pub granularity_ms: i64,
    /// Which events are added to the feature's state (`where`), as canonical expression text;
    /// `None`: every event. The value is still reported for every event with the key.
    pub filter: Option<String>,
}

/// Most distinct filters in one plan (each event carries one bit per filter).
pub const MAX_FILTERS: usize = 64;

/// Which register layout a series uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesKind {
    /// count / sum / avg / min / max / variance registers.
    Numeric,
    /// Exact distinct-count registers.
    Distinct,
    /// The values themselves, in time order: first, last, lag and quantile.
    Values,
    /// HyperLogLog sketches per bucket: approximate distinct counts.
    Approx,
}

/// The features of one window width within a series.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// Window width in milliseconds.
    pub width_ms: i64,
    /// `(aggregation, output slot within the key spec)` for every feature of this window.
    pub outputs: Vec<(Agg, usize)>,
    /// Whether a feature needs the minimum.
    pub needs_min: bool,
    /// Whether a feature needs the maximum.
    pub needs_max: bool,
}

/// One register set: every window over the same key, field and granularity.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    /// The register layout.
    pub kind: SeriesKind,
    /// Index into [`Plan::fields`] of the aggregated field; `None` for a plain `count`.
    pub of: Option<usize>,
    /// Bucket width in milliseconds; 1 means exact.
    pub granularity_ms: i64,
    /// Windows, widest last.
    pub windows: Vec<WindowSpec>,
    /// Whether values (not just presence) are aggregated: sum, avg, min, max or a variance.
    pub needs_values: bool,
    /// Whether a feature is a variance or standard deviation: the series then keeps sums of
    /// squares (per bucket and per window); no other series pays for them.
    pub needs_squares: bool,
    /// Index into [`Plan::filters`] of the filter deciding which events are added; `None`:
    /// every event with the field.
    pub filter: Option<usize>,
    /// For a value series: whether the field holds numbers (values are kept as numbers, else
    /// as canonical bytes).
    pub numbers: bool,
    /// For a value series: whether a quantile needs every value (else only the first and the
    /// newest of each time are kept).
    pub every_value: bool,
    /// For a distinct series: whether a `set` lists the window's values.
    pub lists: bool,
}

impl SeriesSpec {
    /// The widest window: state older than this (plus lateness) is never read again.
    pub fn max_window_ms(&self) -> i64 {
        self.windows.iter().map(|w| w.width_ms).max().unwrap_or(0)
    }
}

/// All features computed over the same `by` fields.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    /// The key fields, as written.
    pub by: Vec<String>,
    /// Global feature index of each output slot.
    pub features: Vec<usize>,
    /// The register series of this key.
    pub series: Vec<SeriesSpec>,
}

/// The validated, grouped form of a pipeline's features.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Features in the order they were written (the output order).
    pub features: Vec<FeatureSpec>,
    /// Distinct `of` fields.
    pub fields: Vec<String>,
    /// Whether each of [`Plan::fields`] must hold numbers.
    pub numeric_fields: Vec<bool>,
    /// Whether each of [`Plan::fields`] is distinct-counted.
    pub distinct_fields: Vec<bool>,
    /// Key specs in order of first use.
    pub keys: Vec<KeySpec>,
    /// Distinct filters (`where`), as canonical expression texts; an event carries one bit per
    /// filter, set when it matches.
    pub filters: Vec<String>,
    /// Derived features (`expr`), in pipeline order among themselves.
    pub derived: Vec<crate::derived::Derived>,
    /// The order to compute derived features in: each after those it reads.
    pub derived_order: Vec<usize>,
    /// Event fields that derived features read (canonical path texts).
    pub expr_fields: Vec<String>,
    /// Every feature of the output, aggregated and derived, in pipeline order.
    pub outputs: Vec<crate::derived::Output>,
    /// Aggregated features computed but not written (the parts of StreamFQL functions).
    pub hidden: Vec<usize>,
    /// Relation features (two hops over links), in pipeline order among themselves.
    pub relations: Vec<crate::relation::Relation>,
    /// How far behind the newest event time an event may be and still be accepted.
    pub lateness_ms: i64,
    /// The field holding each event's id (`[event] id`), an index into [`Plan::fields`]:
    /// with shared state, an event whose id a key has already applied is not applied again.
    pub id_field: Option<usize>,
}

/// A feature that cannot be planned. `feature` is its index and `field` the offending setting,
/// so that the configuration layer can point at the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feature `{name}`: {message}")]
pub struct PlanError {
    /// Index of the feature in the pipeline.
    pub feature: usize,
    /// Its name.
    pub name: String,
    /// The setting at fault: `name`, `of`, `by`, `window`, `granularity`, `q`, `limit`, `where`
    /// or `expr`.
    pub field: &'static str,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// The first bytes of the encoding [`Plan::fingerprint`] hashes: a new tag for a new encoding.
const FINGERPRINT_VERSION: &[u8] = b"sluice-plan-fingerprint-v1\0";

impl Plan {
    /// Validates and groups features. `lateness_ms` must be >= 0.
    pub fn new(features: Vec<FeatureSpec>, lateness_ms: i64) -> Result<Plan, PlanError> {
        let mut plan = Plan {
            features: Vec::new(),
            fields: Vec::new(),
            numeric_fields: Vec::new(),
            distinct_fields: Vec::new(),
            keys: Vec::new(),
            filters: Vec::new(),
            derived: Vec::new(),
            derived_order: Vec::new(),
            expr_fields: Vec::new(),
            outputs: (0..features.len())
                .map(crate::derived::Output::Feature)
                .collect(),
            hidden: Vec::new(),
            relations: Vec::new(),
            lateness_ms: lateness_ms.max(0),
            id_field: None,
        };
        let mut canonical = Vec::with_capacity(features.len());
        for (i, f) in features.iter().enumerate() {
            let err = |field: &'static str, message: String| PlanError {
                feature: i,
                name: f.name.clone(),
                field,
                message,
            };
            if f.name.is_empty() {
                return Err(err("name", "the name is empty".into()));
            }
            if features[..i].iter().any(|g| g.name == f.name) {
                return Err(err(
                    "name",
                    "the name is used by an earlier feature; names must be unique".into(),
                ));
            }
            if f.agg.needs_of() && f.of.is_none() {
                return Err(err(
                    "of",
                    format!(
                        "`{}` needs `of`, the field to aggregate, e.g. of = \"amount\"",
                        f.agg
                    ),
                ));
            }
            if let Agg::Quantile(q) = f.agg {
                if !q.is_valid() {
                    return Err(err(
                        "q",
                        "`quantile` needs `q`, a number in (0, 1], e.g. q = 0.9".into(),
                    ));
                }
            }
            if f.window_ms <= 0 {
                return Err(err("window", "the window must be positive".into()));
            }
            if matches!(f.agg, Agg::Set(0)) {
                return Err(err("limit", "a `set` needs a `limit` of at least 1".into()));
            }
            let exact = match f.agg {
                Agg::DistinctCountApprox => Some(Agg::DistinctCount),
                Agg::LinkedDistinctCountApprox => Some(Agg::LinkedDistinctCount),
                _ => None,
            };
            if let (Some(exact), 1) = (exact, f.granularity_ms) {
                return Err(err(
                    "granularity",
                    format!(
                        "`{}` keeps one sketch per bucket and needs a `granularity`, e.g. \
                         granularity = \"1m\" (exact counts: `{exact}`)",
                        f.agg
                    ),
                ));
            }
            if f.granularity_ms <= 0 || f.window_ms % f.granularity_ms != 0 {
                return Err(err(
                    "granularity",
                    "the window must be a whole number of granularity buckets (e.g. window = \"1d\", granularity = \"1m\")".into(),
                ));
            }
            let mut f = f.clone();
            if let Some(filter) = &f.filter {
                // Stored in its canonical form: two spellings of one filter are one filter.
                let ast = crate::expr::parse_filter(filter)
                    .map_err(|e| err("where", format!("`where`: {e}")))?;
                f.filter = Some(ast.to_string());
            }
            if let Some(filter) = &f.filter {
                if !plan.filters.contains(filter) && plan.filters.len() == MAX_FILTERS {
                    return Err(err(
                        "where",
                        format!("more than {MAX_FILTERS} distinct filters in one pipeline"),
                    ));
                }
            }
            plan.add(i, &f);
            canonical.push(f);
        }
        plan.features = canonical;
        for key in &mut plan.keys {
            for series in &mut key.series {
                series.windows.sort_by_key(|w| w.width_ms);
                if series.kind == SeriesKind::Values {
                    let of = series.of.expect("value series have `of`");
                    series.numbers = plan.numeric_fields[of];
                    // Values kept as text need the field's canonical bytes.
                    plan.distinct_fields[of] |= !series.numbers;
                }
            }
        }
        Ok(plan)
    }

    /// A fingerprint of everything stored state depends on: each feature's name,
    /// aggregation, `of`, `by`, window and granularity, in pipeline order, and the lateness.
    /// Sixteen lowercase hex digits.
    ///
    /// It hashes ([`crate::key_hash`], xxh3) an explicit encoding, not a `Debug` rendering,
    /// so it changes only when one of those settings does: `FINGERPRINT_VERSION`, the
    /// number of features, then for each the length-prefixed name, aggregation name
    /// ([`Agg::name`]) and `of` (a 0/1 presence byte first), the number of `by` fields and
    /// each length-prefixed, the window and the granularity in milliseconds, and last the
    /// lateness; integers are 8 bytes little-endian. Stored checkpoints record it, so the
    /// encoding must stay as it is (a change needs a new version tag).
    pub fn fingerprint(&self) -> String {
        fn text(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut out = Vec::with_capacity(64 * self.features.len() + 32);
        out.extend_from_slice(FINGERPRINT_VERSION);
        out.extend_from_slice(&(self.features.len() as u64).to_le_bytes());
        for f in &self.features {
            text(&mut out, &f.name);
            text(&mut out, f.agg.name());
            match &f.of {
                None => out.push(0),
                Some(of) => {
                    out.push(1);
                    text(&mut out, of);
                }
            }
            out.extend_from_slice(&(f.by.len() as u64).to_le_bytes());
            for by in &f.by {
                text(&mut out, by);
            }
            out.extend_from_slice(&f.window_ms.to_le_bytes());
            out.extend_from_slice(&f.granularity_ms.to_le_bytes());
        }
        out.extend_from_slice(&self.lateness_ms.to_le_bytes());
        // Filters come last, and only when there are some, so that a plan without filters
        // keeps the fingerprint it had before filters existed (its state is the same).
        if self.features.iter().any(|f| f.filter.is_some()) {
            out.extend_from_slice(b"filters\0");
            for f in &self.features {
                match &f.filter {
                    None => out.push(0),
                    Some(filter) => {
                        out.push(1);
                        text(&mut out, filter);
                    }
                }
            }
        }
        // Relation features likewise: what their links mean (`via` and `via_where`).
        if !self.relations.is_empty() {
            out.extend_from_slice(b"relations\0");
            for r in &self.relations {
                out.extend_from_slice(&(r.feature as u64).to_le_bytes());
                text(&mut out, &self.fields[r.via]);
                match r.via_filter {
                    None => out.push(0),
                    Some(i) => {
                        out.push(1);
                        text(&mut out, &self.filters[i]);
                    }
                }
            }
        }
        format!("{:016x}", crate::key_hash(&out))
    }

    /// The same plan with each event's id in field `name` (`[event] id`), extracted as
    /// canonical bytes.
    pub fn with_event_id(mut self, name: &str) -> Self {
        let field = self.field_index(name);
        self.distinct_fields[field] = true;
        self.id_field = Some(field);
        self
    }

    pub(crate) fn field_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.fields.iter().position(|f| f == name) {
            return i;
        }
        self.fields.push(name.to_owned());
        self.numeric_fields.push(false);
        self.distinct_fields.push(false);
        self.fields.len() - 1
    }

    fn add(&mut self, index: usize, f: &FeatureSpec) {
        if f.agg.is_linked() {
            // Computed over links by [`Plan::with_relations`], not by a key's registers.
            return;
        }
        let of = f.of.as_deref().map(|name| self.field_index(name));
        let filter =
            f.filter
                .as_ref()
                .map(|text| match self.filters.iter().position(|t| t == text) {
                    Some(i) => i,
                    None => {
                        self.filters.push(text.clone());
                        self.filters.len() - 1
                    }
                });
        if let Some(of) = of {
            self.numeric_fields[of] |= f.agg.is_numeric();
            self.distinct_fields[of] |= matches!(
                f.agg,
                Agg::DistinctCount | Agg::DistinctCountApprox | Agg::Set(_)
            );
        }
        let key = match self.keys.iter().position(|k| k.by == f.by) {
            Some(k) => &mut self.keys[k],
            None => {
                self.keys.push(KeySpec {
                    by: f.by.clone(),
                    features: Vec::new(),
                    series: Vec::new(),
                });
                self.keys.last_mut().expect("just pushed")
            }
        };
        let slot = key.features.len();
        key.features.push(index);
        let kind = match f.agg {
            Agg::DistinctCount | Agg::Set(_) => SeriesKind::Distinct,
            Agg::DistinctCountApprox => SeriesKind::Approx,
            agg if agg.keeps_values() => SeriesKind::Values,
            _ => SeriesKind::Numeric,
        };
        let series = match key.series.iter().position(|s| {
            s.kind == kind
                && s.of == of
                && s.granularity_ms == f.granularity_ms
                && s.filter == filter
        }) {
            Some(s) => &mut key.series[s],
            None => {
                key.series.push(SeriesSpec {
                    kind,
                    of,
                    granularity_ms: f.granularity_ms,
                    windows: Vec::new(),
                    needs_values: false,
                    needs_squares: false,
                    filter,
                    numbers: false,
                    every_value: false,
                    lists: false,
                });
                key.series.last_mut().expect("just pushed")
            }
        };
        series.needs_values |= f.agg.is_numeric();
        series.needs_squares |= f.agg.needs_squares();
        series.every_value |= matches!(f.agg, Agg::Quantile(_));
        series.lists |= matches!(f.agg, Agg::Set(_));
        let window = match series
            .windows
            .iter()
            .position(|w| w.width_ms == f.window_ms)
        {
            Some(w) => &mut series.windows[w],
            None => {
                series.windows.push(WindowSpec {
                    width_ms: f.window_ms,
                    outputs: Vec::new(),
                    needs_min: false,
                    needs_max: false,
                });
                series.windows.last_mut().expect("just pushed")
            }
        };
        window.outputs.push((f.agg, slot));
        window.needs_min |= f.agg == Agg::Min;
        window.needs_max |= f.agg == Agg::Max;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An exact feature, for tests.
    pub(crate) fn feature(
        name: &str,
        agg: Agg,
        of: Option<&str>,
        by: &[&str],
        window_ms: i64,
    ) -> FeatureSpec {
        FeatureSpec {
            name: name.into(),
            agg,
            of: of.map(Into::into),
            by: by.iter().map(|s| s.to_string()).collect(),
            window_ms,
            granularity_ms: 1,
            filter: None,
        }
    }

    #[test]
    fn groups_by_key_field_and_window() {
        let plan = Plan::new(
            vec![
                feature("a", Agg::Sum, Some("amount"), &["user_id"], 1000),
                feature("b", Agg::Max, Some("amount"), &["user_id"], 1000),
                feature("c", Agg::Count, None, &["user_id"], 100),
                feature(
                    "d",
                    Agg::DistinctCount,
                    Some("device_id"),
                    &["user_id"],
                    5000,
                ),
                feature("e", Agg::Count, None, &["device_id"], 100),
                feature("f", Agg::Last, Some("amount"), &["user_id"], 100),
            ],
            0,
        )
        .expect("valid");
        assert_eq!(plan.keys.len(), 2);
        let user = &plan.keys[0];
        assert_eq!(user.features, vec![0, 1, 2, 3, 5]);
        assert_eq!(user.series.len(), 4);
        assert_eq!(user.series[0].windows.len(), 1);
        assert_eq!(
            user.series[0].windows[0].outputs,
            vec![(Agg::Sum, 0), (Agg::Max, 1)]
        );
        assert!(user.series[0].windows[0].needs_max);
        let last = &user.series[3];
        assert_eq!(last.kind, SeriesKind::Values);
        assert_eq!(last.windows[0].outputs, vec![(Agg::Last, 4)]);
        // The amounts are numbers (summed): kept as numbers.
        assert!(last.numbers && !last.every_value);
        assert_eq!(plan.fields, vec!["amount", "device_id"]);
        assert_eq!(plan.numeric_fields, vec![true, false]);
        assert_eq!(plan.distinct_fields, vec![false, true]);
    }

    fn fingerprint_plan() -> (Vec<FeatureSpec>, i64) {
        let mut daily = feature("a", Agg::Sum, Some("amount"), &["user_id"], 86_400_000);
        daily.granularity_ms = 60_000;
        (
            vec![
                daily,
                feature(
                    "b",
                    Agg::DistinctCount,
                    Some("device_id"),
                    &["user_id", "merchant_id"],
                    3_600_000,
                ),
                feature("c", Agg::Count, None, &["card"], 1_000),
            ],
            300_000,
        )
    }

    #[test]
    fn fingerprint_is_stable() {
        let (features, lateness) = fingerprint_plan();
        let plan = Plan::new(features, lateness).expect("valid");
        // Pinned: checkpoints record it, so it must not change between versions or builds.
        assert_eq!(plan.fingerprint(), "b14ebf23394dff1d");
        assert_eq!(plan.fingerprint(), plan.clone().fingerprint());
    }

    #[test]
    fn fingerprint_changes_with_every_setting() {
        let (features, lateness) = fingerprint_plan();
        let base = Plan::new(features.clone(), lateness)
            .expect("valid")
            .fingerprint();
        type Change = fn(&mut Vec<FeatureSpec>, &mut i64);
        let changes: [(&str, Change); 15] = [
            ("name", |f, _| f[0].name = "a2".into()),
            ("agg", |f, _| f[0].agg = Agg::Avg),
            ("variance", |f, _| f[0].agg = Agg::Variance),
            ("population variance", |f, _| f[0].agg = Agg::VariancePop),
            ("of", |f, _| f[0].of = Some("price".into())),
            ("of absent", |f, _| f[2].of = Some("card".into())),
            ("by", |f, _| f[1].by = vec!["user_id".into()]),
            ("by order", |f, _| f[1].by.reverse()),
            ("by split", |f, _| {
                f[1].by = vec!["user_idmerchant_id".into()]
            }),
            ("by empty", |f, _| f[2].by = vec![]),
            ("window", |f, _| f[2].window_ms = 2_000),
            ("granularity", |f, _| f[0].granularity_ms = 1_000),
            ("feature order", |f, _| f.swap(0, 2)),
            ("feature count", |f, _| {
                f.pop();
            }),
            ("lateness", |_, l| *l = 0),
        ];
        let mut seen = vec![base.clone()];
        for (what, change) in changes {
            let (mut f, mut l) = (features.clone(), lateness);
            change(&mut f, &mut l);
            let print = Plan::new(f, l).expect(what).fingerprint();
            assert!(!seen.contains(&print), "{what}: {print}");
            seen.push(print);
        }
    }

    #[test]
    fn rejects_invalid_features() {
        let e = Plan::new(vec![feature("a", Agg::Sum, None, &["u"], 10)], 0).expect_err("no of");
        assert_eq!(e.field, "of");
        let e = Plan::new(
            vec![
                feature("a", Agg::Count, None, &["u"], 10),
                feature("a", Agg::Count, None, &["u"], 10),
            ],
            0,
        )
        .expect_err("dup");
        assert_eq!(e.field, "name");
        let mut f = feature("a", Agg::Count, None, &["u"], 10);
        f.granularity_ms = 3;
        assert_eq!(
            Plan::new(vec![f], 0).expect_err("gran").field,
            "granularity"
        );
    }

    #[test]
    fn an_empty_by_is_one_global_key() {
        let plan = Plan::new(
            vec![
                feature("n", Agg::Count, None, &[], 10),
                feature("v", Agg::Variance, Some("amount"), &[], 10),
                feature("s", Agg::Sum, Some("amount"), &["u"], 10),
                feature("m", Agg::Max, Some("amount"), &[], 10),
            ],
            0,
        )
        .expect("valid");
        assert_eq!(plan.keys.len(), 2);
        assert!(plan.keys[0].by.is_empty());
        assert_eq!(plan.keys[0].features, vec![0, 1, 3]);
        // The variance shares the amount series with the max; only that series keeps squares.
        let amount = &plan.keys[0].series[1];
        assert_eq!(
            amount.windows[0].outputs,
            vec![(Agg::Variance, 1), (Agg::Max, 2)]
        );
        assert!(amount.needs_squares && !plan.keys[0].series[0].needs_squares);
        assert!(!plan.keys[1].series[0].needs_squares);
    }
}
