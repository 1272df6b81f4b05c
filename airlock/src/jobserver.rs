//! The link to the job server's `jobserver.v1.ReleaseService` (spec A9–A11, B2, B9, B10): a
//! small cloneable handle over the generated tonic client. Only this module sees the
//! protobuf types; the rest of Airlock gets [`User`]s and [`LinkError`]s.
//!
//! Every call carries the backend's token as `authorization: Bearer <token>`; calls acting
//! for a user add `os-user: <username>`.

use std::path::Path;

use futures_util::StreamExt;
use pb::release_service_client::ReleaseServiceClient;
use rap_proto::pb::jobserver::v1 as pb;
use tokio::io::AsyncReadExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::user::{User, WorkspaceAccess};

/// Bytes per upload message.
const CHUNK_SIZE: usize = 64 * 1024;

/// The handle. Clones share one HTTP/2 connection.
#[derive(Clone)]
pub struct JobServer {
    client: ReleaseServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    /// Sent with every event when configured (B10's `org` and `repo`).
    output_checking: Option<OutputCheckingRepo>,
}

/// The GitHub repository where the job server tracks output checking (the reference's
/// `AIRLOCK_OUTPUT_CHECKING_ORG` and `…_REPO`, which are set together or not at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCheckingRepo {
    pub org: String,
    pub repo: String,
}

/// One entry of an event's updates (B10: `update`, and optionally the group and user it
/// concerns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventUpdate {
    pub update: String,
    pub group: Option<String>,
    pub user: Option<String>,
}

/// A failed call to the job server.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid job server endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("the backend token or a user name is not valid metadata")]
    BadMetadata,
    /// The job server said no (unauthenticated or permission denied): a 403 in the reference.
    #[error("Permission denied")]
    Denied(String),
    /// The job server could not be reached.
    #[error("could not connect to the job server: {0}")]
    Unavailable(String),
    #[error("job server error: {0}")]
    Status(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

impl LinkError {
    fn from_status(status: tonic::Status) -> LinkError {
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                LinkError::Denied(status.message().to_string())
            }
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                LinkError::Unavailable(status.message().to_string())
            }
            _ => LinkError::Status(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// One file of a release.
#[derive(Debug, Clone)]
pub struct ReleaseFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub date: i64,
}

impl JobServer {
    /// A handle that connects on first use (so Airlock starts while the job server is down).
    ///
    /// # Errors
    /// A malformed endpoint or TLS config, or a token that is not valid metadata.
    pub fn connect_lazy(
        endpoint: &str,
        tls: Option<ClientTlsConfig>,
        token: &str,
    ) -> Result<JobServer, LinkError> {
        let endpoint_error = |source| LinkError::Endpoint {
            endpoint: endpoint.to_string(),
            source,
        };
        let mut builder = Endpoint::from_shared(endpoint.to_string()).map_err(endpoint_error)?;
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(endpoint_error)?;
        }
        let channel = builder.connect_lazy();
        let authorization = format!("Bearer {token}")
            .parse()
            .map_err(|_| LinkError::BadMetadata)?;
        Ok(JobServer {
            client: ReleaseServiceClient::new(channel),
            authorization,
            output_checking: None,
        })
    }

    /// This handle, naming `repo` in every event it sends.
    pub fn with_output_checking_repo(self, repo: OutputCheckingRepo) -> JobServer {
        JobServer {
            output_checking: Some(repo),
            ..self
        }
    }

    fn request<T>(
        &self,
        message: T,
        os_user: Option<&str>,
    ) -> Result<tonic::Request<T>, LinkError> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        if let Some(user) = os_user {
            let value = user.parse().map_err(|_| LinkError::BadMetadata)?;
            request.metadata_mut().insert("os-user", value);
        }
        Ok(request)
    }

    /// Exchanges a single-use login token for the user's details.
    ///
    /// # Errors
    /// [`LinkError::Denied`] for a bad user or token; others for transport failures.
    pub async fn authenticate(&self, user: &str, token: &str) -> Result<User, LinkError> {
        let request = self.request(
            pb::AuthenticateRequest {
                user: user.to_string(),
                token: token.to_string(),
            },
            None,
        )?;
        let reply = self
            .client
            .clone()
            .authenticate(request)
            .await
            .map_err(LinkError::from_status)?;
        Ok(user_from_pb(reply.into_inner()))
    }

    /// Refreshes a signed-in user's details.
    ///
    /// # Errors
    /// As [`JobServer::authenticate`].
    pub async fn authorise(&self, user: &str) -> Result<User, LinkError> {
        let request = self.request(
            pb::AuthoriseRequest {
                user: user.to_string(),
            },
            None,
        )?;
        let reply = self
            .client
            .clone()
            .authorise(request)
            .await
            .map_err(LinkError::from_status)?;
        Ok(user_from_pb(reply.into_inner()))
    }

    /// Creates (idempotently, keyed by `release_id`) the release; returns its URL.
    ///
    /// # Errors
    /// [`LinkError::Denied`] when the user may not release; others for transport failures.
    pub async fn create_release(
        &self,
        workspace: &str,
        release_id: &str,
        files: &[ReleaseFile],
        os_user: &str,
    ) -> Result<String, LinkError> {
        let message = pb::CreateReleaseRequest {
            workspace: workspace.to_string(),
            release_id: release_id.to_string(),
            files: files
                .iter()
                .map(|file| pb::ReleaseFileSpec {
                    name: file.name.clone(),
                    size: file.size,
                    sha256: file.sha256.clone(),
                    date: file.date,
                })
                .collect(),
        };
        let request = self.request(message, Some(os_user))?;
        let reply = self
            .client
            .clone()
            .create_release(request)
            .await
            .map_err(LinkError::from_status)?;
        Ok(reply.into_inner().release_url)
    }

    /// Streams one file: a header with its name, size and sha256, then the bytes. Returns
    /// whether the job server already had it (which counts as success).
    ///
    /// # Errors
    /// The file cannot be opened, or the call failed.
    pub async fn upload_file(
        &self,
        release_id: &str,
        file: &ReleaseFile,
        path: &Path,
        os_user: &str,
    ) -> Result<bool, LinkError> {
        let opened = tokio::fs::File::open(path)
            .await
            .map_err(|source| LinkError::Read {
                path: path.display().to_string(),
                source,
            })?;
        let header = pb::UploadChunk {
            chunk: Some(pb::upload_chunk::Chunk::Header(pb::UploadHeader {
                release_id: release_id.to_string(),
                name: file.name.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
            })),
        };
        let shown_path = path.display().to_string();
        let data = futures_util::stream::unfold(Some(opened), move |state| {
            let shown_path = shown_path.clone();
            async move {
                let mut opened = state?;
                let mut buffer = vec![0u8; CHUNK_SIZE];
                match opened.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buffer.truncate(n);
                        let chunk = pb::UploadChunk {
                            chunk: Some(pb::upload_chunk::Chunk::Data(buffer)),
                        };
                        Some((chunk, Some(opened)))
                    }
                    Err(error) => {
                        // Ending the stream early makes the server's checksum fail, so a
                        // short read can never be taken for the file.
                        tracing::warn!(path = %shown_path, %error, "reading a file to upload");
                        None
                    }
                }
            }
        });
        let stream = futures_util::stream::once(async move { header }).chain(data);
        let request = self.request(stream, Some(os_user))?;
        let reply = self
            .client
            .clone()
            .upload_file(request)
            .await
            .map_err(LinkError::from_status)?;
        Ok(reply.into_inner().already_uploaded)
    }

    /// Sends a notification event. Failures are the caller's to log: they never block the
    /// workflow (B10).
    ///
    /// # Errors
    /// The call failed.
    pub async fn notify(
        &self,
        event_type: &str,
        workspace: &str,
        request_id: &str,
        request_author: &str,
        user: &str,
        updates: &[EventUpdate],
    ) -> Result<(), LinkError> {
        let (org, repo) = match &self.output_checking {
            Some(output_checking) => (output_checking.org.clone(), output_checking.repo.clone()),
            None => (String::new(), String::new()),
        };
        let request = self.request(
            pb::AirlockEvent {
                event_type: event_type.to_string(),
                workspace: workspace.to_string(),
                request_id: request_id.to_string(),
                request_author: request_author.to_string(),
                user: user.to_string(),
                updates: String::new(),
                org,
                repo,
                update_items: updates
                    .iter()
                    .map(|update| pb::AirlockEventUpdate {
                        update: update.update.clone(),
                        group: update.group.clone().unwrap_or_default(),
                        user: update.user.clone().unwrap_or_default(),
                    })
                    .collect(),
            },
            Some(user),
        )?;
        self.client
            .clone()
            .notify_event(request)
            .await
            .map_err(LinkError::from_status)?;
        Ok(())
    }
}

