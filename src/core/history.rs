//! What changed when: each change of an address's probe state or finding, as an [`Event`], and
//! the time each address entered its current state. Pure: the shell (`history_log`) keeps the events
//! on disk and hands them back after a restart, so `since` survives it.
//!
//! Events come from comparing each published report with what was seen before, so a finding that
//! changes because the whitelist or the published set changed is an event as much as a probe's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::audit::{AddressReport, Report};
use super::cause::{Attribution, Context, Lag, Timeline};
pub use super::event::{Aspect, Change, ChangeCause, Event, NO_FINDING, Since};
use super::event::{
    NO_WHITELIST, NOT_PUBLISHED, NOT_WHITELISTED, PORT_CHANGED, PUBLISHED, TARGET_REMOVED, WHITELISTED, published_by,
};
use super::outcome::ProbeState;
use super::ssh::SshEvidence;

/// What is known of one address: its current values and the events that set them.
#[derive(Debug, Clone, Default)]
struct Mark {
    state: Option<Arc<Event>>,
    finding: Option<Arc<Event>>,
    published: Option<Arc<Event>>,
    whitelist: Option<Arc<Event>>,
    service: Option<Arc<Event>>,
    /// The last change that moved something: what the address's cause is attributed from.
    last: Option<Arc<Change>>,
    /// Its attribution, and whether it is final: once the target's window has passed, nothing
    /// seen later can change it.
    cause: Option<CachedCause>,
    /// Whether the address was in a report this process observed: only then does its absence
    /// from a later report mean it left the audit (after a restart, DNS answers come back later).
    seen_here: bool,
    /// The last observation that found the address in the report.
    seen_in: u64,
}

impl Mark {
    fn slot(&mut self, aspect: Aspect) -> &mut Option<Arc<Event>> {
        match aspect {
            Aspect::State => &mut self.state,
            Aspect::Finding => &mut self.finding,
            Aspect::Published => &mut self.published,
            Aspect::Whitelist => &mut self.whitelist,
            Aspect::Service => &mut self.service,
        }
    }

    fn event(&self, aspect: Aspect) -> Option<&Arc<Event>> {
        match aspect {
            Aspect::State => self.state.as_ref(),
            Aspect::Finding => self.finding.as_ref(),
            Aspect::Published => self.published.as_ref(),
            Aspect::Whitelist => self.whitelist.as_ref(),
            Aspect::Service => self.service.as_ref(),
        }
    }

    fn current(&self, aspect: Aspect) -> Option<&str> {
        self.event(aspect).and_then(|e| e.to.as_deref())
    }

    fn holds_something(&self) -> bool {
        Aspect::ALL.into_iter().any(|a| self.current(a).is_some())
    }

    /// Ends a change made of `events` (all of this address, at one time): remembers it as the
    /// last one when it moved something.
    fn close(&mut self, change: Change) -> Option<Arc<Change>> {
        if !change.moves() {
            return None;
        }
        let change = Arc::new(change);
        self.last = Some(Arc::clone(&change));
        Some(change)
    }
}

/// An address's attribution, and what it was worked out against.
#[derive(Debug, Clone)]
struct CachedCause {
    cause: Arc<ChangeCause>,
    /// The context's generation then: unchanged, the attribution is too.
    generation: u64,
    /// The target's window has passed: nothing seen later can change it.
    settled: bool,
}

/// Marks by target name, then by (port, address): found by `&str`, so comparing a report of
/// 10,000 unchanged addresses allocates nothing.
type Marks = HashMap<String, HashMap<(u16, IpAddr), Mark>>;

/// Every address's marks, and the most recent events, bounded.
#[derive(Debug, Clone)]
pub struct History {
    marks: Marks,
    /// Shared with the snapshots: copied (pointers only) when an event arrives while one holds it.
    recent: Arc<VecDeque<Arc<Event>>>,
    /// The most recent changes that moved something, bounded like `recent`.
    changes: Arc<VecDeque<Arc<Change>>>,
    /// What each change is attributed against, kept as changes arrive; shared with the
    /// snapshots (copied when a change arrives while one holds it).
    context: Arc<Context>,
    /// The targets whose first sweep (since start, or since they were configured) is complete:
    /// every source answered and every address was probed. Before, an address is first seen,
    /// not added.
    complete: HashSet<String>,
    keep: usize,
    /// Counts observations, to tell which marks the current one found.
    observation: u64,
}

