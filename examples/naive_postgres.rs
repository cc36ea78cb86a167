//! The naive PostgreSQL design, for comparison in bench/run.sh: an axum
//! server with a sqlx pool that gives every delivery a transaction of its
//! own (no group commit, no writer task).
//!
//! Per `POST /webhooks/cobalt`: the signature is checked as the service
//! checks it (`cobalt_receiver::signature`), the body is read by the
//! service's own parser, then in ONE transaction the event is inserted
//! (`on conflict (event_id) do nothing`) and, for a new outcome event, its
//! job is upserted, replacing the state only where the new event outranks
//! the deciding one (as the service ranks: created beats failed, then the
//! later `created`, then the greater event id). The answer comes after the
//! commit, with durability at the server default (`synchronous_commit`
//! on): `{"event_id":…,"status":"applied"|"superseded"|"ignored"|"duplicate"}`.
//!
//! It creates its own schema (if missing) in the database given. It prints
//! `listening address=IP:PORT` once it accepts connections.
//!
//! cargo run --release --example naive_postgres -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/naive --pool-size 16

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use cobalt_receiver::domain::{Meaning, event};
use cobalt_receiver::secret::Secret;
use cobalt_receiver::signature::{self, Verifier};
use sqlx::postgres::{PgPool, PgPoolOptions};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

// As the service: mimalloc, so the allocator is not the difference.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// The database to keep events and jobs in (its schema is created).
    #[arg(long)]
    database_url: String,
    /// Connections in the pool, each one request's transaction at a time.
    #[arg(long, default_value_t = 16)]
    pool_size: u32,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Webhook secret (a test value).
    #[arg(long, default_value = "whsec_bench_not_a_secret")]
    secret: String,
}

/// The same tables and indexes as the service's PostgreSQL schema, with the
/// payload kept in the event row.
const SCHEMA: &str = r#"
create table if not exists naive_events (
    seq             bigint generated always as identity primary key,
    event_id        text collate "C" not null unique,
    event_type      text,
    job_id          text collate "C",
    patient_note_id text collate "C",
    created         text,
    received_at     text not null,
    attempt         bigint,
    outcome         text not null,
    reject_reason   text,
    payload         text not null
);
create index if not exists naive_events_by_job on naive_events (job_id, seq);
create table if not exists naive_jobs (
    patient_note_id           text collate "C" not null,
    job_id                    text collate "C" not null,
    status                    text not null,
    emr_note_id               text,
    failure_reason            text,
    reasons                   text,
    patient_mrn               text,
    location_id               text,
    access_token_reference_id text,
    deciding_event_id         text collate "C" not null,
    deciding_event_created    text not null,
    deciding_event_created_ns bigint not null,
    first_received_at         text not null,
    last_received_at          text not null,
    primary key (patient_note_id, job_id)
);
create index if not exists naive_jobs_by_job_id on naive_jobs (job_id);
create index if not exists naive_jobs_created_by_time
    on naive_jobs (deciding_event_created_ns, patient_note_id, job_id) where status = 'created';
create index if not exists naive_jobs_failed_by_time
    on naive_jobs (deciding_event_created_ns, patient_note_id, job_id) where status = 'failed';
"#;

const INSERT_EVENT: &str = r#"
insert into naive_events (event_id, event_type, job_id, patient_note_id, created,
                          received_at, attempt, outcome, reject_reason, payload)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
on conflict (event_id) do nothing
returning seq
"#;

