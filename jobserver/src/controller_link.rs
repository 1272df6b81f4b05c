//! The link to the controller's `RapService`: a small cloneable handle over the generated tonic
//! client that adds the bearer token and turns proto answers into domain values.
//!
//! This is the only module (with `watch`, which uses it) that sees `rap.v1` types. The channel
//! connects lazily, so the job server starts and serves pages while the controller is down;
//! calls then fail fast as `Unreachable`, which A5 maps to `unknown_error_creating_jobs`.

use std::time::Duration;

use rap_proto::pb::rap::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument;

use crate::model::{Job, JobRequest, Metrics, Project, RapId, Workspace};
use crate::status::{CreateOutcome, JobStatus};

/// How long one unary call may take before we give up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed call to the controller.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("controller call failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("invalid controller token (not a valid header value)")]
    BadToken,
    #[error("invalid controller URL {url:?}: {source}")]
    BadUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("reading the controller CA certificate {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
    #[error("controller sent an invalid job: {0}")]
    BadJob(String),
}

/// One backend's flags as the controller reports them.
#[derive(Debug, Clone)]
pub struct BackendFlags {
    pub slug: String,
    pub last_seen: Option<i64>,
    pub paused: bool,
    pub db_maintenance: bool,
    pub db_maintenance_since: Option<i64>,
}

/// The handle. Clone it freely: tonic channels multiplex.
#[derive(Clone)]
pub struct ControllerLink {
    client: pb::rap_service_client::RapServiceClient<Channel>,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl ControllerLink {
    /// A link to `url` (`http://` or `https://`), authenticating with `token`; `ca_pem` is the
    /// CA to trust for `https` (the platform roots are not used: the controller's certificate
    /// is minted by the operator).
    ///
    /// # Errors
    /// A malformed URL, token or CA file.
    pub fn new(
        url: &str,
        token: &str,
        ca_pem: Option<&std::path::Path>,
    ) -> Result<Self, LinkError> {
        let bad_url = |source| LinkError::BadUrl {
            url: url.to_owned(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(bad_url)?
            .connect_timeout(Duration::from_secs(5));
        if let Some(path) = ca_pem {
            let pem = std::fs::read(path).map_err(|source| LinkError::Ca {
                path: path.display().to_string(),
                source,
            })?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(bad_url)?;
        }
        let channel = endpoint.connect_lazy();
        let authorization = format!("Bearer {token}")
            .parse()
            .map_err(|_| LinkError::BadToken)?;
        Ok(ControllerLink {
            client: pb::rap_service_client::RapServiceClient::new(channel),
            authorization,
        })
    }

    fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        // The current span's W3C trace context, so the controller's spans join our trace
        // (nothing is written when telemetry is off).
        rap_proto::trace_context::inject(request.metadata_mut());
        request
    }

    /// SubmitJob for a new job request, reduced to A5's outcomes (never an error: every
    /// failure is an outcome the request's status records).
    pub async fn submit(
        &self,
        job_request: &JobRequest,
        workspace: &Workspace,
        project: &Project,
    ) -> CreateOutcome {
        let scope = &project.analysis_scope;
        let message = pb::SubmitJobRequest {
            rap_id: job_request.rap_id.as_str().to_owned(),
            backend: job_request.backend.clone(),
            workspace: workspace.name.clone(),
            repo_url: workspace.repo_url.clone(),
            branch: workspace.branch.clone(),
            commit: job_request.sha.clone(),
            database_name: "default".to_owned(),
            requested_actions: job_request.requested_actions.clone(),
            codelists_ok: true,
            force_run_dependencies: job_request.force_run_dependencies,
            created_by: job_request.created_by.clone(),
            project: job_request.project.clone(),
            orgs: project.orgs.clone(),
            // Always sent, as the reference does; the controller applies it to database jobs.
            analysis_scope: Some(pb::AnalysisScope {
                dataset_permissions: scope.dataset_permissions.clone(),
                population_permissions: scope.population_permissions.clone(),
                component_access: scope.component_access.clone(),
            }),
        };
        // One trace per job request starts here (jobserver → controller → agent).
        let span = tracing::info_span!("submit_job", rap_id = %job_request.rap_id);
        let mut client = self.client.clone();
        let request = span.in_scope(|| self.request(message, Some(CALL_TIMEOUT)));
        match client.submit_job(request).instrument(span).await {
            Ok(response) => {
                let response = response.into_inner();
                if response.result() == pb::SubmitResult::Unspecified {
                    tracing::error!(rap_id = %job_request.rap_id, "controller sent no submit result");
                    return CreateOutcome::Unexpected;
                }
                CreateOutcome::Accepted {
                    count: response.count,
                    details: response.details,
                }
            }
            Err(status) => outcome_from_status(&status),
        }
    }

    /// CancelJob: the number of actions cancelled.
    ///
    /// # Errors
    /// Any failed call.
    pub async fn cancel(&self, rap_id: &RapId, actions: &[String]) -> Result<u32, LinkError> {
        let message = pb::CancelJobRequest {
            rap_id: rap_id.as_str().to_owned(),
            actions: actions.to_vec(),
        };
        let mut client = self.client.clone();
        let response = client
            .cancel_job(self.request(message, Some(CALL_TIMEOUT)))
            .await?;
        Ok(response.into_inner().count)
    }

    /// GetJobStatus: the jobs of these requests, and the rap ids the controller has never seen.
    ///
    /// # Errors
    /// Any failed call, or a job we cannot read.
    pub async fn job_status(
        &self,
        rap_ids: &[String],
    ) -> Result<(Vec<Job>, Vec<String>), LinkError> {
        let message = pb::GetJobStatusRequest {
            rap_ids: rap_ids.to_vec(),
        };
        let mut client = self.client.clone();
        let response = client
            .get_job_status(self.request(message, Some(CALL_TIMEOUT)))
            .await?
            .into_inner();
        let jobs = response
            .jobs
            .into_iter()
            .map(job_from_proto)
            .collect::<Result<_, _>>()?;
        Ok((jobs, response.unrecognised_rap_ids))
    }

    /// GetBackendStatus, bounded by `timeout` so a page never hangs on the controller.
    ///
    /// # Errors
    /// Any failed call.
    pub async fn backend_status(&self, timeout: Duration) -> Result<Vec<BackendFlags>, LinkError> {
        let mut client = self.client.clone();
        let response = client
            .get_backend_status(self.request(pb::GetBackendStatusRequest {}, Some(timeout)))
            .await?
            .into_inner();
        Ok(response
            .backends
            .into_iter()
            .map(|backend| BackendFlags {
                paused: backend.paused.as_ref().is_some_and(|f| f.status == "on"),
                db_maintenance: backend
                    .db_maintenance
                    .as_ref()
                    .is_some_and(|f| f.status == "on"),
                db_maintenance_since: backend.db_maintenance.as_ref().and_then(|f| f.since),
                last_seen: backend.last_seen,
                slug: backend.slug,
            })
            .collect())
    }

    /// WatchJobs from `after_cursor`: the open stream of changes.
    ///
    /// # Errors
    /// When the stream cannot be opened.
    pub async fn watch(
        &self,
        after_cursor: u64,
    ) -> Result<tonic::Streaming<pb::JobChange>, LinkError> {
        let mut client = self.client.clone();
        let response = client
            .watch_jobs(self.request(pb::WatchJobsRequest { after_cursor }, None))
            .await?;
        Ok(response.into_inner())
    }
}

/// A5 for gRPC: an answer with a reason is the reference's "4xx with JSON" (`failed` with the
/// details); no answer (unavailable, timeout, a broken connection) is a transport error
/// (`unknown_error_creating_jobs`, resolved later from the controller's unrecognised ids).
pub fn outcome_from_status(status: &tonic::Status) -> CreateOutcome {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            CreateOutcome::Unreachable
        }
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::Aborted
        | Code::Internal => CreateOutcome::Rejected {
            details: status.message().to_owned(),
        },
        _ => CreateOutcome::Unexpected,
    }
}

