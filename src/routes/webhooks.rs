//! `POST /webhooks/cobalt`: Cobalt's deliveries.
//!
//! Order of checks: size (413), signature (401), body (400), then the event
//! is stored whatever its type. A 2xx is sent only once the event and the job
//! state it implies are committed; a storage failure is a 503, which Cobalt
//! retries once. A replayed event id is a 2xx that changes nothing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use time::OffsetDateTime;
use tower_http::limit::RequestBodyLimitLayer;

use crate::domain::{Meaning, event};
use crate::error::{AppError, ErrorBody, Result};
use crate::monitoring::{self, DeliveryOutcome};
use crate::signature;
use crate::state::AppState;
use crate::store::{Delivery, Outcome, Recorded, Source, StoreError};

/// Where Cobalt's deliveries are received.
pub const PATH: &str = "/webhooks/cobalt";

pub fn router(body_limit: usize) -> Router<AppState> {
    // tower-http's limit refuses a too-large Content-Length before reading
    // and cuts off a chunked body at the limit; axum's own 2 MiB default
    // would otherwise cap a larger configured limit.
    Router::new()
        .route(PATH, post(receive_webhook))
        .route_layer(RequestBodyLimitLayer::new(body_limit))
        .route_layer(DefaultBodyLimit::disable())
}

/// The answer to an accepted delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    pub event_id: String,
    /// `applied`, `superseded`, `ignored` or `duplicate`.
    #[schema(value_type = ReceiptStatus, example = "applied")]
    pub status: &'static str,
    /// For a duplicate: what became of the first delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_outcome: Option<Outcome>,
}

/// What became of an accepted delivery (documentation only:
/// [`Receipt::status`] holds the text).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ReceiptStatus {
    /// The event now decides its job's state.
    Applied,
    /// A valid outcome, outranked by the event that decides its job.
    Superseded,
    /// A type this service keeps but does not act on.
    Ignored,
    /// This event id was received before; nothing changed.
    Duplicate,
}

/// A Cobalt event as it arrives. The route reads the raw bytes (they are
/// what is signed); this schema documents them. Other event types have other
/// `data` and may lack `job_id`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct WebhookEvent {
    /// The event id (else the `webhook-id` header); the dedupe key.
    #[schema(example = "evt_1J9X2q2eZvKYlo2CluR9g9gV")]
    id: String,
    #[schema(rename = "type", example = "patient_note.created")]
    event_type: String,
    /// ISO 8601 (RFC 3339) time the event was created.
    #[schema(format = DateTime, example = "2025-10-09T10:30:00Z")]
    created: String,
    /// A string or an integer; kept as its decimal string.
    #[schema(schema_with = string_or_integer, example = "12345")]
    job_id: serde_json::Value,
    object: Option<String>,
    access_token_reference_id: Option<String>,
    /// `patient_note_id` and `emr_note_id` (created) or `failure_reason` and
    /// optional `reasons` (failed), among others.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// `job_id` as Cobalt sends it: a string or an integer.
fn string_or_integer() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("A string or an integer; kept as its decimal string."))
        .build();
    Schema::OneOf(one_of)
}

