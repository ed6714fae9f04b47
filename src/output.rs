//! `check`'s output: a table a person reads at a glance, or JSON for scripts. Both render the
//! same report as `/metrics`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::whitelist::EntryUsage;
use crate::core::audit::{AddressReport, Counts, PrefixReport, Report};
use crate::core::cause::Entry;
use crate::core::client_odds::ClientSuccess;
use crate::core::dns_book::Family;
use crate::core::event::{Aspect, Cause, Change, NO_FINDING};
use crate::core::finding::{Finding, FindingCounts};
use crate::core::outcome::ProbeState;
use crate::core::source::{SourceKind, SourceReport};
use crate::core::ssh::{SshEvidence, SshProblem};
use crate::prefix::prefix_label;

/// What `check` prints as JSON.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    pub addresses: Vec<&'a AddressReport>,
    pub targets: Vec<JsonTarget<'a>>,
    pub whitelist_entries: &'a [EntryUsage],
    pub summary: Summary,
}

/// One target's sources and counts, in the JSON output.
#[derive(Debug, Serialize)]
pub struct JsonTarget<'a> {
    pub target: &'a str,
    pub port: u16,
    pub sources: &'a [SourceReport],
    pub counts: &'a Counts,
    pub prefixes: &'a [PrefixReport],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_variants: Option<usize>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub client_success: &'a [ClientSuccess],
}

/// Totals over every target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub targets: usize,
    pub addresses: usize,
    pub open: usize,
    /// Addresses with a network verdict other than open.
    pub not_open: usize,
    /// Addresses this host failed to probe: neither open nor not open.
    pub errors: usize,
    /// Findings of any kind.
    #[serde(rename = "findings")]
    pub findings_total: usize,
    #[serde(flatten)]
    pub findings: FindingCounts,
    /// Sources whose refresh failed: their addresses may be missing from the audit.
    pub failed_sources: usize,
    /// Targets with no address or prefix at all.
    pub empty_targets: usize,
    /// Published prefixes too large to probe: audited against the whitelist only.
    pub unprobed_prefixes: usize,
    /// Parts of published prefixes that no whitelist entry covers.
    pub uncovered_prefix_parts: usize,
    /// Open SSH addresses with an SSH problem (a client that cannot connect, a wrong host key...).
    pub ssh_problems: usize,
    /// `check: ssh` targets whose open addresses are not all the same server.
    pub inconsistent_pools: usize,
    /// Addresses whose idle hold, login or SFTP check found a problem.
    pub session_problems: usize,
}

impl Summary {
    /// Totals of `report`.
    pub fn of(report: &Report) -> Self {
        let mut summary = Self {
            targets: report.targets.len(),
            ..Self::default()
        };
        for target in &report.targets {
            summary.addresses += target.addresses.len();
            summary.failed_sources += target.sources.iter().filter(|s| s.up == Some(false)).count();
            if target.addresses.is_empty() && target.prefixes.is_empty() {
                summary.empty_targets += 1;
            }
            summary.unprobed_prefixes += target.prefixes.iter().filter(|p| !p.probed).count();
            summary.uncovered_prefix_parts += target.prefixes.iter().map(|p| p.uncovered.len()).sum::<usize>();
            summary.inconsistent_pools += usize::from(target.ssh_variants.unwrap_or(0) > 1);
            for address in &target.addresses {
                summary.ssh_problems += usize::from(address.ssh.as_ref().is_some_and(|r| !r.problems.is_empty()));
                summary.session_problems += usize::from(
                    address
                        .session
                        .as_ref()
                        .is_some_and(|s| s.states().iter().any(|(_, state)| state.is_problem())),
                );
                match address.probe.as_ref().map(|p| p.state) {
                    Some(ProbeState::Open) => summary.open += 1,
                    Some(ProbeState::Error) => summary.errors += 1,
                    Some(_) => summary.not_open += 1,
                    None => {}
                }
            }
            // The audit already counted each finding per target.
            summary.findings.add(&target.counts.findings);
        }
        summary.findings_total = summary.findings.total();
        summary
    }

