//! Job states and status codes, and the one function that changes them (spec:
//! rap-controller-and-agent §3.2–§3.4).
//!
//! `State` drives scheduling; `StatusCode` is what users see. Every status change goes through
//! [`set_code`], a pure function: callers persist its answer.
//!
//! ```text
//! CREATED ─┬─> WAITING_ON_DEPENDENCIES ─┬─> (deps ok) ─> [resources?] ─> INITIATED
//!          │                            └─> DEPENDENCY_FAILED (final)
//!          ├─> WAITING_PAUSED / WAITING_ON_WORKERS / WAITING_ON_DB_WORKERS ─> INITIATED
//!          ├─> WAITING_DB_MAINTENANCE / WAITING_ON_REBOOT ─> (cleared) ─> INITIATED
//!          └─> INITIATED
//! INITIATED ─> PREPARING ─> PREPARED ─> EXECUTING ─> EXECUTED ─> FINALIZING ─> (task complete)
//!    ─> SUCCEEDED | NONZERO_EXIT | UNMATCHED_PATTERNS
//!    ─> WAITING_ON_NEW_TASK (retryable agent error) ─> INITIATED (new task -00N+1)
//!    ─> JOB_ERROR (fatal agent error, or too many retries)
//! any active ─> CANCELLED_BY_USER ; running DB job ─> WAITING_DB_MAINTENANCE ;
//! running ─> WAITING_ON_REBOOT
//! ```
//!
//! How a new code moves the coarse state (§3.3):
//!
//! | new code | state | timestamps |
//! |---|---|---|
//! | INITIATED, PREPARING, PREPARED, EXECUTING | RUNNING | `started_at` set if unset |
//! | CANCELLED_BY_USER | FAILED | `completed_at` kept (set when the cancel was requested) |
//! | SUCCEEDED | SUCCEEDED | `completed_at` = transition time |
//! | other final codes | FAILED | `completed_at` = transition time |
//! | WAITING_DB_MAINTENANCE, WAITING_ON_REBOOT, WAITING_ON_NEW_TASK (resets) | PENDING | `started_at` cleared |
//! | anything else | unchanged | |
//!
//! A repeated code changes nothing but `updated_at`, and only once a minute (a liveness signal).

use std::fmt;
use std::str::FromStr;

/// The coarse job state that drives scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Running,
    Failed,
    Succeeded,
}

impl State {
    /// The reference's wire and storage value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Failed => "failed",
            State::Succeeded => "succeeded",
        }
    }

    /// Pending and running jobs are active: the scheduler visits them.
    pub fn is_active(self) -> bool {
        matches!(self, State::Pending | State::Running)
    }
}

/// A value that is not one of the known states or codes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown value '{0}'")]
pub struct UnknownValue(pub String);

impl FromStr for State {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(State::Pending),
            "running" => Ok(State::Running),
            "failed" => Ok(State::Failed),
            "succeeded" => Ok(State::Succeeded),
            other => Err(UnknownValue(other.to_string())),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fine-grained status reported to users, in the reference's declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusCode {
    Created,
    Initiated,
    WaitingPaused,
    WaitingDbMaintenance,
    WaitingOnDependencies,
    WaitingOnWorkers,
    WaitingOnDbWorkers,
    WaitingOnReboot,
    WaitingOnNewTask,
    Preparing,
    Prepared,
    Executing,
    Executed,
    Finalizing,
    Finalized,
    Succeeded,
    DependencyFailed,
    NonzeroExit,
    CancelledByUser,
    UnmatchedPatterns,
    InternalError,
    KilledByAdmin,
    StaleCodelists,
    JobError,
}

/// Every status code, in declaration order (for round-trip tests and tables).
pub const ALL_STATUS_CODES: [StatusCode; 24] = [
    StatusCode::Created,
    StatusCode::Initiated,
    StatusCode::WaitingPaused,
    StatusCode::WaitingDbMaintenance,
    StatusCode::WaitingOnDependencies,
    StatusCode::WaitingOnWorkers,
    StatusCode::WaitingOnDbWorkers,
    StatusCode::WaitingOnReboot,
    StatusCode::WaitingOnNewTask,
    StatusCode::Preparing,
    StatusCode::Prepared,
    StatusCode::Executing,
    StatusCode::Executed,
    StatusCode::Finalizing,
    StatusCode::Finalized,
    StatusCode::Succeeded,
    StatusCode::DependencyFailed,
    StatusCode::NonzeroExit,
    StatusCode::CancelledByUser,
    StatusCode::UnmatchedPatterns,
    StatusCode::InternalError,
    StatusCode::KilledByAdmin,
    StatusCode::StaleCodelists,
    StatusCode::JobError,
];