/// The reference's stored `status_code` string for a proto code.
pub fn status_code_name(code: pb::StatusCode) -> String {
    match code {
        // The reference's value for WAITING_PAUSED is "paused".
        pb::StatusCode::WaitingPaused => "paused".to_owned(),
        pb::StatusCode::Unspecified => String::new(),
        other => other
            .as_str_name()
            .trim_start_matches("STATUS_CODE_")
            .to_lowercase(),
    }
}

/// A controller job as our domain job.
///
/// # Errors
/// A job with an invalid rap id or no state.
pub fn job_from_proto(job: pb::Job) -> Result<Job, LinkError> {
    let rap_id = RapId::parse(&job.rap_id).map_err(|e| LinkError::BadJob(e.to_string()))?;
    let status = match job.status() {
        pb::State::Pending => JobStatus::Pending,
        pb::State::Running => JobStatus::Running,
        pb::State::Failed => JobStatus::Failed,
        pb::State::Succeeded => JobStatus::Succeeded,
        pb::State::Unspecified => {
            return Err(LinkError::BadJob(format!(
                "job {} has no state",
                job.identifier
            )));
        }
    };
    let mut trace_context: Vec<(String, String)> = job.trace_context.clone().into_iter().collect();
    trace_context.sort();
    Ok(Job {
        status_code: status_code_name(job.status_code()),
        identifier: job.identifier,
        rap_id,
        action: job.action,
        run_command: job.run_command,
        status,
        status_message: job.status_message,
        created_at: job.created_at,
        updated_at: job.updated_at,
        started_at: job.started_at,
        completed_at: job.completed_at,
        metrics: job.metrics.map(|m| Metrics {
            cpu_peak: m.cpu_peak,
            cpu_mean: m.cpu_mean,
            mem_mb_peak: m.mem_mb_peak,
            mem_mb_mean: m.mem_mb_mean,
        }),
        trace_context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_use_the_reference_names() {
        assert_eq!(status_code_name(pb::StatusCode::WaitingPaused), "paused");
        assert_eq!(
            status_code_name(pb::StatusCode::NonzeroExit),
            "nonzero_exit"
        );
        assert_eq!(
            status_code_name(pb::StatusCode::WaitingOnDependencies),
            "waiting_on_dependencies"
        );
    }

    #[test]
    fn grpc_errors_map_as_a5() {
        assert_eq!(
            outcome_from_status(&tonic::Status::unavailable("down")),
            CreateOutcome::Unreachable
        );
        assert_eq!(
            outcome_from_status(&tonic::Status::invalid_argument("bad branch")),
            CreateOutcome::Rejected {
                details: "bad branch".into()
            }
        );
    }
}
