//! The change request for the firewall team, from the audit's report: which address/port pairs
//! to add, which are whitelisted but blocked (with the evidence), which entries to remove. Pure;
//! `output::request` renders it as text, YAML, nftables, iptables or CSV.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;

use super::audit::{AddressReport, Report};
use super::finding::Finding;
use super::ssh::unix_seconds;
use crate::config::BroadEntryPrefix;
use crate::prefix::prefix_label;

/// An address or prefix to let through on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Addition {
    pub target: String,
    /// A host prefix for a single address.
    pub prefix: IpNet,
    pub port: u16,
    /// The sources that publish it.
    pub published_by: Vec<Arc<str>>,
    /// Since when the address has this finding, when the history knows.
    #[serde(serialize_with = "optional_unix_seconds")]
    pub since: Option<SystemTime>,
    /// The last probe's state (`refused`, `timeout`, ... for a missing address, `open` for an
    /// undeclared one); `None` for a prefix.
    pub state: Option<&'static str>,
}

/// A whitelisted, published address that is not reachable: the firewall team's to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub target: String,
    pub ip: IpAddr,
    pub port: u16,
    pub published_by: Vec<Arc<str>>,
    pub state: &'static str,
    /// What the probe saw.
    pub evidence: String,
    #[serde(serialize_with = "optional_unix_seconds")]
    pub since: Option<SystemTime>,
}

/// Why an entry should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// A single address declared for a target that the vendor no longer publishes.
    Stale,
    /// An entry that covers no published address of any audited target on that port.
    Unused,
}

/// A whitelist entry (on one of its ports) to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// The entry as the `entry` label writes it.
    pub entry: String,
    pub port: u16,
    pub reason: RemovalReason,
    /// The target it was declared for (stale entries).
    pub target: Option<String>,
    /// Where the entry is written: `file:line (comment)`.
    pub declared_at: Vec<Arc<str>>,
    #[serde(serialize_with = "optional_unix_seconds")]
    pub since: Option<SystemTime>,
}

/// A published address the audit could not judge: not probed yet, or this host failed to probe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unknown {
    pub target: String,
    pub ip: IpAddr,
    pub port: u16,
    pub why: String,
}

/// Everything the firewall team is asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeRequest {
    /// Published, not whitelisted, not reachable: a rule and a whitelist entry are missing.
    pub add: Vec<Addition>,
    /// Like `add`, but broader than `global.broad_entry_prefix`: a person decides, no rule is
    /// written for it (a vendor list, or a hijacked one, could otherwise open the world).
    pub review: Vec<Addition>,
    /// Published and reachable, but no whitelist entry declares it: the whitelist file lags the
    /// firewall.
    pub declare: Vec<Addition>,
    /// Whitelisted and published, but not reachable from here.
    pub blocked: Vec<Blocked>,
    pub remove: Vec<Removal>,
    /// Addresses nothing can be said of yet: the request is incomplete while there are any.
    pub unknown: Vec<Unknown>,
    /// Why no removal is proposed, when one of the targets' sources is failing (or not
    /// refreshed yet): an address missing from a failed source would look stale.
    pub removals_withheld: Vec<String>,
}

