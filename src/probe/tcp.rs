//! The TCP handshake: every kind starts here. `check: tcp` stops once it completes. A failed
//! connect is classified from its errno: the network's verdicts (reset, no answer, ICMP
//! unreachable) apart from this host's own faults, which are never reported as the network's.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::Network;
use crate::core::outcome::{Attempt, LocalFault, ProbeState};

/// Connects to `address` by `deadline`; a failure is the attempt's end.
pub async fn connect<N: Network>(
    network: &N,
    address: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<N::Stream, Attempt> {
    match tokio::time::timeout_at(deadline, network.connect(address)).await {
        Err(_) => Err(Attempt::ended(
            ProbeState::Timeout,
            Duration::ZERO,
            format!("no SYN-ACK within {}", humantime::format_duration(timeout)),
        )),
        Ok(Err(err)) => Err(match classify_connect_error(&err) {
            Ok(state) => Attempt::ended(state, Duration::ZERO, format!("connect: {err}")),
            Err(fault) => Attempt::fault(fault, Duration::ZERO, format!("connect: {err}")),
        }),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// `check: tcp`: the handshake completed, nothing more is asked.
pub fn connected() -> Attempt {
    Attempt::ended(ProbeState::Open, Duration::ZERO, "TCP handshake completed")
}

// Linux errno values (asm-generic/errno-base.h, errno.h): std exposes no constants for them.
const EPERM: i32 = 1;
const ENOMEM: i32 = 12;
const EACCES: i32 = 13;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;
const ECONNABORTED: i32 = 103;
const ECONNRESET: i32 = 104;
const ENOBUFS: i32 = 105;
const EAFNOSUPPORT: i32 = 97;
const EADDRINUSE: i32 = 98;
const EADDRNOTAVAIL: i32 = 99;
const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const EHOSTDOWN: i32 = 112;
const EHOSTUNREACH: i32 = 113;

/// Maps a failed connect to the network's verdict, or to this host's fault. Only errnos known to
/// come from the path are verdicts; anything else is a fault of ours, so an unknown error can
/// never raise a firewall alert.
///
/// Linux reports an ICMP admin-prohibited as EHOSTUNREACH (IPv4) or EACCES (`ICMPv6`), and a
/// netfilter DROP in this host's own OUTPUT chain as EPERM: all three are a firewall's verdict.
pub fn classify_connect_error(err: &io::Error) -> Result<ProbeState, LocalFault> {
    match err.raw_os_error() {
        Some(ECONNREFUSED | ECONNRESET | ECONNABORTED) => Ok(ProbeState::Refused),
        Some(ETIMEDOUT) => Ok(ProbeState::Timeout),
        Some(EHOSTUNREACH | ENETUNREACH | EHOSTDOWN | ENETDOWN | EACCES | EPERM) => Ok(ProbeState::Unreachable),
        Some(EMFILE | ENFILE) => Err(LocalFault::FdExhausted),
        Some(ENOBUFS | ENOMEM) => Err(LocalFault::NoBuffers),
        Some(EADDRNOTAVAIL | EADDRINUSE) => Err(LocalFault::NoLocalAddress),
        Some(EAFNOSUPPORT) => Err(LocalFault::AddressFamily),
        Some(_) => Err(LocalFault::Other),
        // Not from the kernel: an error of the runtime or of a test's network.
        None => match err.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => Ok(ProbeState::Refused),
            io::ErrorKind::TimedOut => Ok(ProbeState::Timeout),
            _ => Err(LocalFault::Other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> Result<ProbeState, LocalFault> {
        classify_connect_error(&io::Error::from_raw_os_error(code))
    }

    #[test]
    fn network_verdicts() {
        use ProbeState::*;
        assert_eq!(os(ECONNREFUSED), Ok(Refused), "RST, or ICMP port-unreachable");
        assert_eq!(os(ECONNRESET), Ok(Refused));
        assert_eq!(os(ETIMEDOUT), Ok(Timeout), "the kernel gave up on SYN retries");
        assert_eq!(os(EHOSTUNREACH), Ok(Unreachable), "ICMP host/admin unreachable");
        assert_eq!(os(ENETUNREACH), Ok(Unreachable), "no route");
        assert_eq!(os(EACCES), Ok(Unreachable), "ICMPv6 administratively prohibited");
        assert_eq!(os(EPERM), Ok(Unreachable), "this host's own firewall dropped the SYN");
    }

    #[test]
    fn local_faults_are_not_verdicts() {
        use LocalFault::*;
        assert_eq!(os(EMFILE), Err(FdExhausted));
        assert_eq!(os(ENFILE), Err(FdExhausted));
        assert_eq!(os(ENOBUFS), Err(NoBuffers));
        assert_eq!(os(EADDRNOTAVAIL), Err(NoLocalAddress), "ephemeral ports exhausted");
        assert_eq!(os(EAFNOSUPPORT), Err(AddressFamily));
        assert_eq!(
            os(22),
            Err(Other),
            "EINVAL: unknown errnos are ours, never the firewall's"
        );
        assert_eq!(classify_connect_error(&io::Error::other("runtime")), Err(Other));
    }
}
