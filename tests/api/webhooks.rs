//! `POST /webhooks/cobalt`: authenticity, validation, dedupe.

use serde_json::{Value, json};

use crate::helpers::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_documented_examples_are_applied_and_created_beats_failed() {
    let app = spawn_app().await;
    let created = fixture("example-created.json").to_string();
    let failed = fixture("example-failed.json").to_string();

    let (status, body) = json_of(app.post_webhook(&created).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "event_id": "evt_1J9X2q2eZvKYlo2CluR9g9gV", "status": "applied" })
    );
    // The failure came later, but the note is in the EMR: it does not win.
    let (status, body) = json_of(app.post_webhook(&failed).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "superseded");

    let (status, job) = json_of(app.get("/v1/jobs/12345").await).await;
    assert_eq!(status, 200);
    assert_eq!(job["patient_note_id"], "abc123def456789012345678");
    assert_eq!(job["status"], "created");
    assert_eq!(job["emr_note_id"], "10d1c8d3-aa69-472a-a9eb-f5fbd12bf99f");
    assert_eq!(job["failure_reason"], Value::Null);
    // Masked for a token without `phi`.
    assert_eq!(job["patient_mrn"], "***2345");
    assert_eq!(job["deciding_event_id"], "evt_1J9X2q2eZvKYlo2CluR9g9gV");
    assert_eq!(app.count("events").await, 2);
    // The event log keeps each event's outcome, the outranked one included.
    let (_, story) = json_of(app.get("/v1/jobs/12345/events").await).await;
    let outcomes: Vec<_> = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("evt_1J9X2q2eZvKYlo2CluR9g9gV", "applied"),
            ("evt_1J9X2q2eZvKYlo2CluR9g9gW", "superseded")
        ]
    );
}

#[tokio::test]
async fn a_failed_example_alone_is_a_failed_job_with_its_reason() {
    let app = spawn_app().await;
    let response = app
        .post_webhook(&fixture("example-failed.json").to_string())
        .await;
    assert_eq!(response.status(), 200);
    let (_, job) = json_of(app.get("/v1/jobs/12345").await).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["failure_reason"], "Failed to create patient note");
    assert_eq!(job["emr_note_id"], Value::Null);
}

#[tokio::test]
async fn every_published_signature_vector_is_accepted_over_http() {
    let app = spawn_app().await;
    let vectors = fixture("signature-vectors.json");
    assert_eq!(vectors["secret"], SECRET);
    for vector in vectors["vectors"].as_array().unwrap() {
        let body = vector["body"].as_str().unwrap();
        let signature = vector["signature"].as_str().unwrap();
        let response = app
            .post_raw(
                body.as_bytes().to_vec(),
                &[("cobalt-verification", signature)],
            )
            .await;
        let (status, answer) = json_of(response).await;
        assert_eq!(status, 200, "vector {}: {answer}", vector["name"]);
        assert!(
            ["applied", "superseded", "duplicate"].contains(&answer["status"].as_str().unwrap()),
            "vector {}: {answer}",
            vector["name"]
        );
    }
    // The numeric job_id vector is kept under its decimal string.
    let (status, events) = json_of(app.get("/v1/jobs/12345/events").await).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].clone())
        .collect();
    assert!(ids.contains(&json!("evt_numeric_job")), "{ids:?}");
}

#[tokio::test]
async fn any_active_secret_is_accepted_during_a_rotation() {
    let app = spawn_app().await;
    for (i, secret) in [SECRET, ROTATED_SECRET].into_iter().enumerate() {
        let body = created_event(
            &format!("evt_rot_{i}"),
            "1",
            "pn-rot",
            "2025-10-09T10:30:00Z",
        )
        .to_string();
        let response = app
            .post_raw(
                body.clone().into_bytes(),
                &[("cobalt-verification", &sign_with(secret, body.as_bytes()))],
            )
            .await;
        assert_eq!(response.status(), 200, "secret #{i}");
    }
    let body = created_event("evt_rot_x", "1", "pn-rot", "2025-10-09T10:30:00Z").to_string();
    let retired = sign_with("whsec_test_retired_secret", body.as_bytes());
    let response = app
        .post_raw(body.into_bytes(), &[("cobalt-verification", &retired)])
        .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_missing_malformed_or_wrong_signature_is_401_and_stores_nothing() {
    let app = spawn_app().await;
    let body = created_event("evt_sig", "7", "pn-sig", "2025-10-09T10:30:00Z").to_string();
    let other_body = created_event("evt_other", "7", "pn-sig", "2025-10-09T10:30:00Z").to_string();
    let good = sign(body.as_bytes());
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "no header"),
        (Some(String::new()), "empty header"),
        (Some("abc123".into()), "too short"),
        (Some(format!("{good}00")), "too long"),
        (Some(format!("sha256={good}")), "prefixed"),
        (Some("z".repeat(64)), "not hex"),
        (
            Some(sign_with("whsec_test_wrong", body.as_bytes())),
            "another secret",
        ),
        (
            Some(sign(other_body.as_bytes())),
            "another body's signature",
        ),
    ];
    for (signature, description) in cases {
        let headers: Vec<(&str, &str)> = signature
            .as_deref()
            .map(|s| vec![("cobalt-verification", s)])
            .unwrap_or_default();
        let (status, answer) =
            json_of(app.post_raw(body.clone().into_bytes(), &headers).await).await;
        assert_eq!(status, 401, "{description}");
        assert_eq!(answer["code"], "invalid_signature", "{description}");
    }
    // An unsigned body that is not even JSON is refused as unauthenticated.
    let response = app
        .post_raw(
            b"not json".to_vec(),
            &[("cobalt-verification", &"0".repeat(64))],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(app.count("events").await, 0);
}