fn access_from_pb(access: pb::WorkspaceAccess) -> WorkspaceAccess {
    let project = access.project_details.unwrap_or_default();
    WorkspaceAccess {
        project: project.name,
        ongoing: project.ongoing,
        orgs: project.orgs,
        archived: access.archived,
    }
}

/// The Level 4 user as Airlock's [`User`].
pub fn user_from_pb(user: pb::Level4User) -> User {
    let fullname = if user.fullname.is_empty() {
        user.username.clone()
    } else {
        user.fullname
    };
    User {
        username: user.username,
        fullname,
        workspaces: user
            .workspaces
            .into_iter()
            .map(|(name, access)| (name, access_from_pb(access)))
            .collect(),
        copiloted_workspaces: user
            .copiloted_workspaces
            .into_iter()
            .map(|(name, access)| (name, access_from_pb(access)))
            .collect(),
        output_checker: user.output_checker,
        readonly_access: user.readonly_access,
    }
}

/// [`User`] back to the Level 4 shape (to cache it in a session).
pub fn user_to_pb(user: &User) -> pb::Level4User {
    let to_pb = |access: &WorkspaceAccess| pb::WorkspaceAccess {
        project_details: Some(pb::ProjectDetails {
            name: access.project.clone(),
            ongoing: access.ongoing,
            orgs: access.orgs.clone(),
        }),
        archived: access.archived,
    };
    pb::Level4User {
        username: user.username.clone(),
        fullname: user.fullname.clone(),
        workspaces: user
            .workspaces
            .iter()
            .map(|(name, access)| (name.clone(), to_pb(access)))
            .collect(),
        copiloted_workspaces: user
            .copiloted_workspaces
            .iter()
            .map(|(name, access)| (name.clone(), to_pb(access)))
            .collect(),
        output_checker: user.output_checker,
        readonly_access: user.readonly_access,
    }
}
