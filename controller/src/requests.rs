//! The RAP API as domain operations (spec §2): what `rpc::rap` calls, and what tests, the CLI and
//! benches can call without a network. Each operation takes the backends the caller's token
//! may act on, so scoping is enforced here, once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::backend::{BackendError, BackendHandle, CancelOutcome, SubmitOutcome, core::flags};
use crate::config::Config;
use crate::git::Git;
use crate::jobs::create::{RequestError, RequestRules, SubmitFields, validate_request};
use crate::jobs::project::Project;
use crate::jobs::{Job, RapId};
use crate::reusable::{ReusableActions, resolve_reusable_actions};
use crate::store::{Change, Store};
use crate::watch::{WatchError, WatchHub};

/// A RAP API failure: the reference's error class and details (§2.7).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RapError {
    /// Schema failures: "Validation error".
    #[error("{0}")]
    Validation(String),
    /// The request names a backend the caller may not use: deliberately vague (§2.3 step 2).
    #[error("Unknown error")]
    UnknownBackend,
    /// "Error creating jobs" with the reason.
    #[error("{0}")]
    CreateJobs(String),
    #[error("Jobs already created for rap_id '{0}' are inconsistent with request data")]
    Inconsistent(String),
    /// "jobs not found" (cancel).
    #[error("{details}")]
    JobsNotFound {
        details: String,
        not_found: Vec<String>,
    },
    /// A storage or internal failure; details are logged, not shown.
    #[error("Unknown error")]
    Internal(String),
}

impl RapError {
    /// The reference's short error class (the `rap-error` metadata).
    pub fn error_class(&self) -> &'static str {
        match self {
            RapError::Validation(_) => "Validation error",
            RapError::UnknownBackend | RapError::CreateJobs(_) | RapError::Internal(_) => {
                "Error creating jobs"
            }
            RapError::Inconsistent(_) => "Inconsistent request data",
            RapError::JobsNotFound { .. } => "jobs not found",
        }
    }
}

impl From<BackendError> for RapError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Inconsistent(rap_id) => RapError::Inconsistent(rap_id),
            BackendError::Create(e) => RapError::CreateJobs(e.to_string()),
            BackendError::JobsNotFound(_) => RapError::JobsNotFound {
                details: e.to_string(),
                not_found: vec![],
            },
            BackendError::ActionsNotFound(ref actions) => RapError::JobsNotFound {
                not_found: actions.clone(),
                details: e.to_string(),
            },
            other => RapError::Internal(other.to_string()),
        }
    }
}

/// A backend's flags as job servers see them (§2.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    pub slug: String,
    pub last_seen: Option<i64>,
    pub paused: bool,
    pub paused_since: Option<i64>,
    pub db_maintenance: bool,
    pub db_maintenance_since: Option<i64>,
    /// "manual", "scheduled", or empty when off.
    pub db_maintenance_type: &'static str,
    /// The latest DBDATACHECK result, once one has arrived.
    pub data_check: Option<DataCheckStatus>,
}

/// The latest database data check of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataCheckStatus {
    /// `OK`, `FAILED`, or `ERROR` when the check could not run.
    pub status: String,
    /// UNIX seconds.
    pub checked_at: i64,
    /// Why it could not run (with `ERROR`).
    pub error: Option<String>,
}

/// The controller's domain API.
#[derive(Clone)]
pub struct Controller {
    config: Arc<Config>,
    rules: Arc<RequestRules>,
    store: Arc<Store>,
    git: Git,
    hub: WatchHub,
    backends: Arc<BTreeMap<String, BackendHandle>>,
}

