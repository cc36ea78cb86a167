//! A zero-downtime deploy: two replicas on one PostgreSQL database under
//! steady load from a sender that behaves like Cobalt, restarted in turn
//! with SIGTERM, one of them then killed with SIGKILL and brought back.
//! No event may be lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::helpers::*;
use crate::process::*;

const SENDERS: usize = 6;

/// What became of one event, as Cobalt would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged,
    /// Answered in a way Cobalt retries, and the retry was acknowledged.
    AcknowledgedOnRetry,
    /// Both tries failed, or the first timed out: Cobalt gives up.
    Lost,
}

enum Try {
    Acknowledged,
    /// A 5xx, a 429 or a connection error: Cobalt retries once, 1 s later.
    Retryable(String),
    /// A timeout or any other answer: Cobalt does not retry.
    Final(String),
}

async fn try_once(http: &reqwest::Client, address: &str, body: &str) -> Try {
    let sent = http
        .post(format!("{address}/webhooks/cobalt"))
        .header("cobalt-verification", sign(body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Try::Acknowledged,
        Ok(response) if response.status().is_server_error() || response.status() == 429 => {
            Try::Retryable(response.status().to_string())
        }
        Ok(response) => Try::Final(response.status().to_string()),
        Err(error) if error.is_timeout() => Try::Final("timed out".into()),
        Err(error) => Try::Retryable(format!("connection error: {error}")),
    }
}

/// Sends unique events until told to stop, each to the replicas in turn,
/// retrying as Cobalt does (once, 1 s later, here on the other replica).
async fn sender(
    n: usize,
    replicas: Arc<RwLock<[String; 2]>>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Fate, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut sent = Vec::new();
    for k in 0..20_000usize {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = format!("evt_deploy_{n}_{k}");
        let job = format!("deploy-{n}-{k}");
        let body = created_event(&id, &job, "pn-deploy", "2025-10-09T10:00:00Z").to_string();
        let first = (n + k) % 2;
        let address = replicas.read().unwrap()[first].clone();
        let fate = match try_once(&http, &address, &body).await {
            Try::Acknowledged => (Fate::Acknowledged, String::new()),
            Try::Final(why) => (Fate::Lost, why),
            Try::Retryable(why) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let address = replicas.read().unwrap()[1 - first].clone();
                match try_once(&http, &address, &body).await {
                    Try::Acknowledged => (Fate::AcknowledgedOnRetry, why),
                    Try::Retryable(again) | Try::Final(again) => {
                        (Fate::Lost, format!("{why}, then {again}"))
                    }
                }
            }
        };
        sent.push((id, fate.0, fate.1));
    }
    sent
}

async fn wait_ready(address: &str) {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{address}/readyz")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{address} did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_and_a_crash_lose_no_event() {
    if !runs_on(
        Engine::Postgres,
        "a_rolling_restart_and_a_crash_lose_no_event",
    ) {
        return;
    }
    let dir = workspace_on(Engine::Postgres);
    let mut processes = [start(&dir, &TEST_ENV, &[]), start(&dir, &TEST_ENV, &[])];
    let replicas = Arc::new(RwLock::new([
        processes[0].address.clone(),
        processes[1].address.clone(),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| tokio::spawn(sender(n, replicas.clone(), stop.clone())))
        .collect();
    let steady = || tokio::time::sleep(Duration::from_millis(1_500));

    steady().await;
    // A rolling update: each replica in turn gets SIGTERM, finishes what
    // it holds, exits, and a new one takes its place.
    for replica in [0, 1] {
        processes[replica].terminate();
        let status = processes[replica].wait_exit(Duration::from_secs(15));
        assert!(status.success(), "replica {replica} exited with {status}");
        processes[replica] = start(&dir, &TEST_ENV, &[]);
        wait_ready(&processes[replica].address).await;
        replicas.write().unwrap()[replica] = processes[replica].address.clone();
        steady().await;
    }
    // A crash: replica 0 is killed mid-traffic and comes back.
    processes[0].child.kill().unwrap();
    processes[0].child.wait().unwrap();
    steady().await;
    processes[0] = start(&dir, &TEST_ENV, &[]);
    wait_ready(&processes[0].address).await;
    replicas.write().unwrap()[0] = processes[0].address.clone();
    steady().await;
    stop.store(true, Ordering::Relaxed);

    let mut fates = Vec::new();
    for sender in senders {
        fates.extend(sender.await.unwrap());
    }
    let lost: Vec<_> = fates
        .iter()
        .filter(|(_, fate, _)| *fate == Fate::Lost)
        .collect();
    let retried = fates
        .iter()
        .filter(|(_, fate, _)| *fate == Fate::AcknowledgedOnRetry)
        .count();
    assert!(
        fates.len() > 500,
        "too little traffic to test: {}",
        fates.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} events lost, e.g. {:?}",
        lost.len(),
        fates.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "deploy: {} events, {retried} acknowledged on Cobalt's retry, 0 lost",
        fates.len()
    );

    // Every acknowledged event is stored exactly once (the event id is
    // unique), with its job.
    let db = dir.sql().await;
    let stored: Vec<String> =
        sqlx::query_scalar("select event_id from events where event_id like 'evt_deploy_%'")
            .fetch_all(&db)
            .await
            .unwrap();
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    for (id, _, _) in &fates {
        assert!(
            stored.contains(id),
            "{id} was acknowledged but is not stored"
        );
    }
    assert_eq!(
        stored.len(),
        fates.len(),
        "an event no sender sent is stored"
    );
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs where job_id like 'deploy-%'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(jobs as usize, fates.len());
}

/// The manifests name a local image: each says, right above that line, how
/// to build, push and name the real one.
#[test]
fn every_manifest_says_how_to_name_the_image() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut manifests = 0;
    for path in ["statefulset.yaml", "postgres/deployment.yaml"] {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with("image: cobalt-receiver"))
            .unwrap_or_else(|| panic!("{path} names no cobalt-receiver image"));
        let above = lines[at.saturating_sub(8)..at].join("\n");
        assert!(
            above.contains("registry") && above.contains("tag"),
            "{path}: the lines above the image say nothing of naming it:\n{above}"
        );
        manifests += 1;
    }
    assert_eq!(manifests, 2);
}
