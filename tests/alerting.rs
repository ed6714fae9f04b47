//! From a firewall change to a fired alert, with the real tools: the daemon, Prometheus loading
//! rules/whitelist-audit.rules.yml, Alertmanager and a webhook receiver, all inside the lab's
//! client namespace. Dropping one address at the firewall must fire `WhitelistAuditAddressBlocked`
//! for that address alone and `WhitelistAuditPartialOutage` for its target, and removing the rule
//! must resolve both. Every dashboard query must return data from that Prometheus.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{Lab, Users, lab_allowed, tools_allowed};
use serde_json::Value;

const HOST: &str = "sftp.vendor.test";
const POOL: [&str; 4] = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8:2::1"];
const BROKEN: &str = "192.0.2.2";

/// The shipped rules with every `for:` cut to 3s, so the test takes seconds, not minutes. The
/// expressions, labels and annotations are the shipped ones.
fn rules_for_test() -> String {
    let shipped = std::fs::read_to_string("rules/whitelist-audit.rules.yml").unwrap();
    let mut out = String::new();
    for line in shipped.lines() {
        if let Some(indent) = line
            .strip_suffix(line.trim_start())
            .filter(|_| line.trim_start().starts_with("for: "))
        {
            out.push_str(indent);
            out.push_str("for: 3s");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(out.matches("for: 3s").count() >= 9, "every alert has a for: clause");
    out
}

const WEBHOOK: &str = r"
import http.server, sys
log = open(sys.argv[1], 'a')
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        log.write(body.decode().replace('\n', ' ') + '\n'); log.flush()
        self.send_response(200); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(('127.0.0.1', 5001), Hook).serve_forever()
";

/// Every alert the webhook received: (alertname, status, labels).
fn received(lab: &Lab) -> Vec<(String, String, Value)> {
    let text = std::fs::read_to_string(lab.dir.join("webhook.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .flat_map(|payload| payload["alerts"].as_array().cloned().unwrap_or_default())
        .map(|alert| {
            (
                alert["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                alert["status"].as_str().unwrap_or_default().to_string(),
                alert["labels"].clone(),
            )
        })
        .collect()
}

/// The description of the first firing `name` the webhook received.
fn description(lab: &Lab, name: &str) -> String {
    let text = std::fs::read_to_string(lab.dir.join("webhook.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .flat_map(|payload| payload["alerts"].as_array().cloned().unwrap_or_default())
        .find(|alert| alert["labels"]["alertname"] == name && alert["status"] == "firing")
        .and_then(|alert| alert["annotations"]["description"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no firing {name}: {text}"))
}

/// One of four addresses dropped: 3 of 4 are up. What a client feels, end to end: the CBC-only
/// client agrees with no address, so no address works for every configured client and the
/// ratio is exactly 0 for 1 and 3 attempts; the list-only target has nothing probed (one prefix
/// too large), so it has no value at all.
fn ratios_reach_prometheus_and_the_alert(lab: &Lab) {
    let ratio = query(lab, "whitelist_audit:target_up:ratio{target=\"vendor-sftp\"}");
    assert_eq!(ratio["data"]["result"][0]["value"][1], "0.75", "{ratio}");
    let odds = query(lab, "whitelist_audit_target_client_success_ratio");
    let mut series: Vec<(&str, &str, &str)> = odds["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["target"].as_str().unwrap(),
                r["metric"]["attempts"].as_str().unwrap(),
                r["value"][1].as_str().unwrap(),
            )
        })
        .collect();
    series.sort_unstable();
    assert_eq!(series, [("vendor-sftp", "1", "0"), ("vendor-sftp", "3", "0")], "{odds}");
    let said = description(lab, "WhitelistAuditPartialOutage");
    assert!(
        said.ends_with("Connecting by name, a client with 3 attempts still fails 100% of its connections."),
        "{said}"
    );
}

/// Matches a received alert by name and status.
/// Raw diagnosis (the lab runs as root) traces the dropped address at its next tick: the
/// firewall, the first hop, answers time exceeded and drops the rest. Prometheus sees the hop.
fn trace_reaches_prometheus(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = query(lab, &format!("whitelist_audit_ip_path_last_hop{{ip=\"{BROKEN}\"}}"));
        if let Some(series) = answer["data"]["result"].as_array().and_then(|r| r.first()) {
            assert_eq!(series["metric"]["hop"], "1", "{answer}");
            assert_eq!(series["metric"]["hop_ip"], "198.51.100.1", "{answer}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no trace of {BROKEN} reached Prometheus\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn is(name: &'static str, status: &'static str) -> impl Fn(&(String, String, Value)) -> bool {
    move |a| a.0 == name && a.1 == status
}

fn wait_until(lab: &Lab, what: &str, limit: Duration, done: impl Fn(&[(String, String, Value)]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let alerts = received(lab);
        if done(&alerts) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}; webhook got {alerts:#?}\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs an instant query against the lab's Prometheus.
fn query(lab: &Lab, expr: &str) -> Value {
    let body = lab.client_output(&[
        "curl",
        "-s",
        "-G",
        "http://127.0.0.1:9090/api/v1/query",
        "--data-urlencode",
        &format!("query={expr}"),
    ]);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Builds the lab; the monitoring user it returns lives as long as the test holds it.
fn build(lab: &mut Lab) -> Users {
    lab.add_server_addresses(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.53", "2001:db8:2::1"]);
    // A monitoring account, so the session checks (login, SFTP, a short idle hold) fill their panels.
    let monitor = format!("wla{}a", std::process::id() % 100_000);
    let password = format!("alerting-{}", std::process::id());
    let users = Users::create(&[&monitor], &password);
    lab.write("monitor-password", &password);
    lab.start_sshd_with(
        &POOL,
        &[
            "Subsystem=sftp internal-sftp".into(),
            "PasswordAuthentication=yes".into(),
        ],
    );
    let hosts = POOL.iter().fold(String::new(), |mut out, ip| {
        let _ = writeln!(out, "{ip} {HOST}");
        out
    });
    let hosts = lab.write("hosts", &hosts);
    lab.start_dnsmasq(&["192.0.2.53"], 5353, &hosts);
    lab.write(
        "whitelist.yml",
        "allow:\n  - addresses: [192.0.2.0/29, \"2001:db8:2::/64\", \"2001:db8:1000::/41\"]\n    ports: [22]\n  - addresses: [203.0.113.0/24]\n    ports: [22]\n    comment: used by nobody\n",
    );
    // A second target fed by a published list alone: one large prefix, half whitelisted. It is
    // audited, never probed (far above max_probe_addresses_per_prefix).
    lab.write("vendor-list.txt", "# the vendor's published list\n2001:db8:1000::/40\n");
    let config = lab.write(
        "audit.yml",
        &format!(
            "global:\n  interval: 1s\n  timeout: 500ms\n  attempts: 1\n  whitelist: whitelist.yml\ntargets:\n  - name: vendor-sftp\n    host: {HOST}\n    resolvers: [\"192.0.2.53:5353\"]\n    dns_queries: 1\n    ssh:\n      clients: [openssh]\n      client_algorithms: {{kex: [curve25519-sha256], host_key: [ssh-ed25519], ciphers: [aes128-cbc], macs: [hmac-sha1]}}\n      idle_hold: 1s\n      auth: {{username: {monitor}, password_file: monitor-password}}\n      sftp: true\n  - name: vendor-list\n    published:\n      - path: vendor-list.txt\n"
        ),
    );
    lab.serve(&config, "127.0.0.1:10022");
    lab.poll("http://127.0.0.1:10022/-/ready", Duration::from_secs(20), |_| true);

    let client = lab.client.clone();
    let webhook_log = lab.dir.join("webhook.jsonl");
    lab.spawn(&client, &["python3", "-c", WEBHOOK, webhook_log.to_str().unwrap()]);
    lab.write(
        "alertmanager.yml",
        "route:\n  receiver: hook\n  group_by: [alertname, target, ip]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:5001/\n        send_resolved: true\n",
    );
    let dir = lab.dir.display().to_string();
    lab.spawn(
        &client,
        &[
            "prometheus-alertmanager",
            &format!("--config.file={dir}/alertmanager.yml"),
            &format!("--storage.path={dir}/am"),
            "--web.listen-address=127.0.0.1:9093",
            "--cluster.listen-address=",
        ],
    );
    lab.poll("http://127.0.0.1:9093/-/ready", Duration::from_secs(20), |_| true);
    lab.write("rules.yml", &rules_for_test());
    lab.write(
        "prometheus.yml",
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:9093\"]\nscrape_configs:\n  - job_name: whitelist-audit\n    static_configs:\n      - targets: [\"127.0.0.1:10022\"]\n",
    );
    lab.spawn(
        &client,
        &[
            "prometheus",
            &format!("--config.file={dir}/prometheus.yml"),
            &format!("--storage.tsdb.path={dir}/tsdb"),
            "--web.listen-address=127.0.0.1:9090",
        ],
    );
    lab.poll("http://127.0.0.1:9090/-/ready", Duration::from_secs(30), |_| true);
    users
}

/// An old client that speaks only CBC ciphers (the custom profile) agrees with no address of a
/// current OpenSSH pool: the alert fires for every address, from the real sshd's KEXINIT.
fn ssh_alert_fires_for_an_old_client(lab: &Lab) {
    wait_until(
        lab,
        "firing WhitelistAuditSshNoCommonAlgorithm",
        Duration::from_secs(60),
        |alerts| alerts.iter().any(is("WhitelistAuditSshNoCommonAlgorithm", "firing")),
    );
    let compatible = query(lab, "whitelist_audit_ssh_client_compatible{target=\"vendor-sftp\"}");
    let by_client: Vec<(String, String)> = compatible["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["client"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_client.iter().filter(|(c, v)| c == "openssh" && v == "1").count(),
        4,
        "{compatible}"
    );
    assert_eq!(
        by_client.iter().filter(|(c, v)| c == "custom" && v == "0").count(),
        4,
        "{compatible}"
    );
}

#[test]
fn dropping_one_address_fires_its_alerts_and_fixing_it_resolves_them() {
    if !lab_allowed("alerting end to end")
        || !tools_allowed("alerting end to end", &["prometheus", "prometheus-alertmanager"])
    {
        return;
    }
    let mut lab = Lab::new();
    let _users = build(&mut lab);

    // Healthy pool: Prometheus sees every address up, and nothing address-level fires.
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(&lab, "whitelist_audit_target_addresses{set=\"up\"} == 4")["data"]["result"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw 4 addresses up\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    ssh_alert_fires_for_an_old_client(&lab);

    let drop_rule = ["-d", BROKEN, "-p", "tcp", "--dport", "22", "-j", "DROP"];
    lab.firewall("iptables", &drop_rule);
    wait_until(
        &lab,
        "firing WhitelistAuditAddressBlocked and WhitelistAuditPartialOutage",
        Duration::from_secs(60),
        |alerts| {
            alerts.iter().any(is("WhitelistAuditAddressBlocked", "firing"))
                && alerts.iter().any(is("WhitelistAuditPartialOutage", "firing"))
        },
    );
    let alerts = received(&lab);
    for (name, _, labels) in &alerts {
        match name.as_str() {
            "WhitelistAuditAddressBlocked" => {
                assert_eq!(labels["ip"], BROKEN, "only the dropped address: {labels}");
                assert_eq!(labels["state"], "timeout", "a DROP is a timeout: {labels}");
                assert_eq!(labels["target"], "vendor-sftp");
            }
            "WhitelistAuditPartialOutage" => assert_eq!(labels["target"], "vendor-sftp"),
            "WhitelistAuditSshNoCommonAlgorithm" => {
                assert_eq!(labels["target"], "vendor-sftp");
                assert!(POOL.contains(&labels["ip"].as_str().unwrap_or_default()), "{labels}");
            }
            "WhitelistAuditStaleEntry" => assert_eq!(labels["entry"], "203.0.113.0/24", "{labels}"),
            "WhitelistAuditPrefixNotWhitelisted" => {
                assert_eq!(
                    (labels["target"].as_str(), labels["uncovered"].as_str()),
                    (Some("vendor-list"), Some("2001:db8:1080::/41"))
                );
            }
            other => panic!("unexpected alert {other}: {labels}"),
        }
    }
    ratios_reach_prometheus_and_the_alert(&lab);
    trace_reaches_prometheus(&lab);

    // Every dashboard query returns data from this Prometheus, with the variables at "All".
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string("dashboards/whitelist-audit.json").unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$target", ".*")
                .replace("$instance", ".*")
                // Grafana's own variable: at least four scrape intervals.
                .replace("$__rate_interval", "1m");
            let answer = query(&lab, &expr);
            assert_eq!(answer["status"], "success", "{}: {answer}", panel["title"]);
            assert!(
                answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
                "panel {:?} query returns no data: {expr}",
                panel["title"]
            );
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let definition = variable["definition"].as_str().unwrap().replace("$instance", ".*");
        let inner = definition
            .trim_start_matches("label_values(")
            .rsplit_once(',')
            .unwrap()
            .0
            .to_string();
        let answer = query(&lab, &inner);
        assert!(
            answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
            "variable {}: {inner}",
            variable["name"]
        );
    }

    lab.firewall_delete("iptables", &drop_rule);
    wait_until(
        &lab,
        "resolved WhitelistAuditAddressBlocked and WhitelistAuditPartialOutage",
        Duration::from_secs(60),
        |alerts| {
            alerts.iter().any(is("WhitelistAuditAddressBlocked", "resolved"))
                && alerts.iter().any(is("WhitelistAuditPartialOutage", "resolved"))
        },
    );
}
