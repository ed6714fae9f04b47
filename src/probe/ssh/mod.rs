//! `check: ssh`: on one connection, the exchange of identification lines (RFC 4253 section 4.2),
//! the server's `SSH_MSG_KEXINIT` (its algorithms) and, where the server offers a key exchange we
//! complete, its host key with the signature that proves it. The connection is closed right after
//! the server's key exchange reply, before any authentication, so the server spends as little on
//! us as it can (an SSH server limits unauthenticated connections with `MaxStartups`).
//! Everything that reads bytes is pure (`scan` here, `wire.rs`), so each case of a real server,
//! a proxy or garbage gets a unit test; `kex.rs` holds the crypto.

pub mod kex;
pub mod session;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::defaults;
use crate::core::outcome::{Attempt, Evidence, ProbeState};
pub use crate::core::ssh::Identification;
use crate::core::ssh::{HostKey, ServerAlgorithms, SshEvidence};
use wire::{Message, printable};

/// Messages a server may send before its KEXINIT (IGNORE, DEBUG) that we skip; more is not SSH.
const MAX_NOISE: usize = 16;

/// The SSH exchange on a connected stream, by `deadline`: the state and what was learned.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: S, deadline: Instant) -> Attempt {
    let failed = |detail: String| Attempt::ended(ProbeState::ProtocolError, Duration::ZERO, detail);
    let mut conn = Conn {
        stream,
        buffer: Vec::with_capacity(2048),
        deadline,
    };
    let (identification, used) = match conn.identification().await {
        Ok(found) => found,
        Err(detail) => return failed(detail),
    };
    conn.buffer.drain(..used);
    let server_line = identification.line();
    let (server_kexinit, algorithms) = match conn.kexinit().await {
        Ok(found) => found,
        Err(detail) => return failed(format!("{server_line}, then {detail}")),
    };
    let algorithms = Arc::new(algorithms);
    let (host_key, host_key_note) = match conn.host_key(&server_line, &server_kexinit, &algorithms).await {
        Ok(key) => (Some(key), None),
        Err(note) => (None, Some(note)),
    };
    let evidence = Arc::new(SshEvidence {
        identification,
        algorithms: Some(algorithms),
        host_key,
        host_key_note,
        presented: std::sync::OnceLock::new(),
    });
    Attempt {
        evidence: Some(evidence.clone()),
        ..Attempt::ended(ProbeState::Open, Duration::ZERO, evidence.summary())
    }
}

/// A connection and the bytes received on it and not yet used.
struct Conn<S> {
    stream: S,
    buffer: Vec<u8>,
    deadline: Instant,
}

