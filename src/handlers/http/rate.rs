//! The in-process token bucket behind an endpoint's `rate_limit` (one per flow key),
//! shared by every worker: it spaces this process's requests at the wire, after the
//! claim kept the rate across daemons ([`crate::flow`]). Its math takes `now` (a
//! [`Moment`] of the job's clock) as an argument, so tests give explicit moments
//! instead of sleeping.

use super::config::RateLimit;
use crate::clock::Moment;
use std::collections::HashMap;
use std::sync::Mutex;
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
        self.earn(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Adds what was earned since `last`.
    fn earn(&mut self, now: Moment) {
        let last = *self.last.get_or_insert(now);
        if now > last {
            let earned = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.last = Some(now);
        }
    }

    /// Gives back a reservation that was never used (the job stopped while waiting).
    pub fn release(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

/// The most flow keys whose buckets one endpoint keeps in memory; past it they start
/// afresh (the claim still keeps their rate).
const MAX_KEYED_BUCKETS: usize = 10_000;

/// An endpoint's token buckets in this process, one per flow key.
pub struct KeyedBuckets {
    limit: RateLimit,
    burst: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl KeyedBuckets {
    pub fn new(limit: RateLimit, burst: u32) -> KeyedBuckets {
        KeyedBuckets {
            limit,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves one request of `key` and says how long after `now` it may be sent.
    pub fn reserve(&self, key: &str, now: Moment) -> Duration {
        let mut buckets = self.buckets.lock().expect("rate limit");
        if buckets.len() >= MAX_KEYED_BUCKETS && !buckets.contains_key(key) {
            buckets.clear();
        }
        buckets
            .entry(key.to_string())
            .or_insert_with(|| TokenBucket::new(self.limit, self.burst))
            .reserve(now)
    }

    /// Gives back a reservation of `key` that was never used.
    pub fn release(&self, key: &str) {
        if let Some(bucket) = self.buckets.lock().expect("rate limit").get_mut(key) {
            bucket.release();
        }
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
    fn each_key_has_its_own_bucket() {
        let t0 = T0 + Duration::from_secs(100);
        let keyed = KeyedBuckets::new("2/s".parse().unwrap(), 1);
        assert_eq!(keyed.reserve("a", t0), Duration::ZERO);
        assert_eq!(keyed.reserve("b", t0), Duration::ZERO);
        assert_eq!(keyed.reserve("a", t0).as_millis(), 500);
        keyed.release("a");
        assert_eq!(keyed.reserve("a", t0).as_millis(), 500);
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