impl Controller {
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        git: Git,
        hub: WatchHub,
        backends: BTreeMap<String, BackendHandle>,
    ) -> Controller {
        Controller {
            rules: Arc::new(config.request_rules()),
            config,
            store,
            git,
            hub,
            backends: Arc::new(backends),
        }
    }

    pub fn backend(&self, name: &str) -> Option<&BackendHandle> {
        self.backends.get(name)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Create the jobs of a request (§2.3), in the reference's order of checks.
    ///
    /// # Errors
    /// [`RapError`] with the reference's class and details.
    pub async fn submit(
        &self,
        token_backends: &[String],
        fields: SubmitFields,
    ) -> Result<SubmitOutcome, RapError> {
        let backend = fields.backend.clone();
        let raw = (
            fields.rap_id.clone(),
            fields.repo_url.clone(),
            fields.workspace.clone(),
            fields.commit.clone(),
        );
        let validated = validate_request(fields, &self.rules);
        if let Err(e @ RequestError::Schema { .. }) = &validated {
            return Err(RapError::Validation(e.to_string()));
        }
        if !token_backends.contains(&backend) {
            return Err(RapError::UnknownBackend);
        }
        // Idempotency comes before the other rules (§2.3 step 3).
        let existing = self
            .store
            .jobs_for_rap(&raw.0)
            .map_err(|e| RapError::Internal(e.to_string()))?;
        if let Some(first) = existing.iter().min_by_key(|j| (j.created_at, j.id.clone())) {
            if first.repo_url != raw.1 || first.workspace != raw.2 || first.commit != raw.3 {
                return Err(RapError::Inconsistent(raw.0));
            }
            return Ok(SubmitOutcome::NoChange(
                u32::try_from(existing.len()).unwrap_or(u32::MAX),
            ));
        }
        let request = validated.map_err(|e| RapError::CreateJobs(e.to_string()))?;
        let Some(handle) = self.backends.get(&request.backend) else {
            return Err(RapError::UnknownBackend);
        };

        self.git
            .check_commit_on_branch(&request.repo_url, &request.branch, &request.commit)
            .await
            .map_err(|e| RapError::CreateJobs(e.to_string()))?;
        let Some(text) = self
            .git
            .read_file(&request.repo_url, &request.commit, "project.yaml")
            .await
            .map_err(|e| RapError::CreateJobs(e.to_string()))?
        else {
            return Err(RapError::CreateJobs(format!(
                "No project.yaml file found in {}",
                request.repo_url
            )));
        };
        let mut project = Project::parse(&text).map_err(RapError::CreateJobs)?;
        let reusable = ReusableActions {
            git: &self.git,
            actions_url: &self.config.actions_url,
        };
        resolve_reusable_actions(&reusable, &request, &mut project)
            .await
            .map_err(|e| RapError::CreateJobs(e.to_string()))?;
        Ok(handle.submit(request, project).await?)
    }

    /// Cancel named actions of a request (§2.4).
    ///
    /// # Errors
    /// "jobs not found" when nothing visible matches.
    pub async fn cancel(
        &self,
        token_backends: &[String],
        rap_id: &str,
        actions: Vec<String>,
    ) -> Result<CancelOutcome, RapError> {
        let Some(parsed) = RapId::parse(rap_id) else {
            return Err(RapError::Validation(format!(
                "Invalid request body received at $.rap_id: '{rap_id}' does not match '^[a-z0-9]{{16}}$'"
            )));
        };
        if actions.is_empty() {
            return Err(RapError::Validation(
                "Invalid request body received at $.actions: [] should be non-empty".into(),
            ));
        }
        let not_found = || RapError::JobsNotFound {
            details: format!("No jobs found for rap_id {rap_id}"),
            not_found: vec![],
        };
        let jobs = self
            .store
            .jobs_for_rap(rap_id)
            .map_err(|e| RapError::Internal(e.to_string()))?;
        // Jobs on a backend the caller cannot see are reported exactly like missing ones.
        let Some(backend) = jobs
            .iter()
            .map(|j| &j.backend)
            .find(|b| token_backends.contains(b))
        else {
            return Err(not_found());
        };
        let Some(handle) = self.backends.get(backend) else {
            return Err(not_found());
        };
        Ok(handle.cancel(parsed, actions).await?)
    }

    /// Every visible job of the given requests, and the ids that matched none (§2.5).
    ///
    /// # Errors
    /// A malformed rap id, or storage failures.
    pub fn status(
        &self,
        token_backends: &[String],
        rap_ids: &[String],
    ) -> Result<(Vec<Job>, Vec<String>), RapError> {
        let mut jobs = Vec::new();
        let mut unrecognised = Vec::new();
        for (i, rap_id) in rap_ids.iter().enumerate() {
            if RapId::parse(rap_id).is_none() {
                return Err(RapError::Validation(format!(
                    "Invalid request body received at $.rap_ids[{i}]: '{rap_id}' does not match '^[a-z0-9]{{16}}$'"
                )));
            }
            let visible: Vec<Job> = self
                .store
                .jobs_for_rap(rap_id)
                .map_err(|e| RapError::Internal(e.to_string()))?
                .into_iter()
                .filter(|j| token_backends.contains(&j.backend))
                .collect();
            if visible.is_empty() {
                unrecognised.push(rap_id.clone());
            }
            jobs.extend(visible);
        }
        Ok((jobs, unrecognised))
    }

    /// Flags of every visible backend, in configuration order (§2.6).
    ///
    /// # Errors
    /// Storage failures.
    pub fn backend_status(
        &self,
        token_backends: &[String],
    ) -> Result<Vec<BackendStatus>, RapError> {
        let mut out = Vec::new();
        for backend in &self.config.backends {
            if !token_backends.contains(&backend.name) {
                continue;
            }
            let flags = self
                .store
                .flags(&backend.name)
                .map_err(|e| RapError::Internal(e.to_string()))?;
            let value = |id: &str| flags.get(id).and_then(|f| f.value.as_deref());
            let since = |id: &str| flags.get(id).map(|f| f.timestamp);
            let db_maintenance = value(flags::MODE) == Some(flags::DB_MAINTENANCE);
            out.push(BackendStatus {
                slug: backend.name.clone(),
                last_seen: since(flags::LAST_SEEN),
                paused: value(flags::PAUSED).is_some_and(|v| v.eq_ignore_ascii_case("true")),
                paused_since: since(flags::PAUSED),
                db_maintenance,
                db_maintenance_since: since(flags::MODE),
                db_maintenance_type: match (db_maintenance, value(flags::MANUAL_DB_MAINTENANCE)) {
                    (false, _) => "",
                    (true, Some("on")) => "manual",
                    (true, _) => "scheduled",
                },
                data_check: flags.get(flags::DATA_CHECK).and_then(|flag| {
                    Some(DataCheckStatus {
                        status: flag.value.clone()?,
                        checked_at: flag.timestamp,
                        error: value(flags::DATA_CHECK_ERROR).map(str::to_string),
                    })
                }),
            });
        }
        Ok(out)
    }

    /// Job changes on visible backends after `after_cursor`: history, then live.
    pub fn watch(
        &self,
        token_backends: &[String],
        after_cursor: u64,
    ) -> mpsc::Receiver<Result<Change, WatchError>> {
        let backends: HashSet<String> = token_backends.iter().cloned().collect();
        self.hub.watch(self.store.clone(), backends, after_cursor)
    }
}
