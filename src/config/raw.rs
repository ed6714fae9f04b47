//! The configuration files as written: serde shapes only. Values that have a type (durations,
//! addresses, prefixes, resolvers) are parsed here, so a bad one is reported at its own line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de::Error as _};
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub global: RawGlobal,
    pub targets: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    pub interval: Option<Spanned<HumanDuration>>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub attempts: Option<Count>,
    pub retry_delay: Option<HumanDuration>,
    pub concurrency: Option<Count>,
    pub per_target_concurrency: Option<Count>,
    pub resolvers: Option<Spanned<Vec<ResolverSpec>>>,
    pub whitelist: Option<Spanned<PathBuf>>,
    pub state_dir: Option<PathBuf>,
    pub max_probe_addresses_per_prefix: Option<Count>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub port: Option<NonZeroU16Port>,
    pub check: Option<CheckKind>,
    pub resolvers: Option<Spanned<Vec<ResolverSpec>>>,
    pub address_families: Option<Spanned<Vec<AddressFamily>>>,
    pub dns_queries: Option<Count>,
    pub dns_retention: Option<HumanDuration>,
    #[serde(rename = "static")]
    pub static_addresses: Option<Vec<HostAddress>>,
    pub whitelist: Option<Spanned<PathBuf>>,
    pub published: Option<Vec<Spanned<RawPublished>>>,
}

/// One published list of a target: where to fetch it and how to read it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublished {
    pub url: Option<Spanned<String>>,
    pub path: Option<Spanned<PathBuf>>,
    pub format: Option<ListFormat>,
    pub select: Option<Spanned<String>>,
    pub refresh: Option<Spanned<HumanDuration>>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub headers: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub allow_empty: Option<bool>,
    pub max_size: Option<Count>,
    pub max_addresses: Option<Count>,
}

/// How a published list is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListFormat {
    /// One address or CIDR per line; `#` comments and blank lines ignored.
    Text,
    /// A JSON document; `select` picks the address strings.
    Json,
    /// A YAML document; `select` picks the address strings.
    Yaml,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhitelist {
    pub allow: Vec<RawAllow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    pub addresses: Spanned<Vec<Spanned<Prefix>>>,
    pub ports: Spanned<Vec<NonZeroU16Port>>,
    pub target: Option<Spanned<String>>,
    pub comment: Option<String>,
}

/// What a target's probe checks on top of the TCP handshake: the list of probe kinds. A new kind
/// is a variant here with its row in [`CheckKind::ALL`], and its arm in `probe::attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// TCP connect, then a valid SSH identification line from the server.
    Ssh,
    /// TCP connect only.
    Tcp,
    /// TCP connect, then any banner from the server (FTP, SMTP, POP3, IMAP).
    TcpBanner,
}

/// One probe kind: its `check:` value, its description and the info metric it exports.
#[derive(Debug, Clone, Copy)]
pub struct KindRow {
    pub kind: CheckKind,
    pub label: &'static str,
    pub help: &'static str,
    /// The info metric family (name, help) the kind's evidence fills, if any.
    pub info_family: Option<(&'static str, &'static str)>,
}

impl CheckKind {
    /// Every kind.
    pub const ALL: [KindRow; 3] = [
        KindRow {
            kind: Self::Ssh,
            label: "ssh",
            help: "TCP connect, then the server's SSH identification line",
            info_family: Some((
                "whitelist_audit_ssh_info",
                "1; software from the server's SSH identification line.",
            )),
        },
        KindRow {
            kind: Self::Tcp,
            label: "tcp",
            help: "TCP connect only",
            info_family: None,
        },
        KindRow {
            kind: Self::TcpBanner,
            label: "tcp_banner",
            help: "TCP connect, then any banner from a service that speaks first (FTP, SMTP, POP3, IMAP)",
            info_family: None,
        },
    ];

    fn row(self) -> &'static KindRow {
        Self::ALL
            .iter()
            .find(|row| row.kind == self)
            .expect("every kind has a row in CheckKind::ALL")
    }

    /// The `check:` value.
    pub fn as_label(self) -> &'static str {
        self.row().label
    }

    /// Parses a `check:` value.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|row| row.label == text)
            .map(|row| row.kind)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|row| row.label).collect();
                format!("unknown check `{text}`: use one of {}", known.join(", "))
            })
    }
}

