//! Headless Chromium through Debian's chromedriver (`/usr/bin/chromedriver`,
//! `/usr/bin/chromium`; `scripts/services` installs both): the driver on a free port, sessions
//! with their own profiles (their own cookies), and the few page steps every browser test takes.
//!
//! Waits are events: [`wait_for_text`] runs an asynchronous script whose `MutationObserver`
//! answers as soon as the page shows the text, so a test never sleeps and never polls.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use tokio::time::Instant;

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

impl Driver {
    /// Starts chromedriver on a free port; ready once it prints that it started.
    ///
    /// # Panics
    /// chromedriver is missing or does not start within 30 seconds.
    pub async fn start() -> Driver {
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
            .expect("chromedriver at /usr/bin/chromedriver (scripts/services installs it)");
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

    /// A headless Chromium session with a fresh profile in `profile`, a window large enough
    /// for readable screenshots, and asynchronous scripts (the waits) allowed `wait`.
    ///
    /// # Panics
    /// The session cannot be created.
    pub async fn session(&self, profile: &Path, wait: Duration) -> Client {
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
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("connecting to chromedriver");
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(wait),
                Some(Duration::from_secs(60)),
                Some(Duration::ZERO),
            ))
            .await
            .unwrap();
        client
    }
}

/// Resolves once the element `css` contains `expected` (now, or after any later change to the
/// page), and returns its text.
///
/// # Panics
/// Not within `wait`.
pub async fn wait_for_text(client: &Client, css: &str, expected: &str, wait: Duration) -> String {
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
    let deadline = Instant::now() + wait;
    loop {
        match client
            .execute_async(script, vec![css.into(), expected.into()])
            .await
        {
            Ok(text) => return text.as_str().unwrap_or_default().to_owned(),
            // A navigation replaced the document the script was watching (chromedriver reports
            // that as a script error or timeout): watch the new one.
            Err(_) if Instant::now() < deadline => continue,
            Err(error) => panic!("{css} never showed {expected:?}: {error}"),
        }
    }
}

/// The text of the element `css`.
///
/// # Panics
/// No such element.
pub async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no {css}: {error}"))
        .text()
        .await
        .unwrap()
}

/// Clicks the element `css`, retrying while the page is still being replaced (a missing or
/// stale element). A click that navigates may return before the next page is there: follow
/// it with [`wait_for_text`] on something only the next page shows.
///
/// # Panics
/// Not clickable within `wait`.
pub async fn click(client: &Client, css: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let error = match client.find(Locator::Css(css)).await {
            Ok(element) => match element.click().await {
                Ok(_) => return,
                Err(error) => error,
            },
            Err(error) => error,
        };
        assert!(Instant::now() < deadline, "could not click {css}: {error}");
        tokio::task::yield_now().await;
    }
}

/// Types `text` into the element `css`, retrying while the page is still being replaced.
///
/// # Panics
/// Not found within `wait`.
pub async fn fill(client: &Client, css: &str, text: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let error = match client.find(Locator::Css(css)).await {
            Ok(element) => match element.send_keys(text).await {
                Ok(()) => return,
                Err(error) => error,
            },
            Err(error) => error,
        };
        assert!(
            Instant::now() < deadline,
            "could not type into {css}: {error}"
        );
        tokio::task::yield_now().await;
    }
}
