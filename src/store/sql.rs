//! SQL both engines run as written: the jobs table's columns, the ranked
//! upsert, the job-state row decoder, the listing queries and the audit
//! trail's page. Where the
//! dialects differ (how a parameter is written, how an unresolved expected
//! job is tested) a [`Dialect`] says so; everything else is one text.

use super::{AuditQuery, JobKey, JobQuery, JobState, ListStatus};
use crate::domain::JobStatus;

/// What differs between the engines' SQL.
pub(super) struct Dialect {
    /// Before a parameter's number: `?` (SQLite's `?1`) or `$` (`$1`).
    parameter: char,
    /// True of an expected job without an outcome yet, written as its
    /// partial index states it (SQLite uses a partial index only for a
    /// query that names its condition the same way).
    unresolved: &'static str,
    /// The last position a change was given.
    last_change_position: &'static str,
}

pub(super) const SQLITE: Dialect = Dialect {
    parameter: '?',
    unresolved: "resolved = 0",
    last_change_position: "coalesce((select max(position) from changes), 0)",
};

pub(super) const POSTGRES: Dialect = Dialect {
    parameter: '$',
    unresolved: "not resolved",
    last_change_position: "(select last_position from change_positions where id = 1)",
};

/// The upsert of a job's state from an outcome event, by the job's key.
/// The columns, in this order, are those of [`insert_job!`].
macro_rules! replace_job {
    () => {
        "on conflict (patient_note_id, job_id) do update set
    status = excluded.status,
    emr_note_id = excluded.emr_note_id,
    failure_reason = excluded.failure_reason,
    reasons = excluded.reasons,
    patient_mrn = excluded.patient_mrn,
    patient_mrn_key = excluded.patient_mrn_key,
    location_id = excluded.location_id,
    access_token_reference_id = excluded.access_token_reference_id,
    deciding_event_id = excluded.deciding_event_id,
    deciding_event_created = excluded.deciding_event_created,
    deciding_event_created_ns = excluded.deciding_event_created_ns,
    last_received_at = excluded.last_received_at"
    };
}
pub(super) use replace_job;

/// The head of an insert into the jobs table, every column named.
macro_rules! insert_job {
    () => {
        "insert into jobs (patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                  patient_mrn, location_id, access_token_reference_id, deciding_event_id,
                  deciding_event_created, deciding_event_created_ns,
                  first_received_at, last_received_at, patient_mrn_key)"
    };
}
pub(super) use insert_job;

/// [`replace_job!`] guarded by the ranking rule: a job's state is replaced
/// only by a higher-ranked one (created beats failed, then the later
/// `created`, then the greater event id, bytewise). The database evaluates
/// it on the locked, latest row, whichever replica committed it.
macro_rules! replace_if_outranked {
    () => {
        concat!(
            $crate::store::sql::replace_job!(),
            "
where (excluded.status = 'created', excluded.deciding_event_created_ns, excluded.deciding_event_id)
    > (jobs.status = 'created', jobs.deciding_event_created_ns, jobs.deciding_event_id)"
        )
    };
}
pub(super) use replace_if_outranked;

/// A job with an outcome, and when it was submitted if it was registered.
const JOB_COLUMNS: &str = "jobs.patient_note_id, jobs.job_id, status, emr_note_id,
    failure_reason, reasons, patient_mrn, location_id, jobs.access_token_reference_id,
    deciding_event_id, deciding_event_created, deciding_event_created_ns, first_received_at,
    last_received_at, expected_jobs.submitted_at, patient_mrn_key
    from jobs left join expected_jobs on expected_jobs.job_id = jobs.job_id";

impl Dialect {
    /// Before a parameter's number.
    pub(super) fn parameter(&self) -> char {
        self.parameter
    }

