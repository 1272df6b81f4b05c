//! Transport tests of the agent link's TLS: a real tonic server on 127.0.0.1:0 with certificates
//! minted here, a tiny `AgentService` whose handler replies with the backend it read from the
//! peer certificate (in a `Revoke`'s task id, a test-only trick), and real clients.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use rap_proto::certs::{Ca, CertifiedPem, Leaf, Validity};
use rap_proto::identity::{self, BackendName};
use rap_proto::pb::rap::v1::agent_service_client::AgentServiceClient;
use rap_proto::pb::rap::v1::agent_service_server::{AgentService, AgentServiceServer};
use rap_proto::pb::rap::v1::{
    AgentMessage, ControllerMessage, Hello, Revoke, agent_message, controller_message,
};
use rap_proto::tls::{self, TlsFiles, TlsPem};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{ClientTlsConfig, Endpoint, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

/// Replies to `Connect` with one `Revoke` whose task id is the caller's backend, and reports
/// every identified caller on `seen`.
struct EchoIdentity {
    seen: mpsc::Sender<BackendName>,
    /// Read the backend that `identity::require_agent` recorded instead of the certificate.
    from_interceptor: bool,
}

#[tonic::async_trait]
impl AgentService for EchoIdentity {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let backend = if self.from_interceptor {
            identity::authenticated_backend(&request)?.clone()
        } else {
            identity::backend_from_request(&request)
                .map_err(|error| identity::unauthenticated(&error))?
        };
        self.seen
            .send(backend.clone())
            .await
            .map_err(|_| Status::internal("test receiver gone"))?;
        let reply = ControllerMessage {
            message: Some(controller_message::Message::Revoke(Revoke {
                task_id: backend.to_string(),
                ..Default::default()
            })),
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(reply)))))
    }
}

/// A running server; dropping it without `stop` leaves the task to the runtime's shutdown.
struct TestServer {
    addr: SocketAddr,
    seen: mpsc::Receiver<BackendName>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    async fn start(tls: ServerTlsConfig) -> TestServer {
        TestServer::start_with(tls, false).await
    }

    /// Like `start`, with the service behind `identity::require_agent`.
    async fn start_behind_interceptor(tls: ServerTlsConfig) -> TestServer {
        TestServer::start_with(tls, true).await
    }

    async fn start_with(tls: ServerTlsConfig, from_interceptor: bool) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::channel(16);
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let service = EchoIdentity {
            seen: seen_tx,
            from_interceptor,
        };
        let mut builder = tonic::transport::Server::builder().tls_config(tls).unwrap();
        let router = if from_interceptor {
            builder.add_service(AgentServiceServer::with_interceptor(
                service,
                identity::require_agent,
            ))
        } else {
            builder.add_service(AgentServiceServer::new(service))
        };
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                let _ = shutdown_rx.await;
            },
        ));
        TestServer {
            addr,
            seen,
            shutdown,
            task,
        }
    }

    /// Asserts that no handler has identified anyone so far.
    fn assert_nobody_seen(&mut self) {
        assert!(self.seen.try_recv().is_err(), "a handler ran");
    }

    async fn stop(self) {
        self.shutdown.send(()).unwrap();
        timeout(WAIT, self.task).await.unwrap().unwrap().unwrap();
    }
}

struct Pki {
    ca: Ca,
    server: CertifiedPem,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("test CA").unwrap();
        let server = ca.issue_server(&["controller.test"]).unwrap();
        Pki { ca, server }
    }

    fn mtls_server(&self) -> ServerTlsConfig {
        tls::mtls_server_from_pem(&TlsPem {
            ca: self.ca.cert_pem().to_owned(),
            cert: self.server.cert_pem.clone(),
            key: self.server.key_pem.clone(),
        })
        .unwrap()
    }

    fn client_with(&self, identity: &CertifiedPem) -> ClientTlsConfig {
        tls::mtls_client_from_pem(&TlsPem {
            ca: self.ca.cert_pem().to_owned(),
            cert: identity.cert_pem.clone(),
            key: identity.key_pem.clone(),
        })
        .unwrap()
    }
}

fn backend(name: &str) -> BackendName {
    BackendName::new(name).unwrap()
}

