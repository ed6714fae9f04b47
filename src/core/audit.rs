//! The audit: published set x declared whitelist x probe results -> one finding per address.
//! A pure function of its inputs; `/metrics`, `check`'s table and its JSON all render its report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;

use super::client_odds::{self, ClientSuccess};
use super::diagnosis::Diagnosis;
use super::event::{ChangeCause, Since};
use super::finding::{Finding, FindingCounts, classify};
use super::outcome::{LocalFault, ProbeResult, ProbeState};
use super::session::SessionReport;
use super::source::{Bogus, SourceReport};
use super::ssh::{SshEvidence, SshReport, count_variants};
use crate::config::whitelist::EntryUsage;
use crate::config::{CheckKind, Config, Target};
use crate::prefix::PrefixIndex;

/// The addresses probed for a target: everything published, plus the single addresses of the
/// whitelist entries that belong to it, so a stale entry is checked too.
pub fn probed_set(config: &Config, target: &Target, published: &BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
    let mut probed = published.clone();
    probed.extend(config.whitelist.declared_hosts(target));
    probed
}

/// One probed address of one target, with everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddressReport {
    pub target: String,
    pub ip: IpAddr,
    pub port: u16,
    pub published: bool,
    /// `None` when no whitelist is declared for the target.
    pub whitelisted: Option<bool>,
    /// `None` until the address was probed once, and for a bogus address.
    pub probe: Option<ProbeResult>,
    pub finding: Option<Finding>,
    /// Set for an address a source returned that is never a vendor's: never probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bogus: Option<Bogus>,
    /// What the SSH handshake means for the configured clients and keys (open `ssh` addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Arc<SshReport>>,
    /// How the session checks (idle hold, login, SFTP) last ended on this address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionReport>,
    /// The sources that publish it (`dns`, `static`, a list's URL); empty when none does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub published_by: Vec<Arc<str>>,
    /// Since when its state and finding hold, and its last change: from the daemon's history
    /// (`None` until it was observed once, and in `check` without a daemon's state directory).
    #[serde(flatten)]
    pub since: Option<Since>,
    /// The side the address's last change is attributed to (kept while the address is in
    /// `error` or not probed again yet: the change it names still stands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_cause: Option<Arc<ChangeCause>>,
    /// Where it fails, from raw packets: shown while the address is still in the state it explains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Arc<Diagnosis>>,
}

impl AddressReport {
    /// What a client's odds need to know of this address.
    fn odds_view(&self) -> client_odds::Address<'_> {
        client_odds::Address {
            published: self.published,
            published_by: &self.published_by,
            bogus_source: self.bogus.map(|b| b.source),
            state: self.probe.as_ref().map(|p| p.state),
            ssh_problems: self.ssh.as_ref().map_or(&[], |s| &s.problems),
        }
    }
}

/// Address counts of one target, by set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub published: usize,
    pub probed: usize,
    /// Published addresses whose last probe ended open.
    pub up: usize,
    /// Published addresses whose last probe this host failed to make: neither up nor down.
    pub error: usize,
    #[serde(flatten)]
    pub findings: FindingCounts,
}

impl Counts {
    /// `(set label, count)` pairs, in the order the metrics list them.
    pub fn by_set(&self) -> Vec<(&'static str, usize)> {
        let mut sets = vec![
            ("published", self.published),
            ("probed", self.probed),
            ("up", self.up),
            ("error", self.error),
        ];
        sets.extend(self.findings.iter().map(|(f, n)| (f.as_label(), n)));
        sets
    }
}

/// A published prefix (not a single address) of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrefixReport {
    pub prefix: IpNet,
    /// Whether its addresses are probed; larger prefixes are audited only.
    pub probed: bool,
    /// The parts no whitelist entry covers: `missing` from the whitelist. Empty when fully
    /// covered, or when the target has no whitelist.
    pub uncovered: Vec<IpNet>,
    /// The sources that publish it.
    pub published_by: Vec<Arc<str>>,
}

