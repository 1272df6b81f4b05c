//! Database errors get the reference's exit codes (spec §4.2, §6.5), provoked for real on
//! SQLite and PostgreSQL through the built binary: 3 for a transient failure (a database
//! locked by another connection, a connection terminated mid-query; a refused connection is
//! tested in `postgres.rs`), 4
//! for a TPP raw table that is missing (as during data imports), 6 for SQL over a database
//! limit, 5 for anything else. Needs `RAP_TEST_POSTGRES_URL` (see `postgres_support`).

mod postgres_support;
mod support;

use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};

use ehrql::backends::tpp::{self, SqlFlavour};
use postgres_support::TestDatabase;
use rusqlite::Connection;
use support::{ehrql, ehrql_command, stderr};

/// Asserts the exit code, that stderr says `advice`, and that no output file was written.
fn assert_fails(dir: &Path, out: &Output, code: i32, advice: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    assert!(stderr(out).contains(advice), "{}", stderr(out));
    assert!(!dir.join("out.csv").exists(), "output left behind");
}

const TRANSIENT: &str = "running the job again later is likely to succeed";
const UNAVAILABLE: &str = "most likely because new data is being imported";
const TOO_COMPLEX: &str = "too complex for the database";

/// Reads `patients` and `clinical_events`.
const EVENTS: &str = "from ehrql import create_dataset\n\
    from ehrql.tables.core import patients, clinical_events\n\
    dataset = create_dataset()\n\
    dataset.define_population(patients.exists_for_patient())\n\
    dataset.events = clinical_events.count_for_patient()\n";

/// 2,001 output columns: over SQLite's 2,000 and PostgreSQL's 1,664 result columns.
const WIDE: &str = "from ehrql import create_dataset\n\
    from ehrql.tables.core import patients\n\
    dataset = create_dataset()\n\
    dataset.define_population(patients.exists_for_patient())\n\
    for i in range(2001):\n    dataset.add_column(f\"v{i}\", patients.date_of_birth.year + i)\n";

/// One expression nested 1,100 deep: over SQLite's parser stack.
const DEEP: &str = "from ehrql import create_dataset\n\
    from ehrql.tables.core import patients\n\
    dataset = create_dataset()\n\
    dataset.define_population(patients.exists_for_patient())\n\
    v = patients.date_of_birth.year\n\
    for i in range(1100):\n    v = v + 1\n\
    dataset.v = v\n";

const CORE_TABLES: &str = "CREATE TABLE patients (patient_id BIGINT, date_of_birth DATE, sex TEXT, date_of_death DATE);
    CREATE TABLE clinical_events (patient_id BIGINT, date DATE, snomedct_code TEXT, numeric_value DOUBLE PRECISION);
    INSERT INTO patients VALUES (1, '1980-01-01', 'male', NULL);
    INSERT INTO clinical_events VALUES (1, '2020-01-01', '123456', NULL);";

/// A study directory with the three definitions and a SQLite database of core tables.
fn study() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in [("events.py", EVENTS), ("wide.py", WIDE), ("deep.py", DEEP)] {
        fs::write(dir.path().join(name), source).unwrap();
    }
    Connection::open(dir.path().join("core.db"))
        .unwrap()
        .execute_batch(CORE_TABLES)
        .unwrap();
    dir
}

fn generate(dir: &Path, definition: &str, dsn: &str, backend: &str) -> Output {
    ehrql(
        dir,
        &[
            "generate-dataset",
            definition,
            "--dsn",
            dsn,
            "--backend",
            backend,
            "--output",
            "out.csv",
        ],
    )
}

#[test]
fn sqlite_errors_get_their_exit_codes() {
    let dir = study();
    let root = dir.path();
    let ok = generate(root, "events.py", "sqlite:///core.db", "test");
    assert!(ok.status.success(), "{}", stderr(&ok));
    fs::remove_file(root.join("out.csv")).unwrap();

    for definition in ["wide.py", "deep.py"] {
        let out = generate(root, definition, "sqlite:///core.db", "test");
        assert_fails(root, &out, 6, TOO_COMPLEX);
    }

    // A TPP database missing the SNOMED events table: unavailable, as during an import.
    let tpp_db = Connection::open(root.join("tpp.db")).unwrap();
    tpp_db
        .execute_batch(&tpp::create_raw_tables_sql(SqlFlavour::Sqlite).join(";"))
        .unwrap();
    tpp_db
        .execute_batch("DROP TABLE \"CodedEvent_SNOMED\"")
        .unwrap();
    let out = generate(root, "events.py", "sqlite:///tpp.db", "tpp");
    assert_fails(root, &out, 4, UNAVAILABLE);
    assert!(
        stderr(&out).contains("'CodedEvent_SNOMED'"),
        "{}",
        stderr(&out)
    );
    // A missing ehrQL table on the default backend is a plain database error.
    let out = generate(root, "events.py", "sqlite:///tpp.db", "test");
    assert_fails(root, &out, 5, "contact tech support");

    // Another connection holds an exclusive lock: the run gives up after SQLite's busy
    // timeout (5 s) with a transient error.
    let locker = Connection::open(root.join("core.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = generate(root, "events.py", "sqlite:///core.db", "test");
    assert_fails(root, &out, 3, TRANSIENT);
    locker.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn postgres_errors_get_their_exit_codes() {
    let dir = study();
    let root = dir.path();
    let database = TestDatabase::create();
    database.connect().execute(CORE_TABLES).unwrap();

    let out = generate(root, "wide.py", &database.url, "test");
    assert_fails(root, &out, 6, TOO_COMPLEX);
    assert!(
        stderr(&out).contains("at most 1664 entries"),
        "{}",
        stderr(&out)
    );

    // The raw TPP tables but the SNOMED events table (their names differ from ehrQL's).
    database
        .connect()
        .execute(&format!(
            "{}; DROP TABLE \"CodedEvent_SNOMED\"",
            tpp::create_raw_tables_sql(SqlFlavour::Postgres).join(";")
        ))
        .unwrap();
    let out = generate(root, "events.py", &database.url, "tpp");
    assert_fails(root, &out, 4, UNAVAILABLE);
    assert!(
        stderr(&out).contains("'CodedEvent_SNOMED'"),
        "{}",
        stderr(&out)
    );

    // A connection terminated while its query runs: the query waits for a lock another
    // session holds, and a third session terminates it as soon as it is seen waiting.
    let locker = database.connect();
    locker
        .execute("BEGIN; LOCK TABLE clinical_events IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let child = ehrql_command(
        root,
        &[
            "generate-dataset",
            "events.py",
            "--dsn",
            &database.url,
            "--output",
            "out.csv",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // pg_stat_activity is read once per transaction unless the snapshot is cleared.
    database
        .connect()
        .execute(
            "DO $$ BEGIN
               FOR attempt IN 1..3000 LOOP
                 PERFORM pg_stat_clear_snapshot();
                 IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                            AND wait_event_type = 'Lock') THEN
                   PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock';
                   RETURN;
                 END IF;
                 PERFORM pg_sleep(0.01);
               END LOOP;
               RAISE EXCEPTION 'ehrql never waited for the lock';
             END $$",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_fails(root, &out, 3, TRANSIENT);
    assert!(
        stderr(&out).contains("administrator command"),
        "{}",
        stderr(&out)
    );
    drop(locker);
}