/// Opens `Connect`, says hello and returns the task id of the first reply: the backend the
/// server saw. Every failure (connect, handshake, status) becomes `Err`.
async fn call(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<String, String> {
    let attempt = async {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|error| error.to_string())?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| error.to_string())?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| format!("{error:?}"))?;
        let hello = AgentMessage {
            message: Some(agent_message::Message::Hello(Hello {
                agent_id: "agent-1".to_owned(),
                job_capacity: 1,
                db_job_capacity: 1,
                version: "test".to_owned(),
            })),
        };
        let mut replies = AgentServiceClient::new(channel)
            .connect(tokio_stream::iter([hello]))
            .await
            .map_err(|status| format!("{status:?}"))?
            .into_inner();
        match replies
            .message()
            .await
            .map_err(|status| format!("{status:?}"))?
        {
            Some(ControllerMessage {
                message: Some(controller_message::Message::Revoke(revoke)),
            }) => Ok(revoke.task_id),
            other => Err(format!("unexpected reply {other:?}")),
        }
    };
    timeout(WAIT, attempt).await.expect("the call hung")
}

/// Asserts that the call failed in the TLS layer for the expected reason (a rustls alert or
/// verification error name), not for some unrelated fault.
fn assert_refused(result: &Result<String, String>, reason: &str) {
    match result {
        Ok(backend) => panic!("accepted as {backend}; expected refusal with {reason}"),
        Err(error) => assert!(error.contains(reason), "expected {reason} in {error}"),
    }
}

#[tokio::test]
async fn valid_agent_certificate_is_accepted_and_handler_sees_its_backend() {
    let pki = Pki::new();
    let mut server = TestServer::start(pki.mtls_server()).await;
    let agent = pki.ca.issue_agent(&backend("tpp")).unwrap();

    let seen_by_client = call(server.addr, Some(pki.client_with(&agent))).await;

    assert_eq!(seen_by_client, Ok("tpp".to_owned()));
    let seen_by_handler = timeout(WAIT, server.seen.recv()).await.unwrap();
    assert_eq!(seen_by_handler, Some(backend("tpp")));
    server.stop().await;
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let mut server = TestServer::start(pki.mtls_server()).await;
    let no_identity = tls::tls_client_from_pem(pki.ca.cert_pem()).unwrap();

    let result = call(server.addr, Some(no_identity)).await;

    assert_refused(&result, "CertificateRequired");
    server.assert_nobody_seen();
    // The server is still up for a well-behaved agent: the refusal was about the certificate.
    let agent = pki.ca.issue_agent(&backend("emis")).unwrap();
    assert_eq!(
        call(server.addr, Some(pki.client_with(&agent))).await,
        Ok("emis".to_owned())
    );
    server.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let mut server = TestServer::start(pki.mtls_server()).await;
    let other_ca = Ca::new("another CA").unwrap();
    let impostor = other_ca.issue_agent(&backend("tpp")).unwrap();

    let result = call(server.addr, Some(pki.client_with(&impostor))).await;

    assert_refused(&result, "UnknownCA");
    server.assert_nobody_seen();
    let agent = pki.ca.issue_agent(&backend("tpp")).unwrap();
    assert_eq!(
        call(server.addr, Some(pki.client_with(&agent))).await,
        Ok("tpp".to_owned())
    );
    server.stop().await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let pki = Pki::new();
    let mut server = TestServer::start(pki.mtls_server()).await;
    let expired_leaf = Leaf::Agent {
        backend: backend("tpp"),
    };
    let expired = pki
        .ca
        .issue(
            &expired_leaf,
            Validity::expired(Duration::from_secs(7 * 24 * 3600)),
        )
        .unwrap();

    let result = call(server.addr, Some(pki.client_with(&expired))).await;

    assert_refused(&result, "CertificateExpired");
    server.assert_nobody_seen();
    let agent = pki.ca.issue_agent(&backend("tpp")).unwrap();
    assert_eq!(
        call(server.addr, Some(pki.client_with(&agent))).await,
        Ok("tpp".to_owned())
    );
    server.stop().await;
}

#[tokio::test]
async fn plain_tcp_client_is_refused() {
    let pki = Pki::new();
    let mut server = TestServer::start(pki.mtls_server()).await;

    let result = call(server.addr, None).await;

    assert!(result.is_err(), "{result:?}");
    server.assert_nobody_seen();
    server.stop().await;
}

