//! Raw-packet diagnosis end to end: where a connection breaks, told by who answers it. A chain of
//! namespaces this test creates (client -- router A -- router B, the firewall -- server) with real
//! forwarding and real iptables, ip6tables and nft rules on router B; over IPv4 and IPv6:
//! - a DROP at B: a TCP traceroute names B as the last hop that answers (Linux checks the TTL
//!   before the FORWARD filter, so B still answers time-exceeded), and A once B's own
//!   time-exceeded messages are dropped in its OUTPUT chain;
//! - REJECT with ICMP admin-prohibited and port-unreachable at B: rejected by B, of that kind;
//! - REJECT with tcp-reset at B: a reset one hop nearer than the server's SYN-ACKs, a middlebox;
//!   a closed port on the server itself resets from the server's distance, and is not one;
//! - without `CAP_NET_RAW`: the same verdicts, no diagnosis, a log line and a metric that say so.
//!
//! `chain_lab_answers_as_the_diagnosis_expects` proves the lab's premises (who answers, with which
//! TTL) with the kernel's TCP and raw sockets of its own, independently of whitelist-audit.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{Lab, Scrape, lab_allowed, tools_allowed};
use serde_json::{Value, json};

/// One IP family's addresses and rules.
struct Family {
    /// OpenSSH listens: open, the baseline whose SYN-ACK TTL a reset is compared with.
    open: &'static str,
    /// DROP at router B.
    dropped: &'static str,
    /// REJECT with ICMP admin-prohibited at router B.
    admin: &'static str,
    /// REJECT with ICMP port-unreachable at router B.
    port_unreachable: &'static str,
    /// REJECT with tcp-reset at router B.
    middlebox: &'static str,
    /// On the server, nothing listening: the server itself resets.
    closed: &'static str,
    /// Router A's address towards the client: hop 1.
    router_a: &'static str,
    /// Router B's address towards router A: hop 2, the source of its ICMP.
    router_b: &'static str,
    iptables: &'static str,
    /// The match of router B's own time-exceeded messages.
    time_exceeded: [&'static str; 4],
    /// The ICMP type of time-exceeded, and of destination-unreachable with the codes of
    /// admin-prohibited and port-unreachable, as the wire carries them.
    icmp: IcmpCodes,
}

struct IcmpCodes {
    time_exceeded: u8,
    unreachable: u8,
    admin_prohibited: u8,
    port_unreachable: u8,
}

const V4: Family = Family {
    open: "192.0.2.10",
    dropped: "192.0.2.11",
    admin: "192.0.2.12",
    port_unreachable: "192.0.2.13",
    middlebox: "192.0.2.14",
    closed: "192.0.2.15",
    router_a: "198.51.100.1",
    router_b: "203.0.113.2",
    iptables: "iptables",
    time_exceeded: ["-p", "icmp", "--icmp-type", "time-exceeded"],
    icmp: IcmpCodes {
        time_exceeded: 11,
        unreachable: 3,
        admin_prohibited: 13,
        port_unreachable: 3,
    },
};

const V6: Family = Family {
    open: "2001:db8:2::10",
    dropped: "2001:db8:2::11",
    admin: "2001:db8:2::12",
    port_unreachable: "2001:db8:2::13",
    middlebox: "2001:db8:2::14",
    closed: "2001:db8:2::15",
    router_a: "2001:db8:1::1",
    router_b: "2001:db8:3::2",
    iptables: "ip6tables",
    time_exceeded: ["-p", "icmpv6", "--icmpv6-type", "time-exceeded"],
    icmp: IcmpCodes {
        time_exceeded: 3,
        unreachable: 1,
        admin_prohibited: 1,
        port_unreachable: 4,
    },
};

/// Routers start packets with TTL 64 (Linux); each router on the way takes one.
const TTL_FROM_B: u64 = 63;
const TTL_FROM_SERVER: u64 = 62;
/// Beyond router B only silence: a trace needs no more hops than these to show it.
const MAX_HOPS: u32 = 6;
const METRICS: &str = "http://127.0.0.1:10022/metrics";

impl Family {
    fn addresses(&self) -> [&'static str; 6] {
        [
            self.open,
            self.dropped,
            self.admin,
            self.port_unreachable,
            self.middlebox,
            self.closed,
        ]
    }

