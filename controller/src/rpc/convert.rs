//! Domain ↔ protobuf conversions, by hand: the wire contract and the domain change separately.

use rap_proto::pb::rap::v1 as pb;

use crate::backend::{AgentCommand, TaskSummary};
use crate::jobs::create::SubmitFields;
use crate::jobs::state::{ExecutorStage, State, StatusCode};
use crate::jobs::{AnalysisScope, Job, JobMetrics, Privacy};
use crate::requests::BackendStatus;
use crate::tasks::{
    ErrorKind, RunJobResults, Task, TaskDefinition, TaskError, TaskResults, TaskType, TaskUpdate,
};

pub fn submit_fields(request: pb::SubmitJobRequest, traceparent: Option<String>) -> SubmitFields {
    SubmitFields {
        rap_id: request.rap_id,
        backend: request.backend,
        workspace: request.workspace,
        repo_url: request.repo_url,
        branch: request.branch,
        commit: request.commit,
        database_name: request.database_name,
        requested_actions: request.requested_actions,
        codelists_ok: request.codelists_ok,
        force_run_dependencies: request.force_run_dependencies,
        created_by: request.created_by,
        project: request.project,
        orgs: request.orgs,
        analysis_scope: request.analysis_scope.map(|s| AnalysisScope {
            dataset_permissions: s.dataset_permissions,
            population_permissions: s.population_permissions,
            component_access: s.component_access,
        }),
        traceparent,
    }
}

pub fn state(state: State) -> pb::State {
    match state {
        State::Pending => pb::State::Pending,
        State::Running => pb::State::Running,
        State::Failed => pb::State::Failed,
        State::Succeeded => pb::State::Succeeded,
    }
}

pub fn status_code(code: StatusCode) -> pb::StatusCode {
    use StatusCode as S;
    use pb::StatusCode as P;
    match code {
        S::Created => P::Created,
        S::Initiated => P::Initiated,
        S::WaitingPaused => P::WaitingPaused,
        S::WaitingDbMaintenance => P::WaitingDbMaintenance,
        S::WaitingOnDependencies => P::WaitingOnDependencies,
        S::WaitingOnWorkers => P::WaitingOnWorkers,
        S::WaitingOnDbWorkers => P::WaitingOnDbWorkers,
        S::WaitingOnReboot => P::WaitingOnReboot,
        S::WaitingOnNewTask => P::WaitingOnNewTask,
        S::Preparing => P::Preparing,
        S::Prepared => P::Prepared,
        S::Executing => P::Executing,
        S::Executed => P::Executed,
        S::Finalizing => P::Finalizing,
        S::Finalized => P::Finalized,
        S::Succeeded => P::Succeeded,
        S::DependencyFailed => P::DependencyFailed,
        S::NonzeroExit => P::NonzeroExit,
        S::CancelledByUser => P::CancelledByUser,
        S::UnmatchedPatterns => P::UnmatchedPatterns,
        S::InternalError => P::InternalError,
        S::KilledByAdmin => P::KilledByAdmin,
        S::StaleCodelists => P::StaleCodelists,
        S::JobError => P::JobError,
    }
}

fn metrics(m: &JobMetrics) -> pb::JobMetrics {
    pb::JobMetrics {
        cpu_peak: m.cpu_peak,
        cpu_mean: m.cpu_mean,
        mem_mb_peak: m.mem_mb_peak,
        mem_mb_mean: m.mem_mb_mean,
    }
}

pub fn job(job: &Job) -> pb::Job {
    pb::Job {
        identifier: job.id.to_string(),
        rap_id: job.rap_id.to_string(),
        backend: job.backend.clone(),
        workspace: job.workspace.clone(),
        action: job.action.clone(),
        requires_db: job.requires_db,
        run_command: job.run_command.clone(),
        status: state(job.status.state) as i32,
        status_code: status_code(job.status.status_code) as i32,
        status_message: job.status.status_message.clone(),
        created_at: Some(job.created_at),
        updated_at: Some(job.status.updated_at),
        started_at: job.status.started_at,
        completed_at: job.status.completed_at,
        trace_context: job
            .trace_context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        metrics: Some(job.metrics.as_ref().map(metrics).unwrap_or_default()),
        cancelled: job.cancelled,
    }
}

pub fn backend_status(status: &BackendStatus) -> pb::BackendStatus {
    let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
    pb::BackendStatus {
        slug: status.slug.clone(),
        last_seen: status.last_seen,
        paused: Some(pb::Flag {
            status: on_off(status.paused),
            since: status.paused_since,
        }),
        db_maintenance: Some(pb::DbMaintenance {
            status: on_off(status.db_maintenance),
            since: status.db_maintenance_since,
            r#type: status.db_maintenance_type.to_string(),
        }),
        data_check: status.data_check.as_ref().map(|check| pb::DataCheck {
            status: check.status.clone(),
            checked_at: check.checked_at,
            error: check.error.clone().unwrap_or_default(),
        }),
    }
}

fn task_type(t: TaskType) -> pb::TaskType {
    match t {
        TaskType::RunJob => pb::TaskType::Runjob,
        TaskType::CancelJob => pb::TaskType::Canceljob,
        TaskType::DbStatus => pb::TaskType::Dbstatus,
        TaskType::DbDataCheck => pb::TaskType::Dbdatacheck,
    }
}

