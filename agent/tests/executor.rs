//! The Docker executor against the real engine: prepare, execute, finalize, cancel and cleanup,
//! with real git repositories and the locally built test image.

mod common;

use std::fs;

use common::*;
use rap_agent::executor::{Executor, ExecutorError};
use rap_agent::job::Privacy;
use rap_agent::layout::Layout;
use rap_agent::metadata;
use rap_agent::task::state::ExecutorState;

#[tokio::test]
async fn happy_path_files_outputs_in_both_privacy_trees_with_manifest_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("project.yaml", PROJECT_YAML)]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let id = unique_id("happy");
    let mut job = new_job(
        &id,
        &repo,
        &commit,
        "mkdir -p output && printf 'a,b\\n1,2\\n' > output/a.csv && printf 'x\\n' > output/b.csv \
         && echo hello-from-job && test -f project.yaml",
    );
    job.output_spec = vec![
        output("output/a.csv", Privacy::ModeratelySensitive),
        output("output/b.csv", Privacy::HighlySensitive),
    ];
    let status = run_to_completion(&executor, &job).await;
    assert_eq!(status.state, ExecutorState::Finalized);
    let record = status.metadata.expect("metadata");
    assert_eq!(record.exit_code, Some(0));
    assert_eq!(
        record.status_message.as_deref(),
        Some("Completed successfully")
    );
    assert_eq!(record.outputs.len(), 2);

    let layout = Layout::new(work.clone());
    let high = layout.high_workspace(&job);
    let medium = layout.medium_workspace(&job);
    assert_eq!(
        fs::read_to_string(high.join("output/a.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    assert_eq!(
        fs::read_to_string(high.join("output/b.csv")).unwrap(),
        "x\n"
    );
    assert_eq!(
        fs::read_to_string(medium.join("output/a.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    assert!(
        !medium.join("output/b.csv").exists(),
        "highly sensitive never reaches medium"
    );
    for root in [&high, &medium] {
        let log = fs::read_to_string(root.join("metadata/generate.log")).unwrap();
        assert!(log.contains("hello-from-job"), "{log}");
        assert!(log.contains("=============JOB SUMMARY============="));
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(medium.join("metadata/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["workspace"], job.workspace.as_str());
    assert!(manifest["repo"].is_null());
    let a = &manifest["outputs"]["output/a.csv"];
    assert_eq!(a["level"], "moderately_sensitive");
    assert_eq!(a["size"], 8);
    assert_eq!(a["row_count"], 1);
    assert_eq!(a["col_count"], 2);
    assert_eq!(a["excluded"], false);
    assert_eq!(a["job_id"], id.as_str());
    assert_eq!(a["commit"], commit.as_str());
    // sha256 of "a,b\n1,2\n".
    assert_eq!(a["content_hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        manifest["outputs"]["output/b.csv"]["level"],
        "highly_sensitive"
    );
    // New entries carry no out-of-date flags.
    assert!(manifest["outputs"]["output/b.csv"]["out_of_date_action"].is_null());

    // The log directory keeps logs and metadata; the container and job directory are gone.
    let log_dir = layout.job_log_dir(&job);
    assert!(log_dir.join("logs.txt").is_file());
    assert!(log_dir.join("metadata.json").is_file());
    assert!(!layout.job_dir(&job).exists());
    let status = executor.get_status(&job, false).await.unwrap();
    assert_eq!(
        status.state,
        ExecutorState::Finalized,
        "metadata survives cleanup"
    );

    // Results for the controller name no file.
    let results = metadata::redact(&record);
    assert!(!format!("{results:?}").contains("output/"));
    assert!(!results.has_unmatched_patterns);

    // The action runs again and no longer writes b.csv: the manifest marks it out of date, and
    // the project (read at the study commit) still has the action.
    let mut again = job.clone();
    again.id = unique_id("happy-again");
    again.task_id = format!("{}-001", again.id);
    again.args[2] = "mkdir -p output && printf 'a,b\\n3,4\\n' > output/a.csv".into();
    again.output_spec = vec![output("output/a.csv", Privacy::ModeratelySensitive)];
    run_to_completion(&executor, &again).await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(medium.join("metadata/manifest.json")).unwrap()).unwrap();
    let b = &manifest["outputs"]["output/b.csv"];
    assert_eq!(b["out_of_date_output"], true);
    assert_eq!(b["out_of_date_action"], false);
    assert_eq!(
        manifest["outputs"]["output/a.csv"]["job_id"],
        again.id.as_str()
    );
    assert_eq!(
        fs::read_to_string(medium.join("output/a.csv")).unwrap(),
        "a,b\n3,4\n"
    );
}

#[tokio::test]
async fn unmatched_patterns_give_the_message_hint_and_a_redacted_result() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let executor = executor(&dir.path().join("work")).await;
    let mut job = new_job(
        &unique_id("unmatched"),
        &repo,
        &commit,
        "mkdir -p output && echo x > output/table.txt",
    );
    job.output_spec = vec![output("output/*.csv", Privacy::HighlySensitive)];
    let status = run_to_completion(&executor, &job).await;
    let record = status.metadata.unwrap();
    assert_eq!(record.unmatched_patterns, vec!["output/*.csv"]);
    assert_eq!(
        record.status_message.as_deref(),
        Some("\n  No outputs found matching patterns:\n - output/*.csv")
    );
    assert_eq!(
        record.hint.as_deref(),
        Some("\n  Did you mean to match one of these files instead?\n - output/table.txt")
    );
    let results = metadata::redact(&record);
    assert!(results.has_unmatched_patterns);
    assert_eq!(results.status_message, "");
    assert_eq!(results.hint, "");
    assert!(!format!("{results:?}").contains("output"));
}

#[tokio::test]
async fn a_non_zero_exit_is_recorded_without_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let executor = executor(&dir.path().join("work")).await;
    let job = new_job(
        &unique_id("exit1"),
        &repo,
        &commit,
        "echo failing >&2; exit 3",
    );
    let record = run_to_completion(&executor, &job).await.metadata.unwrap();
    assert_eq!(record.exit_code, Some(3));
    assert_eq!(record.status_message, None);
    let logs = fs::read_to_string(
        Layout::new(dir.path().join("work"))
            .job_log_dir(&job)
            .join("logs.txt"),
    )
    .unwrap();
    assert!(logs.contains("failing"));
    assert!(logs.contains("exit_code: 3"));
}

#[tokio::test]
async fn an_oom_kill_reports_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let executor = executor(&dir.path().join("work")).await;
    let mut job = new_job(
        &unique_id("oom"),
        &repo,
        &commit,
        "head -c 200m /dev/zero | tail > /dev/null",
    );
    job.memory_limit = Some(6 * 1024 * 1024);
    let record = run_to_completion(&executor, &job).await.metadata.unwrap();
    assert_eq!(record.exit_code, Some(137));
    assert!(record.oom_killed);
    assert_eq!(
        record.status_message.as_deref(),
        Some("Job ran out of memory (limit was 0.01GB)")
    );
}

#[tokio::test]
async fn level4_exclusions_write_explanations_and_flag_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let mut job = new_job(
        &unique_id("level4"),
        &repo,
        &commit,
        "mkdir -p out && printf 'patient_id,x\\n1,2\\n' > out/pid.csv \
         && (echo n; seq 1 6) > out/rows.csv \
         && head -c 2000 /dev/zero > out/big.txt \
         && echo r > out/model.rds \
         && echo fine > out/ok.txt",
    );
    job.level4.max_csv_rows = 5;
    job.level4.max_filesize = 1000;
    // `*.rds` would not pass project validation for moderately sensitive outputs, but the
    // executor applies the level-4 checks whatever the pattern.
    job.output_spec = ["out/*.csv", "out/*.txt", "out/*.rds"]
        .iter()
        .map(|pattern| output(pattern, Privacy::ModeratelySensitive))
        .collect();
    let record = run_to_completion(&executor, &job).await.metadata.unwrap();
    let excluded = &record.level4_excluded_files;
    assert_eq!(excluded["out/pid.csv"], "File has patient_id column");
    assert_eq!(
        excluded["out/rows.csv"],
        "File row count (6) exceeds maximum allowed rows (5)"
    );
    assert_eq!(
        excluded["out/big.txt"],
        "File size of 0.00Mb is larger that limit of 0.00Mb."
    );
    assert_eq!(
        excluded["out/model.rds"],
        "File type of .rds is not valid level 4 file"
    );
    assert!(!excluded.contains_key("out/ok.txt"));
    assert_eq!(
        record.status_message.as_deref(),
        Some("Completed successfully")
    );

    let layout = Layout::new(work);
    let medium = layout.medium_workspace(&job);
    let high = layout.high_workspace(&job);
    for name in ["pid.csv", "rows.csv", "big.txt", "model.rds"] {
        assert!(
            !medium.join("out").join(name).exists(),
            "{name} kept out of medium"
        );
        assert!(
            medium.join("out").join(format!("{name}.txt")).is_file(),
            "{name}.txt"
        );
        assert!(
            high.join("out").join(name).is_file(),
            "{name} still in high"
        );
    }
    assert!(medium.join("out/ok.txt").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(medium.join("metadata/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["outputs"]["out/pid.csv"]["excluded"], true);
    assert_eq!(
        manifest["outputs"]["out/pid.csv"]["message"],
        "File has patient_id column"
    );
    let log = fs::read_to_string(medium.join("metadata/generate.log")).unwrap();
    assert!(log.contains("Invalid moderately_sensitive outputs:"));
    assert!(metadata::redact(&record).has_level4_excluded_files);
}

#[tokio::test]
async fn the_container_runs_as_a_non_root_user_without_capabilities_or_network() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let mut job = new_job(
        &unique_id("locked"),
        &repo,
        &commit,
        "mkdir -p output && id -u > output/uid.txt && grep -E '^Cap(Eff|Prm|Bnd):' \
         /proc/self/status > output/caps.txt && grep NoNewPrivs /proc/self/status \
         >> output/caps.txt; (ls /sys/class/net; wget -q -T 3 -O - http://1.1.1.1/ 2>&1; \
         echo wget=$?) > output/net.txt",
    );
    job.output_spec = vec![output("output/*.txt", Privacy::HighlySensitive)];
    let record = run_to_completion(&executor, &job).await.metadata.unwrap();
    assert_eq!(record.exit_code, Some(0));
    let high = Layout::new(work).high_workspace(&job);
    assert_eq!(
        fs::read_to_string(high.join("output/uid.txt")).unwrap(),
        "1000\n"
    );
    let caps = fs::read_to_string(high.join("output/caps.txt")).unwrap();
    assert!(caps.contains("CapEff:\t0000000000000000"), "{caps}");
    assert!(caps.contains("CapPrm:\t0000000000000000"), "{caps}");
    assert!(caps.contains("CapBnd:\t0000000000000000"), "{caps}");
    assert!(caps.contains("NoNewPrivs:\t1"), "{caps}");
    let net = fs::read_to_string(high.join("output/net.txt")).unwrap();
    // Only the loopback interface exists, and the request fails.
    assert!(net.starts_with("lo\n"), "{net}");
    assert!(!net.contains("eth0"), "{net}");
    assert!(!net.contains("wget=0"), "{net}");
}

#[tokio::test]
async fn images_outside_the_registry_or_allow_list_or_absent_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let executor = executor(&dir.path().join("work")).await;
    for (image, not_allowed) in [
        ("docker.io/library/busybox:latest", true),
        ("rap.test/python:v2", true),
        ("rap.test/busybox:no-such-tag", false),
    ] {
        let mut job = new_job(&unique_id("image"), &repo, &commit, "true");
        job.image = image.into();
        let error = executor.prepare(&job).await.unwrap_err();
        assert!(error.is_fatal(), "{image}");
        match (error, not_allowed) {
            (ExecutorError::ImageNotAllowed { .. }, true) => {}
            (ExecutorError::ImageNotPresent { image: named }, false) => assert_eq!(named, image),
            (other, _) => panic!("{image}: {other:?}"),
        }
    }
    let mut job = new_job(&unique_id("digest"), &repo, &commit, "true");
    job.image_sha = "sha256:0000".into();
    assert!(matches!(
        executor.prepare(&job).await,
        Err(ExecutorError::ImageDigestMismatch { .. })
    ));
}

#[tokio::test]
async fn an_output_pattern_escaping_the_workspace_is_refused_and_links_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;

    let mut job = new_job(&unique_id("escape"), &repo, &commit, "true");
    job.output_spec = vec![output("../../escape.csv", Privacy::HighlySensitive)];
    let error = executor.prepare(&job).await.unwrap_err();
    assert!(error.is_fatal());
    assert!(
        !error.public_message().contains("escape"),
        "no pattern in the message"
    );
    assert!(!Layout::new(work.clone()).job_dir(&job).exists());

    // A job that plants links to files and directories outside its directory: they are not
    // outputs, and nothing is copied from outside.
    let secret_dir = dir.path().join("secret");
    fs::create_dir_all(&secret_dir).unwrap();
    fs::write(secret_dir.join("s.csv"), "secret").unwrap();
    let mut job = new_job(
        &unique_id("links"),
        &repo,
        &commit,
        &format!(
            "mkdir -p output && ln -s {0}/s.csv output/a.csv && ln -s {0} output/dir",
            secret_dir.display()
        ),
    );
    job.output_spec = vec![
        output("output/*.csv", Privacy::ModeratelySensitive),
        output("output/dir/*.csv", Privacy::ModeratelySensitive),
    ];
    let record = run_to_completion(&executor, &job).await.metadata.unwrap();
    assert!(record.outputs.is_empty());
    assert_eq!(record.unmatched_patterns.len(), 2);
    let layout = Layout::new(work);
    assert!(!layout.high_workspace(&job).join("output").exists());
    assert!(!layout.medium_workspace(&job).join("output").exists());
}

#[tokio::test]
async fn the_security_recheck_refuses_a_commit_not_on_the_branch_and_foreign_repos() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _main_commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let side = commit_on_side_branch(&repo);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let job_off_branch = new_job(&unique_id("offbranch"), &repo, &side, "true");
    let error = executor.prepare(&job_off_branch).await.unwrap_err();
    assert!(error.is_fatal());
    assert!(
        error.to_string().contains("is not on branch main"),
        "{error}"
    );
    assert!(!Layout::new(work.clone()).job_dir(&job_off_branch).exists());

    let mut foreign = new_job(&unique_id("foreign"), &repo, &side, "true");
    foreign.repo_url = "https://github.com/evil/study".into();
    assert!(executor.prepare(&foreign).await.unwrap_err().is_fatal());
}

#[tokio::test]
async fn inputs_are_copied_from_earlier_jobs_and_a_missing_one_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let mut first = new_job(
        &unique_id("first"),
        &repo,
        &commit,
        "mkdir -p output && echo data > output/in.csv",
    );
    first.output_spec = vec![output("output/in.csv", Privacy::HighlySensitive)];
    run_to_completion(&executor, &first).await;

    let mut second = new_job(
        &unique_id("second"),
        &repo,
        &commit,
        "mkdir -p result && cp output/in.csv result/copy.csv",
    );
    second.workspace = first.workspace.clone();
    second.input_job_ids = vec![first.id.clone()];
    second.output_spec = vec![output("result/copy.csv", Privacy::HighlySensitive)];
    let record = run_to_completion(&executor, &second)
        .await
        .metadata
        .unwrap();
    assert_eq!(record.exit_code, Some(0));
    let high = Layout::new(work.clone()).high_workspace(&second);
    assert_eq!(
        fs::read_to_string(high.join("result/copy.csv")).unwrap(),
        "data\n"
    );

    fs::remove_file(high.join("output/in.csv")).unwrap();
    let mut third = second.clone();
    third.id = unique_id("third");
    third.task_id = format!("{}-001", third.id);
    let error = executor.prepare(&third).await.unwrap_err();
    assert!(
        matches!(error, ExecutorError::MissingInput { .. }),
        "{error:?}"
    );
    assert!(error.is_fatal());
    assert!(!error.public_message().contains("in.csv"));
    executor.cleanup(&third).await.unwrap();
}

