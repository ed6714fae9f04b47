//! `whitelist-audit demo`: a vendor pool, a whitelist and a firewall's effects, all on loopback,
//! so the first command shows every finding on any machine without a network or a configuration.
//! Nothing leaves the host: every address is in 127.0.0.0/8, plus one published `0.0.0.0` that the
//! audit must refuse to probe.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

/// What one demo address does, and what the audit should make of it.
#[derive(Debug, Clone, Copy)]
struct Role {
    last_octet: u8,
    behaviour: Behaviour,
    published: bool,
    whitelisted: bool,
    expect: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Sends an SSH identification line.
    Ssh,
    /// Nothing listens: the kernel resets the SYN.
    Closed,
    /// Answers like a web server or a proxy would.
    Http,
    /// A full accept queue: the kernel drops the SYN, as a firewall DROP does.
    Drop,
}

const ROLES: [Role; 7] = [
    Role {
        last_octet: 11,
        behaviour: Behaviour::Ssh,
        published: true,
        whitelisted: true,
        expect: "open, no finding: all is well",
    },
    Role {
        last_octet: 12,
        behaviour: Behaviour::Closed,
        published: true,
        whitelisted: true,
        expect: "refused -> blocked (a REJECT with tcp-reset, or a closed port)",
    },
    Role {
        last_octet: 13,
        behaviour: Behaviour::Drop,
        published: true,
        whitelisted: true,
        expect: "timeout -> blocked (a firewall DROP)",
    },
    Role {
        last_octet: 14,
        behaviour: Behaviour::Http,
        published: true,
        whitelisted: true,
        expect: "protocol_error -> blocked (TCP opens, but it is not SSH: a proxy)",
    },
    Role {
        last_octet: 15,
        behaviour: Behaviour::Closed,
        published: true,
        whitelisted: false,
        expect: "refused -> missing (published, not whitelisted)",
    },
    Role {
        last_octet: 16,
        behaviour: Behaviour::Ssh,
        published: true,
        whitelisted: false,
        expect: "open -> undeclared (reachable, though the whitelist does not say so)",
    },
    Role {
        last_octet: 17,
        behaviour: Behaviour::Ssh,
        published: false,
        whitelisted: true,
        expect: "stale (whitelisted, no longer published)",
    },
];

/// The running lab: its files, and the connection that keeps the "dropping" address's queue full.
#[derive(Debug)]
pub struct Lab {
    pub dir: PathBuf,
    pub config: PathBuf,
    port: u16,
    /// The address whose queue is full, and the connection that fills it.
    _dropping: (tokio::net::TcpListener, TcpStream),
}

fn address(last_octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet))
}

