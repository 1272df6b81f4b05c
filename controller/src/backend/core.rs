//! The decisions of a backend's actor: job creation against the store, cancellation, agent
//! updates and connections, operator flags, and the scheduling pass (spec §3.4–§3.10).
//!
//! Every method applies one transition as one atomic store write. Effects that leave the
//! process (agent pushes, watch events) are queued and performed by the actor after the flush.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::config::{BackendConfig, Config};
use crate::jobs::create::{
    self, CreateError, CreateOutcome, JobRequest, check_codelists, create_jobs,
};
use crate::jobs::project::Project;
use crate::jobs::state::{CodeChange, ExecutorStage, State, StatusCode, messages, set_code};
use crate::jobs::{Job, JobId, RapId};
use crate::store::{Change, Flag, Store, StoreError, WriteBatch};
use crate::tasks::{
    ErrorKind, JobDefinition, RunJobResults, Task, TaskDefinition, TaskResults, TaskType,
    TaskUpdate, canceljob_task_id, runjob_attempt, runjob_task_id,
};
use crate::watch::WatchHub;

use super::spans;

/// Flag ids (§3.9).
pub mod flags {
    pub const PAUSED: &str = "paused";
    pub const MODE: &str = "mode";
    pub const MANUAL_DB_MAINTENANCE: &str = "manual-db-maintenance";
    pub const DB_CHECKS_DISABLED: &str = "db-maintenance-checks-disabled";
    pub const LAST_SEEN: &str = "last-seen-at";
    pub const DB_MAINTENANCE: &str = "db-maintenance";
    /// The latest DBDATACHECK result: `OK`, `FAILED` or `ERROR`; its time is when it arrived.
    pub const DATA_CHECK: &str = "data-check";
    /// Why the latest DBDATACHECK could not run (with `ERROR`).
    pub const DATA_CHECK_ERROR: &str = "data-check-error";
}

/// Level 4 limits sent with every job (§1.5).
const LEVEL4_MAX_FILESIZE: u64 = 16 * 1024 * 1024;
const LEVEL4_MAX_CSV_ROWS: u64 = 5000;
const LEVEL4_FILE_TYPES: [&str; 11] = [
    ".csv", ".html", ".jpeg", ".jpg", ".json", ".log", ".md", ".png", ".svg", ".svgz", ".txt",
];

/// A backend's failure, with the reference's error class and details where users see it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("Jobs already created for rap_id '{0}' are inconsistent with request data")]
    Inconsistent(String),
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error("No jobs found for rap_id {0}")]
    JobsNotFound(String),
    #[error("Jobs matching requested cancelled actions could not be found: {}", .0.join(","))]
    ActionsNotFound(Vec<String>),
    #[error("Unknown task '{0}'")]
    UnknownTask(String),
    #[error("{0}")]
    Storage(String),
    #[error("the backend is shutting down")]
    Stopped,
}

impl From<StoreError> for BackendError {
    fn from(e: StoreError) -> Self {
        BackendError::Storage(e.to_string())
    }
}

/// What a submit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    Created(u32),
    NoChange(u32),
    NothingToDo(&'static str),
}

/// What a cancel did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelOutcome {
    pub count: u32,
}

/// What the actor pushes to an agent connection.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentCommand {
    Task(Box<Task>),
    Revoke(String),
    /// The task's lease moved to another agent: the former lessee stops it and discards its
    /// work.
    LeaseMoved(String),
}

/// A task as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSummary {
    pub id: String,
    pub backend: String,
    pub task_type: TaskType,
    pub active: bool,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub agent_stage: String,
    pub agent_complete: bool,
    pub leased_to: String,
}

/// What applied transitions owe the outside world once they are durable: watch changes up to
/// a cursor, and pushes to agent connections. Effects of several batches merge in order.
#[derive(Default)]
pub struct Effects {
    /// The highest change-log cursor written.
    cursor: Option<u64>,
    /// (connection id, command), in the order queued.
    outbox: Vec<(u64, AgentCommand)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.cursor.is_none() && self.outbox.is_empty()
    }

    /// Append `later`'s effects after these.
    pub fn merge(&mut self, later: Effects) {
        self.cursor = later.cursor.or(self.cursor);
        self.outbox.extend(later.outbox);
    }
}

struct AgentConnection {
    id: u64,
    agent_id: String,
    tx: mpsc::Sender<AgentCommand>,
}

/// The state a backend's actor owns.
pub struct Core {
    backend: BackendConfig,
    registry: String,
    max_task_attempts: u32,
    projects_with_event_level_access: Vec<String>,
    store: Arc<Store>,
    hub: WatchHub,
    flags: BTreeMap<String, Flag>,
    agents: Vec<AgentConnection>,
    next_connection: u64,
    /// What the transitions applied since the last [`Core::take_effects`] owe the outside world.
    effects: Effects,
    /// When a task of each scheduled type (DBSTATUS, DBDATACHECK) last completed on an agent
    /// (UNIX seconds). Deactivated tasks do not count: a check suspended by maintenance runs
    /// again as soon as it may.
    last_scheduled: HashMap<TaskType, i64>,
    /// Jobs to visit on the next incremental pass.
    dirty: std::collections::HashSet<JobId>,
    full_pass_needed: bool,
    finished_in_pass: bool,
    /// Weights of running jobs per pool, and running jobs per workspace (kept in step by
    /// `count_transition`, rebuilt on every full pass).
    usage: Usage,
    running_per_workspace: HashMap<String, u32>,
    /// Active tasks leased to each agent.
    leases: HashMap<String, usize>,
    /// How long an agent may be away before its tasks are offered to other agents.
    lease_grace: Duration,
    /// Agents that may hold leases but have no connection, and since when.
    absent_since: HashMap<String, Instant>,
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn now_s() -> i64 {
    now_ns() / 1_000_000_000
}

impl Core {
    /// Load a backend's flags and task history.
    ///
    /// # Errors
    /// Storage failures.
    pub fn new(
        config: &Config,
        backend: &BackendConfig,
        store: Arc<Store>,
        hub: WatchHub,
    ) -> Result<Core, StoreError> {
        let flags = store.flags(&backend.name)?;
        let mut last_scheduled: HashMap<TaskType, i64> = HashMap::new();
        for task in store.all_tasks(&backend.name)? {
            if let (TaskType::DbStatus | TaskType::DbDataCheck, true, Some(finished)) =
                (task.task_type, task.agent_complete, task.finished_at)
            {
                let last = last_scheduled.entry(task.task_type).or_default();
                *last = (*last).max(finished);
            }
        }
        // After a restart no agent is connected yet: each lessee's grace starts now.
        let started = Instant::now();
        let absent_since = store
            .active_tasks(&backend.name)?
            .into_iter()
            .filter_map(|t| t.leased_to)
            .map(|agent| (agent, started))
            .collect();
        Ok(Core {
            backend: backend.clone(),
            registry: config.docker_registry.clone(),
            max_task_attempts: config.max_task_attempts,
            projects_with_event_level_access: config.projects_with_event_level_access.clone(),
            store,
            hub,
            flags,
            agents: Vec::new(),
            next_connection: 1,
            effects: Effects::default(),
            last_scheduled,
            dirty: std::collections::HashSet::new(),
            full_pass_needed: true,
            finished_in_pass: false,
            usage: Usage::default(),
            running_per_workspace: HashMap::new(),
            leases: HashMap::new(),
            lease_grace: Duration::from_secs(config.agent_lease_grace_s),
            absent_since,
        })
    }

