//! What the snapshot seam costs at 10,000 addresses: a scrape (rendering the published snapshot,
//! no lock of the probes'), publishing (copying the state under its lock, then the audit outside
//! it, at most every 200 ms while a sweep runs), and recording one probe result (what a probe
//! holds the state's lock for). Run with `cargo bench --bench snapshot`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tokio::sync::watch;
use whitelist_audit::app::{self, Shared};
use whitelist_audit::config::{self, Config};
use whitelist_audit::core::history::History;
use whitelist_audit::core::outcome::{Attempt, ProbeResult, ProbeState};
use whitelist_audit::core::state::{State, TargetId};
use whitelist_audit::metrics;

const ADDRESSES: u32 = 10_000;

fn address(n: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(n)))
}

/// One target of 10,000 static addresses (IPv6 documentation prefix, never contacted).
fn config() -> Arc<Config> {
    let list: Vec<String> = (1..=ADDRESSES).map(|n| format!("\"{}\"", address(n))).collect();
    let yaml = format!("targets:\n  - name: pool\n    static: [{}]\n", list.join(", "));
    let raw = config::parse_yaml(Path::new("bench.yml"), &yaml).unwrap();
    Arc::new(config::build(Path::new("bench.yml"), &raw).unwrap())
}

fn result(n: u32) -> ProbeResult {
    // One address in twenty refused, as a partly broken pool would be.
    let state = if n.is_multiple_of(20) {
        ProbeState::Refused
    } else {
        ProbeState::Open
    };
    let attempt = Attempt::ended(
        state,
        Duration::from_millis(3),
        "connect: Connection refused (os error 111)",
    );
    ProbeResult::from_attempt(attempt, 1, SystemTime::now())
}

fn bench(c: &mut Criterion) {
    let shared = Shared::new(config());
    for n in 1..=ADDRESSES {
        shared.update(|s| s.record_probe(TargetId(0), address(n), result(n)));
    }
    let snapshot = shared.publish();
    let (_keep, receiver) = watch::channel(Arc::clone(&snapshot));
    let registry = metrics::registry(receiver);
    let text = metrics::render(&registry);
    println!(
        "one scrape of {ADDRESSES} addresses: {} series, {} bytes",
        text.lines().filter(|l| !l.starts_with('#')).count(),
        text.len()
    );

    let mut group = c.benchmark_group("snapshot");
    group.sample_size(20);
    group.bench_function("scrape: render 10k addresses (OpenMetrics)", |b| {
        b.iter(|| black_box(metrics::render(&registry).len()));
    });
    group.bench_function("scrape: render 10k addresses (text 0.0.4)", |b| {
        b.iter(|| black_box(metrics::to_prometheus_text(&metrics::render(&registry)).len()));
    });
    group.bench_function("publish: copy the state and audit 10k addresses", |b| {
        b.iter(|| black_box(shared.publish().report.targets.len()));
    });
    group.bench_function(
        "publish, of which the history: compare 10k addresses (no change)",
        |b| {
            let mut history = History::new(app::HISTORY_IN_MEMORY);
            history.observe(&mut snapshot.report.clone(), SystemTime::now(), true);
            b.iter_batched(
                || snapshot.report.clone(),
                |mut report| black_box(history.observe(&mut report, SystemTime::now(), true).len()),
                BatchSize::LargeInput,
            );
        },
    );
    group.bench_function("publish, the part under the lock: copy the state", |b| {
        b.iter(|| black_box(shared.with_state(State::clone).targets.len()));
    });
    group.bench_function("probe result: record one under the state's lock", |b| {
        let mut n = 0;
        b.iter(|| {
            n = n % ADDRESSES + 1;
            shared.update(|s| s.record_probe(TargetId(0), address(n), result(n)));
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
