//! Evaluation of a compiled tree over one event's fields.
//!
//! [`Value::Missing`] stands for null and for UNKNOWN alike: SQL three-valued logic falls out
//! of treating every non-boolean as unknown in `!`, `&&`, `||` and `?:`.

use super::ast::Method;
use super::compile::{Arith, Cmp, Math, Node};
use super::value::{Fields, Value};

impl Node {
    /// The value of this node: `Missing` is null / unknown.
    pub(crate) fn eval<'a, F: Fields + ?Sized>(&'a self, f: &'a F) -> Value<'a> {
        match self {
            Node::Const(c) => c.value(),
            Node::Field(slot) => load(f, *slot),
            Node::Has(slot) => Value::Bool(!matches!(load(f, *slot), Value::Missing)),
            Node::Neg(x) => match x.eval(f) {
                Value::Num(n) => Value::Num(-n),
                _ => Value::Missing,
            },
            Node::Not(_)
            | Node::And(..)
            | Node::Or(..)
            | Node::Cmp(..)
            | Node::CmpField(..)
            | Node::In(..)
            | Node::Method(..) => self.test(f).map_or(Value::Missing, Value::Bool),
            Node::Arith(op, a, b) => match (a.eval(f), b.eval(f)) {
                (Value::Num(x), Value::Num(y)) => num(match op {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Div => x / y,
                }),
                _ => Value::Missing,
            },
            Node::Cond(c, a, b) => match c.test(f) {
                Some(true) => a.eval(f),
                Some(false) => b.eval(f),
                None => Value::Missing,
            },
            Node::Math(m, x) => match x.eval(f) {
                Value::Num(x) => num(match m {
                    Math::Abs => x.abs(),
                    Math::Ln => x.ln(),
                    Math::Exp => x.exp(),
                    Math::Sqrt => x.sqrt(),
                    Math::Round => x.round(),
                }),
                _ => Value::Missing,
            },
            Node::Pow(a, b) => match (a.eval(f), b.eval(f)) {
                (Value::Num(x), Value::Num(y)) => num(x.powf(y)),
                _ => Value::Missing,
            },
            Node::MinMax(max, args) => {
                let mut acc = if *max {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
                for arg in args {
                    let Value::Num(x) = arg.eval(f) else {
                        return Value::Missing;
                    };
                    acc = if *max { acc.max(x) } else { acc.min(x) };
                }
                Value::Num(acc)
            }
            Node::Coalesce(args) => args
                .iter()
                .map(|a| a.eval(f))
                .find(|v| *v != Value::Missing)
                .unwrap_or(Value::Missing),
        }
    }

    /// The truth of a condition: `None` is unknown. Conditions are evaluated here, without
    /// building a [`Value`], because filters are made of them.
    pub(crate) fn test<F: Fields + ?Sized>(&self, f: &F) -> Option<bool> {
        match self {
            Node::Not(x) => x.test(f).map(|b| !b),
            Node::And(a, b) => match a.test(f) {
                Some(false) => Some(false),
                left => match (left, b.test(f)) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
            },
            Node::Or(a, b) => match a.test(f) {
                Some(true) => Some(true),
                left => match (left, b.test(f)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            },
            Node::CmpField(op, slot, c) => compare(*op, load(f, *slot), c.value()),
            Node::Cmp(op, a, b) => compare(*op, a.eval(f), b.eval(f)),
            Node::Has(slot) => Some(!matches!(load(f, *slot), Value::Missing)),
            Node::In(needle, set, rest) => match needle.eval(f) {
                Value::Missing => None,
                x => Some(set.contains(x) || rest.iter().any(|e| same(x, e.eval(f)))),
            },
            Node::Method(m, recv, arg) => match (recv.eval(f), arg.eval(f)) {
                (Value::Str(s), Value::Str(t)) => Some(match m {
                    Method::StartsWith => s.starts_with(t),
                    Method::EndsWith => s.ends_with(t),
                    Method::Contains => s.contains(t),
                }),
                _ => None,
            },
            other => match other.eval(f) {
                Value::Bool(b) => Some(b),
                _ => None,
            },
        }
    }
}

/// A field's value, with a number that is not finite read as missing.
#[inline]
fn load<F: Fields + ?Sized>(f: &F, slot: u32) -> Value<'_> {
    match f.get(slot) {
        Value::Num(n) if !n.is_finite() => Value::Missing,
        v => v,
    }
}

/// An arithmetic result: NaN and infinities are null.
#[inline]
fn num(x: f64) -> Value<'static> {
    if x.is_finite() {
        Value::Num(x)
    } else {
        Value::Missing
    }
}

/// Numbers numerically, strings by bytes, booleans by `==` and `!=` only; anything else
/// (a missing operand, mixed types, objects) is unknown.
#[inline]
fn compare(op: Cmp, a: Value<'_>, b: Value<'_>) -> Option<bool> {
    let holds = match (a, b) {
        (Value::Num(x), Value::Num(y)) => match op {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
        },
        (Value::Str(x), Value::Str(y)) => match op {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
        },
        (Value::Bool(x), Value::Bool(y)) => match op {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            _ => return None,
        },
        _ => return None,
    };
    Some(holds)
}

/// Whether an `in` element matches: same type and equal.
#[inline]
fn same(a: Value<'_>, b: Value<'_>) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}
