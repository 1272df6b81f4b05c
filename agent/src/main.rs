//! `rap-agent`: the RAP agent binary, a thin shell over [`rap_agent::run`] and
//! [`rap_agent::check`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The RAP agent: runs jobs in Docker inside the secure environment.
#[derive(Parser)]
#[command(name = "rap-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the controller and run jobs until SIGINT or SIGTERM.
    Serve {
        /// The TOML configuration (every key overridable by a RAP_AGENT_* variable).
        #[arg(long, env = "RAP_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Check Docker, the directories, the certificates and the database URL, then exit.
    Check {
        /// The TOML configuration.
        #[arg(long, env = "RAP_AGENT_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("rap-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Logs to stderr (`RUST_LOG`, default info); spans to an OTLP collector when
        // `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
        let telemetry = rap_proto::telemetry::init("rap-agent", endpoint.as_deref())
            .context("setting up logging and tracing")?;
        let outcome = command(cli).await;
        if let Err(error) = telemetry.shutdown().await {
            eprintln!("rap-agent: flushing traces: {error:#}");
        }
        outcome
    })
}

async fn command(cli: Cli) -> anyhow::Result<ExitCode> {
    {
        match cli.command {
            Command::Serve { config } => {
                let config = rap_agent::config::Config::load(&config)
                    .with_context(|| format!("loading {}", config.display()))?;
                rap_agent::run(config, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Check { config } => {
                let config = rap_agent::config::Config::load(&config)
                    .with_context(|| format!("loading {}", config.display()))?;
                let mut healthy = true;
                for result in rap_agent::check(&config).await {
                    match result.outcome {
                        Ok(detail) => println!("ok    {}: {detail}", result.what),
                        Err(problem) => {
                            healthy = false;
                            println!("FAIL  {}: {problem}", result.what);
                        }
                    }
                }
                Ok(if healthy {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
