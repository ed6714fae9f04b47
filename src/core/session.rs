//! The SSH session checks as plain data: how an idle hold, a login and an SFTP request ended,
//! when each is due, and what an idle hold's observations mean. The I/O is in
//! `probe/ssh/session.rs`; everything that decides is here, with unit tests.
//!
//! The rule that keeps these metrics honest: `idle_killed` is said only when the session got no
//! answer (or a reset) after the pause while a fresh connection to the same address still worked.
//! A server that closes the session itself (OpenSSH's `LoginGraceTime`, `ClientAliveInterval`) is
//! `server_closed`, an address that stopped answering altogether is `not_reached`, and a fault of
//! this host is `error`: none of them is blamed on the path's idle timeout.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::session::SessionPolicy;

/// Which session check a state belongs to: the `check` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionCheck {
    Idle,
    Login,
    Sftp,
}

impl SessionCheck {
    pub const ALL: [Self; 3] = [Self::Idle, Self::Login, Self::Sftp];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Login => "login",
            Self::Sftp => "sftp",
        }
    }

    /// The states this check can end in, in the order the metrics list them.
    pub fn states(self) -> &'static [SessionState] {
        use SessionState as S;
        match self {
            Self::Idle => &[S::IdleOk, S::IdleKilled, S::ServerClosed, S::NotReached, S::Error],
            Self::Login => &[
                S::LoginOk,
                S::AuthRejected,
                S::AuthMethodNotOffered,
                S::HostKeyMismatch,
                S::HostKeyUnverified,
                S::NotReached,
                S::Error,
            ],
            Self::Sftp => &[S::SftpOk, S::SftpUnavailable, S::Error],
        }
    }
}

/// How one session check ended: the `state` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The request after the pause was answered.
    IdleOk,
    /// No answer (or a reset) after the pause, while a fresh connection worked: the path forgot
    /// the flow.
    IdleKilled,
    /// The server ended the session during the pause: its own limit, not the path.
    ServerClosed,
    LoginOk,
    /// The credential was refused; the methods that would have been allowed are kept.
    AuthRejected,
    /// The server does not offer the credential's method to this user.
    AuthMethodNotOffered,
    /// The server presented a host key other than the proved or pinned one: no secret was sent.
    HostKeyMismatch,
    /// No trusted host key for the address (none proved, or it changed recently, and no pin): no
    /// login was made.
    HostKeyUnverified,
    SftpOk,
    /// Logged in, but the `sftp` subsystem did not open or did not answer `realpath .`.
    SftpUnavailable,
    /// No SSH session could be established (or the address stopped answering altogether).
    NotReached,
    /// This host failed to make the check: not a verdict.
    Error,
}

impl SessionState {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::IdleOk => "idle_ok",
            Self::IdleKilled => "idle_killed",
            Self::ServerClosed => "server_closed",
            Self::LoginOk => "login_ok",
            Self::AuthRejected => "auth_rejected",
            Self::AuthMethodNotOffered => "auth_method_not_offered",
            Self::HostKeyMismatch => "host_key_mismatch",
            Self::HostKeyUnverified => "host_key_unverified",
            Self::SftpOk => "sftp_ok",
            Self::SftpUnavailable => "sftp_unavailable",
            Self::NotReached => "not_reached",
            Self::Error => "error",
        }
    }

    /// Whether the state says something is wrong with the server or the path.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            Self::IdleKilled
                | Self::AuthRejected
                | Self::AuthMethodNotOffered
                | Self::HostKeyMismatch
                | Self::HostKeyUnverified
                | Self::SftpUnavailable
        )
    }
}

/// How one idle hold ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleResult {
    pub state: SessionState,
    /// How long the session was silent before the request (or before the server closed it).
    #[serde(rename = "hold_seconds", serialize_with = "as_seconds")]
    pub hold: Duration,
    /// Whether the hold was made logged in (with the monitoring account) or before authentication.
    pub authenticated: bool,
    pub detail: String,
    #[serde(rename = "finished_at_unix", serialize_with = "super::ssh::unix_seconds::serialize")]
    pub finished_at: SystemTime,
}

/// How the SFTP request after a login ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SftpResult {
    pub state: SessionState,
    /// From opening the session channel to the answer to `realpath .`.
    #[serde(
        rename = "response_seconds",
        serialize_with = "as_optional_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub response: Option<Duration>,
    pub detail: String,
}

/// How one login ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoginResult {
    pub state: SessionState,
    /// The methods the server offers this user (its answer to `none`); `None` before that answer.
    pub methods: Option<Vec<String>>,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sftp: Option<SftpResult>,
    #[serde(rename = "finished_at_unix", serialize_with = "super::ssh::unix_seconds::serialize")]
    pub finished_at: SystemTime,
}

