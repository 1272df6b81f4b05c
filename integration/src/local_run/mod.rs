//! `rap run`: the researcher's local runner (the reference's `opensafely run`, spec
//! project-yaml-cli-deploy §2.2). It reads `project.yaml` with `rap-pipeline`, decides which
//! actions to run ([`plan`]), and runs each through the agent's Docker executor, one at a time,
//! dependencies first, with the agent's container lock-down and output checks; outputs and
//! `metadata/<action>.log` land in the project directory.
//!
//! How the agent's executor is pointed at a project directory, without changing the agent:
//! - the executor's work directory is `<project>/metadata/.rap-run` (the state directory);
//! - the code is a commit of the project directory ([`code`]) in a bare repository there, which
//!   the executor checks out into each job directory as it would a study;
//! - the executor's high-privacy workspace is a symbolic link to the project directory, made
//!   for the run and removed after it, so outputs, inputs and logs are the project's own files
//!   (the reference's local run also uses the project directory as the workspace);
//! - the medium-privacy tree, where the level-4 copies go, is removed after the run: locally
//!   there is no Level 4 (spec §2.2 step 3), only the checks' verdicts, in the log and summary;
//! - `latest.json` in the state directory names each action's latest job, whose record in
//!   `job_logs/` decides whether a later run may reuse it.
//!
//! Database actions run with no database and no network, so ehrQL writes dummy data.

pub mod code;
pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rap_agent::clock;
use rap_agent::executor::docker::{DockerConfig, DockerExecutor};
use rap_agent::executor::{Executor, ExecutorError, JobStatus};
use rap_agent::job::{self, JobDefinition, Level4Limits, OutputPattern, Privacy, StudyRepo};
use rap_agent::layout::Layout;
use rap_agent::metadata::{self, JobMetadata, METADATA_FILE};
use rap_agent::outputs;
use rap_agent::workspace::RepoPolicy;
use rap_pipeline::{Action, Pipeline};

use self::plan::PlanError;

/// The reference's backend name for local runs (`OPENSAFELY_BACKEND`, spec §2.2 step 3).
pub const LOCAL_BACKEND: &str = "expectations";
/// The state directory, relative to the project directory.
pub const STATE_DIR: &str = "metadata/.rap-run";
/// The registry prefix of the platform's images.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/opensafely-core";
/// The user job containers run as when `rap run` runs as root (the agent's default).
const ROOT_CONTAINER_USER: &str = "10000:10000";
/// How many lines of a failed job's log the summary shows (the reference's figure).
const LOG_TAIL_LINES: usize = 32;

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The directory holding `project.yaml`; outputs are written into it.
    pub project_dir: PathBuf,
    /// The actions asked for; empty or `run_all` means every action.
    pub actions: Vec<String>,
    /// Run every dependency again, even one whose earlier result could be reused.
    pub force_run_dependencies: bool,
    /// Keep running independent actions after one fails.
    pub continue_on_error: bool,
    /// Images are `<registry>/<image>:<tag>`.
    pub registry: String,
    /// Each container's memory limit, a Docker size (`4G`).
    pub memory: String,
    /// Each container's CPU limit.
    pub cpus: f64,
}

/// The requests `rap run` refuses before running anything; each is printed as the reference
/// prints its early exits (`=> <class>` and the indented message) by [`Refusal::report`].
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// There is no `project.yaml` in the project directory.
    #[error("No project.yaml file found in {}", dir.display())]
    NoProjectFile {
        /// The project directory.
        dir: PathBuf,
    },
    /// `project.yaml` breaks a rule; the pipeline library's message.
    #[error("{0}")]
    InvalidProject(#[from] rap_pipeline::ValidationError),
    /// An action the file does not define.
    #[error(transparent)]
    UnknownAction(#[from] PlanError),
    /// An image is not on this machine (`rap run` never pulls).
    #[error(
        "Docker image {image} is not present on this machine (rap run never pulls images); \
         build it: scripts/action-images builds ghcr.io/opensafely-core/ehrql:v1 and python:v2, \
         scripts/test-images builds rap.test/busybox:latest"
    )]
    MissingImage {
        /// The full image reference.
        image: String,
    },
    /// `--memory` is not a Docker size.
    #[error("--memory {0:?} is not a size such as 4G or 512M")]
    InvalidMemory(String),
}

