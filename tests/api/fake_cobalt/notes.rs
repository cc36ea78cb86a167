//! `POST /v1/patient-notes`: a note is checked as Cobalt checks it,
//! accepted with a job id, and its outcome scheduled.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ids::new_note_id;
use super::server::{error, unauthorized};
use super::state::Shared;
use super::{LOCATIONS, Loss, NOTES_PATH};

/// A note accepted by `POST /v1/patient-notes`, waiting for its outcome.
pub(super) struct Note {
    pub(super) job_id: String,
    pub(super) patient_note_id: String,
    pub(super) reference_id: String,
    pub(super) fields: Map<String, Value>,
}

impl Shared {
    pub(super) fn accept_note(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Option<Duration>, Response) {
        let mut inner = self.lock();
        let (stall, failure) = Self::arrive(&mut inner, NOTES_PATH);
        if let Some(failure) = failure {
            return (stall, failure);
        }
        let Some(reference_id) = Self::authenticate(&mut inner, headers) else {
            return (stall, unauthorized());
        };
        let fields = match validate_note(body) {
            Ok(fields) => fields,
            Err(message) => return (stall, error(StatusCode::BAD_REQUEST, &message)),
        };
        let job_id = inner.next_job_id;
        inner.next_job_id += 1;
        let note = Note {
            job_id: job_id.to_string(),
            patient_note_id: new_note_id(),
            reference_id,
            fields,
        };
        inner
            .jobs
            .push((note.job_id.clone(), note.patient_note_id.clone()));
        // Decided now, in the order notes are accepted, so that the seeded
        // losses do not depend on the timing of the outcome tasks.
        let loss = match (self.webhook_url(), inner.loss.as_mut()) {
            (Some(_), Some(plan)) => plan.draw(),
            _ => Loss::None,
        };
        let response = Json(json!({
            "success": true,
            "message": "Patient note processing. A webhook event will be sent upon completion.",
            "patient_note_id": note.patient_note_id,
            "job_id": job_id,
        }))
        .into_response();
        inner.pending += 1;
        let delay = inner.outcome_delay;
        let task = tokio::spawn(self.clone().produce_outcome(note, loss, delay));
        inner.tasks.push(task.abort_handle());
        (stall, response)
    }
}

/// The note's fields, or Cobalt's message for the first one wrong.
fn validate_note(body: &[u8]) -> Result<Map<String, Value>, String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err("Request body must be a JSON object".to_owned());
    };
    for name in ["note", "subject", "patient_mrn", "location_id"] {
        match fields.get(name).and_then(Value::as_str) {
            Some(value) if !value.is_empty() => {}
            _ => return Err(format!("Missing required field: {name}")),
        }
    }
    if !LOCATIONS.contains(&fields["location_id"].as_str().unwrap()) {
        return Err(format!(
            "Invalid location_id. Must be one of: {}",
            LOCATIONS.join(", ")
        ));
    }
    Ok(fields)
}
