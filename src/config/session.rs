//! A target's SSH session checks, in its `ssh:` block: the idle hold (`idle_hold`, `idle_interval`,
//! `idle_concurrency`) and the login probe (`auth`, `sftp`, `login_interval`). Both are off by
//! default. The login's secret comes from an environment variable or a file, never from the
//! configuration itself, and is read here, at load, so a missing one stops the start with the key
//! that names it; [`Secret`] never shows it in `Debug`, errors or output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::ConfigError;
use super::defaults;
use super::raw::{RawAuth, RawSsh};

/// A password or a private key's text: compared, used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the monitoring account proves itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The `password` method; `from` says where it was read (`environment variable X`, a path).
    Password { secret: Secret, from: String },
    /// The `publickey` method with an unencrypted OpenSSH or PEM private key.
    PrivateKey {
        key: Arc<russh::keys::PrivateKey>,
        path: PathBuf,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key's own Debug is its crate's choice; ours shows where it came from only.
        match self {
            Self::Password { from, .. } => write!(f, "Password(<redacted>, from {from})"),
            Self::PrivateKey { path, .. } => write!(f, "PrivateKey(<redacted>, from {})", path.display()),
        }
    }
}

impl Credential {
    /// Where the secret was read, for messages.
    pub fn source(&self) -> String {
        match self {
            Self::Password { from, .. } => from.clone(),
            Self::PrivateKey { path, .. } => path.display().to_string(),
        }
    }

    /// The SSH authentication method the credential uses (RFC 4252 names).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Password { .. } => "password",
            Self::PrivateKey { .. } => "publickey",
        }
    }
}

/// The idle hold: open a session, stay silent, then ask for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    pub hold: Duration,
    pub interval: Duration,
    pub concurrency: usize,
}

/// The login probe with a dedicated monitoring account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPolicy {
    pub username: String,
    pub credential: Credential,
    /// Whether the `sftp` subsystem is opened and asked `realpath .` after the login.
    pub sftp: bool,
    pub interval: Duration,
}

impl LoginPolicy {
    /// The account as remembered across restarts: the user and where the secret is read, never
    /// the secret.
    pub fn account(&self) -> String {
        format!("{} {}", self.username, self.credential.source())
    }
}

/// Both session checks of one target; each `None` when off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle: Option<IdlePolicy>,
    pub login: Option<LoginPolicy>,
}

/// Builds the session checks of `targets[i].ssh` (`key` is `targets[i]`).
pub fn build(file: &Path, key: &str, raw: &RawSsh) -> Result<SessionPolicy, ConfigError> {
    let idle = idle(file, key, raw)?;
    let login = if let Some(auth) = &raw.auth {
        Some(login(file, key, auth, raw)?)
    } else {
        {
            if let Some(sftp) = raw.sftp.as_ref().filter(|s| s.value) {
                return Err(ConfigError::at(
                    file,
                    &sftp.referenced,
                    format!("{key}.ssh.sftp"),
                    "`sftp: true` needs a login: add an `ssh.auth` block with the monitoring account",
                ));
            }
            if let Some(interval) = &raw.login_interval {
                return Err(ConfigError::at(
                    file,
                    &interval.referenced,
                    format!("{key}.ssh.login_interval"),
                    "`login_interval` without `ssh.auth` has nothing to time: add the `auth` block or remove it",
                ));
            }
            None
        }
    };
    if let (Some(idle), Some(login)) = (idle, &login)
        && idle.interval < login.interval
    {
        let location = raw.idle_interval.as_ref().map_or_else(
            || raw.idle_hold.as_ref().expect("idle is on").referenced,
            |d| d.referenced,
        );
        return Err(ConfigError::at(
            file,
            &location,
            format!("{key}.ssh.idle_interval"),
            format!(
                "ssh.idle_interval ({}) must not be shorter than ssh.login_interval ({}): with ssh.auth every hold logs in, and logins are bounded by login_interval",
                humantime::format_duration(idle.interval),
                humantime::format_duration(login.interval)
            ),
        ));
    }
    if idle.is_none() {
        for (name, given) in [
            ("idle_interval", raw.idle_interval.as_ref().map(|d| d.referenced)),
            ("idle_concurrency", raw.idle_concurrency.as_ref().map(|c| c.referenced)),
        ] {
            if let Some(at) = given {
                return Err(ConfigError::at(
                    file,
                    &at,
                    format!("{key}.ssh.{name}"),
                    format!(
                        "`{name}` without `ssh.idle_hold` has no effect: the idle hold is off until `idle_hold` is set"
                    ),
                ));
            }
        }
    }
    Ok(SessionPolicy { idle, login })
}