impl Refusal {
    /// The text the reference prints for this early exit.
    pub fn report(&self) -> String {
        let class = match self {
            Refusal::NoProjectFile { .. } | Refusal::InvalidProject(_) => "ProjectValidationError",
            Refusal::UnknownAction(_) => "UnknownActionError",
            Refusal::MissingImage { .. } | Refusal::InvalidMemory(_) => "JobRequestError",
        };
        let mut text = format!("=> {class}\n{}\n", indent(&self.to_string(), 3));
        if let Refusal::UnknownAction(PlanError::UnknownAction { valid, .. }) = self {
            text.push_str(
                "   Valid action names are:\n     run_all (runs all actions in project)\n",
            );
            for action in valid {
                let _ = writeln!(text, "     {action}");
            }
        }
        text
    }
}

/// How one action of the run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It ran and its outputs passed the checks.
    Succeeded,
    /// Its container exited non-zero.
    NonzeroExit,
    /// An output pattern matched no file.
    UnmatchedPatterns,
    /// A step failed before the job could finish (the executor's message says which).
    Error,
    /// Not started: an action it needs failed.
    DependencyFailed,
    /// Stopped by Ctrl-C.
    Cancelled,
}

impl Outcome {
    /// The reference's status code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::NonzeroExit => "nonzero_exit",
            Outcome::UnmatchedPatterns => "unmatched_patterns",
            Outcome::Error => "internal_error",
            Outcome::DependencyFailed => "dependency_failed",
            Outcome::Cancelled => "cancelled_by_user",
        }
    }
}

