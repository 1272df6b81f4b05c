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

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use rap_proto::pb::rap::v1::agent_service_client::AgentServiceClient;
use rap_proto::pb::rap::v1::agent_service_server::{AgentService, AgentServiceServer};
use rap_proto::pb::rap::v1::{AgentMessage, ControllerMessage, Revoke, controller_message};
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

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

/// The in-test OTLP receiver: forwards every export request to the test.
struct Receiver {
    exports: mpsc::Sender<ExportTraceServiceRequest>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.exports
            .send(request.into_inner())
            .await
            .map_err(|_| Status::unavailable("test receiver gone"))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

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

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "service.name")
            .and_then(|attribute| attribute.value.as_ref())
            .and_then(|value| match &value.value {
                Some(any_value::Value::StringValue(name)) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                });
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_reaches_the_called_component_and_a_stored_job_in_one_trace() {
    let (exports_tx, mut exports) = mpsc::channel(64);
    let collector = serve(
        Server::builder().add_service(TraceServiceServer::new(Receiver {
            exports: exports_tx,
        })),
    )
    .await;
    let otlp = format!("http://{}", collector.addr);

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
    let mut received: Vec<ReceivedSpan> = Vec::new();
    while !wanted
        .iter()
        .all(|name| received.iter().any(|span| span.name == *name))
    {
        let export = timeout(WAIT, exports.recv())
            .await
            .unwrap_or_else(|_| panic!("spans missing; received so far: {received:#?}"))
            .unwrap();
        received.extend(flatten(export));
    }
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
    assert_eq!(submit.trace_id.len(), 16);
    assert_eq!(
        handle.trace_id, submit.trace_id,
        "one trace across the call"
    );
    assert_eq!(
        dispatch.trace_id, submit.trace_id,
        "one trace across the stored job"
    );
    assert_eq!(
        handle.parent_span_id, submit.span_id,
        "the handler is the caller's child"
    );
    assert_eq!(
        dispatch.parent_span_id, handle.span_id,
        "resumed under the handler's span"
    );
    assert!(
        submit.parent_span_id.is_empty(),
        "the caller's span is the root"
    );

    jobserver_telemetry.shutdown().await.unwrap();
    controller_telemetry.shutdown().await.unwrap();
    controller_server.stop().await;
    collector.stop().await;
}
