//! What a verified delivery says, parsed once into types the store trusts.
//!
//! A body is read as a JSON object and classified: a patient-note outcome
//! with every field its job state needs, an event of another type (kept, not
//! acted on), or a patient-note event missing something (kept as rejected,
//! answered 422). Error messages name fields, never their values: the values
//! may be patient data.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::job::{JobOutcome, JobStatus, Rank};

pub const CREATED: &str = "patient_note.created";
pub const FAILED: &str = "patient_note.failed";

/// Every field a patient-note event can be rejected for: the `field` of a
/// [`FieldError`], and of the metrics that count rejections.
pub const REJECTABLE_FIELDS: [&str; 8] = [
    "type",
    "job_id",
    "created",
    "data",
    "data.patient_note_id",
    "data.emr_note_id",
    "data.failure_reason",
    "data.reasons",
];

/// Longest event id accepted; Cobalt's are a few dozen characters.
pub const MAX_EVENT_ID_LEN: usize = 255;

/// Why a body is not a JSON object we can read at all (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body is not UTF-8 text")]
    NotUtf8,
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("the event has no id: the body has no `id` and there is no webhook-id header")]
    NoId,
    #[error("the event id must be a non-empty string of at most 255 characters")]
    BadId,
}

/// A field of a patient-note event that is missing or of the wrong type (422).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field} {problem}")]
pub struct FieldError {
    pub field: &'static str,
    pub problem: &'static str,
}

/// A delivery's body, parsed: the envelope fields every event has, whether
/// or not its type is one we act on.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub event_id: String,
    pub event_type: Option<String>,
    /// Best-effort ids, kept in the event log even for rejected events.
    pub job_id: Option<String>,
    pub patient_note_id: Option<String>,
    pub created: Option<String>,
    /// What the event means for job state.
    pub meaning: Meaning,
}

#[derive(Debug, Clone)]
pub enum Meaning {
    /// A complete patient-note outcome.
    Outcome(Box<JobOutcome>),
    /// A type this service keeps but does not act on.
    Other,
    /// A patient-note event that cannot decide a job's state.
    Invalid(FieldError),
}

/// Checks that a body is UTF-8 text, the form the event log keeps.
pub fn text(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)
}

