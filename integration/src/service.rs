//! One child process of the stack. Its stdout and stderr go, line by line, to a log file and to
//! an in-memory window that [`Service::wait_for_line`] watches, so readiness is an event (the
//! binary's `listening on <addr>` line), never a sleep. The child runs in its own process group,
//! so a Ctrl-C at the terminal reaches only `rap`, which then stops the children in order.
//!
//! Ownership: the [`Service`] owns the child. [`Service::stop`] sends SIGTERM and waits (then
//! SIGKILL after the grace period); dropping a running `Service` kills it, and while the thread
//! is panicking (a failing test) the drop also prints the log, so a failure explains itself. If
//! the parent dies without either (SIGKILL), the kernel sends the child SIGTERM (parent-death
//! signal).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How many recent output lines are kept in memory for waits (the log file has them all).
const WINDOW: usize = 4096;

/// Recent output lines.
#[derive(Default)]
struct Window {
    lines: VecDeque<String>,
}

/// A running child process with its log.
pub struct Service {
    name: String,
    /// `None` once stopped or reaped.
    child: Option<Child>,
    log_path: PathBuf,
    output: watch::Receiver<Window>,
}

impl Service {
    /// Starts `command` as `name`, appending its output to `log_path`.
    ///
    /// # Errors
    /// The log file cannot be opened or the program cannot be started.
    pub async fn start(
        name: &str,
        mut command: Command,
        log_path: &Path,
    ) -> anyhow::Result<Service> {
        if let Some(dir) = log_path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // If whoever started the child dies without stopping it (SIGKILL, a test harness
        // killing `rap up`), the kernel sends the child SIGTERM: no orphaned services.
        // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
        // which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        let (sender, output) = watch::channel(Window::default());
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(copy_lines(
                stdout,
                open_log(log_path).await?,
                sender.clone(),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(copy_lines(
                stderr,
                open_log(log_path).await?,
                sender.clone(),
            ));
        }
        // The copiers hold the only senders: when both end, receivers see the channel closed.
        drop(sender);
        Ok(Service {
            name: name.to_owned(),
            child: Some(child),
            log_path: log_path.to_owned(),
            output,
        })
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Waits until an output line starts with `prefix` and returns the rest of the line
    /// (trimmed). Lines already printed count; the `skip`th match onwards is returned
    /// (`skip = 0`: the first). Fails if the process ends its output first or `deadline`
    /// passes, quoting the end of the log.
    ///
    /// # Errors
    /// Timeout or the process's output closing before the line appeared.
    pub async fn wait_for_line(
        &mut self,
        prefix: &str,
        skip: usize,
        deadline: Duration,
    ) -> anyhow::Result<String> {
        let mut found = None;
        let output = &mut self.output;
        let waited = tokio::time::timeout(deadline, async {
            // The guard `wait_for` returns is dropped here, before any other await.
            output
                .wait_for(|window| {
                    let mut matches = window
                        .lines
                        .iter()
                        .filter_map(|line| line.strip_prefix(prefix));
                    match matches.nth(skip) {
                        Some(rest) => {
                            found = Some(rest.trim().to_owned());
                            true
                        }
                        None => false,
                    }
                })
                .await
                .is_ok()
        })
        .await;
        match (waited, found) {
            (Ok(_), Some(rest)) => Ok(rest),
            (Ok(_), None) => bail!(
                "{} ended its output before printing '{prefix}'; its log ({}) ends:\n{}",
                self.name,
                self.log_path.display(),
                self.tail(40).await
            ),
            (Err(_), _) => bail!(
                "{} did not print '{prefix}' within {deadline:?}; its log ({}) ends:\n{}",
                self.name,
                self.log_path.display(),
                self.tail(40).await
            ),
        }
    }

    /// The last `n` lines of the log file.
    pub async fn tail(&self, n: usize) -> String {
        let text = tokio::fs::read_to_string(&self.log_path)
            .await
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the process: SIGTERM, up to `grace` for it to exit, then SIGKILL.
    ///
    /// # Errors
    /// Waiting on the child failed.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        self.signal_and_wait(libc::SIGTERM, grace).await
    }

    /// Sends SIGKILL and reaps the process (a crash, for recovery tests).
    ///
    /// # Errors
    /// Waiting on the child failed.
    pub async fn kill(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
            .await
    }

    /// Waits for the process to exit by itself (for `rap up`: a child that dies).
    ///
    /// # Errors
    /// Waiting failed.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name);
        };
        let status = child.wait().await?;
        self.child = None;
        Ok(status)
    }

    async fn signal_and_wait(
        &mut self,
        signal: libc::c_int,
        grace: Duration,
    ) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) with the pid of our own unreaped child and a valid signal number;
            // the pid cannot be reused before we reap the child below.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => Ok(Some(
                status.with_context(|| format!("waiting for {}", self.name))?,
            )),
            Err(_) => {
                child.kill().await.ok();
                Ok(child.try_wait().ok().flatten())
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop would do this too; start it now so the dump below is final.
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "----- {} log ({}), last 200 lines -----\n{}\n----- end of {} log -----",
                self.name,
                self.log_path.display(),
                lines[lines.len().saturating_sub(200)..].join("\n"),
                self.name
            );
        }
    }
}

async fn open_log(path: &Path) -> anyhow::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))
}

/// Copies lines from a child's pipe to the log file and the window until the pipe closes.
async fn copy_lines(
    pipe: impl tokio::io::AsyncRead + Unpin,
    mut log: tokio::fs::File,
    window: watch::Sender<Window>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // A log write failure (disk full) must not stop the readiness window.
        let _ = log.write_all(format!("{line}\n").as_bytes()).await;
        window.send_modify(|w| {
            if w.lines.len() == WINDOW {
                w.lines.pop_front();
            }
            w.lines.push_back(line);
        });
    }
    // Dropping the sender here: when both copiers have ended, waiters see the channel closed.
    let _ = log.flush().await;
}
