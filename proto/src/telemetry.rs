//! Process-wide telemetry set-up: `tracing` for logs and spans, exported to an OpenTelemetry
//! collector (Jaeger ingests OTLP on port 4317) so an operator can follow one job request from
//! the job server through the controller to the agent.
//!
//! [`init`] is what a binary calls first thing in `main` (inside the tokio runtime): a `fmt`
//! layer on stderr always, filtered by `RUST_LOG` (default `info`), plus, when an OTLP endpoint
//! is configured, an OpenTelemetry layer feeding a batch span processor and an OTLP/gRPC (tonic)
//! exporter. Without an endpoint nothing is exported and no exporter exists. [`build`] makes the
//! same subscriber without installing it, so a test can run several "processes" in one runtime,
//! each with its own service name and exporter.
//!
//! The OpenTelemetry layer ignores the spans of the transport crates (h2, hyper, tonic, tower)
//! and of OpenTelemetry itself: the exporter runs on those crates, and exporting their spans
//! would make every export produce more spans to export.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use thiserror::Error;
use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// How long an export may take before it is abandoned (the batch is dropped, not retried).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Targets whose spans are never exported (see the module doc).
const UNEXPORTED_TARGETS: &[&str] = &["h2", "hyper", "tonic", "tower", "opentelemetry"];

/// Owns the span pipeline: dropping it flushes the spans still queued and stops the exporter.
///
/// Keep it alive for the life of the process (`let _telemetry = telemetry::init(..)?;`).
/// Dropping blocks the current thread while the last batch is sent; from async code prefer
/// [`TelemetryGuard::shutdown`], which does that work off the runtime's worker threads.
#[derive(Debug)]
pub struct TelemetryGuard {
    /// `None` when nothing is exported; shut down (once) by `shutdown` or `Drop`.
    provider: Option<SdkTracerProvider>,
}

