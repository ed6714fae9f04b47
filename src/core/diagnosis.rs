//! Where a failing address fails, from what raw packets brought back: who rejected it (the
//! source of an ICMP unreachable, or the server's own reset), whether a reset was forged by a
//! middlebox (its TTL does not match the server's SYN-ACKs), and after which hop a dropped SYN
//! goes silent. The shell (`probe::raw`) sends the packets and parses the replies into
//! [`Reply`]; everything here decides from those values alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::outcome::ProbeState;

/// Healthy addresses of a target whose SYN-ACK TTLs a reset is compared with.
pub const HEALTHY_SAMPLES: usize = 3;

/// How long an address's own SYN-ACK TTL is evidence for its resets: a route may change.
pub const OWN_TTL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How a device on the path, or the server, said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// ICMP "communication administratively prohibited" (a firewall's REJECT), and its kin.
    AdminProhibited,
    /// ICMP port unreachable: iptables' default REJECT, or a host without TCP on that port.
    PortUnreachable,
    HostUnreachable,
    NetUnreachable,
    /// A TCP reset whose TTL matches the server's own SYN-ACKs: the server's port is closed.
    TcpReset,
    /// A TCP reset whose TTL does not match the server's SYN-ACKs: something on the path forged it.
    RstFromMiddlebox,
}

impl RejectKind {
    pub const ALL: [Self; 6] = [
        Self::AdminProhibited,
        Self::PortUnreachable,
        Self::HostUnreachable,
        Self::NetUnreachable,
        Self::TcpReset,
        Self::RstFromMiddlebox,
    ];

    /// The `kind` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::AdminProhibited => "admin_prohibited",
            Self::PortUnreachable => "port_unreachable",
            Self::HostUnreachable => "host_unreachable",
            Self::NetUnreachable => "net_unreachable",
            Self::TcpReset => "tcp_reset",
            Self::RstFromMiddlebox => "rst_from_middlebox",
        }
    }
}

/// The kind of an `ICMPv4` destination-unreachable code (RFC 792, RFC 1812); `None` for
/// "fragmentation needed", which is path MTU discovery, not a rejection.
pub fn icmpv4_unreachable(code: u8) -> Option<RejectKind> {
    match code {
        0 | 6 | 11 => Some(RejectKind::NetUnreachable),
        1 | 5 | 7 | 8 | 12 => Some(RejectKind::HostUnreachable),
        2 | 3 => Some(RejectKind::PortUnreachable),
        // 9, 10: network / host administratively prohibited; 13: communication prohibited by
        // filtering (iptables' icmp-admin-prohibited); 14, 15: precedence.
        9 | 10 | 13..=15 => Some(RejectKind::AdminProhibited),
        _ => None,
    }
}

/// The kind of an `ICMPv6` destination-unreachable code (RFC 4443).
pub fn icmpv6_unreachable(code: u8) -> RejectKind {
    match code {
        0 | 6 => RejectKind::NetUnreachable,
        // 1: administratively prohibited; 5: source address failed ingress/egress policy.
        1 | 5 => RejectKind::AdminProhibited,
        4 => RejectKind::PortUnreachable,
        _ => RejectKind::HostUnreachable,
    }
}

/// What came back for one SYN the shell sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// From the address itself: it accepts connections (now).
    SynAck { ttl: u8 },
    /// A reset claiming to come from the address.
    Reset { ttl: u8 },
    /// An ICMP destination unreachable, from `from`.
    Unreachable { from: IpAddr, kind: RejectKind, ttl: u8 },
    /// An ICMP time exceeded: `from` is the hop where the SYN's TTL ran out.
    TimeExceeded { from: IpAddr, ttl: u8 },
}

/// Hops a reply crossed: its TTL counted down from the usual initial values (64 Linux and most
/// network gear, 128 Windows, 255 Solaris and some routers).
pub fn hops_travelled(ttl: u8) -> u8 {
    let initial: u8 = match ttl {
        0..=64 => 64,
        65..=128 => 128,
        _ => 255,
    };
    initial - ttl
}

