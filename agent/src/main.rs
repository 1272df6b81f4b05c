//! `rap-agent`: The RAP agent: runs jobs in Docker inside the secure environment.
//!
//! Not built yet: this binary only describes itself. See the project's issues.

use clap::Parser;

/// The RAP agent: runs jobs in Docker inside the secure environment.
#[derive(Parser)]
#[command(name = "rap-agent", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("rap-agent: not implemented yet; see --help");
}
