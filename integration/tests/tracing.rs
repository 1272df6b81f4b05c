//! Tracing across the whole system: `rap up` with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing every
//! service at an OTLP/gRPC collector running in this test; a researcher runs the sample study
//! from the job server's web forms; the collector must then hold one trace for the job request
//! that links the job server's submit, the controller's request and job-state spans and the
//! agent's task, prepare, execute and finalize spans by their parent ids.

#[path = "support/action_images.rs"]
mod action_images;
#[path = "support/rap_up.rs"]
mod rap_up;
#[path = "support/web_forms.rs"]
mod web_forms;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rap_integration::requests;
use rap_integration::stack::Installation;
use rap_proto::pb::rap::v1 as pb;
use rap_proto::testing::{CollectedSpan, OtlpCollector};

use web_forms::FormClient;

const PROJECT: &str = "sample-study";
const WORKSPACE: &str = "traced";
/// The sample study's output files: none may be named in any span.
const OUTPUT_NAMES: [&str; 3] = ["dataset.csv", "summary.csv", "chart.svg"];
const DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_request_from_the_job_server_is_one_trace_across_every_service() {
    action_images::action_images().await;
    let collector = OtlpCollector::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = rap_up::rap_up(
        &data,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())],
    )
    .await;

    // The researcher signs in, creates a workspace for the study and runs `summarise`.
    let mut web = FormClient::new(&up.fields["Job server"]);
    web.sign_in("researcher", up.password("researcher")).await;
    let study = format!(
        "file://{}",
        data.canonicalize().unwrap().join("study").display()
    );
    web.create_workspace(PROJECT, WORKSPACE, &study).await;
    let rap_id = web
        .run_jobs(PROJECT, WORKSPACE, &["summarise"], "local")
        .await;

    // Both jobs run to the end, followed on the controller's WatchJobs.
    let installation = Installation::init(&data.join("controller"), "local")
        .await
        .unwrap();
    let endpoint = up.fields["Controller"]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut client = rap_integration::stack::rap_client(&installation, &endpoint)
        .await
        .unwrap();
    let jobs = requests::run_to_completion(&mut client, &installation, &rap_id, 2, DEADLINE)
        .await
        .unwrap();
    for job in jobs.values() {
        assert_eq!(
            job.status_code(),
            pb::StatusCode::Succeeded,
            "{}: {}",
            job.action,
            job.status_message
        );
    }
    let trace_id = trace_id_of(&jobs["summarise"]);
    assert_eq!(
        trace_id,
        trace_id_of(&jobs["generate_dataset"]),
        "one trace for the whole job request"
    );
    let job_ids: Vec<String> = jobs.values().map(|job| job.identifier.clone()).collect();

    // Spans arrive in batches as each process exports them: wait until the trace is whole.
    let spans = collector
        .wait_until(
            "the job request's trace with every service's spans, all parents resolved",
            DEADLINE,
            |spans| {
                let trace = in_trace(spans, &trace_id);
                missing(&trace, &rap_id, &job_ids).is_empty() && unresolved(&trace).is_empty()
            },
        )
        .await
        .unwrap();
    let trace = in_trace(&spans, &trace_id);
    assert_eq!(missing(&trace, &rap_id, &job_ids), Vec::<String>::new());
    assert_eq!(unresolved(&trace), Vec::<String>::new());
    // Exactly one root: the job server's submit.
    let roots: Vec<&CollectedSpan> = trace
        .iter()
        .filter(|span| span.parent_span_id.is_none())
        .copied()
        .collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    assert_eq!(
        (roots[0].service.as_str(), roots[0].name.as_str()),
        ("rap-jobserver", "submit_job")
    );
    // Nothing about this request went to any other trace.
    for span in &spans {
        let mentions = span
            .attributes
            .values()
            .any(|value| value == &rap_id || job_ids.contains(value));
        assert!(
            !mentions || span.trace_id == trace_id,
            "a span of this request outside its trace: {span:#?}"
        );
    }
    // No output file is named anywhere: span names, attributes or events.
    for span in &trace {
        for text in span.texts() {
            for output in OUTPUT_NAMES {
                assert!(
                    !text.contains(output),
                    "{} span {} names {output}: {text}",
                    span.service,
                    span.name
                );
            }
        }
    }
    up.interrupt_and_wait().await;
    collector.stop().await.unwrap();
}

/// The trace id in a job's `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id_of(job: &pb::Job) -> String {
    let traceparent = &job.trace_context["traceparent"];
    traceparent
        .split('-')
        .nth(1)
        .unwrap_or_else(|| panic!("bad traceparent {traceparent}"))
        .to_owned()
}

fn in_trace<'a>(spans: &'a [CollectedSpan], trace_id: &str) -> Vec<&'a CollectedSpan> {
    spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .collect()
}

/// What the trace should hold and does not yet, in words: the job server's `submit_job` and
/// the controller's span for the request; per job, a controller span naming it (its
/// state changes) and the agent's `TASK` span with `prepare`, `execute` and `finalize` children.
fn missing(trace: &[&CollectedSpan], rap_id: &str, job_ids: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    let submit = trace.iter().any(|span| {
        span.service == "rap-jobserver"
            && span.name == "submit_job"
            && span.attribute("rap_id") == Some(rap_id)
    });
    if !submit {
        missing.push("the job server's submit_job".to_owned());
    }
    // The controller's span for the request (`JOB_REQUEST`; `SubmitJob` in earlier versions).
    let request_span = trace.iter().any(|span| {
        span.service == "rap-controller"
            && ["JOB_REQUEST", "SubmitJob"].contains(&span.name.as_str())
            && span.attributes.values().any(|value| value == rap_id)
    });
    if !request_span {
        missing.push("the controller's job request span".to_owned());
    }
    for job_id in job_ids {
        let states = trace.iter().any(|span| {
            span.service == "rap-controller" && span.attributes.values().any(|v| v == job_id)
        });
        if !states {
            missing.push(format!("the controller's state spans of job {job_id}"));
        }
        let tasks: Vec<&&CollectedSpan> = trace
            .iter()
            .filter(|span| {
                span.service == "rap-agent"
                    && span.name == "TASK"
                    && span.attribute("job") == Some(job_id.as_str())
            })
            .collect();
        if tasks.is_empty() {
            missing.push(format!("the agent's TASK span of job {job_id}"));
        }
        let children: BTreeSet<&str> = trace
            .iter()
            .filter(|span| {
                span.service == "rap-agent"
                    && tasks
                        .iter()
                        .any(|task| span.parent_span_id.as_deref() == Some(&task.span_id))
            })
            .map(|span| span.name.as_str())
            .collect();
        for step in ["prepare", "execute", "finalize"] {
            if !children.contains(step) {
                missing.push(format!("the agent's {step} span of job {job_id}"));
            }
        }
    }
    missing
}

/// The spans whose parent is not in the trace, described.
fn unresolved(trace: &[&CollectedSpan]) -> Vec<String> {
    let ids: BTreeMap<&str, &str> = trace
        .iter()
        .map(|span| (span.span_id.as_str(), span.name.as_str()))
        .collect();
    trace
        .iter()
        .filter(|span| {
            span.parent_span_id
                .as_deref()
                .is_some_and(|parent| !ids.contains_key(parent))
        })
        .map(|span| {
            format!(
                "{} {} (parent {:?})",
                span.service, span.name, span.parent_span_id
            )
        })
        .collect()
}
