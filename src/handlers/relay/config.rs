//! `[relay]`: which storefronts the relay knows and where each one's events go. Parsed
//! with the rest of the config (`deny_unknown_fields`), validated against `[endpoints]`
//! so a destination never names an endpoint or a credential that is not there.

use crate::config::problems::Problems;
use crate::handlers::http::config::EndpointConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The queue the relay's deliveries (`http` jobs) go to unless `relay.queue` says.
pub const DEFAULT_RELAY_QUEUE: &str = "relay";
/// Meta's `action_source` when neither the event nor the destination gives one. OMS
/// events carry no browser facts (user agent, page URL), which `website` would need.
pub const DEFAULT_META_ACTION_SOURCE: &str = "system_generated";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The queue of the delivery jobs (`jobctl list --queue relay`).
    pub queue: String,
    /// Storefronts by their code (the events' `storefront_id`).
    pub storefronts: BTreeMap<String, StorefrontConfig>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            queue: DEFAULT_RELAY_QUEUE.to_string(),
            storefronts: BTreeMap::new(),
        }
    }
}

/// One storefront (`[relay.storefronts.CODE]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorefrontConfig {
    /// An inactive storefront's events are skipped and counted, not reported as errors.
    #[serde(default = "yes")]
    pub active: bool,
    /// Destinations by name (`[relay.storefronts.CODE.destinations.NAME]`).
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationConfig>,
}

/// The payload a destination takes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Server-side Google Tag Manager: the event JSON posted as is.
    Sgtm,
    /// GA4 Measurement Protocol: `/mp/collect?measurement_id=..`, `{client_id, events}`.
    Ga4,
    /// Meta Conversions API: `/{pixel_id}/events`, `{data: [...]}`, user data hashed.
    MetaCapi,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Sgtm => "sgtm",
            Shape::Ga4 => "ga4",
            Shape::MetaCapi => "meta_capi",
        }
    }
}

/// One destination of a storefront.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// The `[endpoints.NAME]` it is sent through: base URL, credentials, limits.
    pub endpoint: String,
    pub shape: Shape,
    /// An inactive destination is skipped and counted.
    #[serde(default = "yes")]
    pub active: bool,
    /// The path under the endpoint's base_url. Defaults: sgtm the base_url itself, ga4
    /// `/mp/collect`, meta_capi `/{pixel_id}/events`.
    #[serde(default)]
    pub path: Option<String>,
    /// Event names as this destination wants them (`purchase_completed = "purchase"`);
    /// names not listed go as they are, unless `only_mapped`.
    #[serde(default)]
    pub event_names: BTreeMap<String, String>,
    /// Send only the events named in `event_names`; the others are skipped and counted.
    #[serde(default)]
    pub only_mapped: bool,
    /// GA4: the data stream's measurement ID (`G-XXXX`), not its stream ID.
    #[serde(default)]
    pub measurement_id: Option<String>,
    /// Meta: the pixel (dataset) ID.
    #[serde(default)]
    pub pixel_id: Option<String>,
    /// Meta: `action_source` when the event has none (default `system_generated`).
    #[serde(default)]
    pub action_source: Option<String>,
    /// Meta: `test_event_code`, to see the events in Events Manager's test tab.
    #[serde(default)]
    pub test_event_code: Option<String>,
    /// GA4 and Meta: the currency of `order_revenue` when the event has no `currency`.
    #[serde(default)]
    pub currency: Option<String>,
}

fn yes() -> bool {
    true
}

impl DestinationConfig {
    /// The request path for this destination.
    pub fn request_path(&self) -> String {
        match (&self.path, self.shape) {
            (Some(path), _) => path.clone(),
            (None, Shape::Sgtm) => String::new(),
            (None, Shape::Ga4) => "/mp/collect".into(),
            (None, Shape::MetaCapi) => {
                format!("/{}/events", self.pixel_id.as_deref().unwrap_or_default())
            }
        }
    }
}

impl RelayConfig {
    /// Checks what types cannot, recording every problem with its key.
    pub fn validate(&self, endpoints: &BTreeMap<String, EndpointConfig>, problems: &mut Problems) {
        problems.check_name("relay.queue", &self.queue);
        for (code, storefront) in &self.storefronts {
            if code.trim().is_empty() {
                problems.push("relay.storefronts", "a storefront code is empty");
            }
            for (name, dest) in &storefront.destinations {
                let key = format!("relay.storefronts.{code}.destinations.{name}");
                dest.validate(&key, endpoints, problems);
            }
        }
    }
}

