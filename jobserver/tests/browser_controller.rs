//! The job server against the real controller, in a real headless Chromium: `rap-controller
//! init` mints the installation, the built binary serves it, a protocol-level agent holding
//! init's agent certificate runs the tasks, and the job server (in process) talks to the
//! controller over TLS with init's client token. A researcher signs in, creates a workspace for
//! a local git repository, runs an action and watches it change state without reloading as the
//! agent reports; asks for everything again once all has succeeded and reads the controller's
//! "Nothing to do" answer; asks again for an action that is still scheduled; and cancels a job.

mod common;

use std::collections::HashSet;

use common::browser::{
    browser, click, create_workspace, open_live_page, sign_in, start_driver, wait_for_text,
};
use common::controller::{RealController, TestAgent, task_action};
use fantoccini::{Client, Locator};
use rap_jobserver::controller_link::ControllerLink;
use rap_jobserver::store::Store;
use rap_proto::pb::rap::v1 as pb;
use tokio::time::timeout;

/// Asks for `actions` through the run-jobs form and waits for the flash that answers.
async fn run_jobs(client: &Client, base: &str, workspace: &str, actions: &[&str], flash: &str) {
    client
        .goto(&format!("{base}/proj/{workspace}/run-jobs/"))
        .await
        .unwrap();
    for action in actions {
        click(client, Locator::Id(&format!("action-{action}"))).await;
    }
    click(client, Locator::Id("submit")).await;
    wait_for_text(client, "#flash", flash).await;
}

/// The one job request of `workspace` not in `seen` (which it joins).
fn new_request(store: &Store, workspace: &str, seen: &mut HashSet<String>) -> String {
    let fresh: Vec<String> = store
        .job_requests_page(
            rap_jobserver::store::RequestScope::Workspace(workspace),
            None,
            0,
            usize::MAX,
        )
        .unwrap()
        .requests
        .into_iter()
        .map(|r| r.rap_id.as_str().to_owned())
        .filter(|id| !seen.contains(id))
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "expected one new job request, got {fresh:?}"
    );
    seen.insert(fresh[0].clone());
    fresh[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researcher_runs_and_cancels_jobs_on_the_real_controller() {
    let dir = tempfile::tempdir().unwrap();
    let controller = RealController::start(dir.path(), "test").await;
    let seeded = common::seed(dir.path());
    let store = seeded.store.clone();
    let (study_url, _) = common::study_repo(dir.path(), "browser-study", common::PROJECT_YAML);

    let link = ControllerLink::new(
        &controller.rap_url,
        &controller.client_token,
        Some(&controller.ca()),
    )
    .unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let state = common::app_state(
        store.clone(),
        link.clone(),
        dir.path().join("releases"),
        stop_rx.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, rap_jobserver::web::app(state.clone())).into_future());
    let watch_task = tokio::spawn(rap_jobserver::watch::run(
        link,
        store.clone(),
        state.events.clone(),
        async move {
            let mut stop = stop_rx;
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    let mut agent = TestAgent::connect(&controller).await;

    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    sign_in(&c, &base, "dev", "pw").await;
    create_workspace(&c, &base, "live-ws", &study_url).await;
    let mut seen = HashSet::new();

    // 1. Run one action and watch it on the page as the agent reports.
    run_jobs(
        &c,
        &base,
        "live-ws",
        &["generate"],
        "Requested actions have been scheduled to run.",
    )
    .await;
    let first = new_request(&store, "live-ws", &mut seen);
    let task = agent.next_task().await;
    assert_eq!(task_action(&task), "generate");
    assert_eq!(task.r#type, pb::TaskType::Runjob as i32);
    open_live_page(&c, &format!("{base}/proj/live-ws/{first}/")).await;
    wait_for_text(&c, "#jobs", "generate").await;

    agent
        .report(&task.id, pb::ExecutorState::Executing, false, None)
        .await;
    wait_for_text(&c, "#request-status", "Running").await;
    wait_for_text(&c, "#jobs", "executing").await;
    agent.succeed(&task.id).await;
    wait_for_text(&c, "#request-status", "Succeeded").await;
    wait_for_text(&c, "#jobs", "succeeded").await;

    // 2. The rest of the pipeline, then everything again: the controller has nothing to do
    // and the researcher reads its words. (Asking again for one succeeded action by name runs
    // it again, as in the reference; `run_all` is what finds nothing to do.)
    run_jobs(
        &c,
        &base,
        "live-ws",
        &["analyse"],
        "Requested actions have been scheduled to run.",
    )
    .await;
    new_request(&store, "live-ws", &mut seen);
    let task = agent.next_task().await;
    assert_eq!(task_action(&task), "analyse");
    agent.succeed(&task.id).await;
    run_jobs(
        &c,
        &base,
        "live-ws",
        &["run_all"],
        "No actions scheduled: Nothing to do (All actions have already completed successfully)",
    )
    .await;
    let nothing = new_request(&store, "live-ws", &mut seen);
    c.goto(&format!("{base}/proj/live-ws/{nothing}/"))
        .await
        .unwrap();
    wait_for_text(&c, "#request-status", "Nothing to do").await;
    wait_for_text(
        &c,
        "#request-status-message",
        "All actions have already completed successfully",
    )
    .await;

    // 3. Run an action again and, while it is scheduled, ask for it once more.
    run_jobs(
        &c,
        &base,
        "live-ws",
        &["generate"],
        "Requested actions have been scheduled to run.",
    )
    .await;
    let rerun = new_request(&store, "live-ws", &mut seen);
    let task = agent.next_task().await;
    assert_eq!(task_action(&task), "generate");
    run_jobs(
        &c,
        &base,
        "live-ws",
        &["generate"],
        "No actions scheduled: Nothing to do (All requested actions were already scheduled to run)",
    )
    .await;
    new_request(&store, "live-ws", &mut seen);

    // 4. Cancel the scheduled job from its page; the page shows it cancelled, and the agent
    // is told to stop it.
    open_live_page(&c, &format!("{base}/proj/live-ws/{rerun}/")).await;
    wait_for_text(&c, "#jobs", "generate").await;
    click(&c, Locator::Id("cancel")).await;
    wait_for_text(&c, "#flash", "The requested actions have been cancelled").await;
    wait_for_text(&c, "#jobs", "cancelled_by_user").await;
    wait_for_text(&c, "#request-status", "Failed").await;
    assert_eq!(agent.next_revoke().await, task.id);
    let cancel_task = agent.next_task().await;
    assert_eq!(cancel_task.r#type, pb::TaskType::Canceljob as i32);
    assert_eq!(task_action(&cancel_task), "generate");
    assert_eq!(
        store
            .job_request(&rerun)
            .unwrap()
            .unwrap()
            .cancelled_actions,
        ["generate"]
    );

    c.close().await.unwrap();
    stop.send(true).unwrap();
    timeout(common::browser::WAIT, watch_task)
        .await
        .unwrap()
        .unwrap();
    drop(controller);
}
