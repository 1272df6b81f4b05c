//! Workspace pages (spec B12): the list of workspaces a user may see, the file browser over
//! the medium-privacy tree with the manifest's metadata (out-of-date outputs marked), file
//! contents, and adding or updating files on the user's current request.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{Ctx, set_flash};
use super::{AppError, AppState, content, encode_path, format_time, now_secs, render};
use crate::audit::{AuditEvent, AuditType};
use crate::request::workflow::{self, NewFile};
use crate::request::{FileType, ReleaseRequest, RequestId};
use crate::store::Store;
use crate::workspace::{Manifest, is_valid_file_type};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/", get(list))
        .route("/workspaces/view/{workspace}/", get(view_root))
        .route("/workspaces/view/{workspace}/{*path}", get(view))
        .route("/workspaces/content/{workspace}/{*path}", get(content_view))
        .route(
            "/workspaces/add-file-to-request/{workspace}",
            post(add_file),
        )
        .route(
            "/workspaces/update-file-in-request/{workspace}",
            post(update_file),
        )
}

/// A workspace file's status for the viewer's own current request (B8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceFileStatus {
    Unreleased,
    UnderReview,
    Released,
    ContentUpdated,
    Withdrawn,
}

impl WorkspaceFileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceFileStatus::Unreleased => "UNRELEASED",
            WorkspaceFileStatus::UnderReview => "UNDER_REVIEW",
            WorkspaceFileStatus::Released => "RELEASED",
            WorkspaceFileStatus::ContentUpdated => "UPDATED",
            WorkspaceFileStatus::Withdrawn => "WITHDRAWN",
        }
    }
}

/// The status of `relpath` with content hash `hash`.
pub fn file_status(
    relpath: &str,
    hash: &str,
    current: Option<&ReleaseRequest>,
    released: &std::collections::HashSet<String>,
) -> WorkspaceFileStatus {
    if released.contains(hash) {
        return WorkspaceFileStatus::Released;
    }
    match current.and_then(|request| request.files.get(relpath)) {
        Some(file) if file.filetype == FileType::Withdrawn => WorkspaceFileStatus::Withdrawn,
        Some(file) if file.file_id == hash => WorkspaceFileStatus::UnderReview,
        Some(_) => WorkspaceFileStatus::ContentUpdated,
        None => WorkspaceFileStatus::Unreleased,
    }
}

struct WorkspaceRow {
    name: String,
    project: String,
    note: String,
}

struct RequestRow {
    id: String,
    workspace: String,
    status: String,
    created: String,
}

#[derive(Template)]
#[template(path = "workspaces.html")]
struct WorkspacesPage {
    ctx: Ctx,
    workspaces: Vec<WorkspaceRow>,
    requests: Vec<RequestRow>,
}

fn request_rows(requests: impl Iterator<Item = ReleaseRequest>) -> Vec<RequestRow> {
    requests
        .map(|request| RequestRow {
            id: request.id.to_string(),
            workspace: request.workspace.clone(),
            status: request.status.description().to_string(),
            created: format_time(request.created_at),
        })
        .collect()
}

async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Response, AppError> {
    let mut workspaces: Vec<WorkspaceRow> = ctx
        .user
        .workspaces
        .iter()
        .map(|(name, access)| WorkspaceRow {
            name: name.clone(),
            project: access.project.clone(),
            note: if access.archived {
                "archived".to_string()
            } else if !access.ongoing {
                "project inactive".to_string()
            } else {
                String::new()
            },
        })
        .collect();
    for (name, access) in &ctx.user.copiloted_workspaces {
        workspaces.push(WorkspaceRow {
            name: name.clone(),
            project: access.project.clone(),
            note: "co-piloted".to_string(),
        });
    }
    if ctx.user.output_checker || ctx.user.readonly_access {
        let known: Vec<String> = workspaces.iter().map(|row| row.name.clone()).collect();
        for name in state.workspaces.list()? {
            if !known.contains(&name) {
                workspaces.push(WorkspaceRow {
                    name,
                    project: String::new(),
                    note: String::new(),
                });
            }
        }
    }
    let requests = request_rows(
        state
            .store
            .list()?
            .into_iter()
            .rev()
            .filter(|request| request.author == ctx.user.username),
    );
    render(&WorkspacesPage {
        ctx,
        workspaces,
        requests,
    })
}

