//! Per-job overhead of the executor: a trivial job (`true`) through every step (prepare with a
//! git checkout, execute, wait, finalize with metadata and logs, cleanup) against a bare
//! container run of the same image and command through bollard (create, start, wait, remove).
//! Prints both means and their ratio. `RAP_BENCH_JOBS` sets the number of runs (default 10).
//!
//! Run: `cargo bench -p rap-agent --bench executor_overhead` (needs the Docker engine and
//! `scripts/test-images`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bollard::Docker;
use common::{IMAGE, bare_container_run};
use rap_agent::executor::Executor;
use rap_agent::executor::docker::{DockerConfig, DockerExecutor};
use rap_agent::job::{JobDefinition, Level4Limits, StudyRepo};
use rap_agent::layout::Layout;
use rap_agent::workspace::RepoPolicy;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()?;
    anyhow::ensure!(output.status.success(), "git {args:?} failed");
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

fn job(index: usize, repo: &Path, commit: &str) -> JobDefinition {
    let url = repo.to_string_lossy().into_owned();
    let id = format!("bench-{}-{index}", std::process::id());
    JobDefinition {
        task_id: format!("{id}-001"),
        rap_id: "bench".into(),
        id,
        repo_url: url.clone(),
        commit: commit.into(),
        study: StudyRepo {
            git_repo_url: url,
            commit: commit.into(),
            branch: "main".into(),
        },
        workspace: "bench".into(),
        action: "noop".into(),
        created_at: 1_714_558_830,
        image: IMAGE.into(),
        image_sha: String::new(),
        args: vec!["true".into()],
        env: Default::default(),
        input_job_ids: vec![],
        output_spec: vec![],
        allow_database_access: false,
        database_name: None,
        user: "bench".into(),
        cpu_count: 1.0,
        memory_limit: Some(256 * 1024 * 1024),
        level4: Level4Limits {
            max_filesize: 16 * 1024 * 1024,
            max_csv_rows: 5000,
            file_types: vec![".csv".into()],
        },
        requires_outputs_from: vec![],
    }
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / u32::try_from(samples.len().max(1)).unwrap_or(1)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("RAP_BENCH_JOBS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("study");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "--quiet", "--initial-branch=main"])?;
    std::fs::write(repo.join("project.yaml"), "version: '4.0'\nactions: {}\n")?;
    git(&repo, &["add", "--all"])?;
    git(&repo, &["commit", "--quiet", "-m", "bench"])?;
    let commit = git(&repo, &["rev-parse", "HEAD"])?;

    let executor = DockerExecutor::connect(DockerConfig {
        layout: Layout::new(dir.path().join("work")),
        backend: "bench".into(),
        registry: "rap.test".into(),
        allowed_images: vec!["busybox".into()],
        user: "1000:1000".into(),
        database_network: "none".into(),
        database_url: None,
        repo_policy: RepoPolicy {
            allowed_github_orgs: vec![],
            allow_local_repos: true,
            github_proxy: None,
        },
        docker_socket: None,
    })
    .await?;
    let docker = Docker::connect_with_unix_defaults()?
        .negotiate_version()
        .await?;

    // One warm-up of each (git cache, image layers).
    executor_run(&executor, &job(usize::MAX, &repo, &commit)).await?;
    bare_container_run(
        &docker,
        &format!("bench-bare-{}-warm", std::process::id()),
        &["true"],
    )
    .await?;

    let mut through_executor = Vec::new();
    let mut bare = Vec::new();
    for index in 0..runs {
        let started = Instant::now();
        executor_run(&executor, &job(index, &repo, &commit)).await?;
        through_executor.push(started.elapsed());
        let started = Instant::now();
        bare_container_run(
            &docker,
            &format!("bench-bare-{}-{index}", std::process::id()),
            &["true"],
        )
        .await?;
        bare.push(started.elapsed());
    }
    let executor_mean = mean(&through_executor);
    let bare_mean = mean(&bare);
    println!("runs: {runs}");
    println!("executor (prepare+execute+wait+finalize+cleanup): {executor_mean:?} per job");
    println!("bare container (create+start+wait+remove, no network): {bare_mean:?} per job");
    println!(
        "ratio: {:.2}",
        executor_mean.as_secs_f64() / bare_mean.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}

async fn executor_run(executor: &DockerExecutor, job: &JobDefinition) -> anyhow::Result<()> {
    executor.prepare(job).await?;
    executor.execute(job).await?;
    executor.wait_for_exit(job).await?;
    executor.finalize(job, false, None).await?;
    executor.cleanup(job).await?;
    Ok(())
}
