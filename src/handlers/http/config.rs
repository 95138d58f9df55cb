//! `[endpoints.NAME]`: the HTTP endpoints the `http` kind (and the kinds that make `http`
//! jobs: csv_import, relay, http_pull, notify) may call. Owns their settings, defaults and
//! validation, how auth is configured, where secrets come from and how they are read, and
//! the request-rate syntax. Secrets are never written in the file: auth names an
//! environment variable or a file.

use crate::config::durations::{self, check_bounds, ms, secs, Bounds, HOUR};
use crate::config::problems::{Problem, Problems};
pub use crate::config::secrets::SecretSource;
use crate::config::secrets::{resolve_secret, SecretError};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// What `endpoints.*.timeout` allows.
pub const TIMEOUT_BOUNDS: Bounds = (ms(100), secs(HOUR));
/// Statuses retried unless an endpoint says otherwise (RFC 9110 / RFC 6585 transient ones).
pub const DEFAULT_RETRY_STATUSES: [u16; 7] = [408, 425, 429, 500, 502, 503, 504];
/// Statuses that mean "already done" (an idempotency-key replay) unless an endpoint says otherwise.
pub const DEFAULT_DUPLICATE_STATUSES: [u16; 1] = [409];
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The methods that may carry the idempotency key: those that change state.
pub const IDEMPOTENCY_METHODS: [&str; 4] = ["POST", "PATCH", "PUT", "DELETE"];

/// An HTTP endpoint the `http` kind may call (`[endpoints.NAME]`). Secrets are never
/// written here: auth names an environment variable or a file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Scheme, host and optional path prefix; a job's `path` is appended.
    #[serde(default)]
    pub base_url: String,
    /// Instead of `base_url`, for a URL that is itself a secret (a Slack webhook): the
    /// environment variable or file holding it. Read at start like the auth secrets, and
    /// masked wherever a URL is shown.
    #[serde(default)]
    pub base_url_env: Option<String>,
    #[serde(default)]
    pub base_url_file: Option<PathBuf>,
    /// Sent with every request (a job's own headers win).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The longest one request may take, connect included.
    #[serde(
        default = "default_http_timeout",
        deserialize_with = "durations::duration"
    )]
    pub timeout: Duration,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Requests per period shared by every worker, e.g. `"2/s"`, `"100/m"`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Requests that may go at once after a quiet spell (default 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Jobs of this destination (of each key, with `key`) running at once, across every
    /// worker and daemon.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Splits the destination by a key from each job's payload, so every shop or
    /// storefront gets its own rate, burst, in-flight room and holds: a JSON pointer
    /// (`"/json/shop"`) or a template of them (`"{/json/storefront}-{/json/region}"`).
    #[serde(default)]
    pub key: Option<String>,
    /// Refuse `http://` unless the host is loopback (default true).
    #[serde(default = "yes")]
    pub require_https: bool,
    /// Allow `http://` to any host (overrides `require_https`).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Statuses that succeed; empty means any 2xx.
    #[serde(default)]
    pub success: Vec<u16>,
    /// Statuses retried with backoff.
    #[serde(default = "default_retry_statuses")]
    pub retry: Vec<u16>,
    /// Statuses that count as success because the request was already done.
    #[serde(default = "default_duplicate_statuses")]
    pub duplicate: Vec<u16>,
    /// Honour `Retry-After` on retried statuses (up to the retry policy's cap).
    #[serde(default = "yes")]
    pub honor_retry_after: bool,
    /// The header carrying the job's idempotency key; empty sends none.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// The methods that carry it: those that change state. POST and PATCH by default;
    /// PUT and DELETE may be added (they are idempotent by definition, but some APIs
    /// still want the key). GET, HEAD and OPTIONS never carry one.
    #[serde(default = "default_idempotency_methods")]
    pub idempotency_methods: Vec<String>,
    /// Secrets sent as query parameters, by parameter name, for APIs that take their key
    /// in the URL (GA4's `api_secret`, Meta's `access_token`):
    /// `[endpoints.ga4.query_secrets] api_secret = { env = "GA4_API_SECRET" }`.
    /// Added when the request is sent, so they never reach a payload or the database.
    #[serde(default)]
    pub query_secrets: BTreeMap<String, SecretSource>,
}

fn default_http_timeout() -> Duration {
    DEFAULT_HTTP_TIMEOUT
}
fn yes() -> bool {
    true
}
fn default_retry_statuses() -> Vec<u16> {
    DEFAULT_RETRY_STATUSES.to_vec()
}
fn default_duplicate_statuses() -> Vec<u16> {
    DEFAULT_DUPLICATE_STATUSES.to_vec()
}
fn default_idempotency_methods() -> Vec<String> {
    vec!["POST".into(), "PATCH".into()]
}
fn default_idempotency_header() -> String {
    DEFAULT_IDEMPOTENCY_HEADER.to_string()
}