fn idle(file: &Path, key: &str, raw: &RawSsh) -> Result<Option<IdlePolicy>, ConfigError> {
    let Some(hold) = &raw.idle_hold else {
        return Ok(None);
    };
    let at = |location: &Location, name: &str, message: String| {
        ConfigError::at(file, location, format!("{key}.ssh.{name}"), message)
    };
    let hold_value = hold.value.0;
    if hold_value < Duration::from_secs(1) || hold_value > defaults::IDLE_HOLD_MAX {
        return Err(at(
            &hold.referenced,
            "idle_hold",
            format!(
                "{} is out of range: hold a session idle for 1s to {} (firewall idle timeouts are seconds to minutes)",
                humantime::format_duration(hold_value),
                humantime::format_duration(defaults::IDLE_HOLD_MAX)
            ),
        ));
    }
    let interval = raw
        .idle_interval
        .as_ref()
        .map_or(defaults::IDLE_INTERVAL, |d| d.value.0);
    if interval <= hold_value {
        let location = raw.idle_interval.as_ref().map_or(hold.referenced, |d| d.referenced);
        return Err(at(
            &location,
            "idle_interval",
            format!(
                "ssh.idle_interval ({}) must be longer than ssh.idle_hold ({}): an address is held at most once per interval",
                humantime::format_duration(interval),
                humantime::format_duration(hold_value)
            ),
        ));
    }
    if raw.auth.is_none() && hold_value >= defaults::OPENSSH_LOGIN_GRACE_TIME {
        // Accepted (a server may allow longer), but said at load: with OpenSSH's default the
        // answer can only ever be `server_closed`.
        tracing::warn!(
            "{}:{}:{}: {key}.ssh.idle_hold: {} without ssh.auth is held before authentication, which OpenSSH ends after LoginGraceTime (120s by default): expect server_closed, not a path verdict; hold for less, or configure ssh.auth",
            file.display(),
            hold.referenced.line(),
            hold.referenced.column(),
            humantime::format_duration(hold_value)
        );
    }
    let concurrency = raw
        .idle_concurrency
        .as_ref()
        .map_or(defaults::IDLE_CONCURRENCY, |c| c.value.0);
    if concurrency > 64 {
        return Err(at(
            &raw.idle_concurrency.as_ref().expect("above the default").referenced,
            "idle_concurrency",
            format!("{concurrency} idle sessions at once would hold a server's connection slots: at most 64"),
        ));
    }
    Ok(Some(IdlePolicy {
        hold: hold_value,
        interval,
        concurrency: usize::try_from(concurrency).expect("at most 64"),
    }))
}

fn login(file: &Path, key: &str, auth: &Spanned<RawAuth>, raw: &RawSsh) -> Result<LoginPolicy, ConfigError> {
    let at = |location: &Location, name: &str, message: String| {
        ConfigError::at(file, location, format!("{key}.ssh.auth.{name}"), message)
    };
    let value = &auth.value;
    for (name, given) in [
        ("password", value.password.as_ref().map(|p| p.referenced)),
        ("private_key", value.private_key.as_ref().map(|p| p.referenced)),
    ] {
        if let Some(location) = given {
            return Err(at(
                &location,
                name,
                format!(
                    "never write the secret in the configuration: use `{name}_{}` to name where it is read from",
                    if name == "password" {
                        "env` or `password_file"
                    } else {
                        "file"
                    }
                ),
            ));
        }
    }
    let Some(username) = &value.username else {
        return Err(at(
            &auth.referenced,
            "username",
            "missing: the monitoring account's user name".to_string(),
        ));
    };
    let user = username.value.trim();
    if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
        return Err(at(
            &username.referenced,
            "username",
            "a user name is 1 to 256 characters, without control characters".to_string(),
        ));
    }
    let given: Vec<(&str, Location)> = [
        value.password_env.as_ref().map(|v| ("password_env", v.referenced)),
        value.password_file.as_ref().map(|v| ("password_file", v.referenced)),
        value
            .private_key_file
            .as_ref()
            .map(|v| ("private_key_file", v.referenced)),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.as_slice() {
        [] => {
            return Err(ConfigError::at(
                file,
                &auth.referenced,
                format!("{key}.ssh.auth"),
                "no credential: give one of `password_env`, `password_file` or `private_key_file`",
            ));
        }
        [(first, _), (second, location), ..] => {
            return Err(at(
                location,
                second,
                format!("give one credential: `{first}` is already given"),
            ));
        }
        [_] => {}
    }
    let credential = credential(file, key, value)?;
    let interval = raw
        .login_interval
        .as_ref()
        .map_or(defaults::LOGIN_INTERVAL, |d| d.value.0);
    if interval < defaults::LOGIN_INTERVAL_MIN {
        let location = raw.login_interval.as_ref().expect("below the default").referenced;
        return Err(ConfigError::at(
            file,
            &location,
            format!("{key}.ssh.login_interval"),
            format!(
                "{} is too often: log in at most once a minute per address, or the vendor's fail2ban sees a brute force",
                humantime::format_duration(interval)
            ),
        ));
    }
    Ok(LoginPolicy {
        username: user.to_string(),
        credential,
        sftp: raw.sftp.as_ref().is_some_and(|s| s.value),
        interval,
    })
}

