//! `rap-pipeline check [PATH]`: validates a `project.yaml` and prints `OK` and the action graph,
//! or the error. Exit code 0 when valid, 1 when not (or unreadable), 2 for bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rap-pipeline", about = "Check an OpenSAFELY project.yaml")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a project.yaml and print its actions in dependency order.
    Check {
        /// The file to check.
        #[arg(default_value = "project.yaml")]
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { path } => match check(&path) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// Prints the report; `Ok(false)` when the file is invalid.
fn check(path: &std::path::Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let filename = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    match rap_pipeline::load_pipeline_named(&text, &filename) {
        Ok(pipeline) => {
            for warning in pipeline.warnings() {
                eprintln!("{}", warning.trim_start_matches("ProjectWarning: "));
            }
            println!("OK");
            for action in pipeline.topological_order() {
                if action.needs().is_empty() {
                    println!("{}", action.name());
                } else {
                    println!("{} <- {}", action.name(), action.needs().join(", "));
                }
            }
            Ok(true)
        }
        Err(error) => {
            println!("{}", error.message());
            if let Some(location) = error.location()
                && error.kind() == rap_pipeline::ErrorKind::Schema
            {
                println!("  at {location}");
            }
            Ok(false)
        }
    }
}
