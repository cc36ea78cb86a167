//! Webhook bodies as Cobalt sends them (see `docs/cobalt.md`), the patient
//! data they carry, and their signatures under the test secrets.

use cobalt_receiver::secret::Secret;
use cobalt_receiver::signature;
use serde_json::{Value, json};

use super::SECRET;

pub fn sign(body: &[u8]) -> String {
    signature::sign(&Secret::new(SECRET), body)
}

pub fn sign_with(secret: &str, body: &[u8]) -> String {
    signature::sign(&Secret::new(secret), body)
}

/// Patient data used in test events; the log test searches for it.
pub const NOTE_TEXT: &str = "Patient reports chest pain radiating to the left arm since Tuesday";
pub const SUBJECT: &str = "Cardiology follow-up Zebulon";
pub const MRN: &str = "MRN-PHI-889977";

pub fn created_event(event_id: &str, job_id: &str, note_id: &str, created: &str) -> Value {
    json!({
        "id": event_id,
        "access_token_reference_id": "user_test",
        "object": "event",
        "created": created,
        "type": "patient_note.created",
        "job_id": job_id,
        "data": {
            "patient_note_id": note_id,
            "emr_note_id": format!("emr-{event_id}"),
            "patient_mrn": MRN,
            "location_id": "loc-1",
            "subject": SUBJECT,
            "note": NOTE_TEXT
        }
    })
}

pub fn failed_event(event_id: &str, job_id: &str, note_id: &str, created: &str) -> Value {
    json!({
        "id": event_id,
        "access_token_reference_id": "user_test",
        "object": "event",
        "created": created,
        "type": "patient_note.failed",
        "job_id": job_id,
        "data": {
            "patient_note_id": note_id,
            "failure_reason": format!("failure of {event_id}"),
            "reasons": [{ "code": "emr_rejected", "description": format!("reason of {event_id}") }]
        }
    })
}
