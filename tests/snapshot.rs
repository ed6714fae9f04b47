//! Scrapes and probes never wait for each other: a scrape renders the last published snapshot and
//! never takes the state's lock; recording a probe result never takes the snapshot's. Shown at
//! 10,000 addresses with a scripted network (no packet leaves the process), by handshakes that
//! would deadlock (and time out) if either side waited for the other, and by scraping in a loop
//! while a sweep runs.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use whitelist_audit::app::{self, Limits, Shared};
use whitelist_audit::config::{self, Config};
use whitelist_audit::core::outcome::{Attempt, ProbeResult, ProbeState};
use whitelist_audit::core::state::TargetId;
use whitelist_audit::metrics;
use whitelist_audit::probe::Network;

const ADDRESSES: u32 = 10_000;
/// Long enough never to be reached unless one side really waits for the other.
const DEADLOCK: Duration = Duration::from_secs(60);

/// 10,000 addresses of the IPv6 documentation prefix: never contacted, the network is scripted.
fn address(n: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(n)))
}

fn config() -> Arc<Config> {
    let list: Vec<String> = (1..=ADDRESSES).map(|n| format!("\"{}\"", address(n))).collect();
    let yaml = format!(
        "global: {{attempts: 1, timeout: 5s, concurrency: 256, per_target_concurrency: 256}}\ntargets:\n  - name: pool\n    check: tcp\n    static: [{}]\n",
        list.join(", ")
    );
    let path = Path::new("snapshot-test.yml");
    let raw = config::parse_yaml(path, &yaml).unwrap();
    Arc::new(config::build(path, &raw).unwrap())
}

/// Every connect succeeds after a millisecond.
struct Answering;

impl Network for Answering {
    type Stream = tokio::io::DuplexStream;
    async fn connect(&self, _: SocketAddr) -> std::io::Result<Self::Stream> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(tokio::io::duplex(64).0)
    }
}

fn open_result() -> ProbeResult {
    ProbeResult::from_attempt(
        Attempt::ended(ProbeState::Open, Duration::from_millis(1), "scripted"),
        1,
        SystemTime::now(),
    )
}

fn count(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn a_scrape_completes_while_the_state_lock_is_held() {
    let shared = Shared::new(config());
    for n in 1..=ADDRESSES {
        shared.update(|s| s.record_probe(TargetId(0), address(n), open_result()));
    }
    shared.publish();
    let registry = metrics::registry(shared.subscribe());
    let (scraped, scrape_done) = mpsc::channel();
    let (locked, lock_held) = mpsc::channel();
    let holder = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            // The probes' side holds the lock until the scrape has finished.
            shared.update(|_| {
                locked.send(()).unwrap();
                scrape_done.recv_timeout(DEADLOCK)
            })
        })
    };
    lock_held.recv().unwrap();
    let text = metrics::render(&registry);
    scraped.send(()).unwrap();
    assert!(holder.join().unwrap().is_ok(), "the scrape waited for the state's lock");
    assert_eq!(count(&text, "whitelist_audit_ip_up{"), ADDRESSES as usize);
}

#[test]
fn a_probe_result_is_recorded_while_a_snapshot_is_being_read() {
    let shared = Shared::new(config());
    shared.publish();
    let snapshots = shared.subscribe();
    let (recorded, record_done) = mpsc::channel();
    // A reader holds the snapshot channel (longer than a scrape does: it clones an Arc and lets go).
    let reading = snapshots.borrow();
    let prober = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            for n in 1..=ADDRESSES {
                shared.update(|s| s.record_probe(TargetId(0), address(n), open_result()));
            }
            recorded.send(()).unwrap();
        })
    };
    let outcome = record_done.recv_timeout(DEADLOCK);
    drop(reading);
    prober.join().unwrap();
    assert!(
        outcome.is_ok(),
        "recording a probe result waited for a reader of the snapshot"
    );
    let results = shared.with_state(|s| s.targets[0].results.len());
    assert_eq!(results, ADDRESSES as usize);
}

#[test]
fn scrapes_in_a_loop_during_a_sweep_each_see_one_whole_moment() {
    let config = config();
    let shared = Shared::new(Arc::clone(&config));
    let registry = metrics::registry(shared.subscribe());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let publisher = runtime.spawn(Arc::clone(&shared).publish_changes());
    let sweep = runtime.spawn(app::sweep(
        Arc::clone(&shared),
        Arc::new(Answering),
        Limits::new(&config),
        None,
        true,
    ));
    let mut scrapes = Vec::new();
    let deadline = std::time::Instant::now() + DEADLOCK;
    while !sweep.is_finished() && std::time::Instant::now() < deadline && scrapes.len() < 10_000 {
        scrapes.push(metrics::render(&registry));
    }
    runtime.block_on(sweep).unwrap();
    let last = metrics::render(&registry);
    publisher.abort();
    assert!(!scrapes.is_empty());
    let mut seen = 0;
    for text in &scrapes {
        let up = count(text, "whitelist_audit_ip_up{");
        // One moment per scrape: every probed address has its six state series, no more, no less.
        assert_eq!(count(text, "whitelist_audit_ip_state{"), 6 * up);
        assert!(up >= seen, "a later scrape never shows an older moment ({up} < {seen})");
        seen = up;
        assert!(text.ends_with("# EOF\n"), "every scrape is whole");
    }
    assert_eq!(count(&last, "whitelist_audit_ip_up{"), ADDRESSES as usize);
    assert!(last.contains("whitelist_audit_target_addresses{target=\"pool\",set=\"up\"} 10000"));
}
