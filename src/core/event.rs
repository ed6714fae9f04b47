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
}

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

/// The events of `events` (oldest first) that `query` selects.
pub fn select<'a>(events: &'a VecDeque<Arc<Event>>, query: &EventQuery) -> Vec<&'a Event> {
    let mut selected: Vec<&Event> = events
        .iter()
        .map(AsRef::as_ref)
        .rev()
        .filter(|e| query.since.is_none_or(|since| e.at >= since))
        .filter(|e| query.target.as_deref().is_none_or(|t| e.target == t))
        .filter(|e| query.ip.is_none_or(|ip| e.ip == ip))
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
        };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"at":1700000005,"target":"vendor","ip":"2001:db8::7","port":22,"aspect":"finding","from":"none","to":"blocked","detail":"why"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }
}
