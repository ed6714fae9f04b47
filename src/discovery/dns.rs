//! DNS discovery. Large pools answer each query with a subset, so a refresh sends several queries
//! to every resolver and keeps an address for `dns_retention` after it was last seen. Answers are
//! never cached between queries: the live set is the point.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::{ResolverSpec, Target};

/// The addresses DNS has shown for a target, and when each was last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsBook {
    last_seen: BTreeMap<IpAddr, Instant>,
    /// Set while refreshes fail: retention does not run down while DNS cannot be asked.
    failing_since: Option<Instant>,
}

impl DnsBook {
    /// Records a successful refresh at `now`: `answers` are fresh, and addresses not seen within
    /// `retention` (not counting time spent failing) leave the set.
    pub fn record_success(&mut self, now: Instant, answers: &BTreeSet<IpAddr>, retention: Duration) {
        if let Some(since) = self.failing_since.take() {
            let paused = now.saturating_duration_since(since);
            for seen in self.last_seen.values_mut() {
                *seen += paused;
            }
        }
        for &ip in answers {
            self.last_seen.insert(ip, now);
        }
        self.last_seen
            .retain(|_, seen| now.saturating_duration_since(*seen) <= retention);
    }

    /// Records a failed refresh at `now`: the set stays exactly as it was.
    pub fn record_failure(&mut self, now: Instant) {
        self.failing_since.get_or_insert(now);
    }

    /// The addresses currently in the set.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.last_seen.keys().copied().collect()
    }
}

/// Why a DNS refresh failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resolver}: {record_type} {host}: {message}")]
pub struct DnsFailure {
    /// Bounded `reason` label: hickory's own metrics label for the error.
    pub reason: &'static str,
    pub resolver: String,
    pub record_type: &'static str,
    pub host: String,
    pub message: String,
}

/// Resolves `target.host` against each of its resolvers, `dns_queries` times each, A and AAAA as
/// separate queries, and returns the union. Any failed query fails the whole refresh, so a partial
/// answer never shrinks the set; NXDOMAIN and NODATA are answers (empty ones).
pub async fn resolve(target: &Target, timeout: Duration) -> Result<BTreeSet<IpAddr>, DnsFailure> {
    let Some(host) = target.host.as_deref() else {
        return Ok(BTreeSet::new());
    };
    let mut found = BTreeSet::new();
    for spec in &target.resolvers {
        for _ in 0..target.dns_queries {
            // A fresh resolver per query: hickory caches answers, and a cached answer would hide
            // the rotation of a pool's subsets.
            let resolver = build_resolver(*spec, timeout).map_err(|err| DnsFailure {
                reason: "config",
                resolver: spec.to_string(),
                record_type: "-",
                host: host.to_string(),
                message: err.to_string(),
            })?;
            let (v4, v6) = tokio::join!(
                async {
                    if target.ipv4 {
                        Some(resolver.ipv4_lookup(host).await)
                    } else {
                        None
                    }
                },
                async {
                    if target.ipv6 {
                        Some(resolver.ipv6_lookup(host).await)
                    } else {
                        None
                    }
                },
            );
            for (record_type, answer) in [("A", v4), ("AAAA", v6)] {
                match answer {
                    None => {}
                    Some(Ok(lookup)) => found.extend(lookup.answers().iter().filter_map(|record| match &record.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })),
                    Some(Err(err)) if err.is_no_records_found() => {}
                    Some(Err(err)) => {
                        return Err(DnsFailure {
                            reason: err.as_metrics_label(),
                            resolver: spec.to_string(),
                            record_type,
                            host: host.to_string(),
                            message: describe(&err),
                        });
                    }
                }
            }
        }
    }
    Ok(found)
}

fn describe(err: &NetError) -> String {
    match err {
        NetError::Timeout => "timed out".to_string(),
        other => other.to_string(),
    }
}

fn build_resolver(spec: ResolverSpec, timeout: Duration) -> Result<TokioResolver, NetError> {
    let mut options = ResolverOpts::default();
    options.timeout = timeout;
    options.cache_size = 0;
    options.attempts = 1;
    let config = match spec {
        ResolverSpec::System => {
            let (config, system_options) = hickory_resolver::system_conf::read_system_conf()?;
            options.ndots = system_options.ndots;
            options.use_hosts_file = ResolveHosts::Always;
            config
        }
        ResolverSpec::Server(socket) => {
            options.use_hosts_file = ResolveHosts::Never;
            let mut udp = ConnectionConfig::udp();
            udp.port = socket.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = socket.port();
            ResolverConfig::from_name_servers(vec![NameServerConfig::new(socket.ip(), true, vec![udp, tcp])])
        }
    };
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn answers_accumulate_and_age_out() {
        let t0 = Instant::now();
        let mut book = DnsBook::default();
        book.record_success(t0, &set(&["192.0.2.1", "192.0.2.2"]), HOUR);
        book.record_success(t0 + Duration::from_secs(60), &set(&["192.0.2.3"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
        book.record_success(t0 + HOUR + Duration::from_secs(1), &set(&["192.0.2.3"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.3"]));
    }

    #[test]
    fn empty_answer_is_a_success_and_ages_out() {
        let t0 = Instant::now();
        let mut book = DnsBook::default();
        book.record_success(t0, &set(&["192.0.2.1"]), Duration::ZERO);
        book.record_success(t0 + Duration::from_secs(1), &BTreeSet::new(), Duration::ZERO);
        assert!(book.addresses().is_empty());
    }

    #[test]
    fn failures_freeze_the_set_and_pause_retention() {
        let t0 = Instant::now();
        let mut book = DnsBook::default();
        book.record_success(t0, &set(&["192.0.2.1", "2001:db8::1"]), HOUR);
        book.record_failure(t0 + Duration::from_secs(600));
        book.record_failure(t0 + 2 * HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1", "2001:db8::1"]));
        // Healthy again after a 3h outage: the 10 minutes seen before it count, the outage does not.
        let back = t0 + 3 * HOUR;
        book.record_success(back, &set(&["192.0.2.1"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1", "2001:db8::1"]));
        book.record_success(back + Duration::from_secs(3001), &set(&["192.0.2.1"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1"]));
    }
}
