//! The outgoing webhooks' queue: a message for each change an endpoint
//! takes, made from the change feed by whichever replica holds the
//! endpoint's lease, and what became of each attempt. The change itself is
//! committed with the state it records, so a message is never lost: it is
//! made from the feed afterwards, however the process ended meanwhile.
//!
//! The statements both engines run are here, written once.

use super::sql::Dialect;
use crate::domain::ChangeKind;

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting for its next attempt (or its first).
    Queued,
    /// An attempt was answered 2xx.
    Delivered,
    /// Every attempt of the retry schedule failed (or was given up).
    Failed,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Queued, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == value)
    }
}

/// One message to one endpoint.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The `webhook-id`: the same on every attempt.
    pub id: String,
    pub endpoint: String,
    /// The change's position in the feed.
    pub position: i64,
    pub job_id: String,
    pub patient_note_id: String,
    pub kind: ChangeKind,
    pub change_at_ns: i64,
    pub state: MessageState,
    pub attempts: u32,
    pub next_attempt_ns: i64,
    pub last_attempt_ns: Option<i64>,
    /// The HTTP status of the last answer, if one came.
    pub last_status: Option<u16>,
    /// A short excerpt of the last answer, or why none came.
    pub last_error: Option<String>,
    pub settled_ns: Option<i64>,
}

/// How an attempt went, and what follows for its message.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: String,
    pub at_ns: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    /// Not delivered: tried again at this instant (unix ns).
    RetryAt(i64),
    /// Not delivered, and the schedule is used up.
    Failed,
}

/// An endpoint's queue at a glance.
#[derive(Debug, Clone, Default)]
pub struct EndpointSummary {
    pub queued: i64,
    pub failed: i64,
    /// When the oldest change still queued happened.
    pub oldest_queued_ns: Option<i64>,
    pub last_delivered_ns: Option<i64>,
    /// The first failed attempt since the last delivery.
    pub failing_since_ns: Option<i64>,
}

/// Most changes one transaction makes messages of.
pub(super) const MAKE_CHUNK: i64 = 500;

/// A new `webhook-id`: unique whatever the database (positions restart in
/// a new one, and an app that dedupes must not drop a new message), and
/// unguessable.
pub(super) fn new_message_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    format!("msg_{}", hex::encode(bytes))
}

/// The columns [`message`] reads, in its order.
pub(super) const MESSAGE_COLUMNS: &str = "id, endpoint, position, job_id, patient_note_id, kind,
    change_at_ns, state, attempts, next_attempt_ns, last_attempt_ns, last_status, last_error,
    settled_ns";

/// A row of [`MESSAGE_COLUMNS`], whichever driver read it.
pub(super) fn message<R: super::sql::Columns>(row: &R) -> Result<OutboundMessage, R::Error> {
    let text = |index: usize| {
        row.text(index)?
            .ok_or_else(|| R::invalid(format!("column {index} is null")))
    };
    let int = |index: usize| {
        row.int(index)?
            .ok_or_else(|| R::invalid(format!("column {index} is null")))
    };
    let kind = text(5)?;
    let state = text(7)?;
    Ok(OutboundMessage {
        id: text(0)?,
        endpoint: text(1)?,
        position: int(2)?,
        job_id: text(3)?,
        patient_note_id: text(4)?,
        kind: kind
            .parse()
            .map_err(|()| R::invalid(format!("unknown change kind {kind}")))?,
        change_at_ns: int(6)?,
        state: MessageState::parse(&state)
            .ok_or_else(|| R::invalid(format!("unknown message state {state}")))?,
        attempts: u32::try_from(int(8)?).unwrap_or(u32::MAX),
        next_attempt_ns: int(9)?,
        last_attempt_ns: row.int(10)?,
        last_status: row.int(11)?.and_then(|status| u16::try_from(status).ok()),
        last_error: row.text(12)?,
        settled_ns: row.int(13)?,
    })
}

