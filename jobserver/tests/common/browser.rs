//! The job server's browser tests on the shared headless-Chromium plumbing (`rap-testkit`), and
//! the few job-server steps every browser test takes.

use std::path::Path;
use std::time::Duration;

use fantoccini::{Client, Locator};
pub use rap_testkit::browser::Driver;
use tokio::time::Instant;

/// How long a page may take to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// Starts chromedriver.
pub async fn start_driver() -> Driver {
    Driver::start().await
}

/// A fresh headless Chromium session with its own profile directory.
pub async fn browser(driver: &Driver, profile: &Path) -> Client {
    driver.session(profile, WAIT).await
}

/// Waits until the element `css` contains `expected`.
pub async fn wait_for_text(client: &Client, css: &str, expected: &str) {
    rap_testkit::browser::wait_for_text(client, css, expected, WAIT).await;
}

pub async fn click(client: &Client, locator: Locator<'_>) {
    client.find(locator).await.unwrap().click().await.unwrap();
}

pub async fn type_into(client: &Client, id: &str, text: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Signs in through the login form and waits for the navigation bar to name the user.
pub async fn sign_in(client: &Client, base: &str, username: &str, password: &str) {
    client.goto(&format!("{base}/login/")).await.unwrap();
    type_into(client, "username", username).await;
    type_into(client, "password", password).await;
    click(client, Locator::Id("sign-in")).await;
    wait_for_text(client, "nav", username).await;
}

/// Creates a workspace in project `proj` through its form and waits for the confirmation.
pub async fn create_workspace(client: &Client, base: &str, name: &str, repo_url: &str) {
    client.goto(&format!("{base}/proj/")).await.unwrap();
    click(client, Locator::Id("new-workspace")).await;
    type_into(client, "name", name).await;
    type_into(client, "repo_url", repo_url).await;
    type_into(client, "purpose", "A browser test").await;
    click(client, Locator::Id("create")).await;
    wait_for_text(client, "#flash", &format!("Created workspace {name}")).await;
}

/// Opens a job-request page and waits until its live-update stream is open (the page marks
/// `<body data-live="open">`; the server subscribes before it answers, so no change is missed).
pub async fn open_live_page(client: &Client, url: &str) {
    client.goto(url).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while client
        .find(Locator::Css("body[data-live='open']"))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{url} never opened its event stream"
        );
        tokio::task::yield_now().await;
    }
}
