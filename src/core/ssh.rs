//! What an SSH server's handshake says, and what it means for the clients that connect to it.
//! The probe (`probe::ssh`) fills [`SshEvidence`] from the wire; everything here is pure: the
//! negotiation of RFC 4253 section 7.1 per client profile, the weak algorithms and who calls them
//! weak, and the host key an address presented before.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::outcome::{Evidence, InfoSeries};
pub use crate::config::ssh::is_marker;
use crate::config::ssh::{ClientProfile, SshPolicy};

/// A server's identification line, e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identification {
    /// `2.0`, or `1.99` for servers that also speak SSH-1.
    pub protocol: String,
    /// `OpenSSH_9.2p1`.
    pub software: String,
    /// Text after the first space, if any.
    pub comments: Option<String>,
}

impl Identification {
    /// The line as sent, without CR LF: it is hashed into the key exchange.
    pub fn line(&self) -> String {
        match &self.comments {
            Some(comments) => format!("SSH-{}-{} {comments}", self.protocol, self.software),
            None => format!("SSH-{}-{}", self.protocol, self.software),
        }
    }
}

/// The name-lists of a server's `SSH_MSG_KEXINIT` that decide whether a client can connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServerAlgorithms {
    pub kex: Vec<String>,
    pub host_key: Vec<String>,
    pub ciphers_client_to_server: Vec<String>,
    pub ciphers_server_to_client: Vec<String>,
    pub macs_client_to_server: Vec<String>,
    pub macs_server_to_client: Vec<String>,
    pub compression_client_to_server: Vec<String>,
    pub compression_server_to_client: Vec<String>,
}

/// The host key an address proved it holds: its signature over the exchange hash verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HostKey {
    /// The key's type: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    #[serde(rename = "type")]
    pub key_type: String,
    /// The signature algorithm it was verified with (`rsa-sha2-512` for an `ssh-rsa` key).
    pub algorithm: String,
    /// As `ssh-keygen -lf` prints it: `SHA256:...`.
    pub fingerprint: String,
}

/// What an `ssh` probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEvidence {
    pub identification: Identification,
    /// The server's KEXINIT lists; `None` only when the probe stopped after the identification.
    pub algorithms: Option<Arc<ServerAlgorithms>>,
    pub host_key: Option<HostKey>,
    /// Why no host key was obtained, when none was.
    pub host_key_note: Option<String>,
    /// [`SshEvidence::presents`], worked out once: the history asks at every publish.
    pub presented: std::sync::OnceLock<Option<String>>,
}

impl SshEvidence {
    /// What the server presents, in one value the history compares: its host key, software and
    /// a digest of its algorithm lists. `None` without a proved key: a key exchange cut short
    /// says nothing about the server changing.
    pub fn presents(&self) -> Option<&str> {
        self.presented.get_or_init(|| self.presentation()).as_deref()
    }

    fn presentation(&self) -> Option<String> {
        use sha2::Digest;
        use std::fmt::Write as _;
        let key = self.host_key.as_ref()?;
        let algorithms = self.algorithms.as_deref()?;
        let mut digest = sha2::Sha256::new();
        for list in [
            &algorithms.kex,
            &algorithms.host_key,
            &algorithms.ciphers_client_to_server,
            &algorithms.ciphers_server_to_client,
            &algorithms.macs_client_to_server,
            &algorithms.macs_server_to_client,
        ] {
            digest.update(list.join(","));
            digest.update(b"\n");
        }
        let digest = digest.finalize()[..4].iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        Some(format!(
            "{} {} {} algorithms:{digest}",
            key.key_type, key.fingerprint, self.identification.software
        ))
    }
}

impl Evidence for SshEvidence {
    fn summary(&self) -> String {
        let id = &self.identification;
        match &self.host_key {
            Some(key) => format!(
                "SSH-{}-{} {} {}",
                id.protocol, id.software, key.key_type, key.fingerprint
            ),
            None => format!("SSH-{}-{}", id.protocol, id.software),
        }
    }

