//! The daemon's state: what each source last said, which addresses are probed, and each one's
//! last probe result. Refreshes and probes write it through the methods here; [`State::snapshot`]
//! renders the one immutable [`Snapshot`] that `/metrics`, `check`'s table and its JSON all show,
//! so they can never disagree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use super::audit::{self, PublishedBy, Report, TargetInput};
use super::diagnosis::{self, Diagnosis, HEALTHY_SAMPLES};
use super::dns_book::{Family, FamilyBooks};
use super::event::Event;
use super::list::{self, Validators};
use super::outcome::{LocalFault, ProbeResult, ProbeState};
use super::session::{self, IdleResult, LoginResult, RefusedLogin, SessionReport};
use super::source::{Bogus, Failure, Reason, SourceKind, SourceReport, SourceStatus, never_a_vendor};
use super::ssh::{self, KnownKey, SshEvidence, SshReport};
use crate::config::session::{IdlePolicy, LoginPolicy};
use crate::config::ssh::SshPolicy;
use crate::config::{BroadEntryPrefix, CheckKind, Config, Target};
use crate::prefix;

/// A target of the current configuration: an index into `config.targets`, valid for one
/// configuration only (a reload renumbers them; see [`State::target_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId(pub usize);

/// One source of one target: which one, in the order [`sources_of`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId {
    pub target: TargetId,
    pub index: usize,
}

/// What a source is, from the configuration: the DNS name, the static list, or a published list
/// (its index in `target.published`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceSpec {
    Dns,
    Static,
    Published(usize),
}

impl SourceSpec {
    /// The kind of source.
    pub fn kind(self) -> SourceKind {
        match self {
            Self::Dns => SourceKind::Dns,
            Self::Static => SourceKind::Static,
            Self::Published(_) => SourceKind::Published,
        }
    }
}

/// The sources of `target`, in report order: DNS, static, then each published list.
pub fn sources_of(target: &Target) -> Vec<SourceSpec> {
    let mut specs = Vec::new();
    if target.host.is_some() {
        specs.push(SourceSpec::Dns);
    }
    if !target.static_addresses.is_empty() {
        specs.push(SourceSpec::Static);
    }
    specs.extend((0..target.published.len()).map(SourceSpec::Published));
    specs
}

/// What one DNS refresh brought, per family; `None` for a family not asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsAnswers {
    pub ipv4: Option<Result<BTreeSet<IpAddr>, Failure>>,
    pub ipv6: Option<Result<BTreeSet<IpAddr>, Failure>>,
}

/// What a refresh of a source brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// DNS answers of one refresh (all queries), each family on its own.
    Answers(DnsAnswers),
    /// A new list body, parsed; [`list::accept`] decides whether it is taken.
    Fresh {
        prefixes: Vec<IpNet>,
        validators: Validators,
    },
    /// 304 Not Modified: the last good set is still current.
    NotModified,
    /// The last good set, read back from disk at start.
    Restored {
        prefixes: BTreeSet<IpNet>,
        validators: Validators,
        fetched_at: SystemTime,
    },
    /// The refresh failed: the last good set stays.
    Failed(Failure),
    /// The saved last good set could not be read: counted and shown, the source starts empty.
    StateCorrupt(String),
}

/// What one source holds now.
#[derive(Debug, Clone)]
pub enum Held {
    Dns(FamilyBooks),
    Static(BTreeSet<IpAddr>),
    List {
        prefixes: BTreeSet<IpNet>,
        validators: Validators,
        /// When the next refresh is due; `None`: now.
        next_due: Option<Instant>,
    },
}

/// One source of one target: what it holds and how its refreshes went.
#[derive(Debug, Clone)]
pub struct SourceState {
    pub spec: SourceSpec,
    pub held: Held,
    pub status: SourceStatus,
}

impl SourceState {
    fn new(spec: SourceSpec, target: &Target, loaded_at: SystemTime) -> Self {
        let mut status = SourceStatus::default();
        let held = match spec {
            SourceSpec::Dns => Held::Dns(FamilyBooks::default()),
            SourceSpec::Static => {
                // The configuration is the source: it succeeded when it was loaded.
                status.succeeded(loaded_at);
                Held::Static(target.static_addresses.clone())
            }
            SourceSpec::Published(_) => Held::List {
                prefixes: BTreeSet::new(),
                validators: Validators::default(),
                next_due: None,
            },
        };
        Self { spec, held, status }
    }

    /// The prefixes of a list source (empty for the others).
    pub fn prefixes(&self) -> Option<&BTreeSet<IpNet>> {
        match &self.held {
            Held::List { prefixes, .. } => Some(prefixes),
            _ => None,
        }
    }

    /// Whether nothing was ever learned: no refresh, nothing restored.
    pub fn is_fresh(&self) -> bool {
        self.status == SourceStatus::default() && self.prefixes().is_none_or(BTreeSet::is_empty)
    }
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

/// What applying an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub change: Change,
    /// Why the update was refused or failed, if it was.
    pub failure: Option<Failure>,
    /// A list set newly taken from the network: the source persists it.
    pub accepted: Option<(BTreeSet<IpNet>, Validators)>,
}

/// Everything known about one target.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    pub sources: Vec<SourceState>,
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
    /// Probes this host failed to make since start, by reason.
    pub probe_errors: BTreeMap<LocalFault, u64>,
    /// Addresses DNS or a list returned that are never a vendor's: reported, never probed.
    pub bogus: BTreeMap<IpAddr, Bogus>,
    /// The SSH assessment of each address whose last probe was open (`check: ssh`).
    pub ssh: BTreeMap<IpAddr, Arc<SshReport>>,
    /// The host key each address last presented, kept across restarts (and while it is down).
    pub known_keys: BTreeMap<IpAddr, KnownKey>,
    /// The session checks (idle hold, login) of each address, and when each last started.
    pub sessions: BTreeMap<IpAddr, SessionReport>,
    /// Which sources (indices into `sources`) publish each published address and prefix; shared,
    /// since it changes with the published set only and the state is copied for every snapshot.
    pub published_by: Arc<PublishedBy>,
    /// The last raw diagnosis of each address that failed (`probe::raw`).
    pub diagnoses: BTreeMap<IpAddr, Arc<Diagnosis>>,
    /// The TTL of each address's last SYN-ACK seen by a raw probe, and when: what its own resets
    /// must match.
    pub syn_ack_ttls: BTreeMap<IpAddr, (u8, SystemTime)>,
}