/// One action's result.
#[derive(Clone, Debug)]
pub struct ActionResult {
    /// The action.
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The status message (the reference's wording).
    pub message: String,
    /// The job's record, when the job ran.
    pub metadata: Option<JobMetadata>,
}

/// Runs the requested actions, printing progress and a summary to stdout. Returns whether
/// every action that was run succeeded (also true when there was nothing to do).
///
/// # Errors
/// A [`Refusal`] (nothing was run), or a failure of Docker, git or the file system.
pub async fn run(options: &RunOptions) -> anyhow::Result<bool> {
    let project_dir = options
        .project_dir
        .canonicalize()
        .with_context(|| format!("project directory {}", options.project_dir.display()))?;
    let pipeline = load_project(&project_dir)?;
    for warning in pipeline.warnings() {
        eprintln!("{warning}");
    }
    let memory_limit = job::parse_memory_limit(&options.memory)
        .map_err(|_| Refusal::InvalidMemory(options.memory.clone()))?;
    let state_dir = project_dir.join(STATE_DIR);
    let layout = Layout::new(state_dir.clone());
    let latest = read_latest(&state_dir)?;
    let reusable: HashSet<String> = latest
        .iter()
        .filter(|(action, job)| {
            pipeline.action(action).is_some() && is_reusable(&layout, &project_dir, job)
        })
        .map(|(action, _)| action.clone())
        .collect();
    let plan = plan::plan(
        &pipeline,
        &options.actions,
        options.force_run_dependencies,
        &reusable,
    )
    .map_err(Refusal::from)?;
    if plan.to_run.is_empty() {
        println!(
            "=> All actions already completed successfully\n   Use -f option to force everything to re-run"
        );
        return Ok(true);
    }
    let actions: Vec<&Action> = plan
        .to_run
        .iter()
        .filter_map(|name| pipeline.action(name))
        .collect();
    let registry = options.registry.trim_end_matches('/');
    check_images(registry, &actions).await?;

    // The outbox is the agent's link to a controller: a local run has none.
    for directory in layout
        .directories()
        .into_iter()
        .filter(|d| *d != layout.outbox())
    {
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
    }
    let workspace = workspace_name(&project_dir);
    let _link = WorkspaceLink::create(&layout, &workspace, &project_dir)?;
    let all_patterns: Vec<String> = pipeline
        .actions()
        .flat_map(|action| action.output_spec())
        .map(|output| output.pattern)
        .collect();
    let snapshot = code::snapshot(&project_dir, &state_dir, &all_patterns).await?;
    let executor = DockerExecutor::connect(DockerConfig {
        layout: layout.clone(),
        backend: LOCAL_BACKEND.to_owned(),
        registry: registry.to_owned(),
        allowed_images: actions
            .iter()
            .map(|action| action.run().image.clone())
            .collect(),
        user: container_user(),
        // Unused: no local job has database access.
        database_network: "none".to_owned(),
        database_url: None,
        repo_policy: RepoPolicy {
            allowed_github_orgs: Vec::new(),
            allow_local_repos: true,
            github_proxy: None,
        },
        docker_socket: None,
    })
    .await
    .context("connecting to Docker (is dockerd running?)")?;

    let context = JobContext {
        run_id: unique_id(),
        workspace,
        snapshot,
        registry: registry.to_owned(),
        memory_limit,
        cpus: options.cpus,
    };
    println!("\nRunning actions: {}\n", plan.to_run.join(", "));
    let mut job_ids: HashMap<String, String> = latest
        .iter()
        .map(|(action, job)| (action.clone(), job.job_id.clone()))
        .collect();
    let mut results: Vec<ActionResult> = Vec::new();
    let mut failed: HashSet<String> = HashSet::new();
    for action in &actions {
        let name = action.name().to_owned();
        if action.needs().iter().any(|need| failed.contains(need)) {
            failed.insert(name.clone());
            results.push(ActionResult {
                action: name,
                outcome: Outcome::DependencyFailed,
                message: "Not starting as dependency failed".to_owned(),
                metadata: None,
            });
            continue;
        }
        if !failed.is_empty() && !options.continue_on_error {
            break;
        }
        let inputs: Vec<String> = action
            .needs()
            .iter()
            .filter_map(|need| job_ids.get(need).cloned())
            .collect();
        let job = context.job_definition(action, inputs);
        let previous_outputs = latest
            .get(&name)
            .and_then(|job| read_metadata(&layout, job))
            .map(|record| record.outputs);
        let result = run_job(&executor, &job).await;
        job_ids.insert(name.clone(), job.id.clone());
        write_latest(&state_dir, &name, &job)?;
        if result.outcome == Outcome::Succeeded
            && let (Some(previous), Some(record)) = (&previous_outputs, &result.metadata)
        {
            remove_stale_outputs(&project_dir, previous, &record.outputs);
        }
        if result.outcome != Outcome::Succeeded {
            failed.insert(name.clone());
        }
        let cancelled = result.outcome == Outcome::Cancelled;
        results.push(result);
        if cancelled {
            break;
        }
    }
    // Locally there is no Level 4: the level-4 copies and manifest are dropped.
    let medium = state_dir.join("medium_privacy");
    if let Err(error) = std::fs::remove_dir_all(&medium)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!(
            "removing the level-4 copies in {}: {error}",
            medium.display()
        );
    }
    print!("{}", summary(&results, &project_dir));
    let all_succeeded =
        results.iter().all(|r| r.outcome == Outcome::Succeeded) && results.len() == actions.len();
    Ok(all_succeeded)
}

/// Reads and validates `<project_dir>/project.yaml`.
fn load_project(project_dir: &Path) -> anyhow::Result<Pipeline> {
    let path = project_dir.join("project.yaml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(Refusal::NoProjectFile {
                dir: project_dir.to_owned(),
            }
            .into());
        }
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    Ok(rap_pipeline::load_pipeline(&text).map_err(Refusal::InvalidProject)?)
}

