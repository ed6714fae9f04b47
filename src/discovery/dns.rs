//! DNS discovery. Large pools answer each query with a subset, so a refresh sends several queries
//! to every resolver; the core's `DnsBook` keeps an address for `dns_retention` after it was last
//! seen. Answers are never cached between queries: the live set is the point.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::{ResolverSpec, Target};
use crate::core::source::{Failure, Reason};

/// Resolves `target.host` against each of its resolvers, `dns_queries` times each, A and AAAA as
/// separate queries, and returns the union. Any failed query fails the whole refresh, so a partial
/// answer never shrinks the set; NXDOMAIN and NODATA are answers (empty ones).
pub async fn resolve(target: &Target, timeout: Duration) -> Result<BTreeSet<IpAddr>, Failure> {
    let Some(host) = target.host.as_deref() else {
        return Ok(BTreeSet::new());
    };
    let mut found = BTreeSet::new();
    for spec in &target.resolvers {
        for _ in 0..target.dns_queries {
            // A fresh resolver per query: hickory caches answers, and a cached answer would hide
            // the rotation of a pool's subsets.
            let resolver = build_resolver(*spec, timeout)
                .map_err(|err| Failure::new(Reason::Dns("config"), format!("{spec}: {host}: {err}")))?;
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
                        return Err(Failure::new(
                            Reason::Dns(err.as_metrics_label()),
                            format!("{spec}: {record_type} {host}: {}", describe(&err)),
                        ));
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
