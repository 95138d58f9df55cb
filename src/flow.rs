//! Flow control per destination, as pure rules: where a job goes (its destination, the
//! key that splits it, its order key), the token bucket a destination's claims draw
//! from, how holds merge and are capped, and the holds a handler reports. The store
//! keeps the state (`destination_state`) and applies these rules at claim time; the
//! dispatcher passes each destination's limits from the config.

use crate::job::{NewJob, UnixMillis};
use serde::Serialize;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// The longest hold: a longer one (a reset header years ahead) is read as this, like
/// the `Retry-After` parser's cap.
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

/// The longest destination, flow key or order key stored: longer keys are cut (they are
/// labels, not data).
pub const MAX_KEY_LEN: usize = 200;

/// Where a job goes, as its kind derives it at enqueue (see [`Router`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The `[endpoints.NAME]` it talks to.
    pub destination: Option<String>,
    /// The part of the destination it belongs to (a shop, a storefront); empty: the
    /// destination as a whole.
    pub flow_key: String,
    /// Jobs with the same order key run one at a time, in enqueue order.
    pub order_key: Option<String>,
}

/// Derives a job's [`Route`] from its kind, payload and the config. The store asks it for
/// every job it enqueues without a destination of its own (socket, jobctl, watched
/// folders, follow-ups alike).
pub trait Router: Send + Sync {
    fn route(&self, job: &NewJob) -> Route;
}

/// Sets what `router` derives on a job that does not say so itself.
pub fn apply_route(router: &dyn Router, job: &NewJob) -> Option<NewJob> {
    if job.destination.is_some() && job.order_key.is_some() {
        return None;
    }
    let route = router.route(job);
    if route.destination.is_none() && route.order_key.is_none() {
        return None;
    }
    let mut routed = job.clone();
    if routed.destination.is_none() {
        routed.destination = route.destination.map(|d| bounded(&d));
        if routed.flow_key.is_none() && !route.flow_key.is_empty() {
            routed.flow_key = Some(bounded(&route.flow_key));
        }
    }
    if routed.order_key.is_none() {
        routed.order_key = route.order_key.map(|k| bounded(&k));
    }
    Some(routed)
}

/// `text` cut to [`MAX_KEY_LEN`] bytes on a character boundary.
pub fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_KEY_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The key a destination is split by, read from a payload: a JSON pointer (`/shop`), or
/// a template whose `{/pointer}` parts are replaced (`{/storefront}-{/json/region}`).
/// A pointer that finds nothing gives an empty part; strings go in as they are, other
/// values as JSON.
pub fn key_of(template: &str, payload: &Value) -> String {
    let read = |pointer: &str| match payload.pointer(pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if template.starts_with('/') {
        return bounded(&read(template));
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find("{/") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push_str(&read(&after[..close]));
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    bounded(&out)
}

/// Checks a destination key setting: a JSON pointer or a template with at least one
/// `{/pointer}`.
pub fn check_key_template(template: &str) -> Result<(), String> {
    if template.starts_with('/') {
        return Ok(());
    }
    if template.contains("{/") && template.contains('}') {
        return Ok(());
    }
    Err(format!(
        "'{template}' is neither a JSON pointer (\"/shop\") nor a template with {{/pointer}} parts (\"{{/storefront}}-{{/region}}\")"
    ))
}

/// A destination's limits, from its `[endpoints.NAME]`: shared by every worker and
/// daemon, and per key when the destination is split.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationLimit {
    pub destination: String,
    /// Claims per second; `None`: no rate.
    pub rate_per_second: Option<f64>,
    /// Tokens the bucket holds at most (claims that may go at once after a quiet spell).
    pub burst: u32,
    /// Jobs of the destination (per key) running at once; `None`: no bound.
    pub max_in_flight: Option<u32>,
}

/// How much of a token a late claim keeps ([`Bucket::refilled`]).
pub const LATE_CARRY: f64 = 0.5;

/// A destination's token bucket as stored: tokens left at `refilled_at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub refilled_at: UnixMillis,
}