/// Fails on the first image of `actions` that is not on this machine, before anything runs.
async fn check_images(registry: &str, actions: &[&Action]) -> anyhow::Result<()> {
    let docker = bollard::Docker::connect_with_unix_defaults()
        .context("connecting to Docker (is dockerd running?)")?
        .negotiate_version()
        .await
        .context("connecting to Docker (is dockerd running?)")?;
    let mut checked = HashSet::new();
    for action in actions {
        let image = format!("{registry}/{}", action.run().image_with_tag());
        if !checked.insert(image.clone()) {
            continue;
        }
        match docker.inspect_image(&image).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(Refusal::MissingImage { image }.into()),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("asking Docker about {image} (is dockerd running?)"));
            }
        }
    }
    Ok(())
}

/// What every job of one run shares.
struct JobContext {
    run_id: String,
    workspace: String,
    snapshot: code::CodeSnapshot,
    registry: String,
    memory_limit: i64,
    cpus: f64,
}

impl JobContext {
    /// The agent's job definition for one action, as the controller would build it, with no
    /// database access.
    fn job_definition(&self, action: &Action, input_job_ids: Vec<String>) -> JobDefinition {
        let repo = self.snapshot.repo.to_string_lossy().into_owned();
        JobDefinition {
            id: unique_id(),
            rap_id: self.run_id.clone(),
            task_id: String::new(),
            repo_url: repo.clone(),
            commit: self.snapshot.commit.clone(),
            study: StudyRepo {
                git_repo_url: repo,
                commit: self.snapshot.commit.clone(),
                branch: code::BRANCH.to_owned(),
            },
            workspace: self.workspace.clone(),
            action: action.name().to_owned(),
            created_at: clock::now_s(),
            image: format!("{}/{}", self.registry, action.run().image_with_tag()),
            image_sha: String::new(),
            args: action.run_argv(),
            env: BTreeMap::from([("OPENSAFELY_BACKEND".to_owned(), LOCAL_BACKEND.to_owned())]),
            input_job_ids,
            output_spec: action
                .output_spec()
                .into_iter()
                .map(|output| OutputPattern {
                    pattern: output.pattern,
                    privacy: if output.privacy.is_level4() {
                        Privacy::ModeratelySensitive
                    } else {
                        Privacy::HighlySensitive
                    },
                })
                .collect(),
            allow_database_access: false,
            database_name: None,
            user: local_user_name(),
            cpu_count: self.cpus,
            memory_limit: Some(self.memory_limit),
            level4: Level4Limits {
                max_filesize: job::DEFAULT_LEVEL4_MAX_FILESIZE,
                max_csv_rows: job::DEFAULT_LEVEL4_MAX_CSV_ROWS,
                file_types: rap_pipeline::glob::LEVEL4_FILE_TYPES
                    .iter()
                    .map(|suffix| suffix.to_string())
                    .collect(),
            },
            requires_outputs_from: action.needs().to_vec(),
        }
    }
}

