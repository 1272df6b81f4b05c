//! Cancellation from the job server, across real processes: `rap up` (controller, agent with
//! real Docker, job server; mTLS between controller and agent) runs a study whose only action
//! writes a partial output and then sleeps for ten minutes. A researcher runs it through the
//! job server's HTML forms (cookies, CSRF tokens), waits until its container runs, and cancels
//! the job request from its page (A7). The job must end `cancelled_by_user` on the controller
//! (WatchJobs and GetJobStatus) and on the job server's page, its container must be removed
//! (Docker's `destroy` event), the partial output must not be filed in either privacy tree, and
//! the page must no longer offer Cancel.

#[path = "support/action_images.rs"]
mod action_images;
#[path = "support/rap_up.rs"]
mod rap_up;
#[path = "support/web_forms.rs"]
mod web_forms;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use rap_integration::requests;
use rap_integration::stack::{self, Installation};
use rap_proto::pb::rap::v1 as pb;

use web_forms::FormClient;

const PROJECT: &str = "sample-study";
const WORKSPACE: &str = "cancelled";
const ACTION: &str = "slow";
/// How long any one wait may take (images are local; the job starts within seconds).
const DEADLINE: Duration = Duration::from_secs(180);
/// What the action prints once its partial output is on disk.
const WRITTEN: &str = "partial output written";