pub fn task(task: &Task) -> pb::Task {
    let definition = match &task.definition {
        TaskDefinition::Job(d) => pb::task::Definition::Job(pb::JobDefinition {
            id: d.id.clone(),
            rap_id: d.rap_id.clone(),
            task_id: d.task_id.clone(),
            repo_url: d.repo_url.clone(),
            commit: d.commit.clone(),
            study: Some(pb::StudyRepo {
                git_repo_url: d.study_repo_url.clone(),
                commit: d.study_commit.clone(),
                branch: d.study_branch.clone(),
            }),
            workspace: d.workspace.clone(),
            action: d.action.clone(),
            created_at: d.created_at,
            image: d.image.clone(),
            image_sha: d.image_sha.clone(),
            args: d.args.clone(),
            env: d.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            input_job_ids: d.input_job_ids.clone(),
            output_spec: d
                .output_spec
                .iter()
                .map(|o| pb::OutputPattern {
                    pattern: o.pattern.clone(),
                    privacy: match o.privacy {
                        Privacy::HighlySensitive => pb::Privacy::HighlySensitive,
                        Privacy::ModeratelySensitive => pb::Privacy::ModeratelySensitive,
                    } as i32,
                })
                .collect(),
            allow_database_access: d.allow_database_access,
            database_name: d.database_name.clone(),
            user: d.user.clone(),
            cpu_count: d.cpu_count,
            memory_limit: d.memory_limit.clone(),
            level4_max_filesize: d.level4_max_filesize,
            level4_max_csv_rows: d.level4_max_csv_rows,
            level4_file_types: d.level4_file_types.clone(),
            requires_outputs_from: d.requires_outputs_from.clone(),
        }),
        TaskDefinition::DbStatus {
            database_name,
            image,
        } => pb::task::Definition::DbStatus(pb::DbStatusDefinition {
            database_name: database_name.clone(),
            image: image.clone(),
        }),
        TaskDefinition::DbDataCheck {
            hes_expected_activity_month,
            image,
        } => pb::task::Definition::DbDataCheck(pb::DbDataCheckDefinition {
            hes_expected_activity_month: hes_expected_activity_month.clone(),
            image: image.clone(),
        }),
    };
    pb::Task {
        id: task.id.clone(),
        backend: task.backend.clone(),
        r#type: task_type(task.task_type) as i32,
        definition: Some(definition),
        attributes: task
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_at: task.created_at,
    }
}

pub fn agent_command(command: AgentCommand) -> pb::ControllerMessage {
    let message = match command {
        AgentCommand::Task(t) => pb::controller_message::Message::Task(task(&t)),
        AgentCommand::Revoke(task_id) => pb::controller_message::Message::Revoke(pb::Revoke {
            task_id,
            reason: pb::RevokeReason::Unspecified as i32,
        }),
        AgentCommand::LeaseMoved(task_id) => pb::controller_message::Message::Revoke(pb::Revoke {
            task_id,
            reason: pb::RevokeReason::LeaseMoved as i32,
        }),
    };
    pb::ControllerMessage {
        message: Some(message),
    }
}

pub fn ack(task_id: String, update_id: u64) -> pb::ControllerMessage {
    pb::ControllerMessage {
        message: Some(pb::controller_message::Message::Ack(pb::Ack {
            task_id,
            update_id,
        })),
    }
}

fn stage(value: i32) -> ExecutorStage {
    match pb::ExecutorState::try_from(value) {
        Ok(pb::ExecutorState::Preparing) => ExecutorStage::Preparing,
        Ok(pb::ExecutorState::Prepared) => ExecutorStage::Prepared,
        Ok(pb::ExecutorState::Executing) => ExecutorStage::Executing,
        Ok(pb::ExecutorState::Executed) => ExecutorStage::Executed,
        Ok(pb::ExecutorState::Finalizing) => ExecutorStage::Finalizing,
        Ok(pb::ExecutorState::Finalized) => ExecutorStage::Finalized,
        Ok(pb::ExecutorState::Unknown) => ExecutorStage::Unknown,
        Ok(pb::ExecutorState::Error) => ExecutorStage::Error,
        _ => ExecutorStage::Unspecified,
    }
}

fn task_error(e: pb::TaskError) -> TaskError {
    TaskError {
        // Anything but an explicit "fatal" is retried: retries are bounded.
        kind: if e.kind == pb::ErrorKind::Fatal as i32 {
            ErrorKind::Fatal
        } else {
            ErrorKind::Retryable
        },
        message: e.message,
    }
}

pub fn task_update(update: pb::TaskUpdate) -> TaskUpdate {
    let results = update.results.map(|r| match r {
        pb::task_update::Results::Job(j) => TaskResults::Job(Box::new(RunJobResults {
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
            error: j.error.map(task_error),
            metrics: j.metrics.map(|m| JobMetrics {
                cpu_peak: m.cpu_peak,
                cpu_mean: m.cpu_mean,
                mem_mb_peak: m.mem_mb_peak,
                mem_mb_mean: m.mem_mb_mean,
            }),
        })),
        pb::task_update::Results::DbStatus(d) => TaskResults::DbStatus {
            status: d.status,
            error: d.error.map(task_error),
        },
        pb::task_update::Results::DbDataCheck(d) => TaskResults::DbDataCheck {
            status: d.status,
            error: d.error.map(task_error),
        },
    });
    TaskUpdate {
        update_id: update.update_id,
        task_id: update.task_id,
        stage: stage(update.stage),
        complete: update.complete,
        timestamp_ns: update.timestamp_ns,
        results,
    }
}

pub fn task_summary(t: &TaskSummary) -> pb::TaskSummary {
    pb::TaskSummary {
        id: t.id.clone(),
        backend: t.backend.clone(),
        r#type: task_type(t.task_type) as i32,
        active: t.active,
        created_at: t.created_at,
        finished_at: t.finished_at,
        agent_stage: t.agent_stage.clone(),
        agent_complete: t.agent_complete,
        leased_to: t.leased_to.clone(),
    }
}
