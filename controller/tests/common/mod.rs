//! The test harness: a real controller (in-process `server::run` on loopback, or the built
//! binary) with certificates minted in the test, a real git repository holding the study, and a
//! test agent speaking the real agent protocol over mutual TLS.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rap_controller::config::{BackendConfig, ClientConfig, Config, TlsConfig};
use rap_controller::rpc::auth::token_hash;
use rap_controller::server::{Listeners, ServeError, run};
use rap_proto::certs::Ca;
use rap_proto::identity::BackendName;
use rap_proto::pb::rap::v1 as pb;
use rap_proto::tls::TlsPem;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(20);
pub const CLIENT_TOKEN: &str = "client-token-for-test-only";
pub const TPP_TOKEN: &str = "tpp-token-for-test-only";
pub const ADMIN_TOKEN: &str = "admin-token-for-test-only";

pub const PROJECT_YAML: &str = r#"version: '4.0'
actions:
  gen:
    run: ehrql:v1 generate-dataset analysis/dataset_definition.py --output output/dataset.csv.gz
    outputs:
      highly_sensitive:
        dataset: output/dataset.csv.gz
  p1:
    run: python:v2 analysis/p1.py
    needs: [gen]
    outputs:
      moderately_sensitive:
        table: output/p1.csv
  p2:
    run: python:v2 analysis/p2.py
    needs: [gen]
    outputs:
      moderately_sensitive:
        table: output/p2.csv
  analyse:
    run: python:v2 analysis/analyse.py
    needs: [p1, p2]
    outputs:
      moderately_sensitive:
        table: output/analyse.csv
  solo:
    run: python:v2 analysis/solo.py
    outputs:
      moderately_sensitive:
        table: output/solo.csv
"#;

/// Run git in `dir`, returning stdout.
pub async fn git(dir: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A study repository with one commit on `main`; returns its head.
pub async fn make_repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch", "main"]).await;
    std::fs::write(dir.join("README.md"), "study\n").unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    git(dir, &["add", "."]).await;
    git(dir, &["commit", "--quiet", "-m", "study"]).await;
    git(dir, &["rev-parse", "HEAD"]).await
}

/// Everything a controller needs on disk.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub agent_pems: Vec<(String, TlsPem)>,
    pub config: Config,
    /// The study repository and its head commit.
    pub repo: PathBuf,
    pub commit: String,
}

impl Setup {
    pub async fn new(configure: impl FnOnce(&mut Config)) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test-ca").unwrap();
        let ca_paths = ca.pem().write_pem(dir.path(), "ca").unwrap();
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"])
            .unwrap()
            .write_pem(dir.path(), "controller")
            .unwrap();
        let mut agent_pems = Vec::new();
        for backend in ["test", "tpp"] {
            let pem = ca.issue_agent(&BackendName::new(backend).unwrap()).unwrap();
            agent_pems.push((
                backend.to_string(),
                TlsPem {
                    ca: ca.cert_pem().to_string(),
                    cert: pem.cert_pem.clone(),
                    key: pem.key_pem.clone(),
                },
            ));
        }
        let repo = dir.path().join("study");
        let commit = make_repo(&repo, &[("project.yaml", PROJECT_YAML)]).await;
        let mut config = Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".into(),
            agent_listen: "127.0.0.1:0".into(),
            tls: TlsConfig {
                ca: ca_paths.cert.clone(),
                cert: server.cert.clone(),
                key: server.key.clone(),
            },
            allowed_github_orgs: vec!["opensafely".into()],
            allow_local_repos: true,
            git_proxy: None,
            actions_url: dir.path().join("actions").display().to_string(),
            docker_registry: "ghcr.io/opensafely-core".into(),
            scheduler_interval_ms: 200,
            max_task_attempts: 3,
            agent_lease_grace_s: 300,
            change_log_retention_s: 30 * 24 * 3600,
            admin_token_sha256: token_hash(ADMIN_TOKEN),
            projects_with_event_level_access: vec![],
            clients: vec![
                ClientConfig {
                    name: "jobserver".into(),
                    token_sha256: token_hash(CLIENT_TOKEN),
                    backends: vec!["test".into()],
                },
                ClientConfig {
                    name: "tpp-only".into(),
                    token_sha256: token_hash(TPP_TOKEN),
                    backends: vec!["tpp".into()],
                },
            ],
            backends: vec![
                BackendConfig::with_defaults("test"),
                BackendConfig::with_defaults("tpp"),
            ],
        };
        configure(&mut config);
        Setup {
            dir,
            ca_pem: ca.cert_pem().to_string(),
            agent_pems,
            config,
            repo,
            commit,
        }
    }

    pub fn repo_url(&self) -> String {
        self.repo.display().to_string()
    }

    pub fn agent_pem(&self, backend: &str) -> TlsPem {
        self.agent_pems
            .iter()
            .find(|(b, _)| b == backend)
            .map(|(_, pem)| pem.clone())
            .unwrap()
    }
}

