//! The RAP agent: runs jobs in Docker inside the secure environment.
pub mod clock;
pub mod executor;
pub mod job;
pub mod layout;
pub mod metadata;
pub mod metrics;
pub mod outbox;
pub mod outputs;
pub mod recovery;
pub mod task;
pub mod workspace;