fn published_by(
    sources: &[SourceState],
    published: &BTreeSet<IpAddr>,
    prefixes: &BTreeSet<IpNet>,
    cap: u32,
) -> PublishedBy {
    let mut by = PublishedBy::default();
    let mut note = |index: usize, ip: IpAddr| {
        if published.contains(&ip) {
            let sources = by.addresses.entry(ip).or_default();
            // A list may publish an address alone and inside a prefix too.
            if sources.last() != Some(&index) {
                sources.push(index);
            }
        }
    };
    for (index, source) in sources.iter().enumerate() {
        match &source.held {
            Held::Dns(books) => books.addresses().into_iter().for_each(|ip| note(index, ip)),
            Held::Static(addresses) => addresses.iter().for_each(|&ip| note(index, ip)),
            Held::List { prefixes: list, .. } => {
                for prefix in list {
                    if prefix.prefix_len() == prefix.max_prefix_len() {
                        note(index, prefix.addr());
                    } else if prefixes.contains(prefix) {
                        by.prefixes.entry(*prefix).or_default().push(index);
                        if prefix::is_probed(prefix, cap) {
                            prefix::addresses(prefix).for_each(|ip| note(index, ip));
                        }
                    }
                }
            }
        }
    }
    by
}

/// One address's session checks, handed to the shell to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionJob {
    pub target: TargetId,
    pub ip: IpAddr,
    pub due: session::Due,
    /// The host keys the server must present before a secret is sent; `None`: no secret may be
    /// sent (an idle hold is then made without logging in).
    pub login_keys: Option<Vec<String>>,
    /// Whether the last login here succeeded: an idle hold then logs in too.
    pub logged_in_before: bool,
}

/// One failing address to diagnose with raw packets, handed to the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosisJob {
    pub target: TargetId,
    pub ip: IpAddr,
    pub state: ProbeState,
    /// Its own SYN-ACK TTL from when it was open, if a raw probe saw one.
    pub own_syn_ack_ttls: Vec<u8>,
    /// Open addresses of the same target, whose SYN-ACKs a reset can be compared with.
    pub healthy: Vec<IpAddr>,
}

/// When the last full sweep finished and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStatus {
    pub last_finished: Option<SystemTime>,
    pub last_duration: Option<Duration>,
}

/// The daemon's own status, beside the audit: what the status endpoints report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonStatus {
    pub sweep: SweepStatus,
    /// Whether the first sweep has finished.
    pub ready: bool,
    /// Whether the last configuration reload succeeded (true until one fails).
    pub reload_ok: bool,
    /// Whether failing addresses get raw diagnosis (`CAP_NET_RAW` held, not turned off).
    pub raw_probes: bool,
}

impl Default for DaemonStatus {
    fn default() -> Self {
        Self {
            sweep: SweepStatus::default(),
            ready: false,
            reload_ok: true,
            raw_probes: false,
        }
    }
}

/// An immutable view of one moment: what every renderer shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub report: Report,
    pub status: DaemonStatus,
    pub taken_at: SystemTime,
    /// The most recent changes of addresses, oldest first (the publisher fills it in).
    pub history: Arc<VecDeque<Arc<Event>>>,
    /// The most recent changes, attributed when read (the publisher fills it in).
    pub timeline: crate::core::cause::Timeline,
    /// The configuration's `global.broad_entry_prefix`: the change request sends additions
    /// broader than it to review.
    pub broad_entry_prefix: BroadEntryPrefix,
}

impl Snapshot {
    /// The snapshot before anything is known.
    pub fn empty() -> Self {
        Self {
            report: Report {
                targets: Vec::new(),
                whitelist_entries: Vec::new(),
            },
            status: DaemonStatus::default(),
            taken_at: SystemTime::UNIX_EPOCH,
            history: Arc::default(),
            timeline: crate::core::cause::Timeline::default(),
            broad_entry_prefix: BroadEntryPrefix::default(),
        }
    }
}

/// The state of every target of one configuration.
#[derive(Debug, Clone)]
pub struct State {
    pub config: Arc<Config>,
    pub targets: Vec<TargetState>,
    pub status: DaemonStatus,
    /// When this configuration was loaded: the static list's last success.
    pub loaded_at: SystemTime,
    /// Whether what SSH remembers across restarts (known host keys, refused logins) changed since
    /// the shell last saved it.
    pub ssh_memory_dirty: bool,
}

impl State {
    /// An empty state for `config`; static addresses are published from the start.
    pub fn new(config: Arc<Config>) -> Self {
        let loaded_at = SystemTime::now();
        let targets = config
            .targets
            .iter()
            .map(|target| TargetState {
                sources: sources_of(target)
                    .into_iter()
                    .map(|spec| SourceState::new(spec, target, loaded_at))
                    .collect(),
                ..TargetState::default()
            })
            .collect();
        let mut state = Self {
            config,
            targets,
            status: DaemonStatus::default(),
            loaded_at,
            ssh_memory_dirty: false,
        };
        for index in 0..state.targets.len() {
            state.recompute(TargetId(index));
        }
        state
    }

    /// The target named `name` probing `port` in this configuration.
    pub fn target_id(&self, name: &str, port: u16) -> Option<TargetId> {
        self.config
            .targets
            .iter()
            .position(|t| t.name == name && t.port == port)
            .map(TargetId)
    }

    /// Every source of every target.
    pub fn source_ids(&self) -> impl Iterator<Item = (SourceId, &SourceState)> {
        self.targets.iter().enumerate().flat_map(|(target, t)| {
            t.sources.iter().enumerate().map(move |(index, source)| {
                (
                    SourceId {
                        target: TargetId(target),
                        index,
                    },
                    source,
                )
            })
        })
    }

    /// One source.
    pub fn source(&self, id: SourceId) -> &SourceState {
        &self.targets[id.target.0].sources[id.index]
    }

    /// How a person names a source: a list's URL, or the kind.
    pub fn source_name(&self, id: SourceId) -> String {
        match self.source(id).spec {
            SourceSpec::Published(list) => self.config.targets[id.target.0].published[list].label.clone(),
            spec => spec.kind().as_label().to_string(),
        }
    }

    /// Sources a refresh should ask now: DNS every time, lists when due (all of them unless
    /// `only_due`); static sources never change.
    pub fn due(&self, now: Instant, only_due: bool) -> Vec<(SourceId, SourceSpec, Validators)> {
        self.source_ids()
            .filter_map(|(id, source)| match &source.held {
                Held::Dns(_) => Some((id, source.spec, Validators::default())),
                Held::Static(_) => None,
                Held::List {
                    validators, next_due, ..
                } => {
                    (!only_due || next_due.is_none_or(|due| due <= now)).then(|| (id, source.spec, validators.clone()))
                }
            })
            .collect()
    }

