//! Event time: how the time field of a record becomes epoch milliseconds.

use std::str::FromStr;

/// How the event time field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// Integer milliseconds since the Unix epoch (the default).
    #[default]
    EpochMs,
    /// Seconds since the Unix epoch, possibly fractional (rounded to the millisecond).
    EpochS,
    /// An RFC 3339 timestamp string such as `2026-01-01T00:00:00.250Z`.
    Rfc3339,
}

impl FromStr for TimeFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "epoch_ms" => Ok(TimeFormat::EpochMs),
            "epoch_s" => Ok(TimeFormat::EpochS),
            "rfc3339" => Ok(TimeFormat::Rfc3339),
            other => Err(format!(
                "unknown time format `{other}`; valid: epoch_ms, epoch_s, rfc3339"
            )),
        }
    }
}

/// Largest epoch millisecond accepted (year 9999): keeps window arithmetic far from overflow.
const MAX_MS: i64 = 253_402_300_799_999;

fn check_range(ms: i64) -> Result<i64, String> {
    if (-MAX_MS..=MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!("time {ms} ms is outside years -9999..9999"))
    }
}

impl TimeFormat {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            TimeFormat::EpochMs => "epoch_ms",
            TimeFormat::EpochS => "epoch_s",
            TimeFormat::Rfc3339 => "rfc3339",
        }
    }

    /// Converts a JSON integer.
    pub fn from_int(self, v: i64) -> Result<i64, String> {
        match self {
            TimeFormat::EpochMs => check_range(v),
            TimeFormat::EpochS => check_range(v.checked_mul(1000).ok_or("time out of range")?),
            TimeFormat::Rfc3339 => Err(format!("expected an RFC 3339 string, got the number {v}")),
        }
    }

    /// Converts a JSON floating-point number.
    pub fn from_float(self, v: f64) -> Result<i64, String> {
        if !v.is_finite() {
            return Err(format!("time {v} is not a finite number"));
        }
        match self {
            TimeFormat::EpochMs if v.fract() == 0.0 && v.abs() <= MAX_MS as f64 => Ok(v as i64),
            TimeFormat::EpochMs => Err(format!("expected whole epoch milliseconds, got {v}")),
            TimeFormat::EpochS if (v * 1000.0).abs() <= MAX_MS as f64 => {
                Ok((v * 1000.0).round() as i64)
            }
            TimeFormat::EpochS => Err(format!("time {v} s is outside years -9999..9999")),
            TimeFormat::Rfc3339 => Err(format!("expected an RFC 3339 string, got the number {v}")),
        }
    }

    /// Converts a string (JSON string or CSV cell).
    pub fn from_text(self, s: &str) -> Result<i64, String> {
        match self {
            TimeFormat::Rfc3339 => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))
                .and_then(|t| check_range(t.timestamp_millis())),
            TimeFormat::EpochMs | TimeFormat::EpochS => {
                if let Ok(v) = s.parse::<i64>() {
                    self.from_int(v)
                } else if let Ok(v) = s.parse::<f64>() {
                    self.from_float(v)
                } else {
                    Err(format!("`{s}` is not a number of {}", self.unit()))
                }
            }
        }
    }

    fn unit(self) -> &'static str {
        match self {
            TimeFormat::EpochMs => "epoch milliseconds",
            TimeFormat::EpochS => "epoch seconds",
            TimeFormat::Rfc3339 => "RFC 3339",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_each_format() {
        assert_eq!(
            TimeFormat::EpochMs.from_int(1_700_000_000_000),
            Ok(1_700_000_000_000)
        );
        assert!(TimeFormat::EpochMs.from_float(1.5).is_err());
        assert_eq!(TimeFormat::EpochS.from_float(1.2345), Ok(1235));
        assert_eq!(TimeFormat::EpochS.from_text("17"), Ok(17_000));
        assert_eq!(
            TimeFormat::Rfc3339.from_text("2026-01-01T01:00:00.250+01:00"),
            Ok(1_767_225_600_250)
        );
        assert!(TimeFormat::Rfc3339.from_text("yesterday").is_err());
        assert!(TimeFormat::EpochMs.from_text("12a").is_err());
        assert!(TimeFormat::EpochMs.from_int(i64::MAX).is_err());
        assert_eq!("rfc3339".parse(), Ok(TimeFormat::Rfc3339));
        assert!("iso".parse::<TimeFormat>().is_err());
    }
}
