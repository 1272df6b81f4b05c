//! Headless Chromium through Debian's chromedriver, shared by the browser tests: start the
//! driver on a free port, open a session with a fresh profile, and wait on page content
//! rather than on time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use tokio::time::{Instant, timeout};

/// How long any one page condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

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

/// Starts `/usr/bin/chromedriver` and waits for its "started successfully" line.
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
    // Ready when it says so; keep draining afterwards so it never blocks on a full pipe.
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("started successfully"));
        std::thread::spawn(move || for _ in lines {});
        ready
    });
    assert!(
        timeout(WAIT, ready).await.unwrap().unwrap(),
        "chromedriver did not start"
    );
    Driver { child, port }
}

/// A new headless Chromium session with its own profile directory (its own cookies).
pub async fn open(driver: &Driver, profile: &Path) -> Client {
    let args = [
        "--headless".to_string(),
        "--no-sandbox".to_string(),
        "--disable-gpu".to_string(),
        "--disable-dev-shm-usage".to_string(),
        "--disable-background-networking".to_string(),
        "--disable-component-update".to_string(),
        "--disable-sync".to_string(),
        "--no-first-run".to_string(),
        format!("--user-data-dir={}", profile.display()),
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

/// Polls the element's text until it contains `expected` (pages load asynchronously after a
/// click), within [`WAIT`]. Returns the text seen.
pub async fn wait_for_text(client: &Client, css: &str, expected: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last.contains(expected) {
                return last;
            }
        }
        tokio::task::yield_now().await;
    }
    panic!("{css} never showed {expected:?}; last text {last:?}");
}

/// Clicks the element, retrying while the page is still being replaced (a stale or missing
/// element), within [`WAIT`].
pub async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && element.click().await.is_ok()
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("could not click {css}");
}

/// Types `text` into the element, retrying while the page is still being replaced, within
/// [`WAIT`].
pub async fn fill(client: &Client, css: &str, text: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && element.send_keys(text).await.is_ok()
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("could not type into {css}");
}
