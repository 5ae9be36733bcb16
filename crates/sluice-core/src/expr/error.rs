//! Errors in expression text: where (byte offset, line, column) and what was expected.

/// A position in an expression's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pos {
    /// Byte offset from the start of the text.
    pub offset: usize,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters (a tab counts as one).
    pub column: u32,
}

impl Pos {
    /// The start of the text.
    pub const START: Pos = Pos {
        offset: 0,
        line: 1,
        column: 1,
    };
}

/// An expression that cannot be parsed or compiled. Displays as `line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ExprError {
    /// Byte offset of the offending token from the start of the expression text.
    pub offset: usize,
    /// 1-based line of the offending token.
    pub line: u32,
    /// 1-based column of the offending token, in characters.
    pub column: u32,
    /// What was wrong and what would be valid, lowercase, no trailing period.
    pub message: String,
}

impl ExprError {
    /// An error at `pos`.
    pub fn at(pos: Pos, message: impl Into<String>) -> ExprError {
        ExprError {
            offset: pos.offset,
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// Where the error is.
    pub fn pos(&self) -> Pos {
        Pos {
            offset: self.offset,
            line: self.line,
            column: self.column,
        }
    }
}

/// The result of parsing or compiling an expression.
pub type Result<T, E = ExprError> = std::result::Result<T, E>;
