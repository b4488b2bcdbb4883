//! `GET /metrics` (Prometheus text format, see `crate::metrics`) and the middleware that
//! times every routed request into `klaxon_http_request_duration_seconds`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Serves the exposition. A database failure is a 500 (Prometheus marks the scrape
/// failed) rather than a partial page that would look like zeros.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match crate::metrics::render(state.engine.store(), state.clock.now()).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics scrape failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable").into_response()
        }
    }
}

/// Records how long each request took, labelled by its route template (never the raw
/// path, which would make one series per URL).
pub async fn record_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    // Wall time on purpose: this measures the server, not simulated incident time.
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::process()
        .http_latency
        .with_label_values(&[&route, &method, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
