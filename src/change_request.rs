//! `whitelist-audit request`'s formats: the same [`ChangeRequest`] as text for a ticket, a YAML
//! whitelist patch, nftables and iptables snippets (never applied by the tool), or CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::core::request::{Addition, ChangeRequest, RemovalReason};
use crate::prefix::prefix_label;

/// A format of `whitelist-audit request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Yaml,
    Nftables,
    Iptables,
    Csv,
}

/// `request` in `format`, made at `now`.
pub fn render(request: &ChangeRequest, format: Format, now: SystemTime) -> String {
    match format {
        Format::Text => text(request, now),
        Format::Yaml => yaml(request, now),
        Format::Nftables => nftables(request, now),
        Format::Iptables => iptables(request, now),
        Format::Csv => csv(request),
    }
}

fn day(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `; missing since ...` when the history knows since when the finding holds.
fn since(finding: &str, at: Option<SystemTime>) -> String {
    at.map_or_else(String::new, |at| format!("; {finding} since {}", day(at)))
}

fn sources(addition: &[std::sync::Arc<str>]) -> String {
    if addition.is_empty() {
        "no source".to_string()
    } else {
        addition.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
    }
}

fn header(now: SystemTime) -> String {
    format!(
        "whitelist-audit {} change request, {}",
        env!("CARGO_PKG_VERSION"),
        day(now)
    )
}

fn text(request: &ChangeRequest, now: SystemTime) -> String {
    let mut out = header(now) + "\n";
    if request.is_empty() {
        out.push_str(
            "\nNothing to change: every published address is whitelisted and reachable, and every entry is used.\n",
        );
    }
    for why in &request.removals_withheld {
        let _ = writeln!(out, "\nNo removal is proposed: {why}.");
    }
    if request.is_empty() {
        return out;
    }
    let additions = |out: &mut String, title: &str, finding: &str, items: &[Addition]| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{title} ({}):", items.len());
        for a in items {
            let state = a.state.map_or_else(String::new, |s| format!(", {s} from here"));
            let _ = writeln!(
                out,
                "  {:<39} tcp/{:<5} {}: published by {}{state}{}",
                prefix_label(&a.prefix),
                a.port,
                a.target,
                sources(&a.published_by),
                since(finding, a.since)
            );
        }
    };
    additions(
        &mut out,
        "ADD to the egress firewall and the whitelist: published by the vendor, not whitelisted",
        "missing",
        &request.add,
    );
    if !request.blocked.is_empty() {
        let _ = writeln!(
            out,
            "\nBLOCKED: whitelisted and published, but not reachable from here; check the rule and the path ({}):",
            request.blocked.len()
        );
        for b in &request.blocked {
            let _ = writeln!(
                out,
                "  {:<39} tcp/{:<5} {}: {}{}: {}",
                b.ip.to_string(),
                b.port,
                b.target,
                b.state,
                since("blocked", b.since),
                b.evidence
            );
        }
    }
    additions(
        &mut out,
        "REVIEW before adding: published, not whitelisted, and broader than global.broad_entry_prefix",
        "missing",
        &request.review,
    );
    additions(
        &mut out,
        "DECLARE in the whitelist: already reachable, but no entry says so",
        "undeclared",
        &request.declare,
    );
    removals_and_unknown(request, &mut out);
    out
}

/// The REMOVE and UNKNOWN sections of the text.
fn removals_and_unknown(request: &ChangeRequest, out: &mut String) {
    if !request.remove.is_empty() {
        let _ = writeln!(
            out,
            "\nREMOVE from the whitelist and the firewall ({}):",
            request.remove.len()
        );
        for r in &request.remove {
            let why = match (r.reason, &r.target) {
                (RemovalReason::Stale, Some(target)) => format!("{target}: not published by the vendor"),
                _ => "covers no published address of any audited target".to_string(),
            };
            let at = if r.declared_at.is_empty() {
                String::new()
            } else {
                format!(
                    " [{}]",
                    r.declared_at
                        .iter()
                        .map(AsRef::as_ref)
                        .collect::<Vec<&str>>()
                        .join("; ")
                )
            };
            let _ = writeln!(
                out,
                "  {:<39} tcp/{:<5} {why}{}{at}",
                r.entry,
                r.port,
                since("stale", r.since)
            );
        }
    }
    if !request.unknown.is_empty() {
        let _ = writeln!(
            out,
            "\nUNKNOWN: not judged, so this request may be incomplete; run it again ({}):",
            request.unknown.len()
        );
        for u in &request.unknown {
            let _ = writeln!(
                out,
                "  {:<39} tcp/{:<5} {}: {}",
                u.ip.to_string(),
                u.port,
                u.target,
                u.why
            );
        }
    }
}