    /// Whether `check` should exit 0: no findings, no failed source or probe, nothing empty. An
    /// address this host could not probe is not known to be fine.
    pub fn is_clean(&self) -> bool {
        self.findings_total == 0
            && self.errors == 0
            && self.failed_sources == 0
            && self.empty_targets == 0
            && self.uncovered_prefix_parts == 0
            && self.ssh_problems == 0
            && self.inconsistent_pools == 0
            && self.session_problems == 0
    }
}

/// Which addresses a view shows: `None` for a field shows all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressFilter {
    pub target: Option<String>,
    /// A finding label, or `none` for addresses without one.
    pub finding: Option<String>,
    /// A probe state label, or `none` for addresses not probed.
    pub state: Option<String>,
}

impl AddressFilter {
    /// Whether `address` passes the filter. Empty values (an HTML form's "all") pass everything.
    pub fn admits(&self, address: &AddressReport) -> bool {
        let wanted = |field: &Option<String>, value: &str| field.as_deref().is_none_or(|w| w.is_empty() || w == value);
        wanted(&self.target, &address.target)
            && wanted(&self.finding, address.finding.map_or("none", Finding::as_label))
            && wanted(
                &self.state,
                address.probe.as_ref().map_or("none", |p| p.state.as_label()),
            )
    }
}

/// A time in UTC to the second, as a person reads it: `2026-11-25 07:22:36 UTC`.
pub fn clock(at: std::time::SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.replacen('T', " ", 1).replace('Z', " UTC")
}

/// Whole seconds since the Unix epoch, as the JSON shows times.
pub fn unix(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Whether every value of `filter` can match something: a typo (`finding=blockd`) is refused
/// rather than answered with nothing, which a script would read as "nothing blocked".
pub fn check_filter(filter: &AddressFilter, report: &Report) -> Result<(), String> {
    let known = |field: &Option<String>, name: &str, values: Vec<&str>| match field.as_deref() {
        Some(value) if !value.is_empty() && !values.contains(&value) => {
            Err(format!("{name} `{value}`: write one of {}", values.join(", ")))
        }
        _ => Ok(()),
    };
    known(
        &filter.target,
        "target",
        report.targets.iter().map(|t| t.target.as_str()).collect(),
    )?;
    known(
        &filter.finding,
        "finding",
        std::iter::once("none")
            .chain(Finding::all().map(Finding::as_label))
            .collect(),
    )?;
    known(
        &filter.state,
        "state",
        std::iter::once("none")
            .chain(ProbeState::ALL.iter().map(|s| s.as_label()))
            .collect(),
    )
}

/// The report as `check --output json` and `/api/v1/snapshot` show it, with the addresses
/// `filter` admits (targets and the summary stay whole).
pub fn json_view<'a>(report: &'a Report, filter: &AddressFilter) -> JsonReport<'a> {
    JsonReport {
        addresses: report
            .targets
            .iter()
            .flat_map(|t| &t.addresses)
            .filter(|a| filter.admits(a))
            .collect(),
        targets: report
            .targets
            .iter()
            .map(|t| JsonTarget {
                target: &t.target,
                port: t.port,
                sources: &t.sources,
                counts: &t.counts,
                prefixes: &t.prefixes,
                ssh_variants: t.ssh_variants,
                client_success: &t.client_success,
            })
            .collect(),
        whitelist_entries: &report.whitelist_entries,
        summary: Summary::of(report),
    }
}

/// The report as pretty JSON.
pub fn json(report: &Report) -> String {
    let view = json_view(report, &AddressFilter::default());
    // Plain data with string keys: serialization cannot fail.
    serde_json::to_string_pretty(&view).expect("report serializes") + "\n"
}

