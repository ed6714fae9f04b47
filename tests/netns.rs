//! End to end through a real network: OpenSSH, dnsmasq and an iptables firewall between the
//! auditor and the servers, each in a namespace this test creates. Proves every row of the probe
//! state table and of the finding table, over IPv4 and IPv6, through `check --output json` and
//! through `/metrics` of `serve`, and that an address removed from DNS loses its series.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{Lab, Scrape, lab_allowed};
use serde_json::Value;

const HOST: &str = "sftp.vendor.test";

/// What each address is set up to be, and what the audit must say about it.
/// (ip, published by, whitelisted, state, finding)
const EXPECTED: &[(&str, &str, bool, &str, Option<&str>)] = &[
    ("192.0.2.1", "dns", true, "open", None),
    ("192.0.2.2", "dns", true, "timeout", Some("blocked")), // iptables DROP
    ("192.0.2.3", "dns", true, "refused", Some("blocked")), // REJECT --reject-with tcp-reset
    ("192.0.2.4", "dns", true, "unreachable", Some("blocked")), // REJECT --reject-with icmp-admin-prohibited
    ("192.0.2.5", "dns", true, "protocol_error", Some("blocked")), // answers HTTP, not SSH
    ("192.0.2.6", "dns", false, "open", Some("undeclared")),
    ("192.0.2.7", "static", false, "refused", Some("missing")), // closed port
    ("192.0.2.9", "none", true, "", Some("stale")),             // whitelisted, no longer published
    ("2001:db8:2::1", "dns", true, "open", None),
    ("2001:db8:2::2", "dns", true, "timeout", Some("blocked")), // ip6tables DROP
    ("2001:db8:2::3", "dns", true, "unreachable", Some("blocked")), // REJECT icmp6-adm-prohibited
];

