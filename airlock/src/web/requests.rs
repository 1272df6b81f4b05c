//! Request pages and actions (spec B12): the overview (groups with context, controls, files,
//! votes, decisions, disclosure-check flags, comments and the activity log, each filtered by
//! what the viewer may see), file views and downloads, and every author and output-checker
//! action. Actions call one [`workflow`] operation through the store, so a refusal changes
//! nothing and is answered 403 with the reason.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{Ctx, set_flash};
use super::{AppError, AppState, content, encode_path, format_time, now_secs, render};
use crate::audit::{AuditEvent, AuditType};
use crate::checks;
use crate::request::comments::{can_comment, is_visible, writable_visibilities};
use crate::request::review::visible_decision;
use crate::request::workflow::{self, Outcome, RequestError};
use crate::request::{FileType, ReleaseRequest, RequestId, RequestStatus, Visibility, Vote};
use crate::upload;
use crate::user::User;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/requests/output_checker", get(output_checker_list))
        .route("/requests/workspace/{workspace}", get(workspace_list))
        .route("/requests/view/{id}/", get(overview))
        .route("/requests/view/{id}/{group}/{*path}", get(file_view))
        .route("/requests/content/{id}/{group}/{*path}", get(file_content))
        .route("/requests/{id}/uploaded-files-count", get(uploaded_count))
        .route("/requests/submit/{id}", post(submit))
        .route("/requests/withdraw/{id}", post(withdraw))
        .route("/requests/review/{id}", post(review))
        .route("/requests/return/{id}", post(return_request))
        .route("/requests/reject/{id}", post(reject))
        .route("/requests/release/{id}", post(release))
        .route("/requests/approve/{id}/{*path}", post(approve_file))
        .route(
            "/requests/request_changes/{id}/{*path}",
            post(request_changes),
        )
        .route("/requests/reset_review/{id}/{*path}", post(reset_review))
        .route("/requests/withdraw/{id}/{*path}", post(withdraw_file))
        .route("/requests/edit/{id}/{group}", post(edit_group))
        .route(
            "/requests/request-changes/{id}/{group}",
            post(group_request_changes),
        )
        .route(
            "/requests/reset-votes/{id}/{group}",
            post(group_reset_votes),
        )
        .route("/requests/change-properties/{id}", post(change_properties))
        .route(
            "/requests/comment/create/{id}/{group}",
            post(comment_create),
        )
        .route(
            "/requests/comment/delete/{id}/{group}",
            post(comment_delete),
        )
        .route(
            "/requests/comment/visibility_public/{id}/{group}",
            post(comment_public),
        )
}

fn parse_id(id: &str) -> Result<RequestId, AppError> {
    RequestId::parse(id).map_err(|_| AppError::NotFound)
}

fn load(state: &AppState, ctx: &Ctx, id: &str) -> Result<ReleaseRequest, AppError> {
    let id = parse_id(id)?;
    let Some(request) = state.store.get(&id)? else {
        return Err(AppError::NotFound);
    };
    if !ctx.user.can_view_workspace(&request.workspace) {
        return Err(AppError::Forbidden(
            "You do not have permission to view this request".to_string(),
        ));
    }
    Ok(request)
}

struct RequestRow {
    id: String,
    workspace: String,
    author: String,
    status: String,
    progress: String,
}

#[derive(Template)]
#[template(path = "request_list.html")]
struct ListPage {
    ctx: Ctx,
    title: String,
    rows: Vec<RequestRow>,
}

fn row(request: &ReleaseRequest, viewer: &User) -> RequestRow {
    let n_outputs = request.output_files().count();
    let reviewed = request
        .output_files()
        .filter(|file| {
            file.reviews
                .get(&viewer.username)
                .is_some_and(|review| review.vote != Vote::Undecided)
        })
        .count();
    let progress = if viewer.can_currently_review(request) {
        let incomplete = if reviewed < n_outputs {
            " (incomplete)"
        } else {
            ""
        };
        format!("Your review: {reviewed}/{n_outputs} files{incomplete}")
    } else {
        String::new()
    };
    RequestRow {
        id: request.id.to_string(),
        workspace: request.workspace.clone(),
        author: request.author.clone(),
        status: request.status.description().to_string(),
        progress,
    }
}