impl Lab {
    /// Starts the listeners and writes the configuration, the whitelist and the vendor's list into
    /// a fresh directory under the system's temporary directory.
    pub fn start() -> io::Result<Self> {
        // One port for every address, as a vendor's pool has: found free on all of them.
        let mut last_error = None;
        for _ in 0..20 {
            match Self::bind_all() {
                Ok((port, dropping)) => return Self::write_files(port, dropping),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no free port on 127.0.0.11-17")))
    }

    fn bind_all() -> io::Result<(u16, (tokio::net::TcpListener, TcpStream))> {
        let first = TcpListener::bind((address(11), 0))?;
        let port = first.local_addr()?.port();
        let mut listeners = vec![(ROLES[0].behaviour, first)];
        let mut filler = None;
        for role in &ROLES[1..] {
            match role.behaviour {
                Behaviour::Closed => {
                    // Nothing may listen there; a free port on one address is usually free on all.
                    if TcpStream::connect_timeout(
                        &SocketAddr::new(address(role.last_octet), port),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                    {
                        return Err(io::Error::other("port in use"));
                    }
                }
                Behaviour::Drop => {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind(SocketAddr::new(address(role.last_octet), port))?;
                    // A backlog of 0 holds one connection; ours fills it, and every later SYN is
                    // dropped by the kernel, exactly as a firewall DROP would.
                    let listener = socket.listen(0)?;
                    let stream = TcpStream::connect_timeout(&listener.local_addr()?, Duration::from_secs(1))?;
                    // Never accepted: kept with the lab for as long as it runs.
                    filler = Some((listener, stream));
                }
                behaviour => listeners.push((behaviour, TcpListener::bind((address(role.last_octet), port))?)),
            }
        }
        for (behaviour, listener) in listeners {
            thread::spawn(move || serve(&listener, behaviour));
        }
        Ok((port, filler.expect("one address drops")))
    }

    fn write_files(port: u16, dropping: (tokio::net::TcpListener, TcpStream)) -> io::Result<Self> {
        let dir = private_dir()?;
        let mut published = String::from("# the vendor's published list (a file here; usually https://)\n");
        let mut statics = Vec::new();
        for (n, role) in ROLES.iter().filter(|r| r.published).enumerate() {
            // Half from the list, half from `static`: both are sources of the published set.
            if n % 2 == 0 {
                let _ = writeln!(published, "{}", address(role.last_octet));
            } else {
                statics.push(address(role.last_octet).to_string());
            }
        }
        published.push_str("0.0.0.0   # a broken entry: never probed, reported as bogus_address\n");
        std::fs::write(dir.join("vendor-list.txt"), published)?;
        let whitelisted: Vec<String> = ROLES
            .iter()
            .filter(|r| r.whitelisted)
            .map(|r| address(r.last_octet).to_string())
            .collect();
        std::fs::write(
            dir.join("whitelist.yml"),
            format!(
                "# what the firewall team declares open\nallow:\n  - addresses: [{}]\n    ports: [{port}]\n    target: demo-sftp\n    comment: DEMO-1 vendor SFTP pool\n",
                whitelisted.join(", ")
            ),
        )?;
        let config = dir.join("demo.yml");
        std::fs::write(
            &config,
            format!(
                "# generated by `whitelist-audit demo`\nglobal:\n  interval: 10s\n  timeout: 1s\n  attempts: 1\n  whitelist: whitelist.yml\n  state_dir: state\ntargets:\n  - name: demo-sftp\n    port: {port}\n    check: ssh\n    allow_local_addresses: true   # a lab on loopback, on purpose\n    static: [{}]\n    published:\n      - path: vendor-list.txt\n",
                statics.join(", ")
            ),
        )?;
        Ok(Self {
            dir,
            config,
            port,
            _dropping: dropping,
        })
    }

    /// What the demo set up and what to look at.
    pub fn describe(&self, listen: &str) -> String {
        let mut out = format!(
            "demo: a vendor pool on 127.0.0.11-17 port {}, its published list, and a whitelist, in {}\n",
            self.port,
            self.dir.display()
        );
        for role in ROLES {
            let _ = writeln!(out, "  {:<12} {}", address(role.last_octet), role.expect);
        }
        let _ = writeln!(
            out,
            "  {:<12} published by the list -> bogus_address, never probed",
            "0.0.0.0"
        );
        let _ = write!(
            out,
            "page:    http://{listen}/   (every address, worst first, since when)\n\
             metrics: http://{listen}/metrics   (try: curl -s http://{listen}/metrics | grep whitelist_audit_ip_finding)\n\
             table:   whitelist-audit check --config.file {}\n\
             request: whitelist-audit request --config.file {0}   (what to ask of the firewall team)\n\
             Ctrl-C stops the demo and removes its files.\n",
            self.config.display()
        );
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new directory only this user can enter: a name another user guessed and planted (with
/// links inside) is refused, never written through.
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("whitelist-audit-demo-{}-{nanos:09}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Answers every connection as `behaviour` says, until the process ends.
fn serve(listener: &TcpListener, behaviour: Behaviour) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = [0u8; 256];
            match behaviour {
                Behaviour::Ssh => {
                    let mut greeting = b"SSH-2.0-OpenSSH_9.6 whitelist-audit-demo\r\n".to_vec();
                    greeting.extend(kexinit_packet());
                    let _ = stream.write_all(&greeting);
                    let _ = stream.read(&mut line);
                }
                Behaviour::Http => {
                    let _ = stream.read(&mut line);
                    let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                }
                Behaviour::Closed | Behaviour::Drop => {}
            }
        });
    }
}

/// The demo server's `SSH_MSG_KEXINIT` (RFC 4253 section 7.1) in its packet: the algorithms a
/// current OpenSSH server offers, with a key exchange the probe does not complete, so it reports
/// the algorithms and moves on without waiting for a host key the demo cannot sign.
fn kexinit_packet() -> Vec<u8> {
    let lists = [
        "diffie-hellman-group16-sha512,diffie-hellman-group14-sha256",
        "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
        "chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com",
        "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256",
        "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256",
        "none",
        "none",
        "",
        "",
    ];
    let mut payload = vec![20u8];
    payload.extend_from_slice(&[0x5a; 16]);
    for list in lists {
        payload.extend_from_slice(&u32::try_from(list.len()).unwrap_or(0).to_be_bytes());
        payload.extend_from_slice(list.as_bytes());
    }
    payload.extend_from_slice(&[0, 0, 0, 0, 0]);
    let mut padding = 8 - (5 + payload.len()) % 8;
    if padding < 4 {
        padding += 8;
    }
    let length = u32::try_from(1 + payload.len() + padding).unwrap_or(0);
    let mut packet = length.to_be_bytes().to_vec();
    packet.push(u8::try_from(padding).unwrap_or(4));
    packet.extend_from_slice(&payload);
    packet.resize(packet.len() + padding, 0);
    packet
}
