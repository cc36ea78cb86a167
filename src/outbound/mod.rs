//! Outgoing webhooks: each change of a job's state, pushed to the clinic's
//! app and signed per Standard Webhooks v1.0.0
//! (<https://www.standardwebhooks.com>), so the app can verify it with any
//! of that spec's libraries.
//!
//! [`signing`] makes the `webhook-signature`; [`schedule`] spaces the
//! retries of a message that was not delivered; [`attempt`] makes one HTTP
//! attempt and says how it went; [`sender`] runs an endpoint's queue.

pub mod attempt;
pub mod schedule;
pub mod sender;
pub mod signing;
