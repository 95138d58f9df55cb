//! Endpoint authentication: the header each auth type sends, the OAuth2 token cache
//! shared by every worker (one fetch however many jobs wait), and masking of secrets.

use crate::handlers::HandlerError;
use crate::job::UnixMillis;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What replaces a secret in logs, errors, attempt details and notifications.
pub const MASK: &str = "***";

/// Replaces every known secret in `text` with [`MASK`], the longest first (so a secret
/// inside a longer one does not leave the rest showing). Secrets shorter than 4 bytes
/// are left alone: masking "a" everywhere would garble text without protecting anything.
pub fn mask(text: &str, secrets: &[&str]) -> String {
    let mut sorted: Vec<&str> = secrets.iter().copied().filter(|s| s.len() >= 4).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in sorted {
        if out.contains(secret) {
            out = out.replace(secret, MASK);
        }
    }
    out
}

/// [`mask`] on every string inside a JSON value (a recorded field of an answer).
pub fn mask_value(value: &mut serde_json::Value, secrets: &[&str]) {
    use serde_json::Value;
    match value {
        Value::String(text) => {
            let masked = mask(text, secrets);
            if masked != *text {
                *text = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_value(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| mask_value(v, secrets)),
        _ => {}
    }
}

/// The forms a secret may take in text the other side sends back: as is, and
/// base64-encoded (standard and URL-safe alphabets, with and without padding), alone or
/// inside a longer encoded text (as in an echo of a whole header or request). Inside a
/// longer text the encoding of a secret depends on its offset modulo 3, so each of the
/// three offsets gives a form: the characters that encode the secret's bytes alone.
pub fn secret_forms(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let mut forms = vec![secret.to_string()];
    if secret.len() < 4 {
        return forms;
    }
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(secret));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&bytes);
            // Skip the group holding the stand-in bytes; keep whole groups only.
            let start = if shift == 0 { 0 } else { 4 };
            let end = bytes.len() / 3 * 4;
            if end > start && end - start >= 8 {
                forms.push(encoded[start..end].to_string());
            }
        }
        forms.push(engine.encode(secret));
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Request headers whose values are credentials: masked in `jobctl show` and in what is
/// stored of an answer that echoes them.
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// Whether a header name is one of [`SENSITIVE_HEADERS`].
pub fn is_sensitive_header(name: &str) -> bool {
    SENSITIVE_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// The secrets in a credential header's value: the value, the credential after its
/// scheme (`Bearer <token>`, `Basic <base64>`) and, for Basic, the decoded
/// `user:password` and the password, each in every [`secret_forms`].
pub fn header_secrets(value: &str) -> Vec<String> {
    use base64::Engine;
    let value = value.trim();
    let mut plain = vec![value.to_string()];
    if let Some((scheme, credential)) = value.split_once(' ') {
        let credential = credential.trim();
        plain.push(credential.to_string());
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(decoded) = base64::engine::general_purpose::STANDARD
                .decode(credential)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                if let Some((_, password)) = decoded.split_once(':') {
                    plain.push(password.to_string());
                }
                plain.push(decoded);
            }
        }
    }
    plain.iter().flat_map(|s| secret_forms(s)).collect()
}

/// A job payload as shown to people (`jobctl show`): the values of credential headers
/// under any `headers` object, at any depth (a follow-up's payload too), become
/// [`MASK`].
pub fn masked_payload(payload: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let mut shown = payload.clone();
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map.iter_mut() {
                    if key == "headers" {
                        if let Value::Object(headers) = inner {
                            for (name, v) in headers.iter_mut() {
                                if is_sensitive_header(name) {
                                    *v = Value::String(MASK.into());
                                }
                            }
                            continue;
                        }
                    }
                    walk(inner);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut shown);
    shown
}

/// An access token and when to stop using it.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    refresh_at: UnixMillis,
}

#[derive(Debug, Default)]
struct CacheState {
    token: Option<Token>,
    /// A worker is fetching; the others wait for it.
    fetching: bool,
    /// Counts finished fetches, so a waiter knows whether the one it waited for failed.
    round: u64,
    last_error: Option<(u64, HandlerError)>,
    fetches: u64,
}

/// The OAuth2 token of one endpoint, shared by every worker.
#[derive(Debug, Default)]
pub struct TokenCache {
    state: Mutex<CacheState>,
    changed: Condvar,
}

/// How long before `expires_in` the token is refreshed: a tenth of its life, at most a
/// minute, so a request never leaves with a token about to lapse.
pub fn refresh_at(now: UnixMillis, expires_in: Option<Duration>) -> UnixMillis {
    match expires_in {
        None => UnixMillis::MAX,
        Some(life) => {
            let margin = (life / 10).min(Duration::from_secs(60));
            crate::clock::after(now, life.saturating_sub(margin))
        }
    }
}