/// A controller running in this process.
pub struct Controller {
    pub rap_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl Controller {
    pub async fn start(setup: &Setup) -> Controller {
        let rap = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rap_addr = rap.local_addr().unwrap();
        let agent_addr = agent.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(run(setup.config.clone(), Listeners { rap, agent }, async {
            let _ = stopped.await;
        }));
        Controller {
            rap_addr,
            agent_addr,
            stop: Some(stop),
            join: Some(join),
        }
    }

    /// Shut down cleanly and wait for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            tokio::time::timeout(WAIT, join)
                .await
                .expect("controller stops")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn rap_client(
    ca_pem: &str,
    addr: SocketAddr,
) -> pb::rap_service_client::RapServiceClient<Channel> {
    let tls = rap_proto::tls::tls_client_from_pem(ca_pem).unwrap();
    let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::rap_service_client::RapServiceClient::new(channel)
}

pub async fn admin_client(
    ca_pem: &str,
    addr: SocketAddr,
) -> pb::admin_service_client::AdminServiceClient<Channel> {
    let tls = rap_proto::tls::tls_client_from_pem(ca_pem).unwrap();
    let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::admin_service_client::AdminServiceClient::new(channel)
}

pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn submit_request(setup: &Setup, rap_id: &str, actions: &[&str]) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        rap_id: rap_id.into(),
        backend: "test".into(),
        workspace: "ws".into(),
        repo_url: setup.repo_url(),
        branch: "main".into(),
        commit: setup.commit.clone(),
        database_name: "default".into(),
        requested_actions: actions.iter().map(|a| a.to_string()).collect(),
        codelists_ok: true,
        force_run_dependencies: false,
        created_by: "alice".into(),
        project: "proj".into(),
        orgs: vec!["org".into()],
        analysis_scope: None,
    }
}

