//! The watch task: consumes the controller's `WatchJobs` stream from the cursor persisted in
//! the store, so job news arrives without polling and resumes after a restart without loss.
//!
//! Each change is applied with its cursor in one transaction (see `Store::apply_job_change`);
//! the request's overall status is then recomputed (spec A6) and a [`RequestChanged`] event is
//! broadcast for the live pages. On connect, requests stuck in `unknown_error_creating_jobs`
//! are checked with GetJobStatus: ids the controller never saw become `failed` (A6 step 3).
//!
//! A job server away for longer than the controller keeps its change log is told so
//! (`OUT_OF_RANGE` with the cursor to resume after): it re-reads its active requests' jobs with
//! GetJobStatus, moves its cursor to that point, and watches on from there.

use std::future::Future;
use std::time::Duration;

use rap_proto::pb::rap::v1 as pb;
use tokio::sync::broadcast;

use crate::controller_link::{ControllerLink, job_from_proto};
use crate::model::RapId;
use crate::status::{self, RequestStatus, UNKNOWN_ERROR_CREATING_JOBS};
use crate::store::{Store, StoreError};

/// A job request whose jobs or status changed; pages subscribed to it re-render.
#[derive(Debug, Clone)]
pub struct RequestChanged {
    pub rap_id: RapId,
}

