//! Task runners: one tokio task per RUNJOB, CANCELJOB, DBSTATUS or DBDATACHECK task, driven by the pure
//! decisions in [`state`] and reporting every stage as a `TaskUpdate` through the durable
//! [`Outbox`].
//!
//! The design card names actix actors; we use the same shape with plain tokio (a task per
//! runner, a handle with a stop signal, and [`Tasks`] owning every handle), because the runners
//! are long async workflows over Docker, which actix's synchronous handlers would have to wrap
//! in `ResponseActFuture`s, and the decisions already live in a pure core ([`state`]).
//!
//! Capacity: RUNJOB runners take a slot from the non-database or database pool (the sizes the
//! agent announces in `Hello`) before preparing, and hold it until the job is finalized.
//!
//! Stopping: a runner stops at a safe point when its task is revoked, when a CANCELJOB for its
//! job arrives (the cancel waits for it), or at shutdown. A running container is never killed by
//! a stop: after a restart the next runner adopts it (spec §4.8).

pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rap_proto::pb::rap::v1 as pb;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::clock;
use crate::executor::{Executor, ExecutorError, JobStatus};
use crate::job::JobDefinition;
use crate::metadata;
use crate::outbox::Outbox;
use state::{ExecutorState, Step, cancel_job_step, run_job_step};

/// Retryable failures in a row before a task is reported as failed (retryable), so the
/// controller can give the job a new task.
const MAX_RETRIES: u32 = 3;
/// The first retry delay; doubled per failure, capped at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What DBSTATUS and DBDATACHECK tasks run: the executor's checks of the database.
pub trait DbChecks: Send + Sync + 'static {
    /// Runs the maintenance check and returns `"db-maintenance"` or `""`.
    fn db_status(
        &self,
        definition: &pb::DbStatusDefinition,
    ) -> impl std::future::Future<Output = Result<String, ExecutorError>> + Send;

    /// Runs the data check and returns `"OK"` or `"FAILED"`.
    fn db_data_check(
        &self,
        definition: &pb::DbDataCheckDefinition,
    ) -> impl std::future::Future<Output = Result<String, ExecutorError>> + Send;
}

struct Context<E> {
    executor: Arc<E>,
    outbox: Arc<Outbox>,
    job_slots: Arc<Semaphore>,
    db_slots: Arc<Semaphore>,
}

struct Runner {
    job: Option<JobDefinition>,
    kind: pb::TaskType,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Every running task runner. Owned by the agent's main loop.
pub struct Tasks<E: Executor + DbChecks> {
    context: Arc<Context<E>>,
    runners: HashMap<String, Runner>,
}

impl<E: Executor + DbChecks> Tasks<E> {
    /// Runners over `executor`, reporting through `outbox`, with the given pool sizes.
    pub fn new(
        executor: Arc<E>,
        outbox: Arc<Outbox>,
        job_capacity: usize,
        db_job_capacity: usize,
    ) -> Tasks<E> {
        Tasks {
            context: Arc::new(Context {
                executor,
                outbox,
                job_slots: Arc::new(Semaphore::new(job_capacity.max(1))),
                db_slots: Arc::new(Semaphore::new(db_job_capacity.max(1))),
            }),
            runners: HashMap::new(),
        }
    }

