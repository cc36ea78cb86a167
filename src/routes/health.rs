//! Liveness and readiness, open to all (container probes carry no token).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
}

/// The process answers.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers and has every migration this build knows.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.is_ready().await {
        Ok(true) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Ok(false) => not_ready("the database is missing migrations"),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            not_ready("the database does not answer")
        }
    }
}

fn not_ready(detail: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "code": "not_ready", "detail": detail })),
    )
}
