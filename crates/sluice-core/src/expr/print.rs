//! The canonical text of an expression: minimal parentheses, one space around binary
//! operators, strings in double quotes. It parses back to an equal [`Ast`].

use std::fmt::{self, Display, Formatter, Write};

use super::ast::{Ast, Expr, Lit, Path, UnaryOp};
use super::token::is_plain_ident;

impl Display for Ast {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0)
    }
}

impl Display for Path {
    /// Segments joined by dots; a segment that is not a plain identifier, or is a keyword
    /// (`true`, `false`, `null`, `in`), in backticks.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_char('.')?;
            }
            if is_plain_ident(segment) {
                f.write_str(segment)?;
            } else {
                write!(f, "`{segment}`")?;
            }
        }
        Ok(())
    }
}

impl Display for Lit {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Null => f.write_str("null"),
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Num(n) => write_num(f, *n),
            Lit::Str(s) => write_str(f, s),
        }
    }
}

/// Binding strength of a node: 0 `?:`, 1–5 binary operators, 6 prefix, 7 the rest.
fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Cond(..) => 0,
        Expr::Binary(op, ..) => op.precedence(),
        Expr::In(..) => 3,
        Expr::Unary(..) => 6,
        Expr::Lit(_) | Expr::Path(_) | Expr::Has(_) | Expr::Call(..) | Expr::Method(..) => 7,
    }
}

/// Writes `e`, in parentheses when it binds less tightly than `min`.
fn write_expr(f: &mut Formatter<'_>, e: &Expr, min: u8) -> fmt::Result {
    let own = precedence(e);
    if own < min {
        f.write_char('(')?;
    }
    match e {
        Expr::Lit(lit) => lit.fmt(f)?,
        Expr::Path(p) => p.fmt(f)?,
        Expr::Has(p) => write!(f, "has({p})")?,
        Expr::Unary(op, x) => {
            f.write_char(match op {
                UnaryOp::Not => '!',
                UnaryOp::Neg => '-',
            })?;
            write_expr(f, x, 6)?;
        }
        Expr::Binary(op, a, b) => {
            // Comparisons do not chain: both sides bind tighter. The others associate left.
            let (left, right) = if op.is_comparison() {
                (4, 4)
            } else {
                (own, own + 1)
            };
            write_expr(f, a, left)?;
            write!(f, " {} ", op.symbol())?;
            write_expr(f, b, right)?;
        }
        Expr::In(x, list) => {
            write_expr(f, x, 4)?;
            f.write_str(" in [")?;
            write_list(f, list)?;
            f.write_char(']')?;
        }
        Expr::Cond(c, a, b) => {
            write_expr(f, c, 1)?;
            f.write_str(" ? ")?;
            write_expr(f, a, 0)?;
            f.write_str(" : ")?;
            write_expr(f, b, 0)?;
        }
        Expr::Call(func, args) => {
            write!(f, "{}(", func.name())?;
            write_list(f, args)?;
            f.write_char(')')?;
        }
        Expr::Method(m, recv, arg) => {
            write_expr(f, recv, 7)?;
            write!(f, ".{}(", m.name())?;
            write_expr(f, arg, 0)?;
            f.write_char(')')?;
        }
    }
    if own < min {
        f.write_char(')')?;
    }
    Ok(())
}

fn write_list(f: &mut Formatter<'_>, items: &[Expr]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_expr(f, item, 0)?;
    }
    Ok(())
}

/// Whole numbers below 10^15 as integers, others in the shortest form that reads back exactly.
fn write_num(f: &mut Formatter<'_>, n: f64) -> fmt::Result {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        write!(f, "{}", n as i64)
    } else {
        f.write_str(ryu::Buffer::new().format(n))
    }
}

/// `s` as a string literal of the language: double-quoted, with `"` `\` and control
/// characters escaped.
pub fn quote(s: &str) -> String {
    struct Quoted<'a>(&'a str);
    impl fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
            write_str(f, self.0)
        }
    }
    Quoted(s).to_string()
}

/// A double-quoted string with `"` `\` and control characters escaped.
fn write_str(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() && (c as u32) < 0x10000 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}
