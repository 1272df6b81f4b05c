//! Generated code, in modules that mirror the protobuf packages.
//!
//! Lints that generated code cannot satisfy are allowed here, per package, and nowhere else:
//! prost lays out `oneof`s as plain enums, so a large message beside a small one trips
//! `large_enum_variant`; boxing would change the generated API every service uses. The
//! `.proto` comments become rustdoc as they are, so placeholders like `<image>` read as HTML.

/// `rap.v1`: the RAP API, the agent link and the admin service.
pub mod rap {
    #[allow(
        clippy::large_enum_variant,
        rustdoc::invalid_html_tags,
        rustdoc::bare_urls,
        rustdoc::broken_intra_doc_links
    )]
    pub mod v1 {
        tonic::include_proto!("rap.v1");
    }
}

/// `jobserver.v1`: the job server's release service for Airlock.
pub mod jobserver {
    #[allow(
        clippy::large_enum_variant,
        rustdoc::invalid_html_tags,
        rustdoc::bare_urls,
        rustdoc::broken_intra_doc_links
    )]
    pub mod v1 {
        tonic::include_proto!("jobserver.v1");
    }
}