#[tokio::test]
async fn signed_bodies_that_cannot_be_read_are_400_and_store_nothing() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"{\"id\": \"evt_1\",".to_vec(),
            "truncated JSON",
            "not valid JSON",
        ),
        (b"".to_vec(), "empty body", "not valid JSON"),
        (b"\xff\xfe{}".to_vec(), "not UTF-8", "not UTF-8"),
        (b"[1, 2]".to_vec(), "an array", "JSON object"),
        (b"\"evt\"".to_vec(), "a string", "JSON object"),
        (deep.into_bytes(), "absurdly nested", "not valid JSON"),
        (
            br#"{"type":"patient_note.created"}"#.to_vec(),
            "no id anywhere",
            "no id",
        ),
        (
            br#"{"id":42,"type":"x"}"#.to_vec(),
            "a numeric id",
            "event id",
        ),
        (
            br#"{"id":"","type":"x"}"#.to_vec(),
            "an empty id",
            "event id",
        ),
    ];
    for (body, description, says) in cases {
        let signature = sign(&body);
        let (status, answer) = json_of(
            app.post_raw(body, &[("cobalt-verification", &signature)])
                .await,
        )
        .await;
        assert_eq!(status, 400, "{description}: {answer}");
        assert_eq!(answer["code"], "invalid_body", "{description}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{description}: {detail}");
    }
    assert_eq!(app.count("events").await, 0);
}

#[tokio::test]
async fn the_event_id_falls_back_to_the_webhook_id_header() {
    let app = spawn_app().await;
    let mut event = created_event("unused", "8", "pn-hdr", "2025-10-09T10:30:00Z");
    event.as_object_mut().unwrap().remove("id");
    let body = event.to_string();
    let signature = sign(body.as_bytes());
    let headers = [
        ("cobalt-verification", signature.as_str()),
        ("webhook-id", "evt_from_header"),
        ("webhook-attempt", "2"),
    ];
    let (status, answer) = json_of(app.post_raw(body.clone().into_bytes(), &headers).await).await;
    assert_eq!(status, 200);
    assert_eq!(answer["event_id"], "evt_from_header");
    let (_, events) = json_of(app.get("/v1/jobs/8/events").await).await;
    assert_eq!(events["events"][0]["event_id"], "evt_from_header");
    assert_eq!(events["events"][0]["attempt"], 2);
    // The same id again is a duplicate.
    let (_, answer) = json_of(app.post_raw(body.into_bytes(), &headers).await).await;
    assert_eq!(answer["status"], "duplicate");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(|config| config.body_limit_bytes = 2048).await;
    let mut event = created_event("evt_big", "9", "pn-big", "2025-10-09T10:30:00Z");
    event["data"]["note"] = json!("x".repeat(4096));
    let (status, answer) = json_of(app.post_webhook(&event.to_string()).await).await;
    assert_eq!(status, 413);
    assert_eq!(answer["code"], "body_too_large");
    event["data"]["note"] = json!("x".repeat(100));
    assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    assert_eq!(app.count("events").await, 1);
}

