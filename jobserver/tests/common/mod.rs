//! Test harness: a temp store seeded with users, a project, a backend and a real git study
//! repository; an in-test `RapService` (a real gRPC peer over loopback) standing in for the
//! controller; and helpers to drive the router with `oneshot`.
#![allow(dead_code)]

pub mod browser;
pub mod controller;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use rap_jobserver::model::{Session, now};
use rap_jobserver::store::Store;
use rap_jobserver::web::{AppState, WebConfig};
use rap_jobserver::{admin, controller_link::ControllerLink, roles::Role};
use rap_proto::pb::rap::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;

pub const CONTROLLER_TOKEN: &str = "jobserver-token";

/// The in-test controller: records calls, answers as told, streams pushed job changes.
pub struct FakeRap {
    pub submits: Mutex<Vec<pb::SubmitJobRequest>>,
    /// The `traceparent` metadata of each SubmitJob call.
    pub submit_traceparents: Mutex<Vec<Option<String>>>,
    pub submit_reply: Mutex<Result<pb::SubmitJobResponse, Status>>,
    pub cancels: Mutex<Vec<pb::CancelJobRequest>>,
    pub unrecognised: Mutex<Vec<String>>,
    /// Jobs GetJobStatus answers with (those of the requests asked about).
    pub status_jobs: Mutex<Vec<pb::Job>>,
    /// When set, a watch from an older cursor ends with OUT_OF_RANGE and this resume point,
    /// as the controller answers once it has compacted its change log.
    pub compacted_through: Mutex<Option<u64>>,
    pub changes: broadcast::Sender<pb::JobChange>,
    pub watch_opened: mpsc::UnboundedSender<u64>,
}

fn check_token<T>(request: &GrpcRequest<T>) -> Result<(), Status> {
    let expected = format!("Bearer {CONTROLLER_TOKEN}");
    match request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some(value) if value == expected => Ok(()),
        _ => Err(Status::unauthenticated("Invalid token")),
    }
}

/// The gRPC face of [`FakeRap`].
pub struct FakeService(pub Arc<FakeRap>);

#[tonic::async_trait]
impl pb::rap_service_server::RapService for FakeService {
    async fn submit_job(
        &self,
        request: GrpcRequest<pb::SubmitJobRequest>,
    ) -> Result<GrpcResponse<pb::SubmitJobResponse>, Status> {
        check_token(&request)?;
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0.submit_traceparents.lock().unwrap().push(traceparent);
        self.0.submits.lock().unwrap().push(request.into_inner());
        self.0
            .submit_reply
            .lock()
            .unwrap()
            .clone()
            .map(GrpcResponse::new)
    }

    async fn cancel_job(
        &self,
        request: GrpcRequest<pb::CancelJobRequest>,
    ) -> Result<GrpcResponse<pb::CancelJobResponse>, Status> {
        check_token(&request)?;
        let request = request.into_inner();
        let count = request.actions.len() as u32;
        self.0.cancels.lock().unwrap().push(request);
        Ok(GrpcResponse::new(pb::CancelJobResponse {
            details: format!("{count} actions cancelled"),
            count,
        }))
    }

    async fn get_job_status(
        &self,
        request: GrpcRequest<pb::GetJobStatusRequest>,
    ) -> Result<GrpcResponse<pb::GetJobStatusResponse>, Status> {
        check_token(&request)?;
        let unrecognised = self.0.unrecognised.lock().unwrap().clone();
        let asked = request.into_inner().rap_ids;
        let jobs = self
            .0
            .status_jobs
            .lock()
            .unwrap()
            .iter()
            .filter(|job| asked.contains(&job.rap_id))
            .cloned()
            .collect();
        Ok(GrpcResponse::new(pb::GetJobStatusResponse {
            jobs,
            unrecognised_rap_ids: asked
                .into_iter()
                .filter(|id| unrecognised.contains(id))
                .collect(),
        }))
    }

    type WatchJobsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::JobChange, Status>>;

