//! W3C trace-context propagation: one trace per job request, from the job server through the
//! controller to the agent, across gRPC calls and across the job records that outlive them.
//!
//! Two carriers:
//! - gRPC metadata (a request's `traceparent`/`tracestate` headers): [`inject`] puts the
//!   current `tracing` span's context on an outgoing request (also usable as a tonic
//!   interceptor, [`interceptor`]); [`set_parent_from_metadata`] makes an incoming request's
//!   context the parent of the handler's span.
//! - a string map stored on jobs and tasks (`trace_context` in the protos, e.g.
//!   `{"traceparent": "00-…-…-01"}`): [`current_map`] captures the current span's context and
//!   [`set_parent_from_map`] resumes it later, in another process or after a restart.
//!
//! Only the W3C Trace Context format is spoken, through a local [`TraceContextPropagator`]
//! rather than the process-global one, so propagation works without any global set-up and no
//! other library can swap the format underneath us. Spans get an OpenTelemetry context only
//! under a subscriber that has the OpenTelemetry layer (see [`crate::telemetry`]); without it,
//! injecting writes nothing and setting a parent reports [`TraceContextError`].

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use thiserror::Error;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries trace and parent-span ids.
pub const TRACEPARENT: &str = "traceparent";

/// Why a span's parent could not be set.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TraceContextError {
    /// The carrier holds no valid `traceparent`; the span stays a root of its own trace.
    #[error("no valid traceparent in the carrier")]
    Missing,
    /// The span cannot take a parent: it was already entered, is disabled, or its subscriber has
    /// no OpenTelemetry layer.
    #[error("cannot set the span's parent: {reason}")]
    SpanRefused {
        /// tracing-opentelemetry's reason.
        reason: String,
    },
}

/// Writes the current span's trace context into `metadata` (nothing when there is none).
pub fn inject(metadata: &mut MetadataMap) {
    inject_context(&tracing::Span::current().context(), metadata);
}

/// Writes `context` into `metadata` (nothing when it holds no valid span).
pub fn inject_context(context: &Context, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(context, &mut MetadataInjector(metadata));
}

/// A tonic interceptor adding the current span's trace context to every outgoing request:
/// `ServiceClient::with_interceptor(channel, trace_context::interceptor)`.
///
/// # Errors
/// Never; the signature is tonic's.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn interceptor(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject(request.metadata_mut());
    Ok(request)
}

/// The trace context carried by `metadata` (an empty context when there is none).
pub fn extract(metadata: &MetadataMap) -> Context {
    TraceContextPropagator::new().extract(&MetadataExtractor(metadata))
}

/// Makes the trace context in `metadata` the parent of `span`. Call it before the span is
/// first entered (e.g. right after `info_span!` in a handler).
///
/// # Errors
/// [`TraceContextError::Missing`] when `metadata` has no valid `traceparent` (the span then
/// starts a trace of its own, which is fine for callers that do not trace), or
/// [`TraceContextError::SpanRefused`].
pub fn set_parent_from_metadata(
    span: &tracing::Span,
    metadata: &MetadataMap,
) -> Result<(), TraceContextError> {
    set_parent(span, extract(metadata))
}

/// The current span's trace context as the map stored on jobs (`{"traceparent": …}`), empty
/// when there is no traced span.
pub fn current_map() -> HashMap<String, String> {
    context_to_map(&tracing::Span::current().context())
}

/// `context` as a `{"traceparent": …}` map (plus `tracestate` when set).
pub fn context_to_map(context: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut map);
    map
}

/// The trace context stored in a job's map (an empty context when there is none).
pub fn context_from_map(map: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(map)
}

/// Makes the trace context stored in a job's map the parent of `span`.
///
/// # Errors
/// As for [`set_parent_from_metadata`].
pub fn set_parent_from_map(
    span: &tracing::Span,
    map: &HashMap<String, String>,
) -> Result<(), TraceContextError> {
    set_parent(span, context_from_map(map))
}

/// The hex trace id of `span`, when it has a valid OpenTelemetry context: for log lines and
/// responses that let an operator find the trace in Jaeger.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

fn set_parent(span: &tracing::Span, parent: Context) -> Result<(), TraceContextError> {
    if !parent.span().span_context().is_valid() {
        return Err(TraceContextError::Missing);
    }
    span.set_parent(parent)
        .map_err(|error| TraceContextError::SpanRefused {
            reason: error.to_string(),
        })
}

/// Writes propagation fields as ASCII metadata entries.
struct MetadataInjector<'a>(&'a mut MetadataMap);

/// Reads propagation fields from ASCII metadata entries.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C fields are lowercase ASCII names with ASCII values; anything else cannot be a
        // valid header and is dropped rather than sent half-formed.
        let Ok(key) = MetadataKey::from_bytes(key.as_bytes()) else {
            return;
        };
        let Ok(value) = MetadataValue::try_from(value.as_str()) else {
            return;
        };
        self.0.insert(key, value);
    }
}

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn remote_context() -> Context {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(span_context)
    }

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn metadata_round_trip() {
        let mut metadata = MetadataMap::new();
        inject_context(&remote_context(), &mut metadata);
        assert_eq!(metadata.get(TRACEPARENT).unwrap(), HEADER);
        let extracted = extract(&metadata);
        assert_eq!(
            extracted.span().span_context().trace_id(),
            remote_context().span().span_context().trace_id()
        );
    }

    #[test]
    fn map_round_trip() {
        let map = context_to_map(&remote_context());
        assert_eq!(map.get(TRACEPARENT).map(String::as_str), Some(HEADER));
        let back = context_from_map(&map);
        assert_eq!(
            back.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
    }

    #[test]
    fn missing_or_garbage_traceparent_is_missing() {
        let span = tracing::Span::none();
        assert_eq!(
            set_parent_from_metadata(&span, &MetadataMap::new()),
            Err(TraceContextError::Missing)
        );
        let garbage = HashMap::from([(TRACEPARENT.to_owned(), "00-nonsense".to_owned())]);
        assert_eq!(
            set_parent_from_map(&span, &garbage),
            Err(TraceContextError::Missing)
        );
    }

    #[test]
    fn no_span_injects_nothing() {
        let mut metadata = MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
        assert!(current_map().is_empty());
        assert_eq!(trace_id(&tracing::Span::current()), None);
    }
}
