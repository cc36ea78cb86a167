//! Job: its whole story as a timeline (submitted, each event received or
//! recovered, the deciding one, overdue since), and the MRN reveal.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::display::{cell, visible};
use super::html::{self, Nav, at, document, status_badge};
use super::{ConsoleState, CsrfChecked, RequestId, Session};
use crate::audit::Action;
use crate::auth::Permission;
use crate::phi::masked;
use crate::store::{EventSummary, JobState, Outcome, RepeatedDelivery, Source};

/// What the page shows of a job.
struct Story {
    jobs: Vec<JobState>,
    events: Vec<EventSummary>,
    repeats: Vec<RepeatedDelivery>,
}

impl Story {
    async fn read(state: &ConsoleState, job_id: &str) -> Result<Self, Response> {
        let store = &state.app.store;
        match tokio::try_join!(
            store.jobs_by_job_id(job_id),
            store.job_events(job_id),
            store.repeated_deliveries(job_id)
        ) {
            Ok((jobs, events, repeats)) => Ok(Self {
                jobs,
                events,
                repeats,
            }),
            Err(error) => Err(html::unavailable(&error)),
        }
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.events.is_empty()
    }
}

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    Path(job_id): Path<String>,
) -> Response {
    let story = match Story::read(&state, &job_id).await {
        Ok(story) => story,
        Err(response) => return response,
    };
    // What was typed is recorded only when it is a job's id: otherwise it
    // could be anything, an MRN included.
    let target = if story.is_empty() {
        crate::audit::unmatched(&job_id)
    } else {
        job_id.clone()
    };
    state.audit(&session, &request_id, "console.job.view", target);
    show(&state, &session, &job_id, story, None)
}

/// `POST /ui/jobs/{job_id}/reveal-mrn` (`phi`): the page again with the
/// MRN shown, once the reveal's audit row is committed; refused if it
/// cannot be.
pub async fn reveal_mrn(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    Path(job_id): Path<String>,
    _: CsrfChecked,
) -> Response {
    if !session.caller.may(Permission::Phi) {
        return html::error_page(
            StatusCode::FORBIDDEN,
            "Showing a whole MRN needs a token with the phi permission.",
        );
    }
    let story = match Story::read(&state, &job_id).await {
        Ok(story) if story.is_empty() => return show(&state, &session, &job_id, story, None),
        Ok(story) => story,
        Err(response) => return response,
    };
    let recorded = state
        .app
        .audit
        .record_committed(Action {
            actor: &session.caller.name,
            action: "console.mrn.reveal",
            target: crate::audit::bounded(&job_id),
            request_id: request_id.0.as_deref(),
        })
        .await;
    if let Err(error) = recorded {
        tracing::warn!(error = %error, "console: an MRN reveal was refused: its audit row could not be written");
        return html::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The MRN is not shown: its viewing could not be recorded. Try again in a moment.",
        );
    }
    show(&state, &session, &job_id, story, Some(()))
}

