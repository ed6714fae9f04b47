//! One change of one address, as the history file, the API and the page carry it, and how a
//! reader selects changes. Plain data: the report carries [`Since`], the history makes events.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::ssh::unix_seconds;

/// Which of an address's verdicts changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    /// The probe's state: `open`, `refused`, `timeout`, `unreachable`, `protocol_error`, `error`.
    State,
    /// The audit's finding: `blocked`, `missing`, ..., or `none`.
    Finding,
    /// Whether a source publishes the address: `published` or `not_published` (a stale entry).
    Published,
    /// Whether the declared whitelist covers it: `whitelisted`, `not_whitelisted`, or
    /// `no_whitelist` (the target declares none).
    Whitelist,
    /// What the server presents (`check: ssh`): its host key, software and algorithms.
    Service,
}

impl Aspect {
    /// Every aspect, in the order one change lists them.
    pub const ALL: [Self; 5] = [
        Self::State,
        Self::Finding,
        Self::Published,
        Self::Whitelist,
        Self::Service,
    ];

    /// The name the file and the API use.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Finding => "finding",
            Self::Published => "published",
            Self::Whitelist => "whitelist",
            Self::Service => "service",
        }
    }

    /// The aspect named `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_label() == label)
    }
}

/// The values of the published aspect.
pub const PUBLISHED: &str = "published";
pub const NOT_PUBLISHED: &str = "not_published";
/// The detail of a published aspect: the sources that publish the address.
pub fn published_by<'a>(sources: impl IntoIterator<Item = &'a str>) -> String {
    let sources: Vec<&str> = sources.into_iter().collect();
    if sources.is_empty() {
        "no source publishes it".to_string()
    } else {
        format!("published by {}", sources.join(", "))
    }
}

/// The values of the whitelist aspect.
pub const WHITELISTED: &str = "whitelisted";
pub const NOT_WHITELISTED: &str = "not_whitelisted";
pub const NO_WHITELIST: &str = "no_whitelist";
/// The detail of the events of an address that left the audit because its target was removed
/// from the configuration (no side of the service changed).
pub const TARGET_REMOVED: &str = "its target was removed from the configuration: not audited any more";
/// The detail of the events of an address that left the audit because its target now probes
/// another port.
pub const PORT_CHANGED: &str = "its target probes another port now: not audited on this one any more";

/// The value of a finding aspect when the address has no finding.
pub const NO_FINDING: &str = "none";

/// One change of one address. `from` is `None` the first time the address is seen (or seen again
/// after it left the audit); `to` is `None` when it left the audit (no longer published nor
/// declared, or its target was removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "unix_seconds")]
    pub at: SystemTime,
    pub target: String,
    pub ip: IpAddr,
    pub port: u16,
    pub aspect: Aspect,
    pub from: Option<String>,
    pub to: Option<String>,
    /// What was observed, in words: the probe's detail, or the finding's reason.
    #[serde(default)]
    pub detail: String,
    /// Seen before its target's first complete sweep (since start, or since the target was
    /// configured): a first sighting, not something that changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_sweep: bool,
    /// A source of its target was failing when it was seen: the published set was its last good
    /// copy, not what the vendor publishes now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sources_failing: bool,
}

/// Everything one observation changed of one address: its events (one per aspect that changed),
/// and whether the address was new to the audit. What a cause is attributed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub at: SystemTime,
    pub target: String,
    pub ip: IpAddr,
    pub port: u16,
    /// The address held no value before: it entered the audit (first seen, or seen again).
    pub appeared: bool,
    pub events: Vec<Arc<Event>>,
}

impl Change {
    /// The event of `aspect`, if it changed.
    pub fn event(&self, aspect: Aspect) -> Option<&Event> {
        self.events.iter().map(AsRef::as_ref).find(|e| e.aspect == aspect)
    }

    /// `(from, to)` of `aspect` when it changed from one known value to another.
    pub fn moved(&self, aspect: Aspect) -> Option<(&str, &str)> {
        let event = self.event(aspect)?;
        Some((event.from.as_deref()?, event.to.as_deref()?)).filter(|(from, to)| from != to)
    }

    /// The value `aspect` had before this change (`None`: unknown or the address was not audited).
    pub fn before(&self, aspect: Aspect) -> Option<&str> {
        self.event(aspect)?.from.as_deref()
    }

    /// The value `aspect` has after it.
    pub fn after(&self, aspect: Aspect) -> Option<&str> {
        self.event(aspect)?.to.as_deref()
    }

    /// The address left the audit with this change.
    pub fn left(&self) -> bool {
        !self.events.is_empty() && self.events.iter().all(|e| e.to.is_none())
    }

    /// Whether anything moved: the address came or went, or some aspect went from one value to
    /// another. A value recorded for the first time on an address already audited (an aspect
    /// this version added, the first SSH evidence) moves nothing.
    pub fn moves(&self) -> bool {
        self.appeared || self.left() || Aspect::ALL.into_iter().any(|a| self.moved(a).is_some())
    }

    /// Whether `event` belongs to this change: same address, same observation.
    pub fn holds(&self, event: &Event) -> bool {
        self.at == event.at && self.port == event.port && self.ip == event.ip && self.target == event.target
    }
}

/// The side a change is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Nothing changed: the audit began watching the target and saw the address for the first time.
    FirstSeen,
    /// The vendor published a new address.
    VendorAdded,
    /// The address left every source of the vendor.
    VendorRemoved,
    /// Still published, our side unchanged, but the server refuses to speak SSH or speaks it
    /// differently: another host key, software or algorithms.
    VendorService,
    /// A published address changed reachability while the published set and the whitelist
    /// stood still: our firewall or path.
    LocalPath,
    /// The declared whitelist changed and the address gained or lost coverage.
    LocalWhitelist,
    /// The evidence does not decide (both sides changed around it, or nothing seen explains it).
    Unknown,
}

