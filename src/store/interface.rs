//! The store's interface, stated once: every operation the service asks of
//! a database, with what it promises. Each engine implements
//! [`Operations`]; [`Store`] calls whichever engine runs, by a `match`
//! (no boxing, so the delivery path pays one branch).

use std::sync::Arc;

use time::OffsetDateTime;

use super::console::{RecoveryRun, SessionRow, SessionStart};
use super::feed::ChangePage;
use super::outbound::{AttemptRecord, EndpointSummary, MessageState, OutboundMessage};
use super::sealing::{KeptMrn, KeptPayload, ResealPage, Resealed};
use super::{
    AuditEntry, AuditQuery, AuditRow, Claim, Common, DaySummary, Delivery, EventSummary,
    ExpectedJob, HourOutcomes, JobQuery, JobState, KeyClaim, LastDelivery, PendingSummary,
    Recorded, Registered, Registration, RepeatedDelivery, Store, StoreError, SubmissionEnd,
    TimeToEmr, Wakeups, WriteHealth,
};
use crate::domain::ChangeKind;

/// Declares the operations once: the trait each engine implements, and the
/// same methods on [`Store`], each calling the running engine's.
macro_rules! operations {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $answer:ty; )*) => {
        /// What every engine does. Read the promises here; an engine's
        /// implementation says only how.
        pub(super) trait Operations {
            /// What the engine keeps as every engine does.
            fn common(&self) -> &Common;

            $( $(#[$doc])* async fn $name(&self $(, $arg: $ty)*) -> $answer; )*
        }

        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $answer {
                    match self {
                        Store::Sqlite(engine) => Operations::$name(engine $(, $arg)*).await,
                        Store::Postgres(engine) => Operations::$name(engine $(, $arg)*).await,
                    }
                }
            )*
        }
    };
}

impl Store {
    fn common(&self) -> &Common {
        match self {
            Store::Sqlite(engine) => engine.common(),
            Store::Postgres(engine) => engine.common(),
        }
    }

    /// The key pagination cursors are signed with, made once per database.
    pub fn cursor_key(&self) -> [u8; 32] {
        self.common().cursor_key
    }

    /// Where clients waiting for an outcome are woken once it is committed
    /// (on any replica).
    pub fn wakeups(&self) -> &Arc<Wakeups> {
        &self.common().wakeups
    }

    /// Where readers of the change feed wait for it to move (on any
    /// replica).
    pub fn feed(&self) -> &Arc<super::feed::FeedSignal> {
        &self.common().feed
    }

    /// The keys that seal and open patient data.
    pub fn keyring(&self) -> &crate::sealing::Keyring {
        &self.common().keyring
    }

    /// How this process's recent batches ended.
    pub fn write_health(&self) -> &WriteHealth {
        &self.common().write_health
    }
}

