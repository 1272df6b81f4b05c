//! Every rule of spec §1.8–§1.10 with a failing example and its exact message, the §1.14 edge
//! cases pinned as accepted or rejected, and our deliberate differences. All cases go through
//! `check` (rejected) or `accept` (accepted).

use rap_pipeline::{ErrorKind, Location, Pipeline, Privacy, load_pipeline};

/// Removes the common leading indentation, so cases can be written indented in the source.
fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let indent = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in lines {
        out.push_str(line.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// A version-5 project with one action `a` of the given body (indented under `a:`).
fn action(body: &str) -> String {
    project("5", &format!("a:\n{}", indent(&dedent(body), 2)))
}

/// A project with the given version and `actions:` body.
fn project(version: &str, actions: &str) -> String {
    format!(
        "version: '{version}'\nactions:\n{}",
        indent(&dedent(actions), 2)
    )
}

fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|line| format!("{}{line}\n", " ".repeat(n)))
        .collect()
}

/// Asserts the file is rejected with exactly `Invalid project: project.yaml\n<reason>`.
#[track_caller]
fn check(yaml: &str, reason: &str) {
    match load_pipeline(yaml) {
        Ok(_) => panic!("accepted, expected {reason:?}:\n{yaml}"),
        Err(error) => {
            let expected = format!("Invalid project: project.yaml\n{reason}");
            assert_eq!(error.message(), expected, "for:\n{yaml}");
            assert_eq!(error.to_string(), expected);
            assert_eq!(error.reason(), reason);
        }
    }
}

#[track_caller]
fn accept(yaml: &str) -> Pipeline {
    match load_pipeline(yaml) {
        Ok(pipeline) => pipeline,
        Err(error) => panic!("rejected: {}\n{yaml}", error.message()),
    }
}

const OUT: &str = "outputs: {highly_sensitive: {x: output/x.csv}}";

