//! The researcher's whole path in a real headless Chromium, against the system as `rap up`
//! starts it: sign in to the job server, create a workspace for the sample study, run its
//! actions from the web page and watch the job request succeed live (server-sent updates, no
//! reload), then sign in to Airlock with a single-use token from the job server and find the
//! moderately sensitive outputs in the workspace's file browser.
//!
//! It takes screenshots of the job request with its succeeded jobs, of Airlock's file browser
//! and of an output's page there: into a temporary directory, or into `docs/screenshots/` when
//! `RAP_UPDATE_SCREENSHOTS=1` (how the committed images are made).

#[path = "support/action_images.rs"]
mod action_images;
#[path = "support/browser.rs"]
mod browser;
#[path = "support/rap_up.rs"]
mod rap_up;

use std::path::{Path, PathBuf};

use fantoccini::Client;

use browser::{click, fill, text, wait_for_text};

const PROJECT: &str = "sample-study";
const WORKSPACE: &str = "browser";
const ACTIONS: [&str; 2] = ["generate_dataset", "summarise"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_runs_the_sample_study_and_finds_its_outputs_in_airlock() {
    action_images::action_images().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = rap_up::rap_up(&data, &[]).await;
    let jobserver = up.fields["Job server"].trim_end_matches('/').to_owned();
    let airlock = up.fields["Airlock"].trim_end_matches('/').to_owned();
    let screenshots = screenshot_dir(dir.path());

    let driver = browser::start_driver().await;
    let c = browser::open(&driver, &dir.path().join("chromium-profile")).await;

    // Sign in to the job server.
    c.goto(&format!("{jobserver}/login/")).await.unwrap();
    fill(&c, "#username", "researcher").await;
    fill(&c, "#password", up.password("researcher")).await;
    click(&c, "#sign-in").await;
    wait_for_text(&c, "nav", "researcher").await;

    // A workspace for the study repository `rap up` committed.
    c.goto(&format!("{jobserver}/{PROJECT}/")).await.unwrap();
    click(&c, "#new-workspace").await;
    wait_for_text(&c, "h1", "New workspace").await;
    fill(&c, "#name", WORKSPACE).await;
    let study = data.canonicalize().unwrap().join("study");
    fill(&c, "#repo_url", &format!("file://{}", study.display())).await;
    fill(&c, "#purpose", "Running the sample study in a browser").await;
    click(&c, "#create").await;
    wait_for_text(&c, "#flash", &format!("Created workspace {WORKSPACE}")).await;

    // Run both actions on the local backend.
    click(&c, "#run-jobs").await;
    wait_for_text(&c, "h1", &format!("Run jobs in {WORKSPACE}")).await;
    for action in ACTIONS {
        click(&c, &format!("#action-{action}")).await;
    }
    click(&c, "input[name=backend][value=local]").await;
    click(&c, "#submit").await;
    wait_for_text(
        &c,
        "#flash",
        "Requested actions have been scheduled to run.",
    )
    .await;

    // The job request's page, followed live until it succeeds.
    click(&c, &format!("table a[href^=\"/{PROJECT}/{WORKSPACE}/\"]")).await;
    let status_at_load = wait_for_text(&c, "#request-status", "").await;
    assert_ne!(
        status_at_load, "Succeeded",
        "the request must still be running when the page loads"
    );
    // A mark on this document: still there at the end means the page was updated in place.
    c.execute("window.loadedOnce = true;", vec![])
        .await
        .unwrap();
    wait_for_text(&c, "#request-status", "Succeeded").await;
    let same_document = c
        .execute("return window.loadedOnce === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same_document,
        serde_json::Value::Bool(true),
        "the page reloaded"
    );
    let jobs = text(&c, "#jobs").await;
    for action in ACTIONS {
        let row = jobs
            .lines()
            .find(|row| row.starts_with(action))
            .unwrap_or_else(|| panic!("no row for {action}: {jobs}"));
        assert!(row.contains("Succeeded"), "{row}");
    }
    save_screenshot(&c, &screenshots, "jobserver-job-request.png").await;

    // A single-use Airlock token from the job server's settings page.
    c.goto(&format!("{jobserver}/settings/")).await.unwrap();
    click(&c, "form[action=\"/settings/token/\"] button").await;
    let token = wait_for_text(&c, "#token", "").await;

    // Airlock: sign in with it and open the workspace's output folder.
    c.goto(&format!(
        "{airlock}/login/?next=/workspaces/view/{WORKSPACE}/output/"
    ))
    .await
    .unwrap();
    fill(&c, "#user", "researcher").await;
    fill(&c, "#token", token.trim()).await;
    click(&c, "#sign-in").await;
    let entries = wait_for_text(&c, "#entries", "summary.csv").await;
    assert!(entries.contains("chart.svg"), "{entries}");
    // Highly sensitive outputs never reach the medium-privacy tree Airlock reads.
    assert!(!entries.contains("dataset.csv"), "{entries}");
    save_screenshot(&c, &screenshots, "airlock-file-browser.png").await;
    // The summary's page: its metadata from the manifest (the action that made it).
    click(&c, "#entries a[href$=\"summary.csv\"]").await;
    wait_for_text(&c, "#file-path", "output/summary.csv").await;
    assert!(text(&c, "body").await.contains("summarise"));
    save_screenshot(&c, &screenshots, "airlock-summary-csv.png").await;

    c.close().await.unwrap();
    up.interrupt_and_wait().await;
}

/// `docs/screenshots` when `RAP_UPDATE_SCREENSHOTS=1`, else a folder in the test's directory.
fn screenshot_dir(temporary: &Path) -> PathBuf {
    let dir = if std::env::var("RAP_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        temporary.join("screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a PNG of the page; a real image, not an empty capture.
async fn save_screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
    assert!(png.len() > 10_000, "{name}: only {} bytes", png.len());
    std::fs::write(dir.join(name), png).unwrap();
}