async fn output_checker_list(
    State(state): State<AppState>,
    ctx: Ctx,
) -> Result<Response, AppError> {
    if !ctx.user.output_checker {
        return Err(AppError::Forbidden(
            "Only output checkers can see this page".to_string(),
        ));
    }
    let rows = state
        .store
        .list()?
        .iter()
        .filter(|request| request.author != ctx.user.username)
        .filter(|request| {
            request.status.is_under_review()
                || matches!(
                    request.status,
                    RequestStatus::Returned | RequestStatus::Approved
                )
        })
        .map(|request| row(request, &ctx.user))
        .collect();
    render(&ListPage {
        ctx,
        title: "Requests for review".to_string(),
        rows,
    })
}

async fn workspace_list(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace): Path<String>,
) -> Result<Response, AppError> {
    if !ctx.user.can_view_workspace(&workspace) {
        return Err(AppError::Forbidden(format!(
            "You do not have permission to view workspace {workspace}"
        )));
    }
    let rows = state
        .store
        .list()?
        .iter()
        .filter(|request| request.workspace == workspace)
        .map(|request| row(request, &ctx.user))
        .collect();
    render(&ListPage {
        ctx,
        title: format!("Requests for workspace {workspace}"),
        rows,
    })
}

struct FileView {
    relpath: String,
    /// The path percent-encoded for action URLs.
    action_path: String,
    url_path: String,
    filetype: String,
    size: u64,
    decision: String,
    my_vote: String,
    flags: Vec<String>,
    rows_cols: String,
    uploaded: bool,
}

struct CommentView {
    id: u64,
    author: String,
    text: String,
    visibility: String,
    when: String,
    can_delete: bool,
    can_publish: bool,
}

struct GroupView {
    name: String,
    context: String,
    controls: String,
    files: Vec<FileView>,
    comments: Vec<CommentView>,
}

struct AuditView {
    when: String,
    user: String,
    text: String,
    path: String,
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    ctx: Ctx,
    id: String,
    workspace: String,
    author: String,
    status: String,
    review_turn: u32,
    groups: Vec<GroupView>,
    audit: Vec<AuditView>,
    can_edit: bool,
    can_withdraw_request: bool,
    can_vote: bool,
    can_submit_review: bool,
    can_return: bool,
    can_reject: bool,
    can_release: bool,
    can_comment: bool,
    private_allowed: bool,
    upload_progress: String,
    submitted_reviews: usize,
}

