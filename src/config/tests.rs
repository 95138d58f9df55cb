//! Tests of the composed configuration: loading, defaults, validation that reports
//! every problem with its key, and the examples under `config/`.

use super::*;
use crate::dburl::DatabaseTarget;

#[test]
fn sizes_and_the_metrics_section() {
    let config = Config::from_toml(
        "[daemon]\nwal_limit = \"8MiB\"\n[metrics]\ntextfile = \"/tmp/j.prom\"\ninterval = \"5s\"\n",
        "test",
    )
    .unwrap();
    assert_eq!(config.daemon.wal_limit, 8 << 20);
    assert_eq!(config.metrics.interval, Duration::from_secs(5));
    let config = Config::from_toml("[daemon]\nwal_limit = 1048576\n", "test").unwrap();
    assert_eq!(config.daemon.wal_limit, 1 << 20);
    let err = Config::from_toml("[daemon]\nwal_limit = \"1KiB\"\n", "test").unwrap_err();
    assert!(err.to_string().contains("daemon.wal_limit"), "{err}");
    let err = Config::from_toml("[metrics]\ninterval = \"0s\"\n", "test").unwrap_err();
    assert!(err.to_string().contains("metrics.interval"), "{err}");
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = Config::from_toml("", "test").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.daemon.workers, DEFAULT_WORKERS);
    assert_eq!(config.daemon.synchronous, Synchronous::Full);
    assert_eq!(config.policy_for("anything"), RetryPolicy::default());
}

#[test]
fn the_annotated_example_is_valid() {
    let text = include_str!("../../config/jobd.toml");
    Config::from_toml(text, "config/jobd.toml").unwrap();
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = Config::from_toml("[daemon]\nwokers = 3\n", "t.toml").unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("config t.toml:"), "{message}");
    assert!(message.contains("wokers"), "{message}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (
            "[daemon]\nworkers = 0\n",
            "daemon.workers: must be at least 1",
        ),
        ("[daemon]\nlease = \"soon\"\n", "'soon' is not a duration"),
        (
            "[retry]\njitter = 2.0\n",
            "retry.jitter: must be between 0 and 1",
        ),
        (
            "[kinds.exec.retry]\nmax_attempts = 0\n",
            "kinds.exec.retry.max_attempts: must be at least 1",
        ),
        (
            "[queues.bulk]\nconcurrency = 0\n",
            "queues.bulk.concurrency",
        ),
        ("[daemon]\nsynchronous = \"sometimes\"\n", "sometimes"),
    ];
    for (text, expected) in cases {
        let message = Config::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(message.contains(expected), "{text:?} gave {message}");
    }
}

#[test]
fn every_duration_key_has_bounds_and_each_error_is_reported() {
    // One of every table that holds durations: durations() must find bounds for all.
    let text = "[kinds.exec]\ntimeout = \"1m\"\n[kinds.exec.retry]\nbase = \"1s\"\ncap = \"1h\"\ndeadline = \"1d\"\n\
        [retry]\ndeadline = \"7d\"\n\
        [commands.report]\nprogram = \"/bin/true\"\ntimeout = \"1m\"\nkill_grace = \"1s\"\n\
        [endpoints.api]\nbase_url = \"https://api.example.com\"\n\
        [[watch]]\npath = \"/srv/in\"\n";
    let config = Config::from_toml(text, "t").unwrap();
    for (key, pattern, _) in config.durations() {
        assert!(
            DURATION_BOUNDS
                .iter()
                .any(|(p, min, max)| *p == pattern && min <= max),
            "{key}"
        );
    }
    let message = Config::from_toml(
        "[daemon]\nlease = \"0s\"\nreap_interval = \"2h\"\n[log]\nlevel = \"jobd=loud\"\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    for part in [
        "daemon.lease: 0s is outside the allowed range 1s to 1day",
        "daemon.reap_interval: 2h is outside the allowed range 100ms to 1h",
        "log.level: 'jobd=loud' has 'jobd=loud', which is not a level",
    ] {
        assert!(message.contains(part), "{message}");
    }
}

#[test]
fn watch_and_socket_settings_have_defaults() {
    let config = Config::from_toml(
        "[[watch]]\npath = \"/srv/in\"\nkind = \"exec\"\n[watch.payload]\ncommand = \"report\"\n",
        "t",
    )
    .unwrap();
    let watch = &config.watch[0];
    assert_eq!(watch.pattern, "*");
    assert_eq!(watch.settle, DEFAULT_WATCH_SETTLE);
    assert_eq!(watch.rescan, DEFAULT_WATCH_RESCAN);
    assert_eq!(watch.dedupe_window, DEFAULT_WATCH_DEDUPE_WINDOW);
    assert_eq!(watch.mode, WatchMode::File);
    assert_eq!(watch.payload["command"].as_str(), Some("report"));
    assert_eq!(config.socket.max_line_bytes, DEFAULT_SOCKET_MAX_LINE_BYTES);
    assert_eq!(config.socket.max_batch, DEFAULT_SOCKET_MAX_BATCH);
    assert_eq!(config.socket.mode, 0o660);
    let config = Config::from_toml("[socket]\nmode = \"0640\"\n", "t").unwrap();
    assert_eq!(config.socket.mode, 0o640);
}

