//! What is wrong with an address, seen from the whitelist's side, and the one rule that decides it.
//! Adding a finding is one variant and its row in [`Finding::ROWS`]; counts, metrics and the
//! table follow from the table.

use std::ops::{Index, IndexMut};

use serde::Serialize;
use serde::ser::SerializeMap;

use super::outcome::ProbeState;

/// What is wrong with an address.
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
    /// A source returned an address that is never a vendor's: not probed, reported.
    BogusAddress,
}

/// One finding's label and the action it asks for.
#[derive(Debug, Clone, Copy)]
pub struct FindingRow {
    pub finding: Finding,
    /// The `finding` and `set` label value, and the JSON key.
    pub label: &'static str,
    /// What to do about it, for a person reading `check`'s output.
    pub action: &'static str,
}

impl Finding {
    /// Every finding, in the order the metrics list them; `ROWS[f as usize].finding == f`.
    pub const ROWS: [FindingRow; 5] = [
        FindingRow {
            finding: Self::Blocked,
            label: "blocked",
            action: "published (and whitelisted, where a whitelist is declared) but not reachable: check the firewall rule and the path",
        },
        FindingRow {
            finding: Self::Missing,
            label: "missing",
            action: "published but not whitelisted: add it to the whitelist",
        },
        FindingRow {
            finding: Self::Undeclared,
            label: "undeclared",
            action: "reachable although no whitelist entry declares it",
        },
        FindingRow {
            finding: Self::Stale,
            label: "stale",
            action: "whitelisted but no longer published: remove the entry",
        },
        FindingRow {
            finding: Self::BogusAddress,
            label: "bogus_address",
            action: "a source returned an address that is never a vendor's (this host, loopback, link-local, multicast): \
                     a sinkholed or hijacked name, or a broken list; not probed",
        },
    ];

    /// Every finding.
    pub fn all() -> impl Iterator<Item = Self> {
        Self::ROWS.iter().map(|row| row.finding)
    }

    fn row(self) -> &'static FindingRow {
        &Self::ROWS[self as usize]
    }

    /// The `finding` label value.
    pub fn as_label(self) -> &'static str {
        self.row().label
    }

    /// What to do about it.
    pub fn action(self) -> &'static str {
        self.row().action
    }
}

/// The finding for one address. `covered` is `None` when no whitelist is declared for the target:
/// then every published address is expected to be open. An address without a network verdict
/// (never probed, or this host failed to probe it) gets no finding, except `stale`, which needs none.
pub fn classify(published: bool, covered: Option<bool>, state: Option<ProbeState>) -> Option<Finding> {
    if !published {
        return Some(Finding::Stale);
    }
    let state = state.filter(|s| s.is_verdict())?;
    let open = state == ProbeState::Open;
    match (covered.unwrap_or(true), open) {
        (true, true) => None,
        (true, false) => Some(Finding::Blocked),
        (false, false) => Some(Finding::Missing),
        (false, true) => Some(Finding::Undeclared),
    }
}

/// A count per finding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FindingCounts([usize; Finding::ROWS.len()]);

impl FindingCounts {
    /// `(finding, count)` pairs, in the order of [`Finding::ROWS`].
    pub fn iter(&self) -> impl Iterator<Item = (Finding, usize)> + '_ {
        Finding::all().map(|f| (f, self[f]))
    }

    /// Findings of any kind.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

impl Index<Finding> for FindingCounts {
    type Output = usize;
    fn index(&self, finding: Finding) -> &usize {
        &self.0[finding as usize]
    }
}

impl IndexMut<Finding> for FindingCounts {
    fn index_mut(&mut self, finding: Finding) -> &mut usize {
        &mut self.0[finding as usize]
    }
}

impl Serialize for FindingCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Finding::ROWS.len()))?;
        for (finding, count) in self.iter() {
            map.serialize_entry(finding.as_label(), &count)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeState::*;

    #[test]
    fn rows_are_in_variant_order() {
        for (index, row) in Finding::ROWS.iter().enumerate() {
            assert_eq!(row.finding as usize, index, "{}", row.label);
        }
    }

    /// The table of the foundation issue, row by row, for every network verdict.
    #[test]
    fn finding_table() {
        for state in ProbeState::ALL.into_iter().filter(|s| s.is_verdict()) {
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
    fn a_local_fault_is_never_blocked_or_missing() {
        assert_eq!(classify(true, Some(true), Some(Error)), None);
        assert_eq!(classify(true, Some(false), Some(Error)), None);
        assert_eq!(classify(true, None, Some(Error)), None);
        assert_eq!(classify(false, Some(true), Some(Error)), Some(Finding::Stale));
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

    #[test]
    fn counts_serialize_by_label() {
        let mut counts = FindingCounts::default();
        counts[Finding::Missing] += 2;
        counts[Finding::Stale] += 1;
        assert_eq!(counts.total(), 3);
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"blocked":0,"missing":2,"undeclared":0,"stale":1,"bogus_address":0}"#
        );
    }
}
