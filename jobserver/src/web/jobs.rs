//! Running jobs (spec A4), the job-request and job pages (A8) with live updates over
//! server-sent events, and cancellation (A7).

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::{AppError, AppState, Ctx, FormPairs, field, fields, redirect_with_flash, render};
use crate::access::{allowed, runnable_backends};
use crate::git;
use crate::model::{Job, JobRequest, Project, RapId, Workspace, hms, iso, now};
use crate::roles::Permission;
use crate::status::{self, RequestStatus};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/{project}/{workspace}/run-jobs/",
            get(run_jobs_page).post(run_jobs),
        )
        .route("/{project}/{workspace}/{rap_id}/", get(job_request_page))
        .route(
            "/{project}/{workspace}/{rap_id}/events",
            get(job_request_events),
        )
        .route(
            "/{project}/{workspace}/{rap_id}/cancel/",
            post(cancel_request),
        )
        .route(
            "/{project}/{workspace}/{rap_id}/{identifier}/",
            get(job_page),
        )
        .route(
            "/{project}/{workspace}/{rap_id}/{identifier}/cancel/",
            post(cancel_job),
        )
}

/// The synthetic action that runs every action.
pub const RUN_ALL: &str = "run_all";
/// A4's message when the workspace is archived.
pub const ARCHIVED: &str = "You cannot create new jobs for an archived workspace. Contact an admin if you need to have it unarchived.";
/// A4's message when no action is selected.
pub const NO_ACTIONS: &str = "Please select at least one of the Actions listed above.";
/// A4's message when project.yaml still uses cohort-extractor.
pub const COHORT_EXTRACTOR: &str = "Cohort-extractor is no longer supported";

#[derive(Template)]
#[template(path = "run_jobs.html")]
struct RunJobsPage {
    ctx: Ctx,
    project: Project,
    workspace: Workspace,
    sha: String,
    actions: Vec<String>,
    actions_error: String,
    backends: Vec<String>,
    selected_actions: Vec<String>,
    selected_backend: String,
    force_run_dependencies: bool,
    errors: Vec<String>,
}

/// The workspace, project and usable backends once A4's preconditions 1–4 hold.
struct RunContext {
    project: Project,
    workspace: Workspace,
    backends: Vec<String>,
}

async fn run_preconditions(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    name: &str,
) -> Result<Result<RunContext, Response>, AppError> {
    let user = ctx.require_user()?;
    let project = state.store.project(slug)?.ok_or(AppError::NotFound)?;
    // 1. Unknown workspace: back to the home page, as the reference does.
    let Some(workspace) = state.store.workspace(name)?.filter(|w| w.project == slug) else {
        return Ok(Err(Redirect::to("/").into_response()));
    };
    // 2. No job_run on the project: 404.
    if !allowed(&state.store, Some(user), Some(slug), Permission::JobRun)? {
        return Err(AppError::NotFound);
    }
    // 3. Archived: back to the workspace with the reference's message.
    if workspace.is_archived {
        return Ok(Err(redirect_with_flash(
            ctx,
            &format!("/{slug}/{name}/"),
            ARCHIVED,
        )));
    }
    // 4. No backends: 404.
    let backends = runnable_backends(&state.store, &user.username)?;
    if backends.is_empty() {
        return Err(AppError::NotFound);
    }
    Ok(Ok(RunContext {
        project,
        workspace,
        backends,
    }))
}

/// A4 step 5–6: the commit at the branch head, project.yaml's text and the action choices (every
/// action plus `run_all`), or the message to show instead of the form.
async fn load_actions(workspace: &Workspace) -> Result<(String, String, Vec<String>), String> {
    let (sha, text) = git::project_yaml_at_head(&workspace.repo_url, &workspace.branch)
        .await
        .map_err(|error| error.to_string())?;
    let pipeline =
        rap_pipeline::load_pipeline(&text).map_err(|error| error.message().to_owned())?;
    let mut actions: Vec<String> = Vec::new();
    for name in pipeline.action_names() {
        if let Some(action) = pipeline.action(name)
            && action.run_command().contains("cohortextractor")
        {
            return Err(COHORT_EXTRACTOR.to_owned());
        }
        actions.push(name.to_owned());
    }
    if !actions.iter().any(|a| a == RUN_ALL) {
        actions.push(RUN_ALL.to_owned());
    }
    Ok((sha, text, actions))
}

