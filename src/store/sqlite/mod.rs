//! The SQLite engine: one database file.
//!
//! - **Writes** go to one writer thread through a bounded queue. The writer
//!   takes everything waiting (up to `write_batch_size`), applies it in one
//!   `BEGIN IMMEDIATE` transaction, commits (WAL, `synchronous = FULL`), and
//!   only then answers each waiting delivery. So a reply means the event and
//!   the job state it implies are on disk, and a failed batch is answered as
//!   failed for all its deliveries with nothing of it visible.
//! - **Checkpoints** (copying the WAL back into the database file) run on
//!   a thread of their own, so no batch waits for one.
//! - **Reads** run on a few reader threads, each with its own read-only
//!   connection, and never wait for the writer.
//! - **Migrations** are applied at open by sqlx's migrator.
//!
//! The threads use rusqlite with cached prepared statements: measured here,
//! sqlx's SQLite driver spends tens of microseconds a query crossing to its
//! worker thread, which capped status reads near 15k/s.

mod audit;
mod checkpointer;
mod console;
mod expected;
mod feed;
mod outbound;
mod reader;
mod sealing;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, anyhow};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::console::{RecoveryRun, SessionRow, SessionStart};
use super::feed::ChangePage;
use super::interface::Operations;
use super::outbound::{AttemptRecord, EndpointSummary, MessageState, OutboundMessage};
use super::sealing::{Kept, KeptMrn, KeptPayload, ResealPage, Resealed};
use super::write_trace::WriteTrace;
use super::{
    AuditEntry, AuditQuery, AuditRow, Claim, Common, DaySummary, Delivery, EventSummary,
    ExpectedJob, JobQuery, JobState, KeyClaim, LastDelivery, Outcome, PendingSummary, Recorded,
    Registered, Registration, RepeatedDelivery, Source, StoreError, StoreOptions, SubmissionEnd,
};
use crate::domain::ChangeKind;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Clone)]
pub struct Store {
    writes: mpsc::Sender<writer::Command>,
    readers: reader::Readers,
    common: Common,
}

impl Store {
    /// Opens (creating if missing) and migrates the database, then starts
    /// the writer and reader threads.
    pub async fn open(options: &StoreOptions) -> anyhow::Result<Self> {
        let sqlx_options = SqliteConnectOptions::from_str(&options.database_url)
            .context("parsing database_url")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.write_timeout);
        let path = PathBuf::from(sqlx_options.get_filename());
        let cannot_open =
            |cause: String| anyhow!("cannot open the database {}: {cause}", path.display());
        create_file(&path).map_err(cannot_open)?;
        let mut migrations = SqliteConnection::connect_with(&sqlx_options)
            .await
            .map_err(|e| cannot_open(sqlx_cause(&e)))?;
        MIGRATOR
            .run(&mut migrations)
            .await
            .map_err(|e| anyhow!("cannot migrate the database {}: {e}", path.display()))?;
        // Fresh statistics for the query planner, as SQLite advises for a
        // long-lived process: it analyzes only tables that need it, reading
        // a bounded sample, so start-up stays quick on a large file. (With
        // none, a day's failures by reason read their table rows.)
        sqlx::raw_sql("pragma analysis_limit = 1000; pragma optimize = 0x10002;")
            .execute(&mut migrations)
            .await
            .context("updating the planner's statistics")?;
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

        let writes = writer::start(
            &path,
            options,
            common.wakeups.clone(),
            common.write_health.clone(),
            common.feed.clone(),
        )
        .context("starting the writer")?;
        tracing::debug!("db: writer ready");
        let readers = reader::Readers::start(&path, options).context("starting the readers")?;
        tracing::debug!("db: readers ready");
        Ok(Self {
            writes,
            readers,
            common,
        })
    }

    /// Runs `work` on a reader thread, with the instant before which a
    /// pending job is overdue.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let overdue_before_ns = self.common.overdue_before_ns();
        self.readers
            .run(move |db| work(db, overdue_before_ns))
            .await
    }

    /// Runs `work` on the write connection once the batch in hand is done,
    /// within the write timeout.
    async fn on_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.common.write_timeout;
        let command = writer::Command::Task(Box::new(move |db| {
            let _ = reply.send(work(db).map_err(StoreError::from));
        }));
        match tokio::time::timeout_at(deadline, self.writes.send(command)).await {
            Err(_) => return Err(StoreError::Timeout(self.common.write_timeout)),
            Ok(Err(_)) => return Err(StoreError::Stopped),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(StoreError::Timeout(self.common.write_timeout)),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Ok(Ok(result)) => result.inspect_err(|_| crate::monitoring::database_error()),
        }
    }
}

