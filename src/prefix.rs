//! Prefix arithmetic shared by the whitelist, the published lists and the audit: containment and
//! coverage in logarithmic time, sizes, expansion into addresses. A leaf: it knows nothing of the
//! rest of the crate.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;

/// An address that no server on the internet has: where a connection would go instead, or why it
/// cannot be made. One classification; `static` and the audit each decide which kinds they refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialAddress {
    /// `0.0.0.0`, `::`: a connection reaches this host.
    Unspecified,
    /// The rest of 0.0.0.0/8, "this network".
    ThisNetwork,
    /// 255.255.255.255.
    Broadcast,
    Multicast,
    LinkLocal,
    Loopback,
}

/// Which kind of special address `ip` is, if any.
pub fn special_address(ip: IpAddr) -> Option<SpecialAddress> {
    Some(match ip {
        _ if ip.is_unspecified() => SpecialAddress::Unspecified,
        IpAddr::V4(v4) if v4.octets()[0] == 0 => SpecialAddress::ThisNetwork,
        IpAddr::V4(v4) if v4.is_broadcast() => SpecialAddress::Broadcast,
        _ if ip.is_multicast() => SpecialAddress::Multicast,
        IpAddr::V4(v4) if v4.is_link_local() => SpecialAddress::LinkLocal,
        IpAddr::V6(v6) if v6.is_unicast_link_local() => SpecialAddress::LinkLocal,
        _ if ip.is_loopback() => SpecialAddress::Loopback,
        _ => return None,
    })
}

/// `ip` in the form the audit compares: an IPv4-mapped IPv6 address (`::ffff:198.51.100.7`) is the
/// IPv4 address it carries. A dual-stack socket reaches the same host either way, so counting both
/// forms would list one vendor address twice and leave one of them looking undeclared.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `net` in the form the audit compares: a prefix inside `::ffff:0:0/96` is the IPv4 prefix it
/// maps (`::ffff:198.51.100.0/120` is `198.51.100.0/24`), for the reason given at [`canonical_ip`].
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).expect("at most 32 bits")),
            None => net,
        },
        _ => net,
    }
}

/// Canonical text of a prefix: a bare address for /32 and /128.
pub fn prefix_label(prefix: &IpNet) -> String {
    if prefix.prefix_len() == prefix.max_prefix_len() {
        prefix.addr().to_string()
    } else {
        prefix.to_string()
    }
}

/// A set of IPv4 and IPv6 prefixes answering containment questions in logarithmic time, so a
/// diff of 100,000 published prefixes against 10,000 entries takes milliseconds.
#[derive(Debug, Clone, Default)]
pub struct PrefixIndex {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
}

impl PrefixIndex {
    /// An index of `prefixes`.
    pub fn new(prefixes: impl IntoIterator<Item = IpNet>) -> Self {
        let mut index = Self::default();
        for prefix in prefixes {
            index.insert(prefix);
        }
        index
    }

    /// Adds a prefix.
    pub fn insert(&mut self, prefix: IpNet) {
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.insert(p),
            IpNet::V6(p) => self.v6.insert(p),
        };
    }

    /// Whether some member contains `ip`.
    pub fn covers_address(&self, ip: IpAddr) -> bool {
        self.covers_prefix(IpNet::from(ip))
    }

    /// Whether every address of `prefix` is inside the members, together (two /25s cover a /24).
    pub fn covers_prefix(&self, prefix: IpNet) -> bool {
        match prefix {
            IpNet::V4(p) => self.v4.is_covered_in_aggregate(&p),
            IpNet::V6(p) => self.v6.is_covered_in_aggregate(&p),
        }
    }

    /// Whether `prefix` and the members share at least one address.
    pub fn overlaps(&self, prefix: IpNet) -> bool {
        match prefix {
            IpNet::V4(p) => self.v4.is_covered(&p) || self.v4.children(&p).next().is_some(),
            IpNet::V6(p) => self.v6.is_covered(&p) || self.v6.children(&p).next().is_some(),
        }
    }

    /// The parts of `prefix` no member covers, as the fewest prefixes.
    pub fn uncovered(&self, prefix: IpNet) -> Vec<IpNet> {
        let mut out = Vec::new();
        self.collect_uncovered(prefix, &mut out);
        out
    }

    fn collect_uncovered(&self, prefix: IpNet, out: &mut Vec<IpNet>) {
        if self.covers_prefix(prefix) {
            return;
        }
        let has_members_inside = match prefix {
            IpNet::V4(p) => self.v4.children(&p).next().is_some(),
            IpNet::V6(p) => self.v6.children(&p).next().is_some(),
        };
        // Only halves that hold a member are split further: the work is bounded by the members
        // inside `prefix` times its length, whatever its size.
        match prefix.subnets(prefix.prefix_len() + 1) {
            Ok(mut halves) if has_members_inside => {
                for half in halves.by_ref() {
                    self.collect_uncovered(half, out);
                }
            }
            _ => out.push(prefix),
        }
    }
}

