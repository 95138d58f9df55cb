//! The `[web]` section: where the page listens, how it authenticates, whether actions are
//! allowed. Refuses a public address without auth, and reads the token only from a file.

use crate::config::problems::Problems;
use crate::config::secrets::{resolve_secret, SecretError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[web]`: off unless `listen` is given.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// `127.0.0.1:8080`; none (the default) serves no page.
    pub listen: Option<SocketAddr>,
    /// A file holding the token (`$CREDENTIALS_DIRECTORY/web-token`): sent as
    /// `Authorization: Bearer TOKEN`, or as the password of HTTP basic auth (any user
    /// name, which is recorded with each action). Required unless `listen` is loopback.
    pub token_file: Option<PathBuf>,
    /// Retry and cancel from the page and `/api/`; off: every mutating route answers 403.
    pub actions: bool,
}

impl WebConfig {
    /// What types alone cannot check, recording every problem with its key.
    pub fn validate(&self, problems: &mut Problems) {
        let Some(listen) = self.listen else {
            if self.token_file.is_some() || self.actions {
                problems.push("web", "token_file or actions given without web.listen");
            }
            return;
        };
        if !listen.ip().is_loopback() && self.token_file.is_none() {
            problems.push(
                "web.listen",
                format!(
                    "{listen} is not a loopback address, so web.token_file is required \
                     (anyone who can reach the port could read the queue)"
                ),
            );
        }
        if let Some(path) = &self.token_file {
            if path.as_os_str().is_empty() {
                problems.push("web.token_file", "must not be empty");
            }
        }
    }

    /// The token, read now; `None` when no auth is configured. Errors name the key and
    /// never the token.
    pub fn token(&self) -> Result<Option<String>, SecretError> {
        match &self.token_file {
            None => Ok(None),
            Some(file) => resolve_secret("web.token", &None, &Some(file.clone())).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(text: &str) -> Result<WebConfig, String> {
        let config: WebConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Problems::new();
        config.validate(&mut problems);
        problems.into_result().map_err(|p| p.to_string())?;
        Ok(config)
    }

    #[test]
    fn off_by_default_and_loopback_needs_no_token() {
        assert_eq!(web("").unwrap().listen, None);
        let config = web("listen = \"127.0.0.1:8080\"").unwrap();
        assert!(!config.actions);
        assert_eq!(config.token().unwrap(), None);
        web("listen = \"[::1]:8080\"").unwrap();
    }

    #[test]
    fn a_public_address_without_a_token_is_refused() {
        let err = web("listen = \"0.0.0.0:8080\"").unwrap_err();
        assert!(
            err.contains("web.listen: 0.0.0.0:8080 is not a loopback"),
            "{err}"
        );
        assert!(err.contains("web.token_file is required"), "{err}");
        web("listen = \"0.0.0.0:8080\"\ntoken_file = \"/run/credentials/web-token\"").unwrap();
    }

    #[test]
    fn a_token_in_the_config_text_is_not_a_key() {
        let err = web("listen = \"127.0.0.1:1\"\ntoken = \"hunter22\"").unwrap_err();
        assert!(err.contains("unknown field `token`"), "{err}");
        assert!(web("actions = true")
            .unwrap_err()
            .contains("without web.listen"));
    }

    #[test]
    fn the_token_is_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-token");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        let config = WebConfig {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            token_file: Some(path.clone()),
            actions: false,
        };
        assert_eq!(config.token().unwrap().as_deref(), Some("s3cret-token"));
        std::fs::remove_file(&path).unwrap();
        let err = config.token().unwrap_err().to_string();
        assert!(err.starts_with("web.token_file: cannot read"), "{err}");
    }
}