impl EndpointConfig {
    /// Whether `status` counts as success (duplicates aside).
    pub fn is_success(&self, status: u16) -> bool {
        if self.success.is_empty() {
            (200..300).contains(&status)
        } else {
            self.success.contains(&status)
        }
    }

    /// Whether the base URL comes from `base_url_env` or `base_url_file`.
    pub fn base_url_is_secret(&self) -> bool {
        self.base_url_env.is_some() || self.base_url_file.is_some()
    }

    /// The base URL: `base_url`, or the secret read now and checked like `base_url`, with
    /// errors that never show it. `key` is `endpoints.NAME`.
    pub fn resolve_base_url(&self, key: &str) -> Result<String, Problem> {
        if !self.base_url_is_secret() {
            return Ok(self.base_url.clone());
        }
        let url = resolve_secret(
            &format!("{key}.base_url"),
            &self.base_url_env,
            &self.base_url_file,
        )?;
        let from = if self.base_url_env.is_some() {
            "base_url_env"
        } else {
            "base_url_file"
        };
        check_url(&format!("{key}.{from}"), &url, self).map_err(|e| e.masked(&url))?;
        Ok(url)
    }

    /// Checks what types cannot, recording every problem under `key` (`endpoints.NAME`).
    pub fn validate(&self, key: &str, problems: &mut Problems) {
        let sources = [
            !self.base_url.is_empty(),
            self.base_url_env.is_some(),
            self.base_url_file.is_some(),
        ];
        if sources.iter().filter(|given| **given).count() != 1 {
            problems.push(
                key,
                "give exactly one of base_url, base_url_env and base_url_file",
            );
        } else if !self.base_url_is_secret() {
            problems.check(check_url(&format!("{key}.base_url"), &self.base_url, self));
        }
        check_bounds(
            problems,
            &format!("{key}.timeout"),
            self.timeout,
            TIMEOUT_BOUNDS,
        );
        if self.burst == Some(0) {
            problems.push(format!("{key}.burst"), "must be at least 1");
        } else if self.burst.is_some() && self.rate_limit.is_none() {
            problems.push(format!("{key}.burst"), "needs a rate_limit");
        }
        if self.max_in_flight == Some(0) {
            problems.push(format!("{key}.max_in_flight"), "must be at least 1");
        }
        if let Some(Err(e)) = self.key.as_deref().map(crate::flow::check_key_template) {
            problems.push(format!("{key}.key"), e);
        }
        for (list, statuses) in [
            ("success", &self.success),
            ("retry", &self.retry),
            ("duplicate", &self.duplicate),
        ] {
            for bad in statuses.iter().filter(|s| !(100..=599).contains(*s)) {
                problems.push(
                    format!("{key}.{list}"),
                    format!("{bad} is not an HTTP status"),
                );
            }
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(
                    format!("{key}.headers"),
                    format!("'{name}' is not a header name"),
                );
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                problems.push(format!("{key}.headers.{name}"), "not a valid header value");
            }
        }
        if !self.idempotency_header.is_empty()
            && reqwest::header::HeaderName::from_bytes(self.idempotency_header.as_bytes()).is_err()
        {
            problems.push(
                format!("{key}.idempotency_header"),
                format!("'{}' is not a header name", self.idempotency_header),
            );
        }
        for method in &self.idempotency_methods {
            if !IDEMPOTENCY_METHODS.contains(&method.as_str()) {
                problems.push(
                    format!("{key}.idempotency_methods"),
                    format!("'{method}' is not one of POST, PATCH, PUT, DELETE (methods that change state, in capitals)"),
                );
            }
        }
        for (param, source) in &self.query_secrets {
            if param.is_empty() {
                problems.push(format!("{key}.query_secrets"), "a parameter name is empty");
            }
            if source.env.is_some() == source.file.is_some() {
                problems.push(
                    format!("{key}.query_secrets.{param}"),
                    "give exactly one of env and file",
                );
            }
        }
        match &self.auth {
            Some(AuthConfig::OAuth2ClientCredentials { token_url, .. }) => {
                problems.check(check_url(&format!("{key}.auth.token_url"), token_url, self));
            }
            Some(AuthConfig::Header { name, .. })
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() =>
            {
                problems.push(
                    format!("{key}.auth.name"),
                    format!("'{name}' is not a header name"),
                );
            }
            _ => {}
        }
    }

    /// Reads every secret this endpoint names (a secret base URL, the auth secret, the
    /// query secrets), recording each one that cannot be read. `key` is `endpoints.NAME`.
    pub fn check_secrets(&self, key: &str, problems: &mut Problems) {
        problems.check(self.resolve_base_url(key));
        if let Some(auth) = &self.auth {
            problems.check(auth.secret(&format!("{key}.auth")));
        }
        for (param, source) in &self.query_secrets {
            problems.check(source.read(&format!("{key}.query_secrets.{param}")));
        }
    }

    /// Every secret value this endpoint resolves to (auth, query secrets), to mask in
    /// what is stored from outside. Ones that cannot be read are left out: the daemon
    /// refused them at start.
    pub fn known_secrets(&self, key: &str) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Some(auth) = &self.auth {
            secrets.extend(auth.secret(&format!("{key}.auth")).ok());
        }
        for (param, source) in &self.query_secrets {
            secrets.extend(source.read(&format!("{key}.query_secrets.{param}")).ok());
        }
        secrets
    }

    /// Whether this endpoint may send to `url` in clear text.
    pub fn allows_http_to(&self, url: &reqwest::Url) -> bool {
        url.scheme() == "https"
            || self.allow_insecure_http
            || !self.require_https
            || is_loopback(url)
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_url(key: &str, text: &str, endpoint: &EndpointConfig) -> Result<(), Problem> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| Problem::new(key, format!("'{text}' is not a URL: {e}")))?;
    match url.scheme() {
        "https" | "http" => {}
        other => {
            return Err(Problem::new(
                key,
                format!("scheme '{other}' is not http or https"),
            ))
        }
    }
    if url.host().is_none() {
        return Err(Problem::new(key, format!("'{text}' has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Problem::new(
            key,
            "credentials in the URL are refused; use auth with *_env or *_file",
        ));
    }
    if !endpoint.allows_http_to(&url) {
        return Err(Problem::new(
            key,
            "http:// to a non-loopback host is refused (require_https); use https or set allow_insecure_http = true",
        ));
    }
    Ok(())
}