async fn run_jobs_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let run = match run_preconditions(&state, &ctx, &slug, &name).await? {
        Ok(run) => run,
        Err(response) => return Ok(response),
    };
    let (sha, actions, actions_error) = match load_actions(&run.workspace).await {
        Ok((sha, _, actions)) => (sha, actions, String::new()),
        Err(message) => (String::new(), Vec::new(), message),
    };
    let selected_backend = if run.backends.len() == 1 {
        run.backends[0].clone()
    } else {
        String::new()
    };
    render(
        &ctx,
        &RunJobsPage {
            ctx: ctx.clone(),
            project: run.project,
            workspace: run.workspace,
            sha,
            actions,
            actions_error,
            backends: run.backends,
            selected_actions: Vec::new(),
            selected_backend,
            force_run_dependencies: false,
            errors: Vec::new(),
        },
    )
}

async fn run_jobs(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form)?;
    let run = match run_preconditions(&state, &ctx, &slug, &name).await? {
        Ok(run) => run,
        Err(response) => return Ok(response),
    };
    let user = ctx.require_user()?;
    let selected_actions = fields(&form, "requested_actions");
    let selected_backend = field(&form, "backend");
    let force_run_dependencies = !field(&form, "force_run_dependencies").is_empty();
    let (sha, text, actions) = match load_actions(&run.workspace).await {
        Ok(loaded) => loaded,
        Err(message) => {
            return render(
                &ctx,
                &RunJobsPage {
                    ctx: ctx.clone(),
                    project: run.project,
                    workspace: run.workspace,
                    sha: String::new(),
                    actions: Vec::new(),
                    actions_error: message,
                    backends: run.backends,
                    selected_actions,
                    selected_backend,
                    force_run_dependencies,
                    errors: Vec::new(),
                },
            );
        }
    };
    let mut errors = Vec::new();
    if selected_actions.is_empty() {
        errors.push(NO_ACTIONS.to_owned());
    }
    for action in &selected_actions {
        if !actions.contains(action) {
            errors.push(format!(
                "Select a valid choice. {action} is not one of the available choices."
            ));
        }
    }
    if selected_backend.is_empty() {
        errors.push("Backend: This field is required.".to_owned());
    } else if !run.backends.contains(&selected_backend) {
        errors.push(format!(
            "Select a valid choice. {selected_backend} is not one of the available choices."
        ));
    }
    if !errors.is_empty() {
        return render(
            &ctx,
            &RunJobsPage {
                ctx: ctx.clone(),
                project: run.project,
                workspace: run.workspace,
                sha,
                actions,
                actions_error: String::new(),
                backends: run.backends,
                selected_actions,
                selected_backend,
                force_run_dependencies,
                errors,
            },
        );
    }
    let request = JobRequest {
        rap_id: RapId::generate(),
        backend: selected_backend,
        workspace: run.workspace.name.clone(),
        project: slug.clone(),
        requested_actions: selected_actions,
        cancelled_actions: Vec::new(),
        sha,
        force_run_dependencies,
        created_by: user.username.clone(),
        created_at: now(),
        status: RequestStatus::Unknown,
        status_message: None,
        project_definition: text,
    };
    // Stored before the call, so a crash mid-call leaves a request the watch task resolves.
    state.store.put_job_request(&request)?;
    let outcome = state
        .link
        .submit(&request, &run.workspace, &run.project)
        .await;
    let (new_status, message) = status::status_after_create(&outcome);
    // Read again under the store's lock: the watch task may have written it meanwhile.
    let request = state
        .store
        .update_job_request(request.rap_id.as_str(), |stored| {
            stored.status = new_status;
            stored.status_message = message;
            true
        })?
        .unwrap_or(request);
    // Jobs may already have arrived through the watch stream while we waited.
    crate::watch::refresh_request_status(&state.store, &request.rap_id)?;
    state.store.flush().await?;
    let flash = match outcome {
        status::CreateOutcome::Accepted { count, .. } if count > 0 => {
            "Requested actions have been scheduled to run.".to_owned()
        }
        _ => format!(
            "No actions scheduled: {} ({})",
            request.status.display(),
            request.status_message.as_deref().unwrap_or("")
        ),
    };
    Ok(redirect_with_flash(
        &ctx,
        &format!("/{slug}/{name}/logs/"),
        &flash,
    ))
}