#[cfg(test)]
mod kind_tests {
    use super::CheckKind;

    #[test]
    fn every_kind_has_one_row_and_round_trips() {
        for row in CheckKind::ALL {
            assert_eq!(CheckKind::parse(row.label), Ok(row.kind));
            assert_eq!(row.kind.as_label(), row.label);
            let yaml: CheckKind = serde_saphyr::from_str(row.label).unwrap();
            assert_eq!(yaml, row.kind, "the config key and the label agree");
        }
    }
}

/// Which DNS record types a target asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

/// A humantime duration string: `30s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Self).map_err(|_| {
            D::Error::custom(format!(
                "invalid duration `{text}`: write a number with a unit, like 500ms, 30s, 5m or 1h"
            ))
        })
    }
}

/// A whole number from `min` to `max`, with messages a person understands ("invalid u32" is not one).
fn whole_number<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    struct Visitor {
        what: &'static str,
        min: u64,
        max: u64,
    }
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: a whole number from {} to {}", self.what, self.min, self.max)
        }
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
            if (self.min..=self.max).contains(&value) {
                Ok(value)
            } else {
                Err(E::custom(format!(
                    "invalid {} {value}: write a whole number from {} to {}",
                    self.what, self.min, self.max
                )))
            }
        }
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
            match u64::try_from(value) {
                Ok(value) => self.visit_u64(value),
                Err(_) => Err(E::custom(format!(
                    "invalid {} {value}: write a whole number from {} to {}",
                    self.what, self.min, self.max
                ))),
            }
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<u64, E> {
            Err(E::custom(format!(
                "invalid {} `{value}`: write a whole number from {} to {}",
                self.what, self.min, self.max
            )))
        }
    }
    deserializer.deserialize_any(Visitor { what, min, max })
}

/// A count that must be at least 1 (attempts, concurrency, queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole_number(deserializer, "count", 1, 1_000_000_000)?;
        Ok(Self(u32::try_from(value).expect("bounded above")))
    }
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonZeroU16Port(pub u16);

impl<'de> Deserialize<'de> for NonZeroU16Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole_number(deserializer, "port", 1, 65535)?;
        Ok(Self(u16::try_from(value).expect("bounded above")))
    }
}

/// Where DNS questions go: the system's resolv.conf, or one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverSpec {
    System,
    Server(SocketAddr),
}

impl ResolverSpec {
    /// Parses `system`, `IP`, `IP:PORT` or `[IPv6]:PORT` (port 53 when absent).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "system" {
            return Ok(Self::System);
        }
        if let Ok(socket) = text.parse::<SocketAddr>() {
            return Ok(Self::Server(socket));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Server(SocketAddr::new(ip, 53)));
        }
        Err(format!(
            "invalid resolver `{text}`: write `system`, an IP address, IP:PORT or [IPv6]:PORT"
        ))
    }
}

impl std::fmt::Display for ResolverSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System => f.write_str("system"),
            Self::Server(socket) => write!(f, "{socket}"),
        }
    }
}

impl<'de> Deserialize<'de> for ResolverSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

/// A whitelist address or prefix; a bare address is a host prefix (/32, /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix(pub IpNet);

impl Prefix {
    /// Parses `198.51.100.7`, `198.51.100.0/28` or `2001:db8::/64`, refusing host bits.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self(IpNet::from(ip)));
        }
        let net: IpNet = text.parse().map_err(|_| {
            format!("invalid address or CIDR `{text}`: write 198.51.100.7, 198.51.100.0/28 or 2001:db8::/64")
        })?;
        if net.trunc() != net {
            // A firewall would silently mask these bits; a typo in the mask is likelier than intent.
            return Err(format!("`{text}` has host bits set: did you mean {}?", net.trunc()));
        }
        Ok(Self(net))
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

/// A single address: `198.51.100.7`, or the host prefixes `198.51.100.7/32`, `2001:db8::7/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddress(pub IpAddr);

impl<'de> Deserialize<'de> for HostAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let prefix = Prefix::parse(&text).map_err(D::Error::custom)?;
        if prefix.0.prefix_len() != prefix.0.max_prefix_len() {
            return Err(D::Error::custom(format!(
                "`{text}` is a prefix: `static` takes single addresses (198.51.100.7)"
            )));
        }
        Ok(Self(prefix.0.addr()))
    }
}
