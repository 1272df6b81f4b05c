//! The job server's own store: sled trees of versioned JSON records (see [`records`]).
//!
//! Only this module sees sled. Keys are plain names, or `a\0b` for pairs, so prefix scans list a
//! parent's children. Secrets (passwords, tokens, session ids) are stored only as hashes.
//! Writes that must survive a crash before we answer (job changes with the watch cursor) go
//! through one multi-tree transaction and `flush_async`.

pub mod records;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;

use crate::model::{
    AnalysisScope, Backend, Job, JobRequest, LoginToken, Membership, Metrics, Org, Project, RapId,
    Release, ReleaseFile, Session, User, Workspace,
};
use records::{
    BackendRecord, JobRecord, JobRequestRecord, MembershipRecord, MetricsV1, OrgRecord,
    ProjectRecord, ReleaseFileRecord, ReleaseRecord, SessionRecord, UserRecord, WorkspaceRecord,
};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in {tree} at {key:?}: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("corrupt {field} {value:?} in {tree}")]
    BadValue {
        tree: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("encoding a record failed: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The store handle; cheap to clone (sled trees are `Arc`s inside).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    users: sled::Tree,
    orgs: sled::Tree,
    projects: sled::Tree,
    memberships: sled::Tree,
    backends: sled::Tree,
    backend_tokens: sled::Tree,
    backend_memberships: sled::Tree,
    workspaces: sled::Tree,
    job_requests: sled::Tree,
    /// Newest-first index of every job request: [`request_time_key`] → empty.
    job_requests_by_time: sled::Tree,
    /// The same per workspace: `workspace\0` + [`request_time_key`] → empty.
    job_requests_by_workspace: sled::Tree,
    /// Rap ids of the requests whose status is active (A6) → empty.
    active_job_requests: sled::Tree,
    jobs: sled::Tree,
    jobs_by_request: sled::Tree,
    meta: sled::Tree,
    sessions: sled::Tree,
    releases: sled::Tree,
    release_files: sled::Tree,
    release_file_names: sled::Tree,
    /// Held while a job request is read, changed and written back, so two updaters (the watch
    /// task recomputing its status, a cancel adding its actions) never write stale copies.
    request_updates: std::sync::Arc<std::sync::Mutex<()>>,
}

const WATCH_CURSOR: &[u8] = b"watch_cursor";
/// Set once the job-request indexes (time, workspace, active) cover every stored request.
const JOB_REQUEST_INDEX: &[u8] = b"job_request_index_v2";

/// Which job requests a list shows.
#[derive(Debug, Clone, Copy)]
pub enum RequestScope<'a> {
    Everywhere,
    Workspace(&'a str),
}

/// One page of job requests, newest first.
#[derive(Debug)]
pub struct RequestPage {
    pub requests: Vec<JobRequest>,
    /// Whether more matching requests follow this page.
    pub has_more: bool,
}

/// The index key of a request: newest first, then rap id descending (the order lists show).
/// Times before 1970 sort as 1970; rap ids all have the same length, so inverting their bytes
/// inverts their order.
fn request_time_key(request: &JobRequest) -> Vec<u8> {
    let age = u64::MAX - u64::try_from(request.created_at).unwrap_or(0);
    let mut key = age.to_be_bytes().to_vec();
    key.extend(request.rap_id.as_str().bytes().map(|b| !b));
    key
}

/// The rap id at the end of an index key.
fn rap_id_of_time_key(key: &[u8]) -> String {
    key[key.len().saturating_sub(RAP_ID_LEN)..]
        .iter()
        .map(|b| char::from(!b))
        .collect()
}

const RAP_ID_LEN: usize = 16;
/// Room reserved for a page up front (callers may ask for "all" with `usize::MAX`).
const PAGE_CAPACITY_HINT: usize = 64;

/// The sha256 of a secret, hex: how tokens and session ids are stored.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

fn pair(a: &str, b: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + b.len() + 1);
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    key
}

fn prefix(a: &str) -> Vec<u8> {
    let mut key = a.as_bytes().to_vec();
    key.push(0);
    key
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(decode(name, key, &bytes)?)),
        None => Ok(None),
    }
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], record: &T) -> Result<(), StoreError> {
    tree.insert(key, serde_json::to_vec(record)?)?;
    Ok(())
}

fn scan<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    prefix: &[u8],
) -> Result<Vec<T>, StoreError> {
    tree.scan_prefix(prefix)
        .map(|item| {
            let (key, value) = item?;
            decode(name, &key, &value)
        })
        .collect()
}

fn parse_roles(
    tree: &'static str,
    names: Vec<String>,
) -> Result<Vec<crate::roles::Role>, StoreError> {
    names
        .into_iter()
        .map(|name| {
            name.parse().map_err(|_| StoreError::BadValue {
                tree,
                field: "roles",
                value: name,
            })
        })
        .collect()
}

