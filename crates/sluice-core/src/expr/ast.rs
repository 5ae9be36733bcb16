//! The syntax tree of an expression, as parsed and type-checked.

use rustc_hash::FxHashSet;

use super::error::Pos;

/// A parsed, type-checked expression. Build one with [`parse`](super::parse); print its
/// canonical text with `Display`; compile it with [`Ast::compile`](Ast::compile).
///
/// Equality compares the expressions, not where they were written: an expression and the
/// reparse of its printed form are equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    pub(crate) expr: Expr,
    pub(crate) ty: Type,
}

impl Ast {
    /// The root of the tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The static type of the result.
    pub fn ty(&self) -> Type {
        self.ty
    }

    /// The field paths the expression reads, each as its segments, in order of first appearance,
    /// without duplicates: the fields the caller must extract.
    pub fn paths(&self) -> Vec<Vec<String>> {
        self.path_refs()
            .into_iter()
            .map(|p| p.segments.clone())
            .collect()
    }

    /// The first occurrence of every distinct path, in order of first appearance.
    pub(crate) fn path_refs(&self) -> Vec<&Path> {
        let mut seen: FxHashSet<&[String]> = FxHashSet::default();
        let mut out: Vec<&Path> = Vec::new();
        self.expr.visit_paths(&mut |p| {
            if seen.insert(&p.segments) {
                out.push(p);
            }
        });
        out
    }
}

/// A node of the syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Lit),
    /// A field path (or, in a derived feature, the name of another feature).
    Path(Path),
    /// `has(path)`: whether the field is present and not null.
    Has(Path),
    /// `!x` or `-x`.
    Unary(UnaryOp, Box<Expr>),
    /// `a op b`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `x in [a, b, ...]`.
    In(Box<Expr>, Vec<Expr>),
    /// `c ? a : b`.
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `f(args...)`, a function other than `has`.
    Call(Func, Vec<Expr>),
    /// `receiver.method(argument)`.
    Method(Method, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Calls `f` on every path (including those of `has`), left to right as written.
    pub fn visit_paths<'e>(&'e self, f: &mut impl FnMut(&'e Path)) {
        match self {
            Expr::Lit(_) => {}
            Expr::Path(p) | Expr::Has(p) => f(p),
            Expr::Unary(_, x) => x.visit_paths(f),
            Expr::Binary(_, a, b) | Expr::Method(_, a, b) => {
                a.visit_paths(f);
                b.visit_paths(f);
            }
            Expr::In(x, list) => {
                x.visit_paths(f);
                list.iter().for_each(|e| e.visit_paths(f));
            }
            Expr::Cond(c, a, b) => {
                c.visit_paths(f);
                a.visit_paths(f);
                b.visit_paths(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|e| e.visit_paths(f)),
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number: finite and not negative (`-2` is a negation of `2`).
    Num(f64),
    /// A string, unescaped.
    Str(String),
}

/// A path: one or more segments, outermost first.
#[derive(Debug, Clone)]
pub struct Path {
    pub(crate) segments: Vec<String>,
    pub(crate) pos: Pos,
}

impl Path {
    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Where the path starts in the text it was parsed from.
    pub fn pos(&self) -> Pos {
        self.pos
    }
}

impl PartialEq for Path {
    /// Paths are equal when their segments are; where they were written does not matter.
    fn eq(&self, other: &Path) -> bool {
        self.segments == other.segments
    }
}

/// A prefix operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `!`: logical not.
    Not,
    /// `-`: negation.
    Neg,
}

/// An infix operator (`in` and `?:` have their own nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
        }
    }

    /// Binding strength: 1 for `||` up to 5 for `*` and `/` (0 is `?:`, 6 prefix operators).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div => 5,
        }
    }

    /// Whether this is one of `== != < <= > >=`.
    pub fn is_comparison(self) -> bool {
        self.precedence() == 3
    }
}

/// A function (besides `has`, which takes a path and is [`Expr::Has`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    /// `abs(x)`
    Abs,
    /// `ln(x)`: the natural logarithm.
    Ln,
    /// `exp(x)`
    Exp,
    /// `sqrt(x)`
    Sqrt,
    /// `pow(x, y)`
    Pow,
    /// `min(x, y, ...)`
    Min,
    /// `max(x, y, ...)`
    Max,
    /// `round(x)`: half away from zero.
    Round,
    /// `coalesce(a, b, ...)`: the first argument that is not null.
    Coalesce,
}

impl Func {
    /// Every function, in the order error messages list them.
    pub const ALL: [Func; 9] = [
        Func::Abs,
        Func::Coalesce,
        Func::Exp,
        Func::Ln,
        Func::Max,
        Func::Min,
        Func::Pow,
        Func::Round,
        Func::Sqrt,
    ];

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Func::Abs => "abs",
            Func::Ln => "ln",
            Func::Exp => "exp",
            Func::Sqrt => "sqrt",
            Func::Pow => "pow",
            Func::Min => "min",
            Func::Max => "max",
            Func::Round => "round",
            Func::Coalesce => "coalesce",
        }
    }

    /// The function called `name`.
    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The least and the most number of arguments (`None`: no limit).
    pub fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::Pow => (2, Some(2)),
            Func::Min | Func::Max | Func::Coalesce => (2, None),
            Func::Abs | Func::Ln | Func::Exp | Func::Sqrt | Func::Round => (1, Some(1)),
        }
    }
}

/// A string method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `s.startsWith(t)`
    StartsWith,
    /// `s.endsWith(t)`
    EndsWith,
    /// `s.contains(t)`
    Contains,
}

impl Method {
    /// Every method, in the order error messages list them.
    pub const ALL: [Method; 3] = [Method::Contains, Method::EndsWith, Method::StartsWith];

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Method::StartsWith => "startsWith",
            Method::EndsWith => "endsWith",
            Method::Contains => "contains",
        }
    }

    /// The method called `name`.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The static type of an expression, checked at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// Only ever null: the `null` literal.
    Null,
    /// A boolean (or unknown).
    Bool,
    /// A number (or null).
    Num,
    /// A string (or null).
    Str,
    /// Not known before evaluation: a field, or a mix such as `coalesce(x, 0)`.
    Any,
}

impl Type {
    /// How an error message names a value of this type.
    pub fn describe(self) -> &'static str {
        match self {
            Type::Null => "null",
            Type::Bool => "a boolean",
            Type::Num => "a number",
            Type::Str => "a string",
            Type::Any => "a value",
        }
    }

    /// The type of a value that is one of `a` or `b` (`?:` branches, `coalesce` arguments).
    pub fn join(self, other: Type) -> Type {
        match (self, other) {
            (Type::Null, t) | (t, Type::Null) => t,
            (a, b) if a == b => a,
            _ => Type::Any,
        }
    }
}