    pub fn name(&self) -> &str {
        &self.backend.name
    }

    fn write(&mut self, batch: &WriteBatch) -> Result<Vec<Change>, BackendError> {
        let hub = self.hub.clone();
        let changes = self
            .store
            .write_then(batch, &mut |changes| hub.stage(changes))?;
        if let Some(last) = changes.last() {
            self.effects.cursor = Some(last.cursor);
        }
        Ok(changes)
    }

    /// Hand over the effects of everything applied so far; perform them with
    /// [`Core::perform`] once a flush that began after this call has succeeded.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// Release the watch changes and push the tasks and revocations of durable transitions.
    /// A command for a connection that has since closed or been replaced is dropped: the
    /// agent's next connection is sent every active task leased to it. An agent whose channel
    /// is full or closed is disconnected; it gets everything again when it reconnects.
    pub fn perform(&mut self, effects: Effects) {
        if let Some(cursor) = effects.cursor {
            self.hub.release(cursor);
        }
        for (connection, command) in effects.outbox {
            let Some(index) = self.agents.iter().position(|a| a.id == connection) else {
                continue;
            };
            if self.agents[index].tx.try_send(command).is_err() {
                let agent_id = self.agents.remove(index).agent_id;
                tracing::warn!(backend = %self.backend.name, %agent_id, "agent stream full or closed; disconnecting it");
                self.absent_since.insert(agent_id, Instant::now());
            }
        }
    }

    /// Queue `command` for the agent's current connection, if it has one (otherwise its next
    /// connection is sent every active task leased to it, and no revoked one).
    fn send_later(&mut self, agent_id: &str, command: AgentCommand) {
        if let Some(connection) = self.agents.iter().find(|a| a.agent_id == agent_id) {
            self.effects.outbox.push((connection.id, command));
        }
    }

    fn flag_value(&self, id: &str) -> Option<&str> {
        self.flags.get(id).and_then(|f| f.value.as_deref())
    }