impl History {
    /// An empty history that remembers the `keep` most recent events.
    pub fn new(keep: usize) -> Self {
        Self {
            marks: HashMap::new(),
            recent: Arc::new(VecDeque::new()),
            changes: Arc::new(VecDeque::new()),
            context: Arc::default(),
            complete: HashSet::new(),
            keep,
            observation: 0,
        }
    }

    fn mark_mut(&mut self, target: &str, port: u16, ip: IpAddr) -> &mut Mark {
        if !self.marks.contains_key(target) {
            self.marks.insert(target.to_string(), HashMap::new());
        }
        self.marks
            .get_mut(target)
            .expect("inserted above")
            .entry((port, ip))
            .or_default()
    }

    /// Replays events read back from disk, oldest first: the marks they leave are where the
    /// next report is compared from.
    pub fn replay<E: Into<Arc<Event>>>(&mut self, events: impl IntoIterator<Item = E>) {
        let mut open: Option<Change> = None;
        for event in events {
            let event: Arc<Event> = event.into();
            if open.as_ref().is_some_and(|change| !change.holds(&event)) {
                self.close(open.take().expect("checked above"));
            }
            let mark = self.mark_mut(&event.target, event.port, event.ip);
            // A carried-over line (`from` set) on an empty mark restores it; only a line from
            // nothing is the address entering the audit.
            let appeared = !mark.holds_something() && event.from.is_none();
            let slot = mark.slot(event.aspect);
            // A line older than what is known (two files replayed out of order), or the same line
            // again (a rotated file read before the one that carried it over), changes nothing.
            if slot
                .as_ref()
                .is_some_and(|known| known.at > event.at || (known.at == event.at && known.to == event.to))
            {
                continue;
            }
            *slot = Some(Arc::clone(&event));
            let change = open.get_or_insert_with(|| Change {
                at: event.at,
                target: event.target.clone(),
                ip: event.ip,
                port: event.port,
                appeared,
                events: Vec::new(),
            });
            change.events.push(Arc::clone(&event));
            self.remember(event);
        }
        if let Some(change) = open {
            self.close(change);
        }
        self.prune();
    }

    /// Ends a change read back or observed: the address's last change, a recent change, and the
    /// start of its target's audit when it is the first.
    fn close(&mut self, change: Change) {
        Arc::make_mut(&mut self.context).note(&change);
        let mark = self.mark_mut(&change.target, change.port, change.ip);
        if let Some(change) = mark.close(change) {
            self.remember_change(change);
        }
    }

    /// Sets how late each target's changes are seen (from the configuration, at every load).
    pub fn set_lags(&mut self, lags: &HashMap<String, Lag>) {
        if lags.iter().any(|(target, lag)| self.context.lag(target) != *lag) {
            Arc::make_mut(&mut self.context).set_lags(lags);
        }
    }

