//! What a verified delivery says, parsed once into types the store trusts.
//!
//! A body is read as a JSON object and classified: a patient-note outcome
//! with every field its job state needs, an event of another type (kept, not
//! acted on), or a patient-note event missing something (kept as rejected,
//! answered 422). Error messages name fields, never their values: the values
//! may be patient data.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
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
    /// Where the body's patient data that the service never needs lies:
    /// the byte ranges of every `data.note` and `data.subject` value, in
    /// order; `None` when a `data` member is not an object (its shape is
    /// then unknown). Found in the same pass, so keeping a payload without
    /// them reads the body no second time.
    pub patient_data: Option<Vec<Range<usize>>>,
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
///
/// Only the members the envelope needs are kept, and strings without
/// escapes are borrowed from the body: no tree of the whole document is
/// built. Every other value is still read through and checked as a tree
/// would be (a number out of range, nesting deeper than 128), so what is
/// accepted is exactly what a `serde_json::Value` would accept.
pub fn parse(body: &str, header_id: Option<&str>) -> Result<Envelope, BodyError> {
    // serde_json's parse errors name a position and a kind, never content
    // (the visitors below accept every kind, so none reports a value).
    let raw = match serde_json::from_str::<Body<'_>>(body) {
        Ok(Body::Object(raw)) => raw,
        Ok(Body::NotObject) => return Err(BodyError::NotObject),
        Err(e) => return Err(BodyError::NotJson(e.to_string())),
    };

    check_patient_data(body, &raw.patient_data)?;

    let event_id = match &raw.id {
        Some(Field::Str(id)) => id.to_string(),
        None | Some(Field::Null) => header_id.ok_or(BodyError::NoId)?.to_owned(),
        Some(_) => return Err(BodyError::BadId),
    };
    if event_id.is_empty() || event_id.chars().count() > MAX_EVENT_ID_LEN {
        return Err(BodyError::BadId);
    }

    let event_type = as_str(&raw.event_type).map(str::to_owned);
    let meaning = match event_type.as_deref() {
        Some(CREATED) => outcome(&event_id, &raw, JobStatus::Created),
        Some(FAILED) => outcome(&event_id, &raw, JobStatus::Failed),
        Some(_) => Meaning::Other,
        None => Meaning::Invalid(field_error(&raw.event_type, "type")),
    };
    let data = match &raw.data {
        Some(Data::Object(data)) => Some(data),
        _ => None,
    };
    let patient_data = match raw.unlocated {
        true => None,
        false => raw
            .patient_data
            .iter()
            .map(|value| span_in(body, value))
            .collect(),
    };

    Ok(Envelope {
        patient_data,
        job_id: job_id(&raw.job_id).ok(),
        patient_note_id: data
            .and_then(|d| as_str(&d.patient_note_id))
            .map(str::to_owned),
        created: as_str(&raw.created).map(str::to_owned),
        event_id,
        event_type,
        meaning,
    })
}

/// `note` and `subject` were taken as raw text, which serde_json checks
/// for syntax only: check them as a tree would (escapes and surrogates
/// of a string; numbers and depth of anything else), and say what a tree
/// of the whole body would say if that fails.
fn check_patient_data(body: &str, values: &[&RawValue]) -> Result<(), BodyError> {
    let strings_only = values.iter().all(|value| value.get().starts_with('"'));
    let sound = match strings_only {
        // A string reads the same wherever it stands.
        true => values
            .iter()
            .all(|value| serde_json::from_str::<Skip>(value.get()).is_ok()),
        // Depth counts from the top: only the whole body can say.
        false => false,
    };
    if sound {
        return Ok(());
    }
    match serde_json::from_str::<Skip>(body) {
        Ok(Skip) => Ok(()),
        Err(error) => Err(BodyError::NotJson(error.to_string())),
    }
}

/// Where `value`, borrowed from `body`, lies in it.
pub(crate) fn span_in(body: &str, value: &RawValue) -> Option<Range<usize>> {
    let text = value.get();
    let start = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let span = start..start + text.len();
    (body.get(span.clone())? == text).then_some(span)
}

fn outcome(event_id: &str, raw: &RawEvent<'_>, status: JobStatus) -> Meaning {
    match read_outcome(event_id, raw, status) {
        Ok(outcome) => Meaning::Outcome(Box::new(outcome)),
        Err(error) => Meaning::Invalid(error),
    }
}