#[test]
fn bad_watch_and_socket_values_name_their_key() {
    let cases = [
        (
            "[[watch]]\npath = \"\"\n",
            "watch[0].path: must not be empty",
        ),
        (
            "[[watch]]\npath = \"/a\"\npattern = \"[\"\n",
            "watch[0].pattern",
        ),
        (
            "[[watch]]\npath = \"/a\"\nsettle = \"x\"\n",
            "'x' is not a duration",
        ),
        (
            "[[watch]]\npath = \"/a\"\nmode = \"dir\"\n",
            "watch[0].required: a folder set",
        ),
        (
            "[[watch]]\npath = \"/a\"\nrequired = [\"a.csv\"]\n",
            "watch[0].required: required, optional",
        ),
        (
            "[[watch]]\npath = \"/a\"\n[[watch]]\npath = \"/a\"\n",
            "watch[1].path",
        ),
        (
            "[[watch]]\npath = \"/a\"\npayload = { file = \"x\" }\n",
            "watch[0].payload.file",
        ),
        ("[[watch]]\npath = \"/a\"\nfolder = \"x\"\n", "folder"),
        (
            "[socket]\nmax_batch = 0\n",
            "socket.max_batch: must be at least 1",
        ),
        ("[socket]\nmode = \"0666\"\n", "socket.mode"),
        ("[socket]\nmode = \"rw\"\n", "not an octal mode"),
        ("[socket]\nmax_connections = 0\n", "socket.max_connections"),
        ("[socket]\nidle_timeout = \"0s\"\n", "socket.idle_timeout"),
    ];
    for (text, expected) in cases {
        let message = Config::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(message.contains(expected), "{text:?} gave {message}");
    }
}

#[test]
fn a_postgresql_url_selects_postgres_and_a_path_keeps_sqlite() {
    let sqlite =
        Config::from_toml("[daemon]\ndatabase = \"/var/lib/jobd/jobs.db\"\n", "t").unwrap();
    assert_eq!(
        sqlite.daemon.database_target().unwrap(),
        DatabaseTarget::Sqlite("/var/lib/jobd/jobs.db".into())
    );
    let pg = Config::from_toml(
        "[daemon]\ndatabase = \"postgresql://jobd@db.internal/jobs\"\nnode = \"vm-1\"\n",
        "t",
    )
    .unwrap();
    let DatabaseTarget::Postgres(url) = pg.daemon.database_target().unwrap() else {
        panic!("a URL selects PostgreSQL");
    };
    assert_eq!(url.database(), "jobs");
    assert_eq!(pg.daemon.node_name(), "vm-1");
    // The default node name: the host name and a random suffix, new each time.
    let a = sqlite.daemon.node_name();
    assert_ne!(a, sqlite.daemon.node_name());
    crate::job::check_name("node", &a).unwrap();
}

#[test]
fn the_database_url_comes_from_the_environment_or_a_file_and_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-url");
    std::fs::write(&file, "postgresql://jobd:hunter2@db/jobs\n").unwrap();
    let config = Config::from_toml(
        &format!("[daemon]\ndatabase_url_file = \"{}\"\n", file.display()),
        "t",
    )
    .unwrap();
    let target = config.daemon.database_target().unwrap();
    let DatabaseTarget::Postgres(url) = &target else {
        panic!("postgres");
    };
    assert_eq!(url.secret_text(), "postgresql://jobd:hunter2@db/jobs");
    assert_eq!(target.to_string(), "postgresql://jobd:***@db/jobs");
    assert!(!format!("{target:?}").contains("hunter2"));
    config.check_secrets().unwrap();
    // A missing variable is refused by the daemon's check, naming the key.
    let config = Config::from_toml(
        "[daemon]\ndatabase_url_env = \"JOBD_TEST_UNSET_DATABASE_URL\"\n",
        "t",
    )
    .unwrap();
    let err = config.check_secrets().unwrap_err().to_string();
    assert!(
        err.contains("daemon.database_url_env: the environment variable JOBD_TEST_UNSET_DATABASE_URL is not set"),
        "{err}"
    );
    // A file holding something else than a URL: named, not shown.
    std::fs::write(&file, "hunter2\n").unwrap();
    let config = Config::from_toml(
        &format!("[daemon]\ndatabase_url_file = \"{}\"\n", file.display()),
        "t",
    )
    .unwrap();
    let err = config.daemon.database_target().unwrap_err();
    assert!(err.starts_with("daemon.database_url_file: "), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn bad_database_settings_are_refused_naming_the_key() {
    let cases = [
        (
            "[daemon]\ndatabase = \"postgresql://u:pw@db\"\n",
            "daemon.database: postgresql://u:***@db names no database",
        ),
        (
            "[daemon]\ndatabase = \"/x/jobs.db\"\ndatabase_url_env = \"X\"\n",
            "daemon.database and daemon.database_url_env/database_url_file: give only one",
        ),
        (
            "[daemon]\ndatabase_url_env = \"X\"\ndatabase_url_file = \"/y\"\n",
            "",
        ),
        (
            "[daemon]\nshared_data_dir = true\n",
            "daemon.shared_data_dir: only for a PostgreSQL database",
        ),
        (
            "[daemon]\ndatabase = \"postgresql://db/jobs\"\nnode = \"has space\"\n",
            "daemon.node",
        ),
    ];
    for (text, expected) in cases {
        match Config::from_toml(text, "t.toml") {
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(expected), "{text:?} gave {message}");
                assert!(!message.contains(":pw@"), "{message}");
            }
            // Both sources given: refused when the secret is read.
            Ok(config) => {
                let err = config.daemon.database_target().unwrap_err();
                assert!(err.contains("give only one"), "{text:?} gave {err}");
            }
        }
    }
}

