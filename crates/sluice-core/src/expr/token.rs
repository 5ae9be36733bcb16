//! Tokens of expression text.

use super::ast::Lit;
use super::error::Pos;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Num(f64),
    Str(String),
    /// A plain identifier: a path segment, function or method name.
    Ident(String),
    /// A backtick-quoted path segment, without the backticks.
    Quoted(String),
    True,
    False,
    Null,
    In,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Question,
    Colon,
    OrOr,
    AndAnd,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Bang,
    Eof,
}

impl Tok {
    /// How an error message names this token ("found ...").
    pub(crate) fn describe(&self) -> String {
        let punct = match self {
            Tok::Num(n) => return format!("number {}", Lit::Num(*n)),
            Tok::Str(_) => return "a string".into(),
            Tok::Ident(s) => return format!("'{s}'"),
            Tok::Quoted(s) => return format!("`{s}`"),
            Tok::Eof => return "end of input".into(),
            Tok::True => "true",
            Tok::False => "false",
            Tok::Null => "null",
            Tok::In => "in",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Question => "?",
            Tok::Colon => ":",
            Tok::OrOr => "||",
            Tok::AndAnd => "&&",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Bang => "!",
        };
        format!("'{punct}'")
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: Pos,
}

/// Whether `word` is reserved: it cannot be a bare path segment.
pub(crate) fn is_keyword(word: &str) -> bool {
    matches!(word, "true" | "false" | "null" | "in")
}

/// Whether `s` can be written as a bare path segment (an identifier that is not a keyword).
pub(crate) fn is_plain_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !is_keyword(s)
}
