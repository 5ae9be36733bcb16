//! Recursive-descent parser (precedence climbing for the binary operators) with the static
//! type check: text to [`Ast`].
//!
//! Each rule returns the node, its static type, where it starts and its height; type errors
//! are raised where a node is built, so they point at the offending operand.

use super::ast::{Ast, BinaryOp, Expr, Lit, Type, UnaryOp};
use super::check::{self, Ctx};
use super::error::{ExprError, Pos, Result};
use super::lexer::lex;
use super::token::{Tok, Token};

/// The most levels an expression tree may have (`a || b || c` has 3). A taller tree is refused
/// rather than risking the stack of the compiler, the evaluator or `Drop`.
pub const MAX_HEIGHT: u32 = 128;

/// The deepest brackets, prefix operators and `?:` branches may nest. Deeper input is refused
/// rather than risking the stack of the parser.
pub const MAX_NESTING: u32 = 64;

/// Parses and type-checks an expression (a `where` filter or a derived `expr`).
pub fn parse(text: &str) -> Result<Ast> {
    let mut p = Parser {
        tokens: lex(text)?,
        i: 0,
        nesting: 0,
    };
    let root = p.expr()?;
    if p.peek() != &Tok::Eof {
        return Err(p.trailing());
    }
    Ok(Ast {
        expr: root.expr,
        ty: root.ty,
    })
}

/// A parsed node with what the checks need.
pub(crate) struct Node {
    pub(crate) expr: Expr,
    pub(crate) ty: Type,
    pub(crate) pos: Pos,
    pub(crate) height: u32,
}

/// What may follow an operand: a binary operator or `in`, with its precedence.
#[derive(Clone, Copy)]
enum Infix {
    Op(BinaryOp),
    In,
}

fn infix(tok: &Tok) -> Option<(Infix, u8)> {
    let op = match tok {
        Tok::OrOr => BinaryOp::Or,
        Tok::AndAnd => BinaryOp::And,
        Tok::EqEq => BinaryOp::Eq,
        Tok::NotEq => BinaryOp::Ne,
        Tok::Lt => BinaryOp::Lt,
        Tok::Le => BinaryOp::Le,
        Tok::Gt => BinaryOp::Gt,
        Tok::Ge => BinaryOp::Ge,
        Tok::Plus => BinaryOp::Add,
        Tok::Minus => BinaryOp::Sub,
        Tok::Star => BinaryOp::Mul,
        Tok::Slash => BinaryOp::Div,
        Tok::In => return Some((Infix::In, 3)),
        _ => return None,
    };
    Some((Infix::Op(op), op.precedence()))
}

pub(crate) struct Parser {
    tokens: Vec<Token>,
    i: usize,
    /// Current bracket / prefix-operator nesting.
    nesting: u32,
}