    fn is_paused(&self) -> bool {
        self.flag_value(flags::PAUSED)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn in_db_maintenance(&self) -> bool {
        self.flag_value(flags::MODE) == Some(flags::DB_MAINTENANCE)
    }

    /// A flag change for the batch; the timestamp moves only when the value changes (§2.6).
    fn flag_change(&mut self, id: &str, value: Option<&str>, batch: &mut WriteBatch) {
        let current = self.flags.get(id);
        // The time of these two is when the value was last reported, not when it last changed.
        let refreshed = id == flags::LAST_SEEN || id == flags::DATA_CHECK;
        if current.is_some_and(|f| f.value.as_deref() == value) && !refreshed {
            return;
        }
        let flag = Flag {
            value: value.map(str::to_string),
            timestamp: now_s(),
        };
        self.flags.insert(id.to_string(), flag.clone());
        batch
            .flags
            .push((self.backend.name.clone(), id.to_string(), flag));
    }

    // ---------------------------------------------------------------------------------------
    // Requests.

    /// §2.3 step 3 and §3.5 steps 4–10.
    ///
    /// # Errors
    /// Inconsistent data, creation rules, storage.
    pub fn submit(
        &mut self,
        request: &JobRequest,
        project: &Project,
    ) -> Result<SubmitOutcome, BackendError> {
        // Checked again here, serialised with other submits, so a retried request racing its
        // first attempt cannot create jobs twice.
        if let Some(outcome) = idempotency(&self.store, request)? {
            return Ok(outcome);
        }
        let existing = self
            .store
            .existing_jobs(&self.backend.name, &request.workspace)?;
        let rules = create::RequestRules {
            backends: vec![self.backend.name.clone()],
            allowed_github_orgs: vec![],
            allow_local_repos: false,
            projects_with_event_level_access: self.projects_with_event_level_access.clone(),
        };
        let jobs = match create_jobs(request, project, &existing, &rules, now_ns())? {
            CreateOutcome::NothingToDo(details) => return Ok(SubmitOutcome::NothingToDo(details)),
            CreateOutcome::Created(jobs) => jobs,
        };
        check_codelists(request, &jobs)?;
        let count = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
        self.dirty.extend(jobs.iter().map(|j| j.id.clone()));
        self.write(&WriteBatch {
            jobs,
            ..Default::default()
        })?;
        Ok(SubmitOutcome::Created(count))
    }

    /// §2.4: flag the named actions' jobs cancelled, whatever their state.
    ///
    /// # Errors
    /// No jobs for the request on this backend, or actions with no job.
    pub fn cancel(
        &mut self,
        rap_id: &RapId,
        actions: &[String],
    ) -> Result<CancelOutcome, BackendError> {
        let jobs: Vec<Job> = self
            .store
            .jobs_for_rap(rap_id.as_str())?
            .into_iter()
            .filter(|j| j.backend == self.backend.name)
            .collect();
        if jobs.is_empty() {
            return Err(BackendError::JobsNotFound(rap_id.to_string()));
        }
        let mut not_found: Vec<String> = actions
            .iter()
            .filter(|a| !jobs.iter().any(|j| &j.action == *a))
            .cloned()
            .collect();
        if !not_found.is_empty() {
            not_found.sort();
            not_found.dedup();
            return Err(BackendError::ActionsNotFound(not_found));
        }
        let now = now_s();
        let mut batch = WriteBatch::default();
        for mut job in jobs {
            if actions.contains(&job.action) && !job.cancelled {
                self.dirty.insert(job.id.clone());
                job.cancelled = true;
                job.status.completed_at = Some(now);
                batch.jobs.push(job);
            }
        }
        self.write(&batch)?;
        Ok(CancelOutcome {
            count: u32::try_from(actions.len()).unwrap_or(u32::MAX),
        })
    }

    // ---------------------------------------------------------------------------------------
    // Agents.

    /// Register a connection and queue every active task leased to the agent (DBSTATUS first,
    /// §1.3), leasing unleased tasks to it.
    ///
    /// # Errors
    /// Storage failures.
    pub fn connect(
        &mut self,
        agent_id: &str,
    ) -> Result<(u64, mpsc::Receiver<AgentCommand>), BackendError> {
        self.agents.retain(|a| a.agent_id != agent_id);
        self.absent_since.remove(agent_id);
        let mut tasks = self.store.active_tasks(&self.backend.name)?;
        let mut batch = WriteBatch::default();
        for task in &mut tasks {
            if task.leased_to.is_none() {
                task.leased_to = Some(agent_id.to_string());
                batch.tasks.push(task.clone());
            }
        }
        self.flag_change(flags::LAST_SEEN, Some("connected"), &mut batch);
        self.write(&batch)?;
        self.leases.clear();
        for task in &tasks {
            if let Some(agent) = &task.leased_to {
                *self.leases.entry(agent.clone()).or_default() += 1;
            }
        }
        tasks.retain(|t| t.leased_to.as_deref() == Some(agent_id));
        tasks.sort_by_key(|t| (t.task_type != TaskType::DbStatus, t.id.clone()));
        let (tx, rx) = mpsc::channel((tasks.len() + 64).max(1024));
        for task in tasks {
            // Cannot fail: the channel is new and larger than the task list.
            let _ = tx.try_send(AgentCommand::Task(Box::new(task)));
        }
        let id = self.next_connection;
        self.next_connection += 1;
        self.agents.push(AgentConnection {
            id,
            agent_id: agent_id.to_string(),
            tx,
        });
        tracing::info!(backend = %self.backend.name, %agent_id, "agent connected");
        Ok((id, rx))
    }

    /// Forget a closed connection; the agent's leases expire unless it returns within the
    /// grace period.
    pub fn disconnect(&mut self, connection: u64) {
        if let Some(index) = self.agents.iter().position(|a| a.id == connection) {
            let agent = self.agents.remove(index);
            self.absent_since.insert(agent.agent_id, Instant::now());
        }
    }

    /// Offer the active tasks of agents absent for the whole grace period to the least busy
    /// connected agent (or to whichever agent connects next, when none is). An agent that
    /// returns later gets only what is still leased to it, and its updates for tasks now leased
    /// to another agent are ignored.
    ///
    /// # Errors
    /// Storage failures.
    pub fn expire_leases(&mut self, now: Instant) -> Result<(), BackendError> {
        let grace = self.lease_grace;
        let expired: Vec<String> = self
            .absent_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= grace)
            .map(|(agent, _)| agent.clone())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        for agent in &expired {
            self.absent_since.remove(agent);
        }
        let mut batch = WriteBatch::default();
        for mut task in self.store.active_tasks(&self.backend.name)? {
            let Some(holder) = task.leased_to.clone() else {
                continue;
            };
            if !expired.contains(&holder) {
                continue;
            }
            self.unlease(&task);
            task.leased_to = None;
            // Update ids are the lessee's own sequence; the new lessee starts its own.
            task.last_update_id = 0;
            self.lease(&mut task);
            tracing::warn!(
                backend = %self.backend.name,
                task_id = %task.id,
                from = %holder,
                to = task.leased_to.as_deref().unwrap_or("the next agent to connect"),
                grace_s = grace.as_secs(),
                "agent did not return within the lease grace period; task offered to another agent"
            );
            batch.tasks.push(task);
        }
        self.write(&batch)?;
        Ok(())
    }