    /// Carries what is still valid over to a new configuration: sources that kept their identity
    /// (the same host, the same list URL) and probe results of targets that kept their name and port.
    #[must_use]
    pub fn reconfigured(&self, config: &Arc<Config>) -> Self {
        let mut next = Self::new(Arc::clone(config));
        for (index, target) in config.targets.iter().enumerate() {
            let Some(TargetId(old)) = self.target_id(&target.name, target.port) else {
                continue;
            };
            let (previous, old_target) = (&self.targets[old], &self.config.targets[old]);
            let carried = &mut next.targets[index];
            for source in &mut carried.sources {
                let same = previous.sources.iter().find(|old| match (old.spec, source.spec) {
                    (SourceSpec::Dns, SourceSpec::Dns) => old_target.host == target.host,
                    (SourceSpec::Published(a), SourceSpec::Published(b)) => {
                        old_target.published[a].label == target.published[b].label
                    }
                    _ => false,
                });
                if let Some(same) = same {
                    source.held = same.held.clone();
                    source.status = same.status.clone();
                }
            }
            carried.results.clone_from(&previous.results);
            // The change a reload makes is measured from what was published before it, not
            // from nothing: an unchanged file adds and removes nothing.
            carried.published.clone_from(&previous.published);
            carried.unprobed.clone_from(&previous.unprobed);
            carried.added_total = previous.added_total;
            carried.removed_total = previous.removed_total;
            carried.probe_errors.clone_from(&previous.probe_errors);
            carried.known_keys.clone_from(&previous.known_keys);
            // Diagnoses made under other settings (hops, margin) are made again; the TTLs seen stay.
            if config.global.diagnosis == self.config.global.diagnosis {
                carried.diagnoses.clone_from(&previous.diagnoses);
            }
            carried.syn_ack_ttls.clone_from(&previous.syn_ack_ttls);
            // A reload that changed the account, or the hold, starts that check afresh; the other
            // keeps its schedule (a rejected login is not tried again because the hold changed).
            let (same_login, same_idle) = (
                target.ssh.session.login == old_target.ssh.session.login,
                target.ssh.session.idle == old_target.ssh.session.idle,
            );
            for (ip, report) in &previous.sessions {
                let kept = SessionReport {
                    idle: report.idle.clone().filter(|_| same_idle),
                    idle_started: report.idle_started.filter(|_| same_idle),
                    login: report.login.clone().filter(|_| same_login),
                    login_started: report.login_started.filter(|_| same_login),
                };
                if kept != SessionReport::default() {
                    carried.sessions.insert(*ip, kept);
                }
            }
            next.recompute(TargetId(index));
            // The clients or pins may have changed: every address is assessed again.
            let results: Vec<(IpAddr, ProbeResult)> = next.targets[index]
                .results
                .iter()
                .map(|(ip, r)| (*ip, r.clone()))
                .collect();
            for (ip, result) in results {
                next.assess_ssh(TargetId(index), ip, &result);
            }
        }
        next.status = self.status;
        // Turned off by the reload: nothing is diagnosed from now on, and the metric says so.
        if config.global.diagnosis.raw_probes == crate::config::RawProbes::Off {
            next.status.raw_probes = false;
        }
        // A reload may drop remembered refusals (another account, a target gone): save again.
        let refusals = self
            .targets
            .iter()
            .flat_map(|t| t.sessions.values())
            .any(SessionReport::is_refused);
        next.ssh_memory_dirty = self.ssh_memory_dirty || refusals;
        next
    }

    /// Applies a refresh (or a restore) of one source. A failure, a 304, or a list refused by
    /// [`list::accept`] leaves the last good set exactly as it was.
    pub fn apply(&mut self, id: SourceId, update: Update, now: Instant, wall: SystemTime) -> Applied {
        let target = &self.config.targets[id.target.0];
        let cap = self.config.global.max_probe_addresses_per_prefix;
        let interval = self.config.global.interval;
        let source = &mut self.targets[id.target.0].sources[id.index];
        let mut applied = Applied::default();
        match (&mut source.held, update) {
            // The configuration is the static source: nothing to apply.
            (Held::Static(_), _) => return applied,
            (_, Update::StateCorrupt(error)) => {
                *source.status.failures.entry(Reason::StateCorrupt).or_default() += 1;
                source.status.last_error = Some(error);
                return applied;
            }
            (Held::Dns(books), Update::Answers(answers)) => {
                applied.failure = apply_answers(books, &mut source.status, answers, target.dns_retention, now, wall);
            }
            (
                Held::List {
                    prefixes,
                    validators,
                    next_due,
                },
                update,
            ) => {
                let SourceSpec::Published(list) = source.spec else {
                    debug_assert!(false, "a list held by a source that is not a published list");
                    return applied;
                };
                let spec = &target.published[list];
                let outcome = match update {
                    Update::NotModified => Ok(None),
                    Update::Fresh {
                        prefixes: parsed,
                        validators: fresh,
                    } => list::accept(spec, cap, parsed, prefixes.len()).map(|set| Some((set, fresh))),
                    Update::Restored {
                        prefixes: saved,
                        validators: saved_validators,
                        fetched_at,
                    } => {
                        *prefixes = saved;
                        *validators = saved_validators;
                        source.status.last_success = Some(fetched_at);
                        return Applied {
                            change: self.recompute(id.target),
                            ..Applied::default()
                        };
                    }
                    Update::Failed(failure) => Err(failure),
                    Update::Answers(_) | Update::StateCorrupt(_) => {
                        debug_assert!(false, "DNS answers for a list source");
                        return applied;
                    }
                };
                match outcome {
                    Ok(fresh) => {
                        if let Some((set, fresh)) = fresh {
                            applied.accepted = Some((set.clone(), fresh.clone()));
                            *prefixes = set;
                            *validators = fresh;
                        }
                        source.status.succeeded(wall);
                        *next_due = Some(now + spec.refresh);
                    }
                    Err(failure) => {
                        source.status.failed(&failure);
                        // Try again soon, but no more often than the probe interval.
                        *next_due = Some(now + spec.refresh.min(interval));
                        applied.failure = Some(failure);
                    }
                }
            }
            (Held::Dns(books), Update::Failed(failure)) => {
                // The whole refresh failed: every family asked failed with it.
                let failed = |asked: bool| asked.then(|| Err(failure.clone()));
                let answers = DnsAnswers {
                    ipv4: failed(target.ipv4),
                    ipv6: failed(target.ipv6),
                };
                applied.failure = apply_answers(books, &mut source.status, answers, target.dns_retention, now, wall);
            }
            // A list update for DNS is a bug of the caller; it changes nothing rather than crash.
            (held, update) => {
                debug_assert!(false, "update {update:?} does not fit source {held:?}");
                return applied;
            }
        }
        applied.change = self.recompute(id.target);
        applied
    }

