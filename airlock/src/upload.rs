//! Releasing a request and uploading its files to the job server (spec B9, B10).
//!
//! [`release_files`] checks the request, creates the release on the job server (idempotent on
//! the request id), then marks the files released and the request APPROVED. The uploader
//! ([`upload_pass`], run in a loop by [`run_uploader`]) streams each released file with its
//! sha256 and marks it uploaded when the job server confirms it, or says it already had it;
//! when every file is uploaded the request becomes RELEASED. An interrupted upload is
//! retried with capped exponential backoff; a file already confirmed is never sent again.
//!
//! Differs from the reference: the retry delay grows from `retry_base` to `retry_cap`
//! instead of a fixed 60 s, and the uploader wakes immediately on a release instead of
//! polling every second (it still polls, as a backstop, every `poll_interval`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::jobserver::{EventUpdate, JobServer, LinkError, ReleaseFile};
use crate::request::workflow::{self, RequestError};
use crate::request::{FileType, ReleaseRequest, RequestId, RequestStatus};
use crate::store::{Store, StoreError, UpdateError};
use crate::user::User;

/// Uploader timing.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Delay before the first retry of a failed file.
    pub retry_base: Duration,
    /// Longest delay between retries.
    pub retry_cap: Duration,
    /// Backstop poll for APPROVED requests.
    pub poll_interval: Duration,
}

