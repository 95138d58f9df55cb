//! What an HTTP answer means for the job: the status rules of an endpoint, `Retry-After`
//! (seconds or HTTP-date) and the bounded error text. Pure functions, tested directly.

use super::config::EndpointConfig;
use std::time::{Duration, SystemTime};

/// How much of a failed response's body goes into the error.
pub const ERROR_BODY_LIMIT: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    /// Counted as success: the other side already has it (an idempotency-key replay).
    Duplicate,
    Retry,
    Permanent,
}

/// Classifies a status by the endpoint's rules: success, then duplicate, then retry;
/// anything else (other 4xx, 3xx, unlisted 5xx) is permanent.
pub fn classify(status: u16, endpoint: &EndpointConfig) -> Class {
    if endpoint.is_success(status) {
        Class::Success
    } else if endpoint.duplicate.contains(&status) {
        Class::Duplicate
    } else if endpoint.retry.contains(&status) {
        Class::Retry
    } else {
        Class::Permanent
    }
}

/// The longest wait a `Retry-After` may ask for: a longer one (20 digits of seconds, a
/// date years ahead) is read as this, so no caller adds an unbounded wait to an
/// `Instant`. A retry's wait is capped again by its policy's `cap`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, which is
/// measured from `now`. A date in the past means "now"; anything unparsable is ignored;
/// anything longer than [`MAX_RETRY_AFTER`] is that. Decimal seconds are accepted too,
/// since Shopify sends `Retry-After: 2.0`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time", not garbage.
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else if value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().filter(|b| *b == b'.').count() == 1
        && value.bytes().any(|b| b.is_ascii_digit())
    {
        let seconds = value.parse::<f64>().ok().filter(|s| s.is_finite())?;
        Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The `Retry-After` of an answer's headers, read at the clock's `now_ms`: the one
/// place every kind (http, http_pull, oneroster) reads it.
pub fn retry_after_header(
    headers: &reqwest::header::HeaderMap,
    now_ms: crate::job::UnixMillis,
) -> Option<Duration> {
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// At most [`ERROR_BODY_LIMIT`] bytes of a body as text, on a character boundary.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(ERROR_BODY_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let excerpt = text[..end].trim();
    if text.len() > end {
        format!("{excerpt}…")
    } else {
        excerpt.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn endpoint(extra: &str) -> EndpointConfig {
        let text = format!("[endpoints.e]\nbase_url = \"https://api.example.com\"\n{extra}");
        Config::from_toml(&text, "t").unwrap().endpoints["e"].clone()
    }

    #[test]
    fn default_rules_follow_the_classification_table() {
        let e = endpoint("");
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify(s, &e), Class::Success, "{s}");
        }
        assert_eq!(classify(409, &e), Class::Duplicate);
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(classify(s, &e), Class::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 405, 410, 413, 422, 501] {
            assert_eq!(classify(s, &e), Class::Permanent, "{s}");
        }
    }

    #[test]
    fn endpoints_override_the_rules() {
        let e = endpoint("success = [200]\nretry = [503, 409]\nduplicate = []\n");
        assert_eq!(classify(201, &e), Class::Permanent);
        assert_eq!(classify(409, &e), Class::Retry);
        assert_eq!(classify(500, &e), Class::Permanent);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Fri, 31 Dec 1999 23:59:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::from_secs(59))
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("2.0", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("1.2.3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn retry_after_is_capped_however_it_is_written() {
        let now = httpdate::parse_http_date("Fri, 31 Dec 1999 23:59:00 GMT").unwrap();
        for huge in [
            "99999999999999999999",
            "18446744073709551615",
            "999999999999.5",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            if let Some(wait) = parse_retry_after(huge, now) {
                assert_eq!(wait, MAX_RETRY_AFTER, "{huge}");
                // What the pull kind does with it must not overflow.
                let _ = std::time::Instant::now() + wait;
            }
        }
        assert_eq!(
            parse_retry_after("99999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "99999999999999999999".parse().unwrap(),
        );
        assert_eq!(retry_after_header(&headers, 0), Some(MAX_RETRY_AFTER));
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            retry_after_header(&headers, 0),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn a_retry_after_date_is_measured_from_the_clock_not_the_wall() {
        // The header as every kind reads it, at a manual clock's now: 30 s before the date.
        let date = "Fri, 31 Dec 1999 23:59:59 GMT";
        let at = httpdate::parse_http_date(date).unwrap();
        let at_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, date.parse().unwrap());
        assert_eq!(
            retry_after_header(&headers, at_ms - 30_000),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after_header(&headers, at_ms + 1),
            Some(Duration::ZERO)
        );
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after_header(&headers, at_ms), None);
        assert_eq!(
            retry_after_header(&reqwest::header::HeaderMap::new(), at_ms),
            None
        );
    }

    #[test]
    fn error_bodies_are_cut_at_two_kib_on_a_char_boundary() {
        let body = "é".repeat(3000);
        let excerpt = body_excerpt(body.as_bytes());
        assert!(excerpt.len() <= ERROR_BODY_LIMIT + '…'.len_utf8());
        assert!(excerpt.ends_with('…'));
        assert_eq!(body_excerpt(b" short "), "short");
    }
}