    /// Recomputes the published and probed sets of a target from its sources, forgets the results
    /// of addresses no longer probed (so their series disappear), and counts the change.
    fn recompute(&mut self, id: TargetId) -> Change {
        let target = &self.config.targets[id.0];
        let cap = self.config.global.max_probe_addresses_per_prefix;
        let state = &mut self.targets[id.0];
        let before = published_items(state);
        let mut published: BTreeSet<IpAddr> = BTreeSet::new();
        let mut bogus: BTreeMap<IpAddr, Bogus> = BTreeMap::new();
        let (mut prefixes, mut unprobed) = (BTreeSet::new(), BTreeSet::new());
        // What DNS and lists return is checked; static addresses were written on purpose.
        let allow_local = target.allow_local_addresses;
        let take =
            |ip: IpAddr, source: SourceKind, published: &mut BTreeSet<IpAddr>, bogus: &mut BTreeMap<IpAddr, Bogus>| {
                match never_a_vendor(ip, allow_local) {
                    Some(why) => {
                        bogus.entry(ip).or_insert(Bogus { source, why });
                    }
                    None => {
                        published.insert(ip);
                    }
                }
            };
        for source in &state.sources {
            match &source.held {
                Held::Dns(books) => {
                    for ip in books.addresses() {
                        take(ip, SourceKind::Dns, &mut published, &mut bogus);
                    }
                }
                Held::Static(addresses) => published.extend(addresses),
                Held::List { prefixes: list, .. } => {
                    for prefix in list {
                        // A prefix wholly inside a range no vendor has (169.254.0.0/16, 224.0.0.0/4)
                        // is reported by its first address and never audited as a vendor's.
                        let first = never_a_vendor(prefix.network(), target.allow_local_addresses);
                        if let Some(why) =
                            first.filter(|_| never_a_vendor(prefix.broadcast(), target.allow_local_addresses).is_some())
                        {
                            bogus.entry(prefix.network()).or_insert(Bogus {
                                source: SourceKind::Published,
                                why,
                            });
                            continue;
                        }
                        if prefix.prefix_len() == prefix.max_prefix_len() {
                            take(prefix.addr(), SourceKind::Published, &mut published, &mut bogus);
                        } else {
                            prefixes.insert(*prefix);
                            if prefix::is_probed(prefix, cap) {
                                for ip in prefix::addresses(prefix) {
                                    take(ip, SourceKind::Published, &mut published, &mut bogus);
                                }
                            } else {
                                unprobed.insert(*prefix);
                            }
                        }
                    }
                }
            }
        }
        // Another source publishing it for real wins.
        bogus.retain(|ip, _| !published.contains(ip));
        state.published_by = Arc::new(published_by(&state.sources, &published, &prefixes, cap));
        state.bogus = bogus;
        state.published = published;
        state.prefixes = prefixes;
        state.unprobed = unprobed;
        state.probed = audit::probed_set(&self.config, target, &state.published);
        // A whitelist may declare such an address too: it is still never probed.
        state.probed.retain(|ip| !state.bogus.contains_key(ip));
        let probed = &state.probed;
        state.results.retain(|ip, _| probed.contains(ip));
        state.ssh.retain(|ip, _| probed.contains(ip));
        state.sessions.retain(|ip, _| probed.contains(ip));
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
    pub fn record_probe(&mut self, id: TargetId, ip: IpAddr, result: ProbeResult) {
        let state = &mut self.targets[id.0];
        if !state.probed.contains(&ip) {
            return;
        }
        // A diagnosis explains one stretch in one state: once the address leaves it, a later
        // failure of the same kind is another failure, diagnosed afresh.
        if state.diagnoses.get(&ip).is_some_and(|d| d.state != result.state) {
            state.diagnoses.remove(&ip);
        }
        if result.state == ProbeState::Error {
            *state
                .probe_errors
                .entry(result.fault.unwrap_or(LocalFault::Other))
                .or_default() += 1;
        }
        if let Some(key) = result.evidence_as::<SshEvidence>().and_then(|e| e.host_key.as_ref()) {
            let known = state.known_keys.get(&ip);
            let next = KnownKey::observe(known, key, result.finished_at);
            if known != Some(&next) {
                state.known_keys.insert(ip, next);
                self.ssh_memory_dirty = true;
            }
        }
        self.assess_ssh(id, ip, &result);
        self.targets[id.0].results.insert(ip, result);
    }

    /// Assesses an address's SSH handshake against its target's clients and keys, as of the
    /// probe's end; an address that is not open has no assessment.
    fn assess_ssh(&mut self, id: TargetId, ip: IpAddr, result: &ProbeResult) {
        let target = &self.config.targets[id.0];
        let policy = &target.ssh;
        let state = &mut self.targets[id.0];
        let report = result
            .evidence_as::<SshEvidence>()
            // A reload that changed `check` carries the last SSH result until the next probe.
            .filter(|_| result.state == ProbeState::Open && target.check == CheckKind::Ssh)
            .and_then(|evidence| ssh::assess(policy, evidence, state.known_keys.get(&ip), result.finished_at));
        match report {
            Some(report) => state.ssh.insert(ip, Arc::new(report)),
            None => state.ssh.remove(&ip),
        };
    }

    /// Forgets the host keys of addresses no longer probed, once the first sweep has shown what
    /// is probed (before it, DNS may not have answered yet): a pool that rotates its addresses
    /// does not grow the memory, or the file, without end.
    pub fn prune_known_keys(&mut self) {
        if !self.status.ready {
            return;
        }
        for state in &mut self.targets {
            let before = state.known_keys.len();
            let probed = &state.probed;
            state.known_keys.retain(|ip, _| probed.contains(ip));
            self.ssh_memory_dirty |= state.known_keys.len() != before;
        }
    }

    /// Every target's known host keys, by target name and port: what the shell saves.
    pub fn known_keys(&self) -> Vec<(&str, u16, &BTreeMap<IpAddr, KnownKey>)> {
        self.config
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(target, state)| (target.name.as_str(), target.port, &state.known_keys))
            .collect()
    }

