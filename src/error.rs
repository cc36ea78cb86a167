//! Every error answer: one JSON shape, `{"code": "...", "detail": "..."}`,
//! with the status code chosen in one place.
//!
//! Details name fields and rules, never values: a value may be patient data.
//! The cause of a 5xx is logged here and not sent back.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::{BodyError, FieldError};
use crate::signature::SignatureError;
use crate::store::StoreError;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("the event was kept as rejected: {0}")]
    InvalidEvent(FieldError),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unprocessable(String),
    /// An answer about a call to Cobalt's API: its 4xx relayed, or why it
    /// failed (502, 504) and whether the note may exist.
    #[error("{detail}")]
    Cobalt {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A change feed cursor from before the oldest change kept.
    #[error("{0}")]
    CursorExpired(String),
    /// Too many clients wait for outcomes; retry in a second.
    #[error("too many clients are waiting for an outcome; retry without wait, or in a second")]
    TooManyWaiters,
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: &'static str,
    pub detail: String,
    /// The field at fault, for a rejected event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Signature(_) | Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Body(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidEvent(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::CursorExpired(_) => StatusCode::GONE,
            Self::Cobalt { status, .. } => *status,
            // Retrying will not open a value sealed under a missing key or
            // changed at rest.
            Self::Store(StoreError::Sealed(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            // Cobalt retries a 503 once; a storage fault may clear by then.
            Self::Store(_) | Self::TooManyWaiters => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Signature(_) => "invalid_signature",
            Self::Unauthorized(_) => "unauthorized",
            Self::Body(_) => "invalid_body",
            Self::TooLarge(_) => "body_too_large",
            Self::BadRequest(_) => "bad_request",
            Self::InvalidEvent(_) => "invalid_event",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Forbidden(_) => "forbidden",
            Self::Unprocessable(_) => "unprocessable",
            Self::CursorExpired(_) => "cursor_expired",
            Self::Cobalt { code, .. } => code,
            Self::Store(StoreError::Overloaded) => "overloaded",
            Self::Store(StoreError::Sealed(_)) => "sealed_value_unreadable",
            Self::Store(_) => "storage_unavailable",
            Self::TooManyWaiters => "too_many_waiters",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            Self::Store(StoreError::Overloaded) => {
                tracing::warn!("write queue full; shedding a delivery with 503");
                "too many deliveries are waiting; retry later".to_owned()
            }
            Self::Store(StoreError::Sealed(error)) => {
                tracing::error!(key_id = error.key_id(), error = %error, "a sealed value does not open; answering 500");
                "a stored value could not be opened; the service's log names the key".to_owned()
            }
            Self::Store(error) => {
                tracing::error!(error = %error, "storage failed; answering 503");
                "the database is unavailable; retry later".to_owned()
            }
            other => {
                tracing::debug!(error = %other, status = status.as_u16(), "request refused");
                other.to_string()
            }
        };
        let field = match &self {
            Self::InvalidEvent(error) => Some(error.field),
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                code: self.code(),
                detail,
                field,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED if matches!(self, Self::Unauthorized(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                // A refused waiter's connection is closed too: its place
                // is for deliveries, not for an idle client.
                if matches!(self, Self::TooManyWaiters) {
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            _ => {}
        }
        response
    }
}