    /// Compares `report` with what was seen before, returns the changes (oldest first, all at
    /// `at`), and writes each address's `since` into the report. `ready`: the first sweep since
    /// start has finished, so an address remembered from before the start that a fully refreshed
    /// target no longer has is gone (not merely not resolved yet).
    pub fn observe(&mut self, report: &mut Report, at: SystemTime, ready: bool) -> Vec<Arc<Event>> {
        self.observation += 1;
        let observation = self.observation;
        let mut events = Vec::new();
        let mut closed = Vec::new();
        let mut settled: HashMap<&str, (bool, u16)> = HashMap::new();
        for target in &mut report.targets {
            let all_up = target.sources.iter().all(|s| s.up == Some(true));
            let first_sweep = !self.complete.contains(target.target.as_str());
            for address in &mut target.addresses {
                let Some(values) = observed(address) else {
                    // Not probed yet, or this host failed to probe it: still in the audit, but
                    // nothing is known that could change a verdict or say since when.
                    address.since = None;
                    if let Some(mark) = self
                        .marks
                        .get_mut(address.target.as_str())
                        .and_then(|m| m.get_mut(&(address.port, address.ip)))
                    {
                        mark.seen_in = observation;
                    }
                    continue;
                };
                let mark = self.mark_mut(&address.target, address.port, address.ip);
                mark.seen_here = true;
                mark.seen_in = observation;
                let appeared = !mark.holds_something();
                let mut change = Change {
                    at,
                    target: address.target.clone(),
                    ip: address.ip,
                    port: address.port,
                    appeared,
                    events: Vec::new(),
                };
                for (aspect, value) in values {
                    let Some(value) = value else { continue };
                    if mark.current(aspect) == Some(value) {
                        continue;
                    }
                    let event = Arc::new(Event {
                        at,
                        target: address.target.clone(),
                        ip: address.ip,
                        port: address.port,
                        aspect,
                        from: mark.current(aspect).map(str::to_string),
                        to: Some(value.to_string()),
                        detail: detail(address, aspect),
                        first_sweep: appeared && first_sweep,
                        sources_failing: !all_up,
                    });
                    *mark.slot(aspect) = Some(Arc::clone(&event));
                    change.events.push(Arc::clone(&event));
                    events.push(event);
                }
                if !change.events.is_empty() {
                    closed.extend(mark.close(change));
                }
                address.since = since(mark);
            }
            settled.insert(target.target.as_str(), (ready && all_up, target.port));
            let swept = target.addresses.iter().all(|a| a.probe.is_some() || a.bogus.is_some());
            if all_up && swept {
                self.complete.insert(target.target.clone());
            }
        }
        // A target removed (or renamed) starts afresh if it comes back.
        self.complete.retain(|t| settled.contains_key(t.as_str()));
        self.leave(&settled, ready, at, &mut events, &mut closed);
        let context = Arc::make_mut(&mut self.context);
        for change in &closed {
            context.note(change);
        }
        if !events.is_empty() {
            // An address that left the audit comes back, if ever, as seen for the first time.
            self.prune();
        }
        for event in &events {
            self.remember(Arc::clone(event));
        }
        for change in closed {
            self.remember_change(change);
        }
        self.attribute(report, at);
        events
    }

    /// Ends the audit of every address this observation did not find, where that absence means
    /// it left (see [`History::observe`]).
    fn leave(
        &mut self,
        settled: &HashMap<&str, (bool, u16)>,
        ready: bool,
        at: SystemTime,
        events: &mut Vec<Arc<Event>>,
        closed: &mut Vec<Arc<Change>>,
    ) {
        let observation = self.observation;
        for (target, marks) in &mut self.marks {
            // A target no longer configured is settled: its addresses left with it.
            let configured = settled.get(target.as_str()).copied();
            let settled = configured.map_or(ready, |(settled, _)| settled);
            for (&(port, ip), mark) in marks.iter_mut() {
                if mark.seen_in == observation || !(mark.seen_here || settled) {
                    continue;
                }
                mark.seen_here = false;
                let mut change = Change {
                    at,
                    target: target.clone(),
                    ip,
                    port,
                    appeared: false,
                    events: Vec::new(),
                };
                for aspect in Aspect::ALL {
                    let Some(from) = mark.current(aspect).map(str::to_string) else {
                        continue;
                    };
                    let event = Arc::new(Event {
                        at,
                        target: target.clone(),
                        ip,
                        port,
                        aspect,
                        from: Some(from),
                        to: None,
                        detail: match configured {
                            None => TARGET_REMOVED,
                            Some((_, now)) if now != port => PORT_CHANGED,
                            Some(_) => "no longer published nor declared: not audited any more",
                        }
                        .to_string(),
                        first_sweep: false,
                        sources_failing: false,
                    });
                    *mark.slot(aspect) = Some(Arc::clone(&event));
                    change.events.push(Arc::clone(&event));
                    events.push(event);
                }
                if !change.events.is_empty() {
                    closed.extend(mark.close(change));
                }
            }
        }
    }

