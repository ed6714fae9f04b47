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
use crate::core::dns_book::Family;
use crate::core::source::{Failure, Reason};
use crate::core::state::DnsAnswers;
use crate::prefix::canonical_ip;

/// Resolves `target.host` against each of its resolvers, `dns_queries` times each, A and AAAA as
/// separate queries, and returns the union per family. A failed query fails its family's refresh,
/// so a partial answer never shrinks that family's set, while the other family's answers count;
/// NXDOMAIN and NODATA are answers (empty ones). IPv4-mapped AAAA answers are taken as the IPv4
/// address they are.
pub async fn resolve(target: &Target, timeout: Duration) -> DnsAnswers {
    let Some(host) = target.host.as_deref() else {
        return DnsAnswers::default();
    };
    let asked = |family| match family {
        Family::Ipv4 => target.ipv4,
        Family::Ipv6 => target.ipv6,
    };
    let mut found: [Option<Result<BTreeSet<IpAddr>, Failure>>; 2] =
        Family::ALL.map(|family| asked(family).then(|| Ok(BTreeSet::new())));
    for spec in &target.resolvers {
        for _ in 0..target.dns_queries {
            // A fresh resolver per query: hickory caches answers, and a cached answer would hide
            // the rotation of a pool's subsets.
            let resolver = match build_resolver(*spec, timeout) {
                Ok(resolver) => resolver,
                Err(err) => {
                    let failure = Failure::new(Reason::Dns("config"), format!("{spec}: {host}: {err}"));
                    for slot in found.iter_mut().flatten() {
                        *slot = Err(failure.clone());
                    }
                    return answers(found);
                }
            };
            let still_good = |family: Family| matches!(found[family as usize], Some(Ok(_)));
            let (v4, v6) = tokio::join!(
                async {
                    if still_good(Family::Ipv4) {
                        Some(resolver.ipv4_lookup(host).await)
                    } else {
                        None
                    }
                },
                async {
                    if still_good(Family::Ipv6) {
                        Some(resolver.ipv6_lookup(host).await)
                    } else {
                        None
                    }
                },
            );
            for (family, answer) in [(Family::Ipv4, v4), (Family::Ipv6, v6)] {
                let slot = &mut found[family as usize];
                let Some(Ok(set)) = slot else { continue };
                match answer {
                    None => {}
                    Some(Ok(lookup)) => set.extend(lookup.answers().iter().filter_map(|record| match &record.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(canonical_ip(IpAddr::V6(aaaa.0))),
                        _ => None,
                    })),
                    Some(Err(err)) if err.is_no_records_found() => {}
                    Some(Err(err)) => {
                        *slot = Some(Err(Failure::new(
                            Reason::Dns(err.as_metrics_label()),
                            format!("{spec}: {} {host}: {}", family.record_type(), describe(&err)),
                        )));
                    }
                }
            }
        }
    }
    answers(found)
}

fn answers([ipv4, ipv6]: [Option<Result<BTreeSet<IpAddr>, Failure>>; 2]) -> DnsAnswers {
    DnsAnswers { ipv4, ipv6 }
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
