//! The gRPC edge: the only place that sees protobuf types. Each service is a thin struct over
//! the domain ([`crate::requests::Controller`] and the backend handles): it authenticates,
//! converts, calls the domain and maps its errors through one function.
//!
//! Layout: [`auth`] (bearer tokens), [`convert`] (domain ↔ protobuf), [`rap`] (`RapService`),
//! [`agent`] (`AgentService`, mutual TLS), [`admin`] (`AdminService`).

pub mod admin;
pub mod agent;
pub mod auth;
pub mod convert;
pub mod rap;

use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::backend::BackendError;
use crate::requests::RapError;

/// The metadata key carrying the reference's short error class.
pub const RAP_ERROR_KEY: &str = "rap-error";

/// A status whose message is the reference's details and whose `rap-error` metadata is its
/// error class.
pub fn status_with_class(code: tonic::Code, class: &str, details: String) -> Status {
    let mut status = Status::new(code, details);
    if let Ok(value) = MetadataValue::try_from(class) {
        status.metadata_mut().insert(RAP_ERROR_KEY, value);
    }
    status
}

/// The one mapping from RAP API errors to gRPC statuses.
pub fn status_from_rap_error(error: RapError) -> Status {
    let class = error.error_class();
    let code = match &error {
        RapError::Validation(_)
        | RapError::UnknownBackend
        | RapError::CreateJobs(_)
        | RapError::Inconsistent(_) => tonic::Code::InvalidArgument,
        RapError::JobsNotFound { .. } => tonic::Code::NotFound,
        RapError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            tonic::Code::Internal
        }
    };
    let mut status = status_with_class(code, class, error.to_string());
    if let RapError::JobsNotFound { not_found, .. } = &error
        && let Ok(value) = MetadataValue::try_from(not_found.join(","))
    {
        status.metadata_mut().insert("rap-not-found", value);
    }
    status
}

/// The mapping for operator and agent calls.
pub fn status_from_backend_error(error: BackendError) -> Status {
    match error {
        BackendError::UnknownTask(_) => Status::not_found(error.to_string()),
        BackendError::Stopped => Status::unavailable(error.to_string()),
        BackendError::Storage(detail) => {
            tracing::error!(%detail, "storage error");
            Status::internal("Unknown error")
        }
        other => status_from_rap_error(other.into()),
    }
}
