//! The configuration files as written: serde shapes only. Values that have a type (durations,
//! addresses, prefixes, resolvers) are parsed here, so a bad one is reported at its own line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de::Error as _};
use serde_saphyr::Spanned;

use super::defaults;
use crate::prefix::{SpecialAddress, canonical_ip, canonical_net, special_address};

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
    pub attempts: Option<Attempts>,
    pub retry_delay: Option<Spanned<HumanDuration>>,
    pub concurrency: Option<Concurrency>,
    pub per_target_concurrency: Option<Concurrency>,
    pub resolvers: Option<Spanned<Vec<ResolverSpec>>>,
    pub whitelist: Option<Spanned<RawWhitelistRef>>,
    pub state_dir: Option<PathBuf>,
    pub history_max_mib: Option<HistoryMib>,
    pub max_probe_addresses_per_prefix: Option<Count>,
    pub broad_entry_prefix: Option<RawBroadEntryPrefix>,
    pub diagnosis: Option<RawDiagnosis>,
}

/// `global.diagnosis`: raw-packet diagnosis of failing addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiagnosis {
    pub raw_probes: Option<RawProbes>,
    pub trace_interval: Option<Spanned<HumanDuration>>,
    pub max_hops: Option<MaxHops>,
    pub ttl_margin: Option<TtlMargin>,
}

/// `global.diagnosis.raw_probes`: whether failing addresses get raw SYNs and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawProbes {
    /// On when this process holds `CAP_NET_RAW`, off (said once at start) when it does not.
    Auto,
    Off,
}

/// Prefix lengths below which a whitelist entry is reported as broad.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroadEntryPrefix {
    pub ipv4: Option<PrefixLengthV4>,
    pub ipv6: Option<PrefixLengthV6>,
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
    pub whitelist: Option<Spanned<RawWhitelistRef>>,
    pub published: Option<Vec<Spanned<RawPublished>>>,
    pub allow_local_addresses: Option<bool>,
    pub client_attempts: Option<ClientAttempts>,
    pub ssh: Option<Spanned<RawSsh>>,
}

/// `targets[].ssh` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub clients: Option<Vec<Spanned<String>>>,
    pub client_algorithms: Option<Spanned<RawAlgorithms>>,
    pub host_keys: Option<Vec<Spanned<String>>>,
    pub host_key_change_hold: Option<HumanDuration>,
    pub idle_hold: Option<Spanned<HumanDuration>>,
    pub idle_interval: Option<Spanned<HumanDuration>>,
    pub idle_concurrency: Option<Spanned<Count>>,
    pub auth: Option<Spanned<RawAuth>>,
    pub sftp: Option<Spanned<bool>>,
    pub login_interval: Option<Spanned<HumanDuration>>,
}

/// `ssh.auth` as written: who logs in and where the secret is. Never the secret itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub username: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub private_key_file: Option<Spanned<PathBuf>>,
    /// Refused with a message that says where the secret goes instead; its value is never kept.
    pub password: Option<Spanned<serde::de::IgnoredAny>>,
    pub private_key: Option<Spanned<serde::de::IgnoredAny>>,
}

/// `ssh.client_algorithms` as written: a client of one's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlgorithms {
    pub kex: Vec<Spanned<String>>,
    pub host_key: Vec<Spanned<String>>,
    pub ciphers: Vec<Spanned<String>>,
    pub macs: Vec<Spanned<String>>,
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

/// A `whitelist:` as written: the path of a whitelist file, or the firewall team's aerleon
/// network definitions.
#[derive(Debug)]
pub enum RawWhitelistRef {
    /// `whitelist: whitelist.yml`
    File(PathBuf),
    /// `whitelist: {aerleon: definitions/, tokens: [VENDOR_SFTP]}`
    Aerleon(Box<RawAerleon>),
}

/// `whitelist: {aerleon: DIR, tokens: [...], ports: [...]}` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAerleon {
    /// The definitions directory (`*.net`, YAML with `networks:`).
    pub aerleon: Spanned<PathBuf>,
    /// The network tokens whose addresses the firewall allows.
    pub tokens: Spanned<Vec<Spanned<String>>>,
    /// The ports those addresses are allowed on; absent: the port of each target audited against it.
    pub ports: Option<Spanned<Vec<NonZeroU16Port>>>,
}

