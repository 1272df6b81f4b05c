//! Tracing: a job request is one trace continuing the caller's `traceparent`, with the
//! controller's `JOB_REQUEST` root span and, as its children, one span per status code each job
//! left (lasting from entering the code until leaving it, carrying the code) plus a marker for
//! the final code. The task carries the trace context, status returns it, and no span anywhere
//! names an output. Its own test binary: telemetry is installed process-wide, as in the binary,
//! and exported to a real OTLP collector running in the test.

mod common;

use std::collections::BTreeSet;

use common::*;
use rap_proto::pb::rap::v1 as pb;
use rap_proto::testing::{CollectedSpan, OtlpCollector};

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// Every name and pattern of the study's outputs (PROJECT_YAML).
const OUTPUT_NAMES: [&str; 4] = ["dataset", "table", "output/", ".csv"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_request_is_one_trace_with_a_span_per_state_and_no_output_names() {
    let collector = OtlpCollector::start().await.unwrap();
    let telemetry =
        rap_proto::telemetry::init("rap-controller", Some(collector.endpoint())).unwrap();
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    let mut agent = TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "a1").await;

    let rap_id = "trace00000000001";
    let mut request = authed(CLIENT_TOKEN, submit_request(&setup, rap_id, &["solo"]));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    client.submit_job(request).await.unwrap();

    let task = agent.next_task().await;
    agent.run_to_exit(&task.id, 0).await;
    wait_for_code(&mut client, rap_id, "solo", pb::StatusCode::Succeeded).await;

    // Status returns the trace context, and the task carried the same one to the agent.
    let job = jobs(&mut client, rap_id).await.remove(0);
    let traceparent = job.trace_context["traceparent"].clone();
    assert!(
        traceparent.starts_with(&format!("00-{CALLER_TRACE}-")),
        "the job continues the caller's trace: {traceparent}"
    );
    assert_eq!(task.attributes["traceparent"], traceparent);

    telemetry.flush().await.unwrap();
    let spans = collector
        .wait_until("the job's SUCCEEDED marker", WAIT, |spans| {
            spans.iter().any(|span| span.name == "SUCCEEDED")
        })
        .await
        .unwrap();
    let ours: Vec<&CollectedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == CALLER_TRACE)
        .collect();

    // The request root: the caller's child, and the parent named in the job's traceparent.
    let roots: Vec<&&CollectedSpan> = ours
        .iter()
        .filter(|span| span.name == "JOB_REQUEST")
        .collect();
    assert_eq!(roots.len(), 1, "one request root: {ours:#?}");
    let root = roots[0];
    assert_eq!(root.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_eq!(root.service, "rap-controller");
    assert_eq!(root.attribute("job.request"), Some(rap_id));
    assert_eq!(
        traceparent,
        format!("00-{CALLER_TRACE}-{}-01", root.span_id),
        "jobs are parented to the request root"
    );

    // One span per code the job left, as the root's children, in order, each lasting until
    // the next began; then the final marker.
    let job_spans: Vec<&&CollectedSpan> = ours
        .iter()
        .filter(|span| span.attribute("job.id") == Some(job.identifier.as_str()))
        .collect();
    for span in &job_spans {
        assert_eq!(
            span.parent_span_id.as_deref(),
            Some(root.span_id.as_str()),
            "{span:#?}"
        );
        assert_eq!(span.attribute("job.request"), Some(rap_id));
        assert_eq!(span.attribute("rap.backend"), Some("test"));
        assert_eq!(
            span.attribute("job.status_code").map(str::to_uppercase),
            Some(span.name.clone()),
            "each state span carries its status code"
        );
    }
    let mut states: Vec<&&&CollectedSpan> = job_spans
        .iter()
        .filter(|span| span.name != "SUCCEEDED")
        .collect();
    states.sort_by_key(|span| span.start_time_unix_nano);
    let names: Vec<&str> = states.iter().map(|span| span.name.as_str()).collect();
    assert_eq!(
        names,
        ["CREATED", "INITIATED", "PREPARING", "EXECUTING"],
        "{states:#?}"
    );
    for pair in states.windows(2) {
        assert!(pair[0].start_time_unix_nano <= pair[0].end_time_unix_nano);
        assert_eq!(
            pair[0].attribute("job.next_status_code"),
            pair[1].attribute("job.status_code"),
            "the next state span starts where this one ended"
        );
        assert_eq!(pair[0].end_time_unix_nano, pair[1].start_time_unix_nano);
    }
    let last = states.last().unwrap();
    assert_eq!(last.attribute("job.next_status_code"), Some("succeeded"));
    let marker = job_spans
        .iter()
        .find(|span| span.name == "SUCCEEDED")
        .unwrap();
    assert_eq!(marker.attribute("job.succeeded"), Some("true"));
    assert_eq!(marker.start_time_unix_nano, last.end_time_unix_nano);

    // Nothing the collector received names an output.
    let services: BTreeSet<&str> = spans.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(services, BTreeSet::from(["rap-controller"]));
    for span in &spans {
        for text in span.texts() {
            for output in OUTPUT_NAMES {
                assert!(
                    !text.contains(output),
                    "span {:?} names an output ({output:?} in {text:?})",
                    span.name
                );
            }
        }
    }

    controller.stop().await;
    telemetry.shutdown().await.unwrap();
    collector.stop().await.unwrap();
}
