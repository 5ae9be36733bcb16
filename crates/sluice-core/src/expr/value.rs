//! Values going into an evaluation ([`Value`], through [`Fields`]) and coming out ([`Val`]).

/// The value of one field of an event (or of another feature), borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Value<'a> {
    /// Absent, or JSON `null`: unknown. A number that is not finite counts as missing too.
    #[default]
    Missing,
    /// A number.
    Num(f64),
    /// A string, unescaped.
    Str(&'a str),
    /// A boolean.
    Bool(bool),
    /// An object or an array: present (`has` is true) but equal to nothing.
    Other,
}

/// The result of a derived expression.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Val<'a> {
    /// Null: unknown, missing, or not a number where one was needed.
    #[default]
    Null,
    /// A finite number (never `-0`: it is reported as `0`).
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// A string, borrowed from the fields or from the expression.
    Str(&'a str),
}

impl Val<'_> {
    /// Whether the value is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }
}

/// The fields an expression reads, by the slot each path was given at compile time.
pub trait Fields {
    /// The value in `slot`; [`Value::Missing`] when the field is absent.
    fn get(&self, slot: u32) -> Value<'_>;
}

impl<'v> Fields for [Value<'v>] {
    /// The value at index `slot`; missing beyond the end.
    #[inline]
    fn get(&self, slot: u32) -> Value<'_> {
        <[Value<'v>]>::get(self, slot as usize)
            .copied()
            .unwrap_or(Value::Missing)
    }
}

impl<'v> Fields for Vec<Value<'v>> {
    /// The value at index `slot`; missing beyond the end.
    #[inline]
    fn get(&self, slot: u32) -> Value<'_> {
        Fields::get(self.as_slice(), slot)
    }
}

impl<'v, const N: usize> Fields for [Value<'v>; N] {
    /// The value at index `slot`; missing beyond the end.
    #[inline]
    fn get(&self, slot: u32) -> Value<'_> {
        Fields::get(self.as_slice(), slot)
    }
}
