//! Time as the queue sees it. Everything that depends on "now" (backoff, leases, retention,
//! schedules) asks a [`Clock`], so tests can move time by hand instead of sleeping.

use crate::job::UnixMillis;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> UnixMillis;

    /// Microseconds since the Unix epoch, for the handler start an attempt records; a
    /// clock that keeps only milliseconds gives those.
    fn now_us(&self) -> i64 {
        self.now_ms().saturating_mul(1000)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn now_us(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn new(start: UnixMillis) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(start),
        }
    }

    pub fn set(&self, now: UnixMillis) {
        self.now.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }
}

/// Adds a duration to a time, saturating instead of overflowing.
pub fn after(at: UnixMillis, wait: Duration) -> UnixMillis {
    at.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

/// A time that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a time ({reason}); write it like 2026-11-24T06:00:00Z")]
pub struct TimeError {
    pub text: String,
    reason: String,
}

/// Parses an RFC 3339 time into milliseconds (`jobctl --at`, the socket's `run_at`, the
/// web page's filters).
pub fn parse_time(text: &str) -> Result<UnixMillis, TimeError> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| TimeError {
            text: text.to_string(),
            reason: e.to_string(),
        })
}

/// A time for people: RFC 3339 in UTC with milliseconds.
pub fn format_millis(at: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
        clock.set(10);
        assert_eq!(clock.now_ms(), 10);
    }

    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(format_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
