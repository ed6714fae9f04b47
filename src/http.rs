//! The HTTP endpoints: the status page `/`, the JSON API `/api/v1/...`, and Prometheus-style
//! `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload`. Every read renders the latest published
//! snapshot; none takes the probes' lock.
//!
//! The listener is bounded so that no client can take from the probes what they need: at most
//! `max_connections` at once (more are closed at accept), a connection that has not sent a whole
//! request head within `header_timeout` is closed (an idle keep-alive connection too), request
//! heads and bodies are capped. File descriptors are then shared predictably: the probes'
//! `global.concurrency`, plus the listener's `max_connections`, plus a few.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::change_request::Format;
use crate::config::ConfigError;
use crate::config::web::{ClientAuth, TlsSettings, TlsVersion, WebConfig};
use crate::core::event::{self, Aspect, Cause, EventQuery};
use crate::core::request::ChangeRequest;
use crate::core::state::Snapshot;
use crate::output::{AddressFilter, unix};

/// A request to reload the configuration, with a channel for the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), ConfigError>>;

#[derive(Clone)]
struct Web {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Arc<Registry>,
    reloads: mpsc::Sender<ReloadRequest>,
    lifecycle: bool,
    security: SharedSecurity,
}

/// What `--web.config.file` asks of every connection and request: TLS, users, headers. Built
/// whole and swapped whole on reload, so no request sees half of an old file and half of a new.
pub struct Security {
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// User name to bcrypt hash.
    users: BTreeMap<String, String>,
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
    /// Digests of (user, password, hash) that verified: bcrypt costs tens of milliseconds on
    /// purpose, and Prometheus sends the same credentials every scrape.
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// The security in force, replaced on reload.
pub type SharedSecurity = Arc<RwLock<Arc<Security>>>;

/// bcrypt checks at once: a flood of wrong passwords costs at most this many cores.
static BCRYPT_SLOTS: Semaphore = Semaphore::const_new(2);

/// Verified credentials remembered, at most; the set starts over beyond it.
const MAX_VERIFIED: usize = 1024;

impl Security {
    /// No TLS, no users: what serves without `--web.config.file`.
    pub fn open() -> Self {
        Self {
            acceptor: None,
            users: BTreeMap::new(),
            headers: Vec::new(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Builds the TLS acceptor and the checks `web` describes; `file` names it in errors.
    pub fn build(web: &WebConfig) -> Result<Self, ConfigError> {
        let file = web.path.clone().unwrap_or_default();
        let acceptor = web
            .tls
            .as_ref()
            .map(|tls| tls_acceptor(tls).map_err(|(key, why)| ConfigError::new(&file, Some(key.into()), why)))
            .transpose()?;
        let headers = web
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                    header::HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Ok(Self {
            acceptor,
            users: web.basic_auth_users.clone(),
            headers,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `user` with `password` may in.
    async fn admits(&self, user: &str, password: &str) -> bool {
        use sha2::Digest as _;
        // An unknown user costs a bcrypt too, so timing does not tell which users exist.
        const DECOY: &str = "$2y$10$9BmGJ2CcLNWK/MKjbS5xQ.Sv1DqiGMYcW7LlA4Y2LhRrQ0hjcPZxe";
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.clone(), true),
            None => (DECOY.to_string(), false),
        };
        let digest: [u8; 32] = sha2::Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if known
            && self
                .verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&digest)
        {
            return true;
        }
        let Ok(_slot) = BCRYPT_SLOTS.acquire().await else {
            return false;
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok && known {
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(digest);
        }
        ok && known
    }
}

/// The rustls server configuration of `tls`; an error names the key at fault.
fn tls_acceptor(tls: &TlsSettings) -> Result<tokio_rustls::TlsAcceptor, (&'static str, String)> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !tls.cipher_suites.is_empty() {
        provider.cipher_suites.retain(|suite| match suite {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => tls.cipher_suites.contains(&format!("{:?}", suite.suite())),
        });
    }
    if !tls.curve_preferences.is_empty() {
        let wanted: Vec<rustls::NamedGroup> = tls
            .curve_preferences
            .iter()
            .map(|curve| match curve.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                _ => rustls::NamedGroup::secp384r1,
            })
            .collect();
        let groups = std::mem::take(&mut provider.kx_groups);
        provider.kx_groups = wanted
            .iter()
            .filter_map(|name| groups.iter().find(|g| g.name() == *name).copied())
            .collect();
    }
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = match (tls.min_version, tls.max_version) {
        (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
        (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| ("tls_server_config", e.to_string()))?;
    let builder = match (tls.client_auth, &tls.client_ca_pem) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    (
                        "tls_server_config.client_ca_file",
                        format!("not a PEM certificate: {e}"),
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    (
                        "tls_server_config.client_ca_file",
                        format!("a certificate rustls refuses: {e}"),
                    )
                })?;
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::VerifyIfGiven {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| ("tls_server_config.client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                "tls_server_config.cert_file",
                format!("not a PEM certificate chain: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(("tls_server_config.cert_file", "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|e| ("tls_server_config.key_file", format!("not a PEM private key: {e}")))?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        (
            "tls_server_config.key_file",
            format!("does not fit the certificate: {e}"),
        )
    })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The bounds of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time allowed for a whole request head, and for an idle connection to send the next one.
    pub header_timeout: Duration,
}

impl Default for WebLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The largest request head accepted (hyper's minimum buffer); a larger one gets 431.
const MAX_HEAD_BYTES: usize = 8192;
/// The largest request body: no endpoint takes one.
const MAX_BODY_BYTES: usize = 4096;

/// The router for the daemon's endpoints. `lifecycle`: whether `POST /-/reload` is served
/// (`--web.enable-lifecycle`, as in Prometheus); otherwise it answers 403.
pub fn router(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    reloads: mpsc::Sender<ReloadRequest>,
    lifecycle: bool,
    security: SharedSecurity,
) -> Router {
    let registry = crate::metrics::registry(snapshots.clone());
    let web = Web {
        snapshots,
        registry: Arc::new(registry),
        reloads,
        lifecycle,
        security,
    };
    Router::new()
        .route("/", get(index))
        .route("/api/v1/snapshot", get(api_snapshot))
        .route("/api/v1/history", get(api_history))
        .route("/api/v1/request", get(api_request))
        .route("/api/v1/timeline", get(api_timeline))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(web.clone(), authorize))
        .with_state(web)
}

/// Basic authentication on every endpoint but `/-/healthy` (for orchestrators' probes; it tells
/// nothing), and the configured headers on every answer.
async fn authorize(State(web): State<Web>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let security = Arc::clone(&web.security.read().unwrap_or_else(PoisonError::into_inner));
    let open = security.users.is_empty() || request.uri().path() == "/-/healthy";
    let mut response = if open {
        next.run(request).await
    } else {
        let admitted = match basic_credentials(request.headers()) {
            Some((user, password)) => security.admits(&user, &password).await,
            None => false,
        };
        if admitted {
            next.run(request).await
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"whitelist-audit\"")],
                "Unauthorized.\n",
            )
                .into_response()
        }
    };
    for (name, value) in &security.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64ct::Encoding as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64ct::Base64::decode_vec(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Serves HTTP/1.1 on one connection, plain or TLS.
async fn serve_connection<I>(io: I, service: TowerToHyperService<Router>, limits: WebLimits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%error, "HTTP connection ended");
    }
}

/// No endpoint takes a body: one announced larger than a few KiB is refused before a handler
/// runs (a handler that reads one is bounded by `DefaultBodyLimit` as well).
async fn refuse_large_bodies(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.\n").into_response();
    }
    next.run(request).await
}

