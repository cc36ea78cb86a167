//! Outbound: each outgoing webhook endpoint at a glance (its queue, when it
//! last delivered, since when it fails) and the messages that need
//! attention: the failed ones, and the queued ones already tried. **Send
//! again** (operate) queues failed messages again, their retry schedule
//! from the start; each time is audited before the answer.

use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::display::cell;
use super::html::{self, Nav, at_ns, document, job_href};
use super::{ConsoleState, CsrfChecked, RequestId, Session};
use crate::audit::Action;
use crate::auth::Permission;
use crate::clock::now_ns;
use crate::config::OutboundEndpoint;
use crate::store::StoreError;
use crate::store::outbound::{EndpointSummary, MessageState, OutboundMessage};

/// Messages of each state read per endpoint (the counts say how many
/// there are).
const SHOWN: u32 = 100;

/// What the page shows of one endpoint.
struct Standing {
    summary: EndpointSummary,
    failed: Vec<OutboundMessage>,
    /// Queued messages that have had at least one attempt: being retried.
    retrying: Vec<OutboundMessage>,
}

async fn standing(state: &ConsoleState, endpoint: &str) -> Result<Standing, StoreError> {
    let store = &state.app.store;
    let (summary, failed, queued) = tokio::try_join!(
        store.outbound_summary(endpoint),
        store.outbound_messages(endpoint, Some(MessageState::Failed), SHOWN),
        store.outbound_messages(endpoint, Some(MessageState::Queued), SHOWN),
    )?;
    Ok(Standing {
        summary,
        failed,
        retrying: queued
            .into_iter()
            .filter(|message| message.attempts > 0)
            .collect(),
    })
}

/// `GET /ui/outbound`.
pub async fn page(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
) -> Response {
    state.audit(
        &session,
        &request_id,
        "console.outbound.view",
        String::new(),
    );
    let endpoints = state.app.outbound.clone();
    let mut standings = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints.iter() {
        match standing(&state, &endpoint.name).await {
            Ok(standing) => standings.push(standing),
            Err(error) => return html::unavailable(&error),
        }
    }
    let now = now_ns();
    let body = html! {
        h1 { "Outbound" }
        @if endpoints.is_empty() {
            p {
                "No outgoing webhook endpoint is configured, so no change of a job's state is pushed to the clinic's app. "
                "Add " code { "[[outbound_webhooks]]" } " tables (" code { "name" } ", " code { "url" } ", " code { "secret" } ") to the configuration, "
                "or set " code { "COBALT_RECEIVER_OUTBOUND_URL" } " and " code { "COBALT_RECEIVER_OUTBOUND_SECRET" } " for one endpoint."
            }
        } @else {
            p.note {
                "Every change of a job's state is sent, signed, to each endpoint that takes its type, and retried on the schedule "
                "(outbound_retry_delays_secs); a message that failed every attempt waits here to be sent again. Times in "
                (state.zone.iana_name().unwrap_or("UTC")) "."
            }
            @for (endpoint, standing) in endpoints.iter().zip(&standings) {
                (endpoint_section(&state, &session, endpoint, standing, now))
            }
        }
    };
    document("Outbound", Nav::Outbound, Some(&session), body).into_response()
}