fn show(
    state: &ConsoleState,
    session: &Session,
    job_id: &str,
    story: Story,
    reveal: Option<()>,
) -> Response {
    let Story {
        jobs,
        events,
        repeats,
    } = story;
    if jobs.is_empty() && events.is_empty() {
        let body = html! {
            h1 { "Job " code { (visible(job_id)) } }
            p { "No job with this id is registered here, and no event about it has been received." }
            p { a href={ "/ui/search?q=" (html::encode_query(job_id)) } { "Search other ids for it" } }
        };
        return (
            StatusCode::NOT_FOUND,
            document("Job", Nav::Jobs, Some(session), body),
        )
            .into_response();
    }
    let zone = &state.zone;
    let overdue_after =
        time::Duration::try_from(state.app.overdue_after).unwrap_or(time::Duration::MAX);
    let may_see_phi = session.caller.may(Permission::Phi);
    let body = html! {
        h1 { "Job " code { (visible(job_id)) } }
        @if jobs.len() > 1 {
            p.panel role="alert" { "Two or more patient notes claim this job id; each is shown." }
        }
        @for job in &jobs {
            section.panel {
                h2 { "Patient note " code { (visible(&job.patient_note_id)) } " " (status_badge(&job.status, job.overdue)) }
                dl.facts {
                    @if let Some(emr) = &job.emr_note_id { dt { "EMR note" } dd { code { (visible(emr)) } } }
                    @if let Some(reason) = &job.failure_reason { dt { "Failure reason" } dd { (visible(reason)) } }
                    @if let Some(reasons) = job.reasons.as_ref().and_then(|r| r.as_array()) {
                        dt { "Reasons" }
                        dd { ul { @for reason in reasons { li { (visible(&reason_text(reason))) } } } }
                    }
                    @if let Some(location) = &job.location_id { dt { "Location" } dd { (visible(location)) } }
                    @if let Some(account) = &job.access_token_reference_id { dt { "Account" } dd { (visible(account)) } }
                    @if let Some(mrn) = &job.patient_mrn {
                        dt { "MRN" }
                        dd {
                            @if reveal.is_some() {
                                strong { (visible(mrn)) } " " span.note { "(this viewing is recorded)" }
                            } @else if may_see_phi {
                                (masked(mrn)) " "
                                form.inline method="post" action={ (html::job_href(job_id)) "/reveal-mrn" } {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" { "Reveal (recorded)" }
                                }
                            } @else {
                                (masked(mrn)) " " span.note { "(the whole MRN needs the phi permission)" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Timeline" }
        ol.timeline { (timeline(&jobs, &events, &repeats, zone, overdue_after)) }
        p.note { "Attempt numbers are the ones Cobalt sent." }
    };
    document(
        &format!("Job {}", cell(job_id)),
        Nav::Jobs,
        Some(session),
        body,
    )
    .into_response()
}

/// Cobalt's `{code, description}`, as text.
fn reason_text(reason: &serde_json::Value) -> String {
    let field = |name: &str| reason.get(name).and_then(|v| v.as_str()).unwrap_or("");
    match (field("code"), field("description")) {
        ("", description) => description.to_owned(),
        (code, "") => code.to_owned(),
        (code, description) => format!("{code}: {description}"),
    }
}

/// Submitted, each event received (and each repeated delivery of one),
/// and overdue since: in time order.
fn timeline(
    jobs: &[JobState],
    events: &[EventSummary],
    repeats: &[RepeatedDelivery],
    zone: &jiff::tz::TimeZone,
    overdue_after: time::Duration,
) -> Markup {
    let deciding: Vec<&str> = jobs
        .iter()
        .filter_map(|job| job.deciding_event_id.as_deref())
        .collect();
    let mut entries: Vec<(&str, Markup)> = Vec::new();
    if let Some(submitted) = jobs.iter().find_map(|job| job.submitted_at.as_deref()) {
        entries.push((submitted, html! { "Submitted to Cobalt" }));
    }
    for event in events {
        let deciding = deciding.contains(&event.event_id.as_str());
        entries.push((&event.received_at, event_line(event, deciding, zone)));
    }
    for repeat in repeats {
        entries.push((
            &repeat.received_at,
            html! {
                "Delivered again"
                @if let Some(attempt) = repeat.attempt { ", attempt " (attempt) }
                ": a duplicate of event " code { (repeat.event_id) } ", acknowledged, changed nothing"
            },
        ));
    }
    let overdue_since = jobs
        .iter()
        .find(|job| job.overdue)
        .and_then(|job| job.submitted_at.as_deref())
        .and_then(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|submitted| crate::clock::rfc3339(submitted + overdue_after));
    if let Some(since) = &overdue_since {
        entries.push((
            since,
            html! { strong { "Overdue since then" } ": no outcome yet" },
        ));
    }
    // By instant, not by text: RFC 3339 texts with fractions of different
    // lengths do not sort as their instants do. Ties keep their order.
    entries.sort_by_key(|(at, _)| at.parse::<jiff::Timestamp>().ok());
    html! {
        @for (when, line) in &entries {
            li { time { (at(when, zone)) } (line) }
        }
    }
}

fn event_line(event: &EventSummary, deciding: bool, zone: &jiff::tz::TimeZone) -> Markup {
    let how = match event.source {
        Source::Webhook => "Delivered",
        Source::Recovered => "Recovered from Cobalt's event list",
    };
    let outcome = match event.outcome {
        Outcome::Applied if deciding => "decided the job",
        Outcome::Applied => "applied, later outranked",
        Outcome::Superseded => "outranked by an event already here",
        Outcome::Ignored => "ignored (not a patient-note outcome)",
        Outcome::Rejected => "rejected",
    };
    html! {
        (how) ": "
        strong { (visible(event.event_type.as_deref().unwrap_or("(no type)"))) }
        @if let Some(attempt) = event.attempt { ", attempt " (attempt) }
        ", " (outcome)
        @if let Some(reason) = &event.reject_reason { " (" (visible(reason)) ")" }
        " · event " code { (visible(&event.event_id)) }
        @if let Some(created) = &event.created { " · created by Cobalt " (at(created, zone)) }
    }
}