/// How a read ended when it brought no bytes.
enum ReadEnd {
    Timeout,
    Closed,
    Failed(std::io::Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Reads more bytes into the buffer, at most `cap` in all: never more than fits, so no byte
    /// of a following packet is dropped.
    async fn fill(&mut self, cap: usize) -> Result<(), ReadEnd> {
        let mut chunk = [0u8; 2048];
        let room = cap.saturating_sub(self.buffer.len()).min(chunk.len());
        if room == 0 {
            // The callers' caps hold a whole packet; a full buffer is a bug, not the peer's.
            return Err(ReadEnd::Failed(std::io::Error::other("read buffer full")));
        }
        match tokio::time::timeout_at(self.deadline, self.stream.read(&mut chunk[..room])).await {
            Err(_) => Err(ReadEnd::Timeout),
            Ok(Err(err)) => Err(ReadEnd::Failed(err)),
            Ok(Ok(0)) => Err(ReadEnd::Closed),
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // A write error shows up again as a read error, with a better message.
        let _ = tokio::time::timeout_at(self.deadline, self.stream.write_all(bytes)).await;
    }

    /// Sends our identification line and reads the server's, within `MAX_BANNER_BYTES`.
    async fn identification(&mut self) -> Result<(Identification, usize), String> {
        self.send(client_identification().as_bytes()).await;
        let max = defaults::MAX_BANNER_BYTES;
        loop {
            if let Err(end) = self.fill(max + wire::MAX_PACKET).await {
                let received = &self.buffer;
                return Err(match (end, received.is_empty()) {
                    (ReadEnd::Timeout, true) => {
                        "TCP connected, but nothing was received before the timeout".to_string()
                    }
                    (ReadEnd::Timeout, false) => format!(
                        "no SSH identification line before the timeout; first line: {}",
                        first_line(received)
                    ),
                    (ReadEnd::Failed(err), true) => {
                        format!("TCP connected, then {err} before an SSH identification line")
                    }
                    // What the peer said before hanging up is the best clue to what it is.
                    (ReadEnd::Failed(err), false) => format!(
                        "{err} before an SSH identification line; first line: {}",
                        first_line(received)
                    ),
                    (ReadEnd::Closed, true) => {
                        "TCP connected, then closed by the peer without a byte (MaxStartups, or a proxy refusing)"
                            .to_string()
                    }
                    (ReadEnd::Closed, false) => format!(
                        "closed by the peer before an SSH identification line; first line: {}",
                        first_line(received)
                    ),
                });
            }
            match scan(&self.buffer, max) {
                Scan::NeedMore => {}
                Scan::NotSsh(reason) => return Err(reason),
                Scan::Found(identification, used) => return Ok((identification, used)),
            }
        }
    }

    /// The next packet's payload, skipping IGNORE and DEBUG messages; a DISCONNECT is an error.
    async fn packet(&mut self, waiting_for: &str) -> Result<(Vec<u8>, Message), String> {
        for _ in 0..=MAX_NOISE {
            let (payload, used) = loop {
                match wire::frame(&self.buffer) {
                    Err(err) => return Err(format!("{err}: not SSH, or a proxy speaking something else")),
                    Ok(Some((payload, used))) => break (payload.to_vec(), used),
                    Ok(None) => {}
                }
                if let Err(end) = self.fill(wire::MAX_PACKET + 4).await {
                    return Err(match end {
                        ReadEnd::Timeout => format!("nothing more before the timeout (no {waiting_for})"),
                        ReadEnd::Closed => format!("closed by the peer before its {waiting_for}"),
                        ReadEnd::Failed(err) => format!("{err} before its {waiting_for}"),
                    });
                }
            };
            self.buffer.drain(..used);
            match wire::message(&payload).map_err(|err| format!("a malformed {waiting_for}: {err}"))? {
                Message::Noise => {}
                Message::Disconnect { code, description } => {
                    return Err(format!("disconnected by the server (code {code}): {description}"));
                }
                message => return Ok((payload, message)),
            }
        }
        Err(format!(
            "more than {MAX_NOISE} IGNORE or DEBUG messages before its {waiting_for}"
        ))
    }

    /// The server's KEXINIT: its payload (hashed into the exchange) and its lists.
    async fn kexinit(&mut self) -> Result<(Vec<u8>, ServerAlgorithms), String> {
        match self.packet("KEXINIT").await? {
            (payload, Message::KexInit(algorithms)) => Ok((payload, algorithms)),
            (_, other) => Err(format!("message {other:?} where a KEXINIT was expected")),
        }
    }

    /// Runs the key exchange as far as the server's signed reply and verifies it.
    async fn host_key(
        &mut self,
        server_line: &str,
        server_kexinit: &[u8],
        algorithms: &ServerAlgorithms,
    ) -> Result<HostKey, String> {
        let plan = kex::plan(algorithms)?;
        // Our KEXINIT offers the server its own ciphers and MACs, so that only the key exchange
        // and the host key algorithm are ours to choose; we stop before they are used.
        let mut lists = wire::lists_of(algorithms);
        lists[0] = vec![plan.kex.to_string()];
        lists[1] = vec![plan.host_key.to_string()];
        let mut cookie = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut cookie);
        let client_kexinit = wire::kexinit_payload(cookie, &lists);
        let ephemeral = kex::Ephemeral::new(plan);
        let mut out = wire::packet(&client_kexinit);
        out.extend(wire::packet(&wire::ecdh_init_payload(&ephemeral.public())));
        self.send(&out).await;
        let (payload, _) = self
            .packet("key exchange reply")
            .await
            .map_err(|e| format!("host key not read: {e}"))?;
        let reply = wire::ecdh_reply(&payload).map_err(|e| format!("host key not read: {e}"))?;
        let client_line = client_identification();
        let transcript = kex::Transcript {
            client_id: client_line.trim_end().as_bytes(),
            server_id: server_line.as_bytes(),
            client_kexinit: &client_kexinit,
            server_kexinit,
        };
        kex::verify(plan, &transcript, ephemeral, &reply).map_err(|e| format!("host key not trusted: {e}"))
    }
}

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid SSH-2 identification line arrived; the bytes up to its end.
    Found(Identification, usize),
    /// Nothing conclusive yet: read more.
    NeedMore,
    /// The peer is not an SSH-2 server; the reason says what it sent.
    NotSsh(String),
}

/// The line we send first, so servers log a clean disconnect instead of "did not receive
/// identification string".
pub fn client_identification() -> String {
    format!("SSH-2.0-whitelist_audit_{}\r\n", env!("CARGO_PKG_VERSION"))
}

/// Longest identification line RFC 4253 allows, CR LF included.
const MAX_LINE: usize = 255;

/// Scans the bytes received so far. Servers may send text lines before the identification line;
/// the caller stops reading after `max_bytes`.
pub fn scan(received: &[u8], max_bytes: usize) -> Scan {
    let mut rest = received;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        let raw = &rest[..newline];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let end = received.len() - rest.len() + newline + 1;
        if line.starts_with(b"SSH-") {
            return match parse_line(line) {
                Scan::Found(identification, _) => Scan::Found(identification, end),
                other => other,
            };
        }
        rest = &rest[newline + 1..];
    }
    if rest.starts_with(b"SSH-") && rest.len() > MAX_LINE {
        return Scan::NotSsh(format!("identification line longer than {MAX_LINE} bytes"));
    }
    if received.len() >= max_bytes {
        return Scan::NotSsh(format!(
            "no SSH identification line in the first {max_bytes} bytes; first line: {}",
            first_line(received)
        ));
    }
    Scan::NeedMore
}

