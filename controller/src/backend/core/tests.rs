//! Scheduler behaviours of spec §7.2, driven through [`Core`] with a temporary store.

use super::*;
use crate::config::{BackendConfig, Config, TlsConfig};
use crate::jobs::create::{SubmitFields, validate_request};
use crate::jobs::project::ProjectAction;
use crate::tasks::TaskError;

struct World {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    core: Core,
}

fn config(backend: BackendConfig) -> Config {
    Config {
        data_dir: "/nonexistent".into(),
        listen: "127.0.0.1:0".into(),
        agent_listen: "127.0.0.1:0".into(),
        tls: TlsConfig {
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "k.pem".into(),
        },
        allowed_github_orgs: vec!["opensafely".into()],
        allow_local_repos: false,
        git_proxy: None,
        actions_url: String::new(),
        docker_registry: "ghcr.io/opensafely-core".into(),
        scheduler_interval_ms: 1000,
        max_task_attempts: 3,
        agent_lease_grace_s: 300,
        change_log_retention_s: 0,
        admin_token_sha256: String::new(),
        projects_with_event_level_access: vec![],
        clients: vec![],
        backends: vec![backend],
    }
}

fn world_with(backend: BackendConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let config = config(backend.clone());
    let core = Core::new(&config, &backend, store.clone(), WatchHub::default()).unwrap();
    World {
        _dir: dir,
        store,
        core,
    }
}

fn world() -> World {
    world_with(BackendConfig::with_defaults("test"))
}

fn action(name: &str, needs: &[&str], db: bool) -> ProjectAction {
    ProjectAction {
        name: name.into(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        run_command: if db {
            "ehrql:v1 generate-dataset analysis/d.py --output 'out/x y.csv'".into()
        } else {
            "python:v2 analysis/x.py".into()
        },
        requires_db: db,
        outputs: vec![],
        action_repo: None,
    }
}

fn project() -> Project {
    Project {
        actions: vec![
            action("gen", &[], true),
            action("p1", &["gen"], false),
            action("p2", &["gen"], false),
            action("analyse", &["p1", "p2"], false),
            action("solo", &[], false),
            action("solo2", &[], false),
            action("db2", &[], true),
        ],
    }
}

fn request(rap_id: &str, actions: &[&str]) -> JobRequest {
    validate_request(
        SubmitFields {
            rap_id: rap_id.into(),
            backend: "test".into(),
            workspace: "ws".into(),
            repo_url: "https://github.com/opensafely/s".into(),
            branch: "main".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            database_name: "default".into(),
            requested_actions: actions.iter().map(|a| a.to_string()).collect(),
            codelists_ok: true,
            ..Default::default()
        },
        &config(BackendConfig::with_defaults("test")).request_rules(),
    )
    .unwrap()
}

impl World {
    fn submit(&mut self, rap_id: &str, actions: &[&str]) -> SubmitOutcome {
        self.core
            .submit(&request(rap_id, actions), &project())
            .unwrap()
    }

    fn job(&self, rap_id: &str, action: &str) -> Job {
        let id = JobId::derive(&RapId::parse(rap_id).unwrap(), action);
        self.store.job(&id).unwrap().unwrap()
    }

    fn code(&self, rap_id: &str, action: &str) -> (State, StatusCode, String) {
        let job = self.job(rap_id, action);
        (job.state(), job.status_code(), job.status.status_message)
    }

    fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .store
            .active_tasks("test")
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        ids.sort();
        ids
    }

    fn report(
        &mut self,
        task_id: &str,
        stage: ExecutorStage,
        complete: bool,
        results: Option<RunJobResults>,
    ) {
        let previous = self.store.task(task_id).unwrap().unwrap().last_update_id;
        self.core
            .update(
                "agent-1",
                &TaskUpdate {
                    update_id: previous + 1,
                    task_id: task_id.into(),
                    stage,
                    complete,
                    timestamp_ns: now_ns(),
                    results: results.map(|r| TaskResults::Job(Box::new(r))),
                },
            )
            .unwrap();
    }

    fn finish(&mut self, task_id: &str, exit_code: i32) {
        self.report(
            task_id,
            ExecutorStage::Finalized,
            true,
            Some(RunJobResults {
                exit_code: Some(exit_code),
                ..Default::default()
            }),
        );
    }
}

