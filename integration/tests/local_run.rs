//! `rap run` through the built `rap` binary against the real Docker engine, with projects on
//! the locally built test image (`rap.test/busybox:latest`, from `scripts/test-images`).
//! Each test has its own project directory; containers are named after unique job ids.

use std::fs;
use std::path::Path;
use std::process::Output;

#[path = "support/action_images.rs"]
mod action_images;

use rap_integration::study;
use rap_testkit::binaries;

/// A project's `project.yaml` actions run on `busybox:latest` (under `--registry rap.test`).
fn project(actions: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rap-run-test-")
        .tempdir()
        .unwrap();
    fs::write(
        dir.path().join("project.yaml"),
        format!("version: '4.0'\nactions:\n{actions}"),
    )
    .unwrap();
    dir
}

/// Runs `rap run --registry rap.test ARGS…` in `project`.
async fn rap_run(project: &Path, args: &[&str]) -> Output {
    let mut with_registry = vec!["--registry", "rap.test"];
    with_registry.extend(args);
    rap(project, &with_registry).await
}

/// Runs `rap run ARGS…` in `project`.
async fn rap(project: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(binaries::find("rap").unwrap())
        .arg("run")
        .arg("--project-dir")
        .arg(project)
        .args(args)
        .output()
        .await
        .expect("running rap")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

const CHAIN: &str = "  \
  generate:\n    \
    run: busybox:latest sh -c 'mkdir -p output && echo 42 > output/numbers.txt && echo generated'\n    \
    outputs:\n      highly_sensitive:\n        numbers: output/numbers.txt\n  \
  summarise:\n    \
    run: busybox:latest sh -c 'mkdir -p output && (echo total && cat output/numbers.txt) > output/summary.csv'\n    \
    needs: [generate]\n    \
    outputs:\n      moderately_sensitive:\n        summary: output/summary.csv\n";

#[tokio::test]
async fn a_two_action_chain_runs_dependencies_first_and_leaves_outputs_in_the_project() {
    let project = project(CHAIN);
    let dir = project.path();
    let output = rap_run(dir, &["summarise"]).await;
    let text = stdout(&output);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        text.contains("Running actions: generate, summarise"),
        "{text}"
    );
    let generate_done = text.find("generate: Completed successfully").expect(&text);
    let summarise_start = text
        .find("summarise: Preparing your code and workspace files")
        .expect(&text);
    assert!(generate_done < summarise_start, "{text}");
    assert_eq!(
        fs::read_to_string(dir.join("output/numbers.txt")).unwrap(),
        "42\n"
    );
    // The dependant read its input, copied in from the dependency's outputs.
    assert_eq!(
        fs::read_to_string(dir.join("output/summary.csv")).unwrap(),
        "total\n42\n"
    );
    let log = fs::read_to_string(dir.join("metadata/generate.log")).unwrap();
    assert!(log.contains("generated"), "{log}");
    assert!(
        log.contains("status_message: Completed successfully"),
        "{log}"
    );
    assert!(text.contains("=> summarise\n   Completed successfully\n   log file: metadata/summarise.log\n   outputs:\n     output/summary.csv  - moderately_sensitive\n"), "{text}");
    // Nothing of the run's machinery stays in the project tree: no link back into the project,
    // no level-4 copies.
    let state = dir.join("metadata/.rap-run");
    assert!(
        !state
            .join("high_privacy/workspaces")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
    assert!(!state.join("medium_privacy").exists());

    // Everything succeeded and is on disk: nothing to do.
    let again = rap_run(dir, &[]).await;
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        stdout(&again).contains("=> All actions already completed successfully"),
        "{}",
        describe(&again)
    );

    // A deleted output makes its action run again; the dependant's result is reused unless
    // asked for.
    fs::remove_file(dir.join("output/numbers.txt")).unwrap();
    let rerun = rap_run(dir, &["run_all"]).await;
    let text = stdout(&rerun);
    assert!(rerun.status.success(), "{}", describe(&rerun));
    assert!(text.contains("Running actions: generate\n"), "{text}");
    assert_eq!(
        fs::read_to_string(dir.join("output/numbers.txt")).unwrap(),
        "42\n"
    );

    // --force-run-dependencies runs the whole chain again.
    let forced = rap_run(dir, &["-f", "summarise"]).await;
    assert!(forced.status.success(), "{}", describe(&forced));
    assert!(
        stdout(&forced).contains("Running actions: generate, summarise"),
        "{}",
        describe(&forced)
    );
}

