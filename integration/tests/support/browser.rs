//! Headless Chromium through Debian's chromedriver for the whole-system browser test: the
//! driver on a free port, a session with its own profile, and waits that are events in the
//! page (a `MutationObserver` answering an asynchronous script) rather than polls or sleeps.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use tokio::time::Instant;

/// How long a page may take to show what a step waits for (a job request runs to the end
/// within one wait).
pub const WAIT: Duration = Duration::from_secs(180);

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

/// Starts `/usr/bin/chromedriver` on a free port; ready once it prints that it started.
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
        .expect("chromedriver at /usr/bin/chromedriver");
    let stdout = child.stdout.take().unwrap();
    let started = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let started = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("started successfully"));
        // Drain the rest so chromedriver never blocks writing to a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        started
    });
    let started = tokio::time::timeout(Duration::from_secs(30), started).await;
    assert!(
        matches!(started, Ok(Ok(true))),
        "chromedriver did not start"
    );
    Driver { child, port }
}

/// A headless Chromium session with a fresh profile in `profile`, a window large enough for
/// readable screenshots, and asynchronous scripts allowed to run for [`WAIT`].
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
        "--window-size=1280,900".to_string(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connecting to chromedriver");
    client
        .update_timeouts(TimeoutConfiguration::new(
            Some(WAIT),
            Some(Duration::from_secs(60)),
            Some(Duration::ZERO),
        ))
        .await
        .unwrap();
    client
}

/// Resolves once the element `css` contains `expected` (now, or after any later change to
/// the page), and returns its text; fails after [`WAIT`].
pub async fn wait_for_text(client: &Client, css: &str, expected: &str) -> String {
    let script = r#"
        const [css, expected, done] = arguments;
        const matched = () => {
            const element = document.querySelector(css);
            return element !== null && element.textContent.includes(expected) ? element : null;
        };
        const now = matched();
        if (now) {
            done(now.innerText);
        } else {
            const observer = new MutationObserver(() => {
                const element = matched();
                if (element) {
                    observer.disconnect();
                    done(element.innerText);
                }
            });
            observer.observe(document, { subtree: true, childList: true, characterData: true });
        }
    "#;
    let deadline = Instant::now() + WAIT;
    loop {
        match client
            .execute_async(script, vec![css.into(), expected.into()])
            .await
        {
            Ok(text) => return text.as_str().unwrap_or_default().to_owned(),
            // A click's navigation replaced the document the script was watching (chromedriver
            // reports that as a script timeout): watch the new one.
            Err(_) if Instant::now() < deadline => continue,
            Err(error) => panic!("{css} never showed {expected:?}: {error}"),
        }
    }
}

/// The text of the element `css`.
pub async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no {css}: {error}"))
        .text()
        .await
        .unwrap()
}

/// Clicks the element `css`. A click that navigates may return before the next page is
/// there: follow it with [`wait_for_text`] on something only the next page shows.
pub async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no {css}: {error}"))
        .click()
        .await
        .unwrap();
}

/// Types `text` into the element `css`.
pub async fn fill(client: &Client, css: &str, text: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no {css}: {error}"))
        .send_keys(text)
        .await
        .unwrap();
}
