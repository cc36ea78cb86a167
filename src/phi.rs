//! Patient data in answers. An MRN is shown whole only to a caller with
//! the `phi` permission, and only once that reading is on the audit trail
//! (committed: an answer whose reading cannot be recorded is not given).
//! Everyone else sees its last four characters.

use crate::audit::{self, Action, Audit};
use crate::auth::{Caller, Permission};
use crate::store::{JobState, StoreError};

/// The audit action of an answer that carried whole MRNs.
pub const READ_ACTION: &str = "api.phi.read";

/// An MRN as a caller without `phi` sees it: `***` and its last four
/// characters (none of a value that short).
pub fn masked(mrn: &str) -> String {
    let count = mrn.chars().count();
    let tail: String = if count > 4 {
        mrn.chars().skip(count - 4).collect()
    } else {
        String::new()
    };
    format!("***{tail}")
}

/// Masks the MRNs of `jobs` unless `caller` may see them; if it may and
/// any is there, records the reading (the jobs' ids) first.
pub async fn disclose(
    audit: &Audit,
    caller: &Caller,
    request_id: Option<&str>,
    jobs: &mut [JobState],
) -> Result<(), StoreError> {
    if !caller.may(Permission::Phi) {
        for job in jobs.iter_mut() {
            if let Some(mrn) = &mut job.patient_mrn {
                *mrn = masked(mrn);
            }
        }
        return Ok(());
    }
    let shown: Vec<&str> = jobs
        .iter()
        .filter(|job| job.patient_mrn.is_some())
        .map(|job| job.job_id.as_str())
        .collect();
    if shown.is_empty() {
        return Ok(());
    }
    audit
        .record_committed(Action {
            actor: &caller.name,
            action: READ_ACTION,
            target: audit::bounded(&format!("jobs {}", shown.join(","))),
            request_id,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn a_masked_mrn_shows_only_its_last_four_characters() {
        assert_eq!(masked("MRN-36853671"), "***3671");
        assert_eq!(masked("ÅÄÖabcd"), "***abcd");
        assert_eq!(masked("1234"), "***");
        assert_eq!(masked(""), "***");
    }
}