/// The additions (add and declare) as `allow:` entries of a whitelist file: one entry per target
/// and port, so `validate` accepts it and it can be merged into the declared whitelist.
fn yaml(request: &ChangeRequest, now: SystemTime) -> String {
    let mut out = format!(
        "# {}\n# Entries to add to the declared whitelist; this file is itself a valid whitelist.\n",
        header(now)
    );
    comments(request, &mut out);
    let mut groups: BTreeMap<(&str, u16, &str), Vec<&Addition>> = BTreeMap::new();
    for (why, items) in [("missing", &request.add), ("undeclared", &request.declare)] {
        for a in items {
            groups.entry((a.target.as_str(), a.port, why)).or_default().push(a);
        }
    }
    if groups.is_empty() {
        out.push_str("allow: []\n");
        return out;
    }
    out.push_str("allow:\n");
    for ((target, port, why), items) in groups {
        let addresses: Vec<String> = items
            .iter()
            .map(|a| format!("\"{}\"", prefix_label(&a.prefix)))
            .collect();
        let comment = match why {
            "missing" => "published by the vendor, not whitelisted",
            _ => "reachable, not declared",
        };
        let _ = writeln!(out, "  - addresses: [{}]", addresses.join(", "));
        let _ = writeln!(out, "    ports: [{port}]");
        let _ = writeln!(out, "    target: {}", yaml_string(target));
        let _ = writeln!(
            out,
            "    comment: {}",
            yaml_string(&format!("whitelist-audit request {}: {comment}", &day(now)[..10]))
        );
    }
    out
}

fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// The missing pairs as an nftables table of its own: per port and family, a set of addresses
/// and a rule that accepts them in the forward path. Blocked and stale pairs are comments.
fn nftables(request: &ChangeRequest, now: SystemTime) -> String {
    let mut out = format!(
        "# {}\n# Egress rules for the published addresses the whitelist lacks. Review them, and move the\n\
         # elements into your own sets and chains: whitelist-audit never applies them.\n\
         # `nft -c -f FILE` checks the syntax without loading anything.\n",
        header(now)
    );
    comments(request, &mut out);
    let by_set = sets(request);
    if by_set.is_empty() {
        out.push_str("# nothing to add\n");
        return out;
    }
    out.push_str("table inet vendor_whitelist_request {\n");
    for ((v6, port), (prefixes, targets)) in &by_set {
        let family = if *v6 { "ipv6_addr" } else { "ipv4_addr" };
        let elements: Vec<String> = prefixes.iter().map(prefix_label).collect();
        let _ = writeln!(
            out,
            "\t# for {}\n\tset missing_{}_{port} {{\n\t\ttype {family}\n\t\tflags interval\n\t\telements = {{ {} }}\n\t}}",
            targets.join(", "),
            if *v6 { "v6" } else { "v4" },
            elements.join(", ")
        );
    }
    out.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    for (v6, port) in by_set.keys() {
        let (match_family, name) = if *v6 { ("ip6", "v6") } else { ("ip", "v4") };
        let _ = writeln!(
            out,
            "\t\t{match_family} daddr @missing_{name}_{port} tcp dport {port} accept"
        );
    }
    out.push_str("\t}\n}\n");
    out
}

