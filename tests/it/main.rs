//! Integration tests, compiled into one binary to keep link time down. They use real
//! SQLite files, the real `jobd` and `jobctl` binaries, real signals and temp dirs.

mod common;
mod crash_charges;
mod csv;
mod daemon;
mod daemon_edges;
mod docs;
mod entry_checks;
mod example_db;
mod exec;
mod flow;
mod http;
mod http_server;
mod ingest;
mod jobctl;
mod jobctl_file;
mod jobctl_ops;
mod jobctl_pg;
mod jobctl_top;
mod oneroster;
mod outside_sql;
mod payload_paths;
mod pg;
mod pg_cluster;
mod pull;
mod relay;
mod service;
mod socket;
mod store;
mod usage_sender;
mod watch_edges;
mod web;
mod web_browser;
mod web_pg;
