//! `check: tcp_banner`: for services that speak first (FTP and explicit FTPS on 21, SMTP on 25 and
//! 587, POP3, IMAP), any banner within `timeout` is open. Implicit-TLS ports (990, 465, 993) wait
//! for the client's TLS hello and send nothing: use `check: tcp` there. Banners often carry host
//! names and dates, so the first line is shown in the table and the JSON but never becomes a label.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::ssh::first_line;
use crate::core::outcome::{Attempt, Evidence, ProbeState};

/// Most bytes read while waiting for the end of the first line.
const MAX_BANNER_LINE: usize = 1024;

/// The first line a service sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    /// Printable, at most 80 characters.
    pub first_line: String,
}

impl Evidence for Banner {
    fn summary(&self) -> String {
        format!("banner: {}", self.first_line)
    }

    fn json_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![("banner", self.first_line.clone().into())]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Waits by `deadline` for the service's first line: complete, cut at the read cap, or cut by the
/// peer closing or by the deadline after some bytes came. Nothing at all is a protocol error.
pub async fn read<S: AsyncRead + Unpin>(mut stream: S, deadline: Instant) -> Attempt {
    let mut received: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let ended = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break "the timeout",
            Ok(Err(_)) => break "a reset",
            Ok(Ok(0)) => break "the peer closing",
            Ok(Ok(n)) => {
                let room = MAX_BANNER_LINE.saturating_sub(received.len());
                received.extend_from_slice(&chunk[..n.min(room)]);
                if received.contains(&b'\n') || received.len() >= MAX_BANNER_LINE {
                    break "";
                }
            }
        }
    };
    if received.is_empty() {
        return Attempt::ended(
            ProbeState::ProtocolError,
            Duration::ZERO,
            format!(
                "TCP connected, but no banner before {ended} (a service that waits for the client, e.g. implicit TLS?)"
            ),
        );
    }
    let banner = Arc::new(Banner {
        first_line: first_line(&received),
    });
    Attempt {
        evidence: Some(banner.clone()),
        ..Attempt::ended(ProbeState::Open, Duration::ZERO, banner.summary())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn banner_of(sent: &'static [u8], then_close: bool) -> Attempt {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            theirs.write_all(sent).await.unwrap();
            if !then_close {
                // Stay silent and open: a tarpit after the bytes.
                std::future::pending::<()>().await;
            }
        });
        read(ours, Instant::now() + Duration::from_secs(5)).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_line_is_open_and_kept_as_evidence() {
        let attempt = banner_of(b"220 ftp.vendor.example FTP server ready\r\n", false).await;
        assert_eq!(attempt.state, ProbeState::Open);
        let banner = attempt.evidence.unwrap();
        let banner = banner.as_any().downcast_ref::<Banner>().unwrap();
        assert_eq!(banner.first_line, "220 ftp.vendor.example FTP server ready");
        assert!(banner.summary().starts_with("banner: 220"));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_without_a_line_end_still_count_once_the_peer_stops() {
        assert_eq!(banner_of(b"+OK", true).await.state, ProbeState::Open);
        assert_eq!(
            banner_of(b"* OK IMAP", false).await.state,
            ProbeState::Open,
            "cut by the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_or_a_close_without_a_byte_is_a_protocol_error() {
        let silent = banner_of(b"", false).await;
        assert_eq!(silent.state, ProbeState::ProtocolError);
        assert!(silent.detail.contains("before the timeout"), "{}", silent.detail);
        let closed = banner_of(b"", true).await;
        assert_eq!(closed.state, ProbeState::ProtocolError);
        assert!(closed.detail.contains("the peer closing"), "{}", closed.detail);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_cut_at_the_cap_and_the_shown_line_is_short_and_printable() {
        let attempt = banner_of(&[b'\x07'; 4096], false).await;
        assert_eq!(attempt.state, ProbeState::Open);
        let json = attempt.evidence.unwrap().json_fields();
        let shown = json[0].1.as_str().unwrap();
        assert_eq!(shown, ".".repeat(80));
    }
}
