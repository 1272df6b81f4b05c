//! `rap-jobserver`: The job server: the researchers' web app.
//!
//! Not built yet: this binary only describes itself. See the project's issues.

use clap::Parser;

/// The job server: the researchers' web app.
#[derive(Parser)]
#[command(name = "rap-jobserver", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("rap-jobserver: not implemented yet; see --help");
}