    fn json_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        let id = &self.identification;
        vec![
            ("software", id.software.clone().into()),
            ("ssh_protocol", id.protocol.clone().into()),
            ("ssh_comments", id.comments.clone().into()),
            (
                "ssh_algorithms",
                serde_json::to_value(self.algorithms.as_deref()).unwrap_or_default(),
            ),
            ("ssh_host_key", serde_json::to_value(&self.host_key).unwrap_or_default()),
            ("ssh_host_key_note", self.host_key_note.clone().into()),
        ]
    }

    fn info(&self) -> Vec<InfoSeries> {
        let mut series = vec![InfoSeries {
            family: "whitelist_audit_ssh_info",
            help: "1; software from the server's SSH identification line.",
            // Software versions are few per pool; the cap guards against a server sending noise.
            labels: vec![("software", self.identification.software.chars().take(64).collect())],
        }];
        if let Some(key) = &self.host_key {
            series.push(InfoSeries {
                family: "whitelist_audit_ssh_host_key_info",
                help: "1; the host key the address proved it holds (its signature verified), as ssh-keygen -lf prints it.",
                labels: vec![("type", key.key_type.clone()), ("fingerprint", key.fingerprint.clone())],
            });
        }
        series
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The kinds of algorithm a client and a server must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    Kex,
    HostKey,
    Cipher,
    Mac,
}

impl AlgorithmKind {
    pub const ALL: [Self; 4] = [Self::Kex, Self::HostKey, Self::Cipher, Self::Mac];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Kex => "kex",
            Self::HostKey => "host_key",
            Self::Cipher => "cipher",
            Self::Mac => "mac",
        }
    }
}

/// Ciphers that authenticate on their own: with one of them the MAC list is ignored (OpenSSH's
/// `cipher_authlen`). RFC 5647's `AEAD_AES_*_GCM` are not among them: those must also be agreed
/// in the MAC list, which the lists already say.
pub fn is_aead(cipher: &str) -> bool {
    matches!(
        cipher,
        "chacha20-poly1305@openssh.com" | "aes128-gcm@openssh.com" | "aes256-gcm@openssh.com"
    )
}

/// Why an algorithm is weak, and who says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Weakness {
    pub reason: &'static str,
    pub source: &'static str,
}

const RFC_9142: &str = "RFC 9142";
const RFC_9142_MAY: &str = "ssh-audit (RFC 9142 asks that SHA-1 be retired)";
const RFC_8332: &str = "RFC 8332; off by default since OpenSSH 8.8";
const SSH_AUDIT: &str = "ssh-audit";
const RFC_8758: &str = "RFC 8758";

/// Whether `name` of `kind` is weak: an algorithm servers are dropping, so a client that agrees
/// on nothing else breaks at the next server upgrade. Mirrors the table in `docs/ssh-clients.md`,
/// which quotes each source.
pub fn weakness(kind: AlgorithmKind, name: &str) -> Option<Weakness> {
    let (reason, source) = match (kind, name) {
        (AlgorithmKind::Kex, "diffie-hellman-group1-sha1") => ("1024-bit group, SHA-1", RFC_9142),
        (AlgorithmKind::Kex, "diffie-hellman-group-exchange-sha1") => ("SHA-1 exchange hash", RFC_9142),
        (AlgorithmKind::Kex, "diffie-hellman-group14-sha1") => ("SHA-1 exchange hash", RFC_9142_MAY),
        (AlgorithmKind::Kex, "rsa1024-sha1") => ("1024-bit RSA, SHA-1", RFC_9142),
        (AlgorithmKind::HostKey, "ssh-rsa" | "ssh-rsa-cert-v01@openssh.com") => ("RSA signatures over SHA-1", RFC_8332),
        (AlgorithmKind::HostKey, "ssh-dss" | "ssh-dss-cert-v01@openssh.com") => ("DSA, 1024-bit, SHA-1", SSH_AUDIT),
        (AlgorithmKind::Cipher, "3des-cbc" | "3des-ctr") => ("3DES", SSH_AUDIT),
        (AlgorithmKind::Cipher, "arcfour" | "arcfour128" | "arcfour256") => ("RC4", RFC_8758),
        (AlgorithmKind::Cipher, "blowfish-cbc" | "blowfish-ctr") => ("Blowfish, 64-bit block", SSH_AUDIT),
        (AlgorithmKind::Cipher, "des-cbc") => ("single DES", SSH_AUDIT),
        (AlgorithmKind::Cipher, "rijndael-cbc@lysator.liu.se" | "aes128-cbc" | "aes192-cbc" | "aes256-cbc") => {
            ("CBC mode", SSH_AUDIT)
        }
        (
            AlgorithmKind::Mac,
            "hmac-md5" | "hmac-md5-96" | "hmac-md5-etm@openssh.com" | "hmac-md5-96-etm@openssh.com",
        ) => ("MD5 MAC", SSH_AUDIT),
        (
            AlgorithmKind::Mac,
            "hmac-sha1" | "hmac-sha1-96" | "hmac-sha1-etm@openssh.com" | "hmac-sha1-96-etm@openssh.com",
        ) => ("SHA-1 MAC", SSH_AUDIT),
        _ => return None,
    };
    Some(Weakness { reason, source })
}

