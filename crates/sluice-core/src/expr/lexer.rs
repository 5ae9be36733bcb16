//! The lexer: expression text to tokens, each with its position.

use super::error::{ExprError, Pos, Result};
use super::token::{Tok, Token};

/// Splits `text` into tokens, ending with [`Tok::Eof`] placed right after the last token.
pub(crate) fn lex(text: &str) -> Result<Vec<Token>> {
    let mut lexer = Lexer {
        text,
        pos: Pos::START,
    };
    let mut tokens = Vec::new();
    let mut end = Pos::START;
    loop {
        lexer.skip_blank();
        let pos = lexer.pos;
        let Some(c) = lexer.peek() else {
            tokens.push(Token {
                tok: Tok::Eof,
                pos: end,
            });
            return Ok(tokens);
        };
        let tok = lexer.token(c)?;
        end = lexer.pos;
        tokens.push(Token { tok, pos });
    }
}

struct Lexer<'t> {
    text: &'t str,
    pos: Pos,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos.offset..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.text[self.pos.offset..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos.offset += c.len_utf8();
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Skips whitespace and `//` comments (to the end of the line).
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\n' | '\r') => {
                    self.bump();
                }
                Some('/') if self.peek2() == Some('/') => {
                    while !matches!(self.bump(), None | Some('\n')) {}
                }
                _ => return,
            }
        }
    }

    fn token(&mut self, c: char) -> Result<Tok> {
        let start = self.pos;
        if c.is_ascii_digit() {
            return self.number();
        }
        if c.is_ascii_alphabetic() || c == '_' {
            return Ok(self.word());
        }
        self.bump();
        let tok = match c {
            '"' | '\'' => return self.string(start, c),
            '`' => return self.quoted(start),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '?' => Tok::Question,
            ':' => Tok::Colon,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '*' => Tok::Star,
            '/' => Tok::Slash,
            '|' if self.eat('|') => Tok::OrOr,
            '&' if self.eat('&') => Tok::AndAnd,
            '=' if self.eat('=') => Tok::EqEq,
            '!' if self.eat('=') => Tok::NotEq,
            '!' => Tok::Bang,
            '<' if self.eat('=') => Tok::Le,
            '<' => Tok::Lt,
            '>' if self.eat('=') => Tok::Ge,
            '>' => Tok::Gt,
            '|' => return Err(ExprError::at(start, "unexpected '|'; write '||' for or")),
            '&' => return Err(ExprError::at(start, "unexpected '&'; write '&&' for and")),
            '=' => {
                return Err(ExprError::at(
                    start,
                    "unexpected '='; write '==' to compare",
                ))
            }
            '%' => {
                return Err(ExprError::at(
                    start,
                    "'%' is not supported; the arithmetic operators are + - * /",
                ))
            }
            other if other.is_alphanumeric() => {
                return Err(ExprError::at(
                    start,
                    format!(
                        "unexpected character {other:?}; quote a field name that is not a plain \
                         identifier with backticks, e.g. `héllo`"
                    ),
                ))
            }
            other => {
                return Err(ExprError::at(
                    start,
                    format!("unexpected character {other:?}"),
                ))
            }
        };
        Ok(tok)
    }

    fn word(&mut self) -> Tok {
        let start = self.pos.offset;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            self.bump();
        }
        match &self.text[start..self.pos.offset] {
            "true" => Tok::True,
            "false" => Tok::False,
            "null" => Tok::Null,
            "in" => Tok::In,
            word => Tok::Ident(word.to_owned()),
        }
    }

    fn digits(&mut self) -> usize {
        let mut n = 0;
        while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
            self.bump();
            n += 1;
        }
        n
    }

    /// `digits ('.' digits)? ([eE] [+-]? digits)?`; a '.' not followed by a digit ends the
    /// number (it is then a method call, which the type check rejects).
    fn number(&mut self) -> Result<Tok> {
        let start = self.pos;
        self.digits();
        if self.peek() == Some('.') && matches!(self.peek2(), Some(c) if c.is_ascii_digit()) {
            self.bump();
            self.digits();
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if !self.eat('+') {
                self.eat('-');
            }
            if self.digits() == 0 {
                return Err(ExprError::at(
                    self.pos,
                    "expected the digits of the exponent, e.g. 1e6 or 2.5e-3",
                ));
            }
        }
        if matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            return Err(ExprError::at(
                self.pos,
                "unexpected letter after a number; numbers are written 12, 0.5 or 1e6",
            ));
        }
        let text = &self.text[start.offset..self.pos.offset];
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Tok::Num(n)),
            _ => Err(ExprError::at(
                start,
                format!("number {text} is out of range (beyond ±1.8e308)"),
            )),
        }
    }

    fn string(&mut self, start: Pos, quote: char) -> Result<Tok> {
        let mut s = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None | Some('\n') => {
                    return Err(ExprError::at(
                        start,
                        format!("string not closed: expected {quote} before the end of the line"),
                    ))
                }
                Some(c) if c == quote => return Ok(Tok::Str(s)),
                Some('\\') => s.push(self.escape(at)?),
                Some(c) => s.push(c),
            }
        }
    }

    fn escape(&mut self, at: Pos) -> Result<char> {
        let bad = |what: String| {
            ExprError::at(
                at,
                format!(
                    "{what}; the escapes are \\\" \\' \\\\ \\n \\r \\t and \\uXXXX (4 hex digits)"
                ),
            )
        };
        match self.bump() {
            Some('"') => Ok('"'),
            Some('\'') => Ok('\''),
            Some('\\') => Ok('\\'),
            Some('n') => Ok('\n'),
            Some('r') => Ok('\r'),
            Some('t') => Ok('\t'),
            Some('u') => {
                let hi = self
                    .hex4()
                    .ok_or_else(|| bad("invalid \\u escape".into()))?;
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate must be followed by a low one, as in JSON.
                    let low = if self.eat('\\') && self.eat('u') {
                        self.hex4()
                    } else {
                        None
                    };
                    match low {
                        Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            char::from_u32(c).ok_or_else(|| bad("invalid \\u escape".into()))
                        }
                        _ => Err(bad(
                            "a \\u escape of a high surrogate must be followed by one of a low \
                             surrogate"
                                .into(),
                        )),
                    }
                } else {
                    char::from_u32(hi)
                        .ok_or_else(|| bad("a \\u escape of a lone low surrogate".into()))
                }
            }
            Some(c) => Err(bad(format!("unknown escape \\{c}"))),
            None => Err(bad("unfinished escape at the end of input".into())),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self.peek()?.to_digit(16)?;
            self.bump();
            v = v * 16 + d;
        }
        Some(v)
    }

    fn quoted(&mut self, start: Pos) -> Result<Tok> {
        let from = self.pos.offset;
        loop {
            match self.bump() {
                None => {
                    return Err(ExprError::at(
                        start,
                        "quoted field name not closed: expected a closing backtick",
                    ))
                }
                Some('`') => break,
                Some(_) => {}
            }
        }
        let name = &self.text[from..self.pos.offset - 1];
        if name.is_empty() {
            return Err(ExprError::at(start, "empty field name ``"));
        }
        Ok(Tok::Quoted(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(text)
            .expect("lexes")
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    fn err(text: &str) -> String {
        lex(text).expect_err("lex error").to_string()
    }

    #[test]
    fn lexes_operators_words_and_literals() {
        use Tok::*;
        assert_eq!(
            toks("a.`b.c` >= 1.5e3 && !x || y != 'q' // note\n ? : in true"),
            vec![
                Ident("a".into()),
                Dot,
                Quoted("b.c".into()),
                Ge,
                Num(1500.0),
                AndAnd,
                Bang,
                Ident("x".into()),
                OrOr,
                Ident("y".into()),
                NotEq,
                Str("q".into()),
                Question,
                Colon,
                In,
                True,
                Eof
            ]
        );
        assert_eq!(toks("1.x"), vec![Num(1.0), Dot, Ident("x".into()), Eof]);
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(
            toks(r#""a\"b\'c\\d\ne\tf\u00e9\ud83d\ude00" 'it\'s'"#),
            vec![
                Tok::Str("a\"b'c\\d\ne\tf\u{e9}\u{1F600}".into()),
                Tok::Str("it's".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let t = lex("é == 1").expect_err("é is not an identifier");
        assert_eq!((t.offset, t.line, t.column), (0, 1, 1));
        let tokens = lex("'é' ==\n  x").expect("lexes");
        assert_eq!(
            tokens[1].pos,
            Pos {
                offset: 5,
                line: 1,
                column: 5
            }
        );
        assert_eq!(
            tokens[2].pos,
            Pos {
                offset: 10,
                line: 2,
                column: 3
            }
        );
        // End of input sits right after the last token, not after trailing blanks.
        assert_eq!(
            tokens[3].pos,
            Pos {
                offset: 11,
                line: 2,
                column: 4
            }
        );
    }

    #[test]
    fn errors_say_what_is_valid() {
        assert_eq!(err("a = 1"), "1:3: unexpected '='; write '==' to compare");
        assert_eq!(err("a & b"), "1:3: unexpected '&'; write '&&' for and");
        assert!(err("'abc").starts_with("1:1: string not closed"));
        assert!(err("\"a\nb\"").starts_with("1:1: string not closed"));
        assert!(err(r"'\q'").starts_with("1:2: unknown escape \\q; the escapes are"));
        assert!(err(r"'\ud800'").contains("high surrogate"));
        assert!(err("1e").starts_with("1:3: expected the digits of the exponent"));
        assert!(err("12ab").starts_with("1:3: unexpected letter after a number"));
        assert!(err("1e999").starts_with("1:1: number 1e999 is out of range"));
        assert!(err("`a.b").starts_with("1:1: quoted field name not closed"));
        assert_eq!(
            err("x % 2"),
            "1:3: '%' is not supported; the arithmetic operators are + - * /"
        );
    }
}
