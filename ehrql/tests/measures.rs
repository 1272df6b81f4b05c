//! Measures end to end through the built `ehrql` binary: a realistic measures definition gives
//! byte-identical output on the in-memory, SQLite and PostgreSQL engines (combined file and
//! one file per measure); disclosure control suppresses and rounds exactly as the reference
//! does, on crafted data; bad definitions give the reference's messages; dummy data works.
//! Needs `RAP_TEST_POSTGRES_URL` (see `postgres_support`).

mod postgres_support;
mod support;

use std::fs;
use std::path::Path;

use ehrql::frontend::language::load_measures_source;
use postgres_support::TestDatabase;
use support::{ehrql, stderr};

/// Four months of 2021: asthma events (any, and how many) by sex and age band, and inhaler
/// prescriptions, among patients registered and alive at the start of each month.
const DEFINITION: &str = r#"
from ehrql import create_measures, months, years, INTERVAL, case, when
from ehrql.tables.core import patients, practice_registrations, clinical_events, medications

asthma_codes = [str(100000 + i) for i in range(0, 400, 3)]
inhaler_codes = [str(300000000 + i) for i in range(0, 200, 2)]

measures = create_measures()
measures.configure_disclosure_control(enabled=False)

age = patients.age_on(INTERVAL.start_date)
age_band = case(
    when(age < 40).then("0-39"),
    when(age < 70).then("40-69"),
    otherwise="70+",
)
asthma = clinical_events.where(clinical_events.snomedct_code.is_in(asthma_codes)).where(
    clinical_events.date.is_during(INTERVAL)
)
inhalers = medications.where(medications.dmd_code.is_in(inhaler_codes)).where(
    medications.date.is_on_or_between(INTERVAL.start_date, INTERVAL.end_date)
)

measures.define_defaults(
    denominator=practice_registrations.exists_for_patient_on(INTERVAL.start_date)
    & patients.is_alive_on(INTERVAL.start_date),
    intervals=months(4).starting_on("2021-01-01"),
)
measures.define_measure("asthma", numerator=asthma.exists_for_patient(), group_by={"sex": patients.sex})
measures.define_measure(
    "asthma_events",
    numerator=asthma.count_for_patient(),
    group_by={"sex": patients.sex, "age_band": age_band},
)
measures.define_measure("inhalers", numerator=inhalers.exists_for_patient())
measures.define_measure(
    "inhalers_yearly",
    numerator=inhalers.count_for_patient(),
    denominator=patients.exists_for_patient(),
    intervals=years(1).ending_on("2021-12-31"),
)
"#;

#[test]
fn measures_are_the_same_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    support::generate_database(&dir.path().join("gen.db"), 300, 9).unwrap();
    fs::write(dir.path().join("measures.py"), DEFINITION).unwrap();
    let postgres = TestDatabase::with_sqlite_tables(&dir.path().join("gen.db"));
    let mut outputs = Vec::new();
    for (engine, flags) in postgres.every_engine() {
        let output = format!("{engine}.csv");
        let per_measure = format!("{engine}/:csv");
        for out in [&output, &per_measure] {
            let mut args = vec!["generate-measures", "measures.py", "--output", out];
            args.extend(&flags);
            let run = ehrql(dir.path(), &args);
            assert!(run.status.success(), "{engine}: {}", stderr(&run));
        }
        let combined = fs::read_to_string(dir.path().join(&output)).unwrap();
        let files: Vec<String> = ["asthma", "asthma_events", "inhalers", "inhalers_yearly"]
            .iter()
            .map(|m| fs::read_to_string(dir.path().join(engine).join(format!("{m}.csv"))).unwrap())
            .collect();
        outputs.push((combined, files));
    }
    let (combined, files) = &outputs[0];
    let mut lines = combined.split("\r\n");
    assert_eq!(
        lines.next(),
        Some("measure,interval_start,interval_end,ratio,numerator,denominator,sex,age_band")
    );
    let rows: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    // asthma: 4 months x (female, male, maybe intersex/unknown); asthma_events: 4 x sex x
    // band; inhalers: 4 ungrouped; inhalers_yearly: one year.
    assert!(rows.len() > 40, "{combined}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("inhalers_yearly,2021-01-01,2021-12-31,")),
        "{combined}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("asthma,2021-01-01,2021-01-31,"))
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("asthma,2021-04-01,2021-04-30,"))
    );
    // Ungrouped measures leave the group columns empty; the ratio is numerator / denominator.
    let inhaler = rows.iter().find(|r| r.starts_with("inhalers,")).unwrap();
    let fields: Vec<&str> = inhaler.split(',').collect();
    assert_eq!(&fields[6..], ["", ""], "{inhaler}");
    let (numerator, denominator): (f64, f64) =
        (fields[4].parse().unwrap(), fields[5].parse().unwrap());
    assert_eq!(fields[3].parse::<f64>().unwrap(), numerator / denominator);
    assert!(files[2].starts_with("interval_start,interval_end,ratio,numerator,denominator\r\n"));
    assert!(
        files[1].starts_with(
            "interval_start,interval_end,ratio,numerator,denominator,sex,age_band\r\n"
        )
    );
    assert_eq!(outputs[0], outputs[1], "in-memory and SQLite disagree");
    assert_eq!(outputs[0], outputs[2], "in-memory and PostgreSQL disagree");
}

