//! The backend status page (spec A8 `/status/`): the controller's flags, refreshed from
//! GetBackendStatus on each view (bounded wait; the stored copy shows when the controller is
//! unreachable), and running/pending job counts from our store.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::{AppError, AppState, Ctx, render};
use crate::model::iso;
use crate::status::JobStatus;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/status/", get(status_page))
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

async fn status_page(State(state): State<AppState>, ctx: Ctx) -> Result<Response, AppError> {
    let controller_error = match state.link.backend_status(Duration::from_secs(3)).await {
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
    };
    let requests = state.store.job_requests()?;
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
