//! Property tests over arbitrary input for the code that reads untrusted
//! bytes: the body parser, the JavaScript serialization and the signature
//! check. They never panic, and valid signed input always round-trips.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::canonical_json::to_js_string;
use crate::config::Secret;
use crate::domain::event;
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
    fn a_signed_event_with_any_data_parses_with_its_id(id in "[ -~]{1,64}", data in json()) {
        let body = serde_json::json!({ "id": id, "type": "note.uploaded", "data": data }).to_string();
        let envelope = event::parse(&body, None).expect("an event with an id parses");
        prop_assert_eq!(envelope.event_id, id);
    }
}
