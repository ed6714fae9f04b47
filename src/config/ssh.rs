//! A target's `ssh:` block: the SSH clients whose algorithms are checked against every address,
//! and the host keys expected of it. The shipped client profiles (`profiles/ssh-clients.yaml`)
//! are compiled in, so the binary and its documentation cannot disagree.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;
use super::raw::{CheckKind, RawAlgorithms, RawSsh};
use super::session::SessionPolicy;

/// What one SSH client offers in its key exchange, in its own order of preference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientProfile {
    /// The name written in `ssh.clients` and the `client` label.
    pub name: String,
    /// The client, for people: `OpenSSH client`, `JSch`.
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub version: String,
    /// Where the lists come from.
    #[serde(default)]
    pub source: String,
    /// How the lists were confirmed against the real client.
    #[serde(default)]
    pub checked: String,
    pub kex: Vec<String>,
    pub host_key: Vec<String>,
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    profiles: Vec<ClientProfile>,
}

/// The profiles file as shipped; `docs/ssh-clients.md` explains it.
pub const SHIPPED_PROFILES: &str = include_str!("../../profiles/ssh-clients.yaml");

/// The name of the profile made of a target's `ssh.client_algorithms`.
pub const CUSTOM_CLIENT: &str = "custom";

/// The client checked when a target names none: what most people run.
pub const DEFAULT_CLIENT: &str = "openssh";

/// How long `host_key_changed` is reported after an address's key changed.
pub const DEFAULT_HOST_KEY_CHANGE_HOLD: Duration = Duration::from_secs(24 * 3600);

/// The shipped profiles. The file is compiled in and a test parses it, so a failure here is a
/// build defect, not bad input.
pub fn shipped() -> &'static [Arc<ClientProfile>] {
    static PROFILES: LazyLock<Vec<Arc<ClientProfile>>> = LazyLock::new(|| {
        let file: ProfileFile =
            serde_saphyr::from_str(SHIPPED_PROFILES).expect("profiles/ssh-clients.yaml is valid (tested)");
        file.profiles.into_iter().map(Arc::new).collect()
    });
    &PROFILES
}

/// The shipped profile called `name`.
pub fn profile(name: &str) -> Option<Arc<ClientProfile>> {
    shipped().iter().find(|p| p.name == name).cloned()
}

/// What a target expects of its SSH servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPolicy {
    /// The clients whose algorithms are checked, first one first (its choice is the one
    /// `whitelist_audit_ssh_kex_info` shows).
    pub clients: Vec<Arc<ClientProfile>>,
    /// Pinned host key fingerprints (`SHA256:...`); empty: trust on first use.
    pub host_keys: Vec<String>,
    pub host_key_change_hold: Duration,
    /// The idle hold and the login probe, each off unless configured.
    pub session: SessionPolicy,
}

impl Default for SshPolicy {
    fn default() -> Self {
        Self {
            clients: profile(DEFAULT_CLIENT).into_iter().collect(),
            host_keys: Vec::new(),
            host_key_change_hold: DEFAULT_HOST_KEY_CHANGE_HOLD,
            session: SessionPolicy::default(),
        }
    }
}

/// Builds a target's policy from its `ssh:` block (`key` is `targets[i]`).
pub fn build(
    file: &Path,
    key: &str,
    check: CheckKind,
    raw: Option<&Spanned<RawSsh>>,
) -> Result<SshPolicy, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SshPolicy::default());
    };
    if check != CheckKind::Ssh {
        return Err(ConfigError::at(
            file,
            &raw.referenced,
            format!("{key}.ssh"),
            format!(
                "`ssh:` applies to `check: ssh` only; this target has `check: {}`",
                check.as_label()
            ),
        ));
    }
    let raw_location = raw.referenced;
    let raw = &raw.value;
    let mut clients = Vec::new();
    for (i, name) in raw.clients.iter().flatten().enumerate() {
        let at = |message: String| ConfigError::at(file, &name.referenced, format!("{key}.ssh.clients[{i}]"), message);
        let wanted = name.value.trim();
        let Some(profile) = profile(wanted) else {
            let known: Vec<&str> = shipped().iter().map(|p| p.name.as_str()).collect();
            return Err(at(format!(
                "unknown SSH client `{wanted}`; the shipped profiles are: {} (or describe yours under `ssh.client_algorithms`)",
                known.join(", ")
            )));
        };
        if clients.iter().any(|c: &Arc<ClientProfile>| c.name == profile.name) {
            return Err(at(format!("`{wanted}` is listed twice")));
        }
        clients.push(profile);
    }
    if let Some(custom) = &raw.client_algorithms {
        clients.push(Arc::new(custom_profile(
            file,
            &format!("{key}.ssh.client_algorithms"),
            custom,
        )?));
    }
    if raw.clients.is_none() && raw.client_algorithms.is_none() {
        clients = SshPolicy::default().clients;
    }
    if clients.is_empty() {
        return Err(ConfigError::at(
            file,
            &raw_location,
            format!("{key}.ssh.clients"),
            "no SSH client to check: name at least one (the default is [openssh]) or describe one under `ssh.client_algorithms`",
        ));
    }
    let mut host_keys = Vec::new();
    for (i, pin) in raw.host_keys.iter().flatten().enumerate() {
        let text = pin.value.trim();
        let shaped = text.strip_prefix("SHA256:").is_some_and(|b64| {
            b64.len() == 43 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        });
        if shaped && !is_sha256_fingerprint(text) {
            return Err(ConfigError::at(
                file,
                &pin.referenced,
                format!("{key}.ssh.host_keys[{i}]"),
                format!(
                    "`{text}` cannot be a SHA-256 fingerprint: 32 bytes never end in that last character (a typo?)"
                ),
            ));
        }
        if !is_sha256_fingerprint(text) {
            return Err(ConfigError::at(
                file,
                &pin.referenced,
                format!("{key}.ssh.host_keys[{i}]"),
                format!(
                    "`{text}` is not a host key fingerprint as `ssh-keygen -lf` prints it (SHA256: and 43 base64 characters)"
                ),
            ));
        }
        host_keys.push(text.to_string());
    }
    let host_key_change_hold = raw.host_key_change_hold.map_or(DEFAULT_HOST_KEY_CHANGE_HOLD, |d| d.0);
    if host_key_change_hold.is_zero() {
        return Err(ConfigError::at(
            file,
            &raw_location,
            format!("{key}.ssh.host_key_change_hold"),
            "0s would never report a changed host key: give a duration such as 24h",
        ));
    }
    Ok(SshPolicy {
        clients,
        host_keys,
        host_key_change_hold,
        session: super::session::build(file, key, raw)?,
    })
}