/// The jobs of a request, by action.
pub async fn jobs(
    client: &mut pb::rap_service_client::RapServiceClient<Channel>,
    rap_id: &str,
) -> Vec<pb::Job> {
    client
        .get_job_status(authed(
            CLIENT_TOKEN,
            pb::GetJobStatusRequest {
                rap_ids: vec![rap_id.into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs
}

/// Watch from the start until `action` of `rap_id` has `code`; returns every change seen for
/// that job (in order).
pub async fn wait_for_code(
    client: &mut pb::rap_service_client::RapServiceClient<Channel>,
    rap_id: &str,
    action: &str,
    code: pb::StatusCode,
) -> Vec<pb::Job> {
    let mut stream = client
        .watch_jobs(authed(
            CLIENT_TOKEN,
            pb::WatchJobsRequest { after_cursor: 0 },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let result = tokio::time::timeout(WAIT, async {
        while let Some(change) = stream.message().await.unwrap() {
            let job = change.job.unwrap();
            if job.rap_id == rap_id && job.action == action {
                let done = job.status_code == code as i32;
                seen.push(job);
                if done {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "{action} never reached {code:?}; saw {:?}",
        seen.iter()
            .map(|j| pb::StatusCode::try_from(j.status_code).unwrap())
            .collect::<Vec<_>>()
    );
    seen
}

/// A test agent: the real protocol over mutual TLS, driven step by step.
pub struct TestAgent {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ControllerMessage>,
    /// Messages received but not yet consumed.
    pending: VecDeque<pb::ControllerMessage>,
    next_update_id: u64,
}

impl TestAgent {
    pub async fn connect(pem: TlsPem, addr: SocketAddr, agent_id: &str) -> TestAgent {
        Self::try_connect(pem, addr, agent_id).await.unwrap()
    }

    pub async fn try_connect(
        pem: TlsPem,
        addr: SocketAddr,
        agent_id: &str,
    ) -> Result<TestAgent, tonic::Status> {
        let tls = rap_proto::tls::mtls_client_from_pem(&pem).unwrap();
        let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::AgentMessage {
            message: Some(pb::agent_message::Message::Hello(pb::Hello {
                agent_id: agent_id.into(),
                job_capacity: 2,
                db_job_capacity: 1,
                version: "test".into(),
            })),
        })
        .await
        .unwrap();
        let inbound = client
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(TestAgent {
            tx,
            inbound,
            pending: VecDeque::new(),
            next_update_id: 1,
        })
    }

    async fn receive(&mut self) -> pb::ControllerMessage {
        if let Some(message) = self.pending.pop_front() {
            return message;
        }
        tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("a message from the controller")
            .expect("stream ok")
            .expect("stream open")
    }

    /// The next task (revocations and acks in between are kept for later).
    pub async fn next_task(&mut self) -> pb::Task {
        let mut skipped = Vec::new();
        let task = loop {
            let message = self.receive().await;
            match message.message {
                Some(pb::controller_message::Message::Task(task)) => break task,
                _ => skipped.push(message),
            }
        };
        for message in skipped.into_iter().rev() {
            self.pending.push_front(message);
        }
        task
    }

    /// The next revocation.
    pub async fn next_revoke(&mut self) -> pb::Revoke {
        let mut skipped = Vec::new();
        let id = loop {
            let message = self.receive().await;
            match message.message {
                Some(pb::controller_message::Message::Revoke(revoke)) => break revoke,
                _ => skipped.push(message),
            }
        };
        for message in skipped.into_iter().rev() {
            self.pending.push_front(message);
        }
        id
    }

    /// Send an update with an explicit id and wait for its acknowledgement.
    pub async fn send_update(&mut self, update: pb::TaskUpdate) {
        let (task_id, update_id) = (update.task_id.clone(), update.update_id);
        self.tx
            .send(pb::AgentMessage {
                message: Some(pb::agent_message::Message::Update(update)),
            })
            .await
            .unwrap();
        let mut skipped = Vec::new();
        loop {
            let message = self.receive().await;
            match &message.message {
                Some(pb::controller_message::Message::Ack(ack))
                    if ack.task_id == task_id && ack.update_id == update_id =>
                {
                    break;
                }
                _ => skipped.push(message),
            }
        }
        for message in skipped.into_iter().rev() {
            self.pending.push_front(message);
        }
    }

    /// Report a stage (and results when complete) with the next update id.
    pub async fn report(
        &mut self,
        task_id: &str,
        stage: pb::ExecutorState,
        complete: bool,
        results: Option<pb::RunJobResults>,
    ) {
        let update_id = self.next_update_id;
        self.next_update_id += 1;
        self.send_update(update(task_id, update_id, stage, complete, results))
            .await;
    }

    /// Run a task to a normal finish with the given exit code.
    pub async fn run_to_exit(&mut self, task_id: &str, exit_code: i32) {
        self.report(task_id, pb::ExecutorState::Preparing, false, None)
            .await;
        self.report(task_id, pb::ExecutorState::Executing, false, None)
            .await;
        self.report(
            task_id,
            pb::ExecutorState::Finalized,
            true,
            Some(pb::RunJobResults {
                exit_code: Some(exit_code),
                ..Default::default()
            }),
        )
        .await;
    }
}

pub fn update(
    task_id: &str,
    update_id: u64,
    stage: pb::ExecutorState,
    complete: bool,
    results: Option<pb::RunJobResults>,
) -> pb::TaskUpdate {
    pb::TaskUpdate {
        update_id,
        task_id: task_id.into(),
        stage: stage as i32,
        complete,
        timestamp_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64,
        results: results.map(pb::task_update::Results::Job),
        trace_context: Default::default(),
    }
}

pub fn job_definition(task: &pb::Task) -> &pb::JobDefinition {
    match task.definition.as_ref().unwrap() {
        pb::task::Definition::Job(job) => job,
        other => panic!("not a job task: {other:?}"),
    }
}

pub fn rap_error(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("rap-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}
