//! A job's trace (spec §5): when a job leaves a status code, one OpenTelemetry span named
//! after that code (`CREATED`, `INITIATED`, `EXECUTING`, …) lasting from entering the code
//! until leaving it; when it reaches a final code, a one-second marker span named after it.
//! Both are children of the job's stored trace context, which is the job request's root span,
//! so one request's jobs form one trace with the caller's.
//!
//! The spans are made with `opentelemetry::global::tracer` (installed by
//! `rap_proto::telemetry::init` when an OTLP endpoint is configured), because `tracing` spans
//! cannot be given a start time in the past. Without an endpoint the global tracer is a no-op.
//! Attributes are identifiers and codes only: never an output name, pattern or status message
//! (messages can quote output patterns).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Span as _, Tracer as _};
use opentelemetry::{KeyValue, global};

use crate::jobs::Job;
use crate::jobs::state::{JobStatus, StatusCode};

/// The instrumentation scope of job spans.
const TRACER: &str = "rap_controller::jobs";

/// How long the marker span of a final code lasts (the reference's choice).
const FINAL_MARKER: Duration = Duration::from_secs(1);

/// Record that `job` (still in its old status) spent `left_since_ns..at_ns` in `left` and
/// now has status `entered`.
pub fn record_code_left(
    job: &Job,
    left: StatusCode,
    left_since_ns: i64,
    at_ns: i64,
    entered: &JobStatus,
) {
    let parent_map: HashMap<String, String> = job
        .trace_context
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let parent = rap_proto::trace_context::context_from_map(&parent_map);
    let tracer = global::tracer(TRACER);
    let mut attributes = job_attributes(job);
    attributes.push(KeyValue::new("job.status_code", left.as_str()));
    attributes.push(KeyValue::new("job.state", job.status.state.as_str()));
    attributes.push(KeyValue::new(
        "job.next_status_code",
        entered.status_code.as_str(),
    ));
    let mut span = tracer
        .span_builder(left.span_name())
        .with_start_time(time_of(left_since_ns))
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    span.end_with_timestamp(time_of(at_ns.max(left_since_ns)));

    if entered.status_code.is_final() {
        let mut attributes = job_attributes(job);
        attributes.push(KeyValue::new(
            "job.status_code",
            entered.status_code.as_str(),
        ));
        attributes.push(KeyValue::new("job.state", entered.state.as_str()));
        attributes.push(KeyValue::new(
            "job.succeeded",
            entered.status_code == StatusCode::Succeeded,
        ));
        let start = time_of(at_ns);
        let mut marker = tracer
            .span_builder(entered.status_code.span_name())
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        marker.end_with_timestamp(start + FINAL_MARKER);
    }
}

/// What every job span carries (§5's routing and identity fields).
fn job_attributes(job: &Job) -> Vec<KeyValue> {
    vec![
        KeyValue::new("rap.backend", job.backend.clone()),
        KeyValue::new("rap.workspace", job.workspace.clone()),
        KeyValue::new("job.id", job.id.to_string()),
        KeyValue::new("job.request", job.rap_id.to_string()),
        KeyValue::new("job.action", job.action.clone()),
        KeyValue::new("job.commit", job.commit.clone()),
        KeyValue::new("job.requires_db", job.requires_db),
        KeyValue::new("job.created_at", job.created_at),
    ]
}

fn time_of(unix_ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_ns).unwrap_or(0))
}
