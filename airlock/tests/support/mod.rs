//! A small in-test `jobserver.v1.ReleaseService` over loopback TLS: a real protocol peer that
//! records what Airlock sends. It checks the bearer token, verifies each upload's sha256 and
//! size against its header, and answers `already_uploaded` for a version it already stored.

#![allow(dead_code)]

pub mod browser;
pub mod pages;
pub mod real_jobserver;
pub mod requests;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rap_airlock::jobserver::JobServer;
use rap_proto::certs::Ca;
use rap_proto::pb::jobserver::v1 as pb;
use rap_proto::pb::jobserver::v1::release_service_server::{ReleaseService, ReleaseServiceServer};
use rap_proto::tls;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

pub const TOKEN: &str = "backend-token";

/// What the fake job server saw and holds.
#[derive(Default)]
pub struct Seen {
    /// (release id, workspace, os-user, files) per CreateRelease call.
    pub releases: Vec<(String, String, String, Vec<String>)>,
    /// Stored files: (release id, name) → bytes. Each stored once.
    pub stored: BTreeMap<(String, String), Vec<u8>>,
    /// How many times each (release, name) was stored (must stay 1).
    pub store_count: BTreeMap<(String, String), usize>,
    pub upload_calls: usize,
    /// Every event received, in order.
    pub events: Vec<pb::AirlockEvent>,
    /// Names whose next upload fails before storing (an outage).
    pub fail_before_store: HashSet<String>,
    /// Names whose next upload is stored but answered with an error (a lost reply).
    pub fail_after_store: HashSet<String>,
    /// Login tokens: (user, token) → Level4 user.
    pub logins: BTreeMap<(String, String), pb::Level4User>,
    pub users: BTreeMap<String, pb::Level4User>,
}

