//! The whole agent (`rap_agent::run`) against an in-test controller endpoint over real mTLS on
//! loopback: Hello with capacity, a RUNJOB task run in real Docker, updates acknowledged, and
//! after the controller drops the stream, a reconnect that resends what was not acknowledged.

mod common;

use std::pin::Pin;

use common::*;
use futures_util::Stream;
use rap_agent::config::Config;
use rap_proto::certs::Ca;
use rap_proto::identity::BackendName;
use rap_proto::pb::rap::v1 as pb;
use rap_proto::pb::rap::v1::agent_service_server::{AgentService, AgentServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type Outbound = mpsc::Sender<Result<pb::ControllerMessage, Status>>;

/// One accepted `Connect` call: the backend its certificate names, what the agent sends, and a
/// sender for what the controller says.
struct Session {
    backend: String,
    inbound: Streaming<pb::AgentMessage>,
    outbound: Outbound,
}

struct TestController {
    sessions: mpsc::Sender<Session>,
}

#[tonic::async_trait]
impl AgentService for TestController {
    type ConnectStream =
        Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send + 'static>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let backend = rap_proto::identity::backend_from_request(&request)
            .map_err(|error| Status::unauthenticated(error.to_string()))?;
        let (outbound, receiver) = mpsc::channel(16);
        let session = Session {
            backend: backend.as_str().to_string(),
            inbound: request.into_inner(),
            outbound,
        };
        self.sessions
            .send(session)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

async fn next_message(session: &mut Session) -> pb::agent_message::Message {
    within(session.inbound.message())
        .await
        .expect("stream healthy")
        .expect("a message")
        .message
        .expect("a message body")
}

async fn next_update_from(session: &mut Session) -> pb::TaskUpdate {
    match next_message(session).await {
        pb::agent_message::Message::Update(update) => update,
        other => panic!("expected an update, got {other:?}"),
    }
}

async fn ack(session: &Session, update: &pb::TaskUpdate) {
    let message = pb::ControllerMessage {
        message: Some(pb::controller_message::Message::Ack(pb::Ack {
            task_id: update.task_id.clone(),
            update_id: update.update_id,
        })),
    };
    session.outbound.send(Ok(message)).await.unwrap();
}

/// A controller endpoint over mTLS on loopback plus the agent's certificates and configuration.
struct Harness {
    sessions: mpsc::Receiver<Session>,
    config_text: String,
    config_path: std::path::PathBuf,
    server_stop: Option<tokio::sync::oneshot::Sender<()>>,
    server_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// The agent creates its database network at start-up: one per test, removed afterwards.
    _network: NetworkGuard,
}

impl Harness {
    async fn start(dir: &std::path::Path) -> Harness {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let ca = Ca::new("test-ca").unwrap();
        let server = ca.issue_server(&["localhost"]).unwrap();
        let agent = ca
            .issue_agent(&BackendName::new("test").unwrap())
            .unwrap()
            .write_pem(&certs, "agent")
            .unwrap();
        let ca_path = certs.join("ca.crt");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sessions_sender, sessions) = mpsc::channel(4);
        let tls = rap_proto::tls::mtls_server_from_pem(&rap_proto::tls::TlsPem {
            ca: ca.cert_pem().to_string(),
            cert: server.cert_pem.clone(),
            key: server.key_pem.clone(),
        })
        .unwrap();
        let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let server_task = tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(AgentServiceServer::new(TestController {
                    sessions: sessions_sender,
                }))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = server_stopped.await;
                }),
        );
        let work = dir.join("work");
        let network = NetworkGuard::unique("rap-test-link-db");
        let config_text = format!(
            r#"
backend = "test"
agent_id = "agent-1"
work_dir = "{work}"
[controller]
endpoint = "https://localhost:{port}"
ca_cert = "{ca}"
cert = "{cert}"
key = "{key}"
[docker]
registry = "rap.test"
allowed_images = ["busybox"]
user = "1000:1000"
[jobs]
capacity = 3
db_capacity = 1
[git]
allow_local_repos = true
[database]
network = "{network}"
"#,
            network = network.0,
            work = work.display(),
            ca = ca_path.display(),
            cert = agent.cert.display(),
            key = agent.key.display(),
        );
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, &config_text).unwrap();
        Harness {
            sessions,
            config_text,
            config_path,
            server_stop: Some(server_stop),
            server_task,
            _network: network,
        }
    }

    async fn next_session(&mut self) -> Session {
        within(self.sessions.recv())
            .await
            .expect("the agent connects")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        let _ = within(self.server_task).await;
    }
}

