//! Payloads (patient data) are emptied after the retention period; event
//! ids, outcomes and job states stay.

use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::helpers::*;

#[tokio::test]
async fn payloads_past_retention_are_emptied_and_state_stays() {
    let app = spawn_app_with(|config| {
        config.payload_retention_days = 30;
        config.purge_interval_secs = 1;
    })
    .await;
    for n in 0..6 {
        let event = created_event(
            &format!("evt_ret{n}"),
            &format!("ret{n}"),
            "pn-ret",
            "2025-10-09T10:00:00Z",
        );
        assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    }
    // Three events were received 40 days ago.
    let mut operator = app.operator().await;
    let backdated = sqlx::query(
        "update events set received_at = '2020-01-01T00:00:00Z' where event_id < 'evt_ret3'",
    )
    .execute(&mut operator)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(backdated, 3);
    operator.close().await.unwrap();

    let db = app.db().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept: Vec<(String, bool)> = loop {
        let rows: Vec<(String, bool)> =
            sqlx::query_as("select event_id, payload <> '' from events order by event_id")
                .fetch_all(&db)
                .await
                .unwrap();
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