const R1: &str = "aaaaaaaaaaaaaaaa";
const R2: &str = "bbbbbbbbbbbbbbbb";

fn id(rap_id: &str, action: &str) -> String {
    JobId::derive(&RapId::parse(rap_id).unwrap(), action).to_string()
}

#[test]
fn happy_path_and_idempotent_submit() {
    let mut w = world();
    assert_eq!(w.submit(R1, &["solo"]), SubmitOutcome::Created(1));
    let job = w.job(R1, "solo");
    assert_eq!(
        (job.state(), job.status_code()),
        (State::Pending, StatusCode::Created)
    );
    assert_eq!(job.status.started_at, None);
    assert_eq!(w.submit(R1, &["solo"]), SubmitOutcome::NoChange(1));
    let mut other = request(R1, &["solo"]);
    other.workspace = "other".into();
    assert_eq!(
        w.core.submit(&other, &project()).unwrap_err().to_string(),
        format!("Jobs already created for rap_id '{R1}' are inconsistent with request data")
    );
}

#[test]
fn fan_out_runs_only_the_root_then_fails_dependents() {
    let mut w = world();
    assert_eq!(w.submit(R1, &["analyse"]), SubmitOutcome::Created(4));
    w.core.pass().unwrap();
    let gen_task = format!("{}-001", id(R1, "gen"));
    assert_eq!(w.task_ids(), vec![gen_task.clone()]);
    assert_eq!(
        w.code(R1, "gen"),
        (
            State::Running,
            StatusCode::Initiated,
            "Job executing on the backend".into()
        )
    );
    assert!(w.job(R1, "gen").status.started_at.is_some());
    for action in ["p1", "p2", "analyse"] {
        assert_eq!(
            w.code(R1, action),
            (
                State::Pending,
                StatusCode::WaitingOnDependencies,
                "Waiting on dependencies".into()
            )
        );
    }
    // The definition carries what the agent needs, and no image digest we cannot resolve.
    let task = w.store.task(&gen_task).unwrap().unwrap();
    let TaskDefinition::Job(definition) = &task.definition else {
        panic!()
    };
    assert_eq!(definition.image, "ghcr.io/opensafely-core/ehrql:v1");
    assert_eq!(
        definition.args,
        [
            "generate-dataset",
            "analysis/d.py",
            "--output",
            "out/x y.csv"
        ]
    );
    assert!(definition.allow_database_access);
    assert_eq!(definition.env["OPENSAFELY_BACKEND"], "test");
    assert_eq!(definition.task_id, gen_task);

    w.report(&gen_task, ExecutorStage::Executing, false, None);
    w.core.pass().unwrap();
    assert_eq!(w.code(R1, "gen").1, StatusCode::Executing);
    let started = w.job(R1, "gen").status.started_at;

    w.finish(&gen_task, 4);
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "gen"),
        (
            State::Failed,
            StatusCode::NonzeroExit,
            "Job exited with an error: New data is being imported into the database, please try again in a few hours".into()
        )
    );
    assert_eq!(w.job(R1, "gen").status.started_at, started);
    w.core.pass().unwrap();
    for action in ["p1", "p2"] {
        assert_eq!(
            w.code(R1, action),
            (
                State::Failed,
                StatusCode::DependencyFailed,
                "Not starting as dependency failed".into()
            )
        );
    }
    w.core.pass().unwrap();
    assert_eq!(w.code(R1, "analyse").1, StatusCode::DependencyFailed);
    assert!(w.task_ids().is_empty(), "no task for failed dependents");

    // A later request re-runs the failed dependency (§7.2 item 6).
    assert_eq!(w.submit(R2, &["p1"]), SubmitOutcome::Created(2));
}

