//! `jobserver.v1.ReleaseService`: what Airlock calls (spec A9–A11).
//!
//! Every call presents a backend token (`authorization: Bearer <token>`; the bare token is
//! accepted too, as the reference sends it); user-acting calls name the user in `os-user`.
//! Token problems are `unauthenticated` with the reference's messages; permission problems are
//! `permission_denied` (the reference answers 403 to both); bad payloads are
//! `invalid_argument` with the reference's texts. One deliberate difference: re-uploading a
//! file already received is a success flagged `already_uploaded` instead of the reference's
//! 400 that Airlock has to recognise by its text.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use rap_proto::pb::jobserver::v1 as pb;
use sha2::Digest;
use tonic::{Request, Response, Status, Streaming};

use crate::access::allowed;
use crate::accounts::check_login_token;
use crate::model::{Backend, Release, ReleaseFile, User, now};
use crate::roles::{Permission, Role};
use crate::store::{Store, StoreError};

/// The reference's default `RELEASE_FILE_SIZE_LIMIT`: 16 MiB.
pub const DEFAULT_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// The service: a thin struct over the store and settings.
#[derive(Clone)]
pub struct ReleaseApi {
    pub store: Store,
    /// Root of released files: `<root>/<workspace>/releases/<release id>/<name>`.
    pub release_storage: PathBuf,
    /// Absolute base URL for `release_url` (no trailing slash).
    pub base_url: String,
    pub size_limit: u64,
}

fn internal(error: StoreError) -> Status {
    tracing::error!("release service: {error}");
    Status::internal("Internal error")
}

/// The calling backend, from the `authorization` metadata (A3's three messages).
///
/// # Errors
/// `unauthenticated` with the reference's message.
pub fn authenticate_backend<T>(store: &Store, request: &Request<T>) -> Result<Backend, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Err(Status::unauthenticated("Authorization header is missing"));
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("Invalid token"))?
        .trim();
    // HTTP trims trailing spaces, so "Bearer " arrives as "Bearer": an empty token.
    let token = if value == "Bearer" {
        ""
    } else {
        value.strip_prefix("Bearer ").unwrap_or(value).trim()
    };
    if token.is_empty() {
        return Err(Status::unauthenticated("Authorization header is empty"));
    }
    match store.backend_by_token(token).map_err(internal)? {
        Some(backend) => Ok(backend),
        None => Err(Status::unauthenticated("Invalid token")),
    }
}

