//! Group commit: many deliveries in one transaction keep every rule of a
//! single one, and a batch fails as a whole.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// Posts every body at once; answers (status, body) in the same order.
async fn post_all(app: &TestApp, bodies: Vec<String>) -> tokio::task::JoinSet<(usize, u16, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (n, body) in bodies.into_iter().enumerate() {
        let (client, url) = (
            app.client.clone(),
            format!("{}/webhooks/cobalt", app.address),
        );
        tasks.spawn(async move {
            let response = post_signed(&client, &url, body).await;
            let status = response.status().as_u16();
            (n, status, response.json().await.unwrap())
        });
    }
    tasks
}

#[tokio::test]
async fn a_batch_with_duplicates_and_several_events_of_one_job_applies_each_once() {
    let app = spawn_app_with(|config| config.write_timeout_ms = 5_000).await;
    // The lock makes the deliveries sent meanwhile queue up and reach the
    // writer as one batch.
    let lock = app.hold_write_lock().await;

    // Six events of one job, each delivered three times, and one event each
    // for ten other jobs; all queued behind the lock.
    let job_events = [
        failed_event("evt_g1", "g", "pn-g", "2025-10-09T10:00:00Z"),
        created_event("evt_g2", "g", "pn-g", "2025-10-09T10:01:00Z"),
        failed_event("evt_g3", "g", "pn-g", "2025-10-09T10:09:00Z"),
        created_event("evt_g4", "g", "pn-g", "2025-10-09T10:03:00Z"),
        created_event("evt_g5", "g", "pn-g", "2025-10-09T10:03:00Z"),
        failed_event("evt_g6", "g", "pn-g", "2025-10-09T10:02:00Z"),
    ];
    let mut bodies: Vec<String> = Vec::new();
    for round in 0..3 {
        for event in &job_events {
            bodies.push(event.to_string());
        }
        for other in 0..10 / 3 + round {
            let id = format!("evt_o{round}{other}");
            bodies.push(
                created_event(
                    &id,
                    &format!("o{round}{other}"),
                    "pn-o",
                    "2025-10-09T10:00:00Z",
                )
                .to_string(),
            );
        }
    }
    let total = bodies.len();
    let answers = post_all(&app, bodies).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    lock.release().await;
    let answers = answers.join_all().await;

    assert_eq!(answers.len(), total);
    let mut firsts: HashMap<String, usize> = HashMap::new();
    for (_, status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        if body["status"] != "duplicate" {
            *firsts
                .entry(body["event_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    // Each event id was taken exactly once, however its copies were batched.
    assert!(firsts.values().all(|&n| n == 1), "{firsts:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|(_, _, b)| b["status"] == "duplicate")
            .count(),
        12
    );
    assert_eq!(app.count("events").await, firsts.len() as i64);

    // The job's state is its highest-ranked event's: created beats failed,
    // and of the two created at 10:03 the greater id wins.
    let (_, job) = json_of(app.get("/v1/jobs/g").await).await;
    assert_eq!(job["status"], "created");
    assert_eq!(job["deciding_event_id"], "evt_g5");
    assert_eq!(job["emr_note_id"], "emr-evt_g5");
}

#[tokio::test]
async fn a_write_failing_mid_batch_rolls_back_the_whole_batch() {
    // A write that fails part-way through a batch: on SQLite the file
    // fills up (room for a few dozen events), on PostgreSQL a constraint
    // an operator added refuses one event in the middle.
    let app = spawn_app_with(|config| {
        config.max_database_bytes = 256 * 1024;
        config.write_timeout_ms = 5_000;
    })
    .await;
    if app.engine() == Engine::Postgres {
        let operator = app.sql().await;
        sqlx::query("alter table events add constraint refuse_f060 check (event_id <> 'evt_f060')")
            .execute(&operator)
            .await
            .unwrap();
        operator.close().await;
    }
    // The lock makes the deliveries sent meanwhile queue up and reach the
    // writer as one batch.
    let lock = app.hold_write_lock().await;
    let bodies: Vec<String> = (0..120)
        .map(|n| {
            let mut event = created_event(
                &format!("evt_f{n:03}"),
                &format!("f{n:03}"),
                &format!("pn-f{n:03}"),
                "2025-10-09T10:00:00Z",
            );
            event["data"]["note"] = Value::String("padding ".repeat(300));
            event.to_string()
        })
        .collect();
    let answers = post_all(&app, bodies).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    lock.release().await;
    let answers = answers.join_all().await;

    let refused = answers
        .iter()
        .filter(|(_, status, _)| *status == 503)
        .count();
    assert!(refused > 0, "the database never filled up");
    let db = app.sql().await;
    for (n, status, body) in &answers {
        let event_id = format!("evt_f{n:03}");
        let stored: i64 = sqlx::query_scalar("select count(*) from events where event_id = $1")
            .bind(&event_id)
            .fetch_one(&db)
            .await
            .unwrap();
        let job: i64 = sqlx::query_scalar("select count(*) from jobs where job_id = $1")
            .bind(format!("f{n:03}"))
            .fetch_one(&db)
            .await
            .unwrap();
        match status {
            // A 2xx is committed, event and job state alike.
            200 => assert_eq!((stored, job), (1, 1), "{event_id} was acknowledged: {body}"),
            // A 503 left nothing behind, not even part of its batch.
            503 => {
                assert_eq!(body["code"], "storage_unavailable");
                assert_eq!((stored, job), (0, 0), "{event_id} was refused but stored");
            }
            other => panic!("{event_id}: unexpected {other}: {body}"),
        }
    }
    // The service stays up and readable. (Readiness may rightly be 503
    // now: a nearly full file may have no room for its 64 KiB probe.)
    assert_eq!(app.get("/healthz").await.status(), 200);
    let acknowledged = answers.iter().find(|(_, status, _)| *status == 200);
    if let Some((n, _, _)) = acknowledged {
        assert_eq!(app.get(&format!("/v1/jobs/f{n:03}")).await.status(), 200);
    }
}

#[tokio::test]
async fn a_repeat_that_cannot_be_noted_leaves_nothing_of_its_batch_and_the_retry_labels_right() {
    let app = spawn_app_with(|config| config.write_timeout_ms = 5_000).await;
    let old = created_event("evt_r_old", "r-old", "pn-r-old", "2025-10-09T10:00:00Z").to_string();
    assert_eq!(app.post_webhook(&old).await.status(), 200);
    // Noting a repeated delivery fails: the batch's last write.
    let operator = app.sql().await;
    let refuse: &[&str] = match app.engine() {
        Engine::Sqlite => &[
            "create trigger refuse_repeats before insert on repeated_deliveries
             begin select raise(abort, 'repeats refused'); end",
        ],
        Engine::Postgres => &[
            "create function refuse_repeats() returns trigger language plpgsql as $$
             begin raise exception 'repeats refused'; end $$",
            "create trigger refuse_repeats before insert on repeated_deliveries
             for each row execute function refuse_repeats()",
        ],
    };
    for statement in refuse {
        sqlx::query(statement).execute(&operator).await.unwrap();
    }
    // 48 new events and 4 repeats of the old one reach the writer together.
    let news: Vec<String> = (0..48)
        .map(|n| {
            created_event(
                &format!("evt_r{n:02}"),
                &format!("r{n:02}"),
                &format!("pn-r{n:02}"),
                "2025-10-09T10:00:00Z",
            )
            .to_string()
        })
        .collect();
    let mut bodies = news.clone();
    for at in [0, 12, 24, 36] {
        bodies.insert(at, old.clone());
    }
    let lock = app.hold_write_lock().await;
    let answers = post_all(&app, bodies.clone()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    lock.release().await;
    let answers = answers.join_all().await;

    let mut refused = Vec::new();
    for (n, status, body) in &answers {
        let event: Value = serde_json::from_str(&bodies[*n]).unwrap();
        let event_id = event["id"].as_str().unwrap();
        if event_id == "evt_r_old" {
            assert_eq!(*status, 503, "a repeat that could not be noted: {body}");
            continue;
        }
        let stored: i64 = sqlx::query_scalar("select count(*) from events where event_id = $1")
            .bind(event_id)
            .fetch_one(&operator)
            .await
            .unwrap();
        match status {
            200 => {
                assert_eq!(stored, 1, "{event_id} acknowledged but not stored");
                assert_eq!(body["status"], "applied", "{event_id}: {body}");
            }
            503 => {
                assert_eq!(stored, 0, "{event_id} refused but stored");
                refused.push(bodies[*n].clone());
            }
            other => panic!("{event_id}: unexpected {other}: {body}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "no new event shared a batch with a repeat"
    );
    // Cobalt's retry of each refused delivery is its first recording.
    let allow = match app.engine() {
        Engine::Sqlite => "drop trigger refuse_repeats",
        Engine::Postgres => "drop trigger refuse_repeats on repeated_deliveries",
    };
    sqlx::query(allow).execute(&operator).await.unwrap();
    operator.close().await;
    for body in &refused {
        let (status, answer) = json_of(app.post_webhook(body).await).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "applied", "{answer}");
    }
    let (status, answer) = json_of(app.post_webhook(&old).await).await;
    assert_eq!(
        (status.as_u16(), &answer["status"]),
        (200, &Value::from("duplicate"))
    );
}
