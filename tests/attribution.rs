//! Who changed what, end to end: a daemon audits OpenSSH addresses behind a real iptables
//! firewall in namespaces this test creates, and the lab changes one side at a time: the vendor's
//! list gains an address, a rule on our side drops one, the whitelist file is edited and
//! reloaded, the server behind one address presents another host key; then both sides at once.
//! Each change must be attributed to the side that changed, at the time it happened, in the API,
//! the metric and `whitelist-audit report`.

mod common;

use std::time::Duration;

use common::{Lab, Scrape, lab_allowed, unix_now};
use serde_json::Value;

const KEY_SWAPPED: &str = "192.0.2.1";
const DROPPED: &str = "192.0.2.2";
const UNCOVERED: &str = "192.0.2.3";
const ADDED: &str = "192.0.2.4";
const ADDED_LATE: &str = "192.0.2.5";
const API: &str = "http://127.0.0.1:10022/api/v1";
/// Twice the interval plus the list's refresh: changes seen closer than this are "together".
const WINDOW: Duration = Duration::from_secs(5);

fn whitelist(covered: &[&str]) -> String {
    covered.iter().fold(String::from("allow:\n"), |text, ip| {
        text + &format!("  - addresses: [{ip}]\n    ports: [22]\n    comment: vendor SFTP\n")
    })
}

fn drop_rule(ip: &str) -> Vec<&str> {
    vec!["-d", ip, "-p", "tcp", "--dport", "22", "-j", "DROP"]
}

/// The snapshot's record of `ip` once its last change is attributed to `cause`.
fn attributed(lab: &Lab, ip: &str, cause: &str) -> Value {
    let find = |body: &str| {
        let snapshot: Value = serde_json::from_str(body).ok()?;
        snapshot["addresses"]
            .as_array()?
            .iter()
            .find(|a| a["ip"] == ip && a["change_cause"]["cause"] == cause)
            .cloned()
    };
    let body = lab.poll(&format!("{API}/snapshot"), Duration::from_secs(40), |body| {
        find(body).is_some()
    });
    find(&body).expect("the poll found it")
}

/// Asserts the change was seen after `made` and within two intervals of it, and returns its time.
fn seen_soon_after(address: &Value, made: u64) -> u64 {
    let at = address["change_cause"]["at"].as_u64().unwrap();
    assert!(
        at >= made && at <= made + 8,
        "the change was made at {made} but is dated {at}: {address:#}"
    );
    at
}

/// Sends new connections to 192.0.2.1:22 to the second sshd.
fn swap_host_key(lab: &Lab) {
    lab.run(
        &lab.server,
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            KEY_SWAPPED,
            "-p",
            "tcp",
            "--dport",
            "22",
            "-j",
            "DNAT",
            "--to-destination",
            "192.0.2.1:2222",
        ],
    );
}

#[test]
fn each_side_that_changes_is_named_with_the_time_and_both_at_once_is_unknown() {
    if !lab_allowed("each_side_that_changes_is_named_with_the_time_and_both_at_once_is_unknown") {
        return;
    }
    let mut lab = Lab::new();
    let all = [KEY_SWAPPED, DROPPED, UNCOVERED, ADDED, ADDED_LATE];
    lab.add_server_addresses(&all);
    lab.start_sshd(&all);
    // A second server on 192.0.2.1:2222 with a key of its own: swap_host_key sends port 22 to it,
    // so the key changes without a moment of refused connections.
    lab.start_sshd_on(&[KEY_SWAPPED], 2222, "other_host_key", &[]);
    lab.write("whitelist.yml", &whitelist(&[KEY_SWAPPED, DROPPED, UNCOVERED, ADDED]));
    let list = lab.write("vendor-list.txt", &format!("{KEY_SWAPPED}\n{DROPPED}\n{UNCOVERED}\n"));
    let state = lab.dir.join("state");
    let config = lab.write(
        "serve.yml",
        &format!(
            "global:
  interval: 2s
  timeout: 1s
  attempts: 1
  whitelist: whitelist.yml
  state_dir: {}
targets:
  - name: vendor-sftp
    published:
      - path: vendor-list.txt
        refresh: 1s
",
            state.display()
        ),
    );
    let daemon = lab.serve(&config, "127.0.0.1:10022");
    for ip in [KEY_SWAPPED, DROPPED, UNCOVERED] {
        attributed(&lab, ip, "first_seen");
    }
    // Past the start's window, so what follows is a change and not the audit beginning.
    std::thread::sleep(WINDOW + Duration::from_secs(1));

    // The vendor: its list gains an address (whitelisted already, so it is open and fine).
    let made = unix_now();
    std::fs::write(&list, format!("{KEY_SWAPPED}\n{DROPPED}\n{UNCOVERED}\n{ADDED}\n")).unwrap();
    let added = attributed(&lab, ADDED, "vendor_added");
    seen_soon_after(&added, made);
    std::thread::sleep(WINDOW + Duration::from_secs(1));

    // Our path: the firewall drops one address; the published set stood still.
    let made = unix_now();
    lab.firewall("iptables", &drop_rule(DROPPED));
    let dropped = attributed(&lab, DROPPED, "local_path");
    seen_soon_after(&dropped, made);
    assert_eq!(dropped["probe"]["state"], "timeout", "{dropped:#}");
    assert!(
        dropped["change_cause"]["why"]
            .as_str()
            .unwrap()
            .contains("published set unchanged since"),
        "{dropped:#}"
    );
    std::thread::sleep(WINDOW + Duration::from_secs(1));

    // Our whitelist: the entry of one address is removed and the daemon reloads.
    let made = unix_now();
    lab.write("whitelist.yml", &whitelist(&[KEY_SWAPPED, DROPPED, ADDED]));
    lab.signal(daemon, "HUP");
    let uncovered = attributed(&lab, UNCOVERED, "local_whitelist");
    seen_soon_after(&uncovered, made);
    assert_eq!(uncovered["finding"], "undeclared", "{uncovered:#}");
    std::thread::sleep(WINDOW + Duration::from_secs(1));

    // The vendor's service: another server (another host key) answers on one address.
    let made = unix_now();
    swap_host_key(&lab);

    let swapped = attributed(&lab, KEY_SWAPPED, "vendor_service");
    seen_soon_after(&swapped, made);
    assert_eq!(
        swapped["probe"]["state"], "open",
        "never refused in between: {swapped:#}"
    );
    std::thread::sleep(WINDOW + Duration::from_secs(1));

    // The vendor again: its list loses the dropped address. Its entry declares no target, so it
    // is not stale but leaves the audit: the timeline keeps the story.
    let made = unix_now();
    std::fs::write(&list, format!("{KEY_SWAPPED}\n{UNCOVERED}\n{ADDED}\n")).unwrap();
    let removed = lab.poll(
        &format!("{API}/timeline?ip={DROPPED}&cause=vendor_removed"),
        Duration::from_secs(30),
        |body| body.contains("vendor_removed"),
    );
    let removed: Value = serde_json::from_str(&removed).unwrap();
    let at = removed["changes"][0]["at"].as_u64().unwrap();
    assert!(
        at >= made && at <= made + 8,
        "removed at {made}, dated {at}: {removed:#}"
    );
    std::thread::sleep(WINDOW + Duration::from_secs(1));

    // Both at once: the vendor publishes another address while our firewall drops one more.
    lab.firewall("iptables", &drop_rule(ADDED));
    std::fs::write(&list, format!("{KEY_SWAPPED}\n{UNCOVERED}\n{ADDED}\n{ADDED_LATE}\n")).unwrap();
    let mixed = attributed(&lab, ADDED, "unknown");
    assert!(
        mixed["change_cause"]["why"]
            .as_str()
            .unwrap()
            .contains("the published set of vendor-sftp changed at"),
        "{mixed:#}"
    );
    attributed(&lab, ADDED_LATE, "vendor_added");

    check_metric_api_and_report(&lab, &config, &mixed);
}

