//! Property tests over arbitrary input for the code that reads untrusted
//! bytes: the body parser, the JavaScript serialization and the signature
//! check. They never panic, and valid signed input always round-trips.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::canonical_json::to_js_string;
use crate::domain::event;
use crate::secret::Secret;
use crate::signature::{Verifier, sign};

/// Arbitrary JSON: nested objects and arrays of strings (any Unicode),
/// integers, doubles, booleans and null, with keys that include array
/// indices.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (0u32..20).prop_map(|n| n.to_string()),
        "[a-z_]{1,8}"
    ]
}

/// A member value for an event: mostly of the kind the envelope wants,
/// often not (escaped strings, integers, floats, null, arrays, objects).
fn member() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[a-z0-9_-]{0,12}".prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
        1 => Just(Value::String("2025-10-09T10:30:00Z".into())),
        1 => Just(Value::String("line\\nbreak \"quoted\" \u{e9}".into())),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        1 => Just(Value::Null),
        1 => json(),
    ]
}

/// A value for the member `key`: usually one it may well have, often any.
fn value_for(key: &'static str) -> BoxedStrategy<Value> {
    let fitting = match key {
        "type" => prop_oneof![
            Just(event::CREATED),
            Just(event::FAILED),
            Just("note.uploaded")
        ]
        .prop_map(Value::from)
        .boxed(),
        "created" => Just(Value::from("2025-10-09T10:30:00.5+02:00")).boxed(),
        "job_id" => prop_oneof![
            "[0-9]{1,6}".prop_map(Value::String),
            any::<u32>().prop_map(Value::from)
        ]
        .boxed(),
        "reasons" => {
            Just(serde_json::json!([{ "code": "emr_down", "description": "d\u{e9}" }])).boxed()
        }
        _ => "[a-z0-9_-]{1,12}".prop_map(Value::String).boxed(),
    };
    prop_oneof![6 => fitting, 1 => member()].boxed()
}

