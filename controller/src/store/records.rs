//! The on-disk record formats (version 1). These are an on-disk contract: change them only with a
//! new schema version and a migration in `store::migrate`. Domain types are converted by hand so
//! that a change to the domain never silently changes the stored format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jobs::state::{ExecutorStage, JobStatus, State, StatusCode};
use crate::jobs::{AnalysisScope, Job, JobId, JobMetrics, OutputPattern, Privacy, RapId};
use crate::tasks::{
    ErrorKind, JobDefinition, RunJobResults, Task, TaskDefinition, TaskError, TaskResults, TaskType,
};

/// A stored record that could not be read back into the domain.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {kind} record: {reason}")]
pub struct CorruptRecord {
    pub kind: &'static str,
    pub reason: String,
}

fn corrupt(kind: &'static str, reason: impl Into<String>) -> CorruptRecord {
    CorruptRecord {
        kind,
        reason: reason.into(),
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct OutputRecord {
    pub name: String,
    pub pattern: String,
    pub privacy: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct MetricsRecord {
    pub cpu_peak: f64,
    pub cpu_mean: f64,
    pub mem_mb_peak: f64,
    pub mem_mb_mean: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct JobRecordV1 {
    pub id: String,
    pub rap_id: String,
    pub backend: String,
    pub workspace: String,
    pub action: String,
    pub repo_url: String,
    pub commit: String,
    pub branch: String,
    pub database_name: String,
    pub run_command: String,
    pub action_repo_url: Option<String>,
    pub action_commit: Option<String>,
    pub requires_outputs_from: Vec<String>,
    pub wait_for_job_ids: Vec<String>,
    pub output_spec: Vec<OutputRecord>,
    pub requires_db: bool,
    pub cancelled: bool,
    pub created_at: i64,
    pub state: String,
    pub status_code: String,
    pub status_message: String,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub status_code_updated_at_ns: i64,
    pub trace_context: BTreeMap<String, String>,
    pub user: String,
    pub project: String,
    pub orgs: Vec<String>,
    pub dataset_permissions: Vec<String>,
    pub population_permissions: Vec<String>,
    pub component_access: Vec<String>,
    pub metrics: Option<MetricsRecord>,
}

fn privacy_str(p: Privacy) -> String {
    p.as_str().to_string()
}

fn privacy_parse(s: &str) -> Result<Privacy, CorruptRecord> {
    match s {
        "highly_sensitive" => Ok(Privacy::HighlySensitive),
        "moderately_sensitive" => Ok(Privacy::ModeratelySensitive),
        other => Err(corrupt("output", format!("privacy '{other}'"))),
    }
}

fn outputs_to(outputs: &[OutputPattern]) -> Vec<OutputRecord> {
    outputs
        .iter()
        .map(|o| OutputRecord {
            name: o.name.clone(),
            pattern: o.pattern.clone(),
            privacy: privacy_str(o.privacy),
        })
        .collect()
}

fn outputs_from(records: Vec<OutputRecord>) -> Result<Vec<OutputPattern>, CorruptRecord> {
    records
        .into_iter()
        .map(|o| {
            Ok(OutputPattern {
                privacy: privacy_parse(&o.privacy)?,
                name: o.name,
                pattern: o.pattern,
            })
        })
        .collect()
}

fn metrics_to(m: &JobMetrics) -> MetricsRecord {
    MetricsRecord {
        cpu_peak: m.cpu_peak,
        cpu_mean: m.cpu_mean,
        mem_mb_peak: m.mem_mb_peak,
        mem_mb_mean: m.mem_mb_mean,
    }
}

fn metrics_from(m: MetricsRecord) -> JobMetrics {
    JobMetrics {
        cpu_peak: m.cpu_peak,
        cpu_mean: m.cpu_mean,
        mem_mb_peak: m.mem_mb_peak,
        mem_mb_mean: m.mem_mb_mean,
    }
}

impl From<&Job> for JobRecordV1 {
    fn from(job: &Job) -> Self {
        JobRecordV1 {
            id: job.id.to_string(),
            rap_id: job.rap_id.to_string(),
            backend: job.backend.clone(),
            workspace: job.workspace.clone(),
            action: job.action.clone(),
            repo_url: job.repo_url.clone(),
            commit: job.commit.clone(),
            branch: job.branch.clone(),
            database_name: job.database_name.clone(),
            run_command: job.run_command.clone(),
            action_repo_url: job.action_repo_url.clone(),
            action_commit: job.action_commit.clone(),
            requires_outputs_from: job.requires_outputs_from.clone(),
            wait_for_job_ids: job.wait_for_job_ids.iter().map(|i| i.to_string()).collect(),
            output_spec: outputs_to(&job.output_spec),
            requires_db: job.requires_db,
            cancelled: job.cancelled,
            created_at: job.created_at,
            state: job.status.state.as_str().to_string(),
            status_code: job.status.status_code.as_str().to_string(),
            status_message: job.status.status_message.clone(),
            updated_at: job.status.updated_at,
            started_at: job.status.started_at,
            completed_at: job.status.completed_at,
            status_code_updated_at_ns: job.status.status_code_updated_at_ns,
            trace_context: job.trace_context.clone(),
            user: job.user.clone(),
            project: job.project.clone(),
            orgs: job.orgs.clone(),
            dataset_permissions: job.analysis_scope.dataset_permissions.clone(),
            population_permissions: job.analysis_scope.population_permissions.clone(),
            component_access: job.analysis_scope.component_access.clone(),
            metrics: job.metrics.as_ref().map(metrics_to),
        }
    }
}

impl TryFrom<JobRecordV1> for Job {
    type Error = CorruptRecord;
    fn try_from(r: JobRecordV1) -> Result<Self, CorruptRecord> {
        let rap_id = RapId::parse(&r.rap_id).ok_or_else(|| corrupt("job", "rap_id"))?;
        let state: State = r.state.parse().map_err(|_| corrupt("job", "state"))?;
        let status_code: StatusCode = r
            .status_code
            .parse()
            .map_err(|_| corrupt("job", "status_code"))?;
        Ok(Job {
            id: JobId::from_stored(r.id),
            rap_id,
            backend: r.backend,
            workspace: r.workspace,
            action: r.action,
            repo_url: r.repo_url,
            commit: r.commit,
            branch: r.branch,
            database_name: r.database_name,
            run_command: r.run_command,
            action_repo_url: r.action_repo_url,
            action_commit: r.action_commit,
            requires_outputs_from: r.requires_outputs_from,
            wait_for_job_ids: r
                .wait_for_job_ids
                .into_iter()
                .map(JobId::from_stored)
                .collect(),
            output_spec: outputs_from(r.output_spec)?,
            requires_db: r.requires_db,
            cancelled: r.cancelled,
            created_at: r.created_at,
            status: JobStatus {
                state,
                status_code,
                status_message: r.status_message,
                updated_at: r.updated_at,
                started_at: r.started_at,
                completed_at: r.completed_at,
                status_code_updated_at_ns: r.status_code_updated_at_ns,
            },
            trace_context: r.trace_context,
            user: r.user,
            project: r.project,
            orgs: r.orgs,
            analysis_scope: AnalysisScope {
                dataset_permissions: r.dataset_permissions,
                population_permissions: r.population_permissions,
                component_access: r.component_access,
            },
            metrics: r.metrics.map(metrics_from),
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct JobDefinitionRecord {
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
    pub output_spec: Vec<OutputRecord>,
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

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TaskErrorRecord {
    pub kind: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RunJobResultsRecord {
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
    pub error: Option<TaskErrorRecord>,
    pub metrics: Option<MetricsRecord>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "kind")]
pub enum TaskDefinitionRecord {
    Job(Box<JobDefinitionRecord>),
    DbStatus {
        database_name: String,
        image: String,
    },
    DbDataCheck {
        hes_expected_activity_month: String,
        image: String,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "kind")]
pub enum TaskResultsRecord {
    Job(Box<RunJobResultsRecord>),
    DbStatus {
        status: String,
        error: Option<TaskErrorRecord>,
    },
    DbDataCheck {
        status: String,
        error: Option<TaskErrorRecord>,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TaskRecordV1 {
    pub id: String,
    pub backend: String,
    pub task_type: String,
    pub definition: TaskDefinitionRecord,
    pub active: bool,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub attributes: BTreeMap<String, String>,
    pub agent_stage: String,
    pub agent_complete: bool,
    pub agent_results: Option<TaskResultsRecord>,
    pub agent_timestamp_ns: Option<i64>,
    pub leased_to: Option<String>,
    pub last_update_id: u64,
}

fn error_to(e: &TaskError) -> TaskErrorRecord {
    TaskErrorRecord {
        kind: match e.kind {
            ErrorKind::Retryable => "retryable".into(),
            ErrorKind::Fatal => "fatal".into(),
        },
        message: e.message.clone(),
    }
}

fn error_from(e: TaskErrorRecord) -> TaskError {
    TaskError {
        // An unknown kind is read as retryable: retries are bounded, so this cannot loop.
        kind: if e.kind == "fatal" {
            ErrorKind::Fatal
        } else {
            ErrorKind::Retryable
        },
        message: e.message,
    }
}

impl From<&Task> for TaskRecordV1 {
    fn from(t: &Task) -> Self {
        let definition = match &t.definition {
            TaskDefinition::Job(d) => TaskDefinitionRecord::Job(Box::new(JobDefinitionRecord {
                id: d.id.clone(),
                rap_id: d.rap_id.clone(),
                task_id: d.task_id.clone(),
                repo_url: d.repo_url.clone(),
                commit: d.commit.clone(),
                study_repo_url: d.study_repo_url.clone(),
                study_commit: d.study_commit.clone(),
                study_branch: d.study_branch.clone(),
                workspace: d.workspace.clone(),
                action: d.action.clone(),
                created_at: d.created_at,
                image: d.image.clone(),
                image_sha: d.image_sha.clone(),
                args: d.args.clone(),
                env: d.env.clone(),
                input_job_ids: d.input_job_ids.clone(),
                output_spec: outputs_to(&d.output_spec),
                allow_database_access: d.allow_database_access,
                database_name: d.database_name.clone(),
                user: d.user.clone(),
                cpu_count: d.cpu_count,
                memory_limit: d.memory_limit.clone(),
                level4_max_filesize: d.level4_max_filesize,
                level4_max_csv_rows: d.level4_max_csv_rows,
                level4_file_types: d.level4_file_types.clone(),
                requires_outputs_from: d.requires_outputs_from.clone(),
            })),
            TaskDefinition::DbStatus {
                database_name,
                image,
            } => TaskDefinitionRecord::DbStatus {
                database_name: database_name.clone(),
                image: image.clone(),
            },
            TaskDefinition::DbDataCheck {
                hes_expected_activity_month,
                image,
            } => TaskDefinitionRecord::DbDataCheck {
                hes_expected_activity_month: hes_expected_activity_month.clone(),
                image: image.clone(),
            },
        };
        let agent_results = t.agent_results.as_ref().map(|r| match r {
            TaskResults::Job(r) => TaskResultsRecord::Job(Box::new(RunJobResultsRecord {
                exit_code: r.exit_code,
                oom_killed: r.oom_killed,
                docker_image_id: r.docker_image_id.clone(),
                status_message: r.status_message.clone(),
                hint: r.hint.clone(),
                timestamp_ns: r.timestamp_ns,
                action_version: r.action_version.clone(),
                action_revision: r.action_revision.clone(),
                action_created: r.action_created.clone(),
                base_revision: r.base_revision.clone(),
                base_created: r.base_created.clone(),
                has_unmatched_patterns: r.has_unmatched_patterns,
                has_level4_excluded_files: r.has_level4_excluded_files,
                cancelled: r.cancelled,
                error: r.error.as_ref().map(error_to),
                metrics: r.metrics.as_ref().map(metrics_to),
            })),
            TaskResults::DbStatus { status, error } => TaskResultsRecord::DbStatus {
                status: status.clone(),
                error: error.as_ref().map(error_to),
            },
            TaskResults::DbDataCheck { status, error } => TaskResultsRecord::DbDataCheck {
                status: status.clone(),
                error: error.as_ref().map(error_to),
            },
        });
        TaskRecordV1 {
            id: t.id.clone(),
            backend: t.backend.clone(),
            task_type: t.task_type.as_str().to_string(),
            definition,
            active: t.active,
            created_at: t.created_at,
            finished_at: t.finished_at,
            attributes: t.attributes.clone(),
            agent_stage: t.agent_stage.as_str().to_string(),
            agent_complete: t.agent_complete,
            agent_results,
            agent_timestamp_ns: t.agent_timestamp_ns,
            leased_to: t.leased_to.clone(),
            last_update_id: t.last_update_id,
        }
    }
}

impl TryFrom<TaskRecordV1> for Task {
    type Error = CorruptRecord;
    fn try_from(r: TaskRecordV1) -> Result<Self, CorruptRecord> {
        let task_type = TaskType::parse(&r.task_type).ok_or_else(|| corrupt("task", "type"))?;
        let agent_stage: ExecutorStage = r
            .agent_stage
            .parse()
            .map_err(|_| corrupt("task", "agent_stage"))?;
        let definition = match r.definition {
            TaskDefinitionRecord::Job(d) => {
                let d = *d;
                TaskDefinition::Job(Box::new(JobDefinition {
                    id: d.id,
                    rap_id: d.rap_id,
                    task_id: d.task_id,
                    repo_url: d.repo_url,
                    commit: d.commit,
                    study_repo_url: d.study_repo_url,
                    study_commit: d.study_commit,
                    study_branch: d.study_branch,
                    workspace: d.workspace,
                    action: d.action,
                    created_at: d.created_at,
                    image: d.image,
                    image_sha: d.image_sha,
                    args: d.args,
                    env: d.env,
                    input_job_ids: d.input_job_ids,
                    output_spec: outputs_from(d.output_spec)?,
                    allow_database_access: d.allow_database_access,
                    database_name: d.database_name,
                    user: d.user,
                    cpu_count: d.cpu_count,
                    memory_limit: d.memory_limit,
                    level4_max_filesize: d.level4_max_filesize,
                    level4_max_csv_rows: d.level4_max_csv_rows,
                    level4_file_types: d.level4_file_types,
                    requires_outputs_from: d.requires_outputs_from,
                }))
            }
            TaskDefinitionRecord::DbStatus {
                database_name,
                image,
            } => TaskDefinition::DbStatus {
                database_name,
                image,
            },
            TaskDefinitionRecord::DbDataCheck {
                hes_expected_activity_month,
                image,
            } => TaskDefinition::DbDataCheck {
                hes_expected_activity_month,
                image,
            },
        };
        let agent_results = r.agent_results.map(|res| match res {
            TaskResultsRecord::Job(j) => {
                let j = *j;
                TaskResults::Job(Box::new(RunJobResults {
                    exit_code: j.exit_code,
                    oom_killed: j.oom_killed,
                    docker_image_id: j.docker_image_id,
                    status_message: j.status_message,
                    hint: j.hint,
                    timestamp_ns: j.timestamp_ns,
                    action_version: j.action_version,
                    action_revision: j.action_revision,
                    action_created: j.action_created,
                    base_revision: j.base_revision,
                    base_created: j.base_created,
                    has_unmatched_patterns: j.has_unmatched_patterns,
                    has_level4_excluded_files: j.has_level4_excluded_files,
                    cancelled: j.cancelled,
                    error: j.error.map(error_from),
                    metrics: j.metrics.map(metrics_from),
                }))
            }
            TaskResultsRecord::DbStatus { status, error } => TaskResults::DbStatus {
                status,
                error: error.map(error_from),
            },
            TaskResultsRecord::DbDataCheck { status, error } => TaskResults::DbDataCheck {
                status,
                error: error.map(error_from),
            },
        });
        Ok(Task {
            id: r.id,
            backend: r.backend,
            task_type,
            definition,
            active: r.active,
            created_at: r.created_at,
            finished_at: r.finished_at,
            attributes: r.attributes,
            agent_stage,
            agent_complete: r.agent_complete,
            agent_results,
            agent_timestamp_ns: r.agent_timestamp_ns,
            leased_to: r.leased_to,
            last_update_id: r.last_update_id,
        })
    }
}

/// A per-backend flag (§3.9): its value and when the value last changed.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FlagRecordV1 {
    pub value: Option<String>,
    pub timestamp: i64,
}
