//! The packets of raw diagnosis: the SYN we send (built with pnet), what comes back (parsed from
//! the IP header up, so the TTL and the ICMP's source are seen), and the kernel filters that keep
//! every other packet of the host out of this process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{Ipv4Packet, MutableIpv4Packet};
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::tcp::{MutableTcpPacket, TcpFlags, TcpOption, TcpPacket};
use socket2::SockFilter;

use crate::core::diagnosis::{Reply, icmpv4_unreachable, icmpv6_unreachable};

/// Our SYNs' source ports: above Linux's default ephemeral range (32768-60999), so the kernel
/// filter below drops the segments of every connection the host makes itself.
pub const PORT_BASE: u16 = 61_000;
/// Ports from [`PORT_BASE`] on.
pub const PORT_COUNT: u16 = 4_535;

/// Which probe a reply answers: the address and port probed, and our source port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub remote: IpAddr,
    pub remote_port: u16,
    pub local_port: u16,
}

/// What ties a reply to our SYN beyond its ports: a SYN-ACK or reset acknowledges our sequence
/// number plus one; an ICMP error quotes our sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Acknowledges(u32),
    Quotes(u32),
}

impl Proof {
    /// The sequence number of the SYN this reply answers.
    pub fn seq(self) -> u32 {
        match self {
            Self::Acknowledges(ack) => ack.wrapping_sub(1),
            Self::Quotes(quoted) => quoted,
        }
    }
}

const TCP_HEADER_WITH_MSS: usize = 24;

/// A SYN from `source:local_port` to `destination`, with an MSS option (some middleboxes drop
/// SYNs without one) and its checksum.
pub fn syn(source: IpAddr, destination: SocketAddr, local_port: u16, seq: u32) -> Vec<u8> {
    let mut buffer = vec![0u8; TCP_HEADER_WITH_MSS];
    let mut tcp = MutableTcpPacket::new(&mut buffer).expect("the buffer holds a TCP header");
    tcp.set_source(local_port);
    tcp.set_destination(destination.port());
    tcp.set_sequence(seq);
    tcp.set_data_offset(6);
    tcp.set_flags(TcpFlags::SYN);
    tcp.set_window(64_240);
    tcp.set_options(&[TcpOption::mss(1460)]);
    let checksum = match (source, destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pnet_packet::tcp::ipv4_checksum(&tcp.to_immutable(), &s, &d),
        (IpAddr::V6(s), IpAddr::V6(d)) => pnet_packet::tcp::ipv6_checksum(&tcp.to_immutable(), &s, &d),
        _ => 0,
    };
    tcp.set_checksum(checksum);
    buffer
}

/// The whole IP datagram of a SYN with `ttl` (hop limit): the sending sockets take the IP header
/// from us. IPv4's checksum, identification and length the kernel fills in.
pub fn syn_datagram(source: IpAddr, destination: SocketAddr, local_port: u16, seq: u32, ttl: u8) -> Vec<u8> {
    let segment = syn(source, destination, local_port, seq);
    let length = u16::try_from(segment.len()).expect("a TCP header");
    match (source, destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut datagram = vec![0u8; 20 + segment.len()];
            let mut ip = MutableIpv4Packet::new(&mut datagram).expect("the buffer holds an IPv4 header");
            ip.set_version(4);
            ip.set_header_length(5);
            ip.set_total_length(20 + length);
            ip.set_ttl(ttl);
            ip.set_next_level_protocol(IpNextHeaderProtocols::Tcp);
            ip.set_source(s);
            ip.set_destination(d);
            ip.set_payload(&segment);
            datagram
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut datagram = vec![0u8; 40 + segment.len()];
            let mut ip = MutableIpv6Packet::new(&mut datagram).expect("the buffer holds an IPv6 header");
            ip.set_version(6);
            ip.set_payload_length(length);
            ip.set_next_header(IpNextHeaderProtocols::Tcp);
            ip.set_hop_limit(ttl);
            ip.set_source(s);
            ip.set_destination(d);
            ip.set_payload(&segment);
            datagram
        }
        _ => segment,
    }
}