/// Runs one job through the executor's steps, printing progress, and removes its container
/// and job directory. Ctrl-C kills the container and ends the job as cancelled.
async fn run_job(executor: &DockerExecutor, job: &JobDefinition) -> ActionResult {
    let action = job.action.as_str();
    let steps = async {
        println!("{action}: Preparing your code and workspace files");
        executor.prepare(job).await?;
        executor.execute(job).await?;
        // Printed once the container runs, so Ctrl-C after it always finds one to kill.
        println!("{action}: Executing job on the backend");
        executor.wait_for_exit(job).await?;
        println!("{action}: Recording job results");
        executor.finalize(job, false, None).await
    };
    let finished: Result<JobStatus, ExecutorError> = tokio::select! {
        finished = steps => finished,
        _ = tokio::signal::ctrl_c() => {
            println!("{action}: Cancelled by user");
            if let Err(error) = executor.terminate(job).await {
                eprintln!("{action}: stopping the container: {error}");
            }
            let _ = executor.finalize(job, true, None).await;
            cleanup(executor, job).await;
            return ActionResult {
                action: action.to_owned(),
                outcome: Outcome::Cancelled,
                message: "Cancelled by user".to_owned(),
                metadata: None,
            };
        }
    };
    let result = match finished {
        Ok(status) => match status.metadata {
            Some(record) => result_from_metadata(action, record),
            None => ActionResult {
                action: action.to_owned(),
                outcome: Outcome::Error,
                message: format!("The job ended in state {:?} without a record", status.state),
                metadata: None,
            },
        },
        Err(error) => {
            // The record is written for the log; the message shown is the executor's, in full:
            // locally nothing needs hiding.
            let recorded = executor
                .finalize(job, false, Some(error.to_recorded()))
                .await;
            ActionResult {
                action: action.to_owned(),
                outcome: Outcome::Error,
                message: error.to_string(),
                metadata: recorded.ok().and_then(|status| status.metadata),
            }
        }
    };
    println!("{action}: {}", first_line(&result.message));
    cleanup(executor, job).await;
    result
}

async fn cleanup(executor: &DockerExecutor, job: &JobDefinition) {
    println!("{}: Cleaning up container and volume", job.action);
    if let Err(error) = executor.cleanup(job).await {
        eprintln!("{}: cleaning up: {error}", job.action);
    }
}

/// The outcome and message of a finished job, as the controller words them (spec
/// rap-controller-and-agent §3.7), except that unmatched patterns are named: locally the
/// researcher may see file names.
fn result_from_metadata(action: &str, record: JobMetadata) -> ActionResult {
    let (outcome, message) = if let Some(error) = &record.error {
        (Outcome::Error, error.message.clone())
    } else if record.exit_code != Some(0) {
        let mut message = "Job exited with an error".to_owned();
        if let Some(detail) = record.status_message.as_deref().filter(|m| !m.is_empty()) {
            let _ = write!(message, ": {detail}");
        }
        (Outcome::NonzeroExit, message)
    } else if !record.unmatched_patterns.is_empty() {
        let mut message = record
            .status_message
            .as_deref()
            .map(trim_block)
            .unwrap_or_default();
        if let Some(hint) = record.hint.as_deref() {
            let _ = write!(message, "\n{}", trim_block(hint));
        }
        (Outcome::UnmatchedPatterns, message)
    } else {
        let mut message = "Completed successfully".to_owned();
        if !record.level4_excluded_files.is_empty() {
            message.push_str(
                ", but some file(s) marked as moderately_sensitive were excluded. \
                 See job log for details.",
            );
        }
        (Outcome::Succeeded, message)
    };
    ActionResult {
        action: action.to_owned(),
        outcome,
        message,
        metadata: Some(record),
    }
}

/// The summary (spec §2.2 step 10): successes first, then failures; failures caused only by a
/// failed dependency are left out.
fn summary(results: &[ActionResult], project_dir: &Path) -> String {
    let mut text = String::new();
    let (succeeded, failed): (Vec<_>, Vec<_>) = results
        .iter()
        .filter(|result| result.outcome != Outcome::DependencyFailed)
        .partition(|result| result.outcome == Outcome::Succeeded);
    for result in succeeded.into_iter().chain(failed) {
        let _ = writeln!(text, "\n=> {}", result.action);
        let _ = writeln!(text, "{}", indent(&result.message, 3));
        let log = format!("metadata/{}.log", result.action);
        if project_dir.join(&log).is_file() {
            let _ = writeln!(text, "   log file: {log}");
        }
        let Some(record) = &result.metadata else {
            continue;
        };
        text.push_str("   outputs:\n");
        if record.outputs.is_empty() {
            text.push_str("     (no outputs)\n");
        }
        for (path, level) in &record.outputs {
            let _ = writeln!(text, "     {path}  - {level}");
        }
        if !record.level4_excluded_files.is_empty() {
            text.push_str("   invalid moderately_sensitive outputs:\n");
            for (path, reason) in &record.level4_excluded_files {
                let _ = writeln!(text, "     {path}  - {reason}");
            }
        }
        if result.outcome == Outcome::NonzeroExit
            && let Ok(log_text) = std::fs::read_to_string(project_dir.join(&log))
        {
            text.push_str("   logs (truncated):\n");
            for line in log_tail(&log_text) {
                let _ = writeln!(text, "     {line}");
            }
        }
    }
    text
}

