//! Many jobs at once through the whole agent path: `RAP_BENCH_JOBS` trivial jobs (default 20)
//! started together as RUNJOB tasks on runners with that much capacity (task runners, durable
//! outbox, git checkouts, Docker executor), against the same number of bare container runs of
//! the same image and command started together through bollard (create, start, wait, remove; no
//! network, like the job). Prints the total wall time of each and their ratio.
//!
//! Run: `cargo bench -p rap-agent --bench parallel_jobs` (needs the Docker engine and
//! `scripts/test-images`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use common::{bare_container_run, executor, make_repo, new_job, runjob_task, unique_id};
use futures_util::future::try_join_all;
use rap_agent::layout::Layout;
use rap_agent::outbox::Outbox;
use rap_agent::task::Tasks;
use rap_proto::pb::rap::v1 as pb;

/// The job's command, also run by the bare containers.
const SCRIPT: &str = "true";

async fn bare_runs(docker: &Docker, count: usize) -> anyhow::Result<Duration> {
    let names: Vec<String> = (0..count).map(|_| unique_id("bench-bare")).collect();
    let started = Instant::now();
    try_join_all(
        names
            .iter()
            .map(|name| bare_container_run(docker, name, &["sh", "-c", SCRIPT])),
    )
    .await?;
    Ok(started.elapsed())
}

/// Starts `count` RUNJOB tasks at once and waits until every one reports completion.
async fn agent_runs(
    tasks: &mut Tasks<rap_agent::executor::docker::DockerExecutor>,
    updates: &mut tokio::sync::mpsc::Receiver<pb::TaskUpdate>,
    repo: &std::path::Path,
    commit: &str,
    count: usize,
) -> anyhow::Result<Duration> {
    let jobs: Vec<_> = (0..count)
        .map(|_| new_job(&unique_id("bench-par"), repo, commit, SCRIPT))
        .collect();
    let mut waiting: HashSet<String> = jobs.iter().map(|job| job.task_id.clone()).collect();
    let started = Instant::now();
    for job in &jobs {
        tasks.start(runjob_task(job));
    }
    while !waiting.is_empty() {
        let update = tokio::time::timeout(Duration::from_secs(300), updates.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the outbox closed"))?;
        if update.complete {
            anyhow::ensure!(
                update.stage == pb::ExecutorState::Finalized as i32,
                "task {} ended in stage {}",
                update.task_id,
                update.stage
            );
            waiting.remove(&update.task_id);
        }
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("RAP_BENCH_JOBS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir()?;
    let (repo, commit) = make_repo(dir.path(), &[("project.yaml", "version: '4.0'\n")]);
    let work = dir.path().join("work");
    let executor = Arc::new(executor(&work).await);
    let (outbox, mut updates) = Outbox::open(&Layout::new(work.clone()).outbox())?;
    let mut tasks = Tasks::new(executor, Arc::new(outbox), count, 1);
    let docker = Docker::connect_with_unix_defaults()?
        .negotiate_version()
        .await?;

    // One warm-up of each (git cache, image layers, runtime threads).
    agent_runs(&mut tasks, &mut updates, &repo, &commit, 1).await?;
    bare_runs(&docker, 1).await?;

    let through_agent = agent_runs(&mut tasks, &mut updates, &repo, &commit, count).await?;
    let bare = bare_runs(&docker, count).await?;
    tasks.shutdown().await;
    println!("jobs at once: {count} (capacity {count})");
    println!(
        "agent (task runners + outbox + prepare/execute/wait/finalize/cleanup): {:.2} s total",
        through_agent.as_secs_f64()
    );
    println!(
        "bare containers (create+start+wait+remove, no network): {:.2} s total",
        bare.as_secs_f64()
    );
    println!(
        "ratio: {:.2}",
        through_agent.as_secs_f64() / bare.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}
