//! The real controller for tests: the built `rap-controller` binary, set up by its own `init`
//! (CA, certificates, tokens, configuration), and a protocol-level agent on its agent port
//! holding the agent certificate `init` minted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rap_proto::pb::rap::v1 as pb;
use rap_proto::tls::TlsPem;
use rap_testkit::binaries;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// How long the controller may take to start, and the agent to hear from it.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running `rap-controller serve` on an installation written by `rap-controller init`;
/// killed on drop, its log printed if the test is failing.
pub struct RealController {
    /// The directory `init` wrote.
    pub dir: PathBuf,
    /// The backend `init` configured.
    pub backend: String,
    /// The RAP API, `https://localhost:<port>`.
    pub rap_url: String,
    /// The agent service, `https://localhost:<port>`.
    pub agent_url: String,
    /// The job server's token (`client-token`).
    pub client_token: String,
    log: PathBuf,
    _child: Child,
}

impl RealController {
    /// `init --dir <dir>/controller --backend <backend> --allow-local-repos`, then `serve` on
    /// ports chosen by the kernel, returning once both listeners are bound.
    pub async fn start(dir: &Path, backend: &str) -> RealController {
        let binary = binaries::find("rap-controller").unwrap();
        let install = dir.join("controller");
        let init = Command::new(&binary)
            .arg("init")
            .arg("--dir")
            .arg(&install)
            .args(["--backend", backend, "--allow-local-repos"])
            .output()
            .await
            .unwrap();
        assert!(
            init.status.success(),
            "rap-controller init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let log = dir.join("controller.log");
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(install.join("controller.toml"))
            .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (rap, agent) = tokio::time::timeout(WAIT, async {
            let (mut rap, mut agent) = (None, None);
            while rap.is_none() || agent.is_none() {
                let Some(line) = lines.next_line().await.unwrap() else {
                    panic!(
                        "rap-controller exited before listening: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                };
                if let Some(address) = line.strip_prefix("listening on ") {
                    rap = Some(address.to_owned());
                } else if let Some(address) = line.strip_prefix("agents connect to ") {
                    agent = Some(address.to_owned());
                }
            }
            (rap.unwrap(), agent.unwrap())
        })
        .await
        .expect("rap-controller prints both addresses");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = |address: &str| address.rsplit(':').next().unwrap().to_owned();
        RealController {
            client_token: std::fs::read_to_string(install.join("client-token"))
                .unwrap()
                .trim()
                .to_owned(),
            rap_url: format!("https://localhost:{}", port(&rap)),
            agent_url: format!("https://localhost:{}", port(&agent)),
            backend: backend.to_owned(),
            dir: install,
            log,
            _child: child,
        }
    }

    /// The CA every certificate of the installation is signed by.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The agent certificate and key `init` minted for the backend, with the CA.
    pub fn agent_pem(&self) -> TlsPem {
        let read = |name: String| std::fs::read_to_string(self.dir.join(name)).unwrap();
        TlsPem {
            ca: read("ca.crt".into()),
            cert: read(format!("agent-{}.crt", self.backend)),
            key: read(format!("agent-{}.key", self.backend)),
        }
    }
}

impl Drop for RealController {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- controller log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// An agent at the protocol level: it receives tasks and reports stages and results, as the
/// real agent does, without running anything.
pub struct TestAgent {
    outbound: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ControllerMessage>,
    /// Messages received while waiting for another kind, kept in order.
    pending: VecDeque<pb::ControllerMessage>,
    next_update_id: u64,
}

impl TestAgent {
    /// Connects over mutual TLS with the backend's agent certificate and says hello.
    pub async fn connect(controller: &RealController) -> TestAgent {
        let tls = rap_proto::tls::mtls_client_from_pem(&controller.agent_pem()).unwrap();
        let channel = Channel::from_shared(controller.agent_url.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (outbound, receiver) = mpsc::channel(16);
        outbound
            .send(pb::AgentMessage {
                message: Some(pb::agent_message::Message::Hello(pb::Hello {
                    agent_id: "browser-test-agent".into(),
                    job_capacity: 4,
                    db_job_capacity: 1,
                    version: "test".into(),
                })),
            })
            .await
            .unwrap();
        let inbound = pb::agent_service_client::AgentServiceClient::new(channel)
            .connect(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        TestAgent {
            outbound,
            inbound,
            pending: VecDeque::new(),
            next_update_id: 1,
        }
    }

    /// The next message of the kind `pick` accepts; others are kept for later.
    async fn next<T>(&mut self, pick: impl Fn(&pb::ControllerMessage) -> Option<T>) -> T {
        if let Some(index) = self.pending.iter().position(|m| pick(m).is_some()) {
            let message = self.pending.remove(index).unwrap();
            return pick(&message).unwrap();
        }
        loop {
            let message = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .expect("a message from the controller")
                .expect("the agent stream is healthy")
                .expect("the agent stream is open");
            match pick(&message) {
                Some(value) => return value,
                None => self.pending.push_back(message),
            }
        }
    }

    /// The next task pushed to this agent.
    pub async fn next_task(&mut self) -> pb::Task {
        self.next(|m| match &m.message {
            Some(pb::controller_message::Message::Task(task)) => Some(task.clone()),
            _ => None,
        })
        .await
    }

    /// The id of the next task revoked from this agent.
    pub async fn next_revoke(&mut self) -> String {
        self.next(|m| match &m.message {
            Some(pb::controller_message::Message::Revoke(revoke)) => Some(revoke.task_id.clone()),
            _ => None,
        })
        .await
    }

    /// Reports a stage of a task and waits until the controller has made it durable.
    pub async fn report(
        &mut self,
        task_id: &str,
        stage: pb::ExecutorState,
        complete: bool,
        results: Option<pb::RunJobResults>,
    ) {
        let update_id = self.next_update_id;
        self.next_update_id += 1;
        let timestamp_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        self.outbound
            .send(pb::AgentMessage {
                message: Some(pb::agent_message::Message::Update(pb::TaskUpdate {
                    update_id,
                    task_id: task_id.into(),
                    stage: stage as i32,
                    complete,
                    timestamp_ns,
                    results: results.map(pb::task_update::Results::Job),
                    trace_context: Default::default(),
                })),
            })
            .await
            .unwrap();
        let task_id = task_id.to_owned();
        self.next(|m| match &m.message {
            Some(pb::controller_message::Message::Ack(ack))
                if ack.task_id == task_id && ack.update_id == update_id =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    }

    /// Reports a task finished normally with exit code 0.
    pub async fn succeed(&mut self, task_id: &str) {
        self.report(
            task_id,
            pb::ExecutorState::Finalized,
            true,
            Some(pb::RunJobResults {
                exit_code: Some(0),
                ..Default::default()
            }),
        )
        .await;
    }
}

/// The action a RUNJOB or CANCELJOB task is for.
pub fn task_action(task: &pb::Task) -> &str {
    match &task.definition {
        Some(pb::task::Definition::Job(job)) => &job.action,
        other => panic!("not a job task: {other:?}"),
    }
}