fn os_user<T>(store: &Store, request: &Request<T>) -> Result<User, Status> {
    let name = request
        .metadata()
        .get("os-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_owned();
    if name.is_empty() {
        return Err(Status::permission_denied("OS-User header is missing"));
    }
    store
        .user(&name)
        .map_err(internal)?
        .ok_or_else(|| Status::permission_denied(format!("Unknown user {name}")))
}

/// A10's upload-access checks after the token: the user is a member of the calling backend and
/// holds `release_file_upload` on the workspace's project.
fn check_upload_access(
    store: &Store,
    backend: &Backend,
    user: &User,
    project: &str,
) -> Result<(), Status> {
    let backends = store.backends_of_user(&user.username).map_err(internal)?;
    if !backends.contains(&backend.slug) {
        return Err(Status::permission_denied(format!(
            "User {} is not a member of backend {}",
            user.username, backend.slug
        )));
    }
    if !allowed(
        store,
        Some(user),
        Some(project),
        Permission::ReleaseFileUpload,
    )
    .map_err(internal)?
    {
        return Err(Status::permission_denied(format!(
            "User {} does not have permission to upload files to this workspace",
            user.username
        )));
    }
    Ok(())
}

/// A9's Level4 user: workspaces of the projects where the user's own memberships (or global
/// roles) give `unreleased_outputs_view`, copiloted workspaces, and the two flags.
///
/// # Errors
/// On storage failure.
pub fn level4_user(store: &Store, user: &User) -> Result<pb::Level4User, StoreError> {
    let access = |project: &crate::model::Project,
                  archived: bool|
     -> Result<pb::WorkspaceAccess, StoreError> {
        let mut orgs = Vec::new();
        for slug in &project.orgs {
            orgs.push(
                store
                    .org(slug)?
                    .map(|o| o.name)
                    .unwrap_or_else(|| slug.clone()),
            );
        }
        Ok(pb::WorkspaceAccess {
            project_details: Some(pb::ProjectDetails {
                name: project.name.clone(),
                ongoing: project.is_ongoing(),
                orgs,
            }),
            archived,
        })
    };
    let mut workspaces = HashMap::new();
    for membership in store.memberships_of_user(&user.username)? {
        if !crate::roles::has_permission(
            &user.roles,
            &membership.roles,
            Permission::UnreleasedOutputsView,
        ) {
            continue;
        }
        let Some(project) = store.project(&membership.project)? else {
            continue;
        };
        for workspace in store.workspaces_of_project(&project.slug)? {
            workspaces.insert(
                workspace.name.clone(),
                access(&project, workspace.is_archived)?,
            );
        }
    }
    let mut copiloted = HashMap::new();
    for project in store.projects()? {
        if project.copilot.as_deref() == Some(user.username.as_str()) {
            for workspace in store.workspaces_of_project(&project.slug)? {
                copiloted.insert(
                    workspace.name.clone(),
                    access(&project, workspace.is_archived)?,
                );
            }
        }
    }
    Ok(pb::Level4User {
        username: user.username.clone(),
        fullname: user.fullname.clone(),
        workspaces,
        copiloted_workspaces: copiloted,
        output_checker: user.roles.contains(&Role::OutputChecker),
        readonly_access: crate::roles::has_permission(
            &user.roles,
            &[],
            Permission::AirlockReadonlyAccess,
        ),
    })
}

/// The message for any refused Airlock login (which check failed is not revealed).
pub const INVALID_LOGIN: &str = "Invalid user or token";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

fn megabytes(size: u64) -> String {
    format!("{:.2}", size as f64 / 1024.0 / 1024.0)
}

fn random_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 13];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode_upper(bytes)
}

#[tonic::async_trait]
impl pb::release_service_server::ReleaseService for ReleaseApi {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::Level4User>, Status> {
        authenticate_backend(&self.store, &request)?;
        let body = request.into_inner();
        let Some(mut user) = self
            .store
            .user_by_name_or_email(body.user.trim())
            .map_err(internal)?
        else {
            return Err(Status::permission_denied(INVALID_LOGIN));
        };
        if let Err(refusal) = check_login_token(&user, &body.token, now()) {
            tracing::info!(user = %user.username, ?refusal, "Airlock login refused");
            return Err(Status::permission_denied(INVALID_LOGIN));
        }
        if self
            .store
            .backends_of_user(&user.username)
            .map_err(internal)?
            .is_empty()
        {
            return Err(Status::permission_denied(INVALID_LOGIN));
        }
        // Single use: consumed on success, and durably so before we answer.
        user.login_token = None;
        self.store.put_user(&user).map_err(internal)?;
        self.store.flush().await.map_err(internal)?;
        Ok(Response::new(
            level4_user(&self.store, &user).map_err(internal)?,
        ))
    }