impl DestinationConfig {
    fn validate(
        &self,
        key: &str,
        endpoints: &BTreeMap<String, EndpointConfig>,
        problems: &mut Problems,
    ) {
        let endpoint = endpoints.get(&self.endpoint);
        if endpoint.is_none() {
            problems.push(
                format!("{key}.endpoint"),
                format!("'{}' is not an [endpoints.NAME] entry", self.endpoint),
            );
        }
        let given = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.trim().is_empty());
        match self.shape {
            Shape::Ga4 => {
                if !given(&self.measurement_id) {
                    problems.push(format!("{key}.measurement_id"), "required for shape ga4");
                }
                // GA4 refuses requests without the API secret; catch it at start instead
                // of in every delivery's dead letter.
                if endpoint.is_some_and(|e| !e.query_secrets.contains_key("api_secret")) {
                    problems.push(
                        key,
                        format!(
                            "shape ga4 needs [endpoints.{}.query_secrets] api_secret",
                            self.endpoint
                        ),
                    );
                }
            }
            Shape::MetaCapi => {
                let pixel = self.pixel_id.as_deref().unwrap_or("");
                if pixel.is_empty() || !pixel.bytes().all(|b| b.is_ascii_digit()) {
                    problems.push(
                        format!("{key}.pixel_id"),
                        "required for shape meta_capi, and all digits",
                    );
                }
                if endpoint.is_some_and(|e| {
                    !e.query_secrets.contains_key("access_token") && e.auth.is_none()
                }) {
                    problems.push(
                        key,
                        format!(
                            "shape meta_capi needs [endpoints.{}.query_secrets] access_token (or auth)",
                            self.endpoint
                        ),
                    );
                }
            }
            Shape::Sgtm => {}
        }
        if self.shape != Shape::Ga4 && self.measurement_id.is_some() {
            problems.push(format!("{key}.measurement_id"), "only for shape ga4");
        }
        if self.shape != Shape::MetaCapi {
            for (field, value) in [
                ("pixel_id", &self.pixel_id),
                ("action_source", &self.action_source),
                ("test_event_code", &self.test_event_code),
            ] {
                if value.is_some() {
                    problems.push(format!("{key}.{field}"), "only for shape meta_capi");
                }
            }
        }
        for (from, _) in self
            .event_names
            .iter()
            .filter(|(_, to)| to.trim().is_empty())
        {
            problems.push(format!("{key}.event_names.{from}"), "must not be empty");
        }
        if self.only_mapped && self.event_names.is_empty() {
            problems.push(format!("{key}.only_mapped"), "needs event_names");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_events_relay_example_is_valid() {
        std::env::set_var("GA4_API_SECRET", "example-ga4-secret");
        std::env::set_var("META_ACCESS_TOKEN", "example-meta-token");
        let text = include_str!("../../../config/examples/events-relay.toml");
        let config = Config::from_toml(text, "events-relay.toml").unwrap();
        config.check_secrets().unwrap();
        let relay = &config.relay;
        assert_eq!(relay.queue, "relay");
        let bosley = &relay.storefronts["bosley"].destinations;
        assert_eq!(bosley["ga4"].request_path(), "/mp/collect");
        assert_eq!(bosley["meta"].request_path(), "/123456789012345/events");
        assert_eq!(bosley["meta"].event_names["purchase_completed"], "Purchase");
        assert_eq!(
            relay.storefronts["pfizer"].destinations["sgtm"].request_path(),
            "/oms/events"
        );
    }

    #[test]
    fn bad_relay_config_names_the_key() {
        let endpoints = "[endpoints.g]\nbase_url = \"https://g.example\"\n\
                         [endpoints.g.query_secrets]\napi_secret = { env = \"X\" }\n\
                         [endpoints.plain]\nbase_url = \"https://p.example\"\n";
        let dest = "[relay.storefronts.s.destinations.d]\n";
        let cases = [
            (
                "endpoint = \"nope\"\nshape = \"sgtm\"",
                "relay.storefronts.s.destinations.d.endpoint: 'nope'",
            ),
            (
                "endpoint = \"g\"\nshape = \"ga4\"",
                "relay.storefronts.s.destinations.d.measurement_id: required",
            ),
            (
                "endpoint = \"plain\"\nshape = \"ga4\"\nmeasurement_id = \"G-1\"",
                "needs [endpoints.plain.query_secrets] api_secret",
            ),
            (
                "endpoint = \"g\"\nshape = \"meta_capi\"\npixel_id = \"12a\"",
                "pixel_id: required for shape meta_capi, and all digits",
            ),
            (
                "endpoint = \"plain\"\nshape = \"meta_capi\"\npixel_id = \"12\"",
                "needs [endpoints.plain.query_secrets] access_token",
            ),
            (
                "endpoint = \"g\"\nshape = \"sgtm\"\npixel_id = \"12\"",
                "d.pixel_id: only for shape meta_capi",
            ),
            ("endpoint = \"g\"\nshape = \"webhook\"", "webhook"),
            (
                "endpoint = \"g\"\nshape = \"sgtm\"\napi_secret = \"inline\"",
                "unknown field `api_secret`",
            ),
        ];
        for (body, expected) in cases {
            let text = format!("{endpoints}{dest}{body}\n");
            let message = Config::from_toml(&text, "t").unwrap_err().to_string();
            assert!(message.contains(expected), "{body:?} gave {message}");
        }
        let message = Config::from_toml(
            "[endpoints.g]\nbase_url = \"https://g.example\"\n[endpoints.g.query_secrets]\napi_secret = { }\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message
                .contains("endpoints.g.query_secrets.api_secret: give exactly one of env and file"),
            "{message}"
        );
    }
}