/// One job in the job-request table.
pub struct JobRow {
    pub url: String,
    pub action: String,
    pub identifier: String,
    pub status: String,
    pub status_class: &'static str,
    pub status_code: String,
    pub status_message: String,
    pub started_at: String,
    pub completed_at: String,
}

impl JobRow {
    fn new(request: &JobRequest, job: &Job) -> Self {
        JobRow {
            url: format!(
                "/{}/{}/{}/{}/",
                request.project, request.workspace, request.rap_id, job.identifier
            ),
            action: job.action.clone(),
            identifier: job.identifier.clone(),
            status: job.status.display(),
            status_class: job.status.as_str(),
            status_code: job.status_code.clone(),
            status_message: job.status_message.clone(),
            started_at: job.started_at.map(iso).unwrap_or_default(),
            completed_at: job.completed_at.map(iso).unwrap_or_default(),
        }
    }
}

/// The part of the job-request page that live updates replace.
#[derive(Template)]
#[template(path = "job_request_live.html")]
struct LivePart {
    status: String,
    status_class: &'static str,
    status_message: String,
    started_at: String,
    finished_at: String,
    runtime: String,
    missing_updates: bool,
    /// A7's `has_cancellable_actions`: when a live update says false, the page drops its
    /// Cancel button (the request finished or everything active was cancelled).
    cancellable: bool,
    jobs: Vec<JobRow>,
}

/// A8: an incomplete request whose latest job update is older than this shows a warning.
pub const MISSING_UPDATES_SECS: i64 = 30 * 60;

fn live_part(request: &JobRequest, jobs: &[Job]) -> LivePart {
    let started = jobs.iter().filter_map(|j| j.started_at).min();
    let complete = !request.status.is_active();
    let finished = if complete {
        jobs.iter().filter_map(|j| j.completed_at).max()
    } else {
        None
    };
    // A8: the sum of completed − started over finished jobs.
    let runtime: i64 = jobs
        .iter()
        .filter(|j| !j.status.is_active())
        .filter_map(|j| Some(j.completed_at? - j.started_at?))
        .sum();
    LivePart {
        status: request.status.display(),
        status_class: request.status.as_str(),
        status_message: request.status_message.clone().unwrap_or_default(),
        started_at: started.map(iso).unwrap_or_default(),
        finished_at: finished.map(iso).unwrap_or_default(),
        runtime: if runtime > 0 {
            hms(runtime)
        } else {
            String::new()
        },
        missing_updates: !complete
            && jobs
                .iter()
                .filter_map(|j| j.updated_at)
                .max()
                .is_some_and(|last| now() - last > MISSING_UPDATES_SECS),
        cancellable: !request.status.is_terminal()
            && (!cancellable_actions(request, jobs).is_empty() || jobs.is_empty()),
        jobs: jobs.iter().map(|job| JobRow::new(request, job)).collect(),
    }
}

#[derive(Template)]
#[template(path = "job_request.html")]
struct JobRequestPage {
    ctx: Ctx,
    request: JobRequest,
    workspace: Workspace,
    created_at: String,
    live_html: String,
    may_cancel: bool,
    events_url: String,
}

fn find_request(
    state: &AppState,
    slug: &str,
    name: &str,
    rap_id: &str,
) -> Result<JobRequest, AppError> {
    state
        .store
        .job_request(rap_id)?
        .filter(|r| r.project == slug && r.workspace == name)
        .ok_or(AppError::NotFound)
}

/// Whether the user may cancel (A7: the creator, or `job_cancel` on the project).
fn may_cancel(state: &AppState, ctx: &Ctx, request: &JobRequest) -> Result<bool, AppError> {
    let Some(user) = &ctx.user else {
        return Ok(false);
    };
    Ok(user.username == request.created_by
        || allowed(
            &state.store,
            Some(user),
            Some(&request.project),
            Permission::JobCancel,
        )?)
}

/// A7's `has_cancellable_actions`: active actions not already cancelled.
fn cancellable_actions(request: &JobRequest, jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.status.is_active())
        .map(|j| j.action.clone())
        .filter(|a| !request.cancelled_actions.contains(a))
        .collect()
}

async fn job_request_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name, rap_id)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    let request = find_request(&state, &slug, &name, &rap_id)?;
    let workspace = state.store.workspace(&name)?.ok_or(AppError::NotFound)?;
    let jobs = state.store.jobs_of_request(&rap_id)?;
    let live = live_part(&request, &jobs);
    let may_cancel = live.cancellable && may_cancel(&state, &ctx, &request)?;
    let live_html = live.render()?;
    render(
        &ctx,
        &JobRequestPage {
            ctx: ctx.clone(),
            created_at: iso(request.created_at),
            events_url: format!("/{slug}/{name}/{rap_id}/events"),
            request,
            workspace,
            live_html,
            may_cancel,
        },
    )
}

