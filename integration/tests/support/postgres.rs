//! A PostgreSQL server in a container (`rap.test/postgres:15`, built by
//! `scripts/database-image` from the host's PostgreSQL 15) on its own unique internal Docker
//! network, with no published ports: a backend database reachable only from that network.

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::Command;

pub const IMAGE: &str = "rap.test/postgres:15";
pub const USER: &str = "rap";
pub const PASSWORD: &str = "rap-test-password";
/// How long the server may take to initialise its cluster and start.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// Builds the image unless it is current; panics with the script's error output.
pub async fn database_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| {
        BUILT
            .get_or_init(|| {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/database-image");
                let output = std::process::Command::new(script)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !output.status.success() {
                    return Err(String::from_utf8_lossy(&output.stderr).into_owned());
                }
                Ok(())
            })
            .clone()
    })
    .await
    .unwrap();
    if let Err(error) = result {
        panic!("scripts/database-image failed: {error}");
    }
}

/// Runs `docker args…`; panics with its error output unless it succeeds; returns its stdout.
pub async fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().await.unwrap();
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The server's container and its network; both removed on drop, with any container still on
/// the network (the network is this test's alone).
pub struct Postgres {
    /// The container's name, which is also its host name on the network.
    pub name: String,
    pub network: String,
}

impl Postgres {
    /// Creates a unique internal network, starts the server on it alone (no published ports) and
    /// waits until it accepts connections.
    pub async fn start(prefix: &str) -> Postgres {
        database_image().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let unique = format!("{prefix}-{}-{nanos}", std::process::id());
        let postgres = Postgres {
            name: format!("{unique}-pg"),
            network: format!("{unique}-net"),
        };
        docker(&["network", "create", "--internal", &postgres.network]).await;
        docker(&[
            "run",
            "--detach",
            "--name",
            &postgres.name,
            "--network",
            &postgres.network,
            "--env",
            &format!("POSTGRES_USER={USER}"),
            "--env",
            &format!("POSTGRES_PASSWORD={PASSWORD}"),
            IMAGE,
        ])
        .await;
        postgres.wait_until_ready().await;
        postgres
    }

    /// Follows the server's log (PostgreSQL logs to stderr) until it says it accepts
    /// connections, then confirms with `pg_isready` over TCP inside the container.
    async fn wait_until_ready(&self) {
        let mut logs = Command::new("docker")
            .args(["logs", "--follow", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(logs.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(READY_DEADLINE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let done = line.contains("database system is ready to accept connections");
                seen.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "{} not ready within {READY_DEADLINE:?}; its log:\n{}",
            self.name,
            seen.join("\n")
        );
        let _ = logs.kill().await;
        let isready = docker(&[
            "exec",
            &self.name,
            "pg_isready",
            "--host",
            "127.0.0.1",
            "--username",
            USER,
        ])
        .await;
        assert!(isready.contains("accepting connections"), "{isready}");
    }

    /// Runs `sql` with psql in the container (its local socket), stopping at the first error.
    pub async fn psql(&self, database: &str, sql: &str) -> String {
        let mut child = Command::new("docker")
            .args([
                "exec",
                "--interactive",
                &self.name,
                "psql",
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set",
                "ON_ERROR_STOP=1",
                "--host",
                "/tmp",
                "--username",
                USER,
                "--dbname",
                database,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(sql.as_bytes()).await.unwrap();
        drop(stdin);
        let output = child.wait_with_output().await.unwrap();
        assert!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The URL a job on the network uses for `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{USER}:{PASSWORD}@{}:5432/{database}",
            self.name
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let attached = std::process::Command::new("docker")
            .args(["ps", "--all", "--quiet", "--filter"])
            .arg(format!("network={}", self.network))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut remove = vec!["rm".to_string(), "--force".into(), "--volumes".into()];
        remove.push(self.name.clone());
        remove.extend(attached.split_whitespace().map(str::to_owned));
        let _ = std::process::Command::new("docker")
            .args(&remove)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.network])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
