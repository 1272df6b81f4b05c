//! gRPC services the job server offers: [`release::ReleaseApi`], Airlock's `ReleaseService`.

pub mod release;