const UPSERT_JOB: &str = r#"
insert into naive_jobs as jobs (patient_note_id, job_id, status, emr_note_id, failure_reason,
                                reasons, patient_mrn, location_id, access_token_reference_id,
                                deciding_event_id, deciding_event_created,
                                deciding_event_created_ns, first_received_at, last_received_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
on conflict (patient_note_id, job_id) do update set
    status = excluded.status,
    emr_note_id = excluded.emr_note_id,
    failure_reason = excluded.failure_reason,
    reasons = excluded.reasons,
    patient_mrn = excluded.patient_mrn,
    location_id = excluded.location_id,
    access_token_reference_id = excluded.access_token_reference_id,
    deciding_event_id = excluded.deciding_event_id,
    deciding_event_created = excluded.deciding_event_created,
    deciding_event_created_ns = excluded.deciding_event_created_ns,
    last_received_at = excluded.last_received_at
where (excluded.status = 'created', excluded.deciding_event_created_ns, excluded.deciding_event_id)
    > (jobs.status = 'created', jobs.deciding_event_created_ns, jobs.deciding_event_id)
returning deciding_event_id
"#;

struct App {
    pool: PgPool,
    verifier: Verifier,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = PgPoolOptions::new()
        .max_connections(args.pool_size.max(1))
        .connect(&args.database_url)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    let app = Arc::new(App {
        pool,
        verifier: Verifier::new(vec![Secret::new(args.secret)]),
    });
    let router = Router::new()
        .route("/webhooks/cobalt", post(receive))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!(
        "naive_postgres listening address={}",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}

async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers.get(signature::HEADER).map(|v| v.as_bytes());
    if app.verifier.verify(signature, &body).is_err() {
        return answer(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized"}"#.into(),
        );
    }
    let Ok(payload) = event::text(&body) else {
        return answer(StatusCode::BAD_REQUEST, r#"{"error":"not UTF-8"}"#.into());
    };
    let Ok(envelope) = event::parse(payload, None) else {
        return answer(
            StatusCode::BAD_REQUEST,
            r#"{"error":"not an event"}"#.into(),
        );
    };
    match store(&app.pool, &envelope, payload).await {
        Ok(status) => answer(
            if status == "rejected" {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            },
            serde_json::json!({ "event_id": envelope.event_id, "status": status }).to_string(),
        ),
        Err(error) => {
            eprintln!("naive_postgres: storage failed: {error}");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"storage unavailable"}"#.into(),
            )
        }
    }
}

fn answer(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One delivery in one transaction; its status once committed.
async fn store(
    pool: &PgPool,
    envelope: &event::Envelope,
    payload: &str,
) -> Result<&'static str, sqlx::Error> {
    let received_at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .map_err(|e| sqlx::Error::Encode(e.into()))?;
    let (outcome, reject_reason, job) = match &envelope.meaning {
        Meaning::Outcome(job) => ("applied", None, Some(&**job)),
        Meaning::Other => ("ignored", None, None),
        Meaning::Invalid(error) => ("rejected", Some(error.to_string()), None),
    };
    let mut tx = pool.begin().await?;
    let inserted: Option<i64> = sqlx::query_scalar(INSERT_EVENT)
        .bind(&envelope.event_id)
        .bind(&envelope.event_type)
        .bind(&envelope.job_id)
        .bind(&envelope.patient_note_id)
        .bind(&envelope.created)
        .bind(&received_at)
        .bind(None::<i64>)
        .bind(outcome)
        .bind(reject_reason)
        .bind(payload)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(seq) = inserted else {
        tx.commit().await?;
        return Ok("duplicate");
    };
    let mut status = outcome;
    if let Some(job) = job {
        let applied: Option<String> = sqlx::query_scalar(UPSERT_JOB)
            .bind(&job.patient_note_id)
            .bind(&job.job_id)
            .bind(job.rank.status.as_str())
            .bind(&job.emr_note_id)
            .bind(&job.failure_reason)
            .bind(&job.reasons)
            .bind(&job.patient_mrn)
            .bind(&job.location_id)
            .bind(&job.access_token_reference_id)
            .bind(&job.rank.event_id)
            .bind(&job.created)
            .bind(job.rank.created_ns())
            .bind(&received_at)
            .fetch_optional(&mut *tx)
            .await?;
        if applied.is_none() {
            sqlx::query("update naive_events set outcome = 'superseded' where seq = $1")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "update naive_jobs set last_received_at = $3
                 where patient_note_id = $1 and job_id = $2",
            )
            .bind(&job.patient_note_id)
            .bind(&job.job_id)
            .bind(&received_at)
            .execute(&mut *tx)
            .await?;
            status = "superseded";
        }
    }
    tx.commit().await?;
    Ok(status)
}
