//! Shared test fixtures: real git repositories in a temp dir, a Docker executor over the real
//! engine with the locally built test image, job definitions with unique ids.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rap_agent::executor::docker::{DockerConfig, DockerExecutor};
use rap_agent::executor::{Executor, JobStatus};
use rap_agent::job::{JobDefinition, Level4Limits, OutputPattern, Privacy, StudyRepo};
use rap_agent::layout::Layout;
use rap_agent::workspace::RepoPolicy;

pub const IMAGE: &str = "rap.test/busybox:latest";

/// A unique job id per call, so tests can run in parallel and repeatedly.
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A study repository on branch `main` with the given files; returns (path, commit).
pub fn make_repo(dir: &Path, files: &[(&str, &str)]) -> (PathBuf, String) {
    let repo = dir.join("study");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    for (name, contents) in files {
        let path = repo.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "study"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

/// Adds a commit on a side branch (not on `main`); returns it.
pub fn commit_on_side_branch(repo: &Path) -> String {
    git(repo, &["checkout", "--quiet", "-b", "side"]);
    std::fs::write(repo.join("side.txt"), "side").unwrap();
    git(repo, &["add", "--all"]);
    git(repo, &["commit", "--quiet", "-m", "side"]);
    let commit = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "--quiet", "main"]);
    commit
}

pub const PROJECT_YAML: &str = "version: '4.0'\nactions:\n  generate:\n    run: busybox:latest sh run.sh\n    outputs:\n      highly_sensitive:\n        b: output/b.csv\n";

pub fn docker_config(work_dir: &Path) -> DockerConfig {
    DockerConfig {
        layout: Layout::new(work_dir.to_owned()),
        backend: "test".into(),
        registry: "rap.test".into(),
        allowed_images: vec!["busybox".into()],
        user: "1000:1000".into(),
        database_network: "rap-test-db-none".into(),
        database_url_env: "RAP_TEST_NO_SUCH_DATABASE_URL".into(),
        repo_policy: RepoPolicy {
            allowed_github_orgs: vec!["opensafely".into()],
            allow_local_repos: true,
        },
        docker_socket: None,
    }
}

pub async fn executor(work_dir: &Path) -> DockerExecutor {
    DockerExecutor::connect(docker_config(work_dir))
        .await
        .expect("Docker engine reachable")
}

/// A job running `sh -c <script>` in the test image, from `repo` at `commit`.
pub fn new_job(id: &str, repo: &Path, commit: &str, script: &str) -> JobDefinition {
    let url = repo.to_string_lossy().into_owned();
    JobDefinition {
        id: id.to_string(),
        rap_id: format!("rap-{id}"),
        task_id: format!("{id}-001"),
        repo_url: url.clone(),
        commit: commit.to_string(),
        study: StudyRepo {
            git_repo_url: url,
            commit: commit.to_string(),
            branch: "main".into(),
        },
        workspace: format!("ws-{id}"),
        action: "generate".into(),
        created_at: 1_714_558_830,
        image: IMAGE.into(),
        image_sha: String::new(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: [("OPENSAFELY_BACKEND".to_string(), "test".to_string())].into(),
        input_job_ids: vec![],
        output_spec: vec![],
        allow_database_access: false,
        database_name: None,
        user: "tester".into(),
        cpu_count: 1.0,
        memory_limit: Some(256 * 1024 * 1024),
        level4: Level4Limits {
            max_filesize: 16 * 1024 * 1024,
            max_csv_rows: 5000,
            file_types: [
                ".csv", ".html", ".jpeg", ".jpg", ".json", ".log", ".md", ".png", ".svg", ".svgz",
                ".txt",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        },
        requires_outputs_from: vec![],
    }
}

pub fn output(pattern: &str, privacy: Privacy) -> OutputPattern {
    OutputPattern {
        pattern: pattern.into(),
        privacy,
    }
}

/// Bounds every wait on the engine: a broken feature fails fast instead of hanging.
pub async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("step finished in time")
}

/// Runs a job through every step: prepare, execute, wait, finalize, cleanup.
pub async fn run_to_completion(executor: &DockerExecutor, job: &JobDefinition) -> JobStatus {
    within(async {
        executor.prepare(job).await.expect("prepare");
        executor.execute(job).await.expect("execute");
        executor.wait_for_exit(job).await.expect("wait");
        let status = executor.finalize(job, false, None).await.expect("finalize");
        executor.cleanup(job).await.expect("cleanup");
        status
    })
    .await
}