impl<'de> Deserialize<'de> for RawWhitelistRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawWhitelistRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the path of a whitelist file, or a mapping {aerleon: DIR, tokens: [NAME, ...]}")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(RawWhitelistRef::File(PathBuf::from(text)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawAerleon::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|spec| RawWhitelistRef::Aerleon(Box::new(spec)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
    /// The info metric families (name, help) the kind's evidence fills.
    pub info_families: &'static [(&'static str, &'static str)],
}

impl CheckKind {
    /// Every kind.
    pub const ALL: [KindRow; 3] = [
        KindRow {
            kind: Self::Ssh,
            label: "ssh",
            help: "TCP connect, then the server's SSH identification line, algorithms (KEXINIT) and host key",
            info_families: &[
                (
                    "whitelist_audit_ssh_info",
                    "1; software from the server's SSH identification line.",
                ),
                (
                    "whitelist_audit_ssh_host_key_info",
                    "1; the host key the address proved it holds (its signature verified), as ssh-keygen -lf prints it.",
                ),
            ],
        },
        KindRow {
            kind: Self::Tcp,
            label: "tcp",
            help: "TCP connect only",
            info_families: &[],
        },
        KindRow {
            kind: Self::TcpBanner,
            label: "tcp_banner",
            help: "TCP connect, then any banner from a service that speaks first (FTP, SMTP, POP3, IMAP)",
            info_families: &[],
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

/// What a whole number is and the values it may take, worded for the messages.
#[derive(Clone, Copy)]
struct Bounds {
    /// The kind of value: `port`, `count`.
    what: &'static str,
    min: u64,
    max: u64,
    /// Why the maximum is what it is, shown when a value exceeds it.
    above: Option<&'static str>,
}

impl Bounds {
    fn check(self, value: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&value) {
            return Ok(value);
        }
        let refusal = self.refusal(&value.to_string());
        match self.above {
            Some(reason) if value > self.max => Err(format!("{refusal} ({reason})")),
            _ => Err(refusal),
        }
    }

    /// `value` as written: a number, or a string in backquotes.
    fn refusal(self, value: &str) -> String {
        format!(
            "invalid {} {value}: write a whole number from {} to {}",
            self.what, self.min, self.max
        )
    }

    /// A quoted value: `"22"` means 22 (a YAML editor or a template quotes numbers freely), and
    /// anything else is refused showing the text as written.
    fn check_text(self, text: &str) -> Result<u64, String> {
        let number = text.trim();
        if let Ok(value) = number.parse::<u64>() {
            return self.check(value);
        }
        if number.parse::<i64>().is_ok() {
            return Err(self.refusal(number));
        }
        Err(self.refusal(&format!("`{text}`")))
    }
}

/// A whole number within `bounds`, unquoted or quoted, with messages a person understands
/// ("invalid u32" is not one).
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D, bounds: Bounds) -> Result<u64, D::Error> {
    struct Visitor(Bounds);
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{}: a whole number from {} to {}",
                self.0.what, self.0.min, self.0.max
            )
        }
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
            self.0.check(value).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
            match u64::try_from(value) {
                Ok(value) => self.visit_u64(value),
                Err(_) => Err(E::custom(self.0.refusal(&value.to_string()))),
            }
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<u64, E> {
            self.0.check_text(value).map_err(E::custom)
        }
        // The YAML parser reads `022` as a float, and `22.0` is one: a whole value is the number
        // the person meant.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<u64, E> {
            if value.fract() == 0.0 && (0.0..=1e15).contains(&value) {
                self.visit_u64(value as u64)
            } else {
                Err(E::custom(self.0.refusal(&value.to_string())))
            }
        }
    }
    deserializer.deserialize_any(Visitor(bounds))
}

/// A count that must be at least 1 (queries, sizes, addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "count",
            min: 1,
            max: 1_000_000_000,
            above: None,
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u32::try_from(value).expect("bounded above")))
    }
}

/// `global.history_max_mib`: the size at which the history file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryMib(pub u32);

impl<'de> Deserialize<'de> for HistoryMib {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "size in MiB",
            min: 1,
            max: u64::from(defaults::HISTORY_MAX_MIB_MAX),
            above: Some("the history is read whole at start"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u32::try_from(value).expect("bounded above")))
    }
}

/// `global.diagnosis.max_hops`: the farthest hop a TCP traceroute reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxHops(pub u8);

impl<'de> Deserialize<'de> for MaxHops {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "hop count",
            min: 1,
            max: u64::from(defaults::MAX_HOPS_MAX),
            above: Some("a path longer than that is a routing loop"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u8::try_from(value).expect("bounded above")))
    }
}

/// `global.diagnosis.ttl_margin`: hops a reset may lie outside the server's SYN-ACKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlMargin(pub u8);