/// Whether a reset with `reset_ttl` came from somewhere else than the servers whose SYN-ACKs
/// arrived with `server_ttls`: its hop count lies more than `margin` outside theirs. `None`
/// when there is nothing to compare with.
pub fn reset_is_forged(reset_ttl: u8, server_ttls: &[u8], margin: u8) -> Option<bool> {
    let hops = server_ttls.iter().map(|&ttl| hops_travelled(ttl));
    let (low, high) = (hops.clone().min()?, hops.max()?);
    let reset = hops_travelled(reset_ttl);
    Some(reset.saturating_add(margin) < low || reset > high.saturating_add(margin))
}

/// A hop that answered a TTL-limited SYN with time exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub hop: u8,
    pub ip: IpAddr,
}

/// The last hop that answered before the path went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LastHop {
    /// 0 when no router answered at all: the SYN goes silent on its first hop.
    pub hop: u8,
    /// This host's source address when `hop` is 0.
    pub hop_ip: IpAddr,
}

/// What a TCP traceroute brought back: the hops that answered time exceeded, and the first
/// answer of the address itself (or of a device that rejected the SYN), with the TTL sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    pub hops: BTreeMap<u8, IpAddr>,
    pub end: Option<(u8, Reply)>,
}

impl Trace {
    /// After which hop the SYN went silent; `None` when the address or a rejecting device
    /// answered. Hops that said nothing between two that did (a router that rate-limits its
    /// ICMP) do not end the path: the last answering hop does.
    pub fn dropped_after(&self, source: IpAddr) -> Option<LastHop> {
        if self.end.is_some() {
            return None;
        }
        Some(match self.hops.last_key_value() {
            Some((&hop, &hop_ip)) => LastHop { hop, hop_ip },
            None => LastHop { hop: 0, hop_ip: source },
        })
    }
}

/// Everything the shell learnt about one failing address, before it is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The probe state being explained.
    pub state: ProbeState,
    /// The address diagnosed.
    pub address: IpAddr,
    /// This host's source address toward the address.
    pub source: IpAddr,
    /// The answer to a full-TTL SYN, if any came.
    pub direct: Option<Reply>,
    /// SYN-ACK TTLs of the server: this address when it was open, else the target's healthy ones.
    pub server_ttls: Vec<u8>,
    /// Whether `server_ttls` are this address's own: the same server, so a mismatch is proof.
    pub server_ttls_own: bool,
    /// The answer to a SYN sent with just enough TTL to reach where a reset came from: time
    /// exceeded names a router there (it forwards, so the reset is its filter's), a reset of its
    /// own says the reset came from the end of the path.
    pub reset_hop: Option<Reply>,
    /// The TCP traceroute, when the SYN went unanswered.
    pub trace: Option<Trace>,
    /// The packets could not be sent (no route, no raw socket for the family): why.
    pub local_failure: Option<String>,
    /// This host's own firewall refused to send the SYN (the kernel said `EPERM`).
    pub refused_here: bool,
}

impl Evidence {
    /// Nothing heard yet about `address` in `state`, sending from `source`.
    pub fn new(state: ProbeState, address: IpAddr, source: IpAddr) -> Self {
        Self {
            state,
            address,
            source,
            direct: None,
            server_ttls: Vec::new(),
            server_ttls_own: false,
            reset_hop: None,
            trace: None,
            local_failure: None,
            refused_here: false,
        }
    }
}

/// Where one address fails, as `check`, the API and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// When it was made; it is made again when the state changes or `trace_interval` passes.
    #[serde(skip)]
    pub at: SystemTime,
    /// The probe state it explains: shown only while the address is still in that state.
    pub state: ProbeState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_kind: Option<RejectKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_ttl: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<Hop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_after_hop: Option<LastHop>,
    /// This host's own firewall refuses to send the SYN: `rejected_by` is this host.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused_by_this_host: bool,
    pub summary: String,
}

impl Diagnosis {
    /// Its gist, for a table column.
    pub fn short(&self) -> String {
        if self.refused_by_this_host {
            return "rejected by this host's firewall".to_string();
        }
        match (self.reject_kind, self.rejected_by, self.dropped_after_hop) {
            (Some(RejectKind::TcpReset), Some(_), _) => "reset by the server".to_string(),
            (Some(RejectKind::TcpReset), None, _) => "reset, origin untold".to_string(),
            (Some(RejectKind::RstFromMiddlebox), Some(by), _) => format!("reset forged by {by}"),
            (Some(RejectKind::RstFromMiddlebox), None, _) => "reset forged on the path".to_string(),
            (Some(kind), Some(by), _) => format!("rejected by {by} ({})", kind.as_label()),
            (_, _, Some(last)) if last.hop == 0 => "dropped before hop 1".to_string(),
            (_, _, Some(last)) => format!("dropped after hop {} ({})", last.hop, last.hop_ip),
            _ if self.reply_ttl.is_some() => "answers raw SYNs now".to_string(),
            _ => "-".to_string(),
        }
    }
}

