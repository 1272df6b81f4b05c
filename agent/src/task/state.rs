//! The agent-side stage of a job (the reference's `ExecutorState`, spec §4.1–§4.2) and the pure
//! decision of what a task runner does next.
//!
//! ```text
//!   UNKNOWN ──prepare──▶ (PREPARING) ──▶ PREPARED ──execute──▶ EXECUTING ──container exits──▶ EXECUTED
//!                                                                                              │
//!   ERROR ◀── a fatal or final failure in any step          FINALIZED ◀── (FINALIZING) ◀─finalize┘
//! ```
//! FINALIZED and ERROR are terminal: metadata exists for the task. PREPARING and FINALIZING are
//! only ever reported, never observed: the state seen after a restart is derived from Docker and
//! the disk (`crate::recovery`), which knows the other six.
//!
//! A RUNJOB runner acts on the observed state ([`run_job_step`]); a CANCELJOB runner
//! ([`cancel_job_step`]) kills an EXECUTING container and finalizes whatever else is not final.

use rap_proto::pb::rap::v1 as pb;

/// Where a job is, as the agent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutorState {
    /// Nothing on disk or in Docker for this task.
    Unknown,
    /// Reported while the job directory is being prepared.
    Preparing,
    /// The job directory is ready (the timestamp file exists).
    Prepared,
    /// The container is running.
    Executing,
    /// The container has stopped.
    Executed,
    /// Reported while outputs are being filed.
    Finalizing,
    /// Metadata exists: the job is over.
    Finalized,
    /// Metadata with an error exists: the job is over and failed on the agent.
    Error,
}

impl ExecutorState {
    /// Whether the task is complete in this state.
    pub fn is_final(self) -> bool {
        matches!(self, ExecutorState::Finalized | ExecutorState::Error)
    }

    /// The wire value.
    pub fn to_wire(self) -> pb::ExecutorState {
        match self {
            ExecutorState::Unknown => pb::ExecutorState::Unknown,
            ExecutorState::Preparing => pb::ExecutorState::Preparing,
            ExecutorState::Prepared => pb::ExecutorState::Prepared,
            ExecutorState::Executing => pb::ExecutorState::Executing,
            ExecutorState::Executed => pb::ExecutorState::Executed,
            ExecutorState::Finalizing => pb::ExecutorState::Finalizing,
            ExecutorState::Finalized => pb::ExecutorState::Finalized,
            ExecutorState::Error => pb::ExecutorState::Error,
        }
    }

    /// The reference's lower-case name (log lines).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorState::Unknown => "unknown",
            ExecutorState::Preparing => "preparing",
            ExecutorState::Prepared => "prepared",
            ExecutorState::Executing => "executing",
            ExecutorState::Executed => "executed",
            ExecutorState::Finalizing => "finalizing",
            ExecutorState::Finalized => "finalized",
            ExecutorState::Error => "error",
        }
    }
}

/// What a runner does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Report `preparing`, prepare, report the new state.
    Prepare,
    /// Start the container, report `executing`.
    Execute,
    /// Wait for the container to stop (an event, not a poll).
    AwaitExit,
    /// Kill the container (cancel only).
    Terminate,
    /// Report `finalizing`, finalize, clean up, report the final state.
    Finalize,
    /// Report the final state again (it was reached before, e.g. before a restart) and stop.
    ReportFinal,
}

/// The RUNJOB decision (spec §4.1 table).
pub fn run_job_step(state: ExecutorState) -> Step {
    match state {
        ExecutorState::Unknown | ExecutorState::Preparing => Step::Prepare,
        ExecutorState::Prepared => Step::Execute,
        ExecutorState::Executing => Step::AwaitExit,
        ExecutorState::Executed | ExecutorState::Finalizing => Step::Finalize,
        ExecutorState::Finalized | ExecutorState::Error => Step::ReportFinal,
    }
}

/// The CANCELJOB decision (spec §4.1): kill a running container, finalize anything not final.
pub fn cancel_job_step(state: ExecutorState) -> Step {
    match state {
        ExecutorState::Executing => Step::Terminate,
        ExecutorState::Finalized | ExecutorState::Error => Step::ReportFinal,
        _ => Step::Finalize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ExecutorState; 8] = [
        ExecutorState::Unknown,
        ExecutorState::Preparing,
        ExecutorState::Prepared,
        ExecutorState::Executing,
        ExecutorState::Executed,
        ExecutorState::Finalizing,
        ExecutorState::Finalized,
        ExecutorState::Error,
    ];

    #[test]
    fn the_whole_decision_matrix() {
        let expected_run = [
            Step::Prepare,
            Step::Prepare,
            Step::Execute,
            Step::AwaitExit,
            Step::Finalize,
            Step::Finalize,
            Step::ReportFinal,
            Step::ReportFinal,
        ];
        let expected_cancel = [
            Step::Finalize,
            Step::Finalize,
            Step::Finalize,
            Step::Terminate,
            Step::Finalize,
            Step::Finalize,
            Step::ReportFinal,
            Step::ReportFinal,
        ];
        for (index, state) in ALL.into_iter().enumerate() {
            assert_eq!(run_job_step(state), expected_run[index], "{state:?}");
            assert_eq!(cancel_job_step(state), expected_cancel[index], "{state:?}");
            assert_eq!(state.is_final(), index >= 6);
        }
    }

    #[test]
    fn wire_values_are_distinct() {
        let wire: std::collections::HashSet<i32> =
            ALL.iter().map(|state| state.to_wire() as i32).collect();
        assert_eq!(wire.len(), ALL.len());
        assert!(!wire.contains(&(pb::ExecutorState::Unspecified as i32)));
    }
}
