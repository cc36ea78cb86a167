//! Several replicas on one PostgreSQL database: two real server processes,
//! deliveries split between them, one truth in the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;
use sqlx::Connection;

use crate::helpers::*;
use crate::process::*;

/// Two replicas of the service on one new PostgreSQL database.
fn two_replicas() -> (Workspace, [Process; 2]) {
    let dir = workspace_on(Engine::Postgres);
    let replicas = [start(&dir, &TEST_ENV, &[]), start(&dir, &TEST_ENV, &[])];
    (dir, replicas)
}

async fn post_to(client: &reqwest::Client, replica: &Process, body: String) -> (u16, Value) {
    let response = post_signed(
        client,
        &format!("{}/webhooks/cobalt", replica.address),
        body,
    )
    .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_at_both_replicas_at_once_is_applied_once() {
    if !runs_on(
        Engine::Postgres,
        "the_same_event_at_both_replicas_at_once_is_applied_once",
    ) {
        return;
    }
    let (dir, replicas) = two_replicas();
    let replicas = Arc::new(replicas);
    let client = reqwest::Client::new();
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..100 {
        let kind = n % 3;
        let id = format!("evt_dup_{n}");
        let (job, note) = (format!("dup-{n}"), format!("pn-dup-{n}"));
        let body = match kind {
            0 => failed_event(&id, &job, &note, "2025-10-09T10:00:00Z"),
            1 => created_event(&id, &job, &note, "2025-10-09T10:00:00Z"),
            // Not a patient-note event: kept, and deduped all the same.
            _ => serde_json::json!({"id": id, "type": "appointment.created", "data": {}}),
        }
        .to_string();
        for replica in 0..2 {
            let (client, replicas, body) = (client.clone(), replicas.clone(), body.clone());
            sends.spawn(async move {
                let answer = post_to(&client, &replicas[replica], body).await;
                (n, answer)
            });
        }
    }
    let mut answers: HashMap<usize, Vec<(u16, Value)>> = HashMap::new();
    for (n, answer) in sends.join_all().await {
        answers.entry(n).or_default().push(answer);
    }
    for (n, pair) in &answers {
        let mut statuses: Vec<&str> = pair
            .iter()
            .map(|(code, body)| {
                assert_eq!(*code, 200, "event {n}: {body}");
                body["status"].as_str().unwrap()
            })
            .collect();
        statuses.sort();
        let first = if n % 3 == 2 { "ignored" } else { "applied" };
        let mut expected = ["duplicate", first];
        expected.sort();
        assert_eq!(statuses, expected, "event {n}");
        // The duplicate reports the original's outcome.
        let duplicate = pair
            .iter()
            .find(|(_, b)| b["status"] == "duplicate")
            .unwrap();
        assert_eq!(
            duplicate.1["original_outcome"], first,
            "event {n}: {}",
            duplicate.1
        );
    }
    assert_eq!(dir.count("events").await, 100);
    assert_eq!(dir.count("payloads").await, 100);
    assert_eq!(dir.count("jobs").await, 67);
}

/// The four events of one job, ranked: `d` decides (created beats failed;
/// `c` and `d` tie on `created`, and `d` is the greater id).
fn job_events(job: &str) -> Vec<(String, String)> {
    let note = format!("pn-{job}");
    let id = |tag: &str| format!("evt_{job}_{tag}");
    vec![
        (
            id("a"),
            failed_event(&id("a"), job, &note, "2025-10-09T10:00:09Z").to_string(),
        ),
        (
            id("b"),
            failed_event(&id("b"), job, &note, "2025-10-09T10:00:05Z").to_string(),
        ),
        (
            id("c"),
            created_event(&id("c"), job, &note, "2025-10-09T10:00:01Z").to_string(),
        ),
        (
            id("d"),
            created_event(&id("d"), job, &note, "2025-10-09T10:00:01Z").to_string(),
        ),
    ]
}

/// Ranks of `job_events`, lowest first: b < a < c < d.
fn rank(tag: usize) -> u8 {
    [1, 0, 2, 3][tag]
}

fn permutations(items: Vec<usize>) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items];
    }
    let mut all = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.clone();
        rest.remove(i);
        for mut tail in permutations(rest) {
            tail.insert(0, *first);
            all.push(tail);
        }
    }
    all
}