#[test]
fn kind_overrides_apply_on_top_of_the_default_policy() {
    let config = Config::from_toml(
        "[retry]\nmax_attempts = 5\ndeadline = \"7d\"\n[kinds.http.retry]\nbase = \"2s\"\n[kinds.http]\ntimeout = \"30s\"\n",
        "t",
    )
    .unwrap();
    let http = config.policy_for("http");
    assert_eq!(http.base, Duration::from_secs(2));
    assert_eq!(http.max_attempts, 5);
    assert_eq!(http.deadline, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(config.timeout_for("http"), Duration::from_secs(30));
    assert_eq!(config.timeout_for("noop"), DEFAULT_JOB_TIMEOUT);
}

#[test]
fn every_problem_in_the_file_is_reported_each_with_its_key() {
    let text = "[daemon]\nworkers = 0\nlease = \"0s\"\nsynchronous = \"off\"\n\
        [retry]\njitter = 2.0\nmax_attempts = 0\n\
        [queues.bulk]\nconcurrency = 0\n\
        [socket]\nmax_batch = 0\n\
        [commands.report]\nprogram = \"\"\ntimeout = \"30d\"\n\
        [endpoints.e]\nbase_url = \"ftp://x\"\nburst = 0\n\
        [notify]\ncommand = \"nope\"\n\
        [web]\nactions = true\n\
        [[watch]]\npath = \"\"\nmode = \"dir\"\n";
    let err = Config::from_toml(text, "t.toml").unwrap_err();
    let ConfigError::Invalid { origin, problems } = &err else {
        panic!("not a validation error: {err}")
    };
    assert_eq!(origin, "t.toml");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "daemon.lease",
        "daemon.synchronous",
        "daemon.workers",
        "retry.max_attempts",
        "retry.jitter",
        "queues.bulk.concurrency",
        "commands.report.program",
        "commands.report.timeout",
        "endpoints.e.base_url",
        "endpoints.e.burst",
        "notify.command",
        "web",
        "socket.max_batch",
        "watch[0].path",
        "watch[0].required",
    ] {
        assert!(keys.contains(&key), "{key} missing from {err}");
    }
    let message = err.to_string();
    assert!(message.starts_with("config t.toml: "), "{message}");
    assert_eq!(
        message.matches("; ").count(),
        problems.len() - 1,
        "{message}"
    );
}

#[test]
fn every_unreadable_secret_is_reported() {
    let config = Config::from_toml(
        "[endpoints.a]\nbase_url = \"https://a\"\nauth = { type = \"bearer\", token_env = \"JOBD_TEST_UNSET_A\" }\n\
         [endpoints.b]\nbase_url_env = \"JOBD_TEST_UNSET_B\"\n\
         [endpoints.b.query_secrets]\nkey = { file = \"/nonexistent/jobd-secret\" }\n",
        "t",
    )
    .unwrap();
    let problems = config.check_secrets().unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "endpoints.a.auth.token_env",
            "endpoints.b.base_url_env",
            "endpoints.b.query_secrets.key.file"
        ],
        "{problems}"
    );
}

#[test]
fn the_usage_sender_example_is_valid() {
    std::env::set_var("USAGE_API_TOKEN", "example-token");
    let text = include_str!("../../config/examples/usage-sender.toml");
    let config = Config::from_toml(text, "usage-sender.toml").unwrap();
    config.check_secrets().unwrap();
    let policy = config.policy_for("http");
    assert_eq!(policy.max_attempts, 10);
    assert_eq!(policy.deadline, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(config.endpoints["usage"].duplicate, vec![409]);
}