struct Entry {
    name: String,
    url: String,
    is_dir: bool,
    note: String,
}

struct FileInfo {
    relpath: String,
    content_url: String,
    size: u64,
    action: String,
    job_id: String,
    commit: String,
    row_count: String,
    col_count: String,
    created: String,
    out_of_date: bool,
    excluded_message: String,
    status: String,
    /// Why the file cannot be added now, or empty when it can.
    add_blocked: String,
    can_update: bool,
    supporting_only: bool,
    groups: Vec<String>,
}

#[derive(Template)]
#[template(path = "browse.html")]
struct BrowsePage {
    ctx: Ctx,
    workspace: String,
    relpath: String,
    parent: String,
    entries: Vec<Entry>,
    file: Option<FileInfo>,
    current_request: String,
}

async fn view_root(
    state: State<AppState>,
    ctx: Ctx,
    Path(workspace): Path<String>,
) -> Result<Response, AppError> {
    browse(state, ctx, workspace, String::new()).await
}

async fn view(
    state: State<AppState>,
    ctx: Ctx,
    Path((workspace, path)): Path<(String, String)>,
) -> Result<Response, AppError> {
    browse(state, ctx, workspace, path).await
}

fn require_view(ctx: &Ctx, workspace: &str) -> Result<(), AppError> {
    if ctx.user.can_view_workspace(workspace) {
        return Ok(());
    }
    Err(AppError::Forbidden(format!(
        "You do not have permission to view workspace {workspace}"
    )))
}

/// Why the user cannot add files to this workspace now, if they cannot.
fn add_blocked_reason(ctx: &Ctx, workspace: &str, current: Option<&ReleaseRequest>) -> String {
    if !ctx.user.has_role_on_workspace(workspace) {
        return "You do not have permission to add files to a request".to_string();
    }
    if !ctx.user.can_action_requests(workspace) {
        return "This workspace is archived or its project is not ongoing".to_string();
    }
    if current.is_some_and(|request| !request.status.is_editable()) {
        return "There is currently a request under review for this workspace and you cannot modify it or start a new one until it is reviewed".to_string();
    }
    String::new()
}

fn current_request(
    store: &Store,
    workspace: &str,
    username: &str,
) -> Result<Option<ReleaseRequest>, AppError> {
    Ok(store.current_request(workspace, username)?)
}

async fn browse(
    State(state): State<AppState>,
    ctx: Ctx,
    workspace: String,
    relpath: String,
) -> Result<Response, AppError> {
    require_view(&ctx, &workspace)?;
    let relpath = relpath.trim_end_matches('/').to_string();
    let manifest = state.workspaces.manifest(&workspace)?;
    let path = state.workspaces.resolve(&workspace, &relpath)?;
    let current = current_request(&state.store, &workspace, &ctx.user.username)?;
    let parent = match relpath.rsplit_once('/') {
        Some((parent, _)) => parent.to_string(),
        None => String::new(),
    };
    let mut page = BrowsePage {
        ctx: ctx.clone(),
        workspace: workspace.clone(),
        relpath: relpath.clone(),
        parent,
        entries: Vec::new(),
        file: None,
        current_request: current
            .as_ref()
            .map(|request| request.id.to_string())
            .unwrap_or_default(),
    };
    if path.is_dir() {
        let listing = state.workspaces.list_dir(&workspace, &relpath, &manifest)?;
        page.entries = listing
            .into_iter()
            .map(|entry| {
                let note = manifest
                    .outputs
                    .get(&entry.relpath)
                    .filter(|output| output.out_of_date_action)
                    .map(|_| "out of date".to_string())
                    .unwrap_or_default();
                Entry {
                    url: format!(
                        "/workspaces/view/{workspace}/{}",
                        encode_path(&entry.relpath)
                    ),
                    name: entry.name,
                    is_dir: entry.is_dir,
                    note,
                }
            })
            .collect();
        return render(&page);
    }
    state.store.append_audit(&AuditEvent {
        kind: AuditType::WorkspaceFileView,
        user: ctx.user.username.clone(),
        workspace: workspace.clone(),
        request: None,
        path: Some(relpath.clone()),
        extra: Default::default(),
        review_turn: 0,
        created_at: now_secs(),
        hidden: false,
    })?;
    page.file = Some(file_info(
        &state,
        &ctx,
        &workspace,
        &relpath,
        &manifest,
        current.as_ref(),
    )?);
    render(&page)
}

