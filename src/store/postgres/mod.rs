//! The PostgreSQL engine: one database shared by any number of replicas.
//!
//! - **Writes** go to this replica's writer task through a bounded queue.
//!   The writer owns one connection and commits what is waiting in one
//!   transaction, then answers each delivery. Dedupe (the unique event id)
//!   and ranking (an upsert that only replaces a job's state with a
//!   higher-ranked one) are decided by the database, so two replicas
//!   writing the same event or job at once agree; see `writer`.
//! - **Reads** run on a small connection pool, as single statements.
//! - **Migrations** are applied at open by sqlx's migrator, which holds an
//!   advisory lock meanwhile, so replicas starting together take turns.

mod console;
mod notify;
mod reachability;
mod reader;
mod writer;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::console::{RecoveryRun, SessionRow, SessionStart};
use super::{
    AuditEntry, AuditQuery, AuditRow, CannotReach, Claim, DaySummary, Delivery, EventSummary,
    ExpectedJob, JobQuery, JobState, KeyClaim, LastDelivery, Outcome, PendingSummary, Recorded,
    Registered, Registration, RepeatedDelivery, StoreError, StoreOptions, SubmissionEnd, Wakeups,
    WriteHealth,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Whether a failed first connection may succeed later without anyone
/// changing the configuration: no server answered (refused, reset, closed
/// before it spoke, no answer), or it answered that it cannot take a
/// connection now. Refused credentials or a missing database are not.
fn worth_waiting_for(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(_) => reachability::unreachable(error),
        sqlx::Error::Configuration(_) => false,
        _ => true,
    }
}

/// The name the service's sessions carry in `pg_stat_activity`.
const APPLICATION_NAME: &str = "cobalt-receiver";

#[derive(Clone)]
pub struct Store {
    writes: mpsc::Sender<writer::Command>,
    pool: PgPool,
    write_timeout: Duration,
    cursor_key: [u8; 32],
    wakeups: Arc<Wakeups>,
    write_health: Arc<WriteHealth>,
    reachability: Arc<reachability::Reachability>,
    /// The notifier and listener tasks, stopped at close.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Store {
    /// Connects, applies the migrations and starts the writer task.
    pub async fn open(options: &StoreOptions) -> anyhow::Result<Self> {
        let connect = connect_options(&options.database_url)?;
        let where_to = location(&options.database_url);
        let cannot_reach = |cause: String| CannotReach {
            location: where_to.clone(),
            cause,
        };
        let mut migrations = match tokio::time::timeout(
            options.write_timeout.max(Duration::from_secs(10)),
            PgConnection::connect_with(&connect),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) if worth_waiting_for(&error) => {
                return Err(cannot_reach(cause(&error)).into());
            }
            // Refused credentials, a database that does not exist: no wait
            // will mend them.
            Ok(Err(error)) => {
                return Err(anyhow!(
                    "cannot reach the database {where_to}: {}",
                    cause(&error)
                ));
            }
            Err(_) => return Err(cannot_reach("no answer".into()).into()),
        };
        MIGRATOR
            .run(&mut migrations)
            .await
            .map_err(|e| anyhow!("cannot migrate the database {where_to}: {e}"))?;
        let durability: String = sqlx::query_scalar("show synchronous_commit")
            .fetch_one(&mut migrations)
            .await
            .context("reading synchronous_commit")?;
        if durability == "off" {
            tracing::info!(
                "db: the server's synchronous_commit is off; this service's writes turn it on"
            );
        }
        let cursor_key: Vec<u8> = sqlx::query_scalar("select key from cursor_key where id = 1")
            .fetch_one(&mut migrations)
            .await
            .context("reading the cursor key")?;
        let cursor_key = cursor_key
            .try_into()
            .map_err(|_| anyhow!("the cursor key is not 32 bytes"))?;
        migrations
            .close()
            .await
            .context("closing the migration connection")?;
        tracing::debug!("db: migrations applied");