/// The missing pairs as iptables and ip6tables commands appending to FORWARD.
fn iptables(request: &ChangeRequest, now: SystemTime) -> String {
    let mut out = format!(
        "# {}\n# Egress rules for the published addresses the whitelist lacks, appended to FORWARD. Review\n\
         # them and their position in your rule set: whitelist-audit never applies them.\n",
        header(now)
    );
    comments(request, &mut out);
    if request.add.is_empty() {
        out.push_str("# nothing to add\n");
    }
    for ((v6, port), (prefixes, targets)) in sets(request) {
        let tool = if v6 { "ip6tables" } else { "iptables" };
        let comment = format!("{}: whitelist-audit request", targets.join(", "));
        for prefix in prefixes {
            let _ = writeln!(
                out,
                "{tool} -A FORWARD -p tcp -d {prefix} --dport {port} -m comment --comment {} -j ACCEPT",
                shell_quote(&comment)
            );
        }
    }
    out
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// What a rule set or whitelist patch leaves out, as comments above it: blocked, stale, too
/// broad, unknown, and why no removal is proposed.
fn comments(request: &ChangeRequest, out: &mut String) {
    for a in &request.review {
        let _ = writeln!(
            out,
            "# review, not added: {} tcp/{} ({}) is broader than global.broad_entry_prefix",
            prefix_label(&a.prefix),
            a.port,
            a.target
        );
    }
    for u in &request.unknown {
        let _ = writeln!(
            out,
            "# unknown, not judged: {} tcp/{} ({}): {}",
            u.ip, u.port, u.target, u.why
        );
    }
    for why in &request.removals_withheld {
        let _ = writeln!(out, "# no removal proposed: {why}");
    }
    for b in &request.blocked {
        let _ = writeln!(
            out,
            "# blocked although whitelisted: {} tcp/{} ({}, {}){}: the rule exists or the path breaks it",
            b.ip,
            b.port,
            b.target,
            b.state,
            since("blocked", b.since)
        );
    }
    for r in &request.remove {
        let why = match r.reason {
            RemovalReason::Stale => "not published by the vendor",
            RemovalReason::Unused => "covers no published address",
        };
        let at = r.declared_at.first().map_or_else(String::new, |at| format!(" [{at}]"));
        let _ = writeln!(
            out,
            "# remove: {} tcp/{}: {why}{}{at}",
            r.entry,
            r.port,
            since("stale", r.since)
        );
    }
}

type SetKey = (bool, u16);

/// The missing prefixes by (IPv6?, port), with the targets they are for.
fn sets(request: &ChangeRequest) -> BTreeMap<SetKey, (Vec<IpNet>, Vec<String>)> {
    let mut sets: BTreeMap<SetKey, (Vec<IpNet>, Vec<String>)> = BTreeMap::new();
    for a in &request.add {
        let (prefixes, targets) = sets.entry((matches!(a.prefix, IpNet::V6(_)), a.port)).or_default();
        prefixes.push(a.prefix.trunc());
        if !targets.contains(&a.target) {
            targets.push(a.target.clone());
        }
    }
    for (prefixes, _) in sets.values_mut() {
        *prefixes = outermost(prefixes);
    }
    sets
}

/// The prefixes not inside another one, sorted: nft refuses overlapping interval elements, and
/// a rule per nested prefix says nothing more. Never merged into a broader prefix than listed.
fn outermost(prefixes: &[IpNet]) -> Vec<IpNet> {
    let mut sorted: Vec<IpNet> = prefixes.iter().map(IpNet::trunc).collect();
    sorted.sort_by_key(|p| (p.prefix_len(), *p));
    let mut kept: Vec<IpNet> = Vec::new();
    for prefix in sorted {
        if !kept.iter().any(|k| k.contains(&prefix)) {
            kept.push(prefix);
        }
    }
    kept.sort();
    kept
}

fn csv(request: &ChangeRequest) -> String {
    let mut out = String::from("action,target,address,port,published_by,state,since,detail\n");
    let mut row = |fields: [&str; 8]| {
        let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&quoted.join(","));
        out.push('\n');
    };
    let time = |at: Option<SystemTime>| at.map(day).unwrap_or_default();
    for (action, items) in [
        ("add", &request.add),
        ("review", &request.review),
        ("declare", &request.declare),
    ] {
        for a in items {
            row([
                action,
                &a.target,
                &prefix_label(&a.prefix),
                &a.port.to_string(),
                &sources(&a.published_by),
                a.state.unwrap_or(""),
                &time(a.since),
                "",
            ]);
        }
    }
    for b in &request.blocked {
        row([
            "blocked",
            &b.target,
            &b.ip.to_string(),
            &b.port.to_string(),
            &sources(&b.published_by),
            b.state,
            &time(b.since),
            &b.evidence,
        ]);
    }
    for r in &request.remove {
        let reason = match r.reason {
            RemovalReason::Stale => "stale",
            RemovalReason::Unused => "unused",
        };
        row([
            "remove",
            r.target.as_deref().unwrap_or(""),
            &r.entry,
            &r.port.to_string(),
            "",
            "",
            &time(r.since),
            reason,
        ]);
    }
    for u in &request.unknown {
        row([
            "unknown",
            &u.target,
            &u.ip.to_string(),
            &u.port.to_string(),
            "",
            "",
            "",
            &u.why,
        ]);
    }
    out
}

