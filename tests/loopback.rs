//! Probing, reload and the command line against peers scripted by the test on loopback: no root
//! needed. Each peer is a listener on 127.0.0.x that behaves one way (a real SSH server's
//! greeting, garbage, silence, a flood) and reports what it saw.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use whitelist_audit::config::CheckKind;
use whitelist_audit::core::outcome::{ProbeResult, ProbeState};
use whitelist_audit::core::ssh::SshEvidence;
use whitelist_audit::probe::ssh::wire;
use whitelist_audit::probe::{self, Os, ProbeSpec};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_whitelist-audit");

/// A listener whose every connection is handled by `behave`, on its own thread, until the test ends.
fn peer(address: &str, behave: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind(address).unwrap();
    let local = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let behave = Arc::clone(&behave);
            thread::spawn(move || behave(stream, n));
        }
    });
    local
}

/// Reads the client's first line (our identification), bounded.
fn read_line(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 300 && stream.read(&mut byte).unwrap_or(0) == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).to_string()
}

fn spec(check: CheckKind, timeout_ms: u64, attempts: u32, retry_ms: u64) -> ProbeSpec {
    ProbeSpec {
        port: 0,
        check,
        timeout: Duration::from_millis(timeout_ms),
        attempts,
        retry_delay: Duration::from_millis(retry_ms),
    }
}

async fn probe_at(address: SocketAddr, mut spec: ProbeSpec) -> ProbeResult {
    spec.port = address.port();
    let slots = Semaphore::new(4);
    let global = Semaphore::new(16);
    probe::probe(&Os, address.ip(), spec, &slots, &global).await
}

#[tokio::test]
async fn an_ssh_server_is_open_and_hears_our_identification() {
    let heard = Arc::new(Mutex::new(String::new()));
    let seen = Arc::clone(&heard);
    let server = peer("127.0.0.1:0", move |mut s, _| {
        s.write_all(&greeting(
            b"Authorized use only\r\nSSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
        ))
        .unwrap();
        *seen.lock().unwrap() = read_line(&mut s);
    });
    let result = probe_at(server, spec(CheckKind::Ssh, 2000, 3, 100)).await;
    assert_eq!(result.state, ProbeState::Open, "{}", result.detail);
    let identification = &result
        .evidence_as::<SshEvidence>()
        .expect("SSH evidence")
        .identification;
    assert_eq!(identification.software, "OpenSSH_9.6p1");
    assert_eq!(result.attempts, 1);
    // The server thread records our line after we close; give it a bounded moment.
    for _ in 0..50 {
        if !heard.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        heard.lock().unwrap().starts_with("SSH-2.0-whitelist_audit_"),
        "{:?}",
        heard.lock().unwrap()
    );
}

#[tokio::test]
async fn a_web_server_on_the_ssh_port_is_a_protocol_error() {
    let server = peer("127.0.0.1:0", |mut s, _| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        thread::sleep(Duration::from_millis(200));
    });
    let result = probe_at(server, spec(CheckKind::Ssh, 2000, 1, 0)).await;
    assert_eq!(result.state, ProbeState::ProtocolError);
    assert!(result.detail.contains("HTTP/1.1 400 Bad Request"), "{}", result.detail);
    // The same peer passes a plain TCP check.
    let result = probe_at(server, spec(CheckKind::Tcp, 2000, 1, 0)).await;
    assert_eq!(result.state, ProbeState::Open);
}

#[tokio::test]
async fn a_silent_tarpit_is_a_protocol_error_after_the_timeout() {
    let server = peer("127.0.0.1:0", |_s, _| thread::sleep(Duration::from_secs(5)));
    let result = probe_at(server, spec(CheckKind::Ssh, 300, 1, 0)).await;
    assert_eq!(result.state, ProbeState::ProtocolError);
    assert!(result.detail.contains("nothing was received"), "{}", result.detail);
}

