//! The declared whitelist: which (address, port) pairs the firewall team says are open, and the
//! questions the audit asks of it. Pure data and functions, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;

use crate::config::Target;

/// One address or CIDR of an `allow[].addresses` list, with the ports of its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub prefix: IpNet,
    /// Sorted, without duplicates.
    pub ports: Vec<u16>,
    /// The targets this entry belongs to: its `target:` tag, or the targets whose own file it is in.
    pub belongs_to: Vec<String>,
    /// The `target:` tag as written.
    pub tagged: Option<String>,
    pub comment: Option<String>,
    /// Index into [`Whitelist::files`].
    pub file: usize,
    /// Line of the address in its file.
    pub line: u64,
}

impl Entry {
    /// The canonical text used as the `entry` label: a bare address for a host prefix, else the
    /// prefix (IPv6 in RFC 5952 form).
    pub fn label(&self) -> String {
        prefix_label(&self.prefix)
    }

    fn is_host(&self) -> bool {
        self.prefix.prefix_len() == self.prefix.max_prefix_len()
    }

    fn applies_to(&self, target: &Target) -> bool {
        Some(self.file) == target.whitelist_file || self.tagged.as_deref() == Some(target.name.as_str())
    }
}

/// Canonical text of a prefix: a bare address for /32 and /128.
pub fn prefix_label(prefix: &IpNet) -> String {
    if prefix.prefix_len() == prefix.max_prefix_len() {
        prefix.addr().to_string()
    } else {
        prefix.to_string()
    }
}

/// A set of IPv4 and IPv6 prefixes answering containment questions in logarithmic time, so a
/// diff of 100,000 published prefixes against 10,000 entries takes milliseconds.
#[derive(Debug, Clone, Default)]
pub struct PrefixIndex {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
}

impl PrefixIndex {
    /// An index of `prefixes`.
    pub fn new(prefixes: impl IntoIterator<Item = IpNet>) -> Self {
        let mut index = Self::default();
        for prefix in prefixes {
            index.insert(prefix);
        }
        index
    }

    /// Adds a prefix.
    pub fn insert(&mut self, prefix: IpNet) {
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.insert(p),
            IpNet::V6(p) => self.v6.insert(p),
        };
    }

    /// Whether some member contains `ip`.
    pub fn covers_address(&self, ip: IpAddr) -> bool {
        self.covers_prefix(IpNet::from(ip))
    }

    /// Whether every address of `prefix` is inside the members, together (two /25s cover a /24).
    pub fn covers_prefix(&self, prefix: IpNet) -> bool {
        match prefix {
            IpNet::V4(p) => self.v4.is_covered_in_aggregate(&p),
            IpNet::V6(p) => self.v6.is_covered_in_aggregate(&p),
        }
    }

    /// Whether `prefix` and the members share at least one address.
    pub fn overlaps(&self, prefix: IpNet) -> bool {
        match prefix {
            IpNet::V4(p) => self.v4.is_covered(&p) || self.v4.children(&p).next().is_some(),
            IpNet::V6(p) => self.v6.is_covered(&p) || self.v6.children(&p).next().is_some(),
        }
    }

    /// The parts of `prefix` no member covers, as the fewest prefixes.
    pub fn uncovered(&self, prefix: IpNet) -> Vec<IpNet> {
        let mut out = Vec::new();
        self.collect_uncovered(prefix, &mut out);
        out
    }

    fn collect_uncovered(&self, prefix: IpNet, out: &mut Vec<IpNet>) {
        if self.covers_prefix(prefix) {
            return;
        }
        let has_members_inside = match prefix {
            IpNet::V4(p) => self.v4.children(&p).next().is_some(),
            IpNet::V6(p) => self.v6.children(&p).next().is_some(),
        };
        // Only halves that hold a member are split further: the work is bounded by the members
        // inside `prefix` times its length, whatever its size.
        match prefix.subnets(prefix.prefix_len() + 1) {
            Ok(mut halves) if has_members_inside => {
                for half in halves.by_ref() {
                    self.collect_uncovered(half, out);
                }
            }
            _ => out.push(prefix),
        }
    }
}

/// Every declared entry of every whitelist file the configuration names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whitelist {
    pub files: Vec<PathBuf>,
    pub entries: Vec<Entry>,
}