impl TokenCache {
    /// A valid token: the cached one, or one fetched by this caller while the others
    /// wait. `fetch` returns the token and its `expires_in`.
    pub fn get(
        &self,
        now: impl Fn() -> UnixMillis,
        fetch: impl FnOnce() -> Result<(String, Option<Duration>), HandlerError>,
    ) -> Result<String, HandlerError> {
        let mut state = self.state.lock().expect("token cache");
        let mut waited_for = None;
        loop {
            if let Some(token) = &state.token {
                if now() < token.refresh_at {
                    return Ok(token.value.clone());
                }
            }
            if let (Some(round), Some((failed, error))) = (waited_for, &state.last_error) {
                if round == *failed {
                    return Err(error.clone());
                }
            }
            if !state.fetching {
                break;
            }
            waited_for = Some(state.round + 1);
            state = self.changed.wait(state).expect("token cache");
        }
        state.fetching = true;
        drop(state);
        // The fetch runs unlocked: the waiters sleep on the condvar, not on the mutex.
        let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(fetch))
            .unwrap_or_else(|_| Err(HandlerError::permanent("the token fetch panicked")));
        let mut state = self.state.lock().expect("token cache");
        state.fetching = false;
        state.round += 1;
        state.fetches += 1;
        let result = match fetched {
            Ok((value, expires_in)) => {
                state.token = Some(Token {
                    value: value.clone(),
                    refresh_at: refresh_at(now(), expires_in),
                });
                Ok(value)
            }
            Err(error) => {
                state.last_error = Some((state.round, error.clone()));
                Err(error)
            }
        };
        self.changed.notify_all();
        result
    }

    /// Drops `used` after a 401, unless another worker already replaced it: fifty jobs
    /// rejected together cause one refresh, not fifty.
    pub fn invalidate(&self, used: &str) {
        let mut state = self.state.lock().expect("token cache");
        if state.token.as_ref().is_some_and(|t| t.value == used) {
            state.token = None;
        }
    }

    /// The current token, for masking.
    pub fn current(&self) -> Option<String> {
        let state = self.state.lock().expect("token cache");
        state.token.as_ref().map(|t| t.value.clone())
    }

    /// How many fetches have finished (for tests and the log).
    pub fn fetches(&self) -> u64 {
        self.state.lock().expect("token cache").fetches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_masked_at_any_depth_of_a_payload() {
        let payload = serde_json::json!({"endpoint": "e", "headers": {"Authorization": "Basic eDp5",
            "X-Batch": "7"}, "follow_up": {"kind": "http", "payload": {"headers": {"cookie": "s=1"}}}});
        let shown = masked_payload(&payload);
        assert_eq!(shown["headers"]["Authorization"], MASK);
        assert_eq!(shown["headers"]["X-Batch"], "7");
        assert_eq!(shown["follow_up"]["payload"]["headers"]["cookie"], MASK);
        assert_eq!(
            payload["headers"]["Authorization"], "Basic eDp5",
            "the stored one is kept"
        );
    }

    #[test]
    fn a_secret_is_masked_base64_encoded_at_any_offset() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let secret = "s3cret-value-42";
        let forms = secret_forms(secret);
        let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
        for prefix in ["", "a", "ab", "abc"] {
            let text = b64.encode(format!("{prefix}{secret}!tail"));
            let masked = mask(&text, &forms);
            assert!(masked.contains(MASK), "{prefix:?}: {masked}");
        }
        assert_eq!(mask(&b64.encode(secret), &forms), MASK);
    }
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn masks_every_known_secret() {
        assert_eq!(
            mask(
                "Bearer s3cr3t-token failed; s3cr3t-token",
                &["s3cr3t-token", "x"]
            ),
            "Bearer *** failed; ***"
        );
    }

    #[test]
    fn refreshes_shortly_before_expiry() {
        assert_eq!(refresh_at(0, Some(Duration::from_secs(3600))), 3_540_000);
        assert_eq!(refresh_at(0, Some(Duration::from_secs(10))), 9_000);
        assert_eq!(refresh_at(5, None), UnixMillis::MAX);
    }

    #[test]
    fn many_callers_share_one_fetch_and_expiry_fetches_again() {
        let cache = Arc::new(TokenCache::default());
        let now = Arc::new(AtomicI64::new(0));
        let calls = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (cache, now, calls) = (cache.clone(), now.clone(), calls.clone());
                std::thread::spawn(move || {
                    cache
                        .get(
                            || now.load(Ordering::SeqCst),
                            || {
                                calls.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(50));
                                Ok(("t1".into(), Some(Duration::from_secs(100))))
                            },
                        )
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), "t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        now.store(95_000, Ordering::SeqCst);
        let token = cache
            .get(
                || now.load(Ordering::SeqCst),
                || Ok(("t2".into(), Some(Duration::from_secs(100)))),
            )
            .unwrap();
        assert_eq!(token, "t2");
        cache.invalidate("t1");
        assert_eq!(cache.current().as_deref(), Some("t2"));
        cache.invalidate("t2");
        assert_eq!(cache.current(), None);
        assert_eq!(cache.fetches(), 2);
    }

    #[test]
    fn a_failed_fetch_reports_its_error() {
        let cache = TokenCache::default();
        let refused = HandlerError::permanent("token endpoint said 400");
        let err = cache.get(|| 0, || Err(refused.clone()));
        assert_eq!(err.unwrap_err(), refused);
        assert!(cache.get(|| 0, || Ok(("t".into(), None))).is_ok());
    }
}
