//! Jobs: the filtered list, newest first, a page at a time with the API's
//! signed keyset cursors (so a page does not shift as outcomes arrive), and
//! the CSV export of exactly the filtered set.

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use maud::{Markup, html};
use serde::Deserialize;

use super::display::{cell, csv_field};
use super::html::{self, Nav, at, document, job_href, query, status_badge};
use super::today::day_bounds;
use super::{ConsoleState, RequestId, Session};
use crate::listing::{self, ListingError};
use crate::pagination::{Filters, StatusFilter};
use crate::phi::masked;
use crate::store::{JobKey, JobState, Narrowing};

const PAGE: u32 = 50;
/// Rows the export reads from the database at a time.
const EXPORT_CHUNK: u32 = 1000;

/// The list's filters, as the URL carries them (also the export's).
#[derive(Deserialize, Default, Clone)]
pub struct ListParams {
    status: Option<String>,
    overdue: Option<String>,
    reason: Option<String>,
    from: Option<String>,
    to: Option<String>,
    location: Option<String>,
    account: Option<String>,
    cursor: Option<String>,
}

impl ListParams {
    /// The query string of these filters, with `cursor` when given.
    fn href(&self, path: &str, cursor: Option<&str>) -> String {
        format!(
            "{path}{}",
            query(&[
                ("status", self.status.as_deref()),
                ("overdue", self.overdue.as_deref()),
                ("reason", self.reason.as_deref()),
                ("from", self.from.as_deref()),
                ("to", self.to.as_deref()),
                ("location", self.location.as_deref()),
                ("account", self.account.as_deref()),
                ("cursor", cursor),
            ])
        )
    }

    /// The filters for the audit trail (no cursor). The typed ones
    /// (reason, location, account) are recorded only when the listing found
    /// jobs with them; otherwise they could be anything, an MRN included.
    fn described(&self, matched: bool) -> String {
        if matched {
            return self.href("", None).trim_start_matches('?').to_owned();
        }
        let typed = [
            ("reason", &self.reason),
            ("location", &self.location),
            ("account", &self.account),
        ];
        let chosen = Self {
            reason: None,
            location: None,
            account: None,
            cursor: None,
            ..self.clone()
        };
        let mut described = chosen.href("", None).trim_start_matches('?').to_owned();
        for (name, value) in typed {
            if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                if !described.is_empty() {
                    described.push('&');
                }
                described.push_str(&format!("{name}={}", crate::audit::unmatched(value)));
            }
        }
        described
    }
}

/// The filters, read and checked.
fn read_filters(params: &ListParams, state: &ConsoleState) -> Result<Filters, String> {
    let text = |value: &Option<String>| -> Result<Option<String>, String> {
        match value.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) if v.len() > html::MAX_FILTER_VALUE => {
                Err("A filter value is too long.".into())
            }
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    let overdue = matches!(params.overdue.as_deref(), Some("true" | "on"));
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(value) => {
            Some(StatusFilter::parse(value).ok_or("status must be created, failed or pending.")?)
        }
    };
    let status = match (status, overdue) {
        (None | Some(StatusFilter::Pending), true) => Some(StatusFilter::Pending),
        (Some(_), true) => return Err("Only pending jobs can be overdue.".into()),
        (status, false) => status,
    };
    let day = |value: &Option<String>, name: &str| -> Result<Option<(i64, i64)>, String> {
        match value.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => {
                let date = text
                    .parse::<Date>()
                    .map_err(|_| format!("{name} must be a date such as 2026-11-27."))?;
                day_bounds(date, &state.zone)
                    .map(Some)
                    .ok_or_else(|| format!("{name} is out of range."))
            }
        }
    };
    let since_ns = day(&params.from, "from")?.map(|(start, _)| start);
    let until_ns = day(&params.to, "to")?.map(|(_, end)| end);
    Ok(Filters {
        status,
        overdue,
        since_ns,
        narrow: Narrowing {
            failure_reason: text(&params.reason)?,
            location_id: text(&params.location)?,
            access_token_reference_id: text(&params.account)?,
            until_ns,
        },
    })
}

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return html::error_page(StatusCode::BAD_REQUEST, "The filters could not be read.");
    };
    let audit = |matched| {
        let target = params.described(matched);
        state.audit(&session, &request_id, "console.jobs.view", target);
    };
    let filters = match read_filters(&params, &state) {
        Ok(filters) => filters,
        Err(problem) => {
            audit(false);
            return list_page(&state, &session, &params, Err(&problem), None);
        }
    };
    let cursor = params.cursor.as_deref().filter(|c| !c.is_empty());
    let page = listing::page(&state.app.store, &state.app.cursors, &filters, cursor, PAGE).await;
    let (jobs, next) = match page {
        Ok(page) => (page.jobs, page.next_cursor),
        Err(ListingError::Cursor) => {
            audit(false);
            let problem = "That page link belongs to other filters; start from the first page.";
            return list_page(&state, &session, &params, Err(problem), None);
        }
        Err(ListingError::Store(error)) => {
            audit(false);
            return html::unavailable(&error);
        }
    };
    audit(!jobs.is_empty());
    list_page(&state, &session, &params, Ok(&jobs), next)
}