/// The statements of the queue, in an engine's dialect.
pub(super) struct Statements {
    /// Adds the endpoint, starting from the feed's last position (a new
    /// endpoint gets the changes from when it was configured).
    pub add_endpoint: String,
    /// Takes or renews the lease: `1` name, `2` holder, `3` now, `4` until.
    pub take_lease: String,
    /// `1` endpoint: where its messages are made through.
    pub made_through: String,
    /// Changes after `1`, up to `2`.
    pub changes_after: String,
    /// `1` id .. `7` change_at_ns, `8` now.
    pub insert_message: String,
    /// `1` endpoint, `2` position.
    pub set_made_through: String,
    /// Queued messages of `1` due by `2`, each the first queued of its
    /// job, up to `3`, in position order.
    pub due: String,
    /// `1` id, `2` at, `3` status, `4` error.
    pub delivered: String,
    /// `1` id, `2` at, `3` status, `4` error, `5` next attempt.
    pub retry: String,
    /// `1` id, `2` at, `3` status, `4` error.
    pub failed: String,
    /// `1` endpoint, `2` at.
    pub endpoint_delivered: String,
    /// `1` endpoint, `2` at.
    pub endpoint_failing: String,
    /// `1` endpoint.
    pub summary: String,
    /// `1` endpoint, `2` state or null, `3` limit: newest first.
    pub list: String,
    /// `1` endpoint, `2` id or null (every failed one), `3` now.
    pub resend: String,
}

impl Statements {
    pub(super) fn of(dialect: &Dialect) -> Self {
        let p = dialect.parameter();
        let last = dialect.last_change_position();
        Self {
            add_endpoint: format!(
                "insert into outbound_endpoints (name, made_through) values ({p}1, {last})
                 on conflict (name) do nothing"
            ),
            take_lease: format!(
                "update outbound_endpoints set holder = {p}2, lease_until_ns = {p}4
                 where name = {p}1 and (holder = {p}2 or lease_until_ns <= {p}3)"
            ),
            made_through: format!("select made_through from outbound_endpoints where name = {p}1"),
            changes_after: format!(
                "select position, job_id, patient_note_id, kind, at_ns from changes
                 where position > {p}1 order by position limit {p}2"
            ),
            insert_message: format!(
                "insert into outbound_messages (id, endpoint, position, job_id, patient_note_id,
                                                kind, change_at_ns, state, next_attempt_ns)
                 values ({p}1, {p}2, {p}3, {p}4, {p}5, {p}6, {p}7, 'queued', {p}8)
                 on conflict (endpoint, position) do nothing"
            ),
            set_made_through: format!(
                "update outbound_endpoints set made_through = {p}2 where name = {p}1"
            ),
            due: format!(
                "select {MESSAGE_COLUMNS} from outbound_messages as m
                 where endpoint = {p}1 and state = 'queued' and next_attempt_ns <= {p}2
                   and not exists (
                       select 1 from outbound_messages as earlier
                       where earlier.endpoint = m.endpoint and earlier.job_id = m.job_id
                         and earlier.state = 'queued' and earlier.position < m.position)
                 order by position limit {p}3"
            ),
            delivered: format!(
                "update outbound_messages set state = 'delivered', attempts = attempts + 1,
                     last_attempt_ns = {p}2, last_status = {p}3, last_error = {p}4,
                     settled_ns = {p}2
                 where id = {p}1 and state = 'queued'"
            ),
            retry: format!(
                "update outbound_messages set attempts = attempts + 1, last_attempt_ns = {p}2,
                     last_status = {p}3, last_error = {p}4, next_attempt_ns = {p}5
                 where id = {p}1 and state = 'queued'"
            ),
            failed: format!(
                "update outbound_messages set state = 'failed', attempts = attempts + 1,
                     last_attempt_ns = {p}2, last_status = {p}3, last_error = {p}4,
                     settled_ns = {p}2
                 where id = {p}1 and state = 'queued'"
            ),
            endpoint_delivered: format!(
                "update outbound_endpoints set last_delivered_ns = {p}2, failing_since_ns = null
                 where name = {p}1"
            ),
            endpoint_failing: format!(
                "update outbound_endpoints set failing_since_ns = coalesce(failing_since_ns, {p}2)
                 where name = {p}1"
            ),
            summary: format!(
                "select (select count(*) from outbound_messages
                         where endpoint = {p}1 and state = 'queued'),
                        (select count(*) from outbound_messages
                         where endpoint = {p}1 and state = 'failed'),
                        (select change_at_ns from outbound_messages
                         where endpoint = {p}1 and state = 'queued' order by position limit 1),
                        last_delivered_ns, failing_since_ns
                 from outbound_endpoints where name = {p}1"
            ),
            list: format!(
                "select {MESSAGE_COLUMNS} from outbound_messages
                 where endpoint = {p}1 and ({p}2 is null or state = {p}2)
                 order by position desc limit {p}3"
            ),
            resend: format!(
                "update outbound_messages set state = 'queued', attempts = 0,
                     next_attempt_ns = {p}3, settled_ns = null
                 where endpoint = {p}1 and state = 'failed' and ({p}2 is null or id = {p}2)"
            ),
        }
    }
}