#[tokio::test]
async fn cancel_before_start_writes_nothing_but_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let job = new_job(&unique_id("cancelprep"), &repo, &commit, "true");
    within(executor.prepare(&job)).await.unwrap();
    let status = within(executor.finalize(&job, true, None)).await.unwrap();
    executor.cleanup(&job).await.unwrap();
    assert_eq!(status.state, ExecutorState::Finalized);
    let record = status.metadata.unwrap();
    assert!(record.cancelled);
    assert_eq!(
        record.status_message.as_deref(),
        Some("Job cancelled by system")
    );
    let layout = Layout::new(work);
    assert!(
        !layout.job_log_dir(&job).join("logs.txt").exists(),
        "no container, no logs"
    );
    assert!(!layout.high_workspace(&job).exists());
    assert!(!layout.job_dir(&job).exists());
}

#[tokio::test]
async fn cancel_while_running_kills_and_persists_no_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let mut job = new_job(
        &unique_id("cancelrun"),
        &repo,
        &commit,
        "mkdir -p output && echo x > output/a.csv && echo started && sleep 300",
    );
    let _container = ContainerGuard::for_job(&job);
    job.output_spec = vec![output("output/a.csv", Privacy::HighlySensitive)];
    within(executor.prepare(&job)).await.unwrap();
    let status = within(executor.execute(&job)).await.unwrap();
    assert_eq!(status.state, ExecutorState::Executing);
    let status = within(executor.terminate(&job)).await.unwrap();
    assert_eq!(status.state, ExecutorState::Executed);
    let status = within(executor.finalize(&job, true, None)).await.unwrap();
    executor.cleanup(&job).await.unwrap();
    let record = status.metadata.unwrap();
    assert_eq!(record.exit_code, Some(137));
    assert!(record.cancelled);
    assert_eq!(
        record.status_message.as_deref(),
        Some("Job cancelled by system")
    );
    assert!(record.outputs.is_empty());
    let layout = Layout::new(work);
    assert!(layout.job_log_dir(&job).join("logs.txt").is_file());
    assert!(!layout.high_workspace(&job).join("output/a.csv").exists());
    assert!(!layout.high_workspace(&job).join("metadata").exists());
    assert!(!layout.job_dir(&job).exists());
}