impl ChangeRequest {
    /// Whether nothing is asked and nothing is unknown.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.review.is_empty()
            && self.declare.is_empty()
            && self.blocked.is_empty()
            && self.remove.is_empty()
            && self.unknown.is_empty()
    }

    /// What `report` asks of the firewall team; additions broader than `broad` go to review.
    pub fn of(report: &Report, broad: BroadEntryPrefix) -> Self {
        let mut request = Self::default();
        for target in &report.targets {
            for source in target.sources.iter().filter(|s| s.up != Some(true)) {
                request.removals_withheld.push(format!(
                    "{} {}: {}",
                    target.target,
                    source.name(),
                    match source.up {
                        Some(false) => "failing, so an address it lacks may only look stale",
                        _ => "not refreshed yet",
                    }
                ));
            }
            for address in &target.addresses {
                request.take(address);
            }
            for prefix in &target.prefixes {
                for part in &prefix.uncovered {
                    let addition = Addition {
                        target: target.target.clone(),
                        prefix: *part,
                        port: target.port,
                        published_by: prefix.published_by.clone(),
                        since: None,
                        state: None,
                    };
                    if broad.is_broad(part) {
                        request.review.push(addition);
                    } else {
                        request.add.push(addition);
                    }
                }
            }
        }
        // An entry is proposed for removal only when it covers nothing published on a port some
        // target audits: a whitelist file may serve other traffic too, and a stale address of one
        // target may be another's.
        let audited_ports: BTreeSet<u16> = report.targets.iter().map(|t| t.port).collect();
        let unused: BTreeSet<(&str, u16)> = report
            .whitelist_entries
            .iter()
            .filter(|u| u.unused && audited_ports.contains(&u.port))
            .map(|u| (u.entry.as_str(), u.port))
            .collect();
        request.remove.retain(|r| unused.contains(&(r.entry.as_str(), r.port)));
        let declared: BTreeMap<(&str, u16), &Arc<[Arc<str>]>> = report
            .whitelist_entries
            .iter()
            .map(|u| ((u.entry.as_str(), u.port), &u.declared_at))
            .collect();
        let stale: BTreeSet<(String, u16)> = request.remove.iter().map(|r| (r.entry.clone(), r.port)).collect();
        for (entry, port) in unused {
            if !stale.contains(&(entry.to_string(), port)) {
                request.remove.push(Removal {
                    entry: entry.to_string(),
                    port,
                    reason: RemovalReason::Unused,
                    target: None,
                    declared_at: Vec::new(),
                    since: None,
                });
            }
        }
        for removal in &mut request.remove {
            if let Some(at) = declared.get(&(removal.entry.as_str(), removal.port)) {
                removal.declared_at = at.to_vec();
            }
        }
        // An address inside a prefix part that is added whole needs no line of its own.
        let parts: Vec<(String, u16, IpNet)> = request
            .add
            .iter()
            .filter(|a| a.prefix.prefix_len() < a.prefix.max_prefix_len())
            .map(|a| (a.target.clone(), a.port, a.prefix))
            .collect();
        request.add.retain(|a| {
            a.prefix.prefix_len() < a.prefix.max_prefix_len()
                || !parts
                    .iter()
                    .any(|(t, p, part)| *t == a.target && *p == a.port && part.contains(&a.prefix))
        });
        if !request.removals_withheld.is_empty() {
            request.remove.clear();
        }
        request
    }

    fn take(&mut self, address: &AddressReport) {
        let finding_since = address.since.as_ref().map(|s| s.finding);
        let state = address.probe.as_ref().map(|p| p.state.as_label());
        let judged = address.probe.as_ref().is_some_and(|p| p.state.is_verdict());
        match address.finding {
            _ if !judged && address.bogus.is_none() => self.unknown.push(Unknown {
                target: address.target.clone(),
                ip: address.ip,
                port: address.port,
                why: address.probe.as_ref().map_or_else(
                    || "not probed yet".to_string(),
                    |p| format!("this host failed to probe it: {}", p.describe()),
                ),
            }),
            Some(Finding::Missing) => self.add.push(addition(address, finding_since, state)),
            Some(Finding::Undeclared) => self.declare.push(addition(address, finding_since, state)),
            Some(Finding::Blocked) => self.blocked.push(Blocked {
                target: address.target.clone(),
                ip: address.ip,
                port: address.port,
                published_by: address.published_by.clone(),
                state: state.unwrap_or("not probed"),
                evidence: address
                    .probe
                    .as_ref()
                    .map(super::outcome::ProbeResult::describe)
                    .unwrap_or_default(),
                since: finding_since,
            }),
            Some(Finding::Stale) => self.remove.push(Removal {
                entry: prefix_label(&IpNet::from(address.ip)),
                port: address.port,
                reason: RemovalReason::Stale,
                target: Some(address.target.clone()),
                declared_at: Vec::new(),
                since: finding_since,
            }),
            Some(Finding::BogusAddress) | None => {}
        }
    }
}

fn addition(address: &AddressReport, since: Option<SystemTime>, state: Option<&'static str>) -> Addition {
    Addition {
        target: address.target.clone(),
        prefix: IpNet::from(address.ip),
        port: address.port,
        published_by: address.published_by.clone(),
        since,
        state,
    }
}

#[allow(clippy::ref_option)] // serde's serialize_with hands a reference to the field
fn optional_unix_seconds<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => unix_seconds::serialize(at, s),
        None => s.serialize_none(),
    }
}
