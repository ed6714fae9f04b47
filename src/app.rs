//! The thin async shell: refreshes the sources, schedules probes across the interval within the
//! concurrency bounds, hands results to the state, and publishes the state's snapshot. `serve`
//! loops; `check` runs once.
//!
//! Two locks, never held together by a reader: the state's (probes and refreshes write it, for
//! microseconds) and the published snapshot's (renderers clone an `Arc` out of it). A scrape never
//! waits for a probe, and a probe never waits for a scrape.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{self, Config, ConfigError};
use serde::{Deserialize, Serialize};

use crate::core::history::History;
use crate::core::outcome::ProbeState;
use crate::core::session::{LoginResult, RefusedLogin, SessionState};
use crate::core::ssh::KnownKey;
use crate::core::state::{Change, Snapshot, State, SweepStatus, TargetId};
use crate::discovery::Discovery;
use crate::history_log::{self, HistoryLog};
use crate::prefix::prefix_label;
use crate::probe::raw::{self, RawProber};
use crate::probe::ssh::session::{self, SessionTarget};
use crate::probe::{self, Network, ProbeSpec};
use crate::state_file;

/// How long the publisher waits after a change before it renders a snapshot, so a sweep of
/// thousands of results renders one snapshot a second, not one per result (at 10,000 addresses a
/// snapshot costs ~16 ms: `cargo bench --bench snapshot`). Prometheus scrapes every 15-60 s.
pub const PUBLISH_COALESCE: Duration = Duration::from_secs(1);

/// How many of the most recent changes the page and the API show; the file keeps more.
pub const HISTORY_IN_MEMORY: usize = 10_000;

/// State shared by the scheduler, the probes and the publisher.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// The last published snapshot; renderers subscribe to it.
    published: watch::Sender<Arc<Snapshot>>,
    /// Serialises publishing, so a snapshot of older state never replaces a newer one.
    publishing: Mutex<()>,
    /// Set when the state changed since the last snapshot.
    dirty: Notify,
    /// (target, port, ip) of probes running now: a slow probe is never started twice.
    in_flight: Mutex<HashSet<(String, u16, IpAddr)>>,
    /// The same for session checks (an idle hold lasts minutes).
    sessions_in_flight: Mutex<HashSet<(String, u16, IpAddr)>>,
    /// The same for raw diagnoses.
    diagnoses_in_flight: Mutex<HashSet<(String, u16, IpAddr)>>,
    /// Raw diagnosis, when this process may send raw packets (`enable_raw_probes`).
    raw: OnceLock<Arc<RawProber>>,
    /// Bounds the raw diagnoses running at once.
    diagnosis_slots: Arc<Semaphore>,
    /// What changed when; taken with `publishing` held, so events come in snapshot order.
    history: Mutex<History>,
    /// The history's file (`serve` only: `check` reads the file but never writes it).
    history_log: Mutex<Option<HistoryLog>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still worth serving.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Shared state for a freshly loaded configuration.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        let state = State::new(config);
        let (published, _) = watch::channel(Arc::new(state.snapshot()));
        Arc::new(Self {
            state: Mutex::new(state),
            published,
            publishing: Mutex::new(()),
            dirty: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            sessions_in_flight: Mutex::new(HashSet::new()),
            diagnoses_in_flight: Mutex::new(HashSet::new()),
            raw: OnceLock::new(),
            diagnosis_slots: Arc::new(Semaphore::new(DIAGNOSIS_CONCURRENCY)),
            history: Mutex::new(History::new(HISTORY_IN_MEMORY)),
            history_log: Mutex::new(None),
        })
    }

    /// Turns raw diagnosis on: failing addresses get raw SYNs and traces from now on.
    pub fn enable_raw_probes(&self, raw: Arc<RawProber>) {
        let _ = self.raw.set(raw);
        self.update(|state| state.status.raw_probes = true);
    }

    /// Reads the history in the state directory, so `since` goes on from where the last run
    /// left it; with `keep_writing`, every change from now on is appended to it (`serve`).
    pub fn restore_history(&self, keep_writing: bool) {
        let global = &self.config().global;
        let mut history = lock(&self.history);
        history_log::restore(&global.state_dir, &mut history);
        if keep_writing {
            match HistoryLog::open(&global.state_dir, global.history_max_bytes, &history) {
                Ok(log) => *lock(&self.history_log) = Some(log),
                Err(error) => tracing::warn!(
                    dir = %global.state_dir.display(),
                    %error,
                    "history: cannot open its file; changes are kept in memory only (and lost at restart)"
                ),
            }
        }
    }

    /// Runs `f` on the state under its lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.state))
    }

    /// Changes the state under its lock, and marks the snapshot out of date.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let out = f(&mut lock(&self.state));
        self.dirty.notify_one();
        out
    }

    /// Changes what the state holds for the target named `name` probing `port`, found again by
    /// name and port (a reload since the work started may have renumbered or removed it).
    pub fn update_target(&self, name: &str, port: u16, f: impl FnOnce(&mut State, TargetId)) {
        self.update(|state| {
            if let Some(id) = state.target_id(name, port) {
                f(state, id);
            }
        });
    }

    /// Changes the state under its lock; the snapshot is marked out of date only when `f` says
    /// it changed something.
    pub fn update_if<R>(&self, f: impl FnOnce(&mut State) -> (R, bool)) -> R {
        let (out, changed) = f(&mut lock(&self.state));
        if changed {
            self.dirty.notify_one();
        }
        out
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.with_state(|s| Arc::clone(&s.config))
    }

    /// Renders the state into a new snapshot now. The state's lock is held only to copy it.
    pub fn publish(&self) -> Arc<Snapshot> {
        let _one_at_a_time = lock(&self.publishing);
        let copy = self.with_state(State::clone);
        let mut snapshot = copy.snapshot();
        {
            let mut history = lock(&self.history);
            history.set_lags(&crate::core::cause::lags(&copy.config));
            let events = history.observe(&mut snapshot.report, snapshot.taken_at, snapshot.status.ready);
            if let Some(log) = lock(&self.history_log).as_mut() {
                log.append(&events, &history);
            }
            snapshot.history = history.recent();
            snapshot.timeline = history.timeline();
        }
        let snapshot = Arc::new(snapshot);
        self.published.send_replace(Arc::clone(&snapshot));
        snapshot
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.published.borrow())
    }

    /// A receiver of every snapshot published from now on, for the renderers.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    /// Publishes a snapshot whenever the state changed, at most once per [`PUBLISH_COALESCE`].
    pub async fn publish_changes(self: Arc<Self>) {
        loop {
            self.dirty.notified().await;
            tokio::time::sleep(PUBLISH_COALESCE).await;
            self.publish();
        }
    }
}

