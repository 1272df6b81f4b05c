//! `rap-controller`: The RAP controller: job creation, scheduling and the agent link.
//!
//! Not built yet: this binary only describes itself. See the project's issues.

use clap::Parser;

/// The RAP controller: job creation, scheduling and the agent link.
#[derive(Parser)]
#[command(name = "rap-controller", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("rap-controller: not implemented yet; see --help");
}