/// `keys` as a JSON object's text, each present or not, some repeated (the
/// last one counts), in any order, with `data` inside when given.
fn object_of(
    keys: &'static [&'static str],
    data: Option<BoxedStrategy<String>>,
) -> BoxedStrategy<String> {
    let members: Vec<BoxedStrategy<Option<String>>> = keys
        .iter()
        .map(|key| {
            prop::option::weighted(0.85, value_for(key))
                .prop_map(move |v| v.map(|v| format!("{}:{}", Value::from(*key), v)))
                .boxed()
        })
        .collect();
    let data = data.map_or_else(
        || Just(None).boxed(),
        |d| prop::option::weighted(0.9, d.prop_map(|d| format!("\"data\":{d}"))).boxed(),
    );
    // Values a tree refuses: a number beyond any double, nesting too deep.
    let refused = prop::option::weighted(
        0.1,
        prop_oneof![
            Just(r#""n":1e400"#.to_owned()),
            Just(format!(r#""n":{}{}"#, "[".repeat(200), "]".repeat(200))),
        ],
    );
    (
        members,
        data,
        prop::collection::vec(prop::sample::select(keys.to_vec()), 0..2),
        any::<u64>(),
        refused,
    )
        .prop_flat_map(|(members, data, repeats, seed, refused)| {
            let repeated: Vec<BoxedStrategy<String>> = repeats
                .into_iter()
                .map(|key| {
                    value_for(key)
                        .prop_map(move |v| format!("{}:{}", Value::from(key), v))
                        .boxed()
                })
                .collect();
            (Just((members, data, seed, refused)), repeated)
        })
        .prop_map(|((members, data, seed, refused), repeated)| {
            let mut text: Vec<String> = members
                .into_iter()
                .flatten()
                .chain(data)
                .chain(repeated)
                .chain(refused)
                .collect();
            // A fixed shuffle per case: members in any order.
            let n = text.len().max(1);
            text.rotate_left(usize::try_from(seed % n as u64).unwrap_or(0));
            format!("{{{}}}", text.join(","))
        })
        .boxed()
}

/// Bodies shaped like Cobalt's events, any member missing, repeated or of
/// the wrong kind, and `data` sometimes not an object.
fn event_like() -> BoxedStrategy<String> {
    const DATA: &[&str] = &[
        "patient_note_id",
        "emr_note_id",
        "failure_reason",
        "reasons",
        "patient_mrn",
        "location_id",
        "note",
    ];
    const TOP: &[&str] = &[
        "id",
        "type",
        "job_id",
        "created",
        "access_token_reference_id",
        "object",
    ];
    let data = prop_oneof![4 => object_of(DATA, None), 1 => member().prop_map(|v| v.to_string())];
    object_of(TOP, Some(data.boxed()))
}

fn verifier() -> Verifier {
    Verifier::new(vec![Secret::new("whsec_test_properties")])
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_parser_or_the_signature_check(
        body in prop::collection::vec(any::<u8>(), 0..512),
        header in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let _ = verifier().verify(Some(&header), &body);
        if let Ok(text) = event::text(&body) {
            let _ = event::parse(text, Some("evt_header"));
        }
    }

    #[test]
    fn arbitrary_json_never_panics_the_parser(value in json()) {
        let _ = event::parse(&value.to_string(), None);
        let _ = to_js_string(&value);
    }

    #[test]
    fn the_javascript_form_is_stable_under_reserialization(value in json()) {
        let js = to_js_string(&value);
        let reparsed: Value = serde_json::from_str(&js).expect("the JavaScript form is JSON");
        prop_assert_eq!(to_js_string(&reparsed), js);
    }

    #[test]
    fn a_signed_body_verifies_as_sent_and_pretty_printed(value in json()) {
        let secret = Secret::new("whsec_test_properties");
        let compact = to_js_string(&value);
        let signature = sign(&secret, compact.as_bytes());
        prop_assert!(verifier().verify(Some(signature.as_bytes()), compact.as_bytes()).is_ok());
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        prop_assert!(verifier().verify(Some(signature.as_bytes()), pretty.as_bytes()).is_ok());
        let tampered = format!("[{compact}]");
        prop_assert!(verifier().verify(Some(signature.as_bytes()), tampered.as_bytes()).is_err());
    }

    #[test]
    fn the_envelope_is_read_as_the_whole_tree_reads_it(body in event_like()) {
        // Where patient data lies is a streaming parser's finding (the
        // tree keeps no positions); the next property checks it.
        let streamed = event::parse(&body, Some("evt_header")).map(|mut envelope| {
            envelope.patient_data = None;
            envelope
        });
        prop_assert_eq!(
            format!("{:?}", streamed),
            format!("{:?}", tree::parse(&body, Some("evt_header")))
        );
    }

    #[test]
    fn the_minimal_payload_from_the_parse_is_the_body_read_again(body in event_like()) {
        if let Ok(envelope) = event::parse(&body, Some("evt_header")) {
            let minimal = crate::payload_storage::PayloadStorage::Minimal;
            prop_assert_eq!(
                minimal.kept(&body, envelope.patient_data.as_deref()),
                minimal.kept(&body, None)
            );
        }
    }

    #[test]
    fn a_signed_event_with_any_data_parses_with_its_id(id in "[ -~]{1,64}", data in json()) {
        let body = serde_json::json!({ "id": id, "type": "note.uploaded", "data": data }).to_string();
        let envelope = event::parse(&body, None).expect("an event with an id parses");
        prop_assert_eq!(envelope.event_id, id);
    }
}

/// The reading of a body as it was done before the envelope was parsed in
/// place: through a whole `serde_json::Value` tree. Kept as the oracle the
/// parser is compared with.
mod tree {
    use serde_json::{Map, Value};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    use crate::domain::event::{
        BodyError, CREATED, Envelope, FAILED, FieldError, MAX_EVENT_ID_LEN, Meaning,
    };
    use crate::domain::{JobOutcome, JobStatus, Rank};

    fn wrong(field: &'static str, problem: &'static str) -> FieldError {
        FieldError { field, problem }
    }

    pub(super) fn parse(body: &str, header_id: Option<&str>) -> Result<Envelope, BodyError> {
        // serde_json's parse errors name a position and a kind, never content.
        let value: Value =
            serde_json::from_str(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
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
            patient_data: None,
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
            .filter(crate::clock::fits)
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
}