/// Receives one Cobalt delivery.
#[utoipa::path(
    post,
    path = "/webhooks/cobalt",
    tag = "webhooks",
    request_body(content = WebhookEvent, content_type = "application/json"),
    params(
        ("webhook-id" = Option<String>, Header, description = "The event id, when the body has none"),
        ("webhook-attempt" = Option<String>, Header, description = "Delivery attempt, from 1"),
    ),
    responses(
        (status = 200, description = "Stored (or already stored): `applied`, `superseded`, `ignored`, `duplicate`", body = Receipt),
        (status = 400, description = "A signed body that is not a readable JSON object with an event id", body = ErrorBody),
        (status = 401, description = "Missing, malformed or wrong signature", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 422, description = "A patient-note event missing a field; kept as rejected", body = ErrorBody),
        (status = 503, description = "Storage could not commit in time, or the queue is full; retry", body = ErrorBody),
    ),
    security(("cobalt_signature" = []))
)]
#[tracing::instrument(
    name = "webhook",
    skip_all,
    fields(event_id = tracing::field::Empty, event_type = tracing::field::Empty)
)]
pub async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Receipt>)> {
    let mut event_type = monitoring::type_label(None);
    let answer = receive(&state, &headers, body, &mut event_type).await;
    let outcome = match &answer {
        Ok((outcome, _)) => *outcome,
        Err(AppError::InvalidEvent(error)) => {
            monitoring::rejected(error.field);
            DeliveryOutcome::Rejected
        }
        Err(AppError::Signature(_)) => DeliveryOutcome::Unauthorized,
        Err(AppError::TooLarge(_)) => DeliveryOutcome::TooLarge,
        Err(AppError::Store(StoreError::Overloaded)) => DeliveryOutcome::Overloaded,
        Err(AppError::Store(_)) => DeliveryOutcome::StorageUnavailable,
        Err(_) => DeliveryOutcome::InvalidBody,
    };
    monitoring::delivery(event_type, outcome);
    answer.map(|(_, receipt)| (StatusCode::OK, Json(receipt)))
}

/// A stored event's outcome as the deliveries counter labels it.
fn delivered(outcome: Outcome) -> DeliveryOutcome {
    match outcome {
        Outcome::Applied => DeliveryOutcome::Applied,
        Outcome::Superseded => DeliveryOutcome::Superseded,
        Outcome::Ignored => DeliveryOutcome::Ignored,
        Outcome::Rejected => DeliveryOutcome::Rejected,
    }
}

/// The delivery itself; `event_type` (a metrics label) is set once the body
/// is read.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
    event_type: &mut &'static str,
) -> Result<(DeliveryOutcome, Receipt)> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::TooLarge(state.body_limit),
        _ => AppError::BadRequest("the body could not be read".into()),
    })?;
    if let Some(verifier) = &state.verifier {
        let _verifying = tracing::debug_span!("verify signature").entered();
        // The reason, never the header's value: a wrong secret shows up here.
        verifier
            .verify(header(headers, signature::HEADER), &body)
            .inspect_err(|error| {
                state.signature_rejections.note(OffsetDateTime::now_utc());
                tracing::warn!(reason = %error, "delivery refused: 401");
            })?;
    }

    let header_id = header(headers, "webhook-id").and_then(|v| std::str::from_utf8(v).ok());
    let payload = event::text(&body)?;
    let envelope = event::parse(payload, header_id)?;
    *event_type = monitoring::type_label(envelope.event_type.as_deref());
    let span = tracing::Span::current();
    span.record("event_id", envelope.event_id.as_str());
    span.record("event_type", envelope.event_type.as_deref().unwrap_or(""));

    let event_id = envelope.event_id.clone();
    let invalid = match &envelope.meaning {
        Meaning::Invalid(error) => Some(error.clone()),
        _ => None,
    };
    let delivery = Delivery {
        envelope,
        payload: payload.to_owned(),
        attempt: header(headers, "webhook-attempt")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok()),
        received_at: OffsetDateTime::now_utc(),
        source: Source::Webhook,
    };
    let recorded = state.store.record(delivery).await?;
    match recorded {
        Recorded::New(outcome) => tracing::info!(outcome = outcome.as_str(), "event recorded"),
        Recorded::Duplicate(original) => tracing::info!(
            outcome = DeliveryOutcome::Duplicate.as_str(),
            original_outcome = original.as_str(),
            "event recorded"
        ),
    }

    let (outcome, original_outcome) = match recorded {
        Recorded::New(Outcome::Rejected) => {
            let error = invalid.expect("only an invalid event is rejected");
            return Err(AppError::InvalidEvent(error));
        }
        Recorded::New(outcome) => (delivered(outcome), None),
        Recorded::Duplicate(original) => (DeliveryOutcome::Duplicate, Some(original)),
    };
    Ok((
        outcome,
        Receipt {
            event_id,
            status: outcome.as_str(),
            original_outcome,
        },
    ))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(|v| v.as_bytes())
}
