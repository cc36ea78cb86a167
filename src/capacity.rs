//! How many clients the process can hold. Its open-file limit is raised at
//! start to the most the system allows (a common default of 1,024 is a
//! few hundred connections), and clients waiting for an outcome
//! (`?wait=`) are capped below it, so they can never take the descriptors
//! a delivery needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The process's open-file limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one.
pub fn raise_open_files() -> std::io::Result<OpenFiles> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let now = rlimit::increase_nofile_limit(hard)?;
    Ok(OpenFiles { before, now, hard })
}

/// Descriptors kept for all but waiting clients: the listeners, database
/// connections and files, and the connections deliveries come on.
const RESERVED: u64 = 256;

/// The default cap on waiting clients: a quarter of what is left after the
/// reserve (each connection holds two descriptors, its socket and the copy
/// that lingers its close), so at least as many connections stay free for
/// everything else as waiters can take.
pub fn default_max_waiters(open_files: u64) -> usize {
    let waiters = open_files.saturating_sub(RESERVED) / 4;
    usize::try_from(waiters).unwrap_or(usize::MAX).max(1)
}

/// The places for clients waiting for an outcome.
#[derive(Debug)]
pub struct WaiterSlots {
    max: usize,
    taken: AtomicUsize,
}

/// A waiting client's place, given back when dropped.
#[derive(Debug)]
pub struct WaiterSlot(Arc<WaiterSlots>);

impl WaiterSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            taken: AtomicUsize::new(0),
        })
    }

    /// A place, unless all are taken.
    pub fn take(self: &Arc<Self>) -> Option<WaiterSlot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.max).then_some(taken + 1)
            })
            .ok()
            .map(|_| WaiterSlot(self.clone()))
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_waiters_than_places_and_a_place_comes_back() {
        let slots = WaiterSlots::new(2);
        let (a, b) = (slots.take().unwrap(), slots.take().unwrap());
        assert!(slots.take().is_none());
        drop(a);
        let c = slots.take().expect("a place came back");
        drop((b, c));
        assert_eq!(slots.taken.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_default_leaves_room_for_everything_else() {
        assert_eq!(default_max_waiters(1_024), 192);
        assert_eq!(default_max_waiters(100), 1);
        assert_eq!(default_max_waiters(1_048_576), 262_080);
    }

    #[test]
    fn the_limit_is_raised_to_the_hard_one() {
        let files = raise_open_files().unwrap();
        assert_eq!(files.now, files.hard);
        assert!(files.before <= files.now);
    }
}