/// The algorithm the client picks: its first that the server also offers (RFC 4253 7.1).
fn first_agreed<'a>(client: &'a [String], server: &[String]) -> Option<&'a str> {
    client
        .iter()
        .filter(|name| !is_marker(name))
        .find(|name| server.contains(name))
        .map(String::as_str)
}

/// Everything a client and a server have in common, in the client's order.
fn common<'a>(client: &'a [String], server: &[String]) -> Vec<&'a str> {
    client
        .iter()
        .filter(|name| !is_marker(name) && server.contains(name))
        .map(String::as_str)
        .collect()
}

/// A kind on which the only algorithms a client shares with the server are weak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeakAgreement {
    pub kind: AlgorithmKind,
    pub algorithms: Vec<String>,
    pub reason: &'static str,
    pub source: &'static str,
}

/// A kind of algorithm on which a client and a server share nothing: what each offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub kind: AlgorithmKind,
    pub client_offers: Vec<String>,
    pub server_offers: Vec<String>,
}

/// The first direction of `kind` in which everything shared is weak, if any.
fn weak_agreement(kind: AlgorithmKind, directions: &[Vec<&str>]) -> Option<WeakAgreement> {
    directions.iter().find_map(|shared| {
        let weaknesses: Vec<Weakness> = shared.iter().filter_map(|name| weakness(kind, name)).collect();
        (!shared.is_empty() && weaknesses.len() == shared.len()).then(|| WeakAgreement {
            kind,
            algorithms: shared.iter().map(|s| (*s).to_string()).collect(),
            reason: weaknesses[0].reason,
            source: weaknesses[0].source,
        })
    })
}

/// What one client would get from one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientVerdict {
    pub client: String,
    pub compatible: bool,
    /// What the client would pick; `None` where nothing is shared (or, for the MAC, where the
    /// cipher carries its own).
    pub kex: Option<String>,
    pub host_key: Option<String>,
    pub cipher: Option<String>,
    pub mac: Option<String>,
    /// The kinds with nothing in common, with both sides' lists.
    pub missing: Vec<Mismatch>,
    pub weak_only: Vec<WeakAgreement>,
}

