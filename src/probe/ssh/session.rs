//! The SSH session checks' I/O, with russh (and russh-sftp for the subsystem): a login with the
//! monitoring account, and an idle hold. Connections come through the same [`Network`] seam and
//! identify with the same client line as the handshake audit, and the host key the audit proved
//! (or a pinned one) is required before any secret is sent. What the results mean is decided in
//! `core/session.rs`; this file only observes.
//!
//! The stream is wrapped in [`Watched`], which records how the connection ended (a FIN, a reset)
//! and when bytes last arrived, independently of how russh reports it: the idle verdict rests on
//! those facts, not on an SSH library's error wording.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use russh::client::{self, AuthResult, DisconnectReason, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, MethodKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::client_identification;
use crate::config::CheckKind;
use crate::config::session::{Credential, LoginPolicy};
use crate::core::outcome::ProbeState;
use crate::core::session::{AfterPause, IdleResult, LoginResult, SessionState, SftpResult, classify_idle, idle_detail};
use crate::probe::{Network, tcp};

/// Where a session check goes and what it must find there.
#[derive(Debug, Clone)]
pub struct SessionTarget {
    pub address: SocketAddr,
    /// Host key fingerprints (`SHA256:...`) the server must present before a secret is sent:
    /// the key the handshake audit proved for this address, or the target's pinned keys. Empty:
    /// none known yet, the first key is taken (as `ssh -o StrictHostKeyChecking=accept-new`).
    pub expected_keys: Vec<String>,
    /// Bound on each step (connect, key exchange, one request).
    pub timeout: Duration,
}

/// What the connection did, as the socket saw it.
#[derive(Debug, Default)]
struct Seen {
    last_read: Option<Instant>,
    /// When the peer's FIN arrived.
    closed_at: Option<Instant>,
    /// Whether a TCP reset ended it.
    reset: bool,
    /// Why the server said it disconnects (`SSH_MSG_DISCONNECT`), if it did.
    disconnect: Option<String>,
    /// The host key fingerprint the server presented.
    presented_key: Option<String>,
}

#[derive(Debug, Default)]
struct Watch {
    seen: Mutex<Seen>,
    /// Woken when the connection ends.
    ended: Notify,
}

impl Watch {
    fn with<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A stream that records its end into a [`Watch`].
struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S> Watched<S> {
    fn note_error(&self, err: &io::Error) {
        if matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
        ) {
            self.watch
                .with(|seen| seen.reset |= err.kind() == io::ErrorKind::ConnectionReset);
            self.watch.ended.notify_waiters();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        // A read into no room returns nothing without meaning the end.
        let had_room = buf.remaining() > 0;
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if !had_room => {}
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.watch.with(|seen| seen.last_read = Some(Instant::now()));
            }
            Poll::Ready(Ok(())) => {
                self.watch.with(|seen| {
                    seen.closed_at.get_or_insert_with(Instant::now);
                });
                self.watch.ended.notify_waiters();
            }
            Poll::Ready(Err(err)) => self.note_error(err),
            Poll::Pending => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Err(err)) = &polled {
            self.note_error(err);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// russh's callbacks: the host key check, and the server's reason when it disconnects.
struct Client {
    expected_keys: Vec<String>,
    watch: Arc<Watch>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let public = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(certificate) => {
                russh::keys::PublicKey::from(certificate.public_key().clone())
            }
        };
        let fingerprint = public.fingerprint(HashAlg::Sha256).to_string();
        let accepted = self.expected_keys.is_empty() || self.expected_keys.contains(&fingerprint);
        self.watch.with(|seen| seen.presented_key = Some(fingerprint));
        Ok(accepted)
    }

    async fn disconnected(&mut self, reason: DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        if let DisconnectReason::ReceivedDisconnect(info) = &reason {
            let message = super::printable(info.message.as_bytes());
            self.watch.with(|seen| seen.disconnect = Some(message));
            self.watch.ended.notify_waiters();
        }
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(err) => Err(err),
        }
    }
}