/// Why telemetry could not be set up, flushed or shut down.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `RUST_LOG` holds an invalid filter.
    #[error("RUST_LOG is not a valid filter")]
    InvalidFilter(#[source] tracing_subscriber::filter::FromEnvError),
    /// The OTLP endpoint is not a plain `http://host:port` URL.
    #[error(
        "OTLP endpoint {endpoint:?} must be an http:// URL (TLS to the collector is not supported)"
    )]
    UnsupportedEndpoint {
        /// The endpoint as configured.
        endpoint: String,
    },
    /// The exporter needs a tokio runtime to run its gRPC channel on, and none is current.
    #[error("telemetry must be set up inside a tokio runtime")]
    NoRuntime,
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter for {endpoint}")]
    Exporter {
        /// The endpoint as configured.
        endpoint: String,
        /// The exporter's reason.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global `tracing` subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[source] tracing::dispatcher::SetGlobalDefaultError),
    /// Flushing or shutting down the span pipeline failed (e.g. the collector is unreachable).
    #[error("cannot deliver the remaining spans")]
    Delivery(#[source] opentelemetry_sdk::error::OTelSdkError),
    /// The blocking flush or shutdown task could not be run.
    #[error("the telemetry flush task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Builds the subscriber (see [`build`]) and installs it as the process's global default; with
/// an endpoint, its tracer provider also becomes OpenTelemetry's global one.
///
/// # Errors
/// [`TelemetryError`] for an invalid `RUST_LOG`, an unusable endpoint, no current tokio runtime
/// (with an endpoint), or a subscriber already installed.
pub fn init(
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    let (dispatch, guard) = build(service_name, otlp_endpoint)?;
    tracing::dispatcher::set_global_default(dispatch).map_err(TelemetryError::AlreadyInstalled)?;
    if let Some(provider) = &guard.provider {
        // Spans with explicit start and end times (a job's time in a state, recorded when it
        // leaves the state) are made with `opentelemetry::global::tracer`, which `tracing`
        // cannot express; they go through the same exporter.
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(guard)
}

/// The subscriber of a process named `service_name`, not installed: logs to stderr, and spans to
/// `otlp_endpoint` (e.g. `http://127.0.0.1:4317`) when given. Use it with
/// `tracing::dispatcher::with_default` or `tracing::instrument::WithSubscriber`.
///
/// # Errors
/// As for [`init`], except that nothing is installed.
pub fn build(
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<(Dispatch, TelemetryGuard), TelemetryError> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .map_err(TelemetryError::InvalidFilter)?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let Some(endpoint) = otlp_endpoint else {
        let subscriber = Registry::default().with(filter).with(fmt);
        return Ok((Dispatch::new(subscriber), TelemetryGuard { provider: None }));
    };
    let provider = otlp_provider(service_name, endpoint)?;
    let tracer = provider.tracer(service_name.to_owned());
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(FilterFn::new(|metadata| {
            !UNEXPORTED_TARGETS
                .iter()
                .any(|target| is_in_target(metadata.target(), target))
        }));
    let subscriber = Registry::default().with(filter).with(fmt).with(otel);
    Ok((
        Dispatch::new(subscriber),
        TelemetryGuard {
            provider: Some(provider),
        },
    ))
}

impl TelemetryGuard {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends every finished span now, waiting until the collector has them; for tests and for a
    /// process about to exit abnormally.
    ///
    /// # Errors
    /// [`TelemetryError::Delivery`] when the export fails.
    pub async fn flush(&self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        // `force_flush` blocks until the batch thread has exported, and the export itself needs
        // the runtime's worker threads (the tonic channel lives there), so block elsewhere.
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(TelemetryError::Task)?
            .map_err(TelemetryError::Delivery)
    }

    /// Flushes the remaining spans and stops the exporter.
    ///
    /// # Errors
    /// [`TelemetryError::Delivery`] when the last export fails.
    pub async fn shutdown(mut self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .map_err(TelemetryError::Task)?
            .map_err(TelemetryError::Delivery)
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Nobody is left to report a failure to at this point; stderr is the last resort.
            if let Err(error) = provider.shutdown() {
                eprintln!("telemetry: cannot deliver the remaining spans: {error}");
            }
        }
    }
}

fn otlp_provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    if !endpoint.starts_with("http://") {
        return Err(TelemetryError::UnsupportedEndpoint {
            endpoint: endpoint.to_owned(),
        });
    }
    // The tonic channel is created lazily but spawns its worker at once; outside a runtime that
    // would panic, so say so instead.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoRuntime);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// Whether `target` is `prefix` or one of its modules (`h2::proto` is in `h2`; `h2x` is not).
fn is_in_target(target: &str, prefix: &str) -> bool {
    target
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_targets_are_not_exported() {
        for target in [
            "h2",
            "h2::proto::streams",
            "hyper_util::client",
            "opentelemetry_sdk",
        ] {
            assert!(
                UNEXPORTED_TARGETS
                    .iter()
                    .any(|prefix| is_in_target(target, prefix)),
                "{target}"
            );
        }
        for target in ["rap_controller", "h2x", "towers"] {
            assert!(
                !UNEXPORTED_TARGETS
                    .iter()
                    .any(|prefix| is_in_target(target, prefix)),
                "{target}"
            );
        }
    }

    #[test]
    fn without_endpoint_nothing_is_exported() {
        let (_dispatch, guard) = build("test", None).unwrap();
        assert!(!guard.is_exporting());
    }

    #[test]
    fn endpoint_needs_http_and_a_runtime() {
        let error = build("test", Some("https://collector:4317")).unwrap_err();
        assert!(
            matches!(error, TelemetryError::UnsupportedEndpoint { .. }),
            "{error:?}"
        );
        let error = build("test", Some("http://127.0.0.1:4317")).unwrap_err();
        assert!(matches!(error, TelemetryError::NoRuntime), "{error:?}");
    }
}
