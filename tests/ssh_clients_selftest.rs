//! The real-client harness (`tests/support/ssh_clients.rs`) tells a completed handshake from a
//! failed negotiation, for every client: each is run against a real OpenSSH `sshd` on 127.0.0.1
//! with its stock algorithms (every client gets through) and with configurations found by
//! experiment that some clients cannot negotiate with (each client fails at least one, and gets
//! through at least one other than the stock server).
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

/// Runs every client against an sshd with `options` and checks each outcome against `expected`
/// (true: the handshake gets through), reporting every mismatch with the client's output.
fn check(options: &[&str], expected: [(RealClient, bool); 5]) {
    let clients: Vec<RealClient> = expected.iter().map(|(client, _)| *client).collect();
    assert_eq!(clients, RealClient::ALL, "one expectation per client, in order");
    let server = Sshd::start(options);
    let mut mismatches = String::new();
    for (client, want) in expected {
        let started = Instant::now();
        let Handshake { ok, output } = handshake(client, LOOPBACK, server.port);
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
