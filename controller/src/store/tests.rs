//! Store tests on a temporary sled directory.

use std::collections::HashMap;

use super::*;
use crate::jobs::create::{
    CreateOutcome, RequestRules, SubmitFields, create_jobs, validate_request,
};
use crate::jobs::project::{Project, ProjectAction};
use crate::jobs::state::{ExecutorStage, State, StatusCode};
use crate::tasks::{TaskDefinition, TaskType};

fn jobs(rap_id: &str, actions: &[&str], now_s: i64) -> Vec<Job> {
    let rules = RequestRules {
        backends: vec!["test".into()],
        allowed_github_orgs: vec!["opensafely".into()],
        allow_local_repos: false,
        projects_with_event_level_access: vec![],
    };
    let request = validate_request(
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
        &rules,
    )
    .unwrap();
    let project = Project {
        actions: ["a", "b"]
            .into_iter()
            .map(|n| ProjectAction {
                name: n.into(),
                needs: vec![],
                run_command: "python:v2 x.py".into(),
                requires_db: false,
                outputs: vec![],
                action_repo: None,
            })
            .collect(),
    };
    match create_jobs(
        &request,
        &project,
        &HashMap::new(),
        &rules,
        now_s * 1_000_000_000,
    )
    .unwrap()
    {
        CreateOutcome::Created(jobs) => jobs,
        other => panic!("{other:?}"),
    }
}

fn task(job: &Job, n: u32) -> Task {
    Task {
        id: crate::tasks::runjob_task_id(job.id.as_str(), n),
        backend: job.backend.clone(),
        task_type: TaskType::RunJob,
        definition: TaskDefinition::DbStatus {
            database_name: "default".into(),
            image: "x".into(),
        },
        active: true,
        created_at: 1,
        finished_at: None,
        attributes: Default::default(),
        agent_stage: ExecutorStage::Unspecified,
        agent_complete: false,
        agent_results: None,
        agent_timestamp_ns: None,
        leased_to: None,
        last_update_id: 0,
    }
}

#[tokio::test]
async fn writes_are_indexed_logged_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let created = jobs("aaaaaaaaaaaaaaaa", &["a", "b"], 10);
    {
        let store = Store::open(dir.path()).unwrap();
        let changes = store
            .write(&WriteBatch {
                jobs: created.clone(),
                tasks: vec![task(&created[0], 1)],
                flags: vec![(
                    "test".into(),
                    "paused".into(),
                    Flag {
                        value: Some("true".into()),
                        timestamp: 5,
                    },
                )],
            })
            .unwrap();
        assert_eq!(changes.iter().map(|c| c.cursor).collect::<Vec<_>>(), [1, 2]);
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_cursor(), 2);
    assert_eq!(store.jobs_for_rap("aaaaaaaaaaaaaaaa").unwrap().len(), 2);
    assert!(store.jobs_for_rap("aaaaaaaaaaaaaaab").unwrap().is_empty());
    assert_eq!(store.job(&created[0].id).unwrap().unwrap(), created[0]);
    assert_eq!(store.active_jobs("test").unwrap().len(), 2);
    assert!(store.active_jobs("tpp").unwrap().is_empty());
    assert_eq!(store.tasks_for_job(&created[0].id).unwrap().len(), 1);
    assert_eq!(store.active_tasks("test").unwrap()[0], task(&created[0], 1));
    assert_eq!(
        store.flags("test").unwrap()["paused"].value.as_deref(),
        Some("true")
    );
    let log = store.changes_after(1, 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].cursor, 2);
    assert_eq!(log[0].job, created[1]);
}

#[tokio::test]
async fn finished_jobs_leave_the_active_index_and_cancel_moves_latest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut first = jobs("aaaaaaaaaaaaaaaa", &["a"], 10).remove(0);
    store
        .write(&WriteBatch {
            jobs: vec![first.clone()],
            ..Default::default()
        })
        .unwrap();
    first.status.state = State::Succeeded;
    first.status.status_code = StatusCode::Succeeded;
    let second = jobs("bbbbbbbbbbbbbbbb", &["a"], 20).remove(0);
    store
        .write(&WriteBatch {
            jobs: vec![first.clone(), second.clone()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.active_jobs("test").unwrap(), vec![second.clone()]);
    assert_eq!(
        store.existing_jobs("test", "ws").unwrap()["a"].id,
        second.id
    );

    let mut cancelled = second.clone();
    cancelled.cancelled = true;
    store
        .write(&WriteBatch {
            jobs: vec![cancelled],
            ..Default::default()
        })
        .unwrap();
    let state = store.existing_jobs("test", "ws").unwrap();
    assert_eq!(
        state["a"].id, first.id,
        "a cancelled job hands back to the previous one"
    );
    assert_eq!(state["a"].state, State::Succeeded);

    let mut first_cancelled = first.clone();
    first_cancelled.cancelled = true;
    store
        .write(&WriteBatch {
            jobs: vec![first_cancelled],
            ..Default::default()
        })
        .unwrap();
    assert!(store.existing_jobs("test", "ws").unwrap().is_empty());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    match Store::open(dir.path()) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn compaction_removes_old_changes_and_readers_of_them_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let write = |store: &Store, rap_id: &str| {
        store
            .write(&WriteBatch {
                jobs: jobs(rap_id, &["a"], 1),
                ..Default::default()
            })
            .unwrap()[0]
            .cursor
    };
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.compact_changes(1_000).unwrap(), 0, "no marks yet");
        let first = write(&store, "aaaaaaaaaaaaaaaa");
        let second = write(&store, "bbbbbbbbbbbbbbbb");
        store.mark_changes(100).unwrap();
        let third = write(&store, "cccccccccccccccc");
        store.mark_changes(200).unwrap();

        assert_eq!(store.compact_changes(99).unwrap(), 0, "nothing that old");
        assert_eq!(store.changes_after(0, 10).unwrap().len(), 3);
        assert_eq!(store.compact_changes(150).unwrap(), 2);
        assert_eq!(store.compacted_through(), second);
        match store.changes_after(first, 10) {
            Err(StoreError::ChangesCompacted {
                after,
                compacted_through,
            }) => assert_eq!((after, compacted_through), (first, second)),
            other => panic!("a reader of removed changes was not told: {other:?}"),
        }
        let kept: Vec<u64> = store
            .changes_after(second, 10)
            .unwrap()
            .iter()
            .map(|change| change.cursor)
            .collect();
        assert_eq!(kept, [third]);
        assert_eq!(store.compact_changes(150).unwrap(), 0, "idempotent");
        // Everything goes; the jobs themselves stay.
        assert_eq!(store.compact_changes(250).unwrap(), 1);
        assert!(store.changes_after(third, 10).unwrap().is_empty());
        assert_eq!(store.job_count(), 3);
        store.db.flush().unwrap();
    }
    // Reopened with an empty log: the bound is remembered and cursors are never reused.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.compacted_through(), 3);
    assert!(matches!(
        store.changes_after(0, 10),
        Err(StoreError::ChangesCompacted { .. })
    ));
    assert_eq!(write(&store, "dddddddddddddddd"), 4);
}
