//! Files named in payloads: every one must resolve, after symlinks and `..`, under the
//! data directory, a `[[watch]]` folder or a folder of `daemon.allowed_paths`. Each kind's
//! payload check calls [`check`] at enqueue, and its handler calls it again just before it
//! opens the file, since the file may have been replaced by a symlink in between.

use crate::config::Config;
use crate::job::PayloadError;
use std::path::{Component, Path, PathBuf};

/// The rule, as errors state it.
pub const RULE: &str = "files named in a payload must resolve, after symlinks, under the data \
directory, a [[watch]] folder or a folder in daemon.allowed_paths";

/// The folders payload files may be in, each resolved (symlinks followed). The data
/// directory comes first.
pub fn allowed_roots(config: &Config, data_dir: &Path) -> Vec<PathBuf> {
    let mut roots = vec![resolve(&absolute(data_dir))];
    roots.extend(config.watch.iter().map(|w| resolve(&absolute(&w.path))));
    roots.extend(
        config
            .daemon
            .allowed_paths
            .iter()
            .map(|p| resolve(&absolute(p))),
    );
    roots
}

/// Resolves `path` (relative paths are under `data_dir`) and checks it lies under an
/// allowed folder ([`allowed_roots`]) and is not the queue database or one of its side
/// files. `field` names the payload field (`csv_import payload: file`). Returns the
/// resolved path, which has no symlinks left: open that one.
pub fn check(
    config: &Config,
    data_dir: &Path,
    field: &str,
    path: &Path,
) -> Result<PathBuf, PayloadError> {
    let refused = |message: String| PayloadError::new(field, message);
    let shown = crate::job::preview(&path.to_string_lossy());
    if path.as_os_str().is_empty() {
        return Err(refused(format!("{field}: must not be empty")));
    }
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        absolute(data_dir).join(path)
    };
    let resolved = resolve(&full);
    if resolved.components().any(|c| c == Component::ParentDir) {
        return Err(refused(format!(
            "{field}: {shown} has '..' below a folder that does not exist; {RULE}"
        )));
    }
    let database = resolve(&absolute(&config.daemon.database));
    if is_database_file(&resolved, &database) {
        return Err(refused(format!(
            "{field}: {shown} is the queue database (or one of its files); {RULE}"
        )));
    }
    let roots = allowed_roots(config, data_dir);
    if roots.iter().any(|root| resolved.starts_with(root)) {
        return Ok(resolved);
    }
    Err(refused(format!(
        "{field}: {shown} resolves to {}, which is outside the allowed folders ({}); {RULE}",
        crate::job::preview(&resolved.to_string_lossy()),
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Checks a path given as a JSON string field, if the field is there.
pub fn check_field(
    config: &Config,
    data_dir: &Path,
    field: &str,
    value: Option<&serde_json::Value>,
) -> Result<Option<PathBuf>, PayloadError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => {
            check(config, data_dir, field, Path::new(text)).map(Some)
        }
        Some(_) => Err(PayloadError::new(
            field,
            format!("{field}: must be a path (a string)"),
        )),
    }
}

fn is_database_file(path: &Path, database: &Path) -> bool {
    let (Some(parent), Some(name)) = (database.parent(), database.file_name()) else {
        return false;
    };
    if path.parent() != Some(parent) {
        return false;
    }
    let name = name.to_string_lossy();
    let candidate = path.file_name().unwrap_or_default().to_string_lossy();
    candidate == name
        || ["-wal", "-shm", "-journal", ".lock"]
            .iter()
            .any(|suffix| candidate == format!("{name}{suffix}"))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The path with symlinks and `..` resolved as far as it exists; the rest (a file not
/// created yet) is appended as written. A `..` in that rest stays, and [`check`] refuses
/// it, since it cannot be resolved safely.
pub fn resolve(path: &Path) -> PathBuf {
    let parts: Vec<Component> = path.components().collect();
    for existing in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..existing].iter().collect();
        if let Ok(mut resolved) = prefix.canonicalize() {
            for part in &parts[existing..] {
                resolved.push(part);
            }
            return resolved;
        }
    }
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn config(dir: &Path, extra: &str) -> Config {
        let text = format!(
            "[daemon]\ndatabase = \"{d}/var/jobs.db\"\ndata_dir = \"{d}/var\"\n{extra}",
            d = dir.display()
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn files_under_the_data_dir_a_watch_or_allowed_paths_pass_and_others_name_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        for sub in ["var/spool/1", "in", "shared", "elsewhere"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        for file in [
            "var/spool/1/a.csv",
            "in/b.csv",
            "shared/c.csv",
            "elsewhere/d.csv",
        ] {
            fs::write(root.join(file), "x").unwrap();
        }
        let config = config(
            &root,
            &format!(
                "allowed_paths = [\"{r}/shared\"]\n[[watch]]\npath = \"{r}/in\"\n",
                r = root.display()
            ),
        );
        let data = root.join("var");
        let ok = |p: &str| check(&config, &data, "file", Path::new(p));
        assert_eq!(
            ok(&format!("{}/var/spool/1/a.csv", root.display())).unwrap(),
            root.join("var/spool/1/a.csv")
        );
        assert_eq!(ok("spool/1/a.csv").unwrap(), root.join("var/spool/1/a.csv"));
        assert!(ok(&format!("{}/in/b.csv", root.display())).is_ok());
        assert!(ok(&format!("{}/shared/c.csv", root.display())).is_ok());
        // Not there yet (an output the daemon will write) is fine if its folder is.
        assert!(ok("output/20260101/x.csv").is_ok());

        let err = ok("/etc/passwd").unwrap_err();
        assert_eq!(err.field, "file");
        let err = err.to_string();
        assert!(
            err.starts_with("file: \"/etc/passwd\" resolves to"),
            "{err}"
        );
        assert!(err.contains(RULE), "{err}");
        assert!(ok(&format!("{}/elsewhere/d.csv", root.display())).is_err());
        // `..` out of the data directory.
        assert!(ok("spool/../../elsewhere/d.csv").is_err());
        assert!(ok("../elsewhere/d.csv").is_err());
        let err = ok("missing/../../../etc/passwd").unwrap_err().to_string();
        assert!(err.contains("'..'") || err.contains("outside"), "{err}");
        // A symlink inside an allowed folder that points outside.
        std::os::unix::fs::symlink("/etc/passwd", root.join("in/link.csv")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("var/spool/2")).unwrap();
        assert!(ok(&format!("{}/in/link.csv", root.display())).is_err());
        assert!(ok("spool/2/d.csv").is_err());
        // The queue database is under the data directory but not for payloads.
        let err = ok("jobs.db-wal").unwrap_err().to_string();
        assert!(err.contains("queue database"), "{err}");
        assert!(ok("jobs.db").is_err());
        assert!(ok("").is_err());
    }

    #[test]
    fn a_json_field_must_be_a_string() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "");
        let data = dir.path().join("var");
        assert_eq!(check_field(&config, &data, "file", None), Ok(None));
        assert!(
            check_field(&config, &data, "file", Some(&serde_json::json!(3)))
                .unwrap_err()
                .to_string()
                .contains("must be a path")
        );
    }
}
