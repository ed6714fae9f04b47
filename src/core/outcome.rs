//! How a probe of an address ended, as plain data. A probe that finds a port dropped has
//! succeeded at finding out: every way it can end is a [`ProbeState`]. A fault of this host (no
//! file descriptor, no ephemeral port) is the state [`ProbeState::Error`] with a [`LocalFault`],
//! never a network verdict: a metric that blames the firewall for our own EMFILE lies.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::ser::SerializeMap;

/// How one probe of an address ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    /// TCP connected and the kind's exchange succeeded (an SSH identification line, a banner).
    Open,
    /// The connection was reset: a closed port, or a firewall's REJECT with tcp-reset.
    Refused,
    /// The TCP handshake never completed: a firewall DROP, or a black hole.
    Timeout,
    /// An ICMP unreachable or no route: a firewall's REJECT with icmp, a routing hole.
    Unreachable,
    /// TCP connected but the service did not answer as the kind expects: a proxy, a portal, a tarpit.
    ProtocolError,
    /// This host failed to make the probe (see [`LocalFault`]): says nothing about the path.
    Error,
}

impl ProbeState {
    /// Every state, in the order the metrics list them.
    pub const ALL: [Self; 6] = [
        Self::Open,
        Self::Refused,
        Self::Timeout,
        Self::Unreachable,
        Self::ProtocolError,
        Self::Error,
    ];

    /// The `state` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::ProtocolError => "protocol_error",
            Self::Error => "error",
        }
    }

    /// Whether the state is a verdict about the network path or the service; `error` is not.
    pub fn is_verdict(self) -> bool {
        self != Self::Error
    }

    /// What this state usually means, for a person reading `check`'s table.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Open => "reachable",
            Self::Refused => "TCP reset: port closed, or a REJECT with tcp-reset",
            Self::Timeout => "no answer to SYN: a firewall DROP or a black hole",
            Self::Unreachable => "ICMP unreachable / no route: a REJECT with icmp, or a routing hole",
            Self::ProtocolError => {
                "TCP open but the service did not answer as expected: a proxy, captive portal or tarpit"
            }
            Self::Error => "this host could not make the probe (not a network verdict)",
        }
    }
}

/// Why this host failed to make a probe: the bounded `reason` label of
/// `whitelist_audit_probe_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalFault {
    /// EMFILE / ENFILE: the process or the system is out of file descriptors.
    FdExhausted,
    /// ENOBUFS / ENOMEM: the kernel has no memory for another socket.
    NoBuffers,
    /// EADDRNOTAVAIL / EADDRINUSE: no ephemeral port or source address left for the connection.
    NoLocalAddress,
    /// EAFNOSUPPORT: this host cannot open a socket of the address's family (IPv6 disabled).
    AddressFamily,
    /// Any other error of this host.
    Other,
}

impl LocalFault {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [Self; 5] = [
        Self::FdExhausted,
        Self::NoBuffers,
        Self::NoLocalAddress,
        Self::AddressFamily,
        Self::Other,
    ];

    /// The `reason` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::FdExhausted => "fd_exhausted",
            Self::NoBuffers => "no_buffers",
            Self::NoLocalAddress => "no_local_address",
            Self::AddressFamily => "address_family",
            Self::Other => "other",
        }
    }

    /// What to do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Self::FdExhausted => "raise the file descriptor limit (LimitNOFILE, ulimit -n) or lower global.concurrency",
            Self::NoBuffers => "the kernel is short of socket memory: lower global.concurrency",
            Self::NoLocalAddress => {
                "no ephemeral port or source address: lower global.concurrency, widen net.ipv4.ip_local_port_range"
            }
            Self::AddressFamily => "this host has no IPv6 (or IPv4): set the target's address_families",
            Self::Other => "see the detail",
        }
    }
}

/// One row of an info metric a kind exports (`whitelist_audit_ssh_info{software=...} 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoSeries {
    pub family: &'static str,
    pub help: &'static str,
    /// Labels besides target, ip and port; values must be of bounded variety.
    pub labels: Vec<(&'static str, String)>,
}

