//! Database trouble as readiness sees it: deliveries failing while a small
//! probe would pass, and a database that does not answer.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// Makes every insert into the event log fail, as a full disk does
/// (PostgreSQL's SQLSTATE 53100), until [`allow_events`].
async fn refuse_events(app: &TestApp) {
    let db = app.dir.sql().await;
    let statements: &[&str] = match app.dir.engine() {
        Engine::Sqlite => &["create trigger refuse_events before insert on events
             begin select raise(abort, 'database or disk is full'); end"],
        Engine::Postgres => &[
            "create function refuse_events() returns trigger language plpgsql as $$
             begin raise exception 'could not extend file' using errcode = '53100'; end $$",
            "create trigger refuse_events before insert on events
             for each row execute function refuse_events()",
        ],
    };
    for statement in statements {
        sqlx::query(statement).execute(&db).await.unwrap();
    }
    db.close().await;
}

async fn allow_events(app: &TestApp) {
    let db = app.dir.sql().await;
    let statement = match app.dir.engine() {
        Engine::Sqlite => "drop trigger refuse_events",
        Engine::Postgres => "drop trigger refuse_events on events",
    };
    sqlx::query(statement).execute(&db).await.unwrap();
    db.close().await;
}

#[tokio::test]
async fn readiness_is_false_while_deliveries_fail_and_true_once_they_succeed() {
    let app = spawn_app().await;
    let event = |n: u32| {
        created_event(
            &format!("evt_full_{n}"),
            &format!("{n}"),
            "pn-full",
            "2025-10-09T10:00:00Z",
        )
        .to_string()
    };
    assert_eq!(app.post_webhook(&event(1)).await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);

    refuse_events(&app).await;
    assert_eq!(app.post_webhook(&event(2)).await.status(), 503);
    let (status, body) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("the database cannot take writes"),
        "{body}"
    );

    allow_events(&app).await;
    // Cobalt's next delivery is taken, and readiness follows it.
    assert_eq!(app.post_webhook(&event(3)).await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn readiness_answers_within_a_second_whatever_the_database_does() {
    // Writes may wait 3 s for the lock; readiness does not.
    let app = spawn_app_with(|config| config.write_timeout_ms = 3_000).await;
    let lock = app.dir.hold_write_lock().await;
    let started = Instant::now();
    let (status, body) = json_of(app.get("/readyz").await).await;
    let took = started.elapsed();
    eprintln!("readiness with the write lock held answered in {took:?}");
    assert_eq!(status, 503, "{body}");
    assert!(
        took < Duration::from_millis(1_500),
        "answered after {took:?}"
    );
    lock.release().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/readyz").await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "ready again once the lock is gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