/// Why a session could not be set up: the state to report and the words for it.
type Failed = (SessionState, String);

/// A session through its key exchange.
struct Session {
    handle: Handle<Client>,
    watch: Arc<Watch>,
}

fn russh_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        client_id: russh::SshId::Raw(client_identification().into()),
        // The idle hold must be silent: no keepalives, no inactivity timeout of our own.
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        // russh rekeys after an hour by default, which would break the silence of a long hold.
        limits: russh::Limits::new(1 << 30, 1 << 30, 2 * crate::config::defaults::IDLE_HOLD_MAX),
        ..client::Config::default()
    })
}

/// Connects and runs the key exchange, requiring one of `expected_keys` when any are given.
async fn open<N: Network>(network: &N, target: &SessionTarget) -> Result<Session, Failed> {
    let deadline = Instant::now() + target.timeout;
    let stream = match tcp::connect(network, target.address, deadline, target.timeout).await {
        Ok(stream) => stream,
        Err(failed) => {
            let state = if failed.state == ProbeState::Error {
                SessionState::Error
            } else {
                SessionState::NotReached
            };
            return Err((state, format!("{}: {}", failed.state.as_label(), failed.detail)));
        }
    };
    let watch = Arc::new(Watch::default());
    let watched = Watched {
        inner: stream,
        watch: Arc::clone(&watch),
    };
    let handler = Client {
        expected_keys: target.expected_keys.clone(),
        watch: Arc::clone(&watch),
    };
    match tokio::time::timeout_at(deadline, client::connect_stream(russh_config(), watched, handler)).await {
        Ok(Ok(handle)) => Ok(Session { handle, watch }),
        Ok(Err(russh::Error::UnknownKey)) => {
            let presented = watch.with(|seen| seen.presented_key.clone()).unwrap_or_default();
            Err((
                SessionState::HostKeyMismatch,
                format!(
                    "the server presented host key {presented}, not the one known for this address ({}): no credential was sent",
                    target.expected_keys.join(", ")
                ),
            ))
        }
        Ok(Err(err)) => Err((SessionState::NotReached, format!("SSH session not established: {err}"))),
        Err(_) => Err((
            SessionState::NotReached,
            format!(
                "SSH key exchange not finished within {}",
                humantime::format_duration(target.timeout)
            ),
        )),
    }
}

fn method_names(methods: &[MethodKind]) -> Vec<String> {
    methods.iter().map(|m| <&str>::from(m).to_string()).collect()
}

/// How authenticating ended, before any SFTP.
enum Authenticated {
    Yes,
    No(SessionState, String),
}

fn no_answer(what: &str, timeout: Duration) -> Authenticated {
    Authenticated::No(
        SessionState::NotReached,
        format!("no answer to {what} within {}", humantime::format_duration(timeout)),
    )
}

/// The methods the server offers `user` (its answer to `none`), or how asking ended otherwise.
async fn offered_methods(session: &mut Session, user: &str, timeout: Duration) -> Result<Vec<String>, Authenticated> {
    match tokio::time::timeout(timeout, session.handle.authenticate_none(user)).await {
        // In without a credential: logged in all the same (the detail of the login says so).
        Ok(Ok(AuthResult::Success)) => Err(Authenticated::Yes),
        Ok(Ok(AuthResult::Failure { remaining_methods, .. })) => Ok(method_names(&remaining_methods)),
        Ok(Err(err)) => Err(Authenticated::No(
            SessionState::NotReached,
            format!("asking for the methods: {err}"),
        )),
        Err(_) => Err(no_answer("the `none` request", timeout)),
    }
}