operations! {
    /// Finishes the writes already queued, then closes the connections.
    fn close(&self) -> ();

    // Deliveries.

    /// Records a delivery and the job state it implies, in a batch with
    /// the deliveries waiting beside it: one transaction, one commit.
    /// Answers once it is committed (a failed batch leaves nothing of
    /// itself), or with [`StoreError::Timeout`] after the write timeout.
    fn record(&self, delivery: Delivery) -> Result<Recorded, StoreError>;

    /// Commits a write through the writer, after what is queued: whether
    /// a delivery arriving now could be stored.
    fn can_write(&self) -> Result<(), StoreError>;

    /// True when the database answers and has every migration this
    /// build knows.
    fn is_ready(&self) -> Result<bool, StoreError>;

    // Job states. Every pending job read carries `overdue`, judged
    // against `overdue_after` at the time of the read.

    /// The jobs recorded under `job_id` (normally one), or its pending
    /// state if it was registered and has no outcome.
    fn jobs_by_job_id(&self, job_id: &str) -> Result<Vec<JobState>, StoreError>;

    /// The jobs of one patient note, newest decision first.
    fn jobs_by_note(&self, patient_note_id: &str) -> Result<Vec<JobState>, StoreError>;

    /// Up to `query.limit` job states in listing order (newest decision,
    /// or newest submission for pending ones, first), after `query.after`.
    fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobState>, StoreError>;

    /// The events recorded for `job_id`, in arrival order, without
    /// payloads.
    fn job_events(&self, job_id: &str) -> Result<Vec<EventSummary>, StoreError>;

    /// Repeated deliveries of the job's events, in the order received.
    fn repeated_deliveries(&self, job_id: &str) -> Result<Vec<RepeatedDelivery>, StoreError>;

    /// Job ids of the jobs whose note has this EMR note id (normally one).
    fn jobs_by_emr_note(&self, emr_note_id: &str) -> Result<Vec<String>, StoreError>;

    /// The job a recorded event was about.
    fn job_of_event(&self, event_id: &str) -> Result<Option<String>, StoreError>;

    /// How many jobs are in each final state.
    fn jobs_by_status(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Outcomes decided in `[from_ns, to_ns)`: counts and failures by
    /// reason.
    fn day_summary(&self, from_ns: i64, to_ns: i64) -> Result<DaySummary, StoreError>;

    /// Outcomes decided in `[from_ns, to_ns)`, counted by the hour since
    /// `from_ns` (hour 0 first); an hour without one is left out.
    fn outcomes_by_hour(&self, from_ns: i64, to_ns: i64) -> Result<Vec<HourOutcomes>, StoreError>;

    /// Time to the EMR of up to `limit` registered jobs whose note was
    /// created in `[from_ns, to_ns)`, earliest outcome first. Failures and
    /// jobs never registered have none.
    fn times_to_emr(&self, from_ns: i64, to_ns: i64, limit: u32) -> Result<Vec<TimeToEmr>, StoreError>;

    /// The newest delivery Cobalt made, if any.
    fn last_delivery(&self) -> Result<Option<LastDelivery>, StoreError>;

    // Expected jobs: submissions, registrations and the recovery sweep.

    /// Records that `registration`'s job was submitted and its outcome is
    /// expected. Never changes a job's final state.
    fn register(&self, registration: Registration) -> Result<Registered, StoreError>;

    /// Claims an idempotency key for a submission, or says what became
    /// of the submission that claimed it first. Expired keys are
    /// forgotten first.
    fn begin_submission(&self, claim: KeyClaim) -> Result<Claim, StoreError>;

    /// Settles a submission: `Done` registers its job in the same
    /// transaction; `Unknown` keeps the key blocked; `Forget` frees it
    /// (the note was certainly not created).
    fn end_submission(&self, key: Option<&str>, end: SubmissionEnd) -> Result<Option<Registered>, StoreError>;

    /// Pending jobs, how many are overdue, and the oldest of them.
    fn pending_summary(&self) -> Result<PendingSummary, StoreError>;

    /// Up to `limit` jobs pending since before `before_ns`, oldest first.
    fn overdue_jobs(&self, before_ns: i64, limit: u32) -> Result<Vec<ExpectedJob>, StoreError>;

    /// Marks expected jobs whose outcome is recorded as resolved (a
    /// registration racing the outcome's commit on another replica can
    /// leave one unmarked). Returns how many it marked.
    fn settle_resolved(&self) -> Result<u64, StoreError>;

    /// Takes the recovery sweep's lease until `until_ns` if it has
    /// expired by `now_ns`: the replica that takes it sweeps; the next
    /// sweep (on any replica) is due when it expires.
    fn take_lease(&self, holder: &str, now_ns: i64, until_ns: i64) -> Result<bool, StoreError>;

    // The change feed.

    /// Up to `limit` changes after position `after`, in position order
    /// (commit order), each with its job's state now, and the feed's
    /// bounds, all read at one instant.
    fn changes(&self, after: i64, limit: u32) -> Result<ChangePage, StoreError>;

    /// Notes the pending jobs that have passed `overdue_after` as overdue
    /// changes, once each. Returns how many it noted. Safe on every replica
    /// at once.
    fn note_overdue(&self) -> Result<u64, StoreError>;

    /// Deletes the changes noted before `cutoff_ns`, oldest first, and the
    /// outgoing messages settled before it, in small transactions. Returns
    /// how many changes it deleted.
    fn purge_changes(&self, cutoff_ns: i64) -> Result<u64, StoreError>;

    // The outgoing webhooks' queue, one endpoint at a time.

    /// Takes or renews the endpoint's sending lease until `until_ns` (a new
    /// endpoint starts from the feed's last position): true when `holder`
    /// holds it.
    fn take_outbound_lease(&self, endpoint: &str, holder: &str, now_ns: i64, until_ns: i64) -> Result<bool, StoreError>;

    /// Makes the endpoint's messages of the changes it has not seen, those
    /// of `kinds`, in small transactions. Returns how many it made.
    fn make_outbound_messages(&self, endpoint: &str, kinds: Vec<ChangeKind>) -> Result<u64, StoreError>;

    /// Up to `limit` queued messages due now, each the first still queued
    /// of its job, in position order.
    fn due_outbound(&self, endpoint: &str, limit: u32) -> Result<Vec<OutboundMessage>, StoreError>;

    /// Records how attempts went, in one transaction.
    fn settle_outbound(&self, endpoint: &str, records: Vec<AttemptRecord>) -> Result<(), StoreError>;

    /// The endpoint's queue at a glance.
    fn outbound_summary(&self, endpoint: &str) -> Result<EndpointSummary, StoreError>;

    /// Up to `limit` of the endpoint's messages (of one state), newest first.
    fn outbound_messages(&self, endpoint: &str, state: Option<MessageState>, limit: u32) -> Result<Vec<OutboundMessage>, StoreError>;

    /// Queues a failed message again (all failed ones without `id`), its
    /// retry schedule from the start. Returns how many.
    fn resend_outbound(&self, endpoint: &str, id: Option<String>) -> Result<u64, StoreError>;

    // Upkeep.

    /// Empties the payloads of events received before `cutoff`, in small
    /// transactions between deliveries, sweeping the event log in
    /// arrival order. Returns how many it emptied. Safe to run on every
    /// replica at once: one sweeps, the others skip.
    fn purge_payloads(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError>;

    /// Refreshes the query planner's statistics where they have gone
    /// stale (PostgreSQL's autovacuum does it by itself).
    fn refresh_statistics(&self) -> Result<(), StoreError>;

    // The audit trail.

    /// Appends rows to the audit trail, in one transaction. A call
    /// answered with an error has written nothing, and never will.
    fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError>;

    /// A page of the audit trail, newest first.
    fn audit_page(&self, query: AuditQuery) -> Result<Vec<AuditRow>, StoreError>;

    /// Deletes audit rows recorded before `cutoff_ns`, in small
    /// transactions. Returns how many it deleted.
    fn purge_audit(&self, cutoff_ns: i64) -> Result<u64, StoreError>;

    // Sealed patient data: the registry of key ids, and rotate-keys' pages.

    /// The key ids values may be sealed under, with when a process last
    /// recorded sealing under each (unix ns).
    fn sealing_keys(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Records that a process seals under `key_id` as of `now_ns`.
    fn record_sealing_key(&self, key_id: &str, now_ns: i64) -> Result<(), StoreError>;

    /// Removes `key_id` from the registry unless a process recorded it at
    /// or after `quiet_since_ns`. Says whether it was removed.
    fn retire_sealing_key(&self, key_id: &str, quiet_since_ns: i64) -> Result<bool, StoreError>;

    /// Jobs whose MRN is not sealed under `page.sealing_id`, in key order
    /// after `page.after`.
    fn mrns_to_reseal(&self, page: ResealPage<'_, (String, String)>) -> Result<Vec<KeptMrn>, StoreError>;

    /// Replaces each MRN that is still as read, in one transaction.
    /// Returns how many it replaced.
    fn reseal_mrns(&self, rows: Vec<Resealed<KeptMrn>>) -> Result<u64, StoreError>;

    /// Stored payloads not sealed under `page.sealing_id`, in arrival
    /// order after `page.after`.
    fn payloads_to_reseal(&self, page: ResealPage<'_, i64>) -> Result<Vec<KeptPayload>, StoreError>;

    /// Replaces each payload that is still as read, in one transaction.
    /// Returns how many it replaced.
    fn reseal_payloads(&self, rows: Vec<Resealed<KeptPayload>>) -> Result<u64, StoreError>;

    // The console's sessions and recovery runs.

    /// Starts a console session, replacing its token's other session and
    /// deleting sessions that have ended.
    fn start_session(&self, start: SessionStart) -> Result<(), StoreError>;

    /// The session whose id has this SHA-256, if it was started and not
    /// ended (whether it has expired is the caller's to judge).
    fn session(&self, id_sha256: &str) -> Result<Option<SessionRow>, StoreError>;

    /// Restarts a session's idle clock.
    fn touch_session(&self, id_sha256: &str, now_ns: i64) -> Result<(), StoreError>;

    /// Ends a session (signing out).
    fn end_session(&self, id_sha256: &str) -> Result<(), StoreError>;

    /// Records a console recovery run, or its progress.
    fn save_recovery_run(&self, run: RecoveryRun) -> Result<(), StoreError>;

    /// The run with this id, or with `None` the newest run.
    fn recovery_run(&self, id: Option<&str>) -> Result<Option<RecoveryRun>, StoreError>;
}