#[test]
fn success_then_reuse_and_input_job_ids() {
    let mut w = world();
    w.submit(R1, &["p1"]);
    w.core.pass().unwrap();
    w.finish(&format!("{}-001", id(R1, "gen")), 0);
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "gen"),
        (
            State::Succeeded,
            StatusCode::Succeeded,
            "Completed successfully".into()
        )
    );
    w.core.pass().unwrap();
    let p1_task = format!("{}-001", id(R1, "p1"));
    assert_eq!(w.task_ids(), vec![p1_task.clone()]);
    let task = w.store.task(&p1_task).unwrap().unwrap();
    let TaskDefinition::Job(definition) = &task.definition else {
        panic!()
    };
    assert_eq!(definition.input_job_ids, [id(R1, "gen")]);
    assert!(!definition.allow_database_access);

    w.report(
        &p1_task,
        ExecutorStage::Finalized,
        true,
        Some(RunJobResults {
            exit_code: Some(0),
            has_level4_excluded_files: true,
            ..Default::default()
        }),
    );
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "p1").2,
        "Completed successfully, but some file(s) marked as moderately_sensitive were excluded. See job log for details."
    );
    assert_eq!(
        w.submit(R2, &["p1"]),
        SubmitOutcome::Created(1),
        "gen is reused"
    );
    assert!(w.job(R2, "p1").wait_for_job_ids.is_empty());
}

#[test]
fn unmatched_patterns_and_agent_messages() {
    let mut w = world();
    w.submit(R1, &["solo", "solo2"]);
    w.core.pass().unwrap();
    w.report(
        &format!("{}-001", id(R1, "solo")),
        ExecutorStage::Finalized,
        true,
        Some(RunJobResults {
            exit_code: Some(0),
            has_unmatched_patterns: true,
            ..Default::default()
        }),
    );
    w.report(
        &format!("{}-001", id(R1, "solo2")),
        ExecutorStage::Finalized,
        true,
        Some(RunJobResults {
            exit_code: Some(137),
            status_message: "Job killed by OpenSAFELY admin or memory limits".into(),
            ..Default::default()
        }),
    );
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "solo"),
        (
            State::Failed,
            StatusCode::UnmatchedPatterns,
            "Outputs matching expected patterns were not found. See job log for details.".into()
        )
    );
    assert_eq!(
        w.code(R1, "solo2").2,
        "Job exited with an error: Job killed by OpenSAFELY admin or memory limits"
    );
}

#[test]
fn cancel_before_start_creates_no_cancel_task() {
    let mut w = world();
    w.submit(R1, &["solo"]);
    assert_eq!(
        w.core
            .cancel(&RapId::parse(R1).unwrap(), &["solo".into()])
            .unwrap(),
        CancelOutcome { count: 1 }
    );
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "solo"),
        (
            State::Failed,
            StatusCode::CancelledByUser,
            "Cancelled by user".into()
        )
    );
    assert!(w.store.all_tasks("test").unwrap().is_empty());
    assert_eq!(
        w.core
            .cancel(&RapId::parse(R2).unwrap(), &["solo".into()])
            .unwrap_err()
            .to_string(),
        format!("No jobs found for rap_id {R2}")
    );
    assert_eq!(
        w.core
            .cancel(
                &RapId::parse(R1).unwrap(),
                &["zz".into(), "a3".into(), "solo".into()]
            )
            .unwrap_err()
            .to_string(),
        "Jobs matching requested cancelled actions could not be found: a3,zz"
    );
}

