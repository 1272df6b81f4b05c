//! The ehrQL language front end, end to end: Python-syntax definitions are loaded without
//! running Python, run on the in-memory engine over small inline tables, and their output
//! compared with the expected rows; one definition is checked against its hand-built
//! serializer-JSON twin on generated data through both engines; and every refused construct
//! goes through one `check_refused` table with its message, line and column.

mod support;

use std::path::{Path, PathBuf};

use ehrql::engines::memory::MemoryEngine;
use ehrql::engines::sqlite::SqliteEngine;
use ehrql::engines::{ColumnSpec, Database, Engine, RowSink, SinkError};
use ehrql::frontend::language::{
    DummyDataConfig, LanguageError, load_definition, load_definition_source, load_source,
};
use ehrql::query_model::{Dataset, Date, ScalarType, Value};

struct Collect {
    header: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl RowSink for Collect {
    fn begin_table(&mut self, _name: &str, columns: &[ColumnSpec]) -> Result<(), SinkError> {
        self.header = columns.iter().map(|c| c.name.clone()).collect();
        Ok(())
    }
    fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        self.rows.push(row.to_vec());
        Ok(())
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(true) => "T".into(),
        Value::Bool(false) => "F".into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => ehrql::output::python_float_repr(*f),
        Value::Str(s) | Value::Code(_, s) => s.to_string(),
        Value::Date(d) => d.to_string(),
    }
}

/// Runs a dataset and renders its output as CSV-like lines sorted by patient id.
fn run(dataset: &Dataset, mut engine: Box<dyn Engine>) -> String {
    let mut sink = Collect {
        header: vec![],
        rows: vec![],
    };
    engine.run(dataset, &mut sink).unwrap();
    sink.rows.sort_by(|a, b| a[0].cmp(&b[0]));
    let mut lines = vec![sink.header.join(",")];
    lines.extend(
        sink.rows
            .iter()
            .map(|r| r.iter().map(render).collect::<Vec<_>>().join(",")),
    );
    lines.join("\n")
}

/// Parses one cell of inline table data by the column's type; "" is NULL.
fn cell(text: &str, ty: ScalarType) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    match ty {
        ScalarType::Bool => Value::Bool(text == "T"),
        ScalarType::Int => Value::Int(text.parse().unwrap()),
        ScalarType::Float => Value::Float(text.parse().unwrap()),
        ScalarType::Date => Value::Date(Date::parse_iso(text).unwrap()),
        ScalarType::Code(system) => Value::Code(system, text.into()),
        ScalarType::Str | ScalarType::MultiCodeString(_) => Value::Str(text.into()),
    }
}

/// `(patient_id, values in schema column order)`.
type Row = (i64, Vec<Value>);

/// A database from `table: patient_id|cell|cell…` lines (cells in schema column order;
/// trailing NULL cells may be left out).
fn database(module: &str, spec: &str) -> Database {
    let mut tables: Vec<(String, Vec<Row>)> = Vec::new();
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (table, row) = line.split_once(':').unwrap();
        let schema = ehrql::tables::lookup(module, table.trim()).unwrap();
        let cells: Vec<&str> = row.trim().split('|').collect();
        let values = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| cell(cells.get(i + 1).copied().unwrap_or(""), c.ty))
            .collect();
        let row = (cells[0].parse().unwrap(), values);
        match tables.iter_mut().find(|(n, _)| n == table.trim()) {
            Some((_, rows)) => rows.push(row),
            None => tables.push((table.trim().to_string(), vec![row])),
        }
    }
    let mut db = Database::new();
    for (name, rows) in tables {
        db.insert_table(ehrql::tables::lookup(module, &name).unwrap(), rows)
            .unwrap();
    }
    db
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/language")
}

fn load(source: &str) -> Dataset {
    load_definition_source(source, "dataset_definition.py", &fixtures())
        .unwrap_or_else(|e| panic!("definition refused: {e}"))
}

/// Loads `source` with the fixture workspace, runs it in memory over `data` (core tables),
/// and compares the output with `expected`.
fn check_output(source: &str, data: &str, expected: &str) {
    let dataset = load(source);
    let actual = run(
        &dataset,
        Box::new(MemoryEngine::new(database("ehrql.tables.core", data))),
    );
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        actual,
        expected.join("\n"),
        "\n--- definition ---\n{source}"
    );
}

