//! Task runners over the real Docker executor: the stage sequence a RUNJOB reports, capacity,
//! cancellation, fatal errors, and recovery after the agent dies mid-job.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use pb::ExecutorState as S;
use rap_agent::executor::docker::DockerExecutor;
use rap_agent::job::Privacy;
use rap_agent::layout::Layout;
use rap_agent::outbox::Outbox;
use rap_agent::task::Tasks;
use rap_proto::pb::rap::v1 as pb;
use tokio::sync::mpsc;

/// What an agent process holds: task runners over `executor` with room for `job_capacity`
/// jobs (and one database job), the updates they announce, and the outbox in `outbox_dir`
/// that keeps those updates until acknowledged.
fn start_agent(
    executor: DockerExecutor,
    outbox_dir: &Path,
    job_capacity: usize,
) -> (
    Tasks<DockerExecutor>,
    mpsc::Receiver<pb::TaskUpdate>,
    Arc<Outbox>,
) {
    let (outbox, updates) = Outbox::open(outbox_dir).unwrap();
    let outbox = Arc::new(outbox);
    let tasks = Tasks::new(Arc::new(executor), outbox.clone(), job_capacity, 1);
    (tasks, updates, outbox)
}

fn job_results(update: &pb::TaskUpdate) -> &pb::RunJobResults {
    match &update.results {
        Some(pb::task_update::Results::Job(results)) => results,
        other => panic!("no job results: {other:?}"),
    }
}

#[tokio::test]
async fn a_runjob_task_reports_every_stage_with_agent_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let (mut tasks, mut updates, _) = start_agent(
        executor(&work).await,
        &Layout::new(work.clone()).outbox(),
        2,
    );
    let mut job = new_job(
        &unique_id("stages"),
        &repo,
        &commit,
        "mkdir -p output && echo 1 > output/a.csv",
    );
    job.output_spec = vec![output("output/a.csv", Privacy::HighlySensitive)];
    tasks.start(runjob_task(&job));
    // A repeated task (the controller resends on reconnect) does not start a second runner.
    tasks.start(runjob_task(&job));
    let seen = updates_until_complete(&mut updates, &job.task_id).await;
    let stages: Vec<S> = seen.iter().map(stage).collect();
    assert_eq!(
        stages,
        vec![
            S::Preparing,
            S::Prepared,
            S::Executing,
            S::Finalizing,
            S::Finalized
        ]
    );
    assert!(seen.iter().all(|update| update.timestamp_ns > 0));
    assert!(
        seen.windows(2)
            .all(|pair| pair[0].update_id < pair[1].update_id)
    );
    let results = job_results(seen.last().unwrap());
    assert_eq!(results.exit_code, Some(0));
    assert_eq!(results.status_message, "Completed successfully");
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_fatal_error_ends_the_task_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let (mut tasks, mut updates, _) = start_agent(
        executor(&work).await,
        &Layout::new(work.clone()).outbox(),
        2,
    );
    let mut job = new_job(&unique_id("fatal"), &repo, &commit, "true");
    job.image = "rap.test/python:v2".into();
    tasks.start(runjob_task(&job));
    let seen = updates_until_complete(&mut updates, &job.task_id).await;
    let last = seen.last().unwrap();
    assert_eq!(stage(last), S::Error);
    let error = job_results(last).error.clone().unwrap();
    assert_eq!(error.kind, pb::ErrorKind::Fatal as i32);
    assert_eq!(
        error.message,
        "Docker image rap.test/python:v2 is not allowed on this backend"
    );
    tasks.shutdown().await;
}

#[tokio::test]
async fn capacity_holds_a_second_job_until_the_first_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let layout = Layout::new(work.clone());
    let (mut tasks, mut updates, _) = start_agent(executor(&work).await, &layout.outbox(), 1);
    let first = new_job(
        &unique_id("cap-a"),
        &repo,
        &commit,
        "while [ ! -f go ]; do sleep 0.05; done",
    );
    let second = new_job(&unique_id("cap-b"), &repo, &commit, "true");
    let _guards = [
        ContainerGuard::for_job(&first),
        ContainerGuard::for_job(&second),
    ];
    tasks.start(runjob_task(&first));
    tasks.start(runjob_task(&second));
    loop {
        let update = next_update(&mut updates).await;
        assert_ne!(
            update.task_id, second.task_id,
            "second job started over capacity"
        );
        if update.task_id == first.task_id && stage(&update) == S::Executing {
            break;
        }
    }
    std::fs::write(layout.job_dir(&first).join("go"), "").unwrap();
    let seen = updates_until_complete(&mut updates, &second.task_id).await;
    let first_done = seen
        .iter()
        .position(|u| u.task_id == first.task_id && u.complete)
        .expect("first finished");
    let second_started = seen
        .iter()
        .position(|u| u.task_id == second.task_id)
        .unwrap();
    assert!(first_done < second_started);
    tasks.shutdown().await;
}

