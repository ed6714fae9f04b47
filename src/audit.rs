//! The audit: published set x declared whitelist x probe results -> one finding per address.
//! A pure function of its inputs; `/metrics`, `check`'s table and its JSON all render its report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::config::{Config, Target};
use crate::discovery::SourceReport;
use crate::probe::{ProbeResult, ProbeState};
use crate::whitelist::EntryUsage;

/// What is wrong with an address, seen from the whitelist's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Published and whitelisted, but not open: the firewall or the path breaks it.
    Blocked,
    /// Published, not whitelisted, and not open: add it to the whitelist.
    Missing,
    /// Published and open, though no whitelist entry declares it.
    Undeclared,
    /// Declared for this target, but no longer published by the vendor.
    Stale,
}

impl Finding {
    /// Every finding, in the order the metrics list them.
    pub const ALL: [Self; 4] = [Self::Blocked, Self::Missing, Self::Undeclared, Self::Stale];

    /// The `finding` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Missing => "missing",
            Self::Undeclared => "undeclared",
            Self::Stale => "stale",
        }
    }

    /// What to do about it, for a person reading `check`'s output.
    pub fn action(self) -> &'static str {
        match self {
            Self::Blocked => "whitelisted but not reachable: check the firewall rule and the path",
            Self::Missing => "published but not whitelisted: add it to the whitelist",
            Self::Undeclared => "reachable although no whitelist entry declares it",
            Self::Stale => "whitelisted but no longer published: remove the entry",
        }
    }
}

/// The finding for one address. `covered` is `None` when no whitelist is declared for the target:
/// then every published address is expected to be open. An address without a probe result yet
/// gets no finding, except `stale`, which needs none.
pub fn classify(published: bool, covered: Option<bool>, state: Option<ProbeState>) -> Option<Finding> {
    if !published {
        return Some(Finding::Stale);
    }
    let open = state? == ProbeState::Open;
    match (covered.unwrap_or(true), open) {
        (true, true) => None,
        (true, false) => Some(Finding::Blocked),
        (false, false) => Some(Finding::Missing),
        (false, true) => Some(Finding::Undeclared),
    }
}

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
    /// `None` until the address was probed once.
    pub probe: Option<ProbeResult>,
    pub finding: Option<Finding>,
}

/// Address counts of one target, by set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub published: usize,
    pub probed: usize,
    pub up: usize,
    pub blocked: usize,
    pub missing: usize,
    pub undeclared: usize,
    pub stale: usize,
}

impl Counts {
    /// `(set label, count)` pairs, in the order the metrics list them.
    pub fn by_set(&self) -> [(&'static str, usize); 7] {
        [
            ("published", self.published),
            ("probed", self.probed),
            ("up", self.up),
            ("blocked", self.blocked),
            ("missing", self.missing),
            ("undeclared", self.undeclared),
            ("stale", self.stale),
        ]
    }

    /// Findings of any kind.
    pub fn findings(&self) -> usize {
        self.blocked + self.missing + self.undeclared + self.stale
    }
}

/// One target's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub port: u16,
    pub sources: Vec<SourceReport>,
    pub addresses: Vec<AddressReport>,
    pub counts: Counts,
}

/// The whole audit at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub targets: Vec<TargetReport>,
    pub whitelist_entries: Vec<EntryUsage>,
}

/// What discovery and probing know about one target, as the audit's input.
#[derive(Debug, Clone, Copy)]
pub struct TargetInput<'a> {
    pub published: &'a BTreeSet<IpAddr>,
    pub probed: &'a BTreeSet<IpAddr>,
    pub results: &'a BTreeMap<IpAddr, ProbeResult>,
}

/// Evaluates every target. `inputs` and `sources` are in the order of `config.targets`.
pub fn evaluate(config: &Config, inputs: &[TargetInput<'_>], sources: Vec<Vec<SourceReport>>) -> Report {
    let mut published_by_port: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
    let targets = config
        .targets
        .iter()
        .zip(inputs)
        .zip(sources)
        .map(|((target, input), sources)| {
            published_by_port
                .entry(target.port)
                .or_default()
                .extend(input.published);
            evaluate_target(config, target, input, sources)
        })
        .collect();
    Report {
        targets,
        whitelist_entries: config.whitelist.usage(&published_by_port),
    }
}

fn evaluate_target(
    config: &Config,
    target: &Target,
    input: &TargetInput<'_>,
    sources: Vec<SourceReport>,
) -> TargetReport {
    let mut counts = Counts {
        published: input.published.len(),
        probed: input.probed.len(),
        ..Counts::default()
    };
    let addresses = input
        .probed
        .iter()
        .map(|&ip| {
            let published = input.published.contains(&ip);
            let whitelisted = target
                .whitelist_file
                .is_some()
                .then(|| config.whitelist.covers(target, ip));
            let probe = input.results.get(&ip).cloned();
            let finding = classify(published, whitelisted, probe.as_ref().map(|p| p.state));
            if published && probe.as_ref().is_some_and(|p| p.state == ProbeState::Open) {
                counts.up += 1;
            }
            match finding {
                Some(Finding::Blocked) => counts.blocked += 1,
                Some(Finding::Missing) => counts.missing += 1,
                Some(Finding::Undeclared) => counts.undeclared += 1,
                Some(Finding::Stale) => counts.stale += 1,
                None => {}
            }
            AddressReport {
                target: target.name.clone(),
                ip,
                port: target.port,
                published,
                whitelisted,
                probe,
                finding,
            }
        })
        .collect();
    TargetReport {
        target: target.name.clone(),
        port: target.port,
        sources,
        addresses,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeState::*;

    /// The table of the foundation issue, row by row, for every probe state.
    #[test]
    fn finding_table() {
        for state in ProbeState::ALL {
            let open = state == Open;
            assert_eq!(
                classify(true, Some(true), Some(state)),
                (!open).then_some(Finding::Blocked),
                "{state:?}"
            );
            assert_eq!(
                classify(true, Some(false), Some(state)),
                Some(if open { Finding::Undeclared } else { Finding::Missing }),
                "{state:?}"
            );
            assert_eq!(
                classify(false, Some(true), Some(state)),
                Some(Finding::Stale),
                "{state:?}"
            );
        }
    }

    #[test]
    fn no_finding_before_the_first_probe_except_stale() {
        assert_eq!(classify(true, Some(true), None), None);
        assert_eq!(classify(true, Some(false), None), None);
        assert_eq!(classify(false, Some(true), None), Some(Finding::Stale));
    }

    #[test]
    fn without_a_whitelist_only_reachability_counts() {
        assert_eq!(classify(true, None, Some(Open)), None);
        assert_eq!(classify(true, None, Some(Timeout)), Some(Finding::Blocked));
    }
}
