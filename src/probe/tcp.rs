//! One attempt: a TCP connect and, for `check: ssh`, the exchange of identification lines. The
//! connection is closed as soon as the verdict is known, so the server spends as little on us as
//! it can (an SSH server limits unauthenticated connections with `MaxStartups`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ssh::{self, Scan};
use super::{Attempt, ProbeState};
use crate::config::{CheckKind, defaults};

/// Makes one attempt at `address` within `timeout` (connect and identification together).
pub async fn attempt(address: SocketAddr, check: CheckKind, timeout: Duration) -> Attempt {
    let start = Instant::now();
    let deadline = start + timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
        Err(_) => {
            return finish(
                start,
                ProbeState::Timeout,
                format!("no SYN-ACK within {}", humantime::format_duration(timeout)),
            );
        }
        Ok(Err(err)) => return finish(start, classify_connect_error(&err), format!("connect: {err}")),
        Ok(Ok(stream)) => stream,
    };
    match check {
        CheckKind::Tcp => finish(start, ProbeState::Open, "TCP handshake completed".into()),
        CheckKind::Ssh => identify(stream, start, deadline).await,
    }
}

fn finish(start: Instant, state: ProbeState, detail: String) -> Attempt {
    Attempt {
        state,
        duration: start.elapsed(),
        software: None,
        detail,
    }
}

async fn identify(mut stream: TcpStream, start: Instant, deadline: Instant) -> Attempt {
    let _ = stream.set_nodelay(true);
    // A write error shows up again as a read error below, with a better message.
    let _ = tokio::time::timeout_at(deadline, stream.write_all(ssh::client_identification().as_bytes())).await;
    let max = defaults::MAX_BANNER_BYTES;
    let mut received: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let read = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => {
                let detail = if received.is_empty() {
                    "TCP connected, but nothing was received before the timeout".to_string()
                } else {
                    format!(
                        "no SSH identification line before the timeout; first line: {}",
                        ssh::first_line(&received)
                    )
                };
                return finish(start, ProbeState::ProtocolError, detail);
            }
            Ok(Err(err)) => {
                let detail = if received.is_empty() {
                    format!("TCP connected, then {err} before an SSH identification line")
                } else {
                    // What the peer said before hanging up is the best clue to what it is.
                    format!(
                        "{err} before an SSH identification line; first line: {}",
                        ssh::first_line(&received)
                    )
                };
                return finish(start, ProbeState::ProtocolError, detail);
            }
            Ok(Ok(0)) => {
                let detail = if received.is_empty() {
                    "TCP connected, then closed by the peer without a byte (MaxStartups, or a proxy refusing)"
                        .to_string()
                } else {
                    format!(
                        "closed by the peer before an SSH identification line; first line: {}",
                        ssh::first_line(&received)
                    )
                };
                return finish(start, ProbeState::ProtocolError, detail);
            }
            Ok(Ok(n)) => n,
        };
        let room = max.saturating_sub(received.len());
        received.extend_from_slice(&chunk[..read.min(room)]);
        match ssh::scan(&received, max) {
            Scan::NeedMore => {}
            Scan::NotSsh(reason) => return finish(start, ProbeState::ProtocolError, reason),
            Scan::Found(identification) => {
                let duration = start.elapsed();
                return Attempt {
                    state: ProbeState::Open,
                    duration,
                    detail: format!("SSH-{}-{}", identification.protocol, identification.software),
                    software: Some(identification.software),
                };
            }
        }
    }
}

/// Maps a failed connect to a state. Linux reports a firewall's ICMP admin-prohibited as
/// EHOSTUNREACH (IPv4) or EACCES (IPv6), and a local netfilter REJECT/DROP as EPERM.
pub fn classify_connect_error(err: &io::Error) -> ProbeState {
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted => ProbeState::Refused,
        K::TimedOut => ProbeState::Timeout,
        _ => ProbeState::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> ProbeState {
        classify_connect_error(&io::Error::from_raw_os_error(code))
    }

    #[test]
    fn errno_classification() {
        // Values from Linux asm-generic/errno.h.
        assert_eq!(
            os(111),
            ProbeState::Refused,
            "ECONNREFUSED: RST, or ICMP port-unreachable"
        );
        assert_eq!(os(104), ProbeState::Refused, "ECONNRESET");
        assert_eq!(
            os(110),
            ProbeState::Timeout,
            "ETIMEDOUT: the kernel gave up on SYN retries"
        );
        assert_eq!(
            os(113),
            ProbeState::Unreachable,
            "EHOSTUNREACH: ICMP host/admin unreachable"
        );
        assert_eq!(os(101), ProbeState::Unreachable, "ENETUNREACH: no route");
        assert_eq!(
            os(13),
            ProbeState::Unreachable,
            "EACCES: ICMPv6 administratively prohibited"
        );
        assert_eq!(
            os(1),
            ProbeState::Unreachable,
            "EPERM: the local firewall refused the SYN"
        );
    }
}
