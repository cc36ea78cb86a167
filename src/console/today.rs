//! Today: the day's outcomes (by hour, against the day before), what
//! failed and why, how long notes took to reach the EMR, what is stuck,
//! and whether deliveries arrive (and are signed with the right secret).

use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use maud::html;
use serde::Deserialize;

use super::html::{self, Nav, at, at_ns, document, query};
use super::{ConsoleState, RequestId, Session, chart, emr_times, hours};

#[derive(Deserialize)]
pub struct DayParams {
    day: Option<String>,
}

/// The instants a day of the clinic's calendar starts and ends (DST-aware).
pub fn day_bounds(day: Date, zone: &TimeZone) -> Option<(i64, i64)> {
    let start = day.to_zoned_datetime(zone.clone()).ok()?.timestamp();
    let end = day
        .tomorrow()
        .ok()?
        .to_zoned_datetime(zone.clone())
        .ok()?
        .timestamp();
    Some((ns(start), ns(end)))
}

fn ns(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

pub fn today(zone: &TimeZone) -> Date {
    jiff::Timestamp::now()
        .to_zoned_datetime(zone.clone())
        .date()
}

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    Query(params): Query<DayParams>,
) -> Response {
    let (state, session, request_id) = (&state, &session, &request_id);
    let zone = &state.zone;
    let today = today(zone);
    let day = match params.day.as_deref() {
        None | Some("") => today,
        Some(text) => match text.parse::<Date>() {
            Ok(day) => day,
            Err(_) => {
                return html::error_page(
                    axum::http::StatusCode::BAD_REQUEST,
                    "day must be a date such as 2026-11-27.",
                );
            }
        },
    };
    let Some((from_ns, to_ns)) = day_bounds(day, zone) else {
        return html::error_page(
            axum::http::StatusCode::BAD_REQUEST,
            "That day is out of range.",
        );
    };
    state.audit(session, request_id, "console.today.view", day.to_string());
    let store = &state.app.store;
    let summary = match store.day_summary(from_ns, to_ns).await {
        Ok(summary) => summary,
        Err(error) => return html::unavailable(&error),
    };
    let pending = match store.pending_summary().await {
        Ok(pending) => pending,
        Err(error) => return html::unavailable(&error),
    };
    let last = match store.last_delivery().await {
        Ok(last) => last,
        Err(error) => return html::unavailable(&error),
    };
    // The day before, hour by hour, to set the day's hours against.
    let before = day.yesterday().ok();
    let before_bounds = before.and_then(|before| day_bounds(before, zone));
    let shown_by_hour = match store.outcomes_by_hour(from_ns, to_ns).await {
        Ok(counts) => counts,
        Err(error) => return html::unavailable(&error),
    };
    let before_by_hour = match before_bounds {
        Some((from, to)) => match store.outcomes_by_hour(from, to).await {
            Ok(counts) => counts,
            Err(error) => return html::unavailable(&error),
        },
        None => Vec::new(),
    };
    let hour_rows = hours::compare(
        &hours::hours_of(day, zone).unwrap_or_default(),
        &shown_by_hour,
        &before
            .and_then(|before| hours::hours_of(before, zone))
            .unwrap_or_default(),
        &before_by_hour,
    );
    let times = match store
        .times_to_emr(from_ns, to_ns, emr_times::READ_AT_MOST)
        .await
    {
        Ok(times) => emr_times::by_place(times, emr_times::READ_AT_MOST),
        Err(error) => return html::unavailable(&error),
    };
    let day_start = crate::clock::from_unix_ns(from_ns);
    let (rejected, latest_rejection) = if day == today {
        state.app.signature_rejections.since(day_start)
    } else {
        (0, None)
    };
    let day_text = day.to_string();
    let list = |status: &str, reason: Option<&str>| {
        format!(
            "/ui/jobs{}",
            query(&[
                ("status", Some(status)),
                ("reason", reason),
                ("from", Some(&day_text)),
                ("to", Some(&day_text)),
            ])
        )
    };
    let before_text = before.map(|before| before.to_string()).unwrap_or_default();
    let location_jobs = |location: &str| {
        (location.len() <= super::html::MAX_FILTER_VALUE).then(|| {
            format!(
                "/ui/jobs{}",
                query(&[
                    ("status", Some("created")),
                    ("location", Some(location)),
                    ("from", Some(&day_text)),
                    ("to", Some(&day_text)),
                ])
            )
        })
    };
    let title = if day == today {
        "Today".to_owned()
    } else {
        day_text.clone()
    };
    let body = html! {
        h1 { (title) " " span.note { "(" (day_text) ", " (zone.iana_name().unwrap_or("UTC")) ")" } }
        nav.pager aria-label="Days" {
            @if let Ok(before) = day.yesterday() {
                a href={ "/ui" (query(&[("day", Some(&before.to_string()))])) } { "← " (before) }
            }
            @if day < today {
                @if let Ok(after) = day.tomorrow() {
                    a href={ "/ui" (query(&[("day", Some(&after.to_string()))])) } { (after) " →" }
                }
            }
        }
        dl.counts {
            div { dt { "Created" } dd { a href=(list("created", None)) { (summary.created) } } }
            div { dt { "Failed" } dd { a href=(list("failed", None)) { (summary.failed) } } }
            div { dt { "Pending now" } dd { a href="/ui/jobs?status=pending" { (pending.pending) } } }
            div { dt { "Overdue now" } dd { a href="/ui/overdue" { (pending.overdue) } } }
        }
        h2 { "Failures by reason" }
        @if summary.failures.is_empty() {
            p.note { "No note failed on this day." }
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Reason" } th scope="col" { "Count" } th scope="col" { "First" } th scope="col" { "Last" } } }
                    tbody {
                        @for group in &summary.failures {
                            tr {
                                td {
                                    @match &group.reason {
                                        // A value longer than a filter takes gets no link.
                                        Some(reason) if reason.len() <= super::html::MAX_FILTER_VALUE => a href=(list("failed", Some(reason))) { (super::display::cell(reason)) },
                                        Some(reason) => (super::display::cell(reason)),
                                        None => span.note { "(no reason given)" },
                                    }
                                }
                                td { (group.count) }
                                td { (at_ns(group.first_ns, zone)) }
                                td { (at_ns(group.last_ns, zone)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Outcomes by hour" }
        (chart::outcomes_by_hour(&hour_rows, &day_text, &before_text))
        h2 { "Time to EMR by location" }
        p.note {
            "From a job's submission (as registered here) to its note's creation in the EMR, "
            "as Cobalt dated it: registered jobs whose note was created on this day. "
            "Failures, and jobs never registered, have no time to EMR."
        }
        (chart::times_to_emr(&times, &day_text, &location_jobs))
        h2 { "Deliveries" }
        dl.facts {
            dt { "Last delivery received" }
            dd {
                @match &last {
                    Some(last) => { (at(&last.received_at, zone)) " (" (last.event_type.as_deref().unwrap_or("no type")) ")" },
                    None => "none yet",
                }
            }
            @if day == today {
                dt { "Refused signatures today" }
                dd {
                    (rejected)
                    @if rejected > 0 {
                        " (latest in the hour from "
                        (latest_rejection.map(|t| at_ns(crate::clock::unix_ns(t), zone)).unwrap_or_default())
                        "): check that Cobalt's webhook secret is among webhook_secrets"
                    }
                }
            }
        }
        @if day == today {
            p.note { "Refused signatures are counted by this process since it started." }
        }
    };
    document("Today", Nav::Today, Some(session), body).into_response()
}
