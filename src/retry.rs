//! Backoff and give-up rules. Pure functions of (attempt, policy, jitter sample, times):
//! no clock, no randomness of their own, so every case is testable exactly.

use crate::clock::after;
use crate::config::durations;
use crate::job::UnixMillis;
use std::time::Duration;

pub const DEFAULT_BASE: Duration = Duration::from_secs(1);
pub const DEFAULT_FACTOR: f64 = 2.0;
pub const DEFAULT_CAP: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_JITTER: f64 = 0.1;

/// How a kind of job is retried. `[retry]` in the config file is read straight into it;
/// what the file leaves out keeps its default.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt.
    #[serde(deserialize_with = "durations::duration")]
    pub base: Duration,
    /// Each further wait is this many times the previous one.
    pub factor: f64,
    /// No wait is longer, including a `Retry-After` hint.
    #[serde(deserialize_with = "durations::duration")]
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Each wait is spread by up to this fraction either way, so that jobs failing
    /// together do not all come back together.
    pub jitter: f64,
    /// Give up once this much time has passed since the job was created.
    #[serde(deserialize_with = "durations::optional_duration")]
    pub deadline: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: DEFAULT_BASE,
            factor: DEFAULT_FACTOR,
            cap: DEFAULT_CAP,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            jitter: DEFAULT_JITTER,
            deadline: None,
        }
    }
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Try again at this time.
    RetryAt(UnixMillis),
    /// Stop: the reason becomes part of the job's last error.
    GiveUp(String),
}

/// Facts about the failed attempt that the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt {
    /// The attempt that just failed, counting from 1.
    pub attempt: u32,
    /// The job's own limit, overriding the policy's.
    pub max_attempts: Option<u32>,
    pub created_at: UnixMillis,
    /// The job's own deadline, overriding the policy's.
    pub deadline_at: Option<UnixMillis>,
    pub now: UnixMillis,
    pub retry_after: Option<Duration>,
}

impl RetryPolicy {
    /// The wait before attempt `failed_attempt + 1`, before jitter: base × factor^(n-1),
    /// never above the cap.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(1024) as i32;
        let seconds = self.base.as_secs_f64() * self.factor.powi(exponent);
        let capped = seconds.min(self.cap.as_secs_f64());
        if capped.is_finite() && capped >= 0.0 {
            Duration::from_secs_f64(capped)
        } else {
            self.cap
        }
    }

    /// Spreads a wait by the jitter fraction. `sample` is uniform in [0, 1).
    pub fn jittered(&self, wait: Duration, sample: f64) -> Duration {
        let spread = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        let seconds = (wait.as_secs_f64() * spread).min(self.cap.as_secs_f64());
        Duration::from_secs_f64(seconds.max(0.0))
    }

    /// Decides whether and when a failed attempt runs again. `jitter_sample` is uniform
    /// in [0, 1). A `Retry-After` hint replaces the backoff (the other side knows when it
    /// will be ready), but never beyond the cap.
    pub fn decide(&self, failed: FailedAttempt, jitter_sample: f64) -> RetryDecision {
        let max_attempts = failed.max_attempts.unwrap_or(self.max_attempts);
        if failed.attempt >= max_attempts {
            return RetryDecision::GiveUp(format!(
                "attempts exhausted ({}/{max_attempts})",
                failed.attempt
            ));
        }
        let wait = match failed.retry_after {
            Some(hint) => hint.min(self.cap),
            None => self.jittered(self.backoff(failed.attempt), jitter_sample),
        };
        let next = after(failed.now, wait);
        let deadline = failed
            .deadline_at
            .or_else(|| self.deadline.map(|d| after(failed.created_at, d)));
        if let Some(deadline) = deadline {
            if next > deadline {
                return RetryDecision::GiveUp(format!(
                    "deadline passed (next attempt at {} would be after {})",
                    crate::clock::format_millis(next),
                    crate::clock::format_millis(deadline)
                ));
            }
        }
        RetryDecision::RetryAt(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(attempt: u32, now: UnixMillis) -> FailedAttempt {
        FailedAttempt {
            attempt,
            max_attempts: None,
            created_at: 0,
            deadline_at: None,
            now,
            retry_after: None,
        }
    }

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (1..=14).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(
            waits,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn decide_schedules_the_next_attempt_after_the_backoff() {
        let policy = no_jitter();
        assert_eq!(
            policy.decide(failed(1, 10_000), 0.5),
            RetryDecision::RetryAt(11_000)
        );
        assert_eq!(
            policy.decide(failed(3, 10_000), 0.5),
            RetryDecision::RetryAt(14_000)
        );
    }

    #[test]
    fn jitter_spreads_within_the_fraction_and_never_past_the_cap() {
        let policy = RetryPolicy::default();
        let wait = Duration::from_secs(100);
        assert_eq!(policy.jittered(wait, 0.0), Duration::from_secs(90));
        assert_eq!(policy.jittered(wait, 0.5), Duration::from_secs(100));
        assert!(policy.jittered(wait, 0.999_999) <= Duration::from_secs(110));
        assert_eq!(
            policy.jittered(Duration::from_secs(3600), 0.99),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn gives_up_when_attempts_are_exhausted() {
        let policy = no_jitter();
        assert!(matches!(
            policy.decide(failed(9, 0), 0.5),
            RetryDecision::RetryAt(_)
        ));
        assert_eq!(
            policy.decide(failed(10, 0), 0.5),
            RetryDecision::GiveUp("attempts exhausted (10/10)".into())
        );
        let own_limit = FailedAttempt {
            max_attempts: Some(2),
            ..failed(2, 0)
        };
        assert_eq!(
            policy.decide(own_limit, 0.5),
            RetryDecision::GiveUp("attempts exhausted (2/2)".into())
        );
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_pass_the_deadline() {
        let week = Duration::from_secs(7 * 24 * 3600);
        let policy = RetryPolicy {
            deadline: Some(week),
            max_attempts: 1000,
            ..no_jitter()
        };
        let just_inside = failed(1, week.as_millis() as i64 - 1_000);
        assert!(matches!(
            policy.decide(just_inside, 0.5),
            RetryDecision::RetryAt(_)
        ));
        let past = failed(1, week.as_millis() as i64 - 999);
        match policy.decide(past, 0.5) {
            RetryDecision::GiveUp(reason) => {
                assert!(reason.starts_with("deadline passed"), "{reason}")
            }
            other => panic!("expected give-up, got {other:?}"),
        }
        let own_deadline = FailedAttempt {
            deadline_at: Some(5_000),
            ..failed(1, 4_500)
        };
        assert!(matches!(
            policy.decide(own_deadline, 0.5),
            RetryDecision::GiveUp(_)
        ));
    }

    #[test]
    fn retry_after_replaces_the_backoff_up_to_the_cap() {
        let policy = no_jitter();
        let hinted = FailedAttempt {
            retry_after: Some(Duration::from_secs(30)),
            ..failed(1, 0)
        };
        assert_eq!(policy.decide(hinted, 0.5), RetryDecision::RetryAt(30_000));
        let too_long = FailedAttempt {
            retry_after: Some(Duration::from_secs(86_400)),
            ..failed(1, 0)
        };
        assert_eq!(
            policy.decide(too_long, 0.5),
            RetryDecision::RetryAt(3_600_000)
        );
    }
}
