//! `GET /v1/audit`: the audit trail, for tokens with the operate permission.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bad;
use super::guard::ApiRoutes;
use crate::auth::Permission;
use crate::error::{ErrorBody, Result};
use crate::state::AppState;
use crate::store::{AuditQuery, AuditRow};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub fn routes() -> ApiRoutes<AppState> {
    ApiRoutes::new().get("/v1/audit", Permission::Operate, list_audit)
}

/// Query parameters, read as text so each gets a clear error.
#[derive(Deserialize)]
pub struct AuditParams {
    before: Option<String>,
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    items: Vec<AuditRow>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<i64>,
}

/// `GET /v1/audit`: who read which job or note, searched, exported,
/// revealed an MRN or ran recovery; newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(
        ("before" = Option<i64>, Query, description = "Rows recorded before this id (`next_before` of the previous page)"),
        ("since" = Option<String>, Query, format = DateTime, description = "RFC 3339: rows recorded at or after this"),
        ("until" = Option<String>, Query, format = DateTime, description = "RFC 3339: rows recorded before this"),
        ("actor" = Option<String>, Query, description = "Only this token's rows (its name)"),
        ("action" = Option<String>, Query, description = "Only this action, such as `api.job.read` or `console.export`"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "One page of the audit trail", body = AuditPage),
        (status = 400, description = "A parameter out of its range", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the `operate` permission", body = ErrorBody),
        (status = 503, description = "The database did not answer in time", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_audit(
    State(state): State<AppState>,
    params: std::result::Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>> {
    let Query(params) = params.map_err(|_| bad("the query string is malformed"))?;
    let limit = super::page_limit(params.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let before_id = params
        .before
        .as_deref()
        .map(|text| {
            text.parse::<i64>()
                .map_err(|_| bad("before must be a row id (`next_before` of a page)"))
        })
        .transpose()?;
    let instant = |text: Option<&str>, name: &str| {
        text.map(|text| {
            OffsetDateTime::parse(text, &Rfc3339)
                .map(crate::clock::unix_ns)
                .map_err(|_| {
                    bad(&format!(
                        "{name} must be an RFC 3339 timestamp (write a `+` offset as %2B)"
                    ))
                })
        })
        .transpose()
    };
    let query = AuditQuery {
        before_id,
        since_ns: instant(params.since.as_deref(), "since")?,
        until_ns: instant(params.until.as_deref(), "until")?,
        actor: params.actor,
        action: params.action,
        limit: limit + 1,
    };
    let mut items = state.store.audit_page(query).await?;
    let next_before = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|row| row.id)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_before }))
}
