//! Time as the queue sees it. Everything that depends on "now" (backoff, leases, retention,
//! schedules) asks a [`Clock`], and so do the timers (heartbeat, reaper, poll, drain, the
//! watcher's settle time, rate limits) through [`Clock::monotonic`], so tests can move
//! time by hand instead of sleeping.

use crate::job::UnixMillis;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> UnixMillis;

    /// Microseconds since the Unix epoch, for the handler start an attempt records; a
    /// clock that keeps only milliseconds gives those.
    fn now_us(&self) -> i64 {
        self.now_ms().saturating_mul(1000)
    }

    /// Where the clock's monotonic timeline is: what timers measure by. It never goes
    /// back, and a jump of the wall clock (NTP, [`ManualClock::set`]) does not move it.
    fn monotonic(&self) -> Moment;
}

/// A point on a clock's monotonic timeline, as the time since the clock's origin.
/// Moments of different clocks are not comparable.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(Duration);

impl Moment {
    /// The clock's origin.
    pub const ORIGIN: Moment = Moment(Duration::ZERO);

    pub fn since_origin(self) -> Duration {
        self.0
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Moment) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for Moment {
    type Output = Moment;

    /// Saturates instead of overflowing: a timer set "never" stays never.
    fn add(self, wait: Duration) -> Moment {
        Moment(self.0.saturating_add(wait))
    }
}

/// The process's monotonic clock, with its origin at the first look.
fn process_monotonic() -> Moment {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    Moment(ORIGIN.get_or_init(Instant::now).elapsed())
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

    fn monotonic(&self) -> Moment {
        process_monotonic()
    }
}

/// A clock whose wall time only moves when told to. Its timers either run on the
/// process's monotonic clock ([`ManualClock::new`]: a whole daemon under it keeps its
/// heartbeat, polls and drain going while a test jumps the date), or move only when told
/// to as well ([`ManualClock::with_manual_timers`]: for tests that call the timed code
/// directly and must never wait).
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    /// Nanoseconds since the origin of a monotonic timeline moved by hand; None: the
    /// process's.
    timers: Option<AtomicU64>,
}

impl ManualClock {
    /// Wall time by hand, timers on real time.
    pub fn new(start: UnixMillis) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(start),
            timers: None,
        }
    }

    /// Wall time and timers both by hand: [`ManualClock::advance`] moves both.
    pub fn with_manual_timers(start: UnixMillis) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(start),
            timers: Some(AtomicU64::new(0)),
        }
    }

    /// Sets the wall time; the monotonic timeline does not move (a clock jump).
    pub fn set(&self, now: UnixMillis) {
        self.now.store(now, Ordering::SeqCst);
    }

    /// Lets time pass: the wall time, and the timers if they are by hand.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        if let Some(timers) = &self.timers {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            timers.fetch_add(nanos, Ordering::SeqCst);
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Moment {
        match &self.timers {
            Some(timers) => Moment(Duration::from_nanos(timers.load(Ordering::SeqCst))),
            None => process_monotonic(),
        }
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
    fn manual_timers_move_with_advance_and_not_with_set() {
        let clock = ManualClock::with_manual_timers(1_000);
        let start = clock.monotonic();
        assert_eq!(start, Moment::ORIGIN);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            clock.monotonic().saturating_duration_since(start),
            Duration::from_millis(1500)
        );
        clock.set(0);
        assert_eq!(
            clock.monotonic().since_origin(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            start.saturating_duration_since(clock.monotonic()),
            Duration::ZERO
        );
    }

    #[test]
    fn system_timers_never_go_back() {
        let first = SystemClock.monotonic();
        let second = SystemClock.monotonic();
        assert!(second >= first);
        // A manual wall clock on real timers shares the process's timeline.
        assert!(ManualClock::new(0).monotonic() >= second);
    }

    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(format_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
