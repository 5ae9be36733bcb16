//! Recursive-descent parser with the static type check: text to [`Ast`].
//!
//! Each level of the grammar returns the node, its static type, where it starts and its height;
//! type errors are raised where a node is built, so they point at the offending operand.

use super::ast::{Ast, BinaryOp, Expr, Func, Lit, Method, Path, Type, UnaryOp};
use super::error::{ExprError, Pos, Result};
use super::lexer::{lex, Tok, Token};

/// The deepest an expression may nest, in tree levels and in brackets or prefix operators:
/// deeper input is refused rather than risking the stack of the parser, evaluator or `Drop`.
pub const MAX_DEPTH: u32 = 256;

/// Parses and type-checks an expression (a `where` filter or a derived `expr`).
pub fn parse(text: &str) -> Result<Ast> {
    let mut p = Parser {
        tokens: lex(text)?,
        i: 0,
        nesting: 0,
    };
    let root = p.expr()?;
    if p.peek() != &Tok::Eof {
        let hint = match p.peek() {
            Tok::LParen => "; only functions and methods can be called",
            _ => "",
        };
        return Err(p.unexpected("an operator or the end of the expression", hint));
    }
    Ok(Ast {
        expr: root.expr,
        ty: root.ty,
    })
}

/// A parsed node with what the checks need.
struct Node {
    expr: Expr,
    ty: Type,
    pos: Pos,
    height: u32,
}