/// The last lines of the container's output in a job log, timestamps stripped.
fn log_tail(log: &str) -> Vec<&str> {
    let container_output = log
        .split_once(metadata::SUMMARY_MARKER)
        .map_or(log, |(output, _)| output);
    let lines: Vec<&str> = container_output
        .lines()
        .map(|line| match line.split_once(' ') {
            // Docker prefixes each line with an RFC 3339 timestamp.
            Some((stamp, rest)) if clock::parse_rfc3339_ns(stamp).is_some() => rest,
            _ => line,
        })
        .collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].to_vec()
}

/// An action's latest job, as `latest.json` records it.
#[derive(Clone, Debug)]
struct LatestJob {
    job_id: String,
    created_at: i64,
}

fn latest_path(state_dir: &Path) -> PathBuf {
    state_dir.join("latest.json")
}

/// `latest.json`: action → its latest job (empty before the first run).
fn read_latest(state_dir: &Path) -> anyhow::Result<HashMap<String, LatestJob>> {
    let path = latest_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON (delete it to start afresh)", path.display()))?;
    let mut latest = HashMap::new();
    for (action, job) in value.as_object().into_iter().flatten() {
        if let (Some(job_id), Some(created_at)) =
            (job["job_id"].as_str(), job["created_at"].as_i64())
        {
            latest.insert(
                action.clone(),
                LatestJob {
                    job_id: job_id.to_owned(),
                    created_at,
                },
            );
        }
    }
    Ok(latest)
}

fn write_latest(state_dir: &Path, action: &str, job: &JobDefinition) -> anyhow::Result<()> {
    let path = latest_path(state_dir);
    let mut value = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    value[action] = serde_json::json!({"job_id": job.id, "created_at": job.created_at});
    let bytes = serde_json::to_vec_pretty(&value).context("encoding latest.json")?;
    outputs::atomic_write(&path, &bytes).with_context(|| format!("writing {}", path.display()))
}

fn read_metadata(layout: &Layout, job: &LatestJob) -> Option<JobMetadata> {
    let path = layout
        .job_log_dir_for(&job.job_id, job.created_at)
        .join(METADATA_FILE);
    metadata::read(&path).ok().flatten()
}

/// Whether a job succeeded and all its outputs are still in the project directory (deleting
/// an output makes its action run again, spec §2.2 step 5).
fn is_reusable(layout: &Layout, project_dir: &Path, job: &LatestJob) -> bool {
    let Some(record) = read_metadata(layout, job) else {
        return false;
    };
    let succeeded = record.error.is_none()
        && !record.cancelled
        && record.exit_code == Some(0)
        && record.unmatched_patterns.is_empty();
    succeeded
        && record
            .outputs
            .keys()
            .all(|path| project_dir.join(path).is_file())
}

/// Deletes the files an action's previous run produced that this run did not (compared
/// ignoring case, as the reference does).
fn remove_stale_outputs(
    project_dir: &Path,
    previous: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) {
    let current: HashSet<String> = current.keys().map(|path| path.to_lowercase()).collect();
    for path in previous.keys() {
        if current.contains(&path.to_lowercase()) || !rap_pipeline::glob::is_safe_path(path) {
            continue;
        }
        match std::fs::remove_file(project_dir.join(path)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => eprintln!("removing the old output {path}: {error}"),
        }
    }
}

