//! Real SSH clients run against a server, to check that an algorithm prediction matches what the
//! client actually does. Each run says whether the client got through the handshake: version
//! exchange, KEXINIT negotiation and the key exchange. Authentication never matters (there are
//! no credentials): reaching it, or the client's host key check, counts as success.
//!
//! The clients are the Debian 12 packages (`openssh-client` 9.2, `putty-tools` 0.78,
//! `libjsch-java` 0.1.55) and paramiko from `PyPI` in two venvs that `.ci/deps` creates. None of
//! them reads the user's configuration, known hosts, keys or agent: each run gets an empty
//! environment with `HOME` set to a throwaway directory, removed afterwards.
//!
//! Include it with `#[path = "support/ssh_clients.rs"] mod ssh_clients;`.

#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The paramiko release the `paramiko` profile is checked against; `.ci/deps` pins the same.
pub const PARAMIKO_VERSION: &str = "5.1.0";
/// Debian 12's paramiko, checked against the `paramiko-2.12` profile.
pub const PARAMIKO_212_VERSION: &str = "2.12.0";
/// The venv `.ci/deps` installs paramiko [`PARAMIKO_VERSION`] into.
pub const PARAMIKO_VENV: &str = "/opt/whitelist-audit-test/paramiko-venv";
/// The venv `.ci/deps` installs paramiko [`PARAMIKO_212_VERSION`] into.
pub const PARAMIKO_212_VENV: &str = "/opt/whitelist-audit-test/paramiko-2.12-venv";
/// `JSch` from Debian's `libjsch-java` (0.1.55; the jar calls itself 0.1.54).
pub const JSCH_JAR: &str = "/usr/share/java/jsch.jar";

/// How long one client run may take before it is killed and counted as a failure.
pub const HARD_TIMEOUT: Duration = Duration::from_secs(15);

const PARAMIKO_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/paramiko_handshake.py");
const JSCH_SOURCE: &str = include_str!("JschHandshake.java");

static NEXT_RUN: AtomicUsize = AtomicUsize::new(0);

/// A real SSH client this harness can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RealClient {
    /// `ssh` from Debian's `openssh-client` (9.2p1).
    OpenSsh,
    /// paramiko [`PARAMIKO_VERSION`] from `PyPI`, in [`PARAMIKO_VENV`].
    Paramiko,
    /// paramiko 2.12.0 (Debian 12's version) from `PyPI`, in [`PARAMIKO_212_VENV`].
    Paramiko212,
    /// `JSch` 0.1.55 from Debian's `libjsch-java`.
    Jsch,
    /// `plink` from Debian's `putty-tools` (0.78).
    Putty,
}

impl RealClient {
    pub const ALL: [RealClient; 5] = [
        RealClient::OpenSsh,
        RealClient::Paramiko,
        RealClient::Paramiko212,
        RealClient::Jsch,
        RealClient::Putty,
    ];

    /// The profile name in profiles/ssh-clients.yaml this client is checked against.
    pub fn profile(self) -> &'static str {
        match self {
            RealClient::OpenSsh => "openssh-9.2",
            RealClient::Paramiko => "paramiko",
            RealClient::Paramiko212 => "paramiko-2.12",
            RealClient::Jsch => "jsch",
            RealClient::Putty => "putty",
        }
    }
}

/// The result of one client run.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// Whether the algorithm negotiation and key exchange succeeded.
    pub ok: bool,
    /// The command and everything the client printed (stdout and stderr interleaved), for
    /// failure messages.
    pub output: String,
}

/// Whether `client`'s handshake (algorithm negotiation + key exchange) with `ip:port` succeeded,
/// with the client's output for the failure message. Bounded by [`HARD_TIMEOUT`]; panics (naming
/// the Debian package or the `.ci/deps` step) if the client is not installed.
pub fn handshake(client: RealClient, ip: IpAddr, port: u16) -> Handshake {
    let host = ip.to_string();
    let port = port.to_string();
    let scratch = Scratch::new();
    match client {
        RealClient::OpenSsh => openssh(&scratch, &host, &port),
        RealClient::Paramiko => paramiko(&scratch, client, PARAMIKO_VENV, PARAMIKO_VERSION, &host, &port),
        RealClient::Paramiko212 => paramiko(&scratch, client, PARAMIKO_212_VENV, PARAMIKO_212_VERSION, &host, &port),
        RealClient::Jsch => jsch(&scratch, &host, &port),
        RealClient::Putty => putty(&scratch, &host, &port),
    }
}