/// A job that writes `output/a.csv` (declared highly sensitive) and then sleeps until stopped, with
/// the guard that removes its container.
fn job_that_writes_an_output_then_sleeps(
    name: &str,
    repo: &Path,
    commit: &str,
) -> (rap_agent::job::JobDefinition, ContainerGuard) {
    let mut job = new_job(
        &unique_id(name),
        repo,
        commit,
        "mkdir -p output && echo 1 > output/a.csv && sleep 300",
    );
    job.output_spec = vec![output("output/a.csv", Privacy::HighlySensitive)];
    let container = ContainerGuard::for_job(&job);
    (job, container)
}

#[tokio::test]
async fn cancel_while_running_kills_the_container_and_reports_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let layout = Layout::new(work.clone());
    let (mut tasks, mut updates, _) = start_agent(executor(&work).await, &layout.outbox(), 2);
    let (job, _container) = job_that_writes_an_output_then_sleeps("cancel-task", &repo, &commit);
    tasks.start(runjob_task(&job));
    next_update_at(&mut updates, S::Executing).await;
    let cancel = canceljob_task(&job);
    tasks.start(cancel.clone());
    let seen = updates_until_complete(&mut updates, &cancel.id).await;
    assert!(
        seen.iter().all(|update| update.task_id == cancel.id),
        "the RUNJOB runner stopped silently: {seen:?}"
    );
    let stages: Vec<S> = seen.iter().map(stage).collect();
    assert_eq!(stages, vec![S::Executing, S::Executed, S::Finalized]);
    let results = job_results(seen.last().unwrap());
    assert!(results.cancelled);
    assert_eq!(results.exit_code, Some(137));
    assert_eq!(results.status_message, "Job cancelled by system");
    assert!(!layout.high_workspace(&job).join("output/a.csv").exists());
    assert!(!layout.job_dir(&job).exists());
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_task_whose_lease_moved_is_stopped_and_discarded_without_outputs_or_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let layout = Layout::new(work.clone());
    let (mut tasks, mut updates, _) = start_agent(executor(&work).await, &layout.outbox(), 2);
    let (job, _container) = job_that_writes_an_output_then_sleeps("lease-moved", &repo, &commit);
    let task = runjob_task(&job);
    tasks.start(task.clone());
    next_update_at(&mut updates, S::Executing).await;
    tasks.abandon(&task.id);
    // Shutdown waits for every runner, the discarding one included.
    within(tasks.shutdown()).await;
    let docker = bollard::Docker::connect_with_unix_defaults().unwrap();
    let inspected = docker
        .inspect_container(&job.container_name(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            inspected,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }
        ),
        "the container is gone: {inspected:?}"
    );
    assert!(!layout.job_dir(&job).exists());
    assert!(!layout.high_workspace(&job).join("output/a.csv").exists());
    assert!(
        updates.try_recv().is_err(),
        "nothing reported after the lease moved"
    );
}

#[tokio::test]
async fn cancel_before_start_finalizes_as_cancelled_without_running_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let layout = Layout::new(work.clone());
    let (mut tasks, mut updates, _) = start_agent(executor(&work).await, &layout.outbox(), 2);
    let job = new_job(&unique_id("cancel-early"), &repo, &commit, "true");
    let cancel = canceljob_task(&job);
    tasks.start(cancel.clone());
    let seen = updates_until_complete(&mut updates, &cancel.id).await;
    let stages: Vec<S> = seen.iter().map(stage).collect();
    assert_eq!(stages, vec![S::Unknown, S::Finalized]);
    let results = job_results(seen.last().unwrap());
    assert!(results.cancelled);
    assert_eq!(results.exit_code, None);
    assert!(!layout.job_dir(&job).exists());
    assert!(!layout.high_workspace(&job).exists());
    tasks.shutdown().await;
}