/// The reference's status messages (§3.2), kept verbatim because users and tests read them.
pub mod messages {
    pub const CREATED: &str = "Created";
    pub const INITIATED: &str = "Job executing on the backend";
    pub const WAITING_PAUSED: &str =
        "Backend is currently paused for maintenance, job will start once this is completed";
    pub const WAITING_DB_MAINTENANCE: &str = "Waiting for database to finish maintenance";
    pub const WAITING_ON_DEPENDENCIES: &str = "Waiting on dependencies";
    pub const WAITING_ON_WORKERS: &str = "Waiting on available workers";
    pub const WAITING_ON_WORKERS_HEAVY: &str =
        "Waiting on available workers for resource intensive job";
    pub const WAITING_ON_DB_WORKERS: &str = "Waiting on available database workers";
    pub const WAITING_ON_REBOOT: &str = "Job restarted - waiting for server to reboot";
    /// The reference's text has "retriedwith"; we fix the missing space (see README).
    pub const WAITING_ON_NEW_TASK: &str =
        "This job returned an error that could be retried with a new task.";
    pub const SUCCEEDED: &str = "Completed successfully";
    pub const SUCCEEDED_EXCLUDED_SUFFIX: &str =
        ", but some file(s) marked as moderately_sensitive were excluded. See job log for details.";
    pub const DEPENDENCY_FAILED: &str = "Not starting as dependency failed";
    pub const NONZERO_EXIT: &str = "Job exited with an error";
    pub const CANCELLED_BY_USER: &str = "Cancelled by user";
    pub const UNMATCHED_PATTERNS: &str =
        "Outputs matching expected patterns were not found. See job log for details.";
    pub const INTERNAL_ERROR: &str = "Internal error: this usually means a platform issue rather than a problem for users to fix.\nThe tech team are automatically notified of these errors and will be investigating.";
    pub const KILLED_BY_ADMIN: &str = "Job killed by OpenSAFELY admin";
    pub const JOB_ERROR: &str = "This job returned a fatal error.";
}

impl StatusCode {
    /// The reference's wire and storage value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Created => "created",
            StatusCode::Initiated => "initiated",
            StatusCode::WaitingPaused => "paused",
            StatusCode::WaitingDbMaintenance => "waiting_db_maintenance",
            StatusCode::WaitingOnDependencies => "waiting_on_dependencies",
            StatusCode::WaitingOnWorkers => "waiting_on_workers",
            StatusCode::WaitingOnDbWorkers => "waiting_on_db_workers",
            StatusCode::WaitingOnReboot => "waiting_on_reboot",
            StatusCode::WaitingOnNewTask => "waiting_on_new_task",
            StatusCode::Preparing => "preparing",
            StatusCode::Prepared => "prepared",
            StatusCode::Executing => "executing",
            StatusCode::Executed => "executed",
            StatusCode::Finalizing => "finalizing",
            StatusCode::Finalized => "finalized",
            StatusCode::Succeeded => "succeeded",
            StatusCode::DependencyFailed => "dependency_failed",
            StatusCode::NonzeroExit => "nonzero_exit",
            StatusCode::CancelledByUser => "cancelled_by_user",
            StatusCode::UnmatchedPatterns => "unmatched_patterns",
            StatusCode::InternalError => "internal_error",
            StatusCode::KilledByAdmin => "killed_by_admin",
            StatusCode::StaleCodelists => "stale_codelists",
            StatusCode::JobError => "job_error",
        }
    }

    /// The span name of a state: the reference names spans after the upper-case code.
    pub fn span_name(self) -> String {
        format!("{self:?}")
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                let sep = (i > 0 && c.is_uppercase()).then_some('_');
                sep.into_iter().chain(c.to_uppercase())
            })
            .collect()
    }

    /// Final codes end the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StatusCode::Succeeded
                | StatusCode::DependencyFailed
                | StatusCode::NonzeroExit
                | StatusCode::CancelledByUser
                | StatusCode::UnmatchedPatterns
                | StatusCode::InternalError
                | StatusCode::KilledByAdmin
                | StatusCode::StaleCodelists
                | StatusCode::JobError
        )
    }

    /// Reset codes send a job back to pending so that it gets a new task.
    pub fn is_reset(self) -> bool {
        matches!(
            self,
            StatusCode::WaitingDbMaintenance
                | StatusCode::WaitingOnReboot
                | StatusCode::WaitingOnNewTask
        )
    }

    /// The code the agent's stage maps to; `unknown`, `error` and unspecified keep the current code.
    pub fn from_stage(stage: ExecutorStage) -> Option<StatusCode> {
        match stage {
            ExecutorStage::Preparing => Some(StatusCode::Preparing),
            ExecutorStage::Prepared => Some(StatusCode::Prepared),
            ExecutorStage::Executing => Some(StatusCode::Executing),
            ExecutorStage::Executed => Some(StatusCode::Executed),
            ExecutorStage::Finalizing => Some(StatusCode::Finalizing),
            ExecutorStage::Finalized => Some(StatusCode::Finalized),
            ExecutorStage::Unknown | ExecutorStage::Error | ExecutorStage::Unspecified => None,
        }
    }
}

