//! The thin async shell: refreshes discovery, schedules probes across the interval within the
//! concurrency bounds, and hands results to the state. `serve` loops; `check` runs once.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::audit::Report;
use crate::config::{self, Config};
use crate::discovery::dns;
use crate::discovery::published::{self, Fetched, Validators};
use crate::probe::{self, ProbeSpec};
use crate::state::{Change, ListUpdate};
use crate::state::{State, SweepStatus};
use crate::whitelist;
use std::collections::BTreeSet;

/// State shared by the scheduler, the probes and the HTTP server.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    ready: AtomicBool,
    reload_ok: AtomicBool,
    /// (target, port, ip) of probes running now: a slow probe is never started twice.
    in_flight: Mutex<HashSet<(String, u16, IpAddr)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still worth serving.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Shared state for a freshly loaded configuration.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::new(config)),
            ready: AtomicBool::new(false),
            reload_ok: AtomicBool::new(true),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// Runs `f` on the state under its lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.state))
    }

    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut lock(&self.state))
    }

    /// Whether the first sweep has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether the last configuration reload succeeded (true until one fails).
    pub fn last_reload_successful(&self) -> bool {
        self.reload_ok.load(Ordering::Relaxed)
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.with_state(|s| Arc::clone(&s.config))
    }
}

/// Concurrency bounds of one configuration.
#[derive(Debug, Clone)]
struct Limits {
    global: Arc<Semaphore>,
    per_target: Vec<Arc<Semaphore>>,
}

impl Limits {
    fn new(config: &Config) -> Self {
        Self {
            global: Arc::new(Semaphore::new(config.global.concurrency)),
            per_target: config
                .targets
                .iter()
                .map(|_| Arc::new(Semaphore::new(config.global.per_target_concurrency)))
                .collect(),
        }
    }
}

/// What one refresh task brought back.
enum Refreshed {
    Dns(usize, Result<BTreeSet<IpAddr>, dns::DnsFailure>),
    List(usize, usize, ListUpdate),
}

/// Restores the last good set of every published list that has none yet from `state_dir`, so a
/// restart while a vendor's site is down keeps auditing the right set. A corrupt file is reported
/// and ignored.
pub fn restore(shared: &Arc<Shared>) {
    let config = shared.config();
    for (index, target) in config.targets.iter().enumerate() {
        for (list, source) in target.published.iter().enumerate() {
            let fresh = shared.with_state(|s| {
                let l = &s.targets[index].lists[list];
                l.status == crate::discovery::SourceStatus::default() && l.prefixes.is_empty()
            });
            if !fresh {
                continue;
            }
            let path = published::state_file(&config.global.state_dir, &target.name, &source.label);
            match published::load(&path) {
                Ok(None) => {}
                Ok(Some((prefixes, validators, fetched_at))) => {
                    tracing::info!(target_name = %target.name, url = %source.label, prefixes = prefixes.len(), file = %path.display(), "restored last good set");
                    shared.update(|state| state.restore_list(index, list, prefixes, validators, fetched_at));
                }
                Err(error) => {
                    tracing::warn!(target_name = %target.name, url = %source.label, %error, "state file is corrupt; ignored");
                    shared.update(|state| state.corrupt_state(index, list, error));
                }
            }
        }
    }
}

