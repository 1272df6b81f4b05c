//! Prints numbers for the job server's hot paths (no assertions):
//! - durable job-change application (what the watch task does per WatchJobs message);
//! - rendering a job-request page with many jobs through the router;
//! - argon2 password verification (the cost of one sign-in);
//! - with 10,000 job requests in the store: the job-request page and the paged lists (workspace
//!   log first and last page, event log), against the full scan the lists used to do;
//! - live updates against the real controller: from an agent's stage update sent to the
//!   controller until the job-request page's event stream delivers the re-rendered table over
//!   loopback HTTP (the controller persists the change, WatchJobs carries it, the job server
//!   persists it and renders). Needs the release `rap-controller`:
//!   `cargo build --release -p rap-controller --bins` (or `RAP_BIN_DIR`).
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
use rap_jobserver::store::{RequestScope, Store};
use rap_jobserver::web::{AppState, WebConfig};
use tower::ServiceExt;

// The test harness's seeding, real-controller and agent helpers, shared with the bench.
#[path = "../tests/common/mod.rs"]
mod common;

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

fn print_percentiles(what: &str, samples: &mut [Duration]) {
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms (n = {})",
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

/// Renders `path` `n` times through the router; the durations and the last body's size.
async fn render_times(state: &AppState, path: &str, n: usize) -> (Vec<Duration>, usize) {
    let mut samples = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let start = Instant::now();
        let response = rap_jobserver::web::app(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len();
        samples.push(start.elapsed());
    }
    (samples, bytes)
}

fn request(workspace: &str, created_at: i64) -> JobRequest {
    JobRequest {
        rap_id: RapId::generate(),
        backend: "test".into(),
        workspace: workspace.into(),
        project: "proj".into(),
        requested_actions: vec!["generate".into()],
        cancelled_actions: vec![],
        sha: "0".repeat(40),
        force_run_dependencies: false,
        created_by: "dev".into(),
        created_at,
        status: RequestStatus::Succeeded,
        status_message: None,
        project_definition: common::PROJECT_YAML.into(),
    }
}

/// 10,000 job requests (half in workspace `ws`, half in `other`, 100 running); pages rendered
/// 200 times.
async fn ten_thousand_requests() {
    let dir = tempfile::tempdir().unwrap();
    let seeded = common::seed(dir.path());
    let store = seeded.store;
    store
        .insert_workspace(&Workspace {
            name: "other".into(),
            project: "proj".into(),
            repo_url: seeded.repo_url.clone(),
            branch: "main".into(),
            purpose: "bench".into(),
            is_archived: false,
            created_by: "dev".into(),
            created_at: now(),
        })
        .unwrap();
    let newest = now();
    let start = Instant::now();
    for i in 0..10_000 {
        let workspace = if i % 2 == 0 { "ws" } else { "other" };
        let mut job_request = request(workspace, newest - 10_000 + i);
        // One in a hundred still running: what the status page reads.
        if i % 100 == 0 {
            job_request.status = RequestStatus::Running;
        }
        store.put_job_request(&job_request).unwrap();
    }
    // The request whose page is measured: the newest, with 25 jobs.
    let target = request("ws", newest);
    store.put_job_request(&target).unwrap();
    for n in 0..25 {
        store
            .apply_job_change(n as u64 + 1, &job(&target.rap_id, n, JobStatus::Succeeded))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    println!(
        "10,001 job requests stored (with their time indexes) in {:.2} s",
        start.elapsed().as_secs_f64()
    );

    let mut samples = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        // Every record read (a filter that keeps all), as lists did before the index.
        let all = store
            .job_requests_page(RequestScope::Everywhere, Some(&|_| true), 0, usize::MAX)
            .unwrap();
        assert_eq!(all.requests.len(), 10_001);
        samples.push(start.elapsed());
    }
    print_percentiles(
        "  reading all 10,001 job requests (what every list page did before the index)",
        &mut samples,
    );

    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let link = ControllerLink::new("http://127.0.0.1:9", "x", None).unwrap();
    let state = common::app_state(store, link, dir.path().join("releases"), shutdown);
    let rap_id = target.rap_id.as_str();
    for (what, path) in [
        ("  job-request page, 25 jobs", format!("/proj/ws/{rap_id}/")),
        ("  workspace log, page 1", "/proj/ws/logs/".to_owned()),
        (
            "  workspace log, page 200 (the last)",
            "/proj/ws/logs/?page=200".to_owned(),
        ),
        (
            "  workspace log, ?q= matching none (reads every request of the workspace)",
            "/proj/ws/logs/?q=nothing-matches".to_owned(),
        ),
        ("  event log, page 1", "/event-log/".to_owned()),
        (
            "  event log, page 400 (the last)",
            "/event-log/?page=400".to_owned(),
        ),
        (
            "  status page (100 active requests; the controller refuses the connection)",
            "/status/".to_owned(),
        ),
    ] {
        let (mut samples, bytes) = render_times(&state, &path, 200).await;
        print_percentiles(&format!("{what} ({} KiB)", bytes / 1024), &mut samples);
    }
}

/// Reads server-sent events from a live HTTP response, one `event: …\ndata: …` block at a time.
struct EventReader {
    body: Body,
    buffer: String,
}

impl EventReader {
    async fn next_event(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return event;
            }
            let frame = self.body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Waits for the event whose jobs table shows `status_code`.
    async fn until_code(&mut self, status_code: &str) {
        let cell = format!("<td>{status_code}</td>");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), self.next_event())
                .await
                .unwrap_or_else(|_| panic!("no event showing {status_code}"));
            if event.contains(&cell) {
                return;
            }
        }
    }
}