#[tokio::test]
async fn generic_client_certificate_passes_tls_but_is_not_an_agent() {
    let pki = Pki::new();
    let mut server = TestServer::start(pki.mtls_server()).await;
    let operator = pki.ca.issue_client("operator").unwrap();

    let result = call(server.addr, Some(pki.client_with(&operator))).await;

    let error = result.unwrap_err();
    assert!(error.contains("Unauthenticated"), "{error}");
    assert!(error.contains("names no backend"), "{error}");
    server.assert_nobody_seen();
    server.stop().await;
}

#[tokio::test]
async fn token_server_asks_for_no_certificate_and_handler_finds_none() {
    let pki = Pki::new();
    let plain_tls = tls::tls_server_from_pem(&pki.server.cert_pem, &pki.server.key_pem).unwrap();
    let mut server = TestServer::start(plain_tls).await;
    let no_identity = tls::tls_client_from_pem(pki.ca.cert_pem()).unwrap();

    let result = call(server.addr, Some(no_identity)).await;

    let error = result.unwrap_err();
    assert!(error.contains("Unauthenticated"), "{error}");
    assert!(error.contains("no client certificate"), "{error}");
    server.assert_nobody_seen();
    server.stop().await;
}

#[tokio::test]
async fn agent_refuses_a_server_certified_by_another_ca() {
    let pki = Pki::new();
    let other_ca = Ca::new("another CA").unwrap();
    let rogue = other_ca.issue_server(&["controller.test"]).unwrap();
    let rogue_tls = tls::mtls_server_from_pem(&TlsPem {
        ca: pki.ca.cert_pem().to_owned(),
        cert: rogue.cert_pem,
        key: rogue.key_pem,
    })
    .unwrap();
    let mut server = TestServer::start(rogue_tls).await;
    let agent = pki.ca.issue_agent(&backend("tpp")).unwrap();

    let result = call(server.addr, Some(pki.client_with(&agent))).await;

    assert_refused(&result, "UnknownIssuer");
    server.assert_nobody_seen();
    server.stop().await;
}

#[tokio::test]
async fn configs_load_from_files_written_by_certs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    pki.ca.pem().write_pem(dir.path(), "ca").unwrap();
    pki.server.write_pem(dir.path(), "controller").unwrap();
    // Issue the agent certificate from the CA as reloaded from disk, as `rap-controller certs`
    // does on a later run.
    let reloaded = Ca::load(dir.path(), "ca").unwrap();
    reloaded
        .issue_agent(&backend("tpp"))
        .unwrap()
        .write_pem(dir.path(), "agent")
        .unwrap();
    let files = |stem: &str| TlsFiles {
        ca: dir.path().join("ca.crt"),
        cert: dir.path().join(format!("{stem}.crt")),
        key: dir.path().join(format!("{stem}.key")),
    };
    let mut server = TestServer::start(tls::mtls_server(&files("controller")).unwrap()).await;

    let result = call(
        server.addr,
        Some(tls::mtls_client(&files("agent")).unwrap()),
    )
    .await;

    assert_eq!(result, Ok("tpp".to_owned()));
    assert_eq!(
        timeout(WAIT, server.seen.recv()).await.unwrap(),
        Some(backend("tpp"))
    );
    server.stop().await;
}

#[tokio::test]
async fn interceptor_admits_agents_and_records_their_backend() {
    let pki = Pki::new();
    let mut server = TestServer::start_behind_interceptor(pki.mtls_server()).await;
    let operator = pki.ca.issue_client("operator").unwrap();
    let agent = pki.ca.issue_agent(&backend("tpp")).unwrap();

    let refused = call(server.addr, Some(pki.client_with(&operator))).await;
    let error = refused.unwrap_err();
    assert!(error.contains("Unauthenticated"), "{error}");
    assert!(error.contains("names no backend"), "{error}");
    server.assert_nobody_seen();

    assert_eq!(
        call(server.addr, Some(pki.client_with(&agent))).await,
        Ok("tpp".to_owned())
    );
    assert_eq!(
        timeout(WAIT, server.seen.recv()).await.unwrap(),
        Some(backend("tpp"))
    );
    server.stop().await;
}
