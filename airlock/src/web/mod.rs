//! The web app (spec B12): server-rendered pages (askama) on axum, usable without JavaScript.
//!
//! Each area owns its routes: [`auth`] (sign in with a job-server token, sign out),
//! [`workspaces`] (the file browser over the medium-privacy tree, adding files), [`requests`]
//! (request pages, review and release actions); [`content`] renders file contents for the
//! viewer iframes. [`app`] merges them. Signed-in pages take a [`session::Ctx`] extractor,
//! so a handler cannot forget authentication; every POST form carries the session's CSRF
//! token. Permission failures are 403 with the reason, unknown things 404.

pub mod auth;
pub mod content;
pub mod requests;
pub mod session;
pub mod workspaces;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use tokio::sync::Notify;

use crate::checks::CheckConfig;
use crate::jobserver::JobServer;
use crate::request::workflow::RequestError;
use crate::store::{Store, StoreError, UpdateError};
use crate::upload::ReleaseError;
use crate::workspace::{PathError, Workspaces};
pub use session::Ctx;

/// Settings the pages need.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub secure_cookies: bool,
    /// Seconds between re-authorisations (15 minutes in the reference).
    pub authz_timeout_secs: i64,
    /// Sliding session lifetime in seconds.
    pub session_age_secs: i64,
    pub csv_page_size: usize,
    pub checks: CheckConfig,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub workspaces: Workspaces,
    pub link: JobServer,
    /// Wakes the uploader after a release.
    pub uploader: Arc<Notify>,
    pub config: Arc<WebConfig>,
    /// Row indexes of large CSV files, for deep pages of the viewer.
    pub csv_indexes: Arc<crate::csv::IndexCache>,
}

/// The whole router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(auth::router())
        .merge(workspaces::router())
        .merge(requests::router())
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers on every response: no sniffing, no framing by other sites, and a CSP that allows
/// only our own resources (content responses set a stricter, sandboxing one themselves).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'self'; form-action 'self'",
        ));
    headers
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("SAMEORIGIN"));
    response
}

/// The one error type of the web app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("Page not found")]
    NotFound,
    /// Redirect to the sign-in page, then back to `next`.
    #[error("sign in required")]
    SignInRequired { next: String },
    #[error("The form has expired or did not come from this site. Go back, reload and try again.")]
    Csrf,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template error: {0}")]
    Template(#[from] askama::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<UpdateError> for AppError {
    fn from(error: UpdateError) -> AppError {
        match error {
            UpdateError::NotFound(_) => AppError::NotFound,
            UpdateError::Request(error) => AppError::Request(error),
            UpdateError::Store(error) => AppError::Store(error),
        }
    }
}

impl From<PathError> for AppError {
    fn from(error: PathError) -> AppError {
        match error {
            PathError::NotFound(_) | PathError::NoManifest(_) => AppError::NotFound,
            PathError::InvalidWorkspace(_) | PathError::Escapes(_) | PathError::Symlink(_) => {
                AppError::BadRequest(error.to_string())
            }
            PathError::BadManifest { .. } | PathError::Io { .. } => {
                AppError::Internal(error.to_string())
            }
        }
    }
}

impl From<ReleaseError> for AppError {
    fn from(error: ReleaseError) -> AppError {
        match error {
            ReleaseError::NotFound(_) => AppError::NotFound,
            ReleaseError::Store(error) => AppError::Store(error),
            ReleaseError::Link(error) => {
                tracing::error!(%error, "creating a release on the job server");
                AppError::Forbidden(
                    "Error releasing files; please contact tech-support.".to_string(),
                )
            }
            other => AppError::Forbidden(format!("Error releasing files: {other}")),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (code, message) = match &self {
            AppError::NotFound => (StatusCode::NOT_FOUND, self.to_string()),
            AppError::SignInRequired { next } => {
                let target = format!("/login/?next={}", encode_component(next));
                return Redirect::to(&target).into_response();
            }
            AppError::Csrf | AppError::Forbidden(_) => (StatusCode::FORBIDDEN, self.to_string()),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, self.to_string()),
            AppError::Request(error) if error.is_not_found() => {
                (StatusCode::NOT_FOUND, self.to_string())
            }
            AppError::Request(_) => (StatusCode::FORBIDDEN, self.to_string()),
            AppError::Store(_) | AppError::Template(_) | AppError::Internal(_) => {
                tracing::error!("{self}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side. Please try again later.".to_string(),
                )
            }
        };
        let page = ErrorPage {
            title: code.canonical_reason().unwrap_or("Error").to_string(),
            message,
        };
        match page.render() {
            Ok(html) => (code, Html(html)).into_response(),
            Err(_) => (code, page.message).into_response(),
        }
    }
}

/// Renders a page.
///
/// # Errors
/// The template failed.
pub fn render<T: Template>(page: &T) -> Result<Response, AppError> {
    Ok(Html(page.render()?).into_response())
}

/// Now, in UNIX seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// UNIX seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Percent-encodes a path, keeping `/` (for links to files).
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes one URL component.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_encoding() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(encode_path("out/a b.csv"), "out/a%20b.csv");
        assert_eq!(encode_component("/x?y"), "%2Fx%3Fy");
    }
}