/// Disclosure-check flags of the request's CSV outputs, by path (read from the stored
/// copies, off the async threads).
async fn flags_for(
    state: &AppState,
    request: &ReleaseRequest,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, AppError> {
    let files: Vec<(String, std::path::PathBuf)> = request
        .output_files()
        .filter(|file| file.relpath.to_ascii_lowercase().ends_with(".csv"))
        .map(|file| {
            (
                file.relpath.clone(),
                state.store.file_path(request, &file.file_id),
            )
        })
        .collect();
    let config = state.config.checks.clone();
    tokio::task::spawn_blocking(move || {
        let mut flags = std::collections::BTreeMap::new();
        for (relpath, path) in files {
            let found = std::fs::File::open(&path)
                .and_then(|file| checks::check_csv(std::io::BufReader::new(file), &config));
            let messages = match found {
                Ok(found) => found.iter().map(|flag| flag.message(&config)).collect(),
                Err(error) => vec![format!("could not be checked: {error}")],
            };
            flags.insert(relpath, messages);
        }
        flags
    })
    .await
    .map_err(|error| AppError::Internal(error.to_string()))
}

fn event_visibility(event: &AuditEvent) -> Visibility {
    match event.extra.get("visibility").map(String::as_str) {
        Some("PRIVATE") => Visibility::Private,
        _ => Visibility::Public,
    }
}

async fn overview(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let request = load(&state, &ctx, &id)?;
    let user = &ctx.user;
    let can_review_request = user.can_review_request(&request);
    let flags = if can_review_request {
        flags_for(&state, &request).await?
    } else {
        Default::default()
    };
    let groups = request
        .groups
        .values()
        .map(|group| GroupView {
            name: group.name.clone(),
            context: group.context.clone(),
            controls: group.controls.clone(),
            files: request
                .group_files(&group.name)
                .map(|file| FileView {
                    relpath: file.relpath.clone(),
                    action_path: encode_path(&file.relpath),
                    url_path: format!(
                        "{}/{}",
                        super::encode_component(&group.name),
                        encode_path(&file.relpath)
                    ),
                    filetype: file.filetype.as_str().to_string(),
                    size: file.size,
                    decision: if file.filetype == FileType::Output {
                        visible_decision(&request, file, user).as_str().to_string()
                    } else {
                        String::new()
                    },
                    my_vote: file
                        .reviews
                        .get(&user.username)
                        .map(|review| review.vote.as_str().to_string())
                        .unwrap_or_default(),
                    flags: flags.get(&file.relpath).cloned().unwrap_or_default(),
                    rows_cols: match (file.row_count, file.col_count) {
                        (Some(rows), Some(cols)) => format!("{rows} × {cols}"),
                        _ => String::new(),
                    },
                    uploaded: file.uploaded,
                })
                .collect(),
            comments: request
                .comments
                .iter()
                .filter(|comment| comment.group == group.name)
                .filter(|comment| {
                    is_visible(
                        user,
                        &request,
                        &comment.author,
                        comment.review_turn,
                        comment.visibility,
                        false,
                    )
                })
                .map(|comment| {
                    let own = comment.author == user.username && can_comment(user, &request);
                    CommentView {
                        id: comment.id,
                        author: comment.author.clone(),
                        text: comment.text.clone(),
                        visibility: comment.visibility.as_str().to_string(),
                        when: format_time(comment.created_at),
                        can_delete: own,
                        can_publish: own
                            && comment.visibility == Visibility::Private
                            && comment.review_turn == request.review_turn,
                    }
                })
                .collect(),
        })
        .collect();
    let audit = state
        .store
        .audit_for(&request.id)?
        .into_iter()
        .rev()
        .filter(|event| !event.kind.is_read_only())
        .filter(|event| {
            is_visible(
                user,
                &request,
                &event.user,
                event.review_turn,
                event_visibility(event),
                event.hidden,
            )
        })
        .map(|event| AuditView {
            when: format_time(event.created_at),
            user: event.user.clone(),
            text: event.kind.display().to_string(),
            path: event.path.clone().unwrap_or_default(),
        })
        .collect();
    let is_author = user.username == request.author;
    let released: Vec<_> = request
        .files
        .values()
        .filter(|file| file.released_at.is_some())
        .collect();
    let upload_progress = if released.is_empty() {
        String::new()
    } else {
        let done = released.iter().filter(|file| file.uploaded).count();
        format!("{done} of {} files uploaded", released.len())
    };
    let page = RequestPage {
        id: request.id.to_string(),
        workspace: request.workspace.clone(),
        author: request.author.clone(),
        status: request.status.description().to_string(),
        review_turn: request.review_turn,
        groups,
        audit,
        can_edit: user.can_edit_request(&request),
        can_withdraw_request: is_author && request.status.is_editable(),
        can_vote: user.can_currently_review(&request),
        can_submit_review: user.can_currently_review(&request)
            && !request.submitted_reviews.contains_key(&user.username),
        can_return: can_review_request && request.status.is_under_review(),
        can_reject: can_review_request && request.status == RequestStatus::Reviewed,
        // Offered only when releasing would succeed: every output file approved by two
        // submitted reviews (or an APPROVED request whose release is being retried).
        can_release: can_review_request && workflow::check_release(&request, user).is_ok(),
        can_comment: can_comment(user, &request),
        private_allowed: writable_visibilities(user, &request).contains(&Visibility::Private),
        upload_progress,
        submitted_reviews: request.submitted_reviews.len(),
        ctx,
    };
    render(&page)
}

#[derive(Template)]
#[template(path = "request_file.html")]
struct FilePage {
    ctx: Ctx,
    id: String,
    group: String,
    relpath: String,
    content_url: String,
    can_download: bool,
}

async fn file_view(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, group, path)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    let request = load(&state, &ctx, &id)?;
    let Some(file) = request.files.get(&path).filter(|file| file.group == group) else {
        return Err(AppError::NotFound);
    };
    state.store.append_audit(&AuditEvent {
        kind: AuditType::RequestFileView,
        user: ctx.user.username.clone(),
        workspace: request.workspace.clone(),
        request: Some(request.id.to_string()),
        path: Some(file.relpath.clone()),
        extra: [("group".to_string(), group.clone())].into_iter().collect(),
        review_turn: request.review_turn,
        created_at: now_secs(),
        hidden: false,
    })?;
    let page = FilePage {
        content_url: format!(
            "/requests/content/{}/{}/{}",
            request.id,
            super::encode_component(&group),
            encode_path(&path)
        ),
        can_download: ctx.user.can_download(&request),
        id: request.id.to_string(),
        group,
        relpath: path,
        ctx,
    };
    render(&page)
}