fn read_outcome(
    event_id: &str,
    raw: &RawEvent<'_>,
    status: JobStatus,
) -> Result<JobOutcome, FieldError> {
    let data = match &raw.data {
        Some(Data::Object(data)) => data,
        Some(Data::NotObject) => return Err(wrong("data", "must be an object")),
        None => return Err(wrong("data", "is missing")),
    };
    let patient_note_id = required_string(&data.patient_note_id, "data.patient_note_id")?;
    let job_id = job_id(&raw.job_id)?;
    let created = required_string(&raw.created, "created")?;
    let created_at = OffsetDateTime::parse(&created, &Rfc3339)
        .ok()
        // Ranks store the instant as i64 nanoseconds: years 1678 to 2261.
        .filter(crate::clock::fits)
        .ok_or_else(|| wrong("created", "must be an RFC 3339 timestamp"))?;

    let (emr_note_id, failure_reason, reasons) = match status {
        JobStatus::Created => (
            Some(required_string(&data.emr_note_id, "data.emr_note_id")?),
            None,
            None,
        ),
        JobStatus::Failed => {
            let reason = match &data.failure_reason {
                Some(Field::Str(reason)) => reason.to_string(),
                Some(_) => return Err(wrong("data.failure_reason", "must be a string")),
                None => return Err(wrong("data.failure_reason", "is missing")),
            };
            let reasons = match &data.reasons {
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
        patient_mrn: as_str(&data.patient_mrn).map(str::to_owned),
        location_id: as_str(&data.location_id).map(str::to_owned),
        access_token_reference_id: as_str(&raw.access_token_reference_id).map(str::to_owned),
    })
}

/// `job_id` is a string in events and an integer in Cobalt's create-note
/// answer; either is kept as its decimal string.
fn job_id(field: &Option<Field<'_>>) -> Result<String, FieldError> {
    match field {
        Some(Field::Str(id)) if !id.is_empty() => Ok(id.to_string()),
        Some(Field::Integer(n)) => Ok(n.to_string()),
        None | Some(Field::Null) => Err(wrong("job_id", "is missing")),
        Some(_) => Err(wrong("job_id", "must be a non-empty string or an integer")),
    }
}

fn required_string(field: &Option<Field<'_>>, name: &'static str) -> Result<String, FieldError> {
    match field {
        Some(Field::Str(s)) if !s.is_empty() => Ok(s.to_string()),
        None | Some(Field::Null) => Err(wrong(name, "is missing")),
        Some(_) => Err(wrong(name, "must be a non-empty string")),
    }
}

fn as_str<'f>(field: &'f Option<Field<'_>>) -> Option<&'f str> {
    match field {
        Some(Field::Str(s)) => Some(s),
        _ => None,
    }
}

fn field_error(field: &Option<Field<'_>>, name: &'static str) -> FieldError {
    match field {
        None | Some(Field::Null) => wrong(name, "is missing"),
        Some(_) => wrong(name, "must be a string"),
    }
}

fn wrong(field: &'static str, problem: &'static str) -> FieldError {
    debug_assert!(
        REJECTABLE_FIELDS.contains(&field),
        "{field} is missing from REJECTABLE_FIELDS"
    );
    FieldError { field, problem }
}

/// A body as [`parse`] reads it: an object, or anything else.
// It lives on the stack for one parse; boxing the object would cost an
// allocation per delivery.
#[allow(clippy::large_enum_variant)]
enum Body<'a> {
    Object(RawEvent<'a>),
    NotObject,
}

/// The top-level members an envelope is made of; absent ones are `None`.
#[derive(Default)]
struct RawEvent<'a> {
    id: Option<Field<'a>>,
    event_type: Option<Field<'a>>,
    job_id: Option<Field<'a>>,
    created: Option<Field<'a>>,
    access_token_reference_id: Option<Field<'a>>,
    data: Option<Data<'a>>,
    /// `note` and `subject` of every `data` member (a repeated one too).
    patient_data: Vec<&'a RawValue>,
    /// A `data` member was not an object.
    unlocated: bool,
}

/// The `data` member. (Inside one `RawEvent`, on the stack: not boxed.)
#[allow(clippy::large_enum_variant)]
enum Data<'a> {
    Object(DataFields<'a>),
    NotObject,
}

#[derive(Default)]
struct DataFields<'a> {
    patient_note_id: Option<Field<'a>>,
    emr_note_id: Option<Field<'a>>,
    failure_reason: Option<Field<'a>>,
    patient_mrn: Option<Field<'a>>,
    location_id: Option<Field<'a>>,
    /// Kept as the array's compact JSON text, so read as a whole.
    reasons: Option<Value>,
    /// `note` and `subject`, where they lie.
    patient_data: Vec<&'a RawValue>,
}

