//! `rap-airlock`: Airlock: output review and release.
//!
//! Not built yet: this binary only describes itself. See the project's issues.

use clap::Parser;

/// Airlock: output review and release.
#[derive(Parser)]
#[command(name = "rap-airlock", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("rap-airlock: not implemented yet; see --help");
}
