//! `[notify]`: where dead-letter notifications go (a webhook endpoint and/or a declared
//! command) and on which queue; checked against `[endpoints]` and `[commands]`.

use crate::config::problems::Problems;
use crate::handlers::exec::config::CommandConfig;
use crate::handlers::http::config::EndpointConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Dead-letter notifications (`[notify]`): a durable, retried job per dead job, to a
/// webhook endpoint and/or a declared command.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// An `[endpoints.NAME]` that receives a Slack-compatible JSON POST.
    pub endpoint: Option<String>,
    /// The path under the endpoint's base_url (default: the base_url itself).
    pub path: Option<String>,
    /// A `[commands.NAME]` run with the notification as JSON on stdin.
    pub command: Option<String>,
    /// The queue notification jobs go to (default: the dead job's queue).
    pub queue: Option<String>,
}

impl NotifyConfig {
    /// Checks `[notify]` against the endpoints and commands it may name.
    pub fn validate(
        &self,
        endpoints: &BTreeMap<String, EndpointConfig>,
        commands: &BTreeMap<String, CommandConfig>,
        problems: &mut Problems,
    ) {
        if let Some(endpoint) = &self.endpoint {
            if !endpoints.contains_key(endpoint) {
                problems.push(
                    "notify.endpoint",
                    format!("'{endpoint}' is not an [endpoints.NAME] entry"),
                );
            }
        }
        if let Some(command) = &self.command {
            if !commands.contains_key(command) {
                problems.push(
                    "notify.command",
                    format!("'{command}' is not a [commands.NAME] entry"),
                );
            }
        }
        if let Some(queue) = &self.queue {
            problems.check_name("notify.queue", queue);
        }
        if self.endpoint.is_none()
            && self.command.is_none()
            && (self.path.is_some() || self.queue.is_some())
        {
            problems.push(
                "notify",
                "path or queue given without an endpoint or command",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn notify_names_declared_endpoints_and_commands() {
        let message = Config::from_toml("[notify]\nendpoint = \"nope\"\ncommand = \"gone\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(message.contains("notify.endpoint: 'nope'"), "{message}");
        assert!(message.contains("notify.command: 'gone'"), "{message}");
        let message = Config::from_toml("[notify]\nqueue = \"q\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("notify: path or queue given without"),
            "{message}"
        );
    }
}
