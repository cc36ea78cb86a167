//! Hostile and malformed requests, byte for byte over raw TCP: each gets
//! its expected status, the server stays up, and only signed, valid events
//! are stored.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A raw HTTP/1.1 request with `Content-Length` (unless `headers` sets the
/// framing) and `Connection: close`.
fn request(method: &str, path: &str, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nhost: receiver\r\nconnection: close\r\n").into_bytes();
    let framed = headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed {
        out.extend(format!("content-length: {}\r\n", body.len()).bytes());
    }
    for (name, value) in headers {
        out.extend(name.bytes());
        out.extend(b": ");
        out.extend(value);
        out.extend(b"\r\n");
    }
    out.extend(b"\r\n");
    out.extend(body);
    out
}

/// POST /webhooks/cobalt with `body`, signed (or not) as given.
fn post(body: &[u8], signature: Option<String>, extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut headers: Vec<(&str, Vec<u8>)> = vec![("content-type", b"application/json".to_vec())];
    if let Some(signature) = signature {
        headers.push(("cobalt-verification", signature.into_bytes()));
    }
    headers.extend(extra.iter().cloned());
    request("POST", "/webhooks/cobalt", &headers, body)
}

fn signed(body: &[u8]) -> Vec<u8> {
    post(body, Some(sign(body)), &[])
}

fn event(id: &str) -> serde_json::Value {
    created_event(
        id,
        &format!("job-{id}"),
        "pn-hostile",
        "2025-10-09T10:00:00Z",
    )
}