    async fn authorise(
        &self,
        request: Request<pb::AuthoriseRequest>,
    ) -> Result<Response<pb::Level4User>, Status> {
        authenticate_backend(&self.store, &request)?;
        let body = request.into_inner();
        let Some(user) = self.store.user(body.user.trim()).map_err(internal)? else {
            return Err(Status::not_found(format!("Unknown user {}", body.user)));
        };
        if self
            .store
            .backends_of_user(&user.username)
            .map_err(internal)?
            .is_empty()
        {
            return Err(Status::permission_denied(format!(
                "User {} may not use Airlock",
                user.username
            )));
        }
        Ok(Response::new(
            level4_user(&self.store, &user).map_err(internal)?,
        ))
    }

    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::CreateReleaseResponse>, Status> {
        // A10's order: workspace, token, user, backend membership, permission, payload, sizes.
        let workspace_name = request.get_ref().workspace.clone();
        let Some(workspace) = self.store.workspace(&workspace_name).map_err(internal)? else {
            return Err(Status::not_found(format!(
                "Unknown workspace {workspace_name}"
            )));
        };
        let backend = authenticate_backend(&self.store, &request)?;
        let user = os_user(&self.store, &request)?;
        check_upload_access(&self.store, &backend, &user, &workspace.project)?;
        let body = request.into_inner();
        if body.files.is_empty() {
            return Err(Status::invalid_argument(
                "files: This list may not be empty.",
            ));
        }
        for file in &body.files {
            if !valid_name(&file.name) {
                return Err(Status::invalid_argument(format!(
                    "Invalid file name {:?}",
                    file.name
                )));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Status::invalid_argument(format!(
                    "Invalid sha256 for {}",
                    file.name
                )));
            }
        }
        for file in &body.files {
            if file.size > self.size_limit {
                return Err(Status::invalid_argument(format!(
                    "File size should be <{}Mb. {} is {}Mb",
                    self.size_limit / 1024 / 1024,
                    file.name,
                    megabytes(file.size)
                )));
            }
        }
        let release_id = if body.release_id.trim().is_empty() {
            random_id()
        } else {
            body.release_id.trim().to_owned()
        };
        let release_url = format!(
            "{}/{}/{}/releases/{}/",
            self.base_url, workspace.project, workspace.name, release_id
        );
        if let Some(existing) = self.store.release(&release_id).map_err(internal)? {
            // Idempotent on the id (even for another user), as long as it is the same release.
            if existing.workspace != workspace.name || existing.backend != backend.slug {
                return Err(Status::already_exists(format!(
                    "Release {release_id} already exists for another workspace or backend"
                )));
            }
            let stored: BTreeSet<String> = self
                .store
                .release_files_of_release(&release_id)
                .map_err(internal)?
                .into_iter()
                .map(|f| f.sha256.to_lowercase())
                .collect();
            let asked: BTreeSet<String> =
                body.files.iter().map(|f| f.sha256.to_lowercase()).collect();
            if stored != asked {
                return Err(Status::failed_precondition(format!(
                    "Release {release_id} already exists with different files"
                )));
            }
            return Ok(Response::new(pb::CreateReleaseResponse {
                release_id,
                release_url,
            }));
        }
        let created_at = now();
        let release = Release {
            id: release_id.clone(),
            workspace: workspace.name.clone(),
            backend: backend.slug.clone(),
            created_by: user.username.clone(),
            created_at,
        };
        let files: Vec<ReleaseFile> = body
            .files
            .iter()
            .map(|file| ReleaseFile {
                id: random_id(),
                release_id: release_id.clone(),
                workspace: workspace.name.clone(),
                name: file.name.clone(),
                sha256: file.sha256.to_lowercase(),
                size: file.size,
                mtime: file.date,
                created_by: user.username.clone(),
                uploaded_at: None,
            })
            .collect();
        self.store
            .insert_release(&release, &files)
            .map_err(internal)?;
        self.store.flush().await.map_err(internal)?;
        Ok(Response::new(pb::CreateReleaseResponse {
            release_id,
            release_url,
        }))
    }

    async fn upload_file(
        &self,
        request: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadFileResponse>, Status> {
        let backend = authenticate_backend(&self.store, &request)?;
        let user = os_user(&self.store, &request)?;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::UploadChunk {
                chunk: Some(pb::upload_chunk::Chunk::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "The first message must be the file header",
                ));
            }
        };
        let Some(release) = self.store.release(&header.release_id).map_err(internal)? else {
            return Err(Status::not_found(format!(
                "Unknown release {}",
                header.release_id
            )));
        };
        let workspace = self
            .store
            .workspace(&release.workspace)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("Unknown workspace {}", release.workspace)))?;
        check_upload_access(&self.store, &backend, &user, &workspace.project)?;
        let limit_text = format!("{:.1}", self.size_limit as f64 / 1024.0 / 1024.0);
        if header.size > self.size_limit {
            return Err(Status::invalid_argument(format!(
                "File is too large, it must be below {limit_text}Mb"
            )));
        }
        let Some(mut file) = self
            .store
            .release_files_of_release(&release.id)
            .map_err(internal)?
            .into_iter()
            .find(|f| f.name == header.name)
        else {
            return Err(Status::invalid_argument(format!(
                "File {} not requested in release {}",
                header.name, release.id
            )));
        };
        if release.backend != backend.slug {
            return Err(Status::invalid_argument(format!(
                "Release is from backend {} not {}",
                release.backend, backend.slug
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            match chunk.chunk {
                Some(pb::upload_chunk::Chunk::Data(data)) => {
                    if (bytes.len() + data.len()) as u64 > self.size_limit {
                        return Err(Status::invalid_argument(format!(
                            "File is too large, it must be below {limit_text}Mb"
                        )));
                    }
                    bytes.extend_from_slice(&data);
                }
                _ => return Err(Status::invalid_argument("Only one header is allowed")),
            }
        }
        if bytes.is_empty() {
            return Err(Status::invalid_argument("No data uploaded"));
        }
        if file.uploaded_at.is_some() {
            return Ok(Response::new(pb::UploadFileResponse {
                file_id: file.id,
                already_uploaded: true,
            }));
        }
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        if digest != file.sha256 {
            return Err(Status::invalid_argument(
                "Contents of uploaded file does not match the file which a review was requested for",
            ));
        }
        let path = crate::web::releases::file_path(&self.release_storage, &file);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|error| {
                tracing::error!("creating {}: {error}", parent.display());
                Status::internal("Internal error")
            })?;
        }
        tokio::fs::write(&path, &bytes).await.map_err(|error| {
            tracing::error!("writing {}: {error}", path.display());
            Status::internal("Internal error")
        })?;
        file.uploaded_at = Some(now());
        self.store.put_release_file(&file).map_err(internal)?;
        self.store.flush().await.map_err(internal)?;
        Ok(Response::new(pb::UploadFileResponse {
            file_id: file.id,
            already_uploaded: false,
        }))
    }

    async fn notify_event(
        &self,
        request: Request<pb::AirlockEvent>,
    ) -> Result<Response<pb::NotifyEventResponse>, Status> {
        authenticate_backend(&self.store, &request)?;
        let event = request.into_inner();
        const KNOWN: [&str; 9] = [
            "REQUEST_SUBMITTED",
            "REQUEST_WITHDRAWN",
            "REQUEST_APPROVED",
            "REQUEST_RELEASED",
            "REQUEST_REJECTED",
            "REQUEST_RETURNED",
            "REQUEST_RESUBMITTED",
            "REQUEST_PARTIALLY_REVIEWED",
            "REQUEST_REVIEWED",
        ];
        let kind = event.event_type.to_uppercase();
        if !KNOWN.contains(&kind.as_str()) {
            return Ok(Response::new(pb::NotifyEventResponse {
                status: "error".to_owned(),
                message: format!("Unknown event type {}", event.event_type),
            }));
        }
        // Notifications (GitHub issues, email, Slack) are not built: the event is logged.
        let updates: Vec<&str> = event
            .update_items
            .iter()
            .map(|update| update.update.as_str())
            .collect();
        tracing::info!(
            event = %kind,
            workspace = %event.workspace,
            request = %event.request_id,
            user = %event.user,
            org = %event.org,
            repo = %event.repo,
            updates = ?updates,
            "Airlock event"
        );
        Ok(Response::new(pb::NotifyEventResponse {
            status: "ok".to_owned(),
            message: String::new(),
        }))
    }
}
