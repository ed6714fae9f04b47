//! Where a target's addresses come from, as data: the kind of each source, its health, and why a
//! refresh failed. Every source keeps its last good set when a refresh fails and says so here.

use std::time::SystemTime;

use serde::Serialize;

use super::dns_book::Family;

/// The kind of an address source: the `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A and AAAA answers for the target's host.
    Dns,
    /// Addresses listed under `static` in the configuration.
    Static,
    /// A vendor's published list (`published:`), one source per URL.
    Published,
}

impl SourceKind {
    /// The `source` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Static => "static",
            Self::Published => "published",
        }
    }
}

/// An address a source returned that is never a vendor's service: probing it would reach this
/// host or nothing at all, so it is reported, not probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bogus {
    /// The source that returned it.
    pub source: SourceKind,
    /// What kind of address it is, in words.
    pub why: &'static str,
}

/// Why `ip` can never be a vendor's address, if it cannot: unspecified (`0.0.0.0`, `::`: a
/// connection reaches this host), "this network" (0.0.0.0/8), broadcast, multicast, link-local
/// and, unless `allow_local`, loopback. A sinkholed or hijacked name answers with these.
pub fn never_a_vendor(ip: std::net::IpAddr, allow_local: bool) -> Option<&'static str> {
    use crate::prefix::SpecialAddress as S;
    match crate::prefix::special_address(ip)? {
        S::Unspecified | S::ThisNetwork => Some("unspecified: a connection reaches this host"),
        S::Broadcast => Some("broadcast"),
        S::Multicast => Some("multicast"),
        S::LinkLocal => Some("link-local"),
        S::Loopback if allow_local => None,
        S::Loopback => Some("loopback: this host (set allow_local_addresses if it is a tunnel or a lab)"),
    }
}

/// Why a refresh failed: the bounded `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Timeout,
    Connect,
    Redirect,
    HttpStatus,
    TooLarge,
    Read,
    Parse,
    Empty,
    TooMany,
    TooBroad,
    StateCorrupt,
    /// A DNS failure, labelled with hickory's own bounded metrics label (`proto`,
    /// `dns_response_code_servfail`, ...), or `config` when the resolver could not be built.
    Dns(&'static str),
}

impl Reason {
    /// The `reason` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Redirect => "redirect",
            Self::HttpStatus => "http_status",
            Self::TooLarge => "too_large",
            Self::Read => "read",
            Self::Parse => "parse",
            Self::Empty => "empty",
            Self::TooMany => "too_many",
            Self::TooBroad => "too_broad",
            Self::StateCorrupt => "state_corrupt",
            Self::Dns(label) => label,
        }
    }
}

/// A failed refresh: the reason label and what happened, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    /// A failure for `reason`, described by `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Health of one source of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Whether the last refresh succeeded; `None` before the first one.
    pub up: Option<bool>,
    pub last_success: Option<SystemTime>,
    /// Why the last refresh failed, when it did.
    pub last_error: Option<String>,
    /// Failed refreshes since start, by reason.
    pub failures: std::collections::BTreeMap<Reason, u64>,
}

impl SourceStatus {
    /// Records a successful refresh.
    pub fn succeeded(&mut self, now: SystemTime) {
        self.up = Some(true);
        self.last_success = Some(now);
        self.last_error = None;
    }

    /// Records a failed refresh; the source's data stays as it was.
    pub fn failed(&mut self, failure: &Failure) {
        self.up = Some(false);
        self.last_error = Some(failure.message.clone());
        *self.failures.entry(failure.reason).or_default() += 1;
    }
}

/// One source of one target, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    pub source: SourceKind,
    /// For `published`: the list's URL, without credentials.
    pub url: Option<String>,
    pub up: Option<bool>,
    pub addresses: usize,
    #[serde(serialize_with = "as_unix_seconds")]
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Failed refreshes since start, by reason.
    #[serde(serialize_with = "failures_by_label")]
    pub failures: Vec<(Reason, u64)>,
    /// For DNS: whether each family asked (A, AAAA) answered at its last refresh.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<(Family, bool)>,
}

impl SourceReport {
    /// How a person names the source: its URL, or its kind.
    pub fn name(&self) -> &str {
        self.url.as_deref().unwrap_or(self.source.as_label())
    }
}

fn failures_by_label<S: serde::Serializer>(failures: &[(Reason, u64)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(failures.iter().map(|(reason, n)| (reason.as_label(), n)))
}

#[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<T>`
fn as_unix_seconds<S: serde::Serializer>(time: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => serializer.serialize_some(&unix_seconds(*t)),
        None => serializer.serialize_none(),
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are.
pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::never_a_vendor;

    #[test]
    fn addresses_that_are_never_a_vendors() {
        let why = |text: &str, local| never_a_vendor(text.parse().unwrap(), local);
        for bogus in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
            "169.254.1.1",
            "fe80::1",
        ] {
            assert!(why(bogus, true).is_some(), "{bogus}");
        }
        assert!(why("127.0.0.1", false).is_some());
        assert!(why("::1", false).is_some());
        assert_eq!(why("127.0.0.1", true), None, "a lab or a tunnel, on purpose");
        for vendor in ["192.0.2.1", "198.51.100.7", "2001:db8::1", "10.0.0.1"] {
            assert_eq!(why(vendor, false), None, "{vendor}");
        }
    }
}
