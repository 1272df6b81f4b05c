//! The web app through its router (`oneshot`), against an in-test RapService over loopback and
//! real git repositories: sign-in, permissions, forms with bad input, running jobs with A5's
//! status mapping, live updates, cancellation, the job and status pages.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{Harness, flash, job};
use rap_jobserver::model::AnalysisScope;
use rap_jobserver::status::RequestStatus;
use rap_proto::pb::rap::v1 as pb;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sign_in_needs_csrf_and_the_right_password() {
    let h = Harness::new().await;
    let (status, body, headers) = h.get("/login/", "").await;
    assert_eq!(status, StatusCode::OK);
    let csrf_cookie = headers
        .iter()
        .find_map(|h| h.strip_prefix("set-cookie: rap_login_csrf="))
        .unwrap();
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Lax"));
    let token = csrf_cookie.split(';').next().unwrap().to_owned();
    assert!(body.contains(&token), "the form carries the token");
    let cookie = format!("rap_login_csrf={token}");

    // No token: refused.
    let (status, _, _) = h
        .post(
            "/login/",
            &cookie,
            &[("username", "dev"), ("password", "pw")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Wrong password: the message, no session.
    let (status, body, headers) = h
        .post(
            "/login/",
            &cookie,
            &[
                ("csrf_token", &token),
                ("username", "dev"),
                ("password", "nope"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Please enter a correct username and password."));
    assert!(!headers.iter().any(|h| h.contains("rap_session=")));
    // Right password: a session cookie, and the home page knows us.
    let (status, _, headers) = h
        .post(
            "/login/",
            &cookie,
            &[
                ("csrf_token", &token),
                ("username", "dev"),
                ("password", "pw"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = headers
        .iter()
        .find_map(|h| h.strip_prefix("set-cookie: "))
        .filter(|c| c.starts_with("rap_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (_, body, _) = h.get("/", &session).await;
    assert!(body.contains("href=\"/settings/\">dev<"));
    assert!(body.contains("Project One"));
}

#[tokio::test]
async fn run_jobs_permissions() {
    let h = Harness::new().await;
    // Anonymous: sent to sign in.
    let (status, _, headers) = h.get("/proj/ws/run-jobs/", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[0], "location: /login/");
    // No job_run (outsider, collaborator): 404.
    for user in ["outsider", "collab"] {
        let (cookie, _) = h.session(user);
        let (status, _, _) = h.get("/proj/ws/run-jobs/", &cookie).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{user}");
    }
    // Developer without backends: 404.
    let (cookie, _) = h.session("nobackend");
    assert_eq!(
        h.get("/proj/ws/run-jobs/", &cookie).await.0,
        StatusCode::NOT_FOUND
    );
    // Developer with a backend: the form lists the actions and run_all.
    let (cookie, _) = h.session("dev");
    let (status, body, _) = h.get("/proj/ws/run-jobs/", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    for action in ["generate", "analyse", "run_all"] {
        assert!(body.contains(&format!("value=\"{action}\"")), "{action}");
    }
    assert!(body.contains(&h.repo_head));
    // Unknown workspace: redirect home.
    let (status, _, headers) = h.get("/proj/nope/run-jobs/", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[0], "location: /");
    // Archived: back to the workspace with A4's message.
    let mut ws = h.store.workspace("ws").unwrap().unwrap();
    ws.is_archived = true;
    h.store.put_workspace(&ws).unwrap();
    let (status, _, headers) = h.get("/proj/ws/run-jobs/", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[0], "location: /proj/ws/");
    assert!(
        flash(&headers)
            .unwrap()
            .starts_with("You cannot create new jobs for an archived workspace.")
    );
}

#[tokio::test]
async fn run_jobs_bad_input_shows_messages_and_stores_nothing() {
    let h = Harness::new().await;
    let (cookie, csrf) = h.session("dev");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("backend", "test")],
            "Please select at least one of the Actions listed above.",
        ),
        (
            &[("backend", "test"), ("requested_actions", "nonexistent")],
            "Select a valid choice. nonexistent is not one of the available choices.",
        ),
        (
            &[("backend", "elsewhere"), ("requested_actions", "generate")],
            "Select a valid choice. elsewhere is not one of the available choices.",
        ),
        (
            &[("requested_actions", "generate")],
            "Backend: This field is required.",
        ),
    ];
    for (fields, message) in cases {
        let mut form = vec![("csrf_token", csrf.as_str())];
        form.extend_from_slice(fields);
        let (status, body, _) = h.post("/proj/ws/run-jobs/", &cookie, &form).await;
        assert_eq!(status, StatusCode::OK, "{message}");
        assert!(body.contains(message), "{message} not in page");
    }
    // A wrong CSRF token is refused outright.
    let (status, _, _) = h
        .post(
            "/proj/ws/run-jobs/",
            &cookie,
            &[
                ("csrf_token", "forged"),
                ("backend", "test"),
                ("requested_actions", "generate"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(all_requests(&h).is_empty());
    assert!(h.fake.submits.lock().unwrap().is_empty());
}

#[tokio::test]
async fn cohort_extractor_studies_are_refused() {
    let h = Harness::new().await;
    let yaml = "version: '3.0'\nexpectations:\n  population_size: 10\nactions:\n  cohort:\n    run: cohortextractor:latest generate_cohort\n    outputs:\n      highly_sensitive:\n        cohort: output/input.csv\n";
    let (url, _) = common::study_repo(h.dir.path(), "old-study", yaml);
    let mut ws = h.store.workspace("ws").unwrap().unwrap();
    ws.repo_url = url;
    h.store.put_workspace(&ws).unwrap();
    let (cookie, _) = h.session("dev");
    let (status, body, _) = h.get("/proj/ws/run-jobs/", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("Cohort-extractor is no longer supported"),
        "{body}"
    );
    assert!(!body.contains("name=\"requested_actions\""));
}

async fn run(h: &Harness, actions: &[&str]) -> (StatusCode, Vec<String>) {
    let (cookie, csrf) = h.session("dev");
    let mut form = vec![
        ("csrf_token", csrf.as_str()),
        ("backend", "test"),
        ("force_run_dependencies", "on"),
    ];
    for action in actions {
        form.push(("requested_actions", action));
    }
    let (status, _, headers) = h.post("/proj/ws/run-jobs/", &cookie, &form).await;
    (status, headers)
}

#[tokio::test]
async fn run_jobs_submits_and_maps_the_result_as_a5() {
    let h = Harness::new().await;
    // Accepted with jobs: pending.
    let (status, headers) = run(&h, &["analyse"]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[0], "location: /proj/ws/logs/");
    assert_eq!(
        flash(&headers).unwrap(),
        "Requested actions have been scheduled to run."
    );
    let submitted = h.fake.submits.lock().unwrap()[0].clone();
    assert_eq!(submitted.commit, h.repo_head);
    assert_eq!(submitted.requested_actions, vec!["analyse"]);
    assert_eq!(submitted.backend, "test");
    assert_eq!(submitted.workspace, "ws");
    assert_eq!(submitted.repo_url, h.repo_url);
    assert_eq!(submitted.project, "proj");
    assert_eq!(submitted.orgs, vec!["org"]);
    // A project without a scope sends an empty one, which grants nothing extra.
    assert_eq!(submitted.analysis_scope, Some(pb::AnalysisScope::default()));
    assert_eq!(submitted.database_name, "default");
    assert!(submitted.force_run_dependencies);
    let request = h.store.job_request(&submitted.rap_id).unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Pending);
    assert_eq!(request.status_message, None);
    assert!(request.project_definition.contains("analyse.py"));

    // Nothing to do: the details.
    *h.fake.submit_reply.lock().unwrap() = Ok(pb::SubmitJobResponse {
        result: pb::SubmitResult::NothingToDo as i32,
        details: "All actions have already completed successfully".into(),
        rap_id: String::new(),
        count: 0,
    });
    let (_, headers) = run(&h, &["generate"]).await;
    assert_eq!(
        flash(&headers).unwrap(),
        "No actions scheduled: Nothing to do (All actions have already completed successfully)"
    );
    // Rejected: failed with the details.
    *h.fake.submit_reply.lock().unwrap() = Err(tonic::Status::invalid_argument("Branch has gone"));
    run(&h, &["generate"]).await;
    let statuses: Vec<(RequestStatus, Option<String>)> = h
        .fake
        .submits
        .lock()
        .unwrap()
        .iter()
        .map(|s| {
            let r = h.store.job_request(&s.rap_id).unwrap().unwrap();
            (r.status, r.status_message)
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (RequestStatus::Pending, None),
            (
                RequestStatus::NothingToDo,
                Some("All actions have already completed successfully".into())
            ),
            (RequestStatus::Failed, Some("Branch has gone".into())),
        ]
    );
    // The workspace log lists all three, newest first.
    let (_, body, _) = h.get("/proj/ws/logs/", "").await;
    assert!(body.contains("Nothing to do") && body.contains("Failed") && body.contains("Pending"));
}

#[tokio::test]
async fn unreachable_controller_gives_unknown_error_creating_jobs() {
    let mut h = Harness::new().await;
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    h.state.link = rap_jobserver::controller_link::ControllerLink::new(
        &format!("http://{address}"),
        "x",
        None,
    )
    .unwrap();
    let (_, headers) = run(&h, &["generate"]).await;
    assert_eq!(
        flash(&headers).unwrap(),
        "No actions scheduled: Unknown error creating jobs ()"
    );
    let request = all_requests(&h).remove(0);
    assert_eq!(request.status, RequestStatus::UnknownErrorCreatingJobs);
}

#[tokio::test]
async fn new_workspace_validates_and_stores_nothing_on_error() {
    let mut h = Harness::new().await;
    let (cookie, csrf) = h.session("dev");
    let repo = h.repo_url.clone();
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (
            vec![
                ("name", ""),
                ("repo_url", &repo),
                ("branch", "main"),
                ("purpose", "p"),
            ],
            "Name: This field is required.".into(),
        ),
        (
            vec![
                ("name", "bad name!"),
                ("repo_url", &repo),
                ("branch", "main"),
                ("purpose", "p"),
            ],
            "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.".into(),
        ),
        (
            vec![
                ("name", "new"),
                ("repo_url", "ftp://x"),
                ("branch", "main"),
                ("purpose", "p"),
            ],
            "Repository URL: Enter an https:// URL".into(),
        ),
        (
            vec![
                ("name", "new"),
                ("repo_url", &repo),
                ("branch", "nope"),
                ("purpose", "p"),
            ],
            "Branch: Branch nope not found in the repository".into(),
        ),
        (
            vec![
                ("name", "new"),
                ("repo_url", &repo),
                ("branch", "main"),
                ("purpose", ""),
            ],
            "Purpose: This field is required.".into(),
        ),
        (
            vec![
                ("name", "WS"),
                ("repo_url", &repo),
                ("branch", "main"),
                ("purpose", "p"),
            ],
            "A workspace with this name already exists.".into(),
        ),
    ];
    for (fields, message) in cases {
        let mut form = vec![("csrf_token", csrf.as_str())];
        form.extend(fields);
        let (status, body, _) = h.post("/proj/new-workspace/", &cookie, &form).await;
        assert_eq!(status, StatusCode::OK, "{message}");
        assert!(body.contains(&message), "{message} not in {body}");
    }
    assert_eq!(h.store.workspaces_of_project("proj").unwrap().len(), 1);
    // Valid: stored lowercased, redirect to it.
    let (status, _, headers) = h
        .post(
            "/proj/new-workspace/",
            &cookie,
            &[
                ("csrf_token", &csrf),
                ("name", "Second"),
                ("repo_url", &repo),
                ("branch", "main"),
                ("purpose", "p"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[0], "location: /proj/second/");
    assert!(h.store.workspace("second").unwrap().is_some());
    // Without workspace_create: 404.
    let (cookie, csrf) = h.session("collab");
    let (status, _, _) = h
        .post(
            "/proj/new-workspace/",
            &cookie,
            &[
                ("csrf_token", &csrf),
                ("name", "third"),
                ("repo_url", &repo),
                ("branch", "main"),
                ("purpose", "p"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(h.store.workspace("third").unwrap().is_none());
    // Local repositories only when the operator allows them.
    let mut config = (*h.state.config).clone();
    config.allow_file_repos = false;
    h.state.config = std::sync::Arc::new(config);
    let (cookie, csrf) = h.session("dev");
    let (_, body, _) = h
        .post(
            "/proj/new-workspace/",
            &cookie,
            &[
                ("csrf_token", &csrf),
                ("name", "local"),
                ("repo_url", &repo),
                ("branch", "main"),
                ("purpose", "p"),
            ],
        )
        .await;
    assert!(body.contains("Repository URL: Enter an https:// URL of a git repository."));
    assert!(h.store.workspace("local").unwrap().is_none());
}

/// Starts the watch task; returns once it has opened its stream (with the cursor it sent).
async fn start_watch(h: &mut Harness) -> u64 {
    let stop = h.stop.subscribe();
    tokio::spawn(rap_jobserver::watch::run(
        h.state.link.clone(),
        h.store.clone(),
        h.state.events.clone(),
        async move {
            let mut stop = stop;
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    timeout(WAIT, h.watch_opened.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_watch_too_old_for_the_change_log_resyncs_from_job_status() {
    let mut h = Harness::new().await;
    run(&h, &["generate"]).await;
    let rap_id = h.fake.submits.lock().unwrap()[0].rap_id.clone();
    // The controller compacted its log through cursor 40 while we were away; the job finished
    // meanwhile, and only GetJobStatus can tell.
    *h.fake.compacted_through.lock().unwrap() = Some(40);
    let mut done = job(
        &rap_id,
        "job1",
        "generate",
        pb::State::Succeeded,
        pb::StatusCode::Succeeded,
    );
    done.completed_at = Some(1_700_000_070);
    h.fake.status_jobs.lock().unwrap().push(done);
    let mut events = h.state.events.subscribe();

    assert_eq!(start_watch(&mut h).await, 0, "first from the stale cursor");
    timeout(WAIT, events.recv()).await.unwrap().unwrap();
    let request = h.store.job_request(&rap_id).unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Succeeded);
    assert_eq!(h.store.watch_cursor().unwrap(), 40);
    // Then it watches on from the resume point, and later changes arrive as usual.
    assert_eq!(
        timeout(WAIT, h.watch_opened.recv()).await.unwrap().unwrap(),
        40
    );
}

#[tokio::test]
async fn watch_updates_jobs_status_and_live_page() {
    let mut h = Harness::new().await;
    run(&h, &["generate", "analyse"]).await;
    let rap_id = h.fake.submits.lock().unwrap()[0].rap_id.clone();
    let mut events = h.state.events.subscribe();
    assert_eq!(start_watch(&mut h).await, 0);

    // Open the live event stream for the job-request page.
    let request = axum::http::Request::get(format!("/proj/ws/{rap_id}/events"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(rap_jobserver::web::app(h.state.clone()), request)
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    // The stream opens with the current state, so a change between the page's render and the
    // stream's opening is not lost.
    let frame = next_event(&mut body).await;
    assert!(
        frame.starts_with("event: update") && frame.contains("Pending") && !frame.contains("job1"),
        "{frame}"
    );

    let push = |cursor, job| {
        h.fake
            .changes
            .send(pb::JobChange {
                cursor,
                job: Some(job),
            })
            .unwrap();
    };
    push(
        1,
        job(
            &rap_id,
            "job1",
            "generate",
            pb::State::Running,
            pb::StatusCode::Executing,
        ),
    );
    push(
        2,
        job(
            &rap_id,
            "job2",
            "analyse",
            pb::State::Pending,
            pb::StatusCode::WaitingOnDependencies,
        ),
    );
    for _ in 0..2 {
        timeout(WAIT, events.recv()).await.unwrap().unwrap();
    }
    let request = h.store.job_request(&rap_id).unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Running);
    assert_eq!(h.store.watch_cursor().unwrap(), 2);
    // Running, and the last update (2023) is long ago: A8's warning.
    let (_, page, _) = h.get(&format!("/proj/ws/{rap_id}/"), "").await;
    assert!(page.contains("no updates for over 30 minutes"));
    // An ambiguous identifier prefix is not found.
    assert_eq!(
        h.get(&format!("/proj/ws/{rap_id}/job/"), "").await.0,
        StatusCode::NOT_FOUND
    );

    // The live stream sent the re-rendered table.
    let frame = next_event(&mut body).await;
    assert!(frame.starts_with("event: update"), "{frame}");
    assert!(frame.contains("job1"), "{frame}");

    let mut done = job(
        &rap_id,
        "job1",
        "generate",
        pb::State::Succeeded,
        pb::StatusCode::Succeeded,
    );
    done.completed_at = Some(1_700_000_070);
    push(3, done);
    let mut failed = job(
        &rap_id,
        "job2",
        "analyse",
        pb::State::Failed,
        pb::StatusCode::NonzeroExit,
    );
    failed.completed_at = Some(1_700_000_090);
    push(4, failed);
    for _ in 0..2 {
        timeout(WAIT, events.recv()).await.unwrap().unwrap();
    }
    let request = h.store.job_request(&rap_id).unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Failed);
    assert_eq!(
        request.status_message.as_deref(),
        Some("Failed due to job failure")
    );

    // The page without JavaScript shows the current state.
    let (_, page, _) = h.get(&format!("/proj/ws/{rap_id}/"), "").await;
    assert!(page.contains("Failed due to job failure"));
    assert!(page.contains("nonzero_exit"));
    assert!(page.contains("Runtime: 0:02:20"), "{page}");
    assert!(!page.contains("no updates for over 30 minutes"));
    // The job page: run command, code, metrics, trace link, log hint.
    let (status, page, _) = h.get(&format!("/proj/ws/{rap_id}/job2/"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("python:v2 analyse.py"));
    assert!(page.contains("metadata/analyse.log"));
    assert!(page.contains("http://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(page.contains("512 MB"));

    // Restart: the watcher resumes from the persisted cursor.
    h.stop.send(true).unwrap();
    let (stop, _) = tokio::sync::watch::channel(false);
    h.stop = stop;
    assert_eq!(start_watch(&mut h).await, 4);
}

async fn next_event(body: &mut axum::body::Body) -> String {
    use http_body_util::BodyExt;
    loop {
        let frame = timeout(WAIT, body.frame()).await.unwrap().unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            let text = String::from_utf8_lossy(&data).into_owned();
            if text.starts_with("event:") {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn unknown_creations_the_controller_never_saw_become_failed() {
    let mut h = Harness::new().await;
    *h.fake.submit_reply.lock().unwrap() = Err(tonic::Status::unavailable("down"));
    run(&h, &["generate"]).await;
    let rap_id = h.fake.submits.lock().unwrap()[0].rap_id.clone();
    assert_eq!(
        h.store.job_request(&rap_id).unwrap().unwrap().status,
        RequestStatus::UnknownErrorCreatingJobs
    );
    h.fake.unrecognised.lock().unwrap().push(rap_id.clone());
    let mut events = h.state.events.subscribe();
    start_watch(&mut h).await;
    let changed = timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert_eq!(changed.rap_id.as_str(), rap_id);
    let request = h.store.job_request(&rap_id).unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Failed);
    assert_eq!(
        request.status_message.as_deref(),
        Some("Unknown error creating jobs")
    );
}

#[tokio::test]
async fn cancel_rules_follow_a7() {
    let mut h = Harness::new().await;
    run(&h, &["generate", "analyse"]).await;
    let rap_id = h.fake.submits.lock().unwrap()[0].rap_id.clone();
    let cancel_url = format!("/proj/ws/{rap_id}/cancel/");

    // No jobs yet and pending: "not available".
    let (cookie, csrf) = h.session("dev");
    let (_, _, headers) = h.post(&cancel_url, &cookie, &[("csrf_token", &csrf)]).await;
    assert!(
        flash(&headers)
            .unwrap()
            .starts_with("Could not cancel as job information not available.")
    );
    assert!(h.fake.cancels.lock().unwrap().is_empty());

    let mut events = h.state.events.subscribe();
    start_watch(&mut h).await;
    h.fake
        .changes
        .send(pb::JobChange {
            cursor: 1,
            job: Some(job(
                &rap_id,
                "job1",
                "generate",
                pb::State::Running,
                pb::StatusCode::Executing,
            )),
        })
        .unwrap();
    h.fake
        .changes
        .send(pb::JobChange {
            cursor: 2,
            job: Some(job(
                &rap_id,
                "job2",
                "analyse",
                pb::State::Pending,
                pb::StatusCode::WaitingOnDependencies,
            )),
        })
        .unwrap();
    for _ in 0..2 {
        timeout(WAIT, events.recv()).await.unwrap().unwrap();
    }

    // Neither creator nor job_cancel: 404 and no call.
    for user in ["collab", "outsider"] {
        let (cookie, csrf) = h.session(user);
        let (status, _, _) = h.post(&cancel_url, &cookie, &[("csrf_token", &csrf)]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{user}");
    }
    assert!(h.fake.cancels.lock().unwrap().is_empty());

    // One job by the creator.
    let (_, _, headers) = h
        .post(
            &format!("/proj/ws/{rap_id}/job2/cancel/"),
            &cookie,
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(
        flash(&headers).unwrap(),
        "Your request to cancel \"analyse\" was successful"
    );
    assert_eq!(h.fake.cancels.lock().unwrap()[0].actions, vec!["analyse"]);
    // The whole request: only what is left.
    let (_, _, headers) = h.post(&cancel_url, &cookie, &[("csrf_token", &csrf)]).await;
    assert_eq!(
        flash(&headers).unwrap(),
        "The requested actions have been cancelled"
    );
    assert_eq!(h.fake.cancels.lock().unwrap()[1].actions, vec!["generate"]);
    let request = h.store.job_request(&rap_id).unwrap().unwrap();
    assert_eq!(request.cancelled_actions, vec!["analyse", "generate"]);
    // Nothing left: no third call.
    let (_, _, headers) = h.post(&cancel_url, &cookie, &[("csrf_token", &csrf)]).await;
    assert_eq!(flash(&headers).unwrap(), "There are no actions to cancel");
    assert_eq!(h.fake.cancels.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn status_page_shows_the_controllers_flags() {
    let h = Harness::new().await;
    let (status, body, _) = h.get("/status/", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Test backend (test)"));
    assert!(body.contains("2023-11-14T22:13:20Z"), "{body}");
    let backend = h.store.backend("test").unwrap().unwrap();
    assert!(backend.paused);
    assert!(!backend.db_maintenance);
    // For monitoring: last seen long ago, so 503 with the time as text.
    let (status, body, _) = h.get("/status/test/", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "2023-11-14T22:13:20Z");
    assert_eq!(h.get("/status/nope/", "").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn archiving_needs_permission_and_stops_new_jobs() {
    let h = Harness::new().await;
    let (cookie, csrf) = h.session("collab");
    let (status, _, _) = h
        .post("/proj/ws/archive/", &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!h.store.workspace("ws").unwrap().unwrap().is_archived);
    let (cookie, csrf) = h.session("dev");
    let (_, page, _) = h.get("/proj/ws/", &cookie).await;
    assert!(page.contains("id=\"archive\""));
    let (_, _, headers) = h
        .post("/proj/ws/archive/", &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(flash(&headers).unwrap(), "Workspace ws archived");
    assert!(h.store.workspace("ws").unwrap().unwrap().is_archived);
    let (_, page, _) = h.get("/proj/ws/", &cookie).await;
    assert!(page.contains("This workspace is archived."));
    let (status, _) = run(&h, &["generate"]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(all_requests(&h).is_empty());
}

#[tokio::test]
async fn changes_for_unknown_requests_are_skipped_but_the_cursor_moves() {
    let mut h = Harness::new().await;
    run(&h, &["generate"]).await;
    let rap_id = h.fake.submits.lock().unwrap()[0].rap_id.clone();
    let mut events = h.state.events.subscribe();
    start_watch(&mut h).await;
    let stranger = "zzzzzzzzzzzzzzzz";
    h.fake
        .changes
        .send(pb::JobChange {
            cursor: 5,
            job: Some(job(
                stranger,
                "other1",
                "x",
                pb::State::Running,
                pb::StatusCode::Executing,
            )),
        })
        .unwrap();
    h.fake
        .changes
        .send(pb::JobChange {
            cursor: 6,
            job: Some(job(
                &rap_id,
                "mine1",
                "generate",
                pb::State::Running,
                pb::StatusCode::Executing,
            )),
        })
        .unwrap();
    let changed = timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert_eq!(changed.rap_id.as_str(), rap_id);
    assert_eq!(h.store.watch_cursor().unwrap(), 6);
    assert!(h.store.job("other1").unwrap().is_none());
    assert!(h.store.job("mine1").unwrap().is_some());
    // A unique identifier prefix redirects to the job.
    let (status, _, headers) = h.get(&format!("/proj/ws/{rap_id}/mi/"), "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[0], format!("location: /proj/ws/{rap_id}/mine1/"));
}

#[tokio::test]
async fn unknown_pages_and_private_pages_are_404() {
    let h = Harness::new().await;
    assert_eq!(h.get("/nope/", "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get("/proj/ws/aaaaaaaaaaaaaaaa/", "").await.0,
        StatusCode::NOT_FOUND
    );
    let (cookie, _) = h.session("outsider");
    assert_eq!(
        h.get("/proj/ws/releases/", &cookie).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/proj/new-workspace/", &cookie).await.0,
        StatusCode::NOT_FOUND
    );
    let (cookie, _) = h.session("collab");
    assert_eq!(h.get("/proj/ws/releases/", &cookie).await.0, StatusCode::OK);
}

#[tokio::test]
async fn sessions_expire_after_two_weeks_and_end_on_sign_out() {
    let h = Harness::new().await;
    let old = rap_jobserver::model::Session {
        username: "dev".into(),
        csrf_token: "c".into(),
        created_at: rap_jobserver::model::now() - 15 * 24 * 3600,
    };
    h.store.put_session("old-session", &old).unwrap();
    let (_, body, _) = h.get("/", "rap_session=old-session").await;
    assert!(body.contains(">Sign in<"));
    assert!(h.store.session("old-session").unwrap().is_none());

    let (cookie, csrf) = h.session("dev");
    let (_, body, _) = h.get("/", &cookie).await;
    assert!(body.contains(">dev<"));
    let (status, _, headers) = h.post("/logout/", &cookie, &[("csrf_token", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("set-cookie: rap_session=;"))
    );
    let (_, body, _) = h.get("/", &cookie).await;
    assert!(body.contains(">Sign in<"));
}

#[tokio::test]
async fn logs_page_by_25_and_filter_by_action_and_backend() {
    use rap_jobserver::model::{JobRequest, RapId};
    let h = Harness::new().await;
    rap_jobserver::admin::add_backend(&h.store, "other", "Other").unwrap();
    let mut ids = Vec::new();
    for i in 0..30 {
        let rap_id = RapId::generate();
        ids.push(rap_id.to_string());
        h.store
            .put_job_request(&JobRequest {
                rap_id,
                backend: if i % 10 == 0 {
                    "other".into()
                } else {
                    "test".into()
                },
                workspace: "ws".into(),
                project: "proj".into(),
                requested_actions: vec![if i == 7 {
                    "special_action".into()
                } else {
                    "generate".into()
                }],
                cancelled_actions: vec![],
                sha: "0".repeat(40),
                force_run_dependencies: false,
                created_by: "dev".into(),
                created_at: 1_700_000_000 + i,
                status: RequestStatus::Pending,
                status_message: None,
                project_definition: String::new(),
            })
            .unwrap();
    }
    let count = |page: &str| ids.iter().filter(|id| page.contains(id.as_str())).count();
    let (_, first, _) = h.get("/event-log/", "").await;
    assert_eq!(count(&first), 25);
    assert!(first.contains("href=\"/event-log/?page=2\""));
    assert!(!first.contains("id=\"previous\""));
    let (_, second, _) = h.get("/event-log/?page=2", "").await;
    assert_eq!(count(&second), 5);
    assert!(second.contains("href=\"/event-log/?page=1\""));
    // Newest first: the last one created is on page 1.
    assert!(first.contains(ids[29].as_str()));
    let (_, page, _) = h.get("/proj/ws/logs/?q=special", "").await;
    assert_eq!(count(&page), 1);
    assert!(page.contains(ids[7].as_str()));
    let (_, page, _) = h.get("/proj/ws/logs/?backend=other", "").await;
    assert_eq!(count(&page), 3);
    let (_, page, _) = h
        .get(&format!("/proj/ws/logs/?q={}", &ids[3][..10]), "")
        .await;
    assert!(page.contains(ids[3].as_str()));
    // Nonsense page numbers are page 1, not an error.
    assert_eq!(h.get("/event-log/?page=banana", "").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_projects_analysis_scope_travels_with_each_submission() {
    let h = Harness::new().await;
    // A value outside the reference's vocabulary is refused and changes nothing.
    let error = rap_jobserver::admin::set_analysis_scope(
        &h.store,
        "proj",
        &AnalysisScope {
            dataset_permissions: vec!["appointments".into(), "nope".into()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown dataset permission \"nope\"; allowed are: appointments, icnarc, isaric, \
         open_prompt, ukrr, waiting_list, sgss_covid_all_tests, \
         occupation_on_covid_vaccine_record, covid_therapeutics"
    );
    assert_eq!(
        h.store.project("proj").unwrap().unwrap().analysis_scope,
        AnalysisScope::default()
    );

    rap_jobserver::admin::set_analysis_scope(
        &h.store,
        "proj",
        &AnalysisScope {
            dataset_permissions: vec!["ukrr".into(), "appointments".into(), "ukrr".into()],
            population_permissions: vec!["include_t1oo".into()],
            component_access: vec!["event_level_data".into()],
        },
    )
    .unwrap();
    let (status, _) = run(&h, &["generate"]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let sent = h.fake.submits.lock().unwrap()[0]
        .analysis_scope
        .clone()
        .unwrap();
    assert_eq!(sent.dataset_permissions, ["appointments", "ukrr"]);
    assert_eq!(sent.population_permissions, ["include_t1oo"]);
    assert_eq!(sent.component_access, ["event_level_data"]);
}

/// Runs a command that must succeed; its stdout.
fn run_tool(program: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test]
async fn a_release_downloads_as_a_zip_streamed_in_chunks() {
    use rap_jobserver::model::{Release, ReleaseFile, now};
    let h = Harness::new().await;
    // Two received files, one spanning several read chunks, and one whose bytes never came.
    let figure: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let release = Release {
        id: "01hzipzipzipzipzipzipzipzi".into(),
        workspace: "ws".into(),
        backend: "test".into(),
        created_by: "checker".into(),
        created_at: now(),
    };
    let mut records = Vec::new();
    for (id, name, bytes) in [
        ("f1", "output/table.csv", b"a,b\n1,2\n".to_vec()),
        ("f2", "output/plots/figure.png", figure.clone()),
        ("f3", "output/never-uploaded.csv", Vec::new()),
    ] {
        let file = ReleaseFile {
            id: id.into(),
            release_id: release.id.clone(),
            workspace: "ws".into(),
            name: name.into(),
            sha256: String::new(),
            size: bytes.len() as u64,
            mtime: 1_700_000_000,
            created_by: "checker".into(),
            uploaded_at: (id != "f3").then(now),
        };
        if file.uploaded_at.is_some() {
            let path =
                rap_jobserver::web::releases::file_path(&h.state.config.release_storage, &file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        records.push(file);
    }
    h.store.insert_release(&release, &records).unwrap();
    let url = format!("/proj/ws/releases/{}/download.zip", release.id);

    let (cookie, _) = h.session("collab");
    let (_, page, _) = h
        .get(&format!("/proj/ws/releases/{}/", release.id), &cookie)
        .await;
    assert!(page.contains(&format!("href=\"{url}\"")), "{page}");
    let request = axum::http::Request::get(&url)
        .header(axum::http::header::COOKIE, &cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(rap_jobserver::web::app(h.state.clone()), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"ws-{}.zip\"", release.id)
    );
    // Sent as it is read: many frames, none holding the whole archive.
    let mut body = response.into_body();
    let (mut archive, mut n_frames, mut largest) = (Vec::new(), 0, 0);
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let data = frame.unwrap().into_data().unwrap();
        n_frames += 1;
        largest = largest.max(data.len());
        archive.extend_from_slice(&data);
    }
    assert!(n_frames >= 6, "{n_frames} frames");
    assert!(largest <= 64 * 1024, "a frame of {largest} bytes");

    // Info-ZIP's unzip agrees: CRCs check, the received files are there, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("release.zip");
    std::fs::write(&zip, &archive).unwrap();
    run_tool("unzip", &["-tq".as_ref(), zip.as_os_str()]);
    let names = run_tool("unzip", &["-Z1".as_ref(), zip.as_os_str()]);
    let mut names: Vec<String> = String::from_utf8(names)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names, ["output/plots/figure.png", "output/table.csv"]);
    let extracted = run_tool(
        "unzip",
        &[
            "-p".as_ref(),
            zip.as_os_str(),
            "output/plots/figure.png".as_ref(),
        ],
    );
    assert!(extracted == figure, "the figure came back changed");
    let table = run_tool(
        "unzip",
        &["-p".as_ref(), zip.as_os_str(), "output/table.csv".as_ref()],
    );
    assert_eq!(table, b"a,b\n1,2\n");

    // Private to release_file_view holders, like the files themselves.
    let (outsider, _) = h.session("outsider");
    assert_eq!(h.get(&url, &outsider).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get("/proj/ws/releases/no-such-release/download.zip", &cookie)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

/// Every stored job request, newest first.
fn all_requests(h: &Harness) -> Vec<rap_jobserver::model::JobRequest> {
    h.store
        .job_requests_page(
            rap_jobserver::store::RequestScope::Everywhere,
            None,
            0,
            usize::MAX,
        )
        .unwrap()
        .requests
}
