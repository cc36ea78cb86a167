//! The spans of a delivery's write, as children of the delivery's span:
//! its wait in the writer's queue, then its batch's commit (until its
//! answer is sent). Made only when traces are on; otherwise each is a
//! disabled span, which costs a check and nothing else.

use tracing::Span;

pub struct WriteTrace {
    /// The queue wait, then the batch commit.
    current: Span,
    /// The delivery's own span (none when traces are off).
    delivery: Span,
}

impl WriteTrace {
    /// A write handed to the writer: its queue wait begins.
    pub fn queued() -> Self {
        let current = tracing::debug_span!("queue wait");
        let delivery = match current.is_disabled() {
            true => Span::none(),
            false => Span::current(),
        };
        Self { current, delivery }
    }

    /// The writer took the write into a batch: the wait ends and the
    /// commit begins, ending when the write is answered (dropped).
    pub fn taken(&mut self) {
        if !self.delivery.is_disabled() {
            self.current = tracing::debug_span!(parent: &self.delivery, "batch commit");
        }
    }
}
