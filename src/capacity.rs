//! How many clients the process can hold. Its open-file limit is raised at
//! start to the most the system allows (a common default of 1,024 is a
//! few hundred connections); connections are capped below it, so the
//! process never runs out of descriptors, and clients waiting for an
//! outcome (`?wait=`) are capped at half the connections, so they can
//! never take the places deliveries need.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// Descriptors kept for all but client connections: the listeners,
/// database connections and files.
const RESERVED: u64 = 256;

/// The default cap on client connections: what is left after the
/// reserve, two descriptors each (its socket and the copy that lingers its
/// close).
pub fn default_max_connections(open_files: u64) -> usize {
    let connections = open_files.saturating_sub(RESERVED) / 2;
    usize::try_from(connections).unwrap_or(usize::MAX).max(2)
}

/// The default cap on waiting clients: half the connections, so at least
/// as many stay free for deliveries and everything else as waiters can
/// take.
pub fn default_max_waiters(max_connections: usize) -> usize {
    (max_connections / 2).max(1)
}

/// A fixed number of places (connections, or clients waiting for an
/// outcome), each given back when its holder drops it.
#[derive(Debug)]
pub struct Places {
    max: usize,
    free: Arc<Semaphore>,
}

/// One taken place.
pub type Place = OwnedSemaphorePermit;

impl Places {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            free: Arc::new(Semaphore::new(max)),
        }
    }

    /// A place, unless all are taken.
    pub fn try_take(&self) -> Option<Place> {
        self.free.clone().try_acquire_owned().ok()
    }

    /// A place, once one is free.
    pub async fn take(&self) -> Place {
        self.free
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn taken(&self) -> usize {
        self.max - self.free.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_holders_than_places_and_a_place_comes_back() {
        let places = Places::new(2);
        let (a, b) = (places.try_take().unwrap(), places.try_take().unwrap());
        assert!(places.try_take().is_none());
        assert_eq!(places.taken(), 2);
        drop(a);
        let c = places.try_take().expect("a place came back");
        drop((b, c));
        assert_eq!(places.taken(), 0);
    }

    #[test]
    fn the_defaults_leave_room_for_everything_else() {
        assert_eq!(default_max_connections(1_024), 384);
        assert_eq!(default_max_waiters(384), 192);
        assert_eq!(default_max_connections(100), 2);
        assert_eq!(default_max_waiters(2), 1);
        assert_eq!(default_max_connections(1_048_576), 524_160);
    }

    #[test]
    fn the_limit_is_raised_to_the_hard_one() {
        let files = raise_open_files().unwrap();
        assert_eq!(files.now, files.hard);
        assert!(files.before <= files.now);
    }
}
