//! Audit: who looked at what, searched, exported, revealed an MRN or ran
//! recovery (the console's rows and the status API's reads), newest first.
//! Needs the operate permission.

use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::display::cell;
use super::html::{self, Nav, at, document, query};
use super::{ConsoleState, RequestId, Session};
use crate::auth::Permission;
use crate::store::AuditQuery;

const PAGE: u32 = 100;

#[derive(Deserialize)]
pub struct TrailParams {
    actor: Option<String>,
    action: Option<String>,
    before: Option<String>,
}

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    params: Result<Query<TrailParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !session.caller.may(Permission::Operate) {
        return html::error_page(
            StatusCode::FORBIDDEN,
            "The audit trail needs a token with the operate permission.",
        );
    }
    let Ok(Query(params)) = params else {
        return html::error_page(StatusCode::BAD_REQUEST, "The filters could not be read.");
    };
    let set = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (actor, action) = (set(&params.actor), set(&params.action));
    let before_id = match set(&params.before).map(|b| b.parse::<i64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return html::error_page(StatusCode::BAD_REQUEST, "before must be a row id.");
        }
    };
    let filter = query(&[("actor", actor.as_deref()), ("action", action.as_deref())]);
    state.audit(
        &session,
        &request_id,
        "console.audit.view",
        filter.trim_start_matches('?').to_owned(),
    );
    let rows = state
        .app
        .store
        .audit_page(AuditQuery {
            before_id,
            actor: actor.clone(),
            action: action.clone(),
            limit: PAGE + 1,
            ..AuditQuery::default()
        })
        .await;
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(error) => return html::unavailable(&error),
    };
    let next = (rows.len() > PAGE as usize)
        .then(|| {
            rows.truncate(PAGE as usize);
            rows.last().map(|row| row.id)
        })
        .flatten();
    let zone = &state.zone;
    let body = html! {
        h1 { "Audit" }
        p.note { "Rows are kept for the configured retention (audit_retention_days). Times in " (zone.iana_name().unwrap_or("UTC")) "." }
        form.filters method="get" action="/ui/audit" {
            label { "Who (token name)" input type="text" name="actor" value=(actor.clone().unwrap_or_default()); }
            label { "Action" input type="text" name="action" value=(action.clone().unwrap_or_default()) placeholder="console.export"; }
            button type="submit" { "Filter" }
            a href="/ui/audit" { "Clear" }
        }
        @if rows.is_empty() {
            p.note { "No row matches." }
        } @else {
            div.table-wrap {
                table {
                    caption.visually-hidden { "Audit rows, newest first" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "What" } th scope="col" { "Request id" } } }
                    tbody {
                        @for row in &rows {
                            tr {
                                td { (at(&row.at, zone)) }
                                td { (cell(&row.actor)) }
                                td { code { (cell(&row.action)) } }
                                td.id { (cell(&row.target)) }
                                td.id { (cell(row.request_id.as_deref().unwrap_or(""))) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if before_id.is_some() { a href={ "/ui/audit" (filter) } { "Newest" } }
            @if let Some(next) = next {
                @let next = next.to_string();
                a rel="next" href={ "/ui/audit" (query(&[("actor", actor.as_deref()), ("action", action.as_deref()), ("before", Some(&next))])) } { "Older →" }
            }
        }
    };
    document("Audit", Nav::Audit, Some(&session), body).into_response()
}