fn row(address: &AddressReport) -> [String; 11] {
    let (state, latency, attempts, mut detail) = match &address.probe {
        Some(p) => (
            p.state.as_label().to_string(),
            format!("{:.0}ms", p.duration.as_secs_f64() * 1000.0),
            p.attempts.to_string(),
            p.describe(),
        ),
        None => match address.bogus {
            Some(bogus) => (
                "-".into(),
                "-".into(),
                "-".into(),
                format!(
                    "not probed: {} returned it, and it is {}",
                    match bogus.source {
                        SourceKind::Dns => "DNS",
                        SourceKind::Static => "the configuration",
                        SourceKind::Published => "a published list",
                    },
                    bogus.why
                ),
            ),
            None => ("-".into(), "-".into(), "-".into(), "not probed".into()),
        },
    };
    if let Some(since) = &address.since {
        // From a daemon's history in state_dir: since when this state holds.
        detail = format!("since {}: {detail}", clock(since.state));
    }
    [
        address.target.clone(),
        address.ip.to_string(),
        address.port.to_string(),
        yes_no(Some(address.published)).into(),
        yes_no(address.whitelisted).into(),
        state,
        latency,
        attempts,
        address.finding.map_or("-", Finding::as_label).into(),
        address
            .diagnosis
            .as_ref()
            .map_or_else(|| "-".to_string(), |d| d.short()),
        detail,
    ]
}

/// A line per diagnosed address with the whole story (the table's column has its gist).
fn diagnosis_lines(report: &Report, out: &mut String) {
    for address in report.targets.iter().flat_map(|t| &t.addresses) {
        if let Some(diagnosis) = &address.diagnosis {
            let _ = writeln!(
                out,
                "diagnosis: {} {}: {}",
                address.target, address.ip, diagnosis.summary
            );
        }
    }
}

/// A line per failed source and per target with nothing to probe: the table alone would hide them.
fn warnings(report: &Report, out: &mut String) {
    /// Prefix lines shown before "and N more": a vendor list can hold thousands.
    const MAX_PREFIX_LINES: usize = 20;
    let mut prefix_lines = 0;
    let mut hidden = 0;
    for target in &report.targets {
        for source in target.sources.iter().filter(|s| s.up == Some(false)) {
            let _ = write!(
                out,
                "warning: {} {} failed, keeping its last good set: {}",
                target.target,
                source.name(),
                source.last_error.as_deref().unwrap_or("unknown error")
            );
            // One family failing while the other answers: say that its answers count, and how
            // to leave the failing family out.
            if let [(a, true), (_, false)] | [(_, false), (a, true)] = source.families.as_slice() {
                let flag = if *a == Family::Ipv4 { "-4" } else { "-6" };
                let _ = write!(
                    out,
                    " ({} answers kept; `address_families` or {flag} asks for {} only)",
                    a.record_type(),
                    a.as_label()
                );
            }
            out.push('\n');
        }
        if target.addresses.is_empty() && target.prefixes.is_empty() {
            let _ = writeln!(out, "warning: {} has no address to probe", target.target);
        }
        for prefix in target.prefixes.iter().filter(|p| !p.probed || !p.uncovered.is_empty()) {
            if prefix_lines == MAX_PREFIX_LINES {
                hidden += 1;
                continue;
            }
            prefix_lines += 1;
            let probed = if prefix.probed { "probed" } else { "audited, not probed" };
            let _ = write!(out, "prefix: {} {} ({probed})", target.target, prefix.prefix);
            if prefix.uncovered.is_empty() {
                out.push('\n');
            } else {
                let parts: Vec<String> = prefix.uncovered.iter().map(prefix_label).collect();
                let _ = writeln!(out, ": not whitelisted: {}", parts.join(", "));
            }
        }
    }
    if hidden > 0 {
        let _ = writeln!(out, "prefix: ... and {hidden} more (see --output json)");
    }
}

