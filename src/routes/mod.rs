//! HTTP routes. Each module exposes `router()`; [`router`] merges them and
//! applies the layers every request goes through.

pub mod audit;
pub mod changes;
pub mod guard;
pub mod health;
pub mod status;
pub mod submissions;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::audit::Audit;
use crate::error::{AppError, ErrorBody};
use crate::monitoring;
use crate::request_id;
use crate::state::AppState;
use crate::telemetry;
use guard::ApiRoutes;

/// How long a request may run before it is answered 503.
#[derive(Clone, Copy)]
pub struct TimeLimits {
    /// Every request but the two below.
    pub request: Duration,
    /// A submission, which waits for Cobalt's answer.
    pub submission: Duration,
}

/// The whole application. Layers run outermost first: the request id is set
/// before the trace span opens (so the span carries it), and bare error
/// answers from the inner layers (timeouts, panics) are made JSON before they
/// are traced.
pub fn router(state: AppState, limits: TimeLimits) -> Router {
    // The caller is known (the guard) before the read is audited.
    let audit = state.audit.clone();
    let api = api_routes().guarded(state.api_tokens.clone(), |routes| {
        routes.route_layer(middleware::from_fn_with_state(audit, audit_reads))
    });
    Router::new()
        .merge(webhooks::router(state.body_limit))
        .merge(api)
        .merge(health::router())
        .route("/openapi.json", axum::routing::get(openapi_document))
        .fallback(no_route)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::drop_unusable)
                .layer(request_id::set())
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(log_response),
                )
                .layer(request_id::propagate())
                .layer(middleware::from_fn_with_state(limits, answer))
                .layer(CatchPanicLayer::new()),
        )
}

/// What every request goes through, in one step (a middleware per concern
/// would cost each request a future and a clone of the stack apiece): its
/// time limit, the JSON error shape, and its latency metric.
async fn answer(State(limits): State<TimeLimits>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let limit = time_limit(limits, &request);
    let response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => json_errors(response),
        // A request still running at its limit has outlived any caller's
        // patience; 503 tells Cobalt to retry.
        Err(_) => json_errors(StatusCode::SERVICE_UNAVAILABLE.into_response()),
    };
    monitoring::request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// How long a request may run. Waiting for an outcome (`?wait=`),
/// submitting a note (which waits for Cobalt) and a recovery sweep on
/// request get longer.
fn time_limit(limits: TimeLimits, request: &Request) -> Duration {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    match (request.method().as_str(), route) {
        ("POST", Some("/v1/patient-notes")) => limits.submission + limits.request,
        ("POST", Some("/v1/recoveries")) => {
            Duration::from_secs(status::MAX_WAIT_SECS) + limits.request
        }
        ("GET", Some("/v1/jobs/{job_id}"))
            if request.uri().query().is_some_and(|q| q.contains("wait=")) =>
        {
            Duration::from_secs(status::MAX_WAIT_SECS) + limits.request
        }
        _ => limits.request,
    }
}

/// The span of one request: the route template, never the concrete path
/// or query, and the request id.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        token = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if telemetry::traces_on() {
        // Named as OpenTelemetry's HTTP conventions name a server span,
        // and joined to the caller's trace when it sent a `traceparent`.
        span.record("otel.name", format!("{} {route}", request.method()));
        span.record("otel.kind", "server");
        telemetry::continue_trace(&span, request.headers());
    }
    span
}

/// The completion line of every request: its status, and its latency as a
/// number of milliseconds (log collectors can then compare and sum it),
/// to the microsecond: `0.931`, not `0.9305859999999999`.
fn log_response(response: &Response, latency: Duration, span: &tracing::Span) {
    if telemetry::traces_on() {
        span.record("http.response.status_code", response.status().as_u16());
    }
    let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
    tracing::info!(
        status = response.status().as_u16(),
        latency_ms = f64::from(micros) / 1000.0,
        "finished processing request"
    );
}

/// The API's routes, each with the permission it needs.
pub fn api_routes() -> ApiRoutes<AppState> {
    status::routes()
        .merge(changes::routes())
        .merge(submissions::routes())
        .merge(audit::routes())
}

/// A listing's `limit`: `default` when absent, else a whole number from 1
/// to `max`.
fn page_limit(text: Option<&str>, default: u32, max: u32) -> Result<u32, AppError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad(&format!("limit must be a whole number from 1 to {max}"))),
    }
}

/// A request's `wait`: absent is 0, else whole seconds up to
/// [`status::MAX_WAIT_SECS`].
fn wait_secs(text: Option<&str>) -> Result<u64, AppError> {
    match text {
        None => Ok(0),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs <= status::MAX_WAIT_SECS)
            .ok_or_else(|| bad("wait must be a whole number of seconds from 0 to 120")),
    }
}

/// A 400 with `detail`.
fn bad(detail: &str) -> AppError {
    AppError::BadRequest(detail.to_owned())
}

/// The audit action of a read of the status API, by route.
fn read_action(route: &str) -> Option<&'static str> {
    Some(match route {
        "/v1/jobs/{job_id}" => "api.job.read",
        "/v1/jobs/{job_id}/events" => "api.job_events.read",
        "/v1/patient-notes" => "api.list.read",
        "/v1/patient-notes/{patient_note_id}" => "api.note.read",
        "/v1/audit" => "api.audit.read",
        "/v1/changes" => "api.changes.read",
        _ => return None,
    })
}

/// Records every read of a job, a note, a listing or the audit trail
/// (who, which path and query, the request id) before it is answered.
async fn audit_reads(State(audit): State<Audit>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    if let (&axum::http::Method::GET, Some(action), Some(caller)) = (
        request.method(),
        read_action(route),
        request.extensions().get::<crate::auth::Caller>(),
    ) {
        let target = request.uri().path_and_query().map_or("", |p| p.as_str());
        audit.record(crate::audit::Action {
            actor: &caller.name,
            action,
            target: crate::audit::bounded(target),
            request_id: request
                .headers()
                .get(&request_id::HEADER)
                .and_then(|v| v.to_str().ok()),
        });
    }
    next.run(request).await
}

/// `GET /openapi.json`: the OpenAPI document, open to all (it holds no secret).
async fn openapi_document() -> axum::Json<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi;
    axum::Json(crate::openapi::ApiDoc::openapi())
}

async fn no_route() -> AppError {
    AppError::NotFound("no such route")
}

/// Answers from axum and tower-http that carry no JSON (405, a timeout, a
/// panic) get the service's error shape, so every answer is JSON.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method",
        StatusCode::PAYLOAD_TOO_LARGE => "the body is larger than the configured limit",
        StatusCode::SERVICE_UNAVAILABLE => "the request took too long; retry later",
        StatusCode::INTERNAL_SERVER_ERROR => "internal error",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let body = ErrorBody {
        code: error_code(status),
        detail: detail.to_owned(),
        field: None,
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let json = serde_json::to_vec(&body).expect("an error body always serializes");
    Response::from_parts(parts, Body::from(json))
}

fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "timeout",
        StatusCode::INTERNAL_SERVER_ERROR => "internal_error",
        s if s.is_client_error() => "bad_request",
        _ => "server_error",
    }
}