#[tokio::test]
async fn a_new_task_ignores_metadata_of_an_earlier_task() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let executor = executor(&dir.path().join("work")).await;
    let job = new_job(&unique_id("retry"), &repo, &commit, "true");
    within(executor.finalize(&job, true, None)).await.unwrap();
    assert_eq!(
        executor.get_status(&job, false).await.unwrap().state,
        ExecutorState::Finalized
    );
    let mut retry = job.clone();
    retry.task_id = format!("{}-002", job.id);
    assert_eq!(
        executor.get_status(&retry, false).await.unwrap().state,
        ExecutorState::Unknown
    );
    let status = run_to_completion(&executor, &retry).await;
    assert_eq!(status.metadata.unwrap().task_id, retry.task_id);
}

#[tokio::test]
async fn a_database_job_gets_its_network_and_url_only_through_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let work = dir.path().join("work");
    let network = unique_id("rap-test-db");
    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            internal: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let secret = "postgresql://user:s3cret-pass@localhost/data";
    let mut config = docker_config(&work);
    config.database_network = network.clone();
    config.database_url = rap_agent::executor::docker::DatabaseUrl::new(secret.into());
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "Debug hides the URL"
    );
    let executor = rap_agent::executor::docker::DockerExecutor::connect(config)
        .await
        .unwrap();
    let mut job = new_job(
        &unique_id("dbjob"),
        &repo,
        &commit,
        "mkdir -p output && echo \"$DATABASE_URL\" > output/url.txt \
         && cat /etc/resolv.conf > output/dns.txt && ls /sys/class/net > output/net.txt",
    );
    job.allow_database_access = true;
    job.database_name = Some("default".into());
    job.output_spec = vec![output("output/*.txt", Privacy::HighlySensitive)];
    let status = run_to_completion(&executor, &job).await;
    let _ = docker.remove_network(&network).await;
    let record = status.metadata.unwrap();
    assert_eq!(record.exit_code, Some(0));
    let high = Layout::new(work.clone()).high_workspace(&job);
    assert_eq!(
        fs::read_to_string(high.join("output/url.txt")).unwrap(),
        format!("{secret}\n")
    );
    // On a user-defined network resolv.conf points at Docker's embedded resolver, which
    // forwards only to the blackhole address.
    assert_eq!(
        record.container_metadata["HostConfig"]["Dns"][0],
        "192.0.2.0"
    );
    assert!(
        fs::read_to_string(high.join("output/net.txt"))
            .unwrap()
            .contains("eth0")
    );
    // Recorded metadata and logs never hold the URL; the container's argv never did.
    let recorded = record.container_metadata.to_string();
    assert!(!recorded.contains("s3cret"));
    assert!(recorded.contains("DATABASE_URL=xxxx-REDACTED-xxxx"));
    assert_eq!(
        record.container_metadata["HostConfig"]["NetworkMode"],
        network.as_str()
    );
    assert!(
        !record.container_metadata["Args"]
            .to_string()
            .contains("s3cret")
    );
    let logs = fs::read_to_string(Layout::new(work).job_log_dir(&job).join("logs.txt")).unwrap();
    assert!(!logs.contains("s3cret"));

    // Without a configured URL a database job fails with the reference's message.
    let unconfigured = executor_without_database(dir.path()).await;
    let mut other = new_job(&unique_id("nodb"), &repo, &commit, "true");
    other.allow_database_access = true;
    within(unconfigured.prepare(&other)).await.unwrap();
    let error = within(unconfigured.execute(&other)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Database name 'default' is not currently defined for backend 'test'"
    );
    assert!(error.is_fatal());
    unconfigured.cleanup(&other).await.unwrap();
}