/// A line per SSH problem of an address, with what each side offers: the table's DETAIL has
/// room for the server's software and key only.
fn ssh_lines(report: &Report, out: &mut String) {
    for target in &report.targets {
        if let Some(variants) = target.ssh_variants.filter(|&n| n > 1) {
            let _ = writeln!(
                out,
                "ssh: {}: inconsistent pool: {variants} different servers (host key or algorithms) among its open addresses",
                target.target
            );
        }
        for address in &target.addresses {
            let Some(ssh) = &address.ssh else { continue };
            let at = format!("ssh: {} {}", address.target, address.ip);
            for client in &ssh.clients {
                for m in &client.missing {
                    let _ = writeln!(
                        out,
                        "{at}: no_common_algorithm: {} cannot agree on a {}: it offers {}; the server offers {}",
                        client.client,
                        m.kind.as_label(),
                        list_or_nothing(&m.client_offers),
                        list_or_nothing(&m.server_offers)
                    );
                }
                for w in &client.weak_only {
                    let _ = writeln!(
                        out,
                        "{at}: weak_only: {} agrees on the {} only through {} ({}, per {}): it breaks when the server drops them",
                        client.client,
                        w.kind.as_label(),
                        w.algorithms.join(","),
                        w.reason,
                        w.source
                    );
                }
            }
            if let Some(key) = ssh.host_key.as_ref().filter(|_| ssh.has(SshProblem::HostKeyMismatch)) {
                let _ = write!(
                    out,
                    "{at}: host_key_mismatch: {} {} is none of the target's ssh.host_keys: another server, or an SSH-intercepting proxy",
                    key.key_type, key.fingerprint
                );
                let others = other_key_algorithms(address, &key.algorithm);
                if !others.is_empty() {
                    // A pin of the server's RSA key does not match the ed25519 key asked for first.
                    let _ = write!(
                        out,
                        " (the server also offers {}; the probe asks for this type first, as OpenSSH does: if you pinned a key of another type, pin this one)",
                        others.join(",")
                    );
                }
                out.push('\n');
            }
            if ssh.host_key.is_none() && ssh.has(SshProblem::HostKeyMismatch) {
                let why = ssh_evidence(address)
                    .and_then(|e| e.host_key_note.clone())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{at}: host_key_mismatch: the address proved no host key, so none of ssh.host_keys: {why}"
                );
            }
            if let Some(key) = ssh.host_key.as_ref().filter(|_| ssh.has(SshProblem::HostKeyChanged)) {
                let _ = writeln!(
                    out,
                    "{at}: host_key_changed: now {} {}, before {}",
                    key.key_type,
                    key.fingerprint,
                    ssh.previous_host_key.as_deref().unwrap_or("?")
                );
            }
        }
    }
}

/// What the address's last SSH probe learned.
/// One line per session check that ran: `session: TARGET IP: CHECK: STATE: detail`.
fn session_lines(report: &Report, out: &mut String) {
    for address in report.targets.iter().flat_map(|t| &t.addresses) {
        let Some(session) = &address.session else { continue };
        let at = format!("session: {} {}", address.target, address.ip);
        if let Some(login) = &session.login {
            let methods = login
                .methods
                .as_ref()
                .map_or_else(String::new, |m| format!(" [offered: {}]", m.join(",")));
            let _ = writeln!(
                out,
                "{at}: login: {}: {}{methods}",
                login.state.as_label(),
                login.detail
            );
            if let Some(sftp) = &login.sftp {
                let response = sftp
                    .response
                    .map_or_else(String::new, |r| format!(" in {:.0} ms", r.as_secs_f64() * 1000.0));
                let _ = writeln!(out, "{at}: sftp: {}: {}{response}", sftp.state.as_label(), sftp.detail);
            }
        }
        if let Some(idle) = &session.idle {
            let _ = writeln!(out, "{at}: idle: {}: {}", idle.state.as_label(), idle.detail);
        }
    }
}

/// A line per target with the odds of a client connecting by name: what the people whose
/// transfers fail feel, which the per-address rows leave to arithmetic.
fn client_lines(report: &Report, out: &mut String) {
    let percent = |odds: &ClientSuccess| format!("{:.1} %", odds.ratio * 100.0);
    let plural = |n: u32| if n == 1 { "" } else { "s" };
    for target in &report.targets {
        let Some(last) = target.client_success.last() else {
            continue;
        };
        let _ = write!(
            out,
            "client: {}: a client with {} attempt{} succeeds in {} of connections",
            target.target,
            last.attempts,
            plural(last.attempts),
            percent(last)
        );
        if let [first, _, ..] = target.client_success.as_slice() {
            let _ = write!(
                out,
                " ({} attempt{}: {})",
                first.attempts,
                plural(first.attempts),
                percent(first)
            );
        }
        out.push('\n');
    }
}

fn ssh_evidence(address: &AddressReport) -> Option<&SshEvidence> {
    address.probe.as_ref()?.evidence_as::<SshEvidence>()
}

