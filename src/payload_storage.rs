//! How much of a delivery's body is kept (`payload_storage`). The
//! signature is checked on the raw bytes before any of this.
//!
//! - `minimal` (the default): the body with `data.note` and
//!   `data.subject` each replaced by `{"sha256": …, "length": …}`, the
//!   digest and byte length of the value (of the string's UTF-8 text; of
//!   the JSON text for a value that is not a string). A `data` that is not
//!   an object is replaced the same way. Everything else is kept byte for
//!   byte, so the envelope, ids, outcome and MRN stay readable.
//! - `full`: the exact bytes Cobalt signed, for operators who must prove
//!   what was sent.
//! - `none`: nothing.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::{Serialize, de::IgnoredAny};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::domain::event::span_in;

/// How much of each delivery's body is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadStorage {
    #[default]
    Minimal,
    Full,
    None,
}

/// Members of `data` that are patient data the service never needs.
const DROPPED: [&str; 2] = ["note", "subject"];

impl PayloadStorage {
    /// What of `body` (a verified JSON object) is kept. `located` is where
    /// its patient data lies, as parsing the envelope found it
    /// (`Envelope::patient_data`); without it, the body is read again.
    pub fn kept<'b>(self, body: &'b str, located: Option<&[Range<usize>]>) -> Cow<'b, str> {
        match self {
            Self::Full => Cow::Borrowed(body),
            Self::None => Cow::Borrowed(""),
            Self::Minimal => minimal(body, located),
        }
    }
}

/// `body` with the values of `data.note` and `data.subject` replaced by
/// their digests, and every other byte as received. A body this cannot
/// read (it was verified and parsed before, so never in practice) keeps
/// nothing rather than risk keeping the note.
fn minimal<'b>(body: &'b str, located: Option<&[Range<usize>]>) -> Cow<'b, str> {
    let replaced = match located {
        Some(spans) => spans
            .iter()
            .map(|span| Some((span.clone(), digest(body.get(span.clone())?)?)))
            .collect(),
        None => replacements(body),
    };
    let Some(mut replaced) = replaced else {
        return Cow::Borrowed("");
    };
    replaced.sort_by_key(|(span, _)| span.start);
    if replaced.is_empty() {
        return Cow::Borrowed(body);
    }
    let mut kept = String::with_capacity(body.len());
    let mut from = 0;
    for (span, digest) in replaced {
        kept.push_str(&body[from..span.start]);
        kept.push_str(&digest);
        from = span.end;
    }
    kept.push_str(&body[from..]);
    Cow::Owned(kept)
}

/// The spans of `body` to replace, in order, with what replaces each.
/// Every `data` member counts (a repeated one too), and every `note` and
/// `subject` in it.
fn replacements(body: &str) -> Option<Vec<(Range<usize>, String)>> {
    let Members::Object(members) = serde_json::from_str::<Members<'_>>(body).ok()? else {
        return None;
    };
    let mut replaced = Vec::new();
    for (name, value) in members {
        if name != "data" {
            continue;
        }
        match serde_json::from_str::<Members<'_>>(value.get()).ok()? {
            Members::Object(data) => {
                for (name, value) in data {
                    if DROPPED.contains(&name.as_ref()) {
                        replaced.push((span_in(body, value)?, digest(value.get())?));
                    }
                }
            }
            Members::NotObject => replaced.push((span_in(body, value)?, digest(value.get())?)),
        }
    }
    Some(replaced)
}

/// `{"sha256":"<hex>","length":<bytes>}` of a value (its JSON text): of
/// a string's UTF-8 text, or of any other value's JSON text.
fn digest(json: &str) -> Option<String> {
    let text: Cow<'_, str> = match json.starts_with('"') {
        true => serde_json::from_str::<Cow<'_, str>>(json).ok()?,
        false => Cow::Borrowed(json),
    };
    let mut out = String::with_capacity(96);
    out.push_str("{\"sha256\":\"");
    out.push_str(&hex::encode(Sha256::digest(text.as_bytes())));
    write!(out, "\",\"length\":{}}}", text.len()).ok()?;
    Some(out)
}

