//! The backend status page (spec A8 `/status/`): the controller's flags, refreshed from
//! GetBackendStatus on each view (bounded wait; the stored copy shows when the controller is
//! unreachable), and running/pending job counts from our store.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppError, AppState, Ctx, render};
use crate::model::{iso, now};
use crate::status::JobStatus;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/status/", get(status_page))
        .route("/status/{backend}/", get(backend_last_seen))
}

/// One backend's line on the page.
pub struct BackendRow {
    pub slug: String,
    pub name: String,
    pub last_seen: String,
    pub paused: bool,
    pub db_maintenance: bool,
    pub running: usize,
    pub pending: usize,
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    ctx: Ctx,
    backends: Vec<BackendRow>,
    controller_error: String,
}

/// The reference's default `alert_timeout`: a backend unseen for longer is reported missing.
pub const ALERT_TIMEOUT_SECS: i64 = 5 * 60;

/// `/status/<backend>/`: the last-seen time as text, 503 when the backend has been missing for
/// longer than the alert timeout (for external monitoring).
async fn backend_last_seen(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, AppError> {
    refresh(&state).await?;
    let backend = state.store.backend(&slug)?.ok_or(AppError::NotFound)?;
    let text = backend.last_seen.map(iso).unwrap_or_default();
    let missing = backend
        .last_seen
        .is_none_or(|seen| now() - seen > ALERT_TIMEOUT_SECS);
    let code = if missing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((code, text).into_response())
}

/// Stores the controller's current backend flags; the message to show when it is unreachable.
async fn refresh(state: &AppState) -> Result<String, AppError> {
    Ok(
        match state.link.backend_status(Duration::from_secs(3)).await {
            Ok(flags) => {
                for flag in flags {
                    if let Some(mut backend) = state.store.backend(&flag.slug)? {
                        backend.last_seen = flag.last_seen;
                        backend.paused = flag.paused;
                        backend.db_maintenance = flag.db_maintenance;
                        backend.db_maintenance_since = flag.db_maintenance_since;
                        state.store.put_backend(&backend)?;
                    }
                }
                String::new()
            }
            Err(error) => {
                tracing::warn!("backend status: {error}");
                "The controller could not be reached; showing the last known state.".to_owned()
            }
        },
    )
}

async fn status_page(State(state): State<AppState>, ctx: Ctx) -> Result<Response, AppError> {
    let controller_error = refresh(&state).await?;
    let requests = state.store.active_job_requests()?;
    let mut backends = Vec::new();
    for backend in state.store.backends()?.into_iter().filter(|b| b.is_active) {
        let (mut running, mut pending) = (0, 0);
        for request in requests
            .iter()
            .filter(|r| r.backend == backend.slug && r.status.is_active())
        {
            for job in state.store.jobs_of_request(request.rap_id.as_str())? {
                match job.status {
                    JobStatus::Running => running += 1,
                    JobStatus::Pending => pending += 1,
                    _ => {}
                }
            }
        }
        backends.push(BackendRow {
            last_seen: backend
                .last_seen
                .map(iso)
                .unwrap_or_else(|| "never".to_owned()),
            slug: backend.slug,
            name: backend.name,
            paused: backend.paused,
            db_maintenance: backend.db_maintenance,
            running,
            pending,
        });
    }
    render(
        &ctx,
        &StatusPage {
            ctx: ctx.clone(),
            backends,
            controller_error,
        },
    )
}
