//! A network lab for integration tests: a client, a firewall and a server namespace joined by
//! veth pairs, documentation-range addresses only, real peers (OpenSSH, dnsmasq, iptables). Every
//! process and namespace a lab creates is removed when it drops; nothing else is touched.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Tools the lab needs on PATH (or at these paths).
const TOOLS: &[&str] = &[
    "ip",
    "iptables",
    "ip6tables",
    "/usr/sbin/sshd",
    "ssh-keygen",
    "dnsmasq",
    "curl",
    "python3",
];

/// The tools of `tools` that are not on PATH (or at the absolute path given).
fn missing_tools<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    tools
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}

/// Whether `tools` are all installed. In CI a missing one is a failure, never a skip.
pub fn tools_allowed(test: &str, tools: &[&str]) -> bool {
    let missing = missing_tools(tools);
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: missing tools {missing:?}; CI must run this test"
    );
    eprintln!("\n!!! SKIPPED {test}: missing tools {missing:?}. Run `bash .ci/deps` to exercise it. !!!\n");
    false
}

/// Whether this process may build a lab. In CI (CI=true) a missing requirement is a failure, never
/// a skip; elsewhere the test says loudly that it skipped.
pub fn lab_allowed(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing = missing_tools(TOOLS);
    let problem = if !root {
        Some("needs root (network namespaces, iptables)".to_string())
    } else if !missing.is_empty() {
        Some(format!("missing tools: {}", missing.join(", ")))
    } else {
        None
    };
    match problem {
        None => true,
        Some(problem) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {problem}; CI must run this test")
        }
        Some(problem) => {
            eprintln!("\n!!! SKIPPED {test}: {problem}. Run as root with .ci/run's packages to exercise it. !!!\n");
            false
        }
    }
}

/// Runs a command and panics with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Joins two namespaces with a veth pair: `(namespace, link name)` on each side.
fn veth(a: (&str, &str), b: (&str, &str)) {
    sh(
        "ip",
        &[
            "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
        ],
    );
}

/// Three namespaces: client -- firewall -- server; or, from [`Lab::chain`], four: client --
/// router A -- firewall (router B) -- server.
///
/// ```text
/// client:   198.51.100.2/24, 2001:db8:1::2/64, default via the firewall (chain: via router A)
/// router A: 198.51.100.1/24, 2001:db8:1::1/64 | 203.0.113.1/24, 2001:db8:3::1/64, forwarding (chain only)
/// firewall: 198.51.100.1/24, 2001:db8:1::1/64 | 192.0.2.254/24, 2001:db8:2::fe/64, forwarding
///           (chain: 203.0.113.2/24, 2001:db8:3::2/64 towards router A, its default route)
/// server:   192.0.2.0/24 and 2001:db8:2::/64 addresses added by the test, default via the firewall
/// ```
pub struct Lab {
    pub client: String,
    pub firewall: String,
    pub server: String,
    /// Router A, between the client and the firewall (router B): only in [`Lab::chain`].
    pub router: Option<String>,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    /// Builds the three namespaces and their links.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Builds four namespaces: the client reaches the firewall (router B) through router A, so a
    /// path has two hops that can answer (time-exceeded, ICMP unreachable, a reset).
    pub fn chain() -> Self {
        Self::build(true)
    }

