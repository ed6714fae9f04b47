//! `--web.config.file` against real clients on loopback: curl over TLS with and without the right
//! password and client certificate, plain HTTP sent to the TLS port, a reload that changes the
//! password, and a real Prometheus scraping over TLS with basic auth. Certificates are made by
//! the `openssl` command for each test, password hashes by the `bcrypt` crate.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::tools_allowed;

const BIN: &str = env!("CARGO_BIN_EXE_whitelist-audit");

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wla-web-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    let output = Command::new(program).args(args).current_dir(dir).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    output
}

/// A self-signed P-256 certificate `NAME.pem` with its key `NAME.key` in `dir`, valid two days.
fn self_signed(dir: &Path, name: &str, common_name: &str) {
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN={common_name}"),
            "-days",
            "2",
        ],
        dir,
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn certificates(dir: &Path) {
    self_signed(dir, "ca", "test CA");
    for (name, extension) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
            dir,
        );
        std::fs::write(dir.join(format!("{name}.ext")), format!("{extension}\n")).unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
                "-days",
                "2",
            ],
            dir,
        );
    }
}

/// A configuration whose only target is a closed loopback port: probes stay on this host.
fn audit_config(dir: &Path) -> PathBuf {
    let path = dir.join("audit.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  interval: 1h\n  timeout: 500ms\n  attempts: 1\ntargets:\n  - name: loop\n    port: {}\n    static: [127.0.0.1]\n",
            free_port()
        ),
    )
    .unwrap();
    path
}

fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// `web.yml`: TLS with the test's server certificate, user `prometheus` with `password`, then `more`.
fn write_web(dir: &Path, password: &str, more: &str) {
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: \"{}\"\n{more}",
            hash(password)
        ),
    )
    .unwrap();
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` with `web.yml` of `dir` and waits until it answers TLS.
fn serve(dir: &Path, port: u16) -> Daemon {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--config.file",
            "audit.yml",
            "--web.config.file",
            "web.yml",
            "--web.enable-lifecycle",
        ])
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

/// curl's HTTP status (0 when the connection or handshake failed) and body.
fn curl(dir: &Path, url: &str, extra: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
            "ca.pem",
        ])
        .args(extra)
        .arg(url)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn tls_and_basic_auth_guard_every_endpoint_but_health() {
    if !tools_allowed(
        "tls_and_basic_auth_guard_every_endpoint_but_health",
        &["openssl", "curl"],
    ) {
        return;
    }
    let dir = tempdir("auth");
    certificates(&dir);
    audit_config(&dir);
    write_web(
        &dir,
        "s3cret",
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    );
    let port = free_port();
    let _daemon = serve(&dir, port);
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");

    let (status, body) = curl(&dir, &url("/metrics"), &["-u", "prometheus:s3cret"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("whitelist_audit_build_info"));
    assert_eq!(curl(&dir, &url("/metrics"), &["-u", "prometheus:wrong"]).0, 401);
    assert_eq!(curl(&dir, &url("/metrics"), &["-u", "nobody:s3cret"]).0, 401);
    assert_eq!(curl(&dir, &url("/metrics"), &[]).0, 401);
    assert_eq!(curl(&dir, &url("/"), &[]).0, 401);
    assert_eq!(curl(&dir, &url("/-/reload"), &["-X", "POST"]).0, 401);
    assert_eq!(
        curl(&dir, &url("/-/healthy"), &[]).0,
        200,
        "health stays open for orchestrators"
    );
    let (_, headers) = curl(&dir, &url("/-/healthy"), &["-D", "-"]);
    assert!(
        headers.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{headers}"
    );

    // Plain HTTP to the TLS port is refused, and the listener goes on.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = plain.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("whitelist_audit"),
        "no metrics over plain HTTP"
    );
    assert_eq!(curl(&dir, &url("/metrics"), &["-u", "prometheus:s3cret"]).0, 200);

    // A reload takes a new password; the old one stops working.
    write_web(&dir, "n3w", "");
    assert_eq!(
        curl(&dir, &url("/-/reload"), &["-X", "POST", "-u", "prometheus:s3cret"]).0,
        200
    );
    assert_eq!(curl(&dir, &url("/metrics"), &["-u", "prometheus:s3cret"]).0, 401);
    assert_eq!(curl(&dir, &url("/metrics"), &["-u", "prometheus:n3w"]).0, 200);

    // A broken web file at reload is refused and the running one kept.
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: server.pem\n  key_file: missing.key\n",
    )
    .unwrap();
    let (status, body) = curl(&dir, &url("/-/reload"), &["-X", "POST", "-u", "prometheus:n3w"]);
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("web.yml:3:13: tls_server_config.key_file: cannot read"),
        "{body}"
    );
    assert_eq!(curl(&dir, &url("/metrics"), &["-u", "prometheus:n3w"]).0, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_required_client_certificate_is_checked_in_the_handshake() {
    if !tools_allowed(
        "a_required_client_certificate_is_checked_in_the_handshake",
        &["openssl", "curl"],
    ) {
        return;
    }
    let dir = tempdir("mtls");
    certificates(&dir);
    audit_config(&dir);
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\n",
    )
    .unwrap();
    let port = free_port();
    let _daemon = serve(&dir, port);
    let url = format!("https://127.0.0.1:{port}/metrics");
    assert_eq!(
        curl(&dir, &url, &[]).0,
        0,
        "no client certificate: the handshake is refused"
    );
    assert_eq!(
        curl(
            &dir,
            &url,
            &[
                "--tlsv1.2",
                "--tls-max",
                "1.2",
                "--cert",
                "client.pem",
                "--key",
                "client.key"
            ]
        )
        .0,
        0
    );
    let (status, body) = curl(&dir, &url, &["--cert", "client.pem", "--key", "client.key"]);
    assert_eq!(status, 200, "{body}");
    // A certificate its own CA signed is not one of ours.
    self_signed(&dir, "stranger", "stranger");
    assert_eq!(
        curl(&dir, &url, &["--cert", "stranger.pem", "--key", "stranger.key"]).0,
        0
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_web_files_are_refused_at_start_with_file_line_and_key() {
    let dir = tempdir("bad");
    audit_config(&dir);
    for (text, expected) in [
        (
            "tls_server_config:\n  cert_file: a.pem\n",
            "web.yml:2:3: tls_server_config.key_file: `key_file` is required with tls_server_config",
        ),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  min_version: TLS10\n",
            "web.yml:2:14: tls_server_config.cert_file: cannot read",
        ),
        (
            "basic_auth_users:\n  alice: hunter2\n",
            "web.yml:2:10: basic_auth_users.alice: not a bcrypt hash",
        ),
        (
            "basic_auth_user:\n  alice: x\n",
            "web.yml:1:1: basic_auth_user: unknown field `basic_auth_user`",
        ),
        (
            "http_server_config:\n  headers:\n    Server: x\n",
            "web.yml:3:13: http_server_config.headers.Server: `Server` cannot be set",
        ),
    ] {
        std::fs::write(dir.join("web.yml"), text).unwrap();
        let output = Command::new(BIN)
            .args(["serve", "--config.file", "audit.yml", "--web.config.file", "web.yml"])
            .args(["--web.listen-address", &format!("127.0.0.1:{}", free_port())])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}\nexpected {expected}\ngot {stderr}");
    }
    std::fs::write(dir.join("a.pem"), "x").unwrap();
    std::fs::write(dir.join("a.key"), "x").unwrap();
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  min_version: TLS10\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--config.file", "audit.yml", "--web.config.file", "web.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "web.yml:4:16: tls_server_config.min_version: TLS10 is not offered (rustls speaks TLS 1.2 and 1.3 only)"
        ),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_a_wrong_password_is_a_401() {
    if !tools_allowed(
        "prometheus_scrapes_over_tls_with_basic_auth",
        &["openssl", "prometheus", "curl"],
    ) {
        return;
    }
    let dir = tempdir("prometheus");
    certificates(&dir);
    audit_config(&dir);
    write_web(&dir, "s3cret", "");
    let port = free_port();
    let _daemon = serve(&dir, port);
    let prometheus_port = free_port();
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    basic_auth: {{username: prometheus, password: {password}}}\n    tls_config: {{ca_file: {}}}\n    static_configs: [{{targets: [\"127.0.0.1:{port}\"]}}]\n",
            dir.join("ca.pem").display()
        )
    };
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("right", "s3cret"),
            job("wrong", "nope")
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _prometheus = Daemon(prometheus);
    let api = format!("http://127.0.0.1:{prometheus_port}/api/v1/targets");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "3", &api])
            .output()
            .unwrap();
        let targets: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let health = |job: &str| {
            targets["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["labels"]["job"] == job)
                .map(|t| {
                    (
                        t["health"].as_str().unwrap_or_default().to_string(),
                        t["lastError"].as_str().unwrap_or_default().to_string(),
                    )
                })
        };
        if let (Some((right, _)), Some((wrong, error))) = (health("right"), health("wrong"))
            && right == "up"
            && wrong == "down"
        {
            assert!(error.contains("401"), "{error}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped as expected: {targets}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