async fn assert_decided_by_d(replicas: &[Process; 2], job: &str) {
    for replica in replicas {
        let (status, state) = json_of(replica.get(&format!("/v1/jobs/{job}"), TOKEN).await).await;
        assert_eq!(status, 200, "{job}");
        assert_eq!(
            state["deciding_event_id"],
            format!("evt_{job}_d"),
            "{job}: {state}"
        );
        assert_eq!(state["status"], "created");
        assert_eq!(state["emr_note_id"], format!("emr-evt_{job}_d"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_arrival_order_split_across_two_replicas_gives_one_final_state() {
    if !runs_on(
        Engine::Postgres,
        "every_arrival_order_split_across_two_replicas_gives_one_final_state",
    ) {
        return;
    }
    let (dir, replicas) = two_replicas();
    let replicas = Arc::new(replicas);
    let client = reqwest::Client::new();
    // 24 orders x 16 ways to split four events over two replicas.
    let mut cases = tokio::task::JoinSet::new();
    for (o, order) in permutations(vec![0, 1, 2, 3]).into_iter().enumerate() {
        for split in 0..16usize {
            let (client, replicas, order) = (client.clone(), replicas.clone(), order.clone());
            cases.spawn(async move {
                let job = format!("ord-{o}-{split}");
                let events = job_events(&job);
                let mut best: Option<u8> = None;
                for (step, tag) in order.into_iter().enumerate() {
                    let replica = &replicas[(split >> step) & 1];
                    let (code, answer) = post_to(&client, replica, events[tag].1.clone()).await;
                    assert_eq!(code, 200, "{job}: {answer}");
                    // Each answer is what one database applying them in
                    // this order would say.
                    let expected = if best.is_none_or(|b| rank(tag) > b) {
                        "applied"
                    } else {
                        "superseded"
                    };
                    assert_eq!(answer["status"], expected, "{job} step {step}: {answer}");
                    best = best.max(Some(rank(tag)));
                }
                job
            });
        }
    }
    let jobs = cases.join_all().await;
    assert_eq!(jobs.len(), 384);
    for job in jobs.iter().step_by(23) {
        assert_decided_by_d(&replicas, job).await;
    }
    let db = dir.sql().await;
    let wrong: i64 = sqlx::query_scalar(
        "select count(*) from jobs where deciding_event_id <> 'evt_' || job_id || '_d'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "every job is decided by its d event");
    assert_eq!(dir.count("events").await, 384 * 4);
}

/// Random orders, random splits, every event of a job sent at once: the
/// final state is the highest-ranked event, whatever lands where first.
#[test]
fn random_concurrent_orders_and_splits_follow_the_ranking_rule() {
    if !runs_on(
        Engine::Postgres,
        "random_concurrent_orders_and_splits_follow_the_ranking_rule",
    ) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (dir, replicas) = two_replicas();
    let replicas = Arc::new(replicas);
    let client = reqwest::Client::new();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        prop::collection::vec(0usize..2, 4),
        // A duplicate of one event, also sent at once, to either replica.
        (0usize..4, 0usize..2),
    );
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |(order, split, (again, again_to))| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let job = format!("rnd-{n}");
            let events = job_events(&job);
            runtime.block_on(async {
                let mut sends = tokio::task::JoinSet::new();
                let deliveries = order
                    .iter()
                    .zip(&split)
                    .map(|(tag, to)| (*tag, *to))
                    .chain([(again, again_to)]);
                for (tag, to) in deliveries {
                    let (client, replicas, body) =
                        (client.clone(), replicas.clone(), events[tag].1.clone());
                    sends.spawn(async move { post_to(&client, &replicas[to], body).await });
                }
                let answers = sends.join_all().await;
                let count = |status: &str| {
                    answers
                        .iter()
                        .filter(|(_, a)| a["status"] == status)
                        .count()
                };
                prop_assert!(answers.iter().all(|(code, _)| *code == 200), "{answers:?}");
                prop_assert_eq!(count("duplicate"), 1, "{:?}", answers);
                // The highest-ranked event is applied whenever it lands.
                prop_assert!(count("applied") >= 1);
                let (_, state) =
                    json_of(replicas[n % 2].get(&format!("/v1/jobs/{job}"), TOKEN).await).await;
                prop_assert_eq!(&state["deciding_event_id"], &format!("evt_{job}_d"));
                Ok(())
            })
        })
        .unwrap();
    let events = runtime.block_on(dir.count("events"));
    assert_eq!(events, 64 * 4, "one row per event id");
}

/// Replicas started at the same moment on an empty database: one applies
/// the migrations while the others wait their turn, and all serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_all_serve() {
    if !runs_on(
        Engine::Postgres,
        "replicas_starting_together_migrate_once_and_all_serve",
    ) {
        return;
    }
    let dir = empty_postgres_workspace();
    let replicas: Vec<Process> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| start(&dir, &TEST_ENV, &[])))
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    });
    for (n, replica) in replicas.iter().enumerate() {
        assert_eq!(replica.get("/readyz", "").await.status(), 200);
        let body = created_event(
            &format!("evt_mig_{n}"),
            &format!("mig-{n}"),
            "pn-mig",
            "2025-10-09T10:00:00Z",
        )
        .to_string();
        let (status, answer) = post_to(&reqwest::Client::new(), replica, body).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_every_migration_applied(&dir).await;
    assert_eq!(dir.count("events").await, 3);
}