/// Negotiates as `client` would with a server offering `server`.
pub fn negotiate(client: &ClientProfile, server: &ServerAlgorithms) -> ClientVerdict {
    let kex = first_agreed(&client.kex, &server.kex);
    let host_key = first_agreed(&client.host_key, &server.host_key);
    // Each direction is negotiated on its own; a client profile offers one list for both.
    let cipher_out = first_agreed(&client.ciphers, &server.ciphers_client_to_server);
    let cipher_in = first_agreed(&client.ciphers, &server.ciphers_server_to_client);
    let mac_needed = |cipher: Option<&str>| cipher.is_some_and(|c| !is_aead(c));
    let mac_out = first_agreed(&client.macs, &server.macs_client_to_server);
    let mac_in = first_agreed(&client.macs, &server.macs_server_to_client);
    let mut missing = Vec::new();
    let mut mismatch = |kind, client: &[String], server: &[String], direction_ok: bool| {
        if !direction_ok {
            missing.push(Mismatch {
                kind,
                client_offers: client.iter().filter(|n| !is_marker(n)).cloned().collect(),
                server_offers: server.iter().filter(|n| !is_marker(n)).cloned().collect(),
            });
        }
    };
    mismatch(AlgorithmKind::Kex, &client.kex, &server.kex, kex.is_some());
    mismatch(
        AlgorithmKind::HostKey,
        &client.host_key,
        &server.host_key,
        host_key.is_some(),
    );
    let (cipher_list, cipher_ok) = if cipher_out.is_none() {
        (&server.ciphers_client_to_server, false)
    } else {
        (&server.ciphers_server_to_client, cipher_in.is_some())
    };
    mismatch(AlgorithmKind::Cipher, &client.ciphers, cipher_list, cipher_ok);
    let (mac_list, mac_ok) = if mac_needed(cipher_out) && mac_out.is_none() {
        (&server.macs_client_to_server, false)
    } else {
        (
            &server.macs_server_to_client,
            !(mac_needed(cipher_in) && mac_in.is_none()),
        )
    };
    mismatch(AlgorithmKind::Mac, &client.macs, mac_list, mac_ok);
    let kinds = [
        weak_agreement(AlgorithmKind::Kex, &[common(&client.kex, &server.kex)]),
        weak_agreement(AlgorithmKind::HostKey, &[common(&client.host_key, &server.host_key)]),
        // Each direction on its own: a weak one breaks the client as surely as two.
        weak_agreement(
            AlgorithmKind::Cipher,
            &[
                common(&client.ciphers, &server.ciphers_client_to_server),
                common(&client.ciphers, &server.ciphers_server_to_client),
            ],
        ),
        weak_agreement(
            AlgorithmKind::Mac,
            &[
                if mac_needed(cipher_out) {
                    common(&client.macs, &server.macs_client_to_server)
                } else {
                    Vec::new()
                },
                if mac_needed(cipher_in) {
                    common(&client.macs, &server.macs_server_to_client)
                } else {
                    Vec::new()
                },
            ],
        ),
    ];
    let weak_only: Vec<WeakAgreement> = kinds.into_iter().flatten().collect();
    ClientVerdict {
        client: client.name.clone(),
        compatible: missing.is_empty(),
        kex: kex.map(str::to_string),
        host_key: host_key.map(str::to_string),
        cipher: cipher_out.map(str::to_string),
        mac: if mac_needed(cipher_out) {
            mac_out.map(str::to_string)
        } else {
            None
        },
        missing,
        weak_only,
    }
}

/// The SSH problems of an address: the `problem` label of `whitelist_audit_ssh_problem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SshProblem {
    /// A configured client agrees with the address on nothing of some kind: it cannot connect.
    NoCommonAlgorithm,
    /// A configured client agrees only on weak algorithms of some kind.
    WeakOnly,
    /// The host key is none of the target's pins.
    HostKeyMismatch,
    /// Without pins: the address presented another key than before.
    HostKeyChanged,
}

impl SshProblem {
    pub const ALL: [Self; 4] = [
        Self::NoCommonAlgorithm,
        Self::WeakOnly,
        Self::HostKeyMismatch,
        Self::HostKeyChanged,
    ];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::NoCommonAlgorithm => "no_common_algorithm",
            Self::WeakOnly => "weak_only",
            Self::HostKeyMismatch => "host_key_mismatch",
            Self::HostKeyChanged => "host_key_changed",
        }
    }
}

/// The host key an address presented, remembered across probes (and restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KnownKey {
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub key_type: String,
    /// When this key was first seen on the address.
    #[serde(with = "unix_seconds")]
    pub since: SystemTime,
    /// The key it replaced, if it replaced one.
    pub previous: Option<String>,
}

