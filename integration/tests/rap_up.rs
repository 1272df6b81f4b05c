//! `rap up` as a user runs it: the built `rap` binary over a fresh data directory, every
//! service on a free port, the pages answering, then SIGINT stops everything and `rap` exits 0.
//! A second `rap up` on the same directory reuses the installation and the accounts.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(120);

/// Starts `rap up` and reads its summary up to the `Logs:` line; returns the child and the
/// summary's `Name: value` lines and account lines.
async fn rap_up(data_dir: &std::path::Path) -> (Child, BTreeMap<String, String>, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rap"))
        .arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--controller-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--jobserver-listen",
            "127.0.0.1:0",
            "--jobserver-grpc-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--airlock-listen",
            "127.0.0.1:0",
            "--database-network",
            "rap-test-db",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut fields = BTreeMap::new();
    let mut accounts = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut in_accounts = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Logs:") {
                return;
            }
            if line.starts_with("Accounts") {
                in_accounts = true;
            } else if line.is_empty() {
                in_accounts = false;
            } else if in_accounts {
                accounts.push(line.trim().to_string());
            } else if let Some((name, value)) = line.split_once(":  ") {
                fields.insert(name.to_string(), value.trim().to_string());
            }
        }
        panic!("rap up ended its output before the summary");
    })
    .await;
    assert!(
        read.is_ok(),
        "rap up did not print its summary in {DEADLINE:?}"
    );
    (child, fields, accounts)
}

/// The status code of `GET url` (plain HTTP/1.0).
async fn get(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

async fn interrupt_and_wait(mut child: Child) {
    let pid = child.id().unwrap();
    // SAFETY: kill(2) on our own unreaped child with a valid signal.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("rap up did not stop after SIGINT")
        .unwrap();
    assert!(status.success(), "rap up exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rap_up_serves_every_service_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, fields, accounts) = rap_up(&data).await;
    let jobserver = fields["Job server"].clone();
    let airlock = fields["Airlock"].clone();
    assert_eq!(get(&jobserver).await, Some(200), "{jobserver}");
    assert_eq!(
        get(&format!("{airlock}login/")).await,
        Some(200),
        "{airlock}"
    );
    let users: Vec<&str> = accounts
        .iter()
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(users, ["researcher", "checker1", "checker2"]);
    assert!(data.join("study/.git").is_dir());
    assert!(data.join("controller/controller.toml").is_file());
    interrupt_and_wait(child).await;
    // Every service stopped with it.
    assert_eq!(get(&jobserver).await, None, "the job server still answers");
    assert_eq!(get(&format!("{airlock}login/")).await, None);

    // Again on the same data directory: the same installation and accounts.
    let (child, _, accounts_again) = rap_up(&data).await;
    assert_eq!(accounts_again, accounts);
    interrupt_and_wait(child).await;
}