    fn build(chain: bool) -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("wla-lab-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Self {
            client: format!("wla{id}c"),
            firewall: format!("wla{id}f"),
            server: format!("wla{id}s"),
            router: chain.then(|| format!("wla{id}r")),
            dir,
            children: Vec::new(),
        };
        for ns in lab.namespaces() {
            sh("ip", &["netns", "add", ns]);
            lab.run(ns, &["ip", "link", "set", "lo", "up"]);
            if chain {
                // Links made from now on skip duplicate address detection: a link-local address
                // stays tentative for a second or two, and neighbour discovery sends nothing
                // from a tentative one, so a chain's first IPv6 packets would be lost at each
                // hop that still has to find its neighbour.
                lab.run(ns, &["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
            }
        }
        // The client's first hop: router A in a chain, else the firewall itself.
        let first_hop = lab.router.as_ref().unwrap_or(&lab.firewall);
        let (c, f1, f2, s) = (
            format!("w{id}c"),
            format!("w{id}a"),
            format!("w{id}b"),
            format!("w{id}s"),
        );
        veth((&lab.client, &c), (first_hop, &f1));
        veth((&lab.server, &s), (&lab.firewall, &f2));
        let mut links = vec![
            (&lab.client, c, "198.51.100.2/24", "2001:db8:1::2/64"),
            (first_hop, f1, "198.51.100.1/24", "2001:db8:1::1/64"),
            (&lab.firewall, f2, "192.0.2.254/24", "2001:db8:2::fe/64"),
            (&lab.server, s, "192.0.2.250/24", "2001:db8:2::fa/64"),
        ];
        if let Some(router) = &lab.router {
            let (x, y) = (format!("w{id}x"), format!("w{id}y"));
            veth((router, &x), (&lab.firewall, &y));
            links.push((router, x, "203.0.113.1/24", "2001:db8:3::1/64"));
            links.push((&lab.firewall, y, "203.0.113.2/24", "2001:db8:3::2/64"));
        }
        for ns in lab.routers() {
            lab.run(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            lab.run(ns, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        }
        for (ns, dev, v4, v6) in &links {
            lab.run(ns, &["ip", "addr", "add", v4, "dev", dev]);
            lab.run(ns, &["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"]);
            lab.run(ns, &["ip", "link", "set", dev, "up"]);
        }
        lab.route(&lab.client, "default", "198.51.100.1", "2001:db8:1::1");
        lab.route(&lab.server, "default", "192.0.2.254", "2001:db8:2::fe");
        if let Some(router) = &lab.router {
            lab.route(router, "192.0.2.0/24", "203.0.113.2", "");
            lab.route(router, "2001:db8:2::/64", "", "2001:db8:3::2");
            lab.route(&lab.firewall, "default", "203.0.113.1", "2001:db8:3::1");
            // Linux sends at most one ICMP error per second to a destination by default: several
            // traces (and rejects) within a second would measure the routers' rate limit, not the
            // tool. The chain's routers answer every packet.
            for ns in lab.routers() {
                lab.run(ns, &["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
                lab.run(ns, &["sysctl", "-qw", "net.ipv6.icmp.ratelimit=0"]);
            }
            // A new link gets its IPv6 link-local address (the source of neighbour discovery)
            // only once the kernel has seen its carrier, which it batches up to a second when
            // many links change: until then a hop drops what it has to forward. A chain is
            // handed over once packets cross it both ways.
            lab.wait_reachable(&["192.0.2.250", "2001:db8:2::fa"]);
        }
        lab
    }

    /// Waits (bounded) until a TCP SYN from the client to each of `addresses` (port 9, where
    /// nothing listens) is answered: the path works both ways.
    pub fn wait_reachable(&self, addresses: &[&str]) {
        let script = "import socket, sys\n\
            for address in sys.argv[1:]:\n\
            \x20   for attempt in range(100):\n\
            \x20       s = socket.socket(socket.AF_INET6 if ':' in address else socket.AF_INET)\n\
            \x20       s.settimeout(0.1)\n\
            \x20       try:\n\
            \x20           s.connect((address, 9))\n\
            \x20           break\n\
            \x20       except (ConnectionRefusedError, ConnectionResetError):\n\
            \x20           break\n\
            \x20       except OSError:\n\
            \x20           pass\n\
            \x20       finally:\n\
            \x20           s.close()\n\
            \x20   else:\n\
            \x20       sys.exit(f'{address} does not answer')\n";
        let mut args = vec!["timeout", "30", "python3", "-c", script];
        args.extend_from_slice(addresses);
        self.run(&self.client, &args);
    }

    /// Every namespace of the lab.
    fn namespaces(&self) -> impl Iterator<Item = &String> {
        [&self.client, &self.firewall, &self.server]
            .into_iter()
            .chain(self.router.as_ref())
    }

    /// The namespaces that forward: the firewall, and router A in a chain.
    fn routers(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.firewall).chain(self.router.as_ref())
    }

    /// Routes `to` in `ns` via `v4` (an IPv4 gateway) and `v6` (an IPv6 one); an empty gateway
    /// adds no route of that family. `to` is `default` or a prefix of the gateways' family.
    fn route(&self, ns: &str, to: &str, v4: &str, v6: &str) {
        if !v4.is_empty() {
            self.run(ns, &["ip", "route", "add", to, "via", v4]);
        }
        if !v6.is_empty() {
            self.run(ns, &["ip", "-6", "route", "add", to, "via", v6]);
        }
    }

    /// The server side's link name, for adding addresses.
    fn server_dev(&self) -> String {
        format!("w{}s", self.client.trim_start_matches("wla").trim_end_matches('c'))
    }

    /// Runs a command inside `ns` and returns its output; panics on failure.
    #[allow(clippy::unused_self)] // a method, so only a lab's own namespaces are named
    pub fn run(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Adds server addresses (IPv4 /24 or IPv6 /64 of the server link).
    pub fn add_server_addresses(&self, addresses: &[&str]) {
        let dev = self.server_dev();
        for address in addresses {
            if address.contains(':') {
                self.run(
                    &self.server,
                    &[
                        "ip",
                        "-6",
                        "addr",
                        "add",
                        &format!("{address}/64"),
                        "dev",
                        &dev,
                        "nodad",
                    ],
                );
            } else {
                self.run(
                    &self.server,
                    &["ip", "addr", "add", &format!("{address}/24"), "dev", &dev],
                );
            }
        }
    }

    /// Starts a long-running process inside `ns`; the lab kills it when dropped.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> u32 {
        let log = std::fs::File::create(self.dir.join(format!("{}.log", self.children.len()))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kills one process this lab started.
    pub fn kill(&mut self, pid: u32) {
        if let Some(position) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(position);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to one process this lab started.
    pub fn signal(&self, pid: u32, signal: &str) {
        assert!(self.children.iter().any(|c| c.id() == pid), "not ours: {pid}");
        sh("kill", &[&format!("-{signal}"), &pid.to_string()]);
    }

    /// OpenSSH on every address given, port 22, with a throwaway host key.
    pub fn start_sshd(&mut self, addresses: &[&str]) -> u32 {
        self.start_sshd_with(addresses, &[])
    }

    /// OpenSSH on every address given, port 22, with `options` (`Key=value`, as `sshd -o` takes them).
    pub fn start_sshd_with(&mut self, addresses: &[&str], options: &[String]) -> u32 {
        self.start_sshd_on(addresses, 22, "ssh_host_ed25519_key", options)
    }

    /// OpenSSH on every address given at `port`, with the ed25519 host key in the lab's file
    /// `key_name` (made when missing: another name is another server's key), and `options`.
    pub fn start_sshd_on(&mut self, addresses: &[&str], port: u16, key_name: &str, options: &[String]) -> u32 {
        let key = self.dir.join(key_name);
        if !key.exists() {
            sh(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
            );
        }
        // sshd refuses to start without its privilege-separation directory; the package creates
        // it at boot through tmpfiles, which a fresh container may not have run.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut args: Vec<String> = ["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null"]
            .map(String::from)
            .to_vec();
        for option in [
            format!("HostKey={}", key.display()),
            "PidFile=none".into(),
            "UsePAM=no".into(),
            "StrictModes=no".into(),
            "MaxStartups=100".into(),
        ]
        .into_iter()
        .chain(options.iter().cloned())
        {
            args.push("-o".into());
            args.push(option);
        }
        for address in addresses {
            args.push("-o".into());
            args.push(if address.contains(':') {
                format!("ListenAddress=[{address}]:{port}")
            } else {
                format!("ListenAddress={address}:{port}")
            });
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = self.server.clone();
        let pid = self.spawn(&server, &args);
        self.wait_listening(addresses, port);
        pid
    }

    /// A TCP listener on `address:22` that answers like an HTTP server, not like SSH.
    pub fn start_not_ssh(&mut self, address: &str) -> u32 {
        let script = format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET6 if ':' in '{address}' else socket.AF_INET)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{address}', 22))\n\
             s.listen(16)\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   c.sendall(b'HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\n\\r\\n')\n\
             \x20   c.close()\n"
        );
        let server = self.server.clone();
        let pid = self.spawn(&server, &["python3", "-c", &script]);
        self.wait_listening(&[address], 22);
        pid
    }

    /// dnsmasq answering from `hosts` (an /etc/hosts-style file) on `listen` addresses, `port`.
    /// Local answers carry TTL 0, and SIGHUP re-reads the file.
    pub fn start_dnsmasq(&mut self, listen: &[&str], port: u16, hosts: &Path) -> u32 {
        let server = self.server.clone();
        let args = [
            "dnsmasq".to_string(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            "--user=root".into(),
            "--pid-file=".into(),
            "--log-facility=-".into(),
            format!("--port={port}"),
            format!("--addn-hosts={}", hosts.display()),
            format!("--listen-address={}", listen.join(",")),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = self.spawn(&server, &args);
        self.wait_listening(listen, port);
        pid
    }

    /// Waits (bounded) until something listens on each of `addresses` at `port` in the server.
    fn wait_listening(&self, addresses: &[&str], port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = String::from_utf8_lossy(&self.run(&self.server, &["ss", "-ltnH"]).stdout).to_string();
            let all = addresses.iter().all(|a| {
                let needle = if a.contains(':') {
                    format!("[{a}]:{port}")
                } else {
                    format!("{a}:{port}")
                };
                listening.contains(&needle)
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {addresses:?}:{port}:\n{listening}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds a firewall rule in the firewall namespace's FORWARD chain.
    pub fn firewall(&self, tool: &str, rule: &[&str]) {
        self.firewall_chain(tool, "FORWARD", rule);
    }

    /// Adds a firewall rule (`tool` is iptables or ip6tables) in the firewall namespace's `chain`:
    /// OUTPUT holds back what the firewall itself sends, its ICMP errors included.
    pub fn firewall_chain(&self, tool: &str, chain: &str, rule: &[&str]) {
        let mut args = vec![tool, "-A", chain];
        args.extend_from_slice(rule);
        self.run(&self.firewall, &args);
    }

    /// Runs one `nft` command in the firewall namespace, e.g. `add table inet lab`.
    pub fn nft(&self, command: &str) {
        self.run(&self.firewall, &["nft", command]);
    }

    /// Everything the lab's processes printed, for assertion messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for index in 0..self.children.len() + 4 {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{index}.log"))) {
                let _ = write!(out, "--- process {index}:\n{text}\n");
            }
        }
        out
    }

    /// Writes a file into the lab's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs a command in the client namespace and returns its standard output, bounded to 10 s.
    pub fn client_output(&self, args: &[&str]) -> String {
        let output = Command::new("timeout")
            .args(["10", "ip", "netns", "exec", &self.client])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Removes a firewall rule added with [`Lab::firewall`].
    pub fn firewall_delete(&self, tool: &str, rule: &[&str]) {
        let mut args = vec![tool, "-D", "FORWARD"];
        args.extend_from_slice(rule);
        self.run(&self.firewall, &args);
    }

    /// Runs `whitelist-audit` with `args` in the client namespace.
    pub fn audit(&self, args: &[&str]) -> Output {
        self.audit_as(&[], args)
    }

    /// Runs `whitelist-audit` with `args` in the client namespace under `wrapper` (a command that
    /// execs the rest of its arguments, as `setpriv` does; empty for none), killed after 10 minutes.
    pub fn audit_as(&self, wrapper: &[&str], args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client, "timeout", "-k", "5", "600"])
            .args(wrapper)
            .arg(env!("CARGO_BIN_EXE_whitelist-audit"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts `whitelist-audit serve` in the client namespace.
    pub fn serve(&mut self, config: &Path, listen: &str) -> u32 {
        self.serve_as(&[], config, listen)
    }

    /// Starts `whitelist-audit serve` in the client namespace under `wrapper`, as [`Lab::audit_as`].
    pub fn serve_as(&mut self, wrapper: &[&str], config: &Path, listen: &str) -> u32 {
        let client = self.client.clone();
        let mut args = wrapper.to_vec();
        args.extend_from_slice(&[
            env!("CARGO_BIN_EXE_whitelist-audit"),
            "serve",
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            listen,
        ]);
        self.spawn(&client, &args)
    }

    /// GETs (or POSTs) a URL from the client namespace, returning (status, body).
    pub fn http(&self, method: &str, url: &str) -> (u16, String) {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                "curl",
                "-s",
                "-m",
                "5",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
                url,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Polls `url` until `ready` accepts the body, for at most `limit`.
    pub fn poll(&self, url: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.http("GET", url);
            if status == 200 && ready(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not become ready within {limit:?}; last body:\n{body}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Now, in whole unix seconds, as the API dates things.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every descendant of `pid`, found through /proc by parent pid (never by name).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The field after the parenthesised command is the state, then the parent pid.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(parent) = parent {
            parents.entry(parent).or_default().push(child);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(next) = queue.pop() {
        for &child in parents.get(&next).into_iter().flatten() {
            if found.len() < 10_000 && !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            // What our processes started (an sshd's session processes, whose flows a test may have
            // cut) goes with them: nothing of the lab outlives it.
            for pid in descendants(child.id()) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parsed `/metrics` text: series (name plus sorted labels) to value.
pub struct Scrape(pub BTreeMap<String, f64>);

impl Scrape {
    /// Parses the `OpenMetrics` text `/metrics` serves.
    pub fn parse(text: &str) -> Self {
        let mut series = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (key, value) = line.rsplit_once(' ').unwrap();
            series.insert(key.to_string(), value.parse().unwrap());
        }
        Self(series)
    }

    /// The value of the one series of `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(key, _)| {
                (key.as_str() == name || key.starts_with(&format!("{name}{{")))
                    && labels.iter().all(|(k, v)| key.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| *v)
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {} series",
            matching.len()
        );
        matching.first().copied()
    }

    /// Every series mentioning `ip="<ip>"`.
    pub fn series_of_ip(&self, ip: &str) -> Vec<&String> {
        self.0.keys().filter(|k| k.contains(&format!("ip=\"{ip}\""))).collect()
    }
}

/// System users made for one test, removed when it ends.
pub struct Users(Vec<String>);

impl Users {
    pub fn create(names: &[&str], password: &str) -> Self {
        let users = Self(names.iter().map(|n| (*n).to_string()).collect());
        for name in names {
            sh("useradd", &["-M", "-N", "-d", "/", "-s", "/bin/sh", name]);
            let mut child = Command::new("chpasswd")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{name}:{password}\n").as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "chpasswd {name}");
        }
        users
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for name in &self.0 {
            // -f: a session of the user that the lab has not stopped yet must not keep the account.
            let _ = Command::new("userdel").args(["-f", name]).output();
        }
    }
}
