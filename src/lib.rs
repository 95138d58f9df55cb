//! jobd: a durable job-queue worker daemon backed by one SQLite file.
//!
//! Crate map:
//! - [`job`]: the domain: jobs, states, transitions, outcomes.
//! - [`clock`]: the `Clock` every time-dependent rule asks.
//! - [`retry`]: backoff, jitter, deadlines and Retry-After.
//! - [`config`]: the TOML configuration: composes the sections (each kind's beside its handler), every problem reported with its key.
//! - [`csvio`]: streaming CSV input: encodings, dialect, line numbers.
//! - [`dburl`]: the queue database named by path (SQLite) or URL (PostgreSQL), password masked.
//! - [`flow`]: flow control per destination: routes, token buckets, holds (pure rules).
//! - [`store`]: the only module with SQL: migrations, transitions, admin queries.
//! - [`handlers`]: the job kinds (`noop`, `exec`, `http`, `notify`, `http_pull`, `relay`, `csv_import`, `oneroster`) and their registry.
//! - [`daemon`]: dispatcher, workers, checkpointer, pipeline scheduler, signals and sd_notify.
//! - [`ingest`]: watched folders, the spool, and the enqueue socket.
//! - [`cli`]: the `jobctl` commands, writing to any `io::Write`.
//! - [`present`]: jobctl's human output: relative times, short durations, colour, fitted tables.
//! - [`top`]: `jobctl top`, the live terminal view (ratatui), or one snapshot when piped.
//! - [`manual`]: jobctl's examples, shell completions and man pages.
//! - [`logging`]: text, JSON or journald (`<N>`-prefixed) log lines, control characters escaped.
//! - [`paths`]: the folders files named in payloads must be in.
//! - [`files`]: files the daemon writes: private modes, atomic writes, sidecar names, SHA-256.
//! - [`metrics`]: Prometheus text for `jobctl stats` and the daemon's textfile.
//! - [`safe_text`]: database text escaped and bounded for the terminal.
//! - [`web`]: the web page (`[web] listen`): pages, JSON API, live events, actions.

pub mod cli;
pub mod clock;
pub mod config;
pub mod csvio;
pub mod daemon;
pub mod dburl;
pub mod files;
pub mod flow;
pub mod handlers;
pub mod ingest;
pub mod job;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod paths;
pub mod present;
pub mod retry;
pub mod safe_text;
pub mod store;
pub mod top;
pub mod web;
