//! The RAP controller: turns job requests into jobs, schedules them per backend, and hands them
//! as tasks to agents over a gRPC stream (spec: rap-controller-and-agent §1–§3).
//!
//! Layout:
//! - [`jobs`]: the job model, status codes, request validation and job creation (pure);
//! - [`tasks`]: tasks for agents and their reports;
//! - [`git`]: reading `project.yaml` and checking commits through the `git` command;
//! - [`store`]: sled persistence with versioned records and the change log;
//!
//! Invariants: only `rpc/` sees protobuf types; only `store` sees sled; the job model does no IO.

pub mod backend;
pub mod config;
pub mod git;
pub mod jobs;
pub mod requests;
pub mod reusable;
pub mod rpc;
pub mod server;
pub mod store;
pub mod tasks;
pub mod watch;