/// Concurrency bounds of one configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The configuration these bounds were made for: a sweep that starts after a reload makes its own.
    config: Arc<Config>,
    global: Arc<Semaphore>,
    per_target: Vec<Arc<Semaphore>>,
    /// Idle holds in flight per target (`ssh.idle_concurrency`): a hold takes minutes, so it
    /// never holds a probe's slot.
    idle: Vec<Arc<Semaphore>>,
}

impl Limits {
    /// The bounds `config` sets.
    pub fn new(config: &Arc<Config>) -> Self {
        Self {
            config: Arc::clone(config),
            global: Arc::new(Semaphore::new(config.global.concurrency)),
            per_target: config
                .targets
                .iter()
                .map(|_| Arc::new(Semaphore::new(config.global.per_target_concurrency)))
                .collect(),
            idle: config
                .targets
                .iter()
                .map(|t| Arc::new(Semaphore::new(t.ssh.session.idle.map_or(1, |idle| idle.concurrency))))
                .collect(),
        }
    }
}

/// Gives every source that keeps something across restarts (published lists) its saved set,
/// where the state has nothing yet.
pub fn restore(shared: &Shared, discovery: &Discovery) {
    let config = shared.config();
    let fresh: Vec<_> = shared.with_state(|state| {
        state
            .source_ids()
            .filter(|(_, source)| source.is_fresh())
            .map(|(id, source)| (id, source.spec))
            .collect()
    });
    for (id, spec) in fresh {
        if let Some(update) = discovery.restore(&config, id, spec) {
            shared.update(|state| {
                // Ids belong to one configuration: a reload meanwhile makes this one moot.
                if Arc::ptr_eq(&state.config, &config) {
                    state.apply(id, update, Instant::now().into_std(), SystemTime::now());
                }
            });
        }
    }
}

/// The SSH host keys each address presented, kept in `state_dir` so `host_key_changed` survives
/// a restart.
const KNOWN_KEYS_FILE: &str = "ssh-host-keys.json";

#[derive(Serialize, Deserialize)]
struct SavedKeys {
    version: u32,
    targets: Vec<SavedTargetKeys>,
}

#[derive(Serialize, Deserialize)]
struct SavedTargetKeys {
    target: String,
    port: u16,
    keys: BTreeMap<IpAddr, KnownKey>,
    /// Logins the server refused: not tried again before `login_interval`, restart or not.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    refused_logins: BTreeMap<IpAddr, RefusedLogin>,
}

/// Gives the state the host keys saved before a restart. A corrupt file is reported and ignored:
/// the keys are learned again, and only a change from then on is reported.
pub fn restore_known_keys(shared: &Shared) {
    let path = shared.config().global.state_dir.join(KNOWN_KEYS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read the SSH host keys seen before; learning them again");
            return;
        }
    };
    match serde_json::from_slice::<SavedKeys>(&bytes) {
        Ok(saved) => shared.update(|state| {
            let mut keys = Vec::new();
            let mut refused = Vec::new();
            for t in saved.targets {
                refused.push((t.target.clone(), t.port, t.refused_logins));
                keys.push((t.target, t.port, t.keys));
            }
            state.restore_known_keys(keys);
            state.restore_refused_logins(refused);
        }),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "the SSH host keys file is corrupt; ignored, learning them again");
        }
    }
}

/// Saves the known host keys if one changed since the last save.
pub fn save_known_keys(shared: &Shared) {
    let Some((state_dir, saved)) = shared.update(|state| {
        state.prune_known_keys();
        if !std::mem::take(&mut state.ssh_memory_dirty) {
            return None;
        }
        let targets = state
            .known_keys()
            .into_iter()
            .zip(state.refused_logins())
            .filter(|((_, _, keys), (_, _, refused))| !keys.is_empty() || !refused.is_empty())
            .map(|((target, port, keys), (_, _, refused_logins))| SavedTargetKeys {
                target: target.to_string(),
                port,
                keys: keys.clone(),
                refused_logins,
            })
            .collect();
        Some((state.config.global.state_dir.clone(), SavedKeys { version: 1, targets }))
    }) else {
        return;
    };
    let path = state_dir.join(KNOWN_KEYS_FILE);
    let bytes = serde_json::to_vec_pretty(&saved).expect("plain data serializes");
    if let Err(error) = state_file::write_atomically(&path, &bytes) {
        tracing::warn!(file = %path.display(), %error, "cannot save the SSH host keys seen");
        shared.update(|state| state.ssh_memory_dirty = true);
    }
}

