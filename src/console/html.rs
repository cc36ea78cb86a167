//! What every page shares: the frame (navigation, sign-out), the
//! stylesheet, and the formatting of times, MRNs and links.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use maud::{DOCTYPE, Markup, html};

use super::Session;

/// One stylesheet, compiled in; light and dark follow the system setting.
const STYLESHEET: &str = include_str!("style.css");

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// The tab's icon (browsers ask for one; without it, a 404 each page).
const ICON: &str = include_str!("icon.svg");

pub async fn icon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        ICON,
    )
        .into_response()
}

/// The pages, for the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Today,
    Jobs,
    Overdue,
    Outbound,
    Audit,
    None,
}

/// A whole page: `title`, the navigation with `current` marked, `body`.
pub fn document(title: &str, current: Nav, session: Option<&Session>, body: Markup) -> Markup {
    document_refreshing(title, current, session, None, body)
}

/// A page that reloads itself every `refresh` seconds, when given (a
/// running recovery; no script needed).
pub fn document_refreshing(
    title: &str,
    current: Nav,
    session: Option<&Session>,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · cobalt-receiver" }
                link rel="stylesheet" href="/ui/style.css";
                link rel="icon" href="/ui/icon.svg" type="image/svg+xml";
            }
            body {
                header.top {
                    a.brand href="/ui" { "cobalt-receiver" }
                    @if let Some(session) = session {
                        nav aria-label="Main" {
                            ul {
                                (nav_item("/ui", "Today", current == Nav::Today))
                                (nav_item("/ui/jobs", "Jobs", current == Nav::Jobs))
                                (nav_item("/ui/overdue", "Overdue", current == Nav::Overdue))
                                (nav_item("/ui/outbound", "Outbound", current == Nav::Outbound))
                                (nav_item("/ui/audit", "Audit", current == Nav::Audit))
                            }
                        }
                        form.search method="get" action="/ui/search" role="search" {
                            label for="q" .visually-hidden { "Find a job by id" }
                            input #q type="search" name="q" placeholder="job, note, EMR note or event id" required;
                            button type="submit" { "Find" }
                        }
                        form.sign-out method="post" action="/ui/sign-out" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            span.who { (session.caller.name) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn nav_item(href: &str, label: &str, current: bool) -> Markup {
    html! {
        li {
            @if current {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    }
}

/// An HTML page for an error, with its status.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { (status.canonical_reason().unwrap_or("Error")) }
        p { (message) }
        p { a href="/ui" { "Back to Today" } }
    };
    (status, document("Error", Nav::None, None, body)).into_response()
}

/// A store failure, as a page: 503, with the cause (never data); a sealed
/// value that does not open is a 500 (retrying will not help).
pub fn unavailable(error: &crate::store::StoreError) -> Response {
    if let crate::store::StoreError::Sealed(sealed) = error {
        tracing::error!(key_id = sealed.key_id(), error = %sealed, "console: a sealed value does not open");
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "A stored value could not be opened with the configured keys. The service's log names the key.",
        );
    }
    tracing::warn!(error = %error, "console: the database failed");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer. Try again in a moment.",
    )
}

/// `ns` (unix nanoseconds) in the clinic's zone.
pub fn at_ns(ns: i64, zone: &TimeZone) -> String {
    Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| {
            t.to_zoned_datetime(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_default()
}

/// An RFC 3339 time as the database keeps it, in the clinic's zone.
pub fn at(text: &str, zone: &TimeZone) -> String {
    match text.parse::<Timestamp>() {
        Ok(t) => t
            .to_zoned_datetime(zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => text.to_owned(),
    }
}

/// Longest filter value the Jobs page accepts (ids and reasons are far
/// shorter); a longer value gets no link to filter by it.
pub const MAX_FILTER_VALUE: usize = 500;

/// Percent-encodes a query value.
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A query string from the pairs whose value is set.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| {
            value
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", encode_query(v)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The page for a job.
pub fn job_href(job_id: &str) -> String {
    format!("/ui/jobs/{}", encode_query(job_id))
}

/// A status as a badge.
pub fn status_badge(status: &str, overdue: bool) -> Markup {
    let (class, label) = match (status, overdue) {
        ("created", _) => ("badge created", "created"),
        ("failed", _) => ("badge failed", "failed"),
        (_, true) => ("badge overdue", "overdue"),
        _ => ("badge pending", "pending"),
    };
    html! { span class=(class) { (label) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query(&[("q", Some("a b&c=d")), ("x", None), ("y", Some(""))]),
            "?q=a%20b%26c%3Dd"
        );
        assert_eq!(query(&[]), "");
    }
}
