//! The SSH session checks against real peers, in a namespace lab (client - firewall - servers,
//! documentation addresses only):
//!
//! - **login**: OpenSSH `sshd` with a monitoring user (password and key), `internal-sftp` in a
//!   `ChrootDirectory`; a user in `DenyUsers`; a server with `PasswordAuthentication no`; a server
//!   whose chroot is not root-owned. Each outcome is asserted by address, through
//!   `check --output json`, and the secret is looked for everywhere it must not be: `check`'s text
//!   and JSON, the logs at debug level, `/metrics`;
//! - **idle hold**: the firewall namespace's conntrack forgets established TCP flows after 3 s
//!   and drops what it no longer knows. A 6 s hold then gives `idle_killed`; a 1 s hold, or the
//!   same 6 s hold before the timeout is set, gives `idle_ok`. A server with `LoginGraceTime 2`
//!   ends an unauthenticated hold itself: `server_closed`, not the path.
//!
//! The test creates its users (`useradd`) and its chroot under `/run`, and removes exactly those.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Lab, Scrape, Users, lab_allowed, sh};
use serde_json::Value;

/// A directory made for one test, removed when it ends.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A short id unique to this process and call: user names are at most 32 characters.
fn id() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}x{n}", std::process::id() % 100_000)
}

/// The sshd options every server here shares: SFTP only, keys from the lab's directory. sshd
/// takes the first value of an option, so `extra` comes first.
fn sftp_server(lab: &Lab, chroot: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut options: Vec<String> = extra.iter().map(|o| (*o).to_string()).collect();
    options.extend([
        "Subsystem=sftp internal-sftp".to_string(),
        "ForceCommand=internal-sftp".to_string(),
        format!("ChrootDirectory={}", chroot.display()),
        format!("AuthorizedKeysFile={}/keys/%u", lab.dir.display()),
        "PasswordAuthentication=yes".to_string(),
        "KbdInteractiveAuthentication=no".to_string(),
        "PubkeyAuthentication=yes".to_string(),
        "PermitRootLogin=no".to_string(),
    ]);
    options
}

/// `check --output json` in the client namespace with `env`; (status, stdout, stderr).
fn check(lab: &Lab, config: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new("ip")
        .args(["netns", "exec", &lab.client, env!("CARGO_BIN_EXE_whitelist-audit")])
        .args(["check", "--config.file", config.to_str().unwrap(), "--output", "json"])
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The `session` object of (target, ip) in `check`'s JSON.
fn session<'a>(report: &'a Value, target: &str, ip: &str) -> &'a Value {
    report["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["target"] == target && a["ip"] == ip)
        .unwrap_or_else(|| panic!("no address {target} {ip}"))
        .get("session")
        .unwrap_or_else(|| panic!("no session checks on {target} {ip}: {report:#}"))
}

/// The login lab: four servers, the monitoring and the disabled user, and a config with a
/// password, a key and the disabled user's password file.
struct LoginLab {
    lab: Lab,
    config: std::path::PathBuf,
    password: String,
    /// Held to the end of the test: dropping them removes the users and the chroots.
    users: Users,
    chroots: (Dir, Dir),
}