fn as_seconds<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.as_secs_f64())
}

#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`
fn as_optional_seconds<S: serde::Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(duration) => s.serialize_f64(duration.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// A login the server refused, kept across restarts (`state_dir/ssh-host-keys.json`), so that a
/// restart, or a crash loop, never sends a refused credential again before `login_interval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RefusedLogin {
    #[serde(rename = "at_unix", with = "super::ssh::unix_seconds")]
    pub at: SystemTime,
    /// The user and where the secret was read (never the secret): a refusal of another account
    /// is not carried over.
    #[serde(default)]
    pub account: String,
    pub detail: String,
    pub methods: Option<Vec<String>>,
}

impl SessionReport {
    /// The last login, if the server refused the credential: what is kept across restarts.
    pub fn refused_login(&self, account: &str) -> Option<RefusedLogin> {
        let login = self.login.as_ref().filter(|_| self.is_refused())?;
        Some(RefusedLogin {
            at: self.login_started.unwrap_or(login.finished_at),
            account: account.to_string(),
            detail: login.detail.clone(),
            methods: login.methods.clone(),
        })
    }

    /// Whether the server refused the last login's credential.
    pub fn is_refused(&self) -> bool {
        self.login
            .as_ref()
            .is_some_and(|l| l.state == SessionState::AuthRejected)
    }

    /// A report that remembers a refusal from before a restart: the next login waits its interval.
    pub fn from_refused(refused: RefusedLogin) -> Self {
        Self {
            login: Some(LoginResult {
                state: SessionState::AuthRejected,
                methods: refused.methods,
                detail: format!(
                    "{} (before a restart)",
                    refused.detail.trim_end_matches(" (before a restart)")
                ),
                sftp: None,
                finished_at: refused.at,
            }),
            login_started: Some(refused.at),
            ..Self::default()
        }
    }
}

/// What is known of one address's sessions, and when each check last started (its schedule).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginResult>,
    #[serde(skip)]
    pub idle_started: Option<SystemTime>,
    #[serde(skip)]
    pub login_started: Option<SystemTime>,
}

impl SessionReport {
    /// The state of each check that ran, in label order.
    pub fn states(&self) -> Vec<(SessionCheck, SessionState)> {
        let mut out = Vec::new();
        if let Some(idle) = &self.idle {
            out.push((SessionCheck::Idle, idle.state));
        }
        if let Some(login) = &self.login {
            out.push((SessionCheck::Login, login.state));
            if let Some(sftp) = &login.sftp {
                out.push((SessionCheck::Sftp, sftp.state));
            }
        }
        out
    }

    /// Whether the last login let the monitoring account in: an idle hold then logs in too.
    pub fn logged_in(&self) -> bool {
        self.login.as_ref().is_some_and(|l| l.state == SessionState::LoginOk)
    }
}

/// Which checks to start now on one reachable address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    pub idle: bool,
    pub login: bool,
}

/// What is due on an address given its last runs: each check at most once per its interval,
/// counted from the last start, so a rejected login is never tried again sooner.
pub fn due(policy: &SessionPolicy, report: Option<&SessionReport>, now: SystemTime) -> Due {
    let elapsed = |started: Option<SystemTime>, interval: Duration| {
        started.is_none_or(|at| now.duration_since(at).unwrap_or(Duration::ZERO) >= interval)
    };
    Due {
        idle: policy
            .idle
            .is_some_and(|idle| elapsed(report.and_then(|r| r.idle_started), idle.interval)),
        login: policy
            .login
            .as_ref()
            .is_some_and(|login| elapsed(report.and_then(|r| r.login_started), login.interval)),
    }
}

/// What the session showed after the pause, before any fresh connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPause {
    /// The request was answered.
    Answered,
    /// Nothing came back before the deadline.
    Silent,
    /// A TCP reset arrived.
    Reset,
    /// The server closed the session (a FIN or an SSH disconnect), `after` that much idle time.
    ServerClosed { after: Duration, reason: Option<String> },
    /// The session failed for a reason of this host.
    LocalFault(String),
}

/// The idle verdict from what the session showed and, where it was needed, whether a fresh TCP
/// connection to the address worked (`None`: not tried).
pub fn classify_idle(after: &AfterPause, fresh_connect: Option<bool>) -> SessionState {
    match (after, fresh_connect) {
        (AfterPause::Answered, _) => SessionState::IdleOk,
        (AfterPause::ServerClosed { .. }, _) => SessionState::ServerClosed,
        (AfterPause::LocalFault(_), _) => SessionState::Error,
        (AfterPause::Silent | AfterPause::Reset, Some(true)) => SessionState::IdleKilled,
        // Down for every connection, not only the held one: the reachability probe says why.
        (AfterPause::Silent | AfterPause::Reset, Some(false) | None) => SessionState::NotReached,
    }
}

