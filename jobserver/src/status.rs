//! Job-request status: the create-result mapping (spec A5) and the aggregation of job states
//! into one request status (spec A6).
//!
//! Both are pure functions; callers persist what they return. Stored values are the reference's
//! lower snake case strings (`as_str`/`FromStr`, round-trip tested).

use std::fmt;
use std::str::FromStr;

/// The overall status of a job request (the reference's `JobRequestStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Pending,
    Running,
    Failed,
    Succeeded,
    NothingToDo,
    Unknown,
    UnknownErrorCreatingJobs,
}

/// The coarse state of one job, as the controller reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Running,
    Failed,
    Succeeded,
}

/// The message the reference stores when any job failed.
pub const FAILED_DUE_TO_JOB_FAILURE: &str = "Failed due to job failure";
/// The message for a request whose create call never landed, and for unexpected create errors.
pub const UNKNOWN_ERROR_CREATING_JOBS: &str = "Unknown error creating jobs";

const ALL_REQUEST_STATUSES: [RequestStatus; 7] = [
    RequestStatus::Pending,
    RequestStatus::Running,
    RequestStatus::Failed,
    RequestStatus::Succeeded,
    RequestStatus::NothingToDo,
    RequestStatus::Unknown,
    RequestStatus::UnknownErrorCreatingJobs,
];

impl RequestStatus {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Running => "running",
            RequestStatus::Failed => "failed",
            RequestStatus::Succeeded => "succeeded",
            RequestStatus::NothingToDo => "nothing_to_do",
            RequestStatus::Unknown => "unknown",
            RequestStatus::UnknownErrorCreatingJobs => "unknown_error_creating_jobs",
        }
    }

    /// Active statuses still change; the rest are complete (A6).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RequestStatus::Pending
                | RequestStatus::Running
                | RequestStatus::Unknown
                | RequestStatus::UnknownErrorCreatingJobs
        )
    }

    /// Terminal statuses are never recomputed from jobs.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestStatus::Failed | RequestStatus::Succeeded | RequestStatus::NothingToDo
        )
    }

    /// Display text: `_` to space, first letter capitalised ("Nothing to do").
    pub fn display(self) -> String {
        display_text(self.as_str())
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status string that is not one we know.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for RequestStatus {
    type Err = UnknownStatus;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ALL_REQUEST_STATUSES
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| UnknownStatus(value.to_owned()))
    }
}

impl JobStatus {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Failed => "failed",
            JobStatus::Succeeded => "succeeded",
        }
    }

    /// Pending and running jobs may still be cancelled.
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Running)
    }

    /// Display text ("Succeeded").
    pub fn display(self) -> String {
        display_text(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "pending" => Ok(JobStatus::Pending),
            "running" => Ok(JobStatus::Running),
            "failed" => Ok(JobStatus::Failed),
            "succeeded" => Ok(JobStatus::Succeeded),
            _ => Err(UnknownStatus(value.to_owned())),
        }
    }
}

/// `nothing_to_do` → "Nothing to do".
pub fn display_text(value: &str) -> String {
    let spaced = value.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What came back from a SubmitJob call, reduced to what A5's table distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The controller accepted the request (`Success` or `No change`, or `Nothing to do`).
    Accepted { count: u32, details: String },
    /// The controller answered with an error and its details (the reference's 4xx with JSON).
    Rejected { details: String },
    /// No answer we can trust: transport failure, timeout, unavailable.
    Unreachable,
    /// Anything else unexpected.
    Unexpected,
}

/// A5's create-result mapping: the request's new status and status message.
pub fn status_after_create(outcome: &CreateOutcome) -> (RequestStatus, Option<String>) {
    match outcome {
        CreateOutcome::Accepted { count, .. } if *count > 0 => (RequestStatus::Pending, None),
        CreateOutcome::Accepted { details, .. } => {
            (RequestStatus::NothingToDo, Some(details.clone()))
        }
        CreateOutcome::Rejected { details } => (RequestStatus::Failed, Some(details.clone())),
        CreateOutcome::Unreachable => (RequestStatus::UnknownErrorCreatingJobs, None),
        CreateOutcome::Unexpected => (
            RequestStatus::Failed,
            Some(UNKNOWN_ERROR_CREATING_JOBS.to_owned()),
        ),
    }
}