/// Refreshes every source that is due (every list unless `only_due`; DNS always), concurrently,
/// and applies the results.
pub async fn refresh(shared: &Shared, discovery: &Discovery, only_due: bool) {
    let (config, due) = shared.with_state(|state| {
        (
            Arc::clone(&state.config),
            state.due(Instant::now().into_std(), only_due),
        )
    });
    let mut tasks = JoinSet::new();
    for (id, spec, validators) in due {
        let (discovery, config) = (discovery.clone(), Arc::clone(&config));
        tasks.spawn(async move { (id, spec, discovery.refresh(config, id, spec, validators).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((id, spec, update)) = joined else { continue };
        let applied = shared.update(|state| {
            // A reload while we were asking: this answer belongs to a configuration gone by.
            Arc::ptr_eq(&state.config, &config).then(|| {
                let applied = state.apply(id, update, Instant::now().into_std(), SystemTime::now());
                (applied, state.source_name(id))
            })
        });
        let Some((applied, source)) = applied else { continue };
        let target = &config.targets[id.target.0].name;
        if let Some(failure) = &applied.failure {
            tracing::warn!(target_name = %target, source = %source, reason = failure.reason.as_label(), error = %failure, "refresh failed; keeping the last good set");
        }
        if let Some(accepted) = &applied.accepted {
            discovery.accepted(&config, id, spec, accepted);
        }
        log_change(target, &source, &applied.change);
    }
    shared.publish();
}

fn log_change(target: &str, source: &str, change: &Change) {
    if !change.is_empty() {
        let list = |items: &[ipnet::IpNet]| items.iter().map(prefix_label).collect::<Vec<_>>().join(",");
        tracing::info!(target_name = %target, source = %source, added = %list(&change.added), removed = %list(&change.removed), "published set changed");
    }
}

/// Probes every probed address of every target once. With `spread`, start times are spread evenly
/// across it; without, probes start as fast as the concurrency bounds allow. Sweeps may overlap
/// (a dropped address outlives the interval): an address still being probed is skipped, and only
/// the first sweep decides readiness.
pub async fn sweep<N: Network>(
    shared: Arc<Shared>,
    network: Arc<N>,
    limits: Limits,
    spread: Option<Duration>,
    first: bool,
) {
    let started = Instant::now();
    let (config, work) = shared.with_state(|state| (Arc::clone(&state.config), interleave(state)));
    // Spawned before a reload, started after it: the bounds must be the new configuration's.
    let limits = if Arc::ptr_eq(&limits.config, &config) {
        limits
    } else {
        Limits::new(&config)
    };
    let total = work.len();
    let mut tasks = JoinSet::new();
    for (position, (target_id, ip)) in work.into_iter().enumerate() {
        let target = &config.targets[target_id.0];
        let spec = ProbeSpec {
            port: target.port,
            check: target.check,
            timeout: config.global.timeout,
            attempts: config.global.attempts,
            retry_delay: config.global.retry_delay,
        };
        let key = (target.name.clone(), target.port, ip);
        #[allow(clippy::cast_precision_loss)]
        let offset = spread.map_or(Duration::ZERO, |window| window.mul_f64(position as f64 / total as f64));
        let (shared, network) = (Arc::clone(&shared), Arc::clone(&network));
        let target_slots = Arc::clone(&limits.per_target[target_id.0]);
        let global_slots = Arc::clone(&limits.global);
        tasks.spawn(async move {
            tokio::time::sleep_until(started + offset).await;
            if !lock(&shared.in_flight).insert(key.clone()) {
                tracing::debug!(ip = %ip, "previous probe still running; skipped");
                return;
            }
            let result = probe::probe(network.as_ref(), ip, spec, &target_slots, &global_slots).await;
            lock(&shared.in_flight).remove(&key);
            shared.update_target(&key.0, key.1, |state, id| state.record_probe(id, ip, result));
        });
    }
    while tasks.join_next().await.is_some() {}
    let duration = started.elapsed();
    shared.update(|state| {
        state.status.sweep = SweepStatus {
            last_finished: Some(SystemTime::now()),
            last_duration: Some(duration),
        };
        if first {
            state.status.ready = true;
        }
    });
    shared.publish();
}

/// Every probed address as (target, ip), round-robin across targets so one large target does
/// not queue the others behind its per-target limit.
fn interleave(state: &State) -> Vec<(TargetId, IpAddr)> {
    let mut lists: Vec<_> = state.targets.iter().map(|t| t.probed.iter().copied()).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for (index, list) in lists.iter_mut().enumerate() {
            if let Some(ip) = list.next() {
                out.push((TargetId(index), ip));
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// How often the daemon looks for session checks that are due: they run on their own intervals
/// (`ssh.idle_interval`, `ssh.login_interval`), on addresses the sweeps found open.
pub const SESSION_TICK: Duration = Duration::from_secs(10);

/// User name of an idle hold made without credentials (the `none` request names one).
const ANONYMOUS_USER: &str = "whitelist-audit";

/// (target, port, ip) of the work of one kind running now.
type InFlightSet = Mutex<HashSet<(String, u16, IpAddr)>>;

/// Removes a session check's (or a diagnosis') key from its in-flight set when the task ends,
/// however it ends.
struct InFlight {
    shared: Arc<Shared>,
    key: (String, u16, IpAddr),
    set: fn(&Shared) -> &InFlightSet,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock((self.set)(&self.shared)).remove(&self.key);
    }
}

/// Raw diagnoses running at once: each is a few dozen packets at most, and this is an auditor,
/// never a scanner.
pub const DIAGNOSIS_CONCURRENCY: usize = 4;

/// Starts a raw diagnosis of every failing address that is due (a new failure, or
/// `global.diagnosis.trace_interval` since its last one), each in `tasks`. Nothing without raw
/// probes.
pub fn start_diagnoses(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) {
    let Some(prober) = shared.raw.get() else {
        return;
    };
    if shared.config().global.diagnosis.raw_probes == config::RawProbes::Off {
        return;
    }
    // A reload may have turned it off and another back on: the sockets are still open.
    if !shared.with_state(|state| state.status.raw_probes) {
        shared.update(|state| state.status.raw_probes = true);
    }
    let now = SystemTime::now();
    let (config, jobs) = shared.update_if(|state| {
        let mut in_flight = lock(&shared.diagnoses_in_flight);
        let jobs = state.take_due_diagnoses(now, |name, port, ip| in_flight.contains(&(name.to_string(), port, ip)));
        for job in &jobs {
            let target = &state.config.targets[job.target.0];
            in_flight.insert((target.name.clone(), target.port, job.ip));
        }
        ((Arc::clone(&state.config), jobs), false)
    });
    for job in jobs {
        let target = &config.targets[job.target.0];
        let guard = InFlight {
            shared: Arc::clone(shared),
            key: (target.name.clone(), target.port, job.ip),
            set: |shared| &shared.diagnoses_in_flight,
        };
        let work = raw::diagnose::Job {
            address: SocketAddr::new(job.ip, target.port),
            state: job.state,
            own_syn_ack_ttls: job.own_syn_ack_ttls,
            healthy: job.healthy,
        };
        let settings = config.global.diagnosis;
        let wait = raw::diagnose::reply_wait(config.global.timeout);
        let (shared, prober) = (Arc::clone(shared), Arc::clone(prober));
        tasks.spawn(async move {
            let _slot = shared.diagnosis_slots.acquire().await.expect("diagnosis semaphore closed");
            let (name, port, ip) = &guard.key;
            // Waiting for a slot may take minutes when many addresses fail: one that recovered
            // meanwhile (or left) gets no packets.
            let still = shared.with_state(|state| {
                let id = state.target_id(name, *port)?;
                Some(state.targets[id.0].results.get(ip)?.state)
            });
            if still != Some(work.state) {
                return;
            }
            let outcome = raw::diagnose::run(&prober, &work, &settings, wait).await;
            let summary = outcome.diagnosis.summary.clone();
            let mut new = false;
            shared.update_target(name, *port, |state, id| {
                new = state.record_diagnosis(id, *ip, outcome.diagnosis, &outcome.syn_acks);
            });
            // Said once; the same diagnosis again every trace_interval is no news.
            if new {
                tracing::info!(target = %name, %ip, state = work.state.as_label(), diagnosis = %summary, "raw diagnosis");
            } else {
                tracing::debug!(target = %name, %ip, diagnosis = %summary, "raw diagnosis unchanged");
            }
            drop(guard);
        });
    }
}

/// Starts every session check that is due, each in `tasks`. A login holds a probe's slots while
/// it runs; an idle hold holds one of its target's idle slots instead.
/// With `persist` (the daemon, never `check`), a refused login is saved to the state directory
/// at once.
pub fn start_sessions<N: Network>(
    shared: &Arc<Shared>,
    network: &Arc<N>,
    limits: &Limits,
    tasks: &mut JoinSet<()>,
    persist: bool,
) {
    let now = SystemTime::now();
    // Taken and marked in flight under one lock, so a check that is still running is neither
    // started twice nor counted as started (which would postpone it a whole interval).
    let (config, jobs) = shared.update_if(|state| {
        let mut in_flight = lock(&shared.sessions_in_flight);
        let jobs = state.take_due_sessions(now, |name, port, ip| in_flight.contains(&(name.to_string(), port, ip)));
        for job in &jobs {
            let target = &state.config.targets[job.target.0];
            in_flight.insert((target.name.clone(), target.port, job.ip));
        }
        // Every 10 s tick comes here: a tick with nothing due changes nothing worth a snapshot.
        // (A login refused for an untrusted key is recorded here; its address always gets an
        // idle job too, or the refusal is published with the next probe result.)
        let changed = !jobs.is_empty();
        ((Arc::clone(&state.config), jobs), changed)
    });
    let limits = if Arc::ptr_eq(&limits.config, &config) {
        limits.clone()
    } else {
        Limits::new(&config)
    };
    for job in jobs {
        let target = &config.targets[job.target.0];
        let guard = InFlight {
            shared: Arc::clone(shared),
            key: (target.name.clone(), target.port, job.ip),
            set: |shared| &shared.sessions_in_flight,
        };
        let session_target = SessionTarget {
            address: SocketAddr::new(job.ip, target.port),
            expected_keys: job.login_keys.clone().unwrap_or_default(),
            timeout: config.global.timeout,
        };
        let policy = target.ssh.session.clone();
        let (shared, network) = (Arc::clone(shared), Arc::clone(network));
        let target_slots = Arc::clone(&limits.per_target[job.target.0]);
        let global_slots = Arc::clone(&limits.global);
        let idle_slots = Arc::clone(&limits.idle[job.target.0]);
        tasks.spawn(async move {
            let key = guard.key.clone();
            let mut logged_in = job.logged_in_before;
            if let (true, Some(login)) = (job.due.login, &policy.login) {
                let result = {
                    let _target = target_slots.acquire().await.expect("target semaphore closed");
                    let _global = global_slots.acquire().await.expect("global semaphore closed");
                    session::login(network.as_ref(), &session_target, login).await
                };
                logged_in = result.state == SessionState::LoginOk;
                log_login(&key, &result);
                shared.update_target(&key.0, key.1, |state, id| {
                    state.record_login(id, job.ip, result, Some(login));
                });
                // A refusal is on disk at once: a restart right after it must not try again.
                if persist {
                    save_known_keys(&shared);
                }
            }
            if let (true, Some(idle)) = (job.due.idle, policy.idle) {
                let _slot = idle_slots.acquire().await.expect("idle semaphore closed");
                // A secret goes only to a trusted key, and only while it is known to work.
                let login = policy.login.as_ref().filter(|_| logged_in && job.login_keys.is_some());
                let user = policy.login.as_ref().map_or(ANONYMOUS_USER, |l| l.username.as_str());
                let outcome = session::idle_hold(network.as_ref(), &session_target, idle.hold, login, user).await;
                if outcome.idle.state == SessionState::IdleKilled {
                    tracing::warn!(target = %key.0, ip = %job.ip, detail = %outcome.idle.detail, "idle session killed on the path");
                }
                if let Some(refused) = &outcome.refused_login {
                    log_login(&key, refused);
                }
                shared.update_target(&key.0, key.1, |state, id| {
                    if let Some(refused) = outcome.refused_login {
                        state.record_login(id, job.ip, refused, policy.login.as_ref());
                    }
                    state.record_idle(id, job.ip, outcome.idle, Some(idle));
                });
                if persist {
                    save_known_keys(&shared);
                }
            }
            drop(guard);
        });
    }
}

fn log_login(key: &(String, u16, IpAddr), result: &LoginResult) {
    // The detail names the user and where the secret was read, never the secret.
    if result.state.is_problem() {
        tracing::warn!(target = %key.0, ip = %key.2, state = result.state.as_label(), detail = %result.detail, "SSH login check failed");
    } else {
        tracing::debug!(target = %key.0, ip = %key.2, state = result.state.as_label(), "SSH login check");
    }
}

/// How far `check` has come, for a person waiting at a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Whether the sources are still being asked (before any probe).
    pub discovering: bool,
    /// Addresses with a result, of those to probe.
    pub done: usize,
    pub total: usize,
    pub open: usize,
    /// Session checks (logins, idle holds) running: an idle hold takes its whole `ssh.idle_hold`.
    pub sessions: usize,
    /// Raw diagnoses of failing addresses started and not finished.
    pub diagnoses: usize,
    pub elapsed: Duration,
}

/// Receives [`Progress`] once a second while `check` runs.
pub type ProgressReport = Box<dyn Fn(Progress) + Send + Sync>;

/// One refresh and one sweep, as fast as the bounds allow: `check`. `progress`, if any, hears how
/// far it has come once a second, from the first second on.
pub async fn check_once<N: Network>(
    config: Config,
    network: Arc<N>,
    raw: Option<Arc<RawProber>>,
    progress: Option<ProgressReport>,
) -> Arc<Snapshot> {
    let config = Arc::new(config);
    let shared = Shared::new(Arc::clone(&config));
    if let Some(raw) = raw {
        shared.enable_raw_probes(raw);
    }
    let discovering = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticker = progress.map(|report| {
        let (shared, discovering) = (Arc::clone(&shared), Arc::clone(&discovering));
        tokio::spawn(async move {
            let started = Instant::now();
            let mut every = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                every.tick().await;
                let (done, total, open) = shared.with_state(|state| {
                    state.targets.iter().fold((0, 0, 0), |(done, total, open), t| {
                        let up = t.results.values().filter(|r| r.state == ProbeState::Open).count();
                        (done + t.results.len(), total + t.probed.len(), open + up)
                    })
                });
                let sessions = lock(&shared.sessions_in_flight).len();
                let diagnoses = lock(&shared.diagnoses_in_flight).len();
                report(Progress {
                    discovering: discovering.load(std::sync::atomic::Ordering::Relaxed),
                    done,
                    total,
                    open,
                    sessions,
                    diagnoses,
                    elapsed: started.elapsed(),
                });
            }
        })
    });
    let discovery = Discovery::new();
    restore(&shared, &discovery);
    shared.restore_history(false);
    refresh(&shared, &discovery, false).await;
    discovering.store(false, std::sync::atomic::Ordering::Relaxed);
    let limits = Limits::new(&config);
    sweep(Arc::clone(&shared), Arc::clone(&network), limits.clone(), None, true).await;
    let mut sessions = JoinSet::new();
    start_sessions(&shared, &network, &limits, &mut sessions, false);
    start_diagnoses(&shared, &mut sessions);
    if !sessions.is_empty() {
        while sessions.join_next().await.is_some() {}
        shared.publish();
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    shared.snapshot()
}

/// A request to reload the configuration, with a channel for the outcome (`http::ReloadRequest`).
pub type ReloadRequest = oneshot::Sender<Result<(), ConfigError>>;

/// The daemon's loop: refresh and sweep every interval, reload on request, until `shutdown`.
pub async fn run<N: Network>(
    shared: Arc<Shared>,
    network: Arc<N>,
    mut reloads: mpsc::Receiver<ReloadRequest>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let publisher = tokio::spawn(Arc::clone(&shared).publish_changes());
    let mut config = shared.config();
    let mut limits = Limits::new(&config);
    let mut ticker = new_ticker(config.global.interval);
    let mut first = true;
    let mut session_ticker = new_ticker(SESSION_TICK);
    let mut sessions = JoinSet::new();
    // Discovery runs before the sweep on the first tick and after a reload, so new targets start
    // with addresses; otherwise in the background, so a resolver or vendor site that times out
    // never delays the probes of the addresses already known.
    let mut discover_before_sweep = true;
    let mut background: Option<tokio::task::JoinHandle<()>> = None;
    let discovery = Discovery::new();
    restore(&shared, &discovery);
    restore_known_keys(&shared);
    shared.restore_history(true);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                publisher.abort();
                save_known_keys(&shared);
                return;
            }
            Some(reply) = reloads.recv() => {
                let outcome = reload(&shared, &config.path);
                // `reload` swaps the configuration only when the file says something new.
                let changed = !Arc::ptr_eq(&shared.config(), &config);
                if changed {
                    config = shared.config();
                    restore(&shared, &discovery);
                    // A target the reload added may have keys from an earlier run; what this
                    // run has seen wins.
                    save_known_keys(&shared);
                    restore_known_keys(&shared);
                    limits = Limits::new(&config);
                    ticker = new_ticker(config.global.interval);
                    discover_before_sweep = true;
                }
                let _ = reply.send(outcome);
                continue;
            }
            _ = session_ticker.tick() => {
                while let Some(ended) = sessions.try_join_next() {
                    if let Err(err) = ended {
                        tracing::error!(error = %err, "a session check task failed; it runs again when due");
                    }
                }
                start_sessions(&shared, &network, &limits, &mut sessions, true);
                start_diagnoses(&shared, &mut sessions);
                continue;
            }
            _ = ticker.tick() => {}
        }
        // Once an interval is often enough: a change is also in the metrics at once.
        save_known_keys(&shared);
        if discover_before_sweep {
            refresh(&shared, &discovery, true).await;
            discover_before_sweep = false;
        } else if background.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
            let (shared, discovery) = (Arc::clone(&shared), discovery.clone());
            background = Some(tokio::spawn(async move { refresh(&shared, &discovery, true).await }));
        } else {
            tracing::debug!("previous discovery still running; this interval probes the current set");
        }
        tokio::spawn(sweep(
            Arc::clone(&shared),
            Arc::clone(&network),
            limits.clone(),
            Some(config.global.interval),
            first,
        ));
        first = false;
    }
}

