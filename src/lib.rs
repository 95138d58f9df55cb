//! jobd: a durable job-queue worker daemon backed by one SQLite file.
//!
//! Crate map:
//! - [`job`]: the domain: jobs, states, transitions, outcomes.
//! - [`clock`]: the `Clock` every time-dependent rule asks.
//! - [`retry`]: backoff, jitter, deadlines and Retry-After.
//! - [`config`]: the TOML configuration, its defaults and validation.
//! - [`csvio`]: streaming CSV input: encodings, dialect, line numbers.
//! - [`store`]: the only module with SQL: migrations, transitions, admin queries.
//! - [`handlers`]: the job kinds (`noop`, `exec`, `http`, `notify`, `http_pull`, `relay`, `csv_import`) and their registry.
//! - [`daemon`]: dispatcher, workers, checkpointer, pipeline scheduler, signals and sd_notify.
//! - [`ingest`]: watched folders, the spool, and the enqueue socket.
//! - [`csvio`]: streaming CSV input with encodings and line numbers.
//! - [`cli`]: the `jobctl` commands, writing to any `io::Write`.
//! - [`logging`]: text, JSON or journald (`<N>`-prefixed) log lines.
//! - [`metrics`]: Prometheus text for `jobctl stats` and the daemon's textfile.
//! - [`web`]: the web page (`[web] listen`): pages, JSON API, live events, actions.

pub mod cli;
pub mod clock;
pub mod config;
pub mod csvio;
pub mod daemon;
pub mod files;
pub mod handlers;
pub mod ingest;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod retry;
pub mod store;
pub mod web;