/// One (entry, port) pair and whether any published address uses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct EntryUsage {
    pub entry: String,
    pub port: u16,
    pub unused: bool,
}

impl Whitelist {
    /// Builds the whitelist from its files and their entries.
    pub fn new(files: Vec<PathBuf>, entries: Vec<Entry>) -> Self {
        Self { files, entries }
    }

    /// The prefixes that let `target`'s traffic through on its port, as declared.
    pub fn coverage(&self, target: &Target) -> PrefixIndex {
        PrefixIndex::new(
            self.entries
                .iter()
                .filter(|e| e.applies_to(target) && e.ports.binary_search(&target.port).is_ok())
                .map(|e| e.prefix),
        )
    }

    /// Whether the firewall, as declared, lets `target`'s traffic to `ip` on its port through.
    pub fn covers(&self, target: &Target, ip: IpAddr) -> bool {
        self.coverage(target).covers_address(ip)
    }

    /// The single addresses of entries that belong to `target` and cover its port: the audit probes
    /// them even when the vendor no longer publishes them, so a stale entry is seen.
    pub fn declared_hosts(&self, target: &Target) -> BTreeSet<IpAddr> {
        self.entries
            .iter()
            .filter(|e| {
                e.is_host() && e.belongs_to.contains(&target.name) && e.ports.binary_search(&target.port).is_ok()
            })
            .map(|e| e.prefix.addr())
            .collect()
    }

    /// For every (entry, port), whether it covers no published address or prefix of any target on
    /// that port. `published` maps each port to what the targets probing that port publish.
    pub fn usage(&self, published: &BTreeMap<u16, PrefixIndex>) -> Vec<EntryUsage> {
        let mut usage: BTreeMap<(String, u16), bool> = BTreeMap::new();
        for entry in &self.entries {
            for &port in &entry.ports {
                let used = published.get(&port).is_some_and(|index| index.overlaps(entry.prefix));
                // The value depends only on (prefix, port), so duplicates across files agree.
                usage.insert((entry.label(), port), !used);
            }
        }
        usage
            .into_iter()
            .map(|((entry, port), unused)| EntryUsage { entry, port, unused })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn index(prefixes: &[&str]) -> PrefixIndex {
        PrefixIndex::new(prefixes.iter().map(|p| net(p)))
    }

    #[test]
    fn coverage_of_addresses_and_prefixes() {
        let i = index(&[
            "198.51.100.0/25",
            "198.51.100.128/25",
            "2001:db8::/64",
            "203.0.113.10/32",
        ]);
        assert!(i.covers_prefix(net("198.51.100.0/24")), "two halves tile the /24");
        assert!(!i.covers_prefix(net("198.51.100.0/23")));
        assert!(i.covers_address("203.0.113.10".parse().unwrap()));
        assert!(!i.covers_address("203.0.113.11".parse().unwrap()));
        assert!(i.covers_prefix(net("2001:db8::/96")));
        assert!(!i.covers_address("2001:db8:0:1::1".parse().unwrap()));
    }

    #[test]
    fn uncovered_parts_are_the_fewest_prefixes() {
        let i = index(&["198.51.100.0/26", "198.51.100.192/27"]);
        assert_eq!(
            i.uncovered(net("198.51.100.0/24")),
            vec![
                net("198.51.100.64/26"),
                net("198.51.100.128/26"),
                net("198.51.100.224/27")
            ]
        );
        assert_eq!(i.uncovered(net("198.51.100.0/26")), Vec::<IpNet>::new());
        assert_eq!(i.uncovered(net("203.0.113.0/24")), vec![net("203.0.113.0/24")]);
        let v6 = index(&["2001:db8::/33"]);
        assert_eq!(v6.uncovered(net("2001:db8::/32")), vec![net("2001:db8:8000::/33")]);
    }

    #[test]
    fn overlap_either_way() {
        let published = index(&["198.51.100.0/24", "203.0.113.7/32"]);
        assert!(
            published.overlaps(net("198.51.100.0/28")),
            "entry inside a published prefix"
        );
        assert!(
            published.overlaps(net("203.0.113.0/24")),
            "published address inside the entry"
        );
        assert!(!published.overlaps(net("192.0.2.0/24")));
    }
}