/// Refreshes every DNS source and every published list that is due (all of them unless
/// `only_due`), concurrently, and applies the results.
pub async fn refresh(shared: &Arc<Shared>, client: &reqwest::Client, only_due: bool) {
    let config = shared.config();
    let now = Instant::now();
    let due: Vec<(usize, usize, Validators)> = shared.with_state(|state| {
        state
            .targets
            .iter()
            .enumerate()
            .flat_map(|(index, t)| t.lists.iter().enumerate().map(move |(list, l)| (index, list, l)))
            .filter(|(_, _, l)| !only_due || l.next_due.is_none_or(|due| due <= now))
            .map(|(index, list, l)| (index, list, l.validators.clone()))
            .collect()
    });
    let mut tasks = JoinSet::new();
    for (index, target) in config.targets.iter().enumerate().filter(|(_, t)| t.host.is_some()) {
        let target = target.clone();
        let timeout = config.global.timeout;
        tasks.spawn(async move { Refreshed::Dns(index, dns::resolve(&target, timeout).await) });
    }
    for (index, list, validators) in due {
        let source = config.targets[index].published[list].clone();
        let client = client.clone();
        tasks.spawn(async move {
            let update = match published::fetch(&client, &source, &validators).await {
                Ok(Fetched::NotModified) => ListUpdate::NotModified,
                Ok(Fetched::Body {
                    bytes,
                    content_type,
                    validators,
                }) => match published::parse(&source, &bytes, content_type.as_deref()) {
                    Ok(prefixes) => ListUpdate::Fresh { prefixes, validators },
                    Err(failure) => ListUpdate::Failed(failure),
                },
                Err(failure) => ListUpdate::Failed(failure),
            };
            Refreshed::List(index, list, update)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok(refreshed) = joined else { continue };
        // A reload while we were fetching: these answers belong to a configuration gone by.
        let current = shared.with_state(|state| Arc::ptr_eq(&state.config, &config));
        if !current {
            continue;
        }
        match refreshed {
            Refreshed::Dns(index, outcome) => {
                let name = &config.targets[index].name;
                if let Err(failure) = &outcome {
                    tracing::warn!(target_name = %name, error = %failure, "DNS refresh failed; keeping the last good set");
                }
                let outcome = outcome.map_err(|f| (f.reason, f.to_string()));
                let change = shared.update(|state| state.apply_dns(index, outcome, Instant::now(), SystemTime::now()));
                log_change(name, "dns", &change);
            }
            Refreshed::List(index, list, update) => {
                let target = &config.targets[index];
                let source = &target.published[list];
                let fresh = matches!(update, ListUpdate::Fresh { .. });
                let (change, failure, saved) = shared.update(|state| {
                    let (change, failure) = state.apply_list(index, list, update, Instant::now(), SystemTime::now());
                    let current = &state.targets[index].lists[list];
                    let saved = (fresh && failure.is_none()).then(|| published::Saved {
                        version: 1,
                        target: target.name.clone(),
                        url: source.label.clone(),
                        prefixes: current.prefixes.iter().map(ToString::to_string).collect(),
                        validators: current.validators.clone(),
                        fetched_at: SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                    });
                    (change, failure, saved)
                });
                if let Some(failure) = failure {
                    tracing::warn!(target_name = %target.name, url = %source.label, reason = failure.reason.as_label(), error = %failure, "published list refresh failed; keeping the last good set");
                }
                if let Some(saved) = saved {
                    let path = published::state_file(&config.global.state_dir, &target.name, &source.label);
                    if let Err(error) = published::save(&path, &saved) {
                        tracing::warn!(file = %path.display(), %error, "cannot save the last good set");
                    }
                }
                log_change(&target.name, &source.label, &change);
            }
        }
    }
}

fn log_change(target: &str, source: &str, change: &Change) {
    if !change.is_empty() {
        let list = |items: &[ipnet::IpNet]| items.iter().map(whitelist::prefix_label).collect::<Vec<_>>().join(",");
        tracing::info!(target_name = %target, source = %source, added = %list(&change.added), removed = %list(&change.removed), "published set changed");
    }
}

/// Probes every probed address of every target once. With `spread`, start times are spread evenly
/// across it; without, probes start as fast as the concurrency bounds allow. Sweeps may overlap
/// (a dropped address outlives the interval), so only the first one decides readiness.
async fn sweep(shared: Arc<Shared>, limits: Limits, spread: Option<Duration>, first: bool) {
    let started = Instant::now();
    let (config, work) = shared.with_state(|state| (Arc::clone(&state.config), interleave(state)));
    let total = work.len();
    let mut tasks = JoinSet::new();
    for (position, (index, ip)) in work.into_iter().enumerate() {
        let target = &config.targets[index];
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
        let shared = Arc::clone(&shared);
        let target_slots = Arc::clone(&limits.per_target[index]);
        let global_slots = Arc::clone(&limits.global);
        tasks.spawn(async move {
            tokio::time::sleep_until((started + offset).into()).await;
            if !lock(&shared.in_flight).insert(key.clone()) {
                tracing::debug!(ip = %ip, "previous probe still running; skipped");
                return;
            }
            let result = probe::probe(ip, spec, &target_slots, &global_slots).await;
            lock(&shared.in_flight).remove(&key);
            shared.update(|state| {
                let index = state
                    .config
                    .targets
                    .iter()
                    .position(|t| t.name == key.0 && t.port == key.1);
                if let Some(index) = index {
                    state.record_probe(index, ip, result);
                }
            });
        });
    }
    while tasks.join_next().await.is_some() {}
    let finished = SystemTime::now();
    shared.update(|state| {
        state.sweep = SweepStatus {
            last_finished: Some(finished),
            last_duration: Some(started.elapsed()),
        };
    });
    if first {
        shared.ready.store(true, Ordering::Relaxed);
    }
}

/// Every probed address as (target index, ip), round-robin across targets so one large target
/// does not queue the others behind its per-target limit.
fn interleave(state: &State) -> Vec<(usize, IpAddr)> {
    let mut lists: Vec<_> = state.targets.iter().map(|t| t.probed.iter().copied()).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for (index, list) in lists.iter_mut().enumerate() {
            if let Some(ip) = list.next() {
                out.push((index, ip));
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// One refresh and one sweep, as fast as the bounds allow: `check`.
pub async fn check_once(config: Config) -> Report {
    let config = Arc::new(config);
    let shared = Shared::new(Arc::clone(&config));
    restore(&shared);
    refresh(&shared, &published::client(), false).await;
    sweep(Arc::clone(&shared), Limits::new(&config), None, true).await;
    shared.with_state(State::report)
}

/// A request to reload the configuration, with a channel for the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// The daemon's loop: refresh and sweep every interval, reload on request, until `shutdown`.
pub async fn run(
    shared: Arc<Shared>,
    mut reloads: mpsc::Receiver<ReloadRequest>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut config = shared.config();
    let mut limits = Limits::new(&config);
    let mut ticker = new_ticker(config.global.interval);
    let mut first = true;
    // Discovery runs before the sweep on the first tick and after a reload, so new targets start
    // with addresses; otherwise in the background, so a resolver or vendor site that times out
    // never delays the probes of the addresses already known.
    let mut discover_before_sweep = true;
    let mut discovery: Option<tokio::task::JoinHandle<()>> = None;
    let client = published::client();
    restore(&shared);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            Some(reply) = reloads.recv() => {
                let outcome = reload(&shared, &config.path);
                if outcome.is_ok() {
                    config = shared.config();
                    restore(&shared);
                    limits = Limits::new(&config);
                    ticker = new_ticker(config.global.interval);
                    discover_before_sweep = true;
                }
                let _ = reply.send(outcome);
                continue;
            }
            _ = ticker.tick() => {}
        }
        if discover_before_sweep {
            refresh(&shared, &client, true).await;
            discover_before_sweep = false;
        } else if discovery.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
            let (shared, client) = (Arc::clone(&shared), client.clone());
            discovery = Some(tokio::spawn(async move { refresh(&shared, &client, true).await }));
        } else {
            tracing::debug!("previous discovery still running; this interval probes the current set");
        }
        tokio::spawn(sweep(
            Arc::clone(&shared),
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
fn reload(shared: &Shared, path: &std::path::Path) -> Result<(), String> {
    match config::load(path) {
        Ok(new) => {
            let new = Arc::new(new);
            shared.update(|state| *state = state.reconfigured(&new));
            shared.reload_ok.store(true, Ordering::Relaxed);
            tracing::info!(file = %path.display(), "configuration reloaded");
            Ok(())
        }
        Err(err) => {
            shared.reload_ok.store(false, Ordering::Relaxed);
            tracing::error!(error = %err.summary(), "configuration reload failed; keeping the running configuration");
            Err(err.to_string())
        }
    }
}
