//! Keeps secrets off the page: every secret the configuration names is replaced with the
//! http kind's mask wherever it appears, and payload fields whose names say they hold
//! a secret (`token`, `password`, `authorization`, ...) are masked whatever they hold.

use crate::config::Config;
use crate::handlers::http::auth::{mask, MASK};
use crate::handlers::http::config::AuthConfig;
use base64::Engine;
use serde_json::Value;

/// Every secret the configuration names, read now (those that cannot be read are left
/// out: nothing to mask). Basic credentials also as sent, base64-encoded.
pub fn config_secrets(config: &Config) -> Vec<String> {
    let mut all = Vec::new();
    for (name, endpoint) in &config.endpoints {
        if let Some(auth) = &endpoint.auth {
            if let Ok(secret) = auth.secret(&format!("endpoints.{name}.auth")) {
                if let AuthConfig::Basic { username, .. } = auth {
                    all.push(
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{username}:{secret}")),
                    );
                }
                all.push(secret);
            }
        }
        for (param, source) in &endpoint.query_secrets {
            if let Ok(secret) = source.read(&format!("endpoints.{name}.query_secrets.{param}")) {
                all.push(secret);
            }
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.dedup();
    all
}

/// A field name that says its value is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    [
        "authorization",
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "cookie",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// `text` with every known secret masked.
pub fn text(text: &str, secrets: &[String]) -> String {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    mask(text, &refs)
}

/// A JSON value with secret-named fields and known secrets masked, at any depth.
pub fn value(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, inner)| {
                    let masked = if is_secret_name(key) && !inner.is_null() {
                        Value::String(MASK.to_string())
                    } else {
                        self::value(inner, secrets)
                    };
                    (key.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| self::value(v, secrets)).collect())
        }
        Value::String(s) => Value::String(text(s, secrets)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_fields_and_known_secrets_are_masked_at_any_depth() {
        let secrets = vec!["sk_live_123456".to_string()];
        let payload = json!({
            "endpoint": "usage",
            "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k"},
            "json": {"note": "key is sk_live_123456 ok", "items": [{"password": "p"}]},
            "access_token": null
        });
        let masked = value(&payload, &secrets);
        assert_eq!(masked["endpoint"], "usage");
        assert_eq!(masked["headers"]["Authorization"], MASK);
        assert_eq!(masked["headers"]["X-Api-Key"], MASK);
        assert_eq!(masked["json"]["note"], "key is *** ok");
        assert_eq!(masked["json"]["items"][0]["password"], MASK);
        assert_eq!(masked["access_token"], Value::Null);
        assert!(!masked.to_string().contains("sk_live_123456"));
    }
}
