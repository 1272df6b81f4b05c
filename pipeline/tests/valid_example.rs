//! The complete valid example of spec §1.12 parses to the expected derived data.

use rap_pipeline::{OutputPattern, Privacy, is_allowed_image, load_pipeline, reusable_action_repo};

const EXAMPLE: &str = include_str!("data/valid_example.yaml");

fn output(name: &str, pattern: &str, privacy: Privacy) -> OutputPattern {
    OutputPattern {
        name: name.to_owned(),
        pattern: pattern.to_owned(),
        privacy,
    }
}

#[test]
fn the_spec_example_parses_with_no_warnings() {
    let pipeline = load_pipeline(EXAMPLE).unwrap();
    assert_eq!(pipeline.version().as_f64(), 5.0);
    assert_eq!(pipeline.version().to_string(), "5.0");
    assert_eq!(pipeline.expectations(), None);
    assert!(pipeline.warnings().is_empty(), "{:?}", pipeline.warnings());
    assert_eq!(
        pipeline.action_names(),
        [
            "generate_dataset",
            "generate_dataset_arrow",
            "generate_measures",
            "process_data",
            "describe",
            "reusable"
        ]
    );
    let names: Vec<&str> = pipeline.actions().map(|a| a.name()).collect();
    assert_eq!(names, pipeline.action_names());
}

#[test]
fn the_spec_example_has_the_expected_database_actions_and_images() {
    let pipeline = load_pipeline(EXAMPLE).unwrap();
    let db: Vec<&str> = pipeline
        .actions()
        .filter(|a| a.is_database_action())
        .map(|a| a.name())
        .collect();
    assert_eq!(
        db,
        [
            "generate_dataset",
            "generate_dataset_arrow",
            "generate_measures"
        ]
    );
    let images: Vec<String> = pipeline.action_images().into_iter().collect();
    assert_eq!(images, ["cox-ipw:v0.0.30", "ehrql:v1", "python:v2", "r:v2"]);
}

#[test]
fn the_spec_example_topological_order_puts_needs_first() {
    let pipeline = load_pipeline(EXAMPLE).unwrap();
    let order: Vec<&str> = pipeline
        .topological_order()
        .into_iter()
        .map(|a| a.name())
        .collect();
    assert_eq!(
        order,
        [
            "generate_dataset",
            "generate_dataset_arrow",
            "generate_measures",
            "process_data",
            "describe",
            "reusable"
        ]
    );
    let describe = pipeline.action("describe").unwrap();
    assert_eq!(describe.needs(), ["process_data", "generate_dataset_arrow"]);
    let closure: Vec<&str> = pipeline
        .dependency_closure("describe")
        .unwrap()
        .into_iter()
        .map(|a| a.name())
        .collect();
    assert_eq!(
        closure,
        [
            "generate_dataset",
            "process_data",
            "generate_dataset_arrow",
            "describe"
        ]
    );
    assert!(pipeline.dependency_closure("nope").is_none());
}

#[test]
fn config_becomes_a_json_argument() {
    let pipeline = load_pipeline(EXAMPLE).unwrap();
    let describe = pipeline.action("describe").unwrap();
    let json = r#"{"groups": ["age", "sex"], "threshold": 7}"#;
    assert_eq!(describe.config_json(), Some(json));
    assert_eq!(describe.run().image, "r");
    assert_eq!(describe.run().tag, "v2");
    assert_eq!(describe.run().image_with_tag(), "r:v2");
    assert_eq!(describe.run().args, ["analysis/describe.R"]);
    assert_eq!(
        describe.run_argv(),
        ["analysis/describe.R", "--config", json]
    );
    assert_eq!(
        describe.run_command(),
        format!("r:v2 analysis/describe.R --config '{json}'")
    );
    let process = pipeline.action("process_data").unwrap();
    assert_eq!(process.config_json(), None);
    assert_eq!(
        process.run_command(),
        "python:v2 python analysis/process.py --in output/dataset.csv.gz"
    );
}

#[test]
fn output_spec_lists_every_pattern_with_its_level() {
    let pipeline = load_pipeline(EXAMPLE).unwrap();
    let describe = pipeline.action("describe").unwrap();
    assert_eq!(
        describe.output_spec(),
        [
            output(
                "table",
                "output/describe/table_*.csv",
                Privacy::ModeratelySensitive
            ),
            output(
                "plot",
                "output/describe/plot.png",
                Privacy::ModeratelySensitive
            ),
            output("log", "logs/describe.log", Privacy::ModeratelySensitive),
            output(
                "summary",
                "output/describe/summary.txt",
                Privacy::MinimallySensitive
            ),
        ]
    );
    assert_eq!(describe.output_dirs(), ["output/describe", "logs"]);
    assert_eq!(describe.outputs_at(Privacy::HighlySensitive), None);
    let arrow = pipeline.action("generate_dataset_arrow").unwrap();
    assert_eq!(
        arrow.output_spec(),
        [output(
            "tables",
            "output/tables/*.arrow",
            Privacy::HighlySensitive
        )]
    );
}

#[test]
fn a_name_outside_the_allow_list_is_a_reusable_action() {
    let pipeline = load_pipeline(EXAMPLE).unwrap();
    let reusable = pipeline.action("reusable").unwrap();
    assert_eq!(reusable.run().image, "cox-ipw");
    assert_eq!(reusable.run().tag, "v0.0.30");
    assert!(!is_allowed_image(&reusable.run().image));
    assert_eq!(
        reusable_action_repo(&reusable.run().image).as_deref(),
        Some("opensafely-actions/cox-ipw")
    );
    for action in ["generate_dataset", "process_data", "describe"] {
        let image = &pipeline.action(action).unwrap().run().image;
        assert!(is_allowed_image(image), "{image}");
        assert_eq!(reusable_action_repo(image), None);
    }
}

#[test]
fn parsed_pipelines_and_errors_can_cross_threads() {
    // Services hold pipelines across `.await`s and hand errors to other tasks.
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<rap_pipeline::Pipeline>();
    assert_send_sync::<rap_pipeline::ValidationError>();
    let pipeline = load_pipeline(EXAMPLE).unwrap();
    let names = std::thread::spawn(move || pipeline.action_names().len())
        .join()
        .unwrap();
    assert_eq!(names, 6);
}

#[test]
fn windows_line_endings_and_a_leading_byte_order_mark_parse_the_same() {
    let expected = load_pipeline(EXAMPLE).unwrap();
    let crlf = EXAMPLE.replace('\n', "\r\n");
    assert_eq!(load_pipeline(&crlf).unwrap(), expected);
    let bom = format!("\u{feff}{EXAMPLE}");
    assert_eq!(load_pipeline(&bom).unwrap(), expected);
}
