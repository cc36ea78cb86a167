//! Overdue jobs, and recovery of their outcomes from Cobalt: the page says
//! what a sweep will ask (how many jobs, which window, how many accounts);
//! confirming takes the sweep's lease (so no scheduled sweep starts beside
//! it on any replica) and starts it in the background; its page shows the
//! progress, then the result. Runs are kept in the database, so any
//! replica shows them and a second one is not started beside one going.

use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use time::OffsetDateTime;

use super::display::cell;
use super::html::{self, Nav, at, document, document_refreshing, job_href};
use super::{ConsoleState, CsrfChecked, RequestId, Session};
use crate::auth::Permission;
use crate::clock::{now_ns, unix_ns};
use crate::domain::JobStatus;
use crate::reconcile::{Report, Scope};
use crate::store::{JobQuery, ListStatus, Narrowing, RecoveryRun, StoreError};

/// Overdue jobs shown on the page (the count says how many there are).
const SHOWN: u32 = 100;
/// How often a running sweep's progress is saved, at most.
const SAVED_EVERY: Duration = Duration::from_secs(1);
/// A running sweep's row is saved at least this often, changed or not...
const HEARTBEAT: Duration = Duration::from_secs(20);
/// ...so one not saved for this long was left by a process that stopped.
const ABANDONED_AFTER: Duration = Duration::from_secs(90);

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Running,
    Finished(i64),
    /// Its process stopped before it finished.
    Abandoned,
}

fn standing(run: &RecoveryRun, now_ns: i64) -> Standing {
    match run.finished_ns {
        Some(at) => Standing::Finished(at),
        None if now_ns.saturating_sub(run.updated_ns)
            < i64::try_from(ABANDONED_AFTER.as_nanos()).unwrap_or(i64::MAX) =>
        {
            Standing::Running
        }
        None => Standing::Abandoned,
    }
}

/// The run still going, on any replica, if any: one at a time.
async fn running(state: &ConsoleState) -> Result<Option<RecoveryRun>, StoreError> {
    let latest = state.app.store.recovery_run(None).await?;
    Ok(latest.filter(|run| standing(run, now_ns()) == Standing::Running))
}

/// `GET /ui/overdue`.
pub async fn overdue(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
) -> Response {
    state.audit(&session, &request_id, "console.overdue.view", String::new());
    let store = &state.app.store;
    let summary = match store.pending_summary().await {
        Ok(summary) => summary,
        Err(error) => return html::unavailable(&error),
    };
    let query = JobQuery {
        status: Some(ListStatus::Pending { overdue_only: true }),
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
    let running = match running(&state).await {
        Ok(running) => running,
        Err(error) => return html::unavailable(&error),
    };
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
                                td.id { a href=(job_href(&job.job_id)) { (cell(&job.job_id)) } }
                                td.id { (cell(&job.patient_note_id)) }
                                td { (job.submitted_at.as_deref().map(|t| at(t, zone)).unwrap_or_default()) }
                                td { (cell(job.access_token_reference_id.as_deref().unwrap_or(""))) }
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
    match running(&state).await {
        Ok(Some(run)) => return see_other(&run.id),
        Ok(None) => {}
        Err(error) => return html::unavailable(&error),
    }
    let overdue = match state.app.store.pending_summary().await {
        Ok(summary) => summary.overdue,
        Err(error) => return html::unavailable(&error),
    };
    // The sweep's lease, taken whoever holds it: the scheduled sweep on
    // every replica then waits an interval from now.
    let now = OffsetDateTime::now_utc();
    let next_due = unix_ns(now + state.sweep_interval);
    if let Err(error) = state
        .app
        .store
        .take_lease(&state.lease_holder, i64::MAX, next_due)
        .await
    {
        return html::unavailable(&error);
    }
    let plan = reconciler.plan(overdue);
    let plan = format!(
        "{} overdue job(s); failed deliveries since {} for {} account(s)",
        plan.jobs, plan.since, plan.accounts
    );
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source works");
    let run = RecoveryRun {
        id: hex::encode(id),
        started_by: session.caller.name.to_string(),
        started_ns: unix_ns(now),
        plan: plan.clone(),
        report: report_json(&Report::default()),
        updated_ns: unix_ns(now),
        finished_ns: None,
    };
    if let Err(error) = state.app.store.save_recovery_run(run.clone()).await {
        return html::unavailable(&error);
    }
    state.audit(&session, &request_id, "console.recovery.start", plan);
    tokio::spawn(run_and_save(
        state.app.store.clone(),
        reconciler,
        run.clone(),
    ));
    see_other(&run.id)
}

/// Runs the sweep, saving its progress as it goes and its report at the end.
async fn run_and_save(
    store: crate::store::Store,
    reconciler: std::sync::Arc<crate::reconcile::Reconciler>,
    mut run: RecoveryRun,
) {
    let (progress, mut latest) = tokio::sync::watch::channel(Report::default());
    let observe = move |report: &Report| {
        let _ = progress.send(report.clone());
    };
    let sweep =
        tokio::spawn(async move { reconciler.sweep_observed(&Scope::default(), &observe).await });
    tokio::pin!(sweep);
    let mut saved_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            finished = &mut sweep => {
                let report = finished.unwrap_or_else(|_| Report {
                    errors: vec!["the sweep stopped unexpectedly".into()],
                    ..latest.borrow().clone()
                });
                run.report = report_json(&report);
                run.updated_ns = now_ns();
                run.finished_ns = Some(run.updated_ns);
                if let Err(error) = store.save_recovery_run(run).await {
                    tracing::warn!(error = %error, "recovery: the run's result could not be saved");
                }
                return;
            }
            () = tokio::time::sleep(SAVED_EVERY) => {
                let changed = latest.has_changed().unwrap_or(false);
                if !changed && saved_at.elapsed() < HEARTBEAT {
                    continue;
                }
                run.report = report_json(&latest.borrow_and_update());
                run.updated_ns = now_ns();
                match store.save_recovery_run(run.clone()).await {
                    Ok(()) => saved_at = tokio::time::Instant::now(),
                    Err(error) => tracing::warn!(error = %error, "recovery: the run's progress could not be saved"),
                }
            }
        }
    }
}

fn report_json(report: &Report) -> String {
    serde_json::to_string(report).expect("a report always serializes")
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
    let run = match state.app.store.recovery_run(Some(&id)).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            return html::error_page(StatusCode::NOT_FOUND, "There is no such recovery run.");
        }
        Err(error) => return html::unavailable(&error),
    };
    state.audit(&session, &request_id, "console.recovery.view", id);
    let report: Report = serde_json::from_str(&run.report).unwrap_or_default();
    let standing = standing(&run, now_ns());
    let zone = &state.zone;
    let started = html::at_ns(run.started_ns, zone);
    let body = html! {
        h1 { "Recovery" }
        p {
            "Started by " strong { (run.started_by) } " at " (started) ": " (run.plan) "."
        }
        @match standing {
            Standing::Running => p role="status" { strong { "Running…" } " This page refreshes itself." },
            Standing::Finished(finished) => p role="status" {
                strong { @if report.errors.is_empty() { "Finished" } @else { "Finished with errors" } }
                " at " (html::at_ns(finished, zone)) "."
            },
            Standing::Abandoned => p role="status" {
                strong { "Stopped" } ": the process running it stopped before it finished. "
                "What it recorded is kept; start another run to finish the work."
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
    let refresh = (standing == Standing::Running).then_some(2);
    document_refreshing("Recovery", Nav::Overdue, Some(&session), refresh, body).into_response()
}
