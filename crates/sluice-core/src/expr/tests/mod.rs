//! Tests of the expression language: evaluation rules, parsing and errors, and property tests
//! against a reference evaluator.

mod errors;
mod eval;
mod parse;
mod prop;
mod reference;

use super::{parse, Val, Value};

/// Compiles `text`, giving each path the slot of its canonical text in `fields`.
fn compile(text: &str, fields: &[(&str, Value<'_>)]) -> super::Compiled {
    let ast = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    ast.compile(|segments| {
        let name = super::Path {
            segments: segments.to_vec(),
            pos: super::Pos::START,
        }
        .to_string();
        Ok(fields
            .iter()
            .position(|(n, _)| *n == name)
            .map_or(u32::MAX, |i| i as u32))
    })
    .expect("every path resolves")
}

fn values<'a>(fields: &[(&str, Value<'a>)]) -> Vec<Value<'a>> {
    fields.iter().map(|(_, v)| *v).collect()
}

/// The value of a derived expression, as text: `null`, `true`, `2.5`, `"s"`.
fn ev(text: &str, fields: &[(&str, Value<'_>)]) -> String {
    let compiled = compile(text, fields);
    let values = values(fields);
    match compiled.eval(&values) {
        Val::Null => "null".into(),
        Val::Num(n) => format!("{n}"),
        Val::Bool(b) => format!("{b}"),
        Val::Str(s) => format!("{s:?}"),
    }
}

/// Whether a filter matches.
fn matches(text: &str, fields: &[(&str, Value<'_>)]) -> bool {
    let compiled = compile(text, fields);
    let values = values(fields);
    let matched = compiled.eval_filter(&values);
    // A filter matches exactly when the expression is true.
    assert_eq!(matched, compiled.eval(&values) == Val::Bool(true), "{text}");
    matched
}

/// The message of the error `text` gives, as `line:column: message`.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(ast) => panic!("{text} parsed as {ast}"),
        Err(e) => e.to_string(),
    }
}