#[tokio::test]
async fn an_incomplete_outcome_is_422_naming_the_field_and_kept_as_rejected() {
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            created_event("evt_r1", "20", "pn-r", "2025-10-09T10:30:00Z"),
            "/data/emr_note_id",
        ),
        (
            created_event("evt_r2", "20", "pn-r", "2025-10-09T10:30:00Z"),
            "/data/patient_note_id",
        ),
        (
            created_event("evt_r3", "20", "pn-r", "2025-10-09T10:30:00Z"),
            "/created",
        ),
        (
            failed_event("evt_r4", "20", "pn-r", "2025-10-09T10:30:00Z"),
            "/data/failure_reason",
        ),
        (
            failed_event("evt_r5", "20", "pn-r", "2025-10-09T10:30:00Z"),
            "/job_id",
        ),
    ];
    for (mut event, pointer) in cases {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        event
            .pointer_mut(if parent.is_empty() { "" } else { parent })
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
        let field = pointer.trim_start_matches('/').replace('/', ".");
        let (status, answer) = json_of(app.post_webhook(&event.to_string()).await).await;
        assert_eq!(status, 422, "{pointer}: {answer}");
        assert_eq!(answer["field"], field.as_str());
        assert!(answer["detail"].as_str().unwrap().contains(&field));
    }
    let wrong_types: Vec<(Value, &str)> = vec![
        (json!(12), "data.emr_note_id"),
        (json!({"nested": true}), "data.patient_note_id"),
    ];
    for (value, field) in wrong_types {
        let mut event = created_event(
            &format!("evt_t_{field}"),
            "20",
            "pn-r",
            "2025-10-09T10:30:00Z",
        );
        let key = field.trim_start_matches("data.");
        event["data"][key] = value;
        let (status, answer) = json_of(app.post_webhook(&event.to_string()).await).await;
        assert_eq!(status, 422);
        assert_eq!(answer["field"], field);
    }
    let mut event = failed_event("evt_t_job", "20", "pn-r", "2025-10-09T10:30:00Z");
    event["job_id"] = json!(12.5);
    assert_eq!(
        json_of(app.post_webhook(&event.to_string()).await).await.1["field"],
        "job_id"
    );

    // Every rejected event is in the log, with its reason; no job state came of them.
    assert_eq!(app.count("jobs").await, 0);
    let db = app.sql().await;
    let rejected: Vec<(String, Option<String>)> =
        sqlx::query_as("select outcome, reject_reason from events order by seq")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(rejected.len(), 8);
    assert!(
        rejected
            .iter()
            .all(|(outcome, reason)| outcome == "rejected" && reason.is_some())
    );
    let (_, events) = json_of(app.get("/v1/jobs/20/events").await).await;
    assert_eq!(events["events"][0]["outcome"], "rejected");
    assert_eq!(
        events["events"][0]["reject_reason"],
        "data.emr_note_id is missing"
    );
}

#[tokio::test]
async fn other_event_types_are_acknowledged_and_kept_as_ignored() {
    let app = spawn_app().await;
    let events = [
        json!({"id": "evt_appt", "type": "appointment.created", "object": "event", "data": {"id": "a1"}}),
        json!({"id": "evt_task", "type": "task.created", "job_id": "77", "data": {}}),
    ];
    for event in events {
        let (status, answer) = json_of(app.post_webhook(&event.to_string()).await).await;
        assert_eq!(status, 200);
        assert_eq!(answer["status"], "ignored");
    }
    assert_eq!(app.count("events").await, 2);
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test]
async fn a_replayed_event_is_acknowledged_and_changes_nothing() {
    let app = spawn_app().await;
    let first = created_event("evt_dup", "30", "pn-dup", "2025-10-09T10:30:00Z");
    assert_eq!(
        json_of(app.post_webhook(&first.to_string()).await).await.1["status"],
        "applied"
    );
    let (_, before) = json_of(app.get("/v1/jobs/30").await).await;

    // A replay, even one whose body differs, is the event already recorded.
    let mut replay = first.clone();
    replay["data"]["emr_note_id"] = json!("something-else");
    for body in [first.to_string(), replay.to_string()] {
        let (status, answer) = json_of(app.post_webhook(&body).await).await;
        assert_eq!(status, 200);
        assert_eq!(answer["status"], "duplicate");
        assert_eq!(answer["original_outcome"], "applied");
    }
    let (_, after) = json_of(app.get("/v1/jobs/30").await).await;
    assert_eq!(before, after);
    assert_eq!(app.count("events").await, 1);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_event_apply_it_once() {
    let app = spawn_app().await;
    let body = created_event("evt_race", "31", "pn-race", "2025-10-09T10:30:00Z").to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let (client, url, body) = (
            app.client.clone(),
            format!("{}/webhooks/cobalt", app.address),
            body.clone(),
        );
        tasks.spawn(async move {
            let response = post_signed(&client, &url, body).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        });
    }
    let statuses = tasks.join_all().await;
    assert_eq!(
        statuses.iter().filter(|s| *s == "applied").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "duplicate").count(),
        23,
        "{statuses:?}"
    );
    assert_eq!(app.count("events").await, 1);
    assert_eq!(app.count("jobs").await, 1);
}

