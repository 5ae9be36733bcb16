//! Derived features: an expression over the event's fields and other features of the same
//! pipeline (`expr = "amount / user_amount_avg_7d"`), computed per event after the aggregated
//! features, in an order where every feature comes after those it reads.

use crate::expr::{self, Ast};
use crate::path::FieldPath;
use crate::plan::{Plan, PlanError};

/// A derived feature as written.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedSpec {
    /// Output name, unique within the pipeline.
    pub name: String,
    /// The expression (see `docs/expressions.md`); kept in its canonical form once planned.
    pub expr: String,
    /// Its index among all features of the pipeline, aggregated and derived: the output
    /// order.
    pub position: usize,
}

/// What a path of a derived expression names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An aggregated feature: its index in [`Plan::features`].
    Feature(usize),
    /// Another derived feature: its index in [`Plan::derived`].
    Derived(usize),
    /// A field of the event: its index in [`Plan::expr_fields`].
    Field(usize),
}

/// One feature of the output, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// An aggregated feature: its index in [`Plan::features`].
    Feature(usize),
    /// A derived feature: its index in [`Plan::derived`].
    Derived(usize),
}

/// A planned derived feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    /// The feature as written (its expression canonical).
    pub spec: DerivedSpec,
    /// The value of each path of the expression, in the order of [`Ast::paths`].
    pub inputs: Vec<Input>,
}

impl Plan {
    /// Adds derived features to a plan of aggregated ones. A path of an expression names a
    /// feature when it is one key equal to a feature's name, else a field of the event.
    /// Fails on a duplicate name, an expression that does not parse, or a cycle.
    pub fn with_derived(mut self, derived: Vec<DerivedSpec>) -> Result<Plan, PlanError> {
        let err = |d: &DerivedSpec, message: String| PlanError {
            feature: d.position,
            name: d.name.clone(),
            field: "expr",
            message,
        };
        let mut asts: Vec<Ast> = Vec::with_capacity(derived.len());
        for (i, d) in derived.iter().enumerate() {
            let taken = self.features.iter().any(|f| f.name == d.name)
                || derived[..i].iter().any(|e| e.name == d.name);
            if d.name.is_empty() {
                return Err(err(d, "the name is empty".into()));
            }
            if taken {
                return Err(err(
                    d,
                    "the name is used by another feature; names must be unique".into(),
                ));
            }
            asts.push(expr::parse(&d.expr).map_err(|e| err(d, format!("`expr`: {e}")))?);
        }
        let mut planned = Vec::with_capacity(derived.len());
        for (d, ast) in derived.iter().zip(&asts) {
            let mut inputs = Vec::new();
            for path in ast.paths() {
                let name = (path.len() == 1).then(|| path[0].as_str());
                let input = if let Some(f) =
                    name.and_then(|n| self.features.iter().position(|f| f.name == n))
                {
                    Input::Feature(f)
                } else if let Some(j) = name.and_then(|n| derived.iter().position(|e| e.name == n))
                {
                    Input::Derived(j)
                } else {
                    let text = FieldPath::from_keys(path).to_string();
                    let i = match self.expr_fields.iter().position(|f| *f == text) {
                        Some(i) => i,
                        None => {
                            self.expr_fields.push(text);
                            self.expr_fields.len() - 1
                        }
                    };
                    Input::Field(i)
                };
                inputs.push(input);
            }
            let mut spec = d.clone();
            spec.expr = ast.to_string();
            planned.push(Derived { spec, inputs });
        }
        self.derived_order = evaluation_order(&planned).map_err(|cycle| {
            let first = &derived[cycle[0]];
            let names: Vec<&str> = cycle.iter().map(|&i| derived[i].name.as_str()).collect();
            err(
                first,
                format!(
                    "derived features read each other in a cycle: {} -> {}",
                    names.join(" -> "),
                    first.name
                ),
            )
        })?;
        self.derived = planned;
        self.outputs = output_order(self.features.len(), &self.derived);
        Ok(self)
    }
}

impl Plan {
    /// The same plan, not writing the aggregated features named in `names` (the hidden parts
    /// of StreamFQL features: computed and read by derived features, not output).
    pub fn hide(mut self, names: &[String]) -> Plan {
        let hidden: Vec<usize> = (0..self.features.len())
            .filter(|&f| names.contains(&self.features[f].name))
            .collect();
        self.outputs
            .retain(|o| !matches!(o, Output::Feature(f) if hidden.contains(f)));
        self.hidden = hidden;
        self
    }
}