const WHITELIST: &str = "\
allow:
  - addresses: [192.0.2.1, 192.0.2.2, 192.0.2.3, 192.0.2.4, 192.0.2.5, \"2001:db8:2::/126\"]
    ports: [22]
    comment: vendor SFTP pool
  - addresses: [192.0.2.9]
    ports: [22]
    target: vendor-sftp
    comment: decommissioned by the vendor
  - addresses: [203.0.113.0/24]
    ports: [22]
    comment: nothing publishes here
";

fn hosts_file(without: &[&str]) -> String {
    EXPECTED
        .iter()
        .filter(|(ip, by, ..)| *by == "dns" && !without.contains(ip))
        .fold(String::new(), |mut out, (ip, ..)| {
            let _ = writeln!(out, "{ip} {HOST}");
            out
        })
}

/// The chance that a client picking uniformly among `candidates` addresses, `working` of them
/// working, succeeds within `attempts`: the daemon's formula, computed the same way.
#[allow(clippy::cast_precision_loss)]
fn within(working: usize, candidates: usize, attempts: i32) -> f64 {
    1.0 - (1.0 - working as f64 / candidates as f64).powi(attempts)
}

/// `whitelist_audit_target_client_success_ratio` holds the formula's value for 1 and 3 attempts
/// (the default `client_attempts`), and no other series.
fn assert_client_odds(m: &Scrape, working: usize, candidates: usize) {
    for attempts in [1, 3] {
        assert_eq!(
            m.get(
                "whitelist_audit_target_client_success_ratio",
                &[("target", "vendor-sftp"), ("attempts", &attempts.to_string())]
            ),
            Some(within(working, candidates, attempts)),
            "{working} of {candidates} working, {attempts} attempt(s)"
        );
    }
    let series =
        m.0.keys()
            .filter(|k| k.starts_with("whitelist_audit_target_client_success_ratio{"));
    assert_eq!(series.count(), 2);
}

fn rule<'a>(dest: &'a str, action: &[&'a str]) -> Vec<&'a str> {
    [&["-d", dest, "-p", "tcp", "--dport", "22"][..], action].concat()
}

fn build_lab() -> (Lab, u32) {
    let mut lab = Lab::new();
    lab.add_server_addresses(&[
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.5",
        "192.0.2.6",
        "192.0.2.7",
        "192.0.2.53",
        "2001:db8:2::1",
        "2001:db8:2::2",
        "2001:db8:2::3",
        "2001:db8:2::53",
    ]);
    lab.start_sshd(&[
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.6",
        "2001:db8:2::1",
        "2001:db8:2::2",
        "2001:db8:2::3",
    ]);
    lab.start_not_ssh("192.0.2.5");
    let hosts = lab.write("hosts", &hosts_file(&[]));
    let dnsmasq = lab.start_dnsmasq(&["192.0.2.53", "2001:db8:2::53"], 5353, &hosts);
    lab.firewall("iptables", &rule("192.0.2.2", &["-j", "DROP"]));
    lab.firewall(
        "iptables",
        &rule("192.0.2.3", &["-j", "REJECT", "--reject-with", "tcp-reset"]),
    );
    lab.firewall(
        "iptables",
        &rule("192.0.2.4", &["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]),
    );
    lab.firewall("ip6tables", &rule("2001:db8:2::2", &["-j", "DROP"]));
    lab.firewall(
        "ip6tables",
        &rule(
            "2001:db8:2::3",
            &["-j", "REJECT", "--reject-with", "icmp6-adm-prohibited"],
        ),
    );
    lab.write("whitelist.yml", WHITELIST);
    (lab, dnsmasq)
}

fn config(interval: &str, resolver: &str) -> String {
    format!(
        "global:
  interval: {interval}
  timeout: 1500ms
  attempts: 2
  retry_delay: 100ms
  per_target_concurrency: 4
  whitelist: whitelist.yml
targets:
  - name: vendor-sftp
    host: {HOST}
    resolvers: [\"{resolver}\"]
    dns_queries: 2
    dns_retention: 0s
    static: [192.0.2.7]
"
    )
}

#[test]
fn check_and_serve_tell_every_firewall_behaviour_apart() {
    if !lab_allowed("check_and_serve_tell_every_firewall_behaviour_apart") {
        return;
    }
    let (mut lab, dnsmasq) = build_lab();
    check_reports_every_address(&lab);
    serve_exports_every_address(&mut lab);
    removed_address_loses_its_series(&lab, dnsmasq);
    dns_outage_keeps_the_last_good_set(&mut lab, dnsmasq);
}

/// `check --output json`: one sweep, every address, exit 1 because there are findings.
fn check_reports_every_address(lab: &Lab) {
    let check_config = lab.write("check.yml", &config("60s", "192.0.2.53:5353"));
    let out = lab.audit(&[
        "check",
        "--config.file",
        check_config.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "findings exit 1\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let addresses = report["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), EXPECTED.len(), "{stdout}");
    for (ip, by, whitelisted, state, finding) in EXPECTED {
        let a = addresses
            .iter()
            .find(|a| a["ip"] == *ip)
            .unwrap_or_else(|| panic!("{ip} missing:\n{stdout}"));
        assert_eq!(a["published"], *by != "none", "{ip} published");
        assert_eq!(a["whitelisted"], *whitelisted, "{ip} whitelisted");
        if !state.is_empty() {
            assert_eq!(a["probe"]["state"], *state, "{ip}: {}", a["probe"]["detail"]);
        }
        assert_eq!(a["finding"].as_str(), *finding, "{ip}");
    }
    let open = addresses.iter().find(|a| a["ip"] == "192.0.2.1").unwrap();
    assert!(
        open["probe"]["software"].as_str().unwrap().starts_with("OpenSSH_"),
        "{open}"
    );
    assert_eq!(open["probe"]["attempts"], 1);
    let dropped = addresses.iter().find(|a| a["ip"] == "192.0.2.2").unwrap();
    assert_eq!(dropped["probe"]["attempts"], 2, "a failing address uses every attempt");
    let summary = &report["summary"];
    assert_eq!(
        (summary["blocked"].as_u64(), summary["missing"].as_u64()),
        (Some(6), Some(1)),
        "{summary}"
    );
    assert_eq!(
        (summary["undeclared"].as_u64(), summary["stale"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    assert!(
        report["whitelist_entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entry"] == "203.0.113.0/24" && e["unused"] == true)
    );

    // A client resolving the name picks one of the 9 addresses DNS returns (not the static one):
    // 192.0.2.1, 192.0.2.6 and 2001:db8:2::1 are open, 6 are not.
    let odds: Vec<(u64, f64)> = report["targets"][0]["client_success"]
        .as_array()
        .unwrap_or_else(|| panic!("no client_success: {}", report["targets"]))
        .iter()
        .map(|o| (o["attempts"].as_u64().unwrap(), o["ratio"].as_f64().unwrap()))
        .collect();
    assert_eq!(odds, [(1, within(3, 9, 1)), (3, within(3, 9, 3))]);

    // The table says the same, in words.
    let out = lab.audit(&["check", "--config.file", check_config.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("no SYN-ACK within 1s 500ms"), "{table}");
    assert!(
        table.contains(
            "client: vendor-sftp: a client with 3 attempts succeeds in 70.4 % of connections (1 attempt: 33.3 %)\n"
        ),
        "{table}"
    );
    assert!(table.lines().last().unwrap().starts_with("summary: 11 addresses of 1 target: 3 open, 8 not open; findings: 9 (6 blocked, 1 missing, 1 undeclared, 1 stale)"), "{table}");
}

/// `serve`: the same states and findings on `/metrics`.
fn serve_exports_every_address(lab: &mut Lab) {
    let serve_config = lab.write("serve.yml", &config("2s", "[2001:db8:2::53]:5353"));
    lab.serve(&serve_config, "127.0.0.1:10022");
    lab.poll("http://127.0.0.1:10022/-/ready", Duration::from_secs(20), |_| true);
    let text = lab.poll("http://127.0.0.1:10022/metrics", Duration::from_secs(10), |b| {
        b.contains("whitelist_audit_ip_state")
    });
    let m = Scrape::parse(&text);
    for (ip, by, whitelisted, state, finding) in EXPECTED {
        let tip = [("target", "vendor-sftp"), ("ip", *ip), ("port", "22")];
        assert_eq!(
            m.get("whitelist_audit_ip_published", &tip[..2]),
            Some(if *by == "none" { 0.0 } else { 1.0 }),
            "{ip}\n{}",
            lab.logs()
        );
        assert_eq!(
            m.get("whitelist_audit_ip_whitelisted", &tip),
            Some(if *whitelisted { 1.0 } else { 0.0 }),
            "{ip}"
        );
        if !state.is_empty() {
            assert_eq!(
                m.get("whitelist_audit_ip_up", &tip),
                Some(if *state == "open" { 1.0 } else { 0.0 }),
                "{ip}\n{}",
                lab.logs()
            );
            for s in ["open", "refused", "timeout", "unreachable", "protocol_error"] {
                let labels = [tip[0], tip[1], tip[2], ("state", s)];
                assert_eq!(
                    m.get("whitelist_audit_ip_state", &labels),
                    Some(if s == *state { 1.0 } else { 0.0 }),
                    "{ip} {s}"
                );
            }
        }
        for f in ["blocked", "missing", "undeclared", "stale"] {
            let labels = [tip[0], tip[1], tip[2], ("finding", f)];
            assert_eq!(
                m.get("whitelist_audit_ip_finding", &labels),
                (Some(f) == *finding).then_some(1.0),
                "{ip} {f}"
            );
        }
    }
    assert!(m.0.keys().any(|k| k.starts_with("whitelist_audit_ssh_info{")
        && k.contains("ip=\"2001:db8:2::1\"")
        && k.contains("software=\"OpenSSH_")));
    assert_eq!(m.get("whitelist_audit_source_up", &[("source", "dns")]), Some(1.0));
    assert_eq!(
        m.get("whitelist_audit_source_addresses", &[("source", "dns")]),
        Some(9.0)
    );
    assert_eq!(
        m.get("whitelist_audit_source_addresses", &[("source", "static")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("whitelist_audit_target_addresses", &[("set", "published")]),
        Some(10.0)
    );
    assert_eq!(
        m.get("whitelist_audit_target_addresses", &[("set", "probed")]),
        Some(11.0)
    );
    assert_eq!(
        m.get("whitelist_audit_target_addresses", &[("set", "blocked")]),
        Some(6.0)
    );
    assert_eq!(
        m.get("whitelist_audit_target_addresses", &[("set", "stale")]),
        Some(1.0)
    );
    assert_eq!(m.get("whitelist_audit_target_addresses", &[("set", "up")]), Some(3.0));
    assert_client_odds(&m, 3, 9);
    assert_eq!(
        m.get("whitelist_audit_whitelist_entry_unused", &[("entry", "203.0.113.0/24")]),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "whitelist_audit_whitelist_entry_unused",
            &[("entry", "2001:db8:2::/126")]
        ),
        Some(0.0)
    );
    assert!(
        m.get("whitelist_audit_last_sweep_timestamp_seconds", &[])
            .is_some_and(|t| t > 1.7e9)
    );
}

/// 192.0.2.6 leaves DNS: every one of its series disappears.
fn removed_address_loses_its_series(lab: &Lab, dnsmasq: u32) {
    lab.write("hosts", &hosts_file(&["192.0.2.6"]));
    lab.signal(dnsmasq, "HUP");
    let text = lab.poll("http://127.0.0.1:10022/metrics", Duration::from_secs(20), |b| {
        !b.contains("ip=\"192.0.2.6\"")
    });
    let m = Scrape::parse(&text);
    assert!(m.series_of_ip("192.0.2.6").is_empty());
    assert_eq!(
        m.get("whitelist_audit_source_addresses", &[("source", "dns")]),
        Some(8.0)
    );
    assert_eq!(
        m.get("whitelist_audit_ip_up", &[("ip", "192.0.2.1")]),
        Some(1.0),
        "the others stay"
    );
    // Clients no longer get the open 192.0.2.6: 2 of the 8 addresses DNS returns work.
    assert_client_odds(&m, 2, 8);
}

/// DNS goes away: the source says so, and the last good set stays in force.
fn dns_outage_keeps_the_last_good_set(lab: &mut Lab, dnsmasq: u32) {
    lab.kill(dnsmasq);
    let text = lab.poll("http://127.0.0.1:10022/metrics", Duration::from_secs(30), |b| {
        Scrape::parse(b).get("whitelist_audit_source_up", &[("source", "dns")]) == Some(0.0)
    });
    let m = Scrape::parse(&text);
    assert_eq!(
        m.get("whitelist_audit_source_addresses", &[("source", "dns")]),
        Some(8.0),
        "no set is emptied by a failure"
    );
    assert_eq!(
        m.get("whitelist_audit_ip_published", &[("ip", "2001:db8:2::1")]),
        Some(1.0)
    );
}

#[test]
fn a_pool_too_large_for_udp_is_resolved_over_tcp() {
    if !lab_allowed("a_pool_too_large_for_udp_is_resolved_over_tcp") {
        return;
    }
    let mut lab = Lab::new();
    lab.add_server_addresses(&["192.0.2.53"]);
    // 150 A records: far beyond a 512-byte UDP answer, so the resolver must retry over TCP.
    let hosts = (1..=150).fold(String::new(), |mut out, i| {
        let _ = writeln!(out, "198.51.100.{i} big.vendor.test");
        out
    });
    let hosts = lab.write("hosts", &hosts);
    lab.start_dnsmasq(&["192.0.2.53"], 53, &hosts);
    // Probing those addresses from the client is pointless here: they are on the client's own
    // link, so use a port nothing listens on and `tcp` checks, and look only at the published set.
    let config = lab.write(
        "big.yml",
        "global:\n  timeout: 2s\n  attempts: 1\n  per_target_concurrency: 16\ntargets:\n  - name: big\n    host: big.vendor.test\n    port: 2\n    check: tcp\n    resolvers: [192.0.2.53]\n    address_families: [ipv4]\n    dns_queries: 1\n",
    );
    let out = lab.audit(&["check", "--config.file", config.to_str().unwrap(), "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let addresses = report["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 150, "{}", report["targets"]);
    assert_eq!(report["targets"][0]["sources"][0]["up"], true);
}
