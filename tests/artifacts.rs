//! The shipped rules and dashboard, checked by the reference tools and against the real metrics:
//! `promtool check rules`, `promtool test rules`, `promtool check metrics` on a real scrape, and
//! every metric name the rules and dashboard use is one the daemon exports.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tools_allowed;

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A scrape of a real daemon probing loopback (a closed port: every state series is present).
fn real_scrape() -> String {
    let dir = std::env::temp_dir().join(format!("wla-artifacts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("wl.yml"),
        "allow:\n  - addresses: [127.0.0.0/8, 203.0.113.0/24]\n    ports: [1]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("c.yml"),
        "global:\n  interval: 1s\n  timeout: 500ms\n  attempts: 1\n  whitelist: wl.yml\ntargets:\n  - name: loop\n    host: localhost\n    port: 1\n    static: [127.0.0.9]\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let web = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_whitelist-audit"))
        .args([
            "serve",
            "--config.file",
            dir.join("c.yml").to_str().unwrap(),
            "--web.listen-address",
            &web,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let mut response = String::new();
        if let Ok(mut stream) = TcpStream::connect(&web) {
            let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            let _ = stream.read_to_string(&mut response);
        }
        if response.contains("whitelist_audit_last_sweep_timestamp_seconds ")
            && response.contains("source_last_success")
        {
            break response.split_once("\r\n\r\n").unwrap().1.to_string();
        }
        assert!(Instant::now() < deadline, "no complete scrape: {response}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    body
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("whitelist_audit_") {
        let start = i + found;
        let preceded_by_colon = start > 0 && bytes[start - 1] == b':';
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        // `whitelist_audit_<version>` in prose is a prefix, not a metric.
        if !preceded_by_colon && !text[start..end].ends_with('_') {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    if !tools_allowed("rules_pass_promtool_check_and_unit_tests", &["promtool"]) {
        return;
    }
    let (ok, out) = promtool(&["check", "rules", "rules/whitelist-audit.rules.yml"], None);
    assert!(ok, "{out}");
    let tests: Vec<String> = std::fs::read_dir("rules/tests")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("yml")))
        .map(|p| p.display().to_string())
        .collect();
    assert!(!tests.is_empty());
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, out) = promtool(&args, None);
    assert!(ok, "{out}");
}

#[test]
fn every_alert_has_a_promtool_test_and_a_runbook_section() {
    let rules = std::fs::read_to_string("rules/whitelist-audit.rules.yml").unwrap();
    let tests: String = std::fs::read_dir("rules/tests")
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let runbook = std::fs::read_to_string("docs/alerts.md").unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool test"
        );
        assert!(
            runbook.contains(&format!("## {alert}")),
            "{alert} has no section in docs/alerts.md"
        );
        assert!(
            rules.contains(&format!("docs/alerts.md#{}", alert.to_lowercase())),
            "{alert} runbook_url"
        );
    }
}

#[test]
fn a_real_scrape_passes_promtool_and_covers_every_name_the_rules_and_dashboard_use() {
    let scrape = real_scrape();
    if tools_allowed("promtool check metrics", &["promtool"]) {
        let (ok, out) = promtool(&["check", "metrics"], Some(&scrape));
        assert!(ok, "{out}\n{scrape}");
    }
    // The scrape's whitelist declares 127.0.0.0/8: broader than the default /16, so it is marked.
    assert!(
        scrape.contains("whitelist_audit_whitelist_entry_broad{entry=\"127.0.0.0/8\",port=\"1\"} 1"),
        "{scrape}"
    );
    let exported = metric_names(&scrape);
    let rules = std::fs::read_to_string("rules/whitelist-audit.rules.yml").unwrap();
    let dashboard = std::fs::read_to_string("dashboards/whitelist-audit.json").unwrap();
    let readme = std::fs::read_to_string("README.md").unwrap();
    for (file, text) in [("rules", &rules), ("dashboard", &dashboard), ("README", &readme)] {
        for name in metric_names(text) {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which the daemon does not export"
            );
        }
    }
    for name in &exported {
        assert!(
            readme.contains(name.as_str()),
            "{name} is exported but not in the README's metrics reference"
        );
    }
}

#[test]
fn the_dashboard_imports_with_a_datasource_input_and_template_variables() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("dashboards/whitelist-audit.json").unwrap()).unwrap();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["instance", "target"]);
    let kinds: BTreeSet<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    for kind in ["state-timeline", "table", "timeseries", "stat"] {
        assert!(kinds.contains(kind), "no {kind} panel");
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("$instance"),
                "panel {} ignores the instance variable: {expr}",
                panel["title"]
            );
        }
    }
}