/// One target's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub port: u16,
    pub sources: Vec<SourceReport>,
    pub addresses: Vec<AddressReport>,
    pub prefixes: Vec<PrefixReport>,
    pub counts: Counts,
    /// Items added to and removed from the published set since start.
    pub changes: (u64, u64),
    /// Probes this host failed to make since start, by reason (every reason, zeros included).
    pub probe_errors: Vec<(LocalFault, u64)>,
    /// `check: ssh` targets: how many different servers (host key and algorithms) its open
    /// addresses show; more than one is an inconsistent pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_variants: Option<usize>,
    /// The chance that a client connecting by name succeeds within 1 and within
    /// `client_attempts` attempts; empty when no address a client would pick has a verdict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_success: Vec<ClientSuccess>,
}

/// The whole audit at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub targets: Vec<TargetReport>,
    pub whitelist_entries: Vec<EntryUsage>,
}

/// Which sources (indices into a target's sources) publish each address and prefix.
#[derive(Debug, Clone, Default)]
pub struct PublishedBy {
    pub addresses: BTreeMap<IpAddr, Vec<usize>>,
    pub prefixes: BTreeMap<IpNet, Vec<usize>>,
}

/// What discovery and probing know about one target, as the audit's input.
#[derive(Debug, Clone, Copy)]
pub struct TargetInput<'a> {
    /// Published single addresses, including those of prefixes small enough to probe.
    pub published: &'a BTreeSet<IpAddr>,
    /// Published prefixes longer than one address, probed or not.
    pub prefixes: &'a BTreeSet<IpNet>,
    /// Published prefixes too large to probe: audited only.
    pub unprobed: &'a BTreeSet<IpNet>,
    pub probed: &'a BTreeSet<IpAddr>,
    pub results: &'a BTreeMap<IpAddr, ProbeResult>,
    /// Items added to and removed from the published set since start.
    pub changes: (u64, u64),
    /// Probes this host failed to make since start, by reason.
    pub probe_errors: &'a BTreeMap<LocalFault, u64>,
    /// Addresses sources returned that are never a vendor's: reported, not probed.
    pub bogus: &'a BTreeMap<IpAddr, Bogus>,
    /// The SSH assessment of each open address of an `ssh` target.
    pub ssh: &'a BTreeMap<IpAddr, Arc<SshReport>>,
    /// The session checks of each address that had one.
    pub sessions: &'a BTreeMap<IpAddr, SessionReport>,
    /// Which sources (indices into the target's sources) publish each address and prefix.
    pub published_by: &'a PublishedBy,
    /// The raw diagnosis of each address that failed since raw probes ran.
    pub diagnoses: &'a BTreeMap<IpAddr, Arc<Diagnosis>>,
}