impl KnownKey {
    /// The memory after the address presented `key` at `at`.
    #[must_use]
    pub fn observe(known: Option<&Self>, key: &HostKey, at: SystemTime) -> Self {
        match known {
            Some(known) if known.fingerprint == key.fingerprint => known.clone(),
            other => Self {
                fingerprint: key.fingerprint.clone(),
                key_type: key.key_type.clone(),
                since: at,
                previous: other.map(|k| k.fingerprint.clone()),
            },
        }
    }

    /// Whether the change to this key is recent enough to report at `now`.
    pub fn changed_recently(&self, now: SystemTime, hold: Duration) -> bool {
        self.previous.is_some() && now.duration_since(self.since).unwrap_or_default() < hold
    }
}

/// A time as whole seconds since the Unix epoch, in the JSON the project writes (`check`'s output,
/// the state directory's files).
pub(crate) mod unix_seconds {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(u64::deserialize(d)?))
            .ok_or_else(|| serde::de::Error::custom("a time out of range"))
    }
}

/// What the audit says of one address's SSH handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshReport {
    /// One verdict per configured client, in the configured order.
    pub clients: Vec<ClientVerdict>,
    pub host_key: Option<HostKey>,
    /// The key this address presented before, when it changed recently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_host_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_since: Option<u64>,
    pub problems: Vec<SshProblem>,
}

impl SshReport {
    pub fn has(&self, problem: SshProblem) -> bool {
        self.problems.contains(&problem)
    }
}

/// Assesses one address: its algorithms against every client of `policy`, its key against the
/// pins or against what it presented before.
pub fn assess(
    policy: &SshPolicy,
    evidence: &SshEvidence,
    known: Option<&KnownKey>,
    now: SystemTime,
) -> Option<SshReport> {
    let algorithms = evidence.algorithms.as_deref()?;
    let clients: Vec<ClientVerdict> = policy.clients.iter().map(|c| negotiate(c, algorithms)).collect();
    let mut problems = Vec::new();
    if clients.iter().any(|c| !c.compatible) {
        problems.push(SshProblem::NoCommonAlgorithm);
    }
    if clients.iter().any(|c| !c.weak_only.is_empty()) {
        problems.push(SshProblem::WeakOnly);
    }
    let mut previous_host_key = None;
    // A pin asks for proof: an address that proved no key has not proved a pinned one.
    if evidence.host_key.is_none() && !policy.host_keys.is_empty() {
        problems.push(SshProblem::HostKeyMismatch);
    }
    if let Some(key) = &evidence.host_key {
        if !policy.host_keys.is_empty() && !policy.host_keys.contains(&key.fingerprint) {
            problems.push(SshProblem::HostKeyMismatch);
        }
        let changed = known.filter(|k| {
            policy.host_keys.is_empty()
                && k.fingerprint == key.fingerprint
                && k.changed_recently(now, policy.host_key_change_hold)
        });
        if let Some(known) = changed {
            problems.push(SshProblem::HostKeyChanged);
            previous_host_key.clone_from(&known.previous);
        }
    }
    Some(SshReport {
        clients,
        host_key: evidence.host_key.clone(),
        previous_host_key,
        host_key_since: known.map(|k| {
            k.since
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        }),
        problems,
    })
}