/// A JSON value read as its members, each value left as its text.
enum Members<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    NotObject,
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'de>, M::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    members.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members::Object(members))
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Members<'de>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Members::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Members<'de>, E> {
                Ok(Members::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Members<'de>, E> {
                Ok(Members::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Members<'de>, E> {
                Ok(Members::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Members<'de>, E> {
                Ok(Members::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Members<'de>, E> {
                Ok(Members::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Members<'de>, E> {
                Ok(Members::NotObject)
            }
        }
        deserializer.deserialize_any(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: &str = include_str!("../tests/fixtures/example-created.json");

    fn sha256_hex(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn minimal_keeps_everything_but_the_note_and_subject() {
        let original: serde_json::Value = serde_json::from_str(CREATED).unwrap();
        let note = original["data"]["note"].as_str().unwrap();
        let subject = original["data"]["subject"].as_str().unwrap();
        let kept = PayloadStorage::Minimal.kept(CREATED, None);
        assert!(!kept.contains(note) && !kept.contains(subject));
        let kept: serde_json::Value = serde_json::from_str(&kept).unwrap();
        assert_eq!(
            kept["data"]["note"],
            serde_json::json!({"sha256": sha256_hex(note), "length": note.len()})
        );
        assert_eq!(kept["data"]["subject"]["sha256"], sha256_hex(subject));
        let mut rest = original.clone();
        rest["data"]["note"] = kept["data"]["note"].clone();
        rest["data"]["subject"] = kept["data"]["subject"].clone();
        assert_eq!(kept, rest);
    }

    #[test]
    fn escaped_repeated_and_odd_members_are_replaced_too() {
        let body =
            r#"{"id":"e","data":{"note":"line\nA","subject":1.5},"data":["x"],"note":"top"}"#;
        let kept = PayloadStorage::Minimal.kept(body, None);
        assert_eq!(
            kept,
            format!(
                r#"{{"id":"e","data":{{"note":{{"sha256":"{}","length":6}},"subject":{{"sha256":"{}","length":3}}}},"data":{{"sha256":"{}","length":5}},"note":"top"}}"#,
                sha256_hex("line\nA"),
                sha256_hex("1.5"),
                sha256_hex(r#"["x"]"#),
            )
        );
    }

    #[test]
    fn the_envelope_s_positions_give_the_same_minimal_payload() {
        let body = r#"{"id":"e","data":{"note":"line\nA","x":[1,{"note":2}],"subject":"s"},"data":{"note":"b"}}"#;
        for body in [body, CREATED] {
            let envelope = crate::domain::event::parse(body, None).unwrap();
            let spans = envelope.patient_data.as_deref();
            assert_eq!(
                spans.map(<[_]>::len),
                Some(if body == CREATED { 2 } else { 3 })
            );
            assert_eq!(
                PayloadStorage::Minimal.kept(body, spans),
                PayloadStorage::Minimal.kept(body, None)
            );
        }
        // A `data` that is not an object: no positions, the body is read again.
        let odd = r#"{"id":"e","data":["note"]}"#;
        assert_eq!(
            crate::domain::event::parse(odd, None).unwrap().patient_data,
            None
        );
    }

    #[test]
    fn full_keeps_the_signed_bytes_and_none_keeps_nothing() {
        assert_eq!(PayloadStorage::Full.kept(CREATED, None), CREATED);
        assert_eq!(PayloadStorage::None.kept(CREATED, None), "");
        let plain = r#"{"id":"e","type":"note.uploaded","data":{"x":1}}"#;
        assert!(
            matches!(PayloadStorage::Minimal.kept(plain, None), Cow::Borrowed(b) if b == plain)
        );
    }
}