/// The symbolic link `<state>/high_privacy/workspaces/<workspace>` → the project directory,
/// removed on drop so no loop stays in the project tree between runs.
struct WorkspaceLink {
    path: PathBuf,
}

impl WorkspaceLink {
    fn create(layout: &Layout, workspace: &str, project_dir: &Path) -> anyhow::Result<Self> {
        let path = layout.high_privacy_workspaces().join(workspace);
        // A link left by a run that was killed.
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the old link {}", path.display()))?;
        }
        std::os::unix::fs::symlink(project_dir, &path)
            .with_context(|| format!("linking {} to the project", path.display()))?;
        Ok(WorkspaceLink { path })
    }
}

impl Drop for WorkspaceLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The workspace name: the project directory's name (as in the reference) in the characters
/// the agent allows in names.
fn workspace_name(project_dir: &Path) -> String {
    let name: String = project_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches('-');
    if name.is_empty() {
        "workspace".to_owned()
    } else {
        name.to_owned()
    }
}

/// The container's user: the caller's own uid and gid (as the reference's local run does), or
/// the agent's unprivileged default when the caller is root.
fn container_user() -> String {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        ROOT_CONTAINER_USER.to_owned()
    } else {
        format!("{uid}:{gid}")
    }
}

fn local_user_name() -> String {
    std::env::var("USER").unwrap_or_else(|_| "local".to_owned())
}

/// A job or run id unique on this Docker host: containers are named after job ids.
fn unique_id() -> String {
    format!("local-{:x}-{:x}", std::process::id(), clock::now_ns())
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The executor's multi-line messages start with a blank line and indent their lines
/// unevenly (as the reference's do); here the first line is flush and the list items take one
/// space, as the reference's status message reads (`No outputs found matching patterns:\n -
/// <pattern>`).
fn trim_block(text: &str) -> String {
    let mut lines = text.trim_start_matches('\n').lines().map(str::trim_start);
    let mut block = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        block.push_str("\n ");
        block.push_str(line);
    }
    block
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_names_keep_only_allowed_characters() {
        assert_eq!(workspace_name(Path::new("/x/my-study_1")), "my-study_1");
        assert_eq!(workspace_name(Path::new("/x/my study.v2")), "my-study-v2");
        assert_eq!(workspace_name(Path::new("/x/.hidden")), "hidden");
        assert_eq!(workspace_name(Path::new("/")), "workspace");
    }

    #[test]
    fn log_tails_drop_timestamps_and_the_summary() {
        let mut log = String::new();
        for i in 0..40 {
            let _ = writeln!(log, "2026-11-25T12:00:00.123456789Z line {i}");
        }
        log.push_str(metadata::SUMMARY_MARKER);
        log.push_str("exit_code: 1\n");
        let tail = log_tail(&log);
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!(tail.first(), Some(&"line 8"));
        assert_eq!(tail.last(), Some(&"line 39"));
    }

    #[test]
    fn unmatched_pattern_messages_lose_their_leading_blank_line() {
        let record = JobMetadata {
            exit_code: Some(0),
            unmatched_patterns: vec!["output/x.csv".into()],
            status_message: Some("\n  No outputs found matching patterns:\n - output/x.csv".into()),
            hint: Some(
                "\n  Did you mean to match one of these files instead?\n - output/y.csv".into(),
            ),
            ..Default::default()
        };
        let result = result_from_metadata("a", record);
        assert_eq!(result.outcome, Outcome::UnmatchedPatterns);
        assert_eq!(
            result.message,
            "No outputs found matching patterns:\n - output/x.csv\n\
             Did you mean to match one of these files instead?\n - output/y.csv"
        );
    }
}
