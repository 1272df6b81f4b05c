//! `rap-controller`: serve the controller, set up an installation, and talk to a running
//! controller as a client or operator. Thin over the library: parsing, files and printing.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rap-controller: {error:#}");
            ExitCode::FAILURE
        }
    }
}
