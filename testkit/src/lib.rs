//! Test plumbing shared by the crates' tests (a dev-dependency only; nothing here ships).
//!
//! - [`browser`]: headless Chromium through Debian's chromedriver, with waits that are events
//!   in the page rather than polls or sleeps.

pub mod browser;
