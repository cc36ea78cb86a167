//! Recovery of outcomes whose delivery was lost.
//!
//! Cobalt sends an event at most twice and never retries a timeout, so
//! some outcomes never arrive. A sweep asks Cobalt's event list for them:
//!
//! 1. for each overdue job, oldest first and at most `reconcile_max_jobs`,
//!    the events of that job;
//! 2. every patient-note event whose delivery failed over the look-back
//!    window, page by page, which also finds jobs never registered here.
//!
//! What it finds goes through the same path as a delivery (dedupe by event
//! id, ranking, the event log), marked `recovered`. Sweeps run in the
//! background every `reconcile_interval_secs` on one replica at a time (a
//! lease row in the database says whose turn it is and when the next is
//! due), and on demand (`cobalt-receiver reconcile`, `POST /v1/recoveries`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use tracing::Instrument;

use crate::cobalt::{self, Account, Client, Credentials, EventQuery, ListError};
use crate::config::Config;
use crate::domain::event::{CREATED, FAILED};
use crate::monitoring::{self, RecoveredOutcome, SweepOutcome};
use crate::store::{Delivery, Outcome, Recorded, Source, Store, StoreError};

/// What a database outage would cost, when it would cost deliveries
/// for good: on PostgreSQL (replicas share the one database, so an
/// outage refuses deliveries on all of them) with no scheduled recovery
/// sweep to fetch what Cobalt gave up on after its one retry.
pub fn outage_warning(config: &Config) -> Option<&'static str> {
    let shared =
        crate::store::Engine::of(&config.database_url) == Some(crate::store::Engine::Postgres);
    let recovery = Credentials::from_config(config).is_some() && config.reconcile_interval_secs > 0;
    (shared && !recovery).then_some(
        "deliveries refused while the database is unavailable are lost for good: \
         Cobalt retries a delivery once, 1 s later, and recovery is off; set \
         cobalt_client_id, cobalt_client_secret and cobalt_access_token (and keep \
         reconcile_interval_secs above 0) so a sweep fetches them",
    )
}

/// What one sweep looks at.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// These jobs instead of the overdue ones.
    pub job_ids: Option<Vec<String>>,
    /// The first day of the failed-deliveries window, instead of the
    /// configured look-back.
    pub since: Option<Date>,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// Jobs asked about one by one.
    pub jobs_asked: usize,
    /// Pages of Cobalt's event list read.
    pub pages_read: usize,
    /// Patient-note outcome events found (each counted once).
    pub outcomes_found: usize,
    /// Of those, the ones new here: their delivery had been lost.
    pub recovered: usize,
    /// Of those, the ones already recorded.
    pub already_known: usize,
    /// Rows of Cobalt's list that could not be read as events.
    pub unreadable: usize,
    /// The first day of the failed-deliveries window (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub since: String,
    /// Why part of the sweep was given up, if it was.
    pub errors: Vec<String>,
}

/// What a sweep will ask Cobalt.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Overdue jobs asked about one by one (oldest first).
    pub jobs: u64,
    /// The first day of the failed-deliveries window.
    pub since: Date,
    /// Linked accounts whose failed deliveries are listed.
    pub accounts: usize,
}

/// Sees a sweep's report as it grows.
pub type Observer = dyn Fn(&Report) + Send + Sync;

pub struct Reconciler {
    store: Store,
    client: Arc<Client>,
    overdue_after: Duration,
    max_jobs: u32,
    lookback_days: u32,
    /// Set once a refusal of the credentials is logged, so it is logged
    /// once until a call succeeds again.
    refusal_logged: AtomicBool,
}

impl Reconciler {
    pub fn new(
        store: Store,
        client: Arc<Client>,
        overdue_after: Duration,
        max_jobs: u32,
        lookback_days: u32,
    ) -> Self {
        Self {
            store,
            client,
            overdue_after,
            max_jobs,
            lookback_days,
            refusal_logged: AtomicBool::new(false),
        }
    }

