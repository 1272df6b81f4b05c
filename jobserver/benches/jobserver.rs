//! Prints numbers for the job server's hot paths (no assertions):
//! - durable job-change application (what the watch task does per WatchJobs message);
//! - rendering a job-request page with many jobs through the router;
//! - argon2 password verification (the cost of one sign-in).
//!
//! Run: `cargo bench -p rap-jobserver --bench jobserver`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use rap_jobserver::controller_link::ControllerLink;
use rap_jobserver::model::{Job, JobRequest, RapId, Workspace, now};
use rap_jobserver::status::{JobStatus, RequestStatus};
use rap_jobserver::store::Store;
use rap_jobserver::web::{AppState, WebConfig};
use tower::ServiceExt;

fn job(rap_id: &RapId, n: usize, status: JobStatus) -> Job {
    Job {
        identifier: format!("job{n:06}"),
        rap_id: rap_id.clone(),
        action: format!("action_{n}"),
        run_command: format!("python:v2 analysis/action_{n}.py --flag"),
        status,
        status_code: "executing".into(),
        status_message: String::new(),
        created_at: Some(1_700_000_000),
        updated_at: Some(1_700_000_100),
        started_at: Some(1_700_000_010),
        completed_at: None,
        metrics: None,
        trace_context: vec![],
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let rap_id = RapId::generate();
    store
        .insert_workspace(&Workspace {
            name: "ws".into(),
            project: "proj".into(),
            repo_url: "https://example.org/study".into(),
            branch: "main".into(),
            purpose: "bench".into(),
            is_archived: false,
            created_by: "dev".into(),
            created_at: now(),
        })
        .unwrap();
    store
        .put_job_request(&JobRequest {
            rap_id: rap_id.clone(),
            backend: "test".into(),
            workspace: "ws".into(),
            project: "proj".into(),
            requested_actions: vec!["run_all".into()],
            cancelled_actions: vec![],
            sha: "0".repeat(40),
            force_run_dependencies: false,
            created_by: "dev".into(),
            created_at: now(),
            status: RequestStatus::Pending,
            status_message: None,
            project_definition: String::new(),
        })
        .unwrap();

    // 1. Durable job changes, each flushed before the next (as the watch task does).
    let n_changes = 500;
    let start = Instant::now();
    for i in 0..n_changes {
        let status = if i % 2 == 0 {
            JobStatus::Pending
        } else {
            JobStatus::Running
        };
        store
            .apply_job_change(i as u64 + 1, &job(&rap_id, i % 200, status))
            .await
            .unwrap();
        rap_jobserver::watch::refresh_request_status(&store, &rap_id).unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "apply_job_change (durable, + status refresh): {n_changes} changes in {:.1} ms = {:.0} changes/s, {:.0} µs each",
        elapsed.as_secs_f64() * 1e3,
        n_changes as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / n_changes as f64
    );

    // 2. The job-request page with 200 jobs, through the router.
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (events, _) = tokio::sync::broadcast::channel(16);
    let state = AppState {
        store: store.clone(),
        link: ControllerLink::new("http://127.0.0.1:9", "x", None).unwrap(),
        config: Arc::new(WebConfig {
            base_url: "http://x".into(),
            jaeger_url: String::new(),
            secure_cookies: false,
            allow_file_repos: false,
            release_storage: dir.path().join("releases"),
        }),
        events,
        shutdown,
    };
    let path = format!("/proj/ws/{rap_id}/");
    let mut samples = Vec::new();
    let mut bytes = 0;
    for _ in 0..200 {
        let start = Instant::now();
        let response = rap_jobserver::web::app(state.clone())
            .oneshot(Request::get(&path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len();
        samples.push(start.elapsed());
    }
    println!(
        "job-request page, 200 jobs ({} KiB): p50 {:.2} ms, p99 {:.2} ms",
        bytes / 1024,
        percentile(&mut samples, 0.5).as_secs_f64() * 1e3,
        percentile(&mut samples, 0.99).as_secs_f64() * 1e3
    );

    // 3. One sign-in's password check.
    let hash = rap_jobserver::accounts::hash_password("correct horse battery staple").unwrap();
    let mut samples = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        assert!(rap_jobserver::accounts::verify_password(
            "correct horse battery staple",
            &hash
        ));
        samples.push(start.elapsed());
    }
    println!(
        "argon2id verify (default parameters): p50 {:.1} ms",
        percentile(&mut samples, 0.5).as_secs_f64() * 1e3
    );
}
