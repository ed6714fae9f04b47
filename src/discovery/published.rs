//! Published lists: the vendor's own list of addresses, fetched over HTTP(S) or read from a file.
//! Parsing and acceptance are pure (`core::list`); fetching and persistence are this shell. A list
//! that fails in any way keeps its last good set, which is also kept on disk across restarts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use serde::{Deserialize, Serialize};

use crate::config::{ListLocation, PublishedSource, defaults};
use crate::core::list::{self, Validators};
use crate::core::source::{Failure, Reason};
use crate::core::state::Update;

/// Fetches and parses `source`: what the state needs to decide.
pub async fn refresh(client: &reqwest::Client, source: &PublishedSource, validators: &Validators) -> Update {
    match fetch(client, source, validators).await {
        Ok(Fetched::NotModified) => Update::NotModified,
        Ok(Fetched::Body {
            bytes,
            content_type,
            validators,
        }) => match list::parse(source, &bytes, content_type.as_deref()) {
            Ok(prefixes) => Update::Fresh { prefixes, validators },
            Err(failure) => Update::Failed(failure),
        },
        Err(failure) => Update::Failed(failure),
    }
}

/// The last good set of `source` saved in `state_dir`, as an update; `None` when there is none.
pub fn restore(state_dir: &Path, target: &str, source: &PublishedSource) -> Option<Update> {
    let path = state_file(state_dir, target, &source.label);
    match load(&path) {
        Ok(None) => None,
        Ok(Some((prefixes, validators, fetched_at))) => {
            tracing::info!(target_name = %target, url = %source.label, prefixes = prefixes.len(), file = %path.display(), "restored last good set");
            Some(Update::Restored {
                prefixes,
                validators,
                fetched_at,
            })
        }
        Err(error) => {
            tracing::warn!(target_name = %target, url = %source.label, %error, "state file is corrupt; ignored");
            Some(Update::StateCorrupt(error.to_string()))
        }
    }
}

/// Saves a set the state just took, so a restart while the vendor's site is down keeps it.
pub fn persist(
    state_dir: &Path,
    target: &str,
    source: &PublishedSource,
    prefixes: &BTreeSet<IpNet>,
    validators: &Validators,
) {
    let saved = Saved {
        version: 1,
        target: target.to_string(),
        url: source.label.clone(),
        prefixes: prefixes.iter().map(ToString::to_string).collect(),
        validators: validators.clone(),
        fetched_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let path = state_file(state_dir, target, &source.label);
    if let Err(error) = save(&path, &saved) {
        tracing::warn!(file = %path.display(), %error, "cannot save the last good set");
    }
}

/// The result of one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: the list has not changed since the validators were issued.
    NotModified,
    Body {
        bytes: Vec<u8>,
        content_type: Option<String>,
        validators: Validators,
    },
}

/// An HTTP client for lists: rustls, bounded redirects, a connect timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("whitelist-audit/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(defaults::LIST_MAX_REDIRECTS))
        .connect_timeout(Duration::from_secs(10))
        .build()
        // Only a broken TLS backend fails here; nothing a configuration can cause.
        .expect("HTTP client")
}

/// Fetches `source`, conditionally when `previous` holds validators, reading at most `max_size`.
pub async fn fetch(
    client: &reqwest::Client,
    source: &PublishedSource,
    previous: &Validators,
) -> Result<Fetched, Failure> {
    match &source.location {
        ListLocation::File(path) => read_file(path, source.max_size),
        ListLocation::Http(url) => {
            let mut request = client.get(url.clone()).timeout(source.timeout);
            for header in &source.headers {
                request = request.header(header.name.clone(), header.value.clone());
            }
            if let Some(etag) = &previous.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(modified) = &previous.last_modified {
                request = request.header(IF_MODIFIED_SINCE, modified);
            }
            let mut response = request.send().await.map_err(|e| http_failure(&e, source))?;
            if response.status() == StatusCode::NOT_MODIFIED {
                return Ok(Fetched::NotModified);
            }
            if !response.status().is_success() {
                return Err(Failure::new(
                    Reason::HttpStatus,
                    format!("{} answered HTTP {}", source.label, response.status()),
                ));
            }
            if response.content_length().is_some_and(|n| n > source.max_size) {
                return Err(too_large(source));
            }
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            let validators = Validators {
                etag: header(ETAG),
                last_modified: header(LAST_MODIFIED),
            };
            let content_type = header(CONTENT_TYPE);
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| http_failure(&e, source))? {
                if (bytes.len() + chunk.len()) as u64 > source.max_size {
                    return Err(too_large(source));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Fetched::Body {
                bytes,
                content_type,
                validators,
            })
        }
    }
}

fn too_large(source: &PublishedSource) -> Failure {
    Failure::new(
        Reason::TooLarge,
        format!("{} is larger than max_size ({} bytes)", source.label, source.max_size),
    )
}

fn http_failure(err: &reqwest::Error, source: &PublishedSource) -> Failure {
    let reason = if err.is_timeout() {
        Reason::Timeout
    } else if err.is_redirect() {
        Reason::Redirect
    } else if err.is_connect() || err.is_request() {
        Reason::Connect
    } else {
        Reason::Read
    };
    // reqwest's message names the URL, which may carry credentials: name the label instead.
    let detail = std::error::Error::source(err).map_or_else(|| err.to_string(), ToString::to_string);
    Failure::new(reason, format!("{}: {}", source.label, detail))
}

fn read_file(path: &Path, max_size: u64) -> Result<Fetched, Failure> {
    let read_error = |e: std::io::Error| Failure::new(Reason::Read, format!("{}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > max_size {
        return Err(Failure::new(
            Reason::TooLarge,
            format!("{} is larger than max_size ({max_size} bytes)", path.display()),
        ));
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    Ok(Fetched::Body {
        bytes,
        content_type: None,
        validators: Validators::default(),
    })
}

/// The last good set of one list, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    pub target: String,
    pub url: String,
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub validators: Validators,
    /// Unix seconds of the fetch that produced this set.
    pub fetched_at: u64,
}

/// The file holding the last good set of `url` of `target`.
pub fn state_file(dir: &Path, target: &str, url: &str) -> PathBuf {
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    dir.join(format!("published-{safe}-{hash:016x}.json"))
}

/// Writes `saved` atomically: a temporary file, fsync, rename, fsync of the directory.
pub fn save(path: &Path, saved: &Saved) -> std::io::Result<()> {
    crate::state_file::write_atomically(path, &serde_json::to_vec_pretty(saved).expect("plain data serializes"))
}

/// Why a saved set could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: `{prefix}` is not a prefix", path.display())]
    Prefix { path: PathBuf, prefix: String },
}

/// The saved set, validators and fetch time of a list.
pub type Loaded = (BTreeSet<IpNet>, Validators, SystemTime);

/// Reads a saved set: `Ok(None)` when there is none, `Err` with the reason when it is corrupt.
pub fn load(path: &Path) -> Result<Option<Loaded>, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|source| StateFileError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let prefixes = saved
        .prefixes
        .iter()
        .map(|p| {
            p.parse::<IpNet>().map_err(|_| StateFileError::Prefix {
                path: path.to_path_buf(),
                prefix: p.clone(),
            })
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(Some((
        prefixes,
        saved.validators,
        SystemTime::UNIX_EPOCH + Duration::from_secs(saved.fetched_at),
    )))
}