/// Serves `router` on `listener` within `limits` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: WebLimits,
    security: SharedSecurity,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and the like: the listener waits rather than spinning; the probes keep
                // their own budget.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(
                max = limits.max_connections,
                "HTTP connection refused: too many at once"
            );
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let acceptor = security.read().unwrap_or_else(PoisonError::into_inner).acceptor.clone();
        connections.spawn(async move {
            match acceptor {
                None => serve_connection(stream, service, limits).await,
                // The handshake is bounded like a request head: a client that stalls in it, or
                // speaks plain HTTP to the TLS port, is dropped.
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(tls, service, limits).await,
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            drop(slot);
        });
    }
    connections.abort_all();
}

async fn index(State(web): State<Web>, Query(filter): Query<AddressFilter>) -> Response {
    let snapshot = Arc::clone(&web.snapshots.borrow());
    if let Err(message) = crate::output::check_filter(&filter, &snapshot.report) {
        return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    }
    Html(crate::page::render(&snapshot, &filter)).into_response()
}

/// `/api/v1/snapshot`: `check --output json`'s document, with the addresses the query's
/// `target`, `finding` and `state` select, and the daemon's status.
async fn api_snapshot(State(web): State<Web>, Query(filter): Query<AddressFilter>) -> Response {
    #[derive(serde::Serialize)]
    struct Status {
        version: &'static str,
        ready: bool,
        reload_ok: bool,
        taken_at: u64,
        last_sweep_finished: Option<u64>,
        last_sweep_duration_seconds: Option<f64>,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        report: crate::output::JsonReport<'a>,
        status: Status,
    }
    let snapshot = Arc::clone(&web.snapshots.borrow());
    if let Err(message) = crate::output::check_filter(&filter, &snapshot.report) {
        return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    }
    let body = Body {
        report: crate::output::json_view(&snapshot.report, &filter),
        status: Status {
            version: env!("CARGO_PKG_VERSION"),
            ready: snapshot.status.ready,
            reload_ok: snapshot.status.reload_ok,
            taken_at: unix(snapshot.taken_at),
            last_sweep_finished: snapshot.status.sweep.last_finished.map(unix),
            last_sweep_duration_seconds: snapshot.status.sweep.last_duration.map(|d| d.as_secs_f64()),
        },
    };
    json_response(&body)
}