/// The detail line of an idle verdict, for people.
pub fn idle_detail(after: &AfterPause, hold: Duration, authenticated: bool, ip: IpAddr) -> String {
    let pause = humantime::format_duration(Duration::from_secs(hold.as_secs())).to_string();
    let phase = if authenticated {
        "logged in"
    } else {
        "before authentication"
    };
    match after {
        AfterPause::Answered => format!("held {pause} idle ({phase}); the next request was answered"),
        AfterPause::Silent => format!(
            "held {pause} idle ({phase}); the next request got no answer while a fresh connection to {ip} works: a firewall or NAT on the path forgot the flow (idle timeout shorter than {pause})"
        ),
        AfterPause::Reset => format!(
            "held {pause} idle ({phase}); the next request was answered with a TCP reset while a fresh connection to {ip} works: a firewall on the path forgot the flow (idle timeout shorter than {pause})"
        ),
        AfterPause::ServerClosed { after, reason } => {
            let after = humantime::format_duration(Duration::from_secs(after.as_secs()));
            let why = reason.as_deref().map_or_else(String::new, |r| format!(" ({r})"));
            let hint = if authenticated {
                "its ClientAliveInterval or idle limit"
            } else {
                "OpenSSH's LoginGraceTime, 120s by default, ends sessions that do not authenticate; hold for less, or configure ssh.auth"
            };
            format!("the server closed the session after {after} idle{why}: {hint}; not the path")
        }
        AfterPause::LocalFault(why) => format!("this host could not hold the session: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::session::IdlePolicy;

    fn policy(idle: bool) -> SessionPolicy {
        SessionPolicy {
            idle: idle.then_some(IdlePolicy {
                hold: Duration::from_secs(100),
                interval: Duration::from_secs(3600),
                concurrency: 4,
            }),
            login: None,
        }
    }

    #[test]
    fn idle_killed_needs_a_working_fresh_connection() {
        assert_eq!(classify_idle(&AfterPause::Silent, Some(true)), SessionState::IdleKilled);
        assert_eq!(classify_idle(&AfterPause::Reset, Some(true)), SessionState::IdleKilled);
        assert_eq!(
            classify_idle(&AfterPause::Silent, Some(false)),
            SessionState::NotReached
        );
        assert_eq!(classify_idle(&AfterPause::Reset, None), SessionState::NotReached);
        assert_eq!(classify_idle(&AfterPause::Answered, None), SessionState::IdleOk);
        let closed = AfterPause::ServerClosed {
            after: Duration::from_secs(120),
            reason: None,
        };
        assert_eq!(classify_idle(&closed, Some(true)), SessionState::ServerClosed);
        assert_eq!(
            classify_idle(&AfterPause::LocalFault("EMFILE".into()), Some(true)),
            SessionState::Error
        );
    }

    #[test]
    fn a_check_is_due_once_per_interval_from_its_last_start() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert!(due(&policy(true), None, now).idle);
        assert!(!due(&policy(false), None, now).idle);
        let report = SessionReport {
            idle_started: Some(now - Duration::from_secs(3599)),
            ..SessionReport::default()
        };
        assert!(!due(&policy(true), Some(&report), now).idle);
        let report = SessionReport {
            idle_started: Some(now - Duration::from_secs(3600)),
            ..SessionReport::default()
        };
        assert!(due(&policy(true), Some(&report), now).idle);
        assert!(!due(&policy(true), Some(&report), now).login, "no login configured");
    }

    #[test]
    fn every_state_belongs_to_a_check_and_labels_are_unique() {
        let mut labels: Vec<&str> = SessionCheck::ALL
            .iter()
            .flat_map(|c| c.states().iter().map(|s| s.as_label()))
            .collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), 12, "{labels:?}");
    }

    #[test]
    fn the_detail_names_login_grace_time_before_authentication() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let closed = AfterPause::ServerClosed {
            after: Duration::from_secs(120),
            reason: None,
        };
        let detail = idle_detail(&closed, Duration::from_secs(120), false, ip);
        assert!(detail.contains("LoginGraceTime"), "{detail}");
        let killed = idle_detail(&AfterPause::Silent, Duration::from_secs(100), true, ip);
        assert!(killed.contains("shorter than 1m 40s"), "{killed}");
    }
}
