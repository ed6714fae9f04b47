//! Published lists against a real HTTP server on loopback, scripted per test: formats and
//! selectors on real-world shapes, conditional requests, every kind of failure keeping the last
//! good set, persistence across a restart, a corrupt state file. Refreshes here fetch only; the
//! one test that also probes publishes loopback addresses alone.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use whitelist_audit::app::{self, Shared};
use whitelist_audit::config::{self, Config, PublishedSource};
use whitelist_audit::core::finding::Finding;
use whitelist_audit::core::list;
use whitelist_audit::core::outcome::ProbeState;
use whitelist_audit::core::source::{Reason, SourceKind};
use whitelist_audit::discovery::{Discovery, published};
use whitelist_audit::probe::Os;

// ------------------------------------------------------------------ helpers

fn tempdir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wla-published-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(dir: &Path, yaml: &str) -> Config {
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn nets(list: &[&str]) -> BTreeSet<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A source as configured, for the pure functions.
fn source(dir: &Path, entry: &str) -> PublishedSource {
    let config = load(
        dir,
        &format!("targets:\n  - name: t\n    published:\n      - {entry}\n"),
    );
    config.targets[0].published[0].clone()
}

/// The set a fixture yields through `source`.
fn parse_fixture(source: &PublishedSource, name: &str) -> BTreeSet<IpNet> {
    list::parse(source, &fixture(name), None).unwrap().into_iter().collect()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/published/{name}")).unwrap()
}

// ------------------------------------------------------------------ pure: formats and policy

#[test]
fn real_world_shapes_parse_with_their_selectors() {
    let dir = tempdir("shapes");
    let aws = source(
        &dir,
        "{url: \"http://127.0.0.1:9/ip-ranges.json\", format: json, select: '$.prefixes[?@.service == \"SFTP\"].ip_prefix'}",
    );
    let parsed = parse_fixture(&aws, "aws-ip-ranges.json");
    assert_eq!(parsed, nets(&["192.0.2.0/28", "203.0.113.7/32", "198.18.0.0/16"]));

    let aws6 = source(
        &dir,
        "{url: \"http://127.0.0.1:9/ip-ranges.json\", format: json, select: '$.ipv6_prefixes[?@.service == \"SFTP\"].ipv6_prefix'}",
    );
    let parsed = parse_fixture(&aws6, "aws-ip-ranges.json");
    assert_eq!(parsed, nets(&["2001:db8:5f7::/120"]));

    let github = source(
        &dir,
        "{url: \"http://127.0.0.1:9/meta\", format: json, select: '$.git[*]'}",
    );
    let parsed = parse_fixture(&github, "github-meta.json");
    assert_eq!(
        parsed,
        nets(&[
            "192.0.2.128/26",
            "198.51.100.10/32",
            "203.0.113.240/28",
            "2001:db8:ab::/48"
        ])
    );

    let text = source(&dir, "{url: \"http://127.0.0.1:9/ips.txt\"}");
    let parsed = parse_fixture(&text, "vendor-sftp.txt");
    assert_eq!(
        parsed,
        nets(&[
            "192.0.2.10/32",
            "192.0.2.11/32",
            "198.51.100.32/30",
            "2001:db8:5f7::10/128",
            "2001:db8:5f7::11/128"
        ])
    );

    let yaml = source(&dir, "{path: list.yml, format: yaml, select: '$.sftp[*]'}");
    let parsed = parse_fixture(&yaml, "vendor.yml");
    assert_eq!(
        parsed,
        nets(&["192.0.2.20/32", "192.0.2.21/32", "2001:db8:5f7::20/128"])
    );
}

#[test]
fn garbage_is_a_parse_failure_that_says_where() {
    let dir = tempdir("garbage");
    let text = source(&dir, "{url: \"http://127.0.0.1:9/ips.txt\"}");
    let failure = list::parse(&text, b"192.0.2.1\nsftp.example.com\n", None).unwrap_err();
    assert_eq!(
        (failure.reason, failure.message.as_str()),
        (Reason::Parse, "line 2: `sftp.example.com` is not an address or CIDR")
    );
    let html = list::parse(
        &text,
        b"<!DOCTYPE html>\n<html><body>Maintenance</body></html>",
        Some("text/html"),
    )
    .unwrap_err();
    assert_eq!(html.reason, Reason::Parse);
    assert!(html.message.contains("sent an HTML page"), "{}", html.message);

    let json = source(
        &dir,
        "{url: \"http://127.0.0.1:9/x.json\", format: json, select: '$.prefixes[*]'}",
    );
    let wrong = list::parse(&json, br#"{"prefixes": [{"ip_prefix": "192.0.2.0/24"}]}"#, None).unwrap_err();
    assert!(wrong.message.starts_with("`select` matched {"), "{}", wrong.message);
    assert_eq!(
        list::parse(&json, b"{\"prefixes\": [", None).unwrap_err().reason,
        Reason::Parse
    );
}

#[test]
fn acceptance_refuses_everything_too_many_and_a_sudden_nothing() {
    let dir = tempdir("accept");
    let list = source(&dir, "{url: \"http://127.0.0.1:9/ips.txt\", max_addresses: 600}");
    let prefixes = |l: &[&str]| l.iter().map(|s| s.parse::<IpNet>().unwrap()).collect::<Vec<_>>();
    assert_eq!(
        list::accept(&list, 256, prefixes(&["0.0.0.0/0"]), 0)
            .unwrap_err()
            .reason,
        Reason::TooBroad
    );
    assert_eq!(
        list::accept(&list, 256, prefixes(&["::/0"]), 0).unwrap_err().reason,
        Reason::TooBroad
    );
    // Three /24s are 768 addresses to probe: over 600. A /16 is audited, not probed: it counts one.
    assert_eq!(
        list::accept(
            &list,
            256,
            prefixes(&["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]),
            0
        )
        .unwrap_err()
        .reason,
        Reason::TooMany
    );
    assert_eq!(
        list::accept(&list, 256, prefixes(&["192.0.2.0/24", "198.18.0.0/16"]), 0)
            .unwrap()
            .len(),
        2
    );
    let empty = list::accept(&list, 256, Vec::new(), 5).unwrap_err();
    assert_eq!(empty.reason, Reason::Empty);
    assert!(empty.message.contains("the last good one had 5"), "{}", empty.message);
    let allowed = source(&dir, "{url: \"http://127.0.0.1:9/ips.txt\", allow_empty: true}");
    assert!(list::accept(&allowed, 256, Vec::new(), 5).unwrap().is_empty());
}

#[test]
fn bad_published_entries_are_refused_at_load() {
    let dir = tempdir("bad");
    let cases = [
        (
            "{url: \"ftp://vendor.example/ips\"}",
            "targets[0].published[0].url: unsupported scheme `ftp`: use http, https or file",
        ),
        (
            "{url: \"https://v.example/x\", path: x.txt}",
            "targets[0].published[0].path: set `url` or `path`, not both",
        ),
        (
            "{format: text}",
            "targets[0].published[0]: a published list needs `url` (http, https, file) or `path`",
        ),
        (
            "{url: \"https://v.example/x\", select: '$.a'}",
            "targets[0].published[0].select: `select` applies to json and yaml lists, not text",
        ),
        (
            "{url: \"https://v.example/x\", format: json, select: '$.a[?'}",
            "targets[0].published[0].select: invalid JSONPath",
        ),
        (
            "{url: \"https://v.example/x\", headers: {Authorization: \"Bearer ${WLA_UNSET_TOKEN}\"}}",
            "targets[0].published[0].headers.Authorization: environment variable `WLA_UNSET_TOKEN` is not set",
        ),
        (
            "{url: \"https://v.example/x\", refresh: 0s}",
            "targets[0].published[0].refresh: must be greater than zero",
        ),
        (
            "{url: \"https://v.example/x\", format: csv}",
            "unknown variant `csv`, expected one of text, json, yaml",
        ),
    ];
    for (entry, expected) in cases {
        let path = dir.join("bad.yml");
        std::fs::write(
            &path,
            format!("targets:\n  - name: t\n    published:\n      - {entry}\n"),
        )
        .unwrap();
        let err = config::load(&path).unwrap_err().summary();
        assert!(
            err.contains(expected),
            "{entry}:\n  got      {err}\n  expected {expected}"
        );
        assert!(
            err.starts_with(&format!("{}:4:", path.display())),
            "names the line: {err}"
        );
    }
}

#[test]
fn secrets_stay_out_of_labels_and_debug_output() {
    let dir = tempdir("secrets");
    let config = {
        let path = dir.join("c.yml");
        std::fs::write(
            &path,
            "targets:\n  - name: t\n    published:\n      - {url: \"https://user:hunter2@vendor.example/ips.txt\", headers: {Authorization: \"Bearer ${PATH}\"}}\n",
        )
        .unwrap();
        config::load(&path).unwrap()
    };
    let list = &config.targets[0].published[0];
    assert_eq!(list.label, "https://vendor.example/ips.txt");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "the URL's password is not shown: {shown}");
    assert!(
        !shown.contains(&std::env::var("PATH").unwrap()),
        "header values are redacted"
    );
    assert!(shown.contains("authorization: <redacted>"));
}

// ------------------------------------------------------------------ a scripted vendor site

/// What the vendor's site does now.
#[derive(Clone)]
enum Mode {
    Serve(&'static str),
    Status(u16),
    Html,
    Slow,
    Huge,
}

#[derive(Clone)]
struct Site {
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
}

async fn list(State(site): State<Site>, headers: HeaderMap) -> Response {
    site.requests.fetch_add(1, Ordering::SeqCst);
    let mode = site.mode.lock().unwrap().clone();
    match mode {
        Mode::Serve(body) => {
            let etag = format!(
                "\"{:x}\"",
                body.len() * 31 + body.bytes().map(usize::from).sum::<usize>()
            );
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.to_str().unwrap() == etag)
            {
                site.not_modified.fetch_add(1, Ordering::SeqCst);
                return StatusCode::NOT_MODIFIED.into_response();
            }
            ([(header::ETAG, etag)], body).into_response()
        }
        Mode::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Mode::Html => (
            [(header::CONTENT_TYPE, "text/html")],
            "<!DOCTYPE html><html><body><h1>We'll be back soon</h1></body></html>",
        )
            .into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "192.0.2.1\n".into_response()
        }
        Mode::Huge => "192.0.2.1\n".repeat(200_000).into_response(),
    }
}

async fn redirect_loop() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/loop")]).into_response()
}

async fn vendor_site() -> (SocketAddr, Site) {
    let site = Site {
        mode: Arc::new(Mutex::new(Mode::Serve("192.0.2.10\n192.0.2.11\n198.51.100.32/30\n"))),
        requests: Arc::new(AtomicUsize::new(0)),
        not_modified: Arc::new(AtomicUsize::new(0)),
    };
    let router = Router::new()
        .route("/ips.txt", get(list))
        .route("/loop", get(redirect_loop))
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, site)
}