/// The metric carries the last change of each address; the API, `report` and `check` the whole
/// story. `mixed` is the address last dropped, next to the vendor's addition.
fn check_metric_api_and_report(lab: &Lab, config: &std::path::Path, mixed: &Value) {
    let (_, text) = lab.http("GET", "http://127.0.0.1:10022/metrics");
    let scrape = Scrape::parse(&text);
    let labels = |ip, cause| [("target", "vendor-sftp"), ("ip", ip), ("port", "22"), ("cause", cause)];
    let mixed_at = mixed["change_cause"]["at"].as_f64().unwrap();
    let metric = scrape.get("whitelist_audit_ip_change_cause_info", &labels(ADDED, "unknown"));
    // The API has whole seconds, the metric the fraction too.
    assert!(
        metric.is_some_and(|m| (m - mixed_at).abs() < 1.0),
        "{metric:?} vs {mixed_at}"
    );
    assert!(
        scrape
            .get(
                "whitelist_audit_ip_change_cause_info",
                &labels(ADDED_LATE, "vendor_added")
            )
            .is_some()
    );

    let (status, body) = lab.http("GET", &format!("{API}/timeline?cause=local_path"));
    assert_eq!(status, 200, "{body}");
    let timeline: Value = serde_json::from_str(&body).unwrap();
    let ips: Vec<&str> = timeline["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, [DROPPED], "{timeline:#}");
    let (status, body) = lab.http("GET", &format!("{API}/timeline?cause=blame"));
    assert_eq!(status, 400, "{body}");

    // The report for a ticket reads the file the daemon wrote, and tells the same story.
    let report = |format: &str| {
        let output = lab.audit(&[
            "report",
            "--config.file",
            config.to_str().unwrap(),
            "--since",
            "1h",
            "--format",
            format,
        ]);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let text = report("text");
    for (ip, cause) in [
        (ADDED, "vendor_added"),
        (DROPPED, "local_path"),
        (UNCOVERED, "local_whitelist"),
        (KEY_SWAPPED, "vendor_service"),
        (DROPPED, "vendor_removed"),
        (ADDED, "unknown"),
        (ADDED_LATE, "vendor_added"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!(" {ip}:22 ")) && l.contains(&format!(" {cause}: "))),
            "no {cause} line for {ip}:\n{text}"
        );
    }
    assert!(!text.contains("first_seen"), "first sightings are not changes:\n{text}");
    // check beside the daemon ends its table with the daemon's changes.
    let output = lab.audit(&["check", "--config.file", config.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&output.stdout);
    let changes = table
        .split_once("Changes in the last 24 h")
        .unwrap_or_else(|| panic!("no timeline under the table:\n{table}"))
        .1;
    assert!(
        changes
            .lines()
            .any(|l| l.contains(&format!(" {DROPPED}:22 ")) && l.contains(" local_path: ")),
        "{table}"
    );
    let markdown = report("markdown");
    assert!(
        markdown.contains("| When (UTC) | Target | Address | Change | Cause | Evidence |"),
        "{markdown}"
    );
    assert!(markdown.contains("**local_path**"), "{markdown}");
}
