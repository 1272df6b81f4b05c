//! The PostgreSQL engine end to end, through the built `ehrql` binary: the same CSV bytes as
//! SQLite for the benchmark definitions over generated data, and a clear database error (exit
//! code 5) when the server cannot be reached. Needs `RAP_TEST_POSTGRES_URL` (see
//! `postgres_support`); each run works in a fresh database.

mod postgres_support;
mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use ehrql::engines::sqlite;
use postgres_support::TestDatabase;

fn ehrql(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ehrql"))
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("OPENSAFELY_QUERY_ENGINE")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generate_dataset_on_postgres_writes_the_same_csv_as_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    support::generate_database(&dir.path().join("gen.db"), 400, 7).unwrap();
    let database = TestDatabase::create();
    database
        .connect()
        .load_database(&sqlite::read_database(&dir.path().join("gen.db")).unwrap())
        .unwrap();
    for (name, def) in [
        ("typical", support::typical_definition()),
        ("heavy", support::heavy_definition()),
    ] {
        fs::write(dir.path().join(format!("{name}.json")), def).unwrap();
        let mut outputs = Vec::new();
        for (engine, dsn) in [("sqlite", "sqlite:///gen.db"), ("postgres", &database.url)] {
            let output = format!("{name}-{engine}.csv");
            let out = ehrql(
                dir.path(),
                &[
                    "generate-dataset",
                    &format!("{name}.json"),
                    "--dsn",
                    dsn,
                    "--output",
                    &output,
                ],
            );
            assert!(out.status.success(), "{name} {engine}: {}", stderr(&out));
            outputs.push(fs::read_to_string(dir.path().join(output)).unwrap());
        }
        let rows = outputs[0].lines().count();
        assert!(rows > 200, "{name}: only {rows} rows");
        assert_eq!(
            outputs[0], outputs[1],
            "{name}: SQLite and PostgreSQL disagree"
        );
    }
}

#[test]
fn an_unreachable_server_is_a_database_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("def.json"), support::simple_definition()).unwrap();
    // Port 1 on loopback refuses connections at once.
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.json",
            "--dsn",
            "postgresql://postgres:postgres@127.0.0.1:1/postgres",
            "--output",
            "out.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("postgres error"), "{}", stderr(&out));
    assert!(!dir.path().join("out.csv").exists());
}

#[test]
fn query_engine_flag_is_refused_for_a_postgres_dsn() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("def.json"), support::simple_definition()).unwrap();
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.json",
            "--dsn",
            "postgresql://postgres:postgres@127.0.0.1:1/postgres",
            "--query-engine",
            "sqlite",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--query-engine"), "{}", stderr(&out));
}
