//! The change feed, `GET /v1/changes`: every change of a job's state in
//! commit order, resumable from a cursor, gap-free across replicas.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::*;
use crate::process::*;

/// A page of the feed read with `token`.
async fn feed(app: &TestApp, query: &str, token: &str) -> (reqwest::StatusCode, Value) {
    json_of(
        app.get_with(&format!("/v1/changes{query}"), Some(token))
            .await,
    )
    .await
}

/// The feed's page once it holds `count` changes: on PostgreSQL a change
/// takes its position a moment after its commit (the relay).
async fn feed_of(app: &TestApp, query: &str, token: &str, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, page) = feed(app, query, token).await;
        assert_eq!(status, 200, "{page}");
        let held = page["changes"].as_array().unwrap().len();
        if held >= count || Instant::now() > deadline {
            assert_eq!(held, count, "{page}");
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds(page: &Value) -> Vec<(String, String)> {
    page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            (
                change["job"]["job_id"].as_str().unwrap().to_owned(),
                change["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_change_is_listed_in_commit_order_and_resumes_from_its_cursor() {
    let app = spawn_app().await;
    let (status, empty) = feed(&app, "", TOKEN).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty, json!({"changes": [], "next_cursor": "0"}));

    app.register("7001", json!({ "patient_note_id": "pn-7001" }))
        .await;
    deliver_ok(
        &app,
        &created_event("evt_f1", "7001", "pn-7001", "2025-10-09T10:00:00Z"),
    )
    .await;
    deliver_ok(
        &app,
        &failed_event("evt_f2", "7002", "pn-7002", "2025-10-09T10:00:00Z"),
    )
    .await;
    // A repeat and an outranked event change nothing; an outranking one does.
    deliver_ok(
        &app,
        &failed_event("evt_f2", "7002", "pn-7002", "2025-10-09T10:00:00Z"),
    )
    .await;
    deliver_ok(
        &app,
        &failed_event("evt_f3", "7001", "pn-7001", "2025-10-09T11:00:00Z"),
    )
    .await;
    deliver_ok(
        &app,
        &created_event("evt_f4", "7002", "pn-7002", "2025-10-09T09:00:00Z"),
    )
    .await;

    let page = feed_of(&app, "", TOKEN, 4).await;
    let expected = [
        ("7001", "registered"),
        ("7001", "created"),
        ("7002", "failed"),
        ("7002", "created"),
    ];
    assert_eq!(
        kinds(&page),
        expected
            .iter()
            .map(|(job, kind)| (job.to_string(), kind.to_string()))
            .collect::<Vec<_>>()
    );
    let changes = page["changes"].as_array().unwrap();
    let cursors: Vec<i64> = changes
        .iter()
        .map(|c| c["cursor"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    assert_eq!(page["next_cursor"], changes[3]["cursor"]);
    // Each carries the job's state now, as GET /v1/jobs shows it, MRN masked.
    let (_, job) = app.get_json("/v1/jobs/7002").await;
    assert_eq!(changes[2]["job"], job, "the job as it is now");
    assert_eq!(changes[3]["job"]["status"], "created");
    assert_eq!(changes[3]["job"]["patient_mrn"], "***9977");
    assert!(!page.to_string().contains(MRN));
    assert!(changes[0]["at"].as_str().unwrap().ends_with('Z'));

    // One at a time, following next_cursor, gives the same changes.
    let mut after = String::new();
    let mut one_by_one = Vec::new();
    loop {
        let query = match after.as_str() {
            "" => "?limit=1".to_owned(),
            after => format!("?limit=1&after={after}"),
        };
        let (status, page) = feed(&app, &query, TOKEN).await;
        assert_eq!(status, 200, "{page}");
        let next = page["next_cursor"].as_str().unwrap().to_owned();
        if page["changes"].as_array().unwrap().is_empty() {
            assert_eq!(next, after, "an empty page gives the same cursor back");
            break;
        }
        one_by_one.extend(kinds(&page));
        after = next;
    }
    assert_eq!(one_by_one, kinds(&feed(&app, "", TOKEN).await.1));

    // What comes later follows the cursor.
    deliver_ok(
        &app,
        &created_event("evt_f5", "7003", "pn-7003", "2025-10-09T10:00:00Z"),
    )
    .await;
    let later = feed_of(&app, &format!("?after={after}"), TOKEN, 1).await;
    assert_eq!(kinds(&later), [("7003".to_owned(), "created".to_owned())]);

    // A phi token sees the whole MRN, and that reading is audited.
    let (_, whole) = feed(&app, &format!("?after={after}"), PHI_TOKEN).await;
    assert_eq!(whole["changes"][0]["job"]["patient_mrn"], MRN);
    assert!(!whole.to_string().contains(NOTE_TEXT));
    app.stop().await;
}

async fn deliver_ok(app: &TestApp, event: &Value) {
    let response = app.post_webhook(&event.to_string()).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_pending_job_that_passes_overdue_after_is_a_change_once_then_its_outcome_follows() {
    let app = spawn_app_with(|config| config.overdue_after_secs = 1).await;
    app.register("7101", json!({ "patient_note_id": "pn-7101" }))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (_, page) = feed(&app, "", TOKEN).await;
        if kinds(&page).len() >= 2 || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        kinds(&page),
        [
            ("7101".to_owned(), "registered".to_owned()),
            ("7101".to_owned(), "overdue".to_owned())
        ]
    );
    assert_eq!(page["changes"][1]["job"]["overdue"], true);
    // Noted once: later checks add nothing.
    tokio::time::sleep(crate::helpers::OVERDUE_CHECK * 2).await;
    assert_eq!(kinds(&feed(&app, "", TOKEN).await.1).len(), 2);
    deliver_ok(
        &app,
        &created_event("evt_o1", "7101", "pn-7101", "2025-10-09T10:00:00Z"),
    )
    .await;
    let page = feed_of(&app, "", TOKEN, 3).await;
    assert_eq!(kinds(&page)[2], ("7101".to_owned(), "created".to_owned()));
    assert_eq!(page["changes"][0]["job"]["status"], "created");
    app.stop().await;
}

#[tokio::test]
async fn wait_holds_the_request_until_a_change_arrives() {
    let app = Arc::new(spawn_app().await);
    let waiting = {
        let app = app.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = feed(&app, "?wait=20", TOKEN).await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "it waits while nothing changed");
    deliver_ok(
        &app,
        &created_event("evt_w1", "7201", "pn-7201", "2025-10-09T10:00:00Z"),
    )
    .await;
    let ((status, page), elapsed) = waiting.await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(kinds(&page), [("7201".to_owned(), "created".to_owned())]);
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // With nothing new, it answers empty at the end of its wait.
    let cursor = page["next_cursor"].as_str().unwrap();
    let started = Instant::now();
    let (_, empty) = feed(&app, &format!("?after={cursor}&wait=1"), TOKEN).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(empty["changes"], json!([]));
    assert_eq!(empty["next_cursor"], cursor);
}

#[tokio::test]
async fn bad_parameters_are_refused_and_each_bound_holds() {
    let app = spawn_app().await;
    deliver_ok(
        &app,
        &created_event("evt_b1", "7301", "pn-7301", "2025-10-09T10:00:00Z"),
    )
    .await;
    // Position 1 is given (on PostgreSQL, by the relay, a moment later).
    feed_of(&app, "", TOKEN, 1).await;
    for query in [
        "?after=abc",
        "?after=-1",
        "?after=",
        "?after=12345678901234567890",
        "?after=99",
        "?limit=0",
        "?limit=1001",
        "?wait=121",
        "?wait=-1",
    ] {
        let (status, body) = feed(&app, query, TOKEN).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "bad_request", "{query}");
    }
    for query in ["?limit=1000", "?limit=1", "?after=1", "?after=0", "?wait=0"] {
        let (status, body) = feed(&app, query, TOKEN).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    assert_eq!(app.get_with("/v1/changes", None).await.status(), 401);
    // Reading needs `read`; a submit-only token has it, a stranger has none.
    assert_eq!(
        app.get_with("/v1/changes", Some("not-a-token"))
            .await
            .status(),
        401
    );
    app.stop().await;
}

#[tokio::test]
async fn a_cursor_from_before_the_purge_is_gone_and_old_changes_are_purged() {
    let app = spawn_app_with(|config| config.purge_interval_secs = 1).await;
    for n in 0..3 {
        let event = created_event(
            &format!("evt_p{n}"),
            &format!("740{n}"),
            "pn-7400",
            "2025-10-09T10:00:00Z",
        );
        deliver_ok(&app, &event).await;
    }
    feed_of(&app, "", TOKEN, 3).await;
    // The first two changes are older than change_retention_days.
    let db = app.sql().await;
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    sqlx::query("update changes set at_ns = $1 where position <= 2")
        .bind(cobalt_receiver::clock::unix_ns(old))
        .execute(&db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.count("changes").await > 1 {
        assert!(Instant::now() < deadline, "the old changes were not purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, gone) = feed(&app, "?after=1", TOKEN).await;
    assert_eq!(status, 410, "{gone}");
    assert_eq!(gone["code"], "cursor_expired");
    // From the purge's edge on, and without a cursor, the rest reads.
    let (status, rest) = feed(&app, "?after=2", TOKEN).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(kinds(&rest), [("7402".to_owned(), "created".to_owned())]);
    assert_eq!(kinds(&feed(&app, "", TOKEN).await.1).len(), 1);
    db.close().await;
    app.stop().await;
}

/// Two replicas take deliveries from several writers at once while a
/// consumer follows the feed through both; transactions of the test's own
/// hold a change uncommitted for a while meanwhile (the interleaving that
/// makes a sequence-ordered feed skip rows). The consumer must see every
/// applied outcome and every held change exactly once, in increasing
/// positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_following_two_replicas_sees_every_change_once() {
    if !runs_on(
        Engine::Postgres,
        "a_consumer_following_two_replicas_sees_every_change_once",
    ) {
        return;
    }
    const WRITERS: usize = 6;
    const EVENTS_EACH: usize = 120;
    const HELD: usize = 8;
    let dir = workspace_on(Engine::Postgres);
    let env = [
        ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
        ("COBALT_RECEIVER_API_TOKENS", TOKEN),
    ];
    let replicas = Arc::new([start(&dir, &env, &[]), start(&dir, &env, &[])]);
    let client = reqwest::Client::new();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The consumer: small pages of varying size, alternating replicas.
    let consumer = {
        let (client, replicas, done) = (client.clone(), replicas.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<(i64, String, String)> = Vec::new();
            let mut after = "0".to_owned();
            let mut quiet = 0;
            for round in 0usize.. {
                let replica = &replicas[round % 2];
                let limit = 1 + (round * 7) % 40;
                let page: Value = client
                    .get(format!(
                        "{}/v1/changes?after={after}&limit={limit}&wait=1",
                        replica.address
                    ))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let changes = page["changes"].as_array().unwrap();
                for change in changes {
                    seen.push((
                        change["cursor"].as_str().unwrap().parse().unwrap(),
                        change["job"]["job_id"].as_str().unwrap().to_owned(),
                        change["kind"].as_str().unwrap().to_owned(),
                    ));
                }
                after = page["next_cursor"].as_str().unwrap().to_owned();
                if changes.is_empty() && done.load(std::sync::atomic::Ordering::SeqCst) {
                    quiet += 1;
                    if quiet >= 3 {
                        break;
                    }
                }
            }
            seen
        })
    };

    // Changes held uncommitted while the replicas commit around them.
    let holders = {
        let url = dir.database_url().to_owned();
        tokio::spawn(async move {
            let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
            for n in 0..HELD {
                let mut tx = connection.begin().await.unwrap();
                sqlx::query(
                    "insert into changes (job_id, patient_note_id, kind, at_ns)
                     values ($1, 'pn-held', 'registered', 0)",
                )
                .bind(format!("held-{n}"))
                .execute(&mut *tx)
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(300 + 150 * n as u64)).await;
                tx.commit().await.unwrap();
            }
        })
    };

    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let (client, replicas) = (client.clone(), replicas.clone());
        writers.spawn(async move {
            let mut applied = Vec::new();
            for n in 0..EVENTS_EACH {
                // Jobs shared among writers, so outcomes race on one job.
                let job = format!("{}", 80_000 + (n * 3 + writer) % 200);
                let id = format!("evt_gap_{writer}_{n}");
                let created = format!("2025-10-09T10:{:02}:{:02}Z", n % 60, writer);
                let event = if (n + writer) % 2 == 0 {
                    created_event(&id, &job, &format!("pn-{job}"), &created)
                } else {
                    failed_event(&id, &job, &format!("pn-{job}"), &created)
                };
                let replica = &replicas[(n + writer) % 2];
                let response = post_signed(
                    &client,
                    &format!("{}/webhooks/cobalt", replica.address),
                    event.to_string(),
                )
                .await;
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                if body["status"] == "applied" {
                    applied.push(job);
                }
            }
            applied
        });
    }
    let mut applied: HashMap<String, usize> = HashMap::new();
    for job in writers.join_all().await.into_iter().flatten() {
        *applied.entry(job).or_default() += 1;
    }
    holders.await.unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = consumer.await.unwrap();

    let positions: Vec<i64> = seen.iter().map(|(position, _, _)| *position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions increase, none twice"
    );
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut held = HashSet::new();
    for (_, job, kind) in &seen {
        match kind.as_str() {
            "created" | "failed" => *outcomes.entry(job.clone()).or_default() += 1,
            "registered" => assert!(held.insert(job.clone()), "{job} seen twice"),
            other => panic!("unexpected change {other}"),
        }
    }
    assert_eq!(held.len(), HELD, "every held change was seen");
    assert_eq!(
        outcomes, applied,
        "each applied outcome is one change, seen once"
    );
    let total: usize = applied.values().sum();
    assert!(total >= 200, "enough outcomes to race: {total}");
    let db = dir.sql().await;
    let stored: i64 = sqlx::query_scalar("select count(*) from changes")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored as usize, seen.len());
    db.close().await;
}