    /// Apply a task update (§1.3); repeated update ids are acknowledged without effect.
    ///
    /// # Errors
    /// The task does not exist on this backend.
    pub fn update(&mut self, agent_id: &str, update: &TaskUpdate) -> Result<(), BackendError> {
        let Some(mut task) = self.store.task(&update.task_id)? else {
            return Err(BackendError::UnknownTask(update.task_id.clone()));
        };
        if task.backend != self.backend.name {
            return Err(BackendError::UnknownTask(update.task_id.clone()));
        }
        let mut batch = WriteBatch::default();
        self.flag_change(flags::LAST_SEEN, Some(agent_id), &mut batch);
        if let Some(holder) = task
            .leased_to
            .as_deref()
            .filter(|holder| *holder != agent_id)
        {
            // The lease expired and moved on: the task's outcome is the new lessee's to report.
            tracing::warn!(
                backend = %self.backend.name,
                task_id = %task.id,
                %agent_id,
                lessee = %holder,
                "update from an agent that no longer holds the task's lease; ignored, and the \
                 agent told to stop the task"
            );
            let stale_task = task.id.clone();
            self.send_later(agent_id, AgentCommand::LeaseMoved(stale_task));
            self.write(&batch)?;
            return Ok(());
        }
        if update.update_id != 0 && update.update_id <= task.last_update_id {
            self.write(&batch)?;
            return Ok(());
        }
        task.last_update_id = update.update_id.max(task.last_update_id);
        task.agent_stage = update.stage;
        if update.results.is_some() {
            task.agent_results = update.results.clone();
        }
        task.agent_complete = update.complete;
        if update.timestamp_ns > 0 {
            task.agent_timestamp_ns = Some(update.timestamp_ns);
        }
        if update.complete && task.active {
            self.unlease(&task);
            task.active = false;
            task.finished_at = Some(now_s());
        }
        match &task.definition {
            TaskDefinition::Job(definition) => {
                self.dirty.insert(JobId::from_stored(definition.id.clone()));
            }
            TaskDefinition::DbStatus { .. } => self.full_pass_needed = true,
            TaskDefinition::DbDataCheck { .. } => {}
        }
        if update.complete && matches!(task.task_type, TaskType::DbStatus | TaskType::DbDataCheck) {
            self.last_scheduled.insert(task.task_type, now_s());
        }
        if update.complete {
            match &update.results {
                Some(TaskResults::DbStatus {
                    status,
                    error: None,
                }) if self.flag_value(flags::MANUAL_DB_MAINTENANCE) != Some("on") => {
                    let value = status.clone();
                    self.flag_change(flags::MODE, Some(&value), &mut batch);
                }
                // The controller only records the data check (§1.4): it changes no job.
                Some(TaskResults::DbDataCheck { status, error }) => {
                    let (status, error) = match error {
                        None => (status.as_str(), None),
                        Some(error) => ("ERROR", Some(error.message.as_str())),
                    };
                    self.flag_change(flags::DATA_CHECK, Some(status), &mut batch);
                    self.flag_change(flags::DATA_CHECK_ERROR, error, &mut batch);
                }
                _ => {}
            }
        }
        batch.tasks.push(task);
        self.write(&batch)?;
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Operators.

    /// # Errors
    /// Storage failures.
    pub fn set_paused(&mut self, paused: bool) -> Result<String, BackendError> {
        self.full_pass_needed = true;
        let mut batch = WriteBatch::default();
        self.flag_change(flags::PAUSED, paused.then_some("true"), &mut batch);
        self.write(&batch)?;
        Ok(format!(
            "[{}] paused={}",
            self.backend.name,
            if paused { "true" } else { "" }
        ))
    }

    /// # Errors
    /// Storage failures.
    pub fn set_db_maintenance(&mut self, on: bool) -> Result<String, BackendError> {
        self.full_pass_needed = true;
        let mut batch = WriteBatch::default();
        if on {
            self.flag_change(flags::MODE, Some(flags::DB_MAINTENANCE), &mut batch);
            self.flag_change(flags::MANUAL_DB_MAINTENANCE, Some("on"), &mut batch);
        } else {
            self.flag_change(flags::MODE, None, &mut batch);
            self.flag_change(flags::MANUAL_DB_MAINTENANCE, None, &mut batch);
            self.flag_change(flags::DB_CHECKS_DISABLED, None, &mut batch);
        }
        self.write(&batch)?;
        Ok(format!(
            "[{}] db-maintenance {}",
            self.backend.name,
            if on { "on" } else { "off" }
        ))
    }

    /// # Errors
    /// Storage failures.
    pub fn prepare_for_reboot(&mut self) -> Result<String, BackendError> {
        self.full_pass_needed = true;
        let mut batch = WriteBatch::default();
        self.flag_change(flags::PAUSED, Some("true"), &mut batch);
        self.write(&batch)?;
        let mut count = 0;
        for job in self.store.active_jobs(&self.backend.name)? {
            if job.state() != State::Running {
                continue;
            }
            let mut batch = WriteBatch::default();
            let job = self.cancel_tasks(job, &mut batch)?;
            self.set_code_into(
                job,
                StatusCode::WaitingOnReboot,
                messages::WAITING_ON_REBOOT,
                None,
                &mut batch,
            );
            self.write(&batch)?;
            count += 1;
        }
        Ok(format!(
            "[{}] paused; {count} running job(s) returned to pending",
            self.backend.name
        ))
    }

    /// # Errors
    /// The task does not exist on this backend.
    pub fn kill_task(&mut self, task_id: &str) -> Result<String, BackendError> {
        self.full_pass_needed = true;
        let Some(mut task) = self.store.task(task_id)? else {
            return Err(BackendError::UnknownTask(task_id.to_string()));
        };
        if task.backend != self.backend.name {
            return Err(BackendError::UnknownTask(task_id.to_string()));
        }
        let mut batch = WriteBatch::default();
        if task.active {
            self.unlease(&task);
            task.active = false;
            task.finished_at = Some(now_s());
            if let Some(agent) = &task.leased_to {
                self.send_later(agent, AgentCommand::Revoke(task.id.clone()));
            }
            batch.tasks.push(task.clone());
        }
        if let TaskDefinition::Job(definition) = &task.definition {
            let id = JobId::from_stored(definition.id.clone());
            if let Some(job) = self.store.job(&id)?
                && job.state().is_active()
            {
                self.set_code_into(
                    job,
                    StatusCode::KilledByAdmin,
                    messages::KILLED_BY_ADMIN,
                    None,
                    &mut batch,
                );
            }
        }
        self.write(&batch)?;
        Ok(format!("[{}] task {task_id} killed", self.backend.name))
    }

    /// # Errors
    /// Storage failures.
    pub fn list_tasks(&mut self, include_inactive: bool) -> Result<Vec<TaskSummary>, BackendError> {
        let tasks = if include_inactive {
            self.store.all_tasks(&self.backend.name)?
        } else {
            self.store.active_tasks(&self.backend.name)?
        };
        Ok(tasks
            .into_iter()
            .map(|t| TaskSummary {
                id: t.id,
                backend: t.backend,
                task_type: t.task_type,
                active: t.active,
                created_at: t.created_at,
                finished_at: t.finished_at,
                agent_stage: t.agent_stage.as_str().to_string(),
                agent_complete: t.agent_complete,
                leased_to: t.leased_to.unwrap_or_default(),
            })
            .collect())
    }

    // ---------------------------------------------------------------------------------------
    // The scheduling pass (§3.4).

    /// Visit the active jobs that may have changed, in the reference's order: every active job
    /// on a full pass (start-up, the periodic tick, a flag or agent change, or after a job
    /// finished, which can unblock others); otherwise only the jobs touched since the last pass
    /// (new jobs, jobs whose task was updated, cancelled jobs). Repeats until no job finishes,
    /// so a chain of dependency failures resolves in one call.
    ///
    /// # Errors
    /// Storage failures (the pass stops; the next one retries).
    pub fn pass(&mut self) -> Result<(), BackendError> {
        loop {
            let full = std::mem::take(&mut self.full_pass_needed);
            self.finished_in_pass = false;
            let jobs = if full {
                self.expire_leases(Instant::now())?;
                self.dirty.clear();
                let jobs = self.store.active_jobs(&self.backend.name)?;
                self.recount(&jobs);
                jobs
            } else {
                let mut jobs = Vec::new();
                for id in std::mem::take(&mut self.dirty) {
                    if let Some(job) = self.store.job(&id)?
                        && job.state().is_active()
                    {
                        jobs.push(job);
                    }
                }
                jobs
            };
            self.visit(jobs)?;
            if full {
                self.schedule_regular_tasks()?;
            }
            if !self.finished_in_pass {
                return Ok(());
            }
            self.full_pass_needed = true;
        }
    }

    /// Ask for a full pass next time (flags, agents, the periodic tick).
    pub fn want_full_pass(&mut self) {
        self.full_pass_needed = true;
    }

    /// Rebuild the running-job counters from the active jobs.
    fn recount(&mut self, jobs: &[Job]) {
        self.usage = Usage::default();
        self.running_per_workspace.clear();
        for job in jobs.iter().filter(|j| j.state() == State::Running) {
            *self
                .running_per_workspace
                .entry(job.workspace.clone())
                .or_default() += 1;
            self.usage.add(
                job.requires_db,
                self.backend.weight(&job.workspace, &job.action),
            );
        }
    }

    /// Decide every job, then write all the decisions in one transaction (one per job made
    /// the pass the actor's main cost). Later decisions see earlier ones through
    /// [`Core::current_job`]. After a failure what was decided is still written, so the store
    /// stays in step with the in-memory counters.
    fn visit(&mut self, jobs: Vec<Job>) -> Result<(), BackendError> {
        let mut batch = WriteBatch::default();
        let decided = self.decide(jobs, &mut batch);
        self.write(&batch)?;
        decided
    }

    fn decide(&mut self, jobs: Vec<Job>, batch: &mut WriteBatch) -> Result<(), BackendError> {
        let (running, pending): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.state() == State::Running);
        for job in running {
            self.handle_job(job, batch)?;
        }
        // Fairness: the workspace with the fewest running jobs first, then database jobs,
        // then the oldest. Counts change as jobs start, so keys are checked when popped and
        // re-queued if stale (a lazy heap: no re-sort per start).
        let mut heap = std::collections::BinaryHeap::new();
        let key = |core: &Core, job: &Job| {
            let count = core
                .running_per_workspace
                .get(&job.workspace)
                .copied()
                .unwrap_or(0);
            std::cmp::Reverse((count, !job.requires_db, job.created_at, job.id.clone()))
        };
        let mut by_id: HashMap<JobId, Job> = HashMap::new();
        for job in pending {
            heap.push(key(self, &job));
            by_id.insert(job.id.clone(), job);
        }
        while let Some(std::cmp::Reverse((count, db, created, id))) = heap.pop() {
            let Some(job) = by_id.get(&id) else { continue };
            let current = self
                .running_per_workspace
                .get(&job.workspace)
                .copied()
                .unwrap_or(0);
            if current != count {
                heap.push(std::cmp::Reverse((current, db, created, id)));
                continue;
            }
            if let Some(job) = by_id.remove(&id) {
                self.handle_job(job, batch)?;
            }
        }
        Ok(())
    }