/// A reply to one of our SYNs in an IPv4 packet (header included), or `None` for anything else.
pub fn parse_v4(packet: &[u8]) -> Option<(Key, Proof, Reply)> {
    let ip = Ipv4Packet::new(packet)?;
    let header = usize::from(ip.get_header_length()) * 4;
    let body = packet.get(header..)?;
    let (from, ttl) = (IpAddr::V4(ip.get_source()), ip.get_ttl());
    match ip.get_next_level_protocol() {
        IpNextHeaderProtocols::Tcp => tcp_reply(from, ttl, body),
        IpNextHeaderProtocols::Icmp => {
            let (kind, code, quoted) = (*body.first()?, *body.get(1)?, body.get(8..)?);
            let reply = match kind {
                3 => Reply::Unreachable {
                    from,
                    kind: icmpv4_unreachable(code)?,
                    ttl,
                },
                11 => Reply::TimeExceeded { from, ttl },
                _ => return None,
            };
            let quoted_header = usize::from(quoted.first()? & 0x0f) * 4;
            if *quoted.get(9)? != 6 {
                return None;
            }
            let remote: [u8; 4] = quoted.get(16..20)?.try_into().ok()?;
            let (key, proof) = quoted_tcp(IpAddr::V4(Ipv4Addr::from(remote)), quoted.get(quoted_header..)?)?;
            Some((key, proof, reply))
        }
        _ => None,
    }
}

/// A reply to one of our SYNs in an IPv6 packet (header included), or `None` for anything else.
/// Extension headers are not followed: replies to a SYN carry none.
pub fn parse_v6(packet: &[u8]) -> Option<(Key, Proof, Reply)> {
    let ip = Ipv6Packet::new(packet)?;
    let body = packet.get(40..)?;
    let (from, ttl) = (IpAddr::V6(ip.get_source()), ip.get_hop_limit());
    match ip.get_next_header() {
        IpNextHeaderProtocols::Tcp => tcp_reply(from, ttl, body),
        IpNextHeaderProtocols::Icmpv6 => {
            let (kind, code, quoted) = (*body.first()?, *body.get(1)?, body.get(8..)?);
            let reply = match kind {
                1 => Reply::Unreachable {
                    from,
                    kind: icmpv6_unreachable(code),
                    ttl,
                },
                3 => Reply::TimeExceeded { from, ttl },
                _ => return None,
            };
            if *quoted.get(6)? != 6 {
                return None;
            }
            let remote: [u8; 16] = quoted.get(24..40)?.try_into().ok()?;
            let (key, proof) = quoted_tcp(IpAddr::V6(Ipv6Addr::from(remote)), quoted.get(40..)?)?;
            Some((key, proof, reply))
        }
        _ => None,
    }
}

fn tcp_reply(from: IpAddr, ttl: u8, segment: &[u8]) -> Option<(Key, Proof, Reply)> {
    let tcp = TcpPacket::new(segment)?;
    let flags = tcp.get_flags();
    let reply = if flags & TcpFlags::RST != 0 {
        Reply::Reset { ttl }
    } else if flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK {
        Reply::SynAck { ttl }
    } else {
        return None;
    };
    let key = Key {
        remote: from,
        remote_port: tcp.get_source(),
        local_port: tcp.get_destination(),
    };
    Some((key, Proof::Acknowledges(tcp.get_acknowledgement()), reply))
}

/// The first 8 bytes of our SYN as an ICMP error quotes them: ports and sequence number.
fn quoted_tcp(remote: IpAddr, tcp: &[u8]) -> Option<(Key, Proof)> {
    let word = |at: usize| Some(u16::from_be_bytes(tcp.get(at..at + 2)?.try_into().ok()?));
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let key = Key {
        remote,
        remote_port: word(2)?,
        local_port: word(0)?,
    };
    Some((key, Proof::Quotes(seq)))
}

// Classic BPF, as `tcpdump -d` prints it; the kernel runs it on every packet before it is copied
// to us, so a busy host's own traffic costs a few instructions per packet and no copy.
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
const LD_H_ABS: u16 = 0x28;
const LD_H_IND: u16 = 0x48;
const LD_B_IND: u16 = 0x50;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const ACCEPT: u32 = 0x0004_0000;
/// The packet type, an ancillary load (`SKF_AD_OFF + SKF_AD_PKTTYPE`).
const PKTTYPE: u32 = 0xffff_f004;
/// `PACKET_OUTGOING`: a packet socket sees what this host sends too (our own SYNs, and its replies
/// to clients whose ports are in our range).
const OUTGOING: u32 = 4;
/// SYN or RST: the replies to a SYN (a SYN-ACK or a reset).
const SYN_OR_RST: u32 = 0x06;

