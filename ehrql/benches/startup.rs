//! Start-up benchmark: how long `ehrql generate-dataset` takes when there is (almost) nothing to
//! compute, i.e. the fixed cost every database action pays (process start, reading and
//! validating the definition, connecting, compiling, writing the output). Target: under 50 ms.
//!
//! Usage: `cargo bench -p ehrql --bench startup [-- --runs N]`. Prints, per case, the minimum
//! and median wall time over N runs (default 20) of the built binary as a child process.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ehrql::backends::tpp::{self, SqlFlavour};

fn main() {
    let mut runs = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N");
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let study = dir.path();
    for sub in ["analysis", "codelists"] {
        fs::create_dir_all(study.join(sub)).expect("mkdir");
        for entry in
            fs::read_dir(manifest.join("tests/fixtures/language").join(sub)).expect("fixtures")
        {
            let entry = entry.expect("fixture");
            fs::copy(entry.path(), study.join(sub).join(entry.file_name())).expect("copy");
        }
    }
    fs::copy(
        manifest.join("../integration/sample-study/analysis/dataset_definition.json"),
        study.join("analysis/sample.json"),
    )
    .expect("sample definition");
    // Empty databases: the core tables, and the raw TPP tables.
    let core = rusqlite::Connection::open(study.join("core.db")).expect("core.db");
    ehrql::engines::sqlite::load_database(&mut { core }, &empty_core_database()).expect("load");
    let raw = rusqlite::Connection::open(study.join("tpp.db")).expect("tpp.db");
    raw.execute_batch(&tpp::create_raw_tables_sql(SqlFlavour::Sqlite).join(";"))
        .expect("raw tables");

    let cases: [(&str, Vec<&str>); 5] = [
        ("ehrql --version", vec!["--version"]),
        (
            "sample JSON, empty SQLite",
            vec![
                "generate-dataset",
                "analysis/sample.json",
                "--dsn",
                "sqlite:///core.db",
                "--output",
                "out.csv",
            ],
        ),
        (
            "full_study.py, empty SQLite",
            vec![
                "generate-dataset",
                "analysis/full_study.py",
                "--dsn",
                "sqlite:///core.db",
                "--output",
                "out.csv",
            ],
        ),
        (
            "full_study.py, empty TPP SQLite (--backend tpp)",
            vec![
                "generate-dataset",
                "analysis/full_study.py",
                "--dsn",
                "sqlite:///tpp.db",
                "--backend",
                "tpp",
                "--output",
                "out.csv",
            ],
        ),
        (
            "full_study.py, dummy data (50 patients)",
            vec![
                "generate-dataset",
                "analysis/full_study.py",
                "--output",
                "out.csv",
            ],
        ),
    ];
    println!("{:<50} {:>10} {:>10}", "case", "min ms", "median ms");
    for (name, args) in cases {
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let started = Instant::now();
                let status = Command::new(env!("CARGO_BIN_EXE_ehrql"))
                    .current_dir(study)
                    .args(&args)
                    .env_remove("DATABASE_URL")
                    .env_remove("OPENSAFELY_BACKEND")
                    .stdout(Stdio::null())
                    .status()
                    .expect("run ehrql");
                assert!(status.success(), "{name} failed");
                started.elapsed()
            })
            .collect();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<50} {:>10.1} {:>10.1}",
            ms(times[0]),
            ms(times[times.len() / 2])
        );
    }
}

/// Every core table, with no rows.
fn empty_core_database() -> ehrql::engines::Database {
    let mut database = ehrql::engines::Database::new();
    for schema in ehrql::tables::all_tables() {
        if schema.module == "ehrql.tables.core" {
            database
                .insert_table(schema, Vec::new())
                .expect("empty table");
        }
    }
    database
}