#[tokio::test]
async fn an_agent_killed_mid_job_adopts_the_container_and_finishes_once() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let layout = Layout::new(work.clone());
    let mut job = new_job(
        &unique_id("recover"),
        &repo,
        &commit,
        "mkdir -p output && echo started >> output/starts.txt \
         && while [ ! -f go ]; do sleep 0.05; done",
    );
    job.output_spec = vec![output("output/starts.txt", Privacy::HighlySensitive)];
    let _container = ContainerGuard::for_job(&job);

    let started_at = {
        let (mut tasks, mut updates, _) = start_agent(executor(&work).await, &layout.outbox(), 2);
        tasks.start(runjob_task(&job));
        let executing = next_update_at(&mut updates, S::Executing).await;
        // The agent dies: every runner is aborted where it stands, nothing is acknowledged.
        tasks.abort();
        executing.timestamp_ns
    };

    // A new agent on the same work directory: unacknowledged updates are still queued, and the
    // controller resends the task.
    let (mut tasks, mut updates, outbox) = start_agent(executor(&work).await, &layout.outbox(), 2);
    let queued: Vec<S> = outbox.pending().iter().map(stage).collect();
    assert_eq!(queued, vec![S::Preparing, S::Prepared, S::Executing]);
    tasks.start(runjob_task(&job));
    let adopted = next_update(&mut updates).await;
    assert_eq!(stage(&adopted), S::Executing, "adopted, not prepared again");
    assert_eq!(adopted.timestamp_ns, started_at, "the same container");
    std::fs::write(layout.job_dir(&job).join("go"), "").unwrap();
    let seen = updates_until_complete(&mut updates, &job.task_id).await;
    let stages: Vec<S> = seen.iter().map(stage).collect();
    assert_eq!(stages, vec![S::Finalizing, S::Finalized]);
    let results = job_results(seen.last().unwrap()).clone();
    assert_eq!(results.exit_code, Some(0));
    let starts =
        std::fs::read_to_string(layout.high_workspace(&job).join("output/starts.txt")).unwrap();
    assert_eq!(starts, "started\n", "the container ran once");
    tasks.shutdown().await;

    // Once more after the end: the same result is reported again, nothing re-runs.
    let (mut tasks, mut updates, _) =
        start_agent(executor(&work).await, &dir.path().join("outbox-2"), 2);
    tasks.start(runjob_task(&job));
    let again = next_update(&mut updates).await;
    assert!(again.complete);
    assert_eq!(stage(&again), S::Finalized);
    assert_eq!(job_results(&again), &results);
    tasks.shutdown().await;
}

/// Builds `rap.test/<name>:latest` from the busybox image, with `script` as `/bin/<command>`
/// (a database utilities image with one command).
async fn db_utility_image(docker: &bollard::Docker, name: &str, command: &str, script: &str) {
    let image = name;
    use bollard::query_parameters::{
        CommitContainerOptionsBuilder, CreateContainerOptionsBuilder,
        RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
    };
    use futures_util::StreamExt;
    let name = unique_id(&format!("{image}-build"));
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            bollard::models::ContainerCreateBody {
                image: Some(IMAGE.into()),
                user: Some("0:0".into()),
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    format!("printf '%s' '{script}' > /bin/{command} && chmod 755 /bin/{command}"),
                ]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&name, None).await.unwrap();
    let wait = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let _ = within(docker.wait_container(&name, Some(wait)).next()).await;
    docker
        .commit_container(
            CommitContainerOptionsBuilder::default()
                .container(&name)
                .repo(&format!("rap.test/{image}"))
                .tag("latest")
                .build(),
            bollard::models::ContainerConfig::default(),
        )
        .await
        .unwrap();
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&name, Some(remove)).await.unwrap();
}