impl Bucket {
    /// A full bucket: a destination never claimed from may send its burst at once.
    pub fn full(burst: u32, now: UnixMillis) -> Bucket {
        Bucket {
            tokens: f64::from(burst.max(1)),
            refilled_at: now,
        }
    }

    /// The bucket at `now`: tokens earned since `refilled_at` at `rate` per second, up to
    /// `burst`. A clock that went back earns nothing.
    ///
    /// A claim that comes a little after the token it waited for (the dispatcher woke
    /// late) keeps its place: up to [`LATE_CARRY`] of a token earned past the top is
    /// kept by dating the bucket back, so lateness does not add up claim after claim
    /// and the rate holds over time. Any one second still sees at most the rate plus
    /// the burst.
    pub fn refilled(self, rate: f64, burst: u32, now: UnixMillis) -> Bucket {
        let cap = f64::from(burst.max(1));
        let elapsed = (now - self.refilled_at).max(0) as f64 / 1000.0;
        let earned = self.tokens + elapsed * rate;
        let now = now.max(self.refilled_at);
        if earned <= cap || !(rate.is_finite() && rate > 0.0) {
            return Bucket {
                tokens: earned.min(cap),
                refilled_at: now,
            };
        }
        let carry = if self.tokens < 1.0 {
            (earned - cap).min(LATE_CARRY)
        } else {
            0.0
        };
        Bucket {
            tokens: cap,
            refilled_at: now - (carry / rate * 1000.0).round() as i64,
        }
    }

    /// Whole tokens available now.
    pub fn whole(self) -> u64 {
        if self.tokens >= 1.0 {
            self.tokens.floor() as u64
        } else {
            0
        }
    }

    /// When the next whole token is there, if none is now.
    pub fn next_token_at(self, rate: f64) -> Option<UnixMillis> {
        if self.tokens >= 1.0 || !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let wait_ms = ((1.0 - self.tokens) / rate * 1000.0).ceil() as i64;
        Some(self.refilled_at + wait_ms.max(1))
    }
}

/// The hold to keep when `wanted` is asked for while `current` stands: a hold never
/// shortens a longer one, and none lasts past `now` + [`MAX_HOLD`]. `None`: the current
/// hold stays as it is.
pub fn merge_hold(
    current: Option<UnixMillis>,
    wanted: UnixMillis,
    now: UnixMillis,
) -> Option<UnixMillis> {
    let capped = wanted.min(now.saturating_add(MAX_HOLD.as_millis() as i64));
    if capped <= now {
        return None;
    }
    match current {
        Some(until) if until >= capped => None,
        _ => Some(capped),
    }
}

/// A hold a handler asks for: no job of this destination (and key) is claimed before
/// `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldRequest {
    pub destination: String,
    pub flow_key: String,
    pub until: UnixMillis,
    /// The HTTP status that asked for it, if one did.
    pub status: Option<u16>,
    /// Why, as people read it: "answered 429, Retry-After 30s".
    pub reason: String,
}

impl HoldRequest {
    /// Holds `destination` (and `flow_key`) for `wait` from `now`.
    pub fn new(
        destination: &str,
        flow_key: &str,
        wait: Duration,
        now: UnixMillis,
        status: Option<u16>,
        reason: String,
    ) -> HoldRequest {
        let wait = wait.min(MAX_HOLD).as_millis() as i64;
        HoldRequest {
            destination: destination.to_string(),
            flow_key: flow_key.to_string(),
            until: now.saturating_add(wait),
            status,
            reason,
        }
    }

    /// Checks what the schema would refuse: a destination of 1 to [`MAX_KEY_LEN`]
    /// bytes and a key of at most that many.
    pub fn validate(&self) -> Result<(), crate::job::InvalidJob> {
        check_key("destination", &self.destination)?;
        if self.flow_key.is_empty() {
            return Ok(());
        }
        check_key("flow_key", &self.flow_key)
    }
}

