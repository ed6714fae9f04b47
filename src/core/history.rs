//! What changed when: each change of an address's probe state or finding, as an [`Event`], and
//! the time each address entered its current state. Pure: the shell (`history_log`) keeps the events
//! on disk and hands them back after a restart, so `since` survives it.
//!
//! Events come from comparing each published report with what was seen before, so a finding that
//! changes because the whitelist or the published set changed is an event as much as a probe's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::audit::{AddressReport, Report};
pub use super::event::{Aspect, Event, NO_FINDING, Since};
use super::outcome::ProbeState;

type Key = (String, u16, IpAddr);

fn key(event: &Event) -> Key {
    (event.target.clone(), event.port, event.ip)
}

/// What is known of one address: its current values and the events that set them.
#[derive(Debug, Clone, Default)]
struct Mark {
    state: Option<Event>,
    finding: Option<Event>,
    /// Whether the address was in a report this process observed: only then does its absence
    /// from a later report mean it left the audit (after a restart, DNS answers come back later).
    seen_here: bool,
}

impl Mark {
    fn slot(&mut self, aspect: Aspect) -> &mut Option<Event> {
        match aspect {
            Aspect::State => &mut self.state,
            Aspect::Finding => &mut self.finding,
        }
    }

    fn current(&self, aspect: Aspect) -> Option<&str> {
        match aspect {
            Aspect::State => self.state.as_ref(),
            Aspect::Finding => self.finding.as_ref(),
        }
        .and_then(|e| e.to.as_deref())
    }
}

/// Every address's marks, and the most recent events, bounded.
#[derive(Debug, Clone)]
pub struct History {
    marks: BTreeMap<Key, Mark>,
    /// Shared with the snapshots: copied only when an event arrives while one holds it.
    recent: Arc<VecDeque<Event>>,
    keep: usize,
}

impl History {
    /// An empty history that remembers the `keep` most recent events.
    pub fn new(keep: usize) -> Self {
        Self {
            marks: BTreeMap::new(),
            recent: Arc::new(VecDeque::new()),
            keep,
        }
    }