#[derive(Deserialize)]
struct ContentQuery {
    #[serde(default)]
    page: usize,
    #[serde(default)]
    plaintext: bool,
    download: Option<String>,
}

async fn file_content(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, group, path)): Path<(String, String, String)>,
    Query(query): Query<ContentQuery>,
) -> Result<Response, AppError> {
    let request = load(&state, &ctx, &id)?;
    let Some(file) = request.files.get(&path).filter(|file| file.group == group) else {
        return Err(AppError::NotFound);
    };
    let stored = state.store.file_path(&request, &file.file_id);
    if query.download.is_some() {
        if !ctx.user.can_download(&request) {
            return Err(AppError::Forbidden(
                "You do not have permission to download this file".to_string(),
            ));
        }
        state.store.append_audit(&AuditEvent {
            kind: AuditType::RequestFileDownload,
            user: ctx.user.username.clone(),
            workspace: request.workspace.clone(),
            request: Some(request.id.to_string()),
            path: Some(file.relpath.clone()),
            extra: Default::default(),
            review_turn: request.review_turn,
            created_at: now_secs(),
            hidden: false,
        })?;
        let bytes = tokio::fs::read(&stored)
            .await
            .map_err(|error| AppError::Internal(error.to_string()))?;
        let name = file
            .relpath
            .rsplit('/')
            .next()
            .unwrap_or("file")
            .replace('"', "");
        let mut response = bytes.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(value) = format!("attachment; filename=\"{name}\"").parse() {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
        return Ok(response);
    }
    content::render(
        &state.csv_indexes,
        stored,
        &path,
        query.page,
        state.config.csv_page_size,
        query.plaintext,
    )
    .await
}

async fn uploaded_count(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let request = load(&state, &ctx, &id)?;
    let released: Vec<_> = request
        .files
        .values()
        .filter(|file| file.released_at.is_some())
        .collect();
    let done = released.iter().filter(|file| file.uploaded).count();
    Ok(format!("{done} of {} files uploaded", released.len()).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Runs one operation as the signed-in user, persists it, sends the notification of a
/// status change, and redirects back to the request with `message`.
async fn act(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    csrf: &str,
    message: &str,
    operation: impl FnOnce(&mut ReleaseRequest, &User, i64) -> Result<Outcome, RequestError>,
) -> Result<Response, AppError> {
    ctx.check_csrf(csrf)?;
    let request = load(state, ctx, id)?;
    let (before, after, _) = state.store.update(&request.id, |request| {
        operation(request, &ctx.user, now_secs())
    })?;
    state.store.flush().await?;
    if before.status != after.status {
        // Notifications never block the workflow for long (B10).
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            upload::notify(&state.link, &after, before.status, &ctx.user.username, ""),
        )
        .await;
        if sent.is_err() {
            tracing::warn!(request = %after.id, "notification timed out");
        }
    }
    set_flash(state, ctx, message)?;
    Ok(Redirect::to(&format!("/requests/view/{}/", after.id)).into_response())
}

async fn submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Request has been submitted",
        workflow::submit,
    )
    .await
}

async fn withdraw(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Request has been withdrawn",
        workflow::withdraw_request,
    )
    .await
}

async fn review(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Your review has been submitted",
        workflow::submit_review,
    )
    .await
}

async fn return_request(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Request has been returned",
        workflow::return_request,
    )
    .await
}

async fn reject(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Request has been rejected",
        workflow::reject,
    )
    .await
}