fn custom_profile(file: &Path, key: &str, raw: &Spanned<RawAlgorithms>) -> Result<ClientProfile, ConfigError> {
    let list = |kind: &str, names: &[Spanned<String>]| -> Result<Vec<String>, ConfigError> {
        if names.is_empty() {
            return Err(ConfigError::at(
                file,
                &raw.referenced,
                format!("{key}.{kind}"),
                "empty list: a client offers at least one algorithm of each kind",
            ));
        }
        if names.iter().all(|n| is_marker(n.value.trim())) {
            return Err(ConfigError::at(
                file,
                &names[0].referenced,
                format!("{key}.{kind}"),
                "only signalling names (ext-info-*, kex-strict-*), which are never agreed on: list real algorithms",
            ));
        }
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let text = name.value.trim();
                if is_algorithm_name(text) {
                    Ok(text.to_string())
                } else {
                    Err(ConfigError::at(
                        file,
                        &name.referenced,
                        format!("{key}.{kind}[{i}]"),
                        format!(
                            "`{text}` is not an SSH algorithm name (1 to 64 printable characters, no comma or space)"
                        ),
                    ))
                }
            })
            .collect()
    };
    let value = &raw.value;
    Ok(ClientProfile {
        name: CUSTOM_CLIENT.to_string(),
        client: "ssh.client_algorithms".to_string(),
        version: String::new(),
        source: format!("the configuration, {key}"),
        checked: String::new(),
        kex: list("kex", &value.kex)?,
        host_key: list("host_key", &value.host_key)?,
        ciphers: list("ciphers", &value.ciphers)?,
        macs: list("macs", &value.macs)?,
    })
}

/// RFC 4251 section 6: names are at most 64 printable US-ASCII characters, without comma or space.
pub fn is_algorithm_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// `SHA256:` and the unpadded base64 of 32 bytes, as `ssh-keygen -lf` prints it. 32 bytes leave
/// the last of the 43 characters 2 bits of padding, which must be zero: a typo there would never
/// match any key.
pub fn is_sha256_fingerprint(text: &str) -> bool {
    text.strip_prefix("SHA256:").is_some_and(|b64| {
        b64.len() == 43
            && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
            && b64.ends_with(|c: char| "AEIMQUYcgkosw048".contains(c))
    })
}

/// RFC 8308's `ext-info-*` and OpenSSH's `kex-strict-*`: signals that ride in the key exchange
/// list and are never agreed on.
pub fn is_marker(name: &str) -> bool {
    name.starts_with("ext-info-") || name.starts_with("kex-strict-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profiles_parse_and_every_list_is_a_list_of_names() {
        let profiles = shipped();
        assert!(profiles.len() >= 5, "{}", profiles.len());
        for p in profiles {
            for (kind, list) in [
                ("kex", &p.kex),
                ("host_key", &p.host_key),
                ("ciphers", &p.ciphers),
                ("macs", &p.macs),
            ] {
                assert!(!list.is_empty(), "{} {kind}", p.name);
                assert!(list.iter().all(|n| is_algorithm_name(n)), "{} {kind}: {list:?}", p.name);
            }
            assert!(
                !p.source.is_empty() && !p.version.is_empty(),
                "{} names its source",
                p.name
            );
        }
        for name in ["openssh", "openssh-7.4", "paramiko", "jsch", "putty"] {
            assert!(profile(name).is_some(), "{name} is shipped");
        }
        let mut names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), profiles.len(), "profile names are unique");
    }

    #[test]
    fn fingerprints_are_checked_for_shape() {
        assert!(is_sha256_fingerprint(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
        ));
        assert!(!is_sha256_fingerprint(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s="
        ));
        assert!(!is_sha256_fingerprint(
            "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48"
        ));
        assert!(!is_sha256_fingerprint("uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"));
        // A last character that 32 bytes cannot end in: a typo that would never match.
        assert!(!is_sha256_fingerprint(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2t"
        ));
    }
}