/// Judges the evidence: who rejected, whether a reset was forged, where a drop happens.
pub fn diagnose(evidence: &Evidence, at: SystemTime, margin: u8) -> Diagnosis {
    let mut diagnosis = Diagnosis {
        at,
        state: evidence.state,
        rejected_by: None,
        reject_kind: None,
        reply_ttl: None,
        server_ttl: None,
        hops: Vec::new(),
        dropped_after_hop: None,
        refused_by_this_host: false,
        summary: String::new(),
    };
    if let Some(why) = &evidence.local_failure {
        if evidence.refused_here {
            // The block is on the auditing host itself, before any router: its OUTPUT rules.
            diagnosis.rejected_by = Some(evidence.source);
            diagnosis.reject_kind = Some(RejectKind::AdminProhibited);
            diagnosis.refused_by_this_host = true;
            diagnosis.summary =
                format!("rejected by this host's own firewall: the kernel refuses to send the SYN ({why})");
        } else {
            diagnosis.summary = format!("not diagnosed: this host could not send the SYN ({why})");
        }
        return diagnosis;
    }
    if let Some(trace) = &evidence.trace {
        diagnosis.hops = trace.hops.iter().map(|(&hop, &ip)| Hop { hop, ip }).collect();
    }
    let answer = evidence
        .direct
        .or_else(|| evidence.trace.as_ref().and_then(|t| t.end.map(|(_, reply)| reply)));
    match answer {
        Some(Reply::Unreachable { from, kind, ttl }) => {
            diagnosis.rejected_by = Some(from);
            diagnosis.reject_kind = Some(kind);
            diagnosis.reply_ttl = Some(ttl);
            diagnosis.summary = format!("rejected by {from} ({})", kind.as_label());
            if evidence.state == ProbeState::Timeout {
                // Linux acts on an ICMP error only when the connect() does not hold the socket
                // (ICMPv6 often arrives while it does), so the rejection may end only the
                // retransmitted SYN, a second later.
                diagnosis.summary.push_str(
                    "; yet the connect timed out: this host's INPUT rules may drop the ICMP (accepting established but not related traffic), or the kernel acted on it only at the SYN retransmitted after 1 s, beyond global.timeout",
                );
            }
        }
        Some(Reply::Reset { ttl }) => judge_reset(evidence, ttl, margin, &mut diagnosis),
        Some(Reply::SynAck { ttl }) => {
            diagnosis.reply_ttl = Some(ttl);
            diagnosis.summary = format!("a raw SYN is answered now (SYN-ACK, TTL {ttl}): the failure is intermittent");
        }
        Some(Reply::TimeExceeded { from, .. }) => {
            // A full-TTL SYN expiring means a routing loop; the trace below tells more.
            diagnosis.summary = format!("the SYN's TTL ran out at {from}: a routing loop");
        }
        None => match evidence.trace.as_ref().and_then(|t| t.dropped_after(evidence.source)) {
            Some(last) => {
                diagnosis.dropped_after_hop = Some(last);
                diagnosis.summary = if last.hop == 0 {
                    "dropped before the first hop answered (no router sent time exceeded)".to_string()
                } else {
                    format!("dropped after {}, hop {}", last.hop_ip, last.hop)
                };
            }
            None if evidence.state == ProbeState::Timeout => {
                diagnosis.summary = "no raw reply, and no trace was made".to_string();
            }
            None => {
                diagnosis.summary = format!(
                    "no raw reply to two SYNs, though the connect was {}: a router rate-limiting its ICMP, or a failure that came and went; diagnosed again at the next trace_interval",
                    evidence.state.as_label()
                );
            }
        },
    }
    diagnosis
}

