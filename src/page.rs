//! The status page at `/`: the snapshot as HTML for the people who act on it. Server-rendered
//! from a template compiled into the binary: no JavaScript, no stylesheet or font from elsewhere,
//! so it works offline and behind the strictest proxy; it reloads itself.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use askama::Template;

use crate::core::audit::AddressReport;
use crate::core::cause::Entry;
use crate::core::event::EventQuery;
use crate::core::finding::Finding;
use crate::core::outcome::ProbeState;
use crate::core::ssh::SshEvidence;
use crate::core::state::Snapshot;
use crate::output::{AddressFilter, change_summary, clock, unix};
use crate::prefix::prefix_label;

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 30;
/// Recent changes listed under the addresses.
const RECENT_CHANGES: usize = 25;
/// Address rows at most: a page of 100,000 rows helps nobody; the filter narrows it.
const MAX_ROWS: usize = 2_000;

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    version: &'static str,
    generated: String,
    refresh: u32,
    ready: bool,
    reload_ok: bool,
    last_sweep: String,
    targets: Vec<TargetRow>,
    target_choices: Vec<Choice>,
    finding_choices: Vec<Choice>,
    addresses: Vec<AddressRow>,
    shown: usize,
    matching: usize,
    total: usize,
    changes: Vec<ChangeRow>,
    unused_entries: Vec<UnusedRow>,
}

struct UnusedRow {
    entry: String,
    port: u16,
    declared_at: String,
}

struct Choice {
    value: String,
    selected: bool,
}

struct TargetRow {
    name: String,
    port: u16,
    published: usize,
    probed: usize,
    up: usize,
    findings: String,
    sources: Vec<SourceRow>,
}

struct SourceRow {
    name: String,
    health: &'static str,
    addresses: usize,
    last_success: String,
    last_error: String,
}

struct AddressRow {
    target: String,
    ip: String,
    port: u16,
    state: String,
    finding: String,
    /// CSS class: `bad`, `warn` or `ok`.
    class: &'static str,
    latency: String,
    ssh: String,
    since: String,
    since_unix: String,
    last_change: String,
    /// Raw diagnosis: who rejected it, or after which hop it drops.
    diagnosis: String,
    detail: String,
}

/// One line of the timeline: a change, what moved, and the side it is attributed to.
struct ChangeRow {
    at: String,
    target: String,
    ip: String,
    port: u16,
    change: String,
    cause: &'static str,
    why: String,
}

/// The page for `snapshot`, showing the addresses `filter` admits, worst first.
pub fn render(snapshot: &Snapshot, filter: &AddressFilter) -> String {
    let report = &snapshot.report;
    let now = snapshot.taken_at;
    let all: Vec<&AddressReport> = report.targets.iter().flat_map(|t| &t.addresses).collect();
    let mut matching: Vec<&AddressReport> = all.iter().copied().filter(|a| filter.admits(a)).collect();
    matching.sort_by_key(|a| (severity(a), a.target.as_str(), a.ip));
    let mut finding_choices = vec!["none".to_string()];
    finding_choices.extend(Finding::all().map(|f| f.as_label().to_string()));
    let page = StatusPage {
        version: env!("CARGO_PKG_VERSION"),
        generated: clock(now),
        refresh: REFRESH_SECONDS,
        ready: snapshot.status.ready,
        reload_ok: snapshot.status.reload_ok,
        last_sweep: snapshot.status.sweep.last_finished.map_or_else(
            || "not finished yet".to_string(),
            |at| {
                let took = snapshot.status.sweep.last_duration.unwrap_or_default();
                format!("{} ({}, took {:.1} s)", clock(at), ago(at, now), took.as_secs_f64())
            },
        ),
        targets: report.targets.iter().map(|t| target_row(t, now)).collect(),
        target_choices: report
            .targets
            .iter()
            .map(|t| Choice {
                selected: filter.target.as_deref() == Some(t.target.as_str()),
                value: t.target.clone(),
            })
            .collect(),
        finding_choices: finding_choices
            .into_iter()
            .map(|value| Choice {
                selected: filter.finding.as_deref() == Some(value.as_str()),
                value,
            })
            .collect(),
        shown: matching.len().min(MAX_ROWS),
        matching: matching.len(),
        total: all.len(),
        addresses: matching.iter().take(MAX_ROWS).map(|a| address_row(a, now)).collect(),
        unused_entries: report
            .whitelist_entries
            .iter()
            .filter(|u| u.unused)
            .take(MAX_ROWS)
            .map(|u| UnusedRow {
                entry: u.entry.clone(),
                port: u.port,
                declared_at: u
                    .declared_at
                    .iter()
                    .map(AsRef::as_ref)
                    .collect::<Vec<&str>>()
                    .join("; "),
            })
            .collect(),
        changes: snapshot
            .timeline
            .select(
                &EventQuery {
                    target: filter.target.clone().filter(|t| !t.is_empty()),
                    limit: RECENT_CHANGES,
                    ..EventQuery::default()
                },
                None,
                false,
            )
            .iter()
            .rev()
            .map(change_row)
            .collect(),
    };
    page.render().expect("the template renders plain strings")
}