async fn send_task(session: &Session, task: pb::Task) {
    session
        .outbound
        .send(Ok(pb::ControllerMessage {
            message: Some(pb::controller_message::Message::Task(task)),
        }))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_agent_dials_out_runs_a_task_and_resends_unacknowledged_updates_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = Harness::start(dir.path()).await;
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let config = Config::parse(
        &harness.config_text,
        std::path::Path::new("agent.toml"),
        |_| None,
    )
    .unwrap();
    let (agent_stop, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(rap_agent::run(config, async {
        let _ = agent_stopped.await;
    }));

    // First session: Hello, then a task; acknowledge everything but the final update.
    let mut session = harness.next_session().await;
    assert_eq!(
        session.backend, "test",
        "the agent presented its certificate"
    );
    // Before dialling out, the agent created its database network: one, internal.
    let networks = networks_named(&harness._network.0).await;
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert_eq!(networks[0].internal, Some(true));
    assert_eq!(networks[0].driver.as_deref(), Some("bridge"));
    match next_message(&mut session).await {
        pb::agent_message::Message::Hello(hello) => {
            assert_eq!(hello.agent_id, "agent-1");
            assert_eq!(hello.job_capacity, 3);
            assert_eq!(hello.db_job_capacity, 1);
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    let job = new_job(&unique_id("link"), &repo, &commit, "echo linked");
    let task = runjob_task(&job);
    send_task(&session, task.clone()).await;
    let final_update = loop {
        let update = next_update_from(&mut session).await;
        assert_eq!(update.task_id, job.task_id);
        if update.complete {
            break update;
        }
        ack(&session, &update).await;
    };
    assert_eq!(stage(&final_update), pb::ExecutorState::Finalized);

    // The controller drops the stream before acknowledging the final update.
    drop(session);
    let mut session = harness.next_session().await;
    assert!(matches!(
        next_message(&mut session).await,
        pb::agent_message::Message::Hello(_)
    ));
    let resent = next_update_from(&mut session).await;
    assert_eq!(resent, final_update, "the same update, same id");
    ack(&session, &resent).await;

    // The controller resends the (finished) task on the new session: the agent reports the
    // same result again, with a new update id.
    send_task(&session, task).await;
    let again = next_update_from(&mut session).await;
    assert!(again.complete);
    assert!(again.update_id > final_update.update_id);
    assert_eq!(again.results, final_update.results);
    ack(&session, &again).await;

    let _ = agent_stop.send(());
    within(agent_task).await.unwrap().unwrap();
    drop(session);
    harness.stop().await;
}

/// A `rap-agent serve` process, killed with SIGKILL on drop if still running.
struct AgentProcess(std::process::Child);

impl AgentProcess {
    fn spawn(config: &std::path::Path) -> AgentProcess {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rap-agent"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        AgentProcess(child)
    }

    /// SIGKILL: no clean-up of any kind runs.
    fn kill_9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_agent_process_killed_mid_job_recovers_and_the_job_finishes_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = Harness::start(dir.path()).await;
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let mut job = new_job(
        &unique_id("kill9"),
        &repo,
        &commit,
        "mkdir -p output && echo started >> output/starts.txt \\
         && while [ ! -f output/go.txt ]; do sleep 0.05; done",
    );
    // The test's go-ahead file is an output too, so nothing is left unmatched.
    job.output_spec = vec![output(
        "output/*.txt",
        rap_agent::job::Privacy::HighlySensitive,
    )];
    let task = runjob_task(&job);
    let _container = ContainerGuard::for_job(&job);

    let mut agent = AgentProcess::spawn(&harness.config_path);
    let mut session = harness.next_session().await;
    assert!(matches!(
        next_message(&mut session).await,
        pb::agent_message::Message::Hello(_)
    ));
    send_task(&session, task.clone()).await;
    let executing = loop {
        let update = next_update_from(&mut session).await;
        ack(&session, &update).await;
        if stage(&update) == pb::ExecutorState::Executing {
            break update;
        }
    };
    agent.kill_9();
    drop(session);

    // The restarted process adopts the running container: its first report for the resent
    // task is EXECUTING with the same start time, not a new preparation.
    let _agent = AgentProcess::spawn(&harness.config_path);
    let mut session = harness.next_session().await;
    assert!(matches!(
        next_message(&mut session).await,
        pb::agent_message::Message::Hello(_)
    ));
    send_task(&session, task).await;
    // Updates whose acks the killed process never read come again, unchanged; the controller
    // skips them by id. The first new one is the adopted runner's.
    let adopted = loop {
        let update = next_update_from(&mut session).await;
        ack(&session, &update).await;
        if update.update_id > executing.update_id {
            break update;
        }
        assert_eq!(
            stage(&update),
            pb::ExecutorState::Executing,
            "a resent update"
        );
        assert_eq!(update, executing);
    };
    assert_eq!(stage(&adopted), pb::ExecutorState::Executing);
    assert_eq!(adopted.timestamp_ns, executing.timestamp_ns);
    assert!(adopted.update_id > executing.update_id);

    let layout = rap_agent::layout::Layout::new(dir.path().join("work"));
    std::fs::write(layout.job_dir(&job).join("output/go.txt"), "").unwrap();
    let mut stages = Vec::new();
    let last = loop {
        let update = next_update_from(&mut session).await;
        ack(&session, &update).await;
        stages.push(stage(&update));
        if update.complete {
            break update;
        }
    };
    assert_eq!(
        stages,
        vec![pb::ExecutorState::Finalizing, pb::ExecutorState::Finalized]
    );
    match last.results {
        Some(pb::task_update::Results::Job(results)) => {
            assert_eq!(results.exit_code, Some(0));
            assert_eq!(results.status_message, "Completed successfully");
        }
        other => panic!("{other:?}"),
    }
    let starts =
        std::fs::read_to_string(layout.high_workspace(&job).join("output/starts.txt")).unwrap();
    assert_eq!(starts, "started\n", "the container ran exactly once");
    drop(session);
    harness.stop().await;
}