    /// What a sweep of the default scope would ask Cobalt, with `overdue`
    /// jobs overdue now.
    pub fn plan(&self, overdue: i64) -> Plan {
        let now = OffsetDateTime::now_utc();
        Plan {
            jobs: u64::try_from(overdue)
                .unwrap_or(0)
                .min(u64::from(self.max_jobs)),
            since: (now - time::Duration::days(i64::from(self.lookback_days))).date(),
            accounts: self.client.credentials().accounts().len(),
        }
    }

    /// Runs one sweep now.
    pub async fn sweep(&self, scope: &Scope) -> Report {
        self.sweep_observed(scope, &|_| {}).await
    }

    /// Runs one sweep now, showing `observe` the report so far after each
    /// call to Cobalt (the console's progress).
    pub async fn sweep_observed(&self, scope: &Scope, observe: &Observer) -> Report {
        let span = tracing::debug_span!(
            "recovery sweep",
            jobs_asked = tracing::field::Empty,
            outcomes_found = tracing::field::Empty,
            recovered = tracing::field::Empty,
            errors = tracing::field::Empty,
        );
        let report = self
            .run_sweep(scope, observe)
            .instrument(span.clone())
            .await;
        span.record("jobs_asked", report.jobs_asked);
        span.record("outcomes_found", report.outcomes_found);
        span.record("recovered", report.recovered);
        span.record("errors", report.errors.len());
        monitoring::sweep(match report.errors.is_empty() {
            true => SweepOutcome::Completed,
            false => SweepOutcome::Failed,
        });
        report
    }

    async fn run_sweep(&self, scope: &Scope, observe: &Observer) -> Report {
        let now = OffsetDateTime::now_utc();
        let since = scope
            .since
            .unwrap_or_else(|| (now - time::Duration::days(i64::from(self.lookback_days))).date());
        let mut report = Report {
            since: since.to_string(),
            ..Report::default()
        };
        let mut seen = HashSet::new();
        if let Err(error) = self.store.settle_resolved().await {
            report.errors.push(format!("the database: {error}"));
            return report;
        }
        let jobs = match &scope.job_ids {
            Some(ids) => ids
                .iter()
                .map(|id| (id.clone(), None::<String>))
                .collect::<Vec<_>>(),
            None => {
                let before = now - self.overdue_after;
                match self
                    .store
                    .overdue_jobs(crate::clock::unix_ns(before), self.max_jobs)
                    .await
                {
                    Ok(jobs) => jobs
                        .into_iter()
                        .map(|job| (job.job_id, job.access_token_reference_id))
                        .collect::<Vec<_>>(),
                    Err(error) => {
                        report.errors.push(format!("the database: {error}"));
                        return report;
                    }
                }
            }
        };
        let credentials = self.client.credentials();
        let mut refused: HashSet<Option<String>> = HashSet::new();
        for (job_id, reference) in jobs {
            let account = credentials
                .account(reference.as_deref())
                .or_else(|| credentials.account(None))
                .expect("credentials have at least one account");
            if refused.contains(&account.reference_id) {
                continue;
            }
            report.jobs_asked += 1;
            let query = EventQuery {
                job_id: Some(job_id),
                ..EventQuery::default()
            };
            match self
                .read_all(account, query, &mut seen, &mut report, observe)
                .await
            {
                Ok(()) => {}
                Err(Stop::Refused) => {
                    refused.insert(account.reference_id.clone());
                }
                Err(Stop::Database) => return report,
            }
        }
        let start_date = since.to_string();
        for account in credentials.accounts() {
            if refused.contains(&account.reference_id) {
                continue;
            }
            for event_type in [CREATED, FAILED] {
                let query = EventQuery {
                    event_type: Some(event_type),
                    delivery_status: Some("failed"),
                    start_date: Some(start_date.clone()),
                    ..EventQuery::default()
                };
                match self
                    .read_all(account, query, &mut seen, &mut report, observe)
                    .await
                {
                    Ok(()) => {}
                    Err(Stop::Refused) => break,
                    Err(Stop::Database) => return report,
                }
            }
        }
        report
    }