fn login_lab() -> LoginLab {
    let id = id();
    let (monitor, denied) = (format!("wla{id}m"), format!("wla{id}d"));
    let password = format!("S3cret-{id}-do-not-print");
    let users = Users::create(&[&monitor, &denied], &password);
    // sshd requires a chroot whose every component is root-owned and not writable by others.
    let chroot = Dir(std::path::PathBuf::from(format!("/run/wla-chroot-{id}")));
    std::fs::create_dir_all(&chroot.0).unwrap();
    let broken = Dir(std::path::PathBuf::from(format!("/run/wla-chroot-{id}-broken")));
    std::fs::create_dir_all(&broken.0).unwrap();
    sh("chown", &["65534:65534", broken.0.to_str().unwrap()]);

    let mut lab = Lab::new();
    lab.add_server_addresses(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "2001:db8:2::1"]);
    std::fs::create_dir_all(lab.dir.join("keys")).unwrap();
    let key = lab.dir.join("monitor_key");
    sh(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key.to_str().unwrap()],
    );
    std::fs::copy(lab.dir.join("monitor_key.pub"), lab.dir.join("keys").join(&monitor)).unwrap();
    let deny = format!("DenyUsers={denied}");
    lab.start_sshd_with(&["192.0.2.1", "2001:db8:2::1"], &sftp_server(&lab, &chroot.0, &[&deny]));
    lab.start_sshd_with(
        &["192.0.2.2"],
        &sftp_server(&lab, &chroot.0, &["PasswordAuthentication=no"]),
    );
    lab.start_sshd_with(&["192.0.2.3"], &sftp_server(&lab, &broken.0, &[]));
    let deny_monitor = format!("DenyUsers={monitor}");
    lab.start_sshd_with(&["192.0.2.4"], &sftp_server(&lab, &chroot.0, &[&deny_monitor]));
    let password_file = lab.write("denied-password", &format!("{password}\n"));
    let config = lab.write(
        "config.yml",
        &format!(
            "global:\n  interval: 8s\n  timeout: 3s\n  attempts: 1\n  state_dir: {dir}/state\n\
             targets:\n\
             \x20 - name: sftp-password\n    static: [192.0.2.1, 192.0.2.2, 192.0.2.3, 192.0.2.4, \"2001:db8:2::1\"]\n\
             \x20   ssh:\n      auth: {{username: {monitor}, password_env: WLA_TEST_PASSWORD}}\n      sftp: true\n\
             \x20 - name: sftp-key\n    static: [192.0.2.1, 192.0.2.2]\n\
             \x20   ssh:\n      auth: {{username: {monitor}, private_key_file: {key}}}\n      sftp: true\n\
             \x20 - name: disabled-user\n    static: [192.0.2.1]\n\
             \x20   ssh:\n      auth: {{username: {denied}, password_file: {password_file}}}\n",
            dir = lab.dir.display(),
            key = key.display(),
            password_file = password_file.display(),
        ),
    );
    LoginLab {
        lab,
        config,
        password,
        users,
        chroots: (chroot, broken),
    }
}