fn role_names(roles: &[crate::roles::Role]) -> Vec<String> {
    roles.iter().map(|role| role.as_str().to_owned()).collect()
}

impl Store {
    /// Opens (creating) the store in a directory.
    ///
    /// # Errors
    /// When sled cannot open the directory.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        Self::from_db(sled::open(path)?)
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let store = Store {
            users: db.open_tree("users")?,
            orgs: db.open_tree("orgs")?,
            projects: db.open_tree("projects")?,
            memberships: db.open_tree("memberships")?,
            backends: db.open_tree("backends")?,
            backend_tokens: db.open_tree("backend_tokens")?,
            backend_memberships: db.open_tree("backend_memberships")?,
            workspaces: db.open_tree("workspaces")?,
            job_requests: db.open_tree("job_requests")?,
            job_requests_by_time: db.open_tree("job_requests_by_time")?,
            job_requests_by_workspace: db.open_tree("job_requests_by_workspace")?,
            active_job_requests: db.open_tree("active_job_requests")?,
            jobs: db.open_tree("jobs")?,
            jobs_by_request: db.open_tree("jobs_by_request")?,
            meta: db.open_tree("meta")?,
            sessions: db.open_tree("sessions")?,
            releases: db.open_tree("releases")?,
            release_files: db.open_tree("release_files")?,
            release_file_names: db.open_tree("release_file_names")?,
            db,
            request_updates: Default::default(),
        };
        store.index_job_requests()?;
        Ok(store)
    }

    /// Builds the job-request indexes once, for a store written before they existed.
    fn index_job_requests(&self) -> Result<(), StoreError> {
        if self.meta.get(JOB_REQUEST_INDEX)?.is_some() {
            return Ok(());
        }
        self.active_job_requests.clear()?;
        for item in self.job_requests.iter() {
            let (key, value) = item?;
            let request = job_request_from_record(decode("job_requests", &key, &value)?)?;
            self.job_requests_by_time
                .insert(request_time_key(&request), &[])?;
            self.job_requests_by_workspace.insert(
                [prefix(&request.workspace), request_time_key(&request)].concat(),
                &[],
            )?;
            if request.status.is_active() {
                self.active_job_requests
                    .insert(request.rap_id.as_str().as_bytes(), &[])?;
            }
        }
        self.meta.insert(JOB_REQUEST_INDEX, &[1])?;
        Ok(())
    }

    /// Waits until every write so far is on disk.
    ///
    /// # Errors
    /// When the flush fails.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    // Users.

    /// Creates or replaces a user.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_user(&self, user: &User) -> Result<(), StoreError> {
        let record = UserRecord::V1 {
            username: user.username.clone(),
            fullname: user.fullname.clone(),
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            roles: role_names(&user.roles),
            login_token_hash: user.login_token.as_ref().map(|t| t.hash.clone()),
            login_token_expires_at: user.login_token.as_ref().map(|t| t.expires_at),
            date_joined: user.date_joined,
        };
        put(&self.users, user.username.as_bytes(), &record)
    }

    /// A user by username.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        get(&self.users, "users", username.as_bytes())?
            .map(user_from_record)
            .transpose()
    }

    /// A user by username or (case-insensitive) email, as the Airlock login accepts either.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn user_by_name_or_email(&self, who: &str) -> Result<Option<User>, StoreError> {
        if let Some(user) = self.user(who)? {
            return Ok(Some(user));
        }
        let email = who.to_lowercase();
        Ok(self.users()?.into_iter().find(|user| user.email == email))
    }

    /// Every user.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        scan(&self.users, "users", b"")?
            .into_iter()
            .map(user_from_record)
            .collect()
    }

    // Orgs and projects.

    /// Creates or replaces an org.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_org(&self, org: &Org) -> Result<(), StoreError> {
        let record = OrgRecord::V1 {
            slug: org.slug.clone(),
            name: org.name.clone(),
        };
        put(&self.orgs, org.slug.as_bytes(), &record)
    }

    /// An org by slug.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn org(&self, slug: &str) -> Result<Option<Org>, StoreError> {
        Ok(get(&self.orgs, "orgs", slug.as_bytes())?
            .map(|OrgRecord::V1 { slug, name }| Org { slug, name }))
    }

    /// Creates or replaces a project.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_project(&self, project: &Project) -> Result<(), StoreError> {
        let record = ProjectRecord::V2 {
            slug: project.slug.clone(),
            name: project.name.clone(),
            status: project.status.clone(),
            orgs: project.orgs.clone(),
            copilot: project.copilot.clone(),
            dataset_permissions: project.analysis_scope.dataset_permissions.clone(),
            population_permissions: project.analysis_scope.population_permissions.clone(),
            component_access: project.analysis_scope.component_access.clone(),
        };
        put(&self.projects, project.slug.as_bytes(), &record)
    }

    /// A project by slug.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn project(&self, slug: &str) -> Result<Option<Project>, StoreError> {
        Ok(get(&self.projects, "projects", slug.as_bytes())?.map(project_from_record))
    }

    /// Every project.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn projects(&self) -> Result<Vec<Project>, StoreError> {
        Ok(scan(&self.projects, "projects", b"")?
            .into_iter()
            .map(project_from_record)
            .collect())
    }

    /// Creates or replaces a project membership.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_membership(&self, membership: &Membership) -> Result<(), StoreError> {
        let record = MembershipRecord::V1 {
            project: membership.project.clone(),
            username: membership.username.clone(),
            roles: role_names(&membership.roles),
        };
        put(
            &self.memberships,
            &pair(&membership.project, &membership.username),
            &record,
        )
    }

    /// One user's membership of one project.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn membership(
        &self,
        project: &str,
        username: &str,
    ) -> Result<Option<Membership>, StoreError> {
        get(&self.memberships, "memberships", &pair(project, username))?
            .map(membership_from_record)
            .transpose()
    }

    /// Every membership of a project.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn memberships_of_project(&self, project: &str) -> Result<Vec<Membership>, StoreError> {
        scan(&self.memberships, "memberships", &prefix(project))?
            .into_iter()
            .map(membership_from_record)
            .collect()
    }

    /// Every membership a user holds (a full scan: memberships are few).
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn memberships_of_user(&self, username: &str) -> Result<Vec<Membership>, StoreError> {
        Ok(scan(&self.memberships, "memberships", b"")?
            .into_iter()
            .map(membership_from_record)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|m| m.username == username)
            .collect())
    }

    // Backends.

    /// Creates or replaces a backend, indexing its token hash.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_backend(&self, backend: &Backend) -> Result<(), StoreError> {
        if let Some(old) = self.backend(&backend.slug)?
            && old.token_hash != backend.token_hash
        {
            self.backend_tokens.remove(old.token_hash.as_bytes())?;
        }
        let record = BackendRecord::V1 {
            slug: backend.slug.clone(),
            name: backend.name.clone(),
            is_active: backend.is_active,
            token_hash: backend.token_hash.clone(),
            last_seen: backend.last_seen,
            paused: backend.paused,
            db_maintenance: backend.db_maintenance,
            db_maintenance_since: backend.db_maintenance_since,
        };
        put(&self.backends, backend.slug.as_bytes(), &record)?;
        self.backend_tokens
            .insert(backend.token_hash.as_bytes(), backend.slug.as_bytes())?;
        Ok(())
    }

    /// A backend by slug.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn backend(&self, slug: &str) -> Result<Option<Backend>, StoreError> {
        Ok(get(&self.backends, "backends", slug.as_bytes())?.map(backend_from_record))
    }

    /// The backend whose token this is, if any. The lookup is by hash, so the raw token is
    /// never compared byte by byte against stored secrets.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn backend_by_token(&self, token: &str) -> Result<Option<Backend>, StoreError> {
        match self.backend_tokens.get(hash_secret(token).as_bytes())? {
            Some(slug) => self.backend(&String::from_utf8_lossy(&slug)),
            None => Ok(None),
        }
    }

    /// Every backend.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn backends(&self) -> Result<Vec<Backend>, StoreError> {
        Ok(scan(&self.backends, "backends", b"")?
            .into_iter()
            .map(backend_from_record)
            .collect())
    }

    /// Makes a user a member of a backend.
    ///
    /// # Errors
    /// On storage failure.
    pub fn add_backend_membership(&self, backend: &str, username: &str) -> Result<(), StoreError> {
        self.backend_memberships
            .insert(pair(username, backend), b"1")?;
        Ok(())
    }

    /// The slugs of the backends a user is a member of.
    ///
    /// # Errors
    /// On storage failure.
    pub fn backends_of_user(&self, username: &str) -> Result<Vec<String>, StoreError> {
        let start = prefix(username).len();
        self.backend_memberships
            .scan_prefix(prefix(username))
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?[start..]).into_owned()))
            .collect()
    }

    // Workspaces.

    /// Creates a workspace unless one of that name exists (names are globally unique).
    /// Returns false when the name was taken.
    ///
    /// # Errors
    /// On storage failure.
    pub fn insert_workspace(&self, workspace: &Workspace) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(&workspace_record(workspace))?;
        let swapped = self.workspaces.compare_and_swap(
            workspace.name.as_bytes(),
            None as Option<&[u8]>,
            Some(bytes),
        )?;
        Ok(swapped.is_ok())
    }

    /// Replaces a workspace.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        put(
            &self.workspaces,
            workspace.name.as_bytes(),
            &workspace_record(workspace),
        )
    }

    /// A workspace by name.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn workspace(&self, name: &str) -> Result<Option<Workspace>, StoreError> {
        Ok(get(&self.workspaces, "workspaces", name.as_bytes())?.map(workspace_from_record))
    }

    /// The workspaces of a project, archived last.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn workspaces_of_project(&self, project: &str) -> Result<Vec<Workspace>, StoreError> {
        let mut list: Vec<Workspace> = scan(&self.workspaces, "workspaces", b"")?
            .into_iter()
            .map(workspace_from_record)
            .filter(|w: &Workspace| w.project == project)
            .collect();
        list.sort_by_key(|w| w.is_archived);
        Ok(list)
    }

    // Job requests and jobs.

    /// Creates or replaces a job request.
    ///
    /// # Errors
    /// On storage failure.
    /// Reads a job request, lets `change` edit it, and writes it back if `change` says it
    /// changed, with no other update in between. `None` if there is no such request.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn update_job_request(
        &self,
        rap_id: &str,
        change: impl FnOnce(&mut JobRequest) -> bool,
    ) -> Result<Option<JobRequest>, StoreError> {
        // A poisoned lock only means another updater panicked; the records are fine.
        let _guard = self
            .request_updates
            .lock()
            .unwrap_or_else(|error| error.into_inner());
        let Some(mut request) = self.job_request(rap_id)? else {
            return Ok(None);
        };
        if change(&mut request) {
            self.put_job_request(&request)?;
        }
        Ok(Some(request))
    }

    pub fn put_job_request(&self, request: &JobRequest) -> Result<(), StoreError> {
        let record = JobRequestRecord::V1 {
            rap_id: request.rap_id.as_str().to_owned(),
            backend: request.backend.clone(),
            workspace: request.workspace.clone(),
            project: request.project.clone(),
            requested_actions: request.requested_actions.clone(),
            cancelled_actions: request.cancelled_actions.clone(),
            sha: request.sha.clone(),
            force_run_dependencies: request.force_run_dependencies,
            created_by: request.created_by.clone(),
            created_at: request.created_at,
            status: request.status.as_str().to_owned(),
            status_message: request.status_message.clone(),
            project_definition: request.project_definition.clone(),
        };
        let bytes = serde_json::to_vec(&record)?;
        // A request's time and workspace never change, so its index keys are the same on
        // every put; writing them in the same transaction keeps lists and records in step.
        let time_key = request_time_key(request);
        let workspace_key = [prefix(&request.workspace), time_key.clone()].concat();
        let rap_id = request.rap_id.as_str().as_bytes();
        (
            &self.job_requests,
            &self.job_requests_by_time,
            &self.job_requests_by_workspace,
            &self.active_job_requests,
        )
            .transaction(|(requests, by_time, by_workspace, active)| {
                requests.insert(rap_id, bytes.as_slice())?;
                by_time.insert(time_key.as_slice(), &[])?;
                by_workspace.insert(workspace_key.as_slice(), &[])?;
                if request.status.is_active() {
                    active.insert(rap_id, &[])?;
                } else {
                    active.remove(rap_id)?;
                }
                Ok(())
            })
            .map_err(
                |error: sled::transaction::TransactionError<()>| match error {
                    sled::transaction::TransactionError::Storage(error) => StoreError::Sled(error),
                    sled::transaction::TransactionError::Abort(()) => {
                        StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                    }
                },
            )
    }

    /// A page of job requests in `scope`, newest first: those `keep` accepts (all when `None`),
    /// skipping the first `skip` of them and returning at most `take`. Reads the time index and
    /// only the records it must: without a filter, the skipped ones are counted on the index
    /// and only the page's own are read.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn job_requests_page(
        &self,
        scope: RequestScope<'_>,
        keep: Option<&dyn Fn(&JobRequest) -> bool>,
        skip: usize,
        take: usize,
    ) -> Result<RequestPage, StoreError> {
        let keys = match scope {
            RequestScope::Everywhere => self.job_requests_by_time.iter(),
            RequestScope::Workspace(workspace) => self
                .job_requests_by_workspace
                .scan_prefix(prefix(workspace)),
        };
        let mut requests = Vec::with_capacity(take.min(PAGE_CAPACITY_HINT));
        let mut matched = 0;
        for key in keys.keys() {
            let key = key?;
            if keep.is_none() && matched < skip {
                matched += 1;
                continue;
            }
            let Some(request) = self.job_request(&rap_id_of_time_key(&key))? else {
                continue;
            };
            if keep.is_some_and(|keep| !keep(&request)) {
                continue;
            }
            matched += 1;
            if matched <= skip {
                continue;
            }
            if requests.len() == take {
                return Ok(RequestPage {
                    requests,
                    has_more: true,
                });
            }
            requests.push(request);
        }
        Ok(RequestPage {
            requests,
            has_more: false,
        })
    }

    /// A job request by rap id.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn job_request(&self, rap_id: &str) -> Result<Option<JobRequest>, StoreError> {
        get(&self.job_requests, "job_requests", rap_id.as_bytes())?
            .map(job_request_from_record)
            .transpose()
    }

    /// The job requests whose status is active (A6: pending, running, unknown, unknown error
    /// creating jobs), from their index: what the status page and the watch task need, without
    /// reading finished requests.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn active_job_requests(&self) -> Result<Vec<JobRequest>, StoreError> {
        let mut requests = Vec::new();
        for key in self.active_job_requests.iter().keys() {
            let key = key?;
            if let Some(request) = self.job_request(&String::from_utf8_lossy(&key))? {
                requests.push(request);
            }
        }
        Ok(requests)
    }

    /// A job by identifier.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn job(&self, identifier: &str) -> Result<Option<Job>, StoreError> {
        get(&self.jobs, "jobs", identifier.as_bytes())?
            .map(job_from_record)
            .transpose()
    }

    /// The jobs of a job request, by creation time.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn jobs_of_request(&self, rap_id: &str) -> Result<Vec<Job>, StoreError> {
        let mut jobs = Vec::new();
        let start = prefix(rap_id).len();
        for key in self.jobs_by_request.scan_prefix(prefix(rap_id)).keys() {
            let key = key?;
            let identifier = String::from_utf8_lossy(&key[start..]).into_owned();
            if let Some(job) = self.job(&identifier)? {
                jobs.push(job);
            }
        }
        jobs.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.action.cmp(&b.action))
        });
        Ok(jobs)
    }

    /// Applies one controller job change and moves the watch cursor, atomically, then waits
    /// for durability: after a crash we resume from the cursor and never skip a change.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn apply_job_change(&self, cursor: u64, job: &Job) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&job_record(job))?;
        let index_key = pair(job.rap_id.as_str(), &job.identifier);
        (&self.jobs, &self.jobs_by_request, &self.meta)
            .transaction(|(jobs, index, meta)| {
                jobs.insert(job.identifier.as_bytes(), bytes.clone())?;
                index.insert(index_key.clone(), b"1".to_vec())?;
                meta.insert(WATCH_CURSOR, cursor.to_be_bytes().to_vec())?;
                Ok(())
            })
            .map_err(|error| match error {
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                }
                sled::transaction::TransactionError::Storage(error) => StoreError::Sled(error),
            })?;
        self.flush().await
    }

    /// Moves the watch cursor past a change we skip, durably.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn set_watch_cursor(&self, cursor: u64) -> Result<(), StoreError> {
        self.meta.insert(WATCH_CURSOR, &cursor.to_be_bytes())?;
        self.flush().await
    }

    /// The cursor after the last applied WatchJobs change (0 before any).
    ///
    /// # Errors
    /// On storage failure.
    pub fn watch_cursor(&self) -> Result<u64, StoreError> {
        Ok(match self.meta.get(WATCH_CURSOR)? {
            Some(bytes) => {
                let mut raw = [0u8; 8];
                if bytes.len() == 8 {
                    raw.copy_from_slice(&bytes);
                }
                u64::from_be_bytes(raw)
            }
            None => 0,
        })
    }

    // Sessions.

    /// Stores a session under the hash of its id.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_session(&self, session_id: &str, session: &Session) -> Result<(), StoreError> {
        let record = SessionRecord::V1 {
            username: session.username.clone(),
            csrf_token: session.csrf_token.clone(),
            created_at: session.created_at,
        };
        put(&self.sessions, hash_secret(session_id).as_bytes(), &record)
    }

    /// The session with this id, if any.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn session(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        Ok(get(
            &self.sessions,
            "sessions",
            hash_secret(session_id).as_bytes(),
        )?
        .map(
            |SessionRecord::V1 {
                 username,
                 csrf_token,
                 created_at,
             }| Session {
                username,
                csrf_token,
                created_at,
            },
        ))
    }

    /// Ends a session.
    ///
    /// # Errors
    /// On storage failure.
    pub fn delete_session(&self, session_id: &str) -> Result<(), StoreError> {
        self.sessions.remove(hash_secret(session_id).as_bytes())?;
        Ok(())
    }

    // Releases.

    /// A release by id.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn release(&self, id: &str) -> Result<Option<Release>, StoreError> {
        Ok(get(&self.releases, "releases", id.as_bytes())?.map(
            |ReleaseRecord::V1 {
                 id,
                 workspace,
                 backend,
                 created_by,
                 created_at,
             }| Release {
                id,
                workspace,
                backend,
                created_by,
                created_at,
            },
        ))
    }

    /// Stores a new release and its (not yet uploaded) files.
    ///
    /// # Errors
    /// On storage failure.
    pub fn insert_release(
        &self,
        release: &Release,
        files: &[ReleaseFile],
    ) -> Result<(), StoreError> {
        for file in files {
            self.put_release_file(file)?;
        }
        let record = ReleaseRecord::V1 {
            id: release.id.clone(),
            workspace: release.workspace.clone(),
            backend: release.backend.clone(),
            created_by: release.created_by.clone(),
            created_at: release.created_at,
        };
        put(&self.releases, release.id.as_bytes(), &record)
    }

    /// Creates or replaces a release file.
    ///
    /// # Errors
    /// On storage failure.
    pub fn put_release_file(&self, file: &ReleaseFile) -> Result<(), StoreError> {
        let record = ReleaseFileRecord::V1 {
            id: file.id.clone(),
            release_id: file.release_id.clone(),
            workspace: file.workspace.clone(),
            name: file.name.clone(),
            sha256: file.sha256.clone(),
            size: file.size,
            mtime: file.mtime,
            created_by: file.created_by.clone(),
            uploaded_at: file.uploaded_at,
        };
        put(&self.release_files, file.id.as_bytes(), &record)?;
        self.release_file_names
            .insert(pair(&file.release_id, &file.name), file.id.as_bytes())?;
        Ok(())
    }

    /// A release file by id.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn release_file(&self, id: &str) -> Result<Option<ReleaseFile>, StoreError> {
        Ok(get(&self.release_files, "release_files", id.as_bytes())?.map(release_file_from_record))
    }

    /// The files of a release, by name.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn release_files_of_release(
        &self,
        release_id: &str,
    ) -> Result<Vec<ReleaseFile>, StoreError> {
        let mut files = Vec::new();
        for value in self
            .release_file_names
            .scan_prefix(prefix(release_id))
            .values()
        {
            if let Some(file) = self.release_file(&String::from_utf8_lossy(&value?))? {
                files.push(file);
            }
        }
        Ok(files)
    }

    /// Every release file of a workspace.
    ///
    /// # Errors
    /// On storage failure or a corrupt record.
    pub fn release_files_of_workspace(
        &self,
        workspace: &str,
    ) -> Result<Vec<ReleaseFile>, StoreError> {
        let mut files: Vec<ReleaseFile> = scan(&self.release_files, "release_files", b"")?
            .into_iter()
            .map(release_file_from_record)
            .filter(|f: &ReleaseFile| f.workspace == workspace)
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name).then(b.uploaded_at.cmp(&a.uploaded_at)));
        Ok(files)
    }
}

