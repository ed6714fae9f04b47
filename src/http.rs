//! The HTTP endpoints, Prometheus-style: `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload`. Every
//! read renders the latest published snapshot; none takes the probes' lock.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::ConfigError;
use crate::core::state::Snapshot;

/// A request to reload the configuration, with a channel for the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), ConfigError>>;

#[derive(Clone)]
struct Web {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Arc<Registry>,
    reloads: mpsc::Sender<ReloadRequest>,
}

/// The router for the daemon's endpoints.
pub fn router(snapshots: watch::Receiver<Arc<Snapshot>>, reloads: mpsc::Sender<ReloadRequest>) -> Router {
    let registry = crate::metrics::registry(snapshots.clone());
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .with_state(Web {
            snapshots,
            registry: Arc::new(registry),
            reloads,
        })
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
