//! Human-readable durations: `250ms`, `90s`, `15m`, `1h`, `7d`, in whole milliseconds.

use std::fmt;

/// Why a duration string was rejected. The message lists what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}; valid: a positive whole number followed by ms, s, m, h or d, e.g. `90s`, `15m`, `1h`, `7d`")]
pub struct DurationError {
    /// The text that was rejected.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

const UNITS: [(&str, i64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses a duration such as `90s` or `7d` into milliseconds (always > 0).
pub fn parse_duration(input: &str) -> Result<i64, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(err("it does not start with a number"));
    }
    let (number, unit) = s.split_at(digits);
    let factor = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, f)| f)
        .ok_or_else(|| {
            err(if unit.is_empty() {
                "the unit is missing"
            } else {
                "unknown unit"
            })
        })?;
    let n: i64 = number.parse().map_err(|_| err("the number is too large"))?;
    if n == 0 {
        return Err(err("it must be greater than zero"));
    }
    n.checked_mul(factor)
        .ok_or_else(|| err("the number is too large"))
}

/// Formats milliseconds with the largest unit that divides them exactly (`86400000` → `1d`).
pub fn format_duration(ms: i64) -> impl fmt::Display {
    struct D(i64);
    impl fmt::Display for D {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let (name, factor) = UNITS
                .iter()
                .rev()
                .find(|(_, factor)| self.0 % factor == 0)
                .copied()
                .unwrap_or(("ms", 1));
            write!(f, "{}{}", self.0 / factor, name)
        }
    }
    D(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000));
    }

    #[test]
    fn rejects_bad_durations_with_reason() {
        for bad in ["7x", "", "d", "0s", "1.5h", "-1h", "99999999999999999999d"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains("valid:"), "{e}");
        }
        assert_eq!(parse_duration("7x").expect_err("7x").reason, "unknown unit");
    }

    #[test]
    fn formats_with_largest_unit() {
        assert_eq!(format_duration(86_400_000).to_string(), "1d");
        assert_eq!(format_duration(5_400_000).to_string(), "90m");
        assert_eq!(format_duration(1_500).to_string(), "1500ms");
    }
}