/// The PostgreSQL database of `dir` has every migration of this build.
async fn assert_every_migration_applied(dir: &Workspace) {
    let db = dir.sql().await;
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&db)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, files);
}

/// A replica's database connection runs through a proxy the test cuts.
struct Faulty {
    app: TestApp,
    proxy: crate::proxy::Proxy,
}

async fn app_behind_proxy(write_timeout_ms: u64) -> Faulty {
    let dir = Arc::new(workspace_on(Engine::Postgres));
    let (proxy, via_proxy) = crate::proxy::Proxy::in_front_of(dir.database_url()).await;
    let app = spawn_app_in(dir, |config| {
        config.database_url = via_proxy;
        config.write_timeout_ms = write_timeout_ms;
    })
    .await;
    Faulty { app, proxy }
}

fn event(n: usize) -> String {
    created_event(
        &format!("evt_fault_{n}"),
        &format!("fault-{n}"),
        "pn-fault",
        "2025-10-09T10:00:00Z",
    )
    .to_string()
}

/// Polls `/readyz` until it answers `status`, for at most `limit`.
async fn ready_becomes(app: &TestApp, status: u16, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = app.get("/readyz").await.status().as_u16();
        if now == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {now}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_a_prompt_503_and_the_service_reconnects_by_itself() {
    if !runs_on(
        Engine::Postgres,
        "a_cut_connection_is_a_prompt_503_and_the_service_reconnects_by_itself",
    ) {
        return;
    }
    let Faulty { app, proxy } = app_behind_proxy(1_000).await;
    assert_eq!(app.post_webhook(&event(0)).await.status(), 200);

    for link in [crate::proxy::Link::Cut, crate::proxy::Link::Stalled] {
        proxy.set(link);
        let started = tokio::time::Instant::now();
        let response = app.post_webhook(&event(1)).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "{link:?}");
        assert_eq!(json_of(response).await.1["code"], "storage_unavailable");
        assert!(
            took < Duration::from_millis(1_500),
            "{link:?}: answered after {took:?}"
        );
        ready_becomes(&app, 503, Duration::from_secs(5)).await;
        // Reads fail as promptly, and the process stays up.
        assert_eq!(app.get("/healthz").await.status(), 200);

        proxy.set(crate::proxy::Link::Up);
        ready_becomes(&app, 200, Duration::from_secs(10)).await;
        let (status, body) = json_of(app.post_webhook(&event(1)).await).await;
        assert_eq!(status, 200, "{link:?}: {body}");
        assert_eq!(app.get("/v1/jobs/fault-1").await.status(), 200);
    }
    assert_eq!(app.count("events").await, 2);
}