#[tokio::test]
async fn unsigned_deliveries_are_accepted_only_when_allowed() {
    let app = spawn_app_with(|config| {
        config.webhook_secrets.clear();
        config.allow_unsigned = true;
    })
    .await;
    let body = created_event("evt_unsigned", "40", "pn-u", "2025-10-09T10:30:00Z").to_string();
    let response = app.post_raw(body.into_bytes(), &[]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn with_full_payload_storage_every_payload_is_kept_exactly_as_received() {
    let app = spawn_app_with(|config| {
        config.payload_storage = cobalt_receiver::payload_storage::PayloadStorage::Full;
    })
    .await;
    let vectors = fixture("signature-vectors.json");
    let pretty = &vectors["vectors"][2];
    assert_eq!(pretty["name"], "created-pretty");
    let body = pretty["body"].as_str().unwrap();
    app.post_raw(
        body.as_bytes().to_vec(),
        &[("cobalt-verification", pretty["signature"].as_str().unwrap())],
    )
    .await;
    let event_id = serde_json::from_str::<Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.payload_of(&event_id).await.as_deref(), Some(body));
}

#[tokio::test]
async fn a_wrong_method_is_answered_in_json_too() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.get("/webhooks/cobalt").await).await;
    assert_eq!(status, 405);
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn a_stalled_delivery_is_answered_503_within_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(|config| config.request_timeout_ms = 300).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Headers promise 100 bytes; only 10 come.
    let request = format!(
        "POST /webhooks/cobalt HTTP/1.1\r\nhost: {address}\r\ncobalt-verification: {}\r\ncontent-length: 100\r\n\r\n{{\"id\":\"ev",
        "0".repeat(64)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered before the client gave up")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("application/json") && answer.contains(r#""code":"timeout""#),
        "{answer}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(app.count("events").await, 0);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(|config| config.body_limit_bytes = 1024).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut request = format!(
        "POST /webhooks/cobalt HTTP/1.1\r\nhost: {address}\r\ncobalt-verification: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        "0".repeat(64)
    );
    for _ in 0..4 {
        request.push_str(&format!("200\r\n{}\r\n", "x".repeat(0x200)));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"body_too_large""#), "{answer}");
    assert_eq!(app.count("events").await, 0);
}

/// Many HTTP clients (and perhaps Cobalt's) write the whole body before
/// they read the answer. The server answers 413 before reading the body,
/// then keeps reading and discarding it (a lingering close): closing with
/// unread data would reset the connection, and the client would see a
/// broken pipe instead of the 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_a_whole_oversized_body_before_reading_gets_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await; // the default 1 MiB limit
    let address = app.address.trim_start_matches("http://").to_owned();
    let body = vec![b'x'; 2 << 20];
    let chunked: Vec<u8> = body
        .chunks(64 << 10)
        .flat_map(|chunk| {
            [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.to_vec(),
                b"\r\n".to_vec(),
            ]
        })
        .flatten()
        .chain(b"0\r\n\r\n".iter().copied())
        .collect();
    for (framing, payload) in [
        (format!("content-length: {}", body.len()), &body),
        ("transfer-encoding: chunked".to_owned(), &chunked),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /webhooks/cobalt HTTP/1.1\r\nhost: {address}\r\ncobalt-verification: {}\r\n{framing}\r\n\r\n",
            sign(&body)
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // In pieces, as over a real network: the server has answered and
        // ended the connection while the client is still sending.
        for piece in payload.chunks(64 << 10) {
            stream
                .write_all(piece)
                .await
                .unwrap_or_else(|e| panic!("{framing}: the server cut the upload short: {e}"));
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .unwrap_or_else(|e| panic!("{framing}: the answer was lost: {e}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{framing}: {answer}");
        assert!(answer.contains(r#""code":"body_too_large""#), "{answer}");
    }
    assert_eq!(app.count("events").await, 0);
}

#[tokio::test]
async fn a_configured_limit_above_two_mebibytes_is_honoured() {
    let app = spawn_app_with(|config| config.body_limit_bytes = 4 << 20).await;
    let mut event = created_event("evt_large_ok", "10", "pn-large", "2025-10-09T10:30:00Z");
    event["data"]["note"] = json!("x".repeat(3 << 20));
    let (status, answer) = json_of(app.post_webhook(&event.to_string()).await).await;
    assert_eq!(status, 200, "{answer}");
}