        // No statement of a delivery or a read outlives the write timeout,
        // and a transaction left open by a replica cut off from the network
        // is ended by the server, which frees the rows it held for the
        // others. (Not for migrations: they may wait for another replica's.)
        //
        // Every statement of the service finds its rows through an index.
        // PostgreSQL caches a plan per statement and connection; one made
        // while the tables were nearly empty would scan them whole, and
        // keep doing so as they grow (measured: PostgreSQL's CPU per event
        // rising from 272 to 1043 µs over three runs). Sequential scans are
        // therefore off for these connections.
        let timeout_ms = options.write_timeout.as_millis().to_string();
        let idle_ms = (options.write_timeout * 2).as_millis().to_string();
        let connect = connect.options([
            ("statement_timeout", timeout_ms.as_str()),
            ("idle_in_transaction_session_timeout", idle_ms.as_str()),
            ("enable_seqscan", "off"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(options.read_pool_size.max(1))
            .min_connections(0)
            // A read that cannot get a connection in time is answered 503.
            .acquire_timeout(options.write_timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(connect.clone());
        // The listener holds its connection for good: a pool of its own,
        // without the statement timeout.
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(connect_options(&options.database_url)?);
        let wakeups = Wakeups::new();
        let (notifier, tasks) = notify::start(pool.clone(), listen, wakeups.clone());
        let write_health = Arc::new(WriteHealth::default());
        let reachability = Arc::new(reachability::Reachability::default());
        let writes = writer::start(
            connect,
            options,
            writer::Signals {
                wakeups: wakeups.clone(),
                health: write_health.clone(),
                reachability: reachability.clone(),
                pool: pool.clone(),
            },
            notifier,
        );
        Ok(Self {
            writes,
            pool,
            write_timeout: options.write_timeout,
            cursor_key,
            wakeups,
            write_health,
            reachability,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

    pub fn cursor_key(&self) -> [u8; 32] {
        self.cursor_key
    }

    /// Finishes the writes already queued, then closes the connections.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.writes.send(writer::Command::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
        for task in std::mem::take(&mut *self.tasks.lock().expect("not poisoned")) {
            task.abort();
        }
        self.pool.close().await;
    }

    pub fn wakeups(&self) -> &Arc<Wakeups> {
        &self.wakeups
    }

    pub fn write_health(&self) -> &WriteHealth {
        &self.write_health
    }

    /// The read pool, unless the database is known to be unreachable:
    /// then the caller is answered at once.
    fn pool(&self) -> Result<&PgPool, StoreError> {
        match self.reachability.is_down() {
            true => Err(StoreError::Unreachable),
            false => Ok(&self.pool),
        }
    }

    /// A read's error, noted: one that says the database cannot be reached
    /// makes the next reads fail fast.
    fn failed(&self, error: sqlx::Error) -> StoreError {
        self.reachability.note(&error, &self.pool);
        read_error(error)
    }

    pub async fn register(&self, registration: Registration) -> Result<Registered, StoreError> {
        let mut tx = self
            .pool()?
            .begin()
            .await
            .map_err(|error| self.failed(error))?;
        let registered = register(&mut tx, &registration)
            .await
            .map_err(|error| self.failed(error))?;
        tx.commit().await.map_err(|error| self.failed(error))?;
        Ok(registered)
    }

    pub async fn pending_summary(
        &self,
        overdue_before_ns: i64,
    ) -> Result<PendingSummary, StoreError> {
        reader::pending_summary(self.pool()?, overdue_before_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn overdue_jobs(
        &self,
        before_ns: i64,
        limit: u32,
    ) -> Result<Vec<ExpectedJob>, StoreError> {
        reader::overdue_jobs(self.pool()?, before_ns, limit)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn settle_resolved(&self) -> Result<u64, StoreError> {
        sqlx::query(
            "update expected_jobs set resolved = true
             where not resolved
               and exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)",
        )
        .execute(self.pool()?)
        .await
        .map(|done| done.rows_affected())
        .map_err(|error| self.failed(error))
    }

    pub async fn begin_submission(&self, claim: KeyClaim) -> Result<Claim, StoreError> {
        let pool = self.pool()?;
        let result = async {
            let mut tx = pool.begin().await?;
            sqlx::query("delete from submissions where created_ns < $1")
                .bind(claim.expired_before_ns)
                .execute(&mut *tx)
                .await?;
            // A second request with the key waits here for the first's commit.
            let claimed = sqlx::query(
                "insert into submissions (idempotency_key, request_mac, state, created_ns)
                 values ($1, $2, 'in_flight', $3)
                 on conflict (idempotency_key) do nothing",
            )
            .bind(&claim.key)
            .bind(&claim.mac)
            .bind(claim.now_ns)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let result = if claimed {
                Claim::Claimed
            } else {
                let (mac, state, job_id, claimed_ns): (String, String, Option<String>, i64) =
                    sqlx::query_as(
                        "select request_mac, state, job_id, created_ns from submissions
                         where idempotency_key = $1",
                    )
                    .bind(&claim.key)
                    .fetch_one(&mut *tx)
                    .await?;
                Claim::of(&claim, &mac, &state, job_id, claimed_ns)
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(result)
        };
        result.await.map_err(|error| self.failed(error))
    }

    pub async fn end_submission(
        &self,
        key: Option<&str>,
        end: SubmissionEnd,
    ) -> Result<Option<Registered>, StoreError> {
        let pool = self.pool()?;
        let ended = async {
            let mut tx = pool.begin().await?;
            let registered = match &end {
                SubmissionEnd::Done(job) => {
                    sqlx::query(
                        "update submissions set state = 'done', job_id = $1
                         where idempotency_key = $2",
                    )
                    .bind(&job.job_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                    Some(register(&mut tx, job).await?)
                }
                SubmissionEnd::Unknown => {
                    sqlx::query(
                        "update submissions set state = 'unknown' where idempotency_key = $1",
                    )
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                    None
                }
                SubmissionEnd::Forget => {
                    sqlx::query("delete from submissions where idempotency_key = $1")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    None
                }
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(registered)
        };
        ended.await.map_err(|error| self.failed(error))
    }

    pub async fn take_lease(
        &self,
        holder: &str,
        now_ns: i64,
        until_ns: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "update reconcile_lease set holder = $1, expires_ns = $3
             where id = 1 and expires_ns <= $2",
        )
        .bind(holder)
        .bind(now_ns)
        .bind(until_ns)
        .execute(self.pool()?)
        .await
        .map(|done| done.rows_affected() == 1)
        .map_err(|error| self.failed(error))
    }

    pub async fn record(&self, delivery: Delivery) -> Result<Recorded, StoreError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let (reply, answer) = oneshot::channel();
        let command = writer::Command::Write(writer::Write {
            delivery,
            reply,
            deadline,
        });
        super::hand_to_writer(&self.writes, command, answer, deadline, self.write_timeout).await
    }

    pub async fn jobs_by_job_id(&self, job_id: &str) -> Result<Vec<JobState>, StoreError> {
        reader::jobs_by_job_id(self.pool()?, job_id)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn jobs_by_note(&self, patient_note_id: &str) -> Result<Vec<JobState>, StoreError> {
        reader::jobs_by_note(self.pool()?, patient_note_id)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobState>, StoreError> {
        reader::list_jobs(self.pool()?, query)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn job_events(&self, job_id: &str) -> Result<Vec<EventSummary>, StoreError> {
        reader::job_events(self.pool()?, job_id)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn jobs_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        reader::jobs_by_status(self.pool()?)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        let known = MIGRATOR.iter().map(|m| m.version).max();
        let applied = reader::latest_migration(self.pool()?)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(applied >= known)
    }

    /// A durable write through this replica's writer connection.
    pub async fn can_write(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        match tokio::time::timeout_at(deadline, self.writes.send(writer::Command::Probe(reply)))
            .await
        {
            Err(_) => return Err(StoreError::Timeout(self.write_timeout)),
            Ok(Err(_)) => return Err(StoreError::Stopped),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(StoreError::Timeout(self.write_timeout)),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Ok(Ok(result)) => result,
        }
    }

    pub async fn day_summary(&self, from_ns: i64, to_ns: i64) -> Result<DaySummary, StoreError> {
        reader::day_summary(self.pool()?, from_ns, to_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn repeated_deliveries(
        &self,
        job_id: &str,
    ) -> Result<Vec<RepeatedDelivery>, StoreError> {
        reader::repeated_deliveries(self.pool()?, job_id)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn last_delivery(&self) -> Result<Option<LastDelivery>, StoreError> {
        reader::last_delivery(self.pool()?)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn jobs_by_emr_note(&self, emr_note_id: &str) -> Result<Vec<String>, StoreError> {
        reader::jobs_by_emr_note(self.pool()?, emr_note_id)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn job_of_event(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        reader::job_of_event(self.pool()?, event_id)
            .await
            .map_err(|error| self.failed(error))
    }

    /// Appends audit rows with one multi-row insert.
    pub async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let mut at = Vec::with_capacity(entries.len());
        let mut at_ns = Vec::with_capacity(entries.len());
        let (mut actor, mut action, mut target, mut request_id) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for entry in entries {
            at.push(super::rfc3339(entry.at));
            at_ns.push(super::unix_ns(entry.at));
            actor.push(entry.actor);
            action.push(entry.action);
            target.push(entry.target);
            request_id.push(entry.request_id);
        }
        // A lock held past the write timeout fails the batch here, in the
        // database, so a batch reported as failed is never committed later.
        let pool = self.pool()?;
        let written = async {
            let mut tx = pool.begin().await?;
            sqlx::query("select set_config('lock_timeout', $1, true)")
                .bind(format!("{}ms", self.write_timeout.as_millis()))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "insert into audit_log (at, at_ns, actor, action, target, request_id)
                 select * from unnest($1::text[], $2::bigint[], $3::text[], $4::text[],
                                      $5::text[], $6::text[])",
            )
            .bind(at)
            .bind(at_ns)
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        written.await.map_err(|error| self.failed(error))
    }

    pub async fn audit_page(&self, query: AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        reader::audit_page(self.pool()?, &query)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn start_session(&self, start: SessionStart) -> Result<(), StoreError> {
        console::start_session(self.pool()?, &start)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn session(&self, id_sha256: &str) -> Result<Option<SessionRow>, StoreError> {
        console::session(self.pool()?, id_sha256)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn touch_session(&self, id_sha256: &str, now_ns: i64) -> Result<(), StoreError> {
        console::touch_session(self.pool()?, id_sha256, now_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn end_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        console::end_session(self.pool()?, id_sha256)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn save_recovery_run(&self, run: RecoveryRun) -> Result<(), StoreError> {
        console::save_run(self.pool()?, &run)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn recovery_run(&self, id: Option<&str>) -> Result<Option<RecoveryRun>, StoreError> {
        console::run(self.pool()?, id)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn purge_audit(&self, cutoff_ns: i64) -> Result<u64, StoreError> {
        const CHUNK: i64 = 5_000;
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "delete from audit_log where id in
                   (select id from audit_log where at_ns < $1 order by id limit $2)",
            )
            .bind(cutoff_ns)
            .bind(CHUNK)
            .execute(self.pool()?)
            .await
            .map_err(|error| self.failed(error))?
            .rows_affected();
            total += deleted;
            if deleted < CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Sweeps the event log in arrival order, as the SQLite engine does,
    /// in transactions of up to 500 events. The sweep position's row is
    /// locked by the replica sweeping; another replica finding it locked
    /// skips this round, and a replica that dies mid-sweep rolls back, so
    /// the next sweep (on any replica) starts where the last commit ended.
    pub async fn purge_payloads(&self, cutoff: OffsetDateTime) -> Result<usize, StoreError> {
        const BATCH: i64 = 500;
        let cutoff = cutoff
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let mut total = 0;
        loop {
            let sweep = writer::purge_payloads(self.pool()?, &cutoff, BATCH)
                .await
                .map_err(|error| self.failed(error))?;
            total += sweep.purged;
            if sweep.swept < BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

/// Records an expected job unless its id is known with another note. Two
/// registrations of one new job at once: the second's insert waits for the
/// first's commit and skips; it then reads the row the first wrote.
async fn register(
    tx: &mut sqlx::PgTransaction<'_>,
    job: &Registration,
) -> Result<Registered, sqlx::Error> {
    for _ in 0..2 {
        let (outcome_note, expected_note, inserted): (Option<String>, Option<String>, bool) =
            sqlx::query_as(
                "with outcome as (select patient_note_id from jobs where job_id = $1 limit 1),
                      existing as (select patient_note_id from expected_jobs where job_id = $1),
                      inserted as (
                          insert into expected_jobs (job_id, patient_note_id, submitted_at,
                                                     submitted_ns, access_token_reference_id,
                                                     registered_by, resolved)
                          select $1, $2, $3, $4, $5, $6, exists (select 1 from outcome)
                          where not exists (select 1 from existing)
                            and not exists (select 1 from outcome where patient_note_id <> $2)
                          on conflict (job_id) do nothing
                          returning 1)
                 select (select patient_note_id from outcome),
                        (select patient_note_id from existing),
                        exists (select 1 from inserted)",
            )
            .bind(&job.job_id)
            .bind(&job.patient_note_id)
            .bind(job.submitted_text())
            .bind(job.submitted_ns())
            .bind(&job.access_token_reference_id)
            .bind(&job.registered_by)
            .fetch_one(&mut **tx)
            .await?;
        let mine = |note: &Option<String>| note.as_ref().is_none_or(|n| *n == job.patient_note_id);
        if !mine(&outcome_note) || !mine(&expected_note) {
            return Ok(Registered::Conflict);
        }
        if expected_note.is_some() {
            return Ok(Registered::Known);
        }
        if inserted {
            return Ok(if outcome_note.is_some() {
                Registered::Known
            } else {
                Registered::New
            });
        }
        // Another registration of this job committed meanwhile: read it.
    }
    Err(sqlx::Error::RowNotFound)
}

/// Connects to `database_url` and applies the migrations (as `open`
/// does), for tools that write without a writer task.
pub(super) async fn connect_migrated(database_url: &str) -> anyhow::Result<PgConnection> {
    let where_to = location(database_url);
    let mut connection = PgConnection::connect_with(&connect_options(database_url)?)
        .await
        .map_err(|e| anyhow!("cannot reach the database {where_to}: {}", cause(&e)))?;
    MIGRATOR
        .run(&mut connection)
        .await
        .map_err(|e| anyhow!("cannot migrate the database {where_to}: {e}"))?;
    Ok(connection)
}

/// The ranking rule as the end of a jobs upsert: a job's state is replaced
/// only by a higher-ranked one (created beats failed, then the later
/// `created`, then the greater event id, bytewise). PostgreSQL evaluates it
/// on the locked, latest row, whichever replica committed it.
macro_rules! replace_if_outranked {
    () => {
        "on conflict (patient_note_id, job_id) do update set
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
    > (jobs.status = 'created', jobs.deciding_event_created_ns, jobs.deciding_event_id)"
    };
}
pub(super) use replace_if_outranked;

/// Why `database_url` cannot be used, if so.
pub(super) fn check_url(database_url: &str) -> Result<(), String> {
    connect_options(database_url)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn connect_options(database_url: &str) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(database_url).map_err(|_| {
        anyhow!("must look like postgres://user@host:5432/database (with ?sslmode=… if needed)")
    })?;
    // The server's notices ("relation … already exists, skipping" from the
    // migrator) are not worth a log line; warnings and errors are.
    Ok(options
        .application_name(APPLICATION_NAME)
        .options([("client_min_messages", "warning")]))
}

/// Host, port and database, for logs. Never the user or password. (Read
/// from the URL's text: sqlx's parser would also look for a password file.)
pub(super) fn location(database_url: &str) -> String {
    let (scheme, rest) = database_url.split_once("://").unwrap_or(("postgres", ""));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}/{database}")
}

/// The server's message, or the network error in words; never the query
/// or its values.
pub(super) fn cause(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(error) => match error.code() {
            Some(code) => format!("{} ({code})", error.message()),
            None => error.message().to_owned(),
        },
        sqlx::Error::Io(error) => crate::os_error::describe(error),
        sqlx::Error::PoolTimedOut => "no connection to the database became free in time".into(),
        sqlx::Error::Tls(error) => format!("the TLS handshake with the database failed: {error}"),
        other => other.to_string(),
    }
}

fn read_error(error: sqlx::Error) -> StoreError {
    crate::monitoring::database_error();
    StoreError::Database(cause(&error))
}

/// An outcome as the event log keeps it.
fn outcome_column(row: &sqlx::postgres::PgRow, index: usize) -> Result<Outcome, sqlx::Error> {
    let value: String = row.try_get(index)?;
    Outcome::parse(&value)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown outcome {value}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_the_server_and_database_never_the_credentials() {
        for (url, shown) in [
            (
                "postgres://app:s3cret@db:5432/cobalt?sslmode=require",
                "postgres://db:5432/cobalt",
            ),
            (
                "postgresql://app@10.0.0.7/cobalt",
                "postgresql://10.0.0.7/cobalt",
            ),
            ("postgres://localhost", "postgres://localhost/"),
        ] {
            assert_eq!(location(url), shown);
        }
    }
}