    /// Replays events read back from disk, oldest first: the marks they leave are where the
    /// next report is compared from.
    pub fn replay(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            let mark = self.marks.entry(key(&event)).or_default();
            let slot = mark.slot(event.aspect);
            // A line older than what is known (two files replayed out of order) changes nothing.
            if slot.as_ref().is_some_and(|known| known.at > event.at) {
                continue;
            }
            *slot = Some(event.clone());
            self.remember(event);
        }
        self.marks
            .retain(|_, mark| mark.current(Aspect::State).is_some() || mark.current(Aspect::Finding).is_some());
    }

    /// Compares `report` with what was seen before, returns the changes (oldest first, all at
    /// `at`), and writes each address's `since` into the report. `ready`: the first sweep since
    /// start has finished, so an address remembered from before the start that a fully refreshed
    /// target no longer has is gone (not merely not resolved yet).
    pub fn observe(&mut self, report: &mut Report, at: SystemTime, ready: bool) -> Vec<Event> {
        let mut events = Vec::new();
        let mut present = BTreeSet::new();
        let mut settled = BTreeSet::new();
        let mut configured = BTreeSet::new();
        for target in &mut report.targets {
            configured.insert(target.target.clone());
            if ready && target.sources.iter().all(|s| s.up == Some(true)) {
                settled.insert(target.target.clone());
            }
            for address in &mut target.addresses {
                let key = (address.target.clone(), address.port, address.ip);
                let Seen::Judged { state, finding, detail } = observed(address) else {
                    // Not probed yet, or this host failed to probe it: still in the audit, but
                    // nothing is known that could change a verdict or say since when.
                    address.since = None;
                    present.insert(key);
                    continue;
                };
                let mark = self.marks.entry(key.clone()).or_default();
                mark.seen_here = true;
                for (aspect, value, detail) in [
                    (Aspect::State, state, detail),
                    (Aspect::Finding, Some(finding), finding_detail(address)),
                ] {
                    let Some(value) = value else { continue };
                    if mark.current(aspect) == Some(value.as_str()) {
                        continue;
                    }
                    let event = Event {
                        at,
                        target: address.target.clone(),
                        ip: address.ip,
                        port: address.port,
                        aspect,
                        from: mark.current(aspect).map(str::to_string),
                        to: Some(value),
                        detail,
                    };
                    *mark.slot(aspect) = Some(event.clone());
                    events.push(event);
                }
                address.since = since(mark);
                present.insert(key);
            }
        }
        for (key, mark) in &mut self.marks {
            let left = !present.contains(key)
                && (mark.seen_here || (ready && (!configured.contains(&key.0) || settled.contains(&key.0))));
            if !left {
                continue;
            }
            mark.seen_here = false;
            for aspect in [Aspect::State, Aspect::Finding] {
                let Some(from) = mark.current(aspect).map(str::to_string) else {
                    continue;
                };
                let event = Event {
                    at,
                    target: key.0.clone(),
                    ip: key.2,
                    port: key.1,
                    aspect,
                    from: Some(from),
                    to: None,
                    detail: "no longer published nor declared: not audited any more".to_string(),
                };
                *mark.slot(aspect) = Some(event.clone());
                events.push(event);
            }
        }
        // An address that left the audit comes back, if ever, as seen for the first time.
        self.marks
            .retain(|_, mark| mark.current(Aspect::State).is_some() || mark.current(Aspect::Finding).is_some());
        for event in &events {
            self.remember(event.clone());
        }
        events
    }

    /// The most recent events kept in memory (`keep` of [`History::new`]), oldest first.
    pub fn recent(&self) -> Arc<VecDeque<Event>> {
        Arc::clone(&self.recent)
    }

    /// The event that set each current value of each address: what a log that starts afresh
    /// (after rotation) must begin with so a restart finds every mark again.
    pub fn current_events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .marks
            .values()
            .flat_map(|mark| mark.state.iter().chain(mark.finding.iter()))
            .filter(|event| event.to.is_some())
            .cloned()
            .collect();
        events.sort_by_key(|e| e.at);
        events
    }

    fn remember(&mut self, event: Event) {
        if self.keep == 0 {
            return;
        }
        let recent = Arc::make_mut(&mut self.recent);
        if recent.len() == self.keep {
            recent.pop_front();
        }
        recent.push_back(event);
    }
}

/// What a report says of one address, for the history.
enum Seen {
    /// Nothing to compare yet: not probed since start (just published, or the daemon just
    /// started), or this host failed to make the probe (a local fault is never a verdict).
    Unknown,
    /// A verdict: the probe's state (`None` for a bogus address, never probed), the finding, and
    /// what the probe saw.
    Judged {
        state: Option<String>,
        finding: String,
        detail: String,
    },
}

fn observed(address: &AddressReport) -> Seen {
    let finding = address.finding.map_or(NO_FINDING, |f| f.as_label()).to_string();
    match (&address.probe, address.bogus) {
        (Some(probe), _) if probe.state.is_verdict() => Seen::Judged {
            state: Some(probe.state.as_label().to_string()),
            finding,
            detail: probe.detail.clone(),
        },
        (None, Some(_)) => Seen::Judged {
            state: None,
            finding,
            detail: String::new(),
        },
        _ => Seen::Unknown,
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
    let last_change = [finding, state].into_iter().flatten().max_by_key(|e| e.at)?.clone();
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
        (report, events)
    }

    fn changes(events: &[Event]) -> Vec<(String, Aspect, Option<&str>, Option<&str>)> {
        events
            .iter()
            .map(|e| (e.ip.to_string(), e.aspect, e.from.as_deref(), e.to.as_deref()))
            .collect()
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
        assert_eq!(since.last_change, events[0]);
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
        let events = after.observe(&mut report, at(30), true);
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
        assert_eq!(current.len(), 4, "{current:?}");
        let mut replayed = History::new(10);
        replayed.replay(current);
        let (report, events) = observe(&mut replayed, &state, 40);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(since_of(&report, "192.0.2.1").unwrap().state, at(30));
        assert_eq!(since_of(&report, "192.0.2.2").unwrap().state, at(10));
    }
}
