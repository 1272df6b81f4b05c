//! Job requests: validation with the reference's messages (§2.3) and job creation (§3.5).
//!
//! [`validate_request`] turns raw fields into a [`JobRequest`]; [`create_jobs`] decides which
//! jobs a request creates given the project and the workspace's current jobs. Both are pure:
//! reading `project.yaml` (git) and writing jobs (store) are the caller's business, and the
//! caller serialises creation per backend so two requests never duplicate a pending job.

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::jobs::project::{Project, ProjectAction};
use crate::jobs::state::{JobStatus, State, StatusCode, messages};
use crate::jobs::{AnalysisScope, Job, JobId, RapId};

/// The request fields as a client sent them, before validation.
#[derive(Clone, Debug, Default)]
pub struct SubmitFields {
    pub rap_id: String,
    pub backend: String,
    pub workspace: String,
    pub repo_url: String,
    pub branch: String,
    pub commit: String,
    pub database_name: String,
    pub requested_actions: Vec<String>,
    pub codelists_ok: bool,
    pub force_run_dependencies: bool,
    pub created_by: String,
    pub project: String,
    pub orgs: Vec<String>,
    pub analysis_scope: Option<AnalysisScope>,
    /// The job request's W3C `traceparent` (its root span), the parent of its jobs' spans.
    pub traceparent: Option<String>,
}

/// A validated job request.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    pub rap_id: RapId,
    pub backend: String,
    pub workspace: String,
    pub repo_url: String,
    pub branch: String,
    pub commit: String,
    pub database_name: String,
    pub requested_actions: Vec<String>,
    pub codelists_ok: bool,
    pub force_run_dependencies: bool,
    pub created_by: String,
    pub project: String,
    pub orgs: Vec<String>,
    pub analysis_scope: AnalysisScope,
    pub traceparent: Option<String>,
}

impl JobRequest {
    pub fn run_all(&self) -> bool {
        self.requested_actions.iter().any(|a| a == RUN_ALL)
    }
}

/// The pseudo-action that selects every action of the pipeline.
pub const RUN_ALL: &str = "run_all";

/// The only database name the reference accepts.
pub const DATABASE_NAMES: [&str; 1] = ["default"];

const DATASET_PERMISSIONS: [&str; 9] = [
    "appointments",
    "icnarc",
    "isaric",
    "open_prompt",
    "ukrr",
    "waiting_list",
    "sgss_covid_all_tests",
    "occupation_on_covid_vaccine_record",
    "covid_therapeutics",
];
const POPULATION_PERMISSIONS: [&str; 3] =
    ["include_ndoo", "include_t1oo", "include_gp_unactivated"];
const COMPONENT_ACCESS: [&str; 1] = ["event_level_data"];

/// What the request rules depend on (from the controller's configuration).
#[derive(Clone, Debug)]
pub struct RequestRules {
    /// Configured backends, in configuration order.
    pub backends: Vec<String>,
    /// GitHub organisations a study repository may belong to.
    pub allowed_github_orgs: Vec<String>,
    /// Accept absolute local paths as repository URLs (development and tests only).
    pub allow_local_repos: bool,
    /// Projects whose DB jobs also get `event_level_data` component access.
    pub projects_with_event_level_access: Vec<String>,
}