    /// The rules of §3.4 for one job; its writes go into `batch`.
    fn handle_job(&mut self, job: Job, batch: &mut WriteBatch) -> Result<(), BackendError> {
        if job.cancelled {
            let job = self.cancel_tasks(job, batch)?;
            self.set_code_into(
                job,
                StatusCode::CancelledByUser,
                messages::CANCELLED_BY_USER,
                None,
                batch,
            )
        } else if self.is_paused() && job.state() == State::Pending {
            let code = if job.status_code() == StatusCode::WaitingOnReboot {
                StatusCode::WaitingOnReboot
            } else {
                StatusCode::WaitingPaused
            };
            let message = if code == StatusCode::WaitingOnReboot {
                job.status.status_message.clone()
            } else {
                messages::WAITING_PAUSED.to_string()
            };
            self.set_code_into(job, code, &message, None, batch)
        } else if self.in_db_maintenance() && job.requires_db {
            let job = if job.state() == State::Running {
                self.cancel_tasks(job, batch)?
            } else {
                job
            };
            self.set_code_into(
                job,
                StatusCode::WaitingDbMaintenance,
                messages::WAITING_DB_MAINTENANCE,
                None,
                batch,
            )
        } else if job.state() == State::Pending {
            self.handle_pending(job, batch)?
        } else {
            self.handle_running(job, batch)?
        };
        Ok(())
    }

    /// A job as the pass sees it: as decided earlier in `batch`, else as stored.
    fn current_job(&self, id: &JobId, batch: &WriteBatch) -> Result<Option<Job>, BackendError> {
        if let Some(job) = batch.jobs.iter().rev().find(|job| &job.id == id) {
            return Ok(Some(job.clone()));
        }
        Ok(self.store.job(id)?)
    }