    async fn watch_jobs(
        &self,
        request: GrpcRequest<pb::WatchJobsRequest>,
    ) -> Result<GrpcResponse<Self::WatchJobsStream>, Status> {
        check_token(&request)?;
        let after_cursor = request.get_ref().after_cursor;
        let mut changes = self.0.changes.subscribe();
        let (tx, rx) = mpsc::channel(16);
        if let Some(through) = *self.0.compacted_through.lock().unwrap()
            && after_cursor < through
        {
            let mut status = Status::out_of_range("cursor is older than the change log keeps");
            status
                .metadata_mut()
                .insert(rap_proto::WATCH_RESUME_AFTER_KEY, through.into());
            tx.try_send(Err(status)).unwrap();
            let _ = self.0.watch_opened.send(after_cursor);
            return Ok(GrpcResponse::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ));
        }
        tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
        });
        // Subscribed before telling the test, so a change pushed afterwards is delivered.
        let _ = self.0.watch_opened.send(request.into_inner().after_cursor);
        Ok(GrpcResponse::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }

    async fn get_backend_status(
        &self,
        request: GrpcRequest<pb::GetBackendStatusRequest>,
    ) -> Result<GrpcResponse<pb::GetBackendStatusResponse>, Status> {
        check_token(&request)?;
        Ok(GrpcResponse::new(pb::GetBackendStatusResponse {
            backends: vec![pb::BackendStatus {
                data_check: None,
                slug: "test".into(),
                last_seen: Some(1_700_000_000),
                paused: Some(pb::Flag {
                    status: "on".into(),
                    since: Some(1),
                }),
                db_maintenance: Some(pb::DbMaintenance {
                    status: "off".into(),
                    since: None,
                    r#type: String::new(),
                }),
            }],
        }))
    }
}

/// Everything a web test needs.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub state: AppState,
    pub fake: Arc<FakeRap>,
    pub watch_opened: mpsc::UnboundedReceiver<u64>,
    pub repo_url: String,
    pub repo_head: String,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub backend_token: String,
}

pub const PROJECT_YAML: &str = "version: '4.0'\nactions:\n  generate:\n    run: python:v2 generate.py\n    outputs:\n      highly_sensitive:\n        data: output/data.csv\n  analyse:\n    run: python:v2 analyse.py\n    needs: [generate]\n    outputs:\n      moderately_sensitive:\n        table: output/table.csv\n";

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A real git repository with `project.yaml` on `main`; returns (file:// URL, head sha).
pub fn study_repo(root: &std::path::Path, name: &str, project_yaml: &str) -> (String, String) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("project.yaml"), project_yaml).unwrap();
    git(&dir, &["add", "project.yaml"]);
    git(&dir, &["commit", "-q", "-m", "study"]);
    let head = git(&dir, &["rev-parse", "HEAD"]);
    (format!("file://{}", dir.display()), head)
}

/// A seeded store and what a test needs to know about it.
pub struct Seeded {
    pub store: Store,
    pub backend_token: String,
    pub repo_url: String,
    pub repo_head: String,
}

/// Seeds a store under `dir`: users `dev` (ProjectDeveloper of `proj`, member of backend
/// `test`), `collab` (ProjectCollaborator, backend member), `outsider` (no membership),
/// `nobackend` (ProjectDeveloper without backends), `checker` (global OutputChecker, backend
/// member), each with password `pw`; org `org`, project `proj`, backend `test`, workspace `ws`
/// on a real repository.
pub fn seed(dir: &std::path::Path) -> Seeded {
    let store = Store::open(&dir.join("store")).unwrap();
    admin::add_org(&store, "org", "The Org").unwrap();
    admin::add_project(
        &store,
        "proj",
        "Project One",
        &["org".into()],
        "ongoing",
        None,
    )
    .unwrap();
    let backend_token = admin::add_backend(&store, "test", "Test backend").unwrap();
    for (user, global) in [
        ("dev", vec![]),
        ("collab", vec![]),
        ("outsider", vec![]),
        ("nobackend", vec![]),
        ("checker", vec![Role::OutputChecker]),
    ] {
        admin::add_user(
            &store,
            user,
            &format!("{user} name"),
            &format!("{user}@example.org"),
            "pw",
            &global,
        )
        .unwrap();
    }
    admin::set_membership(&store, "proj", "dev", &[Role::ProjectDeveloper]).unwrap();
    admin::set_membership(&store, "proj", "nobackend", &[Role::ProjectDeveloper]).unwrap();
    admin::set_membership(&store, "proj", "collab", &[Role::ProjectCollaborator]).unwrap();
    for user in ["dev", "collab", "checker"] {
        admin::add_backend_member(&store, "test", user).unwrap();
    }
    let (repo_url, repo_head) = study_repo(dir, "study", PROJECT_YAML);
    store
        .insert_workspace(&rap_jobserver::model::Workspace {
            name: "ws".into(),
            project: "proj".into(),
            repo_url: repo_url.clone(),
            branch: "main".into(),
            purpose: "testing".into(),
            is_archived: false,
            created_by: "dev".into(),
            created_at: now(),
        })
        .unwrap();
    Seeded {
        store,
        backend_token,
        repo_url,
        repo_head,
    }
}