/// Addresses a prefix holds, saturating for the largest IPv6 prefixes.
pub fn size(prefix: &IpNet) -> u128 {
    let host_bits = u32::from(prefix.max_prefix_len() - prefix.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// Whether the addresses of `prefix` are probed one by one (else it is audited only).
pub fn is_probed(prefix: &IpNet, cap: u32) -> bool {
    size(prefix) <= u128::from(cap)
}

/// How many addresses `prefixes` make the auditor probe, a prefix too large to probe counting one:
/// what `max_addresses` bounds and `source_addresses` reports.
pub fn probe_cost<'a>(prefixes: impl IntoIterator<Item = &'a IpNet>, cap: u32) -> u128 {
    prefixes
        .into_iter()
        .map(|p| if is_probed(p, cap) { size(p) } else { 1 })
        .sum()
}

/// Every address of a prefix small enough to probe.
pub fn addresses(prefix: &IpNet) -> impl Iterator<Item = IpAddr> + '_ {
    let count = size(prefix);
    (0..count).map(move |offset| match prefix.network() {
        IpAddr::V4(base) => IpAddr::V4((u32::from(base) + u32::try_from(offset).expect("bounded by the cap")).into()),
        IpAddr::V6(base) => IpAddr::V6((u128::from(base) + offset).into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn index(prefixes: &[&str]) -> PrefixIndex {
        PrefixIndex::new(prefixes.iter().map(|p| net(p)))
    }

    #[test]
    fn coverage_of_addresses_and_prefixes() {
        let i = index(&[
            "198.51.100.0/25",
            "198.51.100.128/25",
            "2001:db8::/64",
            "203.0.113.10/32",
        ]);
        assert!(i.covers_prefix(net("198.51.100.0/24")), "two halves tile the /24");
        assert!(!i.covers_prefix(net("198.51.100.0/23")));
        assert!(i.covers_address("203.0.113.10".parse().unwrap()));
        assert!(!i.covers_address("203.0.113.11".parse().unwrap()));
        assert!(i.covers_prefix(net("2001:db8::/96")));
        assert!(!i.covers_address("2001:db8:0:1::1".parse().unwrap()));
    }

    #[test]
    fn uncovered_parts_are_the_fewest_prefixes() {
        let i = index(&["198.51.100.0/26", "198.51.100.192/27"]);
        assert_eq!(
            i.uncovered(net("198.51.100.0/24")),
            vec![
                net("198.51.100.64/26"),
                net("198.51.100.128/26"),
                net("198.51.100.224/27")
            ]
        );
        assert_eq!(i.uncovered(net("198.51.100.0/26")), Vec::<IpNet>::new());
        assert_eq!(i.uncovered(net("203.0.113.0/24")), vec![net("203.0.113.0/24")]);
        let v6 = index(&["2001:db8::/33"]);
        assert_eq!(v6.uncovered(net("2001:db8::/32")), vec![net("2001:db8:8000::/33")]);
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(canonical_ip(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(canonical_ip(ip("::FFFF:c633:6407")), ip("198.51.100.7"), "hex spelling");
        for unchanged in [
            "198.51.100.7",
            "2001:db8::7",
            "::1",
            "::",
            "::198.51.100.7",
            "64:ff9b::c633:6407",
        ] {
            assert_eq!(canonical_ip(ip(unchanged)), ip(unchanged), "{unchanged}");
        }
    }

    #[test]
    fn ipv4_mapped_prefixes_are_ipv4() {
        assert_eq!(canonical_net(net("::ffff:198.51.100.7/128")), net("198.51.100.7/32"));
        assert_eq!(canonical_net(net("::ffff:198.51.100.0/120")), net("198.51.100.0/24"));
        assert_eq!(
            canonical_net(net("::ffff:0:0/96")),
            net("0.0.0.0/0"),
            "the whole mapped range is all of IPv4"
        );
        for unchanged in [
            "::ffff:0:0/95",
            "::/0",
            "2001:db8::/32",
            "198.51.100.0/24",
            "::198.51.100.0/120",
            "::1:ffff:0:0/96",
        ] {
            assert_eq!(canonical_net(net(unchanged)), net(unchanged), "{unchanged}");
        }
    }

    #[test]
    fn overlap_either_way() {
        let published = index(&["198.51.100.0/24", "203.0.113.7/32"]);
        assert!(
            published.overlaps(net("198.51.100.0/28")),
            "entry inside a published prefix"
        );
        assert!(
            published.overlaps(net("203.0.113.0/24")),
            "published address inside the entry"
        );
        assert!(!published.overlaps(net("192.0.2.0/24")));
    }
}