/// `/api/v1/history` query parameters, as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    since: Option<String>,
    target: Option<String>,
    ip: Option<String>,
    aspect: Option<String>,
    limit: Option<String>,
}

/// `/api/v1/history`: the most recent changes (the last 10,000 are kept in memory; the file in
/// the state directory holds more), oldest first.
/// `/api/v1/history`'s document.
#[derive(serde::Serialize)]
struct HistoryBody<'a> {
    events: Vec<&'a event::Event>,
}

async fn api_history(State(web): State<Web>, Query(params): Query<HistoryParams>) -> Response {
    let snapshot = Arc::clone(&web.snapshots.borrow());
    let query = match history_query(params, std::time::SystemTime::now()) {
        Ok(query) => query,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    json_response(&HistoryBody {
        events: event::select(&snapshot.history, &query),
    })
}

/// `/api/v1/timeline` query parameters: `/api/v1/history`'s, and the cause, first sightings, format.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineParams {
    since: Option<String>,
    target: Option<String>,
    ip: Option<String>,
    cause: Option<String>,
    first_seen: Option<String>,
    limit: Option<String>,
    format: Option<String>,
}

/// One change of `/api/v1/timeline`.
#[derive(serde::Serialize)]
struct TimelineItem<'a> {
    at: u64,
    target: &'a str,
    ip: std::net::IpAddr,
    port: u16,
    cause: Cause,
    why: &'a str,
    /// What moved, in words.
    change: String,
    events: Vec<&'a event::Event>,
}

/// `/api/v1/timeline`: the most recent changes, each attributed to the side that changed, oldest
/// first (JSON, or `format=text` / `markdown` as `whitelist-audit report` prints them).
async fn api_timeline(State(web): State<Web>, Query(params): Query<TimelineParams>) -> Response {
    let snapshot = Arc::clone(&web.snapshots.borrow());
    let bad = |message: String| (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    let cause = params.cause.as_deref().filter(|c| !c.is_empty());
    let cause = match cause.map(|label| Cause::parse(label).map_err(|why| format!("cause `{label}`: {why}"))) {
        Some(Err(message)) => return bad(message),
        Some(Ok(cause)) => Some(cause),
        None => None,
    };
    let first_seen = match params.first_seen.as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => return bad(format!("first_seen `{other}`: write true or false")),
    };
    let format = params.format.clone();
    let history = HistoryParams {
        since: params.since,
        target: params.target,
        ip: params.ip,
        aspect: None,
        limit: params.limit,
    };
    let query = match history_query(history, std::time::SystemTime::now()) {
        Ok(query) => query,
        Err(message) => return bad(message),
    };
    let entries = snapshot.timeline.select(&query, cause, first_seen);
    let text = |body: String| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    match format.as_deref() {
        None | Some("" | "json") => {
            let changes: Vec<TimelineItem<'_>> = entries
                .iter()
                .map(|entry| TimelineItem {
                    at: crate::output::unix(entry.change.at),
                    target: &entry.change.target,
                    ip: entry.change.ip,
                    port: entry.change.port,
                    cause: entry.attribution.cause,
                    why: &entry.attribution.why,
                    change: crate::output::change_summary(entry.change),
                    events: entry.change.events.iter().map(AsRef::as_ref).collect(),
                })
                .collect();
            json_response(&serde_json::json!({ "changes": changes }))
        }
        Some("text") => text(crate::output::timeline_text(&entries)),
        Some("markdown") => text(crate::output::timeline_markdown(&entries)),
        Some(other) => bad(format!("format `{other}`: write json, text or markdown")),
    }
}