impl Store {
    /// A new registration is a change the feed's waiters hear of.
    fn registered(&self, registered: Registered) {
        if registered == Registered::New {
            self.common.feed.moved();
        }
    }
}

impl Operations for Store {
    fn common(&self) -> &Common {
        &self.common
    }

    async fn sealing_keys(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.readers.run(sealing::sealing_keys).await
    }

    async fn record_sealing_key(&self, key_id: &str, now_ns: i64) -> Result<(), StoreError> {
        let key_id = key_id.to_owned();
        self.on_writer(move |db| sealing::record_sealing_key(db, &key_id, now_ns))
            .await
    }

    async fn retire_sealing_key(
        &self,
        key_id: &str,
        quiet_since_ns: i64,
    ) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        self.on_writer(move |db| sealing::retire_sealing_key(db, &key_id, quiet_since_ns))
            .await
    }

    async fn mrns_to_reseal(
        &self,
        page: ResealPage<'_, (String, String)>,
    ) -> Result<Vec<KeptMrn>, StoreError> {
        let (sealing_id, after, limit) = (page.sealing_id.to_owned(), page.after, page.limit);
        self.readers
            .run(move |db| sealing::mrns_to_reseal(db, &sealing_id, after.as_ref(), limit))
            .await
    }

    async fn reseal_mrns(&self, rows: Vec<Resealed<KeptMrn>>) -> Result<u64, StoreError> {
        self.on_writer(move |db| sealing::reseal_mrns(db, &rows))
            .await
    }

    async fn payloads_to_reseal(
        &self,
        page: ResealPage<'_, i64>,
    ) -> Result<Vec<KeptPayload>, StoreError> {
        let (sealing_id, after, limit) = (page.sealing_id.to_owned(), page.after, page.limit);
        self.readers
            .run(move |db| sealing::payloads_to_reseal(db, &sealing_id, after, limit))
            .await
    }

    async fn reseal_payloads(&self, rows: Vec<Resealed<KeptPayload>>) -> Result<u64, StoreError> {
        self.on_writer(move |db| sealing::reseal_payloads(db, &rows))
            .await
    }

    /// Finishes the writes already queued, then stops the threads; SQLite
    /// checkpoints the WAL as the last connection closes.
    async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.writes.send(writer::Command::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
        self.readers.stop().await;
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
            deadline: deadline.into_std(),
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

    /// Commits a write the size of a large delivery.
    async fn can_write(&self) -> Result<(), StoreError> {
        self.on_writer(writer::write_probe).await
    }

    async fn is_ready(&self) -> Result<bool, StoreError> {
        let known = MIGRATOR.iter().map(|m| m.version).max();
        let applied = self.readers.run(reader::latest_migration).await?;
        Ok(applied >= known)
    }

    async fn jobs_by_job_id(&self, job_id: &str) -> Result<Vec<JobState>, StoreError> {
        let job_id = job_id.to_owned();
        let jobs = self
            .read(move |db, overdue| reader::jobs_by_job_id(db, &job_id, overdue))
            .await?;
        self.common.opened(jobs)
    }

    async fn jobs_by_note(&self, patient_note_id: &str) -> Result<Vec<JobState>, StoreError> {
        let note = patient_note_id.to_owned();
        let jobs = self
            .readers
            .run(move |db| reader::jobs_by_note(db, &note))
            .await?;
        self.common.opened(jobs)
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobState>, StoreError> {
        let query = query.clone();
        let jobs = self
            .read(move |db, overdue| reader::list_jobs(db, &query, overdue))
            .await?;
        self.common.opened(jobs)
    }

    async fn job_events(&self, job_id: &str) -> Result<Vec<EventSummary>, StoreError> {
        let job_id = job_id.to_owned();
        self.readers
            .run(move |db| reader::job_events(db, &job_id))
            .await
    }

    async fn repeated_deliveries(&self, job_id: &str) -> Result<Vec<RepeatedDelivery>, StoreError> {
        let job_id = job_id.to_owned();
        self.readers
            .run(move |db| reader::repeated_deliveries(db, &job_id))
            .await
    }

    async fn jobs_by_emr_note(&self, emr_note_id: &str) -> Result<Vec<String>, StoreError> {
        let id = emr_note_id.to_owned();
        self.readers
            .run(move |db| reader::jobs_by_emr_note(db, &id))
            .await
    }

    async fn job_of_event(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let id = event_id.to_owned();
        self.readers
            .run(move |db| reader::job_of_event(db, &id))
            .await
    }

    async fn jobs_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.readers.run(reader::jobs_by_status).await
    }

    async fn day_summary(&self, from_ns: i64, to_ns: i64) -> Result<DaySummary, StoreError> {
        self.readers
            .run(move |db| reader::day_summary(db, from_ns, to_ns))
            .await
    }

    async fn outcomes_by_hour(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<super::HourOutcomes>, StoreError> {
        self.readers
            .run(move |db| reader::outcomes_by_hour(db, from_ns, to_ns))
            .await
    }

    async fn times_to_emr(
        &self,
        from_ns: i64,
        to_ns: i64,
        limit: u32,
    ) -> Result<Vec<super::TimeToEmr>, StoreError> {
        self.readers
            .run(move |db| reader::times_to_emr(db, from_ns, to_ns, limit))
            .await
    }

    async fn last_delivery(&self) -> Result<Option<LastDelivery>, StoreError> {
        self.readers.run(reader::last_delivery).await
    }

    async fn register(&self, registration: Registration) -> Result<Registered, StoreError> {
        self.on_writer(move |db| {
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let registered = expected::register(&tx, &registration)?;
            tx.commit()?;
            Ok(registered)
        })
        .await
        .inspect(|registered| self.registered(*registered))
    }

    async fn begin_submission(&self, claim: KeyClaim) -> Result<Claim, StoreError> {
        self.on_writer(move |db| expected::begin_submission(db, &claim))
            .await
    }

    async fn end_submission(
        &self,
        key: Option<&str>,
        end: SubmissionEnd,
    ) -> Result<Option<Registered>, StoreError> {
        let key = key.map(str::to_owned);
        self.on_writer(move |db| expected::end_submission(db, key.as_deref(), &end))
            .await
            .inspect(|registered| registered.iter().for_each(|r| self.registered(*r)))
    }

    async fn pending_summary(&self) -> Result<PendingSummary, StoreError> {
        self.read(reader::pending_summary).await
    }

    async fn overdue_jobs(
        &self,
        before_ns: i64,
        limit: u32,
    ) -> Result<Vec<ExpectedJob>, StoreError> {
        self.readers
            .run(move |db| reader::overdue_jobs(db, before_ns, limit))
            .await
    }

    async fn settle_resolved(&self) -> Result<u64, StoreError> {
        self.on_writer(expected::settle_resolved).await
    }

    async fn take_lease(
        &self,
        holder: &str,
        now_ns: i64,
        until_ns: i64,
    ) -> Result<bool, StoreError> {
        let holder = holder.to_owned();
        self.on_writer(move |db| expected::take_lease(db, &holder, now_ns, until_ns))
            .await
    }

    async fn purge_payloads(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        let cutoff = crate::clock::rfc3339(cutoff);
        super::in_chunks(super::PAYLOAD_CHUNK, || {
            let cutoff = cutoff.clone();
            self.on_writer(move |db| writer::purge_payloads(db, &cutoff, super::PAYLOAD_CHUNK))
        })
        .await
    }

    /// `pragma optimize`, as SQLite advises every few hours for a
    /// long-lived connection: it analyzes only what changed a lot.
    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        self.on_writer(|db| db.execute_batch("pragma optimize"))
            .await
    }

    /// A batch that reaches the writer past the write timeout is dropped,
    /// and the answer is awaited whole (the writer bounds each batch by
    /// its busy timeout).
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let timeout = self.common.write_timeout;
        let deadline = std::time::Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let command = writer::Command::Task(Box::new(move |db| {
            let result = if std::time::Instant::now() > deadline {
                Err(StoreError::Timeout(timeout))
            } else {
                audit::append(db, &entries).map_err(StoreError::from)
            };
            let _ = reply.send(result);
        }));
        self.writes
            .send(command)
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    async fn audit_page(&self, query: AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        self.readers.run(move |db| audit::page(db, &query)).await
    }

    async fn purge_audit(&self, cutoff_ns: i64) -> Result<u64, StoreError> {
        super::in_chunks(super::AUDIT_CHUNK, || {
            self.on_writer(move |db| audit::purge(db, cutoff_ns, super::AUDIT_CHUNK))
        })
        .await
    }

    async fn start_session(&self, start: SessionStart) -> Result<(), StoreError> {
        self.on_writer(move |db| console::start_session(db, &start))
            .await
    }

    async fn session(&self, id_sha256: &str) -> Result<Option<SessionRow>, StoreError> {
        let id = id_sha256.to_owned();
        self.readers.run(move |db| console::session(db, &id)).await
    }

    async fn touch_session(&self, id_sha256: &str, now_ns: i64) -> Result<(), StoreError> {
        let id = id_sha256.to_owned();
        self.on_writer(move |db| console::touch_session(db, &id, now_ns))
            .await
    }

    async fn end_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        let id = id_sha256.to_owned();
        self.on_writer(move |db| console::end_session(db, &id))
            .await
    }

    async fn save_recovery_run(&self, run: RecoveryRun) -> Result<(), StoreError> {
        self.on_writer(move |db| console::save_run(db, &run)).await
    }

    async fn recovery_run(&self, id: Option<&str>) -> Result<Option<RecoveryRun>, StoreError> {
        let id = id.map(str::to_owned);
        self.readers
            .run(move |db| console::run(db, id.as_deref()))
            .await
    }

    async fn changes(&self, after: i64, limit: u32) -> Result<ChangePage, StoreError> {
        let mut page = self
            .read(move |db, overdue| feed::changes(db, after, limit, overdue))
            .await?;
        page.changes = self.common.opened_changes(page.changes)?;
        Ok(page)
    }

    async fn note_overdue(&self) -> Result<u64, StoreError> {
        let before_ns = self.common.overdue_before_ns();
        let noted = self
            .on_writer(move |db| feed::note_overdue(db, before_ns, crate::clock::now_ns()))
            .await?;
        if noted > 0 {
            self.common.feed.moved();
        }
        Ok(noted)
    }

    async fn purge_changes(&self, cutoff_ns: i64) -> Result<u64, StoreError> {
        super::in_chunks(super::feed::PURGE_CHUNK, || {
            self.on_writer(move |db| feed::purge(db, cutoff_ns, super::feed::PURGE_CHUNK))
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
        let (endpoint, holder) = (endpoint.to_owned(), holder.to_owned());
        self.on_writer(move |db| outbound::take_lease(db, &endpoint, &holder, now_ns, until_ns))
            .await
    }

    async fn make_outbound_messages(
        &self,
        endpoint: &str,
        kinds: Vec<ChangeKind>,
    ) -> Result<u64, StoreError> {
        super::in_chunks(super::outbound::MAKE_CHUNK as u64, || {
            let (endpoint, kinds) = (endpoint.to_owned(), kinds.clone());
            self.on_writer(move |db| {
                outbound::make_messages(db, &endpoint, &kinds, crate::clock::now_ns())
            })
        })
        .await
    }

    async fn due_outbound(
        &self,
        endpoint: &str,
        limit: u32,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let endpoint = endpoint.to_owned();
        let now_ns = crate::clock::now_ns();
        self.readers
            .run(move |db| outbound::due(db, &endpoint, now_ns, limit))
            .await
    }

    async fn settle_outbound(
        &self,
        endpoint: &str,
        records: Vec<AttemptRecord>,
    ) -> Result<(), StoreError> {
        let endpoint = endpoint.to_owned();
        self.on_writer(move |db| outbound::settle(db, &endpoint, &records))
            .await
    }

    async fn outbound_summary(&self, endpoint: &str) -> Result<EndpointSummary, StoreError> {
        let endpoint = endpoint.to_owned();
        self.readers
            .run(move |db| outbound::summary(db, &endpoint))
            .await
    }

    async fn outbound_messages(
        &self,
        endpoint: &str,
        state: Option<MessageState>,
        limit: u32,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let endpoint = endpoint.to_owned();
        self.readers
            .run(move |db| outbound::list(db, &endpoint, state, limit))
            .await
    }

    async fn resend_outbound(&self, endpoint: &str, id: Option<String>) -> Result<u64, StoreError> {
        let endpoint = endpoint.to_owned();
        let now_ns = crate::clock::now_ns();
        self.on_writer(move |db| outbound::resend(db, &endpoint, id.as_deref(), now_ns))
            .await
    }
}

/// Applies the migrations to an existing database file, for tools that
/// read it without the storage threads.
pub(super) async fn migrate_existing(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        anyhow::bail!("the database {} does not exist", path.display());
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal);
    let mut connection = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| {
            anyhow!(
                "cannot open the database {}: {}",
                path.display(),
                sqlx_cause(&e)
            )
        })?;
    MIGRATOR
        .run(&mut connection)
        .await
        .map_err(|e| anyhow!("cannot migrate the database {}: {e}", path.display()))?;
    connection.close().await?;
    Ok(())
}