    /// Takes known host keys saved before a restart, for the targets that still exist; what this
    /// run has already seen wins.
    pub fn restore_known_keys(&mut self, saved: Vec<(String, u16, BTreeMap<IpAddr, KnownKey>)>) {
        for (name, port, keys) in saved {
            if let Some(TargetId(index)) = self.target_id(&name, port) {
                for (ip, key) in keys {
                    self.targets[index].known_keys.entry(ip).or_insert(key);
                }
            }
        }
    }

    /// The session checks to start now: on each address whose last probe found SSH open, what
    /// is due and not still running (`running(target, port, ip)`). Each check's start is recorded
    /// here, so it is not handed out twice. A login that would send the secret to a host key that
    /// is not trusted (none proved yet, or one that changed within `ssh.host_key_change_hold`,
    /// with no pin) is not started: it is recorded as `host_key_unverified` at once.
    pub fn take_due_sessions(
        &mut self,
        now: SystemTime,
        running: impl Fn(&str, u16, IpAddr) -> bool,
    ) -> Vec<SessionJob> {
        let mut jobs = Vec::new();
        for (index, (target, state)) in self.config.targets.iter().zip(&mut self.targets).enumerate() {
            let policy = &target.ssh.session;
            if target.check != CheckKind::Ssh || (policy.idle.is_none() && policy.login.is_none()) {
                continue;
            }
            for (ip, result) in &state.results {
                if result.state != ProbeState::Open || running(&target.name, target.port, *ip) {
                    continue;
                }
                let mut due = session::due(policy, state.sessions.get(ip), now);
                if !due.idle && !due.login {
                    continue;
                }
                let trusted = trusted_keys(&target.ssh, state.known_keys.get(ip), now);
                let report = state.sessions.entry(*ip).or_default();
                if due.login {
                    report.login_started = Some(now);
                    if let Err(why) = &trusted {
                        report.login = Some(LoginResult {
                            state: session::SessionState::HostKeyUnverified,
                            methods: None,
                            detail: format!("no credential is sent: {why}"),
                            sftp: None,
                            finished_at: now,
                        });
                        due.login = false;
                    }
                }
                if due.idle {
                    report.idle_started = Some(now);
                }
                if !due.idle && !due.login {
                    continue;
                }
                jobs.push(SessionJob {
                    target: TargetId(index),
                    ip: *ip,
                    due,
                    logged_in_before: report.logged_in(),
                    login_keys: trusted.ok(),
                });
            }
        }
        jobs
    }

    /// The failing addresses whose raw diagnosis is due (`core::diagnosis::due`) and not still
    /// running (`running(target, port, ip)`). Diagnoses of addresses no longer probed are forgotten.
    pub fn take_due_diagnoses(
        &mut self,
        now: SystemTime,
        running: impl Fn(&str, u16, IpAddr) -> bool,
    ) -> Vec<DiagnosisJob> {
        let interval = self.config.global.diagnosis.trace_interval;
        let mut jobs = Vec::new();
        for (index, (target, state)) in self.config.targets.iter().zip(&mut self.targets).enumerate() {
            let probed = &state.probed;
            state.diagnoses.retain(|ip, _| probed.contains(ip));
            state.syn_ack_ttls.retain(|ip, _| probed.contains(ip));
            let healthy = |v4: bool| -> Vec<IpAddr> {
                state
                    .results
                    .iter()
                    .filter(|(ip, r)| r.state == ProbeState::Open && ip.is_ipv4() == v4)
                    .map(|(ip, _)| *ip)
                    .take(HEALTHY_SAMPLES)
                    .collect()
            };
            let (healthy_v4, healthy_v6) = (healthy(true), healthy(false));
            for (ip, result) in &state.results {
                if !diagnosis::due(result.state, state.diagnoses.get(ip).map(AsRef::as_ref), now, interval)
                    || running(&target.name, target.port, *ip)
                {
                    continue;
                }
                jobs.push(DiagnosisJob {
                    target: TargetId(index),
                    ip: *ip,
                    state: result.state,
                    // A route changes in a day; an older TTL would call the server's own reset forged.
                    own_syn_ack_ttls: state
                        .syn_ack_ttls
                        .get(ip)
                        .filter(|(_, seen)| {
                            now.duration_since(*seen)
                                .is_ok_and(|age| age < diagnosis::OWN_TTL_MAX_AGE)
                        })
                        .map(|(ttl, _)| *ttl)
                        .into_iter()
                        .collect(),
                    // A reset over IPv6 is compared with IPv6 SYN-ACKs: another family may be
                    // another path.
                    healthy: if ip.is_ipv4() {
                        healthy_v4.clone()
                    } else {
                        healthy_v6.clone()
                    },
                });
            }
        }
        jobs
    }

    /// Stores a raw diagnosis, and the SYN-ACK TTLs learnt while making it, unless the address
    /// left the probed set meanwhile. Whether it says something new (worth a log line).
    pub fn record_diagnosis(
        &mut self,
        id: TargetId,
        ip: IpAddr,
        diagnosis: Diagnosis,
        syn_acks: &[(IpAddr, u8)],
    ) -> bool {
        let Some(state) = self.targets.get_mut(id.0) else {
            return false;
        };
        for &(address, ttl) in syn_acks {
            if state.probed.contains(&address) {
                state.syn_ack_ttls.insert(address, (ttl, diagnosis.at));
            }
        }
        if !state.probed.contains(&ip) {
            return false;
        }
        let new = state
            .diagnoses
            .get(&ip)
            .is_none_or(|last| last.summary != diagnosis.summary);
        state.diagnoses.insert(ip, Arc::new(diagnosis));
        new
    }

    /// Stores how an idle hold ended, unless the address left the probed set meanwhile or a
    /// reload changed the hold it was made under.
    pub fn record_idle(&mut self, id: TargetId, ip: IpAddr, result: IdleResult, made_under: Option<IdlePolicy>) {
        if self.config.targets[id.0].ssh.session.idle != made_under {
            return;
        }
        let state = &mut self.targets[id.0];
        if state.probed.contains(&ip) {
            state.sessions.entry(ip).or_default().idle = Some(result);
        }
    }

    /// Stores how a login ended, unless the address left the probed set meanwhile or a reload
    /// changed the account. The next login is due a full interval after this one ended.
    pub fn record_login(&mut self, id: TargetId, ip: IpAddr, result: LoginResult, made_under: Option<&LoginPolicy>) {
        if self.config.targets[id.0].ssh.session.login.as_ref() != made_under {
            return;
        }
        let state = &mut self.targets[id.0];
        if state.probed.contains(&ip) {
            let report = state.sessions.entry(ip).or_default();
            let was_refused = report.is_refused();
            report.login_started = Some(
                report
                    .login_started
                    .map_or(result.finished_at, |s| s.max(result.finished_at)),
            );
            report.login = Some(result);
            // A refusal is remembered across restarts: the file changes when one comes or goes.
            self.ssh_memory_dirty |= was_refused || report.is_refused();
        }
    }