/// A6's `jobs_status`: the request's status computed from its jobs' statuses, with the message
/// to store alongside. `jobs` holds each job's stored status string (unrecognised strings count
/// as `unknown`, the empty string as `pending`, as in the reference).
pub fn aggregate(
    stored: RequestStatus,
    stored_message: Option<&str>,
    jobs: &[&str],
) -> (RequestStatus, Option<String>) {
    let keep = || (stored, stored_message.map(str::to_owned));
    if stored.is_terminal() || jobs.is_empty() {
        return keep();
    }
    let first = jobs[0];
    if jobs.iter().all(|status| *status == first) {
        return match first {
            "" | "pending" => (RequestStatus::Pending, None),
            "running" => (RequestStatus::Running, None),
            "succeeded" => (RequestStatus::Succeeded, None),
            "failed" => (
                RequestStatus::Failed,
                Some(FAILED_DUE_TO_JOB_FAILURE.to_owned()),
            ),
            _ => (RequestStatus::Unknown, None),
        };
    }
    if jobs.contains(&"running") || jobs.contains(&"pending") {
        return (RequestStatus::Running, None);
    }
    if jobs.contains(&"failed") && jobs.iter().all(|s| *s == "failed" || *s == "succeeded") {
        return (
            RequestStatus::Failed,
            Some(FAILED_DUE_TO_JOB_FAILURE.to_owned()),
        );
    }
    (RequestStatus::Unknown, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip() {
        for status in ALL_REQUEST_STATUSES {
            assert_eq!(status.as_str().parse::<RequestStatus>().unwrap(), status);
        }
        assert_eq!(RequestStatus::NothingToDo.display(), "Nothing to do");
        assert_eq!(
            RequestStatus::UnknownErrorCreatingJobs.display(),
            "Unknown error creating jobs"
        );
    }

    #[test]
    fn create_mapping_matches_a5() {
        let cases = [
            (
                CreateOutcome::Accepted {
                    count: 2,
                    details: "x".into(),
                },
                RequestStatus::Pending,
                None,
            ),
            (
                CreateOutcome::Accepted {
                    count: 0,
                    details: "All actions have already completed successfully".into(),
                },
                RequestStatus::NothingToDo,
                Some("All actions have already completed successfully"),
            ),
            (
                CreateOutcome::Rejected {
                    details: "bad commit".into(),
                },
                RequestStatus::Failed,
                Some("bad commit"),
            ),
            (
                CreateOutcome::Unreachable,
                RequestStatus::UnknownErrorCreatingJobs,
                None,
            ),
            (
                CreateOutcome::Unexpected,
                RequestStatus::Failed,
                Some("Unknown error creating jobs"),
            ),
        ];
        for (outcome, status, message) in cases {
            let (got, got_message) = status_after_create(&outcome);
            assert_eq!(got, status, "{outcome:?}");
            assert_eq!(got_message.as_deref(), message, "{outcome:?}");
        }
    }

    #[test]
    fn aggregation_matches_a6() {
        use RequestStatus::*;
        let check = |stored, jobs: &[&str], want, want_message: Option<&str>| {
            let (got, message) = aggregate(stored, None, jobs);
            assert_eq!(got, want, "{stored:?} {jobs:?}");
            assert_eq!(message.as_deref(), want_message, "{stored:?} {jobs:?}");
        };
        check(Pending, &[], Pending, None);
        check(
            UnknownErrorCreatingJobs,
            &[],
            UnknownErrorCreatingJobs,
            None,
        );
        check(NothingToDo, &["running"], NothingToDo, None);
        check(Succeeded, &["failed"], Succeeded, None);
        check(Pending, &["succeeded", "succeeded"], Succeeded, None);
        check(
            Pending,
            &["failed", "failed"],
            Failed,
            Some(FAILED_DUE_TO_JOB_FAILURE),
        );
        check(Pending, &["", ""], Pending, None);
        check(Pending, &["weird"], Unknown, None);
        check(Pending, &["running", "succeeded"], Running, None);
        check(Pending, &["pending", "failed"], Running, None);
        check(Pending, &["pending", "succeeded"], Running, None);
        check(
            Running,
            &["failed", "succeeded"],
            Failed,
            Some(FAILED_DUE_TO_JOB_FAILURE),
        );
        check(Running, &["weird", "succeeded"], Unknown, None);
    }
}