/// Reads the one credential `auth` names.
fn credential(file: &Path, key: &str, value: &RawAuth) -> Result<Credential, ConfigError> {
    let at = |location: &Location, name: &str, message: String| {
        ConfigError::at(file, location, format!("{key}.ssh.auth.{name}"), message)
    };
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let credential = if let Some(var) = &value.password_env {
        let name = var.value.trim();
        let is_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name {
            // Not quoted: what is written here may be the secret itself.
            return Err(at(
                &var.referenced,
                "password_env",
                "not an environment variable name (letters, digits and _): name the variable that holds the password, never the password itself".to_string(),
            ));
        }
        match std::env::var(name) {
            Ok(secret) if !secret.is_empty() => Credential::Password {
                secret: Secret(secret),
                from: format!("environment variable {}", shown_name(name).trim_matches('`')),
            },
            Ok(_) => {
                return Err(at(
                    &var.referenced,
                    "password_env",
                    format!("the environment variable {} is empty", shown_name(name)),
                ));
            }
            Err(_) => {
                return Err(at(
                    &var.referenced,
                    "password_env",
                    format!(
                        "the environment variable {} is not set (or not UTF-8) in this process's environment; `validate` and `check` read the secret as `serve` does",
                        shown_name(name)
                    ),
                ));
            }
        }
    } else if let Some(path) = &value.password_file {
        let full = base.join(&path.value);
        let text = read_secret_file(&full).map_err(|message| at(&path.referenced, "password_file", message))?;
        // Files written by `echo` end in a newline that is not part of the password.
        let secret = text.trim_end_matches(['\n', '\r']).to_string();
        if secret.contains(['\n', '\r']) {
            // Sent as is, the whole file would be refused, and count against the account's lockout.
            return Err(at(
                &path.referenced,
                "password_file",
                format!(
                    "`{}` has more than one line: the password is the file's one line",
                    full.display()
                ),
            ));
        }
        if secret.is_empty() {
            return Err(at(
                &path.referenced,
                "password_file",
                format!("`{}` is empty", full.display()),
            ));
        }
        Credential::Password {
            secret: Secret(secret),
            from: full.display().to_string(),
        }
    } else {
        let path = value.private_key_file.as_ref().expect("one credential is given");
        let full = base.join(&path.value);
        let text = read_secret_file(&full).map_err(|message| at(&path.referenced, "private_key_file", message))?;
        let key = russh::keys::decode_secret_key(&text, None).map_err(|err| {
            let why = if matches!(err, russh::keys::Error::KeyIsEncrypted) {
                "it is encrypted; give the monitoring account a key without a passphrase, readable by the daemon only"
                    .to_string()
            } else {
                format!("it is not a private key in OpenSSH or PEM format ({err})")
            };
            at(
                &path.referenced,
                "private_key_file",
                format!("cannot use `{}`: {why}", full.display()),
            )
        })?;
        Credential::PrivateKey {
            key: Arc::new(key),
            path: full,
        }
    };
    Ok(credential)
}

/// The name of a `password_env` variable for a message: quoted when it looks like one
/// (`VENDOR_SFTP_PASSWORD`); a name with lower-case letters may be a password pasted in the
/// wrong place, and is not repeated.
fn shown_name(name: &str) -> String {
    if name.chars().any(|c| c.is_ascii_lowercase()) {
        "named at this key (not repeated here: it has lower-case letters, as a pasted password would)".to_string()
    } else {
        format!("`{name}`")
    }
}

/// Reads a small secret file; the message never quotes its content.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    if bytes.len() > 64 * 1024 {
        return Err(format!(
            "`{}` is larger than 64 KiB: not a password or a key",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("`{}` is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug() {
        let credential = Credential::Password {
            secret: Secret("hunter2-very-secret".into()),
            from: "environment variable X".into(),
        };
        let shown = format!("{credential:?} {:?}", Some(&credential));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