/// Crafted tables: 13 women and 7 men registered; 8 women and 3 men with an event in
/// January 2022.
fn crafted_tables(dir: &Path) {
    let tables = dir.join("tables");
    fs::create_dir_all(&tables).unwrap();
    let mut patients = String::from("patient_id,date_of_birth,sex,date_of_death\n");
    let mut registrations = String::from("patient_id,start_date,end_date,practice_pseudo_id\n");
    let mut events = String::from("patient_id,date,snomedct_code,numeric_value\n");
    for id in 1..=20 {
        let sex = if id <= 13 { "female" } else { "male" };
        patients.push_str(&format!("{id},1980-01-01,{sex},\n"));
        registrations.push_str(&format!("{id},2010-01-01,,1\n"));
        if id <= 8 || (14..=16).contains(&id) {
            events.push_str(&format!("{id},2022-01-15,123456,\n"));
        }
    }
    fs::write(tables.join("patients.csv"), patients).unwrap();
    fs::write(tables.join("practice_registrations.csv"), registrations).unwrap();
    fs::write(tables.join("clinical_events.csv"), events).unwrap();
}

const CRAFTED: &str = r#"
from ehrql import create_measures, months, INTERVAL
from ehrql.tables.core import patients, practice_registrations, clinical_events

measures = create_measures()
events = clinical_events.where(clinical_events.date.is_during(INTERVAL))
measures.define_measure(
    "events",
    numerator=events.exists_for_patient(),
    denominator=practice_registrations.exists_for_patient_on(INTERVAL.start_date),
    group_by={"sex": patients.sex},
    intervals=months(1).starting_on("2022-01-01"),
)
measures.define_measure(
    "all_events",
    numerator=events.count_for_patient(),
    denominator=practice_registrations.exists_for_patient_on(INTERVAL.start_date),
    intervals=months(1).starting_on("2022-01-01"),
)
"#;

