//! Jobs the service expects an outcome for: registered by a client that
//! submitted the note to Cobalt itself (`PUT /v1/jobs/{job_id}`), or
//! submitted through this service (`POST /v1/patient-notes`); and recovery
//! of lost outcomes on demand (`POST /v1/recoveries`).
//!
//! A submitted note's text, subject and MRN are forwarded to Cobalt and
//! never stored or logged here: the idempotency record keeps an HMAC of the
//! request, not the request.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bad;
use super::guard::ApiRoutes;
use crate::auth::{Caller, Permission};
use std::sync::Arc;

use tracing::Instrument;

use crate::cobalt::{Account, Client, SubmitError};
use crate::error::{AppError, ErrorBody, Result};
use crate::reconcile::{Report, Scope};
use crate::state::AppState;
use crate::store::{Claim, JobState, KeyClaim, Registered, Registration, SubmissionEnd};

/// Idempotency keys are kept this long (as Stripe's are).
const IDEMPOTENCY_KEY_HOURS: i64 = 24;
/// Longest job id, patient note id or idempotency key accepted.
const MAX_ID_LEN: usize = 255;
/// How far in the future a `submitted_at` may lie (clock skew).
const FUTURE_SKEW: time::Duration = time::Duration::minutes(5);

pub fn routes() -> ApiRoutes<AppState> {
    ApiRoutes::new()
        .put("/v1/jobs/{job_id}", Permission::Submit, register)
        .post("/v1/patient-notes", Permission::Submit, submit)
        .post("/v1/recoveries", Permission::Operate, recover)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterJob {
    patient_note_id: String,
    /// RFC 3339; now when absent.
    #[schema(format = DateTime)]
    submitted_at: Option<String>,
    /// The account the note was submitted with, when several are linked.
    access_token_reference_id: Option<String>,
}

/// `PUT /v1/jobs/{job_id}`: registers a job the client submitted to Cobalt,
/// so its outcome is expected (pending, then overdue if it does not come).
#[utoipa::path(
    put,
    path = "/v1/jobs/{job_id}",
    tag = "jobs",
    params(("job_id" = String, Path, description = "Cobalt's job id (decimal string)")),
    request_body = RegisterJob,
    responses(
        (status = 201, description = "Registered now; the job's state", body = JobState),
        (status = 200, description = "Known already with this note; nothing changed", body = JobState),
        (status = 400, description = "A malformed body or id", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `submit` permission", body = ErrorBody),
        (status = 404, description = "The job could not be read back once recorded (deleted meanwhile)", body = ErrorBody),
        (status = 409, description = "The job id is known with another patient note", body = ErrorBody),
        (status = 500, description = "A stored MRN does not open with the configured keys (`sealed_value_unreadable`); the service's log names the key id", body = ErrorBody),
        (status = 503, description = "The database did not answer in time", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    body: std::result::Result<Json<RegisterJob>, axum::extract::rejection::JsonRejection>,
) -> Result<Response> {
    let Json(body) = body.map_err(|rejection| {
        bad(&format!(
            "the body must be JSON with a string patient_note_id and, optionally, submitted_at and access_token_reference_id ({})",
            rejection.status().canonical_reason().unwrap_or("unreadable")
        ))
    })?;
    check_id("job_id", &job_id)?;
    check_id("patient_note_id", &body.patient_note_id)?;
    let now = OffsetDateTime::now_utc();
    let submitted_at = match body.submitted_at.as_deref() {
        None => now,
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .filter(crate::clock::fits)
            .ok_or_else(|| bad("submitted_at must be an RFC 3339 timestamp"))?,
    };
    if submitted_at > now + FUTURE_SKEW {
        return Err(bad("submitted_at is in the future"));
    }
    let registration = Registration {
        job_id: job_id.clone(),
        patient_note_id: body.patient_note_id,
        submitted_at,
        access_token_reference_id: body.access_token_reference_id,
        registered_by: caller.name.to_string(),
    };
    let status = match state.store.register(registration).await? {
        Registered::New => StatusCode::CREATED,
        Registered::Known => StatusCode::OK,
        Registered::Conflict => {
            return Err(AppError::Conflict(
                "this job id is known with another patient note".into(),
            ));
        }
    };
    tracing::info!(status = status.as_u16(), "job registered");
    Ok((status, Json(job_state(&state, &job_id).await?)).into_response())
}

#[derive(Deserialize)]
pub struct SubmitParams {
    access_token_reference_id: Option<String>,
}

/// Cobalt's own request body, forwarded as given (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct NoteRequest {
    note: String,
    subject: String,
    patient_mrn: String,
    location_id: String,
}

/// `POST /v1/patient-notes`: submits a note to Cobalt and expects its
/// outcome. With `Idempotency-Key`, a retry gets the first answer.
#[utoipa::path(
    post,
    path = "/v1/patient-notes",
    tag = "jobs",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 characters; a retry with the same key and body gets the first answer (kept 24 hours)"),
        ("access_token_reference_id" = Option<String>, Query, description = "The linked account to submit with, when several are configured"),
    ),
    request_body = NoteRequest,
    responses(
        (status = 202, description = "Cobalt accepted the note; the job is pending. A retry with the same Idempotency-Key and body gets the first request's job, with `idempotent-replayed: true`", body = JobState,
            headers(("idempotent-replayed" = String, description = "`true` when this is the answer of an earlier request with the same Idempotency-Key; absent otherwise"))),
        (status = 400, description = "A malformed body, or Cobalt's 400 with its message", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `submit` permission", body = ErrorBody),
        (status = 404, description = "Cobalt's 404 with its message (`cobalt_rejected`), or the job could not be read back once recorded", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is in flight, or its fate at Cobalt is unknown; or Cobalt's 409 (`cobalt_rejected`)", body = ErrorBody),
        (status = 413, description = "Body over the 2 MiB limit", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with another body; or Cobalt's 422 (`cobalt_rejected`)", body = ErrorBody),
        (status = 429, description = "Cobalt's 429 (`cobalt_rejected`): too many requests to Cobalt; retry later", body = ErrorBody),
        (status = "4XX", description = "Any other 4xx of Cobalt's, relayed with its message (`cobalt_rejected`); no note was created", body = ErrorBody),
        (status = 502, description = "Cobalt failed or could not be reached; the detail says whether the note may exist", body = ErrorBody),
        (status = 500, description = "A stored MRN does not open with the configured keys (`sealed_value_unreadable`); the service's log names the key id", body = ErrorBody),
        (status = 503, description = "Submission is not configured, or the database is unavailable", body = ErrorBody),
        (status = 504, description = "Cobalt did not answer in time; the note may exist", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<SubmitParams>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let Some(cobalt) = state.cobalt.clone() else {
        return Err(cobalt_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "submission to Cobalt is not configured (cobalt_client_id, cobalt_client_secret, cobalt_access_token)",
        ));
    };
    // serde_json's errors name a position, never content.
    let note: Value = serde_json::from_slice(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            bad("the body must be a JSON object: note, subject, patient_mrn, location_id")
        })?;
    let account = cobalt
        .credentials()
        .account(params.access_token_reference_id.as_deref())
        .ok_or_else(|| bad("access_token_reference_id names no configured account"))?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_ID_LEN)
                .ok_or_else(|| bad("Idempotency-Key must be 1 to 255 visible ASCII characters"))?
                .to_owned(),
        ),
    };

    if let Some(key) = &key {
        let now = OffsetDateTime::now_utc();
        let expired = now - time::Duration::hours(IDEMPOTENCY_KEY_HOURS);
        // A claim still in flight long after Cobalt's timeout belongs to a
        // process that stopped before it could settle it.
        let stale = now - cobalt.timeout() * 2;
        let claim = KeyClaim {
            key: key.clone(),
            mac: request_mac(&state, account.reference_id.as_deref(), &body),
            now_ns: crate::clock::unix_ns(now),
            expired_before_ns: crate::clock::unix_ns(expired),
            stale_before_ns: crate::clock::unix_ns(stale),
        };
        match state.store.begin_submission(claim).await? {
            Claim::Claimed => {}
            Claim::Done { job_id } => {
                tracing::info!(
                    idempotent_replay = true,
                    "note submission answered from its first request"
                );
                let mut response = (
                    StatusCode::ACCEPTED,
                    Json(job_state(&state, &job_id).await?),
                )
                    .into_response();
                response.headers_mut().insert(
                    "idempotent-replayed",
                    "true".parse().expect("a valid header"),
                );
                return Ok(response);
            }
            Claim::InFlight => {
                return Err(AppError::Conflict(
                    "a request with this Idempotency-Key is still waiting for Cobalt; retry shortly".into(),
                ));
            }
            Claim::Unknown => {
                return Err(AppError::Conflict(
                    "a request with this Idempotency-Key got no clear answer from Cobalt and may have created the note; its outcome will show up in GET /v1/patient-notes once Cobalt reports it. Do not resubmit with a new key unless you accept a possible second note".into(),
                ));
            }
            Claim::Mismatch => {
                return Err(AppError::Unprocessable(
                    "this Idempotency-Key was used with a different request".into(),
                ));
            }
        }
    }

    // The call and its settling run on a task of their own: a client that
    // hangs up must not leave its key in flight, nor a created note
    // unrecorded.
    let submission = Submission {
        state,
        cobalt: cobalt.clone(),
        account: account.clone(),
        note,
        key,
        caller: caller.name.to_string(),
    };
    tokio::spawn(submission.forward().instrument(tracing::Span::current()))
        .await
        .map_err(|_| AppError::Store(crate::store::StoreError::Stopped))?
}

