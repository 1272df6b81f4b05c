//! `rap`: The whole RAP on one machine: rap up, rap run.
//!
//! Not built yet: this binary only describes itself. See the project's issues.

use clap::Parser;

/// The whole RAP on one machine: rap up, rap run.
#[derive(Parser)]
#[command(name = "rap", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("rap: not implemented yet; see --help");
}
