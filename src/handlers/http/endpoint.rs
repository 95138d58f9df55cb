//! What one endpoint keeps between jobs: its HTTP client, token cache, rate buckets
//! and in-process holds.

#[allow(unused_imports)]
use super::*;
use crate::config::secrets::SecretError;

/// What one endpoint keeps between jobs.
pub(super) struct EndpointState {
    /// The configuration it was built from; a reload that changes it builds a new one.
    pub(super) config: EndpointConfig,
    /// The base URL (read from its secret when `base_url_env`/`base_url_file`).
    pub(super) base_url: Result<String, crate::config::Problem>,
    pub(super) client: Client,
    /// The static secret (bearer token, password, header value, client secret).
    pub(super) secret: Result<String, SecretError>,
    /// `query_secrets`: (parameter, value) pairs appended to every request URL.
    pub(super) query_secrets: Result<Vec<(String, String)>, SecretError>,
    pub(super) tokens: TokenCache,
    /// The endpoint's rate in this process, per flow key: it spaces the requests of jobs
    /// the claim let through (which kept the rate across workers and daemons, but sees
    /// neither the time from claim to send nor jobs without a destination).
    pub(super) buckets: Option<KeyedBuckets>,
    /// No request before this instant, per flow key ("" for the endpoint as a whole),
    /// with when (clock milliseconds) it was set: the other side asked us to slow down
    /// (429 with Retry-After, or a usage header near its limit). The stored hold keeps
    /// jobs from being claimed at all, so this one binds only jobs without a
    /// destination and jobs claimed before it was set; a job claimed later was claimed
    /// after the hold ended or an operator released it.
    pub(super) holds: Mutex<HashMap<String, (Moment, crate::job::UnixMillis)>>,
}

impl EndpointState {
    pub(super) fn build(
        name: &str,
        config: &EndpointConfig,
    ) -> Result<EndpointState, HandlerError> {
        let client = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect is the other side's answer, classified like any status; following
            // it could carry credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent(concat!("jobd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                // Retried: building a client fails for want of resources, not of a setting.
                HandlerError::transient(format!(
                    "endpoint {name}: cannot build the HTTP client: {e}"
                ))
            })?;
        // Kept: a request reports it as its own error (the daemon refused it at start).
        let base_url = config.resolve_base_url(&format!("endpoints.{name}"));
        let secret = match &config.auth {
            Some(auth) => auth.secret(&format!("endpoints.{name}.auth")),
            None => Ok(String::new()),
        };
        let query_secrets = config
            .query_secrets
            .iter()
            .map(|(param, source)| {
                let value = source.read(&format!("endpoints.{name}.query_secrets.{param}"))?;
                Ok((param.clone(), value))
            })
            .collect();
        let buckets = config
            .rate_limit
            .map(|limit| KeyedBuckets::new(limit, config.burst.unwrap_or(1)));
        Ok(EndpointState {
            config: config.clone(),
            base_url,
            client,
            secret,
            query_secrets,
            tokens: TokenCache::default(),
            buckets,
            holds: Mutex::new(HashMap::new()),
        })
    }

    /// Every secret that must never be shown, in every form it may come back in
    /// ([`auth::secret_forms`]), plus the credential headers `spec` adds.
    pub(super) fn secrets_for(&self, spec: &RequestSpec) -> Vec<String> {
        let mut all: Vec<String> = self
            .secrets()
            .iter()
            .flat_map(|s| secret_forms(s))
            .collect();
        for (name, value) in self.config.headers.iter().chain(&spec.headers) {
            if is_sensitive_header(name) {
                all.extend(header_secrets(value));
            }
        }
        all
    }

    /// Every secret that must never be shown, as it is.
    pub(super) fn secrets(&self) -> Vec<String> {
        let mut all = Vec::new();
        if let (true, Ok(base)) = (self.config.base_url_is_secret(), &self.base_url) {
            // As configured, as a request URL starts (normalised by the URL parser), and
            // its path alone, which is the secret part of a webhook URL.
            let trimmed = base.trim_end_matches('/');
            all.push(base.clone());
            all.push(trimmed.to_string());
            if let Ok(url) = Url::parse(trimmed) {
                all.push(url.as_str().trim_end_matches('/').to_string());
                let path = url.path().trim_end_matches('/');
                if path.len() >= 8 {
                    all.push(path.to_string());
                }
            }
        }
        if let Ok(secret) = &self.secret {
            if !secret.is_empty() {
                all.push(secret.clone());
                if let Some(AuthConfig::Basic { username, .. }) = &self.config.auth {
                    all.push(basic_credentials(username, secret));
                }
            }
        }
        if let Ok(pairs) = &self.query_secrets {
            for (_, value) in pairs {
                // Masked as written and as it appears percent-encoded in a URL.
                all.push(value.clone());
                let encoded = query_encoded(value);
                if encoded != *value {
                    all.push(encoded);
                }
            }
        }
        all.extend(self.tokens.current());
        all
    }

    /// The request URL of `spec`, on the base URL read at build.
    pub(super) fn url(
        &self,
        spec: &RequestSpec,
        endpoint: &EndpointConfig,
    ) -> Result<Url, HandlerError> {
        // An unreadable secret may come back (being rotated): retry rather than kill.
        let base = self
            .base_url
            .as_ref()
            .map_err(|e| HandlerError::transient(e.to_string()))?;
        spec.url_on(endpoint, base).map_err(|e| {
            let secrets = self.secrets();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            HandlerError::from(e).map_message(|text| mask(text, &secrets))
        })
    }

    /// `url` with the query secrets appended: only ever built for sending, never stored.
    /// A secret that became unreadable since the config loaded may come back (a
    /// credential being rotated): retry rather than kill.
    pub(super) fn with_query_secrets(&self, url: &Url) -> Result<Url, HandlerError> {
        let pairs = self
            .query_secrets
            .as_ref()
            .map_err(|e| HandlerError::transient(e.to_string()))?;
        let mut url = url.clone();
        if !pairs.is_empty() {
            let mut query = url.query_pairs_mut();
            for (param, value) in pairs {
                query.append_pair(param, value);
            }
        }
        Ok(url)
    }
}