fn openssh(scratch: &Scratch, host: &str, port: &str) -> Handshake {
    let ssh = require_program("ssh", "openssh-client");
    let mut command = Command::new(ssh);
    command.args([
        "-F",
        "/dev/null",
        "-vv",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "CheckHostIP=no",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        "PreferredAuthentications=none",
        "-o",
        "IdentityFile=none",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ControlPath=none",
        "-o",
        "ConnectTimeout=5",
        "-p",
        port,
        "-l",
        "nobody",
        host,
        "true",
    ]);
    let run = scratch.run(command);
    // Both sides' NEWKEYS: the key exchange is complete. "Unable to negotiate with ...:
    // no matching <kind> found. Their offer: ..." is a negotiation failure.
    let ok = !run.timed_out && run.output.contains("SSH2_MSG_NEWKEYS received");
    run.into_handshake(ok)
}

fn paramiko(scratch: &Scratch, client: RealClient, venv: &str, version: &str, host: &str, port: &str) -> Handshake {
    let python = Path::new(venv).join("bin/python");
    assert!(
        python.exists(),
        "{}: no venv at {venv}: run `bash .ci/deps` (Debian package python3-venv, then \
         paramiko=={version} from PyPI into that venv)",
        client.profile()
    );
    let mut command = Command::new(python);
    // -I: no PYTHON* variables, no user site-packages, no script directory on sys.path.
    command.args(["-I", PARAMIKO_SCRIPT, host, port]);
    let run = scratch.run(command);
    let reported = run
        .output
        .lines()
        .find_map(|line| line.strip_prefix("paramiko "))
        .map(str::trim);
    if let Some(reported) = reported {
        assert_eq!(
            reported, version,
            "{venv} has paramiko {reported}, not {version}: run `bash .ci/deps`"
        );
    }
    // The script prints "ok" once start_client returned, "fail: <exception>" otherwise
    // (e.g. "fail: IncompatiblePeer: Incompatible ssh server (no acceptable ciphers)").
    let ok = !run.timed_out
        && run.status.is_some_and(|s| s.success())
        && reported.is_some()
        && run.output.lines().any(|line| line == "ok");
    run.into_handshake(ok)
}

fn jsch(scratch: &Scratch, host: &str, port: &str) -> Handshake {
    let java = require_program("java", "default-jdk-headless");
    let classes = jsch_classes();
    let mut command = Command::new(java);
    command
        .arg("-cp")
        .arg(format!("{JSCH_JAR}:{}", classes.display()))
        .arg(format!("-Duser.home={}", scratch.home().display()))
        .args(["JschHandshake", host, port]);
    let run = scratch.run(command);
    // The program prints "ok" when connect() got to authentication ("Auth fail" or
    // "Auth cancel"), "fail: <message>" otherwise (e.g. "fail: Algorithm negotiation fail").
    let ok = !run.timed_out && run.status.is_some_and(|s| s.success()) && run.output.lines().any(|line| line == "ok");
    run.into_handshake(ok)
}

fn putty(scratch: &Scratch, host: &str, port: &str) -> Handshake {
    let plink = require_program("plink", "putty-tools");
    let mut command = Command::new(plink);
    command.args(["-batch", "-ssh", "-P", port, "-l", "nobody", host, "exit"]);
    let run = scratch.run(command);
    // PuTTY checks the host key after the key exchange; in batch mode an unknown key stops
    // it there. Negotiation failures read "Couldn't agree a key exchange algorithm",
    // "Couldn't agree a client-to-server cipher", "Selected client-to-server MAC ... does
    // not correspond to any supported algorithm", or, for an algorithm below PuTTY's
    // warning threshold, "Cannot confirm a weak crypto primitive in batch mode".
    let ok = !run.timed_out
        && (run.output.contains("host key is not cached")
            || run.output.contains("Cannot confirm a host key in batch mode"));
    run.into_handshake(ok)
}

