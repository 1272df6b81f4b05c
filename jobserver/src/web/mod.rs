//! The researchers' web app: server-rendered pages (askama) on axum, working without
//! JavaScript; the job-request page adds live updates over server-sent events.
//!
//! Each area owns its routes ([`auth`], [`projects`], [`jobs`], [`status`], [`releases`]);
//! [`app`] merges them. Pages read our store only; controller news arrives through `watch`.
//! Every POST form carries a CSRF token: the session's for signed-in users, a double-submit
//! cookie for the sign-in form. Permission failures on private pages are 404, as in the
//! reference.

pub mod auth;
pub mod jobs;
pub mod projects;
pub mod releases;
pub mod session;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use tokio::sync::broadcast;

use crate::controller_link::ControllerLink;
use crate::store::{Store, StoreError};
use crate::watch::RequestChanged;
pub use session::Ctx;

/// Settings the pages need.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Absolute base URL of this server, for links handed to Airlock (no trailing slash).
    pub base_url: String,
    /// Jaeger UI base URL for trace links; empty hides them.
    pub jaeger_url: String,
    /// Mark cookies `Secure` (set when served behind TLS).
    pub secure_cookies: bool,
    /// Where released files are kept.
    pub release_storage: PathBuf,
    /// Accept `file:///` repository URLs (local studies; tests and single-machine set-ups).
    pub allow_file_repos: bool,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub link: ControllerLink,
    pub config: Arc<WebConfig>,
    pub events: broadcast::Sender<RequestChanged>,
    /// Becomes true when the server shuts down, so open event streams end and graceful
    /// shutdown is not held up by them.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The whole router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(auth::router())
        .merge(status::router())
        .merge(releases::router())
        .merge(jobs::router())
        .merge(projects::router())
        .with_state(state)
}

/// The one error type of the web app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Unknown page, or a private page the user may not see (the reference answers 404).
    #[error("Page not found")]
    NotFound,
    /// The request needs a signed-in user.
    #[error("sign in required")]
    SignInRequired,
    /// A form without a valid CSRF token.
    #[error("The form has expired or did not come from this site. Go back, reload and try again.")]
    Csrf,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template error: {0}")]
    Template(#[from] askama::Error),
    /// A release too big for one zip.
    #[error("{0}; download the files one by one")]
    Zip(#[from] crate::zip_stream::ZipError),
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    ctx: Ctx,
    title: String,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (code, message) = match &self {
            AppError::NotFound => (StatusCode::NOT_FOUND, self.to_string()),
            AppError::SignInRequired => return Redirect::to("/login/").into_response(),
            AppError::Csrf => (StatusCode::FORBIDDEN, self.to_string()),
            AppError::Zip(_) => (StatusCode::NOT_IMPLEMENTED, self.to_string()),
            AppError::Store(_) | AppError::Template(_) => {
                tracing::error!("internal error: {self}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side. Please try again later.".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            ctx: Ctx::anonymous(),
            title: code.canonical_reason().unwrap_or("Error").to_owned(),
            message,
        };
        match page.render() {
            Ok(html) => (code, Html(html)).into_response(),
            Err(_) => (code, message_only(&page.message)).into_response(),
        }
    }
}

fn message_only(message: &str) -> String {
    message.to_owned()
}

/// Renders a page; clears the flash cookie when the page showed its messages.
pub fn render<T: Template>(ctx: &Ctx, page: &T) -> Result<Response, AppError> {
    let html = page.render()?;
    let mut response = Html(html).into_response();
    if !ctx.flash.is_empty()
        && let Ok(value) = session::clear_cookie(session::FLASH_COOKIE).parse()
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// A redirect that shows `message` on the next page.
pub fn redirect_with_flash(ctx: &Ctx, to: &str, message: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    let cookie = session::flash_cookie(message, ctx.secure_cookies);
    if let Ok(value) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Name-value pairs of a submitted form (repeated keys kept, for multi-selects).
pub type FormPairs = Vec<(String, String)>;

/// The first value of `key` in a form, trimmed.
pub fn field(form: &FormPairs, key: &str) -> String {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// Every value of `key` in a form.
pub fn fields(form: &FormPairs, key: &str) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}