fn judge_reset(evidence: &Evidence, ttl: u8, margin: u8, diagnosis: &mut Diagnosis) {
    diagnosis.reply_ttl = Some(ttl);
    // The server's SYN-ACK TTL shown is the one nearest the reset's: the comparison's best case.
    diagnosis.server_ttl = evidence
        .server_ttls
        .iter()
        .copied()
        .min_by_key(|&server| hops_travelled(server).abs_diff(hops_travelled(ttl)));
    let router = match evidence.reset_hop {
        Some(Reply::TimeExceeded { from, .. }) => Some(from),
        _ => None,
    };
    let hop = hops_travelled(ttl).saturating_add(1);
    let end_host_there = matches!(evidence.reset_hop, Some(Reply::Reset { .. }));
    let forged = reset_is_forged(ttl, &evidence.server_ttls, margin);
    match forged {
        // Other addresses' SYN-ACKs say the reset is from elsewhere, but where it came from a SYN
        // is reset like at an end host: a server at another distance than the rest of its pool,
        // or an inline IPS that counts as no hop. Neither is proven.
        Some(true) if end_host_there && !evidence.server_ttls_own => {
            diagnosis.reject_kind = Some(RejectKind::TcpReset);
            diagnosis.summary = format!(
                "reset of untold origin: its TTL {ttl} differs from the SYN-ACKs of the target's other addresses ({}), yet where it came from a SYN is reset as at an end host: this server at another distance than its pool, or a bridged IPS",
                diagnosis.server_ttl.unwrap_or_default()
            );
            return;
        }
        Some(true) => {
            diagnosis.reject_kind = Some(RejectKind::RstFromMiddlebox);
            diagnosis.rejected_by = router;
            let server = diagnosis.server_ttl.unwrap_or_default();
            let mut summary = format!("reset forged by a middlebox: TTL {ttl}, the server's SYN-ACKs {server}");
            match router {
                Some(at) => {
                    let _ = write!(summary, "; it sits at hop {hop} ({at})");
                }
                None => {
                    let _ = write!(summary, "; it sits about {hop} hop(s) away");
                }
            }
            diagnosis.summary = summary;
        }
        // No SYN-ACK to compare with (every address of the target refuses): where the reset came
        // from tells. A router there forwards SYNs, so it forged the reset.
        None if router.is_some() => {
            let at = router.expect("matched");
            diagnosis.reject_kind = Some(RejectKind::RstFromMiddlebox);
            diagnosis.rejected_by = router;
            diagnosis.summary = format!(
                "reset forged by a middlebox: TTL {ttl} puts its sender at hop {hop}, and {at} there is a router (it answered time exceeded)"
            );
        }
        None if end_host_there => {
            diagnosis.reject_kind = Some(RejectKind::TcpReset);
            diagnosis.summary = format!(
                "reset by the end host: TTL {ttl} puts its sender at hop {hop}, where a SYN is reset, not forwarded: the port is closed there, unless a bridged IPS (no hop of its own) sits in front of it (no SYN-ACK of this target to compare with)"
            );
        }
        Some(false) => {
            diagnosis.reject_kind = Some(RejectKind::TcpReset);
            diagnosis.summary = format!(
                "reset by the server: TTL {ttl}, as its SYN-ACKs ({}): the port is closed there",
                diagnosis.server_ttl.unwrap_or_default()
            );
        }
        None => {
            diagnosis.reject_kind = Some(RejectKind::TcpReset);
            diagnosis.summary = format!(
                "reset of untold origin (TTL {ttl}): no SYN-ACK of this server or its target to compare with, and nothing answered where it came from, so a middlebox cannot be told from a closed port"
            );
            return;
        }
    }
    if diagnosis.reject_kind == Some(RejectKind::TcpReset) {
        // What the reset claims, and, as far as its TTL tells, the truth.
        diagnosis.rejected_by = Some(evidence.address);
    }
}

/// Whether an address in `state` is diagnosed at all: the failures raw packets can explain.
pub fn explains(state: ProbeState) -> bool {
    matches!(
        state,
        ProbeState::Refused | ProbeState::Timeout | ProbeState::Unreachable
    )
}