async fn release(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form.csrf)?;
    let request = load(&state, &ctx, &id)?;
    upload::release_files(
        &state.store,
        &state.link,
        &request.id,
        &ctx.user,
        &Arc::clone(&state.uploader),
    )
    .await?;
    set_flash(
        &state,
        &ctx,
        "Files have been released and will be uploaded to the job server",
    )?;
    Ok(Redirect::to(&format!("/requests/view/{}/", request.id)).into_response())
}

async fn approve_file(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, path)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        &format!("Approved {path}"),
        |r, u, now| workflow::vote(r, u, &path, Vote::Approved, now),
    )
    .await
}

async fn request_changes(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, path)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        &format!("Changes requested to {path}"),
        |r, u, now| workflow::vote(r, u, &path, Vote::ChangesRequested, now),
    )
    .await
}

async fn reset_review(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, path)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        &format!("Review of {path} reset"),
        |r, u, now| workflow::reset_vote(r, u, &path, now),
    )
    .await
}

async fn withdraw_file(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, path)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        &format!("{path} withdrawn"),
        |r, u, now| workflow::withdraw_file(r, u, &path, now),
    )
    .await
}

#[derive(Deserialize)]
struct EditForm {
    csrf: String,
    context: String,
    controls: String,
}

async fn edit_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, group)): Path<(String, String)>,
    Form(form): Form<EditForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Context and controls updated",
        |r, u, now| workflow::edit_group(r, u, &group, &form.context, &form.controls, now),
    )
    .await
}

#[derive(Deserialize)]
struct CommentForm {
    csrf: String,
    comment: String,
    #[serde(default)]
    visibility: String,
}

async fn comment_create(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, group)): Path<(String, String)>,
    Form(form): Form<CommentForm>,
) -> Result<Response, AppError> {
    let visibility = Visibility::parse(&form.visibility).unwrap_or(Visibility::Public);
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Comment added",
        |r, u, now| workflow::add_comment(r, u, &group, &form.comment, visibility, now),
    )
    .await
}

#[derive(Deserialize)]
struct CommentIdForm {
    csrf: String,
    comment_id: u64,
}

async fn comment_delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, _group)): Path<(String, String)>,
    Form(form): Form<CommentIdForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Comment deleted",
        |r, u, now| workflow::delete_comment(r, u, form.comment_id, now),
    )
    .await
}

async fn comment_public(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, _group)): Path<(String, String)>,
    Form(form): Form<CommentIdForm>,
) -> Result<Response, AppError> {
    act(
        &state,
        &ctx,
        &id,
        &form.csrf,
        "Comment made public",
        |r, u, now| workflow::make_comment_public(r, u, form.comment_id, now),
    )
    .await
}

async fn group_request_changes(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, group)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let message = format!("Changes requested to the files in group {group}");
    act(&state, &ctx, &id, &form.csrf, &message, |r, u, now| {
        workflow::request_changes_in_group(r, u, &group, now)
    })
    .await
}

async fn group_reset_votes(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, group)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let message = format!("Your votes in group {group} were reset");
    act(&state, &ctx, &id, &form.csrf, &message, |r, u, now| {
        workflow::reset_votes_in_group(r, u, &group, now)
    })
    .await
}

#[derive(Deserialize)]
struct PropertiesForm {
    csrf: String,
    path: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    new_group: String,
    filetype: String,
}

async fn change_properties(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<PropertiesForm>,
) -> Result<Response, AppError> {
    let request = load(&state, &ctx, &id)?;
    let Some(filetype) = FileType::parse(&form.filetype) else {
        return Err(AppError::BadRequest(format!(
            "unknown file type {}",
            form.filetype
        )));
    };
    let group = if form.new_group.trim().is_empty() {
        form.group.trim().to_string()
    } else {
        form.new_group.trim().to_string()
    };
    let released = state.store.released_hashes(&request.workspace)?;
    let already_released = request
        .files
        .get(&form.path)
        .is_some_and(|file| released.contains(&file.file_id));
    let message = format!("{} updated", form.path);
    act(&state, &ctx, &id, &form.csrf, &message, |r, u, now| {
        workflow::change_properties(r, u, &form.path, &group, filetype, already_released, now)
    })
    .await
}