/// Server-sent events for one job request: each change sends the re-rendered live part.
async fn job_request_events(
    State(state): State<AppState>,
    Path((slug, name, rap_id)): Path<(String, String, String)>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let request = find_request(&state, &slug, &name, &rap_id)?;
    let receiver = state.events.subscribe();
    let shutdown = state.shutdown.clone();
    // The stream opens with the current state, rendered after subscribing: a change that
    // lands between the page's render and the browser opening this stream is never lost.
    let stream = futures_util::stream::unfold(
        (receiver, shutdown, state, request.rap_id, true),
        |(mut receiver, mut shutdown, state, rap_id, mut first)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                if !first {
                    let received = tokio::select! {
                        received = receiver.recv() => received,
                        _ = shutdown.changed() => return None,
                    };
                    match received {
                        Ok(changed) if changed.rap_id == rap_id => {}
                        Ok(_) => continue,
                        // Missed some events: re-render anyway, the page shows current state.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
                first = false;
                let html = state
                    .store
                    .job_request(rap_id.as_str())
                    .ok()
                    .flatten()
                    .and_then(|request| {
                        let jobs = state.store.jobs_of_request(rap_id.as_str()).ok()?;
                        live_part(&request, &jobs).render().ok()
                    });
                if let Some(html) = html {
                    let event = Event::default().event("update").data(html);
                    return Some((Ok(event), (receiver, shutdown, state, rap_id, false)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A job's timing and metrics for display.
pub struct MetricRow {
    pub name: &'static str,
    pub value: String,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    ctx: Ctx,
    request: JobRequest,
    job: Job,
    status: String,
    created_at: String,
    started_at: String,
    completed_at: String,
    updated_at: String,
    runtime: String,
    metrics: Vec<MetricRow>,
    trace_url: String,
    cancellation_requested: bool,
    may_cancel: bool,
}

/// A Jaeger link for a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_url(jaeger_url: &str, trace_context: &[(String, String)]) -> String {
    if jaeger_url.is_empty() {
        return String::new();
    }
    let Some((_, traceparent)) = trace_context.iter().find(|(k, _)| k == "traceparent") else {
        return String::new();
    };
    let mut parts = traceparent.split('-');
    match (parts.next(), parts.next()) {
        (Some(_version), Some(trace_id))
            if trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("{}/trace/{trace_id}", jaeger_url.trim_end_matches('/'))
        }
        _ => String::new(),
    }
}

async fn job_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name, rap_id, identifier)): Path<(String, String, String, String)>,
) -> Result<Response, AppError> {
    let request = find_request(&state, &slug, &name, &rap_id)?;
    let Some(job) = state
        .store
        .job(&identifier)?
        .filter(|j| j.rap_id == request.rap_id)
    else {
        // A8: a unique prefix of a job's identifier redirects to the job.
        let matches: Vec<Job> = state
            .store
            .jobs_of_request(&rap_id)?
            .into_iter()
            .filter(|j| !identifier.is_empty() && j.identifier.starts_with(&identifier))
            .collect();
        return match matches.as_slice() {
            [job] => Ok(
                Redirect::to(&format!("/{slug}/{name}/{rap_id}/{}/", job.identifier))
                    .into_response(),
            ),
            _ => Err(AppError::NotFound),
        };
    };
    let metrics = job
        .metrics
        .map(|m| {
            vec![
                MetricRow {
                    name: "CPU mean",
                    value: format!("{:.1}%", m.cpu_mean),
                },
                MetricRow {
                    name: "CPU peak",
                    value: format!("{:.1}%", m.cpu_peak),
                },
                MetricRow {
                    name: "Memory mean",
                    value: format!("{:.0} MB", m.mem_mb_mean),
                },
                MetricRow {
                    name: "Memory peak",
                    value: format!("{:.0} MB", m.mem_mb_peak),
                },
            ]
        })
        .unwrap_or_default();
    let runtime = match (job.started_at, job.completed_at) {
        (Some(start), Some(end)) => hms(end - start),
        _ => String::new(),
    };
    let may_cancel = may_cancel(&state, &ctx, &request)?
        && job.status.is_active()
        && !request.cancelled_actions.contains(&job.action);
    render(
        &ctx,
        &JobPage {
            ctx: ctx.clone(),
            status: job.status.display(),
            created_at: job.created_at.map(iso).unwrap_or_default(),
            started_at: job.started_at.map(iso).unwrap_or_default(),
            completed_at: job.completed_at.map(iso).unwrap_or_default(),
            updated_at: job.updated_at.map(iso).unwrap_or_default(),
            runtime,
            metrics,
            trace_url: trace_url(&state.config.jaeger_url, &job.trace_context),
            cancellation_requested: request.cancelled_actions.contains(&job.action),
            may_cancel,
            request,
            job,
        },
    )
}

/// A7's messages.
pub const NOT_STARTED_YET: &str = "Could not cancel as job information not available. If this is a recent Job Request, please wait a minute and retry";
pub const NO_ACTIONS_TO_CANCEL: &str = "There are no actions to cancel";
pub const CANCEL_FAILED: &str = "An unexpected error caused the cancellation to fail. If this persists, please contact technical support";
pub const CANCELLED: &str = "The requested actions have been cancelled";

async fn cancel_request(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name, rap_id)): Path<(String, String, String)>,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    cancel(state, ctx, slug, name, rap_id, None, form).await
}