/// How requests to an endpoint authenticate. Each secret comes from `*_env` (an
/// environment variable's name) or `*_file` (a path; `$CREDENTIALS_DIRECTORY` expands).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer TOKEN`.
    Bearer {
        token_env: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        username: String,
        password_env: Option<String>,
        password_file: Option<PathBuf>,
    },
    /// A header of its own, e.g. `X-API-Key` or `X-Shopify-Access-Token`.
    Header {
        name: String,
        value_env: Option<String>,
        value_file: Option<PathBuf>,
    },
    /// OAuth2 client credentials: a token fetched from `token_url`, cached until shortly
    /// before it expires and shared by every worker.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret_env: Option<String>,
        client_secret_file: Option<PathBuf>,
        /// Extra fields of the token request, e.g. `scope`, `account_id`.
        #[serde(default)]
        params: BTreeMap<String, String>,
        /// `form` (RFC 6749) or `json` (e.g. Salesforce Marketing Cloud).
        #[serde(default)]
        request_format: TokenRequestFormat,
    },
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenRequestFormat {
    #[default]
    Form,
    Json,
}

impl AuthConfig {
    /// The secret this auth needs, read now. `key` names the auth table in errors.
    pub fn secret(&self, key: &str) -> Result<String, SecretError> {
        match self {
            AuthConfig::Bearer {
                token_env,
                token_file,
            } => resolve_secret(&format!("{key}.token"), token_env, token_file),
            AuthConfig::Basic {
                password_env,
                password_file,
                ..
            } => resolve_secret(&format!("{key}.password"), password_env, password_file),
            AuthConfig::Header {
                value_env,
                value_file,
                ..
            } => resolve_secret(&format!("{key}.value"), value_env, value_file),
            AuthConfig::OAuth2ClientCredentials {
                client_secret_env,
                client_secret_file,
                ..
            } => resolve_secret(
                &format!("{key}.client_secret"),
                client_secret_env,
                client_secret_file,
            ),
        }
    }
}

/// A request rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

/// A rate that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("'{0}' is not a rate; write it like 2/s, 100/m or 5/10s")]
    NotARate(String),
    #[error("'{0}': the rate must be more than 0")]
    Zero(String),
}

