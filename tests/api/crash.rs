//! Crash safety: a server killed with SIGKILL mid-traffic loses no event it
//! acknowledged, and shows nothing half-applied when it comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::helpers::*;
use crate::process::*;

const KILL_POINTS: u64 = 5;
const CLIENTS: usize = 8;

/// One client: unique events, sent until the server stops answering.
/// Returns the (event id, type) of every event answered 2xx.
async fn client(
    address: String,
    round: u64,
    client: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> Vec<(String, &'static str)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut acknowledged = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (id, job) = (
            format!("evt_k{round}_c{client}_{n}"),
            format!("k{round}-c{client}-{n}"),
        );
        let (kind, event) = if n % 3 == 0 {
            (
                "failed",
                failed_event(&id, &job, &format!("pn-{job}"), "2025-10-09T10:00:00Z"),
            )
        } else {
            (
                "created",
                created_event(&id, &job, &format!("pn-{job}"), "2025-10-09T10:00:00Z"),
            )
        };
        let body = event.to_string();
        let sent = http
            .post(format!("{address}/webhooks/cobalt"))
            .header("cobalt-verification", sign(body.as_bytes()))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                acknowledged.push((id, kind));
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => panic!("{id}: unexpected {}", response.status()),
            // The server died under this request: its outcome is unknown.
            Err(_) => break,
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_when_the_server_is_killed() {
    let dir = workspace();
    let mut acknowledged_total = 0;
    for round in 0..KILL_POINTS {
        let mut server = start(&dir, &TEST_ENV, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(client(
                    server.address.clone(),
                    round,
                    c,
                    stop.clone(),
                    answered.clone(),
                ))
            })
            .collect();
        // Traffic flowing first (a busy machine starts slowly), then a
        // different moment in each round.
        for _ in 0..500 {
            if answered.load(Ordering::Relaxed) >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 + 97 * round)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = Vec::new();
        for client in clients {
            acknowledged.extend(client.await.unwrap());
        }
        assert!(
            acknowledged.len() > 10,
            "round {round}: too little traffic to test"
        );
        acknowledged_total += acknowledged.len();

        // Open the database as the restarted server would, after the crash.
        let db = dir.sql().await;
        for (id, kind) in &acknowledged {
            let state: Option<(String, String)> = sqlx::query_as(
                "select j.status, j.deciding_event_id from events e
                 join jobs j on j.job_id = e.job_id and j.patient_note_id = e.patient_note_id
                 where e.event_id = $1",
            )
            .bind(id)
            .fetch_optional(&db)
            .await
            .unwrap();
            assert_eq!(
                state,
                Some((kind.to_string(), id.clone())),
                "round {round}: {id} was acknowledged"
            );
        }
        // Nothing half-applied: every job's deciding event is in the log,
        // and every applied outcome has its job.
        let orphans: i64 = sqlx::query_scalar(
            "select count(*) from jobs where deciding_event_id not in (select event_id from events)",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        let jobless: i64 = sqlx::query_scalar(
            "select count(*) from events e where outcome = 'applied' and not exists
             (select 1 from jobs j where j.job_id = e.job_id and j.patient_note_id = e.patient_note_id)",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!((orphans, jobless), (0, 0), "round {round}");
        db.close().await;
    }
    // The last restart serves what every round stored.
    let server = start(&dir, &TEST_ENV, &[]);
    assert_eq!(server.get("/readyz", "").await.status(), 200);
    let events = dir.count("events").await;
    assert!(
        events >= acknowledged_total as i64,
        "{events} stored, {acknowledged_total} acknowledged"
    );
}
