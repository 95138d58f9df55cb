//! Durations and sizes as the config file writes them (`30s`, `1h30m`, `64MiB`), the serde
//! adapters every section uses for them, and the allowed range of each duration key.

use super::problems::Problems;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a duration ({reason}); write it like 30s, 5m, 1h30m or 7d")]
pub struct DurationError {
    pub text: String,
    reason: String,
}

/// A size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("'{0}' is too large")]
    TooLarge(String),
    #[error("'{0}' is not a size; write it like 67108864, 512KiB, 64MiB or 1GiB")]
    NotASize(String),
}

/// Parses a duration such as `30s`, `1h 30m`, `7d` or `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|e| DurationError {
        text: text.to_string(),
        reason: e.to_string(),
    })
}

/// Parses a size: a number of bytes, or a number with B, KiB, MiB or GiB (`64MiB`).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => 0,
    };
    let n: Option<u64> = digits.parse().ok();
    match (n, scale) {
        (Some(n), s) if s > 0 => n
            .checked_mul(s)
            .ok_or_else(|| SizeError::TooLarge(text.to_string())),
        _ => Err(SizeError::NotASize(text.to_string())),
    }
}

/// Serde: a size written as a number of bytes or as text (`"64MiB"`).
pub fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

/// Serde: a duration written as text (`"30s"`).
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Serde: an optional duration written as text.
pub fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
pub const MINUTE: u64 = 60;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 24 * HOUR;

/// The least and the most a duration key allows.
pub type Bounds = (Duration, Duration);

/// Records a problem at `key` when `value` lies outside `bounds`. Outside them a setting
/// cannot work (`poll_interval = "1ns"` spins, `busy_timeout = "0s"` fails every
/// contended write) or is surely a slip (`shutdown_grace = "1000y"`).
pub fn check_bounds(problems: &mut Problems, key: &str, value: Duration, (min, max): Bounds) {
    if value < min || value > max {
        problems.push(
            key,
            format!(
                "{} is outside the allowed range {} to {}",
                humantime::format_duration(value),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_or_say_how_to_write_them() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("64MB")
            .unwrap_err()
            .to_string()
            .contains("64MiB"));
        assert_eq!(
            parse_size("99999999999GiB"),
            Err(SizeError::TooLarge("99999999999GiB".into()))
        );
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        let err = parse_duration("soon").unwrap_err().to_string();
        assert!(err.starts_with("'soon' is not a duration"), "{err}");
    }

    #[test]
    fn a_value_outside_its_bounds_names_the_key_and_the_range() {
        let mut problems = Problems::new();
        check_bounds(&mut problems, "a", secs(5), (secs(1), secs(10)));
        check_bounds(&mut problems, "b", secs(0), (secs(1), secs(10)));
        assert_eq!(
            problems.to_string(),
            "b: 0s is outside the allowed range 1s to 10s"
        );
    }
}
