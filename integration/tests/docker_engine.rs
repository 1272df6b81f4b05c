//! The foundation's promise that tests drive a real Docker engine: a container from the locally
//! built test image (`scripts/test-images`) runs through bollard, and its output and exit code
//! come back. Nothing is pulled from a public registry.

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

const TEST_IMAGE: &str = "rap.test/busybox:latest";

async fn docker() -> Docker {
    Docker::connect_with_unix_defaults()
        .expect("Docker socket")
        .negotiate_version()
        .await
        .expect("Docker engine reachable (scripts/services starts it)")
}

/// Runs `cmd` in a fresh container and returns (exit code, stdout), removing the container.
async fn run_to_completion(docker: &Docker, name: &str, cmd: &[&str]) -> (i64, String) {
    let _ = docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            ContainerCreateBody {
                image: Some(TEST_IMAGE.to_string()),
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                network_disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create container");
    docker
        .start_container(name, None)
        .await
        .expect("start container");

    let wait = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let exit_code = match docker.wait_container(name, Some(wait)).next().await {
        Some(Ok(response)) => response.status_code,
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
        other => panic!("unexpected wait result: {other:?}"),
    };

    let logs = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(false)
        .build();
    let mut stdout = String::new();
    let mut stream = docker.logs(name, Some(logs));
    while let Some(chunk) = stream.next().await {
        stdout.push_str(&chunk.expect("log chunk").to_string());
    }
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .expect("remove container");
    (exit_code, stdout)
}

#[tokio::test]
async fn a_container_from_the_test_image_runs_and_reports_output_and_exit_code() {
    let docker = docker().await;

    let (code, stdout) = run_to_completion(
        &docker,
        "rap-foundation-test-ok",
        &["sh", "-c", "echo hello from $(uname -s)"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(stdout, "hello from Linux\n");

    let (code, stdout) = run_to_completion(
        &docker,
        "rap-foundation-test-fail",
        &["sh", "-c", "echo partial; exit 3"],
    )
    .await;
    assert_eq!(code, 3);
    assert_eq!(stdout, "partial\n");
}