    fn handle_pending(&mut self, job: Job, batch: &mut WriteBatch) -> Result<Job, BackendError> {
        let mut waiting = false;
        for id in &job.wait_for_job_ids {
            match self.current_job(id, batch)?.map(|d| d.state()) {
                Some(State::Failed) => {
                    return Ok(self.set_code_into(
                        job,
                        StatusCode::DependencyFailed,
                        messages::DEPENDENCY_FAILED,
                        None,
                        batch,
                    ));
                }
                Some(State::Succeeded) => {}
                _ => waiting = true,
            }
        }
        if waiting {
            return Ok(self.set_code_into(
                job,
                StatusCode::WaitingOnDependencies,
                messages::WAITING_ON_DEPENDENCIES,
                None,
                batch,
            ));
        }
        let weight = self.backend.weight(&job.workspace, &job.action);
        let (used, max) = if job.requires_db {
            (self.usage.db, self.backend.max_db_workers())
        } else {
            (self.usage.other, self.backend.max_workers)
        };
        if used + weight > max {
            let (code, message) = if job.requires_db {
                (
                    StatusCode::WaitingOnDbWorkers,
                    messages::WAITING_ON_DB_WORKERS,
                )
            } else if weight > 1.0 {
                (
                    StatusCode::WaitingOnWorkers,
                    messages::WAITING_ON_WORKERS_HEAVY,
                )
            } else {
                (StatusCode::WaitingOnWorkers, messages::WAITING_ON_WORKERS)
            };
            return Ok(self.set_code_into(job, code, message, None, batch));
        }

        let previous = self.runjob_tasks(&job.id)?;
        let attempts = previous.len() as u32;
        if attempts >= self.max_task_attempts {
            let reason = previous
                .last()
                .and_then(|t| match &t.agent_results {
                    Some(TaskResults::Job(r)) => r.error.as_ref().map(|e| e.message.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let message = format!(
                "{} It failed on {attempts} attempts{}",
                messages::JOB_ERROR,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            );
            return Ok(self.set_code_into(job, StatusCode::JobError, &message, None, batch));
        }
        // Every earlier task must be inactive (§3.6); deactivate any that is not.
        for mut old in previous.into_iter().filter(|t| t.active) {
            self.unlease(&old);
            old.active = false;
            old.finished_at = Some(now_s());
            if let Some(agent) = &old.leased_to {
                self.send_later(agent, AgentCommand::Revoke(old.id.clone()));
            }
            batch.tasks.push(old);
        }
        let task_id = runjob_task_id(job.id.as_str(), attempts + 1);
        let definition = self.job_definition(&job, &task_id)?;
        let task = self.new_task(
            task_id,
            TaskType::RunJob,
            TaskDefinition::Job(Box::new(definition)),
            &job,
        );
        batch.tasks.push(task);
        Ok(self.set_code_into(job, StatusCode::Initiated, messages::INITIATED, None, batch))
    }

    fn handle_running(&mut self, job: Job, batch: &mut WriteBatch) -> Result<Job, BackendError> {
        let Some(task) = self.runjob_tasks(&job.id)?.pop() else {
            // A running job always has a task; if one was lost, start again.
            return Ok(self.set_code_into(
                job,
                StatusCode::WaitingOnNewTask,
                messages::WAITING_ON_NEW_TASK,
                None,
                batch,
            ));
        };
        if !task.agent_complete {
            let code = StatusCode::from_stage(task.agent_stage).unwrap_or(job.status_code());
            // Completion is handled before FINALIZED is ever stored (§3.2).
            let code = if code == StatusCode::Finalized {
                StatusCode::Finalizing
            } else {
                code
            };
            let message = job.status.status_message.clone();
            return Ok(self.set_code_into(job, code, &message, task.agent_timestamp_ns, batch));
        }
        let results = match &task.agent_results {
            Some(TaskResults::Job(results)) => (**results).clone(),
            _ => RunJobResults {
                error: Some(crate::tasks::TaskError {
                    kind: ErrorKind::Retryable,
                    message: "the agent completed the task without results".into(),
                }),
                ..Default::default()
            },
        };
        let mut job = job;
        if results.metrics.is_some() {
            job.metrics = results.metrics;
        }
        if let Some(error) = &results.error {
            return Ok(match error.kind {
                ErrorKind::Fatal => {
                    let message = if error.message.is_empty() {
                        messages::JOB_ERROR.to_string()
                    } else {
                        error.message.clone()
                    };
                    self.set_code_into(
                        job,
                        StatusCode::JobError,
                        &message,
                        task.agent_timestamp_ns,
                        batch,
                    )
                }
                ErrorKind::Retryable => self.set_code_into(
                    job,
                    StatusCode::WaitingOnNewTask,
                    messages::WAITING_ON_NEW_TASK,
                    task.agent_timestamp_ns,
                    batch,
                ),
            });
        }
        let (code, message) = completion(&job, &results);
        let at = (results.timestamp_ns > 0)
            .then_some(results.timestamp_ns)
            .or(task.agent_timestamp_ns);
        Ok(self.set_code_into(job, code, &message, at, batch))
    }

    /// The RUNJOB tasks of a job, oldest first.
    fn runjob_tasks(&self, job_id: &JobId) -> Result<Vec<Task>, BackendError> {
        let mut tasks: Vec<Task> = self
            .store
            .tasks_for_job(job_id)?
            .into_iter()
            .filter(|t| t.task_type == TaskType::RunJob && runjob_attempt(&t.id).is_some())
            .collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(tasks)
    }

    /// §3.8 step 2: deactivate the latest RUNJOB task if active and issue a CANCELJOB task.
    fn cancel_tasks(&mut self, job: Job, batch: &mut WriteBatch) -> Result<Job, BackendError> {
        let Some(mut runjob) = self.runjob_tasks(&job.id)?.pop() else {
            return Ok(job);
        };
        if !runjob.active {
            return Ok(job);
        }
        self.unlease(&runjob);
        runjob.active = false;
        runjob.finished_at = Some(now_s());
        let cancel_id = canceljob_task_id(&runjob.id);
        let definition = match &runjob.definition {
            TaskDefinition::Job(definition) => {
                let mut definition = (**definition).clone();
                definition.task_id = cancel_id.clone();
                definition.image_sha = String::new();
                definition
            }
            TaskDefinition::DbStatus { .. } | TaskDefinition::DbDataCheck { .. } => {
                self.job_definition(&job, &cancel_id)?
            }
        };
        let mut cancel = self.new_task(
            cancel_id,
            TaskType::CancelJob,
            TaskDefinition::Job(Box::new(definition)),
            &job,
        );
        // The agent running the job is the one that must stop it.
        if runjob.leased_to.is_some() {
            self.unlease(&cancel);
            cancel.leased_to = runjob.leased_to.clone();
            if let Some(agent) = &cancel.leased_to {
                *self.leases.entry(agent.clone()).or_default() += 1;
            }
            self.effects
                .outbox
                .retain(|(_, c)| !matches!(c, AgentCommand::Task(t) if t.id == cancel.id));
            if let Some(agent) = &runjob.leased_to {
                self.send_later(agent, AgentCommand::Revoke(runjob.id.clone()));
                self.send_later(agent, AgentCommand::Task(Box::new(cancel.clone())));
            }
        }
        batch.tasks.push(runjob);
        batch.tasks.push(cancel);
        Ok(job)
    }

    /// A new active task, leased to the least busy connected agent (queued for it).
    fn new_task(
        &mut self,
        id: String,
        task_type: TaskType,
        definition: TaskDefinition,
        job: &Job,
    ) -> Task {
        let mut attributes = BTreeMap::new();
        attributes.insert("user".to_string(), non_empty(&job.user));
        attributes.insert("project".to_string(), non_empty(&job.project));
        attributes.insert("orgs".to_string(), job.orgs.join(","));
        // The job's trace context travels with its task, so the agent's spans join the trace.
        for (key, value) in &job.trace_context {
            attributes.insert(key.clone(), value.clone());
        }
        let mut task = Task {
            id,
            backend: self.backend.name.clone(),
            task_type,
            definition,
            active: true,
            created_at: now_s(),
            finished_at: None,
            attributes,
            agent_stage: ExecutorStage::Unspecified,
            agent_complete: false,
            agent_results: None,
            agent_timestamp_ns: None,
            leased_to: None,
            last_update_id: 0,
        };
        self.lease(&mut task);
        task
    }

    fn lease(&mut self, task: &mut Task) {
        // The least loaded connected agent, by the active tasks leased to it (counts kept in
        // memory: rebuilt on connect, moved on every lease and deactivation).
        let Some(agent) = self
            .agents
            .iter()
            .map(|a| a.agent_id.as_str())
            .min_by_key(|a| self.leases.get(*a).copied().unwrap_or(0))
            .map(str::to_string)
        else {
            return;
        };
        *self.leases.entry(agent.clone()).or_default() += 1;
        task.leased_to = Some(agent.clone());
        self.send_later(&agent, AgentCommand::Task(Box::new(task.clone())));
    }

    /// A leased task became inactive.
    fn unlease(&mut self, task: &Task) {
        if let Some(n) = task
            .leased_to
            .as_deref()
            .and_then(|a| self.leases.get_mut(a))
        {
            *n = n.saturating_sub(1);
        }
    }

    /// The RUNJOB definition of a job (§1.5).
    fn job_definition(&self, job: &Job, task_id: &str) -> Result<JobDefinition, BackendError> {
        let words = split_command(&job.run_command);
        let image_and_tag = words.first().cloned().unwrap_or_default();
        let args = words.into_iter().skip(1).collect();
        let mut env = BTreeMap::new();
        env.insert("OPENSAFELY_BACKEND".to_string(), self.backend.name.clone());
        if job.requires_db {
            let scope = &job.analysis_scope;
            let permissions: Vec<&String> = scope
                .dataset_permissions
                .iter()
                .chain(&scope.population_permissions)
                .chain(&scope.component_access)
                .collect();
            env.insert(
                "EHRQL_PERMISSIONS".to_string(),
                serde_json::to_string(&permissions).unwrap_or_else(|_| "[]".into()),
            );
        }
        let state = self
            .store
            .workspace_state(&self.backend.name, &job.workspace)?;
        let input_job_ids = job
            .requires_outputs_from
            .iter()
            .filter_map(|action| state.get(action).map(|j| j.id.to_string()))
            .collect();
        let (repo_url, commit) = match (&job.action_repo_url, &job.action_commit) {
            (Some(url), Some(commit)) => (url.clone(), commit.clone()),
            _ => (job.repo_url.clone(), job.commit.clone()),
        };
        Ok(JobDefinition {
            id: job.id.to_string(),
            rap_id: job.rap_id.to_string(),
            task_id: task_id.to_string(),
            repo_url,
            commit,
            study_repo_url: job.repo_url.clone(),
            study_commit: job.commit.clone(),
            study_branch: job.branch.clone(),
            workspace: job.workspace.clone(),
            action: job.action.clone(),
            created_at: job.created_at,
            image: format!("{}/{image_and_tag}", self.registry.trim_end_matches('/')),
            image_sha: String::new(),
            args,
            env,
            input_job_ids,
            output_spec: job.output_spec.clone(),
            allow_database_access: job.requires_db,
            database_name: if job.requires_db {
                job.database_name.clone()
            } else {
                String::new()
            },
            user: job.user.clone(),
            cpu_count: self.backend.cpu_count,
            memory_limit: self.backend.memory_limit.clone(),
            level4_max_filesize: LEVEL4_MAX_FILESIZE,
            level4_max_csv_rows: LEVEL4_MAX_CSV_ROWS,
            level4_file_types: LEVEL4_FILE_TYPES.iter().map(|s| s.to_string()).collect(),
            requires_outputs_from: job.requires_outputs_from.clone(),
        })
    }

    /// Keep the running-job counters in step with a state change, and note a finished job
    /// (which may unblock dependents or free capacity: the pass then goes round again).
    fn count_transition(&mut self, job: &Job, from: State, to: State) {
        let weight = self.backend.weight(&job.workspace, &job.action);
        if from != State::Running && to == State::Running {
            self.usage.add(job.requires_db, weight);
            *self
                .running_per_workspace
                .entry(job.workspace.clone())
                .or_default() += 1;
        }
        if from == State::Running && to != State::Running {
            self.usage.remove(job.requires_db, weight);
            if let Some(n) = self.running_per_workspace.get_mut(&job.workspace) {
                *n = n.saturating_sub(1);
            }
            self.finished_in_pass = true;
        }
        if from.is_active() && !to.is_active() {
            self.finished_in_pass = true;
        }
    }

    /// Apply [`set_code`] and queue the job for writing when anything changed.
    fn set_code_into(
        &mut self,
        mut job: Job,
        code: StatusCode,
        message: &str,
        task_timestamp_ns: Option<i64>,
        batch: &mut WriteBatch,
    ) -> Job {
        match set_code(&job.status, code, message, task_timestamp_ns, now_ns()) {
            CodeChange::Changed {
                status,
                left,
                left_since_ns,
                at_ns,
            } => {
                // Identifiers and codes only: never an output name (§5).
                tracing::info!(
                    target: "rap_controller::job_state",
                    job_id = %job.id,
                    job_request = %job.rap_id,
                    backend = %job.backend,
                    workspace = %job.workspace,
                    action = %job.action,
                    left = left.as_str(),
                    left_for_ms = (at_ns - left_since_ns) / 1_000_000,
                    status_code = code.as_str(),
                    state = status.state.as_str(),
                    "job status changed"
                );
                spans::record_code_left(&job, left, left_since_ns, at_ns, &status);
                self.count_transition(&job, job.status.state, status.state);
                job.status = status;
                batch.jobs.push(job.clone());
            }
            CodeChange::Refreshed(status) => {
                job.status = status;
                batch.jobs.push(job.clone());
            }
            CodeChange::Unchanged => {
                if batch.jobs.iter().all(|j| j.id != job.id)
                    && job.cancelled
                    && job.state().is_active()
                {
                    batch.jobs.push(job.clone());
                }
            }
        }
        job
    }

    /// Keep one task of each scheduled type alive while it is enabled and active (§1.4):
    /// DBSTATUS unless manual maintenance has its checks disabled, DBDATACHECK unless the
    /// database is in maintenance.
    fn schedule_regular_tasks(&mut self) -> Result<(), BackendError> {
        let checks_disabled = self.flag_value(flags::MANUAL_DB_MAINTENANCE) == Some("on")
            && self.flag_value(flags::DB_CHECKS_DISABLED) == Some("true");
        let in_maintenance = self.flag_value(flags::MODE) == Some(flags::DB_MAINTENANCE);
        let image = self.backend.db_status_image.clone();
        self.schedule_regular_task(
            self.backend.db_status_interval_s,
            !checks_disabled,
            TaskDefinition::DbStatus {
                database_name: "default".into(),
                image: image.clone(),
            },
        )?;
        self.schedule_regular_task(
            self.backend.data_check_interval_s,
            !in_maintenance,
            TaskDefinition::DbDataCheck {
                hes_expected_activity_month: self
                    .backend
                    .data_check_hes_expected_activity_month
                    .clone(),
                image,
            },
        )
    }

    /// Keep one task with `definition` alive every `interval_s` (0: never): deactivate the
    /// active ones while not `active`, else create one unless one is active or one finished
    /// within the interval.
    fn schedule_regular_task(
        &mut self,
        interval_s: u64,
        active: bool,
        definition: TaskDefinition,
    ) -> Result<(), BackendError> {
        let task_type = match definition {
            TaskDefinition::DbStatus { .. } => TaskType::DbStatus,
            TaskDefinition::DbDataCheck { .. } => TaskType::DbDataCheck,
            TaskDefinition::Job(_) => return Ok(()),
        };
        if interval_s == 0 {
            return Ok(());
        }
        let running: Vec<Task> = self
            .store
            .active_tasks(&self.backend.name)?
            .into_iter()
            .filter(|t| t.task_type == task_type)
            .collect();
        let mut batch = WriteBatch::default();
        if !active {
            for mut task in running {
                self.unlease(&task);
                task.active = false;
                task.finished_at = Some(now_s());
                batch.tasks.push(task);
            }
            self.write(&batch)?;
            return Ok(());
        }
        let recent = self
            .last_scheduled
            .get(&task_type)
            .is_some_and(|t| now_s() - t < interval_s as i64);
        if !running.is_empty() || recent {
            return Ok(());
        }
        let now = now_ns();
        let suffix = hex::encode(
            &sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(format!(
                "{}{}{now}",
                self.backend.name,
                task_type.as_str()
            )))[..10],
        );
        let id = format!(
            "{}-{}-{suffix}",
            task_type.as_str(),
            civil_date(now / 1_000_000_000)
        );
        let mut task = Task {
            id,
            backend: self.backend.name.clone(),
            task_type,
            definition,
            active: true,
            created_at: now_s(),
            finished_at: None,
            attributes: BTreeMap::new(),
            agent_stage: ExecutorStage::Unspecified,
            agent_complete: false,
            agent_results: None,
            agent_timestamp_ns: None,
            leased_to: None,
            last_update_id: 0,
        };
        self.lease(&mut task);
        batch.tasks.push(task);
        self.write(&batch)?;
        Ok(())
    }
}

/// Resource use of running jobs, per pool (§3.10).
#[derive(Default)]
struct Usage {
    db: f64,
    other: f64,
}

impl Usage {
    fn add(&mut self, db: bool, weight: f64) {
        if db {
            self.db += weight;
        } else {
            self.other += weight;
        }
    }

    fn remove(&mut self, db: bool, weight: f64) {
        if db {
            self.db = (self.db - weight).max(0.0);
        } else {
            self.other = (self.other - weight).max(0.0);
        }
    }
}

/// §2.3 step 3: a known rap id is "No change" or "Inconsistent request data".
///
/// # Errors
/// The request disagrees with the jobs already created for its rap id.
pub fn idempotency(
    store: &Store,
    request: &JobRequest,
) -> Result<Option<SubmitOutcome>, BackendError> {
    let existing = store.jobs_for_rap(request.rap_id.as_str())?;
    let Some(first) = existing.iter().min_by_key(|j| (j.created_at, j.id.clone())) else {
        return Ok(None);
    };
    if first.repo_url != request.repo_url
        || first.workspace != request.workspace
        || first.commit != request.commit
    {
        return Err(BackendError::Inconsistent(request.rap_id.to_string()));
    }
    Ok(Some(SubmitOutcome::NoChange(
        u32::try_from(existing.len()).unwrap_or(u32::MAX),
    )))
}

fn non_empty(value: &str) -> String {
    if value.is_empty() {
        "unknown".into()
    } else {
        value.into()
    }
}

/// §3.7: the final code and message of a completed task.
pub fn completion(job: &Job, results: &RunJobResults) -> (StatusCode, String) {
    if results.exit_code != Some(0) {
        let mut message = messages::NONZERO_EXIT.to_string();
        if !results.status_message.is_empty() {
            message.push_str(": ");
            message.push_str(&results.status_message);
        } else if job.requires_db
            && let Some(text) = results.exit_code.and_then(database_exit_message)
        {
            message.push_str(": ");
            message.push_str(text);
        }
        return (StatusCode::NonzeroExit, message);
    }
    if results.has_unmatched_patterns {
        return (
            StatusCode::UnmatchedPatterns,
            messages::UNMATCHED_PATTERNS.into(),
        );
    }
    let mut message = messages::SUCCEEDED.to_string();
    if results.has_level4_excluded_files {
        message.push_str(messages::SUCCEEDED_EXCLUDED_SUFFIX);
    }
    (StatusCode::Succeeded, message)
}

/// The reference's `DATABASE_EXIT_CODES` (used for database jobs only).
pub fn database_exit_message(code: i32) -> Option<&'static str> {
    Some(match code {
        2 => "There was a problem with the command-line arguments",
        3 => "A transient database error occurred, please try again",
        4 => "New data is being imported into the database, please try again in a few hours",
        5 => "Something went wrong with the database, please contact tech support",
        6 => "The SQL generated by your ehrQL is too complex for the database",
        10 => "There was a problem reading your ehrQL code",
        11 => "There was a problem reading one of the supplied data files",
        12 => "You do not have the required permissions for the ehrQL you are trying to run",
        13 => "The assurance tests in your ehrQL failed",
        14 => "Your query is too slow and is unlikely to complete",
        _ => return None,
    })
}

/// Split a shell-quoted command (single and double quotes, backslash escapes).
pub fn split_command(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    current.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(&next) = chars.peek()
                                && matches!(next, '"' | '\\' | '$' | '`')
                            {
                                current.push(next);
                                chars.next();
                                continue;
                            }
                            current.push('\\');
                        }
                        other => current.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            other => {
                in_word = true;
                current.push(other);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// `YYYY-MM-DD` of a UNIX time (UTC), for scheduled task ids.
pub fn civil_date(unix_s: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = unix_s.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests;
