//! A reference evaluator, written straight from the rules in `docs/expressions.md` over the
//! syntax tree, without the compiler's folding and special cases. The property tests check
//! that [`Compiled`](super::super::Compiled) agrees with it.

use super::super::{BinaryOp, Expr, Func, Lit, Method, UnaryOp, Val};

/// A value: null (missing, JSON null, unknown), a number, a string, a boolean, an object.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum R {
    Null,
    Num(f64),
    Str(String),
    Bool(bool),
    Obj,
}

impl R {
    /// What a derived expression reports: objects are null, `-0` is `0`.
    pub(super) fn output(self) -> R {
        match self {
            R::Obj => R::Null,
            R::Num(n) => R::Num(n + 0.0),
            r => r,
        }
    }

    pub(super) fn of(v: Val<'_>) -> R {
        match v {
            Val::Null => R::Null,
            Val::Num(n) => R::Num(n),
            Val::Str(s) => R::Str(s.to_owned()),
            Val::Bool(b) => R::Bool(b),
        }
    }

    fn truth(&self) -> Option<bool> {
        match self {
            R::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

fn number(x: f64) -> R {
    if x.is_finite() {
        R::Num(x)
    } else {
        R::Null
    }
}

/// Evaluates `e`, reading fields through `field`.
pub(super) fn eval(e: &Expr, field: &dyn Fn(&[String]) -> R) -> R {
    let ev = |x: &Expr| eval(x, field);
    let read = |segments: &[String]| match field(segments) {
        R::Num(n) if !n.is_finite() => R::Null,
        r => r,
    };
    match e {
        Expr::Lit(Lit::Null) => R::Null,
        Expr::Lit(Lit::Num(n)) => R::Num(*n),
        Expr::Lit(Lit::Str(s)) => R::Str(s.clone()),
        Expr::Lit(Lit::Bool(b)) => R::Bool(*b),
        Expr::Path(p) => read(p.segments()),
        Expr::Has(p) => R::Bool(read(p.segments()) != R::Null),
        Expr::Unary(UnaryOp::Not, x) => ev(x).truth().map_or(R::Null, |b| R::Bool(!b)),
        Expr::Unary(UnaryOp::Neg, x) => match ev(x) {
            R::Num(n) => R::Num(-n),
            _ => R::Null,
        },
        Expr::Binary(op, a, b) => binary(*op, ev(a), ev(b)),
        Expr::In(x, list) => match ev(x) {
            R::Null => R::Null,
            x => R::Bool(list.iter().any(|item| {
                let item = ev(item);
                match (&x, &item) {
                    (R::Num(_), R::Num(_)) | (R::Str(_), R::Str(_)) | (R::Bool(_), R::Bool(_)) => {
                        x == item
                    }
                    _ => false,
                }
            })),
        },
        Expr::Cond(c, a, b) => match ev(c).truth() {
            Some(true) => ev(a),
            Some(false) => ev(b),
            None => R::Null,
        },
        Expr::Call(Func::Coalesce, args) => args
            .iter()
            .map(ev)
            .find(|r| *r != R::Null)
            .unwrap_or(R::Null),
        Expr::Call(func, args) => {
            let mut nums = Vec::new();
            for arg in args {
                match ev(arg) {
                    R::Num(n) => nums.push(n),
                    _ => return R::Null,
                }
            }
            number(match func {
                Func::Abs => nums[0].abs(),
                Func::Ln => nums[0].ln(),
                Func::Exp => nums[0].exp(),
                Func::Sqrt => nums[0].sqrt(),
                Func::Round => nums[0].round(),
                Func::Pow => nums[0].powf(nums[1]),
                Func::Min => nums.iter().copied().fold(f64::INFINITY, f64::min),
                Func::Max => nums.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Func::Coalesce => unreachable!("handled above"),
            })
        }
        Expr::Method(m, s, t) => match (ev(s), ev(t)) {
            (R::Str(s), R::Str(t)) => R::Bool(match m {
                Method::StartsWith => s.starts_with(&t),
                Method::EndsWith => s.ends_with(&t),
                Method::Contains => s.contains(&t),
            }),
            _ => R::Null,
        },
    }
}

fn binary(op: BinaryOp, a: R, b: R) -> R {
    use std::cmp::Ordering;
    match op {
        BinaryOp::And => match (a.truth(), b.truth()) {
            (Some(false), _) | (_, Some(false)) => R::Bool(false),
            (Some(true), Some(true)) => R::Bool(true),
            _ => R::Null,
        },
        BinaryOp::Or => match (a.truth(), b.truth()) {
            (Some(true), _) | (_, Some(true)) => R::Bool(true),
            (Some(false), Some(false)) => R::Bool(false),
            _ => R::Null,
        },
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => match (a, b) {
            (R::Num(x), R::Num(y)) => number(match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                _ => x / y,
            }),
            _ => R::Null,
        },
        _ => {
            let order: Option<Ordering> = match (&a, &b) {
                (R::Num(x), R::Num(y)) => x.partial_cmp(y),
                (R::Str(x), R::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
                (R::Bool(x), R::Bool(y)) if matches!(op, BinaryOp::Eq | BinaryOp::Ne) => {
                    Some(x.cmp(y))
                }
                _ => None,
            };
            let Some(order) = order else {
                return R::Null;
            };
            R::Bool(match op {
                BinaryOp::Eq => order == Ordering::Equal,
                BinaryOp::Ne => order != Ordering::Equal,
                BinaryOp::Lt => order == Ordering::Less,
                BinaryOp::Le => order != Ordering::Greater,
                BinaryOp::Gt => order == Ordering::Greater,
                _ => order != Ordering::Less,
            })
        }
    }
}
