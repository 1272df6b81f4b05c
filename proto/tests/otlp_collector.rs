//! The test collector (`rap_proto::testing`): spans exported by a real OTLP exporter arrive
//! with their attributes, and a wait that cannot be satisfied fails saying what was awaited and
//! what arrived instead.

use std::time::Duration;

use rap_proto::telemetry;
use rap_proto::testing::{CollectorError, OtlpCollector};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_spans_arrive_and_an_unmet_wait_says_what_it_missed() {
    let collector = OtlpCollector::start().await.unwrap();
    assert_eq!(collector.endpoint(), format!("http://{}", collector.addr()));
    let (dispatch, guard) = telemetry::build("collector-test", Some(collector.endpoint())).unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        let outer = tracing::info_span!("outer", job_count = 2_i64);
        outer.in_scope(|| {
            tracing::info_span!("inner").in_scope(|| tracing::info!("inside"));
        });
    });
    guard.flush().await.unwrap();

    let spans = collector.wait_for_spans(2, WAIT).await.unwrap();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let outer = collector.wait_for_span("outer", WAIT).await.unwrap();
    let inner = collector.wait_for_span("inner", WAIT).await.unwrap();
    assert_eq!(outer.service, "collector-test");
    assert_eq!(outer.attribute("job_count"), Some("2"));
    assert_eq!(outer.parent_span_id, None);
    assert_eq!(
        inner.parent_span_id.as_deref(),
        Some(outer.span_id.as_str())
    );
    assert_eq!(inner.trace_id, outer.trace_id);
    assert_eq!(inner.trace_id.len(), 32);
    assert!(inner.texts().any(|text| text == "inside"), "{inner:#?}");
    assert!(outer.start_time_unix_nano <= inner.start_time_unix_nano);
    assert!(inner.end_time_unix_nano <= outer.end_time_unix_nano);

    let error = collector
        .wait_for_span("never_sent", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(error, CollectorError::Timeout { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("a span named \"never_sent\""), "{message}");
    assert!(message.contains("\"outer\""), "{message}");

    guard.shutdown().await.unwrap();
    collector.stop().await.unwrap();
}