fn user_from_record(record: UserRecord) -> Result<User, StoreError> {
    let UserRecord::V1 {
        username,
        fullname,
        email,
        password_hash,
        roles,
        login_token_hash,
        login_token_expires_at,
        date_joined,
    } = record;
    let login_token = match (login_token_hash, login_token_expires_at) {
        (Some(hash), Some(expires_at)) => Some(LoginToken { hash, expires_at }),
        _ => None,
    };
    Ok(User {
        username,
        fullname,
        email,
        password_hash,
        roles: parse_roles("users", roles)?,
        login_token,
        date_joined,
    })
}

fn project_from_record(record: ProjectRecord) -> Project {
    match record {
        ProjectRecord::V1 {
            slug,
            name,
            status,
            orgs,
            copilot,
        } => Project {
            slug,
            name,
            status,
            orgs,
            copilot,
            analysis_scope: AnalysisScope::default(),
        },
        ProjectRecord::V2 {
            slug,
            name,
            status,
            orgs,
            copilot,
            dataset_permissions,
            population_permissions,
            component_access,
        } => Project {
            slug,
            name,
            status,
            orgs,
            copilot,
            analysis_scope: AnalysisScope {
                dataset_permissions,
                population_permissions,
                component_access,
            },
        },
    }
}

fn membership_from_record(record: MembershipRecord) -> Result<Membership, StoreError> {
    let MembershipRecord::V1 {
        project,
        username,
        roles,
    } = record;
    Ok(Membership {
        project,
        username,
        roles: parse_roles("memberships", roles)?,
    })
}

