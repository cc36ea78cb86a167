//! Listing job states a page at a time: what the status API's
//! `GET /v1/patient-notes` and the console's Jobs page (and its export)
//! both read. Filters become a store query here, one more job than asked
//! is read to learn whether another page follows, and the cursor of the
//! next page is issued for the same filters.

use crate::domain::JobStatus;
use crate::pagination::{Cursors, Filters, StatusFilter};
use crate::store::{JobKey, JobQuery, JobState, ListStatus, Store, StoreError};

/// One page of a listing.
pub struct Page {
    pub jobs: Vec<JobState>,
    /// Continues the listing after `jobs`; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The cursor was not issued here for these filters.
    #[error("the cursor was not issued for this listing")]
    Cursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Up to `limit` jobs `filters` selects, after the position `cursor` holds
/// (from the start without one).
pub async fn page(
    store: &Store,
    cursors: &Cursors,
    filters: &Filters,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page, ListingError> {
    let after = match cursor {
        None => None,
        Some(cursor) => Some(cursors.open(filters, cursor).ok_or(ListingError::Cursor)?),
    };
    let mut jobs = store.list_jobs(&query(filters, after, limit + 1)).await?;
    let next_cursor = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|last| cursors.issue(filters, &last.key))
    } else {
        None
    };
    Ok(Page { jobs, next_cursor })
}

/// The store query of `limit` jobs `filters` selects, after `after`.
pub fn query(filters: &Filters, after: Option<JobKey>, limit: u32) -> JobQuery {
    JobQuery {
        status: filters.status.map(|status| match status {
            StatusFilter::Created => ListStatus::Decided(JobStatus::Created),
            StatusFilter::Failed => ListStatus::Decided(JobStatus::Failed),
            StatusFilter::Pending => ListStatus::Pending {
                overdue_only: filters.overdue,
            },
        }),
        since_ns: filters.since_ns,
        after,
        limit,
        narrow: filters.narrow.clone(),
    }
}
