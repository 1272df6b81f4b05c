//! Trace context on SubmitJob, in its own test binary: `tracing` caches per-callsite interest
//! process-wide, so the `submit_job` span's callsite must first be hit under the
//! OpenTelemetry-enabled dispatcher (as in production, where it is the global one), with no
//! other test racing it.

mod common;

use common::Harness;
use tracing::instrument::WithSubscriber;

#[tokio::test]
async fn submit_carries_the_job_requests_trace_context() {
    // The OpenTelemetry layer, exporting to a port nobody listens on (spans are dropped).
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let (dispatch, guard) =
        rap_proto::telemetry::build("rap-jobserver-test", Some(&endpoint)).unwrap();
    let h = Harness::new().await;
    let (cookie, csrf) = h.session("dev");
    let form = [
        ("csrf_token", csrf.as_str()),
        ("backend", "test"),
        ("requested_actions", "generate"),
    ];
    // With telemetry: a W3C traceparent with a real trace id.
    h.post("/proj/ws/run-jobs/", &cookie, &form)
        .with_subscriber(dispatch)
        .await;
    // Without it: no traceparent, and nothing breaks.
    h.post("/proj/ws/run-jobs/", &cookie, &form).await;
    let traceparents = h.fake.submit_traceparents.lock().unwrap().clone();
    assert_eq!(traceparents.len(), 2);
    assert_eq!(traceparents[1], None);
    let traceparent = traceparents[0].clone().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], "0".repeat(32));
    let _ = guard.shutdown().await;
}