fn backend_from_record(record: BackendRecord) -> Backend {
    let BackendRecord::V1 {
        slug,
        name,
        is_active,
        token_hash,
        last_seen,
        paused,
        db_maintenance,
        db_maintenance_since,
    } = record;
    Backend {
        slug,
        name,
        is_active,
        token_hash,
        last_seen,
        paused,
        db_maintenance,
        db_maintenance_since,
    }
}

fn workspace_record(w: &Workspace) -> WorkspaceRecord {
    WorkspaceRecord::V1 {
        name: w.name.clone(),
        project: w.project.clone(),
        repo_url: w.repo_url.clone(),
        branch: w.branch.clone(),
        purpose: w.purpose.clone(),
        is_archived: w.is_archived,
        created_by: w.created_by.clone(),
        created_at: w.created_at,
    }
}

fn workspace_from_record(record: WorkspaceRecord) -> Workspace {
    let WorkspaceRecord::V1 {
        name,
        project,
        repo_url,
        branch,
        purpose,
        is_archived,
        created_by,
        created_at,
    } = record;
    Workspace {
        name,
        project,
        repo_url,
        branch,
        purpose,
        is_archived,
        created_by,
        created_at,
    }
}

fn job_request_from_record(record: JobRequestRecord) -> Result<JobRequest, StoreError> {
    let JobRequestRecord::V1 {
        rap_id,
        backend,
        workspace,
        project,
        requested_actions,
        cancelled_actions,
        sha,
        force_run_dependencies,
        created_by,
        created_at,
        status,
        status_message,
        project_definition,
    } = record;
    let bad = |field: &'static str, value: String| StoreError::BadValue {
        tree: "job_requests",
        field,
        value,
    };
    Ok(JobRequest {
        rap_id: RapId::parse(&rap_id).map_err(|_| bad("rap_id", rap_id.clone()))?,
        backend,
        workspace,
        project,
        requested_actions,
        cancelled_actions,
        sha,
        force_run_dependencies,
        created_by,
        created_at,
        status: status.parse().map_err(|_| bad("status", status.clone()))?,
        status_message,
        project_definition,
    })
}

