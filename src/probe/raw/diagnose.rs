//! One failing address, diagnosed: the raw SYNs to send, in which order, and the evidence they
//! bring back for `core::diagnosis` to judge.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use super::RawProber;
use crate::config::Diagnosis as Settings;
use crate::core::diagnosis::{self, Diagnosis, Evidence, HEALTHY_SAMPLES, Reply, Trace};
use crate::core::outcome::ProbeState;

/// SYNs per hop a trace sends at most: a hop whose router rate-limits its ICMP gets a second try.
const PROBES_PER_HOP: usize = 2;
/// A full-TTL SYN to send at all.
const FULL_TTL: u8 = 64;

/// One address to diagnose, as the state hands it out.
#[derive(Debug, Clone)]
pub struct Job {
    pub address: SocketAddr,
    pub state: ProbeState,
    /// SYN-ACK TTLs this address answered with when it was open.
    pub own_syn_ack_ttls: Vec<u8>,
    /// Open addresses of the same target (at most [`HEALTHY_SAMPLES`]).
    pub healthy: Vec<IpAddr>,
}

/// A diagnosis, and the SYN-ACK TTLs learnt on the way (from healthy addresses, or from this
/// one if it answers now), kept for the next reset to be compared with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub diagnosis: Diagnosis,
    pub syn_acks: Vec<(IpAddr, u8)>,
}

/// How long to wait for replies: the probe's own timeout, within bounds that suit one RTT.
pub fn reply_wait(timeout: Duration) -> Duration {
    timeout.clamp(Duration::from_millis(500), Duration::from_secs(3))
}

pub async fn run(raw: &RawProber, job: &Job, settings: &Settings, wait: Duration) -> Outcome {
    let mut syn_acks = Vec::new();
    let failed = |source: IpAddr, error: &std::io::Error, refused_here: bool| Evidence {
        local_failure: Some(error.to_string()),
        refused_here,
        ..Evidence::new(job.state, job.address.ip(), source)
    };
    let evidence = match super::source_for(job.address) {
        // No route from here at all: nothing was sent, so nothing is anyone's verdict.
        Err(error) => failed(job.address.ip(), &error, false),
        Ok(source) => match gather(raw, job, source, settings, wait, &mut syn_acks).await {
            Ok(evidence) => evidence,
            // netfilter's verdict on a packet this host sends (DROP or REJECT in OUTPUT) is the
            // kernel's EPERM from the send itself.
            Err(error) => failed(source, &error, error.kind() == std::io::ErrorKind::PermissionDenied),
        },
    };
    Outcome {
        diagnosis: diagnosis::diagnose(&evidence, SystemTime::now(), settings.ttl_margin),
        syn_acks,
    }
}

async fn gather(
    raw: &RawProber,
    job: &Job,
    source: IpAddr,
    settings: &Settings,
    wait: Duration,
    syn_acks: &mut Vec<(IpAddr, u8)>,
) -> std::io::Result<Evidence> {
    let destination = job.address;
    let mut evidence = Evidence::new(job.state, destination.ip(), source);
    // A timeout is traced at once: its full-TTL SYN would only wait out the same silence.
    let flow = raw.new_flow();
    if job.state != ProbeState::Timeout {
        for _ in 0..PROBES_PER_HOP {
            evidence.direct = raw.send(source, flow, destination, &[FULL_TTL], wait).await?[0];
            if evidence.direct.is_some() {
                break;
            }
        }
    }
    match evidence.direct {
        // Only a silent path is traced: a refusal that went unanswered twice was rate-limited
        // or came and went, and a trace would name a hop for a failure that is no drop.
        None if job.state == ProbeState::Timeout => {
            evidence.trace = Some(trace(raw, source, flow, destination, settings.max_hops, wait).await?);
        }
        Some(Reply::SynAck { ttl }) => syn_acks.push((destination.ip(), ttl)),
        Some(Reply::Reset { ttl }) => {
            evidence.server_ttls_own = !job.own_syn_ack_ttls.is_empty();
            evidence.server_ttls = server_ttls(raw, job, wait, syn_acks).await;
            // Without SYN-ACKs to compare with, or with a reset that does not match them: a SYN
            // that expires where the reset came from makes a router there name itself.
            if diagnosis::reset_is_forged(ttl, &evidence.server_ttls, settings.ttl_margin) != Some(false) {
                let hop = diagnosis::hops_travelled(ttl).saturating_add(1);
                evidence.reset_hop = raw.send(source, flow, destination, &[hop], wait).await?[0];
            }
        }
        None | Some(Reply::Unreachable { .. } | Reply::TimeExceeded { .. }) => {}
    }
    Ok(evidence)
}

/// The server's SYN-ACK TTLs: this address's own from when it was open, else the target's
/// healthy addresses' now.
async fn server_ttls(raw: &RawProber, job: &Job, wait: Duration, syn_acks: &mut Vec<(IpAddr, u8)>) -> Vec<u8> {
    if !job.own_syn_ack_ttls.is_empty() {
        return job.own_syn_ack_ttls.clone();
    }
    let mut ttls = Vec::new();
    for &healthy in job.healthy.iter().take(HEALTHY_SAMPLES) {
        let address = SocketAddr::new(healthy, job.address.port());
        let Ok(source) = super::source_for(address) else {
            continue;
        };
        if let Ok(replies) = raw.send(source, raw.new_flow(), address, &[FULL_TTL], wait).await
            && let Some(Reply::SynAck { ttl }) = replies[0]
        {
            ttls.push(ttl);
            syn_acks.push((healthy, ttl));
        }
    }
    ttls
}

/// A TCP traceroute: a SYN for every TTL up to `max_hops` in one spaced batch, then a second
/// batch for the hops below the end that stayed silent.
async fn trace(
    raw: &RawProber,
    source: IpAddr,
    flow: u16,
    destination: SocketAddr,
    max_hops: u8,
    wait: Duration,
) -> std::io::Result<Trace> {
    let mut trace = Trace::default();
    let mut ends: BTreeMap<u8, Reply> = BTreeMap::new();
    let mut pending: Vec<u8> = (1..=max_hops).collect();
    for _ in 0..PROBES_PER_HOP {
        let replies = raw.send(source, flow, destination, &pending, wait).await?;
        for (&ttl, reply) in pending.iter().zip(replies) {
            match reply {
                Some(Reply::TimeExceeded { from, .. }) => {
                    trace.hops.insert(ttl, from);
                }
                Some(end) => {
                    ends.insert(ttl, end);
                }
                None => {}
            }
        }
        let nearest_end = ends.keys().next().copied();
        pending = (1..=max_hops)
            .filter(|hop| !trace.hops.contains_key(hop) && nearest_end.is_none_or(|end| *hop < end))
            .collect();
        if pending.is_empty() {
            break;
        }
    }
    trace.end = ends.into_iter().next();
    // Hops past the end are the address itself answering time exceeded for nothing: drop them.
    if let Some((end, _)) = trace.end {
        trace.hops.retain(|&hop, _| hop < end);
    }
    Ok(trace)
}