/// How many different servers, as far as a client can tell, the addresses of a pool are: the
/// same host key and algorithms make one. An address whose key could not be read differs only if
/// its algorithms are none of the others'; a failed key exchange is not another server.
pub fn count_variants<'a>(pool: impl IntoIterator<Item = &'a SshEvidence>) -> usize {
    let mut keyed: BTreeSet<(&str, &ServerAlgorithms)> = BTreeSet::new();
    let mut keyless: BTreeSet<&ServerAlgorithms> = BTreeSet::new();
    for evidence in pool {
        let Some(algorithms) = evidence.algorithms.as_deref() else {
            continue;
        };
        match &evidence.host_key {
            Some(key) => {
                keyed.insert((key.fingerprint.as_str(), algorithms));
            }
            None => {
                keyless.insert(algorithms);
            }
        }
    }
    let unmatched = keyless
        .iter()
        .filter(|algorithms| !keyed.iter().any(|(_, a)| a == *algorithms))
        .count();
    keyed.len() + unmatched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        list.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    fn kinds(verdict: &ClientVerdict) -> Vec<AlgorithmKind> {
        verdict.missing.iter().map(|m| m.kind).collect()
    }

    fn client(kex: &str, host_key: &str, ciphers: &str, macs: &str) -> ClientProfile {
        ClientProfile {
            name: "test".into(),
            client: String::new(),
            version: String::new(),
            source: String::new(),
            checked: String::new(),
            kex: names(kex),
            host_key: names(host_key),
            ciphers: names(ciphers),
            macs: names(macs),
        }
    }

    fn server(kex: &str, host_key: &str, ciphers: &str, macs: &str) -> ServerAlgorithms {
        ServerAlgorithms {
            kex: names(kex),
            host_key: names(host_key),
            ciphers_client_to_server: names(ciphers),
            ciphers_server_to_client: names(ciphers),
            macs_client_to_server: names(macs),
            macs_server_to_client: names(macs),
            compression_client_to_server: names("none"),
            compression_server_to_client: names("none"),
        }
    }

    #[test]
    fn the_client_order_decides_and_markers_never_count() {
        let c = client(
            "curve25519-sha256,ecdh-sha2-nistp256,ext-info-c,kex-strict-c-v00@openssh.com",
            "ssh-ed25519,rsa-sha2-512",
            "aes128-ctr,aes256-ctr",
            "hmac-sha2-256,hmac-sha1",
        );
        let s = server(
            "kex-strict-s-v00@openssh.com,ecdh-sha2-nistp256,curve25519-sha256",
            "rsa-sha2-512,ssh-ed25519",
            "aes256-ctr,aes128-ctr",
            "hmac-sha1,hmac-sha2-256",
        );
        let v = negotiate(&c, &s);
        assert!(v.compatible);
        assert_eq!(v.kex.as_deref(), Some("curve25519-sha256"));
        assert_eq!(v.host_key.as_deref(), Some("ssh-ed25519"));
        assert_eq!(v.cipher.as_deref(), Some("aes128-ctr"));
        assert_eq!(v.mac.as_deref(), Some("hmac-sha2-256"));
        assert!(v.weak_only.is_empty());
        let only_markers = server(
            "kex-strict-s-v00@openssh.com,ext-info-c",
            "ssh-ed25519",
            "aes128-ctr",
            "hmac-sha2-256",
        );
        assert_eq!(kinds(&negotiate(&c, &only_markers)), vec![AlgorithmKind::Kex]);
    }

    #[test]
    fn an_aead_cipher_needs_no_mac_but_a_plain_one_does() {
        let c = client(
            "curve25519-sha256",
            "ssh-ed25519",
            "chacha20-poly1305@openssh.com,aes128-ctr",
            "hmac-sha2-256",
        );
        let aead = server(
            "curve25519-sha256",
            "ssh-ed25519",
            "chacha20-poly1305@openssh.com",
            "umac-128@openssh.com",
        );
        let v = negotiate(&c, &aead);
        assert!(v.compatible, "{v:?}");
        assert_eq!(v.mac, None);
        let ctr = server("curve25519-sha256", "ssh-ed25519", "aes128-ctr", "umac-128@openssh.com");
        assert_eq!(kinds(&negotiate(&c, &ctr)), vec![AlgorithmKind::Mac]);
    }

    #[test]
    fn each_cipher_direction_must_agree() {
        let c = client("curve25519-sha256", "ssh-ed25519", "aes128-ctr", "hmac-sha2-256");
        let mut s = server("curve25519-sha256", "ssh-ed25519", "aes128-ctr", "hmac-sha2-256");
        s.ciphers_server_to_client = names("aes256-gcm@openssh.com");
        let v = negotiate(&c, &s);
        assert_eq!(kinds(&v), vec![AlgorithmKind::Cipher]);
        assert_eq!(
            v.missing[0].server_offers,
            vec!["aes256-gcm@openssh.com"],
            "the failing direction's list"
        );
    }

    #[test]
    fn every_kind_without_a_common_algorithm_is_named() {
        let old = client("diffie-hellman-group14-sha1", "ssh-rsa", "aes128-cbc", "hmac-sha1");
        let new = server("curve25519-sha256", "ssh-ed25519", "aes128-ctr", "hmac-sha2-256");
        let v = negotiate(&old, &new);
        assert!(!v.compatible);
        assert_eq!(
            kinds(&v),
            vec![AlgorithmKind::Kex, AlgorithmKind::HostKey, AlgorithmKind::Cipher]
        );
        assert_eq!(v.missing[2].client_offers, vec!["aes128-cbc"]);
        assert_eq!(v.missing[2].server_offers, vec!["aes128-ctr"]);
        // With no cipher agreed no MAC is needed yet: the cipher is what to fix first.
    }

    #[test]
    fn weak_only_names_the_kind_the_algorithms_and_the_source() {
        let c = client(
            "curve25519-sha256,diffie-hellman-group14-sha1",
            "ssh-ed25519,ssh-rsa",
            "aes128-ctr,aes128-cbc",
            "hmac-sha2-256,hmac-sha1",
        );
        let s = server(
            "diffie-hellman-group14-sha1",
            "ssh-ed25519",
            "aes128-cbc,3des-cbc",
            "hmac-sha1",
        );
        let v = negotiate(&c, &s);
        assert!(v.compatible);
        let kinds: Vec<AlgorithmKind> = v.weak_only.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            vec![AlgorithmKind::Kex, AlgorithmKind::Cipher, AlgorithmKind::Mac]
        );
        assert_eq!(v.weak_only[0].source, RFC_9142_MAY);
        assert_eq!(v.weak_only[1].algorithms, vec!["aes128-cbc"]);
        // One strong choice left is enough.
        let s = server(
            "curve25519-sha256,diffie-hellman-group14-sha1",
            "ssh-ed25519",
            "aes128-ctr",
            "hmac-sha2-256",
        );
        assert!(negotiate(&c, &s).weak_only.is_empty());
    }

    #[test]
    fn weakness_follows_the_named_sources() {
        assert!(weakness(AlgorithmKind::Kex, "diffie-hellman-group-exchange-sha1").is_some());
        assert!(weakness(AlgorithmKind::Kex, "diffie-hellman-group1-sha1").is_some());
        assert!(weakness(AlgorithmKind::Kex, "diffie-hellman-group14-sha256").is_none());
        assert!(weakness(AlgorithmKind::Kex, "curve25519-sha256").is_none());
        assert!(weakness(AlgorithmKind::HostKey, "rsa-sha2-256").is_none());
        assert!(weakness(AlgorithmKind::HostKey, "ssh-rsa").is_some());
        assert!(weakness(AlgorithmKind::Cipher, "aes256-cbc").is_some());
        assert!(weakness(AlgorithmKind::Cipher, "aes256-ctr").is_none());
        assert!(weakness(AlgorithmKind::Mac, "hmac-sha1-etm@openssh.com").is_some());
        assert!(weakness(AlgorithmKind::Mac, "hmac-sha2-512-etm@openssh.com").is_none());
    }

    fn key(fp: &str) -> HostKey {
        HostKey {
            key_type: "ssh-ed25519".into(),
            algorithm: "ssh-ed25519".into(),
            fingerprint: fp.into(),
        }
    }

    fn evidence(fp: Option<&str>) -> SshEvidence {
        SshEvidence {
            identification: Identification {
                protocol: "2.0".into(),
                software: "OpenSSH_9.2p1".into(),
                comments: None,
            },
            algorithms: Some(Arc::new(server(
                "curve25519-sha256",
                "ssh-ed25519",
                "aes128-ctr",
                "hmac-sha2-256",
            ))),
            host_key: fp.map(key),
            host_key_note: None,
            presented: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn a_changed_key_is_reported_for_the_hold_then_accepted() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hold = Duration::from_secs(3600);
        let policy = SshPolicy {
            host_key_change_hold: hold,
            ..SshPolicy::default()
        };
        let first = KnownKey::observe(None, &key("SHA256:a"), t0);
        assert_eq!(first.previous, None);
        let report = assess(&policy, &evidence(Some("SHA256:a")), Some(&first), t0).unwrap();
        assert!(!report.has(SshProblem::HostKeyChanged));
        let same = KnownKey::observe(Some(&first), &key("SHA256:a"), t0 + hold);
        assert_eq!(same, first);
        let t1 = t0 + Duration::from_secs(60);
        let changed = KnownKey::observe(Some(&first), &key("SHA256:b"), t1);
        assert_eq!(changed.previous.as_deref(), Some("SHA256:a"));
        let report = assess(&policy, &evidence(Some("SHA256:b")), Some(&changed), t1).unwrap();
        assert!(report.has(SshProblem::HostKeyChanged));
        assert_eq!(report.previous_host_key.as_deref(), Some("SHA256:a"));
        let later = assess(&policy, &evidence(Some("SHA256:b")), Some(&changed), t1 + hold).unwrap();
        assert!(!later.has(SshProblem::HostKeyChanged));
    }

    #[test]
    fn a_failed_key_exchange_is_not_another_server() {
        let pool = |fps: &[Option<&str>]| fps.iter().map(|fp| evidence(*fp)).collect::<Vec<_>>();
        assert_eq!(count_variants(&pool(&[Some("SHA256:a"), Some("SHA256:a"), None])), 1);
        assert_eq!(count_variants(&pool(&[Some("SHA256:a"), Some("SHA256:b")])), 2);
        let mut upgraded = pool(&[Some("SHA256:a"), None]);
        upgraded[1].algorithms = Some(Arc::new(server(
            "mlkem768x25519-sha256",
            "ssh-ed25519",
            "aes128-ctr",
            "hmac-sha2-256",
        )));
        assert_eq!(count_variants(&upgraded), 2);
        assert_eq!(count_variants(&[]), 0);
    }

    #[test]
    fn a_pin_without_a_proved_key_is_a_mismatch() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let pinned = SshPolicy {
            host_keys: vec!["SHA256:a".into()],
            ..SshPolicy::default()
        };
        let report = assess(&pinned, &evidence(None), None, now).unwrap();
        assert_eq!(report.problems, vec![SshProblem::HostKeyMismatch]);
        let unpinned = assess(&SshPolicy::default(), &evidence(None), None, now).unwrap();
        assert!(unpinned.problems.is_empty());
    }

    #[test]
    fn a_weak_server_to_client_direction_is_reported_too() {
        let c = client(
            "curve25519-sha256",
            "ssh-ed25519",
            "aes128-ctr,aes128-cbc",
            "hmac-sha2-256",
        );
        let mut s = server(
            "curve25519-sha256",
            "ssh-ed25519",
            "aes128-ctr,aes128-cbc",
            "hmac-sha2-256",
        );
        s.ciphers_server_to_client = names("aes128-cbc");
        let v = negotiate(&c, &s);
        assert_eq!(v.weak_only.len(), 1, "{v:?}");
        assert_eq!(v.weak_only[0].algorithms, vec!["aes128-cbc"]);
    }

    #[test]
    fn pins_decide_over_memory() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let policy = SshPolicy {
            host_keys: vec!["SHA256:a".into()],
            ..SshPolicy::default()
        };
        let known = KnownKey::observe(
            Some(&KnownKey::observe(None, &key("SHA256:x"), now)),
            &key("SHA256:a"),
            now,
        );
        let ok = assess(&policy, &evidence(Some("SHA256:a")), Some(&known), now).unwrap();
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        let bad = assess(&policy, &evidence(Some("SHA256:b")), None, now).unwrap();
        assert_eq!(bad.problems, vec![SshProblem::HostKeyMismatch]);
    }
}