fn new_ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Loads the configuration again; a bad one is refused and the running one kept.
fn reload(shared: &Shared, path: &std::path::Path) -> Result<(), ConfigError> {
    let outcome = match config::load(path) {
        Ok(new) => {
            let new = Arc::new(new);
            let was_off = shared.config().global.diagnosis.raw_probes == config::RawProbes::Off;
            shared.update(|state| {
                // An unchanged file keeps everything as it is: no refresh, no sweep.
                if !new.same_as(&state.config) {
                    *state = state.reconfigured(&new);
                }
                state.status.reload_ok = true;
            });
            if was_off && new.global.diagnosis.raw_probes == config::RawProbes::Auto && shared.raw.get().is_none() {
                tracing::warn!(
                    "global.diagnosis.raw_probes: auto takes effect at the next start: the raw sockets are opened at start (and need CAP_NET_RAW)"
                );
            }
            tracing::info!(file = %path.display(), "configuration reloaded");
            Ok(())
        }
        Err(err) => {
            shared.update(|state| state.status.reload_ok = false);
            tracing::error!(error = %err.summary(), "configuration reload failed; keeping the running configuration");
            Err(err)
        }
    };
    shared.publish();
    outcome
}

#[cfg(test)]
mod tests {
    //! The scheduler against a scripted [`Network`] in paused time: every expectation is exact,
    //! and no packet leaves the process.

