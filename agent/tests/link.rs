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

#[tokio::test]
async fn the_agent_dials_out_runs_a_task_and_resends_unacknowledged_updates_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
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
    let (sessions_sender, mut sessions) = mpsc::channel(4);
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

    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let toml = format!(
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
"#,
        work = work.display(),
        ca = ca_path.display(),
        cert = agent.cert.display(),
        key = agent.key.display(),
    );
    let config = Config::parse(&toml, std::path::Path::new("agent.toml"), |_| None).unwrap();
    let (agent_stop, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(rap_agent::run(config, async {
        let _ = agent_stopped.await;
    }));

    // First session: Hello, then a task; acknowledge everything but the final update.
    let mut session = within(sessions.recv()).await.unwrap();
    assert_eq!(
        session.backend, "test",
        "the agent presented its certificate"
    );
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
    session
        .outbound
        .send(Ok(pb::ControllerMessage {
            message: Some(pb::controller_message::Message::Task(task.clone())),
        }))
        .await
        .unwrap();
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
    let mut session = within(sessions.recv()).await.unwrap();
    assert!(matches!(
        next_message(&mut session).await,
        pb::agent_message::Message::Hello(_)
    ));
    let resent = next_update_from(&mut session).await;
    assert_eq!(resent, final_update, "the same update, same id");
    ack(&session, &resent).await;

    // The controller resends the (finished) task on the new session: the agent reports the
    // same result again, with a new update id.
    session
        .outbound
        .send(Ok(pb::ControllerMessage {
            message: Some(pb::controller_message::Message::Task(task)),
        }))
        .await
        .unwrap();
    let again = next_update_from(&mut session).await;
    assert!(again.complete);
    assert!(again.update_id > final_update.update_id);
    assert_eq!(again.results, final_update.results);
    ack(&session, &again).await;

    let _ = agent_stop.send(());
    within(agent_task).await.unwrap().unwrap();
    let _ = server_stop.send(());
    drop(session);
    let _ = within(server_task).await;
}