async fn send(address: &str, raw: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // A server may answer and close before it has read everything sent.
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    // The final answer, past any interim `100 Continue`.
    let status = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse::<u16>().ok())
        .find(|status| *status >= 200)
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn hostile_requests_get_their_status_and_only_valid_signed_events_are_stored() {
    let app = spawn_app_with(|config| config.body_limit_bytes = 64 * 1024).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let ok = |id: &str| signed(event(id).to_string().as_bytes());
    let with_body = |text: &str| signed(text.as_bytes());
    let compact = event("evt_h_ws").to_string();
    let valid_sig = sign(event("evt_h_sig").to_string().as_bytes());

    // (what, raw request, expected status, stored event id if any)
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        // Authenticity
        (
            "no signature",
            post(event("evt_h1").to_string().as_bytes(), None, &[]),
            401,
            None,
        ),
        (
            "empty signature",
            post(
                event("evt_h2").to_string().as_bytes(),
                Some(String::new()),
                &[],
            ),
            401,
            None,
        ),
        (
            "63 hex characters",
            post(
                event("evt_h3").to_string().as_bytes(),
                Some("a".repeat(63)),
                &[],
            ),
            401,
            None,
        ),
        (
            "65 hex characters",
            post(
                event("evt_h4").to_string().as_bytes(),
                Some("a".repeat(65)),
                &[],
            ),
            401,
            None,
        ),
        (
            "not hex",
            post(
                event("evt_h5").to_string().as_bytes(),
                Some("x".repeat(64)),
                &[],
            ),
            401,
            None,
        ),
        (
            "a space inside",
            post(
                event("evt_h6").to_string().as_bytes(),
                Some(format!("{} {}", &valid_sig[..32], &valid_sig[33..])),
                &[],
            ),
            401,
            None,
        ),
        (
            "another event's signature",
            post(
                event("evt_h7").to_string().as_bytes(),
                Some(valid_sig.clone()),
                &[],
            ),
            401,
            None,
        ),
        (
            "the wrong secret",
            post(
                event("evt_h8").to_string().as_bytes(),
                Some(sign_with(
                    "whsec_test_wrong",
                    event("evt_h8").to_string().as_bytes(),
                )),
                &[],
            ),
            401,
            None,
        ),
        (
            "unsigned garbage",
            post(b"\x00\x01\x02", Some("0".repeat(64)), &[]),
            401,
            None,
        ),
        (
            "uppercase hex of a valid signature",
            post(
                event("evt_h9").to_string().as_bytes(),
                Some(sign(event("evt_h9").to_string().as_bytes()).to_uppercase()),
                &[],
            ),
            200,
            Some("evt_h9"),
        ),
        (
            "a signed body re-sent with a trailing newline",
            post(
                format!("{compact}\n").as_bytes(),
                Some(sign(compact.as_bytes())),
                &[],
            ),
            200,
            Some("evt_h_ws"),
        ),
        // Bodies that are not a readable JSON object
        ("empty body", with_body(""), 400, None),
        (
            "truncated JSON",
            with_body(r#"{"id":"evt_t","type":"patient_note.cre"#),
            400,
            None,
        ),
        (
            "invalid UTF-8",
            signed(b"{\"id\":\"evt_\xff\xfe\"}"),
            400,
            None,
        ),
        (
            "a UTF-8 byte order mark",
            signed(format!("\u{feff}{}", event("evt_bom")).as_bytes()),
            400,
            None,
        ),
        ("a JSON array", with_body("[]"), 400, None),
        ("a JSON string", with_body("\"evt\""), 400, None),
        ("a JSON number", with_body("42"), 400, None),
        ("JSON null", with_body("null"), 400, None),
        (
            "nesting 10,000 deep",
            with_body(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
            400,
            None,
        ),
        (
            "an object nested 200 deep",
            with_body(&format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200))),
            400,
            None,
        ),
        (
            "trailing garbage",
            with_body(&format!("{} x", event("evt_tg"))),
            400,
            None,
        ),
        (
            "two objects",
            with_body(&format!("{0}{0}", event("evt_two"))),
            400,
            None,
        ),
        (
            "a lone surrogate",
            with_body(r#"{"id":"evt_\ud800","type":"x"}"#),
            400,
            None,
        ),
        (
            "a number beyond any double",
            with_body(r#"{"id":"evt_big","type":"x","n":1e400}"#),
            400,
            None,
        ),
        (
            "no id at all",
            with_body(r#"{"type":"patient_note.created"}"#),
            400,
            None,
        ),
        (
            "an id of 300 characters",
            with_body(&format!(r#"{{"id":"{}","type":"x"}}"#, "e".repeat(300))),
            400,
            None,
        ),
        (
            "an object as id",
            with_body(r#"{"id":{"x":1},"type":"x"}"#),
            400,
            None,
        ),
        // Signed events that are malformed as events: kept as rejected
        (
            "no type",
            with_body(r#"{"id":"evt_notype","job_id":"1"}"#),
            422,
            Some("evt_notype"),
        ),
        (
            "a numeric type",
            with_body(r#"{"id":"evt_numtype","type":5}"#),
            422,
            Some("evt_numtype"),
        ),
        (
            "data not an object",
            with_body(
                r#"{"id":"evt_data","type":"patient_note.created","job_id":"1","created":"2025-10-09T10:00:00Z","data":"x"}"#,
            ),
            422,
            Some("evt_data"),
        ),
        (
            "a job_id beyond 64 bits",
            with_body(
                &event("evt_hugejob")
                    .to_string()
                    .replace("\"job-evt_hugejob\"", "123456789012345678901234567890"),
            ),
            422,
            Some("evt_hugejob"),
        ),
        (
            "an impossible date",
            with_body(
                &event("evt_date")
                    .to_string()
                    .replace("2025-10-09T10:00:00Z", "2025-13-45T10:00:00Z"),
            ),
            422,
            Some("evt_date"),
        ),
        (
            "a year past 2261",
            with_body(
                &event("evt_y9999")
                    .to_string()
                    .replace("2025-10-09T10:00:00Z", "9999-01-01T00:00:00Z"),
            ),
            422,
            Some("evt_y9999"),
        ),
        // Odd but valid: accepted
        (
            "duplicate keys (the last one wins)",
            with_body(
                &event("evt_dupkey")
                    .to_string()
                    .replacen('{', r#"{"id":"evt_first","#, 1),
            ),
            200,
            Some("evt_dupkey"),
        ),
        (
            "a negative integer job_id",
            with_body(
                &event("evt_negjob")
                    .to_string()
                    .replace("\"job-evt_negjob\"", "-5"),
            ),
            200,
            Some("evt_negjob"),
        ),
        (
            "an id with control characters and emoji",
            with_body(
                &event("evt_\\u0001\\n😀")
                    .to_string()
                    .replace("\\\\u0001\\\\n", "\\u0001\\n"),
            ),
            200,
            None,
        ),
        (
            "a NUL inside the note",
            with_body(
                &event("evt_nul")
                    .to_string()
                    .replace("since Tuesday", "since\\u0000Tuesday"),
            ),
            200,
            Some("evt_nul"),
        ),
        (
            "a 60 KiB note",
            with_body(
                &event("evt_bignote")
                    .to_string()
                    .replace("since Tuesday", &"x".repeat(60_000)),
            ),
            200,
            Some("evt_bignote"),
        ),
        (
            "an unknown type",
            with_body(r#"{"id":"evt_unknown","type":"patient.updated","data":{}}"#),
            200,
            Some("evt_unknown"),
        ),
        (
            "text/plain content type",
            request(
                "POST",
                "/webhooks/cobalt",
                &[
                    ("content-type", b"text/plain".to_vec()),
                    (
                        "cobalt-verification",
                        sign(event("evt_ct").to_string().as_bytes()).into_bytes(),
                    ),
                ],
                event("evt_ct").to_string().as_bytes(),
            ),
            200,
            Some("evt_ct"),
        ),
        (
            "no content type",
            request(
                "POST",
                "/webhooks/cobalt",
                &[(
                    "cobalt-verification",
                    sign(event("evt_noct").to_string().as_bytes()).into_bytes(),
                )],
                event("evt_noct").to_string().as_bytes(),
            ),
            200,
            Some("evt_noct"),
        ),
        (
            "a webhook-id of raw bytes",
            post(
                event("evt_rawhdr").to_string().as_bytes(),
                Some(sign(event("evt_rawhdr").to_string().as_bytes())),
                &[("webhook-id", b"\xff\xfe".to_vec())],
            ),
            200,
            Some("evt_rawhdr"),
        ),
        (
            "a webhook-attempt that is not a number",
            post(
                event("evt_attempt").to_string().as_bytes(),
                Some(sign(event("evt_attempt").to_string().as_bytes())),
                &[("webhook-attempt", b"one; drop table events".to_vec())],
            ),
            200,
            Some("evt_attempt"),
        ),
        (
            "SQL in the id",
            with_body(&event("evt_x'); drop table events; --").to_string()),
            200,
            Some("evt_x'); drop table events; --"),
        ),
        (
            "Expect: 100-continue",
            post(
                event("evt_expect").to_string().as_bytes(),
                Some(sign(event("evt_expect").to_string().as_bytes())),
                &[("expect", b"100-continue".to_vec())],
            ),
            200,
            Some("evt_expect"),
        ),
        // Framing and size
        (
            "Content-Length over the limit",
            request(
                "POST",
                "/webhooks/cobalt",
                &[("content-length", b"10000000".to_vec())],
                b"",
            ),
            413,
            None,
        ),
        (
            "a chunked body over the limit",
            request(
                "POST",
                "/webhooks/cobalt",
                &[
                    ("transfer-encoding", b"chunked".to_vec()),
                    ("cobalt-verification", "0".repeat(64).into_bytes()),
                ],
                format!(
                    "{}0\r\n\r\n",
                    format!("8000\r\n{}\r\n", "x".repeat(0x8000)).repeat(3)
                )
                .as_bytes(),
            ),
            413,
            None,
        ),
        (
            "Content-Length and Transfer-Encoding both (read as chunked, RFC 9112)",
            request(
                "POST",
                "/webhooks/cobalt",
                &[
                    ("content-length", b"5".to_vec()),
                    ("transfer-encoding", b"chunked".to_vec()),
                ],
                b"0\r\n\r\n",
            ),
            401,
            None,
        ),
        (
            "a Content-Length that is not a number",
            request(
                "POST",
                "/webhooks/cobalt",
                &[("content-length", b"ten".to_vec())],
                b"",
            ),
            400,
            None,
        ),
        (
            "a header of 100 KiB",
            post(
                b"{}",
                Some("0".repeat(64)),
                &[("x-padding", vec![b'a'; 100 * 1024])],
            ),
            431,
            None,
        ),
        // Routes and methods
        (
            "GET on the webhook route",
            request("GET", "/webhooks/cobalt", &[], b""),
            405,
            None,
        ),
        (
            "PUT on the webhook route",
            request("PUT", "/webhooks/cobalt", &[], b"{}"),
            405,
            None,
        ),
        (
            "an unknown route",
            request("POST", "/webhooks/stripe", &[], b"{}"),
            404,
            None,
        ),
        (
            "a path with dot segments",
            request(
                "GET",
                "/v1/jobs/../../etc/passwd",
                &[("authorization", format!("Bearer {TOKEN}").into_bytes())],
                b"",
            ),
            404,
            None,
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    for (what, raw, expected, _) in &cases {
        let (status, answer) = send(&address, raw).await;
        assert_eq!(
            status,
            *expected,
            "{what}: {}",
            answer.lines().next().unwrap_or("no answer")
        );
    }
    // Still up and healthy.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Exactly the cases expected to be kept are kept, and nothing else.
    let db = app.sql().await;
    let stored: Vec<String> = sqlx::query_scalar("select event_id from events")
        .fetch_all(&db)
        .await
        .unwrap();
    let expected: Vec<&str> = cases.iter().filter_map(|c| c.3).collect();
    for id in &expected {
        assert!(stored.iter().any(|s| s == id), "{id} is not stored");
    }
    // One more is kept: the id with control characters, whose exact text the table does not spell.
    assert_eq!(stored.len(), expected.len() + 1, "{stored:?}");
    let _ = ok;
}

#[tokio::test]
async fn slow_clients_cannot_hold_the_server_and_are_cut_off() {
    let app = spawn_app_with(|config| config.header_read_timeout_ms = 500).await;
    let address = app.address.trim_start_matches("http://").to_owned();

    // 200 connections that send half a request head and then trickle.
    let mut slow = Vec::new();
    for n in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("POST /webhooks/cobalt HTTP/1.1\r\nhost: receiver\r\nx-slow-{n}: ");
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            for stream in &mut slow {
                let _ = stream.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });

    // A normal delivery is answered promptly meanwhile.
    let started = std::time::Instant::now();
    let body = event("evt_amid_slow").to_string();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );

    // Every slow connection is closed by the server after the header timeout.
    let mut slow = trickle.await.unwrap();
    for stream in &mut slow {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a slow connection is still open");
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}
