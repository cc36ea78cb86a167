//! Overdue jobs, and recovery of their outcomes from Cobalt: the page says
//! what a sweep will ask (how many jobs, which window, how many accounts);
//! confirming starts it in the background, and its page shows the
//! progress, then the result.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use time::OffsetDateTime;

use super::html::{self, Nav, at, document, document_refreshing, job_href};
use super::{ConsoleState, CsrfChecked, RequestId, Session};
use crate::auth::Permission;
use crate::domain::JobStatus;
use crate::reconcile::{Report, Scope};
use crate::store::{JobQuery, ListStatus, Narrowing};

/// Overdue jobs shown on the page (the count says how many there are).
const SHOWN: u32 = 100;
/// Finished runs remembered for their pages.
const KEPT: usize = 20;

/// Recovery runs started from this process's console.
#[derive(Default)]
pub struct Recoveries {
    runs: Mutex<VecDeque<Arc<Run>>>,
}

pub struct Run {
    pub id: String,
    pub started_by: Arc<str>,
    pub started_at: OffsetDateTime,
    pub plan: String,
    progress: Mutex<Progress>,
}

#[derive(Clone, Default)]
struct Progress {
    report: Report,
    finished_at: Option<OffsetDateTime>,
}

impl Recoveries {
    fn find(&self, id: &str) -> Option<Arc<Run>> {
        let runs = self.runs.lock().expect("not poisoned");
        runs.iter().find(|run| run.id == id).cloned()
    }

    /// The run still going, if any: one at a time.
    fn running(&self) -> Option<Arc<Run>> {
        let runs = self.runs.lock().expect("not poisoned");
        runs.iter()
            .find(|run| {
                run.progress
                    .lock()
                    .expect("not poisoned")
                    .finished_at
                    .is_none()
            })
            .cloned()
    }

    fn add(&self, run: Arc<Run>) {
        let mut runs = self.runs.lock().expect("not poisoned");
        runs.push_front(run);
        runs.truncate(KEPT);
    }
}

