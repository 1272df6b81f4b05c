//! Compiles `proto/**/*.proto` with protox (pure Rust: no `protoc` on any machine) and generates
//! the tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/rap/v1/jobs.proto",
        "proto/rap/v1/rap.proto",
        "proto/rap/v1/agent.proto",
        "proto/rap/v1/admin.proto",
        "proto/jobserver/v1/release.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
