//! The HTTP endpoints, Prometheus-style: `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload`. Every
//! read renders the latest published snapshot; none takes the probes' lock.
//!
//! The listener is bounded so that no client can take from the probes what they need: at most
//! `max_connections` at once (more are closed at accept), a connection that has not sent a whole
//! request head within `header_timeout` is closed (an idle keep-alive connection too), request
//! heads and bodies are capped. File descriptors are then shared predictably: the probes'
//! `global.concurrency`, plus the listener's `max_connections`, plus a few.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::config::ConfigError;
use crate::core::state::Snapshot;

/// A request to reload the configuration, with a channel for the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), ConfigError>>;

#[derive(Clone)]
struct Web {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Arc<Registry>,
    reloads: mpsc::Sender<ReloadRequest>,
    lifecycle: bool,
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
) -> Router {
    let registry = crate::metrics::registry(snapshots.clone());
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Web {
            snapshots,
            registry: Arc::new(registry),
            reloads,
            lifecycle,
        })
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
pub async fn serve(listener: TcpListener, router: Router, limits: WebLimits, shutdown: impl Future<Output = ()>) {
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
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD_BYTES);
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%error, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    connections.abort_all();
}

async fn index() -> Html<&'static str> {
    Html(
        "<html><head><title>whitelist-audit</title></head><body><h1>whitelist-audit</h1>\
         <p><a href=\"/metrics\">Metrics</a> &middot; <a href=\"/-/healthy\">Health</a> &middot; \
         <a href=\"/-/ready\">Ready</a></p></body></html>",
    )
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