#[test]
fn cancel_while_running_issues_a_canceljob_and_fails_dependents() {
    let mut w = world();
    w.submit(R1, &["p1"]);
    w.core.pass().unwrap();
    let gen_task = format!("{}-001", id(R1, "gen"));
    w.report(&gen_task, ExecutorStage::Executing, false, None);
    w.core
        .cancel(&RapId::parse(R1).unwrap(), &["gen".into()])
        .unwrap();
    w.core.pass().unwrap();
    assert_eq!(w.task_ids(), vec![format!("{gen_task}-cancel")]);
    assert!(!w.store.task(&gen_task).unwrap().unwrap().active);
    let cancel = w
        .store
        .task(&format!("{gen_task}-cancel"))
        .unwrap()
        .unwrap();
    assert_eq!(cancel.task_type, TaskType::CancelJob);
    assert_eq!(w.code(R1, "gen").1, StatusCode::CancelledByUser);
    w.core.pass().unwrap();
    assert_eq!(w.code(R1, "p1").1, StatusCode::DependencyFailed);
}

#[test]
fn pause_holds_pending_jobs_and_unpause_releases_them() {
    let mut w = world();
    w.core.set_paused(true).unwrap();
    w.submit(R1, &["solo"]);
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "solo"),
        (
            State::Pending,
            StatusCode::WaitingPaused,
            "Backend is currently paused for maintenance, job will start once this is completed"
                .into()
        )
    );
    assert!(w.task_ids().is_empty());
    let since = w.store.flags("test").unwrap()["paused"].timestamp;
    w.core.set_paused(true).unwrap();
    assert_eq!(
        w.store.flags("test").unwrap()["paused"].timestamp,
        since,
        "unchanged value keeps since"
    );
    w.core.set_paused(false).unwrap();
    w.core.pass().unwrap();
    assert_eq!(w.code(R1, "solo").1, StatusCode::Initiated);
}

#[test]
fn capacity_uses_separate_pools_and_weights() {
    let mut backend = BackendConfig::with_defaults("test");
    backend.max_workers = 1.0;
    backend.max_db_workers = Some(1.0);
    let mut w = world_with(backend);
    w.submit(R1, &["solo", "solo2", "db2"]);
    w.core.pass().unwrap();
    let codes: Vec<StatusCode> = ["solo", "solo2"].iter().map(|a| w.code(R1, a).1).collect();
    assert!(codes.contains(&StatusCode::Initiated));
    assert!(codes.contains(&StatusCode::WaitingOnWorkers));
    let waiting = if codes[0] == StatusCode::WaitingOnWorkers {
        "solo"
    } else {
        "solo2"
    };
    assert_eq!(w.code(R1, waiting).2, "Waiting on available workers");
    assert_eq!(
        w.code(R1, "db2").1,
        StatusCode::Initiated,
        "the DB pool is separate"
    );

    let mut heavy = BackendConfig::with_defaults("test");
    heavy.max_workers = 2.0;
    heavy.weights.insert("*/solo".into(), 1.5);
    heavy.weights.insert("*/solo2".into(), 1.5);
    let mut w = world_with(heavy);
    w.submit(R1, &["solo", "solo2"]);
    w.core.pass().unwrap();
    let messages: Vec<String> = ["solo", "solo2"].iter().map(|a| w.code(R1, a).2).collect();
    assert!(
        messages.contains(&"Waiting on available workers for resource intensive job".to_string())
    );
}

