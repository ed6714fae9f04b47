//! Published lists: the vendor's own list of addresses, fetched over HTTP(S) or read from a file.
//! Parsing and acceptance are pure; fetching and persistence are the thin shell. A list that fails
//! in any way keeps its last good set, which is also kept on disk across restarts.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use serde::{Deserialize, Serialize};

use crate::config::{ListFormat, ListLocation, PublishedSource, defaults};

/// Why a refresh of a list failed: the bounded `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Timeout,
    Connect,
    Redirect,
    HttpStatus,
    TooLarge,
    Read,
    Parse,
    Empty,
    TooMany,
    TooBroad,
    StateCorrupt,
}

impl Reason {
    /// The `reason` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Redirect => "redirect",
            Self::HttpStatus => "http_status",
            Self::TooLarge => "too_large",
            Self::Read => "read",
            Self::Parse => "parse",
            Self::Empty => "empty",
            Self::TooMany => "too_many",
            Self::TooBroad => "too_broad",
            Self::StateCorrupt => "state_corrupt",
        }
    }
}

/// A failed refresh: the reason label and what happened, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What a server said about its copy, for conditional requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
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

/// Reads the addresses and prefixes out of a list body.
pub fn parse(source: &PublishedSource, bytes: &[u8], content_type: Option<&str>) -> Result<Vec<IpNet>, Failure> {
    let text = String::from_utf8_lossy(bytes);
    let looks_html = content_type.is_some_and(|t| t.contains("html")) || text.trim_start().starts_with('<');
    if looks_html {
        let first = text.trim_start().lines().next().unwrap_or_default();
        return Err(Failure::new(
            Reason::Parse,
            format!(
                "{} sent an HTML page, not a list: {}",
                source.label,
                first.chars().take(80).collect::<String>()
            ),
        ));
    }
    match source.format {
        ListFormat::Text => parse_text(&text),
        ListFormat::Json => {
            let value: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| Failure::new(Reason::Parse, format!("{}: not valid JSON: {e}", source.label)))?;
            select(source, &value)
        }
        ListFormat::Yaml => {
            let value: serde_json::Value = serde_saphyr::from_slice(bytes).map_err(|e| {
                Failure::new(
                    Reason::Parse,
                    format!("{}: not valid YAML: {}", source.label, e.without_snippet()),
                )
            })?;
            select(source, &value)
        }
    }
}

fn parse_text(text: &str) -> Result<Vec<IpNet>, Failure> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        for token in line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
        {
            let prefix = parse_prefix(token).ok_or_else(|| {
                Failure::new(
                    Reason::Parse,
                    format!("line {}: `{}` is not an address or CIDR", number + 1, shorten(token)),
                )
            })?;
            out.push(prefix);
        }
    }
    Ok(out)
}

fn select(source: &PublishedSource, value: &serde_json::Value) -> Result<Vec<IpNet>, Failure> {
    let path = source
        .select
        .as_ref()
        .expect("json and yaml lists always have a selector");
    path.query(value)
        .all()
        .into_iter()
        .map(|node| {
            let text = node.as_str().ok_or_else(|| {
                Failure::new(
                    Reason::Parse,
                    format!("`select` matched {}, not an address string", shorten(&node.to_string())),
                )
            })?;
            parse_prefix(text.trim()).ok_or_else(|| {
                Failure::new(
                    Reason::Parse,
                    format!("`select` matched `{}`, which is not an address or CIDR", shorten(text)),
                )
            })
        })
        .collect()
}

/// An address (as a host prefix) or a CIDR; host bits are masked, as a firewall would.
fn parse_prefix(text: &str) -> Option<IpNet> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    text.parse::<IpNet>().ok().map(|p| p.trunc())
}

fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// Addresses a prefix holds, saturating for the largest IPv6 prefixes.
pub fn size(prefix: &IpNet) -> u128 {
    let host_bits = u32::from(prefix.max_prefix_len() - prefix.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// Whether the addresses of `prefix` are probed one by one (else it is audited only).
pub fn is_probed(prefix: &IpNet, cap: u32) -> bool {
    size(prefix) <= u128::from(cap)
}

/// How many addresses `prefixes` make the auditor probe, a prefix too large to probe counting one:
/// what `max_addresses` bounds and `source_addresses` reports.
pub fn probe_cost<'a>(prefixes: impl IntoIterator<Item = &'a IpNet>, cap: u32) -> u128 {
    prefixes
        .into_iter()
        .map(|p| if is_probed(p, cap) { size(p) } else { 1 })
        .sum()
}

/// Decides whether a parsed list is taken: never everything (`/0`), never more than
/// `max_addresses` to probe, and never a sudden nothing unless the list allows it.
pub fn accept(
    source: &PublishedSource,
    cap: u32,
    parsed: Vec<IpNet>,
    last_good: usize,
) -> Result<BTreeSet<IpNet>, Failure> {
    if let Some(everything) = parsed.iter().find(|p| p.prefix_len() == 0) {
        return Err(Failure::new(
            Reason::TooBroad,
            format!("the list publishes {everything}, every address: refused"),
        ));
    }
    let set: BTreeSet<IpNet> = parsed.into_iter().collect();
    let to_probe = probe_cost(&set, cap);
    if to_probe > u128::from(source.max_addresses) {
        return Err(Failure::new(
            Reason::TooMany,
            format!(
                "the list holds {to_probe} addresses to probe, more than max_addresses ({})",
                source.max_addresses
            ),
        ));
    }
    if set.is_empty() && !source.allow_empty {
        let had = if last_good > 0 {
            format!(" (the last good one had {last_good})")
        } else {
            String::new()
        };
        return Err(Failure::new(
            Reason::Empty,
            format!("the list yields no address{had}: refused; set allow_empty: true if the vendor may publish none"),
        ));
    }
    Ok(set)
}

/// Every address of a prefix small enough to probe.
pub fn addresses(prefix: &IpNet) -> impl Iterator<Item = IpAddr> + '_ {
    let count = size(prefix);
    (0..count).map(move |offset| match prefix.network() {
        IpAddr::V4(base) => IpAddr::V4((u32::from(base) + u32::try_from(offset).expect("bounded by the cap")).into()),
        IpAddr::V6(base) => IpAddr::V6((u128::from(base) + offset).into()),
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
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(saved).expect("plain data serializes"))?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a saved set: `Ok(None)` when there is none, `Err` with the reason when it is corrupt.
pub fn load(path: &Path) -> Result<Option<(BTreeSet<IpNet>, Validators, SystemTime)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let prefixes = saved
        .prefixes
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .map_err(|_| format!("{}: `{p}` is not a prefix", path.display()))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(Some((
        prefixes,
        saved.validators,
        SystemTime::UNIX_EPOCH + Duration::from_secs(saved.fetched_at),
    )))
}