    /// The last position a change was given, as an expression.
    pub(super) fn last_change_position(&self) -> &'static str {
        self.last_change_position
    }

    /// `select` of the jobs with an outcome, to be followed by conditions
    /// (`where ...`).
    pub(super) fn decided_jobs(&self) -> String {
        format!("select {JOB_COLUMNS}")
    }

    /// `select` of the pending jobs, in the columns of the decided ones,
    /// to be followed by further conditions (`and ...`). `resolved` may lag
    /// behind an outcome another replica committed; `jobs` says for sure.
    pub(super) fn pending_jobs(&self) -> String {
        format!(
            "select patient_note_id, job_id, cast('pending' as text), cast(null as text),
                cast(null as text), cast(null as text), cast(null as text), cast(null as text),
                access_token_reference_id, cast(null as text), cast(null as text), submitted_ns,
                cast(null as text), cast(null as text), submitted_at, cast(null as text)
             from expected_jobs
             where {} and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)",
            self.unresolved
        )
    }

    /// The changes after position `1` (up to `2` of them), each with its
    /// job's state now: the columns [`job_state`] reads, then position,
    /// kind and time; then, on every row, the purged and last positions,
    /// read in the same statement (one snapshot). With no change after `1`
    /// there is one row, of the bounds alone. A job with no outcome reads
    /// as pending, from its registration.
    pub(super) fn changes_after(&self) -> String {
        let p = self.parameter;
        format!(
            "with bounds as (
                 select (select purged_through from change_purge where id = 1) as purged_through,
                        {} as last_position
             )
             select page.*, bounds.purged_through, bounds.last_position
             from bounds left join (
                 select changes.patient_note_id, changes.job_id,
                    coalesce(jobs.status, 'pending'), jobs.emr_note_id, jobs.failure_reason,
                    jobs.reasons, jobs.patient_mrn, jobs.location_id,
                    coalesce(jobs.access_token_reference_id,
                             expected_jobs.access_token_reference_id),
                    jobs.deciding_event_id, jobs.deciding_event_created,
                    coalesce(jobs.deciding_event_created_ns, expected_jobs.submitted_ns,
                             changes.at_ns),
                    jobs.first_received_at, jobs.last_received_at, expected_jobs.submitted_at,
                    jobs.patient_mrn_key, changes.position, changes.kind, changes.at_ns
                 from changes
                 left join jobs on jobs.patient_note_id = changes.patient_note_id
                     and jobs.job_id = changes.job_id
                 left join expected_jobs on expected_jobs.job_id = changes.job_id
                 where changes.position > {p}1
                 order by changes.position
                 limit {p}2
             ) as page on true
             order by page.position",
            self.last_change_position
        )
    }

    /// The statement and parameters of one page of `query`, in the columns
    /// [`job_state`] reads. `overdue_before_ns` is the cut-off of an
    /// overdue-only listing.
    pub(super) fn list_jobs(&self, query: &JobQuery, overdue_before_ns: i64) -> Statement {
        let mut listing = self.statement();
        listing.values.push(Value::Int(i64::from(query.limit)));
        let limit = listing.placeholder(1);
        match query.status {
            Some(ListStatus::Pending { overdue_only }) => {
                let mut sql = self.pending_jobs();
                let narrow = &query.narrow;
                // A pending job has no reason and no location yet.
                if narrow.failure_reason.is_some() || narrow.location_id.is_some() {
                    sql.push_str(" and false");
                }
                if let Some(since) = query.since_ns {
                    sql.push_str(&format!(" and submitted_ns >= {}", listing.bind_int(since)));
                }
                if overdue_only {
                    let before = listing.bind_int(overdue_before_ns);
                    sql.push_str(&format!(" and submitted_ns < {before}"));
                }
                if let Some(until) = narrow.until_ns {
                    sql.push_str(&format!(" and submitted_ns < {}", listing.bind_int(until)));
                }
                if let Some(account) = &narrow.access_token_reference_id {
                    let account = listing.bind_text(account);
                    sql.push_str(&format!(" and access_token_reference_id = {account}"));
                }
                if let Some(after) = &query.after {
                    let after = listing.bind_key(after);
                    sql.push_str(&format!(
                        " and (submitted_ns, patient_note_id, job_id) < {after}"
                    ));
                }
                sql.push_str(&format!(
                    " order by submitted_ns desc, patient_note_id desc, job_id desc limit {limit}"
                ));
                listing.sql = sql;
            }
            status => {
                // Each status has an index of its own, read newest first;
                // without a status filter, the newest of both are merged. The
                // status is written into the SQL (it is one of two fixed
                // words) because SQLite uses a partial index only for a
                // query that names its condition literally.
                let statuses = match status {
                    Some(ListStatus::Decided(status)) => vec![status],
                    // Only failures have a reason.
                    _ if query.narrow.failure_reason.is_some() => vec![JobStatus::Failed],
                    _ => vec![JobStatus::Created, JobStatus::Failed],
                };
                let conditions = listing.decided_conditions(query);
                let ranges: Vec<String> = statuses
                    .iter()
                    .map(|status| {
                        let status = status.as_str();
                        format!(
                            "select * from ({} where status = '{status}'{conditions}
                             order by deciding_event_created_ns desc, jobs.patient_note_id desc,
                                      jobs.job_id desc limit {limit}) as {status}",
                            self.decided_jobs()
                        )
                    })
                    .collect();
                listing.sql = format!(
                    "{} order by deciding_event_created_ns desc, patient_note_id desc,
                     job_id desc limit {limit}",
                    ranges.join(" union all ")
                );
            }
        }
        listing
    }

    fn statement(&self) -> Statement {
        Statement {
            sql: String::new(),
            values: Vec::new(),
            parameter: self.parameter,
        }
    }

    /// The statement and parameters of a page of the audit trail, newest
    /// first: `id, at, actor, action, target, request_id`.
    pub(super) fn audit_page(&self, query: &AuditQuery) -> Statement {
        let mut page = self.statement();
        let mut sql = String::from(
            "select id, at, actor, action, target, request_id from audit_log where 1 = 1",
        );
        if let Some(before) = query.before_id {
            sql.push_str(&format!(" and id < {}", page.bind_int(before)));
        }
        if let Some(since) = query.since_ns {
            sql.push_str(&format!(" and at_ns >= {}", page.bind_int(since)));
        }
        if let Some(until) = query.until_ns {
            sql.push_str(&format!(" and at_ns < {}", page.bind_int(until)));
        }
        for (column, value) in [("actor", &query.actor), ("action", &query.action)] {
            if let Some(value) = value {
                sql.push_str(&format!(" and {column} = {}", page.bind_text(value)));
            }
        }
        let limit = page.bind_int(i64::from(query.limit));
        sql.push_str(&format!(" order by id desc limit {limit}"));
        page.sql = sql;
        page
    }
}

