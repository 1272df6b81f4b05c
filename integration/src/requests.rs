//! Job requests through the RAP API, as a job server makes them: submit, then follow the
//! request's jobs on `WatchJobs` (a server stream from a cursor; no polling) until a condition
//! holds, typically "every job is final".

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use rap_proto::pb::rap::v1 as pb;
use tonic::transport::Channel;

use crate::stack::{self, Installation};

/// A RAP API client.
pub type RapClient = pb::rap_service_client::RapServiceClient<Channel>;

/// A fresh RAP id: 16 characters of `[a-z0-9]`, unique within this process and very likely
/// across processes (time, pid and a counter).
pub fn new_rap_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        nanos.wrapping_add(n.wrapping_mul(7919)) ^ (u64::from(std::process::id()) << 40)
    )
}

/// Whether a job has reached a final state.
pub fn is_final(job: &pb::Job) -> bool {
    matches!(job.status(), pb::State::Succeeded | pb::State::Failed)
}

/// Submits a job request and checks it was accepted with jobs to run.
///
/// # Errors
/// The call failed, or the controller answered anything but `SUCCESS`.
pub async fn submit(
    client: &mut RapClient,
    installation: &Installation,
    request: pb::SubmitJobRequest,
) -> anyhow::Result<pb::SubmitJobResponse> {
    let response = client
        .submit_job(stack::authed(installation, request)?)
        .await
        .map_err(|status| anyhow::anyhow!("SubmitJob: {}", status.message()))?
        .into_inner();
    if response.result() != pb::SubmitResult::Success {
        bail!(
            "SubmitJob answered {:?}: {}",
            response.result(),
            response.details
        );
    }
    Ok(response)
}

/// Follows `WatchJobs` from the start of the change log, keeping the latest state of each job
/// of `rap_id` by action, until `until` holds for them; returns them.
///
/// # Errors
/// The stream failed or ended, or `deadline` passed (the message has the jobs seen so far).
pub async fn follow(
    client: &mut RapClient,
    installation: &Installation,
    rap_id: &str,
    deadline: Duration,
    mut until: impl FnMut(&BTreeMap<String, pb::Job>) -> bool,
) -> anyhow::Result<BTreeMap<String, pb::Job>> {
    let mut stream = client
        .watch_jobs(stack::authed(
            installation,
            pb::WatchJobsRequest { after_cursor: 0 },
        )?)
        .await
        .map_err(|status| anyhow::anyhow!("WatchJobs: {}", status.message()))?
        .into_inner();
    let mut jobs = BTreeMap::new();
    let followed = tokio::time::timeout(deadline, async {
        while let Some(change) = stream
            .message()
            .await
            .map_err(|status| anyhow::anyhow!("WatchJobs: {}", status.message()))?
        {
            let Some(job) = change.job else { continue };
            if job.rap_id != rap_id {
                continue;
            }
            jobs.insert(job.action.clone(), job);
            if until(&jobs) {
                return Ok(());
            }
        }
        bail!("the WatchJobs stream ended")
    })
    .await;
    match followed {
        Ok(Ok(())) => Ok(jobs),
        Ok(Err(error)) => Err(error).context(format!("following job request {rap_id}")),
        Err(_) => bail!("job request {rap_id} not done within {deadline:?}; its jobs: {jobs:#?}"),
    }
}

/// Follows until `n_jobs` jobs of `rap_id` are final.
///
/// # Errors
/// As [`follow`].
pub async fn run_to_completion(
    client: &mut RapClient,
    installation: &Installation,
    rap_id: &str,
    n_jobs: usize,
    deadline: Duration,
) -> anyhow::Result<BTreeMap<String, pb::Job>> {
    follow(client, installation, rap_id, deadline, |jobs| {
        jobs.len() == n_jobs && jobs.values().all(is_final)
    })
    .await
}
