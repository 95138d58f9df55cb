//! Where secrets come from and how they are read: exactly one of an environment variable
//! or a file (systemd's `LoadCredential=` directory expands), at start and reload, with
//! errors that name the key and never the secret. Endpoint auth, query secrets, a secret
//! base URL and the web page's token all read theirs here.

use super::problems::Problem;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where systemd's `LoadCredential=` puts secrets; `$CREDENTIALS_DIRECTORY` in a
/// `*_file` path is replaced by it.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Where one secret comes from: an environment variable or a file (`$CREDENTIALS_DIRECTORY`
/// expands), exactly one of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// The secret, read now. `key` names this table in errors
    /// (`endpoints.ga4.query_secrets.api_secret`), whose keys are `env` and `file`.
    pub fn read(&self, key: &str) -> Result<String, SecretError> {
        read_secret(
            format!("{key}.env"),
            format!("{key}.file"),
            &self.env,
            &self.file,
        )
    }
}

/// A secret that could not be read. It names the keys (`endpoints.usage.auth.token_env`),
/// the variable or the file, and never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    BothGiven {
        env_key: String,
        file_key: String,
    },
    NoneGiven {
        env_key: String,
        file_key: String,
    },
    VariableUnset {
        env_key: String,
        variable: String,
    },
    VariableEmpty {
        env_key: String,
        variable: String,
    },
    /// `$CREDENTIALS_DIRECTORY` is in the path but not set.
    NoCredentialsDirectory {
        file_key: String,
        path: PathBuf,
    },
    FileUnreadable {
        file_key: String,
        path: PathBuf,
        reason: String,
    },
    FileEmpty {
        file_key: String,
        path: PathBuf,
    },
}

impl SecretError {
    /// The key at fault and what is wrong with it.
    fn parts(&self) -> (String, String) {
        match self {
            SecretError::BothGiven { env_key, file_key } => {
                (format!("{env_key} and {file_key}"), "give only one".into())
            }
            SecretError::NoneGiven { env_key, file_key } => {
                (format!("{env_key} or {file_key}"), "one is required".into())
            }
            SecretError::VariableUnset { env_key, variable } => (
                env_key.clone(),
                format!("the environment variable {variable} is not set"),
            ),
            SecretError::VariableEmpty { env_key, variable } => (
                env_key.clone(),
                format!("the environment variable {variable} is empty"),
            ),
            SecretError::NoCredentialsDirectory { file_key, path } => (
                file_key.clone(),
                format!(
                    "{} uses ${CREDENTIALS_ENV}, which is not set (LoadCredential= in the unit sets it)",
                    path.display()
                ),
            ),
            SecretError::FileUnreadable {
                file_key,
                path,
                reason,
            } => (
                file_key.clone(),
                format!("cannot read {}: {reason}", path.display()),
            ),
            SecretError::FileEmpty { file_key, path } => {
                (file_key.clone(), format!("{} is empty", path.display()))
            }
        }
    }
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, message) = self.parts();
        write!(f, "{key}: {message}")
    }
}

impl std::error::Error for SecretError {}

impl From<SecretError> for Problem {
    fn from(e: SecretError) -> Problem {
        let (key, message) = e.parts();
        Problem::new(key, message)
    }
}

/// Reads a secret from exactly one of an environment variable (`{key}_env`) or a file
/// (`{key}_file`). Errors name the key (`endpoints.usage.auth.token_env`) and never the
/// secret.
pub fn resolve_secret(
    key: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<String, SecretError> {
    read_secret(format!("{key}_env"), format!("{key}_file"), env, file)
}

fn read_secret(
    env_key: String,
    file_key: String,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<String, SecretError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(SecretError::BothGiven { env_key, file_key }),
        (None, None) => Err(SecretError::NoneGiven { env_key, file_key }),
        (Some(name), None) => match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
            Ok(_) => Err(SecretError::VariableEmpty {
                env_key,
                variable: name.clone(),
            }),
            Err(_) => Err(SecretError::VariableUnset {
                env_key,
                variable: name.clone(),
            }),
        },
        (None, Some(path)) => {
            let Some(path) = expand_credentials_dir(path) else {
                return Err(SecretError::NoCredentialsDirectory {
                    file_key,
                    path: path.clone(),
                });
            };
            let text = std::fs::read_to_string(&path).map_err(|e| SecretError::FileUnreadable {
                file_key: file_key.clone(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let value = text.trim_end_matches(['\r', '\n']).to_string();
            if value.trim().is_empty() {
                return Err(SecretError::FileEmpty { file_key, path });
            }
            Ok(value)
        }
    }
}

/// Replaces `$CREDENTIALS_DIRECTORY` (or `${CREDENTIALS_DIRECTORY}`) at the start of a
/// path with the directory systemd's `LoadCredential=` made; `None` when the path uses it
/// and it is not set.
fn expand_credentials_dir(path: &Path) -> Option<PathBuf> {
    let text = path.to_string_lossy();
    for prefix in ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let dir = std::env::var_os(CREDENTIALS_ENV).filter(|d| !d.is_empty())?;
            return Some(PathBuf::from(dir).join(rest.trim_start_matches('/')));
        }
    }
    Some(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_under_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("usage-token"), "file-secret\n").unwrap();
        std::env::set_var(CREDENTIALS_ENV, dir.path());
        let file = Some(PathBuf::from("$CREDENTIALS_DIRECTORY/usage-token"));
        assert_eq!(
            resolve_secret("k.token", &None, &file).unwrap(),
            "file-secret"
        );
        let missing = Some(PathBuf::from("${CREDENTIALS_DIRECTORY}/nope"));
        let err = resolve_secret("k.token", &None, &missing)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("k.token_file: cannot read"), "{err}");
        let both = resolve_secret("k.token", &Some("A".into()), &file).unwrap_err();
        assert_eq!(
            both.to_string(),
            "k.token_env and k.token_file: give only one"
        );
        let source = SecretSource {
            env: None,
            file: None,
        };
        assert_eq!(
            source.read("q.s").unwrap_err().to_string(),
            "q.s.env or q.s.file: one is required"
        );
    }
}
