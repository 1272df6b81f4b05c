//! Airlock: the output checkers' web app inside a backend (spec: jobserver-and-airlock, part B).
//!
//! Researchers pick moderately sensitive outputs from the medium-privacy tree the agent
//! writes, group them into a release request with context and disclosure controls, and
//! submit it; two independent output checkers vote on every output file and submit their
//! reviews; a checker then releases the files, which Airlock uploads to the job server.
//!
//! Layout:
//! - [`request`]: the domain: [`request::status`] (the state machine), [`request::workflow`]
//!   (every operation, pure), [`request::review`] (file decisions), [`request::comments`]
//!   (visibility and blinding).
//! - [`user`]: the signed-in user and the permission predicates.
//! - [`workspace`]: the read-only medium-privacy tree and its manifest; path safety.
//! - [`audit`]: audit event types and texts.
//! - [`store`]: sled storage (versioned records), sessions, content-addressed file copies.
//! - [`jobserver`]: the gRPC link to the job server's ReleaseService (the only module that
//!   sees protobuf types, besides the session's cached user).
//! - [`upload`]: releasing a request and the uploader loop.
//! - [`checks`]: disclosure-check flags for CSV outputs; [`csv`]: the streaming CSV pager.
//! - [`web`]: the axum app and its pages; [`server`]: [`server::run`]; [`config`]: TOML and
//!   environment configuration.
//!
//! Invariants: only [`workspace`] opens files under the medium-privacy tree, and it refuses
//! any path that could leave a workspace (absolute, `..`, symlinks); request operations are
//! pure functions that check every guard before they change anything, so a refused action
//! changes nothing.

pub mod audit;
pub mod checks;
pub mod config;
pub mod csv;
pub mod jobserver;
pub mod request;
pub mod server;
pub mod store;
pub mod upload;
pub mod user;
pub mod web;
pub mod workspace;
