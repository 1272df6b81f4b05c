//! The RAP's gRPC contracts and the wire helpers every service shares.
//!
//! Layout:
//! - [`pb`]: the generated protobuf and tonic code, one module per protobuf package
//!   (`rap.v1`, `jobserver.v1`). The `.proto` files in `proto/` are the API boundary: a change
//!   there is a change of the wire contract between separately deployed services.
//! - [`tls`]: rustls/tonic TLS configurations from PEM files: mutual TLS for the agent link,
//!   server-only TLS for token-authenticated services, and the matching client configs.
//! - [`identity`]: the authenticated peer inside a handler: the [`BackendName`] an agent's
//!   client certificate names.
//! - [`config`]: service configuration files: TOML read into a service's own type after its
//!   environment variables have overridden keys, with one set of messages for mistakes.
//! - [`certs`]: minting the installation's private PKI (CA, server, agent and client
//!   certificates) with rcgen, for `rap-controller certs …` and for every crate's tests.
//! - [`trace_context`]: W3C `traceparent` propagation in gRPC metadata and in the trace-context
//!   maps stored on jobs, bridging `tracing` spans and OpenTelemetry contexts.
//! - [`telemetry`]: the process's `tracing` subscriber: logs to stderr and, when configured,
//!   spans to an OTLP collector.
//! - `testing` (feature `testing`, for other crates' tests): an OTLP collector on
//!   `127.0.0.1:0` that keeps the spans it is sent and lets a test await them.
//!
//! Invariants: no domain logic lives here (the only domain type is the validated
//! [`BackendName`], because identity needs it); this is the only crate with code generation;
//! TLS is rustls with ring only, and only our own CA is ever trusted.

pub mod certs;
pub mod config;
pub mod identity;
pub mod pb;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod trace_context;

pub use identity::BackendName;

/// The metadata key on `WatchJobs`' `OUT_OF_RANGE` status: the cursor to watch after once the
/// watcher has re-read its jobs with `GetJobStatus` (the change log no longer holds the
/// changes between its cursor and this one).
pub const WATCH_RESUME_AFTER_KEY: &str = "rap-resume-after";
