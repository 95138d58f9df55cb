//! The token bucket behind an endpoint's `rate_limit`, shared by every worker. Its math
//! takes `now` (a [`Moment`] of the job's clock) as an argument, so tests give explicit
//! moments instead of sleeping.

use super::config::RateLimit;
use crate::clock::Moment;
use std::time::Duration;

#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens the bucket holds: requests that may go at once after a quiet spell.
    burst: f64,
    /// May go negative: each caller reserves its token and waits for it to be earned,
    /// so callers queue in arrival order without a condition variable.
    tokens: f64,
    /// Until when tokens are counted; None before the first use.
    last: Option<Moment>,
}

impl TokenBucket {
    /// A full bucket, from its first use on.
    pub fn new(limit: RateLimit, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: limit.per_second(),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Reserves one request and says how long after `now` it may be sent.
    pub fn reserve(&mut self, now: Moment) -> Duration {
        let last = self.earn(now);
        self.tokens -= 1.0;
        // `last` may lie ahead of `now` after a hold: the wait counts from there.
        let ahead = last.saturating_duration_since(now);
        if self.tokens >= 0.0 {
            ahead
        } else {
            ahead + Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Adds what was earned since `last`; returns the new `last`.
    fn earn(&mut self, now: Moment) -> Moment {
        let last = *self.last.get_or_insert(now);
        if now > last {
            let earned = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.last = Some(now);
            return now;
        }
        last
    }

    /// Nothing new goes before `until` (the other side asked us to slow down); later
    /// reservations are spaced from there, so the requests held back do not all go at
    /// once when the hold ends.
    pub fn hold_until(&mut self, now: Moment, until: Moment) {
        if until > self.earn(now) {
            // One request may go when the hold ends, the rest at the rate; tokens owed
            // are still owed, and nothing is earned during the hold.
            if self.tokens >= 0.0 {
                self.tokens = 1.0;
            }
            self.last = Some(until);
        }
    }

    /// Gives back a reservation that was never used (the job stopped while waiting).
    pub fn release(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_per_second(burst: u32) -> TokenBucket {
        TokenBucket::new("2/s".parse().unwrap(), burst)
    }

    const T0: Moment = Moment::ORIGIN;

    #[test]
    fn callers_at_the_same_instant_are_spaced_by_the_rate() {
        let t0 = T0 + Duration::from_secs(100);
        let mut bucket = two_per_second(1);
        let waits: Vec<u128> = (0..4).map(|_| bucket.reserve(t0).as_millis()).collect();
        assert_eq!(waits, vec![0, 500, 1000, 1500]);
    }

    #[test]
    fn a_quiet_spell_refills_up_to_the_burst_only() {
        let t0 = T0 + Duration::from_secs(100);
        let mut bucket = two_per_second(3);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(t0), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(t0).as_millis(), 500);
        // Ten seconds later the bucket holds the burst (3), not 20 tokens.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(later).as_millis(), 500);
    }

    #[test]
    fn a_hold_pushes_the_next_requests_past_it_and_spaces_them() {
        let t0 = T0 + Duration::from_secs(100);
        let mut bucket = two_per_second(1);
        assert_eq!(bucket.reserve(t0), Duration::ZERO);
        bucket.hold_until(t0, t0 + Duration::from_secs(3));
        let waits: Vec<u128> = (0..3).map(|_| bucket.reserve(t0).as_millis()).collect();
        assert_eq!(waits, vec![3000, 3500, 4000]);
    }

    #[test]
    fn waits_shrink_as_time_passes_and_released_tokens_return() {
        let t0 = T0 + Duration::from_secs(100);
        let mut bucket = two_per_second(1);
        assert_eq!(bucket.reserve(t0), Duration::ZERO);
        assert_eq!(
            bucket.reserve(t0 + Duration::from_millis(200)).as_millis(),
            300
        );
        bucket.release();
        assert_eq!(
            bucket.reserve(t0 + Duration::from_millis(200)).as_millis(),
            300
        );
    }
}