#[test]
fn each_login_outcome_is_told_apart_by_address() {
    if !lab_allowed("each_login_outcome_is_told_apart_by_address") {
        return;
    }
    let LoginLab {
        lab,
        config,
        password,
        users: _users,
        chroots: _chroots,
    } = login_lab();
    let (status, stdout, stderr) = check(&lab, &config, &[("WLA_TEST_PASSWORD", &password)]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let state = |target: &str, ip: &str, check: &str| -> String {
        let s = session(&report, target, ip);
        match check {
            "sftp" => s["login"]["sftp"]["state"].as_str().unwrap_or("absent").to_string(),
            _ => s[check]["state"].as_str().unwrap_or("absent").to_string(),
        }
    };
    let said = format!("{stderr}\n{}", lab.logs());
    // Password and key both get in, and SFTP answers `realpath .` inside the chroot.
    for (target, ip) in [
        ("sftp-password", "192.0.2.1"),
        ("sftp-password", "2001:db8:2::1"),
        ("sftp-key", "192.0.2.1"),
        ("sftp-key", "192.0.2.2"),
    ] {
        assert_eq!(state(target, ip, "login"), "login_ok", "{target} {ip}: {said}");
        assert_eq!(state(target, ip, "sftp"), "sftp_ok", "{target} {ip}");
        let sftp = &session(&report, target, ip)["login"]["sftp"];
        assert_eq!(sftp["detail"], "realpath . = /", "{sftp}");
        assert!(
            sftp["response_seconds"].as_f64().is_some_and(|s| s > 0.0 && s < 3.0),
            "{sftp}"
        );
    }
    let methods = |target: &str, ip: &str| session(&report, target, ip)["login"]["methods"].clone();
    assert_eq!(
        methods("sftp-password", "192.0.2.1"),
        serde_json::json!(["publickey", "password"])
    );
    // Password disabled: the method is not offered, and the answer says what is.
    assert_eq!(state("sftp-password", "192.0.2.2", "login"), "auth_method_not_offered");
    assert_eq!(methods("sftp-password", "192.0.2.2"), serde_json::json!(["publickey"]));
    // Logged in, but the chroot is not root-owned: sshd ends the session at the subsystem.
    assert_eq!(state("sftp-password", "192.0.2.3", "login"), "login_ok");
    assert_eq!(
        state("sftp-password", "192.0.2.3", "sftp"),
        "sftp_unavailable",
        "{said}"
    );
    // The same account is denied on one server of the pool only.
    assert_eq!(state("sftp-password", "192.0.2.4", "login"), "auth_rejected");
    // A disabled user with the right password is rejected, with the methods still listed.
    assert_eq!(state("disabled-user", "192.0.2.1", "login"), "auth_rejected");
    assert_eq!(
        methods("disabled-user", "192.0.2.1"),
        serde_json::json!(["publickey", "password"])
    );
    assert_eq!(status, 1, "problems found: exit 1\n{stderr}");
    assert!(
        !stdout.contains(&password) && !stderr.contains(&password),
        "the password leaked"
    );
}

#[test]
fn the_secret_never_shows_in_output_logs_or_metrics() {
    if !lab_allowed("the_secret_never_shows_in_output_logs_or_metrics") {
        return;
    }
    let LoginLab {
        mut lab,
        config,
        password,
        users: _users,
        chroots: _chroots,
    } = login_lab();
    // Without the variable the start is refused, naming the key; the text table and a
    // daemon's /metrics, over the same lab.
    let refused = lab.audit(&["check", "--config.file", config.to_str().unwrap()]);
    let refused = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        refused.contains("targets[0].ssh.auth.password_env") && refused.contains("WLA_TEST_PASSWORD"),
        "{refused}"
    );
    let text = Command::new("ip")
        .args(["netns", "exec", &lab.client, env!("CARGO_BIN_EXE_whitelist-audit")])
        .args(["check", "--config.file", config.to_str().unwrap()])
        .env("WLA_TEST_PASSWORD", &password)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("session: sftp-password 192.0.2.2: login: auth_method_not_offered"),
        "{text}"
    );
    assert!(!text.contains(&password), "the password leaked into check's text");
    let client = lab.client.clone();
    let secret_env = format!("WLA_TEST_PASSWORD={password}");
    lab.spawn(
        &client,
        &[
            "env",
            &secret_env,
            "RUST_LOG=debug",
            env!("CARGO_BIN_EXE_whitelist-audit"),
            "serve",
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:10022",
        ],
    );
    let body = lab.poll("http://127.0.0.1:10022/metrics", Duration::from_secs(30), |body| {
        body.contains("whitelist_audit_sftp_response_seconds{")
            && body.contains(r#"ip="192.0.2.4",port="22",check="login",state="auth_rejected"} 1"#)
            && body.contains(r#"ip="192.0.2.3",port="22",check="sftp",state="sftp_unavailable"} 1"#)
    });
    let scrape = Scrape::parse(&body);
    let one = |labels: &[(&str, &str)]| scrape.get("whitelist_audit_ssh_session_state", labels);
    assert_eq!(
        one(&[
            ("target", "sftp-password"),
            ("ip", "192.0.2.4"),
            ("check", "login"),
            ("state", "auth_rejected")
        ]),
        Some(1.0)
    );
    assert_eq!(
        one(&[
            ("target", "sftp-password"),
            ("ip", "192.0.2.3"),
            ("check", "sftp"),
            ("state", "sftp_unavailable")
        ]),
        Some(1.0)
    );
    assert!(body.contains("methods=\"publickey,password\""), "{body}");
    assert!(!body.contains(&password), "the password leaked into /metrics");
    // The refusals are on disk at once (a restart must not try them again), without the secret.
    let memory = std::fs::read_to_string(lab.dir.join("state/ssh-host-keys.json")).unwrap_or_default();
    assert!(
        memory.contains("refused_logins") && memory.contains("192.0.2.4"),
        "{memory}"
    );
    assert!(
        !memory.contains(&password),
        "the password leaked into the state directory"
    );
    let logs = lab.logs();
    assert!(logs.contains("SSH login check failed"), "debug logs were read: {logs}");
    assert!(!logs.contains(&password), "the password leaked into the daemon's log");
}

/// The idle lab: one sshd on 192.0.2.10, the monitoring user, and a config holding sessions idle.
fn idle_config(lab: &Lab, monitor: &str, hold_killed: &str, hold_short: &str) -> std::path::PathBuf {
    lab.write(
        "idle.yml",
        &format!(
            "global:\n  timeout: 2s\n  attempts: 1\n  state_dir: {dir}/state\n\
             targets:\n\
             \x20 - name: held-logged-in\n    static: [192.0.2.10]\n\
             \x20   ssh:\n      idle_hold: {hold_killed}\n      auth: {{username: {monitor}, password_env: WLA_TEST_PASSWORD}}\n\
             \x20 - name: held-before-auth\n    static: [192.0.2.10]\n\
             \x20   ssh:\n      idle_hold: {hold_killed}\n\
             \x20 - name: held-briefly\n    static: [192.0.2.10]\n\
             \x20   ssh:\n      idle_hold: {hold_short}\n\
             \x20 - name: grace-time\n    static: [192.0.2.11]\n\
             \x20   ssh:\n      idle_hold: 4s\n",
            dir = lab.dir.display(),
        ),
    )
}

#[test]
fn a_firewall_that_forgets_idle_flows_is_told_from_a_server_that_ends_them() {
    if !lab_allowed("a_firewall_that_forgets_idle_flows_is_told_from_a_server_that_ends_them") {
        return;
    }
    let id = id();
    let monitor = format!("wla{id}i");
    let password = format!("Idle-{id}-secret");
    let _users = Users::create(&[&monitor], &password);
    let chroot = Dir(std::path::PathBuf::from(format!("/run/wla-chroot-{id}-idle")));
    std::fs::create_dir_all(&chroot.0).unwrap();
    let mut lab = Lab::new();
    lab.add_server_addresses(&["192.0.2.10", "192.0.2.11"]);
    lab.start_sshd_with(&["192.0.2.10"], &sftp_server(&lab, &chroot.0, &[]));
    lab.start_sshd_with(&["192.0.2.11"], &sftp_server(&lab, &chroot.0, &["LoginGraceTime=2"]));
    // The firewall passes established flows and new SYNs, and drops what conntrack does not know.
    for rule in [
        &["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"][..],
        &[
            "-p",
            "tcp",
            "--syn",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "ACCEPT",
        ],
        &["-p", "tcp", "-j", "DROP"],
    ] {
        lab.firewall("iptables", rule);
    }
    let config = idle_config(&lab, &monitor, "6s", "1s");
    let env = [("WLA_TEST_PASSWORD", password.as_str())];
    let idle = |report: &Value, target: &str, ip: &str| session(report, target, ip)["idle"].clone();

    // Conntrack's default timeout (5 days): every hold is answered.
    let (_, stdout, stderr) = check(&lab, &config, &env);
    let before: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    for target in ["held-logged-in", "held-before-auth", "held-briefly"] {
        assert_eq!(
            idle(&before, target, "192.0.2.10")["state"],
            "idle_ok",
            "{target}: {stderr}"
        );
    }
    assert_eq!(idle(&before, "held-logged-in", "192.0.2.10")["authenticated"], true);
    assert_eq!(idle(&before, "held-before-auth", "192.0.2.10")["authenticated"], false);
    // LoginGraceTime 2 s ends a 4 s hold before authentication: the server, never the path.
    let grace = idle(&before, "grace-time", "192.0.2.11");
    assert_eq!(grace["state"], "server_closed", "{grace}");
    assert!(grace["detail"].as_str().unwrap().contains("LoginGraceTime"), "{grace}");
    let closed_after = grace["hold_seconds"].as_f64().unwrap();
    assert!((1.5..4.0).contains(&closed_after), "{grace}");

    // The firewall now forgets established flows idle for 3 s.
    lab.run(
        &lab.firewall,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_established=3"],
    );
    let (status, stdout, stderr) = check(&lab, &config, &env);
    let after: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    for target in ["held-logged-in", "held-before-auth"] {
        let held = idle(&after, target, "192.0.2.10");
        assert_eq!(held["state"], "idle_killed", "{target}: {held}\n{stderr}");
        let seconds = held["hold_seconds"].as_f64().unwrap();
        assert!((5.9..8.0).contains(&seconds), "{held}");
        assert!(held["detail"].as_str().unwrap().contains("forgot the flow"), "{held}");
    }
    // A hold shorter than the firewall's timeout still passes; the reachability probe too.
    assert_eq!(idle(&after, "held-briefly", "192.0.2.10")["state"], "idle_ok");
    let address = after["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["target"] == "held-briefly")
        .unwrap();
    assert_eq!(address["probe"]["state"], "open");
    assert_eq!(status, 1, "idle_killed is a problem: exit 1");
    assert!(
        !stdout.contains(&password) && !stderr.contains(&password),
        "the password leaked"
    );
}
