//! The RAP's gRPC contracts and the wire helpers every service shares.
//!
//! Layout:
//! - [`pb`]: the generated protobuf and tonic code, one module per protobuf package
//!   (`rap.v1`, `jobserver.v1`). The `.proto` files in `proto/` are the API boundary: a change
//!   there is a change of the wire contract between separately deployed services.
//!
//! Invariant: no domain logic lives here; this is the only crate with code generation.

pub mod pb;