#[test]
fn small_numbers_are_suppressed_and_rounded_unless_disabled() {
    let dir = tempfile::tempdir().unwrap();
    crafted_tables(dir.path());
    fs::write(dir.path().join("m.py"), CRAFTED).unwrap();
    let out = ehrql(
        dir.path(),
        &[
            "generate-measures",
            "m.py",
            "--dummy-tables",
            "tables",
            "--output",
            "m.csv",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Women: 8/13 -> 10/15; men: 3/7 -> 0/0 (no ratio); everyone: 11/20 -> 10/20.
    assert_eq!(
        fs::read_to_string(dir.path().join("m.csv")).unwrap(),
        "measure,interval_start,interval_end,ratio,numerator,denominator,sex\r\n\
         events,2022-01-01,2022-01-31,0.6666666666666666,10,15,female\r\n\
         events,2022-01-01,2022-01-31,,0,0,male\r\n\
         all_events,2022-01-01,2022-01-31,0.5,10,20,\r\n"
    );
    fs::write(
        dir.path().join("raw.py"),
        format!("{CRAFTED}measures.configure_disclosure_control(enabled=False)\n"),
    )
    .unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-measures", "raw.py", "--dummy-tables", "tables"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "measure,interval_start,interval_end,ratio,numerator,denominator,sex\r\n\
         events,2022-01-01,2022-01-31,0.6153846153846154,8,13,female\r\n\
         events,2022-01-01,2022-01-31,0.42857142857142855,3,7,male\r\n\
         all_events,2022-01-01,2022-01-31,0.55,11,20,\r\n"
    );
}

#[test]
fn measures_read_back_from_a_dummy_data_file() {
    let dir = tempfile::tempdir().unwrap();
    crafted_tables(dir.path());
    fs::write(
        dir.path().join("raw.py"),
        format!("{CRAFTED}measures.configure_disclosure_control(enabled=False)\n"),
    )
    .unwrap();
    for output in ["m.csv", "dir/:arrow"] {
        let out = ehrql(
            dir.path(),
            &[
                "generate-measures",
                "raw.py",
                "--dummy-tables",
                "tables",
                "--output",
                output,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for input in ["m.csv", "dir"] {
        let out = ehrql(
            dir.path(),
            &[
                "generate-measures",
                "raw.py",
                "--dummy-data-file",
                input,
                "--output",
                "back.csv",
            ],
        );
        assert!(out.status.success(), "{input}: {}", stderr(&out));
        assert_eq!(
            fs::read_to_string(dir.path().join("back.csv")).unwrap(),
            fs::read_to_string(dir.path().join("m.csv")).unwrap(),
            "{input}"
        );
    }
}

#[test]
fn dummy_measures_have_every_measure_and_interval() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("m.py"), CRAFTED).unwrap();
    let out = ehrql(
        dir.path(),
        &["generate-measures", "m.py", "--output", "out/:csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let events = fs::read_to_string(dir.path().join("out/events.csv")).unwrap();
    assert!(
        events.starts_with(
            "interval_start,interval_end,ratio,numerator,denominator,sex\r\n2022-01-01,2022-01-31,"
        ),
        "{events}"
    );
    assert!(dir.path().join("out/all_events.csv").is_file());
}

#[test]
fn bad_measures_give_the_references_messages() {
    let header = "from ehrql import create_measures, years, INTERVAL\nfrom ehrql.tables.core import patients, clinical_events\nmeasures = create_measures()\nd = patients.exists_for_patient()\nn = clinical_events.where(clinical_events.date.is_during(INTERVAL)).exists_for_patient()\n";
    let cases = [
        (
            "measures.define_measure('m', numerator=n, denominator=d)\n",
            "m.py:6:1: No value supplied for 'intervals' and no default defined",
        ),
        (
            "measures.define_measure('m', numerator=patients.sex, denominator=d, intervals=years(1).starting_on('2020-01-01'))\n",
            "m.py:6:1: invalid numerator:\nExpecting a boolean or integer series, got series of type 'str'",
        ),
        (
            "measures.define_measure('m', numerator=n, denominator=d, intervals=years(1))\n",
            "m.py:6:1: You must supply a date using `years(value=1).starting_on('<DATE>')` or `years(value=1).ending_on('<DATE>')`",
        ),
        (
            "measures.define_measure('m', numerator=n, denominator=d, group_by={'ratio': patients.sex}, intervals=years(1).starting_on('2020-01-01'))\n",
            "m.py:6:1: disallowed `group_by` column name: ratio",
        ),
        (
            "i = years(1).starting_on('2020-01-01')\nmeasures.define_measure('m', numerator=n, denominator=d, intervals=i)\nmeasures.define_measure('m', numerator=n, denominator=d, intervals=i)\n",
            "m.py:8:1: Measure already defined with name: m",
        ),
        (
            "measures.define_defaults(denominator=d)\nmeasures.define_defaults(denominator=d)\n",
            "m.py:7:1: Defaults already set; cannot call `define_defaults()` more than once",
        ),
        (
            "measures.define_measure('m', numerator=clinical_events.date.year, denominator=d, intervals=years(1).starting_on('2020-01-01'))\n",
            "m.py:6:1: invalid numerator:\nExpecting a series with only one value per patient",
        ),
        ("x = 1\n", "m.py:6:1: No measures defined"),
    ];
    let workspace = tempfile::tempdir().unwrap();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(body, expected)| {
            match load_measures_source(&format!("{header}{body}"), "m.py", workspace.path()) {
                Ok(_) => Some(format!("accepted: {body}")),
                Err(e) if e.to_string() == *expected => None,
                Err(e) => Some(format!("expected `{expected}`\n     got `{e}`")),
            }
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn intervals_start_on_or_end_on_a_date() {
    let source = "from ehrql import create_measures, weeks, months, INTERVAL\nfrom ehrql.tables.core import patients\nmeasures = create_measures()\nd = patients.exists_for_patient()\nmeasures.define_measure('a', numerator=d, denominator=d, intervals=weeks(3).starting_on('2000-01-01'))\nmeasures.define_measure('b', numerator=d, denominator=d, intervals=weeks(3).ending_on('2000-01-21'))\nmeasures.define_measure('c', numerator=d, denominator=d, intervals=months(2).starting_on('2020-01-31') + months(1).ending_on('2020-01-31'))\n";
    let workspace = tempfile::tempdir().unwrap();
    let definition = load_measures_source(source, "m.py", workspace.path()).unwrap();
    let render = |m: usize| -> Vec<String> {
        definition.measures[m]
            .intervals
            .iter()
            .map(|(s, e)| format!("{s}..{e}"))
            .collect()
    };
    let weeks = [
        "2000-01-01..2000-01-07",
        "2000-01-08..2000-01-14",
        "2000-01-15..2000-01-21",
    ];
    assert_eq!(render(0), weeks);
    assert_eq!(render(1), weeks);
    // Month ends roll over as ehrQL's date arithmetic does (31 Feb is 1 Mar); the list is
    // sorted and de-duplicated.
    assert_eq!(
        render(2),
        [
            "2020-01-01..2020-01-31",
            "2020-01-31..2020-02-29",
            "2020-03-01..2020-03-30"
        ]
    );
}
