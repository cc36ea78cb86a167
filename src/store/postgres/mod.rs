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

mod audit;
mod console;
mod expected;
mod feed;
mod notify;
mod outbound;
mod reachability;
mod reader;
mod sealing;
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
use super::feed::ChangePage;
use super::interface::Operations;
use super::outbound::{AttemptRecord, EndpointSummary, MessageState, OutboundMessage};
use super::sealing::{Kept, KeptMrn, KeptPayload, ResealPage, Resealed};
use super::write_trace::WriteTrace;
use super::{
    AuditEntry, AuditQuery, AuditRow, CannotReach, Claim, Common, DaySummary, Delivery,
    EventSummary, ExpectedJob, JobQuery, JobState, KeyClaim, LastDelivery, Outcome, PendingSummary,
    Recorded, Registered, Registration, RepeatedDelivery, StoreError, StoreOptions, SubmissionEnd,
};
use crate::domain::ChangeKind;

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
    common: Common,
    reachability: Arc<reachability::Reachability>,
    /// Kicks the change feed's relay after a change is committed here.
    relay: Arc<tokio::sync::Notify>,
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
        let cursor_key = sqlx::query_scalar(Common::READ_CURSOR_KEY)
            .fetch_one(&mut migrations)
            .await
            .context("reading the cursor key")?;
        let common = Common::new(options, cursor_key)?;
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
        let (relay, relay_task) = feed::start(pool.clone(), common.feed.clone());
        let (notifier, mut tasks) = notify::start(
            pool.clone(),
            listen,
            common.wakeups.clone(),
            common.feed.clone(),
        );
        tasks.push(relay_task);
        let reachability = Arc::new(reachability::Reachability::default());
        let writes = writer::start(
            connect,
            options,
            writer::Signals {
                wakeups: common.wakeups.clone(),
                health: common.write_health.clone(),
                reachability: reachability.clone(),
                pool: pool.clone(),
                relay: relay.clone(),
            },
            notifier,
        );
        Ok(Self {
            writes,
            pool,
            common,
            reachability,
            relay,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

    /// The read pool, unless the database is known to be unreachable:
    /// then the caller is answered at once.
    fn pool(&self) -> Result<&PgPool, StoreError> {
        match self.reachability.is_down() {
            true => Err(StoreError::Unreachable),
            false => Ok(&self.pool),
        }
    }

    /// A new registration is a change: the relay positions it.
    fn registered(&self, registered: Option<Registered>) {
        if registered == Some(Registered::New) {
            self.relay.notify_one();
        }
    }

    /// A read's error, noted: one that says the database cannot be reached
    /// makes the next reads fail fast.
    fn failed(&self, error: sqlx::Error) -> StoreError {
        self.reachability.note(&error, &self.pool);
        read_error(error)
    }
}

impl Operations for Store {
    fn common(&self) -> &Common {
        &self.common
    }

    async fn sealing_keys(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sealing::sealing_keys(self.pool()?)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn record_sealing_key(&self, key_id: &str, now_ns: i64) -> Result<(), StoreError> {
        sealing::record_sealing_key(self.pool()?, key_id, now_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn retire_sealing_key(
        &self,
        key_id: &str,
        quiet_since_ns: i64,
    ) -> Result<bool, StoreError> {
        sealing::retire_sealing_key(self.pool()?, key_id, quiet_since_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn mrns_to_reseal(
        &self,
        page: ResealPage<'_, (String, String)>,
    ) -> Result<Vec<KeptMrn>, StoreError> {
        sealing::mrns_to_reseal(
            self.pool()?,
            page.sealing_id,
            page.after.as_ref(),
            page.limit,
        )
        .await
        .map_err(|error| self.failed(error))
    }

    async fn reseal_mrns(&self, rows: Vec<Resealed<KeptMrn>>) -> Result<u64, StoreError> {
        sealing::reseal_mrns(self.pool()?, &rows)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn payloads_to_reseal(
        &self,
        page: ResealPage<'_, i64>,
    ) -> Result<Vec<KeptPayload>, StoreError> {
        sealing::payloads_to_reseal(self.pool()?, page.sealing_id, page.after, page.limit)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn reseal_payloads(&self, rows: Vec<Resealed<KeptPayload>>) -> Result<u64, StoreError> {
        sealing::reseal_payloads(self.pool()?, &rows)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.writes.send(writer::Command::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
        for task in std::mem::take(&mut *self.tasks.lock().expect("not poisoned")) {
            task.abort();
        }
        self.pool.close().await;
    }

    async fn record(&self, mut delivery: Delivery) -> Result<Recorded, StoreError> {
        let kept = Kept::of(&mut delivery, &self.common);
        let deadline = tokio::time::Instant::now() + self.common.write_timeout;
        let (reply, answer) = oneshot::channel();
        let command = writer::Command::Write(writer::Write {
            delivery,
            kept,
            reply,
            trace: WriteTrace::queued(),
            deadline,
        });
        super::hand_to_writer(
            &self.writes,
            command,
            answer,
            deadline,
            self.common.write_timeout,
        )
        .await
    }

    /// A durable write through this replica's writer connection.
    async fn can_write(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.common.write_timeout;
        match tokio::time::timeout_at(deadline, self.writes.send(writer::Command::Probe(reply)))
            .await
        {
            Err(_) => return Err(StoreError::Timeout(self.common.write_timeout)),
            Ok(Err(_)) => return Err(StoreError::Stopped),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(StoreError::Timeout(self.common.write_timeout)),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Ok(Ok(result)) => result,
        }
    }

    async fn is_ready(&self) -> Result<bool, StoreError> {
        let known = MIGRATOR.iter().map(|m| m.version).max();
        let applied = reader::latest_migration(self.pool()?)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(applied >= known)
    }

    async fn jobs_by_job_id(&self, job_id: &str) -> Result<Vec<JobState>, StoreError> {
        let jobs = reader::jobs_by_job_id(self.pool()?, job_id, self.common.overdue_before_ns())
            .await
            .map_err(|error| self.failed(error))?;
        self.common.opened(jobs)
    }

    async fn jobs_by_note(&self, patient_note_id: &str) -> Result<Vec<JobState>, StoreError> {
        let jobs = reader::jobs_by_note(self.pool()?, patient_note_id)
            .await
            .map_err(|error| self.failed(error))?;
        self.common.opened(jobs)
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobState>, StoreError> {
        let jobs = reader::list_jobs(self.pool()?, query, self.common.overdue_before_ns())
            .await
            .map_err(|error| self.failed(error))?;
        self.common.opened(jobs)
    }

    async fn job_events(&self, job_id: &str) -> Result<Vec<EventSummary>, StoreError> {
        reader::job_events(self.pool()?, job_id)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn repeated_deliveries(&self, job_id: &str) -> Result<Vec<RepeatedDelivery>, StoreError> {
        reader::repeated_deliveries(self.pool()?, job_id)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn jobs_by_emr_note(&self, emr_note_id: &str) -> Result<Vec<String>, StoreError> {
        reader::jobs_by_emr_note(self.pool()?, emr_note_id)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn job_of_event(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        reader::job_of_event(self.pool()?, event_id)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn jobs_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        reader::jobs_by_status(self.pool()?)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn day_summary(&self, from_ns: i64, to_ns: i64) -> Result<DaySummary, StoreError> {
        reader::day_summary(self.pool()?, from_ns, to_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn outcomes_by_hour(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<super::HourOutcomes>, StoreError> {
        reader::outcomes_by_hour(self.pool()?, from_ns, to_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn times_to_emr(
        &self,
        from_ns: i64,
        to_ns: i64,
        limit: u32,
    ) -> Result<Vec<super::TimeToEmr>, StoreError> {
        reader::times_to_emr(self.pool()?, from_ns, to_ns, limit)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn last_delivery(&self) -> Result<Option<LastDelivery>, StoreError> {
        reader::last_delivery(self.pool()?)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn register(&self, registration: Registration) -> Result<Registered, StoreError> {
        expected::register(self.pool()?, &registration)
            .await
            .map_err(|error| self.failed(error))
            .inspect(|registered| self.registered(Some(*registered)))
    }

    async fn begin_submission(&self, claim: KeyClaim) -> Result<Claim, StoreError> {
        expected::begin_submission(self.pool()?, &claim)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn end_submission(
        &self,
        key: Option<&str>,
        end: SubmissionEnd,
    ) -> Result<Option<Registered>, StoreError> {
        expected::end_submission(self.pool()?, key, &end)
            .await
            .map_err(|error| self.failed(error))
            .inspect(|registered| self.registered(*registered))
    }

    async fn pending_summary(&self) -> Result<PendingSummary, StoreError> {
        reader::pending_summary(self.pool()?, self.common.overdue_before_ns())
            .await
            .map_err(|error| self.failed(error))
    }

    async fn overdue_jobs(
        &self,
        before_ns: i64,
        limit: u32,
    ) -> Result<Vec<ExpectedJob>, StoreError> {
        reader::overdue_jobs(self.pool()?, before_ns, limit)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn settle_resolved(&self) -> Result<u64, StoreError> {
        expected::settle_resolved(self.pool()?)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn take_lease(
        &self,
        holder: &str,
        now_ns: i64,
        until_ns: i64,
    ) -> Result<bool, StoreError> {
        expected::take_lease(self.pool()?, holder, now_ns, until_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    /// Transactions of up to 500 events. The sweep position's row is
    /// locked by the replica sweeping; another replica finding it locked
    /// skips this round, and a replica that dies mid-sweep rolls back, so
    /// the next sweep (on any replica) starts where the last commit ended.
    async fn purge_payloads(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        let cutoff = crate::clock::rfc3339(cutoff);
        super::in_chunks(super::PAYLOAD_CHUNK, || async {
            let pool = self.pool()?;
            writer::purge_payloads(pool, &cutoff, super::PAYLOAD_CHUNK)
                .await
                .map_err(|error| self.failed(error))
        })
        .await
    }

    /// Nothing to do: autovacuum keeps the statistics.
    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// One multi-row insert; a lock held past the write timeout fails it
    /// in the database, so a batch reported as failed is never committed
    /// later.
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        audit::append(self.pool()?, entries, self.common.write_timeout)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn audit_page(&self, query: AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        audit::page(self.pool()?, &query)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn purge_audit(&self, cutoff_ns: i64) -> Result<u64, StoreError> {
        super::in_chunks(super::AUDIT_CHUNK, || async move {
            let pool = self.pool()?;
            audit::purge(pool, cutoff_ns, super::AUDIT_CHUNK)
                .await
                .map_err(|error| self.failed(error))
        })
        .await
    }

    async fn start_session(&self, start: SessionStart) -> Result<(), StoreError> {
        console::start_session(self.pool()?, &start)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn session(&self, id_sha256: &str) -> Result<Option<SessionRow>, StoreError> {
        console::session(self.pool()?, id_sha256)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn touch_session(&self, id_sha256: &str, now_ns: i64) -> Result<(), StoreError> {
        console::touch_session(self.pool()?, id_sha256, now_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn end_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        console::end_session(self.pool()?, id_sha256)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn save_recovery_run(&self, run: RecoveryRun) -> Result<(), StoreError> {
        console::save_run(self.pool()?, &run)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn recovery_run(&self, id: Option<&str>) -> Result<Option<RecoveryRun>, StoreError> {
        console::run(self.pool()?, id)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn changes(&self, after: i64, limit: u32) -> Result<ChangePage, StoreError> {
        let page = feed::changes(self.pool()?, after, limit, self.common.overdue_before_ns())
            .await
            .map_err(|error| self.failed(error))?;
        Ok(ChangePage {
            changes: self.common.opened_changes(page.changes)?,
            ..page
        })
    }

    async fn note_overdue(&self) -> Result<u64, StoreError> {
        let noted = feed::note_overdue(
            self.pool()?,
            self.common.overdue_before_ns(),
            crate::clock::now_ns(),
        )
        .await
        .map_err(|error| self.failed(error))?;
        if noted > 0 {
            self.relay.notify_one();
        }
        Ok(noted)
    }

    async fn purge_changes(&self, cutoff_ns: i64) -> Result<u64, StoreError> {
        super::in_chunks(super::feed::PURGE_CHUNK, || async move {
            feed::purge(self.pool()?, cutoff_ns, super::feed::PURGE_CHUNK)
                .await
                .map_err(|error| self.failed(error))
        })
        .await
    }

    async fn take_outbound_lease(
        &self,
        endpoint: &str,
        holder: &str,
        now_ns: i64,
        until_ns: i64,
    ) -> Result<bool, StoreError> {
        outbound::take_lease(self.pool()?, endpoint, holder, now_ns, until_ns)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn make_outbound_messages(
        &self,
        endpoint: &str,
        kinds: Vec<ChangeKind>,
    ) -> Result<u64, StoreError> {
        super::in_chunks(super::outbound::MAKE_CHUNK as u64, || {
            let kinds = kinds.clone();
            async move {
                outbound::make_messages(self.pool()?, endpoint, &kinds, crate::clock::now_ns())
                    .await
                    .map_err(|error| self.failed(error))
            }
        })
        .await
    }

    async fn due_outbound(
        &self,
        endpoint: &str,
        limit: u32,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        outbound::due(self.pool()?, endpoint, crate::clock::now_ns(), limit)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn settle_outbound(
        &self,
        endpoint: &str,
        records: Vec<AttemptRecord>,
    ) -> Result<(), StoreError> {
        outbound::settle(self.pool()?, endpoint, &records)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn outbound_summary(&self, endpoint: &str) -> Result<EndpointSummary, StoreError> {
        outbound::summary(self.pool()?, endpoint)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn outbound_messages(
        &self,
        endpoint: &str,
        state: Option<MessageState>,
        limit: u32,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        outbound::list(self.pool()?, endpoint, state, limit)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn resend_outbound(&self, endpoint: &str, id: Option<String>) -> Result<u64, StoreError> {
        outbound::resend(
            self.pool()?,
            endpoint,
            id.as_deref(),
            crate::clock::now_ns(),
        )
        .await
        .map_err(|error| self.failed(error))
    }
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