    /// Every target's refused logins, by target name and port: what the shell saves beside the
    /// known host keys.
    pub fn refused_logins(&self) -> Vec<(&str, u16, BTreeMap<IpAddr, RefusedLogin>)> {
        self.config
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(target, state)| {
                let account = target.ssh.session.login.as_ref().map(LoginPolicy::account);
                let refused = state
                    .sessions
                    .iter()
                    .filter_map(|(ip, report)| Some((*ip, report.refused_login(account.as_deref()?)?)))
                    .collect();
                (target.name.as_str(), target.port, refused)
            })
            .collect()
    }

    /// Takes refused logins saved before a restart, for targets that still log in with the same
    /// account... as far as a restart can tell: the target still has `ssh.auth`.
    pub fn restore_refused_logins(&mut self, saved: Vec<(String, u16, BTreeMap<IpAddr, RefusedLogin>)>) {
        for (name, port, refused) in saved {
            let Some(TargetId(index)) = self.target_id(&name, port) else {
                continue;
            };
            let Some(account) = self.config.targets[index]
                .ssh
                .session
                .login
                .as_ref()
                .map(LoginPolicy::account)
            else {
                continue;
            };
            // Another user, or a secret read from elsewhere, has not been refused yet.
            for (ip, login) in refused.into_iter().filter(|(_, login)| login.account == account) {
                self.targets[index]
                    .sessions
                    .entry(ip)
                    .or_insert_with(|| SessionReport::from_refused(login));
            }
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
                probe_errors: &t.probe_errors,
                bogus: &t.bogus,
                ssh: &t.ssh,
                sessions: &t.sessions,
                published_by: &t.published_by,
                diagnoses: &t.diagnoses,
            })
            .collect();
        let sources = self
            .config
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(target, state)| self.source_reports(target, state))
            .collect();
        audit::evaluate(&self.config, &inputs, sources)
    }

    /// The snapshot of this moment: the report and the daemon's status.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            report: self.report(),
            status: self.status,
            taken_at: SystemTime::now(),
            history: Arc::default(),
            timeline: crate::core::cause::Timeline::default(),
            broad_entry_prefix: self.config.global.broad_entry_prefix,
        }
    }

    fn source_reports(&self, target: &Target, state: &TargetState) -> Vec<SourceReport> {
        let cap = self.config.global.max_probe_addresses_per_prefix;
        state
            .sources
            .iter()
            .map(|source| {
                let families = match &source.held {
                    Held::Dns(books) => Family::ALL
                        .into_iter()
                        .filter_map(|family| books.up(family).map(|up| (family, up)))
                        .collect(),
                    _ => Vec::new(),
                };
                let url = match source.spec {
                    SourceSpec::Published(list) => Some(target.published[list].label.clone()),
                    SourceSpec::Dns | SourceSpec::Static => None,
                };
                let addresses = match &source.held {
                    Held::Dns(books) => books.addresses().len(),
                    Held::Static(addresses) => addresses.len(),
                    Held::List { prefixes, .. } => {
                        usize::try_from(prefix::probe_cost(prefixes, cap)).unwrap_or(usize::MAX)
                    }
                };
                SourceReport {
                    source: source.spec.kind(),
                    url,
                    up: source.status.up,
                    addresses,
                    last_success: source.status.last_success,
                    last_error: source.status.last_error.clone(),
                    failures: source.status.failures.iter().map(|(r, n)| (*r, *n)).collect(),
                    families,
                }
            })
            .collect()
    }
}

/// Applies one DNS refresh family by family; a family that failed fails the source (its addresses
/// may be missing) and is returned.
/// The host keys a secret may be sent to on an address: the pins, or else the key the handshake
/// audit proved there, unless it changed within `host_key_change_hold`. `Err` says why none is.
fn trusted_keys(policy: &SshPolicy, known: Option<&KnownKey>, now: SystemTime) -> Result<Vec<String>, String> {
    if !policy.host_keys.is_empty() {
        return Ok(policy.host_keys.clone());
    }
    match known {
        None => Err(
            "the handshake audit has proved no host key for this address (see its ssh_host_key_note); pin the vendor's key in ssh.host_keys".to_string(),
        ),
        Some(key) if key.changed_recently(now, policy.host_key_change_hold) => Err(format!(
            "the host key changed to {} (it was {}); confirm it with the vendor and pin it in ssh.host_keys, or wait ssh.host_key_change_hold",
            key.fingerprint,
            key.previous.as_deref().unwrap_or("?")
        )),
        Some(key) => Ok(vec![key.fingerprint.clone()]),
    }
}

