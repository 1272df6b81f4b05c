//! One end-to-end run in a real headless Chromium (Debian's chromedriver): sign in, create a
//! workspace for a local study repository, run an action against the in-test RapService, and
//! watch its status change on the page without reloading as the controller pushes job changes
//! through WatchJobs.

mod common;

use common::browser::{
    WAIT, browser, click, create_workspace, sign_in, start_driver, wait_for_text,
};
use common::{Harness, job};
use fantoccini::Locator;
use rap_proto::pb::rap::v1 as pb;
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn researcher_runs_an_action_and_sees_it_finish_live() {
    let mut h = Harness::new().await;
    let (study_url, _) = common::study_repo(h.dir.path(), "browser-study", common::PROJECT_YAML);

    // The web app on a real socket, and the watch task on the in-test controller.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, rap_jobserver::web::app(h.state.clone())).into_future());
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
    timeout(WAIT, h.watch_opened.recv()).await.unwrap().unwrap();

    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    sign_in(&c, &base, "dev", "pw").await;
    create_workspace(&c, &base, "browser-ws", &study_url).await;

    // Run one action.
    click(&c, Locator::Id("run-jobs")).await;
    click(&c, Locator::Id("action-generate")).await;
    click(&c, Locator::Id("submit")).await;
    wait_for_text(
        &c,
        "#flash",
        "Requested actions have been scheduled to run.",
    )
    .await;
    let rap_id = h.fake.submits.lock().unwrap()[0].rap_id.clone();
    assert_eq!(h.fake.submits.lock().unwrap()[0].workspace, "browser-ws");

    // Open the job request; it is pending, with no jobs yet.
    click(&c, Locator::LinkText(&rap_id)).await;
    wait_for_text(&c, "#request-status", "Pending").await;

    // Wait until the page's event stream is subscribed, then push changes from the controller.
    let deadline = Instant::now() + WAIT;
    while h.state.events.receiver_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the page never opened its event stream"
        );
        tokio::task::yield_now().await;
    }
    let mut running = job(
        &rap_id,
        "jobbrowser1",
        "generate",
        pb::State::Running,
        pb::StatusCode::Executing,
    );
    running.workspace = "browser-ws".into();
    h.fake
        .changes
        .send(pb::JobChange {
            cursor: 1,
            job: Some(running.clone()),
        })
        .unwrap();
    wait_for_text(&c, "#request-status", "Running").await;
    wait_for_text(&c, "#jobs", "executing").await;
    assert!(
        c.find(Locator::Id("cancel")).await.is_ok(),
        "a running request offers Cancel"
    );

    let mut done = running;
    done.status = pb::State::Succeeded as i32;
    done.status_code = pb::StatusCode::Succeeded as i32;
    done.completed_at = Some(1_700_000_070);
    h.fake
        .changes
        .send(pb::JobChange {
            cursor: 2,
            job: Some(done),
        })
        .unwrap();
    wait_for_text(&c, "#request-status", "Succeeded").await;
    wait_for_text(&c, "#jobs", "jobbrowser1").await;
    // The update that finished the request also took its Cancel button away (A7).
    assert!(
        c.find(Locator::Id("cancel")).await.is_err(),
        "a finished request still offers Cancel"
    );

    c.close().await.unwrap();
    h.stop.send(true).unwrap();
}
