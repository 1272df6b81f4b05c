//! Tasks: what the controller asks an agent to do (spec §1.3–§1.6), and what the agent reported.
//!
//! A RUNJOB task is `{job_id}-001`, `-002`, …; a CANCELJOB task is `{runjob_task_id}-cancel`.
//! The latest RUNJOB task of a job is the lexically greatest id, and every earlier one is
//! inactive. Only active tasks are shown to agents.

use std::collections::BTreeMap;

use crate::jobs::state::ExecutorStage;
use crate::jobs::{JobMetrics, OutputPattern};

/// The kind of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskType {
    RunJob,
    CancelJob,
    DbStatus,
    DbDataCheck,
}

impl TaskType {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::RunJob => "runjob",
            TaskType::CancelJob => "canceljob",
            TaskType::DbStatus => "dbstatus",
            TaskType::DbDataCheck => "dbdatacheck",
        }
    }

    pub fn parse(value: &str) -> Option<TaskType> {
        match value {
            "runjob" => Some(TaskType::RunJob),
            "canceljob" => Some(TaskType::CancelJob),
            "dbstatus" => Some(TaskType::DbStatus),
            "dbdatacheck" => Some(TaskType::DbDataCheck),
            _ => None,
        }
    }
}

/// A task and the agent's latest report on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: String,
    pub backend: String,
    pub task_type: TaskType,
    pub definition: TaskDefinition,
    pub active: bool,
    /// UNIX seconds.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Tracing attributes: user, project, orgs.
    pub attributes: BTreeMap<String, String>,
    pub agent_stage: ExecutorStage,
    pub agent_complete: bool,
    pub agent_results: Option<TaskResults>,
    pub agent_timestamp_ns: Option<i64>,
    /// The agent the task is leased to; tasks are sent only to that agent.
    pub leased_to: Option<String>,
    /// The highest update id applied: a repeated or older id is acknowledged, not re-applied.
    pub last_update_id: u64,
}

/// What a task asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskDefinition {
    Job(Box<JobDefinition>),
    DbStatus {
        database_name: String,
        image: String,
    },
    /// `hes_cutoff_date_check <month>` against the default database (§1.4).
    DbDataCheck {
        hes_expected_activity_month: String,
        image: String,
    },
}

/// The reference's JobDefinition (§1.5).
#[derive(Clone, Debug, PartialEq)]
pub struct JobDefinition {
    pub id: String,
    pub rap_id: String,
    pub task_id: String,
    pub repo_url: String,
    pub commit: String,
    pub study_repo_url: String,
    pub study_commit: String,
    pub study_branch: String,
    pub workspace: String,
    pub action: String,
    pub created_at: i64,
    pub image: String,
    pub image_sha: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub input_job_ids: Vec<String>,
    pub output_spec: Vec<OutputPattern>,
    pub allow_database_access: bool,
    pub database_name: String,
    pub user: String,
    pub cpu_count: f64,
    pub memory_limit: String,
    pub level4_max_filesize: u64,
    pub level4_max_csv_rows: u64,
    pub level4_file_types: Vec<String>,
    pub requires_outputs_from: Vec<String>,
}

/// What the agent reported when a task completed.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskResults {
    Job(Box<RunJobResults>),
    DbStatus {
        status: String,
        error: Option<TaskError>,
    },
    /// `"OK"` or `"FAILED"`, or an error.
    DbDataCheck {
        status: String,
        error: Option<TaskError>,
    },
}

/// The redacted results of a RUNJOB task (§1.6): no output names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunJobResults {
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub docker_image_id: String,
    pub status_message: String,
    pub hint: String,
    pub timestamp_ns: i64,
    pub action_version: String,
    pub action_revision: String,
    pub action_created: String,
    pub base_revision: String,
    pub base_created: String,
    pub has_unmatched_patterns: bool,
    pub has_level4_excluded_files: bool,
    pub cancelled: bool,
    pub error: Option<TaskError>,
    pub metrics: Option<JobMetrics>,
}

/// Whether a failure on the agent is worth a new task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Retryable,
    Fatal,
}

/// An agent-side failure; the message names no output file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
}

/// An agent's report on a task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskUpdate {
    pub update_id: u64,
    pub task_id: String,
    pub stage: ExecutorStage,
    pub complete: bool,
    pub timestamp_ns: i64,
    pub results: Option<TaskResults>,
}

/// The id of the `n`th RUNJOB task of a job (1-based).
pub fn runjob_task_id(job_id: &str, n: u32) -> String {
    format!("{job_id}-{n:03}")
}

/// The CANCELJOB task id for a RUNJOB task.
pub fn canceljob_task_id(runjob_task_id: &str) -> String {
    format!("{runjob_task_id}-cancel")
}

/// The attempt number of a RUNJOB task id, if it is one.
pub fn runjob_attempt(task_id: &str) -> Option<u32> {
    let (_, n) = task_id.rsplit_once('-')?;
    if n.len() != 3 {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        assert_eq!(runjob_task_id("abc", 1), "abc-001");
        assert_eq!(runjob_task_id("abc", 12), "abc-012");
        assert_eq!(canceljob_task_id("abc-002"), "abc-002-cancel");
        assert_eq!(runjob_attempt("abc-002"), Some(2));
        assert_eq!(runjob_attempt("abc-002-cancel"), None);
        for t in [
            TaskType::RunJob,
            TaskType::CancelJob,
            TaskType::DbStatus,
            TaskType::DbDataCheck,
        ] {
            assert_eq!(TaskType::parse(t.as_str()), Some(t));
        }
    }
}
