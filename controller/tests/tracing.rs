//! Tracing: tasks carry the job's trace context, every state change is recorded, and nothing
//! recorded names an output. Its own test binary, so the global subscriber sees every event.

use std::io::Write;
use std::sync::{Arc, Mutex};

use rap_controller::backend::Core;
use rap_controller::config::{BackendConfig, Config, TlsConfig};
use rap_controller::jobs::create::{SubmitFields, validate_request};
use rap_controller::jobs::project::{Project, ProjectAction};
use rap_controller::jobs::state::{ExecutorStage, StatusCode};
use rap_controller::jobs::{JobId, OutputPattern, Privacy, RapId};
use rap_controller::store::Store;
use rap_controller::tasks::{RunJobResults, TaskResults, TaskUpdate};
use rap_controller::watch::WatchHub;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn tasks_carry_the_trace_and_nothing_recorded_names_an_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let backend = BackendConfig::with_defaults("test");
    let config = Config {
        data_dir: dir.path().into(),
        listen: "127.0.0.1:0".into(),
        agent_listen: "127.0.0.1:0".into(),
        tls: TlsConfig {
            ca: "ca".into(),
            cert: "cert".into(),
            key: "key".into(),
        },
        allowed_github_orgs: vec!["opensafely".into()],
        allow_local_repos: false,
        git_proxy: None,
        actions_url: String::new(),
        docker_registry: "ghcr.io/opensafely-core".into(),
        scheduler_interval_ms: 1000,
        max_task_attempts: 3,
        admin_token_sha256: String::new(),
        projects_with_event_level_access: vec![],
        clients: vec![],
        backends: vec![backend.clone()],
    };
    let mut core = Core::new(&config, &backend, store.clone(), WatchHub::default()).unwrap();
    let project = Project {
        actions: vec![ProjectAction {
            name: "solo".into(),
            needs: vec![],
            run_command: "python:v2 analysis/x.py".into(),
            requires_db: false,
            outputs: vec![OutputPattern {
                name: "secret_output_name".into(),
                pattern: "output/secret_pattern_*.csv".into(),
                privacy: Privacy::ModeratelySensitive,
            }],
            action_repo: None,
        }],
    };
    let rap_id = "aaaaaaaaaaaaaaaa";
    let request = validate_request(
        SubmitFields {
            rap_id: rap_id.into(),
            backend: "test".into(),
            workspace: "ws".into(),
            repo_url: "https://github.com/opensafely/s".into(),
            branch: "main".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            database_name: "default".into(),
            requested_actions: vec!["solo".into()],
            codelists_ok: true,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..Default::default()
        },
        &config.request_rules(),
    )
    .unwrap();
    core.submit(&request, &project).unwrap();
    core.pass().unwrap();

    let job_id = JobId::derive(&RapId::parse(rap_id).unwrap(), "solo");
    let task_id = format!("{job_id}-001");
    let task = store.task(&task_id).unwrap().unwrap();
    let job = store.job(&job_id).unwrap().unwrap();
    assert!(
        job.trace_context["traceparent"].starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "the job continues the caller's trace"
    );
    assert_eq!(
        task.attributes["traceparent"],
        job.trace_context["traceparent"]
    );

    let update = |update_id, stage, complete, results| TaskUpdate {
        update_id,
        task_id: task_id.clone(),
        stage,
        complete,
        timestamp_ns: 0,
        results,
    };
    core.update("a1", &update(1, ExecutorStage::Executing, false, None))
        .unwrap();
    core.pass().unwrap();
    let results = TaskResults::Job(Box::new(RunJobResults {
        exit_code: Some(0),
        ..Default::default()
    }));
    core.update(
        "a1",
        &update(2, ExecutorStage::Finalized, true, Some(results)),
    )
    .unwrap();
    core.pass().unwrap();
    let job = store.job(&job_id).unwrap().unwrap();
    assert_eq!(job.status_code(), StatusCode::Succeeded);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for state in ["CREATED", "INITIATED", "EXECUTING"] {
        assert!(text.contains(state), "a span for leaving {state}: {text}");
    }
    assert!(text.contains("succeeded"), "{text}");
    assert!(
        !text.contains("secret_"),
        "an output name was recorded: {text}"
    );
}
