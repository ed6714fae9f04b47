//! The daemon's state: what each source last said, which addresses are probed, and each one's
//! last probe result. Probes and refreshes write it; `report()` renders the one snapshot that
//! `/metrics`, `check`'s table and its JSON all show, so they can never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use crate::audit::{self, Report, TargetInput};
use crate::config::Config;
use crate::discovery::dns::DnsBook;
use crate::discovery::published::{self, Failure, Reason, Validators};
use crate::discovery::{SourceReport, SourceStatus};
use crate::probe::ProbeResult;

/// One published list of a target: its last good set and how its refreshes went.
#[derive(Debug, Clone, Default)]
pub struct ListState {
    pub prefixes: BTreeSet<IpNet>,
    pub status: SourceStatus,
    /// Failed refreshes since start, by reason.
    pub failures: BTreeMap<&'static str, u64>,
    pub validators: Validators,
    /// When the next refresh is due; `None`: now.
    pub next_due: Option<Instant>,
}

/// What a refresh of a list brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListUpdate {
    /// A new body, parsed.
    Fresh {
        prefixes: Vec<IpNet>,
        validators: Validators,
    },
    /// 304 Not Modified: the last good set is still current.
    NotModified,
    Failed(Failure),
}

/// Addresses added to and removed from a published set by one change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
}

impl Change {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Everything known about one target.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    pub dns: DnsBook,
    pub dns_status: SourceStatus,
    /// Failed DNS refreshes since start, by reason.
    pub dns_failures: BTreeMap<&'static str, u64>,
    pub lists: Vec<ListState>,
    /// Published single addresses, including every address of a prefix small enough to probe.
    pub published: BTreeSet<IpAddr>,
    /// Published prefixes longer than one address.
    pub prefixes: BTreeSet<IpNet>,
    /// Published prefixes too large to probe.
    pub unprobed: BTreeSet<IpNet>,
    pub probed: BTreeSet<IpAddr>,
    pub results: BTreeMap<IpAddr, ProbeResult>,
    /// Addresses (and unprobed prefixes) that entered and left the published set since start.
    pub added_total: u64,
    pub removed_total: u64,
}

/// When the last full sweep finished and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStatus {
    pub last_finished: Option<SystemTime>,
    pub last_duration: Option<Duration>,
}

/// The state of every target of one configuration.
#[derive(Debug, Clone)]
pub struct State {
    pub config: Arc<Config>,
    pub targets: Vec<TargetState>,
    pub sweep: SweepStatus,
    /// When this configuration was loaded: the static list's last success.
    pub loaded_at: SystemTime,
}

impl State {
    /// An empty state for `config`; static addresses are published from the start.
    pub fn new(config: Arc<Config>) -> Self {
        let targets = config
            .targets
            .iter()
            .map(|target| TargetState {
                lists: vec![ListState::default(); target.published.len()],
                ..TargetState::default()
            })
            .collect();
        let mut state = Self {
            config,
            targets,
            sweep: SweepStatus::default(),
            loaded_at: SystemTime::now(),
        };
        for index in 0..state.targets.len() {
            state.recompute(index);
        }
        state
    }

    /// Carries what is still valid over to a new configuration: DNS books, list sets and probe
    /// results of targets that kept their name and port, and lists that kept their URL.
    #[must_use]
    pub fn reconfigured(&self, config: &Arc<Config>) -> Self {
        let mut next = Self::new(Arc::clone(config));
        for (index, target) in config.targets.iter().enumerate() {
            let Some(old) = self
                .config
                .targets
                .iter()
                .position(|t| t.name == target.name && t.port == target.port)
            else {
                continue;
            };
            let (previous, old_target) = (&self.targets[old], &self.config.targets[old]);
            let carried = &mut next.targets[index];
            if old_target.host == target.host {
                carried.dns = previous.dns.clone();
                carried.dns_status = previous.dns_status.clone();
                carried.dns_failures.clone_from(&previous.dns_failures);
            }
            for (list, source) in carried.lists.iter_mut().zip(&target.published) {
                if let Some(old_list) = old_target.published.iter().position(|s| s.label == source.label) {
                    *list = previous.lists[old_list].clone();
                }
            }
            carried.results.clone_from(&previous.results);
            carried.added_total = previous.added_total;
            carried.removed_total = previous.removed_total;
            next.recompute(index);
        }
        next.sweep = self.sweep;
        next
    }

