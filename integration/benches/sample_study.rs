//! The sample study end to end through the RAP (controller and agent as real processes, a job
//! request through the RAP API, followed on `WatchJobs`) against the same two containers run
//! by hand with `docker run` in sequence, printed as a ratio. The images must exist
//! (`scripts/action-images`); the binaries must be built.
//!
//!     cargo bench -p rap-integration --bench sample_study [-- RUNS]

use std::path::Path;
use std::time::{Duration, Instant};

use rap_integration::stack::{self, AgentOptions, Installation};
use rap_integration::{requests, study};
use rap_proto::pb::rap::v1 as pb;
use tokio::process::Command;

const NETWORK: &str = "rap-bench-db";
const DATABASE_URL: &str = "sqlite:////database/patients.sqlite";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let installation = Installation::init(&root.join("controller"), "bench").await?;
    let controller = stack::start_controller(
        &installation,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &root.join("logs/controller.log"),
    )
    .await?;
    let _agent = stack::start_agent(
        &installation,
        &controller.agent_endpoint,
        &AgentOptions {
            work_dir: root.join("backend"),
            database_url: DATABASE_URL.into(),
            database_network: NETWORK.into(),
            allowed_images: vec!["ehrql".into(), "python".into()],
        },
        &root.join("logs/agent.log"),
    )
    .await?;
    let repo = study::commit_study(&study::sample_study(), &root.join("study")).await?;
    let mut client = stack::rap_client(&installation, &controller.rap_endpoint).await?;

    let mut through_rap = Vec::new();
    for run in 0..runs {
        let rap_id = requests::new_rap_id();
        let started = Instant::now();
        let response = requests::submit(
            &mut client,
            &installation,
            pb::SubmitJobRequest {
                rap_id: rap_id.clone(),
                backend: "bench".into(),
                workspace: format!("bench{run}"),
                repo_url: repo.path.display().to_string(),
                branch: "main".into(),
                commit: repo.commit.clone(),
                database_name: "default".into(),
                requested_actions: vec!["summarise".into()],
                codelists_ok: true,
                created_by: "bench".into(),
                ..Default::default()
            },
        )
        .await?;
        let jobs = requests::run_to_completion(
            &mut client,
            &installation,
            &rap_id,
            response.count as usize,
            Duration::from_secs(300),
        )
        .await?;
        let elapsed = started.elapsed();
        for job in jobs.values() {
            anyhow::ensure!(
                job.status() == pb::State::Succeeded,
                "{}: {}",
                job.action,
                job.status_message
            );
        }
        through_rap.push(elapsed);
    }

    let mut by_hand = Vec::new();
    for run in 0..runs {
        let workspace = root.join(format!("by-hand{run}"));
        copy_study(&study::sample_study(), &workspace).await?;
        let started = Instant::now();
        docker_run(
            &workspace,
            NETWORK,
            &[
                "-e",
                &format!("DATABASE_URL={DATABASE_URL}"),
                "ghcr.io/opensafely-core/ehrql:v1",
                "generate-dataset",
                "analysis/dataset_definition.json",
                "--output",
                "output/dataset.csv",
            ],
        )
        .await?;
        docker_run(
            &workspace,
            "none",
            &["ghcr.io/opensafely-core/python:v2", "analysis/summarise.sh"],
        )
        .await?;
        by_hand.push(started.elapsed());
    }
    let rap = mean(&through_rap);
    let hand = mean(&by_hand);
    println!("sample study, {runs} runs each (2 actions: ehrQL dataset, then summary and chart)");
    println!("  through the RAP (submit -> both jobs final): {rap:.2?} per request");
    println!("  docker run by hand, in sequence:              {hand:.2?}");
    println!(
        "  ratio: {:.2}",
        rap.as_secs_f64() / hand.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}

fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / u32::try_from(times.len().max(1)).unwrap_or(1)
}

async fn copy_study(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "cp failed");
    tokio::fs::create_dir_all(to.join("output")).await?;
    let status = Command::new("chown")
        .args(["-R", "10000:10000"])
        .arg(to)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "chown failed");
    Ok(())
}

/// `docker run --rm` with the agent's main restrictions (user, capabilities, network).
async fn docker_run(workspace: &Path, network: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--init",
            "--cap-drop",
            "ALL",
            "--user",
            "10000:10000",
        ])
        .args(["--network", network, "-v"])
        .arg(format!("{}:/workspace", workspace.display()))
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "docker run {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