impl Parser {
    pub(crate) fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    pub(crate) fn peek_at(&self, k: usize) -> &Tok {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.i + k).min(last)].tok
    }

    pub(crate) fn pos(&self) -> Pos {
        self.tokens[self.i].pos
    }

    /// Moves past the next token (never past the end) and returns where it was.
    pub(crate) fn advance(&mut self) -> Pos {
        let pos = self.pos();
        if self.i + 1 < self.tokens.len() {
            self.i += 1;
        }
        pos
    }

    pub(crate) fn eat(&mut self, tok: &Tok) -> bool {
        let found = self.peek() == tok;
        if found {
            self.advance();
        }
        found
    }

    /// "expected {what}, found {next token}{hint}" at the next token.
    #[cold]
    #[inline(never)]
    pub(crate) fn unexpected(&self, what: &str, hint: &str) -> ExprError {
        ExprError::at(
            self.pos(),
            format!("expected {what}, found {}{hint}", self.peek().describe()),
        )
    }

    #[cold]
    #[inline(never)]
    fn trailing(&self) -> ExprError {
        let hint = match self.peek() {
            Tok::LParen => "; only functions and methods can be called",
            _ => "",
        };
        self.unexpected("an operator or the end of the expression", hint)
    }

    pub(crate) fn enter(&mut self) -> Result<()> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(too_deep(self.pos(), MAX_NESTING));
        }
        Ok(())
    }

    /// `binary ('?' expr ':' expr)?`
    pub(crate) fn expr(&mut self) -> Result<Node> {
        self.enter()?;
        let cond = self.binary(1)?;
        let node = if self.peek() == &Tok::Question {
            self.ternary(cond)?
        } else {
            cond
        };
        self.nesting -= 1;
        Ok(node)
    }

    #[inline(never)]
    fn ternary(&mut self, cond: Node) -> Result<Node> {
        let q = self.advance();
        check::want(cond.ty, cond.pos, Type::Bool, Ctx::Cond)?;
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
        node(expr, ty, cond.pos, height)
    }

    /// Operands joined by operators of precedence `min` or more; left-associative, except
    /// that comparisons (and `in`) do not chain.
    fn binary(&mut self, min: u8) -> Result<Node> {
        let mut left = self.unary()?;
        while let Some((op, prec)) = infix(self.peek()) {
            if prec < min {
                break;
            }
            let at = self.advance();
            left = match op {
                Infix::In => self.membership(left)?,
                Infix::Op(op) => {
                    let right = self.binary(prec + 1)?;
                    self.operation(op, left, right, at)?
                }
            };
            if prec == 3 && matches!(infix(self.peek()), Some((_, 3))) {
                return Err(ExprError::at(
                    self.pos(),
                    "comparisons do not chain: write (a < b) && (b < c), or add parentheses",
                ));
            }
        }
        Ok(left)
    }

    #[inline(never)]
    fn operation(&mut self, op: BinaryOp, left: Node, right: Node, at: Pos) -> Result<Node> {
        let ty = if op.is_comparison() {
            check::comparison(op, (left.ty, left.pos), (right.ty, right.pos), at)?;
            Type::Bool
        } else {
            let ty = match op {
                BinaryOp::Or | BinaryOp::And => Type::Bool,
                _ => Type::Num,
            };
            let ctx = Ctx::Op(op.symbol());
            check::want(left.ty, left.pos, ty, ctx)?;
            check::want(right.ty, right.pos, ty, ctx)?;
            ty
        };
        let height = left.height.max(right.height);
        let expr = Expr::Binary(op, Box::new(left.expr), Box::new(right.expr));
        node(expr, ty, left.pos, height)
    }

    /// `'[' (expr (',' expr)* ','?)? ']'` after `needle in`.
    #[inline(never)]
    fn membership(&mut self, needle: Node) -> Result<Node> {
        if needle.ty == Type::Null {
            return Err(check::null_operand(needle.pos));
        }
        if !self.eat(&Tok::LBracket) {
            return Err(self.unexpected("'[' after 'in'", "; 'in' takes a list such as [1, 2]"));
        }
        let mut items = Vec::new();
        let mut height = needle.height;
        while self.peek() != &Tok::RBracket {
            let item = self.expr()?;
            check::element(needle.ty, item.ty, item.pos)?;
            height = height.max(item.height);
            items.push(item.expr);
            if !self.eat(&Tok::Comma) && self.peek() != &Tok::RBracket {
                return Err(self.unexpected("',' or ']' in the list after 'in'", ""));
            }
        }
        self.advance();
        let expr = Expr::In(Box::new(needle.expr), items);
        node(expr, Type::Bool, needle.pos, height)
    }

    /// `('!' | '-') unary | postfix`
    fn unary(&mut self) -> Result<Node> {
        let (op, ty, symbol) = match self.peek() {
            Tok::Bang => (UnaryOp::Not, Type::Bool, "!"),
            Tok::Minus => (UnaryOp::Neg, Type::Num, "-"),
            _ => return self.postfix(),
        };
        let pos = self.advance();
        self.enter()?;
        let operand = self.unary()?;
        self.nesting -= 1;
        check::want(operand.ty, operand.pos, ty, Ctx::Op(symbol))?;
        let expr = Expr::Unary(op, Box::new(operand.expr));
        node(expr, ty, pos, operand.height)
    }

    /// Literals, parenthesised expressions, paths and function calls.
    pub(crate) fn primary(&mut self) -> Result<Node> {
        let pos = self.pos();
        let (lit, ty) = match self.peek() {
            Tok::Num(n) => (Lit::Num(*n), Type::Num),
            Tok::Str(s) => (Lit::Str(s.clone()), Type::Str),
            Tok::True => (Lit::Bool(true), Type::Bool),
            Tok::False => (Lit::Bool(false), Type::Bool),
            Tok::Null => (Lit::Null, Type::Null),
            Tok::LParen => {
                self.advance();
                let mut inner = self.expr()?;
                if !self.eat(&Tok::RParen) {
                    return Err(self.unexpected("')'", ""));
                }
                inner.pos = pos;
                return Ok(inner);
            }
            Tok::Ident(_) if self.peek_at(1) == &Tok::LParen => return self.call(),
            Tok::Ident(_) | Tok::Quoted(_) => {
                let expr = Expr::Path(self.path());
                return node(expr, Type::Any, pos, 0);
            }
            Tok::LBracket => {
                return Err(self.unexpected("an expression", "; a list [..] may only follow 'in'"))
            }
            Tok::Dot if matches!(self.peek_at(1), Tok::Num(_)) => {
                return Err(self.unexpected("an expression", "; write 0.5, not .5"))
            }
            _ => return Err(self.unexpected("an expression", "")),
        };
        self.advance();
        node(Expr::Lit(lit), ty, pos, 0)
    }
}

/// A node one level above children of height `height`.
pub(crate) fn node(expr: Expr, ty: Type, pos: Pos, height: u32) -> Result<Node> {
    if height >= MAX_HEIGHT {
        return Err(too_deep(pos, MAX_HEIGHT));
    }
    Ok(Node {
        expr,
        ty,
        pos,
        height: height + 1,
    })
}

#[cold]
#[inline(never)]
fn too_deep(pos: Pos, limit: u32) -> ExprError {
    let hint = if limit == MAX_HEIGHT {
        "; write a long chain of alternatives as x in [a, b, ...]"
    } else {
        ""
    };
    ExprError::at(
        pos,
        format!("expression nested too deeply (the limit is {limit} levels){hint}"),
    )
}