/// The connection is cut while batches are in flight: each delivery is
/// answered 2xx only if committed; every 503, sent again as Cobalt would,
/// lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_batch_never_acknowledges_what_was_not_committed() {
    if !runs_on(
        Engine::Postgres,
        "a_connection_cut_mid_batch_never_acknowledges_what_was_not_committed",
    ) {
        return;
    }
    let Faulty { app, proxy } = app_behind_proxy(2_000).await;
    assert_eq!(app.post_webhook(&event(0)).await.status(), 200);
    // A lock makes the deliveries queue and meet the cut inside a batch.
    let lock = app.hold_write_lock().await;
    let mut sends = tokio::task::JoinSet::new();
    for n in 1..=60 {
        let (client, url) = (
            app.client.clone(),
            format!("{}/webhooks/cobalt", app.address),
        );
        sends.spawn(async move {
            (
                n,
                post_signed(&client, &url, event(n)).await.status().as_u16(),
            )
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Cut for good before the lock goes: a batch the lock held must not
    // get its answer through a relay not yet torn down.
    proxy.cut().await;
    lock.release().await;
    let answers = sends.join_all().await;
    proxy.set(crate::proxy::Link::Up);

    let db = app.sql().await;
    let stored = |n: usize| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from events where event_id = $1")
                .bind(format!("evt_fault_{n}"))
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let mut refused = 0;
    for (n, status) in &answers {
        match status {
            200 => assert_eq!(stored(*n).await, 1, "evt_fault_{n} was acknowledged"),
            503 => refused += 1,
            other => panic!("evt_fault_{n}: unexpected {other}"),
        }
    }
    assert!(refused > 0, "the cut met no delivery");
    ready_becomes(&app, 200, Duration::from_secs(10)).await;
    for (n, status) in answers {
        if status == 503 {
            let (code, body) = json_of(app.post_webhook(&event(n)).await).await;
            assert_eq!(code, 200, "retry of evt_fault_{n}: {body}");
        }
    }
    for n in 0..=60 {
        assert_eq!(stored(n).await, 1, "evt_fault_{n}");
    }
}

/// Another replica's transaction holds an event it has not committed: the
/// same event arriving here waits for it, and is answered `duplicate` only
/// once the original is committed (and `applied` if it rolls back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_answered_only_after_the_original_commits() {
    if !runs_on(
        Engine::Postgres,
        "a_duplicate_is_answered_only_after_the_original_commits",
    ) {
        return;
    }
    let app = spawn_app_with(|config| config.write_timeout_ms = 5_000).await;
    for (ending, expected) in [("commit", "duplicate"), ("rollback", "applied")] {
        let id = format!("evt_pending_{ending}");
        let mut other = sqlx::postgres::PgConnection::connect(app.database_url())
            .await
            .unwrap();
        sqlx::query("begin").execute(&mut other).await.unwrap();
        sqlx::query(
            "insert into events (event_id, received_at, outcome) values ($1, '2025-10-09T10:00:00Z', 'ignored')",
        )
        .bind(&id)
        .execute(&mut other)
        .await
        .unwrap();

        let body = created_event(
            &id,
            &format!("pending-{ending}"),
            "pn-p",
            "2025-10-09T10:00:00Z",
        )
        .to_string();
        let (client, url) = (
            app.client.clone(),
            format!("{}/webhooks/cobalt", app.address),
        );
        let answer = tokio::spawn(async move {
            let response = post_signed(&client, &url, body).await;
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !answer.is_finished(),
            "answered before the original was decided"
        );

        sqlx::query(ending).execute(&mut other).await.unwrap();
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], expected, "after {ending}: {body}");
        if expected == "duplicate" {
            assert_eq!(body["original_outcome"], "ignored");
        }
    }
}

/// The database ends the writer's session between two deliveries (a
/// restart, a failover, an idle-connection reaper): the next batch fails
/// on the dead connection, is retried once on a new one, and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_retried_once_on_a_new_one() {
    if !runs_on(
        Engine::Postgres,
        "a_lost_connection_is_retried_once_on_a_new_one",
    ) {
        return;
    }
    let app = spawn_app().await;
    let event = |n: usize| {
        created_event(
            &format!("evt_lost_{n}"),
            &format!("lost-{n}"),
            "pn-lost",
            "2025-10-09T10:00:00Z",
        )
        .to_string()
    };
    let db = app.sql().await;
    for n in 0..3 {
        assert_eq!(app.post_webhook(&event(n)).await.status(), 200);
        let ended: i64 = sqlx::query_scalar(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
             where application_name = 'cobalt-receiver' and datname = current_database()) as ended",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        assert!(ended >= 1, "no session of the service to end");
    }
    assert_eq!(app.post_webhook(&event(3)).await.status(), 200);
    assert_eq!(app.count("events").await, 4);
}

