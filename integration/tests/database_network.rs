//! A database action reaches the backend's database only through the job's database network:
//! a PostgreSQL server (`scripts/database-image`) runs on a unique internal Docker network with
//! no published ports, and the real `rap-controller` and `rap-agent` (configured with that
//! network and a `postgresql://` URL naming the server's container) run a study whose ehrQL
//! action (`ehrql:v1`, from `scripts/action-images`) writes its dataset from it. A non-database
//! action of the same request, given no network, cannot reach the same server.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support/action_images.rs"]
mod action_images;
#[path = "support/backend.rs"]
mod backend;
#[path = "support/postgres.rs"]
mod postgres;

use backend::Backend;
use postgres::{Postgres, docker};
use rap_integration::requests;
use rap_integration::stack::{self, AgentOptions};
use rap_proto::pb::rap::v1 as pb;

const REQUEST_DEADLINE: Duration = Duration::from_secs(180);
const BACKEND: &str = "test";
const DATABASE: &str = "patients";

/// The backend's data: five patients, six events (patient 2 and 5 have none).
const DATA: &str = r#"
CREATE TABLE patients (patient_id BIGINT NOT NULL, date_of_birth DATE, sex TEXT COLLATE "C",
    date_of_death DATE);
CREATE TABLE clinical_events (patient_id BIGINT NOT NULL, date DATE,
    snomedct_code TEXT COLLATE "C", numeric_value DOUBLE PRECISION);
INSERT INTO patients VALUES
    (1, '1950-01-01', 'female', NULL), (2, '1960-02-01', 'male', NULL),
    (3, '1970-03-01', 'female', '2020-01-01'), (4, '1980-04-01', 'intersex', NULL),
    (5, '1990-05-01', 'unknown', NULL);
INSERT INTO clinical_events VALUES
    (1, '2020-01-01', '60621009', 20.5), (1, '2021-01-01', '27113001', 21.0),
    (3, '2019-06-01', '38341003', 30.0),
    (4, '2018-01-01', '60621009', 18.0), (4, '2019-01-01', '60621009', 19.0),
    (4, '2022-01-01', '27113001', 25.5);
"#;

/// What the sample study's definition (population: every patient; sex; number of events)
/// gives for [`DATA`].
const EXPECTED_ROWS: [&str; 5] = [
    "1,female,2",
    "2,male,0",
    "3,female,1",
    "4,intersex,3",
    "5,unknown,0",
];

/// Tries a TCP connection to the database's host and port; records the outcome.
const PROBE: &str = "mkdir -p output
if nc -w 5 \"$1\" 5432 </dev/null; then echo reachable; else echo unreachable; fi > output/probe.txt
";