/// Why `database_url` names no SQLite file this service can use, if so.
pub(super) fn check_url(database_url: &str) -> Result<(), String> {
    let options = SqliteConnectOptions::from_str(database_url)
        .map_err(|_| "must look like sqlite://path/to/file.db".to_owned())?;
    let filename = options.get_filename().to_string_lossy();
    if filename.is_empty()
        || filename == ":memory:"
        // sqlx's name for `sqlite::memory:`
        || filename.starts_with("file:sqlx-in-memory")
        || database_url.contains("mode=memory")
    {
        return Err(
            "must name a file: an in-memory database would lose acknowledged events".into(),
        );
    }
    Ok(())
}

/// The database file's absolute path.
pub(super) fn location(database_url: &str) -> String {
    let path = SqliteConnectOptions::from_str(database_url)
        .map(|options| options.get_filename().to_path_buf())
        .unwrap_or_default();
    std::path::absolute(&path)
        .unwrap_or(path)
        .display()
        .to_string()
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Database(error.to_string())
    }
}

/// Creates the database file if it is missing, so that a path that cannot
/// hold it fails here with the cause in words, not as SQLite's "unable to
/// open database file".
fn create_file(path: &Path) -> Result<(), String> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !folder.is_dir() {
            return Err(format!("the folder {} does not exist", folder.display()));
        }
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| crate::os_error::describe(&e))
}