    use std::collections::HashMap;
    use std::io;
    use std::net::SocketAddr;
    use std::path::Path;

    use tokio::io::DuplexStream;

    use super::*;
    use crate::core::outcome::{LocalFault, ProbeResult};

    /// How the scripted network answers a connect to one address.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        /// The handshake completes after this long.
        Accept(Duration),
        /// A reset after this long.
        Refuse(Duration),
        /// Never answers.
        Hang,
        /// This host's own fault, at once.
        Errno(i32),
    }

    #[derive(Debug)]
    struct Scripted {
        answers: HashMap<IpAddr, Answer>,
        origin: Instant,
        /// (address, when the connect started, relative to `origin`).
        connects: Mutex<Vec<(IpAddr, Duration)>>,
        active: Mutex<(usize, usize)>,
    }

    impl Scripted {
        fn new(answers: impl IntoIterator<Item = (&'static str, Answer)>) -> Arc<Self> {
            Arc::new(Self {
                answers: answers.into_iter().map(|(ip, a)| (ip.parse().unwrap(), a)).collect(),
                origin: Instant::now(),
                connects: Mutex::new(Vec::new()),
                active: Mutex::new((0, 0)),
            })
        }

        fn connects_to(&self, ip: &str) -> Vec<Duration> {
            let ip: IpAddr = ip.parse().unwrap();
            lock(&self.connects)
                .iter()
                .filter(|(at, _)| *at == ip)
                .map(|(_, when)| *when)
                .collect()
        }

        fn most_at_once(&self) -> usize {
            lock(&self.active).1
        }
    }

    impl Network for Scripted {
        type Stream = DuplexStream;

        async fn connect(&self, address: SocketAddr) -> io::Result<DuplexStream> {
            let ip = address.ip();
            lock(&self.connects).push((ip, self.origin.elapsed()));
            {
                let mut active = lock(&self.active);
                active.0 += 1;
                active.1 = active.1.max(active.0);
            }
            let answer = self.answers[&ip];
            let outcome = match answer {
                Answer::Accept(after) => {
                    tokio::time::sleep(after).await;
                    Ok(tokio::io::duplex(64).0)
                }
                Answer::Refuse(after) => {
                    tokio::time::sleep(after).await;
                    Err(io::Error::from_raw_os_error(111))
                }
                Answer::Hang => std::future::pending().await,
                Answer::Errno(code) => Err(io::Error::from_raw_os_error(code)),
            };
            lock(&self.active).0 -= 1;
            outcome
        }
    }

    /// A configuration probing `addresses` (documentation range: never sent anywhere, the network
    /// is scripted) with `check: tcp`.
    fn config(global: &str, addresses: &[&str]) -> Arc<Config> {
        let yaml = format!(
            "global: {{{global}}}\ntargets:\n  - name: vendor\n    check: tcp\n    static: [{}]\n",
            addresses.join(", ")
        );
        load(&yaml)
    }

    fn load(yaml: &str) -> Arc<Config> {
        let path = Path::new("test.yml");
        let raw = config::parse_yaml(path, yaml).unwrap();
        Arc::new(config::build(path, &raw).unwrap())
    }

    /// One sweep with the bounds of the configuration the state holds now.
    async fn sweep_now(shared: &Arc<Shared>, network: &Arc<Scripted>, spread: Option<Duration>, first: bool) {
        let limits = Limits::new(&shared.config());
        sweep(Arc::clone(shared), Arc::clone(network), limits, spread, first).await;
    }

    fn state_of(shared: &Shared, ip: &str) -> Option<ProbeState> {
        let ip: IpAddr = ip.parse().unwrap();
        shared.with_state(|s| s.targets[0].results.get(&ip).map(|r| r.state))
    }

    const S: Duration = Duration::from_secs(1);
    const INSTANT: Answer = Answer::Accept(Duration::ZERO);

    #[tokio::test(start_paused = true)]
    async fn probes_are_spread_evenly_across_the_interval() {
        let addresses = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
        let config = config("attempts: 1", &addresses);
        let network = Scripted::new(addresses.map(|ip| (ip, INSTANT)));
        let shared = Shared::new(Arc::clone(&config));
        sweep_now(&shared, &network, Some(4 * S), true).await;
        let starts: Vec<Duration> = addresses.iter().flat_map(|ip| network.connects_to(ip)).collect();
        assert_eq!(starts, [Duration::ZERO, S, 2 * S, 3 * S]);
        assert!(
            addresses
                .iter()
                .all(|ip| state_of(&shared, ip) == Some(ProbeState::Open))
        );
        let snapshot = shared.snapshot();
        assert!(snapshot.status.ready, "the first sweep makes the daemon ready");
        assert_eq!(snapshot.report.targets[0].counts.up, 4, "the sweep's end is published");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_address_is_retried_after_the_delay_holding_no_slot_meanwhile() {
        let config = config(
            "attempts: 3, retry_delay: 10s, timeout: 5s, per_target_concurrency: 1",
            &["192.0.2.1", "192.0.2.2"],
        );
        let network = Scripted::new([("192.0.2.1", Answer::Refuse(S)), ("192.0.2.2", Answer::Accept(2 * S))]);
        let shared = Shared::new(Arc::clone(&config));
        sweep_now(&shared, &network, None, true).await;
        // Refused after 1s, then 10s of delay: the attempts start at 0, 11 and 22 seconds.
        assert_eq!(network.connects_to("192.0.2.1"), [Duration::ZERO, 11 * S, 22 * S]);
        // With one slot per target, .2 got it while .1 waited out its delay.
        assert_eq!(network.connects_to("192.0.2.2"), [S]);
        let result = shared.with_state(|s| s.targets[0].results[&"192.0.2.1".parse::<IpAddr>().unwrap()].clone());
        assert_eq!((result.state, result.attempts), (ProbeState::Refused, 3));
        assert_eq!(state_of(&shared, "192.0.2.2"), Some(ProbeState::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_still_being_probed_is_not_probed_twice() {
        let config = config("attempts: 1, timeout: 50s", &["192.0.2.1", "192.0.2.2"]);
        let network = Scripted::new([("192.0.2.1", Answer::Hang), ("192.0.2.2", INSTANT)]);
        let shared = Shared::new(Arc::clone(&config));
        let first = tokio::spawn(sweep(
            Arc::clone(&shared),
            Arc::clone(&network),
            Limits::new(&config),
            None,
            true,
        ));
        tokio::time::sleep(10 * S).await;
        sweep_now(&shared, &network, None, false).await;
        assert_eq!(
            network.connects_to("192.0.2.1"),
            [Duration::ZERO],
            "skipped while the first hangs"
        );
        assert_eq!(network.connects_to("192.0.2.2"), [Duration::ZERO, 10 * S]);
        assert!(
            !shared.snapshot().status.ready,
            "only the first sweep decides readiness"
        );
        first.await.unwrap();
        assert_eq!(state_of(&shared, "192.0.2.1"), Some(ProbeState::Timeout));
        assert!(shared.snapshot().status.ready);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_never_exceeds_the_per_target_bound() {
        let addresses = [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "192.0.2.4",
            "192.0.2.5",
            "192.0.2.6",
        ];
        let config = config("attempts: 1, per_target_concurrency: 2, concurrency: 100", &addresses);
        let network = Scripted::new(addresses.map(|ip| (ip, Answer::Accept(S))));
        let shared = Shared::new(Arc::clone(&config));
        let started = Instant::now();
        sweep_now(&shared, &network, None, true).await;
        assert_eq!(network.most_at_once(), 2);
        assert_eq!(started.elapsed(), 3 * S, "six one-second connects, two at a time");
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_bound_holds_across_targets() {
        let yaml = "global: {attempts: 1, concurrency: 3, per_target_concurrency: 10}\ntargets:\n  \
                    - {name: a, check: tcp, static: [192.0.2.1, 192.0.2.2, 192.0.2.3]}\n  \
                    - {name: b, check: tcp, static: [198.51.100.1, 198.51.100.2, 198.51.100.3]}\n";
        let config = load(yaml);
        let network = Scripted::new(
            [
                "192.0.2.1",
                "192.0.2.2",
                "192.0.2.3",
                "198.51.100.1",
                "198.51.100.2",
                "198.51.100.3",
            ]
            .map(|ip| (ip, Answer::Accept(S))),
        );
        let shared = Shared::new(Arc::clone(&config));
        sweep_now(&shared, &network, None, true).await;
        assert_eq!(network.most_at_once(), 3);
        // Interleaved: the first three connects are a, b, a, not a, a, a.
        let order: Vec<IpAddr> = lock(&network.connects).iter().map(|(ip, _)| *ip).collect();
        assert_eq!(order[1], "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn emfile_is_this_hosts_error_not_the_networks_verdict() {
        const EMFILE: i32 = 24;
        let wl = std::env::temp_dir().join(format!("wla-app-emfile-{}.yml", std::process::id()));
        std::fs::write(&wl, "allow:\n  - addresses: [192.0.2.0/24]\n    ports: [22]\n").unwrap();
        let yaml = format!(
            "global: {{attempts: 2, retry_delay: 1s, whitelist: {}}}\ntargets:\n  - {{name: vendor, check: tcp, static: [192.0.2.1, 192.0.2.2]}}\n",
            wl.display()
        );
        let config = load(&yaml);
        std::fs::remove_file(&wl).unwrap();
        let network = Scripted::new([("192.0.2.1", Answer::Errno(EMFILE)), ("192.0.2.2", INSTANT)]);
        let shared = Shared::new(Arc::clone(&config));
        sweep_now(&shared, &network, None, true).await;
        let snapshot = shared.snapshot();
        let target = &snapshot.report.targets[0];
        let failed = &target.addresses[0];
        let probe = failed.probe.as_ref().unwrap();
        assert_eq!(probe.state, ProbeState::Error, "{}", probe.detail);
        assert_eq!(probe.fault, Some(LocalFault::FdExhausted));
        assert_eq!(probe.attempts, 2, "a local fault may pass: it is retried");
        assert_eq!(failed.finding, None, "never blocked: the firewall did nothing");
        assert_eq!((target.counts.up, target.counts.error), (1, 1));
        assert_eq!(target.counts.findings.total(), 0);
        let fd = target.probe_errors.iter().find(|(f, _)| *f == LocalFault::FdExhausted);
        assert_eq!(fd, Some(&(LocalFault::FdExhausted, 1)), "one probe ended in error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_spawned_before_a_reload_uses_the_new_configurations_bounds() {
        let before = config("attempts: 1", &["192.0.2.1"]);
        let stale_limits = Limits::new(&before);
        let shared = Shared::new(Arc::clone(&before));
        let yaml = "global: {attempts: 1}\ntargets:\n  - {name: vendor, check: tcp, static: [192.0.2.1]}\n  \
                    - {name: added, check: tcp, static: [198.51.100.1]}\n";
        let after = load(yaml);
        shared.update(|state| *state = state.reconfigured(&after));
        let network = Scripted::new([("192.0.2.1", INSTANT), ("198.51.100.1", INSTANT)]);
        sweep(Arc::clone(&shared), network, stale_limits, None, true).await;
        assert!(shared.snapshot().status.ready);
        let probed = shared.with_state(|s| s.targets[1].results.len());
        assert_eq!(
            probed, 1,
            "the added target is probed, not a panic on its missing bound"
        );
    }

    fn ssh_result(fingerprint: &str, at: SystemTime) -> ProbeResult {
        use crate::core::ssh::{HostKey, Identification, ServerAlgorithms, SshEvidence};
        let list = |name: &str| vec![name.to_string()];
        let evidence = SshEvidence {
            identification: Identification {
                protocol: "2.0".into(),
                software: "OpenSSH_9.2p1".into(),
                comments: None,
            },
            algorithms: Some(Arc::new(ServerAlgorithms {
                kex: list("curve25519-sha256"),
                host_key: list("ssh-ed25519"),
                ciphers_client_to_server: list("aes128-ctr"),
                ciphers_server_to_client: list("aes128-ctr"),
                macs_client_to_server: list("hmac-sha2-256"),
                macs_server_to_client: list("hmac-sha2-256"),
                ..ServerAlgorithms::default()
            })),
            host_key: Some(HostKey {
                key_type: "ssh-ed25519".into(),
                algorithm: "ssh-ed25519".into(),
                fingerprint: fingerprint.into(),
            }),
            host_key_note: None,
            presented: std::sync::OnceLock::new(),
        };
        ProbeResult {
            state: ProbeState::Open,
            fault: None,
            duration: Duration::from_millis(5),
            attempts: 1,
            evidence: Some(Arc::new(evidence)),
            detail: String::new(),
            finished_at: at,
        }
    }

    fn ssh_problems(shared: &Shared) -> Vec<crate::core::ssh::SshProblem> {
        let snapshot = shared.publish();
        let address = &snapshot.report.targets[0].addresses[0];
        address.ssh.as_ref().expect("assessed").problems.clone()
    }

    #[test]
    fn a_host_key_changed_across_a_restart_is_reported_and_a_corrupt_file_is_ignored() {
        let dir = std::env::temp_dir().join(format!("wla-known-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = load(&format!(
            "global:\n  state_dir: {}\ntargets:\n  - name: vendor\n    static: [192.0.2.7]\n",
            dir.display()
        ));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let now = SystemTime::now();
        let first = Shared::new(Arc::clone(&config));
        first.update(|state| state.record_probe(TargetId(0), ip, ssh_result("SHA256:before", now)));
        assert!(ssh_problems(&first).is_empty());
        save_known_keys(&first);
        assert!(dir.join(KNOWN_KEYS_FILE).exists());

        let restarted = Shared::new(Arc::clone(&config));
        restore_known_keys(&restarted);
        restarted.update(|state| state.record_probe(TargetId(0), ip, ssh_result("SHA256:after", now)));
        assert_eq!(
            ssh_problems(&restarted),
            vec![crate::core::ssh::SshProblem::HostKeyChanged]
        );

        std::fs::write(dir.join(KNOWN_KEYS_FILE), b"{ not json").unwrap();
        let fresh = Shared::new(config);
        restore_known_keys(&fresh);
        fresh.update(|state| state.record_probe(TargetId(0), ip, ssh_result("SHA256:after", now)));
        assert!(ssh_problems(&fresh).is_empty(), "learned again from nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_login_is_not_tried_again_after_a_restart_before_its_interval() {
        let dir = std::env::temp_dir().join(format!("wla-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // PATH is set in every test process: only the presence of a credential matters here.
        let config = load(&format!(
            "global:\n  state_dir: {}\ntargets:\n  - name: vendor\n    static: [192.0.2.7]\n    ssh:\n      auth: {{username: m, password_env: PATH}}\n",
            dir.display()
        ));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let now = SystemTime::now();
        let nothing_running = |_: &str, _: u16, _: IpAddr| false;
        let first = Shared::new(Arc::clone(&config));
        let jobs = first.update(|state| {
            state.record_probe(TargetId(0), ip, ssh_result("SHA256:key", now));
            state.take_due_sessions(now, nothing_running)
        });
        assert!(jobs[0].due.login);
        let login = config.targets[0].ssh.session.login.clone();
        first.update(|state| {
            let refused = LoginResult {
                state: SessionState::AuthRejected,
                methods: Some(vec!["password".into()]),
                detail: "password for m was rejected".into(),
                sftp: None,
                finished_at: now,
            };
            state.record_login(TargetId(0), ip, refused, login.as_ref());
        });
        save_known_keys(&first);

        let restarted = Shared::new(Arc::clone(&config));
        restore_known_keys(&restarted);
        let later = now + Duration::from_secs(600);
        let jobs = restarted.update(|state| {
            state.record_probe(TargetId(0), ip, ssh_result("SHA256:key", later));
            state.take_due_sessions(later, nothing_running)
        });
        assert!(jobs.is_empty(), "refused 10 minutes ago, before the restart: {jobs:?}");
        let shown = restarted.publish();
        let session = shown.report.targets[0].addresses[0].session.clone().unwrap();
        assert_eq!(session.login.unwrap().state, SessionState::AuthRejected, "still shown");
        let due = restarted.update(|state| state.take_due_sessions(now + Duration::from_secs(900), nothing_running));
        assert_eq!(due.len(), 1, "due again a full login_interval after the refusal");

        // Another account was never refused: it logs in at once.
        let other = load(&format!(
            "global:\n  state_dir: {}\ntargets:\n  - name: vendor\n    static: [192.0.2.7]\n    ssh:\n      auth: {{username: other, password_env: PATH}}\n",
            dir.display()
        ));
        let switched = Shared::new(other);
        restore_known_keys(&switched);
        let jobs = switched.update(|state| {
            state.record_probe(TargetId(0), ip, ssh_result("SHA256:key", later));
            state.take_due_sessions(later, nothing_running)
        });
        assert!(jobs.first().is_some_and(|j| j.due.login), "{jobs:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn addresses_presenting_different_keys_make_an_inconsistent_pool() {
        let config = load("targets:\n  - name: vendor\n    static: [192.0.2.7, 192.0.2.8, 192.0.2.9]\n");
        let shared = Shared::new(config);
        let now = SystemTime::now();
        let record = |ip: &str, fingerprint: &str| {
            let result = ssh_result(fingerprint, now);
            shared.update(|state| state.record_probe(TargetId(0), ip.parse().unwrap(), result));
        };
        record("192.0.2.7", "SHA256:pool");
        record("192.0.2.8", "SHA256:pool");
        assert_eq!(shared.publish().report.targets[0].ssh_variants, Some(1));
        record("192.0.2.9", "SHA256:proxy");
        assert_eq!(shared.publish().report.targets[0].ssh_variants, Some(2));
    }
}