impl<'de> Deserialize<'de> for TtlMargin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "hop count",
            min: 0,
            max: u64::from(defaults::TTL_MARGIN_MAX),
            above: Some("a margin that wide hides every middlebox on the path"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u8::try_from(value).expect("bounded above")))
    }
}

/// `global.attempts`: attempts at one address before it counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

impl<'de> Deserialize<'de> for Attempts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "count",
            min: 1,
            max: u64::from(defaults::ATTEMPTS_MAX),
            above: Some("more attempts only add connections to an address that is down"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u32::try_from(value).expect("bounded above")))
    }
}

/// `targets[].client_attempts`: the attempts a client connecting by name makes before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAttempts(pub u32);

impl<'de> Deserialize<'de> for ClientAttempts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "count",
            min: 1,
            max: u64::from(defaults::CLIENT_ATTEMPTS_MAX),
            above: Some("the odds are quoted for the retries real clients make"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u32::try_from(value).expect("bounded above")))
    }
}

/// `global.concurrency`, `global.per_target_concurrency`: probes in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency(pub u32);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "count",
            min: 1,
            max: u64::from(defaults::CONCURRENCY_MAX),
            above: Some("each probe in flight holds a socket and a source port, and a host has 65536 ports"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u32::try_from(value).expect("bounded above")))
    }
}

/// An IPv4 prefix length, 0 to 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLengthV4(pub u8);

impl<'de> Deserialize<'de> for PrefixLengthV4 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "prefix length",
            min: 0,
            max: 32,
            above: Some("an IPv4 address has 32 bits"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u8::try_from(value).expect("bounded above")))
    }
}

/// An IPv6 prefix length, 0 to 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLengthV6(pub u8);

impl<'de> Deserialize<'de> for PrefixLengthV6 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "prefix length",
            min: 0,
            max: 128,
            above: Some("an IPv6 address has 128 bits"),
        };
        let value = whole_number(deserializer, bounds)?;
        Ok(Self(u8::try_from(value).expect("bounded above")))
    }
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonZeroU16Port(pub u16);

impl<'de> Deserialize<'de> for NonZeroU16Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounds {
            what: "port",
            min: 1,
            max: 65535,
            above: None,
        };
        let value = whole_number(deserializer, bounds)?;
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
    /// Parses `198.51.100.7`, `198.51.100.0/28` or `2001:db8::/64`, refusing host bits and
    /// leading zeros. An IPv4-mapped prefix (`::ffff:198.51.100.7`) becomes the IPv4 one it maps.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(plain) = without_leading_zeros(text) {
            // The CIDR parser reads `010` as 10, some firewalls and `inet_aton` as octal 8: the
            // entry would not mean what the firewall does.
            return Err(format!(
                "`{text}` has a leading zero, which some tools read as octal: write {plain}"
            ));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self(IpNet::from(canonical_ip(ip))));
        }
        let net: IpNet = text.parse().map_err(|_| {
            format!("invalid address or CIDR `{text}`: write 198.51.100.7, 198.51.100.0/28 or 2001:db8::/64")
        })?;
        if net.trunc() != net {
            // A firewall would silently mask these bits; a typo in the mask is likelier than intent.
            return Err(format!("`{text}` has host bits set: did you mean {}?", net.trunc()));
        }
        Ok(Self(canonical_net(net)))
    }
}

