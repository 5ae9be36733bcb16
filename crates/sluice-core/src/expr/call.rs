//! Names in the grammar: field paths, function calls (`has` included) and method calls.

use super::ast::{Expr, Func, Method, Path, Type};
use super::check::{self, Ctx};
use super::error::{ExprError, Pos, Result};
use super::parser::{node, Node, Parser};
use super::token::Tok;

impl Parser {
    /// `primary ('.' method '(' expr ')')*`
    pub(crate) fn postfix(&mut self) -> Result<Node> {
        let mut receiver = self.primary()?;
        while self.peek() == &Tok::Dot {
            self.advance();
            let (method, name_pos) = self.method_name()?;
            let mut args = self.arguments(method.name(), Some(1))?;
            let found = args.len();
            let (Some(arg), 1) = (args.pop(), found) else {
                return Err(ExprError::at(
                    name_pos,
                    format!("{} takes 1 argument, found {found}", method.name()),
                ));
            };
            let name = method.name();
            check::want(receiver.ty, receiver.pos, Type::Str, Ctx::Receiver(name))?;
            check::want(arg.ty, arg.pos, Type::Str, Ctx::Argument(name))?;
            let height = receiver.height.max(arg.height);
            let expr = Expr::Method(method, Box::new(receiver.expr), Box::new(arg.expr));
            receiver = node(expr, Type::Bool, receiver.pos, height)?;
        }
        Ok(receiver)
    }

    /// After `.`: a known method name followed by `(`.
    #[inline(never)]
    fn method_name(&mut self) -> Result<(Method, Pos)> {
        let Tok::Ident(name) = self.peek() else {
            return Err(self.unexpected(
                "a method name after '.'",
                "; the methods are contains, endsWith and startsWith, and only a path has fields",
            ));
        };
        let Some(method) = Method::from_name(name) else {
            return Err(if self.peek_at(1) == &Tok::LParen {
                unknown_method(name, self.pos())
            } else {
                let what = format!("'(' after the method name {name}");
                self.advance();
                self.unexpected(&what, "")
            });
        };
        let pos = self.advance();
        if self.peek() != &Tok::LParen {
            let what = format!("'(' after the method name {}", method.name());
            return Err(self.unexpected(&what, ""));
        }
        Ok((method, pos))
    }

    /// After a name, with the next token `(`: arguments up to and including `)`.
    #[inline(never)]
    fn arguments(&mut self, name: &str, max: Option<usize>) -> Result<Vec<Node>> {
        self.advance();
        let mut args = Vec::new();
        if !self.eat(&Tok::RParen) {
            loop {
                args.push(self.expr()?);
                if self.eat(&Tok::RParen) {
                    break;
                }
                if max == Some(args.len()) || !self.eat(&Tok::Comma) {
                    let what = if max == Some(args.len()) {
                        format!("')' after the arguments of {name}")
                    } else {
                        format!("',' or ')' after the arguments of {name}")
                    };
                    return Err(self.unexpected(&what, ""));
                }
            }
        }
        Ok(args)
    }

    /// `segment ('.' segment)*`, stopping before `.name(` (a method call).
    #[inline(never)]
    pub(crate) fn path(&mut self) -> Path {
        let pos = self.pos();
        let mut segments = Vec::new();
        loop {
            if let Tok::Ident(s) | Tok::Quoted(s) = self.peek() {
                segments.push(s.clone());
            }
            self.advance();
            let next_is_segment = match (self.peek(), self.peek_at(1), self.peek_at(2)) {
                (Tok::Dot, Tok::Ident(_), Tok::LParen) => false,
                (Tok::Dot, Tok::Ident(_) | Tok::Quoted(_), _) => true,
                _ => false,
            };
            if !next_is_segment {
                return Path { segments, pos };
            }
            self.advance();
        }
    }

    /// A function call: the next tokens are a name and `(`.
    #[inline(never)]
    pub(crate) fn call(&mut self) -> Result<Node> {
        let pos = self.pos();
        let Tok::Ident(name) = self.peek() else {
            return Err(self.unexpected("a function name", ""));
        };
        if name == "has" {
            return self.has();
        }
        let Some(func) = Func::from_name(name) else {
            return Err(unknown_function(name, pos));
        };
        self.advance();
        let (min, max) = func.arity();
        let args = self.arguments(func.name(), max)?;
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            return Err(arity(func, args.len(), pos));
        }
        let mut ty = Type::Null;
        for arg in &args {
            if func == Func::Coalesce {
                ty = ty.join(arg.ty);
            } else {
                check::want(arg.ty, arg.pos, Type::Num, Ctx::Func(func.name()))?;
                ty = Type::Num;
            }
        }
        let height = args.iter().map(|a| a.height).max().unwrap_or(0);
        let expr = Expr::Call(func, args.into_iter().map(|a| a.expr).collect());
        node(expr, ty, pos, height)
    }

    /// `has(path)`: the next tokens are `has` and `(`.
    #[inline(never)]
    fn has(&mut self) -> Result<Node> {
        let pos = self.advance();
        let mut args = self.arguments("has", Some(1))?;
        let found = args.len();
        match (args.pop(), found) {
            (
                Some(Node {
                    expr: Expr::Path(path),
                    ..
                }),
                1,
            ) => node(Expr::Has(path), Type::Bool, pos, 0),
            (Some(arg), 1) => Err(ExprError::at(
                arg.pos,
                "has takes a field path, e.g. has(user.id)",
            )),
            _ => Err(ExprError::at(
                pos,
                format!("has takes 1 argument (a field path), found {found}"),
            )),
        }
    }
}

#[cold]
#[inline(never)]
fn unknown_function(name: &str, pos: Pos) -> ExprError {
    let hint = match Method::from_name(name) {
        Some(_) => format!(" ({name} is a method: write s.{name}(t))"),
        None => String::new(),
    };
    ExprError::at(
        pos,
        format!(
            "unknown function '{name}'; the functions are abs, coalesce, exp, has, ln, max, min, \
             pow, round, sqrt{hint}"
        ),
    )
}

#[cold]
#[inline(never)]
fn unknown_method(name: &str, pos: Pos) -> ExprError {
    let hint = if Func::from_name(name).is_some() || name == "has" {
        format!(" ({name} is a function: write {name}(x))")
    } else {
        String::new()
    };
    ExprError::at(
        pos,
        format!("unknown method '{name}'; the methods are contains, endsWith, startsWith{hint}"),
    )
}

#[cold]
#[inline(never)]
fn arity(func: Func, found: usize, pos: Pos) -> ExprError {
    let takes = match func.arity() {
        (1, Some(1)) => "1 argument".to_owned(),
        (min, Some(max)) if min == max => format!("{min} arguments"),
        (min, _) => format!("at least {min} arguments"),
    };
    ExprError::at(pos, format!("{} takes {takes}, found {found}", func.name()))
}
