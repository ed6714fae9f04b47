//! A published list, as pure functions: reading addresses and prefixes out of a body (text, JSON
//! or YAML with a `JSONPath` selector), and deciding whether a parsed list is taken. Fetching and
//! persistence are the shell's (`discovery::published`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::source::{Failure, Reason};
use crate::config::{ListFormat, PublishedSource};
use crate::prefix::{canonical_net, probe_cost};

/// What a server said about its copy, for conditional requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Reads the addresses and prefixes out of a list body.
pub fn parse(source: &PublishedSource, bytes: &[u8], content_type: Option<&str>) -> Result<Vec<IpNet>, Failure> {
    let text = String::from_utf8_lossy(bytes);
    let looks_html = content_type.is_some_and(|t| t.contains("html")) || text.trim_start().starts_with('<');
    if looks_html {
        let first = text.trim_start().lines().next().unwrap_or_default();
        return Err(Failure::new(
            Reason::Parse,
            format!(
                "{} sent an HTML page, not a list: {}",
                source.label,
                first.chars().take(80).collect::<String>()
            ),
        ));
    }
    match source.format {
        ListFormat::Text => parse_text(&text),
        ListFormat::Json => {
            let value: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| Failure::new(Reason::Parse, format!("{}: not valid JSON: {e}", source.label)))?;
            select(source, &value)
        }
        ListFormat::Yaml => {
            let value: serde_json::Value = serde_saphyr::from_slice(bytes).map_err(|e| {
                Failure::new(
                    Reason::Parse,
                    format!("{}: not valid YAML: {}", source.label, e.without_snippet()),
                )
            })?;
            select(source, &value)
        }
    }
}

fn parse_text(text: &str) -> Result<Vec<IpNet>, Failure> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        for token in line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
        {
            let prefix = parse_prefix(token).ok_or_else(|| {
                Failure::new(
                    Reason::Parse,
                    format!("line {}: `{}` is not an address or CIDR", number + 1, shorten(token)),
                )
            })?;
            out.push(prefix);
        }
    }
    Ok(out)
}

fn select(source: &PublishedSource, value: &serde_json::Value) -> Result<Vec<IpNet>, Failure> {
    let path = source
        .select
        .as_ref()
        .expect("json and yaml lists always have a selector");
    path.query(value)
        .all()
        .into_iter()
        .map(|node| {
            let text = node.as_str().ok_or_else(|| {
                Failure::new(
                    Reason::Parse,
                    format!("`select` matched {}, not an address string", shorten(&node.to_string())),
                )
            })?;
            parse_prefix(text.trim()).ok_or_else(|| {
                Failure::new(
                    Reason::Parse,
                    format!("`select` matched `{}`, which is not an address or CIDR", shorten(text)),
                )
            })
        })
        .collect()
}

/// An address (as a host prefix) or a CIDR; host bits are masked, as a firewall would.
/// IPv4-mapped IPv6 is taken as the IPv4 it names, as everywhere else.
fn parse_prefix(text: &str) -> Option<IpNet> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical_net(IpNet::from(ip)));
    }
    text.parse::<IpNet>().ok().map(|p| canonical_net(p.trunc()))
}

fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// Decides whether a parsed list is taken: never everything (`/0`), never more than
/// `max_addresses` to probe, and never a sudden nothing unless the list allows it.
pub fn accept(
    source: &PublishedSource,
    cap: u32,
    parsed: Vec<IpNet>,
    last_good: usize,
) -> Result<BTreeSet<IpNet>, Failure> {
    if let Some(everything) = parsed.iter().find(|p| p.prefix_len() == 0) {
        return Err(Failure::new(
            Reason::TooBroad,
            format!("the list publishes {everything}, every address: refused"),
        ));
    }
    let set: BTreeSet<IpNet> = parsed.into_iter().collect();
    let to_probe = probe_cost(&set, cap);
    if to_probe > u128::from(source.max_addresses) {
        return Err(Failure::new(
            Reason::TooMany,
            format!(
                "the list holds {to_probe} addresses to probe, more than max_addresses ({})",
                source.max_addresses
            ),
        ));
    }
    if set.is_empty() && !source.allow_empty {
        let had = if last_good > 0 {
            format!(" (the last good one had {last_good})")
        } else {
            String::new()
        };
        return Err(Failure::new(
            Reason::Empty,
            format!("the list yields no address{had}: refused; set allow_empty: true if the vendor may publish none"),
        ));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::parse_prefix;

    #[test]
    fn mapped_ipv6_in_a_list_is_the_ipv4_it_names() {
        assert_eq!(
            parse_prefix("::ffff:198.51.100.7"),
            Some("198.51.100.7/32".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("::ffff:198.51.100.0/120"),
            Some("198.51.100.0/24".parse().unwrap())
        );
        assert_eq!(parse_prefix("2001:db8::/64"), Some("2001:db8::/64".parse().unwrap()));
    }
}