    /// The recent changes and what attributes them, as the snapshot carries them.
    pub fn timeline(&self) -> Timeline {
        Timeline {
            changes: Arc::clone(&self.changes),
            context: Arc::clone(&self.context),
        }
    }

    /// Writes the cause of each address's last change into the report: worked out again while
    /// something seen later could still change it, then kept.
    fn attribute(&mut self, report: &mut Report, now: SystemTime) {
        let context = &self.context;
        for target in &mut report.targets {
            let Some(marks) = self.marks.get_mut(target.target.as_str()) else {
                continue;
            };
            let lag = context.lag(&target.target);
            for address in &mut target.addresses {
                let Some(mark) = marks.get_mut(&(address.port, address.ip)) else {
                    continue;
                };
                let Some(change) = mark.last.as_ref() else {
                    continue;
                };
                let cached = mark
                    .cause
                    .as_ref()
                    .filter(|c| c.cause.at == change.at && (c.settled || c.generation == context.generation()));
                if let Some(cached) = cached {
                    address.change_cause = Some(Arc::clone(&cached.cause));
                    continue;
                }
                let Attribution { cause, why } = context.attribute(change);
                let cause = Arc::new(ChangeCause {
                    at: change.at,
                    cause,
                    why,
                });
                mark.cause = Some(CachedCause {
                    cause: Arc::clone(&cause),
                    generation: context.generation(),
                    settled: now > change.at + lag.window + lag.removal,
                });
                address.change_cause = Some(cause);
            }
        }
    }

    fn prune(&mut self) {
        for marks in self.marks.values_mut() {
            marks.retain(|_, mark| mark.holds_something());
        }
        self.marks.retain(|_, marks| !marks.is_empty());
    }

    /// The most recent events kept in memory (`keep` of [`History::new`]), oldest first.
    pub fn recent(&self) -> Arc<VecDeque<Arc<Event>>> {
        Arc::clone(&self.recent)
    }

    /// The event that set each current value of each address: what a log that starts afresh
    /// (after rotation) must begin with so a restart finds every mark again. Oldest first.
    pub fn current_events(&self) -> Vec<Arc<Event>> {
        let mut events: Vec<Arc<Event>> = self
            .marks
            .values()
            .flat_map(HashMap::values)
            .flat_map(|mark| Aspect::ALL.into_iter().filter_map(|aspect| mark.event(aspect)))
            .filter(|event| event.to.is_some())
            .cloned()
            .collect();
        events
            .sort_by(|a, b| (a.at, &a.target, a.port, a.ip, a.aspect).cmp(&(b.at, &b.target, b.port, b.ip, b.aspect)));
        events
    }

    fn remember_change(&mut self, change: Arc<Change>) {
        keep_recent(&mut self.changes, self.keep, change);
    }

    fn remember(&mut self, event: Arc<Event>) {
        keep_recent(&mut self.recent, self.keep, event);
    }
}

/// Appends `item` to `recent`, which holds the `keep` most recent (copied first if a snapshot
/// shares it).
fn keep_recent<T: Clone>(recent: &mut Arc<VecDeque<T>>, keep: usize, item: T) {
    if keep == 0 {
        return;
    }
    let recent = Arc::make_mut(recent);
    if recent.len() == keep {
        recent.pop_front();
    }
    recent.push_back(item);
}