/// The host key algorithms the address offers besides the one its key was asked for with.
fn other_key_algorithms(address: &AddressReport, asked: &str) -> Vec<String> {
    ssh_evidence(address)
        .and_then(|e| e.algorithms.as_deref())
        .map(|a| a.host_key.iter().filter(|n| n.as_str() != asked).cloned().collect())
        .unwrap_or_default()
}

fn list_or_nothing(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(",")
    }
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// The report as an aligned table, a line per problem source, and a summary line.
pub fn table(report: &Report) -> String {
    let header = [
        "TARGET",
        "IP",
        "PORT",
        "PUBLISHED",
        "WHITELISTED",
        "STATE",
        "LATENCY",
        "ATTEMPTS",
        "FINDING",
        "DIAGNOSIS",
        "DETAIL",
    ];
    let rows: Vec<[String; 11]> = report.targets.iter().flat_map(|t| &t.addresses).map(row).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    warnings(report, &mut out);
    diagnosis_lines(report, &mut out);
    ssh_lines(report, &mut out);
    session_lines(report, &mut out);
    client_lines(report, &mut out);
    let s = Summary::of(report);
    // What to do, once per kind of finding present: the table says where, this says what.
    for (finding, count) in s.findings.iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(out, "{}: {count}: {}", finding.as_label(), finding.action());
    }
    if s.errors > 0 {
        let _ = writeln!(
            out,
            "error: {}: this host could not probe them; fix this host (see DETAIL), the path is unknown",
            s.errors
        );
    }
    let _ = write!(
        out,
        "summary: {} address{} of {} target{}: {} open, {} not open",
        s.addresses,
        if s.addresses == 1 { "" } else { "es" },
        s.targets,
        if s.targets == 1 { "" } else { "s" },
        s.open,
        s.not_open,
    );
    if s.errors > 0 {
        let _ = write!(out, ", {} not probed (error on this host)", s.errors);
    }
    let _ = write!(out, "; findings: {}", s.findings_total);
    if s.findings_total > 0 {
        let parts: Vec<String> = s
            .findings
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(finding, n)| format!("{n} {}", finding.as_label()))
            .collect();
        let _ = write!(out, " ({})", parts.join(", "));
    }
    if s.ssh_problems > 0 || s.inconsistent_pools > 0 {
        let _ = write!(
            out,
            "; ssh: {} address(es) with problems, {} inconsistent pool(s)",
            s.ssh_problems, s.inconsistent_pools
        );
    }
    if s.session_problems > 0 {
        let _ = write!(out, "; sessions: {} address(es) with problems", s.session_problems);
    }
    if s.unprobed_prefixes > 0 || s.uncovered_prefix_parts > 0 {
        let _ = write!(
            out,
            "; prefixes: {} audited without probing, {} part(s) not whitelisted",
            s.unprobed_prefixes, s.uncovered_prefix_parts
        );
    }
    out.push('\n');
    out
}

/// What one change moved, in words: `open -> timeout, finding none -> blocked`.
pub fn change_summary(change: &Change) -> String {
    let value = |aspect| change.after(aspect).unwrap_or("-");
    if change.appeared {
        let mut parts = vec![format!("appeared: {}", value(Aspect::State))];
        if let Some(finding) = change.after(Aspect::Finding).filter(|f| *f != NO_FINDING) {
            parts.push(format!("finding {finding}"));
        }
        parts.extend(change.after(Aspect::Whitelist).map(str::to_string));
        if let Some(by) = change
            .event(Aspect::Published)
            .map(|e| e.detail.as_str())
            .filter(|d| !d.is_empty())
        {
            parts.push(by.to_string());
        }
        return parts.join(", ");
    }
    if change.left() {
        let was: Vec<&str> = [Aspect::State, Aspect::Finding, Aspect::Published]
            .into_iter()
            .filter_map(|a| change.before(a))
            .filter(|v| *v != NO_FINDING)
            .collect();
        return format!("left the audit (was {})", was.join(", "));
    }
    Aspect::ALL
        .into_iter()
        .filter_map(|aspect| {
            let (from, to) = change.moved(aspect)?;
            Some(match aspect {
                Aspect::State => format!("{from} -> {to}"),
                Aspect::Service => format!("server {from} -> {to}"),
                _ => format!("{} {from} -> {to}", aspect.as_label()),
            })
        })
        .collect::<Vec<String>>()
        .join(", ")
}