/// `text` without the leading zeros of its dotted IPv4 part, if it is one and has any.
pub(super) fn without_leading_zeros(text: &str) -> Option<String> {
    let (address, length) = text.split_once('/').map_or((text, None), |(a, l)| (a, Some(l)));
    let octets: Vec<&str> = address.split('.').collect();
    let dotted = octets.len() == 4
        && octets
            .iter()
            .all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
    if !dotted || !octets.iter().any(|o| o.len() > 1 && o.starts_with('0')) {
        return None;
    }
    let plain: Vec<&str> = octets
        .iter()
        .map(|o| match o.trim_start_matches('0') {
            "" => "0",
            rest => rest,
        })
        .collect();
    let plain = plain.join(".");
    Some(length.map_or_else(|| plain.clone(), |length| format!("{plain}/{length}")))
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

/// A single address a vendor's server could have: `198.51.100.7`, or the host prefixes
/// `198.51.100.7/32`, `2001:db8::7/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddress(pub IpAddr);

impl HostAddress {
    /// Parses one `static` address, refusing prefixes and addresses no server has.
    pub fn parse(text: &str) -> Result<Self, String> {
        let prefix = Prefix::parse(text)?;
        if prefix.0.prefix_len() != prefix.0.max_prefix_len() {
            return Err(format!(
                "`{text}` is a prefix: `static` takes single addresses (198.51.100.7)"
            ));
        }
        let ip = prefix.0.addr();
        // Loopback and link-local stay allowed: written on purpose, they reach a real listener.
        match special_address(ip) {
            Some(SpecialAddress::Unspecified) => Err(format!(
                "`{text}` is the unspecified address, not a vendor's: a connection to it reaches this host"
            )),
            Some(SpecialAddress::Multicast) => Err(format!(
                "`{text}` is a multicast address, not a vendor's: TCP cannot connect to it"
            )),
            Some(SpecialAddress::Broadcast) => Err(format!(
                "`{text}` is the broadcast address, not a vendor's: TCP cannot connect to it"
            )),
            _ => Ok(Self(ip)),
        }
    }
}

impl<'de> Deserialize<'de> for HostAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod value_tests {
    use super::{Attempts, HostAddress, NonZeroU16Port, Prefix};

    fn port(yaml: &str) -> Result<u16, String> {
        serde_saphyr::from_str::<NonZeroU16Port>(yaml)
            .map(|p| p.0)
            .map_err(|e| e.without_snippet().to_string())
    }

    #[test]
    fn a_quoted_whole_number_is_the_number() {
        assert_eq!(port("22"), Ok(22));
        assert_eq!(port("\"22\""), Ok(22));
        assert_eq!(port("'22'"), Ok(22));
        assert_eq!(port("\" 22 \""), Ok(22));
        assert_eq!(port("\"70000\""), port("70000"), "refused in the same words");
        assert_eq!(port("\"0\""), port("0"));
        assert_eq!(port("\"-1\""), port("-1"));
        assert_eq!(serde_saphyr::from_str::<Attempts>("\"3\"").unwrap().0, 3);
    }

    #[test]
    fn text_that_is_no_number_is_shown_as_written() {
        let err = port("ssh").unwrap_err();
        assert!(
            err.starts_with("invalid port `ssh`: write a whole number from 1 to 65535"),
            "{err}"
        );
        let err = port("\"22/tcp\"").unwrap_err();
        assert!(err.starts_with("invalid port `22/tcp`:"), "{err}");
    }

    #[test]
    fn the_reason_for_a_maximum_is_given_above_it_only() {
        let attempts = |yaml: &str| {
            serde_saphyr::from_str::<Attempts>(yaml)
                .map(|a| a.0)
                .map_err(|e| e.without_snippet().to_string())
        };
        assert!(
            attempts("11")
                .unwrap_err()
                .contains("(more attempts only add connections")
        );
        assert!(!attempts("0").unwrap_err().contains('('));
    }

    #[test]
    fn mapped_addresses_parse_as_ipv4() {
        assert_eq!(
            Prefix::parse("::ffff:198.51.100.0/120").unwrap().0.to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            Prefix::parse("::ffff:198.51.100.5/120").unwrap_err(),
            "`::ffff:198.51.100.5/120` has host bits set: did you mean ::ffff:198.51.100.0/120?",
            "the message quotes the spelling the person wrote"
        );
        assert_eq!(
            HostAddress::parse("::ffff:198.51.100.7").unwrap().0.to_string(),
            "198.51.100.7"
        );
    }

    #[test]
    fn a_leading_zero_is_refused_as_ambiguous() {
        assert_eq!(
            Prefix::parse("010.0.0.1").unwrap_err(),
            "`010.0.0.1` has a leading zero, which some tools read as octal: write 10.0.0.1"
        );
        assert_eq!(
            Prefix::parse("198.051.100.000/24").unwrap_err(),
            "`198.051.100.000/24` has a leading zero, which some tools read as octal: write 198.51.100.0/24"
        );
        assert!(
            Prefix::parse("198.51.100.300")
                .unwrap_err()
                .starts_with("invalid address or CIDR")
        );
    }

    #[test]
    fn addresses_no_server_has_are_refused_in_static() {
        for refused in [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:224.0.0.1",
        ] {
            assert!(HostAddress::parse(refused).is_err(), "{refused}");
        }
        for allowed in [
            "127.0.0.1",
            "::1",
            "169.254.0.1",
            "fe80::1",
            "10.0.0.1",
            "198.51.100.255",
        ] {
            assert!(HostAddress::parse(allowed).is_ok(), "{allowed}");
        }
    }
}
