//! Integration tests, compiled into one binary to keep link time down. They use real
//! SQLite files, the real `jobd` and `jobctl` binaries, real signals and temp dirs.

mod common;
mod csv;
mod daemon;
mod example_db;
mod exec;
mod http;
mod http_server;
mod ingest;
mod jobctl;
mod oneroster;
mod pull;
mod relay;
mod service;
mod socket;
mod store;
mod usage_sender;
mod web;
mod web_browser;
