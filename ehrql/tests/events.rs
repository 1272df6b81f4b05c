//! Event tables (`dataset.add_event_table`) end to end through the built `ehrql` binary: the
//! in-memory, SQLite and PostgreSQL engines write the same `dataset` and event-table files to
//! a `DIR/:csv` output; the console prints each table under its name; a single-file output is
//! refused with the reference's advice; dummy data and `--dummy-tables` produce event rows.
//! Needs `RAP_TEST_POSTGRES_URL` (see `postgres_support`).

mod postgres_support;
mod support;

use std::fs;
use std::path::Path;

use postgres_support::TestDatabase;
use support::{ehrql, ehrql_with_env, stderr};

/// Asthma events in the year before the index date (with the patient's age then, their sex
/// and whether the value is high), and every medication of a codelist: two event tables.
const DEFINITION: &str = r#"
from ehrql import create_dataset, claim_permissions, years
from ehrql.tables.core import patients, practice_registrations, clinical_events, medications

claim_permissions("event_level_data")
index_date = "2023-01-01"
asthma_codes = [str(100000 + i * 7) for i in range(20)]
inhaler_codes = [str(300000000 + i * 3) for i in range(10)]

dataset = create_dataset()
dataset.define_population(
    practice_registrations.exists_for_patient_on(index_date) & patients.is_alive_on(index_date)
)
dataset.age = patients.age_on(index_date)

asthma = clinical_events.where(
    clinical_events.snomedct_code.is_in(asthma_codes)
).where(clinical_events.date.is_on_or_between(index_date - years(1), index_date))
dataset.add_event_table(
    "asthma_events",
    date=asthma.date,
    code=asthma.snomedct_code,
    value=asthma.numeric_value,
    high=asthma.numeric_value > 25,
    age=patients.age_on(asthma.date),
    sex=patients.sex,
)
inhalers = medications.where(medications.dmd_code.is_in(inhaler_codes))
dataset.add_event_table("inhalers", date=inhalers.date, dmd_code=inhalers.dmd_code)
"#;

/// A CSV file's header and its rows sorted (event rows of one patient come in no particular
/// order from SQL, as in the reference).
fn sorted_csv(path: &Path) -> (String, Vec<String>) {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.split("\r\n").map(str::to_string);
    let header = lines.next().unwrap();
    let mut rows: Vec<String> = lines.filter(|l| !l.is_empty()).collect();
    rows.sort();
    (header, rows)
}

#[test]
fn event_tables_are_the_same_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    support::generate_database(&dir.path().join("gen.db"), 300, 5).unwrap();
    fs::write(dir.path().join("def.py"), DEFINITION).unwrap();
    let postgres = TestDatabase::with_sqlite_tables(&dir.path().join("gen.db"));
    let permitted = [("EHRQL_PERMISSIONS", r#"["event_level_data"]"#)];
    let mut results = Vec::new();
    for (engine, flags) in postgres.every_engine() {
        let output = format!("{engine}/:csv");
        let mut args = vec!["generate-dataset", "def.py", "--output", &output];
        args.extend(flags);
        let out = ehrql_with_env(dir.path(), &args, &permitted);
        assert!(out.status.success(), "{engine}: {}", stderr(&out));
        let mut files: Vec<String> = fs::read_dir(dir.path().join(engine))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["asthma_events.csv", "dataset.csv", "inhalers.csv"],
            "{engine}"
        );
        let tables: Vec<_> = files
            .iter()
            .map(|f| sorted_csv(&dir.path().join(engine).join(f)))
            .collect();
        results.push(tables);
    }
    let asthma = &results[0][0];
    assert_eq!(asthma.0, "patient_id,date,code,value,high,age,sex");
    assert!(asthma.1.len() > 20, "only {} asthma rows", asthma.1.len());
    assert_eq!(results[0][2].0, "patient_id,date,dmd_code");
    assert!(
        results[0][2].1.len() > 50,
        "only {} inhaler rows",
        results[0][2].1.len()
    );
    // Event rows belong to population patients only.
    let population: Vec<&str> = results[0][1]
        .1
        .iter()
        .map(|r| r.split(',').next().unwrap())
        .collect();
    for row in &asthma.1 {
        let patient = row.split(',').next().unwrap();
        assert!(
            population.contains(&patient),
            "{row} is outside the population"
        );
    }
    assert!(
        asthma.1.iter().any(|r| r.contains(",T,")) && asthma.1.iter().any(|r| r.contains(",F,"))
    );
    assert_eq!(results[0], results[1], "in-memory and SQLite disagree");
    assert_eq!(results[0], results[2], "in-memory and PostgreSQL disagree");

    // Arrow and gzipped CSV directories hold the same tables.
    for (format, extension) in [("arrow", ".arrow"), ("csv.gz", ".csv.gz")] {
        let output = format!("out_{format}:{format}");
        let out = ehrql_with_env(
            dir.path(),
            &[
                "generate-dataset",
                "def.py",
                "--dsn",
                "sqlite:///gen.db",
                "--output",
                &output,
            ],
            &permitted,
        );
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        for table in ["dataset", "asthma_events", "inhalers"] {
            let file = dir
                .path()
                .join(format!("out_{format}"))
                .join(format!("{table}{extension}"));
            assert!(file.is_file(), "{} missing", file.display());
        }
    }
}