/// What a report says of one address, for the history: each aspect's value (`None`: nothing
/// to say of it, such as the state of a bogus address, never probed). `None` as a whole when
/// nothing is known that could change a verdict: not probed since start (just published, or the
/// daemon just started), or this host failed to make the probe (a local fault is never a verdict).
fn observed(address: &AddressReport) -> Option<[(Aspect, Option<&str>); 5]> {
    let state = match (&address.probe, address.bogus) {
        (Some(probe), _) if probe.state.is_verdict() => Some(probe.state.as_label()),
        (None, Some(_)) => None,
        _ => return None,
    };
    let finding = address.finding.map_or(NO_FINDING, |f| f.as_label());
    let published = if address.published { PUBLISHED } else { NOT_PUBLISHED };
    let whitelist = match address.whitelisted {
        Some(true) => WHITELISTED,
        Some(false) => NOT_WHITELISTED,
        None => NO_WHITELIST,
    };
    let service = address
        .probe
        .as_ref()
        .and_then(|p| p.evidence_as::<SshEvidence>())
        .and_then(SshEvidence::presents);
    Some([
        (Aspect::State, state),
        (Aspect::Finding, Some(finding)),
        (Aspect::Published, Some(published)),
        (Aspect::Whitelist, Some(whitelist)),
        (Aspect::Service, service),
    ])
}

fn detail(address: &AddressReport, aspect: Aspect) -> String {
    match aspect {
        Aspect::State => address.probe.as_ref().map(|p| p.detail.clone()).unwrap_or_default(),
        Aspect::Finding => finding_detail(address),
        Aspect::Published => published_by(address.published_by.iter().map(AsRef::as_ref)),
        Aspect::Whitelist => String::new(),
        Aspect::Service => address
            .probe
            .as_ref()
            .and_then(|p| p.evidence.as_ref())
            .map(|e| e.summary())
            .unwrap_or_default(),
    }
}

fn finding_detail(address: &AddressReport) -> String {
    let open = address.probe.as_ref().is_some_and(|p| p.state == ProbeState::Open);
    match (address.finding, address.whitelisted) {
        (Some(finding), _) => finding.action().to_string(),
        (None, Some(true)) if open => "published, whitelisted and open".to_string(),
        (None, None) if open => "open (no whitelist declared for the target)".to_string(),
        (None, _) => "no finding".to_string(),
    }
}