struct Parser {
    tokens: Vec<Token>,
    i: usize,
    /// Current bracket / prefix-operator nesting.
    nesting: u32,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> &Tok {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.i + k).min(last)].tok
    }

    fn pos(&self) -> Pos {
        self.tokens[self.i].pos
    }

    /// Takes the next token (never past the end).
    fn advance(&mut self) -> Token {
        let token = self.tokens[self.i].clone();
        if self.i + 1 < self.tokens.len() {
            self.i += 1;
        }
        token
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.advance();
            true
        } else {
            false
        }
    }

    /// "expected {what}, found {next token}{hint}" at the next token.
    fn unexpected(&self, what: &str, hint: &str) -> ExprError {
        ExprError::at(
            self.pos(),
            format!("expected {what}, found {}{hint}", self.peek().describe()),
        )
    }

    fn enter(&mut self) -> Result<()> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(ExprError::at(
                self.pos(),
                format!("expression nested too deeply (the limit is {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    /// `or ('?' expr ':' expr)?`
    fn expr(&mut self) -> Result<Node> {
        self.enter()?;
        let cond = self.binary(1)?;
        let node = if self.peek() == &Tok::Question {
            let q = self.advance().pos;
            want(&cond, Type::Bool, "the condition of '?'")?;
            let then = self.expr()?;
            if !self.eat(&Tok::Colon) {
                let what = format!("':' of the '?' at {}:{}", q.line, q.column);
                return Err(self.unexpected(&what, ""));
            }
            let other = self.expr()?;
            let ty = then.ty.join(other.ty);
            let height = cond.height.max(then.height).max(other.height);
            let expr = Expr::Cond(
                Box::new(cond.expr),
                Box::new(then.expr),
                Box::new(other.expr),
            );
            node(expr, ty, cond.pos, height)?
        } else {
            cond
        };
        self.nesting -= 1;
        Ok(node)
    }

    /// Left-associative levels: 1 `||`, 2 `&&`, 4 `+ -`, 5 `* /`; 3 is the comparisons.
    fn binary(&mut self, level: u8) -> Result<Node> {
        if level == 3 {
            return self.comparison();
        }
        if level == 6 {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        loop {
            let op = match (level, self.peek()) {
                (1, Tok::OrOr) => BinaryOp::Or,
                (2, Tok::AndAnd) => BinaryOp::And,
                (4, Tok::Plus) => BinaryOp::Add,
                (4, Tok::Minus) => BinaryOp::Sub,
                (5, Tok::Star) => BinaryOp::Mul,
                (5, Tok::Slash) => BinaryOp::Div,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.binary(level + 1)?;
            let (operand, ty) = if level <= 2 {
                (Type::Bool, Type::Bool)
            } else {
                (Type::Num, Type::Num)
            };
            let ctx = format!("'{}'", op.symbol());
            want(&left, operand, &ctx)?;
            want(&right, operand, &ctx)?;
            let height = left.height.max(right.height);
            let expr = Expr::Binary(op, Box::new(left.expr), Box::new(right.expr));
            left = node(expr, ty, left.pos, height)?;
        }
    }

    /// `add (cmp add | 'in' list)?`: comparisons do not chain.
    fn comparison(&mut self) -> Result<Node> {
        let left = self.binary(4)?;
        let Some(op) = comparison_op(self.peek()) else {
            return Ok(left);
        };
        let op_pos = self.advance().pos;
        let node = match op {
            None => self.membership(left)?,
            Some(op) => {
                let right = self.binary(4)?;
                check_comparison(op, &left, &right, op_pos)?;
                let height = left.height.max(right.height);
                let expr = Expr::Binary(op, Box::new(left.expr), Box::new(right.expr));
                node(expr, Type::Bool, left.pos, height)?
            }
        };
        if comparison_op(self.peek()).is_some() {
            return Err(ExprError::at(
                self.pos(),
                "comparisons do not chain: write (a < b) && (b < c), or add parentheses",
            ));
        }
        Ok(node)
    }

    /// `'[' (expr (',' expr)* ','?)? ']'` after `needle in`.
    fn membership(&mut self, needle: Node) -> Result<Node> {
        if needle.ty == Type::Null {
            return Err(null_operand(needle.pos));
        }
        if !self.eat(&Tok::LBracket) {
            return Err(self.unexpected("'[' after 'in'", "; 'in' takes a list such as [1, 2]"));
        }
        self.enter()?;
        let mut items = Vec::new();
        let mut height = needle.height;
        while self.peek() != &Tok::RBracket {
            let item = self.expr()?;
            if item.ty == Type::Null {
                return Err(ExprError::at(
                    item.pos,
                    "null in a list never matches; test a field with has(x)",
                ));
            }
            if needle.ty != Type::Any && item.ty != Type::Any && item.ty != needle.ty {
                return Err(ExprError::at(
                    item.pos,
                    format!(
                        "this element is {} but the value before 'in' is {}: it never matches",
                        item.ty.describe(),
                        needle.ty.describe()
                    ),
                ));
            }
            height = height.max(item.height);
            items.push(item.expr);
            if !self.eat(&Tok::Comma) && self.peek() != &Tok::RBracket {
                return Err(self.unexpected("',' or ']' in the list after 'in'", ""));
            }
        }
        self.advance();
        self.nesting -= 1;
        node(
            Expr::In(Box::new(needle.expr), items),
            Type::Bool,
            needle.pos,
            height,
        )
    }

    /// `('!' | '-') unary | postfix`
    fn unary(&mut self) -> Result<Node> {
        let op = match self.peek() {
            Tok::Bang => UnaryOp::Not,
            Tok::Minus => UnaryOp::Neg,
            _ => return self.postfix(),
        };
        let pos = self.advance().pos;
        self.enter()?;
        let operand = self.unary()?;
        self.nesting -= 1;
        let (ty, ctx) = match op {
            UnaryOp::Not => (Type::Bool, "'!'"),
            UnaryOp::Neg => (Type::Num, "'-'"),
        };
        want(&operand, ty, ctx)?;
        node(
            Expr::Unary(op, Box::new(operand.expr)),
            ty,
            pos,
            operand.height,
        )
    }

    /// `primary ('.' method '(' expr ')')*`
    fn postfix(&mut self) -> Result<Node> {
        let mut receiver = self.primary()?;
        while self.peek() == &Tok::Dot {
            self.advance();
            let Tok::Ident(name) = self.peek().clone() else {
                return Err(self.unexpected(
                    "a method name after '.'",
                    "; the methods are contains, endsWith and startsWith, and only a path \
                     has fields",
                ));
            };
            let name_pos = self.advance().pos;
            if self.peek() != &Tok::LParen {
                return Err(self.unexpected(&format!("'(' after the method name {name}"), ""));
            }
            receiver = self.method(receiver, &name, name_pos)?;
        }
        Ok(receiver)
    }

    /// A method call, with the next token `(`.
    fn method(&mut self, receiver: Node, name: &str, name_pos: Pos) -> Result<Node> {
        let Some(method) = Method::from_name(name) else {
            let hint = if Func::from_name(name).is_some() || name == "has" {
                format!(" ({name} is a function: write {name}(x))")
            } else {
                String::new()
            };
            return Err(ExprError::at(
                name_pos,
                format!("unknown method '{name}'; the methods are contains, endsWith, startsWith{hint}"),
            ));
        };
        let mut args = self.arguments(name, Some(1))?;
        if args.len() != 1 {
            return Err(ExprError::at(
                name_pos,
                format!("{name} takes 1 argument, found {}", args.len()),
            ));
        }
        let arg = args.remove(0);
        want(&receiver, Type::Str, &format!("the receiver of {name}"))?;
        want(&arg, Type::Str, &format!("the argument of {name}"))?;
        let height = receiver.height.max(arg.height);
        let expr = Expr::Method(method, Box::new(receiver.expr), Box::new(arg.expr));
        node(expr, Type::Bool, receiver.pos, height)
    }

    /// After `(`: arguments up to and including `)`.
    fn arguments(&mut self, name: &str, max: Option<usize>) -> Result<Vec<Node>> {
        self.advance();
        self.enter()?;
        let mut args = Vec::new();
        if !self.eat(&Tok::RParen) {
            loop {
                args.push(self.expr()?);
                if self.eat(&Tok::RParen) {
                    break;
                }
                if max == Some(args.len()) {
                    let what = format!("')' after the arguments of {name}");
                    return Err(self.unexpected(&what, ""));
                }
                if !self.eat(&Tok::Comma) {
                    let what = format!("',' or ')' after the arguments of {name}");
                    return Err(self.unexpected(&what, ""));
                }
            }
        }
        self.nesting -= 1;
        Ok(args)
    }

    /// Literals, parenthesised expressions, paths and function calls.
    fn primary(&mut self) -> Result<Node> {
        let pos = self.pos();
        let lit = match self.peek() {
            Tok::Num(n) => Some((Lit::Num(*n), Type::Num)),
            Tok::Str(s) => Some((Lit::Str(s.clone()), Type::Str)),
            Tok::True => Some((Lit::Bool(true), Type::Bool)),
            Tok::False => Some((Lit::Bool(false), Type::Bool)),
            Tok::Null => Some((Lit::Null, Type::Null)),
            _ => None,
        };
        if let Some((lit, ty)) = lit {
            self.advance();
            return node(Expr::Lit(lit), ty, pos, 0);
        }
        match self.peek().clone() {
            Tok::LParen => {
                self.advance();
                let mut inner = self.expr()?;
                if !self.eat(&Tok::RParen) {
                    return Err(self.unexpected("')'", ""));
                }
                inner.pos = pos;
                Ok(inner)
            }
            Tok::Ident(name) if self.peek_at(1) == &Tok::LParen => {
                self.advance();
                self.call(&name, pos)
            }
            Tok::Ident(first) | Tok::Quoted(first) => Ok(Node {
                expr: Expr::Path(self.path(first)),
                ty: Type::Any,
                pos,
                height: 0,
            }),
            Tok::LBracket => Err(self.unexpected(
                "an expression",
                "; a list [..] may only follow 'in'",
            )),
            _ => Err(self.unexpected("an expression", "")),
        }
    }

    /// `segment ('.' segment)*`, stopping before `.name(` (a method call).
    /// The next token is the segment `first`.
    fn path(&mut self, first: String) -> Path {
        let pos = self.advance().pos;
        let mut segments = vec![first];
        while self.peek() == &Tok::Dot {
            let segment = match (self.peek_at(1), self.peek_at(2)) {
                (Tok::Ident(_), Tok::LParen) => break,
                (Tok::Ident(s) | Tok::Quoted(s), _) => s.clone(),
                _ => break,
            };
            self.advance();
            self.advance();
            segments.push(segment);
        }
        Path { segments, pos }
    }

    /// A function call, with the next token `(`.
    fn call(&mut self, name: &str, pos: Pos) -> Result<Node> {
        if name == "has" {
            let args = self.arguments(name, Some(1))?;
            return match <[Node; 1]>::try_from(args) {
                Ok([Node {
                    expr: Expr::Path(path),
                    ..
                }]) => node(Expr::Has(path), Type::Bool, pos, 0),
                Ok([arg]) => Err(ExprError::at(
                    arg.pos,
                    "has takes a field path, e.g. has(user.id)",
                )),
                Err(args) => Err(ExprError::at(
                    pos,
                    format!("has takes 1 argument (a field path), found {}", args.len()),
                )),
            };
        }
        let Some(func) = Func::from_name(name) else {
            let hint = match Method::from_name(name) {
                Some(_) => format!(" ({name} is a method: write s.{name}(t))"),
                None => String::new(),
            };
            return Err(ExprError::at(
                pos,
                format!(
                    "unknown function '{name}'; the functions are abs, coalesce, exp, has, ln, \
                     max, min, pow, round, sqrt{hint}"
                ),
            ));
        };
        let (min, max) = func.arity();
        let args = self.arguments(name, max)?;
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            let takes = match max {
                Some(m) if m == min => format!("{m}"),
                _ => format!("at least {min}"),
            };
            let s = if takes == "1" { "" } else { "s" };
            return Err(ExprError::at(
                pos,
                format!("{name} takes {takes} argument{s}, found {}", args.len()),
            ));
        }
        let mut ty = if func == Func::Coalesce {
            Type::Null
        } else {
            Type::Num
        };
        for arg in &args {
            if func == Func::Coalesce {
                ty = ty.join(arg.ty);
            } else {
                want(arg, Type::Num, name)?;
            }
        }
        let height = args.iter().map(|a| a.height).max().unwrap_or(0);
        let expr = Expr::Call(func, args.into_iter().map(|a| a.expr).collect());
        node(expr, ty, pos, height)
    }
}

/// A node one level above children of height `height`.
fn node(expr: Expr, ty: Type, pos: Pos, height: u32) -> Result<Node> {
    if height >= MAX_DEPTH {
        return Err(ExprError::at(
            pos,
            format!(
                "expression nested too deeply (the limit is {MAX_DEPTH} levels); write a long \
                 chain of alternatives as x in [a, b, ...]"
            ),
        ));
    }
    Ok(Node {
        expr,
        ty,
        pos,
        height: height + 1,
    })
}

/// `Some(Some(op))` for a comparison operator, `Some(None)` for `in`.
fn comparison_op(tok: &Tok) -> Option<Option<BinaryOp>> {
    Some(Some(match tok {
        Tok::EqEq => BinaryOp::Eq,
        Tok::NotEq => BinaryOp::Ne,
        Tok::Lt => BinaryOp::Lt,
        Tok::Le => BinaryOp::Le,
        Tok::Gt => BinaryOp::Gt,
        Tok::Ge => BinaryOp::Ge,
        Tok::In => return Some(None),
        _ => return None,
    }))
}

/// `n` must be of type `ty` (or unknown until evaluation).
fn want(n: &Node, ty: Type, ctx: &str) -> Result<()> {
    if n.ty == ty || n.ty == Type::Any {
        return Ok(());
    }
    let found = match n.ty {
        Type::Null => "null, which is always unknown here; test a field with has(x)",
        t => t.describe(),
    };
    Err(ExprError::at(
        n.pos,
        format!("{ctx} needs {}, found {found}", ty.describe()),
    ))
}

fn null_operand(pos: Pos) -> ExprError {
    ExprError::at(
        pos,
        "comparing with null is always unknown; test a field with has(x) or !has(x)",
    )
}

/// Comparisons of known, different types (or with `null`, or ordering booleans) are refused:
/// they could only ever be unknown.
fn check_comparison(op: BinaryOp, left: &Node, right: &Node, op_pos: Pos) -> Result<()> {
    for side in [left, right] {
        if side.ty == Type::Null {
            return Err(null_operand(side.pos));
        }
        if side.ty == Type::Bool && !matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
            return Err(ExprError::at(
                side.pos,
                format!(
                    "'{}' needs numbers or strings, found a boolean (booleans only compare \
                     with == and !=)",
                    op.symbol()
                ),
            ));
        }
    }
    if left.ty != Type::Any && right.ty != Type::Any && left.ty != right.ty {
        return Err(ExprError::at(
            op_pos,
            format!(
                "'{}' compares {} with {}, which is always unknown",
                op.symbol(),
                left.ty.describe(),
                right.ty.describe()
            ),
        ));
    }
    Ok(())
}