/// A statement built for its filters, with its parameters in the order of
/// their numbers.
pub(super) struct Statement {
    pub sql: String,
    pub values: Vec<Value>,
    parameter: char,
}

/// A parameter of a [`Statement`].
pub(super) enum Value {
    Int(i64),
    Text(String),
}

impl Statement {
    fn placeholder(&self, number: usize) -> String {
        format!("{}{number}", self.parameter)
    }

    fn bind_int(&mut self, value: i64) -> String {
        self.values.push(Value::Int(value));
        self.placeholder(self.values.len())
    }

    fn bind_text(&mut self, value: &str) -> String {
        self.values.push(Value::Text(value.to_owned()));
        self.placeholder(self.values.len())
    }

    /// A listing key as a row value, `(created_ns, note, job)`.
    fn bind_key(&mut self, key: &JobKey) -> String {
        let created = self.bind_int(key.created_ns);
        let note = self.bind_text(&key.patient_note_id);
        let job = self.bind_text(&key.job_id);
        format!("({created}, {note}, {job})")
    }

    /// The conditions every status range of a decided listing shares (the
    /// ranges use the same parameters).
    fn decided_conditions(&mut self, query: &JobQuery) -> String {
        let narrow = &query.narrow;
        let mut conditions = String::new();
        if let Some(since) = query.since_ns {
            let since = self.bind_int(since);
            conditions.push_str(&format!(" and deciding_event_created_ns >= {since}"));
        }
        if let Some(until) = narrow.until_ns {
            let until = self.bind_int(until);
            conditions.push_str(&format!(" and deciding_event_created_ns < {until}"));
        }
        for (column, value) in [
            ("failure_reason", &narrow.failure_reason),
            ("location_id", &narrow.location_id),
            (
                "jobs.access_token_reference_id",
                &narrow.access_token_reference_id,
            ),
        ] {
            if let Some(value) = value {
                let value = self.bind_text(value);
                conditions.push_str(&format!(" and {column} = {value}"));
            }
        }
        if let Some(after) = &query.after {
            let after = self.bind_key(after);
            conditions.push_str(&format!(
                " and (deciding_event_created_ns, jobs.patient_note_id, jobs.job_id) < {after}"
            ));
        }
        conditions
    }
}