#[test]
fn retryable_errors_get_a_new_task_until_the_limit() {
    let mut w = world();
    w.submit(R1, &["solo"]);
    w.core.pass().unwrap();
    for n in 1..=3u32 {
        let task = format!("{}-{n:03}", id(R1, "solo"));
        assert_eq!(w.task_ids(), vec![task.clone()]);
        w.report(
            &task,
            ExecutorStage::Error,
            true,
            Some(RunJobResults {
                error: Some(TaskError {
                    kind: ErrorKind::Retryable,
                    message: "docker unavailable".into(),
                }),
                ..Default::default()
            }),
        );
        w.core.pass().unwrap();
        assert!(
            !w.store.task(&task).unwrap().unwrap().active,
            "task {n} is inactive"
        );
        if n < 3 {
            // Back to pending, then straight onto a new task in the same pass.
            let job = w.job(R1, "solo");
            assert_eq!(
                (job.state(), job.status_code()),
                (State::Running, StatusCode::Initiated)
            );
        }
    }
    let codes: Vec<StatusCode> = w
        .store
        .changes_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|c| c.job.status_code())
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == StatusCode::WaitingOnNewTask)
            .count(),
        3,
        "{codes:?}"
    );
    let job = w.job(R1, "solo");
    assert!(
        job.status.started_at.is_none(),
        "JOB_ERROR from pending keeps it unset"
    );
    assert_eq!(
        w.code(R1, "solo"),
        (
            State::Failed,
            StatusCode::JobError,
            "This job returned a fatal error. It failed on 3 attempts: docker unavailable".into()
        )
    );
}

#[test]
fn fatal_errors_fail_with_the_agents_message() {
    let mut w = world();
    w.submit(R1, &["solo"]);
    w.core.pass().unwrap();
    w.report(
        &format!("{}-001", id(R1, "solo")),
        ExecutorStage::Error,
        true,
        Some(RunJobResults {
            error: Some(TaskError {
                kind: ErrorKind::Fatal,
                message:
                    "Workspace ws has been archived. Contact the OpenSAFELY tech team to resolve"
                        .into(),
            }),
            ..Default::default()
        }),
    );
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "solo"),
        (
            State::Failed,
            StatusCode::JobError,
            "Workspace ws has been archived. Contact the OpenSAFELY tech team to resolve".into()
        )
    );
}

#[test]
fn db_maintenance_resets_running_db_jobs_only() {
    let mut w = world();
    w.submit(R1, &["db2", "solo"]);
    w.core.pass().unwrap();
    let db_task = format!("{}-001", id(R1, "db2"));
    w.report(&db_task, ExecutorStage::Executing, false, None);
    w.core.pass().unwrap();
    w.core.set_db_maintenance(true).unwrap();
    w.core.pass().unwrap();
    let job = w.job(R1, "db2");
    assert_eq!(
        (job.state(), job.status_code()),
        (State::Pending, StatusCode::WaitingDbMaintenance)
    );
    assert_eq!(job.status.started_at, None);
    assert!(w.task_ids().contains(&format!("{db_task}-cancel")));
    assert_eq!(
        w.code(R1, "solo").0,
        State::Running,
        "non-DB jobs are unaffected"
    );
    w.core.set_db_maintenance(false).unwrap();
    w.core.pass().unwrap();
    assert_eq!(w.code(R1, "db2").1, StatusCode::Initiated);
    assert!(w.task_ids().contains(&format!("{}-002", id(R1, "db2"))));
}

#[test]
fn prepare_for_reboot_and_restart_with_a_new_task() {
    let mut w = world();
    w.submit(R1, &["solo"]);
    w.core.pass().unwrap();
    w.core.prepare_for_reboot().unwrap();
    let task = format!("{}-001", id(R1, "solo"));
    assert_eq!(w.task_ids(), vec![format!("{task}-cancel")]);
    let job = w.job(R1, "solo");
    assert_eq!(
        (job.state(), job.status_code()),
        (State::Pending, StatusCode::WaitingOnReboot)
    );
    w.core.pass().unwrap();
    assert_eq!(
        w.code(R1, "solo").1,
        StatusCode::WaitingOnReboot,
        "kept while paused"
    );
    w.core.set_paused(false).unwrap();
    w.core.pass().unwrap();
    assert_eq!(w.code(R1, "solo").1, StatusCode::Initiated);
    assert!(w.task_ids().contains(&format!("{}-002", id(R1, "solo"))));
}