impl std::str::FromStr for RateLimit {
    type Err = RateError;
    /// `2/s`, `100/m`, `1000/h`, `5/10s`.
    fn from_str(text: &str) -> Result<Self, RateError> {
        let bad = || RateError::NotARate(text.to_string());
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => durations::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || per.is_zero() {
            return Err(RateError::Zero(text.to_string()));
        }
        Ok(RateLimit { count, per })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn endpoints_parse_with_their_defaults() {
        let config = Config::from_toml(
            "[endpoints.usage]\nbase_url = \"https://api.example.com/v1\"\nrate_limit = \"2/s\"\n\
             [endpoints.usage.auth]\ntype = \"bearer\"\ntoken_env = \"JOBD_TEST_UNSET_TOKEN\"\n",
            "t",
        )
        .unwrap();
        let usage = &config.endpoints["usage"];
        assert_eq!(usage.timeout, DEFAULT_HTTP_TIMEOUT);
        assert_eq!(usage.retry, DEFAULT_RETRY_STATUSES.to_vec());
        assert_eq!(usage.duplicate, vec![409]);
        assert!(usage.require_https && usage.honor_retry_after);
        assert_eq!(usage.rate_limit.unwrap().per_second(), 2.0);
        assert!(matches!(usage.auth, Some(AuthConfig::Bearer { .. })));
        // Parsing does not need the secret; the daemon's check does, and names the key.
        let err = config.check_secrets().unwrap_err();
        assert_eq!(
            err.to_string(),
            "endpoints.usage.auth.token_env: the environment variable JOBD_TEST_UNSET_TOKEN is not set"
        );
    }

    #[test]
    fn bad_endpoints_name_their_key() {
        let cases = [
            (
                "base_url = \"http://api.example.com\"",
                "endpoints.e.base_url: http:// to a non-loopback host is refused",
            ),
            (
                "base_url = \"ftp://x\"",
                "endpoints.e.base_url: scheme 'ftp'",
            ),
            (
                "base_url = \"https://u:p@x\"",
                "credentials in the URL are refused",
            ),
            (
                "base_url = \"https://x\"\nrate_limit = \"fast\"",
                "'fast' is not a rate",
            ),
            (
                "base_url = \"https://x\"\nretry = [700]",
                "endpoints.e.retry: 700 is not an HTTP status",
            ),
            (
                "base_url = \"https://x\"\nburst = 3",
                "endpoints.e.burst: needs a rate_limit",
            ),
            (
                "base_url = \"https://x\"\nmax_in_flight = 0",
                "endpoints.e.max_in_flight: must be at least 1",
            ),
            (
                "base_url = \"https://x\"\nkey = \"shop\"",
                "endpoints.e.key: 'shop' is neither a JSON pointer",
            ),
            (
                "base_url = \"https://x\"\ntimeout = \"2h\"",
                "endpoints.e.timeout: 2h is outside the allowed range 100ms to 1h",
            ),
            (
                "base_url = \"https://x\"\nauth = { type = \"bearer\", token = \"inline\" }",
                "unknown field `token`",
            ),
            (
                "base_url = \"https://x\"\nauth = { type = \"kerberos\" }",
                "kerberos",
            ),
        ];
        for (body, expected) in cases {
            let text = format!("[endpoints.e]\n{body}\n");
            let message = Config::from_toml(&text, "t").unwrap_err().to_string();
            assert!(message.contains(expected), "{body:?} gave {message}");
        }
        for ok in [
            "base_url = \"http://127.0.0.1:8080\"",
            "base_url = \"http://localhost\"",
            "base_url = \"http://[::1]:9\"",
            "base_url = \"http://intranet\"\nallow_insecure_http = true",
        ] {
            Config::from_toml(&format!("[endpoints.e]\n{ok}\n"), "t").unwrap();
        }
    }

    #[test]
    fn every_problem_of_an_endpoint_is_reported() {
        let endpoint: EndpointConfig = toml::from_str(
            "base_url = \"ftp://x\"\nburst = 0\nretry = [700, 800]\nidempotency_methods = [\"GET\"]\n\
             headers = { \"bad name\" = \"v\" }\nauth = { type = \"header\", name = \"a b\", value_env = \"X\" }\n",
        )
        .unwrap();
        let mut problems = Problems::new();
        endpoint.validate("endpoints.e", &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "endpoints.e.base_url",
                "endpoints.e.burst",
                "endpoints.e.retry",
                "endpoints.e.retry",
                "endpoints.e.headers",
                "endpoints.e.idempotency_methods",
                "endpoints.e.auth.name",
            ],
            "{problems}"
        );
    }

    #[test]
    fn rates_parse_or_say_how_to_write_them() {
        let rate: RateLimit = "5/10s".parse().unwrap();
        assert_eq!(rate.per_second(), 0.5);
        assert_eq!(
            "0/s".parse::<RateLimit>(),
            Err(RateError::Zero("0/s".into()))
        );
        assert_eq!(
            "fast".parse::<RateLimit>(),
            Err(RateError::NotARate("fast".into()))
        );
    }
}
