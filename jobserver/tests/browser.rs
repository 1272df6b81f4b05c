//! One end-to-end run in a real headless Chromium (Debian's chromedriver): sign in, create a
//! workspace for a local study repository, run an action against the in-test RapService, and
//! watch its status change on the page without reloading as the controller pushes job changes
//! through WatchJobs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Harness, job};
use fantoccini::{Client, ClientBuilder, Locator};
use rap_proto::pb::rap::v1 as pb;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed at /usr/bin/chromedriver");
    let stdout = child.stdout.take().unwrap();
    // Ready when it says so: read its stdout until the line appears.
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("started successfully"));
        // Keep draining so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ready
    });
    assert!(
        timeout(WAIT, ready).await.unwrap().unwrap(),
        "chromedriver did not start"
    );
    Driver { child, port }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connecting to chromedriver")
}

/// Polls the element's text until it contains `expected`, within a bounded wait.
async fn wait_for_text(client: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last.contains(expected) {
                return;
            }
        }
        tokio::task::yield_now().await;
    }
    panic!("{css} never showed {expected:?}; last text {last:?}");
}

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

    // Sign in.
    c.goto(&format!("{base}/login/")).await.unwrap();
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("dev")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("pw")
        .await
        .unwrap();
    c.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&c, "nav", "dev").await;

    // Create a workspace for the local study repository.
    c.goto(&format!("{base}/proj/")).await.unwrap();
    c.find(Locator::Id("new-workspace"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("browser-ws")
        .await
        .unwrap();
    c.find(Locator::Id("repo_url"))
        .await
        .unwrap()
        .send_keys(&study_url)
        .await
        .unwrap();
    c.find(Locator::Id("purpose"))
        .await
        .unwrap()
        .send_keys("A browser test")
        .await
        .unwrap();
    c.find(Locator::Id("create"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&c, "#flash", "Created workspace browser-ws").await;

    // Run one action.
    c.find(Locator::Id("run-jobs"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("action-generate"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(
        &c,
        "#flash",
        "Requested actions have been scheduled to run.",
    )
    .await;
    let rap_id = h.fake.submits.lock().unwrap()[0].rap_id.clone();
    assert_eq!(h.fake.submits.lock().unwrap()[0].workspace, "browser-ws");

    // Open the job request; it is pending, with no jobs yet.
    c.find(Locator::LinkText(&rap_id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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

    c.close().await.unwrap();
    h.stop.send(true).unwrap();
}