async fn executor_without_database(
    dir: &std::path::Path,
) -> rap_agent::executor::docker::DockerExecutor {
    executor(&dir.join("work-nodb")).await
}

#[tokio::test]
async fn resource_use_is_measured_from_docker_stats() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = make_repo(dir.path(), &[("run.sh", "true")]);
    let executor = executor(&dir.path().join("work")).await;
    // Holds ~30 MB (tail buffers its whole input) and a busy CPU for about 3 s: long enough for
    // Docker's 1 s stats samples.
    let job = new_job(
        &unique_id("metrics"),
        &repo,
        &commit,
        "(timeout 3 sh -c 'while :; do :; done' || true) & \
         head -c 30m /dev/zero | tail | (sleep 3; cat > /dev/null); wait",
    );
    let record = run_to_completion(&executor, &job).await.metadata.unwrap();
    assert_eq!(record.exit_code, Some(0));
    let metrics = record.job_metrics;
    assert!(metrics.mem_mb_peak >= 20.0, "{metrics:?}");
    assert!(metrics.cpu_peak > 10.0, "{metrics:?}");
    assert!(metrics.cpu_mean > 0.0 && metrics.cpu_mean <= metrics.cpu_peak);
    let results = metadata::redact(&record);
    assert_eq!(results.metrics.unwrap().mem_mb_peak, metrics.mem_mb_peak);
}
