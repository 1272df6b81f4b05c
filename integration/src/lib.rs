//! The whole RAP on one machine: the harness that starts the real binaries, shared by `rap up`
//! and the end-to-end tests, so what the tests exercise is what an integrator runs.
//!
//! Layout:
//! - [`service`]: one child process with its log file, readiness read from its output
//!   (`listening on <addr>`), a clean stop (SIGTERM, then SIGKILL) and a kill on drop.
//! - [`stack`]: an installation (`rap-controller init`), starting the controller, an agent, the
//!   job server and Airlock with the right configuration, and a RAP API client.
//! - [`requests`]: submitting a job request and following its jobs on `WatchJobs`.
//! - [`study`]: the sample study turned into a git repository.
//! - [`local_run`]: `rap run`, a project's actions run locally through the agent's executor.
//!
//! Invariant: the harness links no service crate; it drives the binaries and speaks only the
//! public contracts (`rap-proto`, command lines, configuration files), as an integrator would.
//! The one exception is [`local_run`], which links the `rap-agent` library so that a local run
//! has exactly the agent's container lock-down, output checks and log format.
//!
//! The binaries are found by `rap_testkit::binaries` (`RAP_BIN_DIR`, beside the running
//! executable, or `PATH`), the lookup every crate's tests share.

pub mod local_run;
pub mod requests;
pub mod service;
pub mod stack;
pub mod study;
