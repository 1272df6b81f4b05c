//! Deriving a job's state from the world (spec §4.2, §4.8): the agent keeps no task state of its
//! own, so after a restart every task's state comes from its container (if any), its metadata
//! (if written for this task) and its job directory. A container that kept running is adopted
//! (EXECUTING), never restarted; metadata for the task means the job already ended, and the same
//! result is reported again.
//!
//! [`derive_state`] is pure; the executor gathers the facts.

use crate::metadata::JobMetadata;
use crate::task::state::ExecutorState;

/// What Docker says about the job's container.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerFacts {
    /// No container of that name.
    Absent,
    /// Created but never started (the agent stopped between create and start).
    Created,
    /// Running since the given time (UNIX ns).
    Running {
        /// `State.StartedAt`.
        started_at_ns: Option<i64>,
    },
    /// Stopped at the given time.
    Exited {
        /// `State.FinishedAt`.
        finished_at_ns: Option<i64>,
    },
}

/// What the disk says about the job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskFacts {
    /// The metadata record, if one exists *for this task*.
    pub metadata: Option<JobMetadata>,
    /// Whether the job directory exists.
    pub job_dir_exists: bool,
    /// The preparation time from the timestamp file, if the file exists.
    pub prepared_at_ns: Option<i64>,
}

/// A state with the time it was reached (the controller's authoritative transition time).
#[derive(Clone, Debug, PartialEq)]
pub struct Derived {
    /// The state.
    pub state: ExecutorState,
    /// When it was reached, UNIX ns, where known.
    pub timestamp_ns: Option<i64>,
}

/// Applies the reference's rules in order (spec §4.2 steps 3–6).
pub fn derive_state(container: &ContainerFacts, disk: &DiskFacts, cancelled: bool) -> Derived {
    if let Some(metadata) = &disk.metadata {
        let state = if metadata.error.is_some() {
            ExecutorState::Error
        } else {
            ExecutorState::Finalized
        };
        return Derived {
            state,
            timestamp_ns: Some(metadata.timestamp_ns),
        };
    }
    match container {
        ContainerFacts::Absent | ContainerFacts::Created => {
            if cancelled {
                let state = if disk.job_dir_exists {
                    ExecutorState::Prepared
                } else {
                    ExecutorState::Unknown
                };
                return Derived {
                    state,
                    timestamp_ns: None,
                };
            }
            match disk.prepared_at_ns {
                Some(prepared_at) => Derived {
                    state: ExecutorState::Prepared,
                    timestamp_ns: Some(prepared_at),
                },
                None => Derived {
                    state: ExecutorState::Unknown,
                    timestamp_ns: None,
                },
            }
        }
        ContainerFacts::Running { started_at_ns } => Derived {
            state: ExecutorState::Executing,
            timestamp_ns: *started_at_ns,
        },
        ContainerFacts::Exited { finished_at_ns } => Derived {
            state: ExecutorState::Executed,
            timestamp_ns: *finished_at_ns,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::RecordedError;

    fn disk(metadata: Option<JobMetadata>, dir: bool, prepared: Option<i64>) -> DiskFacts {
        DiskFacts {
            metadata,
            job_dir_exists: dir,
            prepared_at_ns: prepared,
        }
    }

    #[test]
    fn metadata_wins_over_everything() {
        let finished = JobMetadata {
            timestamp_ns: 7,
            ..Default::default()
        };
        let running = ContainerFacts::Running {
            started_at_ns: Some(1),
        };
        let derived = derive_state(
            &running,
            &disk(Some(finished.clone()), true, Some(1)),
            false,
        );
        assert_eq!(derived.state, ExecutorState::Finalized);
        assert_eq!(derived.timestamp_ns, Some(7));
        let errored = JobMetadata {
            error: Some(RecordedError::default()),
            ..finished
        };
        let derived = derive_state(
            &ContainerFacts::Absent,
            &disk(Some(errored), false, None),
            true,
        );
        assert_eq!(derived.state, ExecutorState::Error);
    }

    #[test]
    fn containers_are_adopted_not_restarted() {
        let running = ContainerFacts::Running {
            started_at_ns: Some(5),
        };
        let derived = derive_state(&running, &disk(None, true, Some(1)), false);
        assert_eq!(derived.state, ExecutorState::Executing);
        assert_eq!(derived.timestamp_ns, Some(5));
        let exited = ContainerFacts::Exited {
            finished_at_ns: Some(9),
        };
        let derived = derive_state(&exited, &disk(None, true, Some(1)), false);
        assert_eq!(derived.state, ExecutorState::Executed);
    }

    #[test]
    fn the_timestamp_file_marks_prepared() {
        let absent = ContainerFacts::Absent;
        assert_eq!(
            derive_state(&absent, &disk(None, true, Some(3)), false).state,
            ExecutorState::Prepared
        );
        // A directory without the timestamp: preparation was interrupted; redo it.
        assert_eq!(
            derive_state(&absent, &disk(None, true, None), false).state,
            ExecutorState::Unknown
        );
        assert_eq!(
            derive_state(&ContainerFacts::Created, &disk(None, true, Some(3)), false).state,
            ExecutorState::Prepared
        );
        // Cancelling: any directory counts as prepared (so finalize cleans it up).
        assert_eq!(
            derive_state(&absent, &disk(None, true, None), true).state,
            ExecutorState::Prepared
        );
        assert_eq!(
            derive_state(&absent, &disk(None, false, None), true).state,
            ExecutorState::Unknown
        );
    }
}