/// Asks `none` for the offered methods, then logs in with the credential if its method is offered.
async fn authenticate(
    session: &mut Session,
    policy: &LoginPolicy,
    timeout: Duration,
) -> (Option<Vec<String>>, Authenticated) {
    let user = policy.username.as_str();
    let offered = match offered_methods(session, user, timeout).await {
        Ok(offered) => offered,
        Err(Authenticated::Yes) => return (Some(vec!["none".into()]), Authenticated::Yes),
        Err(outcome) => return (None, outcome),
    };
    let method = policy.credential.method();
    if !offered.iter().any(|m| m == method) {
        let extra = if method == "password" && offered.iter().any(|m| m == "keyboard-interactive") {
            " (keyboard-interactive is offered; whitelist-audit logs in with the password method only)"
        } else {
            ""
        };
        let listed = if offered.is_empty() {
            "no method".to_string()
        } else {
            offered.join(",")
        };
        let detail = format!("the server offers {listed} to {user}, not {method}{extra}");
        return (
            Some(offered),
            Authenticated::No(SessionState::AuthMethodNotOffered, detail),
        );
    }
    let attempt = async {
        match &policy.credential {
            Credential::Password { secret, .. } => session.handle.authenticate_password(user, secret.expose()).await,
            Credential::PrivateKey { key, .. } => {
                // A server that names no signature algorithms still gets SHA-256, never SHA-1
                // `ssh-rsa`, which current servers refuse (a false `auth_rejected`).
                let hash = match session.handle.best_supported_rsa_hash().await {
                    Ok(Some(hash)) => hash,
                    _ => Some(HashAlg::Sha256),
                };
                let key = PrivateKeyWithHashAlg::new(Arc::clone(key), hash);
                session.handle.authenticate_publickey(user, key).await
            }
        }
    };
    let outcome = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(AuthResult::Success)) => Authenticated::Yes,
        Ok(Ok(AuthResult::Failure {
            remaining_methods,
            partial_success,
        })) => {
            let remaining = method_names(&remaining_methods).join(",");
            let detail = if partial_success {
                format!(
                    "{method} for {user} was accepted, but the server requires more ({remaining}): AuthenticationMethods"
                )
            } else {
                format!(
                    "{method} for {user} was rejected (from {}); the server would allow: {remaining}",
                    policy.credential.source()
                )
            };
            Authenticated::No(SessionState::AuthRejected, detail)
        }
        Ok(Err(err)) => Authenticated::No(
            SessionState::NotReached,
            format!("during {method} authentication: {err}"),
        ),
        Err(_) => no_answer("the authentication request", timeout),
    };
    (Some(offered), outcome)
}

/// Logs in with the monitoring account and, with `policy.sftp`, asks the `sftp` subsystem for
/// `realpath .`. One attempt: a rejected login is never retried here.
pub async fn login<N: Network>(network: &N, target: &SessionTarget, policy: &LoginPolicy) -> LoginResult {
    let finish = |state, methods, detail, sftp| LoginResult {
        state,
        methods,
        detail,
        sftp,
        finished_at: SystemTime::now(),
    };
    let mut session = match open(network, target).await {
        Ok(session) => session,
        Err((state, detail)) => return finish(state, None, detail, None),
    };
    let (methods, authenticated) = authenticate(&mut session, policy, target.timeout).await;
    let result = match authenticated {
        Authenticated::No(state, detail) => finish(state, methods, detail, None),
        Authenticated::Yes => {
            let sftp = if policy.sftp {
                Some(sftp_realpath(&session, target.timeout).await)
            } else {
                None
            };
            let detail = if methods.as_deref() == Some(&["none".to_string()][..]) {
                format!(
                    "the server let {} in without any authentication (method none)",
                    policy.username
                )
            } else {
                format!("{} logged in with {}", policy.username, policy.credential.method())
            };
            finish(SessionState::LoginOk, methods, detail, sftp)
        }
    };
    close(&session).await;
    result
}

async fn close(session: &Session) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        session
            .handle
            .disconnect(russh::Disconnect::ByApplication, "whitelist-audit: check done", "en"),
    )
    .await;
}

