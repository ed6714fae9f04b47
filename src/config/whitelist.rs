//! The declared whitelist: which (address, port) pairs the firewall team says are open, and the
//! questions the audit asks of it. Pure data and functions, no I/O: the files are read by
//! `config::load`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;

use super::Target;
use crate::prefix::{PrefixIndex, prefix_label};

/// One address or CIDR of an `allow[].addresses` list, with the ports of its entry, or one
/// address an aerleon token resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// IPv4-mapped IPv6 prefixes are stored as the IPv4 prefix they map.
    pub prefix: IpNet,
    /// Shorter than `global.broad_entry_prefix` for its family: it hides every `missing` finding
    /// inside it, so it is reported (a truthful declaration, never refused).
    pub broad: bool,
    /// Sorted, without duplicates.
    pub ports: Vec<u16>,
    /// The targets this entry belongs to: its `target:` tag, or the targets whose own file it is in.
    pub belongs_to: Vec<String>,
    /// The `target:` tag as written.
    pub tagged: Option<String>,
    pub comment: Option<String>,
    /// Index into [`Whitelist::files`]: the file its line is in.
    pub file: usize,
    /// Which `whitelist:` of the configuration declared it: a target is audited against the
    /// entries of its [`Target::whitelist_source`].
    pub source: usize,
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
        Some(self.source) == target.whitelist_source || self.tagged.as_deref() == Some(target.name.as_str())
    }
}

/// Every declared entry of every whitelist the configuration names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whitelist {
    /// The files the entries were read from: whitelist files, aerleon definition files.
    pub files: Vec<PathBuf>,
    pub entries: Vec<Entry>,
    /// Where each entry (by label) is written, as `file:line (comment)`: made once at load, so
    /// every report can say where an entry to remove lives without formatting it again.
    locations: BTreeMap<String, Arc<[Arc<str>]>>,
}

/// One (entry, port) pair and whether any published address uses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct EntryUsage {
    pub entry: String,
    pub port: u16,
    pub unused: bool,
    /// Shorter than `global.broad_entry_prefix`: it hides every `missing` finding inside it.
    pub broad: bool,
    /// Where it is written: `file:line (comment)`, once per place.
    pub declared_at: Arc<[Arc<str>]>,
}

impl Whitelist {
    /// Builds the whitelist from its files and their entries.
    pub fn new(files: Vec<PathBuf>, entries: Vec<Entry>) -> Self {
        let mut locations: BTreeMap<String, Vec<Arc<str>>> = BTreeMap::new();
        for entry in &entries {
            let file = files
                .get(entry.file)
                .map_or_else(String::new, |f| f.display().to_string());
            let location = match &entry.comment {
                Some(comment) => format!("{file}:{} ({comment})", entry.line),
                None => format!("{file}:{}", entry.line),
            };
            locations.entry(entry.label()).or_default().push(Arc::from(location));
        }
        let locations = locations
            .into_iter()
            .map(|(label, at)| (label, Arc::from(at)))
            .collect();
        Self {
            files,
            entries,
            locations,
        }
    }

    /// The entries shorter than `global.broad_entry_prefix`, in file order.
    pub fn broad_entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.broad)
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
        let mut usage: BTreeMap<(String, u16), (bool, bool)> = BTreeMap::new();
        for entry in &self.entries {
            for &port in &entry.ports {
                let used = published.get(&port).is_some_and(|index| index.overlaps(entry.prefix));
                // The values depend only on (prefix, port), so duplicates across files agree.
                usage.insert((entry.label(), port), (!used, entry.broad));
            }
        }
        usage
            .into_iter()
            .map(|((entry, port), (unused, broad))| EntryUsage {
                declared_at: self.locations.get(&entry).cloned().unwrap_or_else(|| Arc::from([])),
                entry,
                port,
                unused,
                broad,
            })
            .collect()
    }
}
