//! The functional core: plain data and pure functions, no I/O. Probe outcomes, findings, source
//! health, the DNS retention book, list acceptance, the audit, a client's odds of connecting by
//! name, and the state with its snapshot.
//! The shell (`probe`, `discovery`, `app`, `http`, `metrics`) imports this; this imports only
//! `config` and `prefix`. `tests/architecture.rs` holds the rule.

pub mod audit;
pub mod cause;
pub mod client_odds;
pub mod diagnosis;
pub mod dns_book;
pub mod event;
pub mod finding;
pub mod history;
pub mod list;
pub mod outcome;
pub mod request;
pub mod session;
pub mod source;
pub mod ssh;
pub mod state;
