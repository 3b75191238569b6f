//! HTTP routes: the metrics, the health endpoints and a landing page, behind the
//! request-side tower layers (a request timeout, a cap on requests in flight and load
//! shedding). The connection-side bounds are in [`web::serve`](mod@super::web::serve).

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

use crate::exposition::{SharedExposition, CONTENT_TYPE};
use crate::health::Health;

#[derive(Clone)]
pub struct AppState {
    pub exposition: SharedExposition,
    pub health: Arc<Health>,
    pub telemetry_path: String,
    /// Shown on the landing page; never the token.
    pub source_description: String,
}

/// Requests handled at once. Every handler answers from memory in microseconds (the
/// exposition is encoded once per poll), so even a few busy Prometheus servers stay far
/// below it; past it, requests get 503 at once (load shedding) instead of queueing.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 64;

/// Longest time from a request's complete head to its response (503 past it). A backstop:
/// handlers do not wait on anything; Prometheus' default scrape timeout is 10 s as well.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's routes with their request-side layers.
pub fn router(state: AppState) -> Router {
    let telemetry_path = state.telemetry_path.clone();
    Router::new()
        .route("/", get(landing))
        .route(&telemetry_path, get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                // Global: one count shared by every route (the plain layer would count per route).
                .layer(GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT_REQUESTS))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT)),
        )
}

/// The load shedder's refusal (and any other layer error) as a response.
async fn overloaded(error: BoxError) -> Response {
    if error.is::<Overloaded>() {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, "Too many requests in flight\n").into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !q_zero
        },
    )
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let exposition = state.exposition.get();
    let mut response = if accepts_gzip(&headers) {
        let mut r = exposition.gzip.clone().into_response();
        r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        axum::body::Body::new(exposition.plain()).into_response()
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// 200 while the chat values served are current (the last poll succeeded and was saved),
/// 503 with the reason otherwise. Metrics are served either way: this tells whether they
/// move, for people and scripts; Kubernetes' readiness watches `/-/healthy` (an upstream
/// outage must not take the exporter that reports it out of its Service).
async fn ready(State(state): State<AppState>) -> Response {
    match state.health.state().not_ready_because() {
        None if state.health.is_ready() => (StatusCode::OK, "Ready\n").into_response(),
        why => {
            let why = why.unwrap_or_else(|| "no successful poll yet".to_string());
            (StatusCode::SERVICE_UNAVAILABLE, format!("Not ready: {why}\n")).into_response()
        }
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let s = state.health.state();
    let status = match (state.health.is_ready(), s.polls) {
        (true, _) => "up",
        (false, 0) => crate::health::STARTING,
        (false, _) => "down",
    };
    let last_success = s.last_success.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".to_string());
    let last_error = s.last_error.as_deref().map(escape_html).unwrap_or_else(|| "none".to_string());
    let state_file = s
        .state_error
        .as_deref()
        .map_or(String::new(), |e| format!("<tr><th align=\"left\">state file</th><td>{}</td></tr>\n", escape_html(e)));
    // A poll waiting long for its request budget: why the status is down with no error.
    let waiting = s
        .waiting
        .as_deref()
        .map_or(String::new(), |w| format!("<tr><th align=\"left\">waiting</th><td>{}</td></tr>\n", escape_html(w)));
    let path = escape_html(&state.telemetry_path);
    Html(format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>chat_exporter</title></head>
<body>
<h1>chat_exporter</h1>
<p>Prometheus exporter for customer-service chat platforms, version {version}.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="/-/healthy">Health</a></li>
<li><a href="/-/ready">Readiness</a></li>
</ul>
<h2>Source</h2>
<table>
<tr><th align="left">source</th><td>{source}</td></tr>
<tr><th align="left">platform</th><td>{description}</td></tr>
<tr><th align="left">status</th><td>{status}</td></tr>
<tr><th align="left">polls</th><td>{polls}</td></tr>
<tr><th align="left">last success</th><td>{last_success}</td></tr>
<tr><th align="left">last error</th><td>{last_error}</td></tr>
{state_file}{waiting}
</table>
</body>
</html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        source = escape_html(&s.source),
        description = escape_html(&state.source_description),
        polls = s.polls,
    ))
}