#[test]
fn updates_are_deduplicated_and_unknown_tasks_refused() {
    let mut w = world();
    w.submit(R1, &["solo"]);
    w.core.pass().unwrap();
    let task = format!("{}-001", id(R1, "solo"));
    let update = |stage, update_id| TaskUpdate {
        update_id,
        task_id: task.clone(),
        stage,
        complete: false,
        timestamp_ns: now_ns(),
        results: None,
    };
    w.core
        .update("a", &update(ExecutorStage::Executing, 5))
        .unwrap();
    w.core
        .update("a", &update(ExecutorStage::Preparing, 5))
        .unwrap();
    w.core
        .update("a", &update(ExecutorStage::Preparing, 4))
        .unwrap();
    assert_eq!(
        w.store.task(&task).unwrap().unwrap().agent_stage,
        ExecutorStage::Executing
    );
    assert_eq!(
        w.core
            .update(
                "a",
                &TaskUpdate {
                    task_id: "nope".into(),
                    ..update(ExecutorStage::Executing, 1)
                }
            )
            .unwrap_err(),
        BackendError::UnknownTask("nope".into())
    );
}

#[test]
fn db_status_results_set_the_mode_unless_manual() {
    let mut backend = BackendConfig::with_defaults("test");
    backend.db_status_interval_s = 300;
    let mut w = world_with(backend);
    w.core.pass().unwrap();
    let tasks = w.store.active_tasks("test").unwrap();
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].id.starts_with("dbstatus-20"));
    let report = |w: &mut World, id: &str, status: &str| {
        w.core
            .update(
                "a",
                &TaskUpdate {
                    update_id: 1,
                    task_id: id.into(),
                    stage: ExecutorStage::Unspecified,
                    complete: true,
                    timestamp_ns: 0,
                    results: Some(TaskResults::DbStatus {
                        status: status.into(),
                        error: None,
                    }),
                },
            )
            .unwrap();
    };
    report(&mut w, &tasks[0].id.clone(), "db-maintenance");
    assert_eq!(w.core.flag_value(flags::MODE), Some("db-maintenance"));
    w.core.pass().unwrap();
    assert!(
        w.store.active_tasks("test").unwrap().is_empty(),
        "not again within the interval"
    );
}

fn complete(w: &mut World, task_id: &str, results: TaskResults) {
    w.core
        .update(
            "a",
            &TaskUpdate {
                update_id: 1,
                task_id: task_id.into(),
                stage: ExecutorStage::Unspecified,
                complete: true,
                timestamp_ns: 0,
                results: Some(results),
            },
        )
        .unwrap();
}

fn active_of(w: &World, task_type: TaskType) -> Vec<Task> {
    w.store
        .active_tasks("test")
        .unwrap()
        .into_iter()
        .filter(|t| t.task_type == task_type)
        .collect()
}

