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
        database_url: None,
        repo_policy: RepoPolicy {
            allowed_github_orgs: vec!["opensafely".into()],
            allow_local_repos: true,
            github_proxy: None,
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

use rap_proto::pb::rap::v1 as pb;

/// The wire form of a job definition, as the controller sends it.
pub fn wire(job: &JobDefinition) -> pb::JobDefinition {
    pb::JobDefinition {
        id: job.id.clone(),
        rap_id: job.rap_id.clone(),
        task_id: job.task_id.clone(),
        repo_url: job.repo_url.clone(),
        commit: job.commit.clone(),
        study: Some(pb::StudyRepo {
            git_repo_url: job.study.git_repo_url.clone(),
            commit: job.study.commit.clone(),
            branch: job.study.branch.clone(),
        }),
        workspace: job.workspace.clone(),
        action: job.action.clone(),
        created_at: job.created_at,
        image: job.image.clone(),
        image_sha: job.image_sha.clone(),
        args: job.args.clone(),
        env: job.env.clone().into_iter().collect(),
        input_job_ids: job.input_job_ids.clone(),
        output_spec: job
            .output_spec
            .iter()
            .map(|output| pb::OutputPattern {
                pattern: output.pattern.clone(),
                privacy: match output.privacy {
                    Privacy::HighlySensitive => pb::Privacy::HighlySensitive as i32,
                    Privacy::ModeratelySensitive => pb::Privacy::ModeratelySensitive as i32,
                },
            })
            .collect(),
        allow_database_access: job.allow_database_access,
        database_name: job.database_name.clone().unwrap_or_default(),
        user: job.user.clone(),
        cpu_count: job.cpu_count,
        memory_limit: job
            .memory_limit
            .map(|bytes| bytes.to_string())
            .unwrap_or_default(),
        level4_max_filesize: job.level4.max_filesize,
        level4_max_csv_rows: job.level4.max_csv_rows,
        level4_file_types: job.level4.file_types.clone(),
        requires_outputs_from: job.requires_outputs_from.clone(),
    }
}

/// A RUNJOB task for `job`.
pub fn runjob_task(job: &JobDefinition) -> pb::Task {
    pb::Task {
        id: job.task_id.clone(),
        backend: "test".into(),
        r#type: pb::TaskType::Runjob as i32,
        definition: Some(pb::task::Definition::Job(wire(job))),
        ..Default::default()
    }
}

/// The CANCELJOB task for `job`'s RUNJOB task.
pub fn canceljob_task(job: &JobDefinition) -> pb::Task {
    let mut definition = wire(job);
    definition.task_id = format!("{}-cancel", job.task_id);
    pb::Task {
        id: definition.task_id.clone(),
        backend: "test".into(),
        r#type: pb::TaskType::Canceljob as i32,
        definition: Some(pb::task::Definition::Job(definition)),
        ..Default::default()
    }
}

/// The next announced update, within a bound.
pub async fn next_update(
    updates: &mut tokio::sync::mpsc::Receiver<pb::TaskUpdate>,
) -> pb::TaskUpdate {
    within(updates.recv()).await.expect("an update")
}

/// Skips announced updates until one at `stage`, and returns it.
pub async fn next_update_at(
    updates: &mut tokio::sync::mpsc::Receiver<pb::TaskUpdate>,
    wanted: pb::ExecutorState,
) -> pb::TaskUpdate {
    loop {
        let update = next_update(updates).await;
        if stage(&update) == wanted {
            return update;
        }
    }
}

/// Collects updates until `task_id` reports completion; returns them all (every task's).
pub async fn updates_until_complete(
    updates: &mut tokio::sync::mpsc::Receiver<pb::TaskUpdate>,
    task_id: &str,
) -> Vec<pb::TaskUpdate> {
    let mut seen = Vec::new();
    loop {
        let update = next_update(updates).await;
        let done = update.task_id == task_id && update.complete;
        seen.push(update);
        if done {
            return seen;
        }
    }
}

pub fn stage(update: &pb::TaskUpdate) -> pb::ExecutorState {
    pb::ExecutorState::try_from(update.stage).unwrap()
}

/// Removes a job's container when dropped, so a failing test leaves no container waiting.
pub struct ContainerGuard(pub String);

impl ContainerGuard {
    pub fn for_job(job: &JobDefinition) -> ContainerGuard {
        ContainerGuard(job.container_name())
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        on_own_runtime(move |docker| async move {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = docker.remove_container(&name, Some(options)).await;
        });
    }
}

/// Removes every Docker network with this name when dropped (a test's unique network).
pub struct NetworkGuard(pub String);

impl NetworkGuard {
    /// A unique network name to guard.
    pub fn unique(prefix: &str) -> NetworkGuard {
        NetworkGuard(unique_id(prefix))
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        on_own_runtime(move |docker| async move {
            let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&std::collections::HashMap::from([(
                    "name",
                    vec![name.as_str()],
                )]))
                .build();
            for network in docker
                .list_networks(Some(options))
                .await
                .unwrap_or_default()
            {
                if network.name.as_deref() == Some(name.as_str())
                    && let Some(id) = network.id
                {
                    let _ = docker.remove_network(&id).await;
                }
            }
        });
    }
}

/// Runs `work` against the engine on a fresh runtime on its own thread: `Drop` cannot await.
fn on_own_runtime<F, Fut>(work: F)
where
    F: FnOnce(bollard::Docker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if let Ok(docker) = bollard::Docker::connect_with_unix_defaults() {
            runtime.block_on(work(docker));
        }
    })
    .join();
}

/// The Docker networks named exactly `name`.
pub async fn networks_named(name: &str) -> Vec<bollard::models::Network> {
    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
        .filters(&std::collections::HashMap::from([("name", vec![name])]))
        .build();
    docker
        .list_networks(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter(|network| network.name.as_deref() == Some(name))
        .collect()
}

/// The baseline the benchmarks compare with: `cmd` in the test image as a plain container,
/// with no network like a job, created, started, awaited and removed through bollard.
pub async fn bare_container_run(
    docker: &bollard::Docker,
    name: &str,
    cmd: &[&str],
) -> anyhow::Result<()> {
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
    };
    use futures_util::StreamExt;
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            bollard::models::ContainerCreateBody {
                image: Some(IMAGE.into()),
                cmd: Some(cmd.iter().map(|arg| (*arg).to_owned()).collect()),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    docker.start_container(name, None).await?;
    let wait = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let _ = docker.wait_container(name, Some(wait)).next().await;
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await?;
    Ok(())
}
