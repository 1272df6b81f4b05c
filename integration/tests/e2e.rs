//! End to end across real processes: `rap-controller` and `rap-agent` started by the same
//! harness `rap up` uses, certificates and tokens minted by `rap-controller init`, a study in a
//! real git repository, jobs in real Docker containers from the images `scripts/action-images`
//! builds. Each test submits a job request through the RAP API (TLS, bearer token) and waits on
//! `WatchJobs` until every job of the request is final: no sleeps, no polling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

#[path = "support/action_images.rs"]
mod action_images;
use action_images::action_images;
#[path = "support/backend.rs"]
mod backend;
use backend::Backend;

use rap_integration::requests;
use rap_integration::service::Service;
use rap_integration::stack::{self, AgentOptions, Controller, Installation};
use rap_integration::study::StudyRepo;
use rap_proto::pb::rap::v1 as pb;

/// How long a whole job request may take (images are local; the sample study takes seconds).
const REQUEST_DEADLINE: Duration = Duration::from_secs(180);
const BACKEND: &str = "test";
const DATABASE_NETWORK: &str = "rap-test-db";
const DATABASE_URL: &str = "sqlite:////database/patients.sqlite";

/// A controller and an agent over a temporary directory.
struct Stack {
    installation: Installation,
    controller: Controller,
    agent: Service,
    work_dir: PathBuf,
    root: PathBuf,
    // Last: the directory outlives the processes.
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        action_images().await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let work_dir = root.join("backend");
        // The configuration `init` wrote, with the harness's overrides, passes the agent's
        // own checks (certificates and backend, Docker, images, database URL).
        let Backend {
            installation,
            controller,
            agent,
        } = Backend::start(&root, BACKEND, &agent_options(&work_dir)).await;
        Stack {
            installation,
            controller,
            agent,
            work_dir,
            root,
            _dir: dir,
        }
    }

    /// Commits `files` (path, text) over the sample study into a fresh repository.
    async fn study(&self, name: &str, files: &[(&str, &str)]) -> StudyRepo {
        backend::sample_study_with(&self.root, name, files).await
    }

    async fn client(&self) -> pb::rap_service_client::RapServiceClient<tonic::transport::Channel> {
        stack::rap_client(&self.installation, &self.controller.rap_endpoint)
            .await
            .unwrap()
    }

    /// Submits `actions` of `repo` in `workspace`; returns the rap id and the number of jobs.
    async fn submit(&self, repo: &StudyRepo, workspace: &str, actions: &[&str]) -> (String, usize) {
        let rap_id = requests::new_rap_id();
        let response = requests::submit(
            &mut self.client().await,
            &self.installation,
            pb::SubmitJobRequest {
                rap_id: rap_id.clone(),
                backend: BACKEND.into(),
                workspace: workspace.into(),
                repo_url: repo.path.display().to_string(),
                branch: "main".into(),
                commit: repo.commit.clone(),
                database_name: "default".into(),
                requested_actions: actions.iter().map(|a| a.to_string()).collect(),
                codelists_ok: true,
                created_by: "e2e".into(),
                project: "e2e".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        (rap_id, response.count as usize)
    }

    /// The latest state of each job of `rap_id` once `until` holds for them.
    async fn watch(
        &self,
        rap_id: &str,
        until: impl FnMut(&BTreeMap<String, pb::Job>) -> bool,
    ) -> BTreeMap<String, pb::Job> {
        requests::follow(
            &mut self.client().await,
            &self.installation,
            rap_id,
            REQUEST_DEADLINE,
            until,
        )
        .await
        .unwrap()
    }

    /// Submits, as `workspace`, a study whose one action `waits` for a file `go` in its job
    /// directory (so it is certainly still running while the test restarts something), and
    /// returns the job once it executes.
    async fn start_waiting_job(&self, workspace: &str) -> pb::Job {
        let project = "version: '4.0'
actions:
  waits:
    run: python:v2 analysis/waits.sh
    outputs:
      moderately_sensitive:
        table: output/done.csv
";
        let script = "while [ ! -e go ]; do sleep 0.2; done\nmkdir -p output\necho done,1 > output/done.csv\n";
        let repo = self
            .study(
                workspace,
                &[("project.yaml", project), ("analysis/waits.sh", script)],
            )
            .await;
        let (rap_id, n_jobs) = self.submit(&repo, workspace, &["waits"]).await;
        assert_eq!(n_jobs, 1);
        let jobs = self
            .watch(&rap_id, |jobs| {
                jobs.get("waits")
                    .is_some_and(|job| job.status_code() == pb::StatusCode::Executing)
            })
            .await;
        jobs["waits"].clone()
    }

    /// Lets a [`Stack::start_waiting_job`] job finish; checks it succeeded and its output is
    /// in medium privacy, and returns its final state.
    async fn finish_waiting_job(&self, waiting: &pb::Job, workspace: &str) -> pb::Job {
        let job_dir = self
            .work_dir
            .join("high_privacy/volumes")
            .join(&waiting.identifier);
        std::fs::write(job_dir.join("go"), "").unwrap();
        let jobs = self.run_to_completion(&waiting.rap_id, 1).await;
        let waits = jobs["waits"].clone();
        assert_eq!(
            waits.status_code(),
            pb::StatusCode::Succeeded,
            "{}",
            waits.status_message
        );
        let done = self.work_dir.join(format!(
            "medium_privacy/workspaces/{workspace}/output/done.csv"
        ));
        assert_eq!(std::fs::read_to_string(done).unwrap(), "done,1\n");
        waits
    }

    async fn run_to_completion(&self, rap_id: &str, n_jobs: usize) -> BTreeMap<String, pb::Job> {
        self.watch(rap_id, |jobs| {
            jobs.len() == n_jobs && jobs.values().all(requests::is_final)
        })
        .await
    }
}

fn agent_options(work_dir: &Path) -> AgentOptions {
    AgentOptions {
        work_dir: work_dir.to_path_buf(),
        database_url: DATABASE_URL.into(),
        database_network: DATABASE_NETWORK.into(),
        allowed_images: vec!["ehrql".into(), "python".into()],
    }
}

async fn start_agent(
    installation: &Installation,
    controller: &Controller,
    work_dir: &Path,
    root: &Path,
) -> Service {
    stack::start_agent(
        installation,
        &controller.agent_endpoint,
        &agent_options(work_dir),
        &root.join("logs/agent.log"),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_study_runs_end_to_end() {
    let stack = Stack::start().await;
    let repo = stack.study("study", &[]).await;
    let (rap_id, n_jobs) = stack.submit(&repo, "sample", &["summarise"]).await;
    assert_eq!(n_jobs, 2, "summarise and the dataset it needs");
    let jobs = stack.run_to_completion(&rap_id, n_jobs).await;
    for action in ["generate_dataset", "summarise"] {
        let job = &jobs[action];
        assert_eq!(
            job.status_code(),
            pb::StatusCode::Succeeded,
            "{action}: {}",
            job.status_message
        );
        assert_eq!(job.status(), pb::State::Succeeded);
    }
    assert!(jobs["generate_dataset"].requires_db);
    assert!(!jobs["summarise"].requires_db);

    // Every output in the high-privacy tree; one row per patient of the generated database.
    let high = stack.work_dir.join("high_privacy/workspaces/sample");
    let dataset = std::fs::read_to_string(high.join("output/dataset.csv")).unwrap();
    let mut lines = dataset.lines();
    assert_eq!(lines.next(), Some("patient_id,sex,n_events"));
    assert_eq!(lines.count(), 500);
    for output in ["output/summary.csv", "output/chart.svg"] {
        assert!(high.join(output).is_file(), "{output} in high privacy");
    }

    // Only the moderately sensitive outputs in the medium-privacy tree, with the manifest.
    let medium = stack.work_dir.join("medium_privacy/workspaces/sample");
    assert!(!medium.join("output/dataset.csv").exists());
    let summary = std::fs::read_to_string(medium.join("output/summary.csv")).unwrap();
    let mut rows = summary.lines();
    assert_eq!(rows.next(), Some("sex,patients,clinical_events"));
    let mut patients = 0;
    let mut sexes = Vec::new();
    for row in rows {
        let fields: Vec<&str> = row.split(',').collect();
        sexes.push(fields[0].to_string());
        patients += fields[1].parse::<u32>().unwrap();
    }
    assert_eq!(patients, 500, "{summary}");
    assert!(sexes.contains(&"female".to_string()) && sexes.contains(&"male".to_string()));
    let chart = std::fs::read_to_string(medium.join("output/chart.svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert_eq!(chart.matches("<rect").count(), sexes.len());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(medium.join("metadata/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["workspace"], "sample");
    let outputs = manifest["outputs"].as_object().unwrap();
    assert_eq!(outputs["output/dataset.csv"]["level"], "highly_sensitive");
    assert_eq!(
        outputs["output/summary.csv"]["level"],
        "moderately_sensitive"
    );
    assert_eq!(outputs["output/chart.svg"]["level"], "moderately_sensitive");
    assert_eq!(
        outputs["output/summary.csv"]["job_id"],
        jobs["summarise"].identifier.as_str()
    );
    assert!(medium.join("metadata/summarise.log").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_action_fails_the_actions_that_need_it() {
    let stack = Stack::start().await;
    let project = "version: '4.0'
actions:
  broken:
    run: python:v2 analysis/broken.sh
    outputs:
      moderately_sensitive:
        table: output/never.csv
  report:
    run: python:v2 analysis/report.sh
    needs: [broken]
    outputs:
      moderately_sensitive:
        table: output/report.csv
";
    let repo = stack
        .study(
            "failing",
            &[
                ("project.yaml", project),
                (
                    "analysis/broken.sh",
                    "echo 'something went wrong' >&2\nexit 1\n",
                ),
                (
                    "analysis/report.sh",
                    "mkdir -p output\necho a,b > output/report.csv\n",
                ),
            ],
        )
        .await;
    let (rap_id, n_jobs) = stack.submit(&repo, "failing", &["report"]).await;
    assert_eq!(n_jobs, 2);
    let jobs = stack.run_to_completion(&rap_id, n_jobs).await;
    let broken = &jobs["broken"];
    assert_eq!(broken.status(), pb::State::Failed);
    assert_eq!(
        broken.status_code(),
        pb::StatusCode::NonzeroExit,
        "{}",
        broken.status_message
    );
    let report = &jobs["report"];
    assert_eq!(report.status(), pb::State::Failed);
    assert_eq!(
        report.status_code(),
        pb::StatusCode::DependencyFailed,
        "{}",
        report.status_message
    );
    // The dependent never ran: no output of it anywhere.
    assert!(
        !stack
            .work_dir
            .join("high_privacy/workspaces/failing/output/report.csv")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled_and_its_container_removed() {
    let stack = Stack::start().await;
    let project = "version: '4.0'
actions:
  slow:
    run: python:v2 analysis/slow.sh
    outputs:
      moderately_sensitive:
        table: output/slow.csv
";
    let repo = stack
        .study(
            "slow",
            &[
                ("project.yaml", project),
                ("analysis/slow.sh", "sleep 600\necho a > output/slow.csv\n"),
            ],
        )
        .await;
    let since = unix_now() - 1;
    let (rap_id, _) = stack.submit(&repo, "slow", &["slow"]).await;
    // Wait until the container runs.
    let jobs = stack
        .watch(&rap_id, |jobs| {
            jobs.get("slow")
                .is_some_and(|job| job.status_code() == pb::StatusCode::Executing)
        })
        .await;
    let container = format!("os-job-{}", jobs["slow"].identifier);
    assert!(container_running(&container).await, "{container} running");
    let response = stack
        .client()
        .await
        .cancel_job(
            stack::authed(
                &stack.installation,
                pb::CancelJobRequest {
                    rap_id: rap_id.clone(),
                    actions: vec!["slow".into()],
                },
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert!(!response.details.is_empty());
    let jobs = stack.run_to_completion(&rap_id, 1).await;
    let slow = &jobs["slow"];
    assert_eq!(slow.status(), pb::State::Failed);
    assert_eq!(
        slow.status_code(),
        pb::StatusCode::CancelledByUser,
        "{}",
        slow.status_message
    );
    // The controller records the cancellation at once and sends the agent a CANCELJOB task,
    // which kills the container and then removes it: await Docker's `destroy` event for it
    // (replayed from before the cancel, so it cannot be missed), well before `sleep 600` ends.
    let events = tokio::process::Command::new("docker")
        .args(["events", "--since", &since.to_string(), "--filter"])
        .arg(format!("container={container}"))
        .args(["--filter", "event=destroy", "--format", "{{.Action}}"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(events.stdout.unwrap()).lines();
    let destroyed = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    assert_eq!(
        destroyed.ok().and_then(Result::ok).flatten().as_deref(),
        Some("destroy"),
        "{container} not removed a minute after the cancel"
    );
    assert!(!container_running(&container).await, "{container} stopped");
    drop(stack.agent);
}

/// Whether the container exists and runs.
async fn container_running(name: &str) -> bool {
    let output = tokio::process::Command::new("docker")
        .args([
            "container",
            "inspect",
            "--format",
            "{{.State.Running}}",
            name,
        ])
        .output()
        .await
        .unwrap();
    output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_the_agent_being_killed_and_restarted() {
    let mut stack = Stack::start().await;
    let waiting = stack.start_waiting_job("waiting").await;
    let job_id = waiting.identifier.clone();

    // A real SIGKILL, then a new agent process on the same work directory.
    stack.agent.kill().await.unwrap();
    assert!(
        container_running(&format!("os-job-{job_id}")).await,
        "the container outlives the agent"
    );
    stack.agent = start_agent(
        &stack.installation,
        &stack.controller,
        &stack.work_dir,
        &stack.root,
    )
    .await;
    let waits = stack.finish_waiting_job(&waiting, "waiting").await;
    // Adopted, not restarted: the start time is the first run's.
    assert_eq!(waits.started_at, waiting.started_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_the_controller_being_killed_and_restarted() {
    let mut stack = Stack::start().await;
    let since = unix_now() - 1;
    let waiting = stack.start_waiting_job("controller-restart").await;
    let job_id = waiting.identifier.clone();

    // A real SIGKILL, then a new controller on the same data directory and the same ports, so
    // the agent's configured endpoint is valid again; it reconnects by itself (backoff).
    stack.controller.service.kill().await.unwrap();
    stack.controller = stack::start_controller(
        &stack.installation,
        &stack.controller.rap_listen,
        &stack.controller.agent_listen,
        &stack.root.join("logs/controller-restarted.log"),
    )
    .await
    .unwrap();
    let waits = stack
        .finish_waiting_job(&waiting, "controller-restart")
        .await;
    assert_eq!(waits.identifier, job_id, "the same job, not a new one");
    assert_eq!(waits.started_at, waiting.started_at, "not restarted");
    // Exactly once: Docker started the job's container a single time.
    let container = format!("os-job-{job_id}");
    let starts = tokio::process::Command::new("docker")
        .args(["events", "--since", &since.to_string()])
        .args(["--until", &(unix_now() + 1).to_string()])
        .args(["--filter", &format!("container={container}")])
        .args(["--filter", "event=start", "--format", "{{.Action}}"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&starts.stdout).lines().count(),
        1,
        "{container} started once"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The job server stores local studies as `file:///…` URLs (its `allow_file_repos`) and sends
/// them unchanged; with `allow_local_repos` the controller accepts them as the same local
/// repository (stored as its path), reads `project.yaml` at the commit and creates the jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_from_the_job_server_are_local_repositories() {
    let stack = Stack::start().await;
    let repo = stack.study("file-url", &[]).await;
    let response = requests::submit(
        &mut stack.client().await,
        &stack.installation,
        pb::SubmitJobRequest {
            rap_id: requests::new_rap_id(),
            backend: BACKEND.into(),
            workspace: "file-url".into(),
            repo_url: format!("file://{}", repo.path.display()),
            branch: "main".into(),
            commit: repo.commit.clone(),
            database_name: "default".into(),
            requested_actions: vec!["summarise".into()],
            codelists_ok: true,
            created_by: "e2e".into(),
            ..Default::default()
        },
    )
    .await
    .expect("a file:/// study is accepted when local repositories are allowed");
    // summarise and the dataset action it needs.
    assert_eq!(response.count, 2, "{response:?}");
}