#[test]
fn db_data_checks_are_scheduled_per_interval_and_their_results_stored() {
    let mut backend = BackendConfig::with_defaults("test");
    backend.data_check_interval_s = 86_400;
    backend.data_check_hes_expected_activity_month = "202401".into();
    let mut w = world_with(backend);
    w.core.pass().unwrap();
    w.core.pass().unwrap();
    let tasks = active_of(&w, TaskType::DbDataCheck);
    assert_eq!(tasks.len(), 1, "one at a time");
    assert!(tasks[0].id.starts_with("dbdatacheck-20"));
    assert_eq!(
        tasks[0].definition,
        TaskDefinition::DbDataCheck {
            hes_expected_activity_month: "202401".into(),
            image: "ghcr.io/opensafely-core/tpp-database-utils:latest".into(),
        }
    );
    assert!(
        active_of(&w, TaskType::DbStatus).is_empty(),
        "DBSTATUS has its own interval (off)"
    );
    complete(
        &mut w,
        &tasks[0].id,
        TaskResults::DbDataCheck {
            status: "FAILED".into(),
            error: None,
        },
    );
    assert_eq!(w.core.flag_value(flags::DATA_CHECK), Some("FAILED"));
    assert_eq!(w.core.flag_value(flags::DATA_CHECK_ERROR), None);
    assert_eq!(
        w.core.flag_value(flags::MODE),
        None,
        "a data check changes nothing"
    );
    w.core.pass().unwrap();
    assert!(
        active_of(&w, TaskType::DbDataCheck).is_empty(),
        "not again within the interval"
    );

    // An error is stored with its message; a restarted controller still knows the last check.
    let mut backend = BackendConfig::with_defaults("test");
    backend.data_check_interval_s = 1;
    let mut w = world_with(backend.clone());
    w.core.pass().unwrap();
    let task = active_of(&w, TaskType::DbDataCheck).remove(0);
    complete(
        &mut w,
        &task.id,
        TaskResults::DbDataCheck {
            status: String::new(),
            error: Some(TaskError {
                kind: ErrorKind::Retryable,
                message: "Invalid status from the database utility".into(),
            }),
        },
    );
    assert_eq!(w.core.flag_value(flags::DATA_CHECK), Some("ERROR"));
    assert_eq!(
        w.core.flag_value(flags::DATA_CHECK_ERROR),
        Some("Invalid status from the database utility")
    );
    backend.data_check_interval_s = 86_400;
    let restarted = Core::new(
        &config(backend.clone()),
        &backend,
        w.store.clone(),
        WatchHub::default(),
    );
    w.core = restarted.unwrap();
    w.core.pass().unwrap();
    assert!(active_of(&w, TaskType::DbDataCheck).is_empty());
}

#[test]
fn db_data_checks_are_inactive_while_the_database_is_in_maintenance() {
    let mut backend = BackendConfig::with_defaults("test");
    backend.data_check_interval_s = 86_400;
    backend.db_status_interval_s = 300;
    let mut w = world_with(backend);
    w.core.pass().unwrap();
    let check = active_of(&w, TaskType::DbDataCheck).remove(0);
    let status = active_of(&w, TaskType::DbStatus).remove(0);
    // Scheduled maintenance, as reported by DBSTATUS.
    complete(
        &mut w,
        &status.id,
        TaskResults::DbStatus {
            status: flags::DB_MAINTENANCE.into(),
            error: None,
        },
    );
    w.core.pass().unwrap();
    assert!(active_of(&w, TaskType::DbDataCheck).is_empty());
    let stored = w.store.task(&check.id).unwrap().unwrap();
    assert!(!stored.active && stored.finished_at.is_some());
    w.core.pass().unwrap();
    assert!(
        active_of(&w, TaskType::DbDataCheck).is_empty(),
        "none while in maintenance"
    );

    // Maintenance over: the suspended check (which never ran) is replaced at once.
    w.core.set_db_maintenance(false).unwrap();
    w.core.pass().unwrap();
    let again = active_of(&w, TaskType::DbDataCheck);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, check.id);

    // Manual maintenance suspends it too.
    w.core.set_db_maintenance(true).unwrap();
    w.core.pass().unwrap();
    assert!(active_of(&w, TaskType::DbDataCheck).is_empty());
}

#[test]
fn helpers() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(1_700_000_000), "2023-11-14");
    assert_eq!(
        split_command(r#"a 'b c' "d \" e" f\ g"#),
        ["a", "b c", "d \" e", "f g"]
    );
}

#[test]
fn tasks_are_spread_over_connected_agents_and_pushed_to_their_lessee() {
    let mut w = world();
    let (_, mut rx_a) = w.core.connect("a").unwrap();
    let (_, mut rx_b) = w.core.connect("b").unwrap();
    w.submit(R1, &["solo", "solo2", "db2", "gen"]);
    w.core.pass().unwrap();
    let effects = w.core.take_effects();
    w.core.perform(effects);
    let mut leased: Vec<String> = w
        .store
        .active_tasks("test")
        .unwrap()
        .into_iter()
        .map(|t| t.leased_to.unwrap())
        .collect();
    leased.sort();
    assert_eq!(leased, ["a", "a", "b", "b"]);
    let count = |rx: &mut mpsc::Receiver<AgentCommand>| {
        let mut n = 0;
        while let Ok(AgentCommand::Task(_)) = rx.try_recv() {
            n += 1;
        }
        n
    };
    assert_eq!((count(&mut rx_a), count(&mut rx_b)), (2, 2));
}