/// The web app's state over `store`, talking to the controller through `link`.
pub fn app_state(
    store: Store,
    link: ControllerLink,
    release_storage: std::path::PathBuf,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> AppState {
    let (events, _) = broadcast::channel(64);
    AppState {
        store,
        link,
        config: Arc::new(WebConfig {
            base_url: "http://jobs.example".into(),
            jaeger_url: "http://jaeger.example".into(),
            secure_cookies: false,
            allow_file_repos: true,
            release_storage,
        }),
        events,
        shutdown,
    }
}

impl Harness {
    /// The store of [`seed`] with an in-test controller.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let Seeded {
            store,
            backend_token,
            repo_url,
            repo_head,
        } = seed(dir.path());

        let (changes, _) = broadcast::channel(64);
        let (watch_tx, watch_opened) = mpsc::unbounded_channel();
        let fake = Arc::new(FakeRap {
            submits: Mutex::new(vec![]),
            submit_traceparents: Mutex::new(vec![]),
            submit_reply: Mutex::new(Ok(pb::SubmitJobResponse {
                result: pb::SubmitResult::Success as i32,
                details: "Jobs created".into(),
                rap_id: String::new(),
                count: 2,
            })),
            cancels: Mutex::new(vec![]),
            unrecognised: Mutex::new(vec![]),
            status_jobs: Mutex::new(vec![]),
            compacted_through: Mutex::new(None),
            changes,
            watch_opened: watch_tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = pb::rap_service_server::RapServiceServer::new(FakeService(fake.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let link =
            ControllerLink::new(&format!("http://{address}"), CONTROLLER_TOKEN, None).unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let state = app_state(store.clone(), link, dir.path().join("releases"), stop_rx);
        Harness {
            dir,
            store,
            state,
            fake,
            watch_opened,
            repo_url,
            repo_head,
            stop,
            backend_token,
        }
    }

    /// A session for `username` (the sign-in flow has its own test): the cookie header and
    /// the CSRF token its forms need.
    pub fn session(&self, username: &str) -> (String, String) {
        let id = format!(
            "session-{username}-{}",
            rap_jobserver::model::RapId::generate()
        );
        let csrf = format!("csrf-{username}");
        self.store
            .put_session(
                &id,
                &Session {
                    username: username.into(),
                    csrf_token: csrf.clone(),
                    created_at: now(),
                },
            )
            .unwrap();
        (format!("rap_session={id}"), csrf)
    }

    pub async fn get(&self, path: &str, cookie: &str) -> (StatusCode, String, Vec<String>) {
        let request = Request::get(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        send(&self.state, request).await
    }

    pub async fn post(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, Vec<String>) {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = Request::post(path)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        send(&self.state, request).await
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends one request through the router; returns status, body, and the `Location` and
/// `Set-Cookie` headers (in that order, Location first when present).
pub async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, String, Vec<String>) {
    let response = rap_jobserver::web::app(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let mut headers = Vec::new();
    if let Some(location) = response.headers().get(header::LOCATION) {
        headers.push(format!("location: {}", location.to_str().unwrap()));
    }
    for cookie in response.headers().get_all(header::SET_COOKIE) {
        headers.push(format!("set-cookie: {}", cookie.to_str().unwrap()));
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

/// The flash message a redirect carries.
pub fn flash(headers: &[String]) -> Option<String> {
    headers.iter().find_map(|h| {
        let value = h.strip_prefix("set-cookie: rap_flash=")?;
        let hex_text = value.split(';').next()?;
        String::from_utf8(hex::decode(hex_text).ok()?).ok()
    })
}

/// A job as the controller would send it.
pub fn job(
    rap_id: &str,
    identifier: &str,
    action: &str,
    state: pb::State,
    code: pb::StatusCode,
) -> pb::Job {
    pb::Job {
        identifier: identifier.into(),
        rap_id: rap_id.into(),
        backend: "test".into(),
        workspace: "ws".into(),
        action: action.into(),
        requires_db: false,
        run_command: format!("python:v2 {action}.py"),
        status: state as i32,
        status_code: code as i32,
        status_message: String::new(),
        created_at: Some(1_700_000_000),
        updated_at: Some(1_700_000_100),
        started_at: Some(1_700_000_010),
        completed_at: None,
        trace_context: [(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]
        .into(),
        metrics: Some(pb::JobMetrics {
            cpu_peak: 90.0,
            cpu_mean: 40.0,
            mem_mb_peak: 512.0,
            mem_mb_mean: 256.0,
        }),
        cancelled: false,
    }
}