fn since(mark: &Mark) -> Option<Since> {
    let state = mark.state.as_ref().filter(|e| e.to.is_some());
    let finding = mark.finding.as_ref().filter(|e| e.to.is_some());
    // Changed at the same moment, the state says more (open -> timeout, not none -> blocked).
    let last_change = Arc::clone([finding, state].into_iter().flatten().max_by_key(|e| e.at)?);
    Some(Since {
        state: state.map_or(last_change.at, |e| e.at),
        finding: finding.map_or(last_change.at, |e| e.at),
        last_change,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config;
    use crate::core::event::Cause;
    use crate::core::outcome::{Attempt, ProbeResult, ProbeState};
    use crate::core::state::{State, TargetId};

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn state(addresses: &[&str]) -> State {
        let yaml = format!(
            "targets:\n  - name: vendor\n    check: tcp\n    static: [{}]\n",
            addresses.join(", ")
        );
        let raw = config::parse_yaml(Path::new("h.yml"), &yaml).unwrap();
        State::new(Arc::new(config::build(Path::new("h.yml"), &raw).unwrap()))
    }

    fn probe(state: &mut State, ip: &str, verdict: ProbeState) {
        let attempt = Attempt::ended(verdict, Duration::from_millis(5), format!("{ip} {verdict:?}"));
        state.record_probe(
            TargetId(0),
            ip.parse().unwrap(),
            ProbeResult::from_attempt(attempt, 1, at(0)),
        );
    }

    fn observe(history: &mut History, state: &State, seconds: u64) -> (Report, Vec<Event>) {
        let mut report = state.report();
        let events = history.observe(&mut report, at(seconds), false);
        (report, events.iter().map(|e| Event::clone(e)).collect())
    }

    fn changes(events: &[Event]) -> Vec<(String, Aspect, Option<&str>, Option<&str>)> {
        events
            .iter()
            .filter(|e| matches!(e.aspect, Aspect::State | Aspect::Finding))
            .map(|e| (e.ip.to_string(), e.aspect, e.from.as_deref(), e.to.as_deref()))
            .collect()
    }

    fn cause_of(report: &Report, ip: &str) -> Option<ChangeCause> {
        let ip: IpAddr = ip.parse().unwrap();
        report.targets[0]
            .addresses
            .iter()
            .find(|a| a.ip == ip)?
            .change_cause
            .as_deref()
            .cloned()
    }

    fn since_of(report: &Report, ip: &str) -> Option<Since> {
        let ip: IpAddr = ip.parse().unwrap();
        report.targets[0].addresses.iter().find(|a| a.ip == ip)?.since.clone()
    }

    #[test]
    fn an_address_not_probed_yet_has_no_event_and_no_since() {
        let mut history = History::new(100);
        let (report, events) = observe(&mut history, &state(&["192.0.2.1"]), 10);
        assert!(events.is_empty());
        assert_eq!(since_of(&report, "192.0.2.1"), None);
    }

    #[test]
    fn the_first_probe_is_an_event_from_nothing_and_since_holds_until_the_state_changes() {
        let mut history = History::new(100);
        let mut state = state(&["192.0.2.1"]);
        probe(&mut state, "192.0.2.1", ProbeState::Open);
        let (report, events) = observe(&mut history, &state, 10);
        assert_eq!(
            changes(&events),
            [
                ("192.0.2.1".into(), Aspect::State, None, Some("open")),
                ("192.0.2.1".into(), Aspect::Finding, None, Some("none")),
            ]
        );
        assert_eq!(since_of(&report, "192.0.2.1").unwrap().state, at(10));

        let (report, events) = observe(&mut history, &state, 20);
        assert!(events.is_empty(), "the same state again is no change: {events:?}");
        assert_eq!(since_of(&report, "192.0.2.1").unwrap().state, at(10));

        probe(&mut state, "192.0.2.1", ProbeState::Timeout);
        let (report, events) = observe(&mut history, &state, 30);
        assert_eq!(
            changes(&events),
            [
                ("192.0.2.1".into(), Aspect::State, Some("open"), Some("timeout")),
                ("192.0.2.1".into(), Aspect::Finding, Some("none"), Some("blocked")),
            ]
        );
        assert!(
            events[0].detail.contains("Timeout"),
            "the probe's detail: {}",
            events[0].detail
        );
        assert!(
            events[1].detail.contains("firewall"),
            "the finding's action: {}",
            events[1].detail
        );
        let since = since_of(&report, "192.0.2.1").unwrap();
        assert_eq!((since.state, since.finding), (at(30), at(30)));

        probe(&mut state, "192.0.2.1", ProbeState::Unreachable);
        let (report, events) = observe(&mut history, &state, 40);
        assert_eq!(
            changes(&events),
            [("192.0.2.1".into(), Aspect::State, Some("timeout"), Some("unreachable"))]
        );
        let since = since_of(&report, "192.0.2.1").unwrap();
        assert_eq!((since.state, since.finding), (at(40), at(30)), "still blocked since 30");
        assert_eq!(*since.last_change, events[0]);
    }

    #[test]
    fn a_restart_replays_the_file_and_since_goes_on() {
        let mut before = History::new(100);
        let mut state = state(&["192.0.2.1", "192.0.2.2"]);
        probe(&mut state, "192.0.2.1", ProbeState::Open);
        probe(&mut state, "192.0.2.2", ProbeState::Refused);
        let (_, mut written) = observe(&mut before, &state, 10);
        probe(&mut state, "192.0.2.2", ProbeState::Open);
        written.extend(observe(&mut before, &state, 20).1);

        let mut after = History::new(100);
        after.replay(written.clone());
        assert_eq!(after.recent().len(), written.len());
        // Just restarted: nothing probed yet, and an address DNS has not returned yet is absent.
        let fresh = self::state(&["192.0.2.1"]);
        let (report, events) = observe(&mut after, &fresh, 30);
        assert!(
            events.is_empty(),
            "neither unprobed nor absent addresses change: {events:?}"
        );
        assert_eq!(since_of(&report, "192.0.2.1"), None);

        let (report, events) = observe(&mut after, &state, 40);
        assert!(events.is_empty(), "the same states as before the restart: {events:?}");
        assert_eq!(since_of(&report, "192.0.2.1").unwrap().state, at(10));
        assert_eq!(since_of(&report, "192.0.2.2").unwrap().state, at(20));
    }

    #[test]
    fn an_address_that_leaves_the_audit_is_an_event_to_nothing_and_comes_back_as_new() {
        let mut history = History::new(100);
        let mut both = state(&["192.0.2.1", "192.0.2.2"]);
        probe(&mut both, "192.0.2.1", ProbeState::Open);
        probe(&mut both, "192.0.2.2", ProbeState::Open);
        observe(&mut history, &both, 10);
        let mut one = state(&["192.0.2.1"]);
        probe(&mut one, "192.0.2.1", ProbeState::Open);
        let (_, events) = observe(&mut history, &one, 20);
        assert_eq!(
            changes(&events),
            [
                ("192.0.2.2".into(), Aspect::State, Some("open"), None),
                ("192.0.2.2".into(), Aspect::Finding, Some("none"), None),
            ]
        );
        assert!(history.current_events().iter().all(|e| e.ip.to_string() == "192.0.2.1"));
        let (report, events) = observe(&mut history, &both, 30);
        assert_eq!(
            changes(&events)[0],
            ("192.0.2.2".into(), Aspect::State, None, Some("open"))
        );
        assert_eq!(since_of(&report, "192.0.2.2").unwrap().state, at(30));
    }

    #[test]
    fn a_local_fault_is_no_change_and_keeps_since() {
        let mut history = History::new(100);
        let mut state = state(&["192.0.2.1"]);
        probe(&mut state, "192.0.2.1", ProbeState::Timeout);
        observe(&mut history, &state, 10);
        probe(&mut state, "192.0.2.1", ProbeState::Error);
        let (report, events) = observe(&mut history, &state, 20);
        assert!(events.is_empty(), "EMFILE says nothing of the path: {events:?}");
        assert_eq!(
            since_of(&report, "192.0.2.1"),
            None,
            "no since for a state nobody judged"
        );
        probe(&mut state, "192.0.2.1", ProbeState::Timeout);
        let (report, events) = observe(&mut history, &state, 30);
        assert!(events.is_empty(), "{events:?}");
        let since = since_of(&report, "192.0.2.1").unwrap();
        assert_eq!((since.state, since.finding), (at(10), at(10)), "still blocked since 10");
    }

    #[test]
    fn a_remembered_address_a_refreshed_target_no_longer_has_is_gone_once_ready() {
        let mut before = History::new(100);
        let mut both = state(&["192.0.2.1", "192.0.2.2"]);
        probe(&mut both, "192.0.2.1", ProbeState::Open);
        probe(&mut both, "192.0.2.2", ProbeState::Open);
        let (_, written) = observe(&mut before, &both, 10);

        let mut after = History::new(100);
        after.replay(written);
        let mut one = state(&["192.0.2.1"]);
        probe(&mut one, "192.0.2.1", ProbeState::Open);
        let (_, events) = observe(&mut after, &one, 20);
        assert!(
            events.is_empty(),
            "before the first sweep ends, absence proves nothing: {events:?}"
        );
        let mut report = one.report();
        let events: Vec<Event> = after
            .observe(&mut report, at(30), true)
            .iter()
            .map(|e| Event::clone(e))
            .collect();
        assert_eq!(
            changes(&events),
            [
                ("192.0.2.2".into(), Aspect::State, Some("open"), None),
                ("192.0.2.2".into(), Aspect::Finding, Some("none"), None),
            ]
        );
        assert!(after.current_events().iter().all(|e| e.ip.to_string() == "192.0.2.1"));
    }

    #[test]
    fn one_observation_of_one_address_is_one_change_attributed_in_the_report_and_again_after_replay() {
        let mut history = History::new(100);
        let mut state = state(&["192.0.2.1", "192.0.2.2"]);
        probe(&mut state, "192.0.2.1", ProbeState::Open);
        probe(&mut state, "192.0.2.2", ProbeState::Open);
        let (report, events) = observe(&mut history, &state, 10);
        assert_eq!(events.len(), 8);
        assert_eq!(history.changes.len(), 2);
        let cause = cause_of(&report, "192.0.2.1").unwrap();
        assert_eq!((cause.at, cause.cause), (at(10), Cause::FirstSeen));
        probe(&mut state, "192.0.2.1", ProbeState::Timeout);
        let (report, events) = observe(&mut history, &state, 5000);
        assert_eq!(events.len(), 2, "state and finding, published and whitelist unchanged");
        let cause = cause_of(&report, "192.0.2.1").unwrap();
        assert_eq!((cause.at, cause.cause), (at(5000), Cause::LocalPath), "{}", cause.why);
        assert_eq!(cause_of(&report, "192.0.2.2").unwrap().cause, Cause::FirstSeen);

        let mut replayed = History::new(100);
        let all: Vec<Arc<Event>> = history.recent().iter().cloned().collect();
        // A rotated file read before the one that carried its events over: no change twice.
        replayed.replay(all.iter().cloned().chain(history.current_events()));
        assert_eq!(replayed.changes.len(), 3);
        let timeline = replayed.timeline();
        let entries = timeline.select(&crate::core::event::EventQuery::default(), None, true);
        let causes: Vec<Cause> = entries.iter().map(|e| e.attribution.cause).collect();
        assert_eq!(causes, [Cause::FirstSeen, Cause::FirstSeen, Cause::LocalPath]);
        let without_first = timeline.select(&crate::core::event::EventQuery::default(), None, false);
        assert_eq!(without_first.len(), 1);

        // After a rotation the file starts with the carried-over lines: a change carried over
        // (from a known value) restores the mark and is still that change, never an appearance.
        let mut rotated = History::new(100);
        rotated.replay(history.current_events());
        let changes: Vec<(bool, Cause)> = rotated
            .timeline()
            .select(&crate::core::event::EventQuery::default(), None, true)
            .iter()
            .map(|e| (e.change.appeared, e.attribution.cause))
            .collect();
        assert!(changes.contains(&(false, Cause::LocalPath)), "{changes:?}");
        assert!(!changes.iter().any(|(_, c)| *c == Cause::VendorAdded), "{changes:?}");
    }

    #[test]
    fn a_slow_first_sweep_is_first_seen_and_an_address_added_after_it_is_the_vendors() {
        let mut history = History::new(100);
        let mut state = state(&["192.0.2.1", "192.0.2.2"]);
        probe(&mut state, "192.0.2.1", ProbeState::Open);
        observe(&mut history, &state, 10);
        // The second address is probed long after the first: still the first sweep.
        probe(&mut state, "192.0.2.2", ProbeState::Timeout);
        let (report, _) = observe(&mut history, &state, 900);
        assert_eq!(cause_of(&report, "192.0.2.2").unwrap().cause, Cause::FirstSeen);
    }

    #[test]
    fn current_events_hold_every_address_once_per_aspect_and_recent_is_bounded() {
        let mut history = History::new(3);
        let mut state = state(&["192.0.2.1", "192.0.2.2"]);
        for (second, verdict) in [
            (10, ProbeState::Open),
            (20, ProbeState::Refused),
            (30, ProbeState::Open),
        ] {
            probe(&mut state, "192.0.2.1", verdict);
            probe(&mut state, "192.0.2.2", ProbeState::Open);
            observe(&mut history, &state, second);
        }
        assert_eq!(history.recent().len(), 3);
        assert_eq!(history.recent().back().unwrap().at, at(30));
        let current = history.current_events();
        // State, finding, published and whitelist of each.
        assert_eq!(current.len(), 8, "{current:?}");
        let mut replayed = History::new(10);
        replayed.replay(current);
        let (report, events) = observe(&mut replayed, &state, 40);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(since_of(&report, "192.0.2.1").unwrap().state, at(30));
        assert_eq!(since_of(&report, "192.0.2.2").unwrap().state, at(10));
    }
}