#[test]
fn an_absent_agents_leases_move_only_after_the_grace_period() {
    let mut w = world();
    let grace = Duration::from_secs(300);
    let (a, _rx_a) = w.core.connect("a").unwrap();
    w.submit(R1, &["solo"]);
    w.core.pass().unwrap();
    let task_id = w.task_ids()[0].clone();
    let lessee = |w: &World| w.store.task(&task_id).unwrap().unwrap().leased_to;
    assert_eq!(lessee(&w).as_deref(), Some("a"));
    let (_, mut rx_b) = w.core.connect("b").unwrap();

    w.core.disconnect(a);
    w.core
        .expire_leases(Instant::now() + grace - Duration::from_secs(1))
        .unwrap();
    assert_eq!(lessee(&w).as_deref(), Some("a"), "within the grace period");
    let (a, _rx_a) = w.core.connect("a").unwrap();
    w.core.expire_leases(Instant::now() + 2 * grace).unwrap();
    assert_eq!(lessee(&w).as_deref(), Some("a"), "returned in time");

    w.core.disconnect(a);
    w.core.expire_leases(Instant::now() + grace).unwrap();
    assert_eq!(
        lessee(&w).as_deref(),
        Some("b"),
        "offered to the other agent"
    );
    let effects = w.core.take_effects();
    w.core.perform(effects);
    assert!(
        matches!(rx_b.try_recv(), Ok(AgentCommand::Task(task)) if task.id == task_id),
        "pushed to its new lessee"
    );

    let executing = |update_id| TaskUpdate {
        update_id,
        task_id: task_id.clone(),
        stage: ExecutorStage::Executing,
        complete: false,
        timestamp_ns: now_ns(),
        results: None,
    };
    // The former lessee returns, still running the task: its update is ignored and it is
    // told to stop.
    let (_, mut rx_a) = w.core.connect("a").unwrap();
    assert!(rx_a.try_recv().is_err(), "the moved task is not sent to it");
    w.core.update("a", &executing(1)).unwrap();
    let stage = |w: &World| w.store.task(&task_id).unwrap().unwrap().agent_stage;
    assert_eq!(
        stage(&w),
        ExecutorStage::Unspecified,
        "the former lessee is ignored"
    );
    let effects = w.core.take_effects();
    w.core.perform(effects);
    assert!(
        matches!(rx_a.try_recv(), Ok(AgentCommand::LeaseMoved(id)) if id == task_id),
        "the former lessee is told the lease moved"
    );
    assert!(rx_b.try_recv().is_err(), "the new lessee is not disturbed");
    w.core.update("b", &executing(1)).unwrap();
    assert_eq!(stage(&w), ExecutorStage::Executing);
}

#[test]
fn leases_expiring_with_no_agent_connected_go_to_the_next_agent() {
    let mut w = world();
    let (a, _rx_a) = w.core.connect("a").unwrap();
    w.submit(R1, &["solo"]);
    w.core.pass().unwrap();
    let task_id = w.task_ids()[0].clone();
    w.core.disconnect(a);
    w.core
        .expire_leases(Instant::now() + Duration::from_secs(300))
        .unwrap();
    assert_eq!(w.store.task(&task_id).unwrap().unwrap().leased_to, None);
    let (_, mut rx_c) = w.core.connect("c").unwrap();
    assert!(matches!(rx_c.try_recv(), Ok(AgentCommand::Task(task)) if task.id == task_id));
}
