//! The pure parts of pulling: the `Link` header's next URL, the other side's usage
//! header and how long to slow down for it, and the `updated_at_min` text.

use crate::job::UnixMillis;
use std::time::Duration;

/// The URL of the `rel="next"` entry of `Link` header values (RFC 8288), if any. Each
/// value may hold several comma-separated entries: `<URL>; rel="previous", <URL>; rel="next"`.
pub fn next_link<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    for value in values {
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let close = after.find('>')?;
            let url = &after[..close];
            let params_end = after[close..].find('<').map_or(after.len(), |i| close + i);
            let params = &after[close + 1..params_end];
            let is_next = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                let Some((name, value)) = p.split_once('=') else {
                    return false;
                };
                name.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(url.to_string());
            }
            rest = &after[params_end..];
        }
    }
    None
}

/// `used/size` from a usage header such as `X-Shopify-Shop-Api-Call-Limit: 32/40`.
pub fn call_limit(value: &str) -> Option<(u32, u32)> {
    let (used, size) = value.trim().split_once('/')?;
    let used = used.trim().parse().ok()?;
    let size: u32 = size.trim().parse().ok()?;
    (size > 0).then_some((used, size))
}

/// Above this share of the other side's bucket, requests slow down.
pub const SLOW_DOWN_AT: f64 = 0.8;

/// How long to hold requests so the other side's leaky bucket (`used` of `size`,
/// draining `leak_per_second`) falls back under [`SLOW_DOWN_AT`] with room for one more
/// request; `None` while there is room.
pub fn slow_down(used: u32, size: u32, leak_per_second: f64) -> Option<Duration> {
    let threshold = f64::from(size) * SLOW_DOWN_AT;
    let used = f64::from(used);
    if used < threshold || !(leak_per_second.is_finite() && leak_per_second > 0.0) {
        return None;
    }
    Some(Duration::from_secs_f64(
        (used - threshold + 1.0) / leak_per_second,
    ))
}

/// A time for an `updated_at_min` parameter: RFC 3339 with a numeric offset, as in
/// Shopify's documentation (`2024-04-25T20:15:47+00:00`).
pub fn format_time(at: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        .unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_entries_and_values() {
        let shopify = "<https://shop.myshopify.com/admin/api/2024-10/customers.json?limit=250&page_info=abc>; rel=\"previous\", \
                       <https://shop.myshopify.com/admin/api/2024-10/customers.json?limit=250&page_info=def>; rel=\"next\"";
        assert_eq!(
            next_link([shopify]).as_deref(),
            Some("https://shop.myshopify.com/admin/api/2024-10/customers.json?limit=250&page_info=def")
        );
        let only_previous = "<https://x/c.json?page_info=abc>; rel=\"previous\"";
        assert_eq!(next_link([only_previous]), None);
        assert_eq!(
            next_link([only_previous, "<https://x/c.json?page_info=n>;rel=next"]).as_deref(),
            Some("https://x/c.json?page_info=n")
        );
        assert_eq!(next_link(["garbage"]), None);
        assert_eq!(next_link(Vec::<&str>::new()), None);
    }

    #[test]
    fn usage_near_the_top_of_the_bucket_slows_requests_down() {
        assert_eq!(call_limit("32/40"), Some((32, 40)));
        assert_eq!(call_limit(" 1 / 40 "), Some((1, 40)));
        assert_eq!(call_limit("1/0"), None);
        assert_eq!(call_limit("lots"), None);
        assert_eq!(slow_down(10, 40, 2.0), None);
        assert_eq!(slow_down(31, 40, 2.0), None);
        // At 32 of 40 (80%): wait for one request's room, half a second at 2/s.
        assert_eq!(slow_down(32, 40, 2.0), Some(Duration::from_millis(500)));
        assert_eq!(slow_down(40, 40, 2.0), Some(Duration::from_millis(4500)));
        assert_eq!(slow_down(40, 40, 0.0), None);
    }

    #[test]
    fn times_are_written_with_an_offset() {
        assert_eq!(format_time(1_714_076_147_000), "2024-04-25T20:15:47+00:00");
    }
}