/// Loads `source` and checks it is refused with exactly `expected`
/// (`dataset_definition.py:line:column: message`); `Err` describes the difference.
fn check_refused(source: &str, expected: &str) -> Result<(), String> {
    match load_definition_source(source, "dataset_definition.py", &fixtures()) {
        Ok(_) => Err(format!("accepted, expected `{expected}`:\n{source}")),
        Err(e) if e.to_string() == expected => Ok(()),
        Err(e) => Err(format!("expected `{expected}`\n     got `{e}`\n{source}")),
    }
}

const HEADER: &str = "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, clinical_events, medications, practice_registrations\ndataset = create_dataset()\n";

const CORE_DATA: &str = "
    patients: 1|1980-05-01|female
    patients: 2|2010-01-01|male
    patients: 3|1950-03-01|male
    patients: 4|1970-01-01|female|2022-12-01
    clinical_events: 1|2022-06-01|195967001|1.5
    clinical_events: 1|2015-03-01|195967001|2.0
    clinical_events: 1|2021-01-01|73211009
    clinical_events: 3|2022-02-02|44054006
    clinical_events: 3|2022-12-31|73211009|7.25
    clinical_events: 4|2022-01-01|195967001
    practice_registrations: 1|2010-01-01||7
    practice_registrations: 3|2022-07-01||9
    practice_registrations: 4|2000-01-01|2022-06-30|3
";

#[test]
fn full_study_fixture_gives_the_expected_rows() {
    let source = std::fs::read_to_string(fixtures().join("analysis/full_study.py")).unwrap();
    let definition = load_source(&source, "analysis/full_study.py", &fixtures()).unwrap();
    assert_eq!(
        definition.dummy_data_config,
        DummyDataConfig {
            population_size: 50,
            ..DummyDataConfig::default()
        }
    );
    let data = "
        patients: 1|1980-05-01|female
        patients: 2|2010-01-01|male
        patients: 3|1950-03-01|male
        patients: 4|1970-01-01|female|2022-12-01
        patients: 5|1990-01-01|unknown
        practice_registrations: 1|2010-01-01||7
        practice_registrations: 2|2010-01-01||8
        practice_registrations: 3|2000-01-01|2022-06-30|5
        practice_registrations: 3|2022-07-01||9
        practice_registrations: 4|2000-01-01||3
        clinical_events: 1|2022-06-01|195967001|1.5
        clinical_events: 1|2015-03-01|195967001|2.0
        clinical_events: 1|2021-01-01|73211009
        clinical_events: 3|2022-02-02|44054006
        clinical_events: 3|2022-12-31|73211009
        medications: 1|2019-02-01|39113311000001107
        medications: 1|2022-11-01|39113311000001107
        medications: 3|2022-11-01|39113611000001102
        ons_deaths: 3|2023-05-01|J45
    ";
    let actual = run(
        &definition.dataset,
        Box::new(MemoryEngine::new(database("ehrql.tables.core", data))),
    );
    let expected = [
        "patient_id,age,sex,practice,age_band,has_asthma,asthma_count,has_diabetes,diabetes_count,latest_asthma_date,months_since_asthma,latest_value,inhaler_count,first_inhaler,latest_contact,review_due,died_of_asthma",
        "1,42,female,7,40-64,T,1,F,0,2022-06-01,7,1.5,2,2019-02-01,2022-06-01,2022-12-01,",
        "3,72,male,9,65+,F,0,T,2,,,,0,,,,T",
    ];
    assert_eq!(actual, expected.join("\n"));
    // The same dataset runs unchanged on the SQLite engine.
    let db = database("ehrql.tables.core", data);
    let sqlite = run(
        &definition.dataset,
        Box::new(SqliteEngine::from_database(&db).unwrap()),
    );
    assert_eq!(sqlite, expected.join("\n"));
}