/// Why a request failed. `error_class` and `Display` are the reference's `error` and `details`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A schema failure: `path` is like `$.rap_id`, `message` the jsonschema-style text.
    #[error("Invalid request body received at {path}: {message}")]
    Schema { path: String, message: String },
    #[error("At least one action must be supplied")]
    NoActions,
    #[error("Workspace name cannot be blank")]
    BlankWorkspace,
    #[error("Invalid workspace name (allowed are alphanumeric, dash and underscore)")]
    InvalidWorkspace,
    #[error("Invalid backend '{backend}', allowed are: {}", allowed.join(", "))]
    InvalidBackend {
        backend: String,
        allowed: Vec<String>,
    },
    #[error("Invalid database name '{name}', allowed are: {}", DATABASE_NAMES.join(", "))]
    InvalidDatabase { name: String },
    #[error("Repository URL {url} does not start with https://github.com")]
    RepoNotGithub { url: String },
    #[error("Repository URL {url} does not belong to one of the following Github organisations: {}", orgs.join(", "))]
    RepoOrgNotAllowed { url: String, orgs: Vec<String> },
    #[error(
        "Repository URL {url} was not of the expected format: https://github.com/[organisation]/[project-name]"
    )]
    RepoFormat { url: String },
    #[error("A branch name must be supplied")]
    NoBranch,
}

impl RequestError {
    /// The reference's short error class.
    pub fn error_class(&self) -> &'static str {
        match self {
            RequestError::Schema { .. } => "Validation error",
            _ => "Error creating jobs",
        }
    }
}

/// Why job creation failed: each is a 400 "Error creating jobs" with this text as details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("Action '{0}' not found in project.yaml")]
    UnknownAction(String),
    #[error("Codelists are out of date (required by action {0})")]
    StaleCodelists(String),
    /// The needs graph loops (the pipeline library rejects this; kept so a bad project can
    /// never overflow the stack).
    #[error("Dependency cycle involving action '{0}'")]
    Cycle(String),
}

/// What a request produced.
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    /// New jobs, in creation order (dependencies first).
    Created(Vec<Job>),
    /// Nothing new; the reference's details text.
    NothingToDo(&'static str),
}

/// The reference's "Nothing to do" texts.
pub const ALL_ALREADY_SUCCEEDED: &str = "All actions have already completed successfully";
pub const ALL_ALREADY_SCHEDULED: &str = "All requested actions were already scheduled to run";

/// The latest non-cancelled job of an action in the request's backend and workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingJob {
    pub id: JobId,
    pub state: State,
}

/// Check a request's fields, in the reference's order: schema rules first, then the create
/// rules (§2.3, §3.5 step 1). Branch and commit reachability are checked later against git.
///
/// # Errors
/// The first rule that fails.
pub fn validate_request(
    fields: SubmitFields,
    rules: &RequestRules,
) -> Result<JobRequest, RequestError> {
    let Some(rap_id) = RapId::parse(&fields.rap_id) else {
        return Err(schema(
            "$.rap_id",
            format!("'{}' does not match '^[a-z0-9]{{16}}$'", fields.rap_id),
        ));
    };
    let commit_ok = fields.commit.len() == 40
        && fields
            .commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !commit_ok {
        return Err(schema(
            "$.commit",
            format!("'{}' does not match '^[0-9a-f]{{40}}$'", fields.commit),
        ));
    }
    if !DATABASE_NAMES.contains(&fields.database_name.as_str()) {
        return Err(schema(
            "$.database_name",
            format!("'{}' is not one of ['default']", fields.database_name),
        ));
    }
    if fields.requested_actions.is_empty() {
        return Err(schema(
            "$.requested_actions",
            "[] should be non-empty".into(),
        ));
    }
    let scope = fields.analysis_scope.unwrap_or_default();
    check_enum(
        "dataset_permissions",
        &scope.dataset_permissions,
        &DATASET_PERMISSIONS,
    )?;
    check_enum(
        "population_permissions",
        &scope.population_permissions,
        &POPULATION_PERMISSIONS,
    )?;
    check_enum(
        "component_access",
        &scope.component_access,
        &COMPONENT_ACCESS,
    )?;

    if fields.requested_actions.iter().all(|a| a.is_empty()) {
        return Err(RequestError::NoActions);
    }
    if fields.workspace.is_empty() {
        return Err(RequestError::BlankWorkspace);
    }
    let workspace_ok = fields
        .workspace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !workspace_ok {
        return Err(RequestError::InvalidWorkspace);
    }
    if !rules.backends.contains(&fields.backend) {
        return Err(RequestError::InvalidBackend {
            backend: fields.backend,
            allowed: rules.backends.clone(),
        });
    }
    let repo_url = local_repo_path(&fields.repo_url, rules)
        .map(str::to_owned)
        .unwrap_or(fields.repo_url);
    check_repo_url(&repo_url, rules)?;
    if fields.branch.is_empty() {
        return Err(RequestError::NoBranch);
    }
    Ok(JobRequest {
        rap_id,
        backend: fields.backend,
        workspace: fields.workspace,
        repo_url,
        branch: fields.branch,
        commit: fields.commit,
        database_name: fields.database_name,
        requested_actions: fields.requested_actions,
        codelists_ok: fields.codelists_ok,
        force_run_dependencies: fields.force_run_dependencies,
        created_by: fields.created_by,
        project: fields.project,
        orgs: fields.orgs,
        analysis_scope: scope,
        traceparent: fields.traceparent,
    })
}