/// Accepts incoming SYN-ACKs and resets to our ports and ICMP unreachable / time exceeded, on an
/// IPv4 packet socket (the data starts at the IP header). Jump offsets count from the next
/// instruction.
#[rustfmt::skip]
pub fn filter_v4() -> Vec<SockFilter> {
    vec![
        SockFilter::new(LD_W_ABS, 0, 0, PKTTYPE),             // 0
        SockFilter::new(JEQ_K, 13, 0, OUTGOING),              // 1: ours going out -> 15
        SockFilter::new(LD_B_ABS, 0, 0, 9),                   // 2: protocol
        SockFilter::new(JEQ_K, 0, 5, 6),                      // 3: tcp? else -> 9
        SockFilter::new(LDX_B_MSH, 0, 0, 0),                  // 4: x = IP header length
        SockFilter::new(LD_B_IND, 0, 0, 13),                  // 5: TCP flags
        SockFilter::new(JSET_K, 0, 8, SYN_OR_RST),            // 6: neither -> 15
        SockFilter::new(LD_H_IND, 0, 0, 2),                   // 7: destination port
        SockFilter::new(JGE_K, 5, 6, u32::from(PORT_BASE)),   // 8: ours -> 14, else 15
        SockFilter::new(JEQ_K, 0, 5, 1),                      // 9: icmp? else -> 15
        SockFilter::new(LDX_B_MSH, 0, 0, 0),                  // 10
        SockFilter::new(LD_B_IND, 0, 0, 0),                   // 11: type
        SockFilter::new(JEQ_K, 1, 0, 3),                      // 12: destination unreachable -> 14
        SockFilter::new(JEQ_K, 0, 1, 11),                     // 13: time exceeded -> 14, else 15
        SockFilter::new(RET_K, 0, 0, ACCEPT),                 // 14
        SockFilter::new(RET_K, 0, 0, 0),                      // 15
    ]
}