fn project(db_host: &str) -> String {
    format!(
        "version: '4.0'
actions:
  generate_dataset:
    run: ehrql:v1 generate-dataset analysis/dataset_definition.json --output output/dataset.csv
    outputs:
      highly_sensitive:
        dataset: output/dataset.csv
  probe:
    run: python:v2 analysis/probe.sh {db_host}
    outputs:
      moderately_sensitive:
        probe: output/probe.txt
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_action_reads_postgres_only_through_the_database_network() {
    action_images::action_images().await;
    // Declared before the stack, so it is dropped after the agent stops.
    let db = Postgres::start("rap-dbnet").await;
    db.psql("postgres", &format!("CREATE DATABASE {DATABASE};"))
        .await;
    db.psql(DATABASE, DATA).await;
    assert_eq!(
        db.psql(DATABASE, "SELECT count(*) FROM patients;")
            .await
            .trim(),
        "5"
    );

    // The server is on an internal network and nothing is published on the host; the host
    // cannot resolve its name (the agent's own lookup of the URL's host pins nothing, so the
    // job resolves it with Docker's DNS on the network).
    let internal = docker(&[
        "network",
        "inspect",
        "--format",
        "{{.Internal}}",
        &db.network,
    ])
    .await;
    assert_eq!(internal.trim(), "true");
    let ports = docker(&[
        "container",
        "inspect",
        "--format",
        "{{json .HostConfig.PortBindings}}|{{json .NetworkSettings.Ports}}|{{len .NetworkSettings.Networks}}",
        &db.name,
    ])
    .await;
    assert_eq!(ports.trim(), "{}|{}|1", "no published port, one network");
    assert!(
        tokio::net::lookup_host((db.name.as_str(), 5432))
            .await
            .is_err(),
        "the host resolves {}",
        db.name
    );
    // The probe works where the network is: the same image and command on the database
    // network reach the server, so an "unreachable" from the job means no route, not a
    // broken probe.
    docker(&[
        "run",
        "--rm",
        "--network",
        &db.network,
        "--entrypoint",
        "/bin/nc",
        "ghcr.io/opensafely-core/python:v2",
        "-w",
        "5",
        &db.name,
        "5432",
    ])
    .await;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let options = AgentOptions {
        work_dir: root.join("backend"),
        database_url: db.url(DATABASE),
        database_network: db.network.clone(),
        allowed_images: vec!["ehrql".into(), "python".into()],
    };
    let Backend {
        installation,
        controller,
        agent,
    } = Backend::start(&root, BACKEND, &options).await;
    let work_dir = options.work_dir.clone();

    let repo = backend::sample_study_with(
        &root,
        "study",
        &[
            ("project.yaml", &project(&db.name)),
            ("analysis/probe.sh", PROBE),
        ],
    )
    .await;

    let mut client = stack::rap_client(&installation, &controller.rap_endpoint)
        .await
        .unwrap();
    let rap_id = requests::new_rap_id();
    let response = requests::submit(
        &mut client,
        &installation,
        pb::SubmitJobRequest {
            rap_id: rap_id.clone(),
            backend: BACKEND.into(),
            workspace: "dbnet".into(),
            repo_url: repo.path.display().to_string(),
            branch: "main".into(),
            commit: repo.commit.clone(),
            database_name: "default".into(),
            requested_actions: vec!["generate_dataset".into(), "probe".into()],
            codelists_ok: true,
            created_by: "e2e".into(),
            project: "e2e".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(response.count, 2);
    let jobs =
        requests::run_to_completion(&mut client, &installation, &rap_id, 2, REQUEST_DEADLINE)
            .await
            .unwrap();
    for action in ["generate_dataset", "probe"] {
        let job = &jobs[action];
        assert_eq!(
            job.status_code(),
            pb::StatusCode::Succeeded,
            "{action}: {}",
            job.status_message
        );
    }
    assert!(jobs["generate_dataset"].requires_db);
    assert!(!jobs["probe"].requires_db);

    // The dataset is the server's data, row for row.
    let high = work_dir.join("high_privacy/workspaces/dbnet");
    let dataset = std::fs::read_to_string(high.join("output/dataset.csv")).unwrap();
    let mut lines = dataset.lines();
    assert_eq!(lines.next(), Some("patient_id,sex,n_events"), "{dataset}");
    let mut rows: Vec<&str> = lines.collect();
    rows.sort_unstable();
    assert_eq!(rows, EXPECTED_ROWS, "{dataset}");

    // The non-database job had no network: the same host and port were unreachable from it.
    let probe = std::fs::read_to_string(high.join("output/probe.txt")).unwrap();
    assert_eq!(probe.trim(), "unreachable");

    // The URL (with its password) went only into the job's environment: the recorded
    // metadata of the database job redacts it.
    let job_logs = work_dir.join("job_logs");
    let metadata = find_file(
        &job_logs,
        &format!("os-job-{}", jobs["generate_dataset"].identifier),
        "metadata.json",
    );
    let text = std::fs::read_to_string(metadata).unwrap();
    assert!(!text.contains(postgres::PASSWORD), "password in metadata");
    assert!(text.contains("xxxx-REDACTED-xxxx"));

    drop(agent);
    drop(controller);
}

/// `<root>/<month>/<dir>/<name>`.
fn find_file(root: &Path, dir: &str, name: &str) -> PathBuf {
    for month in std::fs::read_dir(root).unwrap() {
        let candidate = month.unwrap().path().join(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("no {dir}/{name} under {}", root.display());
}
