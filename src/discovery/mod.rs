//! Where a target's published addresses come from: DNS and the static list. Each source keeps its
//! last good set when a refresh fails, and says so in its status.

pub mod dns;
pub mod published;

use std::time::SystemTime;

use serde::Serialize;

/// Health of one source of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Whether the last refresh succeeded; `None` before the first one.
    pub up: Option<bool>,
    pub last_success: Option<SystemTime>,
    /// Why the last refresh failed, when it did.
    pub last_error: Option<String>,
}

impl SourceStatus {
    /// Records a successful refresh.
    pub fn succeeded(&mut self, now: SystemTime) {
        self.up = Some(true);
        self.last_success = Some(now);
        self.last_error = None;
    }

    /// Records a failed refresh; the source's data stays as it was.
    pub fn failed(&mut self, error: String) {
        self.up = Some(false);
        self.last_error = Some(error);
    }
}

/// One source of one target, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// `dns`, `static` or `published`.
    pub source: &'static str,
    /// For `published`: the list's URL, without credentials.
    pub url: Option<String>,
    pub up: Option<bool>,
    pub addresses: usize,
    #[serde(serialize_with = "as_unix_seconds")]
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Failed refreshes since start, by reason.
    pub failures: Vec<(String, u64)>,
}

#[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<T>`
fn as_unix_seconds<S: serde::Serializer>(time: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => serializer.serialize_some(&unix_seconds(*t)),
        None => serializer.serialize_none(),
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are.
pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