/// The absolute path named by a `file:///…` URL, when local repositories are allowed: job
/// servers name local studies that way, and the controller (and the agent after it) stores and
/// checks them as plain absolute paths, the reference's form.
fn local_repo_path<'a>(url: &'a str, rules: &RequestRules) -> Option<&'a str> {
    if !rules.allow_local_repos {
        return None;
    }
    url.strip_prefix("file://")
        .filter(|path| path.starts_with('/'))
}

/// The reference's repository rules: `https://github.com/<org>/<repo>` with an allowed org, or
/// an absolute local path when local repositories are allowed.
///
/// # Errors
/// Which rule failed, with the URL.
pub fn check_repo_url(url: &str, rules: &RequestRules) -> Result<(), RequestError> {
    if rules.allow_local_repos && url.starts_with('/') {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("https://github.com") else {
        return Err(RequestError::RepoNotGithub { url: url.into() });
    };
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let org = parts.first().copied().unwrap_or("");
    if !rules
        .allowed_github_orgs
        .iter()
        .any(|allowed| allowed == org)
    {
        return Err(RequestError::RepoOrgNotAllowed {
            url: url.into(),
            orgs: rules.allowed_github_orgs.clone(),
        });
    }
    let well_formed = rest.starts_with('/')
        && parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        });
    if !well_formed {
        return Err(RequestError::RepoFormat { url: url.into() });
    }
    Ok(())
}

fn schema(path: &str, message: String) -> RequestError {
    RequestError::Schema {
        path: path.to_string(),
        message,
    }
}