/// A result row, whichever driver read it.
pub(super) trait Columns {
    type Error;
    fn text(&self, index: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, index: usize) -> Result<Option<i64>, Self::Error>;
    /// A value the decoder could not read.
    fn invalid(message: String) -> Self::Error;
}

/// Reads a row selected with [`Dialect::decided_jobs`] or
/// [`Dialect::pending_jobs`]. A pending job submitted before
/// `overdue_before_ns` is overdue.
pub(super) fn job_state<R: Columns>(row: &R, overdue_before_ns: i64) -> Result<JobState, R::Error> {
    let required = |index: usize| {
        row.text(index)?
            .ok_or_else(|| R::invalid(format!("column {index} is null")))
    };
    let patient_note_id = required(0)?;
    let job_id = required(1)?;
    let status = required(2)?;
    let created_ns = row
        .int(11)?
        .ok_or_else(|| R::invalid("column 11 is null".into()))?;
    let reasons = row
        .text(5)?
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| R::invalid(e.to_string()))?;
    Ok(JobState {
        overdue: status == JobState::PENDING && created_ns < overdue_before_ns,
        key: JobKey {
            created_ns,
            patient_note_id: patient_note_id.clone(),
            job_id: job_id.clone(),
        },
        patient_note_id,
        job_id,
        status,
        submitted_at: row.text(14)?,
        emr_note_id: row.text(3)?,
        failure_reason: row.text(4)?,
        reasons,
        patient_mrn: row.text(6)?,
        mrn_sealed_under: row.text(15)?,
        location_id: row.text(7)?,
        access_token_reference_id: row.text(8)?,
        deciding_event_id: row.text(9)?,
        deciding_event_created: row.text(10)?,
        first_received_at: row.text(12)?,
        last_received_at: row.text(13)?,
    })
}

/// Reads a row selected with [`Dialect::changes_after`]: the change, if
/// the row holds one, then the purged and last positions.
pub(super) fn change_row<R: Columns>(
    row: &R,
    overdue_before_ns: i64,
) -> Result<(Option<super::feed::Change>, i64, i64), R::Error> {
    let bounds = (row.int(19)?.unwrap_or(0), row.int(20)?.unwrap_or(0));
    let Some(position) = row.int(16)? else {
        return Ok((None, bounds.0, bounds.1));
    };
    let kind = row.text(17)?.unwrap_or_default();
    let change = super::feed::Change {
        position,
        kind: kind
            .parse::<crate::domain::ChangeKind>()
            .map_err(|()| R::invalid(format!("unknown change kind {kind}")))?,
        at_ns: row
            .int(18)?
            .ok_or_else(|| R::invalid("column 18 is null".into()))?,
        job: job_state(row, overdue_before_ns)?,
    };
    Ok((Some(change), bounds.0, bounds.1))
}

/// The page [`Dialect::changes_after`]'s rows make.
pub(super) fn change_page<R: Columns>(
    rows: &[R],
    overdue_before_ns: i64,
) -> Result<super::feed::ChangePage, R::Error> {
    let mut page = super::feed::ChangePage {
        changes: Vec::with_capacity(rows.len()),
        purged_through: 0,
        last_position: 0,
    };
    for row in rows {
        let (change, purged_through, last_position) = change_row(row, overdue_before_ns)?;
        page.changes.extend(change);
        page.purged_through = purged_through;
        page.last_position = last_position;
    }
    Ok(page)
}