/// Evaluates every target. `inputs` and `sources` are in the order of `config.targets`.
pub fn evaluate(config: &Config, inputs: &[TargetInput<'_>], sources: Vec<Vec<SourceReport>>) -> Report {
    let mut published_by_port: BTreeMap<u16, PrefixIndex> = BTreeMap::new();
    let targets = config
        .targets
        .iter()
        .enumerate()
        .zip(inputs)
        .zip(sources)
        .map(|(((index, target), input), sources)| {
            let published = published_by_port.entry(target.port).or_default();
            input.published.iter().for_each(|ip| published.insert(IpNet::from(*ip)));
            input.prefixes.iter().for_each(|prefix| published.insert(*prefix));
            evaluate_target(target, &config.coverage[index], input, sources)
        })
        .collect();
    Report {
        targets,
        whitelist_entries: config.whitelist.usage(&published_by_port),
    }
}

/// The names at `indices`.
fn pick(names: &[Arc<str>], indices: Option<&Vec<usize>>) -> Vec<Arc<str>> {
    indices
        .into_iter()
        .flatten()
        .filter_map(|&i| names.get(i).cloned())
        .collect()
}

/// An address a source returned that is never a vendor's: reported, never probed.
fn bogus_report(target: &Target, ip: IpAddr, bogus: Bogus) -> AddressReport {
    AddressReport {
        target: target.name.clone(),
        ip,
        port: target.port,
        // Returned by a source, but never part of the published set.
        published: false,
        whitelisted: None,
        probe: None,
        finding: Some(Finding::BogusAddress),
        bogus: Some(bogus),
        ssh: None,
        session: None,
        published_by: Vec::new(),
        since: None,
        change_cause: None,
        diagnosis: None,
    }
}

fn evaluate_target(
    target: &Target,
    coverage: &PrefixIndex,
    input: &TargetInput<'_>,
    sources: Vec<SourceReport>,
) -> TargetReport {
    let declared = target.whitelist_source.is_some();
    let names: Vec<Arc<str>> = sources.iter().map(|s| Arc::from(s.name())).collect();
    let mut counts = Counts {
        published: input.published.len(),
        probed: input.probed.len(),
        ..Counts::default()
    };
    let addresses: Vec<AddressReport> = input
        .probed
        .iter()
        .map(|&ip| {
            let published = input.published.contains(&ip);
            let whitelisted = declared.then(|| coverage.covers_address(ip));
            let probe = input.results.get(&ip).cloned();
            let finding = classify(published, whitelisted, probe.as_ref().map(|p| p.state));
            match probe.as_ref().map(|p| p.state) {
                Some(ProbeState::Open) if published => counts.up += 1,
                Some(ProbeState::Error) if published => counts.error += 1,
                _ => {}
            }
            if let Some(finding) = finding {
                counts.findings[finding] += 1;
            }
            AddressReport {
                target: target.name.clone(),
                ip,
                port: target.port,
                published,
                whitelisted,
                ssh: input.ssh.get(&ip).cloned(),
                // Shown while the address is open only: a verdict about an address now down would
                // outlive its truth (it cannot be checked again). Not finished yet: nothing to show.
                session: input
                    .sessions
                    .get(&ip)
                    .filter(|s| s.idle.is_some() || s.login.is_some())
                    .filter(|_| probe.as_ref().is_some_and(|p| p.state == ProbeState::Open))
                    .cloned(),
                diagnosis: input
                    .diagnoses
                    .get(&ip)
                    .filter(|d| probe.as_ref().is_some_and(|p| p.state == d.state))
                    .cloned(),
                probe,
                finding,
                bogus: None,
                published_by: pick(&names, input.published_by.addresses.get(&ip)),
                since: None,
                change_cause: None,
            }
        })
        .chain(input.bogus.iter().map(|(&ip, &bogus)| bogus_report(target, ip, bogus)))
        .collect();
    counts.findings[Finding::BogusAddress] += input.bogus.len();
    let prefixes = input
        .prefixes
        .iter()
        .map(|&prefix| PrefixReport {
            prefix,
            probed: !input.unprobed.contains(&prefix),
            uncovered: if declared {
                coverage.uncovered(prefix)
            } else {
                Vec::new()
            },
            published_by: pick(&names, input.published_by.prefixes.get(&prefix)),
        })
        .collect();
    let ssh_variants = (target.check == CheckKind::Ssh).then(|| {
        count_variants(
            addresses
                .iter()
                .filter_map(|a| a.probe.as_ref().filter(|p| p.state == ProbeState::Open))
                .filter_map(|p| p.evidence_as::<SshEvidence>()),
        )
    });
    TargetReport {
        target: target.name.clone(),
        port: target.port,
        ssh_variants,
        client_success: client_odds::of_target(
            &addresses.iter().map(AddressReport::odds_view).collect::<Vec<_>>(),
            target.client_attempts,
        ),
        sources,
        addresses,
        prefixes,
        counts,
        changes: input.changes,
        probe_errors: LocalFault::ALL
            .iter()
            .map(|fault| (*fault, input.probe_errors.get(fault).copied().unwrap_or(0)))
            .collect(),
    }
}
