//! The text JavaScript's `JSON.stringify(JSON.parse(body))` produces.
//!
//! Cobalt signs that text rather than the bytes it sends, so a body that was
//! re-serialized on the way (pretty-printed, `\u` escapes) still verifies.
//! JavaScript's rules, not serde_json's, decide the output:
//! - object keys that are array indices (`"0"` … `"4294967294"`) come first in
//!   ascending order, then the other keys in the order they were sent; a
//!   duplicated key keeps its first place and its last value (`serde_json` with
//!   `preserve_order` already parses it that way);
//! - every number is an IEEE double printed as `Number.prototype.toString` does
//!   (`ryu-js`), so `1.0` is `1`, `1E21` is `1e+21`, and a number beyond the
//!   double range is `null`;
//! - strings escape only `"`, `\` and control characters; everything else,
//!   U+2028 and `/` included, is written as it is.

use serde_json::{Map, Number, Value};

/// Serializes `value` exactly as JavaScript's `JSON.stringify` would.
pub fn to_js_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_number(out: &mut String, n: &Number) {
    // JSON.parse reads every number as a double; `as_f64` rounds u64 and i64
    // to the nearest double just as parsing their decimal text would.
    let double = n.as_f64().unwrap_or(f64::NAN);
    if double.is_finite() {
        out.push_str(ryu_js::Buffer::new().format_finite(double));
    } else {
        out.push_str("null");
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    let mut indices: Vec<(u32, &String, &Value)> = Vec::new();
    let mut names: Vec<(&String, &Value)> = Vec::new();
    for (key, value) in map {
        match array_index(key) {
            Some(index) => indices.push((index, key, value)),
            None => names.push((key, value)),
        }
    }
    indices.sort_by_key(|(index, _, _)| *index);
    let ordered = indices.into_iter().map(|(_, k, v)| (k, v)).chain(names);

    out.push('{');
    for (i, (key, value)) in ordered.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

/// A key JavaScript treats as an array index: the canonical decimal form of an
/// integer from 0 to 2^32 - 2 (so `"01"`, `"-1"` and `"4294967295"` are not).
fn array_index(key: &str) -> Option<u32> {
    let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty());
    if !canonical || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u32>().ok().filter(|&n| n != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases whose expected text was produced by Node's own
    /// `JSON.stringify(JSON.parse(input))` (see the fixture's `generator`).
    #[test]
    fn matches_node_for_every_recorded_case() {
        let fixture: Value =
            serde_json::from_str(include_str!("../tests/fixtures/js-stringify-cases.json"))
                .unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let input = case["input"].as_str().unwrap();
            let expected = case["expected"].as_str().unwrap();
            let parsed: Value = serde_json::from_str(input).unwrap();
            assert_eq!(to_js_string(&parsed), expected, "input: {input}");
        }
    }

    #[test]
    fn array_index_follows_javascript() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("4294967294"), Some(4_294_967_294));
        for not_index in [
            "",
            "01",
            "-1",
            "1.5",
            "4294967295",
            "99999999999",
            "+1",
            " 1",
        ] {
            assert_eq!(array_index(not_index), None, "{not_index:?}");
        }
    }
}