#[tokio::test]
async fn a_failing_action_fails_the_run_and_its_dependant_is_not_run() {
    let project = project(
        "  \
  broken:\n    \
    run: busybox:latest sh -c 'echo something went wrong >&2; exit 3'\n    \
    outputs:\n      highly_sensitive:\n        x: output/x.txt\n  \
  after:\n    \
    run: busybox:latest sh -c 'mkdir -p output && touch output/after.txt'\n    \
    needs: [broken]\n    \
    outputs:\n      highly_sensitive:\n        x: output/after.txt\n",
    );
    let dir = project.path();
    let output = rap_run(dir, &[]).await;
    let text = stdout(&output);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(text.contains("broken: Job exited with an error"), "{text}");
    assert!(
        text.contains("=> broken\n   Job exited with an error\n   log file: metadata/broken.log\n   outputs:\n     (no outputs)\n   logs (truncated):\n     something went wrong\n"),
        "{text}"
    );
    assert!(!text.contains("after: Preparing"), "{text}");
    assert!(!text.contains("=> after"), "{text}");
    assert!(!dir.join("output/after.txt").exists());
    assert!(!dir.join("metadata/after.log").exists());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("rap: not every action succeeded"),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn an_unmatched_output_pattern_is_reported_with_the_files_written() {
    let project = project(
        "  \
  typo:\n    \
    run: busybox:latest sh -c 'mkdir -p output && echo 1 > output/resuts.csv'\n    \
    outputs:\n      highly_sensitive:\n        results: output/results.csv\n",
    );
    let dir = project.path();
    let output = rap_run(dir, &["typo"]).await;
    let text = stdout(&output);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        text.contains(
            "=> typo\n   No outputs found matching patterns:\n    - output/results.csv\n   \
             Did you mean to match one of these files instead?\n    - output/resuts.csv\n"
        ),
        "{text}"
    );
    // An unmatched pattern is a failure: the action runs again next time.
    let again = rap_run(dir, &[]).await;
    assert!(
        stdout(&again).contains("Running actions: typo"),
        "{}",
        describe(&again)
    );
}

#[tokio::test]
async fn a_moderately_sensitive_output_failing_a_level4_check_is_reported() {
    let project = project(
        "  \
  extract:\n    \
    run: busybox:latest sh -c 'mkdir -p output && printf \"patient_id,age\\n1,50\\n\" > output/rows.csv'\n    \
    outputs:\n      moderately_sensitive:\n        rows: output/rows.csv\n",
    );
    let dir = project.path();
    let output = rap_run(dir, &[]).await;
    let text = stdout(&output);
    // The job succeeds (as on a backend) but the file is flagged: it would not reach Level 4.
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        text.contains(
            "=> extract\n   Completed successfully, but some file(s) marked as \
             moderately_sensitive were excluded. See job log for details.\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "   invalid moderately_sensitive outputs:\n     output/rows.csv  - File has patient_id column\n"
        ),
        "{text}"
    );
    let log = fs::read_to_string(dir.join("metadata/extract.log")).unwrap();
    assert!(
        log.contains(
            "Invalid moderately_sensitive outputs:\noutput/rows.csv  - File has patient_id column"
        ),
        "{log}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("output/rows.csv")).unwrap(),
        "patient_id,age\n1,50\n"
    );
}

#[tokio::test]
async fn an_invalid_project_gives_the_pipeline_message_and_runs_nothing() {
    let project = project(
        "  \
  a:\n    \
    run: busybox:latest sh -c 'touch ran.txt'\n    \
    needs: [missing]\n    \
    outputs:\n      highly_sensitive:\n        x: ran.txt\n",
    );
    let dir = project.path();
    let yaml = fs::read_to_string(dir.join("project.yaml")).unwrap();
    let expected = rap_pipeline::load_pipeline(&yaml).unwrap_err();
    let output = rap_run(dir, &[]).await;
    assert!(!output.status.success(), "{}", describe(&output));
    let indented: Vec<String> = expected
        .message()
        .lines()
        .map(|line| format!("   {line}"))
        .collect();
    assert_eq!(
        stdout(&output),
        format!("=> ProjectValidationError\n{}\n", indented.join("\n")),
        "{}",
        describe(&output)
    );
    assert!(!dir.join("ran.txt").exists());
    assert!(!dir.join("metadata").exists(), "nothing is created");
}

