//! The status API, behind bearer tokens: is a note in the EMR yet, which
//! jobs failed and why, and what Cobalt sent for a job.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bad;
use super::guard::ApiRoutes;
use crate::auth::{Caller, Permission};
use crate::error::{AppError, ErrorBody, Result};
use crate::listing::{self, ListingError};
use crate::monitoring;
use crate::pagination::Filters;
pub use crate::pagination::StatusFilter;
use crate::state::AppState;
use crate::store::{EventSummary, JobState};

/// Longest a client may wait for an outcome (`?wait=`), in seconds.
pub const MAX_WAIT_SECS: u64 = 120;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn routes() -> ApiRoutes<AppState> {
    // Registration (PUT) and submission (POST) share these paths; see
    // `submissions`.
    ApiRoutes::new()
        .get("/v1/jobs/{job_id}", Permission::Read, get_job)
        .get(
            "/v1/jobs/{job_id}/events",
            Permission::Read,
            list_job_events,
        )
        .get("/v1/patient-notes", Permission::Read, list_patient_notes)
        .get(
            "/v1/patient-notes/{patient_note_id}",
            Permission::Read,
            get_patient_note,
        )
        .get("/metrics", Permission::Read, metrics)
}

/// `GET /metrics`: Prometheus text format, behind the same tokens.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operation",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` permission", body = ErrorBody),
        (status = 503, description = "The request took too long, or the server is waiting for its database", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    monitoring::ready(
        super::health::is_ready(&state).await,
        state.clinic.is_open_now(),
    );
    match state.store.jobs_by_status().await {
        Ok(by_status) => monitoring::jobs(&by_status),
        Err(error) => tracing::warn!(error = %error, "counting jobs for /metrics failed"),
    }
    match state.store.pending_summary().await {
        Ok(summary) => monitoring::pending(
            summary.pending,
            summary.overdue,
            summary.oldest_age().as_secs_f64(),
        ),
        Err(error) => tracing::warn!(error = %error, "counting pending jobs for /metrics failed"),
    }
    for endpoint in state.outbound.iter() {
        match state.store.outbound_summary(&endpoint.name).await {
            Ok(summary) => monitoring::outbound_queue(&endpoint.name, &summary),
            Err(error) => {
                tracing::warn!(error = %error, "reading the outgoing webhooks' queue for /metrics failed")
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        monitoring::render(&state.metrics),
    )
}

#[derive(Deserialize)]
pub struct WaitParams {
    wait: Option<String>,
}

/// `GET /v1/jobs/{job_id}?wait=`: the job's state; with `wait`, once it has
/// an outcome or when the time is up, whichever comes first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    tag = "status",
    params(
        ("job_id" = String, Path, description = "Cobalt's job id (decimal string)"),
        ("wait" = Option<u64>, Query, description = "Seconds (0 to 120) to wait for an outcome before answering with the current state", minimum = 0, maximum = 120),
    ),
    responses(
        (status = 200, description = "The job's state: its outcome, or `pending` (with `overdue`)", body = JobState),
        (status = 400, description = "A malformed path or wait", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` permission", body = ErrorBody),
        (status = 404, description = "Neither registered nor any outcome received", body = ErrorBody),
        (status = 409, description = "Two patient notes claim this job id", body = ErrorBody),
        (status = 500, description = "A stored MRN does not open with the configured keys (`sealed_value_unreadable`); the service's log names the key id", body = ErrorBody),
        (status = 503, description = "The database did not answer in time, or (`too_many_waiters`, with `wait`) too many clients are waiting", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    params: std::result::Result<Query<WaitParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobState>> {
    let Query(params) = params.map_err(|_| bad("the query string is malformed"))?;
    let wait = super::wait_secs(params.wait.as_deref())?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    let wakeups = state.store.wakeups();
    // Watching starts before the first read, so an outcome committed
    // between a read and the wait still wakes this request.
    // A waiting client holds a connection: only so many may.
    let _place = match wait {
        0 => None,
        _ => Some(state.waiters.try_take().ok_or(AppError::TooManyWaiters)?),
    };
    let watch = (wait > 0).then(|| wakeups.watch(&job_id));
    loop {
        let next = watch.as_ref().map(|watch| watch.next());
        let jobs = state.store.jobs_by_job_id(&job_id).await?;
        let decided = jobs.iter().any(|job| job.status != JobState::PENDING);
        let Some(next) = next else {
            return one_job(&state, &caller, &headers, jobs).await;
        };
        if decided || wakeups.is_closed() || tokio::time::Instant::now() >= deadline {
            return one_job(&state, &caller, &headers, jobs).await;
        }
        tokio::select! {
            () = next => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn one_job(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    mut jobs: Vec<JobState>,
) -> Result<Json<JobState>> {
    match jobs.len() {
        0 => Err(AppError::NotFound(
            "this job is neither registered nor has an outcome been received for it",
        )),
        1 => {
            disclose(state, caller, headers, &mut jobs).await?;
            Ok(Json(jobs.remove(0)))
        }
        // Cobalt gives each job one note; if two notes ever claim one job id,
        // say so rather than pick one.
        _ => Err(AppError::Conflict(format!(
            "this job id belongs to {} patient notes ({}); ask for each note instead",
            jobs.len(),
            jobs.iter()
                .map(|j| j.patient_note_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// MRNs as `caller` may see them ([`crate::phi`]).
pub(super) async fn disclose(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    jobs: &mut [JobState],
) -> Result<()> {
    let request_id = headers
        .get(&crate::request_id::HEADER)
        .and_then(|v| v.to_str().ok());
    Ok(crate::phi::disclose(&state.audit, caller, request_id, jobs).await?)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobEvents {
    job_id: String,
    events: Vec<EventSummary>,
}

/// `GET /v1/jobs/{job_id}/events`: the job's events, oldest first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}/events",
    tag = "status",
    params(("job_id" = String, Path, description = "Cobalt's job id (decimal string)")),
    responses(
        (status = 200, description = "Every event recorded with this job id, without payloads (none yet for a registered job still pending)", body = JobEvents),
        (status = 400, description = "A malformed path", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` permission", body = ErrorBody),
        (status = 404, description = "Neither an event received nor a registration for this job", body = ErrorBody),
        (status = 500, description = "A stored MRN does not open with the configured keys (`sealed_value_unreadable`); the service's log names the key id", body = ErrorBody),
        (status = 503, description = "The database did not answer in time", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_job_events(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobEvents>> {
    let events = state.store.job_events(&job_id).await?;
    // A registered job still pending is known: its story so far is empty.
    if events.is_empty() && state.store.jobs_by_job_id(&job_id).await?.is_empty() {
        return Err(AppError::NotFound(
            "no event has been received for this job, and it is not registered",
        ));
    }
    Ok(Json(JobEvents { job_id, events }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PatientNote {
    patient_note_id: String,
    jobs: Vec<JobState>,
}

/// `GET /v1/patient-notes/{patient_note_id}`: the note and all its jobs.
#[utoipa::path(
    get,
    path = "/v1/patient-notes/{patient_note_id}",
    tag = "status",
    params(("patient_note_id" = String, Path, description = "Cobalt's patient note id")),
    responses(
        (status = 200, description = "The note's jobs, newest decision first", body = PatientNote),
        (status = 400, description = "A malformed path", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` permission", body = ErrorBody),
        (status = 404, description = "No outcome received for this note", body = ErrorBody),
        (status = 500, description = "A stored MRN does not open with the configured keys (`sealed_value_unreadable`); the service's log names the key id", body = ErrorBody),
        (status = 503, description = "The database did not answer in time", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_patient_note(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(patient_note_id): Path<String>,
) -> Result<Json<PatientNote>> {
    let mut jobs = state.store.jobs_by_note(&patient_note_id).await?;
    if jobs.is_empty() {
        return Err(AppError::NotFound(
            "no outcome has been received for this patient note",
        ));
    }
    disclose(&state, &caller, &headers, &mut jobs).await?;
    Ok(Json(PatientNote {
        patient_note_id,
        jobs,
    }))
}

/// Query parameters of the listing, read as text so each gets a clear error.
#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
    overdue: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    since: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Page {
    items: Vec<JobState>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/patient-notes?status=&since=&limit=&cursor=`: job states, newest
/// decision first, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/patient-notes",
    tag = "status",
    params(
        ("status" = Option<StatusFilter>, Query, description = "Only jobs in this state (without it: jobs with an outcome)"),
        ("overdue" = Option<bool>, Query, description = "`true`: only pending jobs past `overdue_after_secs` (implies status=pending)"),
        ("since" = Option<String>, Query, format = DateTime, description = "RFC 3339: only jobs decided by an event created at or after this"),
        ("limit" = Option<u32>, Query, description = "1 to 500 (default 50)", minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, as given, with the same `status` and `since` (any other value is refused with 400)"),
    ),
    responses(
        (status = 200, description = "One page of job states", body = Page),
        (status = 400, description = "A parameter out of its range, or a cursor not issued here", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` permission", body = ErrorBody),
        (status = 500, description = "A stored MRN does not open with the configured keys (`sealed_value_unreadable`); the service's log names the key id", body = ErrorBody),
        (status = 503, description = "The database did not answer in time", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_patient_notes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: std::result::Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>> {
    let Query(params) = params.map_err(|_| bad("the query string is malformed"))?;
    let limit = super::page_limit(params.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let overdue = match params.overdue.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("overdue must be `true` or `false`")),
    };
    let mut status = params
        .status
        .as_deref()
        .map(|text| {
            StatusFilter::parse(text)
                .ok_or_else(|| bad("status must be `created`, `failed` or `pending`"))
        })
        .transpose()?;
    if overdue {
        match status {
            None | Some(StatusFilter::Pending) => status = Some(StatusFilter::Pending),
            Some(_) => {
                return Err(bad(
                    "overdue=true lists pending jobs; drop status or use status=pending",
                ));
            }
        }
    }
    let filters = Filters {
        status,
        overdue,
        since_ns: params
            .since
            .as_deref()
            .map(|s| {
                // A bound before 1678 or after 2261 (beyond i64 nanoseconds)
                // is as good as the first or the last instant there is.
                OffsetDateTime::parse(s, &Rfc3339)
                    .map(crate::clock::unix_ns)
                    .map_err(|_| {
                        bad("since must be an RFC 3339 timestamp (write a `+` offset as %2B)")
                    })
            })
            .transpose()?,
        narrow: Default::default(),
    };
    let listing::Page {
        jobs: mut items,
        next_cursor,
    } = listing::page(
        &state.store,
        &state.cursors,
        &filters,
        params.cursor.as_deref(),
        limit,
    )
    .await
    .map_err(|error| match error {
        ListingError::Cursor => bad(
            "cursor was not issued by this service for this listing: pass `next_cursor` as given, with the same status and since",
        ),
        ListingError::Store(error) => error.into(),
    })?;
    disclose(&state, &caller, &headers, &mut items).await?;
    Ok(Json(Page { items, next_cursor }))
}