async fn cancel_job(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name, rap_id, identifier)): Path<(String, String, String, String)>,
    Form(form): Form<FormPairs>,
) -> Result<Response, AppError> {
    cancel(state, ctx, slug, name, rap_id, Some(identifier), form).await
}

async fn cancel(
    state: AppState,
    ctx: Ctx,
    slug: String,
    name: String,
    rap_id: String,
    identifier: Option<String>,
    form: FormPairs,
) -> Result<Response, AppError> {
    ctx.check_csrf(&form)?;
    ctx.require_user()?;
    let request = find_request(&state, &slug, &name, &rap_id)?;
    if !may_cancel(&state, &ctx, &request)? {
        return Err(AppError::NotFound);
    }
    let jobs = state.store.jobs_of_request(&rap_id)?;
    let back = match &identifier {
        Some(identifier) => format!("/{slug}/{name}/{rap_id}/{identifier}/"),
        None => format!("/{slug}/{name}/{rap_id}/"),
    };
    if !request.status.is_active() {
        return Ok(Redirect::to(&back).into_response());
    }
    let mut actions = cancellable_actions(&request, &jobs);
    let single_action = match &identifier {
        Some(identifier) => {
            let job = jobs
                .iter()
                .find(|j| &j.identifier == identifier)
                .ok_or(AppError::NotFound)?;
            if !job.status.is_active() || request.cancelled_actions.contains(&job.action) {
                return Ok(Redirect::to(&back).into_response());
            }
            actions.retain(|a| a == &job.action);
            Some(job.action.clone())
        }
        None => None,
    };
    if actions.is_empty() {
        let message = if matches!(
            request.status,
            RequestStatus::Pending | RequestStatus::UnknownErrorCreatingJobs
        ) {
            NOT_STARTED_YET
        } else {
            NO_ACTIONS_TO_CANCEL
        };
        return Ok(redirect_with_flash(&ctx, &back, message));
    }
    match state.link.cancel(&request.rap_id, &actions).await {
        Ok(_) => {
            // The controller has already cancelled, so the watch task may be writing the
            // request's new status right now: add the actions to the stored record, not to
            // the copy read before the call.
            state.store.update_job_request(&rap_id, |stored| {
                stored.cancelled_actions.extend(actions);
                true
            })?;
            crate::watch::refresh_request_status(&state.store, &request.rap_id)?;
            let message = match single_action {
                Some(action) => format!("Your request to cancel \"{action}\" was successful"),
                None => CANCELLED.to_owned(),
            };
            Ok(redirect_with_flash(&ctx, &back, &message))
        }
        Err(error) => {
            tracing::error!(%rap_id, "cancel failed: {error}");
            Ok(redirect_with_flash(&ctx, &back, CANCEL_FAILED))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_links_come_from_traceparent() {
        let context = vec![(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )];
        assert_eq!(
            trace_url("http://jaeger:16686/", &context),
            "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_url("", &context), "");
        assert_eq!(
            trace_url("http://j", &[("traceparent".into(), "junk".into())]),
            ""
        );
    }
}
