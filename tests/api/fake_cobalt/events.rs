//! `GET /v1/webhook-events`: the account's events, filtered, sorted and
//! paged as Cobalt documents, in either response shape.

use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use super::server::{error, unauthorized};
use super::state::{Record, Shared};
use super::{DEFAULT_WEBHOOK_URL, EVENTS_PATH, STAGING_WEBHOOK_URL, Shape};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 100;

impl Shared {
    pub(super) fn list(&self, headers: &HeaderMap, uri: &Uri) -> (Option<Duration>, Response) {
        let mut inner = self.lock();
        inner
            .event_queries
            .push(uri.query().unwrap_or_default().to_owned());
        let (stall, failure) = Self::arrive(&mut inner, EVENTS_PATH);
        if let Some(failure) = failure {
            return (stall, failure);
        }
        if inner.malformed > 0 {
            inner.malformed -= 1;
            let truncated = (
                [("content-type", "application/json")],
                r#"{"success":true,"webhook_events":"oops""#,
            );
            return (stall, truncated.into_response());
        }
        let Some(reference_id) = Self::authenticate(&mut inner, headers) else {
            return (stall, unauthorized());
        };
        let query = match ListQuery::parse(uri) {
            Ok(query) => query,
            Err(message) => return (stall, error(StatusCode::BAD_REQUEST, &message)),
        };
        let mut selected: Vec<(usize, &Record)> = inner
            .events
            .iter()
            .enumerate()
            .filter(|(_, r)| r.reference_id() == reference_id && query.matches(r))
            .collect();
        // Creation time, then creation order for equal (or unreadable) times.
        selected.sort_by_key(|&(i, r)| (r.created.unwrap_or(OffsetDateTime::UNIX_EPOCH), i));
        if !query.ascending {
            selected.reverse();
        }
        let webhook_url = self.webhook_url();
        let primary_url = webhook_url.as_deref().unwrap_or(DEFAULT_WEBHOOK_URL);
        let rows: Vec<Value> = match inner.shape {
            Shape::A => selected.iter().map(|(_, r)| shape_a(r)).collect(),
            Shape::B => selected
                .iter()
                .flat_map(|(_, r)| [shape_b(r, primary_url), shape_b(r, STAGING_WEBHOOK_URL)])
                .collect(),
        };
        let total_count = rows.len();
        // An empty list still has one (empty) page: current_page 1,
        // total_pages 1, so "page < total_pages" loops end at once.
        let total_pages = total_count.div_ceil(query.page_size).max(1);
        let page: Vec<Value> = rows
            .into_iter()
            .skip((query.page - 1).saturating_mul(query.page_size))
            .take(query.page_size)
            .collect();
        let body = json!({
            "success": true,
            "webhook_events": page,
            "pagination": {
                "current_page": query.page,
                "total_pages": total_pages,
                "total_count": total_count,
                "page_size": query.page_size,
            },
        });
        (stall, Json(body).into_response())
    }
}

fn shape_a(record: &Record) -> Value {
    let mut row = record.envelope.as_object().cloned().unwrap_or_default();
    row.insert("status".into(), json!(record.status));
    row.insert("delivered".into(), json!(record.status == "success"));
    row.insert("delivery_attempts".into(), json!(record.attempts));
    row.insert("last_delivery_attempt".into(), json!(record.last_attempt));
    row.insert("response_status_code".into(), json!(record.response_code));
    Value::Object(row)
}

fn shape_b(record: &Record, webhook_url: &str) -> Value {
    let envelope = &record.envelope;
    json!({
        "event_id": envelope["id"],
        "event_type": envelope["type"],
        "webhook_url": webhook_url,
        "delivery_status": record.status,
        "data": envelope["data"],
        "created_at": envelope["created"],
        "job_id": envelope["job_id"],
        "access_token_reference_id": record.reference_id(),
    })
}

/// The query of `GET /v1/webhook-events`. Empty values count as absent;
/// unknown parameters are ignored; for a repeated one the first wins.
struct ListQuery {
    job_id: Option<String>,
    event_type: Option<String>,
    delivery_status: Option<String>,
    start_date: Option<Date>,
    end_date: Option<Date>,
    page: usize,
    page_size: usize,
    ascending: bool,
}

impl ListQuery {
    fn parse(uri: &Uri) -> Result<Self, String> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| "Invalid query string".to_owned())?;
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(key, value)| key == name && !value.is_empty())
                .map(|(_, value)| value.as_str())
        };
        let date = |name: &str| {
            value(name)
                .map(|text| {
                    Date::parse(text, format_description!("[year]-[month]-[day]"))
                        .map_err(|_| format!("Invalid {name}. Expected YYYY-MM-DD"))
                })
                .transpose()
        };
        let number = |name: &str, default: usize| match value(name) {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!("Invalid {name}. Must be a positive integer")),
            },
        };
        let delivery_status = value("delivery_status").or_else(|| value("status"));
        if let Some(status) = delivery_status {
            if !["success", "failed", "pending"].contains(&status) {
                return Err(
                    "Invalid delivery_status. Must be one of: success, failed, pending".to_owned(),
                );
            }
        }
        let page_size = number("page_size", DEFAULT_PAGE_SIZE)?;
        if page_size > MAX_PAGE_SIZE {
            return Err(format!("page_size must be at most {MAX_PAGE_SIZE}"));
        }
        let ascending = match value("sort") {
            None | Some("-created_at") => false,
            Some("created_at") => true,
            Some(_) => {
                return Err("Invalid sort. Must be one of: created_at, -created_at".to_owned());
            }
        };
        Ok(Self {
            job_id: value("job_id").map(str::to_owned),
            event_type: value("event_type").map(str::to_owned),
            delivery_status: delivery_status.map(str::to_owned),
            start_date: date("start_date")?,
            end_date: date("end_date")?,
            page: number("page", 1)?,
            page_size,
            ascending,
        })
    }

    fn matches(&self, record: &Record) -> bool {
        let date = record.created.map(|t| t.to_offset(UtcOffset::UTC).date());
        self.job_id
            .as_ref()
            .is_none_or(|wanted| record.job_id().as_ref() == Some(wanted))
            && self
                .event_type
                .as_ref()
                .is_none_or(|wanted| record.envelope["type"] == wanted.as_str())
            && self
                .delivery_status
                .as_ref()
                .is_none_or(|wanted| &record.status == wanted)
            && self
                .start_date
                .is_none_or(|start| date.is_some_and(|d| d >= start))
            && self
                .end_date
                .is_none_or(|end| date.is_some_and(|d| d <= end))
    }
}
