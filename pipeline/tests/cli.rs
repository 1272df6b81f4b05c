//! The `rap-pipeline check` binary, run as a real process in a fresh directory per test.

use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rap-pipeline"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn check_prints_ok_and_the_action_graph_in_topological_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("project.yaml"),
        include_str!("data/valid_example.yaml"),
    )
    .unwrap();
    // The default path is ./project.yaml.
    let output = run(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        "OK\n\
         generate_dataset\n\
         generate_dataset_arrow\n\
         generate_measures <- generate_dataset\n\
         process_data <- generate_dataset\n\
         describe <- process_data, generate_dataset_arrow\n\
         reusable <- process_data\n"
    );
}

#[test]
fn check_orders_dependencies_before_dependants_whatever_the_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.yaml");
    std::fs::write(
        &path,
        "version: '4'\nactions:\n  late:\n    run: python:v2 late.py\n    needs: [early]\n    outputs: {highly_sensitive: {x: x.csv}}\n  early:\n    run: python:v2 early.py\n    outputs: {highly_sensitive: {y: y.csv}}\n",
    )
    .unwrap();
    let output = run(dir.path(), &["check", "other.yaml"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "OK\nearly\nlate <- early\n");
    // The old-version warning goes to stderr, without its "ProjectWarning: " prefix.
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        "Your project file is using an old version (4.0); consider updating to version 5\n"
    );
}

#[test]
fn check_prints_the_error_with_its_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("project.yaml"),
        "version: '5'\nactions:\n  a:\n    run: python:v2 a.py\n    needs: [b]\n    outputs: {highly_sensitive: {x: x.csv}}\n",
    )
    .unwrap();
    let output = run(dir.path(), &["check", "project.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "Invalid project: project.yaml\nAction `a` references an unknown action in its `needs` list: b\n  at line 3, column 3\n"
    );
}

#[test]
fn check_names_the_file_in_yaml_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.yaml"), "a: 1\na: 2\n").unwrap();
    let output = run(dir.path(), &["check", "mine.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "Invalid project: mine.yaml\nfound duplicate key \"a\" with value \"2\" (original value: \"1\")\n  in \"mine.yaml\", line 2, column 1\n"
    );
}

#[test]
fn check_reports_an_unreadable_file_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &["check", "missing.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: reading missing.yaml"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}