fn csv_field(field: &str) -> String {
    // A spreadsheet runs a cell that starts with = + - @ as a formula; a server's banner is not ours.
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_prefixes_keep_the_outermost_and_are_never_merged_broader() {
        let listed: Vec<IpNet> = ["192.0.2.0/25", "192.0.2.7/32", "192.0.2.128/25", "2001:db8::1/128"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let kept: Vec<String> = outermost(&listed).iter().map(ToString::to_string).collect();
        assert_eq!(kept, ["192.0.2.0/25", "192.0.2.128/25", "2001:db8::1/128"]);
    }

    #[test]
    fn a_csv_cell_is_quoted_and_never_a_formula() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, \"b\""), "\"a, \"\"b\"\"\"");
        assert_eq!(csv_field("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_field("-1+1"), "'-1+1");
    }
}

/// `ChangeRequest::of` on states built from real configuration files (the core does no I/O, so
/// its tests that need a whitelist file live here).
#[cfg(test)]
mod request_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use std::time::SystemTime;

    use crate::config;
    use crate::config::BroadEntryPrefix;
    use crate::core::outcome::{Attempt, LocalFault, ProbeResult, ProbeState};
    use crate::core::request::ChangeRequest;
    use crate::core::state::{State, TargetId};

    fn state(target: &str, whitelist: &str) -> (State, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("wla-request-{}-{}", std::process::id(), target.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("wl.yml"), whitelist).unwrap();
        let yaml = format!("global:\n  whitelist: wl.yml\ntargets:\n{target}");
        let path = dir.join("c.yml");
        let raw = config::parse_yaml(&path, &yaml).unwrap();
        (State::new(Arc::new(config::build(&path, &raw).unwrap())), dir)
    }

    fn probe(state: &mut State, ip: &str, verdict: ProbeState) {
        let mut attempt = Attempt::ended(verdict, Duration::from_millis(5), "seen");
        if verdict == ProbeState::Error {
            attempt.fault = Some(LocalFault::FdExhausted);
        }
        let result = ProbeResult::from_attempt(attempt, 1, SystemTime::UNIX_EPOCH);
        state.record_probe(TargetId(0), ip.parse().unwrap(), result);
    }

    #[test]
    fn what_was_not_judged_is_unknown_never_fine() {
        let (mut state, dir) = state(
            "  - name: v\n    static: [192.0.2.1, 192.0.2.2, 192.0.2.3]\n",
            "allow:\n  - addresses: [192.0.2.0/30]\n    ports: [22]\n",
        );
        probe(&mut state, "192.0.2.1", ProbeState::Open);
        probe(&mut state, "192.0.2.2", ProbeState::Error);
        let request = ChangeRequest::of(&state.report(), BroadEntryPrefix::default());
        let unknown: Vec<String> = request.unknown.iter().map(|u| u.ip.to_string()).collect();
        assert_eq!(unknown, ["192.0.2.2", "192.0.2.3"]);
        assert!(
            request.unknown[0].why.contains("failed to probe"),
            "{:?}",
            request.unknown
        );
        assert!(request.blocked.is_empty(), "a local fault is not a blocked address");
        assert!(!request.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_removal_while_a_source_has_not_answered() {
        let (mut state, dir) = state(
            "  - name: v\n    host: sftp.vendor.test\n    static: [192.0.2.1]\n",
            "allow:\n  - addresses: [192.0.2.1, 198.51.100.0/24]\n    ports: [22]\n  - addresses: [203.0.113.0/24]\n    ports: [443]\n",
        );
        probe(&mut state, "192.0.2.1", ProbeState::Open);
        let request = ChangeRequest::of(&state.report(), BroadEntryPrefix::default());
        assert!(request.remove.is_empty(), "{:?}", request.remove);
        assert_eq!(request.removals_withheld.len(), 1, "{:?}", request.removals_withheld);
        assert!(
            request.removals_withheld[0].contains("dns"),
            "{:?}",
            request.removals_withheld
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unused_entry_is_removed_only_on_an_audited_port() {
        let (mut state, dir) = state(
            "  - name: v\n    static: [192.0.2.1]\n",
            "allow:\n  - addresses: [192.0.2.1, 198.51.100.0/24]\n    ports: [22]\n  - addresses: [203.0.113.0/24]\n    ports: [443]\n",
        );
        probe(&mut state, "192.0.2.1", ProbeState::Open);
        let request = ChangeRequest::of(&state.report(), BroadEntryPrefix::default());
        let removed: Vec<(String, u16)> = request.remove.iter().map(|r| (r.entry.clone(), r.port)).collect();
        assert_eq!(
            removed,
            [("198.51.100.0/24".to_string(), 22)],
            "443 is no port this audit probes"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
