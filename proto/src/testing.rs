//! An OTLP trace collector for tests (feature `testing`): a real gRPC server speaking
//! opentelemetry-proto's collector service on `127.0.0.1:0`, which keeps every span it is sent
//! so a test can point a process's exporter (`telemetry::build`, `--otlp-endpoint`) at
//! [`OtlpCollector::endpoint`] and assert on the spans that arrive.
//!
//! Waiting is event-driven: every export wakes the waiters, which re-check their condition, so
//! a test never sleeps; a wait that is not satisfied within its timeout fails with an error
//! naming what was awaited and listing what did arrive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// A span as the collector received it. Ids are lower-case hex, as in `traceparent`.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedSpan {
    /// The exporting process's `service.name` resource attribute.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Start, nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_time_unix_nano: u64,
    /// The span's attributes, values rendered as text (strings as they are, numbers in decimal).
    pub attributes: BTreeMap<String, String>,
    /// The span's events (with `tracing-opentelemetry`, the log lines emitted inside it).
    pub events: Vec<CollectedEvent>,
}

/// An event recorded on a span.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedEvent {
    /// The event's name (for a `tracing` event, its message).
    pub name: String,
    /// The event's attributes, rendered as for [`CollectedSpan::attributes`].
    pub attributes: BTreeMap<String, String>,
}

impl CollectedSpan {
    /// The attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Every string the span carries (name, attribute keys and values, event names and
    /// attributes), for asserting that something is recorded nowhere.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        let attributes = self
            .attributes
            .iter()
            .flat_map(|(key, value)| [key.as_str(), value.as_str()]);
        let events = self.events.iter().flat_map(|event| {
            std::iter::once(event.name.as_str()).chain(
                event
                    .attributes
                    .iter()
                    .flat_map(|(key, value)| [key.as_str(), value.as_str()]),
            )
        });
        std::iter::once(self.name.as_str())
            .chain(attributes)
            .chain(events)
    }
}