/// What the client reports as its version, to check the expectations are about the right one:
/// `ssh -V`, plink's `Release`, paramiko's `__version__`, and Debian's version of `libjsch-java`
/// (the jar itself says 0.1.54).
pub fn version(client: RealClient) -> String {
    let scratch = Scratch::new();
    let command = match client {
        RealClient::OpenSsh => {
            let mut command = Command::new(require_program("ssh", "openssh-client"));
            command.arg("-V");
            command
        }
        RealClient::Paramiko | RealClient::Paramiko212 => {
            let venv = if client == RealClient::Paramiko {
                PARAMIKO_VENV
            } else {
                PARAMIKO_212_VENV
            };
            let python = Path::new(venv).join("bin/python");
            assert!(python.exists(), "no venv at {venv}: run `bash .ci/deps`");
            let mut command = Command::new(python);
            command.args([
                "-I",
                "-W",
                "ignore",
                "-c",
                "import paramiko; print(paramiko.__version__)",
            ]);
            command
        }
        RealClient::Jsch => {
            assert!(
                Path::new(JSCH_JAR).exists(),
                "{JSCH_JAR} is missing: install the Debian package libjsch-java"
            );
            let mut command = Command::new(require_program("dpkg-query", "dpkg"));
            command.args(["-W", "-f", "${Version}\n", "libjsch-java"]);
            command
        }
        RealClient::Putty => {
            let mut command = Command::new(require_program("plink", "putty-tools"));
            command.arg("-V");
            command
        }
    };
    scratch
        .run(command)
        .output
        .lines()
        .skip(1) // the command line
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The path of `program` on PATH; panics naming the Debian package that provides it.
fn require_program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed: install the Debian package {package} \
                 (`bash .ci/deps` does)"
            )
        })
}

/// `JschHandshake.class`, compiled once per source text into the test target's scratch
/// directory (`CARGO_TARGET_TMPDIR`); concurrent test processes race safely through a rename.
fn jsch_classes() -> PathBuf {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            assert!(
                Path::new(JSCH_JAR).exists(),
                "{JSCH_JAR} is missing: install the Debian package libjsch-java"
            );
            let javac = require_program("javac", "default-jdk-headless");
            let mut hasher = DefaultHasher::new();
            JSCH_SOURCE.hash(&mut hasher);
            let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
            let done = root.join(format!("jsch-handshake-{:016x}", hasher.finish()));
            if done.join("JschHandshake.class").exists() {
                return done;
            }
            let building = root.join(format!(
                "jsch-handshake-build-{}-{}",
                std::process::id(),
                NEXT_RUN.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&building).unwrap();
            std::fs::write(building.join("JschHandshake.java"), JSCH_SOURCE).unwrap();
            let output = Command::new(javac)
                .arg("-nowarn")
                .arg("-cp")
                .arg(JSCH_JAR)
                .arg("-d")
                .arg(&building)
                .arg(building.join("JschHandshake.java"))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if !output.status.success() {
                let _ = std::fs::remove_dir_all(&building);
            }
            assert!(
                output.status.success(),
                "javac JschHandshake.java: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            // Another process may have won the race: then ours is dropped.
            if std::fs::rename(&building, &done).is_err() {
                let _ = std::fs::remove_dir_all(&building);
            }
            assert!(done.join("JschHandshake.class").exists(), "no {}", done.display());
            done
        })
        .clone()
}

/// A throwaway directory for one client run: the client's `HOME` and its output file. Removed
/// when dropped.
struct Scratch {
    dir: PathBuf,
}

/// One finished (or killed) client run.
struct Run {
    status: Option<ExitStatus>,
    timed_out: bool,
    output: String,
}

impl Run {
    fn into_handshake(self, ok: bool) -> Handshake {
        Handshake {
            ok,
            output: self.output,
        }
    }
}

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "wla-ssh-client-{}-{}",
            std::process::id(),
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("home")).unwrap();
        Self { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// Runs `command` with an empty environment (but `PATH`, `LC_ALL=C` and a fresh `HOME`), no
    /// input, stdout and stderr into one file; kills it after [`HARD_TIMEOUT`].
    fn run(&self, mut command: Command) -> Run {
        let log_path = self.dir.join("output");
        let log = File::create(&log_path).unwrap();
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.home())
            .env("LC_ALL", "C")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let line = format!("{command:?}");
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {line}: {e}"));
        let deadline = Instant::now() + HARD_TIMEOUT;
        let (status, timed_out) = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break (Some(status), false);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let printed = std::fs::read(&log_path).unwrap_or_default();
        let mut output = format!("$ {line}\n{}", String::from_utf8_lossy(&printed));
        match (status, timed_out) {
            (_, true) => {
                let _ = write!(output, "\n[killed after {HARD_TIMEOUT:?}]");
            }
            (Some(status), false) => {
                let _ = write!(output, "\n[{status}]");
            }
            (None, false) => {}
        }
        Run {
            status,
            timed_out,
            output,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