impl FromStr for StatusCode {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUS_CODES
            .iter()
            .copied()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_string()))
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The agent-side stage of a task (the reference's `ExecutorState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutorStage {
    Unspecified,
    Preparing,
    Prepared,
    Executing,
    Executed,
    Finalizing,
    Finalized,
    Unknown,
    Error,
}

impl ExecutorStage {
    /// The reference's wire and storage value ("" when unspecified).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorStage::Unspecified => "",
            ExecutorStage::Preparing => "preparing",
            ExecutorStage::Prepared => "prepared",
            ExecutorStage::Executing => "executing",
            ExecutorStage::Executed => "executed",
            ExecutorStage::Finalizing => "finalizing",
            ExecutorStage::Finalized => "finalized",
            ExecutorStage::Unknown => "unknown",
            ExecutorStage::Error => "error",
        }
    }
}

impl FromStr for ExecutorStage {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            ExecutorStage::Unspecified,
            ExecutorStage::Preparing,
            ExecutorStage::Prepared,
            ExecutorStage::Executing,
            ExecutorStage::Executed,
            ExecutorStage::Finalizing,
            ExecutorStage::Finalized,
            ExecutorStage::Unknown,
            ExecutorStage::Error,
        ];
        all.into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_string()))
    }
}

/// The status part of a job: everything [`set_code`] reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatus {
    pub state: State,
    pub status_code: StatusCode,
    pub status_message: String,
    /// UNIX seconds.
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// UNIX nanoseconds of the last change of code.
    pub status_code_updated_at_ns: i64,
}

/// What [`set_code`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeChange {
    /// The code changed: persist the new status. `left` is the code being left and
    /// `left_since_ns`..`at_ns` the time spent in it (the span of that state).
    Changed {
        status: JobStatus,
        left: StatusCode,
        left_since_ns: i64,
        at_ns: i64,
    },
    /// Same code, but a minute passed: persist the refreshed `updated_at` only.
    Refreshed(JobStatus),
    /// Nothing to write.
    Unchanged,
}

const NS_PER_S: i64 = 1_000_000_000;
const NS_PER_MS: i64 = 1_000_000;