#[tokio::test]
async fn unknown_actions_and_missing_images_are_refused_before_anything_runs() {
    let project = project(
        "  \
  a:\n    \
    run: busybox:v99 sh -c 'touch ran.txt'\n    \
    outputs:\n      highly_sensitive:\n        x: ran.txt\n",
    );
    let dir = project.path();
    let unknown = rap_run(dir, &["b"]).await;
    assert!(!unknown.status.success(), "{}", describe(&unknown));
    assert_eq!(
        stdout(&unknown),
        "=> UnknownActionError\n   Action 'b' not found in project.yaml\n   \
         Valid action names are:\n     run_all (runs all actions in project)\n     a\n"
    );
    let missing = rap_run(dir, &["a"]).await;
    assert!(!missing.status.success(), "{}", describe(&missing));
    let text = stdout(&missing);
    assert!(
        text.starts_with(
            "=> JobRequestError\n   Docker image rap.test/busybox:v99 is not present on \
             this machine (rap run never pulls images); build it:"
        ),
        "{text}"
    );
    assert!(text.contains("scripts/test-images"), "{text}");
    assert!(!dir.join("ran.txt").exists());
    assert!(!dir.join("metadata").exists(), "nothing is created");
}

#[tokio::test]
async fn the_sample_study_runs_locally_on_dummy_data() {
    action_images::action_images().await;
    let dir = tempfile::Builder::new()
        .prefix("rap-run-sample-")
        .tempdir()
        .unwrap();
    // A git repository, as a researcher's study is: its `.git` stays out of the jobs' code.
    let study = study::commit_study(&study::sample_study(), &dir.path().join("study"))
        .await
        .unwrap();
    let project = study.path.as_path();
    let output = rap(project, &[]).await;
    let text = stdout(&output);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        text.contains("Running actions: generate_dataset, summarise"),
        "{text}"
    );
    let dataset = fs::read_to_string(project.join("output/dataset.csv")).unwrap();
    let mut lines = dataset.lines();
    assert_eq!(lines.next(), Some("patient_id,sex,n_events"));
    let rows = lines.count();
    // No DATABASE_URL reaches a local job, so ehrQL generates dummy patients instead of reading
    // the image's 500-patient database.
    assert!(rows > 0 && rows != 500, "{rows} rows:\n{dataset}");
    let summary = fs::read_to_string(project.join("output/summary.csv")).unwrap();
    let patients: usize = summary
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(1).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(patients, rows, "{summary}");
    assert!(
        fs::read_to_string(project.join("output/chart.svg"))
            .unwrap()
            .contains("<svg"),
    );
    assert!(
        text.contains("   outputs:\n     output/chart.svg  - moderately_sensitive\n     output/summary.csv  - moderately_sensitive\n"),
        "{text}"
    );
}

#[tokio::test]
async fn ctrl_c_kills_the_running_container_and_reports_the_action_cancelled() {
    use tokio::io::AsyncBufReadExt;

    let project = project(
        "  \
  slow:\n    \
    run: busybox:latest sh -c 'sleep 600'\n    \
    outputs:\n      highly_sensitive:\n        x: output/never.txt\n",
    );
    let dir = project.path();
    let mut child = tokio::process::Command::new(binaries::find("rap").unwrap())
        .arg("run")
        .arg("--project-dir")
        .arg(dir)
        .args(["--registry", "rap.test"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let started = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line == "slow: Executing job on the backend" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "{seen}");
    let pid = child.id().unwrap();
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
        .await
        .expect("rap run did not stop after SIGINT")
        .unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(!status.success(), "{seen}");
    assert!(seen.contains("slow: Cancelled by user\n"), "{seen}");
    assert!(seen.contains("=> slow\n   Cancelled by user\n"), "{seen}");
    // The container is gone: none is left with this project's workspace label.
    let docker = bollard::Docker::connect_with_unix_defaults().unwrap();
    let workspace = dir.file_name().unwrap().to_string_lossy().into_owned();
    let label = format!("workspace={workspace}");
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&std::collections::HashMap::from([(
            "label",
            vec![label.as_str()],
        )]))
        .build();
    let containers = docker.list_containers(Some(options)).await.unwrap();
    assert!(containers.is_empty(), "{containers:?}");
}