/// Stage updates from an agent to the real controller, timed until the job-request page's
/// event stream shows them.
async fn live_update_delay() {
    use rap_proto::pb::rap::v1 as pb;

    let dir = tempfile::tempdir().unwrap();
    let controller = common::controller::RealController::start(dir.path(), "test").await;
    let seeded = common::seed(dir.path());
    let store = seeded.store;
    let link = ControllerLink::new(
        &controller.rap_url,
        &controller.client_token,
        Some(&controller.ca()),
    )
    .unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let state = common::app_state(
        store.clone(),
        link.clone(),
        dir.path().join("releases"),
        shutdown.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, rap_jobserver::web::app(state.clone())).into_future());
    let watch = tokio::spawn(rap_jobserver::watch::run(
        link.clone(),
        store.clone(),
        state.events.clone(),
        async move {
            let mut shutdown = shutdown;
            let _ = shutdown.wait_for(|s| *s).await;
        },
    ));
    let mut agent = common::controller::TestAgent::connect(&controller).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let workspace = store.workspace("ws").unwrap().unwrap();
    let project = store.project("proj").unwrap().unwrap();

    let stages = [
        (pb::ExecutorState::Preparing, "preparing"),
        (pb::ExecutorState::Prepared, "prepared"),
        (pb::ExecutorState::Executing, "executing"),
        (pb::ExecutorState::Executed, "executed"),
        (pb::ExecutorState::Finalizing, "finalizing"),
        (pb::ExecutorState::Finalized, "succeeded"),
    ];
    let mut samples = Vec::new();
    while samples.len() < 200 {
        // A job request as the run-jobs page makes it: stored, then submitted.
        let mut job_request = request("ws", now());
        job_request.sha = seeded.repo_head.clone();
        job_request.status = RequestStatus::Unknown;
        store.put_job_request(&job_request).unwrap();
        let outcome = link.submit(&job_request, &workspace, &project).await;
        let (status, message) = rap_jobserver::status::status_after_create(&outcome);
        job_request.status = status;
        job_request.status_message = message;
        store.put_job_request(&job_request).unwrap();
        let task = agent.next_task().await;

        let url = format!("http://{address}/proj/ws/{}/events", job_request.rap_id);
        let response = client
            .request(Request::get(url).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let mut events = EventReader {
            body: Body::new(response.into_body()),
            buffer: String::new(),
        };
        // The stream opens with the current state; wait until it shows the job assigned.
        events.until_code("initiated").await;
        for (stage, code) in stages {
            let complete = stage == pb::ExecutorState::Finalized;
            let results = complete.then(|| pb::RunJobResults {
                exit_code: Some(0),
                ..Default::default()
            });
            let start = Instant::now();
            agent.report(&task.id, stage, complete, results).await;
            events.until_code(code).await;
            samples.push(start.elapsed());
        }
    }
    print_percentiles(
        "agent stage update → controller (durable) → WatchJobs → job server (durable) → SSE frame on loopback",
        &mut samples,
    );
    stop.send(true).unwrap();
    watch.await.unwrap();
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

    // 4. Lists and pages with 10,000 job requests.
    ten_thousand_requests().await;

    // 5. Live updates through the real controller.
    live_update_delay().await;
}