/// A claimed submission on its way to Cobalt.
struct Submission {
    state: AppState,
    cobalt: Arc<Client>,
    account: Account,
    note: Value,
    key: Option<String>,
    caller: String,
}

impl Submission {
    async fn forward(self) -> Result<Response> {
        let Self {
            state,
            cobalt,
            account,
            note,
            key,
            caller,
        } = self;
        let account = &account;
        let submitted_at = OffsetDateTime::now_utc();
        let result = cobalt.submit(account, &note).await;
        let key = key.as_deref();
        match result {
            Ok(submitted) => {
                let registration = Registration {
                    job_id: submitted.job_id.clone(),
                    patient_note_id: submitted.patient_note_id.clone(),
                    submitted_at,
                    access_token_reference_id: account.reference_id.clone(),
                    registered_by: caller,
                };
                if let Err(error) = state
                    .store
                    .end_submission(key, SubmissionEnd::Done(registration))
                    .await
                {
                    tracing::error!(error = %error, "a submitted note could not be recorded");
                    return Err(cobalt_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "created_not_recorded",
                        &format!(
                            "Cobalt created the note (job_id {}, patient_note_id {}) but the database could not record it; register it with PUT /v1/jobs/{}; do not resubmit",
                            submitted.job_id, submitted.patient_note_id, submitted.job_id
                        ),
                    ));
                }
                tracing::info!(outcome = "accepted", "note submitted to Cobalt");
                Ok((
                    StatusCode::ACCEPTED,
                    Json(job_state(&state, &submitted.job_id).await?),
                )
                    .into_response())
            }
            Err(error) => {
                let (end, status, code, detail) = match &error {
                SubmitError::Rejected { status, message } => (
                    SubmissionEnd::Forget,
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                    "cobalt_rejected",
                    format!("Cobalt refused the note: {message}"),
                ),
                SubmitError::Unauthorized => (
                    SubmissionEnd::Forget,
                    StatusCode::BAD_GATEWAY,
                    "cobalt_unauthorized",
                    "Cobalt refused this service's credentials; the note was not created".into(),
                ),
                SubmitError::Unreachable => (
                    SubmissionEnd::Forget,
                    StatusCode::BAD_GATEWAY,
                    "cobalt_unreachable",
                    "Cobalt could not be reached; the note was not created; retry later".into(),
                ),
                SubmitError::TimedOut => (
                    SubmissionEnd::Unknown,
                    StatusCode::GATEWAY_TIMEOUT,
                    "cobalt_timeout",
                    "Cobalt did not answer in time; the note MAY have been created; do not resubmit without checking".into(),
                ),
                SubmitError::Failed { status } => (
                    SubmissionEnd::Unknown,
                    StatusCode::BAD_GATEWAY,
                    "cobalt_failed",
                    format!(
                        "Cobalt's answer ({}) was not a job; the note MAY have been created; do not resubmit without checking",
                        status.map_or_else(|| "unreadable".to_owned(), |s| format!("HTTP {s}"))
                    ),
                ),
            };
                tracing::warn!(code, status = status.as_u16(), "note submission failed");
                if let Err(store_error) = state.store.end_submission(key, end).await {
                    tracing::error!(error = %store_error, "settling an idempotency key failed");
                }
                Err(cobalt_error(status, code, &detail))
            }
        }
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryRequest {
    /// Ask about these jobs instead of the overdue ones.
    job_ids: Option<Vec<String>>,
    /// `YYYY-MM-DD`: the first day of the failed-deliveries window.
    #[schema(format = Date)]
    since: Option<String>,
}

/// `POST /v1/recoveries`: runs a recovery sweep now and answers with what
/// it found.
#[utoipa::path(
    post,
    path = "/v1/recoveries",
    tag = "jobs",
    request_body = Option<RecoveryRequest>,
    responses(
        (status = 200, description = "What the sweep found", body = Report),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `operate` permission", body = ErrorBody),
        (status = 413, description = "Body over the 2 MiB limit", body = ErrorBody),
        (status = 503, description = "Recovery is not configured, or the sweep outlived the request's time limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn recover(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Report>> {
    let Some(reconciler) = state.reconciler.clone() else {
        return Err(cobalt_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "recovery from Cobalt is not configured (cobalt_client_id, cobalt_client_secret, cobalt_access_token)",
        ));
    };
    let request: RecoveryRequest = if body.is_empty() {
        RecoveryRequest::default()
    } else {
        // `null`, as the document allows, is no body.
        serde_json::from_slice::<Option<RecoveryRequest>>(&body)
            .map(Option::unwrap_or_default)
            .map_err(|_| bad("the body must be JSON: {\"job_ids\": [...], \"since\": \"YYYY-MM-DD\"}, both optional"))?
    };
    let since = request
        .since
        .as_deref()
        .map(|text| parse_day(text).ok_or_else(|| bad("since must be a date, YYYY-MM-DD")))
        .transpose()?;
    let scope = Scope {
        job_ids: request.job_ids,
        since,
    };
    // On a task of its own: a sweep outliving the request's time limit
    // still finishes.
    let report = tokio::spawn(
        async move { reconciler.sweep(&scope).await }.instrument(tracing::Span::current()),
    )
    .await
    .map_err(|_| AppError::Store(crate::store::StoreError::Stopped))?;
    tracing::info!(
        recovered = report.recovered,
        errors = report.errors.len(),
        "recovery run on request"
    );
    Ok(Json(report))
}

/// A `YYYY-MM-DD` day.
pub fn parse_day(text: &str) -> Option<time::Date> {
    time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
}

/// The job's state after a registration or submission, its MRN masked
/// whoever asks (a caller with `phi` reads it whole with `GET`, where the
/// reading is audited).
async fn job_state(state: &AppState, job_id: &str) -> Result<JobState> {
    let mut jobs = state.store.jobs_by_job_id(job_id).await?;
    let mut job = if jobs.is_empty() {
        return Err(AppError::NotFound("the job vanished"));
    } else {
        jobs.remove(0)
    };
    if let Some(mrn) = &mut job.patient_mrn {
        *mrn = crate::phi::masked(mrn);
    }
    Ok(job)
}

/// The HMAC of a submission request under the database's key: equal for
/// equal requests, and no use to anyone who reads the database.
fn request_mac(state: &AppState, account: Option<&str>, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&state.store.cursor_key()).expect("HMAC takes any key");
    mac.update(b"submission v1\0");
    mac.update(account.unwrap_or("").as_bytes());
    mac.update(&[0]);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn check_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(bad(&format!(
            "{field} must be 1 to 255 characters, without control characters"
        )));
    }
    Ok(())
}

fn cobalt_error(status: StatusCode, code: &'static str, detail: &str) -> AppError {
    AppError::Cobalt {
        status,
        code,
        detail: detail.to_owned(),
    }
}
