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

fn since(at: Option<SystemTime>) -> String {
    at.map_or_else(String::new, |at| format!(" since {}", day(at)))
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
        return out;
    }
    let additions = |out: &mut String, title: &str, items: &[Addition]| {
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
                since(a.since)
            );
        }
    };
    additions(
        &mut out,
        "ADD to the egress firewall and the whitelist: published by the vendor, not whitelisted",
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
                since(b.since),
                b.evidence
            );
        }
    }
    additions(
        &mut out,
        "DECLARE in the whitelist: already reachable, but no entry says so",
        &request.declare,
    );
    if !request.remove.is_empty() {
        let _ = writeln!(
            out,
            "\nREMOVE from the whitelist and the firewall ({}):",
            request.remove.len()
        );
        for r in &request.remove {
            let why = match (r.reason, &r.target) {
                (RemovalReason::Stale, Some(target)) => format!("{target}: no longer published"),
                _ => "covers no published address of any audited target".to_string(),
            };
            let _ = writeln!(out, "  {:<39} tcp/{:<5} {why}{}", r.entry, r.port, since(r.since));
        }
    }
    out
}

/// The additions (add and declare) as `allow:` entries of a whitelist file: one entry per target
/// and port, so `validate` accepts it and it can be merged into the declared whitelist.
fn yaml(request: &ChangeRequest, now: SystemTime) -> String {
    let mut out = format!(
        "# {}\n# Entries to add to the declared whitelist; this file is itself a valid whitelist.\n",
        header(now)
    );
    for r in &request.remove {
        let _ = writeln!(
            out,
            "# remove: {} port {} ({})",
            r.entry,
            r.port,
            match r.reason {
                RemovalReason::Stale => "no longer published",
                RemovalReason::Unused => "unused",
            }
        );
    }
    for b in &request.blocked {
        let _ = writeln!(
            out,
            "# blocked although whitelisted: {} port {} ({}): fix the firewall, not this file",
            b.ip, b.port, b.state
        );
    }
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
            "\tset missing_{}_{port} {{\n\t\ttype {family}\n\t\tflags interval\n\t\tcomment {}\n\t\telements = {{ {} }}\n\t}}",
            if *v6 { "v6" } else { "v4" },
            yaml_string(&targets.join(", ")),
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
    for a in &request.add {
        let tool = if matches!(a.prefix, IpNet::V6(_)) {
            "ip6tables"
        } else {
            "iptables"
        };
        let comment = format!("{}: whitelist-audit request", a.target);
        let _ = writeln!(
            out,
            "{tool} -A FORWARD -p tcp -d {} --dport {} -m comment --comment {} -j ACCEPT",
            a.prefix.trunc(),
            a.port,
            shell_quote(&comment)
        );
    }
    out
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Blocked and stale pairs, as comments above a rule set.
fn comments(request: &ChangeRequest, out: &mut String) {
    for b in &request.blocked {
        let _ = writeln!(
            out,
            "# blocked although whitelisted: {} tcp/{} ({}, {}){}: the rule exists or the path breaks it",
            b.ip,
            b.port,
            b.target,
            b.state,
            since(b.since)
        );
    }
    for r in &request.remove {
        let why = match r.reason {
            RemovalReason::Stale => "no longer published",
            RemovalReason::Unused => "covers no published address",
        };
        let _ = writeln!(out, "# remove: {} tcp/{}: {why}{}", r.entry, r.port, since(r.since));
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
        // nft refuses overlapping interval elements: keep the outermost of nested prefixes.
        *prefixes = IpNet::aggregate(prefixes);
    }
    sets
}

fn csv(request: &ChangeRequest) -> String {
    let mut out = String::from("action,target,address,port,published_by,state,since,detail\n");
    let mut row = |fields: [&str; 8]| {
        let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&quoted.join(","));
        out.push('\n');
    };
    let time = |at: Option<SystemTime>| at.map(day).unwrap_or_default();
    for (action, items) in [("add", &request.add), ("declare", &request.declare)] {
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
    out
}

fn csv_field(field: &str) -> String {
    // A spreadsheet runs a cell that starts with = + @ as a formula; a server's banner is not ours.
    let field = if field.starts_with(['=', '+', '@', '\t']) {
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