fn parse_line(line: &[u8]) -> Scan {
    if line.len() + 2 > MAX_LINE {
        return Scan::NotSsh(format!("identification line longer than {MAX_LINE} bytes"));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Scan::NotSsh("identification line is not text".into());
    };
    if text.chars().any(|c| c.is_ascii_control()) {
        return Scan::NotSsh(format!(
            "identification line has control characters: {}",
            printable(line)
        ));
    }
    let body = &text[4..];
    let Some((protocol, rest)) = body.split_once('-') else {
        return Scan::NotSsh(format!("malformed identification line: {text}"));
    };
    if protocol != "2.0" && protocol != "1.99" {
        return Scan::NotSsh(format!("SSH protocol {protocol} is not SSH-2: {text}"));
    }
    let (software, comments) = match rest.split_once(' ') {
        Some((software, comments)) => (software, Some(comments.to_string())),
        None => (rest, None),
    };
    if software.is_empty() || !software.chars().all(|c| c.is_ascii_graphic()) {
        return Scan::NotSsh(format!("malformed software version in identification line: {text}"));
    }
    Scan::Found(
        Identification {
            protocol: protocol.to_string(),
            software: software.to_string(),
            comments,
        },
        0,
    )
}

/// The first line of what a peer sent, made printable and short, for error details.
pub fn first_line(received: &[u8]) -> String {
    let line = received.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    printable(&line[..line.len().min(80)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `scan` finds when the identification line ends the input.
    fn found(input: &[u8], software: &str, protocol: &str, comments: Option<&str>) -> Scan {
        Scan::Found(
            Identification {
                protocol: protocol.into(),
                software: software.into(),
                comments: comments.map(Into::into),
            },
            input.len(),
        )
    }

    #[test]
    fn openssh_line_with_comment() {
        assert_eq!(
            scan(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", 8192),
            found(
                b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
                "OpenSSH_9.2p1",
                "2.0",
                Some("Debian-2+deb12u3")
            )
        );
    }

    #[test]
    fn bare_lf_and_1_99_are_accepted() {
        // RFC 4253 forbids '-' in the software version, but Cisco sends it and OpenSSH accepts it:
        // refusing it would report a healthy router as not-SSH.
        assert_eq!(
            scan(b"SSH-1.99-Cisco-1.25\n", 8192),
            found(b"SSH-1.99-Cisco-1.25\n", "Cisco-1.25", "1.99", None)
        );
        assert_eq!(
            scan(b"SSH-1.99-dropbear_2022.83\n", 8192),
            found(b"SSH-1.99-dropbear_2022.83\n", "dropbear_2022.83", "1.99", None)
        );
    }

    #[test]
    fn text_lines_before_the_identification_are_skipped() {
        assert_eq!(
            scan(
                b"Welcome to vendor SFTP\r\nAuthorized use only\r\nSSH-2.0-AWS_SFTP_1.1\r\n",
                8192
            ),
            found(
                b"Welcome to vendor SFTP\r\nAuthorized use only\r\nSSH-2.0-AWS_SFTP_1.1\r\n",
                "AWS_SFTP_1.1",
                "2.0",
                None
            )
        );
    }

    #[test]
    fn partial_line_needs_more() {
        assert_eq!(scan(b"SSH-2.0-Open", 8192), Scan::NeedMore);
        assert_eq!(scan(b"", 8192), Scan::NeedMore);
    }

    #[test]
    fn ssh1_is_not_ssh2() {
        assert_eq!(
            scan(b"SSH-1.5-OldServer\r\n", 8192),
            Scan::NotSsh("SSH protocol 1.5 is not SSH-2: SSH-1.5-OldServer".into())
        );
    }

    #[test]
    fn garbage_past_the_cap_is_refused() {
        let junk = vec![b'x'; 9000];
        match scan(&junk, 8192) {
            Scan::NotSsh(reason) => assert!(
                reason.starts_with("no SSH identification line in the first 8192 bytes"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http_reply_is_waited_out_until_cap_or_close() {
        assert_eq!(scan(b"HTTP/1.1 400 Bad Request\r\n\r\n", 8192), Scan::NeedMore);
        assert_eq!(
            first_line(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            "HTTP/1.1 400 Bad Request"
        );
    }

    #[test]
    fn overlong_identification_line_is_refused() {
        let mut line = b"SSH-2.0-".to_vec();
        line.extend(std::iter::repeat_n(b'a', 300));
        assert!(matches!(scan(&line, 8192), Scan::NotSsh(_)));
        line.extend(b"\r\n");
        assert!(matches!(scan(&line, 8192), Scan::NotSsh(_)));
    }

    #[test]
    fn missing_software_is_malformed() {
        assert!(matches!(scan(b"SSH-2.0-\r\n", 8192), Scan::NotSsh(_)));
        assert!(matches!(scan(b"SSH-2.0\r\n", 8192), Scan::NotSsh(_)));
    }

    #[test]
    fn our_own_line_is_valid() {
        let ours = client_identification();
        assert!(matches!(scan(ours.as_bytes(), 8192), Scan::Found(..)));
    }
}
