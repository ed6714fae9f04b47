//! The audit's diff at vendor scale: 100,000 published prefixes (an AWS-sized list) against a
//! whitelist of 10,000 entries, through the same `audit::evaluate` the daemon runs on every scrape.
//! Run with `cargo bench --bench audit`.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ipnet::{IpNet, Ipv4Net};
use whitelist_audit::config::whitelist::{Entry, Whitelist};
use whitelist_audit::config::{CheckKind, Config, Global, Target};
use whitelist_audit::core::audit::{self, PublishedBy, TargetInput};

const PUBLISHED: u32 = 100_000;
const ENTRIES: u32 = 10_000;

fn v4(bits: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(bits), len).unwrap().trunc())
}

/// 100,000 distinct /20s, and 10,000 entries: /16s that tile some of them, /24s that cover parts
/// of others, so the diff has full, partial and no coverage to compute.
fn inputs() -> (Config, BTreeSet<IpNet>) {
    let published: BTreeSet<IpNet> = (0..PUBLISHED).map(|i| v4(i << 12, 20)).collect();
    let entries: Vec<Entry> = (0..ENTRIES)
        .map(|j| Entry {
            prefix: if j % 2 == 0 {
                v4((j * 37) << 16, 16)
            } else {
                v4((j * 7919) << 8, 24)
            },
            ports: vec![22],
            belongs_to: Vec::new(),
            tagged: None,
            comment: None,
            file: 0,
            source: 0,
            line: u64::from(j),
            broad: false,
        })
        .collect();
    let target = Target {
        name: "aws".into(),
        host: None,
        port: 22,
        check: CheckKind::Tcp,
        resolvers: Vec::new(),
        ipv4: true,
        ipv6: true,
        dns_queries: 1,
        dns_retention: std::time::Duration::ZERO,
        static_addresses: BTreeSet::new(),
        allow_local_addresses: false,
        client_attempts: whitelist_audit::config::defaults::CLIENT_ATTEMPTS,
        published: Vec::new(),
        whitelist_source: Some(0),
        ssh: whitelist_audit::config::ssh::SshPolicy::default(),
    };
    let whitelist = Whitelist::new(vec![PathBuf::from("whitelist.yml")], entries);
    let coverage = vec![whitelist.coverage(&target)];
    let config = Config {
        path: PathBuf::from("bench.yml"),
        global: Global::default(),
        targets: vec![target],
        whitelist,
        coverage,
    };
    (config, published)
}

fn bench(c: &mut Criterion) {
    let (config, published) = inputs();
    let config = Arc::new(config);
    let (addresses, probed, results) = (BTreeSet::<IpAddr>::new(), BTreeSet::<IpAddr>::new(), BTreeMap::new());
    let (probe_errors, bogus) = (BTreeMap::new(), BTreeMap::new());
    // Every published prefix is above the probe cap: audited against the whitelist, not probed.
    let ssh = BTreeMap::new();
    let sessions = BTreeMap::new();
    let published_by = PublishedBy::default();
    let diagnoses = BTreeMap::new();
    let input = || TargetInput {
        published: &addresses,
        prefixes: &published,
        unprobed: &published,
        probed: &probed,
        results: &results,
        changes: (0, 0),
        probe_errors: &probe_errors,
        bogus: &bogus,
        ssh: &ssh,
        sessions: &sessions,
        published_by: &published_by,
        diagnoses: &diagnoses,
    };
    let mut group = c.benchmark_group("audit");
    group.sample_size(10);
    group.bench_function("index 10k whitelist entries", |b| {
        b.iter(|| black_box(config.whitelist.coverage(&config.targets[0])));
    });
    group.bench_function("evaluate 100k published prefixes x 10k entries", |b| {
        b.iter(|| {
            let report = audit::evaluate(&config, &[input()], vec![Vec::new()]);
            black_box(report.whitelist_entries.len())
        });
    });
    group.finish();
    // The numbers the README quotes: how much of the diff is covered, partly, or not at all.
    let report = audit::evaluate(&config, &[input()], vec![Vec::new()]);
    let prefixes = &report.targets[0].prefixes;
    let full = prefixes.iter().filter(|p| p.uncovered.is_empty()).count();
    let none = prefixes.iter().filter(|p| p.uncovered == [p.prefix]).count();
    let unused = report.whitelist_entries.iter().filter(|e| e.unused).count();
    eprintln!(
        "published {}: fully covered {full}, uncovered {none}, partly {}; unused entries {unused} of {}",
        prefixes.len(),
        prefixes.len() - full - none,
        report.whitelist_entries.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