/// `/api/v1/request?format=`: `whitelist-audit request` from the daemon's last snapshot (JSON by
/// default; `text`, `yaml`, `nftables`, `iptables`, `csv` as the command prints them).
async fn api_request(State(web): State<Web>, Query(params): Query<RequestParams>) -> Response {
    let snapshot = Arc::clone(&web.snapshots.borrow());
    if !snapshot.status.ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the first sweep has not finished, so nothing can be asked yet.\n",
        )
            .into_response();
    }
    let request = ChangeRequest::of(&snapshot.report, snapshot.broad_entry_prefix);
    let format = match params.format.as_deref() {
        None | Some("" | "json") => return json_response(&request),
        Some("text") => Format::Text,
        Some("yaml") => Format::Yaml,
        Some("nftables") => Format::Nftables,
        Some("iptables") => Format::Iptables,
        Some("csv") => Format::Csv,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("format `{other}`: write json, text, yaml, nftables, iptables or csv\n"),
            )
                .into_response();
        }
    };
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Yaml => "application/yaml; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        crate::change_request::render(&request, format, snapshot.taken_at),
    )
        .into_response()
}

/// `/api/v1/request` query parameters.
#[derive(Debug, Default, serde::Deserialize)]
struct RequestParams {
    format: Option<String>,
}

fn history_query(params: HistoryParams, now: std::time::SystemTime) -> Result<EventQuery, String> {
    let mut query = EventQuery::default();
    if let Some(since) = params.since.filter(|s| !s.is_empty()) {
        query.since = Some(event::parse_since(&since, now)?);
    }
    query.target = params.target.filter(|t| !t.is_empty());
    if let Some(ip) = params.ip.filter(|s| !s.is_empty()) {
        let parsed: std::net::IpAddr = ip.parse().map_err(|_| format!("ip `{ip}`: not an IP address"))?;
        // Addresses are kept canonical: ::ffff:192.0.2.1 is 192.0.2.1.
        query.ip = Some(parsed.to_canonical());
    }
    query.aspect = match params.aspect.as_deref() {
        None | Some("") => None,
        Some(label) => Some(
            Aspect::from_label(label)
                .ok_or_else(|| format!("aspect `{label}`: write state, finding, published, whitelist or service"))?,
        ),
    };
    if let Some(limit) = params.limit.filter(|l| !l.is_empty()) {
        query.limit = limit
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| format!("limit `{limit}`: write a whole number from 1 to 10000"))?;
    }
    Ok(query)
}

fn json_response(body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_string_pretty(body).expect("plain data serializes") + "\n";
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn metrics(State(web): State<Web>, headers: HeaderMap) -> Response {
    let body = crate::metrics::render(&web.registry);
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response()
    } else {
        let text = crate::metrics::to_prometheus_text(&body);
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response()
    }
}

async fn ready(State(web): State<Web>) -> Response {
    let ready = web.snapshots.borrow().status.ready;
    if ready {
        (StatusCode::OK, "Ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the first sweep has not finished.\n",
        )
            .into_response()
    }
}

async fn reload(State(web): State<Web>) -> Response {
    if !web.lifecycle {
        return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response();
    }
    let (reply, outcome) = oneshot::channel();
    if web.reloads.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match outcome.await {
        Ok(Ok(())) => (StatusCode::OK, "Reloaded.\n").into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
