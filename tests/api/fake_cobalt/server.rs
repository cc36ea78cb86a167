//! The fake's HTTP side: its routes, Cobalt's error answers, the
//! credential check, and the failures and stalls tests inject per path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::state::{Inner, Shared};
use super::{CLIENT_ID, CLIENT_SECRET, EVENTS_PATH, NOTES_PATH};

/// The two routes of the fake; any other path is a counted 404.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(NOTES_PATH, post(create_note))
        .route(EVENTS_PATH, get(list_events))
        .fallback(not_found)
        .with_state(shared)
}

/// Cobalt's error answer, `{"success":false,"message":...}`; a 429
/// also carries `Retry-After: 1`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({ "success": false, "message": message })),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

pub(super) fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Invalid credentials")
}

/// Answers after the stall of the path, if any.
async fn answer_after(stall: Option<Duration>, response: Response) -> Response {
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    response
}

async fn create_note(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.note_traceparent(NOTES_PATH, &headers);
    let (stall, response) = shared.accept_note(&headers, &body);
    answer_after(stall, response).await
}

async fn list_events(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    shared.note_traceparent(EVENTS_PATH, &headers);
    let (stall, response) = shared.list(&headers, &uri);
    answer_after(stall, response).await
}

async fn not_found(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    *shared
        .lock()
        .calls
        .entry(uri.path().to_owned())
        .or_default() += 1;
    error(StatusCode::NOT_FOUND, "Not found")
}

impl Shared {
    /// Keeps the call's W3C `traceparent`, when it carried one.
    fn note_traceparent(&self, path: &str, headers: &HeaderMap) {
        if let Some(value) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
            self.lock()
                .traceparents
                .push((path.to_owned(), value.to_owned()));
        }
    }

    /// Counts the call; answers an injected failure if one is due.
    pub(super) fn arrive(inner: &mut Inner, path: &str) -> (Option<Duration>, Option<Response>) {
        *inner.calls.entry(path.to_owned()).or_default() += 1;
        let stall = inner.stalls.get(path).copied();
        let failure = inner
            .failures
            .get_mut(path)
            .and_then(VecDeque::pop_front)
            .map(|status| {
                let status = StatusCode::from_u16(status).unwrap();
                let message = status.canonical_reason().unwrap_or("Injected failure");
                error(status, message)
            });
        (stall, failure)
    }

    /// The account's reference id when all three credentials are right.
    pub(super) fn authenticate(inner: &mut Inner, headers: &HeaderMap) -> Option<String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let reference = (header("client_id") == Some(CLIENT_ID)
            && header("client_secret") == Some(CLIENT_SECRET))
        .then(|| header("access_token").and_then(|token| inner.accounts.get(token)))
        .flatten()
        .cloned();
        if reference.is_none() {
            inner.unauthorized += 1;
        }
        reference
    }
}
