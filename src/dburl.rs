//! Where the queue lives: a SQLite file (a path) or a PostgreSQL server (a
//! `postgresql://` URL), and the URL shown with its password masked wherever it is printed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

/// The URLs this process resolved, by their masked text. The configuration keeps only
/// the masked text in `daemon.database`, so every message that names the database
/// (`database.display()`) shows no password; [`postgres_url_of`] finds the real one.
static RESOLVED: LazyLock<Mutex<HashMap<String, PostgresUrl>>> = LazyLock::new(Default::default);

/// Keeps `url` for this process and returns the name to use for it: its masked text.
pub fn register(url: &PostgresUrl) -> PathBuf {
    let masked = url.to_string();
    RESOLVED
        .lock()
        .expect("resolved URLs")
        .insert(masked.clone(), url.clone());
    PathBuf::from(masked)
}

/// The PostgreSQL URL a database name stands for: a registered masked name, or a URL
/// given as is. None for a path (SQLite).
pub fn postgres_url_of(database: &Path) -> Option<Result<PostgresUrl, String>> {
    let text = database.to_string_lossy();
    if !looks_like_postgres_url(&text) {
        return None;
    }
    if let Some(url) = RESOLVED.lock().expect("resolved URLs").get(text.as_ref()) {
        return Some(Ok(url.clone()));
    }
    Some(PostgresUrl::parse("daemon.database", &text))
}

/// The queue database the configuration names.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// The embedded default: one file, one daemon.
    Sqlite(PathBuf),
    /// Several daemons on several machines against one server.
    Postgres(PostgresUrl),
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseTarget::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            DatabaseTarget::Postgres(url) => write!(f, "Postgres({url})"),
        }
    }
}

impl fmt::Display for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseTarget::Sqlite(path) => write!(f, "{}", path.display()),
            DatabaseTarget::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// Whether `text` is meant as a PostgreSQL URL rather than a path.
pub fn looks_like_postgres_url(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgresql://") || lower.starts_with("postgres://")
}

/// A PostgreSQL connection URL. `Display` and `Debug` mask the password (in the
/// authority and in a `password=` parameter), so the URL can be named in any message;
/// [`PostgresUrl::secret_text`] is for the connection alone.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    text: String,
}

impl PostgresUrl {
    /// Checks the URL's form. `key` names the setting it came from; errors show the URL
    /// masked, never the password.
    pub fn parse(key: &str, text: &str) -> Result<PostgresUrl, String> {
        let text = text.trim();
        if !looks_like_postgres_url(text) {
            // Not quoted: from a secret file, it may be a bare password.
            return Err(format!(
                "{key}: does not hold a postgresql:// URL (postgresql://user@host/database)"
            ));
        }
        let url = PostgresUrl { text: text.into() };
        let parsed: Result<postgres::Config, _> = text.parse();
        match parsed {
            Ok(config) => {
                if config.get_dbname().is_none() {
                    return Err(format!(
                        "{key}: {url} names no database (postgresql://user@host/DATABASE)"
                    ));
                }
                if config.get_hosts().is_empty() {
                    return Err(format!(
                        "{key}: {url} names no host (postgresql://user@HOST/database)"
                    ));
                }
                Ok(url)
            }
            // The parser's own message may quote the text; only its kind is kept.
            Err(_) => Err(format!(
                "{key}: {url} is not a valid PostgreSQL URL (postgresql://user[:password]@host[:port]/database[?options])"
            )),
        }
    }

    /// The URL with its password, to connect with. Never print it.
    pub fn secret_text(&self) -> &str {
        &self.text
    }

    /// The connection settings of the URL.
    pub fn config(&self) -> postgres::Config {
        self.text.parse().expect("checked by PostgresUrl::parse")
    }

    /// The same server and credentials with another database (tests, `CREATE DATABASE`).
    pub fn with_database(&self, database: &str) -> PostgresUrl {
        let (head, query) = match self.text.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (self.text.as_str(), None),
        };
        let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
        let base = match head[scheme_end..].find('/') {
            Some(slash) => &head[..scheme_end + slash],
            None => head,
        };
        let mut text = format!("{base}/{database}");
        if let Some(query) = query {
            text.push('?');
            text.push_str(query);
        }
        PostgresUrl { text }
    }

    /// The database the URL names.
    pub fn database(&self) -> String {
        self.config().get_dbname().unwrap_or_default().to_string()
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_password(&self.text))
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// `postgresql://user:secret@host/db?password=x` becomes
/// `postgresql://user:***@host/db?password=***`.
pub fn mask_password(text: &str) -> String {
    let (head, query) = match text.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (text, None),
    };
    let mut out = String::with_capacity(text.len());
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &head[scheme_end..];
    out.push_str(&head[..scheme_end]);
    // The authority ends at the first '/'; credentials end at its last '@'.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let credentials = &authority[..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(credentials),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&rest[authority_end..]);
    if let Some(query) = query {
        out.push('?');
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                    format!("{name}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_masked_in_the_authority_and_in_parameters() {
        assert_eq!(
            mask_password("postgresql://jobd:s3cr%40t@db.internal:5433/jobs?sslmode=disable"),
            "postgresql://jobd:***@db.internal:5433/jobs?sslmode=disable"
        );
        assert_eq!(
            mask_password("postgres://jobd@db/jobs?password=hunter2&application_name=x"),
            "postgres://jobd@db/jobs?password=***&application_name=x"
        );
        assert_eq!(
            mask_password("postgresql://db/jobs"),
            "postgresql://db/jobs"
        );
        let url = PostgresUrl::parse("daemon.database", "postgresql://u:pw@h/d").unwrap();
        assert_eq!(url.to_string(), "postgresql://u:***@h/d");
        assert_eq!(format!("{url:?}"), "PostgresUrl(postgresql://u:***@h/d)");
        assert!(!format!("{:?}", DatabaseTarget::Postgres(url)).contains("pw"));
    }

    #[test]
    fn bad_urls_are_refused_naming_the_key_without_the_password() {
        let err = PostgresUrl::parse("daemon.database", "postgresql://u:pw@h").unwrap_err();
        assert!(err.starts_with("daemon.database: "), "{err}");
        assert!(err.contains("names no database"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        let err =
            PostgresUrl::parse("daemon.database", "postgresql://u:pw@h/d?bogus=1").unwrap_err();
        assert!(err.contains("not a valid PostgreSQL URL"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        let err = PostgresUrl::parse("daemon.database_url_env", "mysql://x/y").unwrap_err();
        assert!(err.contains("does not hold a postgresql:// URL"), "{err}");
    }

    #[test]
    fn another_database_on_the_same_server() {
        let url =
            PostgresUrl::parse("k", "postgresql://u:pw@h:5432/postgres?sslmode=disable").unwrap();
        let other = url.with_database("jobd_test_1");
        assert_eq!(
            other.secret_text(),
            "postgresql://u:pw@h:5432/jobd_test_1?sslmode=disable"
        );
        assert_eq!(other.database(), "jobd_test_1");
    }
}
