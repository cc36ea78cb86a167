//! Search: an exact job id, patient note id, EMR note id or event id,
//! straight to the job. Nothing else is searched (no MRN, no free text).

use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::display::{cell, visible};
use super::html::{self, Nav, document, job_href};
use super::{ConsoleState, RequestId, Session};

const MAX_ID: usize = 255;

#[derive(Deserialize)]
pub struct SearchParams {
    q: Option<String>,
}

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = params
        .ok()
        .and_then(|Query(p)| p.q)
        .map(|q| q.trim().to_owned())
        .unwrap_or_default();
    if q.is_empty() || q.len() > MAX_ID {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            "Give one id: a job id, patient note id, EMR note id or event id.",
        );
    }
    let store = &state.app.store;
    let found = async {
        let mut jobs: Vec<(String, &'static str)> = Vec::new();
        for job in store.jobs_by_job_id(&q).await? {
            jobs.push((job.job_id, "job id"));
        }
        for job in store.jobs_by_note(&q).await? {
            jobs.push((job.job_id, "patient note id"));
        }
        for job in store.jobs_by_emr_note(&q).await? {
            jobs.push((job, "EMR note id"));
        }
        if let Some(job) = store.job_of_event(&q).await? {
            jobs.push((job, "event id"));
        }
        Ok::<_, crate::store::StoreError>(jobs)
    }
    .await;
    let mut jobs = match found {
        Ok(jobs) => jobs,
        Err(error) => return html::unavailable(&error),
    };
    jobs.dedup_by(|a, b| a.0 == b.0);
    // The term is recorded only when it is an id found here: a term that
    // matched nothing could be anything a user typed, an MRN included.
    let target = if jobs.is_empty() {
        crate::audit::unmatched(&q)
    } else {
        q.clone()
    };
    state.audit(&session, &request_id, "console.search", target);
    if let [(job, _)] = jobs.as_slice() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, job_href(job))]).into_response();
    }
    let body = html! {
        h1 { "Search" }
        p { "Looked for " code { (visible(&q)) } " as a job id, patient note id, EMR note id and event id." }
        @if jobs.is_empty() {
            p { "Nothing has that id." }
        } @else {
            ul {
                @for (job, matched) in &jobs {
                    li { a href=(job_href(job)) { "Job " (cell(job)) } " (its " (matched) ")" }
                }
            }
        }
    };
    let status = if jobs.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    (status, document("Search", Nav::None, Some(&session), body)).into_response()
}
