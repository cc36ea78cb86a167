//! Payloads (patient data) are emptied after the retention period; event
//! ids, outcomes and job states stay.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// A server with 30-day retention that purges every second, holding
/// `count` created events `evt_{tag}{n}` (job `{tag}{n}`, note `pn-{tag}`),
/// their payloads sealed (a sealed payload is purged as any other).
async fn purging_app_with_events(tag: &str, count: usize) -> TestApp {
    let app = spawn_app_with(|config| {
        config.payload_retention_days = 30;
        config.purge_interval_secs = 1;
        seal_with(config, &[ENCRYPTION_KEY]);
    })
    .await;
    for n in 0..count {
        let event = created_event(
            &format!("evt_{tag}{n}"),
            &format!("{tag}{n}"),
            &format!("pn-{tag}"),
            "2025-10-09T10:00:00Z",
        );
        assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    }
    app
}

#[tokio::test]
async fn payloads_past_retention_are_emptied_and_state_stays() {
    let app = purging_app_with_events("ret", 6).await;
    // Three events were received 40 days ago.
    let operator = app.sql().await;
    let backdated = sqlx::query(
        "update events set received_at = '2020-01-01T00:00:00Z' where event_id < 'evt_ret3'",
    )
    .execute(&operator)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(backdated, 3);
    operator.close().await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let kept: Vec<(String, bool)> = loop {
        let rows = app.payloads_kept().await;
        if rows.iter().filter(|(_, kept)| !kept).count() == 3 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expected: Vec<(String, bool)> = (0..6).map(|n| (format!("evt_ret{n}"), n >= 3)).collect();
    assert_eq!(kept, expected, "only the old payloads are emptied");

    // The job states and the event log are whole; dedupe still knows the ids.
    for n in 0..6 {
        let (status, job) = json_of(app.get(&format!("/v1/jobs/ret{n}")).await).await;
        assert_eq!(status, 200);
        assert_eq!(job["emr_note_id"], format!("emr-evt_ret{n}"));
    }
    let replay = created_event("evt_ret0", "ret0", "pn-ret", "2025-10-09T10:00:00Z").to_string();
    assert_eq!(
        json_of(app.post_webhook(&replay).await).await.1["status"],
        "duplicate"
    );
}

/// The purge sweeps the log in arrival order and stops at the first event
/// still within retention: nothing after it is emptied early, and the next
/// sweep carries on from where this one stopped.
#[tokio::test]
async fn the_purge_sweeps_in_arrival_order_and_resumes_where_it_stopped() {
    let app = purging_app_with_events("sw", 5).await;
    let backdate = |ids: &'static str| {
        let app = &app;
        async move {
            let operator = app.sql().await;
            sqlx::query(&format!(
                "update events set received_at = '2020-01-01T00:00:00Z' where event_id in ({ids})"
            ))
            .execute(&operator)
            .await
            .unwrap();
            operator.close().await;
        }
    };
    let kept = |expected: [bool; 5]| {
        let app = &app;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let rows: Vec<bool> = app
                    .payloads_kept()
                    .await
                    .into_iter()
                    .map(|(_, kept)| kept)
                    .collect();
                if rows == expected || Instant::now() > deadline {
                    return rows;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // The third event is recent, so the fourth waits for it.
    backdate("'evt_sw0', 'evt_sw1', 'evt_sw3'").await;
    assert_eq!(
        kept([false, false, true, true, true]).await,
        [false, false, true, true, true]
    );
    // Two more purge intervals change nothing while the third is recent.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        kept([false, false, true, true, true]).await,
        [false, false, true, true, true]
    );

    backdate("'evt_sw2'").await;
    assert_eq!(
        kept([false, false, false, false, true]).await,
        [false, false, false, false, true]
    );
}

/// Every replica runs the purge; together they empty exactly the expired
/// payloads, once, while deliveries keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_purging_side_by_side_empty_exactly_the_expired_payloads() {
    if !runs_on(
        Engine::Postgres,
        "replicas_purging_side_by_side_empty_exactly_the_expired_payloads",
    ) {
        return;
    }
    let first = purging_app_with_events("rep", 40).await;
    let second = spawn_app_in(first.dir.clone(), |config| {
        config.payload_retention_days = 30;
        config.purge_interval_secs = 1;
        seal_with(config, &[ENCRYPTION_KEY]);
    })
    .await;
    let operator = first.sql().await;
    sqlx::query(
        "update events set received_at = '2020-01-01T00:00:00Z'
         where event_id in (select event_id from events order by seq limit 30)",
    )
    .execute(&operator)
    .await
    .unwrap();
    operator.close().await;
    // New deliveries to both replicas meanwhile.
    for n in 40..50 {
        let app = if n % 2 == 0 { &first } else { &second };
        let event = created_event(
            &format!("evt_rep{n}"),
            &format!("rep{n}"),
            "pn-rep",
            "2025-10-09T10:00:00Z",
        );
        assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let kept: Vec<bool> = first
            .payloads_kept()
            .await
            .into_iter()
            .map(|(_, kept)| kept)
            .collect();
        if kept.iter().filter(|k| !**k).count() >= 30 || Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expected: Vec<bool> = (0..50).map(|n| n >= 30).collect();
    assert_eq!(kept, expected);
    assert_eq!(first.count("events").await, 50);
}
