//! The daemon's state: what each source last said, which addresses are probed, and each one's
//! last probe result. Probes and refreshes write it; `report()` renders the one snapshot that
//! `/metrics`, `check`'s table and its JSON all show, so they can never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::audit::{self, Report, TargetInput};
use crate::config::Config;
use crate::discovery::dns::DnsBook;
use crate::discovery::{SourceReport, SourceStatus, union};
use crate::probe::ProbeResult;

/// Everything known about one target.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    pub dns: DnsBook,
    pub dns_status: SourceStatus,
    pub published: BTreeSet<IpAddr>,
    pub probed: BTreeSet<IpAddr>,
    pub results: BTreeMap<IpAddr, ProbeResult>,
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
            .map(|target| {
                let mut state = TargetState::default();
                state.published.clone_from(&target.static_addresses);
                state.probed = audit::probed_set(&config, target, &state.published);
                state
            })
            .collect();
        Self {
            config,
            targets,
            sweep: SweepStatus::default(),
            loaded_at: SystemTime::now(),
        }
    }

    /// Carries what is still valid over to a new configuration: DNS books and probe results of
    /// targets that kept their name, host and port.
    #[must_use]
    pub fn reconfigured(&self, config: &Arc<Config>) -> Self {
        let mut next = Self::new(Arc::clone(config));
        for (index, target) in config.targets.iter().enumerate() {
            let old = self
                .config
                .targets
                .iter()
                .position(|t| t.name == target.name && t.host == target.host && t.port == target.port);
            if let Some(old) = old {
                let previous = &self.targets[old];
                next.targets[index].dns = previous.dns.clone();
                next.targets[index].dns_status = previous.dns_status.clone();
                next.targets[index].results = previous.results.clone();
                next.recompute(index);
            }
        }
        next.sweep = self.sweep;
        next
    }

    /// Applies a DNS refresh of target `index`.
    pub fn apply_dns(
        &mut self,
        index: usize,
        outcome: Result<BTreeSet<IpAddr>, String>,
        now: Instant,
        wall: SystemTime,
    ) {
        let retention = self.config.targets[index].dns_retention;
        let state = &mut self.targets[index];
        match outcome {
            Ok(answers) => {
                state.dns.record_success(now, &answers, retention);
                state.dns_status.succeeded(wall);
            }
            Err(error) => {
                state.dns.record_failure(now);
                state.dns_status.failed(error);
            }
        }
        self.recompute(index);
    }

    /// Recomputes the published and probed sets of target `index`, and forgets the results of
    /// addresses no longer probed, so their series disappear.
    fn recompute(&mut self, index: usize) {
        let target = &self.config.targets[index];
        let state = &mut self.targets[index];
        let dns = state.dns.addresses();
        state.published = union([&dns, &target.static_addresses]);
        state.probed = audit::probed_set(&self.config, target, &state.published);
        let probed = &state.probed;
        state.results.retain(|ip, _| probed.contains(ip));
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
                probed: &t.probed,
                results: &t.results,
            })
            .collect();
        let sources = self
            .config
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(target, state)| {
                let mut sources = Vec::new();
                if target.host.is_some() {
                    sources.push(SourceReport {
                        source: "dns",
                        up: state.dns_status.up,
                        addresses: state.dns.addresses().len(),
                        last_success: state.dns_status.last_success,
                        last_error: state.dns_status.last_error.clone(),
                    });
                }
                if !target.static_addresses.is_empty() {
                    sources.push(SourceReport {
                        source: "static",
                        up: Some(true),
                        addresses: target.static_addresses.len(),
                        last_success: Some(self.loaded_at),
                        last_error: None,
                    });
                }
                sources
            })
            .collect();
        audit::evaluate(&self.config, &inputs, sources)
    }
}
