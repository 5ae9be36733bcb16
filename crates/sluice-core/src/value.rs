//! The value of one feature for one event.

/// A feature value as written to the output.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FeatureValue {
    /// Undefined: a key field or the `of` field is missing on the event.
    #[default]
    Null,
    /// A count.
    Int(u64),
    /// A computed number (sum, avg): printed with 15 significant digits.
    Num(f64),
    /// An observed number (min, max): printed exactly (shortest round trip).
    Exact(f64),
    /// The event's own `of` value (aggregation `last`), copied by the formatter.
    Own,
    /// Not computed: the key's shared state no longer holds everything this event's windows
    /// need (another writer, further ahead in event time, already dropped it). The event goes
    /// to the dead letters as `late` instead of getting a wrong value.
    Beyond,
}
