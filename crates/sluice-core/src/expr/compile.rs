//! Compilation of an [`Ast`] into a [`Compiled`] tree: paths become caller slots, constant
//! subtrees are folded, `field op constant` comparisons and constant `in` lists get their own
//! nodes.

use rustc_hash::FxHashMap;

use super::ast::{Ast, BinaryOp, Expr, Func, Lit, Method, Type, UnaryOp};
use super::error::{ExprError, Result};
use super::set::ConstSet;
use super::value::{Fields, Val, Value};

/// An expression ready to evaluate against the fields of one event at a time.
///
/// Evaluation allocates nothing and borrows strings from the fields and the expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub(crate) root: Node,
    ty: Type,
}

impl Compiled {
    /// Evaluates a filter: true only when the expression is TRUE (false and unknown do not
    /// match).
    #[inline]
    pub fn eval_filter<F: Fields + ?Sized>(&self, fields: &F) -> bool {
        self.root.test(fields) == Some(true)
    }

    /// Evaluates a derived expression. Unknown, missing, an object or an array give null.
    #[inline]
    pub fn eval<'a, F: Fields + ?Sized>(&'a self, fields: &'a F) -> Val<'a> {
        to_val(self.root.eval(fields))
    }

    /// The static type of the result.
    pub fn ty(&self) -> Type {
        self.ty
    }

    /// The value when the expression reads no field (it was folded to a constant).
    pub fn constant(&self) -> Option<Val<'_>> {
        match &self.root {
            Node::Const(c) => Some(to_val(c.value())),
            _ => None,
        }
    }
}

fn to_val(v: Value<'_>) -> Val<'_> {
    match v {
        Value::Missing | Value::Other => Val::Null,
        // Adding +0 turns -0 into 0 and leaves every other number as it is.
        Value::Num(n) => Val::Num(n + 0.0),
        Value::Str(s) => Val::Str(s),
        Value::Bool(b) => Val::Bool(b),
    }
}

impl Ast {
    /// Compiles the expression. `resolve` is called once per distinct path, in the order of
    /// [`Ast::paths`], and gives the slot under which [`Fields::get`] will find its value; a
    /// message it returns becomes an error at the path's first occurrence.
    pub fn compile(
        &self,
        mut resolve: impl FnMut(&[String]) -> Result<u32, String>,
    ) -> Result<Compiled> {
        let mut slots = Slots::default();
        for path in self.path_refs() {
            let slot = resolve(&path.segments).map_err(|m| ExprError::at(path.pos, m))?;
            slots.insert(&path.segments, slot);
        }
        Ok(Compiled {
            root: compile(&self.expr, &slots),
            ty: self.ty,
        })
    }
}

/// A constant operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Const {
    Null,
    Num(f64),
    Bool(bool),
    Str(Box<str>),
}

impl Const {
    #[inline]
    pub(crate) fn value(&self) -> Value<'_> {
        match self {
            Const::Null => Value::Missing,
            Const::Num(n) => Value::Num(*n),
            Const::Bool(b) => Value::Bool(*b),
            Const::Str(s) => Value::Str(s),
        }
    }

    fn of(v: Value<'_>) -> Const {
        match v {
            Value::Num(n) => Const::Num(n),
            Value::Bool(b) => Const::Bool(b),
            Value::Str(s) => Const::Str(s.into()),
            Value::Missing | Value::Other => Const::Null,
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    /// The operator with its operands swapped: `a < b` is `b > a`.
    fn flip(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            other => other,
        }
    }
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// A one-argument numeric function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Math {
    Abs,
    Ln,
    Exp,
    Sqrt,
    Round,
}