#[test]
fn project_level_rules_in_order() {
    let cases: Vec<(String, &str)> = vec![
        // 1. Unknown top-level keys, in file order, before anything else.
        (
            "foo: 1\nactions: {}\nbar: 2\n".into(),
            "Unexpected parameters (foo, bar) in project",
        ),
        // 2. version: missing, null, non-numeric.
        (
            "actions: {}\n".into(),
            "Project file must have a `version` attribute specifying which version of the project configuration format it uses (current latest version is 5)",
        ),
        (
            "version: null\nactions: {}\n".into(),
            "Project file must have a `version` attribute specifying which version of the project configuration format it uses (current latest version is 5)",
        ),
        (
            "version: asdf\nactions: {}\n".into(),
            "`version` must be a number between 1 and 5",
        ),
        (
            "version: [5]\nactions: {}\n".into(),
            "`version` must be a number between 1 and 5",
        ),
        (
            "version: {a: 1}\n".into(),
            "`version` must be a number between 1 and 5",
        ),
        // 3. actions must be a mapping (missing, null, a list, a string).
        (
            "version: 5\n".into(),
            "Project `actions` section must be a dictionary of key/value pairs",
        ),
        (
            "version: 5\nactions:\n".into(),
            "Project `actions` section must be a dictionary of key/value pairs",
        ),
        (
            "version: 5\nactions: [a]\n".into(),
            "Project `actions` section must be a dictionary of key/value pairs",
        ),
        (
            "version: 5\nactions: a\n".into(),
            "Project `actions` section must be a dictionary of key/value pairs",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
}

#[test]
fn action_shape_rules_in_order() {
    let cases: Vec<(String, &str)> = vec![
        // 4.1 run_all is reserved from v5.
        (
            project("5", &format!("run_all:\n  run: python:v2 a.py\n  {OUT}\n")),
            "`run_all` is a reserved action name and is not allowed for user-defined actions.",
        ),
        // 4.2 a mapping with run and outputs (run is looked for first).
        (
            project("5", "a: python:v2 a.py\n"),
            "Configuration for action a must be a dictionary of key/value pairs",
        ),
        (
            project("5", "a:\n"),
            "Configuration for action a must be a dictionary of key/value pairs",
        ),
        (
            action("needs: []\n"),
            "Action a must contain a configuration for 'run'",
        ),
        (
            action("run: python:v2 a.py\n"),
            "Action a must contain a configuration for 'outputs'",
        ),
        // 4.3 unknown action keys, in file order.
        (
            action(&format!("run: python:v2 a.py\n{OUT}\nfoo: 1\nbar: 2\n")),
            "Unexpected parameters (foo, bar) in action a",
        ),
        // 4.4 types: outputs, run, needs, config, dummy_data_file, in that order.
        (
            action("run: 5\noutputs: [x]\n"),
            "`outputs` section for action a must be a dictionary of key/value pairs",
        ),
        (
            action("run: python:v2 a.py\noutputs:\n"),
            "`outputs` section for action a must be a dictionary of key/value pairs",
        ),
        (
            action(&format!("run: 5\n{OUT}\nneeds: b\n")),
            "`run` section for action a must be a string",
        ),
        (
            action(&format!("run:\n{OUT}\n")),
            "`run` section for action a must be a string",
        ),
        (
            action(&format!(
                "run: python:v2 a.py\n{OUT}\nneeds: b\nconfig: 1\n"
            )),
            "`needs` section for action a must be a list",
        ),
        (
            action(&format!(
                "run: python:v2 a.py\n{OUT}\nconfig: [1]\ndummy_data_file: 1\n"
            )),
            "`config` section for action a must be a dictionary of key/value pairs",
        ),
        (
            action(&format!("run: python:v2 a.py\n{OUT}\ndummy_data_file: 1\n")),
            "`dummy_data_file` section for action a must be a string",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
}

#[test]
fn output_section_rules_in_order() {
    let with_outputs =
        |outputs: &str| action(&format!("run: python:v2 a.py\noutputs: {outputs}\n"));
    let cases: Vec<(String, &str)> = vec![
        (
            with_outputs("{}"),
            "must specify at least one output of: highly_sensitive, moderately_sensitive, minimally_sensitive",
        ),
        (
            with_outputs("{highly_sensitive: null}"),
            "must specify at least one output of: highly_sensitive, moderately_sensitive, minimally_sensitive",
        ),
        // Only unknown keys: the "at least one" message; with a valid level: the unknown key.
        (
            with_outputs("{foo: {x: a.csv}}"),
            "must specify at least one output of: highly_sensitive, moderately_sensitive, minimally_sensitive",
        ),
        (
            with_outputs("{foo: 1, highly_sensitive: {x: a.csv}, bar: 2}"),
            "Unexpected parameters (foo, bar) in `outputs` section for action a",
        ),
        (
            with_outputs("{highly_sensitive: [a.csv]}"),
            "`highly_sensitive` section for action a must be a dictionary of key/value pairs",
        ),
        (
            with_outputs("{moderately_sensitive: a.csv}"),
            "`moderately_sensitive` section for action a must be a dictionary of key/value pairs",
        ),
        (
            with_outputs("{highly_sensitive: {x: 5}}"),
            "`x` output for action a must be a string",
        ),
        (
            with_outputs("{highly_sensitive: {x: null}}"),
            "`x` output for action a must be a string",
        ),
        // Levels are checked high, then moderate, then minimal, whatever the file order.
        (
            with_outputs("{minimally_sensitive: {m: m}, highly_sensitive: {h: h}}"),
            "Output path h is invalid: output paths must have a file type extension at the end",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
}

#[test]
fn output_path_rules_in_check_order() {
    let high = |path: &str| {
        action(&format!(
            "run: python:v2 a.py\noutputs:\n  highly_sensitive:\n    x: '{path}'\n"
        ))
    };
    let moderate = |path: &str| {
        action(&format!(
            "run: python:v2 a.py\noutputs:\n  moderately_sensitive:\n    x: '{path}'\n"
        ))
    };
    let cases: Vec<(String, &str)> = vec![
        // 1. back slashes (before the wildcard rule even when both apply).
        (
            high("output\\*?.csv"),
            "Output path output\\*?.csv is invalid: contains back slashes (use forward slashes only)",
        ),
        // 2. `**`, then `?`, then `[`.
        (
            high("output/**/a?.csv"),
            "Output path output/**/a?.csv is invalid: contains '**' (only the * wildcard character is supported)",
        ),
        (
            high("output/a?[.csv"),
            "Output path output/a?[.csv is invalid: contains '?' (only the * wildcard character is supported)",
        ),
        (
            high("output/a[0].csv"),
            "Output path output/a[0].csv is invalid: contains '[' (only the * wildcard character is supported)",
        ),
        // 3. a file extension, not ending in `*`; a leading dot is no extension.
        (
            high("output/a"),
            "Output path output/a is invalid: output paths must have a file type extension at the end",
        ),
        (
            high("output/a.*"),
            "Output path output/a.* is invalid: output paths must have a file type extension at the end",
        ),
        (
            high("output/.csv"),
            "Output path output/.csv is invalid: output paths must have a file type extension at the end",
        ),
        (
            high("metadata"),
            "Output path metadata is invalid: output paths must have a file type extension at the end",
        ),
        // 4. moderately sensitive file types; the path is shown normalised.
        (
            moderate("output/a.feather"),
            "Output path output/a.feather is invalid: output/a.feather is not an allowed file type for moderately_sensitive outputs",
        ),
        (
            moderate("output//a.feather"),
            "Output path output//a.feather is invalid: output/a.feather is not an allowed file type for moderately_sensitive outputs",
        ),
        // 5. standard form.
        (
            high("output//a.csv"),
            "Output path output//a.csv is invalid: is not in standard form (contains double slashes or '..' elements)",
        ),
        (
            high("output/../a.csv"),
            "Output path output/../a.csv is invalid: is not in standard form (contains double slashes or '..' elements)",
        ),
        (
            high("./a.csv"),
            "Output path ./a.csv is invalid: is not in standard form (contains double slashes or '..' elements)",
        ),
        (
            high("output/a.csv/"),
            "Output path output/a.csv/ is invalid: is not in standard form (contains double slashes or '..' elements)",
        ),
        // 6. metadata.
        (
            high("metadata/a.csv"),
            "Output path metadata/a.csv is invalid: should not include the metadata directory",
        ),
        // 7. absolute, POSIX or Windows.
        (
            high("/tmp/a.csv"),
            "Output path /tmp/a.csv is invalid: is an absolute path",
        ),
        (
            high("c:/a.csv"),
            "Output path c:/a.csv is invalid: is an absolute path",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
}

#[test]
fn run_and_needs_rules() {
    let run = |run: &str| action(&format!("run: {run}\n{OUT}\n"));
    let cases: Vec<(String, &str)> = vec![
        (run("''"), "run must have a value, a has an empty run key"),
        (
            run("python"),
            "Action command python must have a version specified in the form :vN (e.g. python:v2)",
        ),
        (
            run("'python: a.py'"),
            "Action command python must have a version specified in the form :vN (e.g. python:v2)",
        ),
        (
            run("python:other a.py"),
            "Action command python must have a version specified in the form :vN (e.g. python:v2)",
        ),
        (
            run("python:v1x1"),
            "Action command python must have a version specified in the form :vN (e.g. python:v2)",
        ),
        (
            run("python:3.11"),
            "Action command python must have a version specified in the form :vN (e.g. python:v2)",
        ),
        (
            run("':v'"),
            "Action command  must have a version specified in the form :vN (e.g. :v2)",
        ),
        // The run string is checked before needs.
        (
            action(&format!("run: python\n{OUT}\nneeds: ['b c']\n")),
            "Action command python must have a version specified in the form :vN (e.g. python:v2)",
        ),
        (
            action(&format!("run: python:v2 a.py\n{OUT}\nneeds: [b, 'c d']\n")),
            "`needs` actions should be separated with commas, but a needs `c d`",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
}

#[test]
fn cohortextractor_generate_cohort_rules() {
    let cases: Vec<(String, &str)> = vec![
        (
            project(
                "2",
                "a:\n  run: cohortextractor:latest generate_cohort\n  outputs:\n    highly_sensitive: {x: output/x.csv}\n    moderately_sensitive: {y: output/y.csv}\n",
            ),
            "A `generate_cohort` action must have exactly one output; a had 2",
        ),
        (
            project(
                "2",
                "a:\n  run: cohortextractor:latest generate_cohort --study-definition s\n  outputs:\n    highly_sensitive: {x: output/a/x.csv, y: output/b/y.csv, z: output/a/z.csv}\n",
            ),
            "generate_cohort command should produce output in only one directory, found 2:\n - output/a/\n - output/b/",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
    // An explicit --output-dir lifts the one-directory rule.
    let pipeline = accept(&project(
        "2",
        "a:\n  run: cohortextractor:latest generate_cohort --output-dir=output\n  outputs:\n    highly_sensitive: {x: output/a/x.csv, y: output/b/y.csv}\n",
    ));
    let a = pipeline.action("a").unwrap();
    assert!(a.is_database_action());
    // Several directories: the controller adds no --output-dir of its own.
    assert_eq!(a.run_argv(), ["generate_cohort", "--output-dir=output"]);
    // One directory: the controller appends it.
    let pipeline = accept(&project(
        "2",
        "a:\n  run: cohortextractor:v1 generate_cohort\n  outputs:\n    highly_sensitive: {x: output/a/x.csv}\n",
    ));
    assert_eq!(
        pipeline.action("a").unwrap().run_command(),
        "cohortextractor:v1 generate_cohort --output-dir=output/a"
    );
}

#[test]
fn ehrql_generate_dataset_output_rules() {
    let ehrql = |run: &str, outputs: &str| action(&format!("run: {run}\noutputs: {outputs}\n"));
    let cases: Vec<(String, &str)> = vec![
        (
            ehrql(
                "ehrql:v1 generate-dataset d.py --output output/a.csv",
                "{highly_sensitive: {x: output/a.csv}, moderately_sensitive: {y: output/b.csv}}",
            ),
            "`a` action uses `generate-dataset` and so all outputs must be labelled `highly_sensitive`",
        ),
        (
            ehrql(
                "ehrql:v1 generate-dataset d.py --output output/a.csv",
                "{highly_sensitive: {x: output/a.csv}, minimally_sensitive: {y: output/b.csv}}",
            ),
            "`a` action uses `generate-dataset` and so all outputs must be labelled `highly_sensitive`",
        ),
        (
            ehrql(
                "ehrql:v1 generate-dataset d.py",
                "{highly_sensitive: {x: output/a.csv}}",
            ),
            "`a` action does not provide an `--output` argument specifying where the results of `generate-dataset` should be stored",
        ),
        (
            ehrql(
                "ehrql:v1 generate-dataset d.py --output",
                "{highly_sensitive: {x: output/a.csv}}",
            ),
            "`a` action does not provide an `--output` argument specifying where the results of `generate-dataset` should be stored",
        ),
        (
            ehrql(
                "ehrql:v1 generate-dataset d.py --output output/a.csv",
                "{highly_sensitive: {x: output/b.csv}}",
            ),
            "output specification must match the `--output` argument in the `run` command\n              got: output/b.csv\nbut was expecting: output/a.csv",
        ),
        (
            ehrql(
                "ehrql:v1 generate-dataset d.py --output=output/tables:arrow",
                "{highly_sensitive: {x: output/tables/a.arrow, y: output/other/b.arrow}}",
            ),
            "output specification must match the `--output` argument in the `run` command\n              got: output/tables/a.arrow                   \noutput/other/b.arrow\nbut was expecting: output/tables/:arrow",
        ),
        // The underscore spelling and the old databuilder name are covered too.
        (
            ehrql(
                "databuilder:v0 generate_dataset d.py --output output/a.csv",
                "{moderately_sensitive: {x: output/a.csv}}",
            ),
            "`a` action uses `generate-dataset` and so all outputs must be labelled `highly_sensitive`",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
    // The directory form also accepts patterns in subdirectories (fnmatch's `*` crosses `/`).
    accept(&ehrql(
        "ehrql:v1 generate-dataset d.py --output output/tables/:arrow",
        "{highly_sensitive: {x: output/tables/a.arrow, y: output/tables/sub/b.arrow}}",
    ));
    // An empty moderately_sensitive section is falsy in the reference and allowed.
    accept(&ehrql(
        "ehrql:v1 generate-dataset d.py --output output/a.csv",
        "{highly_sensitive: {x: output/a.csv}, moderately_sensitive: {}}",
    ));
}

#[test]
fn project_wide_rules_in_order() {
    let two = |version: &str, a: &str, b: &str| {
        project(
            version,
            &format!("a:\n{}b:\n{}", indent(a, 2), indent(b, 2)),
        )
    };
    let cases: Vec<(String, &str)> = vec![
        // 5. v4+: cohortextractor images.
        (
            project(
                "4",
                "a:\n  run: cohortextractor:v1 generate_codelist_report\n  outputs: {highly_sensitive: {x: output/x.csv}}\n",
            ),
            "Action a uses cohortextractor actions, which are not supported in this version.",
        ),
        // ...checked for every action before the :latest rule.
        (
            two(
                "5",
                "run: python:latest a.py\noutputs: {highly_sensitive: {x: x.csv}}",
                "run: cohortextractor-v2:v1 x\noutputs: {highly_sensitive: {y: y.csv}}",
            ),
            "Action b uses cohortextractor actions, which are not supported in this version.",
        ),
        // 6. v5: the latest tag.
        (
            action(&format!("run: python:latest a.py\n{OUT}\n")),
            "Action a uses `python:latest`, which is not supported. Provide a version e.g. `:v2` instead",
        ),
        // 7. duplicate run strings name the later action and the earlier one.
        (
            two(
                "5",
                "run: python:v2 a.py\noutputs: {highly_sensitive: {x: x.csv}}",
                "run: python:v2 a.py\noutputs: {highly_sensitive: {x: output/x.csv}}",
            ),
            "Action b has the same 'run' command as other actions: a",
        ),
        // 8. v2+: duplicate output paths, across or within actions.
        (
            two(
                "2",
                "run: python:v2 a.py\noutputs: {highly_sensitive: {x: output/x.csv}}",
                "run: python:v2 b.py\noutputs: {moderately_sensitive: {y: output/x.csv}}",
            ),
            "Output path output/x.csv is not unique",
        ),
        (
            action("run: python:v2 a.py\noutputs: {highly_sensitive: {x: x.csv, y: x.csv}}\n"),
            "Output path x.csv is not unique",
        ),
        // 9. unknown needs.
        (
            action(&format!("run: python:v2 a.py\n{OUT}\nneeds: [nope]\n")),
            "Action `a` references an unknown action in its `needs` list: nope",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
    // Before v2 duplicate output paths are allowed.
    accept(&two(
        "1",
        "run: python:v2 a.py\noutputs: {highly_sensitive: {x: output/x.csv}}",
        "run: python:v2 b.py\noutputs: {highly_sensitive: {y: output/x.csv}}",
    ));
    // Duplicate runs compare the raw string: two spaces differ.
    accept(&two(
        "5",
        "run: python:v2 a.py\noutputs: {highly_sensitive: {x: x.csv}}",
        "run: python:v2  a.py\noutputs: {highly_sensitive: {y: y.csv}}",
    ));
}

#[test]
fn expectations_rules() {
    let body = format!("a:\n  run: python:v2 a.py\n  {OUT}\n");
    let with = |version: &str, expectations: &str| {
        format!("{}expectations: {expectations}\n", project(version, &body))
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with("4", "{population_size: 10}"),
            "Project includes `expectations` section, which is not supported in this version. This section is only applicable to deprecated cohortextractor actions; you can safely remove it.",
        ),
        (
            project("3", &body),
            "Project must include `expectations` section",
        ),
        (
            with("3", "[1]"),
            "Project `expectations` section must be a dictionary of key/value pairs",
        ),
        (
            with("3", "{}"),
            "Project `expectations` section must include `population_size` section",
        ),
        (
            with("3", "{population_size: 5, foo: 1}"),
            "Unexpected parameters (foo) in project `expectations` section",
        ),
        (
            with("3", "{population_size: lots}"),
            "Project expectations population size must be a number",
        ),
        (
            with("3", "{population_size: '5.0'}"),
            "Project expectations population size must be a number",
        ),
        (
            with("3", "{population_size: null}"),
            "Project expectations population size must be a number",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
    let size = |yaml: &str| accept(yaml).expectations().unwrap().population_size;
    assert_eq!(size(&with("3", "{population_size: 5}")), 5);
    assert_eq!(size(&with("3", "{population_size: '7'}")), 7);
    assert_eq!(size(&with("3", "{population_size: 5.9}")), 5);
    assert_eq!(size(&with("3.0", "{population_size: 5}")), 5);
    // Up to v2, and between 3 and 4, the population is forced to 1000.
    assert_eq!(size(&with("2", "{population_size: 5}")), 1000);
    assert_eq!(size(&with("3.5", "[not, even, a, mapping]")), 1000);
    assert_eq!(size(&project("1", &body)), 1000);
    // A null section counts as absent from v4.
    assert_eq!(accept(&with("4", "null")).expectations(), None);
}

#[test]
fn the_first_error_wins() {
    let cases: Vec<(String, &str)> = vec![
        // Unknown top-level keys come before a missing version.
        ("foo: 1\n".into(), "Unexpected parameters (foo) in project"),
        // A bad version comes before bad actions.
        (
            "version: x\nactions: 1\n".into(),
            "`version` must be a number between 1 and 5",
        ),
        // Actions are checked one at a time, in file order: the first action's last rule wins
        // over the second action's first.
        (
            project(
                "5",
                "a:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n  needs: ['b c']\nb: 1\n",
            ),
            "`needs` actions should be separated with commas, but a needs `b c`",
        ),
        // Per-action rules come before project-wide ones (duplicate run, unknown needs).
        (
            project(
                "5",
                "a:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n  needs: [nope]\nb:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\nc: 1\n",
            ),
            "Configuration for action c must be a dictionary of key/value pairs",
        ),
        // Duplicate run before duplicate outputs before unknown needs.
        (
            project(
                "5",
                "a:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n  needs: [nope]\nb:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n",
            ),
            "Action b has the same 'run' command as other actions: a",
        ),
        (
            project(
                "5",
                "a:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n  needs: [nope]\nb:\n  run: python:v2 b.py\n  outputs: {highly_sensitive: {x: x.csv}}\n",
            ),
            "Output path x.csv is not unique",
        ),
        // Unknown needs before the expectations rules.
        (
            format!(
                "{}expectations: {{population_size: 1}}\n",
                project(
                    "5",
                    "a:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n  needs: [nope]\n",
                )
            ),
            "Action `a` references an unknown action in its `needs` list: nope",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
}

/// Spec §1.14, each case accepted or rejected on purpose.
#[test]
fn edge_cases_of_the_reference_are_pinned() {
    let simple = |version: &str| project(version, &format!("a:\n  run: python:v2 a.py\n  {OUT}\n"));

    // version 0 and -1: accepted like v1, population 1000, old-version warning.
    for (version, shown) in [("0", "0.0"), ("-1", "-1.0")] {
        let pipeline = accept(&simple(version));
        assert_eq!(pipeline.expectations().unwrap().population_size, 1000);
        assert_eq!(
            pipeline.warnings(),
            [format!(
                "ProjectWarning: Your project file is using an old version ({shown}); consider updating to version 5"
            )]
        );
    }
    // A fractional version: flags for >= 4 on, >= 5 off (so :latest is fine).
    let pipeline = accept(&project(
        "4.5",
        &format!("a:\n  run: python:latest a.py\n  {OUT}\n"),
    ));
    assert_eq!(pipeline.version().to_string(), "4.5");
    // The version may be a number or a numeric string.
    for version in [
        "version: 5",
        "version: 5.0",
        "version: '5'",
        "version: \" 5.0 \"",
    ] {
        let yaml = format!("{version}\nactions: {{}}\n");
        let pipeline = accept(&yaml);
        assert_eq!(pipeline.version().as_f64(), 5.0);
        assert!(pipeline.warnings().is_empty());
    }

    // version 4 with a run_all action: accepted with a warning, left out of all_actions.
    let pipeline = accept(&project(
        "4",
        &format!(
            "run_all:\n  run: python:v2 all.py\n  {OUT}\nb:\n  run: python:v2 b.py\n  outputs: {{highly_sensitive: {{y: y.csv}}}}\n"
        ),
    ));
    assert_eq!(pipeline.action_names(), ["b"]);
    assert!(pipeline.action("run_all").is_some());
    assert_eq!(pipeline.topological_order().len(), 1);
    assert_eq!(
        pipeline.warnings()[1],
        "ProjectWarning: `run_all` is a reserved action name; user-defined actions with this name are ignored and will raise an error in later versions."
    );

    // a needs [a] and a <-> b: the reference accepts these; we reject them (see below).
    // needs [b, b]: accepted, kept as written.
    let pipeline = accept(&project(
        "5",
        &format!(
            "a:\n  run: python:v2 a.py\n  {OUT}\n  needs: [b, b]\nb:\n  run: python:v2 b.py\n  outputs: {{highly_sensitive: {{y: y.csv}}}}\n"
        ),
    ));
    assert_eq!(pipeline.action("a").unwrap().needs(), ["b", "b"]);
    let order: Vec<&str> = pipeline
        .topological_order()
        .iter()
        .map(|a| a.name())
        .collect();
    assert_eq!(order, ["b", "a"]);

    // run with only an image; dev and -pre tags.
    for run in ["python:v2", "python:dev a.py", "r:v1.2-pre a.R"] {
        let pipeline = accept(&action(&format!("run: {run}\n{OUT}\n")));
        assert_eq!(pipeline.action("a").unwrap().run().raw, run);
    }
    assert!(
        accept(&action(&format!("run: python:v2\n{OUT}\n")))
            .action("a")
            .unwrap()
            .run()
            .args
            .is_empty()
    );

    // Two spaces after the ehrQL tag bypass the ehrQL output rules.
    let pipeline = accept(&action(
        "run: ehrql:v1  generate-dataset d.py\noutputs: {moderately_sensitive: {x: output/x.csv}}\n",
    ));
    assert!(pipeline.action("a").unwrap().is_database_action());

    // --output=X plus an extra pattern: the spec need only be one of the patterns.
    accept(&action(
        "run: ehrql:v1 generate-dataset d.py --output=output/a.csv\noutputs: {highly_sensitive: {x: output/a.csv, y: output/other.csv}}\n",
    ));

    // An empty level: zero outputs.
    let pipeline = accept(&action(
        "run: python:v2 a.py\noutputs: {highly_sensitive: {}}\n",
    ));
    let a = pipeline.action("a").unwrap();
    assert!(a.output_spec().is_empty());
    assert_eq!(a.outputs_at(Privacy::HighlySensitive), Some(&[][..]));

    // A null level beside a real one.
    let pipeline = accept(&action(
        "run: python:v2 a.py\noutputs: {highly_sensitive: null, moderately_sensitive: {x: a.csv}}\n",
    ));
    assert_eq!(
        pipeline
            .action("a")
            .unwrap()
            .outputs_at(Privacy::HighlySensitive),
        None
    );

    // An output at the workspace root, an action id with spaces and punctuation.
    let pipeline = accept(&project(
        "5",
        "'my action!':\n  run: python:v2 a.py\n  outputs: {moderately_sensitive: {counts: counts.txt}}\n",
    ));
    assert_eq!(pipeline.action_names(), ["my action!"]);
    assert_eq!(pipeline.action("my action!").unwrap().output_dirs(), ["."]);
}

/// Where the reference crashes or says nothing, we reject with our own message.
#[test]
fn deliberate_differences_have_their_own_messages() {
    let cases: Vec<(String, &str)> = vec![
        // Dependency cycles, named.
        (
            action(&format!("run: python:v2 a.py\n{OUT}\nneeds: [a]\n")),
            "Action a has a circular dependency: a -> a",
        ),
        (
            project(
                "5",
                "a:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n  needs: [b]\nb:\n  run: python:v2 b.py\n  outputs: {highly_sensitive: {y: y.csv}}\n  needs: [c]\nc:\n  run: python:v2 c.py\n  outputs: {highly_sensitive: {z: z.csv}}\n  needs: [a]\n",
            ),
            "Action a has a circular dependency: a -> b -> c -> a",
        ),
        (
            project(
                "5",
                "x:\n  run: python:v2 x.py\n  outputs: {highly_sensitive: {w: w.csv}}\n  needs: [b]\na:\n  run: python:v2 a.py\n  outputs: {highly_sensitive: {x: x.csv}}\n  needs: [b]\nb:\n  run: python:v2 b.py\n  outputs: {highly_sensitive: {y: y.csv}}\n  needs: [a]\n",
            ),
            "Action b has a circular dependency: b -> a -> b",
        ),
        // A version above the latest (a raw ValueError in the reference).
        (
            "version: 6\nactions: {}\n".into(),
            "The latest version is v5, but got v6.0",
        ),
        (
            "version: '5.5'\nactions: {}\n".into(),
            "The latest version is v5, but got v5.5",
        ),
        (
            "version: .inf\nactions: {}\n".into(),
            "The latest version is v5, but got vinf",
        ),
        // NaN passes every comparison in the reference.
        (
            "version: .nan\nactions: {}\n".into(),
            "`version` must be a number between 1 and 5",
        ),
        // An unbalanced quote or a trailing backslash in run (a raw ValueError).
        (
            action(&format!("run: python:v2 \"a.py\n{OUT}\n")),
            "`run` section for action a cannot be split into words: it has an unbalanced quote (No closing quotation)",
        ),
        (
            action(&format!("run: python:v2 a.py \\\n{OUT}\n")),
            "`run` section for action a cannot be split into words: it ends with a lone backslash (No escaped character)",
        ),
        // A run of only white space (an IndexError) counts as empty.
        (
            action(&format!("run: '   '\n{OUT}\n")),
            "run must have a value, a has an empty run key",
        ),
        // A non-string needs item (a TypeError).
        (
            action(&format!("run: python:v2 a.py\n{OUT}\nneeds: [b, 1]\n")),
            "`needs` section for action a must be a list of action names, but it contains 1",
        ),
        (
            action(&format!("run: python:v2 a.py\n{OUT}\nneeds: [[b]]\n")),
            "`needs` section for action a must be a list of action names, but it contains ['b']",
        ),
        // Empty and non-mapping documents (a TypeError).
        (
            "".into(),
            "Project file is empty; it must be a dictionary of key/value pairs with `version` and `actions` sections",
        ),
        (
            "# nothing here\n".into(),
            "Project file is empty; it must be a dictionary of key/value pairs with `version` and `actions` sections",
        ),
        (
            "- version: 5\n".into(),
            "Project file must be a dictionary of key/value pairs, not a list",
        ),
        (
            "just text\n".into(),
            "Project file must be a dictionary of key/value pairs, not a string",
        ),
        (
            "~\n".into(),
            "Project file must be a dictionary of key/value pairs, not empty",
        ),
        // A leading `..` survives normalisation in the reference.
        (
            action("run: python:v2 a.py\noutputs: {highly_sensitive: {x: ../a.csv}}\n"),
            "Output path ../a.csv is invalid: is not in standard form (contains double slashes or '..' elements)",
        ),
    ];
    for (yaml, reason) in cases {
        check(&yaml, reason);
    }
}

#[test]
fn yaml_errors_name_the_file_line_and_column() {
    let yaml = "top_level:\n    duplicate: 1\n    duplicate: 2\n";
    let error = load_pipeline(yaml).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Yaml);
    assert_eq!(
        error.message(),
        "Invalid project: project.yaml\nfound duplicate key \"duplicate\" with value \"2\" (original value: \"1\")\n  in \"project.yaml\", line 3, column 5"
    );
    assert_eq!(error.location(), Some(Location { line: 3, column: 5 }));

    // Duplicate action names are caught by the YAML layer too, wherever they are.
    let yaml = project(
        "5",
        &format!("a:\n  run: python:v2 a.py\n  {OUT}\na:\n  run: python:v2 b.py\n  {OUT}\n"),
    );
    let error = load_pipeline(&yaml).unwrap_err();
    assert!(
        error
            .reason()
            .starts_with("found duplicate key \"a\" with value"),
        "{}",
        error.message()
    );
    assert_eq!(error.location(), Some(Location { line: 6, column: 3 }));

    // A syntax error carries the parser's position.
    let error = load_pipeline("version: 5\nactions: {a: [\n").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Yaml);
    assert!(
        error
            .message()
            .starts_with("Invalid project: project.yaml\n")
    );
    assert!(
        error.message().contains("  in \"project.yaml\", line "),
        "{}",
        error.message()
    );
    assert!(error.location().is_some());

    // Several documents, unknown tags.
    let error = load_pipeline("version: 5\n---\nactions: {}\n").unwrap_err();
    assert_eq!(
        error.reason(),
        "expected a single document in the stream, but found another document\n  in \"project.yaml\", line 2, column 1"
    );
    let error = load_pipeline("version: !custom 5\nactions: {}\n").unwrap_err();
    assert!(
        error
            .reason()
            .starts_with("could not determine a constructor for the tag '!custom'"),
        "{}",
        error.message()
    );
}

#[test]
fn schema_errors_carry_the_location_of_the_offending_node() {
    let yaml = action("run: python:v2 a.py\noutputs:\n  highly_sensitive:\n    x: output//a.csv\n");
    let error = load_pipeline(&yaml).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Schema);
    assert_eq!(
        error.location(),
        Some(Location {
            line: 7,
            column: 12
        })
    );
    // The message itself stays exactly the reference's.
    assert!(!error.message().contains("line"));

    let error = load_pipeline("version: 5\nactions: {}\nfoo: 1\n").unwrap_err();
    assert_eq!(error.location(), Some(Location { line: 3, column: 1 }));
}

#[test]
fn yaml_features_the_reference_accepts_work() {
    // Anchors, aliases and merge keys, as real project files use them.
    let yaml = dedent(
        "
        version: '5'
        defaults: &defaults
        actions:
          a:
            run: python:v2 a.py
            outputs: &outs
              highly_sensitive: {x: output/a.csv}
          b:
            run: python:v2 b.py
            needs: [a]
            outputs:
              <<: *outs
              moderately_sensitive: {y: output/b.csv}
        ",
    );
    // `defaults` is not a project key.
    check(&yaml, "Unexpected parameters (defaults) in project");
    let yaml = yaml.replace("defaults: &defaults\n", "");
    // The merged highly_sensitive path duplicates a's.
    check(&yaml, "Output path output/a.csv is not unique");
    let yaml = yaml.replace(
        "      <<: *outs\n",
        "      <<: *outs\n      highly_sensitive: {x: output/b.feather}\n",
    );
    let pipeline = accept(&yaml);
    let b = pipeline.action("b").unwrap();
    let patterns: Vec<String> = b.output_spec().into_iter().map(|o| o.pattern).collect();
    assert_eq!(patterns, ["output/b.feather", "output/b.csv"]);
}

#[test]
fn config_json_follows_python_json_dumps() {
    let yaml = action(&format!(
        "run: python:v2 a.py\n{OUT}\nconfig:\n  name: \"it's é\"\n  n: 1.5\n  big: 1e20\n  none: null\n  flag: true\n  1: one\n  nested: {{list: [1, 'two']}}\n"
    ));
    let pipeline = accept(&yaml);
    let a = pipeline.action("a").unwrap();
    let json = r#"{"name": "it\u0027s \u00e9", "n": 1.5, "big": 1e+20, "none": null, "flag": true, "1": "one", "nested": {"list": [1, "two"]}}"#;
    assert_eq!(a.config_json(), Some(json));
    assert_eq!(a.run_command(), format!("python:v2 a.py --config '{json}'"));
    // An empty config adds nothing.
    let pipeline = accept(&action(&format!(
        "run: python:v2 a.py\n{OUT}\nconfig: {{}}\n"
    )));
    assert_eq!(pipeline.action("a").unwrap().run_argv(), ["a.py"]);
}

#[test]
fn database_actions_follow_the_table() {
    let db = |run: &str| {
        let yaml = action(&format!(
            "run: {run}\noutputs: {{highly_sensitive: {{x: output/x.csv}}}}\n"
        ));
        accept(&yaml).action("a").unwrap().is_database_action()
    };
    assert!(db("ehrql:v1 generate-measures m.py --output output/x.csv"));
    assert!(db("sqlrunner:v1 anything"));
    assert!(db("sqlrunner:v1"));
    assert!(!db("ehrql:v1 dump-dataset-sql d.py"));
    assert!(!db("ehrql:v1"));
    assert!(!db("python:v2 generate-dataset"));
    let v3 = |run: &str| {
        let yaml = format!(
            "{}expectations: {{population_size: 10}}\n",
            project(
                "3",
                &format!(
                    "a:\n  run: {run}\n  outputs: {{highly_sensitive: {{x: output/x.csv}}}}\n"
                )
            )
        );
        accept(&yaml).action("a").unwrap().is_database_action()
    };
    assert!(v3("cohortextractor:latest generate_cohort"));
    assert!(v3("cohortextractor:latest generate_codelist_report"));
    assert!(!v3("cohortextractor:latest generate_measures"));
    assert!(v3(
        "databuilder:v0 generate-dataset d.py --output output/x.csv"
    ));
}

#[test]
fn run_command_quotes_like_shlex_join() {
    let pipeline = accept(&action(&format!(
        "run: python:v2 'analysis/my script.py' --flag \"a'b\" ''\n{OUT}\n"
    )));
    let a = pipeline.action("a").unwrap();
    assert_eq!(a.run().args, ["analysis/my script.py", "--flag", "a'b", ""]);
    assert_eq!(
        a.run_command(),
        "python:v2 'analysis/my script.py' --flag 'a'\"'\"'b' ''"
    );
}