fn list_page(
    state: &ConsoleState,
    session: &Session,
    params: &ListParams,
    jobs: Result<&[JobState], &str>,
    next: Option<String>,
) -> Response {
    let zone = &state.zone;
    let status = params.status.as_deref().unwrap_or("");
    let body = html! {
        h1 { "Jobs" }
        (filter_form(params, status))
        @match jobs {
            Err(problem) => p.panel role="alert" { (problem) },
            Ok(jobs) => {
                p {
                    a.button href=(params.href("/ui/jobs.csv", None)) download { "Export these jobs as CSV" }
                }
                @if jobs.is_empty() {
                    p.note { "No job matches these filters." }
                } @else {
                    div.table-wrap {
                        table {
                            caption.visually-hidden { "Jobs, newest first" }
                            thead { tr {
                                th scope="col" { "Job" }
                                th scope="col" { "Status" }
                                th scope="col" { "Reason or EMR note" }
                                th scope="col" { "Decided or submitted" }
                                th scope="col" { "Patient note" }
                                th scope="col" { "Location" }
                                th scope="col" { "Account" }
                                th scope="col" { "MRN" }
                            } }
                            tbody {
                                @for job in jobs { (row(job, zone)) }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if params.cursor.as_deref().is_some_and(|c| !c.is_empty()) {
                        a href=(params.href("/ui/jobs", None)) { "First page" }
                    }
                    @if let Some(next) = &next {
                        a href=(params.href("/ui/jobs", Some(next))) rel="next" { "Next page →" }
                    }
                }
            }
        }
    };
    let status = if jobs.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, document("Jobs", Nav::Jobs, Some(session), body)).into_response()
}

fn filter_form(params: &ListParams, status: &str) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.filters method="get" action="/ui/jobs" {
            label {
                "Status"
                select name="status" {
                    @for (value, label) in [("", "any outcome"), ("created", "created"), ("failed", "failed"), ("pending", "pending")] {
                        option value=(value) selected[status == value] { (label) }
                    }
                }
            }
            label {
                "Overdue only"
                input type="checkbox" name="overdue" value="true" checked[matches!(params.overdue.as_deref(), Some("true" | "on"))];
            }
            label { "Failure reason" input type="text" name="reason" value=(value(&params.reason)); }
            label { "From" input type="date" name="from" value=(value(&params.from)); }
            label { "To" input type="date" name="to" value=(value(&params.to)); }
            label { "Location" input type="text" name="location" value=(value(&params.location)); }
            label { "Account" input type="text" name="account" value=(value(&params.account)); }
            button type="submit" { "Filter" }
            a href="/ui/jobs" { "Clear" }
        }
    }
}

