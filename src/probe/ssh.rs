//! `check: ssh`: the exchange of identification lines (RFC 4253 section 4.2) on a connected
//! stream. The connection is closed as soon as the verdict is known, so the server spends as
//! little on us as it can (an SSH server limits unauthenticated connections with `MaxStartups`).
//! Parsing is pure so each case of a real server, a proxy or garbage gets a unit test.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::defaults;
use crate::core::outcome::{Attempt, Evidence, InfoSeries, ProbeState};

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

impl Evidence for Identification {
    fn summary(&self) -> String {
        format!("SSH-{}-{}", self.protocol, self.software)
    }

    fn json_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![
            ("software", self.software.clone().into()),
            ("ssh_protocol", self.protocol.clone().into()),
            ("ssh_comments", self.comments.clone().into()),
        ]
    }

    fn info(&self) -> Option<InfoSeries> {
        Some(InfoSeries {
            family: "whitelist_audit_ssh_info",
            help: "1; software from the server's SSH identification line.",
            // Software versions are few per pool; the cap guards against a server sending noise.
            labels: vec![("software", self.software.chars().take(64).collect())],
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Sends our identification line and reads the server's, by `deadline`, reading at most
/// `MAX_BANNER_BYTES`.
pub async fn identify<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, deadline: Instant) -> Attempt {
    let failed = |detail: String| Attempt::ended(ProbeState::ProtocolError, Duration::ZERO, detail);
    // A write error shows up again as a read error below, with a better message.
    let _ = tokio::time::timeout_at(deadline, stream.write_all(client_identification().as_bytes())).await;
    let max = defaults::MAX_BANNER_BYTES;
    let mut received: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let read = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => {
                return failed(if received.is_empty() {
                    "TCP connected, but nothing was received before the timeout".to_string()
                } else {
                    format!(
                        "no SSH identification line before the timeout; first line: {}",
                        first_line(&received)
                    )
                });
            }
            Ok(Err(err)) => {
                return failed(if received.is_empty() {
                    format!("TCP connected, then {err} before an SSH identification line")
                } else {
                    // What the peer said before hanging up is the best clue to what it is.
                    format!(
                        "{err} before an SSH identification line; first line: {}",
                        first_line(&received)
                    )
                });
            }
            Ok(Ok(0)) => {
                return failed(if received.is_empty() {
                    "TCP connected, then closed by the peer without a byte (MaxStartups, or a proxy refusing)"
                        .to_string()
                } else {
                    format!(
                        "closed by the peer before an SSH identification line; first line: {}",
                        first_line(&received)
                    )
                });
            }
            Ok(Ok(n)) => n,
        };
        let room = max.saturating_sub(received.len());
        received.extend_from_slice(&chunk[..read.min(room)]);
        match scan(&received, max) {
            Scan::NeedMore => {}
            Scan::NotSsh(reason) => return failed(reason),
            Scan::Found(identification) => {
                let evidence = Arc::new(identification);
                return Attempt {
                    evidence: Some(evidence.clone()),
                    ..Attempt::ended(ProbeState::Open, Duration::ZERO, evidence.summary())
                };
            }
        }
    }
}

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid SSH-2 identification line arrived.
    Found(Identification),
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
        if line.starts_with(b"SSH-") {
            return parse_line(line);
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
    Scan::Found(Identification {
        protocol: protocol.to_string(),
        software: software.to_string(),
        comments,
    })
}

/// The first line of what a peer sent, made printable and short, for error details.
pub fn first_line(received: &[u8]) -> String {
    let line = received.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    printable(&line[..line.len().min(80)])
}

fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(software: &str, protocol: &str, comments: Option<&str>) -> Scan {
        Scan::Found(Identification {
            protocol: protocol.into(),
            software: software.into(),
            comments: comments.map(Into::into),
        })
    }

    #[test]
    fn openssh_line_with_comment() {
        assert_eq!(
            scan(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", 8192),
            found("OpenSSH_9.2p1", "2.0", Some("Debian-2+deb12u3"))
        );
    }

    #[test]
    fn bare_lf_and_1_99_are_accepted() {
        // RFC 4253 forbids '-' in the software version, but Cisco sends it and OpenSSH accepts it:
        // refusing it would report a healthy router as not-SSH.
        assert_eq!(scan(b"SSH-1.99-Cisco-1.25\n", 8192), found("Cisco-1.25", "1.99", None));
        assert_eq!(
            scan(b"SSH-1.99-dropbear_2022.83\n", 8192),
            found("dropbear_2022.83", "1.99", None)
        );
    }

    #[test]
    fn text_lines_before_the_identification_are_skipped() {
        assert_eq!(
            scan(
                b"Welcome to vendor SFTP\r\nAuthorized use only\r\nSSH-2.0-AWS_SFTP_1.1\r\n",
                8192
            ),
            found("AWS_SFTP_1.1", "2.0", None)
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
        assert!(matches!(scan(ours.as_bytes(), 8192), Scan::Found(_)));
    }
}
