//! Headless Chromium through Debian's chromedriver (fantoccini), and the few steps every browser
//! test takes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use tokio::time::{Instant, timeout};

/// How long a page may take to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free port, killed on drop.
pub struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn start_driver() -> Driver {
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

/// A fresh headless Chromium session with its own profile directory.
pub async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
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
pub async fn wait_for_text(client: &Client, css: &str, expected: &str) {
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
