//! The SSH handshake audit against real peers. Each OpenSSH `sshd` here runs on 127.0.0.1 with
//! its own algorithms and keys; the probe reads its KEXINIT and host key, and:
//!
//! - **the prediction is checked against the real clients**: for every server configuration, the
//!   real OpenSSH `ssh`, paramiko (5.1.0 and 2.12.0), `JSch` 0.1.55 and `PuTTY`'s `plink` (the
//!   harness in `tests/support/ssh_clients.rs`) either complete the key exchange or not, and
//!   [`negotiate`] with that client's shipped profile must have said exactly that. The
//!   configurations were found by experiment so that each client fails at least one;
//! - the lists the probe parsed are the ones the server is configured with, and the fingerprint
//!   is what `ssh-keyscan | ssh-keygen -lf -` prints for the same server;
//! - servers that announce SSH and then send garbage, too much or nothing are `protocol_error`
//!   with a detail that says what came, and a KEXINIT split over many segments is read whole.
//!
//! Every expectation is about the installed versions, which the first test checks: OpenSSH 9.2
//! and `PuTTY` 0.78 (Debian 12), `JSch` 0.1.55 (Debian's `libjsch-java`), paramiko 5.1.0 and
//! 2.12.0 (the venvs `.ci/deps` creates).

#[path = "support/ssh_clients.rs"]
mod ssh_clients;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ssh_clients::RealClient::{Jsch, OpenSsh, Paramiko, Paramiko212, Putty};
use ssh_clients::{Handshake, RealClient, handshake, version};
use tokio::sync::Semaphore;
use whitelist_audit::config::CheckKind;
use whitelist_audit::config::ssh::profile;
use whitelist_audit::core::outcome::{ProbeResult, ProbeState};
use whitelist_audit::core::ssh::{SshEvidence, is_marker, negotiate};
use whitelist_audit::probe::{self, Os, ProbeSpec};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

static NEXT_SERVER: AtomicUsize = AtomicUsize::new(0);

/// An OpenSSH server on 127.0.0.1 at a free port, with its own directory, host keys (RSA, ECDSA,
/// Ed25519) and configuration. Dropping it kills that one process and removes the directory.
struct Sshd {
    dir: PathBuf,
    child: Child,
    port: u16,
}