/// What a kind of probe learned beyond the state (an SSH identification, a banner). Each kind owns
/// its type and renders it for the table, the JSON and the metrics, so a new kind adds no field
/// here.
pub trait Evidence: fmt::Debug + Send + Sync + 'static {
    /// One line for `check`'s DETAIL column.
    fn summary(&self) -> String;
    /// Fields merged into the probe's JSON object.
    fn json_fields(&self) -> Vec<(&'static str, serde_json::Value)>;
    /// The info series this evidence exports (one row of each family).
    fn info(&self) -> Vec<InfoSeries> {
        Vec::new()
    }
    /// For callers that know the kind: downcasting.
    fn as_any(&self) -> &dyn Any;
}

/// The outcome of one attempt, before attempts are counted.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub state: ProbeState,
    /// Set exactly when `state` is [`ProbeState::Error`].
    pub fault: Option<LocalFault>,
    pub duration: Duration,
    pub evidence: Option<Arc<dyn Evidence>>,
    /// What was observed, in words: the OS error, what the peer sent.
    pub detail: String,
}

impl Attempt {
    /// An attempt that ended with `state`, with nothing learned beyond it.
    pub fn ended(state: ProbeState, duration: Duration, detail: impl Into<String>) -> Self {
        Self {
            state,
            fault: None,
            duration,
            evidence: None,
            detail: detail.into(),
        }
    }

    /// An attempt this host failed to make.
    pub fn fault(fault: LocalFault, duration: Duration, detail: impl Into<String>) -> Self {
        Self {
            fault: Some(fault),
            ..Self::ended(ProbeState::Error, duration, detail)
        }
    }
}

/// The result of one probe of an address: its last attempt, and how many attempts it took.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub state: ProbeState,
    /// Set exactly when `state` is [`ProbeState::Error`].
    pub fault: Option<LocalFault>,
    /// Duration of the final attempt.
    pub duration: Duration,
    pub attempts: u32,
    pub evidence: Option<Arc<dyn Evidence>>,
    /// What was observed, in words.
    pub detail: String,
    pub finished_at: SystemTime,
}

impl ProbeResult {
    /// The result of `attempts` attempts, the last one being `last`.
    pub fn from_attempt(last: Attempt, attempts: u32, finished_at: SystemTime) -> Self {
        Self {
            state: last.state,
            fault: last.fault,
            duration: last.duration,
            attempts,
            evidence: last.evidence,
            detail: last.detail,
            finished_at,
        }
    }

    /// The evidence, if it is of kind `T`.
    pub fn evidence_as<T: 'static>(&self) -> Option<&T> {
        self.evidence.as_ref()?.as_any().downcast_ref()
    }

    /// The text of `check`'s DETAIL column.
    pub fn describe(&self) -> String {
        match (self.state, &self.evidence, self.fault) {
            (ProbeState::Open, Some(evidence), _) => evidence.summary(),
            (ProbeState::Open, None, _) => self.detail.clone(),
            (ProbeState::Error, _, Some(fault)) => {
                format!("{}: {}: {}", self.state.meaning(), self.detail, fault.advice())
            }
            (state, _, _) => format!("{}: {}", state.meaning(), self.detail),
        }
    }
}

impl PartialEq for ProbeResult {
    fn eq(&self, other: &Self) -> bool {
        let evidence = |r: &Self| r.evidence.as_ref().map(|e| e.json_fields());
        self.state == other.state
            && self.fault == other.fault
            && self.duration == other.duration
            && self.attempts == other.attempts
            && self.detail == other.detail
            && self.finished_at == other.finished_at
            && evidence(self) == evidence(other)
    }
}

impl Serialize for ProbeResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("state", &self.state)?;
        if let Some(fault) = self.fault {
            map.serialize_entry("error_reason", &fault)?;
        }
        map.serialize_entry("duration_seconds", &self.duration.as_secs_f64())?;
        map.serialize_entry("attempts", &self.attempts)?;
        map.serialize_entry("detail", &self.detail)?;
        for (key, value) in self.evidence.iter().flat_map(|e| e.json_fields()) {
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}
