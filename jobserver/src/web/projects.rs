//! Home, project and workspace pages, and workspace creation (spec A12).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::{AppError, AppState, Ctx, FormPairs, field, fields, redirect_with_flash, render};
use crate::access::{allowed, runnable_backends};
use crate::git;
use crate::model::{JobRequest, Project, Workspace, now};
use crate::roles::Permission;
use crate::store::{RequestScope, Store, StoreError};

/// Routes of this area. Static segments (`new-workspace`) win over captures in axum's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/event-log/", get(event_log))
        .route("/{project}/", get(project_page))
        .route(
            "/{project}/new-workspace/",
            get(new_workspace_page).post(create_workspace),
        )
        .route("/{project}/{workspace}/", get(workspace_page))
        .route("/{project}/{workspace}/logs/", get(workspace_page))
        .route("/{project}/{workspace}/archive/", post(toggle_archive))
}

/// One row of a job-request list.
pub struct RequestRow {
    pub url: String,
    pub rap_id: String,
    pub workspace: String,
    pub actions: String,
    pub status: String,
    pub status_class: &'static str,
    pub created_by: String,
    pub created_at: String,
    pub backend: String,
}

impl RequestRow {
    /// A row for a request.
    pub fn new(request: &JobRequest) -> Self {
        RequestRow {
            url: format!(
                "/{}/{}/{}/",
                request.project, request.workspace, request.rap_id
            ),
            rap_id: request.rap_id.to_string(),
            workspace: request.workspace.clone(),
            actions: request.requested_actions.join(", "),
            status: request.status.display(),
            status_class: request.status.as_str(),
            created_by: request.created_by.clone(),
            created_at: crate::model::iso(request.created_at),
            backend: request.backend.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    ctx: Ctx,
    requests: Vec<RequestRow>,
    projects: Vec<Project>,
}

async fn home(State(state): State<AppState>, ctx: Ctx) -> Result<Response, AppError> {
    // A8: the latest ten, on active backends only.
    let active: Vec<String> = state
        .store
        .backends()?
        .into_iter()
        .filter(|b| b.is_active)
        .map(|b| b.slug)
        .collect();
    let requests = state
        .store
        .job_requests_page(
            RequestScope::Everywhere,
            Some(&|r| active.contains(&r.backend)),
            0,
            10,
        )?
        .requests
        .iter()
        .map(RequestRow::new)
        .collect();
    let mut projects = Vec::new();
    if let Some(user) = &ctx.user {
        for membership in state.store.memberships_of_user(&user.username)? {
            if let Some(project) = state.store.project(&membership.project)? {
                projects.push(project);
            }
        }
    }
    render(
        &ctx,
        &HomePage {
            ctx: ctx.clone(),
            requests,
            projects,
        },
    )
}

/// A member and their roles, for display.
pub struct MemberRow {
    pub username: String,
    pub roles: String,
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectPage {
    ctx: Ctx,
    project: Project,
    org_names: String,
    members: Vec<MemberRow>,
    workspaces: Vec<Workspace>,
    may_create_workspace: bool,
}

async fn project_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Response, AppError> {
    let project = state.store.project(&slug)?.ok_or(AppError::NotFound)?;
    let members = state
        .store
        .memberships_of_project(&slug)?
        .into_iter()
        .map(|m| MemberRow {
            username: m.username,
            roles: m
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let mut org_names = Vec::new();
    for org in &project.orgs {
        org_names.push(
            state
                .store
                .org(org)?
                .map(|o| o.name)
                .unwrap_or_else(|| org.clone()),
        );
    }
    let may_create_workspace = allowed(
        &state.store,
        ctx.user.as_ref(),
        Some(&slug),
        Permission::WorkspaceCreate,
    )?;
    render(
        &ctx,
        &ProjectPage {
            ctx: ctx.clone(),
            workspaces: state.store.workspaces_of_project(&slug)?,
            org_names: org_names.join(", "),
            project,
            members,
            may_create_workspace,
        },
    )
}

#[derive(Template)]
#[template(path = "new_workspace.html")]
struct NewWorkspacePage {
    ctx: Ctx,
    project: Project,
    name: String,
    repo_url: String,
    branch: String,
    purpose: String,
    errors: Vec<String>,
}

async fn may_create(state: &AppState, ctx: &Ctx, slug: &str) -> Result<Project, AppError> {
    let user = ctx.require_user()?;
    let project = state.store.project(slug)?.ok_or(AppError::NotFound)?;
    if !allowed(
        &state.store,
        Some(user),
        Some(slug),
        Permission::WorkspaceCreate,
    )? {
        return Err(AppError::NotFound);
    }
    Ok(project)
}

async fn new_workspace_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Response, AppError> {
    let project = may_create(&state, &ctx, &slug).await?;
    render(
        &ctx,
        &NewWorkspacePage {
            ctx: ctx.clone(),
            project,
            name: String::new(),
            repo_url: String::new(),
            branch: "main".to_owned(),
            purpose: String::new(),
            errors: Vec::new(),
        },
    )
}

/// Django's message for an invalid slug, which the reference shows for a bad workspace name.
pub const BAD_WORKSPACE_NAME: &str =
    "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.";

/// The checks on the new-workspace form that need no IO, in field order. `file:///` URLs are
/// accepted only when `allow_file_repos` is set: they read the job server's own disk.
pub fn validate_workspace_form(
    name: &str,
    repo_url: &str,
    branch: &str,
    purpose: &str,
    allow_file_repos: bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push("Name: This field is required.".to_owned());
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        errors.push(format!("Name: {BAD_WORKSPACE_NAME}"));
    }
    if repo_url.is_empty() {
        errors.push("Repository URL: This field is required.".to_owned());
    } else if !(repo_url.starts_with("https://")
        || (allow_file_repos && repo_url.starts_with("file:///")))
    {
        errors.push("Repository URL: Enter an https:// URL of a git repository.".to_owned());
    }
    if branch.is_empty() {
        errors.push("Branch: This field is required.".to_owned());
    } else if branch.starts_with('-')
        || branch.contains("..")
        || branch.contains(char::is_whitespace)
    {
        errors.push("Branch: Enter a valid branch name.".to_owned());
    }
    if purpose.is_empty() {
        errors.push("Purpose: This field is required.".to_owned());
    }
    errors
}

async fn create_workspace(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form)?;
    let project = may_create(&state, &ctx, &slug).await?;
    let user = ctx.require_user()?;
    // Names are lowercased on create, as in the reference.
    let name = field(&form, "name").to_lowercase();
    let repo_url = field(&form, "repo_url");
    let branch = field(&form, "branch");
    let purpose = field(&form, "purpose");
    let mut errors = validate_workspace_form(
        &name,
        &repo_url,
        &branch,
        &purpose,
        state.config.allow_file_repos,
    );
    if errors.is_empty() && state.store.workspace(&name)?.is_some() {
        errors.push("Name: A workspace with this name already exists.".to_owned());
    }
    if errors.is_empty()
        && let Err(error) = git::branch_head(&repo_url, &branch).await
    {
        errors.push(format!("Branch: {error}"));
    }
    let workspace = Workspace {
        name: name.clone(),
        project: slug.clone(),
        repo_url: repo_url.clone(),
        branch: branch.clone(),
        purpose: purpose.clone(),
        is_archived: false,
        created_by: user.username.clone(),
        created_at: now(),
    };
    if errors.is_empty() && !state.store.insert_workspace(&workspace)? {
        errors.push("Name: A workspace with this name already exists.".to_owned());
    }
    if !errors.is_empty() {
        return render(
            &ctx,
            &NewWorkspacePage {
                ctx: ctx.clone(),
                project,
                name,
                repo_url,
                branch,
                purpose,
                errors,
            },
        );
    }
    Ok(redirect_with_flash(
        &ctx,
        &format!("/{slug}/{name}/"),
        &format!("Created workspace {name}"),
    ))
}

#[derive(Template)]
#[template(path = "workspace.html")]
struct WorkspacePage {
    ctx: Ctx,
    project: Project,
    workspace: Workspace,
    run_disabled_reason: String,
    may_view_releases: bool,
    may_archive: bool,
    q: String,
    requests: Vec<RequestRow>,
    previous: String,
    next: String,
}

/// Job requests per page in logs (A8).
pub const PAGE_SIZE: usize = 25;

/// One page of a job-request list, with links to its neighbours (empty when none).
pub struct Paged {
    pub rows: Vec<RequestRow>,
    pub previous: String,
    pub next: String,
}

/// Page `page` (1-based, from `?page=`) of the job requests in `scope` that `keep` accepts,
/// read from the store's time index; `base` is the URL with any other query parameters, ending
/// in `?` or `&`.
///
/// # Errors
/// On storage failure.
pub fn paginate(
    store: &Store,
    scope: RequestScope<'_>,
    keep: Option<&dyn Fn(&JobRequest) -> bool>,
    query: &FormPairs,
    base: &str,
) -> Result<Paged, StoreError> {
    let page = field(query, "page").parse::<usize>().unwrap_or(1).max(1);
    let skip = (page - 1).saturating_mul(PAGE_SIZE);
    let found = store.job_requests_page(scope, keep, skip, PAGE_SIZE)?;
    Ok(Paged {
        rows: found.requests.iter().map(RequestRow::new).collect(),
        previous: if page > 1 {
            format!("{base}page={}", page - 1)
        } else {
            String::new()
        },
        next: if found.has_more {
            format!("{base}page={}", page + 1)
        } else {
            String::new()
        },
    })
}

/// A test a job request must pass to be listed.
pub type RequestFilter = dyn Fn(&JobRequest) -> bool;

/// A8's workspace-log filters: `q` matches an action or the request id by substring;
/// `backend` (repeatable) keeps those backends. `None` when neither is given.
pub fn request_filter(query: &FormPairs) -> Option<Box<RequestFilter>> {
    let q = field(query, "q");
    let backends = fields(query, "backend");
    if q.is_empty() && backends.is_empty() {
        return None;
    }
    Some(Box::new(move |r: &JobRequest| {
        (q.is_empty()
            || r.rap_id.as_str().contains(&q)
            || r.requested_actions.iter().any(|a| a.contains(&q)))
            && (backends.is_empty() || backends.contains(&r.backend))
    }))
}

async fn workspace_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
    Query(query): Query<FormPairs>,
) -> Result<Response, AppError> {
    let project = state.store.project(&slug)?.ok_or(AppError::NotFound)?;
    let Some(workspace) = state.store.workspace(&name)?.filter(|w| w.project == slug) else {
        return Ok(Redirect::to("/").into_response());
    };
    let user = ctx.user.as_ref();
    let run_disabled_reason = if workspace.is_archived {
        "This workspace is archived."
    } else if !allowed(&state.store, user, Some(&slug), Permission::JobRun)? {
        "You do not have permission to run jobs in this workspace."
    } else if user
        .is_some_and(|u| runnable_backends(&state.store, &u.username).is_ok_and(|b| b.is_empty()))
    {
        "You are not a member of any backend."
    } else {
        ""
    };
    let may_view_releases = allowed(&state.store, user, Some(&slug), Permission::ReleaseFileView)?;
    let may_archive = allowed(
        &state.store,
        user,
        Some(&slug),
        Permission::WorkspaceArchive,
    )?;
    let mut base = format!("/{slug}/{name}/logs/?");
    for (key, value) in query.iter().filter(|(k, _)| k == "q" || k == "backend") {
        base.push_str(&format!("{}={}&", url_encode(key), url_encode(value)));
    }
    let paged = paginate(
        &state.store,
        RequestScope::Workspace(&name),
        request_filter(&query).as_deref(),
        &query,
        &base,
    )?;
    render(
        &ctx,
        &WorkspacePage {
            ctx: ctx.clone(),
            project,
            workspace,
            run_disabled_reason: run_disabled_reason.to_owned(),
            may_view_releases,
            may_archive,
            q: field(&query, "q"),
            requests: paged.rows,
            previous: paged.previous,
            next: paged.next,
        },
    )
}

/// Archives or unarchives a workspace (`workspace_archive`; 404 otherwise). Archived workspaces
/// accept no new job requests (A4 step 3).
async fn toggle_archive(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form)?;
    let user = ctx.require_user()?;
    let Some(mut workspace) = state.store.workspace(&name)?.filter(|w| w.project == slug) else {
        return Err(AppError::NotFound);
    };
    if !allowed(
        &state.store,
        Some(user),
        Some(&slug),
        Permission::WorkspaceArchive,
    )? {
        return Err(AppError::NotFound);
    }
    workspace.is_archived = !workspace.is_archived;
    state.store.put_workspace(&workspace)?;
    let message = if workspace.is_archived {
        format!("Workspace {name} archived")
    } else {
        format!("Workspace {name} unarchived")
    };
    Ok(redirect_with_flash(
        &ctx,
        &format!("/{slug}/{name}/"),
        &message,
    ))
}

/// Percent-encodes a query-string value (unreserved characters kept).
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "event_log.html")]
struct EventLogPage {
    ctx: Ctx,
    requests: Vec<RequestRow>,
    previous: String,
    next: String,
}

/// A8's global event log: every job request, newest first, 25 per page.
async fn event_log(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<FormPairs>,
) -> Result<Response, AppError> {
    let paged = paginate(
        &state.store,
        RequestScope::Everywhere,
        None,
        &query,
        "/event-log/?",
    )?;
    render(
        &ctx,
        &EventLogPage {
            ctx: ctx.clone(),
            requests: paged.rows,
            previous: paged.previous,
            next: paged.next,
        },
    )
}
