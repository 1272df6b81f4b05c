//! The `ehrql` binary: logging set-up, then [`ehrql::cli::main`].

use std::process::ExitCode;

fn main() -> ExitCode {
    // Logs go to stderr (the reference does the same; stdout may carry CSV).
    let filter = tracing_subscriber::EnvFilter::try_from_env("EHRQL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    ehrql::cli::main()
}