/// SQLite's own message, or the I/O error's cause in words.
fn sqlx_cause(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(error) => error.message().to_owned(),
        sqlx::Error::Io(error) => crate::os_error::describe(error),
        other => other.to_string(),
    }
}

/// Opens a connection for the storage threads, with the settings they share.
fn connect(
    path: &std::path::Path,
    flags: rusqlite::OpenFlags,
    options: &StoreOptions,
) -> rusqlite::Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open_with_flags(path, flags)?;
    db.busy_timeout(options.write_timeout)?;
    db.pragma_update(None, "cache_size", -i64::from(options.cache_kib))?;
    db.pragma_update(None, "mmap_size", options.mmap_bytes)?;
    Ok(db)
}

/// A source as the event log keeps it.
fn source_column(value: &str) -> rusqlite::Result<Source> {
    Source::parse(value).ok_or_else(|| decode_error(format!("unknown source {value}")))
}

/// An outcome as the event log keeps it.
fn outcome_column(value: &str) -> rusqlite::Result<Outcome> {
    Outcome::parse(value).ok_or_else(|| decode_error(format!("unknown outcome {value}")))
}

fn decode_error(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

#[cfg(test)]
mod tests {
    /// `.cargo/config.toml` compiles SQLite without the two process-wide
    /// locks its defaults put on every statement (a cost, not a behaviour:
    /// this checks that the flags reached the build).
    #[test]
    fn sqlite_is_built_without_memory_statistics_or_a_shared_page_cache() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let options: Vec<String> = db
            .prepare("pragma compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }
}