fn list_config(dir: &Path, site: SocketAddr, extra: &str) -> Config {
    load(
        dir,
        &format!(
            "global:\n  state_dir: state\ntargets:\n  - name: vendor\n    published:\n      - url: http://{site}/ips.txt\n        timeout: 500ms\n        max_size: 1048576\n{extra}"
        ),
    )
}

/// The list's set, status and failure counts, as the report shows them.
fn list_view(shared: &Shared, list: usize) -> (BTreeSet<IpNet>, Option<bool>, Vec<(String, u64)>) {
    shared.with_state(|s| {
        let prefixes = s.targets[0]
            .sources
            .iter()
            .filter_map(|source| source.prefixes())
            .nth(list)
            .unwrap()
            .clone();
        let report = s.report();
        let source = report.targets[0]
            .sources
            .iter()
            .filter(|s| s.source == SourceKind::Published)
            .nth(list)
            .unwrap()
            .clone();
        let failures = source
            .failures
            .iter()
            .map(|(reason, n)| (reason.as_label().to_string(), *n))
            .collect();
        (prefixes, source.up, failures)
    })
}

fn set(mode: &Site, to: Mode) {
    *mode.mode.lock().unwrap() = to;
}

#[tokio::test]
async fn a_list_survives_every_kind_of_failure_with_its_last_good_set() {
    let dir = tempdir("failures");
    let (address, site) = vendor_site().await;
    let config = Arc::new(list_config(&dir, address, ""));
    let shared = Shared::new(Arc::clone(&config));
    let client = Discovery::new();
    let good = nets(&["192.0.2.10/32", "192.0.2.11/32", "198.51.100.32/30"]);

    app::refresh(&shared, &client, false).await;
    let (prefixes, up, failures) = list_view(&shared, 0);
    assert_eq!((prefixes, up, failures.len()), (good.clone(), Some(true), 0));
    let published = shared.with_state(|s| s.targets[0].published.len());
    assert_eq!(published, 6, "two addresses and the four of the /30");

    // Unchanged: a conditional request answered 304, nothing re-read.
    app::refresh(&shared, &client, false).await;
    assert_eq!(site.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(list_view(&shared, 0).0, good);

    let cases = [
        (Mode::Status(500), "http_status"),
        (Mode::Html, "parse"),
        (Mode::Slow, "timeout"),
        (Mode::Huge, "too_large"),
        (Mode::Serve("# maintenance: list temporarily empty\n"), "empty"),
        (Mode::Serve("0.0.0.0/0\n"), "too_broad"),
        (Mode::Serve("192.0.2.1\nnot-an-address\n"), "parse"),
    ];
    for (count, (mode, reason)) in cases.into_iter().enumerate() {
        set(&site, mode);
        app::refresh(&shared, &client, false).await;
        let (prefixes, up, failures) = list_view(&shared, 0);
        assert_eq!(prefixes, good, "{reason}: the last good set stays in force");
        assert_eq!(up, Some(false), "{reason}");
        assert!(
            failures.iter().any(|(r, _)| r == reason),
            "{reason} not counted: {failures:?}"
        );
        assert_eq!(failures.iter().map(|(_, n)| n).sum::<u64>(), count as u64 + 1);
        let published = shared.with_state(|s| s.targets[0].published.len());
        assert_eq!(published, 6, "{reason}: nothing is silently emptied");
    }

    // The vendor publishes a new list: it replaces the old one, and the change is counted.
    set(&site, Mode::Serve("192.0.2.10\n192.0.2.12\n"));
    app::refresh(&shared, &client, false).await;
    let (prefixes, up, _) = list_view(&shared, 0);
    assert_eq!((prefixes, up), (nets(&["192.0.2.10/32", "192.0.2.12/32"]), Some(true)));
    let (added, removed) = shared.with_state(|s| (s.targets[0].added_total, s.targets[0].removed_total));
    assert_eq!(
        (added, removed),
        (6 + 1, 5),
        "first 6 added; then .12 added, .11 and the /30's four removed"
    );
}

#[tokio::test]
async fn redirects_are_bounded() {
    let dir = tempdir("redirect");
    let (address, _site) = vendor_site().await;
    let config = Arc::new(load(
        &dir,
        &format!(
            "global:\n  state_dir: state\ntargets:\n  - name: v\n    published:\n      - url: http://{address}/loop\n"
        ),
    ));
    let shared = Shared::new(config);
    app::refresh(&shared, &Discovery::new(), false).await;
    let (_, up, failures) = list_view(&shared, 0);
    assert_eq!(up, Some(false));
    assert_eq!(failures, vec![("redirect".to_string(), 1)]);
}

#[tokio::test]
async fn a_restart_while_the_vendor_is_down_keeps_the_last_good_set() {
    let dir = tempdir("restart");
    let (address, site) = vendor_site().await;
    let config = Arc::new(list_config(&dir, address, ""));
    let first = Shared::new(Arc::clone(&config));
    app::refresh(&first, &Discovery::new(), false).await;
    let good = list_view(&first, 0).0;
    let file = published::state_file(
        &config.global.state_dir,
        "vendor",
        &config.targets[0].published[0].label,
    );
    assert!(file.exists(), "the last good set is saved: {}", file.display());
    drop(first);

    // Restart: the site is down.
    set(&site, Mode::Status(503));
    let second = Shared::new(Arc::clone(&config));
    app::restore(&second, &Discovery::new());
    assert_eq!(list_view(&second, 0).0, good, "restored before any refresh");
    app::refresh(&second, &Discovery::new(), false).await;
    let (prefixes, up, failures) = list_view(&second, 0);
    assert_eq!((prefixes, up), (good, Some(false)));
    assert_eq!(failures, vec![("http_status".to_string(), 1)]);
    let last_success = second.with_state(|s| s.report().targets[0].sources[0].last_success);
    assert!(last_success.is_some(), "the restored set keeps the time it was fetched");

    // A corrupt state file is reported and ignored, never fatal.
    std::fs::write(&file, b"{\"version\": 1, \"prefixes\": [\"not a pre").unwrap();
    let third = Shared::new(Arc::clone(&config));
    app::restore(&third, &Discovery::new());
    let (prefixes, _, failures) = list_view(&third, 0);
    assert!(prefixes.is_empty());
    assert_eq!(failures, vec![("state_corrupt".to_string(), 1)]);
    // The vendor is back: the list recovers, and a good state file replaces the corrupt one.
    set(&site, Mode::Serve("192.0.2.10\n"));
    app::refresh(&third, &Discovery::new(), false).await;
    assert_eq!(list_view(&third, 0).0, nets(&["192.0.2.10/32"]));
    assert!(published::load(&file).unwrap().is_some());
}

#[tokio::test]
async fn a_target_audited_from_its_published_list_alone() {
    let dir = tempdir("alone");
    // Loopback only: these addresses are probed. 127.0.0.40/30 is expanded; the /16 is not.
    let site = {
        let router = Router::new().route(
            "/sftp.json",
            get(|| async { r#"{"sftp": {"v4": ["127.0.0.40/30", "127.1.0.0/16"], "v6": ["::1"]}}"# }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        address
    };
    std::fs::write(
        dir.join("wl.yml"),
        "allow:\n  - addresses: [127.0.0.40/31, \"::1\", 127.1.0.0/17]\n    ports: [1]\n",
    )
    .unwrap();
    let config = load(
        &dir,
        &format!(
            "global:\n  timeout: 1s\n  attempts: 1\n  whitelist: wl.yml\n  state_dir: state\ntargets:\n  - name: vendor\n    port: 1\n    allow_local_addresses: true\n    published:\n      - url: http://{site}/sftp.json\n        format: json\n        select: '$.sftp.*[*]'\n"
        ),
    );
    let snapshot = app::check_once(config, Arc::new(Os), None, None).await;
    let target = &snapshot.report.targets[0];
    let ips: Vec<String> = target.addresses.iter().map(|a| a.ip.to_string()).collect();
    assert_eq!(ips, ["127.0.0.40", "127.0.0.41", "127.0.0.42", "127.0.0.43", "::1"]);
    for address in &target.addresses {
        assert_eq!(
            address.probe.as_ref().unwrap().state,
            ProbeState::Refused,
            "port 1 is closed"
        );
    }
    let finding = |ip: &str| {
        target
            .addresses
            .iter()
            .find(|a| a.ip.to_string() == ip)
            .unwrap()
            .finding
    };
    assert_eq!(finding("127.0.0.41"), Some(Finding::Blocked));
    assert_eq!(
        finding("127.0.0.42"),
        Some(Finding::Missing),
        "the uncovered half of the /30"
    );
    let big = target
        .prefixes
        .iter()
        .find(|p| p.prefix.to_string() == "127.1.0.0/16")
        .unwrap();
    assert!(!big.probed, "a /16 is audited, not probed");
    assert_eq!(big.uncovered, vec!["127.1.128.0/17".parse::<IpNet>().unwrap()]);

    // The same on /metrics.
    let shared = Shared::new(Arc::new(load(
        &dir,
        &std::fs::read_to_string(dir.join("config.yml")).unwrap(),
    )));
    app::refresh(&shared, &Discovery::new(), false).await;
    let text = whitelist_audit::metrics::render(&whitelist_audit::metrics::registry(shared.subscribe()));
    let url = format!("http://{site}/sftp.json");
    assert!(
        text.contains(&format!(
            "whitelist_audit_source_up{{target=\"vendor\",source=\"published\",url=\"{url}\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "whitelist_audit_source_addresses{{target=\"vendor\",source=\"published\",url=\"{url}\"}} 6"
        )),
        "{text}"
    );
    assert!(
        text.contains("whitelist_audit_prefix_unprobed{target=\"vendor\",prefix=\"127.1.0.0/16\"} 1"),
        "{text}"
    );
    assert!(text.contains("whitelist_audit_prefix_uncovered{target=\"vendor\",prefix=\"127.1.0.0/16\",uncovered=\"127.1.128.0/17\",port=\"1\"} 1"), "{text}");
    assert!(
        text.contains("whitelist_audit_published_changes_total{target=\"vendor\",change=\"added\"} 6"),
        "{text}"
    );
}

#[tokio::test]
async fn each_format_over_each_transport() {
    let dir = tempdir("transports");
    let site = {
        let router = Router::new().route(
            "/ips.yml",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/yaml")],
                    "sftp:\n  - 192.0.2.20\n  - \"2001:db8:5f7::20\"\n",
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        address
    };
    std::fs::write(dir.join("synced.txt"), "198.51.100.7\n").unwrap();
    std::fs::write(dir.join("meta.json"), fixture("github-meta.json")).unwrap();
    let config = load(
        &dir,
        &format!(
            "global:\n  state_dir: state\ntargets:\n  - name: v\n    published:\n      - {{url: \"http://{site}/ips.yml\", format: yaml, select: '$.sftp[*]'}}\n      - {{url: \"file://{}\"}}\n      - {{path: meta.json, format: json, select: '$.web[*]'}}\n",
            dir.join("synced.txt").display()
        ),
    );
    let shared = Shared::new(Arc::new(config));
    app::refresh(&shared, &Discovery::new(), false).await;
    assert_eq!(
        list_view(&shared, 0).0,
        nets(&["192.0.2.20/32", "2001:db8:5f7::20/128"])
    );
    assert_eq!(list_view(&shared, 1).0, nets(&["198.51.100.7/32"]));
    assert_eq!(list_view(&shared, 2).0, nets(&["192.0.2.128/26", "198.51.100.10/32"]));
    for list in 0..3 {
        assert_eq!(list_view(&shared, list).1, Some(true), "list {list}");
    }
    // The published set is their union, with the /26 expanded for probing.
    let published = shared.with_state(|s| s.targets[0].published.len());
    assert_eq!(published, 2 + 1 + 64 + 1);
}

#[test]
fn check_shows_prefixes_and_exits_1_for_an_uncovered_part() {
    let dir = tempdir("check-table");
    // Loopback only: the /31 is probed (port 1: refused); the /16 is audited, not probed.
    std::fs::write(dir.join("list.txt"), "127.0.0.50/31\n127.2.0.0/16\n").unwrap();
    std::fs::write(
        dir.join("wl.yml"),
        "allow:\n  - addresses: [127.0.0.50/31, 127.2.0.0/17]\n    ports: [1]\n",
    )
    .unwrap();
    let path = dir.join("c.yml");
    std::fs::write(
        &path,
        "global: {timeout: 1s, attempts: 1, whitelist: wl.yml, state_dir: state}\ntargets:\n  - name: vendor\n    port: 1\n    allow_local_addresses: true\n    published:\n      - path: list.txt\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_whitelist-audit"))
        .args(["check", "--config.file", path.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("prefix: vendor 127.2.0.0/16 (audited, not probed): not whitelisted: 127.2.128.0/17"),
        "{table}"
    );
    assert!(
        table.contains("; prefixes: 1 audited without probing, 1 part(s) not whitelisted"),
        "{table}"
    );
    assert!(
        dir.join("state").read_dir().unwrap().count() == 1,
        "check saves the last good set too"
    );
}
