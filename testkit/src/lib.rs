//! Test plumbing shared by the crates' tests.
//!
//! - [`binaries`]: where the workspace's built binaries are (also `rap up`'s lookup, the one
//!   piece that ships; it needs nothing beyond std).
//! - [`browser`] (feature `browser`): headless Chromium through Debian's chromedriver, with
//!   waits that are events in the page rather than polls or sleeps.
//!
//! Invariant: without features this crate has no dependencies, so the `rap` binary can link
//! [`binaries`] without the browser stack.

pub mod binaries;
#[cfg(feature = "browser")]
pub mod browser;