/// Runs until `shutdown` completes, reconnecting with capped exponential backoff.
pub async fn run(
    link: ControllerLink,
    store: Store,
    events: broadcast::Sender<RequestChanged>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = ReconnectBackoff::new();
    loop {
        let session = tokio::select! {
            () = &mut shutdown => return,
            session = watch_once(&link, &store, &events) => session,
        };
        let delay = match session {
            Session::NotConnected(error) => {
                tracing::warn!("cannot watch the controller: {error}");
                backoff.after_failed_connection()
            }
            Session::Ended(Ok(())) => {
                tracing::info!("controller closed the watch stream; reconnecting");
                backoff.after_session()
            }
            Session::Ended(Err(error)) => {
                tracing::warn!("watch stream failed: {error}");
                backoff.after_session()
            }
        };
        // A wait before reconnecting, so a controller that is down is not hammered; it is
        // cut short by shutdown.
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The wait before the first reconnection attempt.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between attempts while the controller stays unreachable.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// The waits between reconnection attempts: doubling up to [`MAX_RECONNECT_DELAY`] while
/// attempts fail to connect, and back to [`FIRST_RECONNECT_DELAY`] once a stream was
/// established, so one disconnect after a long healthy session is retried at once rather
/// than after the longest wait.
#[derive(Debug)]
struct ReconnectBackoff {
    next: Duration,
}

impl ReconnectBackoff {
    fn new() -> ReconnectBackoff {
        ReconnectBackoff {
            next: FIRST_RECONNECT_DELAY,
        }
    }

    /// The wait after an attempt that never established the stream.
    fn after_failed_connection(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RECONNECT_DELAY);
        delay
    }

    /// The wait after a stream that was established and then ended, cleanly or not.
    fn after_session(&mut self) -> Duration {
        self.next = FIRST_RECONNECT_DELAY;
        self.after_failed_connection()
    }
}

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Link(#[from] crate::controller_link::LinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stream error: {0}")]
    Stream(#[from] tonic::Status),
}

/// How one watch session ended.
enum Session {
    /// The stream was never established (the controller is unreachable or refused us).
    NotConnected(WatchError),
    /// The stream was established, then the controller closed it (`Ok`) or it broke.
    Ended(Result<(), WatchError>),
}

async fn watch_once(
    link: &ControllerLink,
    store: &Store,
    events: &broadcast::Sender<RequestChanged>,
) -> Session {
    let (cursor, stream) = match connect(link, store).await {
        Ok(connected) => connected,
        Err(error) => return Session::NotConnected(error),
    };
    tracing::info!(cursor, "watching controller job changes");
    Session::Ended(follow(link, store, events, stream).await)
}

/// Opens the stream after the persisted cursor.
async fn connect(
    link: &ControllerLink,
    store: &Store,
) -> Result<(u64, tonic::Streaming<pb::JobChange>), WatchError> {
    let cursor = store.watch_cursor()?;
    let stream = link.watch(cursor).await?;
    Ok((cursor, stream))
}

/// Applies the changes on an established stream until it ends.
async fn follow(
    link: &ControllerLink,
    store: &Store,
    events: &broadcast::Sender<RequestChanged>,
    mut stream: tonic::Streaming<pb::JobChange>,
) -> Result<(), WatchError> {
    resolve_unknown_creations(link, store, events).await?;
    loop {
        let change = match stream.message().await {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(()),
            Err(status) => {
                return match resume_point(&status) {
                    Some(resume_after) => resync(link, store, events, resume_after).await,
                    None => Err(status.into()),
                };
            }
        };
        let Some(job) = change.job else {
            tracing::warn!(cursor = change.cursor, "job change without a job");
            continue;
        };
        let job = match job_from_proto(job) {
            Ok(job) => job,
            Err(error) => {
                tracing::error!(cursor = change.cursor, "skipping change: {error}");
                continue;
            }
        };
        let rap_id = job.rap_id.clone();
        if store.job_request(rap_id.as_str())?.is_none() {
            // Another job server's request on a shared backend, or one we lost: the
            // reference logs and skips these. The cursor still moves past it.
            tracing::warn!(%rap_id, "change for an unknown job request");
            store.set_watch_cursor(change.cursor).await?;
            continue;
        }
        store.apply_job_change(change.cursor, &job).await?;
        refresh_request_status(store, &rap_id)?;
        let _ = events.send(RequestChanged { rap_id });
    }
}

/// The cursor to resume after, if the controller no longer keeps the changes we need.
fn resume_point(status: &tonic::Status) -> Option<u64> {
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    status
        .metadata()
        .get(rap_proto::WATCH_RESUME_AFTER_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Brings every active request's jobs up to date from GetJobStatus and moves the cursor to
/// `resume_after`. The snapshot is taken after the controller fixed that bound, so it is at
/// least as new as every change it removed; changes after the bound are replayed by the next
/// watch.
async fn resync(
    link: &ControllerLink,
    store: &Store,
    events: &broadcast::Sender<RequestChanged>,
    resume_after: u64,
) -> Result<(), WatchError> {
    let active: Vec<String> = store
        .active_job_requests()?
        .into_iter()
        .map(|request| request.rap_id.as_str().to_owned())
        .collect();
    tracing::warn!(
        cursor = store.watch_cursor()?,
        resume_after,
        requests = active.len(),
        "the controller no longer keeps our missed changes; re-reading active requests"
    );
    let (jobs, _) = if active.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        link.job_status(&active).await?
    };
    let mut changed = std::collections::BTreeSet::new();
    for job in &jobs {
        store.apply_job_change(resume_after, job).await?;
        changed.insert(job.rap_id.clone());
    }
    store.set_watch_cursor(resume_after).await?;
    for rap_id in changed {
        refresh_request_status(store, &rap_id)?;
        let _ = events.send(RequestChanged { rap_id });
    }
    Ok(())
}

/// Recomputes and persists a request's overall status from its jobs (A6).
///
/// # Errors
/// On storage failure.
pub fn refresh_request_status(store: &Store, rap_id: &RapId) -> Result<(), StoreError> {
    let jobs = store.jobs_of_request(rap_id.as_str())?;
    let statuses: Vec<&str> = jobs.iter().map(|job| job.status.as_str()).collect();
    store.update_job_request(rap_id.as_str(), |request| {
        let (new_status, message) =
            status::aggregate(request.status, request.status_message.as_deref(), &statuses);
        let changed = new_status != request.status || message != request.status_message;
        request.status = new_status;
        request.status_message = message;
        changed
    })?;
    Ok(())
}

async fn resolve_unknown_creations(
    link: &ControllerLink,
    store: &Store,
    events: &broadcast::Sender<RequestChanged>,
) -> Result<(), WatchError> {
    let stuck: Vec<String> = store
        .active_job_requests()?
        .into_iter()
        .filter(|r| r.status == RequestStatus::UnknownErrorCreatingJobs)
        .map(|r| r.rap_id.as_str().to_owned())
        .collect();
    if stuck.is_empty() {
        return Ok(());
    }
    let (_, unrecognised) = link.job_status(&stuck).await?;
    for rap_id in unrecognised {
        let mut failed = false;
        let request = store.update_job_request(&rap_id, |request| {
            failed = request.status == RequestStatus::UnknownErrorCreatingJobs;
            if failed {
                request.status = RequestStatus::Failed;
                request.status_message = Some(UNKNOWN_ERROR_CREATING_JOBS.to_owned());
            }
            failed
        })?;
        if let Some(request) = request
            && failed
        {
            let _ = events.send(RequestChanged {
                rap_id: request.rap_id,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_double_up_to_the_cap_while_connecting_fails() {
        let mut backoff = ReconnectBackoff::new();
        let waits: Vec<u128> = (0..10)
            .map(|_| backoff.after_failed_connection().as_millis())
            .collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
    }

    #[test]
    fn a_session_that_connected_resets_the_wait_to_the_first() {
        let mut backoff = ReconnectBackoff::new();
        for _ in 0..10 {
            backoff.after_failed_connection();
        }
        // The controller came back and the stream ran (the bug: this waited 30 s).
        assert_eq!(backoff.after_session(), FIRST_RECONNECT_DELAY);
        // Another healthy session that breaks: still the first wait, not a doubled one.
        assert_eq!(backoff.after_session(), FIRST_RECONNECT_DELAY);
        // A controller that stays down afterwards is backed off from the start again.
        assert_eq!(backoff.after_failed_connection(), FIRST_RECONNECT_DELAY * 2);
        assert_eq!(backoff.after_failed_connection(), FIRST_RECONNECT_DELAY * 4);
    }
}
