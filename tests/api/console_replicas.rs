//! The console behind a round-robin balancer in front of two replicas on
//! one database: every new connection goes to the other replica, and a
//! session, a recovery run and a sign-out hold on both.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::fake_cobalt::{FakeCobalt, point_at};
use crate::helpers::console::{Browser, console_on, csrf_of, failure, minutes_ago};
use crate::helpers::*;

/// A TCP balancer on loopback that sends each new connection to the next
/// upstream in turn, and counts where each went.
struct Balancer {
    address: String,
    served: Arc<[AtomicUsize; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(upstreams: [String; 2]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let served: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let counts = served.clone();
        let task = tokio::spawn(async move {
            for turn in 0usize.. {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let which = turn % 2;
                counts[which].fetch_add(1, Ordering::Relaxed);
                let upstream = upstreams[which].clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            address,
            served,
            task,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_session_a_recovery_and_a_sign_out_hold_on_every_replica() {
    let cobalt = FakeCobalt::start(None).await;
    let configure = point_at(&cobalt);
    let first = spawn_app_with(|config| {
        configure(config);
        console_on(config);
    })
    .await;
    let second = spawn_app_in(first.dir.clone(), |config| {
        configure(config);
        console_on(config);
    })
    .await;
    let balancer = Balancer::start([
        host_port(first.console.as_ref().unwrap()),
        host_port(second.console.as_ref().unwrap()),
    ])
    .await;

    // Two overdue jobs whose outcomes Cobalt has but never delivered.
    for job in ["9700", "9701"] {
        let (status, _) = first
            .register(
                job,
                json!({ "patient_note_id": format!("pn-{job}"), "submitted_at": minutes_ago(30) }),
            )
            .await;
        assert_eq!(status, 201);
        cobalt.add_event(
            failure(&format!("evt_b{job}"), job, "EMR down", &minutes_ago(20)),
            "failed",
        );
    }

    let browser = Browser::at(balancer.address.clone())
        .sign_in(OPS_TOKEN)
        .await;
    for n in 0..10 {
        let page = browser.get("/ui/jobs").await;
        assert_eq!(page.status, StatusCode::OK, "page {n}: {}", page.location());
        assert!(page.headers.get("set-cookie").is_none(), "page {n}");
    }
    let [a, b] = [0, 1].map(|i| balancer.served[i].load(Ordering::Relaxed));
    assert!(a >= 5 && b >= 5, "both replicas served: {a} and {b}");

    // A recovery started through one replica is watched through both.
    let overdue = browser.get("/ui/overdue").await;
    let csrf = csrf_of(&overdue.body);
    let started = browser.post("/ui/recoveries", &[("csrf", &csrf)]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let run = started.location().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut finished_pages = 0;
    while finished_pages < 2 {
        let page = browser.get(&run).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        if page.body.contains("Finished") {
            assert!(
                page.body
                    .contains("Recovered (their delivery had been lost)</dt><dd>2"),
                "{}",
                page.body
            );
            finished_pages += 1;
        }
        assert!(Instant::now() < deadline, "the recovery finishes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for job in ["9700", "9701"] {
        let (_, state) = second.get_json(&format!("/v1/jobs/{job}")).await;
        assert_eq!(state["status"], "failed");
    }
    // The console's run took the sweep's lease: no scheduled sweep is due
    // before an interval has passed.
    let db = first.dir.sql().await;
    let holder: Option<String> =
        sqlx::query_scalar("select holder from reconcile_lease where id = 1")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    assert!(holder.is_some(), "the console's sweep holds the lease");

    // Signing out through one replica ends the session on both.
    let page = browser.get("/ui").await;
    let csrf = csrf_of(&page.body);
    let out = browser.post("/ui/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    for n in 0..2 {
        let page = browser.get("/ui/jobs").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "replica {n}");
        assert!(page.location().starts_with("/ui/sign-in"), "replica {n}");
    }
    drop(balancer);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_and_when_its_token_signs_in_again() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.console_session_max_secs = 3;
    })
    .await;
    let first = Browser::signed_in(&app, TOKEN).await;
    // A second sign-in with the same token replaces the first session.
    let signed_in_at = Instant::now();
    let second = Browser::signed_in(&app, TOKEN).await;
    assert_eq!(first.get("/ui").await.status, StatusCode::SEE_OTHER);
    // Busy or not, the session ends at its lifetime: alive for its first
    // two seconds (requests keep it from idling), gone after three.
    while signed_in_at.elapsed() < Duration::from_secs(2) {
        assert_eq!(second.get("/ui").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(3_300).saturating_sub(signed_in_at.elapsed())).await;
    let ended = second.get("/ui").await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert!(ended.location().starts_with("/ui/sign-in"));
    // Only a digest of the session id is kept.
    let db = app.dir.sql().await;
    let ids: Vec<String> = sqlx::query_scalar("select id_sha256 from console_sessions")
        .fetch_all(&db)
        .await
        .unwrap();
    db.close().await;
    let cookie = second.cookie.clone().unwrap();
    assert!(
        ids.iter().all(|id| *id != cookie && id.len() == 64),
        "{ids:?}"
    );
}
