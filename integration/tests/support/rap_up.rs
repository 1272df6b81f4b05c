//! `rap up` as a user runs it, for the tests that need the whole system: the built `rap`
//! binary over a fresh data directory, every service on a free port, its summary read back.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `rap up` may take to print its summary, or to stop after SIGINT.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A running `rap up` and what its summary said.
pub struct RapUp {
    /// The `rap` process (killed on drop).
    pub child: Child,
    /// The summary's `Name:  value` lines (`Job server`, `Airlock`, `Controller`, …).
    pub fields: BTreeMap<String, String>,
    /// The accounts it lists, in order: (username, password).
    pub accounts: Vec<(String, String)>,
}

/// Starts `rap up` on `data_dir` with `env` added to its environment (its children inherit
/// it) and reads its summary up to the `Logs:` line.
#[allow(dead_code)] // a test binary may use only `rap_up_with`
pub async fn rap_up(data_dir: &Path, env: &[(&str, &str)]) -> RapUp {
    rap_up_with(data_dir, &[], env).await
}

/// As [`rap_up`], with `args` added to its command line (e.g. `--study DIR`).
pub async fn rap_up_with(data_dir: &Path, args: &[&OsStr], env: &[(&str, &str)]) -> RapUp {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rap"))
        .arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
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
        .envs(env.iter().copied())
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
                let mut words = line.split_whitespace();
                let username = words.next().unwrap().to_string();
                let password = words.next().unwrap().to_string();
                accounts.push((username, password));
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
    RapUp {
        child,
        fields,
        accounts,
    }
}

impl RapUp {
    /// The password `rap up` gave `username`.
    pub fn password(&self, username: &str) -> &str {
        self.accounts
            .iter()
            .find(|(name, _)| name == username)
            .map(|(_, password)| password.as_str())
            .unwrap_or_else(|| panic!("rap up lists no account {username}"))
    }

    /// Sends SIGINT, as Ctrl-C would, and requires `rap` to stop every service and exit 0.
    pub async fn interrupt_and_wait(mut self) {
        let pid = self.child.id().unwrap();
        // SAFETY: kill(2) on our own unreaped child with a valid signal.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("rap up did not stop after SIGINT")
            .unwrap();
        assert!(status.success(), "rap up exited with {status}");
    }
}
