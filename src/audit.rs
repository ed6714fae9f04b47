//! The audit: published set x declared whitelist x probe results -> one finding per address.
//! A pure function of its inputs; `/metrics`, `check`'s table and its JSON all render its report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::config::{Config, Target};
use crate::discovery::SourceReport;
use ipnet::IpNet;

use crate::probe::{ProbeResult, ProbeState};
use crate::whitelist::{EntryUsage, PrefixIndex};

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

/// A published prefix (not a single address) of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrefixReport {
    pub prefix: IpNet,
    /// Whether its addresses are probed; larger prefixes are audited only.
    pub probed: bool,
    /// The parts no whitelist entry covers: `missing` from the whitelist. Empty when fully
    /// covered, or when the target has no whitelist.
    pub uncovered: Vec<IpNet>,
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

fn evaluate_target(
    target: &Target,
    coverage: &PrefixIndex,
    input: &TargetInput<'_>,
    sources: Vec<SourceReport>,
) -> TargetReport {
    let declared = target.whitelist_file.is_some();
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
            let whitelisted = declared.then(|| coverage.covers_address(ip));
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
        })
        .collect();
    TargetReport {
        target: target.name.clone(),
        port: target.port,
        sources,
        addresses,
        prefixes,
        counts,
        changes: input.changes,
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
