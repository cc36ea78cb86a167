//! The change feed (`GET /v1/changes`): every change of a job's state in
//! commit order, resumable from a cursor, for a clinic's app that pulls at
//! its own pace. Positions and why they never skip a change: `store::feed`.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::bad;
use super::guard::ApiRoutes;
use crate::auth::{Caller, Permission};
use crate::domain::ChangeKind;
use crate::error::{AppError, ErrorBody, Result};
use crate::state::AppState;
use crate::store::JobState;
use crate::store::feed::ChangePage;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;
/// Longest text a cursor may be (an `i64` in decimal).
const MAX_CURSOR_LEN: usize = 19;
/// A waiting reader looks again at least this often, so it lets go when
/// the server stops.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

pub fn routes() -> ApiRoutes<AppState> {
    ApiRoutes::new().get("/v1/changes", Permission::Read, list_changes)
}

#[derive(Deserialize)]
pub struct ChangeParams {
    after: Option<String>,
    limit: Option<String>,
    wait: Option<String>,
}

/// One change of a job's state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ChangeItem {
    /// This change's place in the feed: pass it as `after` to read what
    /// follows it.
    cursor: String,
    /// What the change made of the job.
    kind: ChangeKind,
    /// When the service learned of it.
    #[schema(format = DateTime)]
    at: String,
    /// The job's state when this page was read (as `GET /v1/jobs/{job_id}`
    /// shows it): a later change may have moved it on.
    job: JobState,
}

/// A page of the feed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Changes {
    changes: Vec<ChangeItem>,
    /// Pass it as `after` for the changes that follow (the same cursor
    /// again when none came).
    next_cursor: String,
}

/// `GET /v1/changes?after=&limit=&wait=`: the changes after a cursor.
#[utoipa::path(
    get,
    path = "/v1/changes",
    tag = "status",
    params(
        ("after" = Option<String>, Query, description = "`next_cursor` (or a change's `cursor`) of an earlier page; without it, from the oldest change kept", pattern = "^[0-9]{1,19}$"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("wait" = Option<u64>, Query, description = "Seconds (0 to 120) to wait for a change when there is none yet", minimum = 0, maximum = 120),
    ),
    responses(
        (status = 200, description = "The changes after `after`, in commit order", body = Changes),
        (status = 400, description = "A malformed parameter, or a cursor this feed never gave", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` permission", body = ErrorBody),
        (status = 410, description = "`cursor_expired`: changes after this cursor were purged (change_retention_days); start again without `after`", body = ErrorBody),
        (status = 500, description = "A stored MRN does not open with the configured keys (`sealed_value_unreadable`); the service's log names the key id", body = ErrorBody),
        (status = 503, description = "The database did not answer in time, or (`too_many_waiters`, with `wait`) too many clients are waiting", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_changes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: std::result::Result<Query<ChangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Changes>> {
    let Query(params) = params.map_err(|_| bad("the query string is malformed"))?;
    let limit = super::page_limit(params.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let after = params.after.as_deref().map(parse_cursor).transpose()?;
    let wait = super::wait_secs(params.wait.as_deref())?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    // A waiting client holds a connection: only so many may.
    let _place = match wait {
        0 => None,
        _ => Some(state.waiters.try_take().ok_or(AppError::TooManyWaiters)?),
    };
    // Watching starts before the first read, so a change positioned
    // between a read and the wait still wakes this request.
    let mut moved = state.store.feed().watch();
    let mut checked = false;
    loop {
        let page = state.store.changes(after.unwrap_or(0), limit).await?;
        if !checked {
            check_cursor(after, &page)?;
            checked = true;
        }
        let now = tokio::time::Instant::now();
        if !page.changes.is_empty() || now >= deadline || state.store.wakeups().is_closed() {
            return answer(&state, &caller, &headers, after, page).await;
        }
        tokio::select! {
            _ = moved.changed() => {}
            () = tokio::time::sleep_until(deadline.min(now + RECHECK)) => {}
        }
    }
}

fn parse_cursor(text: &str) -> Result<i64> {
    Some(text)
        .filter(|text| {
            (1..=MAX_CURSOR_LEN).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| bad("after must be a cursor this feed gave (`next_cursor` as given)"))
}

/// A cursor is good from the last purged position to the last one given.
fn check_cursor(after: Option<i64>, page: &ChangePage) -> Result<()> {
    let Some(after) = after else {
        return Ok(());
    };
    if after > page.last_position {
        return Err(bad(
            "after is ahead of this feed: it was not given by this service's database",
        ));
    }
    if after < page.purged_through {
        return Err(AppError::CursorExpired(format!(
            "changes after this cursor were purged (kept for change_retention_days); \
             read again without `after`, from the oldest change kept ({})",
            page.purged_through + 1
        )));
    }
    Ok(())
}

async fn answer(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    after: Option<i64>,
    page: ChangePage,
) -> Result<Json<Changes>> {
    let next = page
        .changes
        .last()
        .map(|change| change.position)
        .or(after)
        .unwrap_or(page.purged_through);
    let (mut jobs, rest): (Vec<JobState>, Vec<_>) = page
        .changes
        .into_iter()
        .map(|change| (change.job, (change.position, change.kind, change.at_ns)))
        .unzip();
    super::status::disclose(state, caller, headers, &mut jobs).await?;
    let changes = jobs
        .into_iter()
        .zip(rest)
        .map(|(job, (position, kind, at_ns))| ChangeItem {
            cursor: position.to_string(),
            kind,
            at: crate::clock::rfc3339(crate::clock::from_unix_ns(at_ns)),
            job,
        })
        .collect();
    Ok(Json(Changes {
        changes,
        next_cursor: next.to_string(),
    }))
}