fn job_record(job: &Job) -> JobRecord {
    JobRecord::V1 {
        identifier: job.identifier.clone(),
        rap_id: job.rap_id.as_str().to_owned(),
        action: job.action.clone(),
        run_command: job.run_command.clone(),
        status: job.status.as_str().to_owned(),
        status_code: job.status_code.clone(),
        status_message: job.status_message.clone(),
        created_at: job.created_at,
        updated_at: job.updated_at,
        started_at: job.started_at,
        completed_at: job.completed_at,
        metrics: job.metrics.map(|m| MetricsV1 {
            cpu_peak: m.cpu_peak,
            cpu_mean: m.cpu_mean,
            mem_mb_peak: m.mem_mb_peak,
            mem_mb_mean: m.mem_mb_mean,
        }),
        trace_context: job.trace_context.clone(),
    }
}

fn job_from_record(record: JobRecord) -> Result<Job, StoreError> {
    let JobRecord::V1 {
        identifier,
        rap_id,
        action,
        run_command,
        status,
        status_code,
        status_message,
        created_at,
        updated_at,
        started_at,
        completed_at,
        metrics,
        trace_context,
    } = record;
    let bad = |field: &'static str, value: String| StoreError::BadValue {
        tree: "jobs",
        field,
        value,
    };
    Ok(Job {
        identifier,
        rap_id: RapId::parse(&rap_id).map_err(|_| bad("rap_id", rap_id.clone()))?,
        action,
        run_command,
        status: status.parse().map_err(|_| bad("status", status.clone()))?,
        status_code,
        status_message,
        created_at,
        updated_at,
        started_at,
        completed_at,
        metrics: metrics.map(|m| Metrics {
            cpu_peak: m.cpu_peak,
            cpu_mean: m.cpu_mean,
            mem_mb_peak: m.mem_mb_peak,
            mem_mb_mean: m.mem_mb_mean,
        }),
        trace_context,
    })
}