fn target_row(t: &crate::core::audit::TargetReport, now: SystemTime) -> TargetRow {
    TargetRow {
        name: t.target.clone(),
        port: t.port,
        published: t.counts.published,
        probed: t.counts.probed,
        up: t.counts.up,
        findings: {
            let found: Vec<String> = t
                .counts
                .findings
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(f, n)| format!("{n} {}", f.as_label()))
                .collect();
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            }
        },
        sources: t
            .sources
            .iter()
            .map(|s| SourceRow {
                name: s.name().to_string(),
                health: match s.up {
                    Some(true) => "up",
                    Some(false) => "failing, last good set kept",
                    None => "not fetched yet",
                },
                addresses: s.addresses,
                last_success: s.last_success.map_or_else(|| "never".to_string(), |at| ago(at, now)),
                last_error: s.last_error.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Worst first: a blocked address before a missing one, before a fault of this host, before
/// what only needs tidying, before what is fine.
fn severity(address: &AddressReport) -> u8 {
    let state = address.probe.as_ref().map(|p| p.state);
    let problems = address.ssh.as_ref().is_some_and(|s| !s.problems.is_empty())
        || address
            .session
            .as_ref()
            .is_some_and(|s| s.states().iter().any(|(_, state)| state.is_problem()));
    match (address.finding, state) {
        (Some(Finding::Blocked), _) => 0,
        (Some(Finding::Missing), _) => 1,
        (_, Some(ProbeState::Error)) => 2,
        _ if problems => 3,
        (Some(Finding::BogusAddress), _) => 4,
        (Some(Finding::Stale), _) => 5,
        (Some(Finding::Undeclared), _) => 6,
        (None, None) => 7,
        (None, Some(_)) => 8,
    }
}

fn address_row(address: &AddressReport, now: SystemTime) -> AddressRow {
    let probe = address.probe.as_ref();
    let class = match severity(address) {
        0 | 1 => "bad",
        2..=6 => "warn",
        7 => "pending",
        _ => "ok",
    };
    let ssh = probe
        .and_then(|p| p.evidence_as::<SshEvidence>())
        .map_or_else(String::new, |e| {
            let mut text = e.identification.software.clone();
            if let Some(key) = &e.host_key {
                let _ = write!(text, " {} {}", key.key_type, key.fingerprint);
            }
            if let Some(report) = &address.ssh
                && !report.problems.is_empty()
            {
                let problems: Vec<&str> = report.problems.iter().map(|p| p.as_label()).collect();
                let _ = write!(text, " ({})", problems.join(", "));
            }
            text
        });
    let detail = match (probe, address.bogus) {
        (Some(p), _) => p.describe(),
        (None, Some(bogus)) => format!("not probed: {}", bogus.why),
        (None, None) => "not probed yet".to_string(),
    };
    AddressRow {
        diagnosis: address
            .diagnosis
            .as_ref()
            .map_or_else(String::new, |d| d.summary.clone()),
        target: address.target.clone(),
        ip: prefix_label(&ipnet::IpNet::from(address.ip)),
        port: address.port,
        state: probe.map_or("-", |p| p.state.as_label()).to_string(),
        finding: address.finding.map_or("-", Finding::as_label).to_string(),
        class,
        latency: probe.map_or_else(String::new, |p| format!("{:.0} ms", p.duration.as_secs_f64() * 1000.0)),
        ssh,
        since: address
            .since
            .as_ref()
            .map_or_else(String::new, |s| format!("{} ({})", clock(s.state), ago(s.state, now))),
        since_unix: address
            .since
            .as_ref()
            .map_or_else(String::new, |s| unix(s.state).to_string()),
        last_change: address.since.as_ref().map_or_else(String::new, |s| {
            let e = &s.last_change;
            let cause = address
                .change_cause
                .as_ref()
                .map(|c| format!(" ({})", c.cause.as_label()))
                .unwrap_or_default();
            format!(
                "{} {} {} -> {}{cause}",
                clock(e.at),
                e.aspect.as_label(),
                e.from.as_deref().unwrap_or("(new)"),
                e.to.as_deref().unwrap_or("(gone)")
            )
        }),
        detail,
    }
}

fn change_row(entry: &Entry<'_>) -> ChangeRow {
    let change = entry.change;
    ChangeRow {
        at: clock(change.at),
        target: change.target.clone(),
        ip: change.ip.to_string(),
        port: change.port,
        change: change_summary(change),
        cause: entry.attribution.cause.as_label(),
        why: entry.attribution.why.clone(),
    }
}

/// How long before `now`, to the largest two units.
fn ago(at: SystemTime, now: SystemTime) -> String {
    let seconds = now.duration_since(at).unwrap_or(Duration::ZERO).as_secs();
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s ago"),
        (0, 0, _) => format!("{m} min ago"),
        (0, _, _) => format!("{h} h {m} min ago"),
        _ => format!("{d} d {h} h ago"),
    }
}