/// The same for IPv6 (no extension headers: replies to a SYN carry none).
#[rustfmt::skip]
pub fn filter_v6() -> Vec<SockFilter> {
    vec![
        SockFilter::new(LD_W_ABS, 0, 0, PKTTYPE),             // 0
        SockFilter::new(JEQ_K, 11, 0, OUTGOING),              // 1: ours going out -> 13
        SockFilter::new(LD_B_ABS, 0, 0, 6),                   // 2: next header
        SockFilter::new(JEQ_K, 0, 4, 6),                      // 3: tcp? else -> 8
        SockFilter::new(LD_B_ABS, 0, 0, 53),                  // 4: TCP flags
        SockFilter::new(JSET_K, 0, 7, SYN_OR_RST),            // 5: neither -> 13
        SockFilter::new(LD_H_ABS, 0, 0, 42),                  // 6: destination port
        SockFilter::new(JGE_K, 4, 5, u32::from(PORT_BASE)),   // 7: ours -> 12, else 13
        SockFilter::new(JEQ_K, 0, 4, 58),                     // 8: icmpv6? else -> 13
        SockFilter::new(LD_B_ABS, 0, 0, 40),                  // 9: type
        SockFilter::new(JEQ_K, 1, 0, 1),                      // 10: destination unreachable -> 12
        SockFilter::new(JEQ_K, 0, 1, 3),                      // 11: time exceeded -> 12, else 13
        SockFilter::new(RET_K, 0, 0, ACCEPT),                 // 12
        SockFilter::new(RET_K, 0, 0, 0),                      // 13
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::diagnosis::RejectKind;

    fn v4_header(protocol: u8, ttl: u8, source: [u8; 4], destination: [u8; 4], body_len: usize) -> Vec<u8> {
        let total = u16::try_from(20 + body_len).unwrap();
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, protocol, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&source);
        h.extend_from_slice(&destination);
        h
    }

    #[test]
    fn a_reset_answering_our_syn_is_matched_by_its_acknowledgement() {
        let destination: SocketAddr = "192.0.2.15:22".parse().unwrap();
        let ours = syn("198.51.100.2".parse().unwrap(), destination, 61_005, 1000);
        assert_eq!(ours.len(), 24);
        let mut reset = vec![0u8; 20];
        {
            let mut tcp = MutableTcpPacket::new(&mut reset).unwrap();
            tcp.set_source(22);
            tcp.set_destination(61_005);
            tcp.set_acknowledgement(1001);
            tcp.set_data_offset(5);
            tcp.set_flags(TcpFlags::RST | TcpFlags::ACK);
        }
        let mut packet = v4_header(6, 62, [192, 0, 2, 15], [198, 51, 100, 2], reset.len());
        packet.extend_from_slice(&reset);
        let (key, proof, reply) = parse_v4(&packet).unwrap();
        assert_eq!(key.remote, destination.ip());
        assert_eq!((key.remote_port, key.local_port), (22, 61_005));
        assert_eq!(proof.seq(), 1000);
        assert_eq!(reply, Reply::Reset { ttl: 62 });
    }

    #[test]
    fn an_icmp_error_is_matched_by_the_syn_it_quotes() {
        let destination: SocketAddr = "192.0.2.12:22".parse().unwrap();
        let ours = syn("198.51.100.2".parse().unwrap(), destination, 61_007, 77);
        let mut quoted = v4_header(6, 62, [198, 51, 100, 2], [192, 0, 2, 12], ours.len());
        quoted.extend_from_slice(&ours[..8]);
        let mut icmp = vec![3, 13, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        let mut packet = v4_header(1, 63, [203, 0, 113, 2], [198, 51, 100, 2], icmp.len());
        packet.extend_from_slice(&icmp);
        let (key, proof, reply) = parse_v4(&packet).unwrap();
        assert_eq!(key.remote, destination.ip());
        assert_eq!(key.local_port, 61_007);
        assert_eq!(proof.seq(), 77);
        assert_eq!(
            reply,
            Reply::Unreachable {
                from: "203.0.113.2".parse().unwrap(),
                kind: RejectKind::AdminProhibited,
                ttl: 63
            }
        );
    }

    #[test]
    fn an_icmpv6_time_exceeded_names_the_hop() {
        let destination: SocketAddr = "[2001:db8:2::11]:22".parse().unwrap();
        let source: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let ours = syn(IpAddr::V6(source), destination, 61_100, 5);
        let header = |next: u8, hops: u8, from: Ipv6Addr, to: Ipv6Addr, len: usize| {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            h.extend_from_slice(&[next, hops]);
            h.extend_from_slice(&from.octets());
            h.extend_from_slice(&to.octets());
            h
        };
        let target: Ipv6Addr = "2001:db8:2::11".parse().unwrap();
        let mut icmp = vec![3, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend(header(6, 1, source, target, ours.len()));
        icmp.extend_from_slice(&ours[..8]);
        let hop: Ipv6Addr = "2001:db8:3::2".parse().unwrap();
        let mut packet = header(58, 63, hop, source, icmp.len());
        packet.extend_from_slice(&icmp);
        let (key, proof, reply) = parse_v6(&packet).unwrap();
        assert_eq!((key.remote, key.local_port), (destination.ip(), 61_100));
        assert_eq!(proof.seq(), 5);
        assert_eq!(
            reply,
            Reply::TimeExceeded {
                from: IpAddr::V6(hop),
                ttl: 63
            }
        );
    }

    #[test]
    fn a_syn_datagram_carries_its_ttl_and_parses_back_as_our_syn() {
        let destination: SocketAddr = "192.0.2.11:22".parse().unwrap();
        let datagram = syn_datagram("198.51.100.2".parse().unwrap(), destination, 61_010, 9, 3);
        let ip = Ipv4Packet::new(&datagram).unwrap();
        assert_eq!(
            (ip.get_ttl(), ip.get_destination()),
            (3, "192.0.2.11".parse::<Ipv4Addr>().unwrap())
        );
        let tcp = TcpPacket::new(&datagram[20..]).unwrap();
        assert_eq!(
            (tcp.get_destination(), tcp.get_source(), tcp.get_sequence()),
            (22, 61_010, 9)
        );
        let v6: SocketAddr = "[2001:db8:2::11]:22".parse().unwrap();
        let datagram = syn_datagram("2001:db8:1::2".parse().unwrap(), v6, 61_011, 10, 2);
        let ip = Ipv6Packet::new(&datagram).unwrap();
        assert_eq!((ip.get_hop_limit(), ip.get_payload_length()), (2, 24));
    }

    #[test]
    fn other_packets_are_not_replies() {
        assert_eq!(parse_v4(&[0x45; 10]), None);
        let udp = v4_header(17, 64, [192, 0, 2, 1], [198, 51, 100, 2], 8);
        assert_eq!(parse_v4(&udp), None);
        // A plain ACK of some other connection.
        let mut ack = vec![0u8; 20];
        MutableTcpPacket::new(&mut ack).unwrap().set_flags(TcpFlags::ACK);
        let mut packet = v4_header(6, 64, [192, 0, 2, 1], [198, 51, 100, 2], 20);
        packet.extend_from_slice(&ack);
        assert_eq!(parse_v4(&packet), None);
    }
}
