//! Behaviours of spec §7.2 against a real controller on loopback: real TLS and mutual TLS,
//! a real git repository, and a test agent speaking the real protocol.

mod common;

use common::*;
use rap_proto::pb::rap::v1 as pb;

const R1: &str = "aaaaaaaaaaaaaaaa";
const R2: &str = "bbbbbbbbbbbbbbbb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_to_success_through_the_agent_link() {
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;

    let response = client
        .submit_job(authed(
            CLIENT_TOKEN,
            submit_request(&setup, R1, &["analyse"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result, pb::SubmitResult::Success as i32);
    assert_eq!(response.count, 4);
    assert_eq!(response.details, format!("Jobs created for rap_id '{R1}'"));

    // Every job starts as created/pending, with a trace context.
    let first = wait_for_code(&mut client, R1, "analyse", pb::StatusCode::Created).await;
    assert_eq!(first[0].status, pb::State::Pending as i32);
    assert_eq!(first[0].started_at, None);
    assert!(first[0].trace_context["traceparent"].starts_with("00-"));

    let mut agent = TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "a1").await;
    let gen_task = agent.next_task().await;
    let gen_def = job_definition(&gen_task);
    assert_eq!(gen_def.action, "gen");
    assert_eq!(gen_task.id, format!("{}-001", gen_def.id));
    assert_eq!(gen_def.image, "ghcr.io/opensafely-core/ehrql:v1");
    assert!(gen_def.allow_database_access);
    assert_eq!(gen_def.study.as_ref().unwrap().commit, setup.commit);
    assert_eq!(
        gen_def.output_spec[0].privacy,
        pb::Privacy::HighlySensitive as i32
    );
    let waiting = wait_for_code(&mut client, R1, "p1", pb::StatusCode::WaitingOnDependencies).await;
    assert_eq!(
        waiting.last().unwrap().status_message,
        "Waiting on dependencies"
    );

    agent
        .report(&gen_task.id, pb::ExecutorState::Preparing, false, None)
        .await;
    wait_for_code(&mut client, R1, "gen", pb::StatusCode::Preparing).await;
    agent
        .report(&gen_task.id, pb::ExecutorState::Executing, false, None)
        .await;
    agent
        .report(
            &gen_task.id,
            pb::ExecutorState::Finalized,
            true,
            Some(pb::RunJobResults {
                exit_code: Some(0),
                metrics: Some(pb::JobMetrics {
                    cpu_peak: 50.0,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .await;
    let gen_changes = wait_for_code(&mut client, R1, "gen", pb::StatusCode::Succeeded).await;
    let codes: Vec<i32> = gen_changes.iter().map(|j| j.status_code).collect();
    for code in [
        pb::StatusCode::Initiated,
        pb::StatusCode::Preparing,
        pb::StatusCode::Executing,
    ] {
        assert!(codes.contains(&(code as i32)), "{code:?} in {codes:?}");
    }
    let done = gen_changes.last().unwrap();
    assert_eq!(done.status_message, "Completed successfully");
    assert_eq!(done.metrics.unwrap().cpu_peak, 50.0);
    let started = gen_changes
        .iter()
        .find(|j| j.status_code == pb::StatusCode::Initiated as i32)
        .unwrap()
        .started_at;
    assert!(started.is_some());
    assert_eq!(
        done.started_at, started,
        "started_at does not move after initiated"
    );

    // p1 and p2 run next, then analyse.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let task = agent.next_task().await;
        assert_eq!(
            job_definition(&task).input_job_ids,
            std::slice::from_ref(&gen_def.id)
        );
        ids.push(task.id);
    }
    for id in &ids {
        agent.run_to_exit(id, 0).await;
    }
    let analyse = agent.next_task().await;
    assert_eq!(job_definition(&analyse).action, "analyse");
    agent.run_to_exit(&analyse.id, 0).await;
    wait_for_code(&mut client, R1, "analyse", pb::StatusCode::Succeeded).await;
    for job in jobs(&mut client, R1).await {
        assert_eq!(job.status, pb::State::Succeeded as i32, "{}", job.action);
    }

    // run_all creates only what never ran (solo); an explicitly requested action re-runs
    // alone, reusing its succeeded dependency.
    let response = client
        .submit_job(authed(
            CLIENT_TOKEN,
            submit_request(&setup, R2, &["run_all"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result, pb::SubmitResult::Success as i32);
    assert_eq!(response.count, 1);
    let solo = agent.next_task().await;
    assert_eq!(job_definition(&solo).action, "solo");
    agent.run_to_exit(&solo.id, 0).await;
    wait_for_code(&mut client, R2, "solo", pb::StatusCode::Succeeded).await;
    let response = client
        .submit_job(authed(
            CLIENT_TOKEN,
            submit_request(&setup, "cccccccccccccccc", &["run_all"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result, pb::SubmitResult::NothingToDo as i32);
    assert_eq!(
        response.details,
        "All actions have already completed successfully"
    );
    assert_eq!(response.count, 0);
    let response = client
        .submit_job(authed(
            CLIENT_TOKEN,
            submit_request(&setup, "dddddddddddddddd", &["p1"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.count, 1, "gen is reused");

    // The agent's backend shows as seen.
    let status = client
        .get_backend_status(authed(CLIENT_TOKEN, pb::GetBackendStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.backends.len(), 1, "only the token's backend");
    assert_eq!(status.backends[0].slug, "test");
    assert!(status.backends[0].last_seen.is_some());
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_and_request_errors() {
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;

    client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R1, &["solo"])))
        .await
        .unwrap();
    let again = client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R1, &["solo"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.result, pb::SubmitResult::NoChange as i32);
    assert_eq!(
        again.details,
        format!("Jobs already created for rap_id '{R1}'")
    );
    assert_eq!(again.count, 1);
    let mut inconsistent = submit_request(&setup, R1, &["solo"]);
    inconsistent.workspace = "other".into();
    let err = client
        .submit_job(authed(CLIENT_TOKEN, inconsistent))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(rap_error(&err), "Inconsistent request data");
    assert_eq!(
        err.message(),
        format!("Jobs already created for rap_id '{R1}' are inconsistent with request data")
    );
    // Already pending: nothing to do for a new request of the same action.
    let scheduled = client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R2, &["solo"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduled.result, pb::SubmitResult::NothingToDo as i32);
    assert_eq!(
        scheduled.details,
        "All requested actions were already scheduled to run"
    );

    // Bad input: each a clear error, and nothing stored.
    let no_yaml_dir = setup.dir.path().join("empty-study");
    let no_yaml_commit = make_repo(&no_yaml_dir, &[]).await;
    let bad_yaml_dir = setup.dir.path().join("bad-study");
    let bad_yaml_commit = make_repo(
        &bad_yaml_dir,
        &[("project.yaml", "version: '4.0'\nactions: [1, 2]\n")],
    )
    .await;
    let missing_commit = "0123456789abcdef0123456789abcdef01234567";
    type Case = (
        &'static str,
        Box<dyn Fn(&mut pb::SubmitJobRequest)>,
        tonic::Code,
        &'static str,
        String,
    );
    let cases: Vec<Case> = vec![
        (
            "cccccccccccccccc",
            Box::new(|r| r.rap_id = "NOT-VALID".into()),
            tonic::Code::InvalidArgument,
            "Validation error",
            "Invalid request body received at $.rap_id: 'NOT-VALID' does not match '^[a-z0-9]{16}$'".into(),
        ),
        (
            "dddddddddddddddd",
            Box::new(|r| r.requested_actions.clear()),
            tonic::Code::InvalidArgument,
            "Validation error",
            "Invalid request body received at $.requested_actions: [] should be non-empty".into(),
        ),
        (
            "eeeeeeeeeeeeeeee",
            Box::new(|r| r.backend = "tpp".into()),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            "Unknown error".into(),
        ),
        (
            "ffffffffffffffff",
            Box::new(|r| r.workspace = "bad workspace".into()),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            "Invalid workspace name (allowed are alphanumeric, dash and underscore)".into(),
        ),
        (
            "gggggggggggggggg",
            Box::new(move |r| {
                r.repo_url = no_yaml_dir.display().to_string();
                r.commit = no_yaml_commit.clone();
            }),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            format!("No project.yaml file found in {}", setup.dir.path().join("empty-study").display()),
        ),
        (
            "hhhhhhhhhhhhhhhh",
            Box::new(|r| r.requested_actions = vec!["nope".into()]),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            "Action 'nope' not found in project.yaml".into(),
        ),
        (
            "iiiiiiiiiiiiiiii",
            Box::new(|r| r.commit = missing_commit.into()),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            format!("Could not find commit on branch 'main': {missing_commit}"),
        ),
        (
            "jjjjjjjjjjjjjjjj",
            Box::new(|r| r.branch = "nope".into()),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            "Could not find branch 'nope'".into(),
        ),
        (
            "kkkkkkkkkkkkkkkk",
            Box::new(|r| r.repo_url = "https://github.com/evil/study".into()),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            "Repository URL https://github.com/evil/study does not belong to one of the following Github organisations: opensafely".into(),
        ),
        (
            "llllllllllllllll",
            Box::new(|r| {
                r.codelists_ok = false;
                r.requested_actions = vec!["gen".into()];
            }),
            tonic::Code::InvalidArgument,
            "Error creating jobs",
            "Codelists are out of date (required by action gen)".into(),
        ),
    ];
    let mut rap_ids = Vec::new();
    for (rap_id, mutate, code, class, details) in cases {
        let mut request = submit_request(&setup, rap_id, &["solo"]);
        mutate(&mut request);
        let err = client
            .submit_job(authed(CLIENT_TOKEN, request))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), rap_error(&err).as_str(), err.message()),
            (code, class, details.as_str())
        );
        rap_ids.push(rap_id.to_string());
    }
    // An invalid project.yaml gives the pipeline library's message.
    let mut request = submit_request(&setup, "mmmmmmmmmmmmmmmm", &["solo"]);
    request.repo_url = bad_yaml_dir.display().to_string();
    request.commit = bad_yaml_commit;
    let err = client
        .submit_job(authed(CLIENT_TOKEN, request))
        .await
        .unwrap_err();
    assert_eq!(rap_error(&err), "Error creating jobs");
    assert!(
        !err.message().is_empty() && err.message() != "Unknown error",
        "{}",
        err.message()
    );
    rap_ids.push("mmmmmmmmmmmmmmmm".into());

    let status = client
        .get_job_status(authed(
            CLIENT_TOKEN,
            pb::GetJobStatusRequest {
                rap_ids: rap_ids.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.jobs.is_empty(),
        "nothing stored for a rejected request"
    );
    assert_eq!(status.unrecognised_rap_ids, rap_ids);

    // Tokens.
    let err = client
        .get_backend_status(tonic::Request::new(pb::GetBackendStatusRequest {}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unauthenticated, "No token provided")
    );
    let err = client
        .get_backend_status(authed("wrong", pb::GetBackendStatusRequest {}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unauthenticated, "Invalid token")
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_scoping_and_cancel_while_running() {
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R1, &["p1"])))
        .await
        .unwrap();
    let mut agent = TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "a1").await;
    let gen_def = agent.next_task().await;
    agent
        .report(&gen_def.id, pb::ExecutorState::Executing, false, None)
        .await;

    // Another backend's token cannot see or cancel these jobs.
    let err = client
        .cancel_job(authed(
            TPP_TOKEN,
            pb::CancelJobRequest {
                rap_id: R1.into(),
                actions: vec!["gen".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(rap_error(&err), "jobs not found");
    assert_eq!(err.message(), format!("No jobs found for rap_id {R1}"));
    let status = client
        .get_job_status(authed(
            TPP_TOKEN,
            pb::GetJobStatusRequest {
                rap_ids: vec![R1.into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(status.jobs.is_empty());
    assert_eq!(status.unrecognised_rap_ids, [R1]);
    let err = client
        .cancel_job(authed(
            CLIENT_TOKEN,
            pb::CancelJobRequest {
                rap_id: R1.into(),
                actions: vec!["x2".into(), "x1".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "Jobs matching requested cancelled actions could not be found: x1,x2"
    );

    let response = client
        .cancel_job(authed(
            CLIENT_TOKEN,
            pb::CancelJobRequest {
                rap_id: R1.into(),
                actions: vec!["gen".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (response.details.as_str(), response.count),
        ("1 actions cancelled", 1)
    );
    assert_eq!(agent.next_revoke().await.task_id, gen_def.id);
    let cancel = agent.next_task().await;
    assert_eq!(cancel.id, format!("{}-cancel", gen_def.id));
    assert_eq!(cancel.r#type, pb::TaskType::Canceljob as i32);
    let cancelled = wait_for_code(&mut client, R1, "gen", pb::StatusCode::CancelledByUser).await;
    let last = cancelled.last().unwrap();
    assert_eq!(
        (last.status, last.status_message.as_str()),
        (pb::State::Failed as i32, "Cancelled by user")
    );
    assert!(last.cancelled);
    wait_for_code(&mut client, R1, "p1", pb::StatusCode::DependencyFailed).await;
    agent
        .report(&cancel.id, pb::ExecutorState::Finalized, true, None)
        .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_agent_stream_loses_and_duplicates_nothing() {
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R1, &["solo"])))
        .await
        .unwrap();
    let mut agent = TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "a1").await;
    let task = agent.next_task().await;
    agent
        .send_update(update(
            &task.id,
            1,
            pb::ExecutorState::Preparing,
            false,
            None,
        ))
        .await;
    agent
        .send_update(update(
            &task.id,
            2,
            pb::ExecutorState::Executing,
            false,
            None,
        ))
        .await;
    drop(agent);

    // The same agent reconnects: the active task comes again; a resent update is a no-op.
    let mut agent = TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "a1").await;
    let again = agent.next_task().await;
    assert_eq!(again.id, task.id);
    agent
        .send_update(update(
            &task.id,
            1,
            pb::ExecutorState::Preparing,
            false,
            None,
        ))
        .await;
    agent
        .send_update(update(
            &task.id,
            2,
            pb::ExecutorState::Executing,
            false,
            None,
        ))
        .await;
    agent
        .send_update(update(
            &task.id,
            3,
            pb::ExecutorState::Finalized,
            true,
            Some(pb::RunJobResults {
                exit_code: Some(0),
                ..Default::default()
            }),
        ))
        .await;
    let changes = wait_for_code(&mut client, R1, "solo", pb::StatusCode::Succeeded).await;
    let codes: Vec<pb::StatusCode> = changes
        .iter()
        .map(|j| pb::StatusCode::try_from(j.status_code).unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            pb::StatusCode::Created,
            pb::StatusCode::Initiated,
            pb::StatusCode::Preparing,
            pb::StatusCode::Executing,
            pb::StatusCode::Succeeded
        ],
        "each state exactly once, none lost, none repeated"
    );
    // A certificate for another backend sees none of these tasks.
    let mut other = TestAgent::connect(setup.agent_pem("tpp"), controller.agent_addr, "a1").await;
    let none = tokio::time::timeout(std::time::Duration::from_millis(300), other.next_task()).await;
    assert!(none.is_err(), "tpp's agent got a test task");
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_and_prepare_for_reboot() {
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    let mut admin = admin_client(&setup.ca_pem, controller.rap_addr).await;
    let err = admin
        .set_paused(authed(
            CLIENT_TOKEN,
            pb::SetPausedRequest {
                backend: "test".into(),
                paused: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unauthenticated,
        "a client token is not an admin token"
    );

    client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R1, &["solo"])))
        .await
        .unwrap();
    let mut agent = TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "a1").await;
    let task = agent.next_task().await;
    agent
        .report(&task.id, pb::ExecutorState::Executing, false, None)
        .await;
    admin
        .prepare_for_reboot(authed(
            ADMIN_TOKEN,
            pb::PrepareForRebootRequest {
                backend: "test".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(agent.next_revoke().await.task_id, task.id);
    assert_eq!(agent.next_task().await.id, format!("{}-cancel", task.id));
    let changes = wait_for_code(&mut client, R1, "solo", pb::StatusCode::WaitingOnReboot).await;
    let last = changes.last().unwrap();
    assert_eq!(last.status, pb::State::Pending as i32);
    assert_eq!(last.started_at, None);
    let status = client
        .get_backend_status(authed(CLIENT_TOKEN, pb::GetBackendStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    let paused = status.backends[0].paused.clone().unwrap();
    assert_eq!(paused.status, "on");
    assert!(paused.since.is_some());

    admin
        .set_paused(authed(
            ADMIN_TOKEN,
            pb::SetPausedRequest {
                backend: "test".into(),
                paused: false,
            },
        ))
        .await
        .unwrap();
    let retry = agent.next_task().await;
    assert_eq!(retry.id, format!("{}-002", job_definition(&task).id));
    let tasks = admin
        .list_tasks(authed(
            ADMIN_TOKEN,
            pb::ListTasksRequest {
                backend: "test".into(),
                include_inactive: true,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 3, "001, its cancel, 002");
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_requests_survive_a_restart() {
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    client
        .submit_job(authed(
            CLIENT_TOKEN,
            submit_request(&setup, R1, &["analyse"]),
        ))
        .await
        .unwrap();
    controller.stop().await;

    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    assert_eq!(jobs(&mut client, R1).await.len(), 4);
    let again = client
        .submit_job(authed(
            CLIENT_TOKEN,
            submit_request(&setup, R1, &["analyse"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.result, pb::SubmitResult::NoChange as i32);
    let mut agent = TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "a1").await;
    assert_eq!(job_definition(&agent.next_task().await).action, "gen");
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_return_within_the_grace_period_loses_its_tasks() {
    let setup = Setup::new(|config| config.agent_lease_grace_s = 1).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    let mut admin = admin_client(&setup.ca_pem, controller.rap_addr).await;
    let mut first =
        TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "first").await;
    client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R1, &["solo"])))
        .await
        .unwrap();
    let task = first.next_task().await;
    first
        .report(&task.id, pb::ExecutorState::Preparing, false, None)
        .await;
    let mut second =
        TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "second").await;

    // The lessee goes away for good: after the grace period the task is offered to the other
    // agent of the backend, which runs it to the end.
    drop(first);
    let moved = second.next_task().await;
    assert_eq!(moved.id, task.id);

    // It comes back still running the task: its update is ignored and it is told to stop.
    let mut first =
        TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "first").await;
    first
        .report(&task.id, pb::ExecutorState::Executing, false, None)
        .await;
    assert_eq!(
        first.next_revoke().await,
        pb::Revoke {
            task_id: task.id.clone(),
            reason: pb::RevokeReason::LeaseMoved as i32,
        }
    );
    second.run_to_exit(&task.id, 0).await;
    wait_for_code(&mut client, R1, "solo", pb::StatusCode::Succeeded).await;
    let tasks = admin
        .list_tasks(authed(
            ADMIN_TOKEN,
            pb::ListTasksRequest {
                backend: "test".into(),
                include_inactive: true,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].leased_to, "second");
    assert!(tasks[0].agent_complete);
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_older_than_the_compacted_change_log_is_told_to_resync() {
    let setup = Setup::new(|_| {}).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    client
        .submit_job(authed(CLIENT_TOKEN, submit_request(&setup, R1, &["solo"])))
        .await
        .unwrap();
    controller.stop().await;

    // Every change so far is past retention: compact them all, as the periodic task would.
    let through = {
        let store = rap_controller::store::Store::open(&setup.config.data_dir.join("db")).unwrap();
        store.mark_changes(1).unwrap();
        let removed = store.compact_changes(1).unwrap();
        assert!(removed >= 1);
        store.flush().await.unwrap();
        store.compacted_through()
    };

    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    let mut stale = client
        .watch_jobs(authed(
            CLIENT_TOKEN,
            pb::WatchJobsRequest { after_cursor: 0 },
        ))
        .await
        .unwrap()
        .into_inner();
    let status = tokio::time::timeout(WAIT, stale.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "cursor 0 is older than the change log keeps (changes through cursor {through} were \
             removed): resync with GetJobStatus, then watch after cursor {through}"
        )
    );
    assert_eq!(
        status.metadata().get(rap_proto::WATCH_RESUME_AFTER_KEY),
        Some(&through.into()),
        "the bound is in metadata for programs"
    );

    // The resync path works: the jobs are still there, and watching after the bound follows.
    assert_eq!(jobs(&mut client, R1).await.len(), 1);
    let mut resynced = client
        .watch_jobs(authed(
            CLIENT_TOKEN,
            pb::WatchJobsRequest {
                after_cursor: through,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut request = submit_request(&setup, R2, &["solo"]);
    request.workspace = "other".into();
    client
        .submit_job(authed(CLIENT_TOKEN, request))
        .await
        .unwrap();
    let change = tokio::time::timeout(WAIT, resynced.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(change.cursor > through);
    assert_eq!(change.job.unwrap().rap_id, R2);
    controller.stop().await;
}