impl Cause {
    pub const ALL: [Self; 7] = [
        Self::FirstSeen,
        Self::VendorAdded,
        Self::VendorRemoved,
        Self::VendorService,
        Self::LocalPath,
        Self::LocalWhitelist,
        Self::Unknown,
    ];

    /// The `cause` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::FirstSeen => "first_seen",
            Self::VendorAdded => "vendor_added",
            Self::VendorRemoved => "vendor_removed",
            Self::VendorService => "vendor_service",
            Self::LocalPath => "local_path",
            Self::LocalWhitelist => "local_whitelist",
            Self::Unknown => "unknown",
        }
    }

    /// The cause named `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_label() == label)
    }

    /// The cause named `label`, or what to write instead.
    pub fn parse(label: &str) -> Result<Self, String> {
        Self::from_label(label).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|c| c.as_label()).collect();
            format!("write one of {}", all.join(", "))
        })
    }
}

/// A cause and the evidence for it, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    pub cause: Cause,
    pub why: String,
}

/// The cause of an address's last change, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeCause {
    /// When the change was seen.
    #[serde(with = "unix_seconds")]
    pub at: SystemTime,
    pub cause: Cause,
    pub why: String,
}

/// The last change of an address, and since when its verdicts hold, as the report shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Since {
    /// When the address entered its current probe state (first seen in it, if it never changed).
    #[serde(rename = "since", with = "unix_seconds")]
    pub state: SystemTime,
    /// When the address got its current finding (or lost its last one).
    #[serde(rename = "finding_since", with = "unix_seconds")]
    pub finding: SystemTime,
    /// The most recent change of either.
    pub last_change: Arc<Event>,
}

/// Which events a reader asks for: the `limit` most recent that match, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub since: Option<SystemTime>,
    pub target: Option<String>,
    pub ip: Option<IpAddr>,
    pub aspect: Option<Aspect>,
    pub limit: usize,
}

impl Default for EventQuery {
    fn default() -> Self {
        Self {
            since: None,
            target: None,
            ip: None,
            aspect: None,
            limit: 1000,
        }
    }
}

impl EventQuery {
    /// Whether something of `target`'s `ip` seen `at` is in the time and place asked for (the
    /// aspect aside: an event has one, a change several).
    pub fn admits(&self, at: SystemTime, target: &str, ip: IpAddr) -> bool {
        self.since.is_none_or(|since| at >= since)
            && self.target.as_deref().is_none_or(|t| target == t)
            && self.ip.is_none_or(|asked| ip == asked)
    }
}

/// The events of `events` (oldest first) that `query` selects.
pub fn select<'a>(events: &'a VecDeque<Arc<Event>>, query: &EventQuery) -> Vec<&'a Event> {
    let mut selected: Vec<&Event> = events
        .iter()
        .map(AsRef::as_ref)
        .rev()
        .filter(|e| query.admits(e.at, &e.target, e.ip))
        .filter(|e| query.aspect.is_none_or(|a| e.aspect == a))
        .take(query.limit)
        .collect();
    selected.reverse();
    selected
}

/// Reads a `since` as a person writes it: unix seconds, an RFC 3339 time, or a duration back
/// from `now` (`24h`, `90m`, `2d`).
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return SystemTime::UNIX_EPOCH
            .checked_add(std::time::Duration::from_secs(seconds))
            .ok_or_else(|| format!("since `{text}`: a time out of range"));
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at);
    }
    match humantime::parse_duration(text) {
        Ok(back) => Ok(now.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH)),
        Err(_) => Err(format!(
            "since `{text}`: write unix seconds, a time like 2026-11-24T14:00:00Z, or a duration back from now like 24h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    #[test]
    fn select_takes_the_most_recent_matches_oldest_first_and_since_reads_three_ways() {
        let events: VecDeque<Arc<Event>> = (0..10u8)
            .map(|i| Event {
                at: at(u64::from(i) * 10),
                target: if i % 2 == 0 { "a" } else { "b" }.into(),
                ip: IpAddr::from([192, 0, 2, i]),
                port: 22,
                aspect: Aspect::State,
                from: None,
                to: Some("open".into()),
                detail: String::new(),
                first_sweep: false,
                sources_failing: false,
            })
            .map(Arc::new)
            .collect();
        let query = EventQuery {
            target: Some("a".into()),
            limit: 2,
            ..EventQuery::default()
        };
        let ips: Vec<String> = select(&events, &query).iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ips, ["192.0.2.6", "192.0.2.8"]);
        let query = EventQuery {
            since: Some(at(75)),
            ..EventQuery::default()
        };
        assert_eq!(select(&events, &query).len(), 2);

        let now = at(3600);
        assert_eq!(parse_since("1700000010", now), Ok(at(10)));
        assert_eq!(parse_since("2023-11-14T22:13:40Z", now), Ok(at(20)));
        assert_eq!(parse_since("1h", now), Ok(at(0)));
        assert!(parse_since("yesterday", now).unwrap_err().contains("24h"));
    }

    #[test]
    fn an_event_line_round_trips_through_json() {
        let event = Event {
            at: at(5),
            target: "vendor".into(),
            ip: "2001:db8::7".parse().unwrap(),
            port: 22,
            aspect: Aspect::Finding,
            from: Some("none".into()),
            to: Some("blocked".into()),
            detail: "why".into(),
            first_sweep: true,
            sources_failing: false,
        };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"at":1700000005,"target":"vendor","ip":"2001:db8::7","port":22,"aspect":"finding","from":"none","to":"blocked","detail":"why","first_sweep":true}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }
}