fn row(job: &JobState, zone: &jiff::tz::TimeZone) -> Markup {
    let when = job
        .deciding_event_created
        .as_deref()
        .or(job.submitted_at.as_deref())
        .map(|t| at(t, zone))
        .unwrap_or_default();
    html! {
        tr {
            td.id { a href=(job_href(&job.job_id)) { (cell(&job.job_id)) } }
            td { (status_badge(&job.status, job.overdue)) }
            td {
                @if let Some(reason) = &job.failure_reason { (cell(reason)) }
                @else if let Some(emr) = &job.emr_note_id { code { (cell(emr)) } }
            }
            td { (when) }
            td.id { (cell(&job.patient_note_id)) }
            td { (cell(job.location_id.as_deref().unwrap_or(""))) }
            td { (cell(job.access_token_reference_id.as_deref().unwrap_or(""))) }
            td { @if let Some(mrn) = &job.patient_mrn { (masked(mrn)) } }
        }
    }
}

/// `GET /ui/jobs.csv`: every job the filters select (not one page), as CSV:
/// ids, status, reason, times. No MRN, no note text.
pub async fn export(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(mut params)) = params else {
        return html::error_page(StatusCode::BAD_REQUEST, "The filters could not be read.");
    };
    params.cursor = None;
    let filters = match read_filters(&params, &state) {
        Ok(filters) => filters,
        Err(problem) => return html::error_page(StatusCode::BAD_REQUEST, &problem),
    };
    // Whether the filters select anything decides what the audit row may
    // say of them.
    let matched = match state
        .app
        .store
        .list_jobs(&listing::query(&filters, None, 1))
        .await
    {
        Ok(jobs) => !jobs.is_empty(),
        Err(error) => return html::unavailable(&error),
    };
    state.audit(
        &session,
        &request_id,
        "console.export",
        params.described(matched),
    );
    let store = state.app.store.clone();
    // The rows are read a chunk at a time as the client takes them, so an
    // export of a million jobs holds one chunk in memory.
    let chunks = futures_util::stream::unfold(
        (Some(None::<JobKey>), true),
        move |(after, first)| {
            let store = store.clone();
            let query = after
                .clone()
                .map(|after| listing::query(&filters, after, EXPORT_CHUNK));
            async move {
                let query = query?;
                let mut out = if first { csv_header() } else { String::new() };
                match store.list_jobs(&query).await {
                    Ok(jobs) => {
                        for job in &jobs {
                            csv_row(&mut out, job);
                        }
                        let next = (jobs.len() == EXPORT_CHUNK as usize)
                            .then(|| jobs.last().map(|last| last.key.clone()));
                        Some((Ok::<_, std::io::Error>(out), (next, false)))
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "console: the export stopped: the database failed");
                        Some((
                            Err(std::io::Error::other("the database failed")),
                            (None, false),
                        ))
                    }
                }
            }
        },
    );
    let name = format!(
        "attachment; filename=\"jobs-{}.csv\"",
        super::today::today(&state.zone)
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

const CSV_COLUMNS: [&str; 12] = [
    "job_id",
    "patient_note_id",
    "status",
    "overdue",
    "failure_reason",
    "emr_note_id",
    "location_id",
    "access_token_reference_id",
    "submitted_at",
    "decided_at",
    "first_received_at",
    "last_received_at",
];

fn csv_header() -> String {
    let mut out = String::new();
    for (index, column) in CSV_COLUMNS.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        csv_field(column, &mut out);
    }
    out.push_str("\r\n");
    out
}

fn csv_row(out: &mut String, job: &JobState) {
    let overdue = if job.overdue { "true" } else { "false" };
    let fields = [
        Some(job.job_id.as_str()),
        Some(job.patient_note_id.as_str()),
        Some(job.status.as_str()),
        Some(overdue),
        job.failure_reason.as_deref(),
        job.emr_note_id.as_deref(),
        job.location_id.as_deref(),
        job.access_token_reference_id.as_deref(),
        job.submitted_at.as_deref(),
        job.deciding_event_created.as_deref(),
        job.first_received_at.as_deref(),
        job.last_received_at.as_deref(),
    ];
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        csv_field(field.unwrap_or(""), out);
    }
    out.push_str("\r\n");
}