/// Decide the new status of a job given a new code (spec §3.3).
///
/// `task_timestamp_ns` is the agent's time of the transition when the change comes from an agent
/// update; otherwise `now_ns` is used. A transition time earlier than the stored one is clamped to
/// stored + 1 ms, so state spans never run backwards.
pub fn set_code(
    current: &JobStatus,
    code: StatusCode,
    message: &str,
    task_timestamp_ns: Option<i64>,
    now_ns: i64,
) -> CodeChange {
    if code == current.status_code {
        let now_s = now_ns.div_euclid(NS_PER_S);
        if now_s - current.updated_at >= 60 {
            let mut status = current.clone();
            status.updated_at = now_s;
            return CodeChange::Refreshed(status);
        }
        return CodeChange::Unchanged;
    }

    let mut at_ns = task_timestamp_ns.filter(|t| *t > 0).unwrap_or(now_ns);
    if at_ns < current.status_code_updated_at_ns {
        tracing::warn!(
            code = code.as_str(),
            "status timestamp earlier than the previous one; clamping"
        );
        at_ns = current.status_code_updated_at_ns + NS_PER_MS;
    }
    let at_s = at_ns.div_euclid(NS_PER_S);

    let mut status = current.clone();
    match code {
        StatusCode::Initiated
        | StatusCode::Preparing
        | StatusCode::Prepared
        | StatusCode::Executing => {
            status.state = State::Running;
            if status.started_at.is_none() {
                status.started_at = Some(at_s);
            }
        }
        StatusCode::CancelledByUser => {
            status.state = State::Failed;
            if status.completed_at.is_none() {
                status.completed_at = Some(at_s);
            }
        }
        code if code.is_final() => {
            status.completed_at = Some(at_s);
            status.state = if code == StatusCode::Succeeded {
                State::Succeeded
            } else {
                State::Failed
            };
        }
        code if code.is_reset() => {
            status.state = State::Pending;
            status.started_at = None;
        }
        _ => {}
    }
    status.status_code = code;
    status.status_message = message.to_string();
    status.updated_at = at_s;
    status.status_code_updated_at_ns = at_ns;
    CodeChange::Changed {
        status,
        left: current.status_code,
        left_since_ns: current.status_code_updated_at_ns,
        at_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(at_s: i64) -> JobStatus {
        JobStatus {
            state: State::Pending,
            status_code: StatusCode::Created,
            status_message: messages::CREATED.to_string(),
            updated_at: at_s,
            started_at: None,
            completed_at: None,
            status_code_updated_at_ns: at_s * NS_PER_S,
        }
    }

    fn changed(change: CodeChange) -> JobStatus {
        match change {
            CodeChange::Changed { status, .. } => status,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn status_codes_round_trip_and_keep_declaration_order() {
        for (i, code) in ALL_STATUS_CODES.iter().enumerate() {
            assert_eq!(code.as_str().parse::<StatusCode>(), Ok(*code));
            if i > 0 {
                assert!(ALL_STATUS_CODES[i - 1] < *code);
            }
        }
        assert_eq!(StatusCode::WaitingPaused.as_str(), "paused");
        assert!("nope".parse::<StatusCode>().is_err());
        for state in [
            State::Pending,
            State::Running,
            State::Failed,
            State::Succeeded,
        ] {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert_eq!(
            StatusCode::WaitingOnDependencies.span_name(),
            "WAITING_ON_DEPENDENCIES"
        );
        assert_eq!(StatusCode::Succeeded.span_name(), "SUCCEEDED");
    }

    #[test]
    fn every_code_moves_the_state_as_the_table_says() {
        for code in ALL_STATUS_CODES {
            if code == StatusCode::Created {
                continue;
            }
            let mut start = created(100);
            start.state = State::Running;
            start.started_at = Some(50);
            let status = changed(set_code(&start, code, "m", None, 200 * NS_PER_S));
            let expected_state = match code {
                StatusCode::Initiated
                | StatusCode::Preparing
                | StatusCode::Prepared
                | StatusCode::Executing => State::Running,
                StatusCode::Succeeded => State::Succeeded,
                c if c.is_final() => State::Failed,
                c if c.is_reset() => State::Pending,
                _ => State::Running,
            };
            assert_eq!(status.state, expected_state, "{code}");
            assert_eq!(status.status_code, code);
            assert_eq!(status.status_message, "m");
            assert_eq!(status.updated_at, 200);
            if code.is_reset() {
                assert_eq!(status.started_at, None, "{code}");
            } else {
                assert_eq!(status.started_at, Some(50), "{code} keeps started_at");
            }
            if code.is_final() {
                assert_eq!(status.completed_at, Some(200), "{code}");
            } else {
                assert_eq!(status.completed_at, None, "{code}");
            }
        }
    }

    #[test]
    fn started_at_is_set_once_from_the_agent_time() {
        let start = created(100);
        let initiated = changed(set_code(
            &start,
            StatusCode::Initiated,
            "",
            None,
            110 * NS_PER_S,
        ));
        assert_eq!(initiated.started_at, Some(110));
        let preparing = changed(set_code(
            &initiated,
            StatusCode::Preparing,
            "",
            Some(120 * NS_PER_S),
            130 * NS_PER_S,
        ));
        assert_eq!(preparing.started_at, Some(110));
        assert_eq!(preparing.status_code_updated_at_ns, 120 * NS_PER_S);
    }

    #[test]
    fn transition_times_never_go_backwards() {
        let start = created(100);
        let change = set_code(&start, StatusCode::Preparing, "", Some(90 * NS_PER_S), 0);
        match change {
            CodeChange::Changed {
                status,
                left,
                left_since_ns,
                at_ns,
            } => {
                assert_eq!(at_ns, 100 * NS_PER_S + NS_PER_MS);
                assert_eq!(status.status_code_updated_at_ns, at_ns);
                assert_eq!(left, StatusCode::Created);
                assert_eq!(left_since_ns, 100 * NS_PER_S);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cancel_keeps_the_requested_completion_time() {
        let mut start = created(100);
        start.completed_at = Some(105);
        let status = changed(set_code(
            &start,
            StatusCode::CancelledByUser,
            "",
            None,
            300 * NS_PER_S,
        ));
        assert_eq!(status.state, State::Failed);
        assert_eq!(status.completed_at, Some(105));
    }

    #[test]
    fn same_code_only_refreshes_once_a_minute() {
        let start = created(100);
        assert_eq!(
            set_code(&start, StatusCode::Created, "x", None, 159 * NS_PER_S),
            CodeChange::Unchanged
        );
        match set_code(&start, StatusCode::Created, "x", None, 160 * NS_PER_S) {
            CodeChange::Refreshed(status) => {
                assert_eq!(status.updated_at, 160);
                assert_eq!(status.status_message, messages::CREATED);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stages_map_to_codes() {
        assert_eq!(
            StatusCode::from_stage(ExecutorStage::Executing),
            Some(StatusCode::Executing)
        );
        assert_eq!(StatusCode::from_stage(ExecutorStage::Unknown), None);
        assert_eq!(StatusCode::from_stage(ExecutorStage::Error), None);
        assert_eq!("".parse::<ExecutorStage>(), Ok(ExecutorStage::Unspecified));
    }
}
