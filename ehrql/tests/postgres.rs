//! The PostgreSQL engine end to end, through the built `ehrql` binary: the same CSV bytes as
//! SQLite for the benchmark definitions over generated data, and a clear database error (exit
//! code 3, transient) when the server cannot be reached; the library engine agrees with the in-memory
//! engine row for row, and a run that failed half-way leaves nothing that breaks the next run. Needs `RAP_TEST_POSTGRES_URL` (see
//! `postgres_support`); each run works in a fresh database.

mod postgres_support;
mod support;

use std::fs;

use ehrql::engines::memory::MemoryEngine;
use ehrql::engines::{ColumnSpec, Engine, EngineError, RowSink, SinkError, sqlite};
use ehrql::frontend::json::load_dataset;
use ehrql::query_model::Value;
use postgres_support::TestDatabase;
use support::{ehrql, stderr};

#[test]
fn generate_dataset_on_postgres_writes_the_same_csv_as_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    support::generate_database(&dir.path().join("gen.db"), 400, 7).unwrap();
    let database = TestDatabase::with_sqlite_tables(&dir.path().join("gen.db"));
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
fn an_unreachable_server_is_a_transient_database_error() {
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
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
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

/// Collects rows, or fails on the first one.
struct Rows {
    rows: Vec<Vec<Value>>,
    fail: bool,
}

impl RowSink for Rows {
    fn begin_table(&mut self, _name: &str, _columns: &[ColumnSpec]) -> Result<(), SinkError> {
        Ok(())
    }
    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        if self.fail {
            return Err("disk full".into());
        }
        self.rows.push(row.to_vec());
        Ok(())
    }
}

#[test]
fn a_failed_run_leaves_the_connection_usable_and_results_match_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    support::generate_database(&dir.path().join("gen.db"), 150, 3).unwrap();
    let data = sqlite::read_database(&dir.path().join("gen.db")).unwrap();
    let dataset = load_dataset(&support::typical_definition(), dir.path()).unwrap();
    let database = TestDatabase::create();
    let mut engine = database.connect();
    engine.load_database(&data).unwrap();

    // The sink fails on the first row: the error is the sink's, and the temporary tables of
    // the half-finished run stay behind in the session.
    let mut failing = Rows {
        rows: vec![],
        fail: true,
    };
    let err = engine.run(&dataset, &mut failing).unwrap_err();
    assert!(matches!(err, EngineError::Sink(_)), "{err}");

    // The same connection runs the dataset again (same temporary table names).
    let mut postgres = Rows {
        rows: vec![],
        fail: false,
    };
    engine.run(&dataset, &mut postgres).unwrap();
    let mut memory = Rows {
        rows: vec![],
        fail: false,
    };
    MemoryEngine::new(data).run(&dataset, &mut memory).unwrap();
    assert!(
        postgres.rows.len() > 50,
        "only {} rows",
        postgres.rows.len()
    );
    assert_eq!(postgres.rows, memory.rows);
}

#[test]
fn integer_overflow_is_null_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    support::generate_database(&dir.path().join("gen.db"), 60, 11).unwrap();
    let database = TestDatabase::with_sqlite_tables(&dir.path().join("gen.db"));
    // Birth years are around 1900–2020: every product and sum below leaves 64 bits, while
    // the small ones stay exact.
    fs::write(
        dir.path().join("overflow.py"),
        "from ehrql import create_dataset\n\
         from ehrql.tables.core import patients\n\
         dataset = create_dataset()\n\
         dataset.define_population(patients.exists_for_patient())\n\
         year = patients.date_of_birth.year\n\
         dataset.product = year * 9223372036854775\n\
         dataset.total = year + 9223372036854775000\n\
         dataset.difference = (0 - year) - 9223372036854775000\n\
         dataset.small = year * 2 + 1 - year\n",
    )
    .unwrap();
    let mut outputs = Vec::new();
    for (engine, flags) in database.every_engine() {
        let output = format!("overflow-{engine}.csv");
        let mut args = vec!["generate-dataset", "overflow.py", "--output", &output];
        args.extend(flags);
        let out = ehrql(dir.path(), &args);
        assert!(out.status.success(), "{engine}: {}", stderr(&out));
        outputs.push(fs::read_to_string(dir.path().join(output)).unwrap());
    }
    let mut lines = outputs[0].lines();
    assert_eq!(
        lines.next(),
        Some("patient_id,product,total,difference,small")
    );
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() > 40, "only {} rows", rows.len());
    for row in &rows {
        let fields: Vec<&str> = row.split(',').collect();
        if !fields[4].is_empty() {
            assert_eq!(&fields[1..4], ["", "", ""], "overflow not NULL: {row}");
        }
    }
    assert!(
        rows.iter().any(|row| !row.ends_with(',')),
        "no birth years at all"
    );
    assert_eq!(outputs[0], outputs[1], "in-memory and SQLite disagree");
    assert_eq!(outputs[0], outputs[2], "in-memory and PostgreSQL disagree");
}
