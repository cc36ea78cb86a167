//! A job's final state does not depend on the order its events arrive in.

use serde_json::Value;

use crate::helpers::*;

/// Every ordering of `items`.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

/// The parts of a job's state that its events decide (ids are made
/// per-ordering, so they are compared without their prefix).
fn decided(job: &Value, prefix: &str) -> Value {
    let strip = |v: &Value| Value::String(v.as_str().unwrap_or("").replace(prefix, ""));
    serde_json::json!({
        "status": job["status"],
        "emr_note_id": strip(&job["emr_note_id"]),
        "failure_reason": strip(&job["failure_reason"]),
        "reasons": job["reasons"].to_string().replace(prefix, ""),
        "deciding_event_id": strip(&job["deciding_event_id"]),
        "deciding_event_created": job["deciding_event_created"],
        "patient_mrn": job["patient_mrn"],
    })
}

/// Sends every ordering of `events` (kind, id, created) to fresh job ids and
/// returns the decided state of each.
async fn final_states(app: &TestApp, events: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut states = Vec::new();
    for (n, order) in permutations(events).into_iter().enumerate() {
        // One prefix for every id of this ordering keeps their relative order.
        let prefix = format!("o{n:03}_");
        let (job_id, note_id) = (format!("{prefix}job"), format!("{prefix}note"));
        for (kind, id, created) in &order {
            let event_id = format!("{prefix}{id}");
            let event = match *kind {
                "created" => created_event(&event_id, &job_id, &note_id, created),
                _ => failed_event(&event_id, &job_id, &note_id, created),
            };
            let response = app.post_webhook(&event.to_string()).await;
            assert_eq!(response.status(), 200, "ordering {order:?}");
        }
        let (status, job) = json_of(app.get(&format!("/v1/jobs/{job_id}")).await).await;
        assert_eq!(status, 200);
        states.push(decided(&job, &prefix));
    }
    states
}

#[tokio::test]
async fn every_arrival_order_of_mixed_events_gives_one_final_state() {
    let app = spawn_app().await;
    let events = [
        ("failed", "evt_a", "2025-10-09T10:00:00Z"),
        ("created", "evt_c", "2025-10-09T10:01:00Z"),
        // Same instant as evt_c (another offset): the greater id wins the tie.
        ("created", "evt_d", "2025-10-09T11:01:00+01:00"),
        ("failed", "evt_b", "2025-10-09T10:05:00Z"),
        // The latest event of all, but a failure: created still wins.
        ("failed", "evt_e", "2025-10-09T10:09:00Z"),
    ];
    let states = final_states(&app, &events).await;
    assert_eq!(states.len(), 120);
    let expected = serde_json::json!({
        "status": "created",
        "emr_note_id": "emr-evt_d",
        "failure_reason": "",
        "reasons": "null",
        "deciding_event_id": "evt_d",
        "deciding_event_created": "2025-10-09T11:01:00+01:00",
        // Masked: the test token may not see PHI.
        "patient_mrn": format!("***{}", &MRN[MRN.len() - 4..]),
    });
    for (n, state) in states.iter().enumerate() {
        assert_eq!(state, &expected, "ordering #{n}");
    }
}

#[tokio::test]
async fn among_failures_the_latest_wins_in_every_order() {
    let app = spawn_app().await;
    let events = [
        ("failed", "evt_x", "2025-10-09T10:00:00Z"),
        ("failed", "evt_z", "2025-10-09T10:00:00.5Z"),
        ("failed", "evt_y", "2025-10-09T10:00:00.500Z"),
        ("failed", "evt_w", "2025-10-09T09:59:59Z"),
    ];
    let states = final_states(&app, &events).await;
    assert_eq!(states.len(), 24);
    for state in &states {
        assert_eq!(state["status"], "failed");
        // evt_y and evt_z tie on time; evt_z has the greater id.
        assert_eq!(state["deciding_event_id"], "evt_z");
        assert_eq!(state["failure_reason"], "failure of evt_z");
        assert!(
            state["reasons"]
                .as_str()
                .unwrap()
                .contains("reason of evt_z")
        );
        assert_eq!(state["patient_mrn"], Value::Null);
    }
}

#[tokio::test]
async fn received_times_span_every_event_of_the_job() {
    let app = spawn_app().await;
    let first = created_event("evt_t1", "50", "pn-t", "2025-10-09T10:00:00Z");
    let second = failed_event("evt_t2", "50", "pn-t", "2025-10-09T10:05:00Z");
    app.post_webhook(&first.to_string()).await;
    let (_, before) = json_of(app.get("/v1/jobs/50").await).await;
    app.post_webhook(&second.to_string()).await;
    let (_, after) = json_of(app.get("/v1/jobs/50").await).await;
    assert_eq!(after["deciding_event_id"], "evt_t1");
    assert_eq!(after["first_received_at"], before["first_received_at"]);
    assert!(after["last_received_at"].as_str() > before["last_received_at"].as_str());
}