/// Opens a session channel, starts `sftp` and times the answer to `realpath .`.
async fn sftp_realpath(session: &Session, timeout: Duration) -> SftpResult {
    let unavailable = |detail: String| SftpResult {
        state: SessionState::SftpUnavailable,
        response: None,
        detail,
    };
    let closed_hint = |session: &Session| {
        if session.watch.with(|seen| seen.closed_at.is_some() || seen.reset) {
            " (the server closed the connection: a ChrootDirectory that does not exist or is not root-owned does this)"
        } else {
            ""
        }
    };
    let started = Instant::now();
    let run = async {
        let mut channel = session
            .handle
            .channel_open_session()
            .await
            .map_err(|err| format!("the session channel did not open: {err}"))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|err| format!("requesting the sftp subsystem: {err}"))?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    return Err("the server refused the sftp subsystem (no `Subsystem sftp` configured?)".to_string());
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                    return Err("the channel closed when the sftp subsystem was requested".to_string());
                }
                Some(_) => {}
            }
        }
        let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
            .await
            .map_err(|err| format!("the sftp subsystem did not answer its init: {err}"))?;
        // Its own per-request timeout (10 s) must not cut a request shorter than global.timeout.
        sftp.set_timeout(timeout.as_secs().max(1));
        let path = sftp
            .canonicalize(".")
            .await
            .map_err(|err| format!("realpath . failed: {err}"))?;
        let _ = sftp.close().await;
        Ok(path)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(path)) => SftpResult {
            state: SessionState::SftpOk,
            response: Some(started.elapsed()),
            detail: format!("realpath . = {}", super::printable(path.as_bytes())),
        },
        Ok(Err(detail)) => unavailable(format!("{detail}{}", closed_hint(session))),
        Err(_) => unavailable(format!(
            "no answer from the sftp subsystem within {}{}",
            humantime::format_duration(timeout),
            closed_hint(session)
        )),
    }
}

/// How an idle hold ended, and the login it made when that login was refused: the caller records
/// it as the address's login, so a credential that stopped working is not sent again sooner.
#[derive(Debug)]
pub struct IdleOutcome {
    pub idle: IdleResult,
    pub refused_login: Option<LoginResult>,
}