/// One member's value: a string (borrowed when it has no escapes), an
/// integer, null, or only the kind of anything else.
enum Field<'a> {
    Str(Cow<'a, str>),
    Integer(i128),
    Null,
    Other,
}

/// A value read through and dropped: checked as `serde_json::Value` checks
/// it (numbers in range, depth bounded), kept nowhere. (serde's
/// `IgnoredAny` skips without those checks.)
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Skip, S::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Skip, M::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        deserializer.deserialize_any(SkipVisitor)
    }
}

/// The members [`RawEvent`] and [`DataFields`] read, by name.
enum Key {
    Id,
    Type,
    JobId,
    Created,
    AccessTokenReferenceId,
    Data,
    PatientNoteId,
    EmrNoteId,
    FailureReason,
    Reasons,
    PatientMrn,
    LocationId,
    /// `note` or `subject`.
    PatientData,
    Unread,
}

impl<'de> Deserialize<'de> for Body<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = Body<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Body<'de>, M::Error> {
                let mut raw = RawEvent::default();
                while let Some(key) = map.next_key::<Key>()? {
                    // A repeated member: the last one counts, as in a JSON
                    // object read into a map.
                    match key {
                        Key::Id => raw.id = Some(map.next_value()?),
                        Key::Type => raw.event_type = Some(map.next_value()?),
                        Key::JobId => raw.job_id = Some(map.next_value()?),
                        Key::Created => raw.created = Some(map.next_value()?),
                        Key::AccessTokenReferenceId => {
                            raw.access_token_reference_id = Some(map.next_value()?);
                        }
                        Key::Data => {
                            let data: Data<'de> = map.next_value()?;
                            match &data {
                                Data::Object(fields) => {
                                    raw.patient_data.extend(&fields.patient_data);
                                }
                                Data::NotObject => raw.unlocated = true,
                            }
                            raw.data = Some(data);
                        }
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Body::Object(raw))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Body<'de>, S::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Body::NotObject)
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Body<'de>, E> {
                Ok(Body::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Body<'de>, E> {
                Ok(Body::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Body<'de>, E> {
                Ok(Body::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Body<'de>, E> {
                Ok(Body::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Body<'de>, E> {
                Ok(Body::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Body<'de>, E> {
                Ok(Body::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Body<'de>, E> {
                Ok(Body::NotObject)
            }
        }
        deserializer.deserialize_any(BodyVisitor)
    }
}

impl<'de> Deserialize<'de> for Data<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor;
        impl<'de> Visitor<'de> for DataVisitor {
            type Value = Data<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Data<'de>, M::Error> {
                let mut data = DataFields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::PatientNoteId => data.patient_note_id = Some(map.next_value()?),
                        Key::EmrNoteId => data.emr_note_id = Some(map.next_value()?),
                        Key::FailureReason => data.failure_reason = Some(map.next_value()?),
                        Key::PatientMrn => data.patient_mrn = Some(map.next_value()?),
                        Key::LocationId => data.location_id = Some(map.next_value()?),
                        Key::Reasons => data.reasons = Some(map.next_value()?),
                        Key::PatientData => data.patient_data.push(map.next_value()?),
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Data::Object(data))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Data<'de>, S::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Data::NotObject)
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Data<'de>, E> {
                Ok(Data::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Data<'de>, E> {
                Ok(Data::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Data<'de>, E> {
                Ok(Data::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Data<'de>, E> {
                Ok(Data::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Data<'de>, E> {
                Ok(Data::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Data<'de>, E> {
                Ok(Data::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Data<'de>, E> {
                Ok(Data::NotObject)
            }
        }
        deserializer.deserialize_any(DataVisitor)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(s)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Field<'de>, E> {
                Ok(Field::Integer(n.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Field<'de>, E> {
                Ok(Field::Integer(n.into()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field<'de>, E> {
                Ok(Field::Null)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Field<'de>, S::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Field<'de>, M::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "id" => Key::Id,
                    "type" => Key::Type,
                    "job_id" => Key::JobId,
                    "created" => Key::Created,
                    "access_token_reference_id" => Key::AccessTokenReferenceId,
                    "data" => Key::Data,
                    "patient_note_id" => Key::PatientNoteId,
                    "emr_note_id" => Key::EmrNoteId,
                    "failure_reason" => Key::FailureReason,
                    "reasons" => Key::Reasons,
                    "patient_mrn" => Key::PatientMrn,
                    "location_id" => Key::LocationId,
                    "note" | "subject" => Key::PatientData,
                    _ => Key::Unread,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
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
