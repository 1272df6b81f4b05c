//! Airlock's browser tests on the shared headless-Chromium plumbing (`rap-testkit`), with
//! Airlock's patience for one page condition.

use std::path::Path;
use std::time::Duration;

use fantoccini::Client;
use rap_testkit::browser as kit;
pub use rap_testkit::browser::Driver;

/// How long any one page condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Starts chromedriver.
pub async fn start_driver() -> Driver {
    Driver::start().await
}

/// A new session with its own profile directory (its own cookies).
pub async fn open(driver: &Driver, profile: &Path) -> Client {
    driver.session(profile, WAIT).await
}

/// Waits until the element `css` contains `expected`; returns its text.
pub async fn wait_for_text(client: &Client, css: &str, expected: &str) -> String {
    kit::wait_for_text(client, css, expected, WAIT).await
}

/// Clicks the element `css` once the page has it.
pub async fn click(client: &Client, css: &str) {
    kit::click(client, css, WAIT).await;
}

/// Types into the element `css` once the page has it.
pub async fn fill(client: &Client, css: &str, text: &str) {
    kit::fill(client, css, text, WAIT).await;
}