/// Whether an address now in `state` needs a new diagnosis, given its last one.
pub fn due(state: ProbeState, last: Option<&Diagnosis>, now: SystemTime, interval: Duration) -> bool {
    explains(state)
        && last.is_none_or(|d| d.state != state || now.duration_since(d.at).is_ok_and(|age| age >= interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn evidence(state: ProbeState) -> Evidence {
        Evidence::new(state, ip("192.0.2.15"), ip("198.51.100.2"))
    }

    #[test]
    fn ttls_count_hops_from_the_usual_initial_values() {
        assert_eq!(hops_travelled(64), 0);
        assert_eq!(hops_travelled(51), 13);
        assert_eq!(hops_travelled(120), 8);
        assert_eq!(hops_travelled(250), 5);
    }

    #[test]
    fn icmp_codes_name_the_rejection() {
        assert_eq!(icmpv4_unreachable(13), Some(RejectKind::AdminProhibited));
        assert_eq!(icmpv4_unreachable(3), Some(RejectKind::PortUnreachable));
        assert_eq!(icmpv4_unreachable(1), Some(RejectKind::HostUnreachable));
        assert_eq!(icmpv4_unreachable(0), Some(RejectKind::NetUnreachable));
        assert_eq!(icmpv4_unreachable(4), None, "fragmentation needed is no rejection");
        assert_eq!(icmpv6_unreachable(1), RejectKind::AdminProhibited);
        assert_eq!(icmpv6_unreachable(4), RejectKind::PortUnreachable);
        assert_eq!(icmpv6_unreachable(3), RejectKind::HostUnreachable);
        assert_eq!(icmpv6_unreachable(0), RejectKind::NetUnreachable);
    }

    #[test]
    fn a_reset_one_hop_nearer_than_the_servers_syn_acks_is_forged_at_margin_zero() {
        assert_eq!(reset_is_forged(63, &[62], 0), Some(true));
        assert_eq!(reset_is_forged(62, &[62], 0), Some(false));
        assert_eq!(reset_is_forged(63, &[62], 1), Some(false));
        assert_eq!(reset_is_forged(62, &[51], 3), Some(true));
        // Servers at 12 and 14 hops: a reset from 13 hops is within them.
        assert_eq!(reset_is_forged(51, &[52, 50], 0), Some(false));
        assert_eq!(reset_is_forged(62, &[], 5), None);
        // A Windows server's reset and SYN-ACK both start at 128.
        assert_eq!(reset_is_forged(115, &[115], 0), Some(false));
    }

    #[test]
    fn an_icmp_rejection_names_its_source() {
        let mut e = evidence(ProbeState::Unreachable);
        e.direct = Some(Reply::Unreachable {
            from: ip("203.0.113.2"),
            kind: RejectKind::AdminProhibited,
            ttl: 63,
        });
        let d = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(d.rejected_by, Some(ip("203.0.113.2")));
        assert_eq!(d.reject_kind, Some(RejectKind::AdminProhibited));
        assert_eq!(d.reply_ttl, Some(63));
        assert_eq!(d.summary, "rejected by 203.0.113.2 (admin_prohibited)");
    }

    #[test]
    fn a_reset_is_the_servers_or_a_middleboxs_by_its_ttl() {
        let mut e = evidence(ProbeState::Refused);
        e.direct = Some(Reply::Reset { ttl: 62 });
        e.server_ttls = vec![62];
        let server = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(server.reject_kind, Some(RejectKind::TcpReset));
        assert_eq!(server.rejected_by, Some(ip("192.0.2.15")));
        assert_eq!((server.reply_ttl, server.server_ttl), (Some(62), Some(62)));

        e.direct = Some(Reply::Reset { ttl: 63 });
        e.reset_hop = Some(Reply::TimeExceeded {
            from: ip("203.0.113.2"),
            ttl: 63,
        });
        let forged = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(forged.reject_kind, Some(RejectKind::RstFromMiddlebox));
        assert_eq!(forged.rejected_by, Some(ip("203.0.113.2")));
        assert!(forged.summary.contains("hop 2 (203.0.113.2)"), "{}", forged.summary);

        // No SYN-ACK to compare with: a router where the reset came from forged it...
        e.server_ttls.clear();
        let routed = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(routed.reject_kind, Some(RejectKind::RstFromMiddlebox));
        assert_eq!(routed.rejected_by, Some(ip("203.0.113.2")));
        // ...an end host there that resets the SYN is the server itself...
        e.reset_hop = Some(Reply::Reset { ttl: 62 });
        let end = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(end.reject_kind, Some(RejectKind::TcpReset));
        assert_eq!(end.rejected_by, Some(ip("192.0.2.15")));
        // ...and silence there tells nothing.
        e.reset_hop = None;
        let alone = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(alone.reject_kind, Some(RejectKind::TcpReset));
        assert_eq!(alone.rejected_by, None, "a reset of untold origin names nobody");
        assert_eq!(alone.short(), "reset, origin untold");
        assert!(alone.summary.contains("cannot be told"), "{}", alone.summary);
    }

    #[test]
    fn a_reset_that_only_other_addresses_call_forged_is_untold_when_an_end_host_sent_it() {
        let mut e = evidence(ProbeState::Refused);
        // The pool's other servers are three hops nearer; where the reset came from, a SYN is
        // reset as at an end host: this server may just sit farther away.
        e.direct = Some(Reply::Reset { ttl: 52 });
        e.server_ttls = vec![55];
        e.reset_hop = Some(Reply::Reset { ttl: 52 });
        let untold = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(
            (untold.reject_kind, untold.rejected_by),
            (Some(RejectKind::TcpReset), None)
        );
        assert!(untold.summary.contains("untold"), "{}", untold.summary);
        // This server's own SYN-ACKs, though, are proof: an inline IPS answers as an end host.
        e.server_ttls_own = true;
        let forged = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(forged.reject_kind, Some(RejectKind::RstFromMiddlebox));
    }

    #[test]
    fn an_unanswered_refusal_is_not_called_a_drop() {
        let e = evidence(ProbeState::Refused);
        let d = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!((d.dropped_after_hop, d.reject_kind), (None, None));
        assert!(d.summary.contains("rate-limiting"), "{}", d.summary);
    }

    #[test]
    fn a_silent_path_ends_at_the_last_hop_that_answered() {
        let mut e = evidence(ProbeState::Timeout);
        let mut trace = Trace::default();
        trace.hops.insert(1, ip("198.51.100.1"));
        // Hop 2 rate-limited its ICMP; hop 3 answered.
        trace.hops.insert(3, ip("203.0.113.9"));
        e.trace = Some(trace);
        let d = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(
            d.dropped_after_hop,
            Some(LastHop {
                hop: 3,
                hop_ip: ip("203.0.113.9")
            })
        );
        assert_eq!(d.summary, "dropped after 203.0.113.9, hop 3");
        assert_eq!(d.hops.len(), 2);

        e.trace = Some(Trace::default());
        let first = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(first.dropped_after_hop.map(|h| (h.hop, h.hop_ip)), Some((0, e.source)));
    }

    #[test]
    fn a_trace_that_reaches_a_rejecting_device_is_a_rejection_not_a_drop() {
        let mut e = evidence(ProbeState::Timeout);
        let mut trace = Trace::default();
        trace.hops.insert(1, ip("198.51.100.1"));
        let reply = Reply::Unreachable {
            from: ip("203.0.113.2"),
            kind: RejectKind::HostUnreachable,
            ttl: 63,
        };
        trace.end = Some((2, reply));
        e.trace = Some(trace);
        let d = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(d.dropped_after_hop, None);
        assert_eq!(d.rejected_by, Some(ip("203.0.113.2")));
    }

    #[test]
    fn a_local_send_failure_is_no_verdict() {
        let mut e = evidence(ProbeState::Refused);
        e.local_failure = Some("Network is unreachable".into());
        let d = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!((d.rejected_by, d.reject_kind), (None, None));
        assert!(d.summary.contains("this host"));
        // Our own OUTPUT rules: rejected here, by this host.
        e.local_failure = Some("Operation not permitted".into());
        e.refused_here = true;
        let d = diagnose(&e, SystemTime::UNIX_EPOCH, 0);
        assert_eq!(d.rejected_by, Some(e.source));
        assert_eq!(d.reject_kind, Some(RejectKind::AdminProhibited));
    }

    #[test]
    fn a_diagnosis_is_made_again_on_a_new_state_or_after_the_interval() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let e = evidence(ProbeState::Timeout);
        let d = diagnose(&e, at, 0);
        let interval = Duration::from_secs(900);
        assert!(!due(
            ProbeState::Timeout,
            Some(&d),
            at + Duration::from_secs(899),
            interval
        ));
        assert!(due(ProbeState::Timeout, Some(&d), at + interval, interval));
        assert!(due(ProbeState::Refused, Some(&d), at, interval));
        assert!(!due(ProbeState::Open, None, at, interval));
        assert!(
            !due(ProbeState::Error, None, at, interval),
            "a local fault is never diagnosed as a path"
        );
        assert!(due(ProbeState::Unreachable, None, at, interval));
    }
}