fn file_info(
    state: &AppState,
    ctx: &Ctx,
    workspace: &str,
    relpath: &str,
    manifest: &Manifest,
    current: Option<&ReleaseRequest>,
) -> Result<FileInfo, AppError> {
    let content_url = format!("/workspaces/content/{workspace}/{}", encode_path(relpath));
    let entry = manifest.outputs.get(relpath);
    let released = state.store.released_hashes(workspace)?;
    let mut info = FileInfo {
        relpath: relpath.to_string(),
        content_url,
        size: 0,
        action: String::new(),
        job_id: String::new(),
        commit: String::new(),
        row_count: String::new(),
        col_count: String::new(),
        created: String::new(),
        out_of_date: false,
        excluded_message: String::new(),
        status: String::new(),
        add_blocked: String::new(),
        can_update: false,
        supporting_only: false,
        groups: current
            .map(|request| request.groups.keys().cloned().collect())
            .unwrap_or_default(),
    };
    let Some(entry) = entry else {
        info.add_blocked = "Only outputs listed in the manifest can be added".to_string();
        return Ok(info);
    };
    info.size = entry.size;
    info.action = entry.action.clone();
    info.job_id = entry.job_id.clone();
    info.commit = entry.commit.clone().unwrap_or_default();
    info.row_count = entry.row_count.map(|n| n.to_string()).unwrap_or_default();
    info.col_count = entry.col_count.map(|n| n.to_string()).unwrap_or_default();
    info.created = format_time(entry.timestamp as i64);
    info.out_of_date = entry.out_of_date_action;
    if entry.excluded {
        info.excluded_message = entry.message.clone().unwrap_or_default();
    }
    let status = file_status(relpath, &entry.content_hash, current, &released);
    info.status = status.as_str().to_string();
    info.add_blocked = add_blocked_reason(ctx, workspace, current);
    if info.add_blocked.is_empty() {
        if entry.excluded || !is_valid_file_type(relpath) {
            info.add_blocked = "This file type cannot be added to a request".to_string();
        } else {
            match status {
                WorkspaceFileStatus::UnderReview => {
                    info.add_blocked =
                        "This file has already been added to the current request".to_string()
                }
                WorkspaceFileStatus::ContentUpdated => {
                    info.can_update = true;
                    info.add_blocked =
                        "This file has changed since it was added: update it".to_string();
                }
                WorkspaceFileStatus::Released => info.supporting_only = true,
                _ => {}
            }
        }
    }
    Ok(info)
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: usize,
    #[serde(default)]
    plaintext: bool,
}