fn endpoint_section(
    state: &ConsoleState,
    session: &Session,
    endpoint: &OutboundEndpoint,
    standing: &Standing,
    now: i64,
) -> Markup {
    let zone = &state.zone;
    let summary = &standing.summary;
    let may_operate = session.caller.may(Permission::Operate);
    let heading = format!("endpoint-{}", endpoint.name);
    let resend = resend_href(&endpoint.name);
    let types: Vec<&str> = endpoint
        .types
        .iter()
        .map(|kind| kind.webhook_type())
        .collect();
    html! {
        section.panel aria-labelledby=(heading) {
            h2 id=(heading) { "Endpoint " code { (endpoint.name) } }
            @if let Some(since) = summary.failing_since_ns {
                p.warning role="alert" {
                    "Failing since " (at_ns(since, zone)) " (" (age(now.saturating_sub(since))) "): "
                    "no attempt has been delivered since then."
                }
            }
            dl.facts {
                dt { "URL" } dd { code { (endpoint.url_for_display()) } }
                dt { "Types" } dd { (types.join(", ")) }
                dt { "Patient data" }
                dd {
                    @if endpoint.phi { "Yes: messages carry the patient's MRN" } @else { "No: messages carry no MRN" }
                }
                dt { "Oldest change queued" }
                dd {
                    @match summary.oldest_queued_ns {
                        Some(oldest) => { (age(now.saturating_sub(oldest))) " ago (" (at_ns(oldest, zone)) ")" },
                        None => "none",
                    }
                }
                dt { "Last delivered" }
                dd {
                    @match summary.last_delivered_ns {
                        Some(last) => (at_ns(last, zone)),
                        None => "never",
                    }
                }
            }
            dl.counts {
                div { dt { "Queued" } dd { (summary.queued) } }
                div { dt { "Failed" } dd { (summary.failed) } }
            }
            h3 { "Messages needing attention" }
            @if standing.failed.is_empty() && standing.retrying.is_empty() {
                p.note { "None: no message has failed, and none is being retried." }
            } @else {
                @if summary.failed > i64::from(SHOWN) {
                    p.note { "The newest " (SHOWN) " failed messages are listed." }
                }
                @if may_operate && summary.failed > 0 {
                    form method="post" action=(resend) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Send all failed again (" (summary.failed) ")" }
                    }
                } @else if summary.failed > 0 {
                    p.note { "Sending messages again needs a token with the operate permission." }
                }
                div.table-wrap {
                    table {
                        caption.visually-hidden { "Messages to " (endpoint.name) " that failed or are being retried, newest first" }
                        thead {
                            tr {
                                th scope="col" { "Webhook id" }
                                th scope="col" { "Job" }
                                th scope="col" { "Type" }
                                th scope="col" { "Changed" }
                                th scope="col" { "State" }
                                th scope="col" { "Attempts" }
                                th scope="col" { "Last status" }
                                th scope="col" { "Last error" }
                                th scope="col" { "Next attempt" }
                                @if may_operate { th scope="col" { span.visually-hidden { "Action" } } }
                            }
                        }
                        tbody {
                            @for message in standing.failed.iter().chain(&standing.retrying) {
                                tr {
                                    td.id { (message.id) }
                                    td.id { a href=(job_href(&message.job_id)) { (cell(&message.job_id)) } }
                                    td { (message.kind.webhook_type()) }
                                    td { (at_ns(message.change_at_ns, zone)) }
                                    td { (state_badge(message.state)) }
                                    td { (message.attempts) }
                                    td { @if let Some(status) = message.last_status { (status) } @else { "none" } }
                                    td { (cell(message.last_error.as_deref().unwrap_or(""))) }
                                    td {
                                        @if message.state == MessageState::Queued { (at_ns(message.next_attempt_ns, zone)) }
                                    }
                                    @if may_operate {
                                        td {
                                            @if message.state == MessageState::Failed {
                                                form.inline method="post" action=(resend) {
                                                    input type="hidden" name="csrf" value=(session.csrf);
                                                    input type="hidden" name="id" value=(message.id);
                                                    button type="submit" { "Send again" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn state_badge(state: MessageState) -> Markup {
    match state {
        MessageState::Failed => html! { span.badge.failed { "failed" } },
        MessageState::Queued => html! { span.badge.pending { "retrying" } },
        MessageState::Delivered => html! { span.badge.created { "delivered" } },
    }
}

fn resend_href(endpoint: &str) -> String {
    format!("/ui/outbound/{}/resend", html::encode_query(endpoint))
}

/// A span of time as people say it: its two largest units ("2 days 5
/// hours", "3 hours 12 minutes"), or minutes or seconds when shorter.
fn age(ns: i64) -> String {
    let seconds = ns.max(0) / 1_000_000_000;
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    let unit = |n: i64, name: &str| format!("{n} {name}{}", if n == 1 { "" } else { "s" });
    match (days, seconds / 3_600, seconds / 60) {
        (0, 0, 0) => unit(seconds, "second"),
        (0, 0, _) => unit(minutes, "minute"),
        (0, _, _) if minutes == 0 => unit(hours, "hour"),
        (0, _, _) => format!("{} {}", unit(hours, "hour"), unit(minutes, "minute")),
        _ if hours == 0 => unit(days, "day"),
        _ => format!("{} {}", unit(days, "day"), unit(hours, "hour")),
    }
}

/// The **Send again** forms: the message's id (none: every failed message
/// of the endpoint), beside the CSRF token.
#[derive(Deserialize)]
pub struct ResendForm {
    id: Option<String>,
}

/// `POST /ui/outbound/{endpoint}/resend` (`operate`): queues one failed
/// message again, or every failed one of the endpoint without an `id`,
/// then back to the page once the audit row is committed.
pub async fn resend(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    Path(endpoint): Path<String>,
    CsrfChecked(form): CsrfChecked<ResendForm>,
) -> Response {
    if !session.caller.may(Permission::Operate) {
        return html::error_page(
            StatusCode::FORBIDDEN,
            "Sending messages again needs a token with the operate permission.",
        );
    }
    if !state
        .app
        .outbound
        .iter()
        .any(|known| known.name == endpoint)
    {
        return html::error_page(
            StatusCode::NOT_FOUND,
            "No outgoing webhook endpoint has this name.",
        );
    }
    let sent = match state
        .app
        .store
        .resend_outbound(&endpoint, form.id.clone())
        .await
    {
        Ok(sent) => sent,
        Err(error) => return html::unavailable(&error),
    };
    // An id that matched no failed message is recorded by its length only:
    // it was typed (or edited), so it could be anything.
    let target = match (&form.id, sent) {
        (Some(id), 0) => format!(
            "endpoint {endpoint} message {}",
            crate::audit::unmatched(id)
        ),
        (Some(id), _) => format!("endpoint {endpoint} message {id}"),
        (None, count) => format!("endpoint {endpoint} all failed ({count})"),
    };
    let action = Action {
        actor: &session.caller.name,
        action: "console.outbound.resend",
        target: crate::audit::bounded(&target),
        request_id: request_id.0.as_deref(),
    };
    if let Err(error) = state.app.audit.record_committed(action).await {
        // The messages are queued already: their row is queued too, and
        // written once the database takes writes again.
        tracing::warn!(error = %error, "console: messages were sent again, but their audit row could not be committed yet");
        state.audit(&session, &request_id, "console.outbound.resend", target);
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/outbound")]).into_response()
}

#[cfg(test)]
mod tests {
    use super::age;

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn ages_read_as_people_say_them() {
        for (seconds, said) in [
            (-5, "0 seconds"),
            (0, "0 seconds"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "1 minute"),
            (61 * 60 - 1, "1 hour"),
            (3_600, "1 hour"),
            (3_600 + 120, "1 hour 2 minutes"),
            (2 * 86_400, "2 days"),
            (2 * 86_400 + 5 * 3_600 + 59, "2 days 5 hours"),
            (86_400 + 3_599, "1 day"),
        ] {
            assert_eq!(age(seconds * SECOND), said, "{seconds} s");
        }
    }
}