#[tokio::test]
async fn a_flood_of_garbage_is_cut_off_at_the_read_cap() {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let server = peer("127.0.0.1:0", move |mut s, _| {
        let chunk = vec![b'x'; 64 * 1024];
        // Up to 64 MiB, or until the auditor hangs up.
        for _ in 0..1024 {
            if s.write_all(&chunk).is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    let result = probe_at(server, spec(CheckKind::Ssh, 5000, 1, 0)).await;
    assert_eq!(result.state, ProbeState::ProtocolError);
    assert!(result.detail.contains("first 8192 bytes"), "{}", result.detail);
    thread::sleep(Duration::from_millis(200));
    assert!(
        sent.load(Ordering::Relaxed) < 16 * 1024 * 1024,
        "the auditor kept reading: {} bytes",
        sent.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn a_closed_port_uses_every_attempt_with_the_retry_delay_between() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // dropped: nothing listens
    let started = Instant::now();
    let result = probe_at(closed, spec(CheckKind::Ssh, 1000, 3, 150)).await;
    assert_eq!(result.state, ProbeState::Refused, "{}", result.detail);
    assert_eq!(result.attempts, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "two retry delays of 150ms lie between three attempts"
    );
}

#[tokio::test]
async fn the_first_success_ends_the_probe() {
    let server = peer("127.0.0.1:0", |mut s, n| {
        if n > 0 {
            let _ = s.write_all(&greeting(b"SSH-2.0-dropbear_2022.83\r\n"));
            let _ = read_line(&mut s);
        } // the first connection is closed at once, as MaxStartups does
    });
    let result = probe_at(server, spec(CheckKind::Ssh, 2000, 3, 50)).await;
    assert_eq!(
        (result.state, result.attempts),
        (ProbeState::Open, 2),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn probes_of_one_target_never_exceed_its_concurrency_limit() {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (Arc::clone(&now), Arc::clone(&peak));
    let server = peer("127.0.0.1:0", move |mut s, _| {
        let current = n.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(current, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(100));
        n.fetch_sub(1, Ordering::SeqCst);
        let _ = s.write_all(&greeting(b"SSH-2.0-Slow_1.0\r\n"));
    });
    let target_slots = Arc::new(Semaphore::new(3));
    let global = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (target_slots, global) = (Arc::clone(&target_slots), Arc::clone(&global));
        let mut spec = spec(CheckKind::Ssh, 5000, 1, 0);
        spec.port = server.port();
        tasks.spawn(async move { probe::probe(&Os, server.ip(), spec, &target_slots, &global).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().state, ProbeState::Open);
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak {peak} connections at once");
}

// ---------------------------------------------------------------- the binary

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wla-loopback-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What a fake SSH server sends: `identification` and a KEXINIT whose key exchange the probe
/// does not complete, so it reads the algorithms and closes without waiting for a host key.
fn greeting(identification: &[u8]) -> Vec<u8> {
    let lists = [
        "diffie-hellman-group14-sha256",
        "ssh-ed25519",
        "aes128-ctr",
        "aes128-ctr",
        "hmac-sha2-256",
        "hmac-sha2-256",
        "none",
        "none",
        "",
        "",
    ]
    .map(|l| l.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect());
    let mut bytes = identification.to_vec();
    bytes.extend(wire::packet(&wire::kexinit_payload([0; 16], &lists)));
    bytes
}

/// A fake SSH server on `ip:port` (the same port on several loopback addresses).
fn ssh_peer(ip: &str, port: u16) {
    peer(&format!("{ip}:{port}"), |mut s, _| {
        let _ = s.write_all(&greeting(b"SSH-2.0-OpenSSH_9.2p1\r\n"));
        let _ = read_line(&mut s);
    });
}

fn http(address: &str, method: &str, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

fn wait_for(address: &str, path: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = http(address, "GET", path);
        if status == 200 && ready(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} not ready within {limit:?}: {status} {body}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on a free loopback port and waits until it is ready.
fn serve(config: &Path) -> (Daemon, String) {
    serve_with(config, &[])
}

/// `serve` with more flags.
fn serve_with(config: &Path, flags: &[&str]) -> (Daemon, String) {
    let web = format!("127.0.0.1:{}", free_port());
    (serve_at_with(config, &web, &web, flags), web)
}

/// Starts `serve` listening on `listen` and waits until it is ready, asked at `reach`.
fn serve_at(config: &Path, listen: &str, reach: &str) -> Daemon {
    serve_at_with(config, listen, reach, &[])
}

fn serve_at_with(config: &Path, listen: &str, reach: &str, flags: &[&str]) -> Daemon {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            listen,
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    wait_for(reach, "/-/ready", Duration::from_secs(10), |_| true);
    daemon
}

fn write_config(path: &Path, port: u16, statics: &[&str]) {
    write_config_every(path, "1s", port, statics);
}

/// A configuration probing `statics` on `port` once per `interval`.
fn write_config_every(path: &Path, interval: &str, port: u16, statics: &[&str]) {
    let list: Vec<String> = statics.iter().map(|s| format!("\"{s}\"")).collect();
    std::fs::write(
        path,
        format!(
            "global:\n  interval: {interval}\n  timeout: 500ms\n  attempts: 1\ntargets:\n  - name: loop\n    port: {port}\n    static: [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
}

#[test]
fn reload_drops_departed_addresses_and_refuses_a_bad_file() {
    let dir = tempdir("reload");
    let port = free_port();
    ssh_peer("127.0.0.1", port);
    let config = dir.join("config.yml");
    write_config(&config, port, &["127.0.0.1", "127.0.0.2"]); // nothing listens on .2: refused
    let (_daemon, web) = serve_with(&config, &["--web.enable-lifecycle"]);
    let metrics = wait_for(&web, "/metrics", Duration::from_secs(5), |b| {
        b.contains("ip=\"127.0.0.2\"")
    });
    assert!(
        metrics.contains(&format!(
            "whitelist_audit_ip_up{{target=\"loop\",ip=\"127.0.0.1\",port=\"{port}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "whitelist_audit_ip_state{{target=\"loop\",ip=\"127.0.0.2\",port=\"{port}\",state=\"refused\"}} 1"
    )));
    assert!(metrics.contains("whitelist_audit_build_info{version=\""));
    assert!(
        !metrics.contains("# EOF"),
        "a scraper that does not ask for OpenMetrics gets the text format"
    );

    write_config(&config, port, &["127.0.0.1"]);
    let (status, body) = http(&web, "POST", "/-/reload");
    assert_eq!(status, 200, "{body}");
    let metrics = wait_for(&web, "/metrics", Duration::from_secs(5), |_| true);
    assert!(
        !metrics.contains("127.0.0.2"),
        "a departed address keeps no series:\n{metrics}"
    );
    assert!(
        metrics.contains("whitelist_audit_config_last_reload_successful 1"),
        "{metrics}"
    );

    std::fs::write(&config, "global:\n  attempts: 0\ntargets: []\n").unwrap();
    let (status, body) = http(&web, "POST", "/-/reload");
    assert_eq!(status, 500);
    assert!(
        body.contains("config.yml:2:13: global.attempts: invalid count 0"),
        "{body}"
    );
    let metrics = wait_for(&web, "/metrics", Duration::from_secs(5), |_| true);
    assert!(
        metrics.contains("whitelist_audit_config_last_reload_successful 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ip=\"127.0.0.1\""),
        "the running configuration stays in force"
    );
}

#[test]
fn check_exit_codes_follow_the_contract() {
    let dir = tempdir("exit");
    let port = free_port();
    ssh_peer("127.0.0.1", port);
    ssh_peer("127.0.0.3", port);
    let config = dir.join("clean.yml");
    write_config(&config, port, &["127.0.0.1", "127.0.0.3"]);
    let out = Command::new(BIN)
        .args(["check", "--config.file", config.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.starts_with("TARGET"), "{table}");
    assert!(
        table.contains("summary: 2 addresses of 1 target: 2 open, 0 not open; findings: 0"),
        "{table}"
    );

    write_config(&config, port, &["127.0.0.1", "127.0.0.4"]);
    let out = Command::new(BIN)
        .args(["check", "--config.file", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a blocked address is a finding");

    std::fs::write(&config, "targets:\n  - name: x\n    sttic: [127.0.0.1]\n").unwrap();
    for command in ["check", "validate", "serve"] {
        let out = Command::new(BIN)
            .args([command, "--config.file", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("clean.yml:3:5: targets[0].sttic: unknown field `sttic`"),
            "{command}: {stderr}"
        );
    }
    let out = Command::new(BIN).args(["check", "--port", "22"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad command line is bad input");
    let out = Command::new(BIN)
        .args(["validate", "--config.file", "examples/whitelist-audit.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_host_resolves_and_probes_every_address() {
    let port = free_port();
    ssh_peer("127.0.0.1", port);
    let ipv6 = TcpListener::bind(("::1", port)).is_ok(); // released at once; only tells if ::1 works here
    if ipv6 {
        peer(&format!("[::1]:{port}"), |mut s, _| {
            let _ = s.write_all(&greeting(b"SSH-2.0-OpenSSH_9.2p1\r\n"));
            let _ = read_line(&mut s);
        });
    }
    let out = Command::new(BIN)
        .args([
            "check",
            "--host",
            "localhost",
            "--port",
            &port.to_string(),
            "--timeout",
            "1s",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ips: Vec<IpAddr> = report["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{report}");
    for address in report["addresses"].as_array().unwrap() {
        assert_eq!(address["whitelisted"], serde_json::Value::Null, "no whitelist declared");
        let ip: IpAddr = address["ip"].as_str().unwrap().parse().unwrap();
        if ip.is_ipv4() || ipv6 {
            assert_eq!(address["probe"]["state"], "open", "{ip}: {report}");
            assert_eq!(address["finding"], serde_json::Value::Null, "{ip}: {report}");
            assert!(
                address["probe"]["software"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("OpenSSH_")),
                "{ip}: {report}"
            );
        } else {
            // localhost resolves to ::1 on a host without IPv6: that is this host's limit, not a
            // firewall's verdict.
            assert_eq!(address["probe"]["state"], "error", "{ip}: {report}");
            assert_eq!(address["finding"], serde_json::Value::Null, "{ip}: {report}");
        }
    }
    let exit = if ips.len() == 1 || ipv6 {
        "clean: 0"
    } else {
        "::1 not probed: 1"
    };
    assert_eq!(
        out.status.code(),
        Some(exit[exit.len() - 1..].parse().unwrap()),
        "{exit}: {report}"
    );
}

#[test]
fn serve_spreads_probes_across_the_interval_and_stops_on_sigterm() {
    let dir = tempdir("spread");
    let port = free_port();
    let accepted: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let addresses: Vec<String> = (10..18).map(|i| format!("127.0.0.{i}")).collect();
    for address in &addresses {
        let accepted = Arc::clone(&accepted);
        peer(&format!("{address}:{port}"), move |mut s, _| {
            accepted.lock().unwrap().push(Instant::now());
            let _ = s.write_all(&greeting(b"SSH-2.0-OpenSSH_9.2p1\r\n"));
            let _ = read_line(&mut s);
        });
    }
    let config = dir.join("config.yml");
    let list: Vec<&str> = addresses.iter().map(String::as_str).collect();
    write_config(&config, port, &list);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("interval: 1s", "interval: 3s"),
    )
    .unwrap();
    let (mut daemon, _web) = serve(&config);
    let first_sweep: Vec<Instant> = accepted.lock().unwrap().iter().take(addresses.len()).copied().collect();
    assert_eq!(first_sweep.len(), addresses.len());
    let spread = *first_sweep.iter().max().unwrap() - *first_sweep.iter().min().unwrap();
    // Eight starts spread over 3s are 375ms apart: the last starts ~2.6s after the first. A burst
    // would put them all within milliseconds.
    assert!(
        spread >= Duration::from_millis(1500),
        "starts spread over only {spread:?}"
    );

    Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn running_out_of_file_descriptors_is_this_hosts_error_not_a_firewall_verdict() {
    // A listener that completes handshakes (its backlog) but never speaks: each SSH probe holds its
    // socket for the whole timeout. 48 probes at once against `ulimit -n 16` must run out.
    let tarpit = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tarpit.local_addr().unwrap().port();
    let dir = tempdir("emfile");
    let mut targets = String::new();
    for n in 0..48 {
        writeln!(targets, "  - {{name: t{n}, port: {port}, static: [127.0.0.1]}}").unwrap();
    }
    let yaml = format!("global: {{timeout: 2s, attempts: 1, concurrency: 48, state_dir: state}}\ntargets:\n{targets}");
    let config = dir.join("emfile.yml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -n 16 && exec "$0" check --config.file "$1" --output json"#)
        .arg(BIN)
        .arg(&config)
        .output()
        .unwrap();
    drop(tarpit);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let addresses = report["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 48);
    let mut errors = 0;
    for address in addresses {
        let probe = &address["probe"];
        match probe["state"].as_str().unwrap() {
            "error" => {
                errors += 1;
                assert_eq!(probe["error_reason"], "fd_exhausted", "{address}");
                assert_eq!(address["finding"], serde_json::Value::Null, "never blocked: {address}");
            }
            // The probes that got a descriptor met the silent listener.
            "protocol_error" => assert_eq!(address["finding"], "blocked", "{address}"),
            other => panic!("{other}: a lack of descriptors became a network verdict: {address}"),
        }
    }
    assert!(errors > 0, "the limit was never reached: {report}");
    assert_eq!(report["summary"]["errors"], errors);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an address that could not be probed is not clean"
    );
}

#[test]
fn tcp_banner_takes_any_first_line_and_tells_a_silent_service_apart() {
    let smtp = peer("127.0.0.1:0", |mut s, _| {
        let _ = s.write_all(b"220 mx.vendor.example ESMTP ready\r\n");
        thread::sleep(Duration::from_secs(2));
    });
    // An implicit-TLS port waits for the client's hello: nothing comes.
    let implicit_tls = peer("127.0.0.2:0", |_s, _| thread::sleep(Duration::from_secs(3)));
    let dir = tempdir("banner");
    let config = dir.join("banner.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{timeout: 1s, attempts: 1, state_dir: state}}\ntargets:\n  - {{name: smtp, check: tcp_banner, port: {}, static: [127.0.0.1]}}\n  - {{name: ftps, check: tcp_banner, port: {}, static: [127.0.0.2]}}\n",
            smtp.port(),
            implicit_tls.port()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config.file", config.to_str().unwrap(), "--output", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probe = |target: &str| {
        report["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["target"] == target)
            .unwrap()["probe"]
            .clone()
    };
    assert_eq!(probe("smtp")["state"], "open", "{report}");
    assert_eq!(probe("smtp")["banner"], "220 mx.vendor.example ESMTP ready");
    assert_eq!(probe("ftps")["state"], "protocol_error", "{report}");
    assert!(
        probe("ftps")["detail"].as_str().unwrap().contains("no banner"),
        "{report}"
    );
    assert_eq!(out.status.code(), Some(1), "the silent service is blocked");

    // The same kind from the command line, with the banner in the table.
    let table = Command::new(BIN)
        .args(["check", "--host", "localhost", "--check", "tcp_banner", "--port"])
        .arg(smtp.port().to_string())
        .args(["--timeout", "1s", "--attempts", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("banner: 220 mx.vendor.example ESMTP ready"), "{text}");
}

#[test]
fn the_demo_shows_every_finding_on_loopback_and_cleans_up() {
    let web = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args(["demo", "--web.listen-address", &web])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut intro = String::new();
    {
        let stdout = child.stdout.as_mut().unwrap();
        let mut byte = [0u8; 1];
        while !intro.contains("Ctrl-C") && intro.len() < 8192 && stdout.read(&mut byte).unwrap_or(0) == 1 {
            intro.push(byte[0] as char);
        }
    }
    let daemon = Daemon(child);
    assert!(intro.contains(&format!("http://{web}/metrics")), "{intro}");
    let dir: PathBuf = intro
        .lines()
        .next()
        .and_then(|l| l.rsplit(" in ").next())
        .unwrap()
        .into();
    assert!(dir.join("demo.yml").exists(), "{intro}");
    wait_for(&web, "/-/ready", Duration::from_secs(30), |_| true);
    let metrics = wait_for(&web, "/metrics", Duration::from_secs(5), |_| true);
    for (ip, state) in [
        ("127.0.0.11", "open"),
        ("127.0.0.12", "refused"),
        ("127.0.0.13", "timeout"),
        ("127.0.0.14", "protocol_error"),
        ("127.0.0.15", "refused"),
        ("127.0.0.16", "open"),
    ] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("whitelist_audit_ip_state{") && l.contains(&format!("ip=\"{ip}\"")) && l.ends_with(" 1.0")
            })
            .unwrap_or_else(|| panic!("{ip}\n{metrics}"));
        assert!(line.contains(&format!("state=\"{state}\"")), "{ip}: {line}");
    }
    for (ip, finding) in [
        ("127.0.0.12", "blocked"),
        ("127.0.0.13", "blocked"),
        ("127.0.0.14", "blocked"),
        ("127.0.0.15", "missing"),
        ("127.0.0.16", "undeclared"),
        ("127.0.0.17", "stale"),
        ("0.0.0.0", "bogus_address"),
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with("whitelist_audit_ip_finding{")
                && l.contains(&format!("ip=\"{ip}\""))
                && l.contains(&format!("finding=\"{finding}\""))),
            "{ip} {finding}\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("whitelist_audit_ip_state{target=\"demo-sftp\",ip=\"0.0.0.0\""),
        "the bogus address is never probed"
    );
    // SIGTERM: the demo stops and removes its files.
    let pid = daemon.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// dnsmasq on loopback answering `only-a.test` from a hosts file: A answered, AAAA refused, as
/// dnsmasq without upstreams does.
struct Dnsmasq(Child, u16, PathBuf);

impl Dnsmasq {
    fn start(name: &str, hosts: &str) -> Self {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempdir(name);
        let file = dir.join("hosts");
        std::fs::write(&file, hosts).unwrap();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
            ])
            .arg(format!("--addn-hosts={}", file.display()))
            .args(["--listen-address=127.0.0.1", &format!("--port={port}"), "--user=root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        Self(child, port, dir)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.2);
    }
}

fn check_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

#[test]
fn a_refused_aaaa_keeps_the_a_answers_and_loopback_from_dns_is_bogus() {
    if !common::tools_allowed("a_refused_aaaa_keeps_the_a_answers", &["dnsmasq"]) {
        return;
    }
    let dns = Dnsmasq::start("dns-family", "127.0.0.1 only-a.test\n");
    let resolver = format!("127.0.0.1:{}", dns.1);
    let port = free_port();
    ssh_peer("127.0.0.1", port);
    let port = port.to_string();
    let base = [
        "--host",
        "only-a.test",
        "--resolver",
        &resolver,
        "--port",
        &port,
        "--timeout",
        "1s",
    ];

    // A loopback answer is a sinkhole's, unless the user says it is a tunnel.
    let (code, report) = check_json(&base);
    let address = &report["addresses"][0];
    assert_eq!(address["finding"], "bogus_address", "{report}");
    assert_eq!(address["bogus"]["source"], "dns", "{report}");
    assert_eq!(address["probe"], serde_json::Value::Null, "never probed: {report}");
    assert_eq!(code, Some(1));

    // With it: the A answer is probed although AAAA was refused, and the family says so.
    let (code, report) = check_json(&[&base[..], &["--allow-local"]].concat());
    assert_eq!(report["addresses"][0]["probe"]["state"], "open", "{report}");
    let dns_source = &report["targets"][0]["sources"][0];
    assert_eq!(
        dns_source["families"],
        serde_json::json!([["ipv4", true], ["ipv6", false]]),
        "{report}"
    );
    assert_eq!(dns_source["up"], false, "a failing family fails the source: {report}");
    assert_eq!(code, Some(1));

    // -4 asks for A alone: clean.
    let (code, report) = check_json(&[&base[..], &["--allow-local", "-4"]].concat());
    assert_eq!(
        report["targets"][0]["sources"][0]["families"],
        serde_json::json!([["ipv4", true]])
    );
    assert_eq!(code, Some(0), "{report}");
}

/// Every `check` example of the README's first section runs as written, with its names answered by
/// a local dnsmasq and its documentation addresses moved to loopback (tests never leave the host).
#[test]
fn the_readmes_check_examples_run_as_written() {
    if !common::tools_allowed("the_readmes_check_examples_run_as_written", &["dnsmasq"]) {
        return;
    }
    let dns = Dnsmasq::start(
        "readme",
        "127.0.0.31 sftp.vendor.example\n127.0.0.32 mail.vendor.example\n",
    );
    let resolver = format!("127.0.0.1:{}", dns.1);
    let dir = tempdir("readme");
    std::fs::write(
        dir.join("whitelist.yml"),
        "allow:\n  - addresses: [127.0.0.31]\n    ports: [22]\n    target: sftp.vendor.example\n",
    )
    .unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## First minute").nth(1).unwrap();
    let block = section.split("```sh").nth(1).unwrap().split("```").next().unwrap();
    let examples: Vec<&str> = block
        .lines()
        .filter(|l| l.starts_with("whitelist-audit check"))
        .collect();
    assert!(examples.len() >= 3, "{block}");
    let moved = [
        ("192.0.2.53", resolver.as_str()),
        ("203.0.113.10", "127.0.0.33"),
        ("198.51.100.7", "127.0.0.34"),
        ("198.51.100.8", "127.0.0.35"),
    ];
    for example in examples {
        let command = example.split('#').next().unwrap();
        let mut args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|word| {
                moved
                    .iter()
                    .find(|(from, _)| *from == word)
                    .map_or(word, |(_, to)| *to)
                    .to_string()
            })
            .collect();
        if !args.iter().any(|a| a == "--resolver") {
            args.extend(["--resolver".into(), resolver.clone()]);
        }
        args.extend(["--allow-local", "--timeout", "500ms", "--attempts", "1"].map(String::from));
        let out = Command::new(BIN).args(&args).current_dir(&dir).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{example}\n{args:?}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args.iter().any(|a| a == "json") {
            let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(
                report["addresses"][0]["target"], "127.0.0.33",
                "{example}: an address names its target"
            );
        } else {
            assert!(stdout.contains("summary: "), "{example}\n{stdout}");
            let host = args[args.iter().position(|a| a == "--host").unwrap() + 1].clone();
            assert!(
                stdout.lines().nth(1).is_some_and(|row| row.starts_with(&host)),
                "{example}: the target is named after the host, as the README shows\n{stdout}"
            );
        }
    }
}

#[test]
fn listen_address_takes_the_port_only_form_of_every_exporter() {
    let dir = tempdir("listen");
    let config = dir.join("c.yml");
    write_config(&config, free_port(), &["127.0.0.1"]);
    let port = free_port();
    // Every interface: loopback answers.
    let _daemon = serve_at(&config, &format!(":{port}"), &format!("127.0.0.1:{port}"));
    let refused = Command::new(BIN)
        .args([
            "serve",
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            "10022",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("write :10022"));
}

#[test]
fn check_shows_progress_on_a_terminal_only() {
    if !common::tools_allowed("check_shows_progress_on_a_terminal_only", &["script"]) {
        return;
    }
    // A silent listener: the probe takes its whole 2 s timeout.
    let tarpit = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tarpit.local_addr().unwrap().port().to_string();
    let command = format!("{BIN} check --static 127.0.0.1 --port {port} --timeout 2s --attempts 1");
    // `script` gives the command a terminal; its output holds what the terminal showed.
    let on_terminal = Command::new("script")
        .args(["-qc", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(shown.contains("probed 0 of 1 addresses"), "{shown}");
    let piped = Command::new("sh").args(["-c", &command]).output().unwrap();
    assert!(piped.stderr.is_empty(), "{}", String::from_utf8_lossy(&piped.stderr));
    assert!(String::from_utf8_lossy(&piped.stdout).starts_with("TARGET"));
    drop(tarpit);
}

#[test]
fn flags_that_cannot_apply_with_a_configuration_file_are_refused() {
    let dir = tempdir("flags");
    let config = dir.join("c.yml");
    write_config(&config, 1, &["127.0.0.1"]);
    for flag in [
        &["--port", "19999"][..],
        &["--resolver", "127.0.0.1"],
        &["--timeout", "1s"],
        &["-4"],
    ] {
        let out = Command::new(BIN)
            .args(["check", "--config.file", config.to_str().unwrap()])
            .args(flag)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?} was silently ignored: {stderr}");
        assert!(stderr.contains("cannot be used with"), "{flag:?}: {stderr}");
    }
}

// ---------------------------------------------------------------- the HTTP listener, as a hostile client

/// A fake SSH server on 127.0.0.1 that counts the connections it gets.
fn counting_ssh_peer(port: u16) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    peer(&format!("127.0.0.1:{port}"), move |mut s, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        let _ = s.write_all(&greeting(b"SSH-2.0-OpenSSH_9.2p1\r\n"));
        let _ = read_line(&mut s);
    });
    count
}

/// Probed once an hour: after the first sweep, a probe is what a reload caused.
fn slow_config(path: &Path, port: u16, statics: &[&str]) {
    write_config_every(path, "1h", port, statics);
}

/// Posts `/-/reload` `n` times at once; every status.
fn reload_burst(web: &str, n: usize) -> Vec<u16> {
    let posts: Vec<_> = (0..n)
        .map(|_| {
            let web = web.to_string();
            thread::spawn(move || http(&web, "POST", "/-/reload").0)
        })
        .collect();
    posts.into_iter().map(|p| p.join().unwrap()).collect()
}

#[test]
fn reload_needs_the_lifecycle_flag_and_a_burst_costs_one_sweep() {
    let dir = tempdir("lifecycle");
    let port = free_port();
    let connections = counting_ssh_peer(port);
    let config = dir.join("c.yml");
    slow_config(&config, port, &["127.0.0.1"]);

    let (plain, web) = serve(&config);
    let (status, body) = http(&web, "POST", "/-/reload");
    assert_eq!((status, body.as_str()), (403, "Lifecycle API is not enabled.\n"));
    drop(plain);

    let (_daemon, web) = serve_with(&config, &["--web.enable-lifecycle"]);
    let settled = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while connections.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        // Long enough for a second sweep to show, were one started.
        thread::sleep(Duration::from_millis(1500));
        connections.load(Ordering::SeqCst)
    };
    let before = settled(2); // one sweep by each daemon
    assert!(reload_burst(&web, 40).iter().all(|&s| s == 200));
    assert_eq!(settled(before), before, "reloading an unchanged file probes nothing");

    slow_config(&config, port, &["127.0.0.1", "127.0.0.2"]);
    assert!(reload_burst(&web, 40).iter().all(|&s| s == 200));
    assert_eq!(
        settled(before + 1),
        before + 1,
        "a burst of reloads of a changed file sweeps once"
    );
    let metrics = wait_for(&web, "/metrics", Duration::from_secs(5), |b| b.contains("127.0.0.2"));
    assert!(metrics.contains("whitelist_audit_config_last_reload_successful 1"));
}

#[test]
fn idle_connections_beyond_the_bound_are_refused_and_closed_in_time() {
    let dir = tempdir("idle");
    let config = dir.join("c.yml");
    slow_config(&config, free_port(), &["127.0.0.1"]);
    let (_daemon, web) = serve_with(&config, &["--web.max-connections", "4"]);
    // Four idle connections take every slot...
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&web).unwrap()).collect();
    thread::sleep(Duration::from_millis(300));
    // ...so the fifth is closed at once instead of waiting in a queue.
    let mut fifth = TcpStream::connect(&web).unwrap();
    fifth.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = write!(fifth, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut answer = Vec::new();
    let started = Instant::now();
    let _ = fifth.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(started.elapsed() < Duration::from_secs(2));
    // The idle ones are closed after the 10 s header timeout, and scrapes get through again.
    for mut stream in idle {
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    assert!(started.elapsed() < Duration::from_secs(13), "{:?}", started.elapsed());
    let (status, _) = http(&web, "GET", "/metrics");
    assert_eq!(status, 200);
}

#[test]
fn oversized_request_heads_and_bodies_are_refused() {
    let dir = tempdir("oversized");
    let config = dir.join("c.yml");
    slow_config(&config, free_port(), &["127.0.0.1"]);
    let (_daemon, web) = serve_with(&config, &["--web.enable-lifecycle"]);
    let status_of = |request: &[u8]| {
        let mut stream = TcpStream::connect(&web).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = stream.write_all(request);
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0)
    };
    let huge_header = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status_of(huge_header.as_bytes()), 431);
    let body = "x".repeat(10_000);
    let big_body = format!(
        "POST /-/reload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(status_of(big_body.as_bytes()), 413);
}

#[test]
fn a_flood_of_idle_connections_neither_stops_scrapes_for_long_nor_touches_the_probes() {
    let dir = tempdir("flood");
    let port = free_port();
    ssh_peer("127.0.0.1", port);
    let config = dir.join("c.yml");
    write_config(&config, port, &["127.0.0.1"]); // probed every second
    let (_daemon, web) = serve(&config);
    wait_for(&web, "/metrics", Duration::from_secs(5), |b| {
        b.contains("whitelist_audit_ip_up{")
    });
    // 600 connections that never send a byte: far more than the listener serves at once.
    let flood: Vec<TcpStream> = (0..600).filter_map(|_| TcpStream::connect(&web).ok()).collect();
    assert!(flood.len() >= 500, "{} connections opened", flood.len());
    // Probes go on meanwhile: the flood costs the listener at most --web.max-connections descriptors.
    thread::sleep(Duration::from_secs(3));
    // Within the 10 s header timeout the idle ones are closed, and a scrape gets through.
    let metrics = wait_for(&web, "/metrics", Duration::from_secs(15), |_| true);
    assert!(
        metrics.contains(&format!(
            "whitelist_audit_ip_state{{target=\"loop\",ip=\"127.0.0.1\",port=\"{port}\",state=\"open\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("whitelist_audit_probe_errors_total{target=\"loop\",reason=\"fd_exhausted\"} 0"),
        "{metrics}"
    );
    drop(flood);
}
