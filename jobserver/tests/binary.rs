//! The built binary: admin commands seed a store, `serve` prints `listening on <addr>` for both
//! listeners, answers HTTP and gRPC, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rap_proto::pb::jobserver::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_rap-jobserver");

fn admin(data_dir: &std::path::Path, args: &[&str], password: Option<&str>) -> String {
    let mut command = Command::new(BIN);
    command.args(args).env("RAP_JOBSERVER_DATA_DIR", data_dir);
    if let Some(password) = password {
        command.env("RAP_JOBSERVER_PASSWORD", password);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Kills the child if the test fails before it is stopped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test]
async fn serve_prints_addresses_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    admin(
        data,
        &[
            "user",
            "add",
            "alice",
            "--fullname",
            "Alice",
            "--email",
            "alice@example.org",
        ],
        Some("pw"),
    );
    let token = admin(data, &["backend", "add", "test", "--name", "Test"], None);
    assert_eq!(token.len(), 40);
    admin(data, &["backend", "add-member", "test", "alice"], None);
    // A bad role is a clear error, not a panic.
    let output = Command::new(BIN)
        .args(["user", "roles", "alice", "Wizard"])
        .env("RAP_JOBSERVER_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown role \"Wizard\""));
    // A project's analysis scope: values outside the reference's lists are refused.
    admin(data, &["org", "add", "org", "--name", "Org"], None);
    admin(
        data,
        &["project", "add", "proj", "--name", "Proj", "--org", "org"],
        None,
    );
    let output = Command::new(BIN)
        .args(["project", "scope", "proj", "--population", "everyone"])
        .env("RAP_JOBSERVER_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(
            "unknown population permission \"everyone\"; allowed are: include_t1oo, include_ndoo, include_gp_unactivated"
        ),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        admin(
            data,
            &[
                "project",
                "scope",
                "proj",
                "--dataset",
                "ukrr",
                "--component",
                "event_level_data"
            ],
            None
        ),
        "set the analysis scope of proj"
    );

    let config = dir.path().join("jobserver.toml");
    std::fs::write(
        &config,
        format!(
            "http_listen = \"127.0.0.1:1\"\ngrpc_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ncontroller_url = \"http://127.0.0.1:9\"\ncontroller_token = \"t\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Child(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            // The environment wins over the file.
            .env("RAP_JOBSERVER_HTTP_LISTEN", "127.0.0.1:0")
            .env_remove("RAP_JOBSERVER_DATA_DIR")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .unwrap()
        .unwrap();
    let addresses: Vec<&str> = lines
        .iter()
        .map(|l| l.strip_prefix("listening on ").unwrap())
        .collect();

    // HTTP: the sign-in page.
    let mut stream = tokio::net::TcpStream::connect(addresses[0]).await.unwrap();
    stream
        .write_all(b"GET /login/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("name=\"password\""));

    // gRPC: Airlock's authorise with the backend token from `backend add`.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addresses[1]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::release_service_client::ReleaseServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::AuthoriseRequest {
        user: "alice".into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let user = client.authorise(request).await.unwrap().into_inner();
    assert_eq!(user.fullname, "Alice");

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.0.wait().unwrap());
    let exit = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
