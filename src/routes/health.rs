//! Liveness and readiness, open to all (container probes carry no token).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::ErrorBody;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
}

/// What both ports answer while the server waits for a database it could
/// not reach at start: alive, not ready, and 503 to everything else (a
/// delivery too, which Cobalt retries once). Every answer closes its
/// connection, so no client keeps one past the wait.
pub fn while_waiting() -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route(
            "/readyz",
            get(|| async { not_ready("the database cannot be reached; waiting for it") }),
        )
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(ErrorBody {
                    code: "storage_unavailable",
                    detail: "the database cannot be reached; retry later".into(),
                    field: None,
                }),
            )
        })
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            },
        ))
}

/// The answer of the health routes when all is well.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HealthStatus {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    #[schema(value_type = HealthWord, example = "ok")]
    pub status: String,
}

/// What the health routes say when all is well (documentation only).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum HealthWord {
    Ok,
    Ready,
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operation",
    responses((status = 200, description = "The process answers", body = HealthStatus))
)]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers, has every migration this build knows, and takes
/// a durable write now (not locked past the write timeout, not full, not
/// read-only).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operation",
    responses(
        (status = 200, description = "Ready to store deliveries", body = HealthStatus),
        (status = 503, description = "Not ready, with the reason", body = ErrorBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    // A probe with a deadline of its own: a health check gets an answer,
    // not a timeout, whatever the database does.
    match tokio::time::timeout(READY_WITHIN, readiness(&state)).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!("readiness check: the database did not answer within a second");
            state.store.write_health().probe_failed();
            not_ready("the database cannot take writes: it did not answer in time")
        }
    }
}

/// Whether `/readyz` would answer 200 now (for the metric alerts read).
pub async fn is_ready(state: &AppState) -> bool {
    tokio::time::timeout(READY_WITHIN, readiness(state))
        .await
        .is_ok_and(|(status, _)| status == StatusCode::OK)
}

/// How long `/readyz` may take.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

async fn readiness(state: &AppState) -> (StatusCode, Json<Value>) {
    let health = state.store.write_health();
    match state.store.is_ready().await {
        Ok(true) => {}
        Ok(false) => return not_ready("the database is missing migrations"),
        Err(error) => {
            health.probe_failed();
            tracing::warn!(error = %error, "readiness check: reads failed");
            return not_ready("the database does not answer");
        }
    }
    match state.store.can_write().await {
        // Deliveries' own batches failing, where the probe does not see
        // why, is the truth.
        Ok(()) if health.failing_unseen() => {
            not_ready("the database cannot take writes: deliveries are failing")
        }
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(error) => {
            health.probe_failed();
            tracing::warn!(error = %error, "readiness check: the database cannot take writes");
            not_ready(&format!(
                "the database cannot take writes: {}",
                error.in_general()
            ))
        }
    }
}

fn not_ready(detail: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "code": "not_ready", "detail": detail })),
    )
}