impl Sshd {
    /// Starts `sshd -D -e -f config` with the stock algorithms plus `options` (config lines).
    fn start(options: &[&str]) -> Self {
        for (program, package) in [("/usr/sbin/sshd", "openssh-server"), ("ssh-keygen", "openssh-client")] {
            let found = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {program}"))
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(found, "`{program}` is missing: install the Debian package {package}");
        }
        let dir = std::env::temp_dir().join(format!(
            "wla-sshd-{}-{}",
            std::process::id(),
            NEXT_SERVER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut keys = String::new();
        for kind in ["rsa", "ecdsa", "ed25519"] {
            let key = dir.join(format!("ssh_host_{kind}_key"));
            let output = Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
                .arg(&key)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(output.status.success(), "ssh-keygen -t {kind}: {output:?}");
            let _ = writeln!(keys, "HostKey {}", key.display());
        }
        // sshd refuses to start without its privilege-separation directory, which a fresh
        // container may not have (the package creates it at boot).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        // A port that was free a moment ago; if another process takes it first, sshd exits and
        // we try another, a bounded number of times.
        for _ in 0..5 {
            let port = TcpListener::bind((LOOPBACK, 0)).unwrap().local_addr().unwrap().port();
            let mut text = format!(
                "ListenAddress 127.0.0.1:{port}\n{keys}PidFile none\nUsePAM no\nStrictModes no\nMaxStartups 100\n"
            );
            for option in options {
                let _ = writeln!(text, "{option}");
            }
            std::fs::write(&config, text).unwrap();
            let output = std::fs::File::create(&log).unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .spawn()
                .unwrap();
            // Waits (at most 10 s) for sshd to say it listens.
            let deadline = Instant::now() + Duration::from_secs(10);
            let needle = format!("Server listening on 127.0.0.1 port {port}.");
            let listening = loop {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                if said.contains(&needle) {
                    break true;
                }
                if child.try_wait().unwrap().is_some() {
                    eprintln!("sshd exited at start:\n{said}");
                    break false;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!("sshd did not listen within 10 s:\n{said}");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if listening {
                return Self { dir, child, port };
            }
        }
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        panic!("sshd did not start on a free 127.0.0.1 port in 5 tries with {options:?}:\n{said}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `check: ssh` probe of `port` on 127.0.0.1, as the daemon makes it.
fn probe_port(port: u16) -> ProbeResult {
    let spec = ProbeSpec {
        port,
        check: CheckKind::Ssh,
        timeout: Duration::from_secs(5),
        attempts: 1,
        retry_delay: Duration::ZERO,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (target_slots, global_slots) = (Semaphore::new(1), Semaphore::new(1));
        probe::probe(&Os, LOOPBACK, spec, &target_slots, &global_slots).await
    })
}

fn evidence(result: &ProbeResult) -> &SshEvidence {
    assert_eq!(result.state, ProbeState::Open, "{}", result.detail);
    result.evidence_as::<SshEvidence>().expect("SSH evidence")
}

/// Runs every client against an sshd with `options` and checks each outcome against `expected`
/// (true: the handshake gets through) and against the audit's prediction from the probe's
/// reading of the same server, reporting every mismatch with the client's output.
fn check(options: &[&str], expected: [(RealClient, bool); 5]) {
    let clients: Vec<RealClient> = expected.iter().map(|(client, _)| *client).collect();
    assert_eq!(clients, RealClient::ALL, "one expectation per client, in order");
    let server = Sshd::start(options);
    let probed = probe_port(server.port);
    let algorithms = evidence(&probed).algorithms.clone().expect("the server's KEXINIT");
    let mut mismatches = String::new();
    for (client, want) in expected {
        let profile = profile(client.profile()).expect("every real client has a shipped profile");
        let predicted = negotiate(&profile, &algorithms);
        let started = Instant::now();
        let Handshake { ok, output } = handshake(client, LOOPBACK, server.port);
        if predicted.compatible != ok {
            let _ = write!(
                mismatches,
                "\n--- {}: the audit predicted {} ({:?}), the real client {}:\n{output}\n",
                client.profile(),
                if predicted.compatible { "ok" } else { "fail" },
                predicted.missing,
                if ok { "got through" } else { "failed" },
            );
        }
        eprintln!(
            "{:<14} {options:?}: {} in {:.1?}",
            client.profile(),
            if ok { "ok" } else { "fail" },
            started.elapsed()
        );
        if ok != want {
            let _ = write!(
                mismatches,
                "\n--- {} ({client:?}): expected {}, got {}:\n{output}\n",
                client.profile(),
                if want { "ok" } else { "fail" },
                if ok { "ok" } else { "fail" },
            );
        }
    }
    assert!(
        mismatches.is_empty(),
        "sshd with {options:?}:{mismatches}\n--- sshd log:\n{}",
        server.log()
    );
}

#[test]
fn the_clients_are_the_versions_the_expectations_are_about() {
    let expected = [
        (OpenSsh, "OpenSSH_9.2"),
        (Paramiko, ssh_clients::PARAMIKO_VERSION),
        (Paramiko212, ssh_clients::PARAMIKO_212_VERSION),
        (Jsch, "0.1.55"),
        (Putty, "plink: Release 0.78"),
    ];
    for (client, prefix) in expected {
        let reported = version(client);
        assert!(
            reported.starts_with(prefix),
            "{}: version {reported:?}, expected {prefix}…",
            client.profile()
        );
    }
}

#[test]
fn every_client_gets_through_with_a_stock_sshd() {
    check(
        &[],
        [
            (OpenSsh, true),
            (Paramiko, true),
            (Paramiko212, true),
            (Jsch, true),
            (Putty, true),
        ],
    );
}

/// chacha20-poly1305 only: neither paramiko nor `JSch` 0.1.55 implements it.
#[test]
fn chacha20_only_fails_paramiko_and_jsch() {
    check(
        &["Ciphers chacha20-poly1305@openssh.com"],
        [
            (OpenSsh, true),
            (Paramiko, false),
            (Paramiko212, false),
            (Jsch, false),
            (Putty, true),
        ],
    );
}

/// AES-GCM only: paramiko gained it in 3.3, after 2.12; `JSch` 0.1.55 has none.
#[test]
fn aes256_gcm_only_tells_the_two_paramikos_apart() {
    check(
        &["Ciphers aes256-gcm@openssh.com"],
        [
            (OpenSsh, true),
            (Paramiko, true),
            (Paramiko212, false),
            (Jsch, false),
            (Putty, true),
        ],
    );
}

/// CBC only: OpenSSH 9.2's client no longer offers CBC modes by default; the others do.
#[test]
fn aes128_cbc_only_fails_openssh_alone() {
    check(
        &["Ciphers aes128-cbc"],
        [
            (OpenSsh, false),
            (Paramiko, true),
            (Paramiko212, true),
            (Jsch, true),
            (Putty, true),
        ],
    );
}

/// SHA-1 RSA host key signatures only: OpenSSH 9.2 and paramiko 5 dropped `ssh-rsa`; paramiko
/// 2.12, `JSch` 0.1.55 (which has nothing else for RSA) and `PuTTY` 0.78 still accept it.
#[test]
fn ssh_rsa_host_key_only_fails_openssh_and_new_paramiko() {
    check(
        &["HostKeyAlgorithms ssh-rsa"],
        [
            (OpenSsh, false),
            (Paramiko, false),
            (Paramiko212, true),
            (Jsch, true),
            (Putty, true),
        ],
    );
}

/// UMAC only (with a cipher that needs a separate MAC): only OpenSSH implements it.
#[test]
fn umac_only_fails_everyone_but_openssh() {
    check(
        &["Ciphers aes128-ctr", "MACs umac-128-etm@openssh.com"],
        [
            (OpenSsh, true),
            (Paramiko, false),
            (Paramiko212, false),
            (Jsch, false),
            (Putty, false),
        ],
    );
}

/// diffie-hellman-group1-sha1 only: off by default in OpenSSH 9.2 and gone from paramiko 5;
/// paramiko 2.12 and `JSch` 0.1.55 still offer it. `PuTTY` 0.78 implements it but below its warning
/// threshold, and in batch mode it abandons the connection ("Cannot confirm a weak crypto
/// primitive in batch mode"): a failure, as for any unattended client.
#[test]
fn dh_group1_only_fails_openssh_new_paramiko_and_batch_putty() {
    check(
        &["KexAlgorithms diffie-hellman-group1-sha1"],
        [
            (OpenSsh, false),
            (Paramiko, false),
            (Paramiko212, true),
            (Jsch, true),
            (Putty, false),
        ],
    );
}

/// The harness counts a hung or silent server as a failure within its hard timeout, not a hang:
/// a listener that accepts and never speaks.
#[test]
fn a_silent_server_is_a_failure_for_every_client() {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    // In parallel: PuTTY has no banner timeout of its own and takes the whole hard timeout.
    std::thread::scope(|scope| {
        let runs: Vec<_> = RealClient::ALL
            .map(|client| {
                scope.spawn(move || {
                    let started = Instant::now();
                    (client, handshake(client, LOOPBACK, port), started.elapsed())
                })
            })
            .into_iter()
            .collect();
        for run in runs {
            let (client, Handshake { ok, output }, took) = run.join().unwrap();
            eprintln!(
                "{:<14} silent server: {} in {took:.1?}",
                client.profile(),
                if ok { "ok" } else { "fail" }
            );
            assert!(!ok, "{}: a silent server passed:\n{output}", client.profile());
            assert!(
                took <= ssh_clients::HARD_TIMEOUT + Duration::from_secs(3),
                "{}: took {took:?}",
                client.profile()
            );
        }
    });
    drop(listener);
}

/// The fingerprint `ssh-keyscan -t TYPE | ssh-keygen -lf -` prints for the server.
fn keyscan_fingerprint(port: u16, key_type: &str) -> String {
    let scan = Command::new("ssh-keyscan")
        .args(["-T", "5", "-t", key_type, "-p", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut keygen = Command::new("ssh-keygen")
        .args(["-lf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(keygen.stdin.as_mut().unwrap(), &scan.stdout).unwrap();
    drop(keygen.stdin.take());
    let out = String::from_utf8(keygen.wait_with_output().unwrap().stdout).unwrap();
    // "256 SHA256:... [127.0.0.1]:PORT (ED25519)"
    out.split_whitespace().nth(1).unwrap_or_default().to_string()
}

fn without_markers(list: &[String]) -> Vec<&str> {
    list.iter().filter(|n| !is_marker(n)).map(String::as_str).collect()
}

#[test]
fn the_lists_read_are_the_configured_ones_and_the_key_is_ssh_keyscans() {
    let server = Sshd::start(&[
        "KexAlgorithms curve25519-sha256,ecdh-sha2-nistp256,diffie-hellman-group14-sha256",
        "HostKeyAlgorithms rsa-sha2-512,ecdsa-sha2-nistp256,ssh-ed25519",
        "Ciphers aes256-gcm@openssh.com,aes128-ctr",
        "MACs hmac-sha2-512,hmac-sha1",
    ]);
    let result = probe_port(server.port);
    let found = evidence(&result);
    let algorithms = found.algorithms.as_deref().unwrap();
    assert_eq!(
        without_markers(&algorithms.kex),
        [
            "curve25519-sha256",
            "ecdh-sha2-nistp256",
            "diffie-hellman-group14-sha256"
        ]
    );
    assert_eq!(
        algorithms.host_key,
        ["rsa-sha2-512", "ecdsa-sha2-nistp256", "ssh-ed25519"]
    );
    for ciphers in [
        &algorithms.ciphers_client_to_server,
        &algorithms.ciphers_server_to_client,
    ] {
        assert_eq!(ciphers, &["aes256-gcm@openssh.com", "aes128-ctr"]);
    }
    for macs in [&algorithms.macs_client_to_server, &algorithms.macs_server_to_client] {
        assert_eq!(macs, &["hmac-sha2-512", "hmac-sha1"]);
    }
    // The key OpenSSH's client would ask for first, whatever the server's order.
    let key = found.host_key.as_ref().expect("the host key, verified");
    assert_eq!(key.key_type, "ssh-ed25519");
    assert_eq!(key.fingerprint, keyscan_fingerprint(server.port, "ed25519"));
    assert_eq!(result.detail, found_summary(found));
}

fn found_summary(found: &SshEvidence) -> String {
    let key = found.host_key.as_ref().unwrap();
    format!(
        "SSH-2.0-{} {} {}",
        found.identification.software, key.key_type, key.fingerprint
    )
}

#[test]
fn ecdsa_and_rsa_keys_and_the_fips_key_exchange_are_proved_too() {
    for (options, key_type, scan_type) in [
        (
            [
                "HostKeyAlgorithms ecdsa-sha2-nistp256",
                "KexAlgorithms curve25519-sha256",
            ],
            "ecdsa-sha2-nistp256",
            "ecdsa",
        ),
        (
            ["HostKeyAlgorithms rsa-sha2-256", "KexAlgorithms ecdh-sha2-nistp256"],
            "ssh-rsa",
            "rsa",
        ),
        (
            [
                "HostKeyAlgorithms rsa-sha2-512",
                "KexAlgorithms curve25519-sha256@libssh.org",
            ],
            "ssh-rsa",
            "rsa",
        ),
    ] {
        let server = Sshd::start(&options);
        let result = probe_port(server.port);
        let found = evidence(&result);
        let key = found
            .host_key
            .as_ref()
            .unwrap_or_else(|| panic!("{options:?}: {:?}", found.host_key_note));
        assert_eq!(key.key_type, key_type, "{options:?}");
        assert_eq!(
            key.fingerprint,
            keyscan_fingerprint(server.port, scan_type),
            "{options:?}"
        );
    }
}

#[test]
fn a_server_without_a_key_exchange_we_complete_is_open_with_its_algorithms_and_a_note() {
    let server = Sshd::start(&["KexAlgorithms diffie-hellman-group16-sha512"]);
    let result = probe_port(server.port);
    let found = evidence(&result);
    assert_eq!(found.host_key, None);
    assert!(
        found
            .host_key_note
            .as_deref()
            .unwrap_or_default()
            .contains("no key exchange the probe completes"),
        "{:?}",
        found.host_key_note
    );
    assert_eq!(
        without_markers(&found.algorithms.as_ref().unwrap().kex),
        ["diffie-hellman-group16-sha512"]
    );
}

// ------------------------------------------------------------------ peers that are not servers

/// A one-connection peer on 127.0.0.1 that runs `script` on the accepted stream.
fn peer(script: impl FnOnce(std::net::TcpStream) + Send + 'static) -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            script(stream);
        }
    });
    port
}

fn protocol_error(port: u16) -> String {
    let result = probe_port(port);
    assert_eq!(result.state, ProbeState::ProtocolError, "{}", result.detail);
    result.detail
}

fn kexinit_with(lists: [&str; 10]) -> Vec<u8> {
    use whitelist_audit::probe::ssh::wire;
    let lists = lists.map(|l| l.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect());
    wire::packet(&wire::kexinit_payload([3; 16], &lists))
}

const STOCK: [&str; 10] = [
    "curve25519-sha256",
    "ssh-ed25519",
    "aes128-ctr",
    "aes128-ctr",
    "hmac-sha2-256",
    "hmac-sha2-256",
    "none",
    "none",
    "",
    "",
];

#[test]
fn a_server_announcing_a_gigabyte_packet_is_a_protocol_error_at_once() {
    let port = peer(|mut s| {
        let _ = std::io::Write::write_all(&mut s, b"SSH-2.0-Liar_1.0\r\n\x40\x00\x00\x00\x04junk");
        std::thread::sleep(Duration::from_secs(6));
    });
    let started = Instant::now();
    let detail = protocol_error(port);
    assert!(
        detail.starts_with("SSH-2.0-Liar_1.0, then a packet length of 1073741824 bytes"),
        "{detail}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused without waiting for the bytes"
    );
}

#[test]
fn a_name_list_without_end_is_a_protocol_error() {
    let port = peer(|mut s| {
        let mut payload = vec![20u8];
        payload.extend_from_slice(&[0; 16]);
        payload.extend_from_slice(&30_000u32.to_be_bytes());
        payload.extend_from_slice(b"curve25519-sha256");
        let bytes = [
            b"SSH-2.0-Cut_1.0\r\n".to_vec(),
            whitelist_audit::probe::ssh::wire::packet(&payload),
        ]
        .concat();
        let _ = std::io::Write::write_all(&mut s, &bytes);
        std::thread::sleep(Duration::from_secs(6));
    });
    let detail = protocol_error(port);
    assert!(
        detail.contains("KEXINIT kex_algorithms: a field of 30000 bytes"),
        "{detail}"
    );
}

#[test]
fn ten_thousand_algorithms_are_a_protocol_error() {
    let many = vec!["x"; 10_000].join(",");
    let port = peer(move |mut s| {
        let mut lists = STOCK;
        lists[2] = &many;
        let bytes = [b"SSH-2.0-Many_1.0\r\n".to_vec(), kexinit_with(lists)].concat();
        let _ = std::io::Write::write_all(&mut s, &bytes);
        std::thread::sleep(Duration::from_secs(6));
    });
    let detail = protocol_error(port);
    assert!(detail.contains("has 10000 names (the limit is 128)"), "{detail}");
}

#[test]
fn an_identification_then_silence_or_garbage_is_a_protocol_error() {
    let silent = peer(|mut s| {
        let _ = std::io::Write::write_all(&mut s, b"SSH-2.0-Mute_1.0\r\n");
        std::thread::sleep(Duration::from_secs(7));
    });
    assert_eq!(
        protocol_error(silent),
        "SSH-2.0-Mute_1.0, then nothing more before the timeout (no KEXINIT)"
    );
    let html = peer(|mut s| {
        let _ = std::io::Write::write_all(&mut s, b"SSH-2.0-Portal\r\n<html>blocked by policy</html>\r\n");
        std::thread::sleep(Duration::from_secs(6));
    });
    let detail = protocol_error(html);
    assert!(
        detail.starts_with("SSH-2.0-Portal, then a packet length of"),
        "{detail}"
    );
    let closed = peer(|mut s| {
        let _ = std::io::Write::write_all(&mut s, b"SSH-2.0-Quitter\r\n");
        // Our identification read before closing: unread bytes would make the close a reset.
        let mut ours = [0u8; 64];
        let _ = std::io::Read::read(&mut s, &mut ours);
    });
    assert_eq!(
        protocol_error(closed),
        "SSH-2.0-Quitter, then closed by the peer before its KEXINIT"
    );
}

#[test]
fn a_kexinit_split_over_many_segments_is_read_whole() {
    let port = peer(|mut s| {
        s.set_nodelay(true).unwrap();
        let mut bytes = b"SSH-2.0-Dribble_1.0\r\n".to_vec();
        let mut lists = STOCK;
        lists[0] = "diffie-hellman-group14-sha256";
        bytes.extend(kexinit_with(lists));
        // One byte per segment for the first 100, then the rest in 7-byte pieces: bounded.
        let (slow, rest) = bytes.split_at(100);
        for byte in slow {
            let _ = std::io::Write::write_all(&mut s, std::slice::from_ref(byte));
            std::thread::sleep(Duration::from_millis(2));
        }
        for piece in rest.chunks(7) {
            let _ = std::io::Write::write_all(&mut s, piece);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let result = probe_port(port);
    let found = evidence(&result);
    assert_eq!(found.identification.software, "Dribble_1.0");
    assert_eq!(
        found.algorithms.as_ref().unwrap().kex,
        ["diffie-hellman-group14-sha256"]
    );
}