const PROJECT_YAML: &str = "version: '4.0'
actions:
  slow:
    run: python:v2 analysis/slow.sh
    outputs:
      moderately_sensitive:
        table: output/slow.csv
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_cancels_a_running_job_from_the_job_server() {
    action_images::action_images().await;
    let dir = tempfile::tempdir().unwrap();
    // The study `rap up` commits: one action that writes its output, says so, then sleeps
    // far longer than the test.
    let study = dir.path().join("slow-study");
    std::fs::create_dir_all(study.join("analysis")).unwrap();
    std::fs::write(study.join("project.yaml"), PROJECT_YAML).unwrap();
    std::fs::write(
        study.join("analysis/slow.sh"),
        format!("mkdir -p output\necho partial,1 > output/slow.csv\necho '{WRITTEN}'\nsleep 600\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let up = rap_up::rap_up_with(&data, &[OsStr::new("--study"), study.as_os_str()], &[]).await;
    let data = data.canonicalize().unwrap();
    let jobserver = up.fields["Job server"].trim_end_matches('/').to_owned();

    // The researcher signs in, creates a workspace for the study and runs the action.
    let mut web = FormClient::new(&jobserver);
    web.sign_in("researcher", up.password("researcher")).await;
    let repo_url = format!("file://{}", data.join("study").display());
    web.create_workspace(PROJECT, WORKSPACE, &repo_url).await;
    let since = unix_now() - 1;
    let rap_id = web.run_jobs(PROJECT, WORKSPACE, &[ACTION], "local").await;
    let request_page = format!("/{PROJECT}/{WORKSPACE}/{rap_id}/");

    // The controller reports the job executing (WatchJobs over TLS with the client token).
    let installation = Installation::init(&data.join("controller"), "local")
        .await
        .unwrap();
    let endpoint = up.fields["Controller"]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut client = stack::rap_client(&installation, &endpoint).await.unwrap();
    let jobs = requests::follow(&mut client, &installation, &rap_id, DEADLINE, |jobs| {
        jobs.get(ACTION)
            .is_some_and(|job| job.status_code() == pb::StatusCode::Executing)
    })
    .await
    .unwrap();
    let job_id = jobs[ACTION].identifier.clone();
    let container = format!("os-job-{job_id}");
    // Docker started its container, and the action wrote its partial output into the job's
    // volume (it prints the marker after writing).
    assert_eq!(
        first_docker_event(&container, "start", since).await,
        Some("start".to_owned()),
        "{container} never started"
    );
    wait_for_log_line(&container, WRITTEN).await;
    let volume_output = data
        .join("backend/high_privacy/volumes")
        .join(&job_id)
        .join("output/slow.csv");
    assert!(
        volume_output.is_file(),
        "the partial output {} is in the job's volume",
        volume_output.display()
    );

    // The job server shows it running (its live updates, from its own WatchJobs stream), and
    // its page offers Cancel.
    let events = format!("{request_page}events");
    let live = wait_for_live_update(&jobserver, &events, |html| {
        job_row(html, &job_id).is_some_and(|row| row.contains("<td>executing</td>"))
    })
    .await;
    assert!(live.contains(r#"data-cancellable="true""#), "{live}");
    let page = web.get(&request_page).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"id="cancel-form""#), "{}", page.body);
    let row = job_row(&page.body, &job_id).unwrap_or_else(|| panic!("no row: {}", page.body));
    assert!(row.contains(">Running</td>"), "{row}");

    // The researcher cancels the request from its page.
    let cancelled = web
        .submit(&request_page, &format!("{request_page}cancel/"), &[])
        .await;
    assert_eq!(cancelled.status, 303, "cancel: {}", cancelled.body);
    assert_eq!(cancelled.location.as_deref(), Some(request_page.as_str()));
    let page = web.get(&request_page).await;
    assert!(
        page.body
            .contains("The requested actions have been cancelled"),
        "{}",
        page.body
    );
    // A7: the cancelled action is no longer cancellable, so Cancel is gone at once.
    assert!(!page.body.contains(r#"id="cancel-form""#), "{}", page.body);

    // The controller ends the job as cancelled by the user: on WatchJobs and GetJobStatus.
    let jobs = requests::run_to_completion(&mut client, &installation, &rap_id, 1, DEADLINE)
        .await
        .unwrap();
    let job = &jobs[ACTION];
    assert_eq!(job.identifier, job_id);
    assert_eq!(job.status(), pb::State::Failed);
    assert_eq!(
        job.status_code(),
        pb::StatusCode::CancelledByUser,
        "{}",
        job.status_message
    );
    let status = client
        .get_job_status(
            stack::authed(
                &installation,
                pb::GetJobStatusRequest {
                    rap_ids: vec![rap_id.clone()],
                },
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert!(status.unrecognised_rap_ids.is_empty(), "{status:?}");
    assert_eq!(status.jobs.len(), 1, "{status:?}");
    assert_eq!(
        status.jobs[0].status_code(),
        pb::StatusCode::CancelledByUser,
        "{status:?}"
    );

    // The agent kills and removes the container, long before `sleep 600` would end.
    assert_eq!(
        first_docker_event(&container, "destroy", since).await,
        Some("destroy".to_owned()),
        "{container} not removed"
    );

    // The job server's page shows the cancellation and offers no Cancel.
    wait_for_live_update(&jobserver, &events, |html| {
        job_row(html, &job_id).is_some_and(|row| row.contains("<td>cancelled_by_user</td>"))
            && html.contains(r#"data-cancellable="false""#)
    })
    .await;
    let page = web.get(&request_page).await;
    let row = job_row(&page.body, &job_id).unwrap_or_else(|| panic!("no row: {}", page.body));
    assert!(row.contains(">Failed</td>"), "{row}");
    assert!(row.contains("<td>cancelled_by_user</td>"), "{row}");
    // The request itself failed too, whichever of the cancel handler and the watch task
    // wrote last (the handler once overwrote the watch's `Failed` with a stale `Running`).
    assert!(
        page.body
            .contains(r#"id="request-status" class="status-failed">Failed</strong>"#),
        "{}",
        page.body
    );
    assert!(!page.body.contains(r#"id="cancel-form""#), "{}", page.body);
    // The job's own page offers no Cancel either.
    let job_page = web.get(&format!("{request_page}{job_id}/")).await;
    assert_eq!(job_page.status, 200);
    assert!(
        job_page.body.contains("cancelled_by_user"),
        "{}",
        job_page.body
    );
    assert!(
        !job_page.body.contains(r#"id="cancel""#),
        "{}",
        job_page.body
    );

    // Nothing was filed: the partial output is in neither privacy tree nor any manifest.
    let backend = data.join("backend");
    for level in ["high_privacy", "medium_privacy"] {
        let workspace = backend.join(level).join("workspaces").join(WORKSPACE);
        let output = workspace.join("output/slow.csv");
        assert!(!output.exists(), "{} was filed", output.display());
        assert_not_in_manifest(&workspace.join("metadata/manifest.json"), "output/slow.csv");
    }

    up.interrupt_and_wait().await;
}

/// The `<tr>` of the jobs table that links to job `job_id`.
fn job_row<'a>(html: &'a str, job_id: &str) -> Option<&'a str> {
    let at = html.find(&format!(">{job_id}</a>"))?;
    let start = html[..at].rfind("<tr>")?;
    let end = at + html[at..].find("</tr>")?;
    Some(&html[start..end])
}

/// Follows the job-request page's live updates (server-sent events at `path`, which open with
/// the current state) until one satisfies `done`; returns its HTML.
async fn wait_for_live_update(base_url: &str, path: &str, done: impl Fn(&str) -> bool) -> String {
    let host = base_url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut seen = Vec::new();
    let followed = tokio::time::timeout(DEADLINE, async {
        let mut data: Vec<String> = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            } else if line.is_empty() && !data.is_empty() {
                let html = data.join("\n");
                data.clear();
                if done(&html) {
                    return Some(html);
                }
                seen.push(html);
            }
        }
        None
    })
    .await;
    match followed {
        Ok(Some(html)) => html,
        Ok(None) => panic!("{path} ended; updates seen: {seen:#?}"),
        Err(_) => panic!("{path}: no matching update within {DEADLINE:?}; seen: {seen:#?}"),
    }
}

/// The first Docker event `event` of `container` since `since` (replayed, so it cannot be
/// missed), or `None` if none comes within the deadline.
async fn first_docker_event(container: &str, event: &str, since: u64) -> Option<String> {
    let mut events = Command::new("docker")
        .args(["events", "--since", &since.to_string()])
        .args(["--filter", &format!("container={container}")])
        .args(["--filter", &format!("event={event}")])
        .args(["--format", "{{.Action}}"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

/// Follows the container's output until it prints `expected`.
async fn wait_for_log_line(container: &str, expected: &str) {
    let mut logs = Command::new("docker")
        .args(["logs", "--follow", container])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == expected {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{container} never printed {expected:?}");
}

/// A manifest, if there is one, does not list `output`.
fn assert_not_in_manifest(path: &Path, output: &str) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        manifest["outputs"].get(output).is_none(),
        "{} lists {output}: {manifest:#}",
        path.display()
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