/// Once this replica finds the database unreachable, reads, deliveries and
/// readiness are answered 503 at once (no connect or acquire timeout each),
/// one probe finds out when it is back, and all is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_cannot_be_reached_every_answer_is_prompt() {
    if !runs_on(
        Engine::Postgres,
        "while_the_database_cannot_be_reached_every_answer_is_prompt",
    ) {
        return;
    }
    let Faulty { app, proxy } = app_behind_proxy(2_000).await;
    assert_eq!(app.post_webhook(&event(0)).await.status(), 200);
    assert_eq!(app.get("/v1/jobs/fault-0").await.status(), 200);
    proxy.set(crate::proxy::Link::Cut);
    // The first delivery to meet the outage finds it out.
    assert_eq!(app.post_webhook(&event(1)).await.status(), 503);
    for round in 0..10 {
        let started = tokio::time::Instant::now();
        assert_eq!(
            app.get("/v1/jobs/fault-0").await.status(),
            503,
            "read {round}"
        );
        assert_eq!(
            app.post_webhook(&event(1)).await.status(),
            503,
            "delivery {round}"
        );
        assert_eq!(app.get("/readyz").await.status(), 503, "readiness {round}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(300),
            "round {round}: a read, a delivery and readiness took {took:?}"
        );
        assert_eq!(app.get("/healthz").await.status(), 200);
    }
    proxy.set(crate::proxy::Link::Up);
    ready_becomes(&app, 200, Duration::from_secs(10)).await;
    assert_eq!(app.get("/v1/jobs/fault-0").await.status(), 200);
    assert_eq!(app.post_webhook(&event(1)).await.status(), 200);
    assert_eq!(app.count("events").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_the_database_is_down_waits_for_it() {
    if !runs_on(
        Engine::Postgres,
        "a_replica_started_while_the_database_is_down_waits_for_it",
    ) {
        return;
    }
    // A database never migrated, reached only through a proxy that
    // refuses every connection.
    let dir = empty_postgres_workspace();
    let (proxy, via_proxy) = crate::proxy::Proxy::in_front_of(dir.database_url()).await;
    proxy.set(crate::proxy::Link::Cut);
    let env = [
        TEST_ENV[0],
        TEST_ENV[1],
        ("COBALT_RECEIVER_DATABASE_URL", via_proxy.as_str()),
    ];
    let mut replica = start(&dir, &env, &[]);
    let client = reqwest::Client::new();
    let body = event(0);
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        let started = std::time::Instant::now();
        let (status, answer) = post_to(&client, &replica, body.clone()).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(status, 503, "round {round}: {answer}");
        assert_eq!(answer["code"], "storage_unavailable", "{answer}");
        assert!(
            took < Duration::from_millis(100),
            "round {round}: a delivery took {took:?}"
        );
        let started = std::time::Instant::now();
        assert_eq!(replica.get("/v1/jobs/fault-0", TOKEN).await.status(), 503);
        assert!(started.elapsed() < Duration::from_millis(100), "a read");
        assert_eq!(replica.get("/healthz", "").await.status(), 200);
        let ready = replica.get("/readyz", "").await;
        assert_eq!(ready.status(), 503);
        assert!(ready.headers()["connection"] == "close");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(replica.child.try_wait().unwrap().is_none(), "still running");
    // The database comes back: migrated and serving, without a restart.
    eprintln!("while waiting for the database, the slowest delivery took {slowest:?}");
    proxy.set(crate::proxy::Link::Up);
    let back = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while replica.get("/readyz", "").await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready within 20 s of the database's return:\n{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ready {:?} after the database came back", back.elapsed());
    let (status, answer) = post_to(&client, &replica, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(dir.count("events").await, 1);
    assert_every_migration_applied(&dir).await;
    // One line when it began to wait, one when it ended.
    let log = replica.log();
    assert_eq!(log.matches("waiting for the database").count(), 1, "{log}");
    assert_eq!(
        log.matches("can be reached; migrations applied").count(),
        1,
        "{log}"
    );
    assert!(replica.child.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn migrate_still_fails_at_once_when_the_database_cannot_be_reached() {
    let dir = workspace();
    let started = std::time::Instant::now();
    let (status, log) = run(
        &dir,
        &[(
            "COBALT_RECEIVER_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        )],
        &["migrate"],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot reach the database"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