async fn content_view(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((workspace, path)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Response, AppError> {
    require_view(&ctx, &workspace)?;
    let manifest = state.workspaces.manifest(&workspace)?;
    // Only manifest outputs and metadata files are viewable (never highly sensitive ones
    // that might be lying around).
    if !manifest.outputs.contains_key(&path) && !path.starts_with("metadata/") {
        return Err(AppError::NotFound);
    }
    let resolved = state.workspaces.resolve(&workspace, &path)?;
    if !resolved.is_file() {
        return Err(AppError::NotFound);
    }
    content::render(
        &state.csv_indexes,
        resolved,
        &path,
        query.page,
        state.config.csv_page_size,
        query.plaintext,
    )
    .await
}

#[derive(Deserialize)]
struct AddFileForm {
    csrf: String,
    path: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    new_group: String,
    #[serde(default)]
    filetype: String,
}

/// Copies the workspace file into the request's store (content-addressed, checked against the
/// manifest's hash) off the async threads.
async fn copy_in(
    store: &Arc<Store>,
    workspace: &str,
    id: &RequestId,
    source: std::path::PathBuf,
    expected: &str,
) -> Result<String, AppError> {
    let store = Arc::clone(store);
    let (workspace, id, expected) = (workspace.to_string(), id.clone(), expected.to_string());
    let (digest, _) =
        tokio::task::spawn_blocking(move || store.copy_in(&workspace, &id, &source, &expected))
            .await
            .map_err(|error| AppError::Internal(error.to_string()))??;
    Ok(digest)
}

async fn add_file(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace): Path<String>,
    Form(form): Form<AddFileForm>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form.csrf)?;
    require_view(&ctx, &workspace)?;
    let manifest = state.workspaces.manifest(&workspace)?;
    // Resolve first: a path escaping the workspace is refused before anything else.
    let source = state.workspaces.resolve(&workspace, &form.path)?;
    let Some(entry) = manifest.outputs.get(&form.path).cloned() else {
        return Err(AppError::BadRequest(format!(
            "{} is not an output of this workspace",
            form.path
        )));
    };
    if entry.excluded || !is_valid_file_type(&form.path) {
        return Err(AppError::Request(workflow::RequestError::InvalidFileType(
            form.path.clone(),
        )));
    }
    let group = if form.new_group.trim().is_empty() {
        if form.group.trim().is_empty() {
            "default".to_string()
        } else {
            form.group.trim().to_string()
        }
    } else {
        form.new_group.trim().to_string()
    };
    let filetype = match form.filetype.as_str() {
        "" | "OUTPUT" => FileType::Output,
        "SUPPORTING" => FileType::Supporting,
        other => return Err(AppError::BadRequest(format!("unknown file type {other}"))),
    };
    let now = now_secs();
    let user = ctx.user.clone();
    let request = state
        .store
        .get_or_create_current(&workspace, &ctx.user.username, || {
            workflow::create_request(
                &user,
                &workspace,
                RequestId::generate(now as u64 * 1000),
                now,
            )
        })?;
    if !ctx.user.can_edit_request(&request) {
        return Err(AppError::Request(workflow::RequestError::CannotEdit));
    }
    let digest = copy_in(
        &state.store,
        &workspace,
        &request.id,
        source,
        &entry.content_hash,
    )
    .await?;
    let released = state.store.released_hashes(&workspace)?.contains(&digest);
    state.store.update(&request.id, |request| {
        workflow::add_file(
            request,
            &ctx.user,
            &NewFile {
                relpath: &form.path,
                group: &group,
                filetype,
                entry: &entry,
                file_id: &digest,
                already_released: released,
            },
            now,
        )
    })?;
    state.store.flush().await?;
    set_flash(
        &state,
        &ctx,
        &format!(
            "{} added to group {group} of request {}",
            form.path, request.id
        ),
    )?;
    Ok(axum::response::IntoResponse::into_response(Redirect::to(
        &format!("/workspaces/view/{workspace}/{}", encode_path(&form.path)),
    )))
}

#[derive(Deserialize)]
struct UpdateFileForm {
    csrf: String,
    path: String,
}

async fn update_file(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace): Path<String>,
    Form(form): Form<UpdateFileForm>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form.csrf)?;
    let manifest = state.workspaces.manifest(&workspace)?;
    let source = state.workspaces.resolve(&workspace, &form.path)?;
    let Some(entry) = manifest.outputs.get(&form.path).cloned() else {
        return Err(AppError::NotFound);
    };
    let Some(request) = current_request(&state.store, &workspace, &ctx.user.username)? else {
        return Err(AppError::NotFound);
    };
    if !ctx.user.can_edit_request(&request) {
        return Err(AppError::Request(workflow::RequestError::CannotEdit));
    }
    let digest = copy_in(
        &state.store,
        &workspace,
        &request.id,
        source,
        &entry.content_hash,
    )
    .await?;
    state.store.update(&request.id, |request| {
        workflow::update_file(request, &ctx.user, &form.path, &entry, &digest, now_secs())
    })?;
    state.store.flush().await?;
    set_flash(&state, &ctx, &format!("{} updated", form.path))?;
    Ok(axum::response::IntoResponse::into_response(Redirect::to(
        &format!("/workspaces/view/{workspace}/{}", encode_path(&form.path)),
    )))
}