/// An order in which every derived feature comes after the derived features it reads, or a
/// cycle (indices into `derived`).
fn evaluation_order(derived: &[Derived]) -> Result<Vec<usize>, Vec<usize>> {
    // 0: not visited, 1: on the current path, 2: done.
    let mut state = vec![0u8; derived.len()];
    let mut order = Vec::with_capacity(derived.len());
    let mut path = Vec::new();
    fn visit(
        i: usize,
        derived: &[Derived],
        state: &mut [u8],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                return Err(path[start..].to_vec());
            }
            _ => {}
        }
        state[i] = 1;
        path.push(i);
        for input in &derived[i].inputs {
            if let Input::Derived(j) = *input {
                visit(j, derived, state, path, order)?;
            }
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..derived.len() {
        visit(i, derived, &mut state, &mut path, &mut order)?;
    }
    Ok(order)
}

/// The output order: derived features at their positions, aggregated ones in between in
/// their order.
fn output_order(aggregated: usize, derived: &[Derived]) -> Vec<Output> {
    let total = aggregated + derived.len();
    let mut outputs = Vec::with_capacity(total);
    let mut next = 0;
    for position in 0..total {
        match derived.iter().position(|d| d.spec.position == position) {
            Some(j) => outputs.push(Output::Derived(j)),
            None if next < aggregated => {
                outputs.push(Output::Feature(next));
                next += 1;
            }
            None => {}
        }
    }
    // Positions beyond the end (or repeated) still output every feature once.
    while next < aggregated {
        outputs.push(Output::Feature(next));
        next += 1;
    }
    for j in 0..derived.len() {
        if !outputs.contains(&Output::Derived(j)) {
            outputs.push(Output::Derived(j));
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::feature;
    use crate::Agg;

    fn derived(name: &str, expr: &str, position: usize) -> DerivedSpec {
        DerivedSpec {
            name: name.into(),
            expr: expr.into(),
            position,
        }
    }

    #[test]
    fn paths_name_features_or_event_fields_and_outputs_keep_the_pipeline_order() {
        let plan = Plan::new(
            vec![
                feature("avg_7d", Agg::Avg, Some("amount"), &["user"], 10),
                feature("n_1h", Agg::Count, None, &["user"], 10),
            ],
            0,
        )
        .expect("valid")
        .with_derived(vec![
            derived("ratio", "amount / avg_7d", 1),
            derived(
                "busy",
                "ratio > 2 || n_1h >= 10 || payload.`geo.ip` == 'x'",
                3,
            ),
        ])
        .expect("valid");
        assert_eq!(
            plan.outputs,
            [
                Output::Feature(0),
                Output::Derived(0),
                Output::Feature(1),
                Output::Derived(1)
            ]
        );
        assert_eq!(plan.expr_fields, ["amount", "payload.`geo.ip`"]);
        assert_eq!(plan.derived[0].inputs, [Input::Field(0), Input::Feature(0)]);
        assert_eq!(
            plan.derived[1].inputs,
            [Input::Derived(0), Input::Feature(1), Input::Field(1)]
        );
        // `busy` reads `ratio`: ratio first.
        assert_eq!(plan.derived_order, [0, 1]);
    }

    #[test]
    fn cycles_duplicates_and_syntax_errors_are_refused() {
        let base =
            || Plan::new(vec![feature("n", Agg::Count, None, &["user"], 10)], 0).expect("valid");
        let e = base()
            .with_derived(vec![
                derived("a", "b + 1", 1),
                derived("b", "c * 2", 2),
                derived("c", "a", 3),
            ])
            .expect_err("a cycle");
        assert_eq!(e.field, "expr");
        assert!(e.message.contains("a -> b -> c -> a"), "{e}");
        let e = base()
            .with_derived(vec![derived("n", "1", 1)])
            .expect_err("a taken name");
        assert!(e.message.contains("unique"), "{e}");
        let e = base()
            .with_derived(vec![derived("x", "n +", 1)])
            .expect_err("bad syntax");
        assert!(e.message.starts_with("`expr`: 1:"), "{e}");
        let e = base()
            .with_derived(vec![derived("x", "x + 1", 1)])
            .expect_err("reads itself");
        assert!(e.message.contains("x -> x"), "{e}");
    }
}
