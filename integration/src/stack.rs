//! The stack's pieces, started as real processes with real configuration: an installation made
//! by `rap-controller init` (CA, certificates, tokens, `controller.toml`, `agent-<backend>.toml`),
//! then the controller, an agent, the job server and Airlock. Listen addresses may be port 0:
//! each process's `listening on <addr>` line says where it bound, and the next process is
//! configured with that address.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rap_proto::pb::rap::v1 as pb;
use rap_testkit::binaries;
use tokio::process::Command;
use tonic::transport::Channel;

use crate::service::Service;

/// How long a process may take to print its `listening on` line.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a process may take to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// An installation written by `rap-controller init`: where its files are and its secrets.
pub struct Installation {
    /// The directory `init` wrote.
    pub dir: PathBuf,
    /// The one backend configured.
    pub backend: String,
    /// `ca.crt`: the CA that signed every certificate.
    pub ca: PathBuf,
    /// The job server's token on the controller (`client-token`).
    pub client_token: String,
    /// The operators' token (`admin-token`).
    pub admin_token: String,
}

impl Installation {
    /// Runs `rap-controller init --dir DIR --backend BACKEND --allow-local-repos` unless `DIR`
    /// already holds an installation, then reads it.
    ///
    /// # Errors
    /// `init` failed, or the files it writes are missing.
    pub async fn init(dir: &Path, backend: &str) -> anyhow::Result<Installation> {
        if !dir.join("controller.toml").exists() {
            let output = Command::new(binaries::find("rap-controller")?)
                .arg("init")
                .arg("--dir")
                .arg(dir)
                .args(["--backend", backend, "--allow-local-repos"])
                .output()
                .await
                .context("running rap-controller init")?;
            if !output.status.success() {
                bail!(
                    "rap-controller init failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|text| text.trim().to_owned())
                .with_context(|| format!("reading {}", path.display()))
        };
        Ok(Installation {
            client_token: read("client-token")?,
            admin_token: read("admin-token")?,
            ca: dir.join("ca.crt"),
            backend: backend.to_owned(),
            dir,
        })
    }

    /// `controller.toml`.
    pub fn controller_config(&self) -> PathBuf {
        self.dir.join("controller.toml")
    }

    /// `agent-<backend>.toml`.
    pub fn agent_config(&self) -> PathBuf {
        self.dir.join(format!("agent-{}.toml", self.backend))
    }
}

/// A running controller and where it listens.
pub struct Controller {
    /// The process.
    pub service: Service,
    /// The RAP API and admin services, `https://localhost:<port>`.
    pub rap_endpoint: String,
    /// The agent service, `https://localhost:<port>`.
    pub agent_endpoint: String,
    /// The address the RAP API is bound to (`127.0.0.1:<port>`): a restart on it keeps the
    /// endpoints the clients and the agent were given.
    pub rap_listen: String,
    /// The address the agent service is bound to.
    pub agent_listen: String,
}

/// Starts `rap-controller serve` on `listen` (RAP API) and `agent_listen` (agents), logging to
/// `log`, and waits until both are bound.
///
/// # Errors
/// The binary is missing, or it did not report both listeners in time.
pub async fn start_controller(
    installation: &Installation,
    listen: &str,
    agent_listen: &str,
    log: &Path,
) -> anyhow::Result<Controller> {
    let mut command = Command::new(binaries::find("rap-controller")?);
    command
        .arg("serve")
        .arg("--config")
        .arg(installation.controller_config())
        .args(["--listen", listen, "--agent-listen", agent_listen]);
    let mut service = Service::start("rap-controller", command, log).await?;
    let rap = service
        .wait_for_line("listening on ", 0, START_DEADLINE)
        .await?;
    let agent = service
        .wait_for_line("agents connect to ", 0, START_DEADLINE)
        .await?;
    Ok(Controller {
        rap_endpoint: https_localhost(&rap)?,
        agent_endpoint: https_localhost(&agent)?,
        rap_listen: rap,
        agent_listen: agent,
        service,
    })
}

/// What the agent gets beyond its `init`-written configuration.
pub struct AgentOptions {
    /// The root of the agent's disk layout (`high_privacy/`, `medium_privacy/`, …).
    pub work_dir: PathBuf,
    /// The URL of the `default` database (given to the agent by environment, never a file).
    pub database_url: String,
    /// The Docker network database jobs join (created if missing, as an internal network).
    pub database_network: String,
    /// The images (names under the registry) this agent may run: the ones this installation
    /// has, replacing `init`'s list of every reference image.
    pub allowed_images: Vec<String>,
}

/// The agent's command (`serve` or `check`) with the installation's configuration and the
/// options as environment overrides.
fn agent_command(
    installation: &Installation,
    agent_endpoint: &str,
    options: &AgentOptions,
    subcommand: &str,
) -> anyhow::Result<Command> {
    let mut command = Command::new(binaries::find("rap-agent")?);
    command
        .arg(subcommand)
        .arg("--config")
        .arg(installation.agent_config())
        .env("RAP_AGENT_CONTROLLER_ENDPOINT", agent_endpoint)
        .env("RAP_AGENT_WORK_DIR", &options.work_dir)
        .env("RAP_AGENT_DATABASE_NETWORK", &options.database_network)
        .env("RAP_AGENT_ALLOWED_IMAGES", options.allowed_images.join(","))
        .env("RAP_AGENT_DATABASE_URL_ENV", "DEFAULT_DATABASE_URL")
        .env("DEFAULT_DATABASE_URL", &options.database_url);
    Ok(command)
}

/// Starts the agent as [`start_agent`] does once `rap-agent check` has passed on exactly the
/// same configuration (directories, certificates and their backend, Docker, every allowed
/// image present, the database URL): a misconfiguration fails here with the agent's report,
/// not later as jobs that never run.
///
/// # Errors
/// A check failed (the message is the agent's report), or the agent cannot be started.
pub async fn start_checked_agent(
    installation: &Installation,
    agent_endpoint: &str,
    options: &AgentOptions,
    log: &Path,
) -> anyhow::Result<Service> {
    check_agent(installation, agent_endpoint, options)
        .await
        .context("the agent's configuration (missing images? run scripts/action-images)")?;
    start_agent(installation, agent_endpoint, options, log).await
}

/// Runs `rap-agent check` with the configuration [`start_agent`] uses.
async fn check_agent(
    installation: &Installation,
    agent_endpoint: &str,
    options: &AgentOptions,
) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(&options.work_dir)
        .await
        .with_context(|| format!("creating {}", options.work_dir.display()))?;
    let output = agent_command(installation, agent_endpoint, options, "check")?
        .output()
        .await
        .context("running rap-agent check")?;
    if !output.status.success() {
        bail!(
            "rap-agent check failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Starts `rap-agent serve` with the installation's agent configuration, pointed at
/// `agent_endpoint`. The agent opens no listener; it is ready once it has connected, which
/// callers observe through the jobs it runs.
///
/// # Errors
/// The binary is missing, the network cannot be created, or the agent cannot be started.
pub async fn start_agent(
    installation: &Installation,
    agent_endpoint: &str,
    options: &AgentOptions,
    log: &Path,
) -> anyhow::Result<Service> {
    ensure_docker_network(&options.database_network).await?;
    tokio::fs::create_dir_all(&options.work_dir)
        .await
        .with_context(|| format!("creating {}", options.work_dir.display()))?;
    let command = agent_command(installation, agent_endpoint, options, "serve")?;
    Service::start("rap-agent", command, log).await
}

/// Creates the Docker network `name` (internal: no route out) unless it exists.
///
/// Docker allows two networks with one name (and then refuses to attach a container to
/// either: "ambiguous"), so concurrent callers in this process are serialised.
///
/// # Errors
/// The `docker` command failed.
pub async fn ensure_docker_network(name: &str) -> anyhow::Result<()> {
    static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _creating = CREATING.lock().await;
    let exists = Command::new("docker")
        .args(["network", "inspect", name])
        .output()
        .await
        .context("running docker network inspect")?;
    if exists.status.success() {
        return Ok(());
    }
    let created = Command::new("docker")
        .args(["network", "create", "--internal", name])
        .output()
        .await
        .context("running docker network create")?;
    // Another process may have created it meanwhile.
    if !created.status.success()
        && !String::from_utf8_lossy(&created.stderr).contains("already exists")
    {
        bail!(
            "docker network create {name} failed: {}",
            String::from_utf8_lossy(&created.stderr).trim()
        );
    }
    Ok(())
}

/// A RAP API client over TLS with the installation's CA.
///
/// # Errors
/// The CA cannot be read or the controller cannot be reached.
pub async fn rap_client(
    installation: &Installation,
    endpoint: &str,
) -> anyhow::Result<pb::rap_service_client::RapServiceClient<Channel>> {
    let tls = rap_proto::tls::tls_client(&installation.ca)?;
    let channel = Channel::from_shared(endpoint.to_owned())
        .context("controller endpoint")?
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(pb::rap_service_client::RapServiceClient::new(channel))
}

/// `message` with the job server's bearer token.
///
/// # Errors
/// The token is not valid header text.
pub fn authed<T>(installation: &Installation, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {}", installation.client_token)
        .parse()
        .context("the client token is not valid header text")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The job server's web app and ReleaseService addresses.
pub struct JobServer {
    /// The process.
    pub service: Service,
    /// `http://<addr>` of the web app.
    pub url: String,
    /// `http://<addr>` of the ReleaseService (plain gRPC on loopback).
    pub grpc_url: String,
}

/// Starts the job server with the configuration file written by [`jobserver_config`].
///
/// # Errors
/// The server did not report its listeners in time.
pub async fn start_jobserver(config: &Path, log: &Path) -> anyhow::Result<JobServer> {
    let mut command = Command::new(binaries::find("rap-jobserver")?);
    command.arg("--config").arg(config).arg("serve");
    let mut service = Service::start("rap-jobserver", command, log).await?;
    let http = service
        .wait_for_line("listening on ", 0, START_DEADLINE)
        .await?;
    let grpc = service
        .wait_for_line("listening on ", 1, START_DEADLINE)
        .await?;
    Ok(JobServer {
        url: format!("http://{http}"),
        grpc_url: format!("http://{grpc}"),
        service,
    })
}

/// Writes the job server's configuration file into `dir` (each time, so addresses follow the
/// flags): the controller at `rap_endpoint` with the installation's client token and CA, local
/// `file:///` repositories allowed, plain-HTTP cookies.
///
/// # Errors
/// The file cannot be written.
pub fn jobserver_config(
    installation: &Installation,
    rap_endpoint: &str,
    dir: &Path,
    http_listen: &str,
    grpc_listen: &str,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("jobserver.toml");
    let text = format!(
        "# Written by `rap up`.\nhttp_listen = {http}\ngrpc_listen = {grpc}\ndata_dir = {data}\n\
         base_url = {base}\ncontroller_url = {controller}\ncontroller_token = {token}\n\
         controller_ca = {ca}\nsecure_cookies = false\nallow_file_repos = true\n",
        http = toml_string(http_listen),
        grpc = toml_string(grpc_listen),
        data = toml_string(&dir.join("data").display().to_string()),
        base = toml_string(&format!("http://{http_listen}")),
        controller = toml_string(rap_endpoint),
        token = toml_string(&installation.client_token),
        ca = toml_string(&installation.ca.display().to_string()),
    );
    write_private(&path, &text)?;
    Ok(path)
}

/// Starts Airlock over the agent's medium-privacy tree.
///
/// # Errors
/// Writing the file, or Airlock did not report its listener in time.
pub async fn start_airlock(
    dir: &Path,
    listen: &str,
    medium_privacy_dir: &Path,
    jobserver_grpc_url: &str,
    backend_token: &str,
    log: &Path,
) -> anyhow::Result<(Service, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(medium_privacy_dir)
        .with_context(|| format!("creating {}", medium_privacy_dir.display()))?;
    let path = dir.join("airlock.toml");
    let text = format!(
        "# Written by `rap up`.\nlisten = {listen}\nmedium_privacy_dir = {medium}\ndata_dir = {data}\n\
         jobserver_endpoint = {endpoint}\njobserver_token = {token}\nsecure_cookies = false\n",
        listen = toml_string(listen),
        medium = toml_string(&medium_privacy_dir.display().to_string()),
        data = toml_string(&dir.join("data").display().to_string()),
        endpoint = toml_string(jobserver_grpc_url),
        token = toml_string(backend_token),
    );
    write_private(&path, &text)?;
    let mut command = Command::new(binaries::find("rap-airlock")?);
    command.arg("serve").arg("--config").arg(&path);
    let mut service = Service::start("rap-airlock", command, log).await?;
    let addr = service
        .wait_for_line("listening on ", 0, START_DEADLINE)
        .await?;
    Ok((service, format!("http://{addr}")))
}

/// `https://localhost:<port>` for a bound address: the controller's certificate names
/// `localhost` (and `127.0.0.1`).
fn https_localhost(addr: &str) -> anyhow::Result<String> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .with_context(|| format!("'{addr}' is not a socket address"))?;
    Ok(format!("https://localhost:{}", addr.port()))
}

/// A TOML basic string (JSON string escapes are valid TOML).
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Writes a file only its owner can read (it holds tokens).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
