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
use crate::probe::{self, ProbeSpec};
use crate::state::{State, SweepStatus};

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

/// Refreshes DNS for every target, concurrently, and applies the answers.
pub async fn refresh(shared: &Arc<Shared>) {
    let config = shared.config();
    let mut tasks = JoinSet::new();
    for (index, target) in config.targets.iter().enumerate().filter(|(_, t)| t.host.is_some()) {
        let target = target.clone();
        let timeout = config.global.timeout;
        tasks.spawn(async move { (index, dns::resolve(&target, timeout).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, outcome)) = joined else { continue };
        if let Err(failure) = &outcome {
            tracing::warn!(target_name = %config.targets[index].name, error = %failure, "DNS refresh failed; keeping the last good set");
        }
        shared.update(|state| {
            // A reload while we were resolving: these answers belong to a configuration gone by.
            if Arc::ptr_eq(&state.config, &config) {
                let before = state.targets[index].published.clone();
                state.apply_dns(
                    index,
                    outcome.map_err(|f| f.to_string()),
                    Instant::now(),
                    SystemTime::now(),
                );
                log_changes(&config.targets[index].name, &before, &state.targets[index].published);
            }
        });
    }
}

fn log_changes(target: &str, before: &std::collections::BTreeSet<IpAddr>, after: &std::collections::BTreeSet<IpAddr>) {
    let added: Vec<String> = after.difference(before).map(ToString::to_string).collect();
    let removed: Vec<String> = before.difference(after).map(ToString::to_string).collect();
    if !added.is_empty() || !removed.is_empty() {
        tracing::info!(target_name = %target, added = %added.join(","), removed = %removed.join(","), "published set changed");
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
    refresh(&shared).await;
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
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            Some(reply) = reloads.recv() => {
                let outcome = reload(&shared, &config.path);
                if outcome.is_ok() {
                    config = shared.config();
                    limits = Limits::new(&config);
                    ticker = new_ticker(config.global.interval);
                }
                let _ = reply.send(outcome);
                continue;
            }
            _ = ticker.tick() => {}
        }
        refresh(&shared).await;
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
