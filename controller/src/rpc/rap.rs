//! `RapService`: what job servers call (spec §2), over TLS with bearer tokens.

use std::pin::Pin;

use futures_util::Stream;
use rap_proto::pb::rap::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::Tokens;
use super::{convert, status_from_rap_error};
use crate::backend::SubmitOutcome;
use crate::requests::Controller;
use crate::watch::WatchError;

/// The RAP API service.
#[derive(Clone)]
pub struct RapService {
    pub controller: Controller,
    pub tokens: Tokens,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::JobChange, Status>> + Send>>;

#[tonic::async_trait]
impl pb::rap_service_server::RapService for RapService {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let backends = self.tokens.backends(request.metadata())?;
        // The job request's root span, continuing the caller's trace: its context is stored on
        // the request's jobs, whose state spans are its children (see `backend::spans`).
        let span = tracing::info_span!(
            "JOB_REQUEST",
            job.request = %request.get_ref().rap_id,
            rap.backend = %request.get_ref().backend,
            rap.workspace = %request.get_ref().workspace,
        );
        let _ = rap_proto::trace_context::set_parent_from_metadata(&span, request.metadata());
        let traceparent = span
            .in_scope(rap_proto::trace_context::current_map)
            .remove("traceparent")
            .or_else(|| {
                request
                    .metadata()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
        let fields = convert::submit_fields(request.into_inner(), traceparent);
        let rap_id = fields.rap_id.clone();
        let outcome = self
            .controller
            .submit(&backends, fields)
            .instrument(span)
            .await
            .map_err(status_from_rap_error)?;
        let (result, details, count) = match outcome {
            SubmitOutcome::Created(n) => (
                pb::SubmitResult::Success,
                format!("Jobs created for rap_id '{rap_id}'"),
                n,
            ),
            SubmitOutcome::NoChange(n) => (
                pb::SubmitResult::NoChange,
                format!("Jobs already created for rap_id '{rap_id}'"),
                n,
            ),
            SubmitOutcome::NothingToDo(details) => {
                (pb::SubmitResult::NothingToDo, details.to_string(), 0)
            }
        };
        Ok(Response::new(pb::SubmitJobResponse {
            result: result as i32,
            details,
            rap_id,
            count,
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let backends = self.tokens.backends(request.metadata())?;
        let request = request.into_inner();
        let outcome = self
            .controller
            .cancel(&backends, &request.rap_id, request.actions)
            .await
            .map_err(status_from_rap_error)?;
        Ok(Response::new(pb::CancelJobResponse {
            details: format!("{} actions cancelled", outcome.count),
            count: outcome.count,
        }))
    }

    async fn get_job_status(
        &self,
        request: Request<pb::GetJobStatusRequest>,
    ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
        let backends = self.tokens.backends(request.metadata())?;
        let (jobs, unrecognised) = self
            .controller
            .status(&backends, &request.into_inner().rap_ids)
            .map_err(status_from_rap_error)?;
        Ok(Response::new(pb::GetJobStatusResponse {
            jobs: jobs.iter().map(convert::job).collect(),
            unrecognised_rap_ids: unrecognised,
        }))
    }

    type WatchJobsStream = WatchStream;

    async fn watch_jobs(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        let backends = self.tokens.backends(request.metadata())?;
        let mut rx = self
            .controller
            .watch(&backends, request.into_inner().after_cursor);
        let stream = async_stream(move |tx| async move {
            while let Some(item) = rx.recv().await {
                let message = item
                    .map(|change| pb::JobChange {
                        cursor: change.cursor,
                        job: Some(convert::job(&change.job)),
                    })
                    .map_err(|error| match error {
                        WatchError::FellBehind { .. } => {
                            Status::resource_exhausted(error.to_string())
                        }
                        WatchError::Compacted {
                            compacted_through, ..
                        } => {
                            let mut status = Status::out_of_range(error.to_string());
                            status.metadata_mut().insert(
                                rap_proto::WATCH_RESUME_AFTER_KEY,
                                compacted_through.into(),
                            );
                            status
                        }
                        WatchError::Store(_) => {
                            tracing::error!(%error, "watch stream failed");
                            Status::internal("Unknown error")
                        }
                    });
                let end = message.is_err();
                if tx.send(message).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn get_backend_status(
        &self,
        request: Request<pb::GetBackendStatusRequest>,
    ) -> Result<Response<pb::GetBackendStatusResponse>, Status> {
        let backends = self.tokens.backends(request.metadata())?;
        let statuses = self
            .controller
            .backend_status(&backends)
            .map_err(status_from_rap_error)?;
        Ok(Response::new(pb::GetBackendStatusResponse {
            backends: statuses.iter().map(convert::backend_status).collect(),
        }))
    }
}

/// A response stream fed by a task through a bounded channel; the task ends when the client
/// goes (a send fails).
pub(crate) fn async_stream<T, F, Fut>(
    produce: F,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