    /// `-d ADDRESS -p tcp --dport 22` and then `action`.
    fn rule<'a>(address: &'a str, action: &[&'a str]) -> Vec<&'a str> {
        [&["-d", address, "-p", "tcp", "--dport", "22"][..], action].concat()
    }

    /// Router B's rules for this family. The port-unreachable reject of IPv4 is an nft rule (in
    /// a table of its own beside iptables' ones: both hooks see the packet).
    fn add_rules(&self, lab: &Lab) {
        let t = self.iptables;
        lab.firewall(t, &Self::rule(self.dropped, &["-j", "DROP"]));
        let (admin, port) = if t == "iptables" {
            ("icmp-admin-prohibited", "")
        } else {
            ("icmp6-adm-prohibited", "icmp6-port-unreachable")
        };
        lab.firewall(t, &Self::rule(self.admin, &["-j", "REJECT", "--reject-with", admin]));
        if port.is_empty() {
            lab.nft("add table ip lab");
            lab.nft("add chain ip lab forward { type filter hook forward priority 0; policy accept; }");
            lab.nft(&format!(
                "add rule ip lab forward ip daddr {} tcp dport 22 reject with icmp type port-unreachable",
                self.port_unreachable
            ));
        } else {
            lab.firewall(
                t,
                &Self::rule(self.port_unreachable, &["-j", "REJECT", "--reject-with", port]),
            );
        }
        lab.firewall(
            t,
            &Self::rule(self.middlebox, &["-j", "REJECT", "--reject-with", "tcp-reset"]),
        );
    }

    /// Drops router B's own time-exceeded messages: the trace must then stop at router A.
    fn silence_router_b(&self, lab: &Lab) {
        lab.firewall_chain(
            self.iptables,
            "OUTPUT",
            &[&self.time_exceeded[..], &["-j", "DROP"]].concat(),
        );
    }

    /// Every address's probe state: the same with and without `CAP_NET_RAW`.
    fn states(&self) -> [(&'static str, &'static str); 6] {
        [
            (self.open, "open"),
            (self.dropped, "timeout"),
            // Linux maps admin-prohibited to EHOSTUNREACH (IPv4) or EACCES (IPv6): unreachable.
            (self.admin, "unreachable"),
            // ... and port-unreachable to ECONNREFUSED, like a reset.
            (self.port_unreachable, "refused"),
            (self.middlebox, "refused"),
            (self.closed, "refused"),
        ]
    }

    /// What the diagnosis of each failing address must hold (every key given, with that value).
    fn diagnoses(&self) -> Vec<(&'static str, Value)> {
        vec![
            (self.dropped, dropped_after(&[self.router_a, self.router_b])),
            (
                self.admin,
                json!({"state": "unreachable", "rejected_by": self.router_b, "reject_kind": "admin_prohibited"}),
            ),
            (
                self.port_unreachable,
                json!({"state": "refused", "rejected_by": self.router_b, "reject_kind": "port_unreachable"}),
            ),
            (
                self.middlebox,
                // The reset claims the server's address; a SYN that expires where it came from
                // makes router B name itself.
                json!({
                    "state": "refused",
                    "rejected_by": self.router_b,
                    "reject_kind": "rst_from_middlebox",
                    "reply_ttl": TTL_FROM_B,
                    "server_ttl": TTL_FROM_SERVER,
                }),
            ),
            (
                self.closed,
                json!({
                    "state": "refused",
                    "rejected_by": self.closed,
                    "reject_kind": "tcp_reset",
                    "reply_ttl": TTL_FROM_SERVER,
                }),
            ),
        ]
    }
}

/// The diagnosis of the dropped address when `answering` are the hops that answer, in order.
fn dropped_after(answering: &[&str]) -> Value {
    let hops: Vec<Value> = (1..)
        .zip(answering)
        .map(|(hop, ip)| json!({"hop": hop, "ip": ip}))
        .collect();
    let last = answering.last().unwrap();
    json!({
        "state": "timeout",
        "hops": hops,
        "dropped_after_hop": {"hop": hops.len(), "hop_ip": last},
        "summary": format!("dropped after {last}, hop {}", hops.len()),
    })
}

/// The chain lab with both families' servers and rules.
fn build_lab() -> Lab {
    let mut lab = Lab::chain();
    let addresses = [V4.addresses(), V6.addresses()].concat();
    lab.add_server_addresses(&addresses);
    lab.start_sshd(&[V4.open, V6.open]);
    V4.add_rules(&lab);
    V6.add_rules(&lab);
    lab
}

/// The daemon's configuration for `addresses`. The timeout is 2 s, not 1 s: over IPv6 the kernel
/// may fail a rejected `connect()` only at the ICMP answering the SYN it retransmits after 1 s (see
/// `tests/support/path_probe.py`), and the states asserted here are the kernel's, not a race.
fn config_text(addresses: &[&str]) -> String {
    format!(
        "global:
  interval: 5s
  timeout: 2s
  attempts: 1
  diagnosis:
    raw_probes: auto
    trace_interval: 10s
    max_hops: {MAX_HOPS}
    ttl_margin: 0
targets:
  - name: vendor-sftp
    port: 22
    check: tcp
    static: [{}]
",
        addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Without `CAP_NET_RAW`: dropped from the bounding set (so no exec regains it) and from the
/// inheritable set. Root keeps every other capability.
const NO_NET_RAW: &[&str] = &["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"];
const CAP_NET_RAW_BIT: u32 = 13;

/// `check --output json` under `wrapper`: the report, and the process's output for messages.
fn check_json(lab: &Lab, wrapper: &[&str], config: &Path) -> (Value, Output) {
    let out = lab.audit_as(
        wrapper,
        &["check", "--config.file", config.to_str().unwrap(), "--output", "json"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Failing addresses are findings: exit 1, neither a crash nor a refused configuration.
    assert_eq!(
        out.status.code(),
        Some(1),
        "check {wrapper:?}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (report, out)
}

/// The report's address object of `ip`.
fn address<'a>(report: &'a Value, ip: &str) -> &'a Value {
    report["addresses"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["ip"] == ip))
        .unwrap_or_else(|| panic!("{ip} is not in the report:\n{report:#}"))
}

/// Whether `actual` holds `expected`: every key of an object (more keys are fine: a hop may
/// carry a round-trip time), every element of an array (no more, no fewer), equal scalars.
fn holds(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|a| holds(a, value))),
        (Value::Array(actual), Value::Array(expected)) => {
            actual.len() == expected.len() && actual.iter().zip(expected).all(|(a, e)| holds(a, e))
        }
        _ => actual == expected,
    }
}

/// Every key of `expected` is in `ip`'s diagnosis with that value.
fn assert_diagnosis(report: &Value, ip: &str, expected: &Value, logs: &str) {
    let a = address(report, ip);
    let diagnosis = &a["diagnosis"];
    for (key, value) in expected.as_object().unwrap() {
        assert!(
            holds(&diagnosis[key], value),
            "{ip}: diagnosis.{key} should be {value}\naddress: {a:#}\n{logs}"
        );
    }
}

fn assert_states(report: &Value, family: &Family) {
    for (ip, state) in family.states() {
        let a = address(report, ip);
        assert_eq!(a["probe"]["state"], state, "{ip}: {a:#}");
    }
}

/// Runs `check` for `family`: every state and diagnosis; then router B stops answering
/// time-exceeded and the trace ends at router A.
fn check_diagnoses(family: &Family) -> Lab {
    let lab = build_lab();
    let config = lab.write("check.yml", &config_text(&family.addresses()));
    let (report, out) = check_json(&lab, &[], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_states(&report, family);
    for (ip, expected) in family.diagnoses() {
        assert_diagnosis(&report, ip, &expected, &stderr);
    }

    family.silence_router_b(&lab);
    let only_dropped = lab.write("dropped.yml", &config_text(&[family.dropped]));
    let (report, out) = check_json(&lab, &[], &only_dropped);
    assert_diagnosis(
        &report,
        family.dropped,
        &dropped_after(&[family.router_a]),
        &String::from_utf8_lossy(&out.stderr),
    );
    lab
}

#[test]
fn ipv4_check_names_who_rejected_and_where_it_drops() {
    if !lab_allowed("ipv4_check_names_who_rejected_and_where_it_drops") || !chain_tools_allowed() {
        return;
    }
    let lab = check_diagnoses(&V4);
    // The table says it too, in its DIAGNOSIS column (router B is silent by now: hop 1).
    let config = lab.write("table.yml", &config_text(&[V4.open, V4.dropped]));
    let out = lab.audit(&["check", "--config.file", config.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().is_some_and(|h| h.contains("DIAGNOSIS")), "{table}");
    let dropped = table
        .lines()
        .find(|l| l.contains(V4.dropped))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        dropped.contains("dropped after hop 1 (198.51.100.1)"),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and the whole story on a line of its own.
    assert!(
        table
            .lines()
            .any(|l| l == "diagnosis: vendor-sftp 192.0.2.11: dropped after 198.51.100.1, hop 1"),
        "{table}"
    );
}

#[test]
fn ipv6_check_names_who_rejected_and_where_it_drops() {
    if !lab_allowed("ipv6_check_names_who_rejected_and_where_it_drops") || !chain_tools_allowed() {
        return;
    }
    check_diagnoses(&V6);
}

/// nft (router B's port-unreachable rule) and setpriv (dropping `CAP_NET_RAW`), beyond the lab's tools.
fn chain_tools_allowed() -> bool {
    tools_allowed("diagnosis lab", &["nft", "setpriv"])
}

/// The capability sets of a process that `wrapper` runs in the client namespace:
/// (`CapPrm`, `CapEff`, `CapBnd`, `CapAmb`).
fn capabilities(lab: &Lab, wrapper: &[&str]) -> [u64; 4] {
    let mut args = wrapper.to_vec();
    args.extend_from_slice(&["grep", "^Cap", "/proc/self/status"]);
    let status = String::from_utf8_lossy(&lab.run(&lab.client, &args).stdout).to_string();
    ["CapPrm", "CapEff", "CapBnd", "CapAmb"].map(|set| {
        let line = status
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap_or_else(|| panic!("{set}:\n{status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    })
}

#[test]
fn without_cap_net_raw_everything_but_the_diagnosis_works() {
    if !lab_allowed("without_cap_net_raw_everything_but_the_diagnosis_works") || !chain_tools_allowed() {
        return;
    }
    let mut lab = build_lab();
    let net_raw = 1 << CAP_NET_RAW_BIT;
    assert_ne!(
        capabilities(&lab, &[])[1] & net_raw,
        0,
        "the test runs with CAP_NET_RAW"
    );
    for (set, bits) in ["CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .iter()
        .zip(capabilities(&lab, NO_NET_RAW))
    {
        assert_eq!(
            bits & net_raw,
            0,
            "{NO_NET_RAW:?} leaves CAP_NET_RAW in {set}: {bits:x}"
        );
    }

    let addresses = [V4.addresses(), V6.addresses()].concat();
    let config = lab.write("check.yml", &config_text(&addresses));
    let (report, out) = check_json(&lab, NO_NET_RAW, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_states(&report, &V4);
    assert_states(&report, &V6);
    for a in report["addresses"].as_array().unwrap() {
        assert!(a.get("diagnosis").is_none(), "{a:#}");
    }
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("CAP_NET_RAW")).collect();
    assert_eq!(said.len(), 1, "one line says diagnosis is off:\n{stderr}");
    for how in ["setcap", "--cap-add", "AmbientCapabilities"] {
        assert!(
            said[0].contains(how),
            "the line says how to enable it ({how}):\n{stderr}"
        );
    }

    lab.serve_as(NO_NET_RAW, &config, "127.0.0.1:10022");
    let text = lab.poll(METRICS, Duration::from_secs(30), |body| {
        let m = Scrape::parse(body);
        addresses
            .iter()
            .all(|ip| m.get("whitelist_audit_ip_up", &[("ip", ip)]).is_some())
    });
    let first = Scrape::parse(&text);
    assert_eq!(
        first.get("whitelist_audit_raw_probes_enabled", &[]),
        Some(0.0),
        "{}",
        lab.logs()
    );
    // A second sweep: the log line is said once, at startup, not per sweep.
    let swept = first.get("whitelist_audit_last_sweep_timestamp_seconds", &[]);
    let text = lab.poll(METRICS, Duration::from_secs(30), |body| {
        Scrape::parse(body).get("whitelist_audit_last_sweep_timestamp_seconds", &[]) > swept
    });
    let m = Scrape::parse(&text);
    for name in [
        "whitelist_audit_ip_rejected_by_info",
        "whitelist_audit_ip_path_last_hop",
        "whitelist_audit_ip_reply_ttl",
    ] {
        assert!(
            !m.0.keys().any(|k| k.starts_with(&format!("{name}{{"))),
            "{name} without the capability:\n{text}"
        );
    }
    let logs = lab.logs();
    assert_eq!(
        logs.lines().filter(|l| l.contains("CAP_NET_RAW")).count(),
        1,
        "serve says it once:\n{logs}"
    );
}

#[test]
fn serve_exports_where_it_breaks() {
    if !lab_allowed("serve_exports_where_it_breaks") || !chain_tools_allowed() {
        return;
    }
    let mut lab = build_lab();
    let addresses = [V4.addresses(), V6.addresses()].concat();
    let config = lab.write("serve.yml", &config_text(&addresses));
    lab.serve(&config, "127.0.0.1:10022");
    // Ready once every diagnosis is exported; the values are asserted below, with messages.
    let text = lab.poll(METRICS, Duration::from_secs(60), |body| {
        let m = Scrape::parse(body);
        let has = |name: &str, ip: &str| {
            m.0.keys()
                .any(|k| k.starts_with(name) && k.contains(&format!("ip=\"{ip}\"")))
        };
        [&V4, &V6].iter().all(|f| {
            has("whitelist_audit_ip_path_last_hop{", f.dropped)
                && [f.admin, f.port_unreachable, f.middlebox, f.closed]
                    .iter()
                    .all(|ip| has("whitelist_audit_ip_rejected_by_info{", ip))
                && [f.middlebox, f.closed]
                    .iter()
                    .all(|ip| has("whitelist_audit_ip_reply_ttl{", ip))
        })
    });
    let m = Scrape::parse(&text);
    let logs = lab.logs();
    assert_eq!(m.get("whitelist_audit_raw_probes_enabled", &[]), Some(1.0), "{logs}");
    for f in [&V4, &V6] {
        assert_metrics(&m, f, &format!("{text}\n{logs}"));
    }
}

/// `family`'s diagnosis series: the last hop, who rejected and how, the reply TTLs; none for the
/// open address.
#[allow(clippy::cast_precision_loss)]
fn assert_metrics(m: &Scrape, f: &Family, context: &str) {
    let at = |ip| [("target", "vendor-sftp"), ("ip", ip), ("port", "22")];
    let with = |ip, more: &[(&'static str, &'static str)]| [&at(ip)[..], more].concat();
    assert_eq!(
        m.get(
            "whitelist_audit_ip_path_last_hop",
            &with(f.dropped, &[("hop", "2"), ("hop_ip", f.router_b)])
        ),
        Some(2.0),
        "{context}"
    );
    for (ip, rejected_by, kind) in [
        (f.admin, Some(f.router_b), "admin_prohibited"),
        (f.port_unreachable, Some(f.router_b), "port_unreachable"),
        // The middlebox's reset carries the server's address; the hop it came from is router B.
        (f.middlebox, Some(f.router_b), "rst_from_middlebox"),
        (f.closed, Some(f.closed), "tcp_reset"),
    ] {
        let mut labels = with(ip, &[("kind", kind)]);
        labels.extend(rejected_by.map(|by| ("rejected_by", by)));
        assert_eq!(
            m.get("whitelist_audit_ip_rejected_by_info", &labels),
            Some(1.0),
            "{ip} {kind}\n{context}"
        );
    }
    for (ip, ttl) in [(f.middlebox, TTL_FROM_B), (f.closed, TTL_FROM_SERVER)] {
        assert_eq!(
            m.get("whitelist_audit_ip_reply_ttl", &at(ip)),
            Some(ttl as f64),
            "{ip}\n{context}"
        );
    }
    let open_series = m.series_of_ip(f.open);
    for name in [
        "whitelist_audit_ip_rejected_by_info",
        "whitelist_audit_ip_path_last_hop",
    ] {
        assert!(
            !open_series.iter().any(|k| k.starts_with(name)),
            "{} is open: {name}\n{context}",
            f.open
        );
    }
}

/// What `tests/support/path_probe.py` saw of one connection: its outcome and the answers.
fn probe_path(lab: &Lab, specs: &[String]) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/path_probe.py");
    let mut args = vec!["timeout", "60", "python3", script, "22"];
    args.extend(specs.iter().map(String::as_str));
    let out = lab.run(&lab.client, &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn icmp(from: &str, ttl: u64, kind: u8, code: u8) -> Value {
    json!({"kind": "icmp", "type": kind, "code": code, "from": from, "ttl": ttl})
}

fn tcp(kind: &str, from: &str, ttl: u64) -> Value {
    json!({"kind": kind, "from": from, "ttl": ttl})
}

/// The premises of every other test, seen by the kernel's TCP and raw sockets of the test's own:
/// the path runs through router A and router B, each rule answers as it should, with the TTLs the
/// diagnosis compares.
#[test]
fn chain_lab_answers_as_the_diagnosis_expects() {
    if !lab_allowed("chain_lab_answers_as_the_diagnosis_expects") || !chain_tools_allowed() {
        return;
    }
    let lab = build_lab();
    for f in [&V4, &V6] {
        let c = &f.icmp;
        let tc = c.time_exceeded;
        // What connect() returns for admin-prohibited: both are the tool's `unreachable`.
        let admin_refusal = if f.iptables == "iptables" {
            "EHOSTUNREACH"
        } else {
            "EACCES"
        };
        // (connection, outcome or "" for any, answers)
        let expected: Vec<(String, &str, Value)> = vec![
            (f.open.into(), "open", json!([tcp("syn_ack", f.open, TTL_FROM_SERVER)])),
            (f.dropped.into(), "timeout", json!([])),
            (format!("{}@1", f.dropped), "", json!([icmp(f.router_a, 64, tc, 0)])),
            (
                format!("{}@2", f.dropped),
                "",
                json!([icmp(f.router_b, TTL_FROM_B, tc, 0)]),
            ),
            (format!("{}@3", f.dropped), "", json!([])),
            (
                f.admin.into(),
                admin_refusal,
                json!([icmp(f.router_b, TTL_FROM_B, c.unreachable, c.admin_prohibited)]),
            ),
            (
                f.port_unreachable.into(),
                "ECONNREFUSED",
                json!([icmp(f.router_b, TTL_FROM_B, c.unreachable, c.port_unreachable)]),
            ),
            (
                f.middlebox.into(),
                "ECONNREFUSED",
                json!([tcp("rst", f.middlebox, TTL_FROM_B)]),
            ),
            (
                f.closed.into(),
                "ECONNREFUSED",
                json!([tcp("rst", f.closed, TTL_FROM_SERVER)]),
            ),
        ];
        let specs: Vec<String> = expected.iter().map(|(spec, ..)| spec.clone()).collect();
        let seen = probe_path(&lab, &specs);
        assert_eq!(seen.len(), expected.len(), "{seen:#?}");
        for ((spec, outcome, answers), seen) in expected.iter().zip(&seen) {
            if !outcome.is_empty() {
                assert_eq!(seen["outcome"], *outcome, "{spec}: {seen}");
            }
            assert_eq!(seen["answers"], *answers, "{spec}: {seen}");
        }

        // With router B's time-exceeded dropped, hop 2 is silent too.
        f.silence_router_b(&lab);
        let specs = [format!("{}@1", f.dropped), format!("{}@2", f.dropped)];
        let seen = probe_path(&lab, &specs);
        assert_eq!(seen[0]["answers"], json!([icmp(f.router_a, 64, tc, 0)]), "{seen:#?}");
        assert_eq!(seen[1]["answers"], json!([]), "{seen:#?}");
    }
}

/// A rule on the auditing host itself (its OUTPUT chain) is no router's doing: the kernel refuses
/// to send the raw SYN, and the diagnosis names this host, whatever state the connect ended in.
#[test]
fn this_hosts_own_firewall_is_named_as_the_rejecter() {
    if !lab_allowed("this_hosts_own_firewall_is_named_as_the_rejecter") || !chain_tools_allowed() {
        return;
    }
    let lab = Lab::chain();
    let (dropped, rejected) = ("192.0.2.16", "192.0.2.17");
    lab.add_server_addresses(&[dropped, rejected]);
    let client = lab.client.clone();
    lab.run(
        &client,
        &[
            "iptables", "-A", "OUTPUT", "-d", dropped, "-p", "tcp", "--dport", "22", "-j", "DROP",
        ],
    );
    lab.run(
        &client,
        &[
            "iptables",
            "-A",
            "OUTPUT",
            "-d",
            rejected,
            "-p",
            "tcp",
            "--dport",
            "22",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );
    let config = lab.write("own.yml", &config_text(&[dropped, rejected]));
    let (report, out) = check_json(&lab, &[], &config);
    let logs = String::from_utf8_lossy(&out.stderr);
    for (ip, state) in [(dropped, "timeout"), (rejected, "refused")] {
        assert_eq!(address(&report, ip)["probe"]["state"], state, "{report:#}");
        assert_diagnosis(
            &report,
            ip,
            &json!({"rejected_by": "198.51.100.2", "reject_kind": "admin_prohibited", "refused_by_this_host": true}),
            &logs,
        );
    }
}
