//! The service's vocabulary, free of I/O: events as Cobalt sends them, the
//! job states they decide, and the kinds of change to a job's state.

pub mod change;
pub mod event;
pub mod job;

pub use change::ChangeKind;
pub use event::{BodyError, Envelope, FieldError, Meaning};
pub use job::{JobOutcome, JobStatus, Rank};