/// `GET /ui/overdue`.
pub async fn overdue(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
) -> Response {
    state.audit(&session, &request_id, "console.overdue.view", String::new());
    let store = &state.app.store;
    let before = state.app.overdue_before_ns();
    let summary = match store.pending_summary(before).await {
        Ok(summary) => summary,
        Err(error) => return html::unavailable(&error),
    };
    let query = JobQuery {
        status: Some(ListStatus::Pending {
            submitted_before_ns: Some(before),
        }),
        since_ns: None,
        after: None,
        limit: SHOWN,
        narrow: Narrowing::default(),
    };
    let jobs = match store.list_jobs(&query).await {
        Ok(jobs) => jobs,
        Err(error) => return html::unavailable(&error),
    };
    let zone = &state.zone;
    let may_operate = session.caller.may(Permission::Operate);
    let running = state.recoveries.running();
    let body = html! {
        h1 { "Overdue" }
        p {
            (summary.overdue) " job(s) have waited longer than "
            (state.app.overdue_after.as_secs() / 60) " minutes for their outcome"
            @if summary.overdue > i64::from(SHOWN) { "; the newest " (SHOWN) " are listed" }
            "."
            @if summary.overdue > 0 { " " a href="/ui/jobs?status=pending&overdue=true" { "All of them, with filters and export" } }
        }
        section.panel aria-labelledby="recover" {
            h2 #recover { "Recover lost outcomes" }
            @match &state.app.reconciler {
                None => p { "Recovery is off: no Cobalt credentials are configured (cobalt_client_id, cobalt_client_secret, cobalt_access_token)." },
                Some(reconciler) => {
                    @let plan = reconciler.plan(summary.overdue);
                    p {
                        "Recovery will ask Cobalt about the " strong { (plan.jobs) } " oldest overdue job(s), one by one, "
                        "then list the patient-note events Cobalt failed to deliver since " strong { (plan.since) }
                        " (UTC) for " strong { (plan.accounts) } " linked account(s). What it finds is recorded as if delivered."
                    }
                    @if let Some(run) = &running {
                        p { "A recovery is running: " a href={ "/ui/recoveries/" (run.id) } { "see its progress" } "." }
                    } @else if may_operate {
                        form method="post" action="/ui/recoveries" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { "Recover now" }
                        }
                    } @else {
                        p.note { "Starting recovery needs a token with the operate permission." }
                    }
                }
            }
        }
        @if !jobs.is_empty() {
            div.table-wrap {
                table {
                    caption.visually-hidden { "Overdue jobs, newest first" }
                    thead { tr { th scope="col" { "Job" } th scope="col" { "Patient note" } th scope="col" { "Submitted" } th scope="col" { "Account" } } }
                    tbody {
                        @for job in &jobs {
                            tr {
                                td.id { a href=(job_href(&job.job_id)) { (job.job_id) } }
                                td.id { (job.patient_note_id) }
                                td { (job.submitted_at.as_deref().map(|t| at(t, zone)).unwrap_or_default()) }
                                td { (job.access_token_reference_id.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    };
    document("Overdue", Nav::Overdue, Some(&session), body).into_response()
}

/// `POST /ui/recoveries`: starts a sweep in the background (operate).
pub async fn start(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    _: CsrfChecked,
) -> Response {
    if !session.caller.may(Permission::Operate) {
        return html::error_page(
            StatusCode::FORBIDDEN,
            "Starting recovery needs a token with the operate permission.",
        );
    }
    let Some(reconciler) = state.app.reconciler.clone() else {
        return html::error_page(
            StatusCode::CONFLICT,
            "Recovery is off: no Cobalt credentials are configured.",
        );
    };
    if let Some(run) = state.recoveries.running() {
        return see_other(&run.id);
    }
    let overdue = match state
        .app
        .store
        .pending_summary(state.app.overdue_before_ns())
        .await
    {
        Ok(summary) => summary.overdue,
        Err(error) => return html::unavailable(&error),
    };
    let plan = reconciler.plan(overdue);
    let plan = format!(
        "{} overdue job(s); failed deliveries since {} for {} account(s)",
        plan.jobs, plan.since, plan.accounts
    );
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source works");
    let run = Arc::new(Run {
        id: hex::encode(id),
        started_by: session.caller.name.clone(),
        started_at: OffsetDateTime::now_utc(),
        plan: plan.clone(),
        progress: Mutex::new(Progress::default()),
    });
    state.recoveries.add(run.clone());
    state.audit(&session, &request_id, "console.recovery.start", plan);
    let (task_run, run_done) = (run.clone(), run.clone());
    tokio::spawn(async move {
        let observe = move |report: &Report| {
            task_run.progress.lock().expect("not poisoned").report = report.clone();
        };
        let report = reconciler.sweep_observed(&Scope::default(), &observe).await;
        let mut progress = run_done.progress.lock().expect("not poisoned");
        progress.report = report;
        progress.finished_at = Some(OffsetDateTime::now_utc());
    });
    see_other(&run.id)
}

fn see_other(id: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/ui/recoveries/{id}"))],
    )
        .into_response()
}

/// `GET /ui/recoveries/{id}`: progress (the page reloads itself every two
/// seconds while the sweep runs), then the result.
pub async fn progress(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Response {
    let Some(run) = state.recoveries.find(&id) else {
        return html::error_page(
            StatusCode::NOT_FOUND,
            "No such recovery run here (runs are kept by the process that started them, until it restarts).",
        );
    };
    state.audit(&session, &request_id, "console.recovery.view", id);
    let progress = run.progress.lock().expect("not poisoned").clone();
    let report = &progress.report;
    let zone = &state.zone;
    let started = at(&crate::store::rfc3339(run.started_at), zone);
    let body = html! {
        h1 { "Recovery" }
        p {
            "Started by " strong { (run.started_by) } " at " (started) ": " (run.plan) "."
        }
        @match progress.finished_at {
            None => p role="status" { strong { "Running…" } " This page refreshes itself." },
            Some(finished) => p role="status" {
                strong { @if report.errors.is_empty() { "Finished" } @else { "Finished with errors" } }
                " at " (at(&crate::store::rfc3339(finished), zone)) "."
            },
        }
        dl.facts {
            dt { "Jobs asked about" } dd { (report.jobs_asked) }
            dt { "Pages of Cobalt's event list read" } dd { (report.pages_read) }
            dt { "Outcomes found" } dd { (report.outcomes_found) }
            dt { "Recovered (their delivery had been lost)" } dd { (report.recovered) }
            dt { "Already here" } dd { (report.already_known) }
            dt { "Unreadable rows" } dd { (report.unreadable) }
        }
        @if !report.errors.is_empty() {
            h2 { "Errors" }
            ul { @for error in &report.errors { li { (error) } } }
        }
        p { a href="/ui/overdue" { "Back to Overdue" } " · " a href={ "/ui/jobs?status=" (JobStatus::Created.as_str()) } { "Jobs" } }
    };
    let refresh = progress.finished_at.is_none().then_some(2);
    document_refreshing("Recovery", Nav::Overdue, Some(&session), refresh, body).into_response()
}