/// Reads a verified body. `header_id` is the `webhook-id` header, used when
/// the body has no `id`.
pub fn parse(body: &str, header_id: Option<&str>) -> Result<Envelope, BodyError> {
    // serde_json's parse errors name a position and a kind, never content.
    let value: Value = serde_json::from_str(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(BodyError::NotObject);
    };

    let event_id = match object.get("id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) => header_id.ok_or(BodyError::NoId)?.to_owned(),
        Some(_) => return Err(BodyError::BadId),
    };
    if event_id.is_empty() || event_id.chars().count() > MAX_EVENT_ID_LEN {
        return Err(BodyError::BadId);
    }

    let event_type = object
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let data = object.get("data").and_then(Value::as_object);
    let meaning = match event_type.as_deref() {
        Some(CREATED) => outcome(&event_id, &object, JobStatus::Created),
        Some(FAILED) => outcome(&event_id, &object, JobStatus::Failed),
        Some(_) => Meaning::Other,
        None => Meaning::Invalid(field_error(&object, "type")),
    };

    Ok(Envelope {
        job_id: job_id(object.get("job_id")).ok(),
        patient_note_id: data
            .and_then(|d| d.get("patient_note_id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        created: object
            .get("created")
            .and_then(Value::as_str)
            .map(str::to_owned),
        event_id,
        event_type,
        meaning,
    })
}

fn outcome(event_id: &str, object: &Map<String, Value>, status: JobStatus) -> Meaning {
    match read_outcome(event_id, object, status) {
        Ok(outcome) => Meaning::Outcome(Box::new(outcome)),
        Err(error) => Meaning::Invalid(error),
    }
}

fn read_outcome(
    event_id: &str,
    object: &Map<String, Value>,
    status: JobStatus,
) -> Result<JobOutcome, FieldError> {
    let data = match object.get("data") {
        Some(Value::Object(data)) => data,
        Some(_) => return Err(wrong("data", "must be an object")),
        None => return Err(wrong("data", "is missing")),
    };
    let patient_note_id = required_string(data, "patient_note_id", "data.patient_note_id")?;
    let job_id = job_id(object.get("job_id"))?;
    let created = required_string(object, "created", "created")?;
    let created_at = OffsetDateTime::parse(&created, &Rfc3339)
        .ok()
        // Ranks store the instant as i64 nanoseconds: years 1678 to 2261.
        .filter(|t| i64::try_from(t.unix_timestamp_nanos()).is_ok())
        .ok_or_else(|| wrong("created", "must be an RFC 3339 timestamp"))?;

    let (emr_note_id, failure_reason, reasons) = match status {
        JobStatus::Created => (
            Some(required_string(data, "emr_note_id", "data.emr_note_id")?),
            None,
            None,
        ),
        JobStatus::Failed => {
            let reason = match data.get("failure_reason") {
                Some(Value::String(reason)) => reason.clone(),
                Some(_) => return Err(wrong("data.failure_reason", "must be a string")),
                None => return Err(wrong("data.failure_reason", "is missing")),
            };
            let reasons = match data.get("reasons") {
                None | Some(Value::Null) => None,
                Some(reasons @ Value::Array(_)) => Some(reasons.to_string()),
                Some(_) => return Err(wrong("data.reasons", "must be an array")),
            };
            (None, Some(reason), reasons)
        }
    };

    Ok(JobOutcome {
        patient_note_id,
        job_id,
        rank: Rank {
            status,
            created_at,
            event_id: event_id.to_owned(),
        },
        created,
        emr_note_id,
        failure_reason,
        reasons,
        patient_mrn: optional_string(data, "patient_mrn"),
        location_id: optional_string(data, "location_id"),
        access_token_reference_id: optional_string(object, "access_token_reference_id"),
    })
}

/// `job_id` is a string in events and an integer in Cobalt's create-note
/// answer; either is kept as its decimal string.
fn job_id(value: Option<&Value>) -> Result<String, FieldError> {
    match value {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        None | Some(Value::Null) => Err(wrong("job_id", "is missing")),
        Some(_) => Err(wrong("job_id", "must be a non-empty string or an integer")),
    }
}

fn required_string(
    object: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<String, FieldError> {
    match object.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(wrong(field, "is missing")),
        Some(_) => Err(wrong(field, "must be a non-empty string")),
    }
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn field_error(object: &Map<String, Value>, field: &'static str) -> FieldError {
    match object.get(field) {
        None | Some(Value::Null) => wrong(field, "is missing"),
        Some(_) => wrong(field, "must be a string"),
    }
}

fn wrong(field: &'static str, problem: &'static str) -> FieldError {
    debug_assert!(
        REJECTABLE_FIELDS.contains(&field),
        "{field} is missing from REJECTABLE_FIELDS"
    );
    FieldError { field, problem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/example-created.json")).unwrap()
    }

    fn parse_value(value: &Value) -> Envelope {
        parse(&value.to_string(), None).unwrap()
    }

    fn invalid_field(value: &Value) -> &'static str {
        match parse_value(value).meaning {
            Meaning::Invalid(error) => error.field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn the_documented_examples_parse_into_outcomes() {
        let Meaning::Outcome(outcome) = parse_value(&created()).meaning else {
            panic!("created example did not parse");
        };
        assert_eq!(outcome.job_id, "12345");
        assert_eq!(outcome.rank.status, JobStatus::Created);
        assert_eq!(
            outcome.emr_note_id.as_deref(),
            Some("10d1c8d3-aa69-472a-a9eb-f5fbd12bf99f")
        );

        let failed: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/example-failed.json")).unwrap();
        let Meaning::Outcome(outcome) = parse_value(&failed).meaning else {
            panic!("failed example did not parse");
        };
        assert_eq!(outcome.rank.status, JobStatus::Failed);
        assert_eq!(
            outcome.failure_reason.as_deref(),
            Some("Failed to create patient note")
        );
    }

    #[test]
    fn an_integer_job_id_becomes_its_decimal_string() {
        let mut event = created();
        event["job_id"] = json!(987654321);
        let Meaning::Outcome(outcome) = parse_value(&event).meaning else {
            panic!()
        };
        assert_eq!(outcome.job_id, "987654321");
    }

    #[test]
    fn each_missing_or_mistyped_field_is_named() {
        let cases: [(&str, Value, &str); 8] = [
            ("/data/emr_note_id", Value::Null, "data.emr_note_id"),
            ("/data/emr_note_id", json!(7), "data.emr_note_id"),
            ("/data/patient_note_id", json!(""), "data.patient_note_id"),
            ("/job_id", json!(1.5), "job_id"),
            ("/job_id", json!(null), "job_id"),
            ("/created", json!("yesterday"), "created"),
            ("/data", json!([]), "data"),
            ("/type", json!(5), "type"),
        ];
        for (pointer, replacement, field) in cases {
            let mut event = created();
            *event.pointer_mut(pointer).unwrap() = replacement;
            assert_eq!(invalid_field(&event), field, "{pointer}");
        }
        let mut event = created();
        event.as_object_mut().unwrap().remove("created");
        assert_eq!(invalid_field(&event), "created");
    }

    #[test]
    fn failed_events_need_a_reason_and_keep_reasons() {
        let mut failed = json!({
            "id": "evt_f", "type": FAILED, "job_id": "1", "created": "2025-10-09T10:35:00Z",
            "data": { "patient_note_id": "pn", "failure_reason": "EMR unavailable",
                      "reasons": [{ "code": "emr_down", "description": "EMR unavailable" }] }
        });
        let Meaning::Outcome(outcome) = parse_value(&failed).meaning else {
            panic!()
        };
        assert_eq!(
            outcome.reasons.as_deref(),
            Some(r#"[{"code":"emr_down","description":"EMR unavailable"}]"#)
        );
        failed["data"]["reasons"] = json!("x");
        assert_eq!(invalid_field(&failed), "data.reasons");
        failed["data"]
            .as_object_mut()
            .unwrap()
            .remove("failure_reason");
        assert_eq!(invalid_field(&failed), "data.failure_reason");
    }

    #[test]
    fn other_types_are_kept_but_not_acted_on() {
        let event = json!({ "id": "evt_a", "type": "appointment.created", "data": {} });
        assert!(matches!(parse_value(&event).meaning, Meaning::Other));
    }

    #[test]
    fn the_id_comes_from_the_body_then_the_header() {
        let body = r#"{"type":"x"}"#;
        assert_eq!(parse(body, Some("evt_h")).unwrap().event_id, "evt_h");
        assert_eq!(parse(body, None).unwrap_err(), BodyError::NoId);
        assert_eq!(
            parse(r#"{"id":"evt_b"}"#, Some("evt_h")).unwrap().event_id,
            "evt_b"
        );
        assert_eq!(
            parse(r#"{"id":3}"#, Some("evt_h")).unwrap_err(),
            BodyError::BadId
        );
        let long = format!(r#"{{"id":"{}"}}"#, "e".repeat(256));
        assert_eq!(parse(&long, None).unwrap_err(), BodyError::BadId);
    }

    #[test]
    fn unreadable_bodies_say_what_is_wrong() {
        assert_eq!(text(b"\xff\xfe").unwrap_err(), BodyError::NotUtf8);
        assert!(matches!(
            parse("{", None).unwrap_err(),
            BodyError::NotJson(_)
        ));
        assert_eq!(parse("[1]", None).unwrap_err(), BodyError::NotObject);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse(&deep, None).unwrap_err(),
            BodyError::NotJson(_)
        ));
    }
}