    /// Reads every page of one listing and records what it finds.
    async fn read_all(
        &self,
        account: &Account,
        mut query: EventQuery,
        seen: &mut HashSet<String>,
        report: &mut Report,
        observe: &Observer,
    ) -> Result<(), Stop> {
        query.page = 1;
        loop {
            observe(report);
            let page = match self.client.list_events(account, &query).await {
                Ok(page) => {
                    self.refusal_logged.store(false, Ordering::Relaxed);
                    page
                }
                Err(error) => {
                    let which = account
                        .reference_id
                        .as_deref()
                        .unwrap_or("the default account");
                    if matches!(error, ListError::Unauthorized(_)) {
                        if !self.refusal_logged.swap(true, Ordering::Relaxed) {
                            tracing::error!(account = which, error = %error, "recovery: Cobalt refused the credentials; check cobalt_client_id, cobalt_client_secret and the access token; this account is skipped until they work");
                        }
                        report.errors.push(format!("{which}: {error}"));
                        return Err(Stop::Refused);
                    }
                    tracing::warn!(account = which, error = %error, "recovery: a listing of Cobalt's events was given up");
                    report.errors.push(format!("{which}: {error}"));
                    return Ok(());
                }
            };
            report.pages_read += 1;
            report.unreadable += page.unreadable;
            for event in page.events {
                match self.record(event, seen, report).await {
                    Ok(()) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "recovery: storing a recovered event failed; the sweep stops");
                        report.errors.push(format!("the database: {error}"));
                        return Err(Stop::Database);
                    }
                }
            }
            if query.page >= page.total_pages {
                return Ok(());
            }
            query.page += 1;
        }
    }

    /// Records a listed event as a delivery would be, if it is a
    /// patient-note outcome not seen earlier in this sweep.
    async fn record(
        &self,
        event: String,
        seen: &mut HashSet<String>,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let Ok(envelope) = crate::domain::event::parse(&event, None) else {
            report.unreadable += 1;
            return Ok(());
        };
        if !cobalt::is_patient_note_outcome(envelope.event_type.as_deref())
            || !seen.insert(envelope.event_id.clone())
        {
            return Ok(());
        }
        report.outcomes_found += 1;
        let recorded = self
            .store
            .record(Delivery {
                envelope,
                payload: event,
                attempt: None,
                received_at: OffsetDateTime::now_utc(),
                source: Source::Recovered,
            })
            .await?;
        match recorded {
            Recorded::Duplicate(_) => {
                report.already_known += 1;
                monitoring::recovered(RecoveredOutcome::Duplicate);
            }
            Recorded::New(outcome) => {
                report.recovered += 1;
                monitoring::recovered(match outcome {
                    Outcome::Applied => RecoveredOutcome::Applied,
                    _ => RecoveredOutcome::Superseded,
                });
            }
        }
        Ok(())
    }
}

enum Stop {
    /// The account's credentials were refused.
    Refused,
    /// The database failed: nothing more can be recorded.
    Database,
}

/// Sweeps in the background: every replica checks the lease now and then;
/// the one that takes it sweeps, and the next sweep is due an interval
/// later, whichever replica runs it. Runs until shutdown stops it.
pub async fn sweep_every(reconciler: Arc<Reconciler>, interval: Duration, holder: String) {
    let check_every = interval.min(Duration::from_secs(15));
    loop {
        tokio::time::sleep(check_every).await;
        let now = OffsetDateTime::now_utc();
        let due = crate::clock::unix_ns(now + interval);
        match reconciler
            .store
            .take_lease(&holder, crate::clock::unix_ns(now), due)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(error = %error, "recovery: the sweep lease could not be read");
                continue;
            }
        }
        let report = reconciler.sweep(&Scope::default()).await;
        if report.recovered > 0 || !report.errors.is_empty() {
            tracing::info!(
                jobs_asked = report.jobs_asked,
                pages_read = report.pages_read,
                recovered = report.recovered,
                already_known = report.already_known,
                errors = report.errors.len(),
                "recovery sweep done"
            );
        } else {
            tracing::debug!(
                jobs_asked = report.jobs_asked,
                pages_read = report.pages_read,
                "recovery sweep found nothing new"
            );
        }
    }
}
