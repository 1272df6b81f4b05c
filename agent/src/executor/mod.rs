//! The executor: the steps that run one job (spec §4.2–§4.6) behind a trait, so the task
//! runners neither know nor care that Docker runs the job. `docker` is the one implementation
//! and the only module that sees bollard; a cluster engine would be another.
//!
//! Every method is idempotent and guards on the state derived from the world
//! ([`Executor::get_status`]), so a runner can repeat any step after a crash or restart.

pub mod docker;

use std::future::Future;

use crate::job::{DefinitionError, JobDefinition};
use crate::metadata::{JobMetadata, MetadataError, RecordedError};
use crate::outputs::OutputsError;
use crate::task::state::ExecutorState;
use crate::workspace::WorkspaceError;

/// A job's state, when it was reached, and (in the final states) its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    /// The state.
    pub state: ExecutorState,
    /// When the state was reached, UNIX ns (the agent's observation).
    pub timestamp_ns: i64,
    /// The finished job's record, in FINALIZED and ERROR.
    pub metadata: Option<JobMetadata>,
}

/// Why a step failed. [`ExecutorError::is_fatal`] says whether a new task could succeed;
/// [`ExecutorError::public_message`] is the text that may leave the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The definition breaks a rule (a name or pattern that escapes the agent's directories).
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The image is not under the configured registry or not on the allow-list.
    #[error("Docker image {image} is not allowed on this backend")]
    ImageNotAllowed {
        /// The image as requested.
        image: String,
    },
    /// The image is not present on this Docker host (the agent never pulls).
    #[error("Docker image {image} is not available on this backend")]
    ImageNotPresent {
        /// The image as requested.
        image: String,
    },
    /// The local image is not the digest the controller resolved.
    #[error("Docker image {image} does not match the expected digest {expected}")]
    ImageDigestMismatch {
        /// The image as requested.
        image: String,
        /// The digest asked for.
        expected: String,
    },
    /// The workspace was archived (spec §4.3 step 1).
    #[error("Workspace {workspace} has been archived. Contact the OpenSAFELY tech team to resolve")]
    WorkspaceArchived {
        /// The workspace.
        workspace: String,
    },
    /// The code could not be checked out, or the repository failed the security re-check.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// An input file is missing. The file is named only in the agent's log.
    #[error(
        "An input file from job {input_job_id} doesn't exist in workspace {workspace} as \
         requested for job {job_id}"
    )]
    MissingInput {
        /// The job whose output is missing.
        input_job_id: String,
        /// The workspace.
        workspace: String,
        /// This job.
        job_id: String,
    },
    /// A database job names a database this agent has no URL for.
    #[error("Database name '{name}' is not currently defined for backend '{backend}'")]
    DatabaseNotConfigured {
        /// The database name.
        name: String,
        /// This backend.
        backend: String,
    },
    /// The Docker engine failed or could not be reached.
    #[error("Docker {operation}: {message}")]
    Docker {
        /// What the agent was doing.
        operation: &'static str,
        /// What Docker said.
        message: String,
    },
    /// Filing outputs failed.
    #[error(transparent)]
    Outputs(#[from] OutputsError),
    /// Metadata could not be read or written.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A database check (DBSTATUS, DBDATACHECK) failed or printed something other than an
    /// accepted status (the value is not echoed: it may hold anything).
    #[error("Invalid status from the {check}")]
    InvalidDbCheckStatus {
        /// Which check: "database status check" or "database data check".
        check: &'static str,
    },
    /// A blocking file-system task could not finish.
    #[error("a blocking task failed: {0}")]
    Blocking(String),
    /// The configured database network cannot be used.
    #[error(transparent)]
    DatabaseNetwork(#[from] docker::DatabaseNetworkError),
}

impl ExecutorError {
    /// Whether the failure is permanent for this job definition (a new task would fail the same
    /// way). Transient failures (the engine, the disk) are retryable.
    pub fn is_fatal(&self) -> bool {
        match self {
            ExecutorError::Definition(_)
            | ExecutorError::ImageNotAllowed { .. }
            | ExecutorError::ImageNotPresent { .. }
            | ExecutorError::ImageDigestMismatch { .. }
            | ExecutorError::WorkspaceArchived { .. }
            | ExecutorError::MissingInput { .. }
            | ExecutorError::DatabaseNotConfigured { .. }
            | ExecutorError::DatabaseNetwork(_) => true,
            ExecutorError::Workspace(error) => !error.is_transient(),
            ExecutorError::Docker { .. }
            | ExecutorError::Outputs(_)
            | ExecutorError::Metadata(_)
            | ExecutorError::InvalidDbCheckStatus { .. }
            | ExecutorError::Blocking(_) => false,
        }
    }

    /// The message for the researcher and the controller. It names no output file: errors whose
    /// text could hold an agent-side path get a generic message (the detail is in the log).
    pub fn public_message(&self) -> String {
        match self {
            ExecutorError::Workspace(WorkspaceError::Io { .. }) => {
                "The agent could not prepare the job's files".to_string()
            }
            ExecutorError::Workspace(WorkspaceError::Checkout { commit, url, .. }) => {
                format!("Could not checkout commit {commit} from {url}")
            }
            ExecutorError::Docker { operation, .. } => {
                format!("The Docker engine failed while the agent was {operation}")
            }
            ExecutorError::Outputs(_) | ExecutorError::Metadata(_) | ExecutorError::Blocking(_) => {
                "The agent could not read or write the job's files".to_string()
            }
            other => other.to_string(),
        }
    }

    /// The error as recorded in metadata.
    pub fn to_recorded(&self) -> RecordedError {
        RecordedError {
            fatal: self.is_fatal(),
            message: self.public_message(),
        }
    }
}

/// The steps of a job. Implementations must make every method idempotent (spec §4.8).
pub trait Executor: Send + Sync + 'static {
    /// Derives the job's state from the world (spec §4.2); no side effects. `cancelled` counts
    /// any job directory as prepared.
    fn get_status(
        &self,
        job: &JobDefinition,
        cancelled: bool,
    ) -> impl Future<Output = Result<JobStatus, ExecutorError>> + Send;

    /// Prepares the job directory (spec §4.3); a no-op unless the state is UNKNOWN.
    fn prepare(
        &self,
        job: &JobDefinition,
    ) -> impl Future<Output = Result<JobStatus, ExecutorError>> + Send;

    /// Starts the job (spec §4.4); a no-op unless the state is PREPARED.
    fn execute(
        &self,
        job: &JobDefinition,
    ) -> impl Future<Output = Result<JobStatus, ExecutorError>> + Send;

    /// Waits until the job's container has stopped, collecting its resource use meanwhile.
    fn wait_for_exit(
        &self,
        job: &JobDefinition,
    ) -> impl Future<Output = Result<JobStatus, ExecutorError>> + Send;

    /// Kills a running job (spec §4.6); a no-op in other states.
    fn terminate(
        &self,
        job: &JobDefinition,
    ) -> impl Future<Output = Result<JobStatus, ExecutorError>> + Send;

    /// Collects outputs, files them and writes the metadata (spec §4.5). With `cancelled` or an
    /// `error`, nothing is filed and only the log directory is written.
    fn finalize(
        &self,
        job: &JobDefinition,
        cancelled: bool,
        error: Option<RecordedError>,
    ) -> impl Future<Output = Result<JobStatus, ExecutorError>> + Send;

    /// Removes the container and the job directory, keeping the metadata (spec §4.6).
    fn cleanup(
        &self,
        job: &JobDefinition,
    ) -> impl Future<Output = Result<(), ExecutorError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_repository_is_retryable_and_a_missing_commit_fatal() {
        let unreachable = ExecutorError::from(WorkspaceError::Unreachable {
            url: "https://github.com/opensafely/study".into(),
            detail: "Could not resolve host: github.com".into(),
        });
        assert!(!unreachable.is_fatal());
        assert_eq!(
            unreachable.public_message(),
            "Could not reach repository https://github.com/opensafely/study"
        );
        let missing = ExecutorError::from(WorkspaceError::Checkout {
            commit: "abc".into(),
            url: "https://github.com/opensafely/study".into(),
            detail: "not our ref".into(),
        });
        assert!(missing.is_fatal());
    }
}