    /// Starts a runner for `task` unless one is already running for that task id (the
    /// controller resends every active task on each connection).
    pub fn start(&mut self, task: pb::Task) {
        self.reap();
        if self.runners.contains_key(&task.id) {
            return;
        }
        let kind = pb::TaskType::try_from(task.r#type).unwrap_or(pb::TaskType::Unspecified);
        let (stop, stop_rx) = watch::channel(false);
        let context = self.context.clone();
        let task_id = task.id.clone();
        // One span per task; its context travels on every update (`trace_context`), and a
        // `traceparent` among the task's attributes, if the controller sends one, is its parent.
        // Attributes name the job, never an output.
        let (workspace, action, job_id) = match &task.definition {
            Some(pb::task::Definition::Job(job)) => {
                (job.workspace.as_str(), job.action.as_str(), job.id.as_str())
            }
            _ => ("", "", ""),
        };
        let span = tracing::info_span!(
            "TASK",
            backend = %task.backend,
            task = %task.id,
            task_type = kind.as_str_name(),
            job = %job_id,
            workspace = %workspace,
            action = %action,
            user = task.attributes.get("user").map(String::as_str).unwrap_or(""),
            project = task.attributes.get("project").map(String::as_str).unwrap_or(""),
        );
        if task
            .attributes
            .contains_key(rap_proto::trace_context::TRACEPARENT)
        {
            let parent: std::collections::HashMap<String, String> = task
                .attributes
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let _ = rap_proto::trace_context::set_parent_from_map(&span, &parent);
        }
        let (job, handle) = match (kind, task.definition) {
            (pb::TaskType::Runjob, Some(pb::task::Definition::Job(wire))) => {
                match JobDefinition::from_wire(&wire) {
                    Ok(job) => {
                        // A new task for the same job (a retry) waits until the old task's
                        // runner has stopped: two runners never drive one job directory.
                        let previous = self.take_runjob_runner(&job.id);
                        (
                            Some(job.clone()),
                            tokio::spawn(
                                run_job(context, task_id.clone(), job, stop_rx, previous)
                                    .instrument(span),
                            ),
                        )
                    }
                    Err(error) => (
                        None,
                        tokio::spawn(
                            report_invalid(context, task_id.clone(), error.to_string())
                                .instrument(span.clone()),
                        ),
                    ),
                }
            }
            (pb::TaskType::Canceljob, Some(pb::task::Definition::Job(wire))) => {
                match JobDefinition::from_wire(&wire) {
                    Ok(job) => {
                        // The job's RUNJOB runner stops first; the cancel waits for it.
                        let previous = self.take_runjob_runner(&job.id);
                        (
                            Some(job.clone()),
                            tokio::spawn(
                                cancel_job(context, task_id.clone(), job, previous)
                                    .instrument(span),
                            ),
                        )
                    }
                    Err(error) => (
                        None,
                        tokio::spawn(
                            report_invalid(context, task_id.clone(), error.to_string())
                                .instrument(span.clone()),
                        ),
                    ),
                }
            }
            (pb::TaskType::Dbstatus, Some(pb::task::Definition::DbStatus(definition))) => (
                None,
                tokio::spawn(
                    run_db_check(context, task_id.clone(), DbCheck::Status(definition))
                        .instrument(span),
                ),
            ),
            (pb::TaskType::Dbdatacheck, Some(pb::task::Definition::DbDataCheck(definition))) => (
                None,
                tokio::spawn(
                    run_db_check(context, task_id.clone(), DbCheck::Data(definition))
                        .instrument(span),
                ),
            ),
            _ => (
                None,
                tokio::spawn(
                    report_invalid(
                        context,
                        task_id.clone(),
                        "the task's type and definition do not match".to_string(),
                    )
                    .instrument(span),
                ),
            ),
        };
        self.runners.insert(
            task_id,
            Runner {
                job,
                kind,
                stop,
                handle,
            },
        );
    }

    /// Stops a task's runner without reporting (the controller took the task away).
    pub fn revoke(&mut self, task_id: &str) {
        if let Some(runner) = self.runners.get(task_id) {
            let _ = runner.stop.send(true);
        }
    }

    /// Stops a RUNJOB task whose lease moved to another agent and discards its work: once its
    /// runner has stopped, the job's container is killed and removed with the job directory.
    /// Nothing is finalized (no outputs filed) and nothing is reported: the task's outcome is
    /// the new lessee's.
    pub fn abandon(&mut self, task_id: &str) {
        self.reap();
        let Some(runner) = self.runners.remove(task_id) else {
            return;
        };
        let _ = runner.stop.send(true);
        let (pb::TaskType::Runjob, Some(job)) = (runner.kind, runner.job.clone()) else {
            self.runners.insert(task_id.to_owned(), runner);
            return;
        };
        let context = self.context.clone();
        let stopping = runner.handle;
        let span = tracing::info_span!("ABANDON", task = %task_id, job = %job.id);
        let handle = tokio::spawn(
            async move {
                let _ = stopping.await;
                discard_job(&context, &job).await;
            }
            .instrument(span),
        );
        self.runners.insert(
            task_id.to_owned(),
            Runner {
                job: runner.job,
                kind: runner.kind,
                stop: runner.stop,
                handle,
            },
        );
    }

    /// How many runners are still running.
    pub fn running(&mut self) -> usize {
        self.reap();
        self.runners.len()
    }

    /// Stops every runner at its next safe point and waits for them all.
    pub async fn shutdown(mut self) {
        for runner in self.runners.values() {
            let _ = runner.stop.send(true);
        }
        for (_, runner) in self.runners.drain() {
            let _ = runner.handle.await;
        }
    }

    /// Aborts every runner wherever it is, as a crash would (a killed agent process). Used by
    /// the recovery tests; containers keep running and are adopted by the next runner.
    pub fn abort(mut self) {
        for (_, runner) in self.runners.drain() {
            runner.handle.abort();
        }
    }

    fn reap(&mut self) {
        self.runners
            .retain(|_, runner| !runner.handle.is_finished());
    }

    fn take_runjob_runner(&mut self, job_id: &str) -> Option<JoinHandle<()>> {
        let task_id = self
            .runners
            .iter()
            .find(|(_, runner)| {
                runner.kind == pb::TaskType::Runjob
                    && runner.job.as_ref().is_some_and(|job| job.id == job_id)
            })
            .map(|(task_id, _)| task_id.clone())?;
        let runner = self.runners.remove(&task_id)?;
        let _ = runner.stop.send(true);
        Some(runner.handle)
    }
}

fn update(task_id: &str, state: ExecutorState, timestamp_ns: i64) -> pb::TaskUpdate {
    pb::TaskUpdate {
        task_id: task_id.to_owned(),
        stage: state.to_wire() as i32,
        timestamp_ns,
        ..Default::default()
    }
}

async fn report<E>(context: &Context<E>, mut update: pb::TaskUpdate) {
    // The runner's span is current here: its W3C context goes with the update.
    update.trace_context = rap_proto::trace_context::current_map();
    tracing::info!(
        task = %update.task_id,
        stage = ?pb::ExecutorState::try_from(update.stage).unwrap_or_default(),
        complete = update.complete,
        "task update"
    );
    // The outbox is the only way out; if the disk refuses, retry until it accepts (an update
    // must not be lost), backing off.
    let mut delay = FIRST_BACKOFF;
    while let Err(error) = context.outbox.push(update.clone()).await {
        tracing::error!(task = %update.task_id, %error, "cannot queue a task update");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

async fn report_final<E>(context: &Context<E>, task_id: &str, status: &JobStatus) {
    let mut final_update = update(task_id, status.state, status.timestamp_ns);
    final_update.complete = true;
    if let Some(metadata) = &status.metadata {
        final_update.timestamp_ns = metadata.timestamp_ns;
        final_update.results = Some(pb::task_update::Results::Job(metadata::redact(metadata)));
    }
    report(context, final_update).await;
}

async fn report_invalid<E>(context: Arc<Context<E>>, task_id: String, message: String) {
    tracing::error!(task = %task_id, %message, "refusing an invalid task");
    let mut final_update = update(&task_id, ExecutorState::Error, clock::now_ns());
    final_update.complete = true;
    final_update.results = Some(pb::task_update::Results::Job(pb::RunJobResults {
        error: Some(pb::TaskError {
            kind: pb::ErrorKind::Fatal as i32,
            message,
        }),
        timestamp_ns: final_update.timestamp_ns,
        ..Default::default()
    }));
    report(&context, final_update).await;
}

/// Kills the job's container if it runs and removes it and the job directory, filing nothing.
async fn discard_job<E: Executor>(context: &Context<E>, job: &JobDefinition) {
    let executor = &context.executor;
    let discarded = async {
        executor.terminate(job).await?;
        executor.cleanup(job).await
    };
    match discarded.await {
        Ok(()) => tracing::info!(job = %job.id, "lease moved to another agent: job discarded"),
        // Left for an operator: the controller already gave the task to another agent.
        Err(error) => tracing::error!(job = %job.id, %error, "discarding the job failed"),
    }
}

/// Resolves when the stop signal is raised (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

enum Outcome {
    Done,
    Stopped,
}

async fn run_job<E: Executor>(
    context: Arc<Context<E>>,
    task_id: String,
    job: JobDefinition,
    mut stop: watch::Receiver<bool>,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    let slots = if job.allow_database_access {
        context.db_slots.clone()
    } else {
        context.job_slots.clone()
    };
    let _slot = tokio::select! {
        slot = slots.acquire_owned() => slot.ok(),
        () = stopped(&mut stop) => return,
    };
    let mut failures = 0;
    let mut delay = FIRST_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        let error = match drive_job(&context, &task_id, &job, &mut stop).await {
            Ok(Outcome::Done | Outcome::Stopped) => return,
            Err(error) => error,
        };
        failures += 1;
        tracing::warn!(task = %task_id, job = %job.id, %error, fatal = error.is_fatal(), failures, "job step failed");
        if error.is_fatal() || failures > MAX_RETRIES {
            match finish_with_error(&context, &task_id, &job, &error).await {
                Ok(()) => return,
                Err(again) => {
                    tracing::error!(task = %task_id, error = %again, "recording the failure failed")
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// Records a failed job (metadata with the error, so a restart reports the same result),
/// cleans up and reports ERROR.
async fn finish_with_error<E: Executor>(
    context: &Context<E>,
    task_id: &str,
    job: &JobDefinition,
    error: &ExecutorError,
) -> Result<(), ExecutorError> {
    let status = context
        .executor
        .finalize(job, false, Some(error.to_recorded()))
        .await?;
    context.executor.cleanup(job).await?;
    report_final(context, task_id, &status).await;
    Ok(())
}

/// Walks the job from its observed state to the end (spec §4.1), one step per observed state.
/// Each executor step runs in its own child span of the task's span (`prepare`, `execute`,
/// `wait_for_exit`, `finalize`), so a job's trace shows where the agent spent its time.
async fn drive_job<E: Executor>(
    context: &Context<E>,
    task_id: &str,
    job: &JobDefinition,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome, ExecutorError> {
    let executor = &context.executor;
    let mut status = executor.get_status(job, false).await?;
    let mut last_reported: Option<ExecutorState> = None;
    // Six steps take a job from UNKNOWN to FINALIZED; more means a step made no progress.
    for _ in 0..12 {
        let step = run_job_step(status.state);
        tracing::debug!(task = %task_id, state = status.state.as_str(), ?step, "job step");
        match step {
            Step::Prepare => {
                report(
                    context,
                    update(task_id, ExecutorState::Preparing, clock::now_ns()),
                )
                .await;
                status = executor
                    .prepare(job)
                    .instrument(tracing::info_span!("prepare"))
                    .await?;
            }
            Step::Execute => {
                if *stop.borrow() {
                    return Ok(Outcome::Stopped);
                }
                status = executor
                    .execute(job)
                    .instrument(tracing::info_span!("execute"))
                    .await?;
                if status.state == ExecutorState::Executed {
                    // It already finished: still say it ran (the reference posts `executing`
                    // after every start), with the time we saw it start by.
                    let started = update(task_id, ExecutorState::Executing, clock::now_ns());
                    report(context, started).await;
                    last_reported = Some(ExecutorState::Executing);
                }
            }
            Step::AwaitExit => {
                if last_reported != Some(ExecutorState::Executing) {
                    report(context, update(task_id, status.state, status.timestamp_ns)).await;
                    last_reported = Some(ExecutorState::Executing);
                }
                tokio::select! {
                    waited = executor
                        .wait_for_exit(job)
                        .instrument(tracing::info_span!("wait_for_exit")) => status = waited?,
                    () = stopped(stop) => return Ok(Outcome::Stopped),
                }
                continue;
            }
            Step::Terminate => unreachable_step(),
            Step::Finalize => {
                report(
                    context,
                    update(task_id, ExecutorState::Finalizing, clock::now_ns()),
                )
                .await;
                status = executor
                    .finalize(job, false, None)
                    .instrument(tracing::info_span!("finalize"))
                    .await?;
                executor.cleanup(job).await?;
                report_final(context, task_id, &status).await;
                return Ok(Outcome::Done);
            }
            Step::ReportFinal => {
                executor.cleanup(job).await?;
                report_final(context, task_id, &status).await;
                return Ok(Outcome::Done);
            }
        }
        // RUNJOB never reports EXECUTED (spec §4.1: executing, then finalizing).
        let reportable = !status.state.is_final() && status.state != ExecutorState::Executed;
        if last_reported != Some(status.state) && reportable {
            report(context, update(task_id, status.state, status.timestamp_ns)).await;
            last_reported = Some(status.state);
        }
    }
    Err(ExecutorError::Blocking(format!(
        "job {} made no progress from state {}",
        job.id,
        status.state.as_str()
    )))
}

/// `run_job_step` never answers `Terminate`; keep the match total without a panic.
fn unreachable_step() {
    tracing::error!("the RUNJOB decision asked to terminate; ignoring");
}

async fn cancel_job<E: Executor>(
    context: Arc<Context<E>>,
    task_id: String,
    job: JobDefinition,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    let mut delay = FIRST_BACKOFF;
    loop {
        match drive_cancel(&context, &task_id, &job).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(task = %task_id, job = %job.id, %error, "cancel step failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The CANCELJOB flow (spec §4.1): report the observed state, kill a running container,
/// finalize as cancelled (no outputs filed), clean up, report FINALIZED.
async fn drive_cancel<E: Executor>(
    context: &Context<E>,
    task_id: &str,
    job: &JobDefinition,
) -> Result<(), ExecutorError> {
    let executor = &context.executor;
    let mut status = executor.get_status(job, true).await?;
    if status.state == ExecutorState::Unknown {
        // Finished under its RUNJOB task already (and cleaned up): report that result rather
        // than overwriting it with a cancelled one.
        let mut any_task = job.clone();
        any_task.task_id = String::new();
        let earlier = executor.get_status(&any_task, true).await?;
        if earlier.state.is_final() {
            report_final(context, task_id, &earlier).await;
            return Ok(());
        }
    }
    report(context, update(task_id, status.state, status.timestamp_ns)).await;
    if cancel_job_step(status.state) == Step::Terminate {
        status = executor.terminate(job).await?;
        report(context, update(task_id, status.state, status.timestamp_ns)).await;
    }
    if cancel_job_step(status.state) == Step::Finalize {
        status = executor.finalize(job, true, None).await?;
    }
    executor.cleanup(job).await?;
    report_final(context, task_id, &status).await;
    Ok(())
}

/// A DBSTATUS or DBDATACHECK task's definition.
enum DbCheck {
    Status(pb::DbStatusDefinition),
    Data(pb::DbDataCheckDefinition),
}

async fn run_db_check<E: DbChecks>(context: Arc<Context<E>>, task_id: String, check: DbCheck) {
    let outcome = match &check {
        DbCheck::Status(definition) => context.executor.db_status(definition).await,
        DbCheck::Data(definition) => context.executor.db_data_check(definition).await,
    };
    let (status, error) = match outcome {
        Ok(status) => (status, None),
        Err(error) => (
            String::new(),
            Some(pb::TaskError {
                kind: if error.is_fatal() {
                    pb::ErrorKind::Fatal as i32
                } else {
                    pb::ErrorKind::Retryable as i32
                },
                message: error.public_message(),
            }),
        ),
    };
    let results = match check {
        DbCheck::Status(_) => {
            pb::task_update::Results::DbStatus(pb::DbStatusResults { status, error })
        }
        DbCheck::Data(_) => {
            pb::task_update::Results::DbDataCheck(pb::DbDataCheckResults { status, error })
        }
    };
    // As the reference: stage "" (unspecified), complete, no timestamp of a stage.
    let final_update = pb::TaskUpdate {
        task_id,
        stage: pb::ExecutorState::Unspecified as i32,
        complete: true,
        timestamp_ns: clock::now_ns(),
        results: Some(results),
        ..Default::default()
    };
    report(&context, final_update).await;
}
