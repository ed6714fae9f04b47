//! whitelist-audit: resolves every published address of a vendor's service, probes each one,
//! diffs the result against the declared firewall whitelist and exports one set of metrics per
//! address. `main.rs` is a thin CLI over this library so `tests/` can drive it.
//!
//! Layers, each importing only those above it (docs/architecture.md): `prefix`, `config`, `core`
//! (pure); `probe` and `discovery` (sockets); `metrics`, `output`, `http` (render snapshots);
//! `app` (the scheduler); `cli`.

pub mod app;
pub mod change_request;
pub mod cli;
pub mod config;
pub mod core;
pub mod demo;
pub mod discovery;
pub mod history_log;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod page;
pub mod prefix;
pub mod probe;
pub mod state_file;
