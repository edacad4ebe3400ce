//! The agent's admin endpoint: `/healthz`, `/metrics` (Flagger's controller metrics plus the
//! platform's, e.g. the local router's), `/canaries` (the items of `kubectl get canaries -o
//! json`), `/events` (recent events, `?canary=namespace/name` to filter).

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use aviary_api::Canary;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::observe::{ControllerMetrics, EventLog};

/// What the admin endpoint shows.
#[async_trait]
pub trait AdminSource: Send + Sync + 'static {
    /// Every canary the agent knows, with its status (invalid ones with a condition saying why).
    async fn canaries(&self) -> Vec<Canary>;
    /// Extra Prometheus text appended to `/metrics` (e.g. the local router's metrics).
    fn extra_metrics(&self) -> String {
        String::new()
    }
}

/// Everything the handlers need.
#[derive(Clone)]
pub struct AdminState {
    pub source: Arc<dyn AdminSource>,
    pub metrics: Arc<ControllerMetrics>,
    pub events: Arc<EventLog>,
}

/// The routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .route("/canaries", get(canaries))
        .route("/events", get(events))
        .with_state(state)
}

/// Serves the admin endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the admin address (a clear error when it is in use).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr).await.map_err(|e| crate::Error::Bind {
        addr: addr.to_string(),
        source: e,
    })
}

async fn metrics(State(s): State<AdminState>) -> Response {
    // flagger_canary_total as of this scrape, on every platform (Flagger sets it each loop).
    let canaries = s.source.canaries().await;
    s.metrics.set_totals(canaries.iter().map(|c| c.namespace()));
    let mut text = s.metrics.encode();
    // the registry ends with `# EOF`; keep it last
    if let Some(stripped) = text.strip_suffix("# EOF\n") {
        text = stripped.to_string();
    }
    text.push_str(&s.source.extra_metrics());
    text.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `kubectl get canaries -o json`: a v1 List of full Canary objects.
async fn canaries(State(s): State<AdminState>) -> Json<Value> {
    let mut items = s.source.canaries().await;
    items.sort_by_key(|c| c.key());
    Json(json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}))
}

#[derive(Deserialize)]
struct EventQuery {
    canary: Option<String>,
}

async fn events(State(s): State<AdminState>, Query(q): Query<EventQuery>) -> Response {
    let list = s.events.list(q.canary.as_deref());
    (StatusCode::OK, Json(list)).into_response()
}