    /// Applies a DNS refresh of target `index`; returns what changed in its published set.
    pub fn apply_dns(
        &mut self,
        index: usize,
        outcome: Result<BTreeSet<IpAddr>, (&'static str, String)>,
        now: Instant,
        wall: SystemTime,
    ) -> Change {
        let retention = self.config.targets[index].dns_retention;
        let state = &mut self.targets[index];
        match outcome {
            Ok(answers) => {
                state.dns.record_success(now, &answers, retention);
                state.dns_status.succeeded(wall);
            }
            Err((reason, error)) => {
                state.dns.record_failure(now);
                state.dns_status.failed(error);
                *state.dns_failures.entry(reason).or_default() += 1;
            }
        }
        self.recompute(index)
    }

    /// Restores a list's last good set from disk, before its first refresh.
    pub fn restore_list(
        &mut self,
        index: usize,
        list: usize,
        prefixes: BTreeSet<IpNet>,
        validators: Validators,
        fetched_at: SystemTime,
    ) -> Change {
        let state = &mut self.targets[index].lists[list];
        state.prefixes = prefixes;
        state.validators = validators;
        state.status.last_success = Some(fetched_at);
        self.recompute(index)
    }

    /// Counts a state file that could not be read: the list starts empty and says why.
    pub fn corrupt_state(&mut self, index: usize, list: usize, error: String) {
        let state = &mut self.targets[index].lists[list];
        *state.failures.entry(Reason::StateCorrupt.as_label()).or_default() += 1;
        state.status.last_error = Some(error);
    }

    /// Applies a refresh of list `list` of target `index`. A failure, a 304, or a body refused by
    /// [`published::accept`] leaves the last good set exactly as it was.
    pub fn apply_list(
        &mut self,
        index: usize,
        list: usize,
        update: ListUpdate,
        now: Instant,
        wall: SystemTime,
    ) -> (Change, Option<Failure>) {
        let source = &self.config.targets[index].published[list];
        let cap = self.config.global.max_probe_addresses_per_prefix;
        let interval = self.config.global.interval;
        let state = &mut self.targets[index].lists[list];
        let outcome = match update {
            ListUpdate::NotModified => Ok(None),
            ListUpdate::Fresh { prefixes, validators } => {
                published::accept(source, cap, prefixes, state.prefixes.len()).map(|set| Some((set, validators)))
            }
            ListUpdate::Failed(failure) => Err(failure),
        };
        let failure = match outcome {
            Ok(fresh) => {
                if let Some((set, validators)) = fresh {
                    state.prefixes = set;
                    state.validators = validators;
                }
                state.status.succeeded(wall);
                state.next_due = Some(now + source.refresh);
                None
            }
            Err(failure) => {
                state.status.failed(failure.message.clone());
                *state.failures.entry(failure.reason.as_label()).or_default() += 1;
                // Try again soon, but no more often than the probe interval.
                state.next_due = Some(now + source.refresh.min(interval));
                Some(failure)
            }
        };
        (self.recompute(index), failure)
    }

    /// Recomputes the published and probed sets of target `index` from its sources, forgets the
    /// results of addresses no longer probed (so their series disappear), and counts the change.
    fn recompute(&mut self, index: usize) -> Change {
        let target = &self.config.targets[index];
        let cap = self.config.global.max_probe_addresses_per_prefix;
        let state = &mut self.targets[index];
        let before = published_items(state);
        let mut published: BTreeSet<IpAddr> = state.dns.addresses();
        published.extend(&target.static_addresses);
        let (mut prefixes, mut unprobed) = (BTreeSet::new(), BTreeSet::new());
        for prefix in state.lists.iter().flat_map(|l| &l.prefixes) {
            if prefix.prefix_len() == prefix.max_prefix_len() {
                published.insert(prefix.addr());
            } else {
                prefixes.insert(*prefix);
                if published::is_probed(prefix, cap) {
                    published.extend(published::addresses(prefix));
                } else {
                    unprobed.insert(*prefix);
                }
            }
        }
        state.published = published;
        state.prefixes = prefixes;
        state.unprobed = unprobed;
        state.probed = audit::probed_set(&self.config, target, &state.published);
        let probed = &state.probed;
        state.results.retain(|ip, _| probed.contains(ip));
        let after = published_items(state);
        let change = Change {
            added: after.difference(&before).copied().collect(),
            removed: before.difference(&after).copied().collect(),
        };
        state.added_total += change.added.len() as u64;
        state.removed_total += change.removed.len() as u64;
        change
    }

    /// Stores a probe result, unless the address left the probed set while it was being probed.
    pub fn record_probe(&mut self, index: usize, ip: IpAddr, result: ProbeResult) {
        let state = &mut self.targets[index];
        if state.probed.contains(&ip) {
            state.results.insert(ip, result);
        }
    }

    /// The audit report of this moment.
    pub fn report(&self) -> Report {
        let inputs: Vec<TargetInput<'_>> = self
            .targets
            .iter()
            .map(|t| TargetInput {
                published: &t.published,
                prefixes: &t.prefixes,
                unprobed: &t.unprobed,
                probed: &t.probed,
                results: &t.results,
                changes: (t.added_total, t.removed_total),
            })
            .collect();
        let sources = self
            .config
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(target, state)| self.sources(target, state))
            .collect();
        audit::evaluate(&self.config, &inputs, sources)
    }

    fn sources(&self, target: &crate::config::Target, state: &TargetState) -> Vec<SourceReport> {
        let mut sources = Vec::new();
        if target.host.is_some() {
            sources.push(SourceReport {
                source: "dns",
                url: None,
                up: state.dns_status.up,
                addresses: state.dns.addresses().len(),
                last_success: state.dns_status.last_success,
                last_error: state.dns_status.last_error.clone(),
                failures: state.dns_failures.iter().map(|(r, n)| ((*r).to_string(), *n)).collect(),
            });
        }
        if !target.static_addresses.is_empty() {
            sources.push(SourceReport {
                source: "static",
                url: None,
                up: Some(true),
                addresses: target.static_addresses.len(),
                last_success: Some(self.loaded_at),
                last_error: None,
                failures: Vec::new(),
            });
        }
        for (source, list) in target.published.iter().zip(&state.lists) {
            let addresses = published::probe_cost(&list.prefixes, self.config.global.max_probe_addresses_per_prefix);
            sources.push(SourceReport {
                source: "published",
                url: Some(source.label.clone()),
                up: list.status.up,
                addresses: usize::try_from(addresses).unwrap_or(usize::MAX),
                last_success: list.status.last_success,
                last_error: list.status.last_error.clone(),
                failures: list.failures.iter().map(|(r, n)| ((*r).to_string(), *n)).collect(),
            });
        }
        sources
    }
}

/// The published set as one comparable set: addresses, plus prefixes too large to list.
fn published_items(state: &TargetState) -> BTreeSet<IpNet> {
    state
        .published
        .iter()
        .map(|ip| IpNet::from(*ip))
        .chain(state.unprobed.iter().copied())
        .collect()
}
