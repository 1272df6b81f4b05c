//! Generated code, in modules that mirror the protobuf packages.

/// `rap.v1`: the RAP API, the agent link and the admin service.
pub mod rap {
    pub mod v1 {
        tonic::include_proto!("rap.v1");
    }
}

/// `jobserver.v1`: the job server's release service for Airlock.
pub mod jobserver {
    pub mod v1 {
        tonic::include_proto!("jobserver.v1");
    }
}
