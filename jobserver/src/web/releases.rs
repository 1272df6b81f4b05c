//! Released files of a workspace (spec A10 step 3): a list and downloads, for users with
//! `release_file_view` on the project (404 otherwise).

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppError, AppState, Ctx, render};
use crate::access::allowed;
use crate::model::{ReleaseFile, iso};
use crate::roles::Permission;
use crate::zip_stream::{ZipEntry, zip_stream};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/{project}/{workspace}/releases/", get(releases_page))
        .route(
            "/{project}/{workspace}/releases/file/{file_id}",
            get(download),
        )
        .route(
            "/{project}/{workspace}/releases/{release_id}/",
            get(release_page),
        )
        .route(
            "/{project}/{workspace}/releases/{release_id}/download.zip",
            get(download_zip),
        )
}

/// One uploaded file.
pub struct FileRow {
    pub id: String,
    pub name: String,
    pub release_id: String,
    pub size: u64,
    pub uploaded_at: String,
    pub sha256: String,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    ctx: Ctx,
    project: String,
    workspace: String,
    files: Vec<FileRow>,
    /// The zip of the release shown, or empty on the workspace's list.
    zip_url: String,
}

fn check(state: &AppState, ctx: &Ctx, slug: &str, name: &str) -> Result<(), AppError> {
    let workspace = state.store.workspace(name)?.filter(|w| w.project == slug);
    if workspace.is_none()
        || !allowed(
            &state.store,
            ctx.user.as_ref(),
            Some(slug),
            Permission::ReleaseFileView,
        )?
    {
        return Err(AppError::NotFound);
    }
    Ok(())
}

fn rows(files: Vec<ReleaseFile>) -> Vec<FileRow> {
    files
        .into_iter()
        .filter_map(|f: ReleaseFile| {
            Some(FileRow {
                uploaded_at: iso(f.uploaded_at?),
                id: f.id,
                name: f.name,
                release_id: f.release_id,
                size: f.size,
                sha256: f.sha256,
            })
        })
        .collect()
}

async fn releases_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
) -> Result<Response, AppError> {
    ctx.require_user()?;
    check(&state, &ctx, &slug, &name)?;
    let files = rows(state.store.release_files_of_workspace(&name)?);
    render(
        &ctx,
        &ReleasesPage {
            ctx: ctx.clone(),
            zip_url: String::new(),
            project: slug,
            workspace: name,
            files,
        },
    )
}

/// 404 unless `release_id` is a release of workspace `name`.
fn check_release_in_workspace(
    state: &AppState,
    name: &str,
    release_id: &str,
) -> Result<(), AppError> {
    match state.store.release(release_id)? {
        Some(release) if release.workspace == name => Ok(()),
        _ => Err(AppError::NotFound),
    }
}

/// One release (the `release_url` handed to Airlock points here).
async fn release_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name, release_id)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    ctx.require_user()?;
    check(&state, &ctx, &slug, &name)?;
    check_release_in_workspace(&state, &name, &release_id)?;
    let files = rows(state.store.release_files_of_release(&release_id)?);
    render(
        &ctx,
        &ReleasesPage {
            ctx: ctx.clone(),
            zip_url: format!("/{slug}/{name}/releases/{release_id}/download.zip"),
            project: slug,
            workspace: name,
            files,
        },
    )
}

/// Every received file of one release in a zip named `<workspace>-<release id>.zip`, streamed
/// as the files are read (constant memory whatever the release's size).
async fn download_zip(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name, release_id)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    ctx.require_user()?;
    check(&state, &ctx, &slug, &name)?;
    check_release_in_workspace(&state, &name, &release_id)?;
    let entries = state
        .store
        .release_files_of_release(&release_id)?
        .into_iter()
        .filter(|f| f.uploaded_at.is_some())
        .map(|f| ZipEntry {
            path: file_path(&state.config.release_storage, &f),
            name: f.name,
            size: f.size,
            mtime: f.mtime,
        })
        .collect();
    let stream = zip_stream(entries)?;
    let filename = format!("{name}-{release_id}.zip").replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Where a release file's bytes live under the storage root.
pub fn file_path(root: &std::path::Path, file: &ReleaseFile) -> std::path::PathBuf {
    root.join(&file.workspace)
        .join("releases")
        .join(&file.release_id)
        .join(&file.name)
}

async fn download(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name, file_id)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    ctx.require_user()?;
    check(&state, &ctx, &slug, &name)?;
    let file = state
        .store
        .release_file(&file_id)?
        .filter(|f| f.workspace == name && f.uploaded_at.is_some())
        .ok_or(AppError::NotFound)?;
    let path = file_path(&state.config.release_storage, &file);
    let bytes = tokio::fs::read(&path).await.map_err(|error| {
        tracing::error!("reading {}: {error}", path.display());
        AppError::NotFound
    })?;
    let filename = file
        .name
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from(bytes),
    )
        .into_response())
}