/// Holds a session idle for `hold`, then makes a request that needs an answer. With `login`, the
/// hold is made logged in (the request opens a session channel); without, before authentication
/// (the request is the `none` authentication, which servers answer without counting a failure).
/// A server whose key is not the expected one gets no secret: the hold is then made without.
pub async fn idle_hold<N: Network>(
    network: &N,
    target: &SessionTarget,
    hold: Duration,
    login: Option<&LoginPolicy>,
    user: &str,
) -> IdleOutcome {
    let ip = target.address.ip();
    let finish = |state, hold, authenticated, detail| IdleOutcome {
        idle: IdleResult {
            state,
            hold,
            authenticated,
            detail,
            finished_at: SystemTime::now(),
        },
        refused_login: None,
    };
    // Without a login no secret is at stake: any key will do, the hold is about the path.
    let anonymous = SessionTarget {
        expected_keys: Vec::new(),
        ..target.clone()
    };
    let opened = match login {
        Some(_) => match open(network, target).await {
            Err((SessionState::HostKeyMismatch, _)) => open(network, &anonymous).await.map(|s| (s, None)),
            other => other.map(|s| (s, login)),
        },
        None => open(network, &anonymous).await.map(|s| (s, None)),
    };
    let (mut session, login) = match opened {
        Ok(opened) => opened,
        Err((state, detail)) => {
            let state = if state == SessionState::Error {
                SessionState::Error
            } else {
                SessionState::NotReached
            };
            return finish(state, Duration::ZERO, false, detail);
        }
    };
    let mut refused_login = None;
    let authenticated = match login {
        Some(policy) => match authenticate(&mut session, policy, target.timeout).await {
            (_, Authenticated::Yes) => true,
            (methods, Authenticated::No(state, detail)) => {
                if matches!(state, SessionState::AuthRejected | SessionState::AuthMethodNotOffered) {
                    refused_login = Some(LoginResult {
                        state,
                        methods,
                        detail: format!("at the start of an idle hold: {detail}"),
                        sftp: None,
                        finished_at: SystemTime::now(),
                    });
                }
                false
            }
        },
        None => false,
    };
    let idle_from = session.watch.with(|seen| seen.last_read).unwrap_or_else(Instant::now);
    let watch = Arc::clone(&session.watch);
    let ended = watch.ended.notified();
    tokio::pin!(ended);
    ended.as_mut().enable();
    // Ended early by the server (or a reset), even before the wait began: no need to wait out the hold.
    if ended_early(&session, idle_from).is_none() {
        let _ = tokio::time::timeout_at(idle_from + hold, ended).await;
    }
    let pause = idle_from.elapsed();
    let after = match ended_early(&session, idle_from) {
        Some(early) => early,
        None => request_after_pause(&mut session, authenticated, user, target.timeout, idle_from).await,
    };
    let hold_measured = match &after {
        AfterPause::ServerClosed { after, .. } => *after,
        _ => pause,
    };
    close(&session).await;
    let (after, fresh) = if matches!(after, AfterPause::Silent | AfterPause::Reset) {
        // A fresh connection must get as far as SSH: a load balancer or a hung sshd accepts TCP alone.
        let fresh = super::super::attempt(network, target.address, CheckKind::Ssh, target.timeout).await;
        match fresh.state {
            ProbeState::Open => (after, Some(true)),
            ProbeState::Error => (
                AfterPause::LocalFault(format!("the fresh connection to compare with: {}", fresh.detail)),
                None,
            ),
            _ => (after, Some(false)),
        }
    } else {
        (after, None)
    };
    let state = classify_idle(&after, fresh);
    let detail = match (state, fresh) {
        (SessionState::NotReached, _) => format!(
            "held {} idle; then no answer, and a fresh connection to {ip} did not get as far as SSH either: the address is down, not an idle timeout",
            humantime::format_duration(Duration::from_secs(pause.as_secs()))
        ),
        _ => idle_detail(&after, hold_measured, authenticated, ip),
    };
    let mut outcome = finish(state, hold_measured, authenticated, detail);
    outcome.refused_login = refused_login;
    outcome
}

/// Makes the request after the pause and says how it went. Any answer counts, a refusal too: a
/// refused channel or an error message came over the path, so the path kept the flow.
async fn request_after_pause(
    session: &mut Session,
    authenticated: bool,
    user: &str,
    timeout: Duration,
    idle_from: Instant,
) -> AfterPause {
    let sent = Instant::now();
    let request = async {
        if authenticated {
            session.handle.channel_open_session().await.map(drop)
        } else {
            session.handle.authenticate_none(user).await.map(drop)
        }
    };
    let outcome = tokio::time::timeout(timeout, request).await;
    if let Some(ended) = ended_early(session, idle_from) {
        return ended;
    }
    let heard_back = session.watch.with(|seen| seen.last_read.is_some_and(|at| at >= sent));
    match outcome {
        Ok(Ok(()) | Err(russh::Error::ChannelOpenFailure(_))) => AfterPause::Answered,
        _ if heard_back => AfterPause::Answered,
        _ => AfterPause::Silent,
    }
}

/// What the connection showed by itself since `idle_from`: closed by the server, or reset.
fn ended_early(session: &Session, idle_from: Instant) -> Option<AfterPause> {
    session.watch.with(|seen| {
        if seen.reset {
            Some(AfterPause::Reset)
        } else if let Some(at) = seen.closed_at.or(seen.disconnect.as_ref().map(|_| Instant::now())) {
            Some(AfterPause::ServerClosed {
                after: at.saturating_duration_since(idle_from),
                reason: seen.disconnect.clone(),
            })
        } else {
            None
        }
    })
}
