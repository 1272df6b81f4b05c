//! The built `rap-controller` binary: it prints `listening on <addr>` once bound, serves real
//! clients, and after a `kill -9` in the middle of a stream of submissions it restarts on the
//! same data directory with every acknowledged request present exactly once.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::*;
use rap_proto::pb::rap::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running binary; killed on drop.
struct Process {
    child: Child,
    rap_addr: SocketAddr,
}

async fn spawn(config_path: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rap-controller"))
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env("RAP_CONTROLLER_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.parse::<SocketAddr>().unwrap();
            }
        }
        panic!("the binary exited before listening");
    })
    .await
    .expect("the binary prints its address");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process {
        child,
        rap_addr: addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_submissions_keeps_every_acknowledged_request_exactly_once() {
    let setup = Setup::new(|_| {}).await;
    let config_path = setup.dir.path().join("controller.toml");
    let config = format!(
        r#"data_dir = "{data}"
listen = "127.0.0.1:0"
agent_listen = "127.0.0.1:0"
allow_local_repos = true
allowed_github_orgs = ["opensafely"]
admin_token_sha256 = "{admin}"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[[clients]]
name = "jobserver"
token_sha256 = "{client}"
backends = ["test"]

[[backends]]
name = "test"
"#,
        data = setup.config.data_dir.display(),
        admin = setup.config.admin_token_sha256,
        ca = setup.config.tls.ca.display(),
        cert = setup.config.tls.cert.display(),
        key = setup.config.tls.key.display(),
        client = setup.config.clients[0].token_sha256,
    );
    std::fs::write(&config_path, config).unwrap();

    let mut process = spawn(&config_path).await;
    let mut client = rap_client(&setup.ca_pem, process.rap_addr).await;

    // Submit until 20 are acknowledged, with more in flight when the process is killed.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::channel::<String>(1000);
    let submitter = {
        let mut client = client.clone();
        let template = submit_request(&setup, "x", &["solo"]);
        tokio::spawn(async move {
            for i in 0..10_000u32 {
                let mut request = template.clone();
                request.rap_id = format!("{i:016}");
                request.workspace = format!("ws{i}");
                match client.submit_job(authed(CLIENT_TOKEN, request)).await {
                    Ok(response) => {
                        assert_eq!(response.into_inner().count, 1);
                        if acked_tx.send(format!("{i:016}")).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        })
    };
    let mut acked = Vec::new();
    while acked.len() < 20 {
        acked.push(
            tokio::time::timeout(WAIT, acked_rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    process.child.start_kill().unwrap(); // SIGKILL
    process.child.wait().await.unwrap();
    let _ = submitter.await;
    while let Ok(rap_id) = acked_rx.try_recv() {
        acked.push(rap_id);
    }

    let process = spawn(&config_path).await;
    client = rap_client(&setup.ca_pem, process.rap_addr).await;
    let status = client
        .get_job_status(authed(
            CLIENT_TOKEN,
            pb::GetJobStatusRequest {
                rap_ids: acked.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.unrecognised_rap_ids.is_empty(),
        "lost: {:?}",
        status.unrecognised_rap_ids
    );
    assert_eq!(
        status.jobs.len(),
        acked.len(),
        "each acknowledged request exactly once"
    );
    let resubmit = client
        .submit_job(authed(CLIENT_TOKEN, {
            let mut request = submit_request(&setup, &acked[0], &["solo"]);
            request.workspace = format!(
                "ws{}",
                acked[0].trim_start_matches('0').parse::<u32>().unwrap_or(0)
            );
            request
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resubmit.result, pb::SubmitResult::NoChange as i32);
    assert_eq!(resubmit.count, 1);
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_usable_installation() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rap-controller"))
        .args([
            "init",
            "--backend",
            "test",
            "--backend",
            "tpp",
            "--allow-local-repos",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = rap_controller::config::Config::load(&dir.path().join("controller.toml")).unwrap();
    assert!(config.allow_local_repos);
    assert_eq!(config.backends.len(), 2);
    let token = std::fs::read_to_string(dir.path().join("client-token")).unwrap();
    assert_eq!(
        config.clients[0].token_sha256,
        rap_controller::rpc::auth::token_hash(&token)
    );
    assert!(
        !std::fs::read_to_string(dir.path().join("controller.toml"))
            .unwrap()
            .contains(&token)
    );
    use std::os::unix::fs::PermissionsExt;
    for secret in ["client-token", "admin-token", "ca.key", "agent-tpp.key"] {
        let mode = std::fs::metadata(dir.path().join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{secret} is private");
    }
    let agent = std::fs::read_to_string(dir.path().join("agent-tpp.toml")).unwrap();
    for key in [
        "backend = \"tpp\"",
        "[controller]",
        "endpoint",
        "ca_cert",
        "cert",
        "key",
        "work_dir",
    ] {
        assert!(agent.contains(key), "{key} in {agent}");
    }
    // A second init refuses to overwrite the CA.
    let again = Command::new(env!("CARGO_BIN_EXE_rap-controller"))
        .args(["init", "--backend", "test", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
}
