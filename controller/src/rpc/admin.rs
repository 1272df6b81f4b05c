//! `AdminService`: operator controls (spec §3.9), authenticated with the admin token.

use std::collections::BTreeMap;
use std::sync::Arc;

use rap_proto::pb::rap::v1 as pb;
use tonic::{Request, Response, Status};

use super::auth::Tokens;
use super::{convert, status_from_backend_error};
use crate::backend::BackendHandle;

/// The admin service.
#[derive(Clone)]
pub struct AdminService {
    pub backends: Arc<BTreeMap<String, BackendHandle>>,
    /// The admin token, mapped to every backend.
    pub tokens: Tokens,
}

impl AdminService {
    #[allow(clippy::result_large_err)] // returned straight from handlers
    fn backend<T>(&self, request: &Request<T>, name: &str) -> Result<BackendHandle, Status> {
        self.tokens.backends(request.metadata())?;
        self.backends
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("Backend '{name}' not found")))
    }
}

fn respond(details: String) -> Response<pb::AdminResponse> {
    Response::new(pb::AdminResponse { details })
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminService {
    async fn set_paused(
        &self,
        request: Request<pb::SetPausedRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let backend = self.backend(&request, &request.get_ref().backend)?;
        let details = backend
            .set_paused(request.get_ref().paused)
            .await
            .map_err(status_from_backend_error)?;
        Ok(respond(details))
    }

    async fn set_db_maintenance(
        &self,
        request: Request<pb::SetDbMaintenanceRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let backend = self.backend(&request, &request.get_ref().backend)?;
        let details = backend
            .set_db_maintenance(request.get_ref().on)
            .await
            .map_err(status_from_backend_error)?;
        Ok(respond(details))
    }

    async fn prepare_for_reboot(
        &self,
        request: Request<pb::PrepareForRebootRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        let backend = self.backend(&request, &request.get_ref().backend)?;
        let details = backend
            .prepare_for_reboot()
            .await
            .map_err(status_from_backend_error)?;
        Ok(respond(details))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let backend = self.backend(&request, &request.get_ref().backend)?;
        let tasks = backend
            .list_tasks(request.get_ref().include_inactive)
            .await
            .map_err(status_from_backend_error)?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.iter().map(convert::task_summary).collect(),
        }))
    }

    async fn kill_task(
        &self,
        request: Request<pb::KillTaskRequest>,
    ) -> Result<Response<pb::AdminResponse>, Status> {
        self.tokens.backends(request.metadata())?;
        let task_id = request.into_inner().task_id;
        // Task ids start with the job id, not the backend: ask each backend in turn.
        for backend in self.backends.values() {
            match backend.kill_task(&task_id).await {
                Ok(details) => return Ok(respond(details)),
                Err(crate::backend::BackendError::UnknownTask(_)) => continue,
                Err(error) => return Err(status_from_backend_error(error)),
            }
        }
        Err(Status::not_found(format!("Unknown task '{task_id}'")))
    }
}
