//! The metrics address: `/metrics` (Prometheus text), `/health` (liveness:
//! the node runs and serves) and `/ready` (caught up: see
//! [`super::sample::readiness`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};

use super::sample;
use crate::node::Node;

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    // Directory walks and a pass over every partition: off the async workers.
    let body = tokio::task::spawn_blocking(move || {
        let m = &node.metrics;
        // Held until gathered: another scrape must not reset a family
        // while this one reads it.
        let mut st = m.sampler.lock().expect("sampler lock");
        sample::refresh(&node, &mut st);
        let mut buf = Vec::new();
        TextEncoder::new().encode(&m.registry.gather(), &mut buf).map(|_| buf)
    })
    .await;
    match body {
        Ok(Ok(buf)) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Liveness: 200 whenever the node serves. It does not depend on other
/// nodes (a liveness probe that failed while the cluster has no majority
/// would restart healthy nodes); the body says whether a controller
/// leader is known.
async fn health(State(node): State<Arc<Node>>) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let leader = node.controller.leader().map_or("null".to_string(), |l| l.to_string());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"node\":{},\"live\":true,\"controller_leader\":{leader}}}\n", node.id),
    )
}

/// Readiness: 200 once caught up with the controller and every hosted
/// partition, else 503; the body lists what is not caught up yet.
async fn ready(State(node): State<Arc<Node>>) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let r = sample::readiness(&node);
    let code = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::to_string(&r).unwrap_or_default() + "\n";
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

/// Serves the metrics address until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(node);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
