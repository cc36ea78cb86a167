//! What the console keeps in the database so that every replica serves
//! every session: sessions and recovery runs. The statements are the same
//! on both engines (`$n` parameters, each first named in order, which
//! SQLite binds by position as PostgreSQL does).

use serde::{Deserialize, Serialize};

/// A console session as the database keeps it: no id (only its SHA-256
/// names the row), no permissions (the configuration has them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_name: String,
    pub started_ns: i64,
    pub seen_ns: i64,
}

/// A new session, for [`crate::store::Store::start_session`]: it replaces
/// the token's other session, and sessions that have ended by now are
/// deleted with it.
#[derive(Debug, Clone)]
pub struct SessionStart {
    pub id_sha256: String,
    pub token_name: String,
    pub now_ns: i64,
    /// Sessions last seen before this have ended (idle).
    pub idle_before_ns: i64,
    /// Sessions started before this have ended (absolute lifetime).
    pub started_before_ns: i64,
}

/// A recovery run started from the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRun {
    pub id: String,
    pub started_by: String,
    pub started_ns: i64,
    /// What the sweep was to ask, in words.
    pub plan: String,
    /// The sweep's report so far, as JSON.
    pub report: String,
    pub updated_ns: i64,
    pub finished_ns: Option<i64>,
}

/// Runs kept for their pages; older ones are deleted as new ones start.
pub const RUNS_KEPT: i64 = 20;

pub(crate) const DELETE_ENDED_SESSIONS: &str =
    "delete from console_sessions where seen_ns < $1 or started_ns < $2";
pub(crate) const DELETE_TOKEN_SESSION: &str = "delete from console_sessions where token_name = $1";
pub(crate) const INSERT_SESSION: &str = "insert into console_sessions
     (id_sha256, token_name, started_ns, seen_ns) values ($1, $2, $3, $3)";
pub(crate) const SELECT_SESSION: &str =
    "select token_name, started_ns, seen_ns from console_sessions where id_sha256 = $1";
pub(crate) const TOUCH_SESSION: &str =
    "update console_sessions set seen_ns = $1 where id_sha256 = $2 and seen_ns < $1";
pub(crate) const DELETE_SESSION: &str = "delete from console_sessions where id_sha256 = $1";

pub(crate) const UPSERT_RUN: &str = "insert into recovery_runs
     (id, started_by, started_ns, plan, report, updated_ns, finished_ns)
     values ($1, $2, $3, $4, $5, $6, $7)
     on conflict (id) do update set report = excluded.report,
       updated_ns = excluded.updated_ns, finished_ns = excluded.finished_ns";
pub(crate) const DELETE_OLD_RUNS: &str = "delete from recovery_runs where id not in
     (select id from recovery_runs order by started_ns desc limit $1)";
const RUN_COLUMNS: &str = "id, started_by, started_ns, plan, report, updated_ns, finished_ns";

pub(crate) fn select_run() -> String {
    format!("select {RUN_COLUMNS} from recovery_runs where id = $1")
}

pub(crate) fn select_latest_run() -> String {
    format!("select {RUN_COLUMNS} from recovery_runs order by started_ns desc limit 1")
}
