//! The holds an HTTP answer asks for: a 429 or 503 with `Retry-After`, a
//! `RateLimit-Reset` / `X-RateLimit-Reset` on a throttled answer or on one that says no
//! requests remain. Pure functions of the status, the headers and `now`, tested directly;
//! the http kind turns them into [`crate::flow::HoldRequest`]s.

use super::classify::{parse_retry_after, MAX_RETRY_AFTER};
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// Reset values above this are Unix times in seconds (GitHub's `X-RateLimit-Reset`);
/// below, a number of seconds from now (the IETF draft's `RateLimit-Reset`).
const EPOCH_SECONDS_FROM: f64 = 1.0e9;

/// How long to hold the destination after this answer, and why in words
/// ("429, Retry-After 30s"); `None` when the answer asks for nothing.
pub fn hold_from_answer(
    status: u16,
    headers: &HeaderMap,
    now_ms: crate::job::UnixMillis,
) -> Option<(Duration, String)> {
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let throttled = status == 429 || status == 503;
    if throttled {
        if let Some(value) = text("retry-after") {
            if let Some(wait) = parse_retry_after(value, now) {
                return Some((wait, format!("{status}, Retry-After {}", seconds(wait))));
            }
        }
    }
    for (reset, remaining) in [
        ("ratelimit-reset", "ratelimit-remaining"),
        ("x-ratelimit-reset", "x-ratelimit-remaining"),
    ] {
        let Some(wait) = text(reset).and_then(|v| parse_reset(v, now_ms)) else {
            continue;
        };
        let exhausted = text(remaining).is_some_and(|v| v.trim() == "0");
        if throttled || exhausted {
            let why = if throttled {
                format!("{status}, {} {}", header_case(reset), seconds(wait))
            } else {
                format!(
                    "{status} with {} 0, {} {}",
                    header_case(remaining),
                    header_case(reset),
                    seconds(wait)
                )
            };
            return Some((wait, why));
        }
    }
    None
}

/// A reset header's value as a wait from `now_ms`: seconds from now, or a Unix time in
/// seconds; capped like `Retry-After`. A time in the past is no wait.
pub fn parse_reset(value: &str, now_ms: crate::job::UnixMillis) -> Option<Duration> {
    let number: f64 = value.trim().parse().ok().filter(|n: &f64| n.is_finite())?;
    if number < 0.0 {
        return None;
    }
    let seconds = if number >= EPOCH_SECONDS_FROM {
        number - now_ms as f64 / 1000.0
    } else {
        number
    };
    Some(Duration::from_secs_f64(
        seconds.clamp(0.0, MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// A wait as people read it in a hold's reason: "30s", "1.5s".
fn seconds(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", wait.as_secs_f64())
    }
}

fn header_case(name: &str) -> &'static str {
    match name {
        "ratelimit-reset" => "RateLimit-Reset",
        "ratelimit-remaining" => "RateLimit-Remaining",
        "x-ratelimit-reset" => "X-RateLimit-Reset",
        _ => "X-RateLimit-Remaining",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_throttled_answer_with_retry_after_holds_for_it() {
        let now = 1_700_000_000_000;
        let got = hold_from_answer(429, &headers(&[("retry-after", "30")]), now);
        assert_eq!(
            got,
            Some((Duration::from_secs(30), "429, Retry-After 30s".into()))
        );
        let got = hold_from_answer(503, &headers(&[("retry-after", "1.5")]), now);
        assert_eq!(
            got,
            Some((Duration::from_millis(1500), "503, Retry-After 1.5s".into()))
        );
        // A 500 with Retry-After is not a request to slow down the destination.
        assert_eq!(
            hold_from_answer(500, &headers(&[("retry-after", "30")]), now),
            None
        );
        assert_eq!(hold_from_answer(429, &headers(&[]), now), None);
    }

    #[test]
    fn reset_headers_hold_when_throttled_or_exhausted() {
        let now = 1_700_000_000_000;
        let got = hold_from_answer(429, &headers(&[("ratelimit-reset", "12")]), now);
        assert_eq!(
            got,
            Some((Duration::from_secs(12), "429, RateLimit-Reset 12s".into()))
        );
        // GitHub style: a Unix time, with nothing left on a successful answer.
        let reset = (now / 1000 + 40).to_string();
        let got = hold_from_answer(
            200,
            &headers(&[
                ("x-ratelimit-reset", &reset),
                ("x-ratelimit-remaining", "0"),
            ]),
            now,
        );
        assert_eq!(
            got,
            Some((
                Duration::from_secs(40),
                "200 with X-RateLimit-Remaining 0, X-RateLimit-Reset 40s".into()
            ))
        );
        // Requests left: no hold.
        let got = hold_from_answer(
            200,
            &headers(&[
                ("x-ratelimit-reset", &reset),
                ("x-ratelimit-remaining", "3"),
            ]),
            now,
        );
        assert_eq!(got, None);
    }

    #[test]
    fn resets_are_capped_and_never_negative() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_reset("99999999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_reset("1600000000", now), Some(Duration::ZERO));
        assert_eq!(parse_reset("-3", now), None);
        assert_eq!(parse_reset("soon", now), None);
        assert_eq!(parse_reset("2.5", now), Some(Duration::from_millis(2500)));
    }
}
