//! The expression language of feature filters (`where`) and derived features (`expr`): a
//! subset of CEL with SQL three-valued logic. The full rules are in `docs/expressions.md`.
//!
//! ```
//! use sluice_core::expr::{parse, Val, Value};
//!
//! let ast = parse(r#"status == "failed" && amount > 100"#).unwrap();
//! assert_eq!(ast.paths(), [vec!["status".to_owned()], vec!["amount".to_owned()]]);
//! // The caller decides where each path's value sits: here, its index in a slice.
//! let paths = ast.paths();
//! let filter = ast
//!     .compile(|p| Ok(paths.iter().position(|q| q == p).unwrap() as u32))
//!     .unwrap();
//! assert!(filter.eval_filter(&[Value::Str("failed"), Value::Num(250.0)]));
//! assert!(!filter.eval_filter(&[Value::Str("failed"), Value::Missing]));
//!
//! let derived = parse("coalesce(a, 0) / b").unwrap().compile(|p| Ok((p[0] != "a") as u32));
//! let derived = derived.unwrap();
//! assert_eq!(derived.eval(&[Value::Missing, Value::Num(4.0)]), Val::Num(0.0));
//! assert_eq!(derived.eval(&[Value::Num(1.0), Value::Num(0.0)]), Val::Null);
//! ```
//!
//! - [`parse`] / [`parse_filter`]: text to a type-checked [`Ast`], or an [`ExprError`] with
//!   line and column.
//! - [`Ast::paths`]: the fields to extract; [`Ast::compile`]: paths to caller slots.
//! - [`Compiled::eval_filter`] and [`Compiled::eval`]: one event's [`Fields`] to a match or a
//!   [`Val`].
//! - `Display` on [`Ast`]: the canonical text, which parses back to an equal [`Ast`].

mod ast;
mod call;
mod check;
mod compile;
mod error;
mod eval;
mod lexer;
mod parser;
mod print;
mod set;
mod token;
mod value;

#[cfg(test)]
mod tests;

pub use ast::{Ast, BinaryOp, Expr, Func, Lit, Method, Path, Type, UnaryOp};
pub use compile::Compiled;
pub use error::{ExprError, Pos, Result};
pub use parser::{parse, MAX_HEIGHT, MAX_NESTING};
pub use print::quote;
pub use value::{Fields, Val, Value};

/// Parses a `where` filter: an expression whose value can be a boolean.
pub fn parse_filter(text: &str) -> Result<Ast> {
    let ast = parse(text)?;
    match ast.ty() {
        Type::Bool | Type::Any => Ok(ast),
        ty => Err(ExprError::at(
            Pos::START,
            format!(
                "a filter must be a condition (a boolean), found {}",
                ty.describe()
            ),
        )),
    }
}