fn check_enum(field: &str, values: &[String], allowed: &[&str]) -> Result<(), RequestError> {
    for (i, value) in values.iter().enumerate() {
        if !allowed.contains(&value.as_str()) {
            let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
            return Err(schema(
                &format!("$.analysis_scope.{field}[{i}]"),
                format!("'{value}' is not one of [{}]", quoted.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Decide the jobs a request creates (§3.5 steps 4–7 and 9).
///
/// `workspace_state` maps each action to its latest non-cancelled job in the request's backend
/// and workspace. Reusable-action rewriting (step 8) is applied by the caller to the returned
/// jobs, before [`check_codelists`].
///
/// # Errors
/// An unknown action, or a cycle.
pub fn create_jobs(
    request: &JobRequest,
    project: &Project,
    workspace_state: &HashMap<String, ExistingJob>,
    rules: &RequestRules,
    now_ns: i64,
) -> Result<CreateOutcome, CreateError> {
    // Only actions that still exist in the pipeline count (§3.5 step 4).
    let existing: HashMap<&str, &ExistingJob> = workspace_state
        .iter()
        .filter(|(action, _)| project.action(action).is_some())
        .map(|(action, job)| (action.as_str(), job))
        .collect();
    let actions: Vec<String> = if request.run_all() {
        project.actions.iter().map(|a| a.name.clone()).collect()
    } else {
        request.requested_actions.clone()
    };

    let mut builder = Builder {
        request,
        project,
        existing,
        rules,
        now_ns,
        built: HashMap::new(),
        in_progress: HashSet::new(),
        new_jobs: Vec::new(),
    };
    for action in &actions {
        builder.build(action)?;
    }
    let new_jobs = builder.new_jobs;
    if new_jobs.is_empty() {
        if request.run_all() {
            return Ok(CreateOutcome::NothingToDo(ALL_ALREADY_SUCCEEDED));
        }
        return Ok(CreateOutcome::NothingToDo(ALL_ALREADY_SCHEDULED));
    }
    Ok(CreateOutcome::Created(new_jobs))
}

/// Step 9: stale codelists fail the whole request when any new job needs the database.
///
/// # Errors
/// The first new database job.
pub fn check_codelists(request: &JobRequest, new_jobs: &[Job]) -> Result<(), CreateError> {
    if request.codelists_ok {
        return Ok(());
    }
    match new_jobs.iter().find(|job| job.requires_db) {
        Some(job) => Err(CreateError::StaleCodelists(job.action.clone())),
        None => Ok(()),
    }
}

struct Builder<'a> {
    request: &'a JobRequest,
    project: &'a Project,
    existing: HashMap<&'a str, &'a ExistingJob>,
    rules: &'a RequestRules,
    now_ns: i64,
    /// Actions resolved in this request: the job id and whether it is pending or running.
    built: HashMap<String, (JobId, bool)>,
    in_progress: HashSet<String>,
    new_jobs: Vec<Job>,
}

impl Builder<'_> {
    /// Resolve an action to a job id (existing or new) and whether that job is still active.
    fn build(&mut self, action: &str) -> Result<(JobId, bool), CreateError> {
        if let Some(done) = self.built.get(action) {
            return Ok(done.clone());
        }
        if let Some(existing) = self.existing.get(action)
            && !self.should_rerun(action, existing)
        {
            let resolved = (existing.id.clone(), existing.state.is_active());
            self.built.insert(action.to_string(), resolved.clone());
            return Ok(resolved);
        }
        let Some(spec) = self.project.action(action) else {
            return Err(CreateError::UnknownAction(action.to_string()));
        };
        if !self.in_progress.insert(action.to_string()) {
            return Err(CreateError::Cycle(action.to_string()));
        }
        let mut wait_for_job_ids = Vec::new();
        for need in &spec.needs {
            let (id, active) = self.build(need)?;
            if active {
                wait_for_job_ids.push(id);
            }
        }
        self.in_progress.remove(action);
        let job = self.new_job(spec, wait_for_job_ids);
        self.built
            .insert(action.to_string(), (job.id.clone(), true));
        self.new_jobs.push(job);
        Ok((JobId::derive(&self.request.rap_id, action), true))
    }

    /// The reference's `job_should_be_rerun`, in its order.
    fn should_rerun(&self, action: &str, existing: &ExistingJob) -> bool {
        if existing.state.is_active() {
            return false;
        }
        if self.request.requested_actions.iter().any(|a| a == action) {
            return true;
        }
        if self.request.force_run_dependencies {
            return true;
        }
        existing.state != State::Succeeded
    }

    fn new_job(&self, spec: &ProjectAction, wait_for_job_ids: Vec<JobId>) -> Job {
        let request = self.request;
        let id = JobId::derive(&request.rap_id, &spec.name);
        let created_at = self.now_ns.div_euclid(1_000_000_000);
        let analysis_scope = if spec.requires_db {
            let mut scope = request.analysis_scope.clone();
            scope.dataset_permissions.sort();
            if self
                .rules
                .projects_with_event_level_access
                .contains(&request.project)
                && !scope
                    .component_access
                    .iter()
                    .any(|c| c == "event_level_data")
            {
                scope.component_access.push("event_level_data".into());
            }
            scope.component_access.sort();
            scope
        } else {
            AnalysisScope::default()
        };
        let mut trace_context = BTreeMap::new();
        trace_context.insert(
            "traceparent".to_string(),
            job_traceparent(request.traceparent.as_deref(), &id, self.now_ns),
        );
        Job {
            id,
            rap_id: request.rap_id.clone(),
            backend: request.backend.clone(),
            workspace: request.workspace.clone(),
            action: spec.name.clone(),
            repo_url: request.repo_url.clone(),
            commit: request.commit.clone(),
            branch: request.branch.clone(),
            database_name: request.database_name.clone(),
            run_command: spec.run_command.clone(),
            action_repo_url: spec.action_repo.as_ref().map(|(url, _)| url.clone()),
            action_commit: spec.action_repo.as_ref().map(|(_, commit)| commit.clone()),
            requires_outputs_from: spec.needs.clone(),
            wait_for_job_ids,
            output_spec: spec.outputs.clone(),
            requires_db: spec.requires_db,
            cancelled: false,
            created_at,
            status: JobStatus {
                state: State::Pending,
                status_code: StatusCode::Created,
                status_message: messages::CREATED.to_string(),
                updated_at: created_at,
                started_at: None,
                completed_at: None,
                status_code_updated_at_ns: self.now_ns,
            },
            trace_context,
            user: request.created_by.clone(),
            project: request.project.clone(),
            orgs: request.orgs.clone(),
            analysis_scope,
            metrics: None,
        }
    }
}

/// The W3C `traceparent` a new job's spans are parented to: the job request's root span (the
/// request's `traceparent`) when it is valid, so a request's jobs form one trace with it; else a
/// fresh trace. Fresh ids are derived by hashing the job id and the time, which makes them unique
/// without a random source.
pub fn job_traceparent(request: Option<&str>, job_id: &JobId, now_ns: i64) -> String {
    if let Some(request) = request.filter(|value| parse_traceparent_trace_id(value).is_some()) {
        return request.to_string();
    }
    let digest = Sha256::digest(format!("{job_id}\n{now_ns}").as_bytes());
    format!(
        "00-{}-{}-01",
        hex::encode(&digest[..16]),
        hex::encode(&digest[16..24])
    )
}

/// The trace id of a valid `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero).
pub fn parse_traceparent_trace_id(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.split('-').collect();
    let hex_ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = parts.len() == 4
        && hex_ok(parts[0], 2)
        && hex_ok(parts[1], 32)
        && hex_ok(parts[2], 16)
        && hex_ok(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    valid.then(|| parts[1].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RequestRules {
        RequestRules {
            backends: vec!["test".into(), "tpp".into()],
            allowed_github_orgs: vec!["opensafely".into(), "opensafely-actions".into()],
            allow_local_repos: false,
            projects_with_event_level_access: vec![],
        }
    }

    fn fields() -> SubmitFields {
        SubmitFields {
            rap_id: "abcdefgh12345678".into(),
            backend: "test".into(),
            workspace: "my-workspace_1".into(),
            repo_url: "https://github.com/opensafely/study".into(),
            branch: "main".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            database_name: "default".into(),
            requested_actions: vec!["analyse".into()],
            codelists_ok: true,
            created_by: "alice".into(),
            project: "proj".into(),
            ..Default::default()
        }
    }

    fn action(name: &str, needs: &[&str], requires_db: bool) -> ProjectAction {
        ProjectAction {
            name: name.into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            run_command: "python:v2 analysis/x.py".into(),
            requires_db,
            outputs: vec![],
            action_repo: None,
        }
    }

    /// analyse needs p1 and p2; each needs gen (a DB action).
    fn fan_out() -> Project {
        Project {
            actions: vec![
                action("gen", &[], true),
                action("p1", &["gen"], false),
                action("p2", &["gen"], false),
                action("analyse", &["p1", "p2"], false),
            ],
        }
    }

    fn request(actions: &[&str]) -> JobRequest {
        let mut f = fields();
        f.requested_actions = actions.iter().map(|a| a.to_string()).collect();
        validate_request(f, &rules()).unwrap()
    }

    fn created(outcome: CreateOutcome) -> Vec<Job> {
        match outcome {
            CreateOutcome::Created(jobs) => jobs,
            other => panic!("expected jobs, got {other:?}"),
        }
    }

    fn names(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.action.as_str()).collect()
    }

    fn existing(rap: &str, action: &str, state: State) -> (String, ExistingJob) {
        let rap_id = RapId::parse(rap).unwrap();
        (
            action.to_string(),
            ExistingJob {
                id: JobId::derive(&rap_id, action),
                state,
            },
        )
    }

    #[test]
    fn validation_messages_match_the_reference() {
        type Mutate = Box<dyn Fn(&mut SubmitFields)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (
                Box::new(|f| f.rap_id = String::new()),
                "Invalid request body received at $.rap_id: '' does not match '^[a-z0-9]{16}$'",
            ),
            (
                Box::new(|f| f.requested_actions.clear()),
                "Invalid request body received at $.requested_actions: [] should be non-empty",
            ),
            (
                Box::new(|f| f.commit = "abc".into()),
                "Invalid request body received at $.commit: 'abc' does not match '^[0-9a-f]{40}$'",
            ),
            (
                Box::new(|f| f.database_name = "full".into()),
                "Invalid request body received at $.database_name: 'full' is not one of ['default']",
            ),
            (
                Box::new(|f| f.workspace.clear()),
                "Workspace name cannot be blank",
            ),
            (
                Box::new(|f| f.workspace = "a b".into()),
                "Invalid workspace name (allowed are alphanumeric, dash and underscore)",
            ),
            (
                Box::new(|f| f.backend = "emis".into()),
                "Invalid backend 'emis', allowed are: test, tpp",
            ),
            (
                Box::new(|f| f.repo_url = "https://gitlab.com/opensafely/x".into()),
                "Repository URL https://gitlab.com/opensafely/x does not start with https://github.com",
            ),
            (
                Box::new(|f| f.repo_url = "https://github.com/evil/x".into()),
                "Repository URL https://github.com/evil/x does not belong to one of the following Github organisations: opensafely, opensafely-actions",
            ),
            (
                Box::new(|f| f.repo_url = "https://github.com/opensafely/x/pull/1".into()),
                "Repository URL https://github.com/opensafely/x/pull/1 was not of the expected format: https://github.com/[organisation]/[project-name]",
            ),
            (
                Box::new(|f| f.repo_url = "/tmp/repo".into()),
                "Repository URL /tmp/repo does not start with https://github.com",
            ),
            (
                Box::new(|f| f.branch.clear()),
                "A branch name must be supplied",
            ),
            (
                Box::new(|f| {
                    f.analysis_scope = Some(AnalysisScope {
                        dataset_permissions: vec!["nope".into()],
                        ..Default::default()
                    })
                }),
                "Invalid request body received at $.analysis_scope.dataset_permissions[0]: 'nope' is not one of ['appointments', 'icnarc', 'isaric', 'open_prompt', 'ukrr', 'waiting_list', 'sgss_covid_all_tests', 'occupation_on_covid_vaccine_record', 'covid_therapeutics']",
            ),
        ];
        for (mutate, expected) in cases {
            let mut f = fields();
            mutate(&mut f);
            let err = validate_request(f, &rules()).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let mut local = rules();
        local.allow_local_repos = true;
        let mut f = fields();
        f.repo_url = "/tmp/repo".into();
        assert!(validate_request(f, &local).is_ok());
        // A job server's `file:///` URL names the same local repository, stored as its path;
        // without the setting it is refused like any other non-GitHub URL.
        let mut f = fields();
        f.repo_url = "file:///tmp/repo".into();
        assert_eq!(
            validate_request(f.clone(), &local).unwrap().repo_url,
            "/tmp/repo"
        );
        assert!(validate_request(f, &rules()).is_err());
        assert_eq!(
            validate_request(SubmitFields::default(), &rules())
                .unwrap_err()
                .error_class(),
            "Validation error"
        );
    }

    #[test]
    fn dependency_fan_out_creates_every_job_in_order() {
        let jobs = created(
            create_jobs(
                &request(&["analyse"]),
                &fan_out(),
                &HashMap::new(),
                &rules(),
                5_000_000_000,
            )
            .unwrap(),
        );
        assert_eq!(names(&jobs), ["gen", "p1", "p2", "analyse"]);
        let gen_id = JobId::derive(&RapId::parse("abcdefgh12345678").unwrap(), "gen");
        assert_eq!(jobs[0].id, gen_id);
        assert!(jobs[0].wait_for_job_ids.is_empty());
        assert_eq!(jobs[1].wait_for_job_ids, vec![gen_id]);
        assert_eq!(
            jobs[3].wait_for_job_ids,
            vec![jobs[1].id.clone(), jobs[2].id.clone()]
        );
        assert_eq!(jobs[3].requires_outputs_from, ["p1", "p2"]);
        assert!(jobs[0].requires_db && !jobs[1].requires_db);
        for job in &jobs {
            assert_eq!(job.status.state, State::Pending);
            assert_eq!(job.status.status_code, StatusCode::Created);
            assert_eq!(job.status.status_message, "Created");
            assert_eq!(job.created_at, 5);
            assert!(job.trace_context["traceparent"].starts_with("00-"));
        }
    }

    #[test]
    fn succeeded_dependencies_are_reused_unless_forced() {
        let state: HashMap<_, _> = [existing("zzzzzzzzzzzzzzzz", "gen", State::Succeeded)].into();
        let jobs =
            created(create_jobs(&request(&["p1"]), &fan_out(), &state, &rules(), 0).unwrap());
        assert_eq!(names(&jobs), ["p1"]);
        assert!(jobs[0].wait_for_job_ids.is_empty());

        let mut forced = request(&["p1"]);
        forced.force_run_dependencies = true;
        let jobs = created(create_jobs(&forced, &fan_out(), &state, &rules(), 0).unwrap());
        assert_eq!(names(&jobs), ["gen", "p1"]);
    }

    #[test]
    fn failed_dependencies_are_rerun_and_active_ones_awaited() {
        let failed: HashMap<_, _> = [existing("zzzzzzzzzzzzzzzz", "gen", State::Failed)].into();
        let jobs =
            created(create_jobs(&request(&["p1"]), &fan_out(), &failed, &rules(), 0).unwrap());
        assert_eq!(names(&jobs), ["gen", "p1"]);

        let running: HashMap<_, _> = [existing("zzzzzzzzzzzzzzzz", "gen", State::Running)].into();
        let mut forced = request(&["p1"]);
        forced.force_run_dependencies = true;
        let jobs = created(create_jobs(&forced, &fan_out(), &running, &rules(), 0).unwrap());
        assert_eq!(names(&jobs), ["p1"], "a running job is never duplicated");
        assert_eq!(jobs[0].wait_for_job_ids, vec![running["gen"].id.clone()]);
    }

    #[test]
    fn explicitly_requested_actions_rerun_even_when_succeeded() {
        let state: HashMap<_, _> = [existing("zzzzzzzzzzzzzzzz", "gen", State::Succeeded)].into();
        let jobs =
            created(create_jobs(&request(&["gen"]), &fan_out(), &state, &rules(), 0).unwrap());
        assert_eq!(names(&jobs), ["gen"]);
    }

    #[test]
    fn nothing_to_do_messages() {
        let all_done: HashMap<_, _> = ["gen", "p1", "p2", "analyse"]
            .into_iter()
            .map(|a| existing("zzzzzzzzzzzzzzzz", a, State::Succeeded))
            .collect();
        assert_eq!(
            create_jobs(&request(&["run_all"]), &fan_out(), &all_done, &rules(), 0).unwrap(),
            CreateOutcome::NothingToDo("All actions have already completed successfully")
        );
        let pending: HashMap<_, _> = [existing("zzzzzzzzzzzzzzzz", "gen", State::Pending)].into();
        assert_eq!(
            create_jobs(&request(&["gen"]), &fan_out(), &pending, &rules(), 0).unwrap(),
            CreateOutcome::NothingToDo("All requested actions were already scheduled to run")
        );
    }

    #[test]
    fn run_all_creates_what_is_missing_and_ignores_removed_actions() {
        let state: HashMap<_, _> = [
            existing("zzzzzzzzzzzzzzzz", "gen", State::Succeeded),
            existing("zzzzzzzzzzzzzzzz", "removed", State::Pending),
        ]
        .into();
        let jobs =
            created(create_jobs(&request(&["run_all"]), &fan_out(), &state, &rules(), 0).unwrap());
        assert_eq!(names(&jobs), ["p1", "p2", "analyse"]);
    }

    #[test]
    fn unknown_actions_and_cycles_are_errors() {
        let err = create_jobs(
            &request(&["nope"]),
            &fan_out(),
            &HashMap::new(),
            &rules(),
            0,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "Action 'nope' not found in project.yaml");
        let cyclic = Project {
            actions: vec![action("a", &["b"], false), action("b", &["a"], false)],
        };
        assert_eq!(
            create_jobs(&request(&["a"]), &cyclic, &HashMap::new(), &rules(), 0).unwrap_err(),
            CreateError::Cycle("a".into())
        );
    }

    #[test]
    fn stale_codelists_fail_only_with_new_db_jobs() {
        let mut req = request(&["analyse"]);
        req.codelists_ok = false;
        let jobs = created(create_jobs(&req, &fan_out(), &HashMap::new(), &rules(), 0).unwrap());
        assert_eq!(
            check_codelists(&req, &jobs).unwrap_err().to_string(),
            "Codelists are out of date (required by action gen)"
        );
        let state: HashMap<_, _> = [existing("zzzzzzzzzzzzzzzz", "gen", State::Succeeded)].into();
        let mut req = request(&["p1"]);
        req.codelists_ok = false;
        let jobs = created(create_jobs(&req, &fan_out(), &state, &rules(), 0).unwrap());
        assert!(check_codelists(&req, &jobs).is_ok());
    }

    #[test]
    fn db_jobs_get_a_sorted_scope_and_others_none() {
        let mut f = fields();
        f.requested_actions = vec!["p1".into()];
        f.project = "special".into();
        f.analysis_scope = Some(AnalysisScope {
            dataset_permissions: vec!["ukrr".into(), "icnarc".into()],
            ..Default::default()
        });
        let mut r = rules();
        r.projects_with_event_level_access = vec!["special".into()];
        let req = validate_request(f, &r).unwrap();
        let jobs = created(create_jobs(&req, &fan_out(), &HashMap::new(), &r, 0).unwrap());
        assert_eq!(
            jobs[0].analysis_scope.dataset_permissions,
            ["icnarc", "ukrr"]
        );
        assert_eq!(
            jobs[0].analysis_scope.component_access,
            ["event_level_data"]
        );
        assert!(jobs[1].analysis_scope.is_empty());
    }

    #[test]
    fn jobs_join_the_request_trace_or_start_their_own() {
        let id = JobId::derive(&RapId::parse("abcdefgh12345678").unwrap(), "a");
        let request = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(job_traceparent(Some(request), &id, 1), request);
        let fresh = job_traceparent(Some("garbage"), &id, 1);
        assert!(parse_traceparent_trace_id(&fresh).is_some(), "{fresh}");
        assert_ne!(fresh, job_traceparent(None, &id, 2), "unique per time");
    }
}