/// A node of the compiled tree. Evaluation is in `eval.rs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Const(Const),
    Field(u32),
    Has(u32),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    /// `field op constant`.
    CmpField(Cmp, u32, Const),
    Arith(Arith, Box<Node>, Box<Node>),
    /// Needle, the constant elements, the others.
    In(Box<Node>, ConstSet, Vec<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Math(Math, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    /// `max` when true, `min` when false.
    MinMax(bool, Vec<Node>),
    Coalesce(Vec<Node>),
    Method(Method, Box<Node>, Box<Node>),
}

/// The slot of every path.
type Slots<'e> = FxHashMap<&'e [String], u32>;

fn compile(e: &Expr, slots: &Slots<'_>) -> Node {
    let node = build(e, slots);
    let mut reads = false;
    e.visit_paths(&mut |_| reads = true);
    if reads || matches!(node, Node::Const(_)) {
        return node;
    }
    // No field below: evaluate once, here.
    let none: [Value<'_>; 0] = [];
    Node::Const(Const::of(node.eval(&none)))
}

fn build(e: &Expr, slots: &Slots<'_>) -> Node {
    let one = |x: &Expr| Box::new(compile(x, slots));
    let all = |xs: &[Expr]| xs.iter().map(|x| compile(x, slots)).collect::<Vec<_>>();
    // Every path was resolved above; MAX (missing) cannot happen.
    let slot = |segments: &[String]| slots.get(segments).copied().unwrap_or(u32::MAX);
    match e {
        Expr::Lit(lit) => Node::Const(match lit {
            Lit::Null => Const::Null,
            Lit::Bool(b) => Const::Bool(*b),
            Lit::Num(n) => Const::Num(*n),
            Lit::Str(s) => Const::Str(s.as_str().into()),
        }),
        Expr::Path(p) => Node::Field(slot(&p.segments)),
        Expr::Has(p) => Node::Has(slot(&p.segments)),
        Expr::Unary(UnaryOp::Not, x) => Node::Not(one(x)),
        Expr::Unary(UnaryOp::Neg, x) => Node::Neg(one(x)),
        Expr::Binary(op, a, b) => {
            let (a, b) = (one(a), one(b));
            let cmp = match op {
                BinaryOp::And => return Node::And(a, b),
                BinaryOp::Or => return Node::Or(a, b),
                BinaryOp::Add => return Node::Arith(Arith::Add, a, b),
                BinaryOp::Sub => return Node::Arith(Arith::Sub, a, b),
                BinaryOp::Mul => return Node::Arith(Arith::Mul, a, b),
                BinaryOp::Div => return Node::Arith(Arith::Div, a, b),
                BinaryOp::Eq => Cmp::Eq,
                BinaryOp::Ne => Cmp::Ne,
                BinaryOp::Lt => Cmp::Lt,
                BinaryOp::Le => Cmp::Le,
                BinaryOp::Gt => Cmp::Gt,
                BinaryOp::Ge => Cmp::Ge,
            };
            match (*a, *b) {
                (Node::Field(s), Node::Const(c)) => Node::CmpField(cmp, s, c),
                (Node::Const(c), Node::Field(s)) => Node::CmpField(cmp.flip(), s, c),
                (a, b) => Node::Cmp(cmp, Box::new(a), Box::new(b)),
            }
        }
        Expr::In(x, list) => {
            let (set, rest) = ConstSet::split(all(list));
            Node::In(one(x), set, rest)
        }
        Expr::Cond(c, a, b) => Node::Cond(one(c), one(a), one(b)),
        Expr::Call(func, args) => {
            let math = |m| Node::Math(m, one(&args[0]));
            match func {
                Func::Abs => math(Math::Abs),
                Func::Ln => math(Math::Ln),
                Func::Exp => math(Math::Exp),
                Func::Sqrt => math(Math::Sqrt),
                Func::Round => math(Math::Round),
                Func::Pow => Node::Pow(one(&args[0]), one(&args[1])),
                Func::Min => Node::MinMax(false, all(args)),
                Func::Max => Node::MinMax(true, all(args)),
                Func::Coalesce => Node::Coalesce(all(args)),
            }
        }
        Expr::Method(m, recv, arg) => Node::Method(*m, one(recv), one(arg)),
    }
}