fn release_file_from_record(record: ReleaseFileRecord) -> ReleaseFile {
    let ReleaseFileRecord::V1 {
        id,
        release_id,
        workspace,
        name,
        sha256,
        size,
        mtime,
        created_by,
        uploaded_at,
    } = record;
    ReleaseFile {
        id,
        release_id,
        workspace,
        name,
        sha256,
        size,
        mtime,
        created_by,
        uploaded_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::JobStatus;

    fn job(rap_id: &RapId, identifier: &str, status: JobStatus) -> Job {
        Job {
            identifier: identifier.into(),
            rap_id: rap_id.clone(),
            action: "a".into(),
            run_command: "python:v2 a.py".into(),
            status,
            status_code: "created".into(),
            status_message: String::new(),
            created_at: Some(1),
            updated_at: None,
            started_at: None,
            completed_at: None,
            metrics: None,
            trace_context: vec![],
        }
    }

    #[tokio::test]
    async fn job_changes_and_cursor_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rap_id = RapId::generate();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.watch_cursor().unwrap(), 0);
            store
                .apply_job_change(7, &job(&rap_id, "j1", JobStatus::Pending))
                .await
                .unwrap();
            store
                .apply_job_change(9, &job(&rap_id, "j1", JobStatus::Running))
                .await
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.watch_cursor().unwrap(), 9);
        let jobs = store.jobs_of_request(rap_id.as_str()).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, JobStatus::Running);
    }

    #[test]
    fn backend_token_lookup_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut backend = Backend {
            slug: "test".into(),
            name: "Test".into(),
            is_active: true,
            token_hash: hash_secret("old"),
            last_seen: None,
            paused: false,
            db_maintenance: false,
            db_maintenance_since: None,
        };
        store.put_backend(&backend).unwrap();
        assert!(store.backend_by_token("old").unwrap().is_some());
        backend.token_hash = hash_secret("new");
        store.put_backend(&backend).unwrap();
        assert!(store.backend_by_token("old").unwrap().is_none());
        assert_eq!(store.backend_by_token("new").unwrap().unwrap().slug, "test");
    }

    fn request(rap_id: &str, workspace: &str, created_at: i64, action: &str) -> JobRequest {
        JobRequest {
            rap_id: RapId::parse(rap_id).unwrap(),
            backend: "test".into(),
            workspace: workspace.into(),
            project: "proj".into(),
            requested_actions: vec![action.into()],
            cancelled_actions: vec![],
            sha: "0".repeat(40),
            force_run_dependencies: false,
            created_by: "dev".into(),
            created_at,
            status: crate::status::RequestStatus::Pending,
            status_message: None,
            project_definition: String::new(),
        }
    }

    fn ids(page: &RequestPage) -> Vec<&str> {
        page.requests.iter().map(|r| r.rap_id.as_str()).collect()
    }

    #[test]
    fn request_pages_come_newest_first_from_the_time_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Same second for b and c: the larger rap id first, as the full scan sorts.
        for (id, workspace, at, action) in [
            ("aaaaaaaaaaaaaaaa", "one", 10, "x"),
            ("bbbbbbbbbbbbbbbb", "two", 20, "y"),
            ("cccccccccccccccc", "one", 20, "x"),
            ("dddddddddddddddd", "one", 30, "y"),
        ] {
            store
                .put_job_request(&request(id, workspace, at, action))
                .unwrap();
        }
        // A second put of the same request (a status change) adds no second index entry.
        store
            .put_job_request(&request("dddddddddddddddd", "one", 30, "y"))
            .unwrap();
        let all = store
            .job_requests_page(RequestScope::Everywhere, None, 0, 10)
            .unwrap();
        assert_eq!(
            ids(&all),
            [
                "dddddddddddddddd",
                "cccccccccccccccc",
                "bbbbbbbbbbbbbbbb",
                "aaaaaaaaaaaaaaaa"
            ]
        );
        assert!(!all.has_more);
        // All four were stored pending: all active until one finishes.
        assert_eq!(store.active_job_requests().unwrap().len(), 4);
        let mut done = request("cccccccccccccccc", "one", 20, "x");
        done.status = crate::status::RequestStatus::Succeeded;
        store.put_job_request(&done).unwrap();
        let mut active: Vec<String> = store
            .active_job_requests()
            .unwrap()
            .iter()
            .map(|r| r.rap_id.as_str().to_owned())
            .collect();
        active.sort();
        assert_eq!(
            active,
            ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "dddddddddddddddd"]
        );

        let second = store
            .job_requests_page(RequestScope::Everywhere, None, 1, 2)
            .unwrap();
        assert_eq!(ids(&second), ["cccccccccccccccc", "bbbbbbbbbbbbbbbb"]);
        assert!(second.has_more);

        let workspace = store
            .job_requests_page(RequestScope::Workspace("one"), None, 0, 10)
            .unwrap();
        assert_eq!(
            ids(&workspace),
            ["dddddddddddddddd", "cccccccccccccccc", "aaaaaaaaaaaaaaaa"]
        );
        let filtered = store
            .job_requests_page(
                RequestScope::Workspace("one"),
                Some(&|r| r.requested_actions == ["x"]),
                1,
                10,
            )
            .unwrap();
        assert_eq!(ids(&filtered), ["aaaaaaaaaaaaaaaa"]);
        // A workspace whose name is a prefix of another's sees only its own.
        assert!(
            store
                .job_requests_page(RequestScope::Workspace("on"), None, 0, 10)
                .unwrap()
                .requests
                .is_empty()
        );
    }

    #[test]
    fn a_store_from_before_the_index_is_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .put_job_request(&request("aaaaaaaaaaaaaaaa", "one", 10, "x"))
                .unwrap();
            // As an older version left it: records, no index.
            store.job_requests_by_time.clear().unwrap();
            store.job_requests_by_workspace.clear().unwrap();
            store.active_job_requests.clear().unwrap();
            store.meta.remove(JOB_REQUEST_INDEX).unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let page = store
            .job_requests_page(RequestScope::Workspace("one"), None, 0, 10)
            .unwrap();
        assert_eq!(ids(&page), ["aaaaaaaaaaaaaaaa"]);
        assert_eq!(store.active_job_requests().unwrap().len(), 1);
    }

    #[test]
    fn a_version_1_project_reads_with_an_empty_analysis_scope() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .projects
            .insert(
                b"old",
                br#"{"version":"V1","slug":"old","name":"Old","status":"ongoing","orgs":["o"],"copilot":null}"#
                    .as_slice(),
            )
            .unwrap();
        let project = store.project("old").unwrap().unwrap();
        assert_eq!(project.orgs, ["o"]);
        assert_eq!(project.analysis_scope, AnalysisScope::default());
    }
}