/// A timeline for a terminal: one line per change, oldest first.
pub fn timeline_text(entries: &[Entry<'_>]) -> String {
    let mut out = String::new();
    for entry in entries {
        let change = entry.change;
        let _ = writeln!(
            out,
            "{}  {}  {}  {}  {}: {}",
            clock(change.at),
            change.target,
            std::net::SocketAddr::new(change.ip, change.port),
            change_summary(change),
            entry.attribution.cause.as_label(),
            entry.attribution.why
        );
    }
    out
}

/// A timeline for a ticket, as a Markdown table.
pub fn timeline_markdown(entries: &[Entry<'_>]) -> String {
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let mut out =
        String::from("| When (UTC) | Target | Address | Change | Cause | Evidence |\n|---|---|---|---|---|---|\n");
    for entry in entries {
        let change = entry.change;
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} | **{}** | {} |",
            clock(change.at).trim_end_matches(" UTC"),
            cell(&change.target),
            std::net::SocketAddr::new(change.ip, change.port),
            cell(&change_summary(change)),
            entry.attribution.cause.as_label(),
            cell(&entry.attribution.why)
        );
    }
    out
}

/// How many changes each cause has: `3 changes: 2 local_path, 1 vendor_added`.
pub fn cause_counts(entries: &[Entry<'_>]) -> String {
    if entries.is_empty() {
        return "no changes".to_string();
    }
    let mut counts: std::collections::BTreeMap<Cause, usize> = std::collections::BTreeMap::new();
    for entry in entries {
        *counts.entry(entry.attribution.cause).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(c, n)| format!("{n} {}", c.as_label())).collect();
    format!(
        "{} change{}: {}",
        entries.len(),
        if entries.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// What each cause means, for a reader of a ticket.
pub const CAUSES_EXPLAINED: &str = "\
Causes: **vendor_added** / **vendor_removed**: the vendor's published set (DNS, its list) gained or lost the \
address. **vendor_service**: still published, our side unchanged, but the server answers differently (another \
host key, software or algorithms, or not SSH). **local_path**: a published address changed reachability while \
the published set and the whitelist stood still (our firewall or path). **local_whitelist**: the declared \
whitelist changed and the address gained or lost coverage. **unknown**: both sides changed within the time the \
audit needs to see a change, or nothing seen explains it; never a guess.";
#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use crate::config;
    use crate::core::outcome::{Attempt, LocalFault, ProbeResult, ProbeState};
    use crate::core::state::{State, TargetId};

    #[test]
    fn the_table_tells_a_clients_odds_per_target_and_only_when_known() {
        let yaml = "targets:\n  - {name: pool, check: tcp, client_attempts: 1, static: [192.0.2.1, 192.0.2.2]}\n  - {name: unknown, check: tcp, static: [192.0.2.9]}\n";
        let raw = config::parse_yaml(Path::new("o.yml"), yaml).unwrap();
        let mut state = State::new(Arc::new(config::build(Path::new("o.yml"), &raw).unwrap()));
        let now = SystemTime::now();
        let ended = |s| ProbeResult::from_attempt(Attempt::ended(s, Duration::from_millis(1), "lab"), 1, now);
        state.record_probe(TargetId(0), "192.0.2.1".parse().unwrap(), ended(ProbeState::Open));
        state.record_probe(TargetId(0), "192.0.2.2".parse().unwrap(), ended(ProbeState::Timeout));
        let fault = Attempt::fault(LocalFault::FdExhausted, Duration::ZERO, "EMFILE");
        state.record_probe(
            TargetId(1),
            "192.0.2.9".parse().unwrap(),
            ProbeResult::from_attempt(fault, 1, now),
        );
        let table = super::table(&state.report());
        let lines: Vec<&str> = table.lines().filter(|l| l.starts_with("client: ")).collect();
        assert_eq!(
            lines,
            ["client: pool: a client with 1 attempt succeeds in 50.0 % of connections"],
            "{table}"
        );
    }
}