#[tokio::test]
async fn a_dbstatus_task_runs_the_check_on_the_database_network_and_reports_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    // Reports maintenance only if it was given a database URL.
    db_utility_image(
        &docker,
        "dbstatus",
        "in_maintenance_mode",
        "#!/bin/sh\necho checking the database\n\
         if [ -n \"$DATABASE_URL\" ]; then echo \"db-maintenance;1\"; else echo \"none;0\"; fi\n",
    )
    .await;
    let network = unique_id("rap-test-dbstatus");
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            internal: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut config = docker_config(&work);
    config.allowed_images = vec!["busybox".into(), "dbstatus".into()];
    config.database_network = network.clone();
    config.database_url = rap_agent::executor::docker::DatabaseUrl::new("mssql://u:p@db/x".into());
    let (mut tasks, mut updates, _) = start_agent(
        DockerExecutor::connect(config).await.unwrap(),
        &Layout::new(work.clone()).outbox(),
        2,
    );
    let task = |id: &str, image: &str| pb::Task {
        id: id.into(),
        backend: "test".into(),
        r#type: pb::TaskType::Dbstatus as i32,
        definition: Some(pb::task::Definition::DbStatus(pb::DbStatusDefinition {
            database_name: "default".into(),
            image: image.into(),
        })),
        ..Default::default()
    };
    let ok_id = unique_id("dbstatus");
    tasks.start(task(&ok_id, "rap.test/dbstatus:latest"));
    let update = next_update(&mut updates).await;
    let _ = docker.remove_network(&network).await;
    assert_eq!(update.task_id, ok_id);
    assert!(update.complete);
    assert_eq!(stage(&update), S::Unspecified);
    match update.results {
        Some(pb::task_update::Results::DbStatus(results)) => {
            assert_eq!(results.status, "db-maintenance");
            assert_eq!(results.error, None);
        }
        other => panic!("{other:?}"),
    }

    let refused_id = unique_id("dbstatus-refused");
    tasks.start(task(&refused_id, "docker.io/library/busybox:latest"));
    let update = next_update(&mut updates).await;
    match update.results {
        Some(pb::task_update::Results::DbStatus(results)) => {
            let error = results.error.unwrap();
            assert_eq!(error.kind, pb::ErrorKind::Fatal as i32);
            assert!(
                error.message.contains("is not allowed"),
                "{}",
                error.message
            );
        }
        other => panic!("{other:?}"),
    }
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_dbdatacheck_task_reports_ok_or_failed_and_never_echoes_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    // OK for the expected month, FAILED for the next; anything else prints the database URL,
    // which must not reach the controller. Without a URL in its environment it prints nothing
    // valid either.
    db_utility_image(
        &docker,
        "dbdatacheck",
        "hes_cutoff_date_check",
        "#!/bin/sh\necho checking HES activity up to $1\n\
         [ -n \"$DATABASE_URL\" ] || exit 0\n\
         case \"$1\" in 202304) echo OK;; 202305) echo FAILED;; *) echo \"$DATABASE_URL\";; esac\n",
    )
    .await;
    let network = unique_id("rap-test-dbdatacheck");
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            internal: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut config = docker_config(&work);
    config.allowed_images = vec!["dbdatacheck".into()];
    config.database_network = network.clone();
    config.database_url =
        rap_agent::executor::docker::DatabaseUrl::new("mssql://u:secret-pw@db/x".into());
    let (mut tasks, mut updates, _) = start_agent(
        DockerExecutor::connect(config).await.unwrap(),
        &Layout::new(work.clone()).outbox(),
        2,
    );
    let mut check = |month: &str| {
        let id = unique_id("dbdatacheck");
        tasks.start(pb::Task {
            id: id.clone(),
            backend: "test".into(),
            r#type: pb::TaskType::Dbdatacheck as i32,
            definition: Some(pb::task::Definition::DbDataCheck(
                pb::DbDataCheckDefinition {
                    hes_expected_activity_month: month.into(),
                    image: "rap.test/dbdatacheck:latest".into(),
                },
            )),
            ..Default::default()
        });
        id
    };
    let mut results = Vec::new();
    for month in ["202304", "202305", "999999"] {
        let id = check(month);
        let update = next_update(&mut updates).await;
        assert_eq!(update.task_id, id);
        assert!(update.complete);
        assert_eq!(stage(&update), S::Unspecified);
        match update.results {
            Some(pb::task_update::Results::DbDataCheck(r)) => results.push(r),
            other => panic!("{other:?}"),
        }
    }
    let _ = docker.remove_network(&network).await;
    assert_eq!(
        (results[0].status.as_str(), &results[0].error),
        ("OK", &None)
    );
    assert_eq!(
        (results[1].status.as_str(), &results[1].error),
        ("FAILED", &None)
    );
    assert_eq!(results[2].status, "");
    assert_eq!(
        results[2].error,
        Some(pb::TaskError {
            kind: pb::ErrorKind::Retryable as i32,
            message: "Invalid status from the database data check".into(),
        }),
        "the value printed is not echoed"
    );
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_new_task_for_a_running_job_takes_it_over_without_a_second_container() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let layout = Layout::new(work.clone());
    let (mut tasks, mut updates, _) = start_agent(executor(&work).await, &layout.outbox(), 2);
    let mut job = new_job(
        &unique_id("takeover"),
        &repo,
        &commit,
        "mkdir -p output && echo started >> output/starts.txt \
         && while [ ! -f output/go.txt ]; do sleep 0.05; done",
    );
    job.output_spec = vec![output("output/*.txt", Privacy::HighlySensitive)];
    let _container = ContainerGuard::for_job(&job);
    tasks.start(runjob_task(&job));
    let executing = next_update_at(&mut updates, S::Executing).await;
    let mut retry = job.clone();
    retry.task_id = format!("{}-002", job.id);
    tasks.start(runjob_task(&retry));
    let adopted = next_update(&mut updates).await;
    assert_eq!(
        adopted.task_id, retry.task_id,
        "the first runner stopped silently"
    );
    assert_eq!(stage(&adopted), S::Executing);
    assert_eq!(adopted.timestamp_ns, executing.timestamp_ns);
    // EXECUTING means the container started, not that its command has run yet: wait (bounded)
    // for the job's own first write before answering it, or `output/` may not exist.
    let started = layout.job_dir(&job).join("output/starts.txt");
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !started.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the job's command never started");
    std::fs::write(layout.job_dir(&job).join("output/go.txt"), "").unwrap();
    let seen = updates_until_complete(&mut updates, &retry.task_id).await;
    assert!(seen.iter().all(|update| update.task_id == retry.task_id));
    assert_eq!(job_results(seen.last().unwrap()).exit_code, Some(0));
    let starts =
        std::fs::read_to_string(layout.high_workspace(&job).join("output/starts.txt")).unwrap();
    assert_eq!(starts, "started\n");
    tasks.shutdown().await;
}

