//! Probing one address: up to `attempts` attempts, `retry_delay` apart, bounded by a global and a
//! per-target concurrency limit. An attempt connects through a [`Network`] and then runs the
//! target's kind of check on the stream, one file per kind: `tcp.rs` (connect only and the
//! classification of connect errors), `ssh.rs` (the identification exchange), `banner.rs` (any
//! first line, for services that speak first).
//!
//! The [`Network`] seam is what lets the scheduler be tested in paused time without sockets, and a
//! local fault (EMFILE) be injected; [`Os`] is the real one.

pub mod banner;
pub mod raw;
pub mod ssh;
pub mod tcp;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::CheckKind;
use crate::core::outcome::{Attempt, ProbeResult};

/// Where connections come from: the operating system, or a script in tests.
pub trait Network: Send + Sync + 'static {
    /// A connected stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens a TCP connection to `address`; the caller bounds it with the attempt's deadline.
    fn connect(&self, address: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Real TCP connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Os;

impl Network for Os {
    type Stream = TcpStream;

    async fn connect(&self, address: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(address).await?;
        // Identification lines are small: send ours at once.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// What a probe needs to know, copied out of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    pub port: u16,
    pub check: CheckKind,
    pub timeout: Duration,
    pub attempts: u32,
    pub retry_delay: Duration,
}

/// Makes one attempt at `address` within `timeout`: the connect and the kind's exchange together.
pub async fn attempt<N: Network>(network: &N, address: SocketAddr, check: CheckKind, timeout: Duration) -> Attempt {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempt = match tcp::connect(network, address, deadline, timeout).await {
        Err(failed) => failed,
        Ok(stream) => match check {
            CheckKind::Tcp => tcp::connected(),
            CheckKind::Ssh => ssh::handshake(stream, deadline).await,
            CheckKind::TcpBanner => banner::read(stream, deadline).await,
        },
    };
    attempt.duration = start.elapsed();
    attempt
}

/// Probes `ip`, holding one slot of `target_slots` and one of `global_slots` per attempt only:
/// a probe waiting out its retry delay holds neither.
pub async fn probe<N: Network>(
    network: &N,
    ip: IpAddr,
    spec: ProbeSpec,
    target_slots: &Semaphore,
    global_slots: &Semaphore,
) -> ProbeResult {
    let address = SocketAddr::new(ip, spec.port);
    let attempts = spec.attempts.max(1);
    let mut attempt_number = 0;
    loop {
        attempt_number += 1;
        let last = {
            // Closed semaphores are never used here; a failed acquire would be a bug, so it panics.
            let _target = target_slots.acquire().await.expect("target semaphore closed");
            let _global = global_slots.acquire().await.expect("global semaphore closed");
            attempt(network, address, spec.check, spec.timeout).await
        };
        if last.state == crate::core::outcome::ProbeState::Open || attempt_number >= attempts {
            return ProbeResult::from_attempt(last, attempt_number, SystemTime::now());
        }
        tokio::time::sleep(spec.retry_delay).await;
    }
}