/// Data-driven cases: (definition body after the common imports, expected output).
const OUTPUT_CASES: &[(&str, &str)] = &[
    // Variables, literals cast to the series type, comparisons reflected.
    (
        "dataset.define_population(patients.exists_for_patient())
dataset.born = patients.date_of_birth
dataset.old = \"1960-01-01\" > patients.date_of_birth
dataset.year = patients.date_of_birth.year",
        "patient_id,born,old,year
         1,1980-05-01,F,1980
         2,2010-01-01,F,2010
         3,1950-03-01,T,1950
         4,1970-01-01,F,1970",
    ),
    // Functions with defaults and keywords, loops, f-strings, dicts and comprehensions.
    (
        "def count_codes(codes, after=\"2000-01-01\"):
    return clinical_events.where(
        clinical_events.snomedct_code.is_in(codes) & clinical_events.date.is_after(after)
    ).count_for_patient()

groups = {\"asthma\": [\"195967001\"], \"diabetes\": [\"73211009\", \"44054006\"]}
dataset.define_population(patients.sex.is_in([\"female\", \"male\"]))
for i, (name, codes) in enumerate(groups.items()):
    dataset.add_column(f\"n{i + 1:02d}_{name}\", count_codes(codes, after=\"2016-01-01\"))
dataset.total = sum([count_codes(c) for c in groups.values()], 0) if False else count_codes([c for cs in groups.values() for c in cs])",
        "patient_id,n01_asthma,n02_diabetes,total
         1,1,1,3
         2,0,0,0
         3,0,2,2
         4,1,0,1",
    ),
    // case/when, map_values, when_null_then, date arithmetic with durations and differences.
    (
        "from ehrql import case, when, days, weeks, months, years, minimum_of
latest = clinical_events.sort_by(clinical_events.date).last_for_patient()
dataset.define_population(clinical_events.exists_for_patient())
dataset.band = case(when(latest.numeric_value < 2).then(\"low\"), when(latest.numeric_value >= 2).then(\"high\"), otherwise=\"none\")
dataset.sex_code = patients.sex.map_values({\"female\": 1, \"male\": 2}, default=0)
dataset.value = latest.numeric_value.when_null_then(0)
dataset.plus = latest.date + days(10) - weeks(1)
dataset.next_year = latest.date + years(1)
dataset.gap_days = (latest.date - patients.date_of_birth).days
dataset.gap_weeks = (\"2023-01-01\" - latest.date).weeks
dataset.earliest = minimum_of(latest.date, \"2022-03-01\")
dataset.flag = when(latest.date.is_during((\"2022-01-01\", \"2022-12-31\"))).then(True).otherwise(False)",
        "patient_id,band,sex_code,value,plus,next_year,gap_days,gap_weeks,earliest,flag
         1,low,1,1.5,2022-06-04,2023-06-01,15371,30,2022-03-01,T
         3,high,2,7.25,2023-01-03,2023-12-31,26603,0,2022-03-01,T
         4,none,1,0.0,2022-01-04,2023-01-01,18993,52,2022-01-01,T",
    ),
    // Aggregations, except_where, is_not_in, null checks and arithmetic.
    (
        "dataset.define_population(clinical_events.exists_for_patient())
events = clinical_events.except_where(clinical_events.snomedct_code.is_not_in([\"195967001\"]))
dataset.first = events.sort_by(clinical_events.date).first_for_patient().date
dataset.n_distinct = clinical_events.snomedct_code.count_distinct_for_patient()
dataset.max_value = clinical_events.numeric_value.maximum_for_patient()
dataset.mean_value = clinical_events.numeric_value.mean_for_patient()
dataset.doubled = clinical_events.numeric_value.sum_for_patient() * 2
dataset.missing = patients.date_of_death.is_null()
dataset.age_days = (patients.date_of_birth - \"1900-01-01\").days // 365",
        "patient_id,first,n_distinct,max_value,mean_value,doubled,missing,age_days
         1,2015-03-01,2,2.0,1.75,7.0,T,80
         3,,2,7.25,7.25,14.5,T,50
         4,2022-01-01,1,,,,F,70",
    ),
    // Module imports, code constructors, datetime.date, episodes, multi-key sorts,
    // categories from a CSV codelist, table helpers, reading a variable back.
    (
        "import ehrql.tables.core as core
from ehrql.tables import core as core2
from ehrql.codes import SNOMEDCTCode
from ehrql import days, codelist_from_csv
from datetime import date
categories = codelist_from_csv(\"codelists/conditions.csv\", column=\"code\", category_column=\"category\")
dataset.define_population(core.practice_registrations.exists_for_patient_on(\"2023-01-01\"))
dataset.asthma_events = clinical_events.where(clinical_events.snomedct_code == SNOMEDCTCode(\"195967001\")).count_for_patient()
dataset.episodes = clinical_events.date.count_episodes_for_patient(days(400))
last = clinical_events.sort_by(clinical_events.snomedct_code, clinical_events.date).last_for_patient()
dataset.last_code = last.snomedct_code
dataset.category = last.snomedct_code.to_category(categories)
dataset.since_2000 = (core2.patients.date_of_birth - date(2000, 1, 1)).years
dataset.negated = -dataset.since_2000
dataset.has_value = ~last.numeric_value.is_null()
dataset.value_int = abs(last.numeric_value).as_int()",
        "patient_id,asthma_events,episodes,last_code,category,since_2000,negated,has_value,value_int
         1,2,3,73211009,diabetes,-20,20,F,
         3,0,1,73211009,diabetes,-50,50,T,7",
    ),
];

#[test]
fn definitions_give_the_expected_output() {
    for (body, expected) in OUTPUT_CASES {
        check_output(&format!("{HEADER}{body}\n"), CORE_DATA, expected);
    }
}

#[test]
fn language_definition_matches_its_serialized_twin_on_generated_data() {
    let source = "
from ehrql import create_dataset, years
from ehrql.tables.core import patients, practice_registrations, clinical_events, medications

index_date = \"2023-01-01\"
dataset = create_dataset()
registered = practice_registrations.where(
    (practice_registrations.start_date <= index_date)
    & (practice_registrations.end_date.is_null() | (practice_registrations.end_date > index_date))
).exists_for_patient()
alive = patients.date_of_death.is_null() | (patients.date_of_death > index_date)
dataset.define_population(registered & alive)
dataset.age = patients.age_on(index_date)
dataset.sex = patients.sex

asthma = clinical_events.where(
    clinical_events.snomedct_code.is_in([str(100000 + i * 7) for i in range(20)])
)
latest = asthma.sort_by(clinical_events.date).last_for_patient()
dataset.asthma_exists = asthma.exists_for_patient()
dataset.asthma_latest_date = latest.date
dataset.asthma_count_last_year = asthma.where(
    (clinical_events.date > index_date - years(1)) & (clinical_events.date <= index_date)
).count_for_patient()
dataset.asthma_latest_value = latest.numeric_value

first = (
    medications.where(medications.dmd_code.is_in([str(300000000 + i * 3) for i in range(10)]))
    .sort_by(medications.date)
    .first_for_patient()
)
dataset.first_inhaler_date = first.date
dataset.first_inhaler_code = first.dmd_code
";
    let from_language = load(source);
    let from_json = ehrql::frontend::json::load_dataset(
        &support::typical_definition(),
        Path::new("/nonexistent"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("gen.db");
    support::generate_database(&db_path, 300, 11).unwrap();
    let db = ehrql::engines::sqlite::read_database(&db_path).unwrap();
    let memory_language = run(&from_language, Box::new(MemoryEngine::new(db.clone())));
    let memory_json = run(&from_json, Box::new(MemoryEngine::new(db)));
    assert!(
        memory_language.lines().count() > 50,
        "too few patients to compare"
    );
    assert_eq!(memory_language, memory_json);
    let sqlite_language = run(
        &from_language,
        Box::new(SqliteEngine::open(&db_path).unwrap()),
    );
    assert_eq!(sqlite_language, memory_json);
}

#[test]
fn load_definition_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("dataset_definition.py");
    std::fs::write(
        &good,
        format!("{HEADER}dataset.define_population(patients.exists_for_patient())\ndataset.sex = patients.sex\n"),
    )
    .unwrap();
    let dataset = load_definition(&good).unwrap();
    assert_eq!(dataset.variables().len(), 1);
    assert_eq!(dataset.variables()[0].0, "sex");

    let bad = dir.path().join("bad.py");
    std::fs::write(&bad, "import os\n").unwrap();
    let message = load_definition(&bad).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}:1:8: importing 'os' is not allowed: only 'ehrql' and 'ehrql.tables…' can be imported",
            bad.display()
        )
    );
    let missing = load_definition(&dir.path().join("missing.py")).unwrap_err();
    assert!(matches!(missing, LanguageError::Read { .. }), "{missing}");
}

/// (definition, expected error): every refused construct with its line and column.
const REFUSED: &[(&str, &str)] = &[
    (
        "import os\n",
        "dataset_definition.py:1:8: importing 'os' is not allowed: only 'ehrql' and 'ehrql.tables…' can be imported",
    ),
    (
        "from ehrql import create_dataset\nfrom subprocess import run\n",
        "dataset_definition.py:2:6: importing 'subprocess' is not allowed: only 'ehrql' and 'ehrql.tables…' can be imported",
    ),
    (
        "x = open('/etc/passwd')\n",
        "dataset_definition.py:1:5: 'open' is not supported in a dataset definition",
    ),
    (
        "class Foo:\n    pass\n",
        "dataset_definition.py:1:1: defining a class is not supported in a dataset definition",
    ),
    (
        "x = 1\nwhile x:\n    x = 0\n",
        "dataset_definition.py:2:1: a 'while' loop (use 'for' over a list or range()) is not supported in a dataset definition",
    ),
    (
        "try:\n    x = 1\nexcept Exception:\n    pass\n",
        "dataset_definition.py:1:1: 'try' is not supported in a dataset definition",
    ),
    (
        "f = lambda x: x\n",
        "dataset_definition.py:1:5: 'lambda' (define a function with 'def') is not supported in a dataset definition",
    ),
    (
        "from ehrql import *\n",
        "dataset_definition.py:1:19: 'import *' (name each thing you import) is not supported in a dataset definition",
    ),
    (
        "from ehrql import table_from_file\n",
        "dataset_definition.py:1:19: 'table_from_file' from ehrql (this implementation does not provide it) is not supported in a dataset definition",
    ),
    (
        "from ehrql.tables.core import patients\nx = patients.__class__\n",
        "dataset_definition.py:2:14: table 'patients' has no attribute '__class__'",
    ),
    (
        "x = (1 +\n",
        "dataset_definition.py:2:1: invalid syntax: unexpected EOF while parsing",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\ndataset.dob = patients.date_of_birth > 5\n",
        "dataset_definition.py:5:15: Function.GT.rhs: Expected type 'Series[date]' but got 'Series[int]'",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import clinical_events\ndataset = create_dataset()\ndataset.define_population(clinical_events.exists_for_patient())\ndataset.code = clinical_events.snomedct_code\n",
        "dataset_definition.py:5:1: Invalid variable 'code'. Dataset variables must return one row per patient",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\nif patients.sex == 'male':\n    pass\n",
        "dataset_definition.py:4:4: the truth value of an ehrQL series is not defined: use '&', '|' and '~' instead of 'and', 'or' and 'not', and case(when(...)) instead of 'if'",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\nx = patients.sex.is_null() and patients.sex.is_null()\n",
        "dataset_definition.py:4:5: 'and' cannot be used with ehrQL series: use '&' instead",
    ),
    (
        "from ehrql import create_dataset\ndataset = create_dataset()\n",
        "dataset_definition.py:2:1: A population has not been defined; define one with define_population()",
    ),
    (
        "x = 1\n",
        "dataset_definition.py:1:1: Did not find a variable called 'dataset' in dataset definition file",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.define_population(patients.date_of_death.is_null())\n",
        "dataset_definition.py:4:1: population definition must not evaluate as True for NULL inputs",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\ndataset.sex = patients.sex\ndataset.sex = patients.sex\n",
        "dataset_definition.py:6:1: 'sex' is already set and cannot be reassigned",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.add_column('patient_id', patients.sex)\n",
        "dataset_definition.py:4:1: 'patient_id' is not an allowed variable name",
    ),
    (
        "from ehrql import codelist_from_csv\ncodes = codelist_from_csv('../secret.csv', column='code')\n",
        "dataset_definition.py:2:9: codelist '../secret.csv': the path must be relative and stay inside the workspace",
    ),
    (
        "from ehrql import codelist_from_csv\ncodes = codelist_from_csv('/etc/passwd', column='code')\n",
        "dataset_definition.py:2:9: codelist '/etc/passwd': the path must be relative and stay inside the workspace",
    ),
    (
        "from ehrql import codelist_from_csv\ncodes = codelist_from_csv('codelists/missing.csv')\n",
        "dataset_definition.py:2:9: codelist 'codelists/missing.csv': no such file",
    ),
    (
        "from ehrql import codelist_from_csv\ncodes = codelist_from_csv('codelists/medications.csv', column='code')\n",
        "dataset_definition.py:2:9: codelist 'codelists/medications.csv': no column 'code' (columns: dmd_id, name)",
    ),
    (
        "def f(n):\n    return f(n + 1)\nf(0)\n",
        "dataset_definition.py:2:12: functions call each other too deeply (more than 100 levels)",
    ),
    (
        "for i in range(2000):\n    for j in range(2000):\n        pass\n",
        "dataset_definition.py:3:9: the definition runs too long (more than 1000000 steps)",
    ),
    (
        "x = [0] * 10 ** 9\n",
        "dataset_definition.py:1:5: the value is too large (more than 1000000 items, or an integer overflow)",
    ),
    (
        "from ehrql.tables.tpp import apcs\nx = apcs.all_diagnoses.contains('N17.1')\n",
        "dataset_definition.py:2:5: Expecting a ICD10Code, or a string prefix of a ICD10Code; got a string",
    ),
    (
        "from ehrql.tables.tpp import apcs\nx = apcs.all_procedures == 'W232'\n",
        "dataset_definition.py:2:5: This column contains multiple clinical codes combined together in a single string. If you want to know if a particular code is contained in the string, please use the `contains()` method",
    ),
    (
        "from ehrql.tables.tpp import apcs\nx = apcs.all_diagnoses.is_in(['N17'])\n",
        "dataset_definition.py:2:5: You are attempting to use `.is_in()` on a column that contains multiple clinical codes joined together. This is not allowed. If you want to know if the field contains any of the codes from a codelist, then please use `.contains_any_of(codelist)` instead.",
    ),
    (
        "from ehrql.tables.tpp import opa_diag\n",
        "dataset_definition.py:1:30: there is no table 'opa_diag' in 'ehrql.tables.tpp' (tables are available from: ehrql.tables.core, tests.spec.tables, ehrql.tables.tpp)",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import clinical_events, medications\ndataset = create_dataset()\nx = clinical_events.date == medications.date\n",
        "dataset_definition.py:4:5: Function.EQ: Cannot combine series which are drawn from different tables and both have more than one value per patient",
    ),
    (
        "from ehrql import create_dataset\ndataset = create_dataset()\ndataset.add_event_table('e')\n",
        "dataset_definition.py:3:1: event tables must be defined with at least one column",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.add_event_table('e', sex=patients.sex)\n",
        "dataset_definition.py:4:1: event tables must have columns with more than one value per patient; for single values per patient use dataset variables",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import clinical_events as c, medications as m\ndataset = create_dataset()\ndataset.add_event_table('e', a=c.date, b=m.date)\n",
        "dataset_definition.py:4:1: cannot combine series drawn from different tables; create a new event table for these series",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, clinical_events as c\ndataset = create_dataset()\ndataset.age = patients.date_of_birth.year\ndataset.add_event_table('age', d=c.date)\n",
        "dataset_definition.py:5:1: 'age' is already set and cannot be reassigned",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import clinical_events as c\ndataset = create_dataset()\ndataset.add_event_table('e', patient_id=c.date)\n",
        "dataset_definition.py:4:1: 'patient_id' is not an allowed column name",
    ),
    (
        "from ehrql.tables.core import patients\nx = getattr(patients, '__dict__')\n",
        "dataset_definition.py:2:5: the attribute '__dict__' is not supported in a dataset definition",
    ),
    (
        "x = [i for i in range(3)]\ny = i\n",
        "dataset_definition.py:2:5: name 'i' is not defined",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\ndataset.define_population(patients.exists_for_patient())\n",
        "dataset_definition.py:5:1: define_population() should be called no more than once",
    ),
    (
        "from ehrql import case, when\nfrom ehrql.tables.core import patients\nx = case(when(patients.sex == 'male').then(1), when(patients.sex == 'male').then(2))\n",
        "dataset_definition.py:3:5: duplicate condition in case expression",
    ),
    (
        "from ehrql.tables.core import clinical_events\nx = clinical_events.snomedct_code.is_in(['abc'])\n",
        "dataset_definition.py:2:5: 'abc' is not a valid SNOMEDCTCode code",
    ),
    (
        "from ehrql.tables.core import clinical_events\nx = clinical_events.first_for_patient()\n",
        "dataset_definition.py:2:5: PickOneRowPerPatient: Expected type 'SortedFrame' but got an unsorted frame (sort_by must come before first_for_patient/last_for_patient)",
    ),
    (
        "from ehrql.tables.core import patients\nx = patients.sex.startswith('m')\n",
        "dataset_definition.py:2:18: a str series has no attribute 'startswith'",
    ),
    (
        "import datetime\nx = datetime.datetime(2020, 1, 1)\n",
        "dataset_definition.py:2:14: 'datetime.datetime' (only datetime.date may be used) is not supported in a dataset definition",
    ),
    (
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients\ndataset = create_dataset()\ndataset.population = patients.exists_for_patient()\n",
        "dataset_definition.py:4:1: Cannot set variable 'population'; use define_population() instead",
    ),
    (
        "from ehrql import create_dataset\ndataset = create_dataset()\nx = dataset.age\n",
        "dataset_definition.py:3:13: Variable 'age' has not been defined",
    ),
    (
        "x = undefined_name + 1\n",
        "dataset_definition.py:1:5: name 'undefined_name' is not defined",
    ),
    (
        "from ehrql.tables.core import clinical_events\nx = clinical_events.sort_by(clinical_events.date).first_for_patient().dat\n",
        "dataset_definition.py:2:71: table 'clinical_events' has no attribute 'dat'",
    ),
];

#[test]
fn refused_constructs_name_the_line_column_and_reason() {
    let failures: Vec<String> = REFUSED
        .iter()
        .filter_map(|(source, expected)| check_refused(source, expected).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn claimed_permissions_and_dummy_data_settings_are_recorded() {
    let source = format!(
        "from ehrql import claim_permissions, show\n{HEADER}claim_permissions('appointments', 'event_level_data')\ndataset.configure_dummy_data(population_size=25, legacy=True, timeout=5)\nshow(patients.sex)\ndataset.define_population(patients.exists_for_patient())\n"
    );
    let definition = load_source(&source, "dataset_definition.py", &fixtures()).unwrap();
    assert_eq!(
        definition.claimed_permissions,
        vec!["appointments".to_string(), "event_level_data".to_string()]
    );
    assert_eq!(
        definition.dummy_data_config,
        DummyDataConfig {
            population_size: 25,
            legacy: true,
            timeout: 5,
            additional_population_constraint: None,
        }
    );
}

#[test]
fn self_containing_lists_print_and_compare_without_crashing() {
    let source = format!(
        "{HEADER}a = [1]\na.append(a)\nlabel = f\"{{a}}\"\nsame = a == a\nassert same\ndataset.define_population(patients.sex.is_in([label, \"female\"]))\n"
    );
    let dataset = load(&source);
    assert_eq!(dataset.variables().len(), 0);
}

#[test]
fn building_too_much_data_is_refused() {
    check_refused(
        "x = []\nfor i in range(100):\n    x = x + list(range(100000))\n",
        "dataset_definition.py:3:9: the definition builds too much data (more than 5000000 values)",
    )
    .unwrap();
}

#[test]
fn deeply_nested_input_is_refused_not_a_crash() {
    let source = format!("x = {}1{}\n", "(".repeat(5000), ")".repeat(5000));
    check_refused(
        &source,
        "dataset_definition.py:1:105: brackets are nested too deeply",
    )
    .unwrap();
    let chain = format!("x = 1{}\n", " + 1".repeat(5000));
    let error = load_definition_source(&chain, "d.py", &fixtures()).unwrap_err();
    assert!(error.to_string().contains("nested too deeply"), "{error}");
}