/// The aggregates the executor has saved for a running job, if any yet.
fn saved_metrics(layout: &Layout, job_id: &str) -> Option<serde_json::Value> {
    let bytes = std::fs::read(layout.temp().join(format!("metrics-{job_id}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[tokio::test]
async fn metrics_continue_across_an_agent_restart_and_reach_the_final_result() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let layout = Layout::new(work.clone());
    // Until `go`: one CPU busy and ~40 MB held (tail buffers its whole input). After `go`: idle
    // and small for 3 s, so an agent that started its aggregates afresh would see small peaks.
    let job = new_job(
        &unique_id("metrics-adopt"),
        &repo,
        &commit,
        "(while [ ! -f go ]; do :; done) & \
         head -c 40m /dev/zero | tail | (while [ ! -f go ]; do sleep 0.05; done; cat > /dev/null); \
         wait; sleep 3",
    );
    let _container = ContainerGuard::for_job(&job);

    {
        let (mut tasks, _updates, _) = start_agent(executor(&work).await, &layout.outbox(), 2);
        tasks.start(runjob_task(&job));
        // The first agent's samples of the busy phase reach the disk (bounded wait).
        within(async {
            loop {
                let saved = saved_metrics(&layout, &job.id);
                let busy = saved.as_ref().is_some_and(|saved| {
                    saved["mem_mb_peak"].as_f64().unwrap_or(0.0) >= 30.0
                        && saved["cpu_peak"].as_f64().unwrap_or(0.0) > 10.0
                });
                if busy {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await;
        tasks.abort();
    }

    let (mut tasks, mut updates, _) = start_agent(executor(&work).await, &layout.outbox(), 2);
    tasks.start(runjob_task(&job));
    let adopted = next_update(&mut updates).await;
    assert_eq!(stage(&adopted), S::Executing, "adopted, not prepared again");
    std::fs::write(layout.job_dir(&job).join("go"), "").unwrap();
    let seen = updates_until_complete(&mut updates, &job.task_id).await;
    let results = job_results(seen.last().unwrap());
    assert_eq!(results.exit_code, Some(0));
    let metrics = results.metrics.expect("metrics in the result");
    assert!(
        metrics.mem_mb_peak >= 30.0,
        "the peak from before the restart: {metrics:?}"
    );
    assert!(metrics.cpu_peak > 10.0, "{metrics:?}");
    assert!(metrics.mem_mb_mean > 0.0 && metrics.mem_mb_mean <= metrics.mem_mb_peak);
    assert!(metrics.cpu_mean > 0.0 && metrics.cpu_mean <= metrics.cpu_peak);
    assert!(
        saved_metrics(&layout, &job.id).is_none(),
        "the saved aggregates are removed with the job"
    );
    tasks.shutdown().await;
}