fn apply_answers(
    books: &mut FamilyBooks,
    status: &mut SourceStatus,
    answers: DnsAnswers,
    retention: Duration,
    now: Instant,
    wall: SystemTime,
) -> Option<Failure> {
    let mut failure = None;
    for (family, outcome) in [(Family::Ipv4, answers.ipv4), (Family::Ipv6, answers.ipv6)] {
        match outcome {
            // No longer asked (a reload): its addresses leave now, not never.
            None => books.forget(family),
            Some(Ok(set)) => books.record(family, now, Some(&set), retention),
            Some(Err(failed)) => {
                books.record(family, now, None, retention);
                failure.get_or_insert(failed);
            }
        }
    }
    match &failure {
        None => status.succeeded(wall),
        Some(failure) => status.failed(failure),
    }
    failure
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    fn load(yaml: &str) -> Arc<Config> {
        let raw = config::parse_yaml(Path::new("s.yml"), yaml).unwrap();
        Arc::new(config::build(Path::new("s.yml"), &raw).unwrap())
    }

    fn fresh(prefixes: &[&str]) -> Update {
        Update::Fresh {
            prefixes: prefixes
                .iter()
                .map(|p| IpNet::from(p.parse::<IpAddr>().unwrap()))
                .collect(),
            validators: Validators::default(),
        }
    }

    fn lists(state: &State) -> Vec<(String, usize)> {
        state.report().targets[0]
            .sources
            .iter()
            .map(|s| (s.url.clone().unwrap(), s.addresses))
            .collect()
    }

    #[test]
    fn a_diagnosis_lasts_while_its_state_does_and_a_reload_that_turns_raw_probes_off_says_so() {
        use crate::core::diagnosis::{Evidence, diagnose};
        use crate::core::outcome::Attempt;
        let yaml = |raw: &str| {
            format!(
                "global:\n  diagnosis:\n    raw_probes: {raw}\ntargets:\n  - name: t\n    check: tcp\n    static: [192.0.2.1]\n"
            )
        };
        let mut state = State::new(load(&yaml("auto")));
        state.status.raw_probes = true;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let id = TargetId(0);
        state.recompute(id);
        let result =
            |s: ProbeState| ProbeResult::from_attempt(Attempt::ended(s, Duration::ZERO, "x"), 1, SystemTime::now());
        state.record_probe(id, ip, result(ProbeState::Timeout));
        let now = SystemTime::now();
        let jobs = state.take_due_diagnoses(now, |_, _, _| false);
        assert_eq!(jobs.len(), 1, "a timeout is due at once");
        let evidence = Evidence {
            trace: Some(crate::core::diagnosis::Trace::default()),
            ..Evidence::new(ProbeState::Timeout, ip, "198.51.100.2".parse().unwrap())
        };
        assert!(state.record_diagnosis(id, ip, diagnose(&evidence, now, 0), &[]));
        assert!(
            !state.record_diagnosis(id, ip, diagnose(&evidence, now, 0), &[]),
            "the same again is no news"
        );
        assert!(
            state.take_due_diagnoses(now, |_, _, _| false).is_empty(),
            "not again within trace_interval"
        );
        assert!(state.report().targets[0].addresses[0].diagnosis.is_some());
        // It recovers, then times out again: the old diagnosis explains nothing now.
        state.record_probe(id, ip, result(ProbeState::Open));
        state.record_probe(id, ip, result(ProbeState::Timeout));
        assert!(state.report().targets[0].addresses[0].diagnosis.is_none());
        assert_eq!(state.take_due_diagnoses(now, |_, _, _| false).len(), 1);
        // A reload that turns raw probes off: the metric's flag goes to 0.
        let off = state.reconfigured(&load(&yaml("off")));
        assert!(!off.status.raw_probes);
    }

    #[test]
    fn a_reload_that_reorders_or_drops_lists_keeps_each_lists_own_set() {
        let two = "targets:\n  - name: t\n    published:\n      - path: a.txt\n      - path: b.txt\n";
        let mut state = State::new(load(two));
        let (now, wall) = (Instant::now(), SystemTime::now());
        let id = |index| SourceId {
            target: TargetId(0),
            index,
        };
        state.apply(id(0), fresh(&["192.0.2.1"]), now, wall);
        state.apply(id(1), fresh(&["198.51.100.1", "198.51.100.2"]), now, wall);
        let (a, b) = (lists(&state)[0].0.clone(), lists(&state)[1].0.clone());

        let swapped = state.reconfigured(&load(
            "targets:\n  - name: t\n    published:\n      - path: b.txt\n      - path: a.txt\n",
        ));
        assert_eq!(lists(&swapped), [(b.clone(), 2), (a.clone(), 1)]);
        let dropped = state.reconfigured(&load("targets:\n  - name: t\n    published:\n      - path: b.txt\n"));
        assert_eq!(lists(&dropped), [(b, 2)]);
        // The carried list is refreshed again under its new place without a panic.
        let mut dropped = dropped;
        dropped.apply(id(0), fresh(&["198.51.100.3"]), now, wall);
        assert_eq!(dropped.targets[0].published.len(), 1);
    }

    #[test]
    fn an_update_that_does_not_fit_its_source_changes_nothing() {
        let config = load("targets:\n  - name: t\n    host: vendor.example\n");
        let mut state = State::new(config);
        let id = SourceId {
            target: TargetId(0),
            index: 0,
        };
        let failed = Update::Failed(Failure::new(Reason::Dns("proto"), "resolver down"));
        let applied = state.apply(id, failed, Instant::now(), SystemTime::now());
        assert!(applied.failure.is_some());
        assert_eq!(state.targets[0].sources[0].status.up, Some(false));
    }

    fn answers(v4: Option<&[&str]>, v6: Option<&[&str]>) -> Update {
        let set = |list: &[&str]| Ok(list.iter().map(|a| a.parse().unwrap()).collect());
        Update::Answers(DnsAnswers {
            ipv4: v4.map(set),
            ipv6: v6.map(set),
        })
    }

    const DNS: SourceId = SourceId {
        target: TargetId(0),
        index: 0,
    };

    #[test]
    fn an_unchanged_reload_counts_no_change_and_a_family_dropped_by_it_leaves() {
        let both = "targets:\n  - name: t\n    host: vendor.example\n";
        let mut state = State::new(load(both));
        let (now, wall) = (Instant::now(), SystemTime::now());
        state.apply(DNS, answers(Some(&["192.0.2.1"]), Some(&["2001:db8::1"])), now, wall);
        assert_eq!((state.targets[0].added_total, state.targets[0].removed_total), (2, 0));
        let mut reloaded = state.reconfigured(&load(both));
        assert_eq!(
            (reloaded.targets[0].added_total, reloaded.targets[0].removed_total),
            (2, 0)
        );
        assert_eq!(reloaded.targets[0].published.len(), 2);

        // The same host, now asked for IPv4 only: the AAAA addresses leave at the next refresh.
        let mut v4 = reloaded.reconfigured(&load(
            "targets:\n  - name: t\n    host: vendor.example\n    address_families: [ipv4]\n",
        ));
        v4.apply(DNS, answers(Some(&["192.0.2.1"]), None), now, wall);
        assert_eq!(v4.targets[0].published, BTreeSet::from(["192.0.2.1".parse().unwrap()]));
        assert_eq!(v4.report().targets[0].sources[0].families, [(Family::Ipv4, true)]);
        assert_eq!(v4.targets[0].removed_total, 1);
        reloaded.apply(DNS, answers(Some(&["192.0.2.1"]), Some(&["2001:db8::1"])), now, wall);
        assert_eq!(reloaded.targets[0].added_total, 2, "nothing new");
    }

    #[test]
    fn bogus_answers_and_prefixes_are_reported_and_never_probed() {
        let yaml = "targets:\n  - name: t\n    host: vendor.example\n    published:\n      - path: a.txt\n";
        let mut state = State::new(load(yaml));
        let (now, wall) = (Instant::now(), SystemTime::now());
        state.apply(
            DNS,
            answers(Some(&["0.0.0.0", "192.0.2.1", "127.0.0.1"]), Some(&[])),
            now,
            wall,
        );
        let list = SourceId {
            target: TargetId(0),
            index: 1,
        };
        let update = Update::Fresh {
            prefixes: ["169.254.0.0/16", "224.0.0.0/4", "198.51.100.0/30"]
                .iter()
                .map(|p| p.parse().unwrap())
                .collect(),
            validators: Validators::default(),
        };
        state.apply(list, update, now, wall);
        let target = &state.targets[0];
        let bogus: Vec<String> = target.bogus.keys().map(ToString::to_string).collect();
        assert_eq!(bogus, ["0.0.0.0", "127.0.0.1", "169.254.0.0", "224.0.0.0"]);
        assert!(target.probed.iter().all(|ip| !target.bogus.contains_key(ip)));
        assert_eq!(target.published.len(), 1 + 4, "192.0.2.1 and the /30");
        let prefixes: Vec<String> = target.prefixes.iter().map(ToString::to_string).collect();
        assert_eq!(
            prefixes,
            ["198.51.100.0/30"],
            "bogus prefixes are not audited as the vendor's"
        );
        let report = state.report();
        let rows: Vec<_> = report.targets[0]
            .addresses
            .iter()
            .filter(|a| a.bogus.is_some())
            .collect();
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|a| !a.published && a.probe.is_none()));
    }

    fn open_at(at: SystemTime) -> ProbeResult {
        use super::super::outcome::Attempt;
        ProbeResult::from_attempt(Attempt::ended(ProbeState::Open, Duration::from_millis(3), "ok"), 1, at)
    }

    fn sessions_config(extra: &str) -> Arc<Config> {
        // PATH is set in every test process, and the core reads no file: only its presence matters.
        load(&format!(
            "targets:\n  - name: t\n    static: [192.0.2.1, 192.0.2.2]\n    ssh:\n      idle_hold: 100s\n      auth: {{username: monitor, password_env: PATH}}\n{extra}"
        ))
    }

    #[test]
    fn session_checks_run_on_open_addresses_once_per_interval_and_a_rejection_waits() {
        let idle = |_: &str, _: u16, _: IpAddr| false;
        let mut state = State::new(sessions_config(""));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (up, down): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        state.record_probe(TargetId(0), up, open_at(t0));
        let mut timeout = open_at(t0);
        timeout.state = ProbeState::Timeout;
        state.record_probe(TargetId(0), down, timeout);
        state.targets[0].known_keys.insert(
            up,
            KnownKey {
                fingerprint: "SHA256:proved".into(),
                key_type: "ssh-ed25519".into(),
                since: t0,
                previous: None,
            },
        );
        let jobs = state.take_due_sessions(t0, idle);
        assert_eq!(jobs.len(), 1, "only the open address: {jobs:?}");
        assert_eq!((jobs[0].ip, jobs[0].due.idle, jobs[0].due.login), (up, true, true));
        assert_eq!(
            jobs[0].login_keys,
            Some(vec!["SHA256:proved".to_string()]),
            "the proved key guards the secret"
        );
        assert!(
            state.take_due_sessions(t0 + Duration::from_secs(1), idle).is_empty(),
            "started once"
        );

        let rejected = LoginResult {
            state: session::SessionState::AuthRejected,
            methods: Some(vec!["publickey".into(), "password".into()]),
            detail: String::new(),
            sftp: None,
            finished_at: t0,
        };
        let login = state.config.targets[0].ssh.session.login.clone();
        state.record_login(TargetId(0), up, rejected, login.as_ref());
        assert!(
            state.take_due_sessions(t0 + Duration::from_secs(899), idle).is_empty(),
            "a rejected login is not tried again within login_interval"
        );
        let jobs = state.take_due_sessions(t0 + Duration::from_secs(900), idle);
        assert_eq!(
            (jobs[0].due.login, jobs[0].due.idle),
            (true, false),
            "idle_interval is 1h"
        );
        assert!(!jobs[0].logged_in_before);
        let report = state.report();
        let address = &report.targets[0].addresses[0];
        assert_eq!(
            address.session.as_ref().and_then(|s| s.login.as_ref()).map(|l| l.state),
            Some(session::SessionState::AuthRejected)
        );

        // An unchanged reload keeps the schedule; a changed hold starts it afresh.
        let same = state.reconfigured(&sessions_config(""));
        let mut same = same;
        assert!(same.take_due_sessions(t0 + Duration::from_secs(901), idle).is_empty());
        let mut changed = state.reconfigured(&sessions_config("      idle_interval: 2h\n"));
        assert_eq!(changed.take_due_sessions(t0 + Duration::from_secs(901), idle).len(), 1);
        // Pins win over the key the address last proved.
        let pin = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        let mut pinned = State::new(sessions_config(&format!("      host_keys: [\"{pin}\"]\n")));
        pinned.record_probe(TargetId(0), up, open_at(t0));
        let jobs = pinned.take_due_sessions(t0, idle);
        assert_eq!(jobs[0].login_keys, Some(vec![pin.to_string()]));

        // A check still running is neither handed out again nor marked as started.
        let mut busy = State::new(sessions_config(""));
        busy.record_probe(TargetId(0), up, open_at(t0));
        assert!(busy.take_due_sessions(t0, |_, _, _| true).is_empty());
        assert!(
            busy.targets[0]
                .sessions
                .get(&up)
                .is_none_or(|r| r.login_started.is_none())
        );
    }

    #[test]
    fn no_secret_goes_to_a_key_that_is_unproved_or_changed_recently() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let up: IpAddr = "192.0.2.1".parse().unwrap();
        let idle = |_: &str, _: u16, _: IpAddr| false;
        for known in [
            None,
            Some(KnownKey {
                fingerprint: "SHA256:new".into(),
                key_type: "ssh-ed25519".into(),
                since: t0 - Duration::from_secs(60),
                previous: Some("SHA256:old".into()),
            }),
        ] {
            let mut state = State::new(sessions_config(""));
            state.record_probe(TargetId(0), up, open_at(t0));
            if let Some(known) = known.clone() {
                state.targets[0].known_keys.insert(up, known);
            }
            let jobs = state.take_due_sessions(t0, idle);
            assert_eq!(jobs.len(), 1, "the idle hold still runs: {known:?}");
            assert_eq!((jobs[0].due.login, jobs[0].due.idle), (false, true));
            assert_eq!(jobs[0].login_keys, None, "the hold is made without logging in");
            let login = state.targets[0].sessions[&up].login.clone().unwrap();
            assert_eq!(login.state, session::SessionState::HostKeyUnverified, "{known:?}");
            assert!(login.detail.contains("no credential is sent"), "{}", login.detail);
        }
    }
}