/// Why the collector could not start, or a wait failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// The listening socket could not be opened.
    #[error("cannot listen on 127.0.0.1:0 for the test OTLP collector")]
    Bind(#[source] std::io::Error),
    /// A wait ran out of time.
    #[error(
        "waited {timeout:?} for {awaited}, but it did not happen; received so far:\n{received}"
    )]
    Timeout {
        /// What was awaited, in words.
        awaited: String,
        /// How long was waited.
        timeout: Duration,
        /// One line per span received, for the failure message.
        received: String,
    },
    /// The server failed while running or stopping.
    #[error("the test OTLP collector failed")]
    Serve(#[source] tonic::transport::Error),
    /// The server task panicked or was cancelled.
    #[error("the test OTLP collector's task failed")]
    Task(#[source] tokio::task::JoinError),
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<CollectedSpan>>,
    arrived: Notify,
}

impl Received {
    fn spans(&self) -> MutexGuard<'_, Vec<CollectedSpan>> {
        // A test that panicked while holding the lock has failed already; its spans are intact.
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Receiver(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = flatten(request.into_inner());
        self.0.spans().extend(spans);
        self.0.arrived.notify_waiters();
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running collector; [`OtlpCollector::stop`] shuts it down (dropping it aborts the server).
pub struct OtlpCollector {
    addr: SocketAddr,
    endpoint: String,
    received: Arc<Received>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl OtlpCollector {
    /// Starts a collector on `127.0.0.1` at a free port; must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`CollectorError::Bind`] when no port can be opened.
    pub async fn start() -> Result<Self, CollectorError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(CollectorError::Bind)?;
        let addr = listener.local_addr().map_err(CollectorError::Bind)?;
        let received = Arc::new(Received::default());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let router =
            Server::builder().add_service(TraceServiceServer::new(Receiver(received.clone())));
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpIncoming::from(listener),
            async {
                let _ = shutdown_rx.await;
            },
        ));
        Ok(Self {
            addr,
            endpoint: format!("http://{addr}"),
            received,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The OTLP/gRPC endpoint to export to, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The socket address the collector listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.received.spans().clone()
    }

    /// Waits until a span named `name` has arrived and returns the first such span.
    ///
    /// # Errors
    /// [`CollectorError::Timeout`] when none arrives within `timeout`.
    pub async fn wait_for_span(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<CollectedSpan, CollectorError> {
        let spans = self
            .wait_until(&format!("a span named {name:?}"), timeout, |spans| {
                spans.iter().any(|span| span.name == name)
            })
            .await?;
        Ok(spans
            .into_iter()
            .find(|span| span.name == name)
            .expect("the condition just held"))
    }

    /// Waits until at least `count` spans have arrived in all and returns every span received.
    ///
    /// # Errors
    /// [`CollectorError::Timeout`] when fewer arrive within `timeout`.
    pub async fn wait_for_spans(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<CollectedSpan>, CollectorError> {
        self.wait_until(&format!("{count} spans"), timeout, |spans| {
            spans.len() >= count
        })
        .await
    }

    /// Waits until `condition` holds for the spans received so far and returns them;
    /// `awaited` describes the condition for the timeout's message.
    ///
    /// # Errors
    /// [`CollectorError::Timeout`] when the condition does not hold within `timeout`.
    pub async fn wait_until(
        &self,
        awaited: &str,
        timeout: Duration,
        mut condition: impl FnMut(&[CollectedSpan]) -> bool,
    ) -> Result<Vec<CollectedSpan>, CollectorError> {
        let wait = async {
            loop {
                // Register for the next export before looking, so one arriving in between
                // still wakes us.
                let arrived = self.received.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                {
                    let spans = self.received.spans();
                    if condition(&spans) {
                        return spans.clone();
                    }
                }
                arrived.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| CollectorError::Timeout {
                awaited: awaited.to_owned(),
                timeout,
                received: describe(&self.received.spans()),
            })
    }

    /// Stops the server and waits for it to finish.
    ///
    /// # Errors
    /// [`CollectorError::Serve`] or [`CollectorError::Task`] when the server failed.
    pub async fn stop(mut self) -> Result<(), CollectorError> {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may have stopped already; its result says why.
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(CollectorError::Task)?
                .map_err(CollectorError::Serve),
            None => Ok(()),
        }
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn describe(spans: &[CollectedSpan]) -> String {
    let mut text = String::new();
    for span in spans {
        let _ = writeln!(
            text,
            "  {} {:?} trace={} span={} parent={} {:?}",
            span.service,
            span.name,
            span.trace_id,
            span.span_id,
            span.parent_span_id.as_deref().unwrap_or("-"),
            span.attributes
        );
    }
    if text.is_empty() {
        text.push_str("  (nothing)\n");
    }
    text
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<CollectedSpan> {
    let mut collected = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .map(|resource| attributes(resource.attributes))
            .and_then(|mut attributes| attributes.remove("service.name"))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                collected.push(CollectedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex(&span.parent_span_id)),
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    attributes: attributes(span.attributes),
                    events: span
                        .events
                        .into_iter()
                        .map(|event| CollectedEvent {
                            name: event.name,
                            attributes: attributes(event.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    collected
}

fn attributes(key_values: Vec<KeyValue>) -> BTreeMap<String, String> {
    key_values
        .into_iter()
        .map(|key_value| (key_value.key, render(key_value.value)))
        .collect()
}

fn render(value: Option<AnyValue>) -> String {
    match value.and_then(|value| value.value) {
        Some(any_value::Value::StringValue(text)) => text,
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => hex(&bytes),
        Some(any_value::Value::ArrayValue(array)) => {
            let items: Vec<String> = array
                .values
                .into_iter()
                .map(|item| render(Some(item)))
                .collect();
            format!("[{}]", items.join(", "))
        }
        Some(any_value::Value::KvlistValue(list)) => format!("{:?}", attributes(list.values)),
        // Only profiles use a string table; a trace exporter never sends one.
        Some(any_value::Value::StringValueStrindex(index)) => format!("<string table #{index}>"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}