#[derive(Clone)]
pub struct FakeJobServer {
    pub seen: Arc<Mutex<Seen>>,
    /// Bumped after every stored file and every event, so tests await changes.
    pub changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for FakeJobServer {
    fn default() -> FakeJobServer {
        FakeJobServer {
            seen: Arc::default(),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl FakeJobServer {
    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits until `done` holds for what the fake has seen.
    pub async fn wait_until(&self, done: impl Fn(&Seen) -> bool) {
        let mut changes = self.changes.subscribe();
        loop {
            if done(&self.seen.lock().unwrap()) {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

fn check_token<T>(request: &Request<T>) -> Result<(), Status> {
    let expected = format!("Bearer {TOKEN}");
    match request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some(value) if value == expected => Ok(()),
        _ => Err(Status::unauthenticated("bad backend token")),
    }
}

#[tonic::async_trait]
impl ReleaseService for FakeJobServer {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::Level4User>, Status> {
        check_token(&request)?;
        let message = request.into_inner();
        let mut seen = self.seen.lock().unwrap();
        // Single use: the token is consumed.
        match seen.logins.remove(&(message.user.clone(), message.token)) {
            Some(user) => Ok(Response::new(user)),
            None => Err(Status::permission_denied("Invalid user or token")),
        }
    }

    async fn authorise(
        &self,
        request: Request<pb::AuthoriseRequest>,
    ) -> Result<Response<pb::Level4User>, Status> {
        check_token(&request)?;
        let message = request.into_inner();
        let seen = self.seen.lock().unwrap();
        seen.users
            .get(&message.user)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::permission_denied("unknown user"))
    }

    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::CreateReleaseResponse>, Status> {
        check_token(&request)?;
        let os_user = request
            .metadata()
            .get("os-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let message = request.into_inner();
        let names = message
            .files
            .iter()
            .map(|f| format!("{}:{}", f.name, f.sha256))
            .collect();
        self.seen.lock().unwrap().releases.push((
            message.release_id.clone(),
            message.workspace.clone(),
            os_user,
            names,
        ));
        Ok(Response::new(pb::CreateReleaseResponse {
            release_url: format!("https://jobs.example/releases/{}", message.release_id),
            release_id: message.release_id,
        }))
    }

    async fn upload_file(
        &self,
        request: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadFileResponse>, Status> {
        check_token(&request)?;
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument("No data uploaded"));
        };
        let Some(pb::upload_chunk::Chunk::Header(header)) = first.chunk else {
            return Err(Status::invalid_argument("header first"));
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if let Some(pb::upload_chunk::Chunk::Data(data)) = chunk.chunk {
                bytes.extend_from_slice(&data);
            }
        }
        let key = (header.release_id.clone(), header.name.clone());
        let mut seen = self.seen.lock().unwrap();
        seen.upload_calls += 1;
        if seen.fail_before_store.remove(&header.name) {
            return Err(Status::unavailable("job server restarting"));
        }
        if hex::encode(Sha256::digest(&bytes)) != header.sha256 || bytes.len() as u64 != header.size
        {
            return Err(Status::invalid_argument(
                "Contents of uploaded file does not match the file which a review was requested for",
            ));
        }
        if seen.stored.contains_key(&key) {
            return Ok(Response::new(pb::UploadFileResponse {
                file_id: header.name,
                already_uploaded: true,
            }));
        }
        seen.stored.insert(key.clone(), bytes);
        *seen.store_count.entry(key).or_default() += 1;
        let lose_reply = seen.fail_after_store.remove(&header.name);
        drop(seen);
        self.bump();
        if lose_reply {
            return Err(Status::unavailable("connection reset"));
        }
        Ok(Response::new(pb::UploadFileResponse {
            file_id: header.name,
            already_uploaded: false,
        }))
    }

    async fn notify_event(
        &self,
        request: Request<pb::AirlockEvent>,
    ) -> Result<Response<pb::NotifyEventResponse>, Status> {
        check_token(&request)?;
        self.seen.lock().unwrap().events.push(request.into_inner());
        self.bump();
        Ok(Response::new(pb::NotifyEventResponse {
            status: "ok".to_string(),
            message: String::new(),
        }))
    }
}

/// A running fake job server and a link to it.
pub struct Running {
    pub fake: FakeJobServer,
    pub addr: SocketAddr,
    pub link: JobServer,
    pub endpoint: String,
    pub ca_pem: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts the fake on `127.0.0.1:0` with a TLS certificate minted for `localhost`.
pub async fn start() -> Running {
    let ca = Ca::new("test CA").unwrap();
    let server = ca.issue_server(&["localhost"]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = FakeJobServer::default();
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .tls_config(tls::tls_server_from_pem(&server.cert_pem, &server.key_pem).unwrap())
        .unwrap()
        .add_service(ReleaseServiceServer::new(fake.clone()));
    tokio::spawn(
        router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = shutdown_rx.await;
        }),
    );
    let endpoint = format!("https://localhost:{}", addr.port());
    let client_tls = tls::tls_client_from_pem(ca.cert_pem()).unwrap();
    let link = JobServer::connect_lazy(&endpoint, Some(client_tls), TOKEN).unwrap();
    Running {
        fake,
        addr,
        link,
        endpoint,
        ca_pem: ca.cert_pem().to_string(),
        shutdown: Some(shutdown),
    }
}

/// A Level 4 user for the fake.
pub fn level4(username: &str, workspaces: &[&str], output_checker: bool) -> pb::Level4User {
    pb::Level4User {
        username: username.to_string(),
        fullname: format!("{username} fullname"),
        workspaces: workspaces
            .iter()
            .map(|ws| {
                (
                    ws.to_string(),
                    pb::WorkspaceAccess {
                        project_details: Some(pb::ProjectDetails {
                            name: "project".to_string(),
                            ongoing: true,
                            orgs: vec!["org".to_string()],
                        }),
                        archived: false,
                    },
                )
            })
            .collect(),
        copiloted_workspaces: Default::default(),
        output_checker,
        readonly_access: false,
    }
}

/// Writes a medium-privacy workspace with the given outputs and a manifest for them.
pub fn write_workspace(root: &std::path::Path, workspace: &str, files: &[(&str, &[u8])]) {
    let ws = root.join(workspace);
    std::fs::create_dir_all(ws.join("metadata")).unwrap();
    let mut outputs = serde_json::Map::new();
    for (path, bytes) in files {
        let full = ws.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, bytes).unwrap();
        outputs.insert(
            path.to_string(),
            serde_json::json!({
                "level": "moderately_sensitive", "job_id": "job1", "job_request": "rap1",
                "action": "analyse", "repo": "https://github.com/o/r", "commit": "abc123",
                "size": bytes.len(), "timestamp": 1700000000.0,
                "content_hash": hex::encode(Sha256::digest(bytes)), "excluded": false,
                "message": null, "row_count": 2, "col_count": 2, "user": "author"
            }),
        );
    }
    let manifest = serde_json::json!({"workspace": workspace, "repo": null, "outputs": outputs});
    std::fs::write(ws.join("metadata/manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(ws.join("metadata/analyse.log"), "log line\n").unwrap();
}
