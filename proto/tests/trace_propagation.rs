//! One trace across two "processes": a client component (the job server's role) calls a server
//! component (the controller's role) over gRPC with `traceparent` in the metadata; the server
//! stores the trace context as a job would and later resumes it. Each component has its own
//! subscriber, service name and OTLP exporter (built with `telemetry::build`), and both export
//! to an OTLP receiver running in this test on opentelemetry-proto's collector service. The test
//! asserts on the spans the receiver got.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use rap_proto::pb::rap::v1::agent_service_client::AgentServiceClient;
use rap_proto::pb::rap::v1::agent_service_server::{AgentService, AgentServiceServer};
use rap_proto::pb::rap::v1::{AgentMessage, ControllerMessage, Revoke, controller_message};
use rap_proto::testing::OtlpCollector;
use rap_proto::{telemetry, trace_context};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tracing::instrument::WithSubscriber;

const WAIT: Duration = Duration::from_secs(20);

/// The server component: handles `Connect` in a span whose parent comes from the metadata,
/// stores the trace context as the controller stores it on a job, and hands that map back to
/// the test through `stored`.
struct Controller {
    dispatch: tracing::Dispatch,
    stored: mpsc::Sender<HashMap<String, String>>,
}

#[tonic::async_trait]
impl AgentService for Controller {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let stored = self.stored.clone();
        async move {
            let span = tracing::info_span!("handle_connect");
            trace_context::set_parent_from_metadata(&span, request.metadata())
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
            async move {
                stored
                    .send(trace_context::current_map())
                    .await
                    .map_err(|_| Status::internal("test receiver gone"))?;
                let reply = ControllerMessage {
                    message: Some(controller_message::Message::Revoke(Revoke {
                        task_id: "ok".to_owned(),
                        ..Default::default()
                    })),
                };
                let stream: Self::ConnectStream = Box::pin(tokio_stream::once(Ok(reply)));
                Ok(Response::new(stream))
            }
            .instrument(span)
            .await
        }
        // The handler runs on a task tonic spawned, outside any subscriber of ours: run it under
        // this component's own subscriber, as if it were the controller process.
        .with_subscriber(self.dispatch.clone())
        .await
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.send(()).unwrap();
        timeout(WAIT, self.task).await.unwrap().unwrap().unwrap();
    }
}

async fn serve(router: tonic::transport::server::Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = shutdown_rx.await;
        },
    ));
    Running {
        addr,
        shutdown,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_reaches_the_called_component_and_a_stored_job_in_one_trace() {
    let collector = OtlpCollector::start().await.unwrap();
    let otlp = collector.endpoint().to_owned();

    let (jobserver, jobserver_telemetry) = telemetry::build("test-jobserver", Some(&otlp)).unwrap();
    let (controller, controller_telemetry) =
        telemetry::build("test-controller", Some(&otlp)).unwrap();
    assert!(jobserver_telemetry.is_exporting() && controller_telemetry.is_exporting());

    let (stored_tx, mut stored_rx) = mpsc::channel(1);
    let controller_server = serve(Server::builder().add_service(AgentServiceServer::new(
        Controller {
            dispatch: controller.clone(),
            stored: stored_tx,
        },
    )))
    .await;

    // The job server's side: a span around one call, with the context in the metadata.
    let channel = Channel::from_shared(format!("http://{}", controller_server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reply = async {
        let span = tracing::info_span!("submit_job");
        async {
            let mut client =
                AgentServiceClient::with_interceptor(channel, trace_context::interceptor);
            let mut replies = client
                .connect(tokio_stream::iter(Vec::<AgentMessage>::new()))
                .await?
                .into_inner();
            replies.message().await
        }
        .instrument(span)
        .await
    }
    .with_subscriber(jobserver.clone());
    let reply = timeout(WAIT, reply).await.unwrap().unwrap();
    assert!(reply.is_some());

    // Later, the controller resumes the trace stored on the job, e.g. when it hands the task on.
    let stored = timeout(WAIT, stored_rx.recv()).await.unwrap().unwrap();
    assert!(
        stored.contains_key(trace_context::TRACEPARENT),
        "{stored:?}"
    );
    tracing::dispatcher::with_default(&controller, || {
        let span = tracing::info_span!("dispatch_task");
        trace_context::set_parent_from_map(&span, &stored).unwrap();
        span.in_scope(|| tracing::info!("task handed to an agent"));
    });

    jobserver_telemetry.flush().await.unwrap();
    controller_telemetry.flush().await.unwrap();

    let wanted = ["submit_job", "handle_connect", "dispatch_task"];
    let received = collector
        .wait_until("the three spans", WAIT, |spans| {
            wanted
                .iter()
                .all(|name| spans.iter().any(|span| span.name == *name))
        })
        .await
        .unwrap();
    let find = |name: &str| {
        received
            .iter()
            .find(|span| span.name == name)
            .unwrap()
            .clone()
    };
    let submit = find("submit_job");
    let handle = find("handle_connect");
    let dispatch = find("dispatch_task");

    assert_eq!(submit.service, "test-jobserver");
    assert_eq!(handle.service, "test-controller");
    assert_eq!(dispatch.service, "test-controller");
    assert_eq!(submit.trace_id.len(), 32);
    assert_eq!(
        handle.trace_id, submit.trace_id,
        "one trace across the call"
    );
    assert_eq!(
        dispatch.trace_id, submit.trace_id,
        "one trace across the stored job"
    );
    assert_eq!(
        handle.parent_span_id.as_deref(),
        Some(submit.span_id.as_str()),
        "the handler is the caller's child"
    );
    assert_eq!(
        dispatch.parent_span_id.as_deref(),
        Some(handle.span_id.as_str()),
        "resumed under the handler's span"
    );
    assert!(
        submit.parent_span_id.is_none(),
        "the caller's span is the root"
    );

    jobserver_telemetry.shutdown().await.unwrap();
    controller_telemetry.shutdown().await.unwrap();
    controller_server.stop().await;
    collector.stop().await.unwrap();
}