#[test]
fn output_of_event_tables_needs_a_directory_and_the_console_names_each_table() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("def.py"), DEFINITION).unwrap();
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.py",
            "--output",
            "output/dataset.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "Attempting to write 3 tables, but output only supports a single table\n  \
             Instead of -> output/dataset.csv\n         try -> output/dataset/:csv"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("output").exists());

    // Dummy data on the console: each table under its name, a blank line between tables.
    let out = ehrql(dir.path(), &["generate-dataset", "def.py"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("dataset\npatient_id,age\r\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\r\n\n\nasthma_events\npatient_id,date,code,value,high,age,sex\r\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\r\n\n\ninhalers\npatient_id,date,dmd_code\r\n"),
        "{stdout}"
    );

    // Dummy tables written by create-dummy-tables give event rows (generated data has some).
    let out = ehrql(dir.path(), &["create-dummy-tables", "def.py", "tables"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.py",
            "--dummy-tables",
            "tables",
            "--output",
            "from_tables/:csv",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (header, rows) = sorted_csv(&dir.path().join("from_tables/inhalers.csv"));
    assert_eq!(header, "patient_id,date,dmd_code");
    // The written directory reads back as a dummy data file, table for table.
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.py",
            "--dummy-data-file",
            "from_tables",
            "--output",
            "copy/:arrow",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.py",
            "--dummy-data-file",
            "copy",
            "--output",
            "again/:csv",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for table in ["dataset.csv", "asthma_events.csv", "inhalers.csv"] {
        assert_eq!(
            fs::read(dir.path().join("again").join(table)).unwrap(),
            fs::read(dir.path().join("from_tables").join(table)).unwrap(),
            "{table}"
        );
    }
    let out = ehrql(
        dir.path(),
        &[
            "generate-dataset",
            "def.py",
            "--dummy-data-file",
            "from_tables/dataset.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "Attempting to read 3 tables, but input only provides a single table\n      \
             Try moving -> from_tables/dataset.csv\n              to -> from_tables/dataset/dataset.csv\n          \
             adding -> asthma_events.csv, inhalers.csv\n  and using path -> from_tables/dataset/"
        ),
        "{}",
        stderr(&out)
    );
    let codes: Vec<String> = (0..10)
        .map(|i| format!("{}", 300_000_000 + i * 3))
        .collect();
    for row in &rows {
        let code = row.rsplit(',').next().unwrap();
        assert!(codes.iter().any(|c| c == code), "{row} is not an inhaler");
    }
}