/// Why releasing failed. The UI shows "Error releasing files: …".
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error("Permission denied")]
    Denied,
    #[error("please contact tech-support.")]
    Link(LinkError),
    #[error("request {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UpdateError> for ReleaseError {
    fn from(error: UpdateError) -> ReleaseError {
        match error {
            UpdateError::NotFound(id) => ReleaseError::NotFound(id),
            UpdateError::Request(error) => ReleaseError::Request(error),
            UpdateError::Store(error) => ReleaseError::Store(error),
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

fn release_file(request: &ReleaseRequest, relpath: &str) -> Option<ReleaseFile> {
    let file = request.files.get(relpath)?;
    Some(ReleaseFile {
        name: file.relpath.clone(),
        size: file.size,
        sha256: file.file_id.clone(),
        date: file.timestamp,
    })
}

/// Releases the request's output files as `user` (B9 steps 1–5).
///
/// # Errors
/// The request's guards, the job server refusing or unreachable (the request then stays
/// REVIEWED and can be retried), or storage.
pub async fn release_files(
    store: &Store,
    link: &JobServer,
    id: &RequestId,
    user: &User,
    uploader: &Notify,
) -> Result<ReleaseRequest, ReleaseError> {
    let Some(request) = store.get(id)? else {
        return Err(ReleaseError::NotFound(id.to_string()));
    };
    workflow::check_release(&request, user)?;
    let files: Vec<ReleaseFile> = request
        .output_files()
        .filter_map(|file| release_file(&request, &file.relpath))
        .collect();
    link.create_release(
        &request.workspace,
        request.id.as_str(),
        &files,
        &user.username,
    )
    .await
    .map_err(|error| match error {
        LinkError::Denied(_) => ReleaseError::Denied,
        other => ReleaseError::Link(other),
    })?;
    let (before, after, _) =
        store.update(id, |request| workflow::approve(request, user, now_secs()))?;
    store.flush().await?;
    if before.status != after.status {
        let n_files = after
            .files
            .values()
            .filter(|file| file.filetype == FileType::Output)
            .count();
        notify(
            link,
            &after,
            before.status,
            &user.username,
            &format!("{n_files} file(s) will be uploaded"),
        )
        .await;
    }
    uploader.notify_one();
    Ok(after)
}

/// Sends the notification for a status change, logging failures (they never block).
pub async fn notify(
    link: &JobServer,
    request: &ReleaseRequest,
    from: RequestStatus,
    user: &str,
    update: &str,
) {
    let Some(event_type) = workflow::notification_for(from, request.status) else {
        return;
    };
    let updates: Vec<EventUpdate> = if update.is_empty() {
        Vec::new()
    } else {
        vec![EventUpdate {
            update: update.to_string(),
            group: None,
            user: None,
        }]
    };
    let sent = link
        .notify(
            event_type,
            &request.workspace,
            request.id.as_str(),
            &request.author,
            user,
            &updates,
        )
        .await;
    if let Err(error) = sent {
        tracing::warn!(request = %request.id, event_type, %error, "notification not sent");
    }
}

/// What one pass of the uploader did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassSummary {
    pub uploaded: usize,
    pub failed: usize,
    pub released: usize,
}

fn retry_delay(config: &UploadConfig, attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    config
        .retry_base
        .saturating_mul(factor)
        .min(config.retry_cap)
}

/// One pass over every APPROVED request: upload what is due, then release what is done.
///
/// # Errors
/// Storage only; upload failures are counted and retried on a later pass.
pub async fn upload_pass(
    store: &Store,
    link: &JobServer,
    config: &UploadConfig,
) -> Result<PassSummary, StoreError> {
    let mut summary = PassSummary::default();
    let approved: Vec<ReleaseRequest> = store
        .list()?
        .into_iter()
        .filter(|request| request.status == RequestStatus::Approved)
        .collect();
    for request in approved {
        let now = now_secs();
        let due: Vec<(String, String)> = workflow::files_to_upload(&request)
            .into_iter()
            .filter(|file| match file.upload_attempted_at {
                None => true,
                Some(at) => {
                    let wait = retry_delay(config, file.upload_attempts).as_secs() as i64;
                    now - at >= wait
                }
            })
            .map(|file| {
                (
                    file.relpath.clone(),
                    file.released_by.clone().unwrap_or_default(),
                )
            })
            .collect();
        for (relpath, released_by) in due {
            let Some(file) = release_file(&request, &relpath) else {
                continue;
            };
            let recorded = store.update(&request.id, |request| {
                workflow::record_upload_attempt(request, &relpath, now);
                Ok(workflow::Outcome::default())
            });
            if let Err(error) = recorded {
                tracing::warn!(request = %request.id, %error, "recording an upload attempt");
                continue;
            }
            let path = store.file_path(&request, &file.sha256);
            match link
                .upload_file(request.id.as_str(), &file, &path, &released_by)
                .await
            {
                Ok(_already_uploaded) => {
                    // Both a fresh upload and "already uploaded" mean the job server has
                    // this exact version.
                    match store.update(&request.id, |request| {
                        workflow::mark_uploaded(request, &relpath, now_secs())
                    }) {
                        Ok(_) => summary.uploaded += 1,
                        Err(error) => {
                            tracing::warn!(request = %request.id, %error, "marking uploaded")
                        }
                    }
                }
                Err(error) => {
                    summary.failed += 1;
                    tracing::warn!(request = %request.id, file = %relpath, %error, "upload failed; will retry");
                }
            }
        }
        let mut released = None;
        let result = store.update(&request.id, |request| {
            let before = request.status;
            match workflow::mark_released(request, now_secs())? {
                Some(outcome) => {
                    released = Some(before);
                    Ok(outcome)
                }
                None => Ok(workflow::Outcome::default()),
            }
        });
        match result {
            Ok((_, after, _)) => {
                if let Some(before) = released {
                    summary.released += 1;
                    let releaser = after
                        .files
                        .values()
                        .filter_map(|file| file.released_by.clone())
                        .next()
                        .unwrap_or_default();
                    notify(link, &after, before, &releaser, "").await;
                }
            }
            Err(error) => tracing::warn!(request = %request.id, %error, "releasing"),
        }
    }
    store.flush().await?;
    Ok(summary)
}

/// Runs [`upload_pass`] whenever woken (a release happened) or every `poll_interval`, until
/// `shutdown` resolves.
pub async fn run_uploader(
    store: Arc<Store>,
    link: JobServer,
    config: UploadConfig,
    wake: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        if let Err(error) = upload_pass(&store, &link, &config).await {
            tracing::error!(%error, "upload pass failed");
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}
