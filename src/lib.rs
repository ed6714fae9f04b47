//! whitelist-audit: resolves every published address of a vendor's service, probes each one,
//! diffs the result against the declared firewall whitelist and exports one set of metrics per
//! address. `main.rs` is a thin CLI over this library so `tests/` can drive it.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod probe;
pub mod state;
pub mod whitelist;
