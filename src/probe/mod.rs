//! Probing one address: up to `attempts` attempts, `retry_delay` apart, bounded by a global and a
//! per-target concurrency limit. A probe that finds a port dropped has succeeded at finding out:
//! every result is a [`ProbeState`], never an error.

pub mod ssh;
pub mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::CheckKind;

/// How one probe of an address ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    /// TCP connected and, for `check: ssh`, a valid SSH-2 identification line arrived.
    Open,
    /// The connection was reset: a closed port, or a firewall's REJECT with tcp-reset.
    Refused,
    /// The TCP handshake never completed: a firewall DROP, or a black hole.
    Timeout,
    /// An ICMP unreachable or no route: a firewall's REJECT with icmp, a routing hole.
    Unreachable,
    /// TCP connected but no valid SSH identification line arrived: a proxy, a portal, a tarpit.
    ProtocolError,
}

impl ProbeState {
    /// Every state, in the order the metrics list them.
    pub const ALL: [Self; 5] = [
        Self::Open,
        Self::Refused,
        Self::Timeout,
        Self::Unreachable,
        Self::ProtocolError,
    ];

    /// The `state` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::ProtocolError => "protocol_error",
        }
    }

    /// What this state usually means on the path, for a person reading `check`'s table.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Open => "reachable",
            Self::Refused => "TCP reset: port closed, or a REJECT with tcp-reset",
            Self::Timeout => "no answer to SYN: a firewall DROP or a black hole",
            Self::Unreachable => "ICMP unreachable / no route: a REJECT with icmp, or a routing hole",
            Self::ProtocolError => "TCP open but not SSH: a proxy, captive portal or tarpit",
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub state: ProbeState,
    pub duration: Duration,
    /// The server's software version, from its identification line.
    pub software: Option<String>,
    /// What was observed, in words: the OS error, what the peer sent.
    pub detail: String,
}

/// The result of one probe of an address: its last attempt, and how many attempts it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub state: ProbeState,
    /// Duration of the final attempt.
    #[serde(rename = "duration_seconds", serialize_with = "as_seconds")]
    pub duration: Duration,
    pub attempts: u32,
    pub software: Option<String>,
    pub detail: String,
    #[serde(skip)]
    pub finished_at: SystemTime,
}

fn as_seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
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

/// Probes `ip`, holding one slot of `target_slots` and one of `global_slots` per attempt only:
/// a probe waiting out its retry delay holds neither.
pub async fn probe(ip: IpAddr, spec: ProbeSpec, target_slots: &Semaphore, global_slots: &Semaphore) -> ProbeResult {
    let address = SocketAddr::new(ip, spec.port);
    let attempts = spec.attempts.max(1);
    let mut attempt_number = 0;
    loop {
        attempt_number += 1;
        let attempt = {
            // Closed semaphores are never used here; a failed acquire would be a bug, so it panics.
            let _target = target_slots.acquire().await.expect("target semaphore closed");
            let _global = global_slots.acquire().await.expect("global semaphore closed");
            tcp::attempt(address, spec.check, spec.timeout).await
        };
        if attempt.state == ProbeState::Open || attempt_number >= attempts {
            return ProbeResult {
                state: attempt.state,
                duration: attempt.duration,
                attempts: attempt_number,
                software: attempt.software,
                detail: attempt.detail,
                finished_at: SystemTime::now(),
            };
        }
        tokio::time::sleep(spec.retry_delay).await;
    }
}
