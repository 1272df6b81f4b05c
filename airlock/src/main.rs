//! `rap-airlock`: the output checkers' web app. Thin over the library: parse the command
//! line, read the configuration, bind, print `listening on <addr>`, and run until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Airlock: review and release of moderately sensitive outputs.
#[derive(Parser)]
#[command(name = "rap-airlock", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web app and run the release uploader.
    Serve {
        /// The TOML configuration file (every key overridable by AIRLOCK_<KEY>).
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
        /// Listen address, overriding the configuration's `listen`.
        #[arg(long)]
        listen: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rap-airlock: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rap-airlock: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve { config, listen } = cli.command;
    let mut config = rap_airlock::config::Config::load(&config, |name| std::env::var(name).ok())
        .with_context(|| format!("loading {}", config.display()))?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("listening on {addr}");
    // SIGINT (Ctrl-C) or SIGTERM (systemd, `rap up`) stops the server gracefully.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    rap_airlock::server::run(config, listener, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    })
    .await?;
    Ok(())
}
