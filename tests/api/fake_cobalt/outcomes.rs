//! A note's outcome: the `patient_note.created` or `patient_note.failed`
//! event the fake creates for it (failed when the MRN ends with `-F`), and
//! its delivery to the webhook URL under Cobalt's documented retry policy,
//! unless the loss plan says it is lost.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ids::{new_emr_note_id, new_event_id, now_rfc3339};
use super::notes::Note;
use super::state::{Pending, Record, Shared};
use super::{FAILURE_REASON, Loss};
use crate::helpers;

const FIRST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_DELAY: Duration = Duration::from_secs(1);
const RETRY_TIMEOUT: Duration = Duration::from_secs(2);

/// How one delivery attempt ended.
enum Attempt {
    Answered(StatusCode),
    TimedOut,
    NetworkError,
}

impl Shared {
    /// Creates the outcome event of `note` after `delay`, records it, then
    /// delivers it unless it is lost.
    pub(super) async fn produce_outcome(self: Arc<Self>, note: Note, loss: Loss, delay: Duration) {
        // Settled even if the task is aborted or panics.
        let _pending = Pending(self.clone());
        tokio::time::sleep(delay).await;
        let mrn = note.fields["patient_mrn"].as_str().unwrap_or_default();
        let (event_type, data) = if mrn.ends_with("-F") {
            (
                "patient_note.failed",
                json!({ "patient_note_id": note.patient_note_id, "failure_reason": FAILURE_REASON }),
            )
        } else {
            (
                "patient_note.created",
                json!({
                    "patient_note_id": note.patient_note_id,
                    "emr_note_id": new_emr_note_id(),
                    "patient_mrn": note.fields["patient_mrn"],
                    "location_id": note.fields["location_id"],
                    "subject": note.fields["subject"],
                    "note": note.fields["note"],
                }),
            )
        };
        let created = now_rfc3339();
        let id = new_event_id();
        let envelope = json!({
            "id": id,
            "access_token_reference_id": note.reference_id,
            "object": "event",
            "created": created,
            "type": event_type,
            "job_id": note.job_id,
            "data": data,
        });
        let body = serde_json::to_string(&envelope).unwrap();
        let webhook_url = self.webhook_url();
        let (status, attempts, last_attempt, response_code) = match (&webhook_url, loss) {
            (None, _) | (Some(_), Loss::NoAnswer) => ("failed", 0, None, None),
            (Some(_), Loss::Timeout) => ("failed", 1, Some(created.clone()), None),
            (Some(_), Loss::ServerErrorThenLostRetry) => {
                ("failed", 2, Some(created.clone()), Some(503))
            }
            (Some(_), Loss::None) => ("pending", 0, None, None),
        };
        let index = {
            let mut inner = self.lock();
            if webhook_url.is_some() {
                inner.losses.push((id.clone(), loss));
            }
            inner.events.push(Record {
                envelope,
                created: OffsetDateTime::parse(&created, &Rfc3339).ok(),
                status: status.to_owned(),
                attempts,
                last_attempt,
                response_code,
            });
            inner.events.len() - 1
        };
        if let (Some(url), Loss::None) = (&webhook_url, loss) {
            self.deliver(url, index, &body, &id, &created).await;
        }
    }

    /// Cobalt's documented policy: one attempt with a 5 s timeout; one retry
    /// 1 s later with a 2 s timeout after a 5xx, a 429 or a network error;
    /// none after a timeout or another 4xx.
    async fn deliver(&self, url: &str, index: usize, body: &str, id: &str, created: &str) {
        let first = self
            .attempt(url, index, body, id, created, 1, FIRST_ATTEMPT_TIMEOUT)
            .await;
        let retry = match first {
            Attempt::Answered(status) => {
                status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
            }
            Attempt::TimedOut => false,
            Attempt::NetworkError => true,
        };
        let last = if retry {
            tokio::time::sleep(RETRY_DELAY).await;
            self.attempt(url, index, body, id, created, 2, RETRY_TIMEOUT)
                .await
        } else {
            first
        };
        let delivered = matches!(last, Attempt::Answered(status) if status.is_success());
        self.lock().events[index].status = if delivered { "success" } else { "failed" }.to_owned();
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        url: &str,
        index: usize,
        body: &str,
        id: &str,
        created: &str,
        number: u32,
        timeout: Duration,
    ) -> Attempt {
        let sent = self
            .client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("cobalt-verification", helpers::sign(body.as_bytes()))
            .header("webhook-id", id)
            .header("webhook-timestamp", created)
            .header("webhook-attempt", number.to_string())
            .body(body.to_owned())
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => Attempt::Answered(response.status()),
            Err(e) if e.is_timeout() => Attempt::TimedOut,
            Err(_) => Attempt::NetworkError,
        };
        let mut inner = self.lock();
        inner.attempts += 1;
        let code = match outcome {
            Attempt::Answered(status) => {
                if status.is_success() {
                    inner.acknowledged += 1;
                }
                Some(status.as_u16())
            }
            _ => None,
        };
        let record = &mut inner.events[index];
        record.attempts += 1;
        record.last_attempt = Some(now_rfc3339());
        record.response_code = code;
        outcome
    }
}