/// Checks a destination, flow or order key as the schema bounds it: 1 to
/// [`MAX_KEY_LEN`] bytes. `field` names it in the sentence.
pub fn check_key(field: &str, value: &str) -> Result<(), crate::job::InvalidJob> {
    use crate::job::InvalidJob;
    if value.is_empty() {
        return Err(InvalidJob::new(field, format!("{field} must not be empty")));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(InvalidJob::new(
            field,
            format!(
                "{field} is {} bytes long; at most {MAX_KEY_LEN} are kept",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The holds a running handler asked for, collected for the dispatcher, which writes
/// them in the transaction that records the attempt (before its job goes back).
#[derive(Debug, Default)]
pub struct HoldReports {
    holds: Mutex<Vec<HoldRequest>>,
}

impl HoldReports {
    pub fn push(&self, hold: HoldRequest) {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        // One hold per destination and key, the longest asked for: repeated 429s inside
        // one attempt (a pull waiting them out) would otherwise pile up, and a short
        // slow-down after a long Retry-After must not replace it before it is stored.
        let same =
            |h: &HoldRequest| h.destination == hold.destination && h.flow_key == hold.flow_key;
        match holds.iter_mut().find(|h| same(h)) {
            Some(standing) if standing.until >= hold.until => {}
            Some(standing) => *standing = hold,
            None => holds.push(hold),
        }
    }

    pub fn take(&self) -> Vec<HoldRequest> {
        std::mem::take(&mut *self.holds.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A destination (and key) as the operator sees it: its limits and state now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationView {
    pub destination: String,
    /// Empty: the destination as a whole.
    pub key: String,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub max_in_flight: Option<u32>,
    /// Tokens in the bucket now (refilled to `now`), for a destination with a rate.
    pub tokens: Option<f64>,
    pub in_flight: u64,
    /// Queued or retrying jobs of this destination and key.
    pub waiting: u64,
    pub held_until: Option<UnixMillis>,
    pub hold_status: Option<u16>,
    pub hold_reason: Option<String>,
    pub held_at: Option<UnixMillis>,
}

impl DestinationView {
    /// `NAME` or `NAME/KEY`, as `jobctl hold` takes it.
    pub fn label(&self) -> String {
        label(&self.destination, &self.key)
    }

    pub fn is_held(&self, now: UnixMillis) -> bool {
        self.held_until.is_some_and(|until| until > now)
    }
}

/// The hold part of a destination's stored state, as a driver reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredHold {
    pub until: Option<UnixMillis>,
    pub at: Option<UnixMillis>,
    pub status: Option<u16>,
    pub reason: Option<String>,
}

/// Assembles [`DestinationView`]s from what a driver reads (limits from the config, the
/// stored state, counts of waiting and running jobs), so every driver shows them alike:
/// every limited destination appears, a hold shows only while it stands, and a rated
/// destination never claimed from shows a full bucket.
pub struct DestinationViews<'a> {
    limits: &'a [DestinationLimit],
    now: UnixMillis,
    views: std::collections::BTreeMap<(String, String), DestinationView>,
}

impl<'a> DestinationViews<'a> {
    pub fn new(limits: &'a [DestinationLimit], now: UnixMillis) -> DestinationViews<'a> {
        let mut views = DestinationViews {
            limits,
            now,
            views: Default::default(),
        };
        for limit in limits {
            views.entry(&limit.destination, "");
        }
        views
    }

    fn limit(&self, destination: &str) -> Option<&'a DestinationLimit> {
        self.limits.iter().find(|l| l.destination == destination)
    }

    fn entry(&mut self, destination: &str, key: &str) -> &mut DestinationView {
        let limit = self.limit(destination);
        self.views
            .entry((destination.to_string(), key.to_string()))
            .or_insert_with(|| DestinationView {
                destination: destination.to_string(),
                key: key.to_string(),
                rate_per_second: limit.and_then(|l| l.rate_per_second),
                burst: limit
                    .filter(|l| l.rate_per_second.is_some())
                    .map(|l| l.burst),
                max_in_flight: limit.and_then(|l| l.max_in_flight),
                tokens: None,
                in_flight: 0,
                waiting: 0,
                held_until: None,
                hold_status: None,
                hold_reason: None,
                held_at: None,
            })
    }

    /// A destination's stored state: its hold (shown while it stands) and its bucket
    /// (refilled to now, for a destination with a rate).
    pub fn stored(
        &mut self,
        destination: &str,
        key: &str,
        hold: StoredHold,
        bucket: Option<Bucket>,
    ) {
        let now = self.now;
        let rate = self
            .limit(destination)
            .and_then(|l| l.rate_per_second.map(|rate| (rate, l.burst)));
        let view = self.entry(destination, key);
        if hold.until.is_some_and(|until| until > now) {
            view.held_until = hold.until;
            view.held_at = hold.at;
            view.hold_status = hold.status;
            view.hold_reason = hold.reason;
        }
        if let (Some(bucket), Some((rate, burst))) = (bucket, rate) {
            view.tokens = Some(bucket.refilled(rate, burst, now).tokens);
        }
    }

    /// Queued or retrying jobs of a destination and key.
    pub fn waiting(&mut self, destination: &str, key: &str, jobs: u64) {
        self.entry(destination, key).waiting = jobs;
    }

    /// Running jobs of a destination and key.
    pub fn in_flight(&mut self, destination: &str, key: &str, jobs: u64) {
        self.entry(destination, key).in_flight = jobs;
    }

    /// The views, by destination then key.
    pub fn finish(self) -> Vec<DestinationView> {
        let limits = self.limits;
        self.views
            .into_values()
            .map(|mut view| {
                if view.tokens.is_none() {
                    if let Some(limit) = limits
                        .iter()
                        .find(|l| l.destination == view.destination && l.rate_per_second.is_some())
                    {
                        view.tokens = Some(f64::from(limit.burst.max(1)));
                    }
                }
                view
            })
            .collect()
    }
}

/// `NAME` or `NAME/KEY`.
pub fn label(destination: &str, key: &str) -> String {
    if key.is_empty() {
        destination.to_string()
    } else {
        format!("{destination}/{key}")
    }
}

/// Splits `NAME/KEY` (as `jobctl hold` and `release` take it) at its first `/`: an
/// endpoint name has none.
pub fn parse_label(text: &str) -> (String, String) {
    match text.split_once('/') {
        Some((name, key)) => (name.to_string(), key.to_string()),
        None => (text.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bucket_refills_by_the_clock_up_to_its_burst() {
        let b = Bucket {
            tokens: 0.0,
            refilled_at: 1_000,
        };
        // 20/s: one token per 50 ms.
        assert_eq!(b.refilled(20.0, 1, 1_025).whole(), 0);
        assert_eq!(b.refilled(20.0, 1, 1_050).whole(), 1);
        // Ten seconds of quiet hold the burst, not 200 tokens.
        assert_eq!(b.refilled(20.0, 3, 11_000).whole(), 3);
        // A clock that went back earns nothing and does not move the bucket back.
        let back = b.refilled(20.0, 1, 500);
        assert_eq!(back.tokens, 0.0);
        assert_eq!(back.refilled_at, 1_000);
    }

    #[test]
    fn a_claim_late_for_its_token_keeps_its_place() {
        // Waiting for the token due at 1_050; the claim comes at 1_060.
        let b = Bucket {
            tokens: 0.0,
            refilled_at: 1_000,
        };
        let mut late = b.refilled(20.0, 1, 1_060);
        assert_eq!(late.whole(), 1);
        late.tokens -= 1.0;
        // The next token is due at 1_100 as planned, not at 1_110.
        assert_eq!(late.next_token_at(20.0), Some(1_100));
        // Very late (an idle spell): at most half a token is kept.
        let mut idle = b.refilled(20.0, 1, 60_000);
        idle.tokens -= 1.0;
        assert_eq!(idle.next_token_at(20.0), Some(60_025));
    }

    #[test]
    fn the_next_token_is_due_after_what_is_missing_at_the_rate() {
        let b = Bucket {
            tokens: 0.5,
            refilled_at: 2_000,
        };
        assert_eq!(b.next_token_at(20.0), Some(2_025));
        assert_eq!(Bucket::full(1, 0).next_token_at(20.0), None);
        assert_eq!(b.next_token_at(0.0), None);
    }

    #[test]
    fn holds_never_shorten_and_are_capped() {
        let now = 10_000;
        assert_eq!(merge_hold(None, now + 5_000, now), Some(now + 5_000));
        // A shorter one leaves the longer standing; a longer one extends it.
        assert_eq!(merge_hold(Some(now + 9_000), now + 5_000, now), None);
        assert_eq!(
            merge_hold(Some(now + 9_000), now + 20_000, now),
            Some(now + 20_000)
        );
        // Past the cap: the cap.
        let cap = now + MAX_HOLD.as_millis() as i64;
        assert_eq!(merge_hold(None, i64::MAX, now), Some(cap));
        assert_eq!(merge_hold(Some(cap), i64::MAX, now), None);
        // A hold that has already passed holds nothing.
        assert_eq!(merge_hold(None, now, now), None);
    }

    #[test]
    fn keys_come_from_a_pointer_or_a_template() {
        let payload = json!({"json": {"shop": "a.myshopify.com", "n": 7}, "sf": "eu"});
        assert_eq!(key_of("/json/shop", &payload), "a.myshopify.com");
        assert_eq!(key_of("{/sf}-{/json/n}", &payload), "eu-7");
        assert_eq!(key_of("/missing", &payload), "");
        assert_eq!(key_of("x{/sf", &payload), "x{/sf");
        assert_eq!(key_of("/sf", &json!({"sf": "é".repeat(300)})).len(), 200);
        assert!(check_key_template("/shop").is_ok());
        assert!(check_key_template("{/a}:{/b}").is_ok());
        let refused = check_key_template("shop").unwrap_err();
        assert!(refused.contains("'shop'"), "{refused}");
    }

    #[test]
    fn labels_round_trip() {
        assert_eq!(label("shopify", ""), "shopify");
        assert_eq!(label("ga4", "eu/1"), "ga4/eu/1");
        assert_eq!(parse_label("ga4/eu/1"), ("ga4".into(), "eu/1".into()));
        assert_eq!(parse_label("shopify"), ("shopify".into(), String::new()));
    }

    #[test]
    fn reported_holds_keep_the_longest_per_destination() {
        let reports = HoldReports::default();
        reports.push(HoldRequest::new(
            "a",
            "",
            Duration::from_secs(1),
            0,
            None,
            "x".into(),
        ));
        reports.push(HoldRequest::new(
            "b",
            "",
            Duration::from_secs(1),
            0,
            None,
            "y".into(),
        ));
        reports.push(HoldRequest::new(
            "a",
            "",
            Duration::from_secs(3),
            0,
            None,
            "z".into(),
        ));
        reports.push(HoldRequest::new(
            "a",
            "",
            Duration::from_secs(2),
            0,
            None,
            "w".into(),
        ));
        let holds = reports.take();
        assert_eq!(holds.len(), 2);
        assert_eq!((holds[0].until, holds[0].reason.as_str()), (3_000, "z"));
        assert!(reports.take().is_empty());
        let capped = HoldRequest::new("a", "", Duration::MAX, 0, Some(429), "x".into());
        assert_eq!(capped.until, MAX_HOLD.as_millis() as i64);
    }
}
