//! How many clients the service holds: its open-file limit raised to the
//! hard one, connections capped below it, and clients waiting for an
//! outcome capped so that deliveries always find room.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::process::{Process, TEST_ENV, start_limited};

#[tokio::test]
async fn past_the_waiters_cap_a_wait_is_answered_at_once_and_deliveries_go_on() {
    let app = spawn_app_with(|config| config.max_waiters = 2).await;
    let (status, _) = app
        .register("6001", json!({ "patient_note_id": "pn-6001" }))
        .await;
    assert_eq!(status, 201);
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let request = app
                .client
                .get(format!("{}/v1/jobs/6001?wait=30", app.address))
                .bearer_auth(TOKEN)
                .send();
            tokio::spawn(request)
        })
        .collect();
    // Both take their places (on loopback, well within half a second);
    // a third is answered at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, refused) = app
        .call(
            reqwest::Method::GET,
            "/v1/jobs/6001?wait=30",
            Some(TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 503, "{refused}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    assert_eq!(refused["code"], "too_many_waiters", "{refused}");
    // A plain read and a delivery are not held back.
    assert_eq!(app.get("/v1/jobs/6001").await.status(), 200);
    let event = created_event("evt_6001", "6001", "pn-6001", "2025-10-09T10:00:00Z");
    assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    for waiter in waiting {
        let response = waiter.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
    }
    // The places are free again.
    let (status, state) = app
        .call(
            reqwest::Method::GET,
            "/v1/jobs/6001?wait=1",
            Some(TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{state}");
}

#[test]
fn the_service_raises_its_own_open_file_limit_and_derives_the_cap_from_it() {
    let dir = workspace();
    let mut server = start_limited(&dir, &TEST_ENV, &["serve"], Some((1_024, 8_192)));
    let log = server.log();
    assert!(log.contains("open_files=8192"), "{log}");
    assert!(log.contains("max_connections=3968"), "{log}");
    assert!(log.contains("max_waiters=1984"), "{log}");
    assert!(log.contains("the open-file limit was raised"), "{log}");
    server.terminate();
    server.wait_exit(Duration::from_secs(10));
}

#[tokio::test]
async fn past_the_connections_cap_a_client_waits_until_a_place_is_free() {
    let app = spawn_app_with(|config| {
        config.max_connections = 4;
        config.max_waiters = 2;
    })
    .await;
    let address: SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    // Four clients connect and say nothing: every place is taken.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fifth = tokio::spawn(raw_get(address, "/healthz".into()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fifth.is_finished(), "a fifth connection is not served");
    // One closes; the fifth is accepted and answered.
    drop(idle.pop());
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), fifth)
        .await
        .expect("served once a place was free")
        .unwrap();
    assert_eq!(status, 200);
}

/// Long-polls and deliveries at once: (status, time to answer) of each
/// long-poll, which waits `wait` seconds for an unknown job (404 at its
/// end) unless refused (503), and each delivery answered 2xx within 1 s.
async fn long_polls_while_deliveries_arrive(
    server: &Process,
    count: usize,
    wait: u64,
) -> Vec<(u16, Duration)> {
    let address: SocketAddr = server
        .address
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let polls: Vec<_> = (0..count)
        .map(|_| tokio::spawn(raw_get(address, format!("/v1/jobs/lp-none?wait={wait}"))))
        .collect();
    let mut slowest = Duration::ZERO;
    for n in 0..30 {
        let body = created_event(
            &format!("evt_flood_{n}"),
            &format!("flood-{n}"),
            &format!("pn-flood-{n}"),
            "2025-10-09T10:00:00Z",
        )
        .to_string();
        let started = Instant::now();
        let response = server.post(body.as_bytes(), &sign(body.as_bytes())).await;
        assert_eq!(response.status(), 200, "delivery {n}");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{count} long-polls: the slowest delivery took {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest delivery took {slowest:?}"
    );
    let mut answers = Vec::new();
    for poll in polls {
        answers.push(poll.await.unwrap());
    }
    answers
}

/// `GET path` on a connection of its own: the status and how long the
/// answer took (from before connecting).
async fn raw_get(address: SocketAddr, path: String) -> (u16, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(2).any(|pair| pair == b"\r\n") {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "closed without an answer");
        head.extend_from_slice(&buffer[..read]);
    }
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (status, started.elapsed())
}

/// The test process itself opens thousands of connections.
fn raise_own_open_files(at_least: u64) {
    let files = cobalt_receiver::capacity::raise_open_files().unwrap();
    assert!(
        files.now >= at_least,
        "this test needs {at_least} open files; the hard limit is {}",
        files.hard
    );
}

#[tokio::test]
async fn at_1024_open_files_3000_long_polls_hold_back_no_delivery() {
    raise_own_open_files(4_000);
    let dir = workspace();
    let server = start_limited(&dir, &TEST_ENV, &["serve"], Some((1_024, 1_024)));
    let log = server.log();
    assert!(log.contains("open_files=1024"), "{log}");
    assert!(log.contains("max_connections=384"), "{log}");
    assert!(log.contains("max_waiters=192"), "{log}");
    let answers = long_polls_while_deliveries_arrive(&server, 3_000, 8).await;
    let waited = answers.iter().filter(|(status, _)| *status == 404).count();
    let refused: Vec<Duration> = answers
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|(_, took)| *took)
        .collect();
    assert_eq!(waited + refused.len(), 3_000, "every long-poll answered");
    assert!((1..=192).contains(&waited), "{waited} waited");
    // Refused ones are answered as soon as they are read, well before any
    // waiter's 8 s are up.
    let slowest = refused.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(4),
        "a refusal took {slowest:?}"
    );
    assert_eq!(server.get("/healthz", TOKEN).await.status(), 200);
    let log = server.log();
    assert!(!log.contains("Too many open files"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_higher_hard_limit_3000_long_polls_all_wait() {
    raise_own_open_files(4_000);
    let dir = workspace();
    let server = start_limited(&dir, &TEST_ENV, &["serve"], Some((1_024, 16_384)));
    let log = server.log();
    assert!(log.contains("open_files=16384"), "{log}");
    assert!(log.contains("max_waiters=4032"), "{log}");
    let answers = long_polls_while_deliveries_arrive(&server, 3_000, 8).await;
    for (status, took) in &answers {
        assert_eq!(*status, 404, "every long-poll waited");
        assert!(*took >= Duration::from_secs(7), "waited its time: {took:?}");
    }
    assert_eq!(server.get("/healthz", TOKEN).await.status(), 200);
}
