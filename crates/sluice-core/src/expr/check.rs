//! The static type rules, checked as the parser builds each node, and their error messages.
//!
//! An operand whose type is known at parse time must fit its operator; a value read from a
//! field is [`Type::Any`] and fits everywhere (it is checked at evaluation instead). Errors are
//! built out of line (`#[cold]`) to keep the parser's recursive frames small.

use super::ast::{BinaryOp, Type};
use super::error::{ExprError, Pos, Result};

/// What needs an operand of some type, for the error message.
#[derive(Clone, Copy)]
pub(crate) enum Ctx {
    /// An operator such as `'&&'`.
    Op(&'static str),
    /// A function such as `abs`.
    Func(&'static str),
    /// The string a method is called on.
    Receiver(&'static str),
    /// The argument of a method.
    Argument(&'static str),
    /// The condition of `?:`.
    Cond,
}

/// An operand of static type `found` at `pos` must be of type `want` (or `Any`).
#[inline]
pub(crate) fn want(found: Type, pos: Pos, want: Type, ctx: Ctx) -> Result<()> {
    if found == want || found == Type::Any {
        Ok(())
    } else {
        Err(mismatch(found, pos, want, ctx))
    }
}

#[cold]
#[inline(never)]
fn mismatch(found: Type, pos: Pos, want: Type, ctx: Ctx) -> ExprError {
    let ctx = match ctx {
        Ctx::Op(op) => format!("'{op}'"),
        Ctx::Func(name) => name.to_owned(),
        Ctx::Receiver(name) => format!("the receiver of {name}"),
        Ctx::Argument(name) => format!("the argument of {name}"),
        Ctx::Cond => "the condition of '?'".to_owned(),
    };
    let found = match found {
        Type::Null => "null, which is always unknown here; test a field with has(x)",
        t => t.describe(),
    };
    ExprError::at(
        pos,
        format!("{ctx} needs {}, found {found}", want.describe()),
    )
}

/// Comparisons of known, different types, with `null`, or ordering booleans are refused: they
/// could only ever be unknown.
#[inline]
pub(crate) fn comparison(
    op: BinaryOp,
    left: (Type, Pos),
    right: (Type, Pos),
    at: Pos,
) -> Result<()> {
    for (ty, pos) in [left, right] {
        if ty == Type::Null {
            return Err(null_operand(pos));
        }
        if ty == Type::Bool && !matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
            return Err(unordered(op, pos));
        }
    }
    if left.0 != Type::Any && right.0 != Type::Any && left.0 != right.0 {
        return Err(mixed(op, left.0, right.0, at));
    }
    Ok(())
}

#[cold]
#[inline(never)]
pub(crate) fn null_operand(pos: Pos) -> ExprError {
    ExprError::at(
        pos,
        "comparing with null is always unknown; test a field with has(x) or !has(x)",
    )
}

#[cold]
#[inline(never)]
fn unordered(op: BinaryOp, pos: Pos) -> ExprError {
    ExprError::at(
        pos,
        format!(
            "'{}' needs numbers or strings, found a boolean (booleans only compare with == and \
             !=)",
            op.symbol()
        ),
    )
}

#[cold]
#[inline(never)]
fn mixed(op: BinaryOp, left: Type, right: Type, at: Pos) -> ExprError {
    ExprError::at(
        at,
        format!(
            "'{}' compares {} with {}, which is always unknown",
            op.symbol(),
            left.describe(),
            right.describe()
        ),
    )
}

/// An element of an `in` list of static type `item` at `pos`, after a needle of type `needle`.
#[inline]
pub(crate) fn element(needle: Type, item: Type, pos: Pos) -> Result<()> {
    if item == Type::Null {
        return Err(ExprError::at(
            pos,
            "null in a list never matches; test a field with has(x)",
        ));
    }
    if needle != Type::Any && item != Type::Any && item != needle {
        return Err(foreign_element(needle, item, pos));
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn foreign_element(needle: Type, item: Type, pos: Pos) -> ExprError {
    ExprError::at(
        pos,
        format!(
            "this element is {} but the value before 'in' is {}: it never matches",
            item.describe(),
            needle.describe()
        ),
    )
}
