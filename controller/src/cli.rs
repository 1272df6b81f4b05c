//! The command line: `serve`, `init`, `certs`, and client commands against a running controller.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rap_controller::config::Config;
use rap_controller::rpc::auth::token_hash;
use rap_controller::server::{self, Listeners};
use rap_proto::certs::Ca;
use rap_proto::identity::BackendName;
use rap_proto::pb::rap::v1 as pb;
use tonic::transport::Channel;

/// The RAP controller: job creation, scheduling and the agent link.
#[derive(Parser)]
#[command(name = "rap-controller", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Serve {
        /// The TOML configuration file.
        #[arg(long, env = "RAP_CONTROLLER_CONFIG")]
        config: PathBuf,
        /// Overrides `listen` (also RAP_CONTROLLER_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Overrides `agent_listen` (also RAP_CONTROLLER_AGENT_LISTEN).
        #[arg(long)]
        agent_listen: Option<String>,
    },
    /// Write a commented configuration, certificates, a client token and agent configurations.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A backend to configure (repeatable).
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// Accept local paths as repositories (development only).
        #[arg(long)]
        allow_local_repos: bool,
        /// Host names and addresses for the controller's certificate.
        #[arg(long = "hostname", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hostnames: Vec<String>,
    },
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Submit a job request.
    Submit {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        rap_id: String,
        #[arg(long)]
        backend: String,
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        repo_url: String,
        #[arg(long, default_value = "main")]
        branch: String,
        #[arg(long)]
        commit: String,
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        #[arg(long)]
        force_run_dependencies: bool,
        #[arg(long, default_value = "unknown")]
        created_by: String,
    },
    /// Show the jobs of a request.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        rap_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel actions of a request.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        rap_id: String,
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
    },
    /// Print job changes as they happen.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Show backend flags.
    Backends {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a backend.
    Pause(AdminBackend),
    /// Unpause a backend.
    Unpause(AdminBackend),
    /// Manual database maintenance on or off.
    DbMaintenance {
        #[command(flatten)]
        admin: AdminBackend,
        #[arg(value_parser = ["on", "off"])]
        mode: String,
    },
    /// Pause and return running jobs to pending so the backend can reboot.
    PrepareForReboot(AdminBackend),
    /// List a backend's tasks.
    Tasks {
        #[command(flatten)]
        admin: AdminBackend,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a CA (`ca.crt`, `ca.key`) and the controller's certificate in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long = "hostname", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hostnames: Vec<String>,
    },
    /// Issue an agent certificate for a backend (`agent-<backend>.crt/.key`).
    Agent {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        backend: String,
    },
    /// Issue a generic client certificate (`client-<name>.crt/.key`).
    Client {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(Args)]
struct ClientArgs {
    /// `https://host:port` of the RAP API.
    #[arg(
        long,
        env = "RAP_CONTROLLER_ENDPOINT",
        default_value = "https://localhost:8443"
    )]
    endpoint: String,
    /// The bearer token.
    #[arg(long, env = "RAP_CONTROLLER_TOKEN", hide_env_values = true)]
    token: String,
    /// The CA certificate that signed the controller's certificate.
    #[arg(long, env = "RAP_CONTROLLER_CA")]
    ca: PathBuf,
}

#[derive(Args)]
struct AdminBackend {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long)]
    backend: String,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            agent_listen,
        } => serve(&config, listen, agent_listen).await,
        Command::Init {
            dir,
            backends,
            allow_local_repos,
            hostnames,
        } => init(&dir, &backends, allow_local_repos, &hostnames),
        Command::Certs { command } => certs(command),
        Command::Submit {
            client,
            rap_id,
            backend,
            workspace,
            repo_url,
            branch,
            commit,
            actions,
            force_run_dependencies,
            created_by,
        } => {
            let mut rap = rap_client(&client).await?;
            let response = rap
                .submit_job(authed(
                    &client,
                    pb::SubmitJobRequest {
                        rap_id,
                        backend,
                        workspace,
                        repo_url,
                        branch,
                        commit,
                        database_name: "default".into(),
                        requested_actions: actions,
                        codelists_ok: true,
                        force_run_dependencies,
                        created_by,
                        ..Default::default()
                    },
                )?)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{} ({} jobs)", response.details, response.count);
            Ok(())
        }
        Command::Status {
            client,
            rap_id,
            json,
        } => {
            let mut rap = rap_client(&client).await?;
            let response = rap
                .get_job_status(authed(
                    &client,
                    pb::GetJobStatusRequest {
                        rap_ids: vec![rap_id],
                    },
                )?)
                .await
                .map_err(status_error)?
                .into_inner();
            for job in &response.jobs {
                let status = pb::State::try_from(job.status)
                    .map(|s| s.as_str_name().trim_start_matches("STATE_").to_lowercase())
                    .unwrap_or_default();
                let code = pb::StatusCode::try_from(job.status_code)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("STATUS_CODE_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                if json {
                    let value = serde_json::json!({
                        "identifier": job.identifier,
                        "rap_id": job.rap_id,
                        "backend": job.backend,
                        "action": job.action,
                        "status": status,
                        "status_code": code,
                        "status_message": job.status_message,
                        "created_at": job.created_at,
                        "started_at": job.started_at,
                        "completed_at": job.completed_at,
                        "trace_context": job.trace_context,
                    });
                    println!("{value}");
                } else {
                    println!(
                        "{}\t{}\t{status}\t{code}\t{}",
                        job.identifier, job.action, job.status_message
                    );
                }
            }
            for unknown in response.unrecognised_rap_ids {
                eprintln!("unrecognised rap_id {unknown}");
            }
            Ok(())
        }
        Command::Cancel {
            client,
            rap_id,
            actions,
        } => {
            let mut rap = rap_client(&client).await?;
            let response = rap
                .cancel_job(authed(&client, pb::CancelJobRequest { rap_id, actions })?)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", response.details);
            Ok(())
        }
        Command::Watch { client, after } => {
            let mut rap = rap_client(&client).await?;
            let mut stream = rap
                .watch_jobs(authed(
                    &client,
                    pb::WatchJobsRequest {
                        after_cursor: after,
                    },
                )?)
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(change) = stream.message().await.map_err(status_error)? {
                if let Some(job) = change.job {
                    println!(
                        "{}\t{}\t{}\t{}",
                        change.cursor, job.identifier, job.action, job.status_message
                    );
                }
            }
            Ok(())
        }
        Command::Backends { client } => {
            let mut rap = rap_client(&client).await?;
            let response = rap
                .get_backend_status(authed(&client, pb::GetBackendStatusRequest {})?)
                .await
                .map_err(status_error)?
                .into_inner();
            for b in response.backends {
                let paused = b.paused.map(|f| f.status).unwrap_or_default();
                let db = b
                    .db_maintenance
                    .map(|f| format!("{} {}", f.status, f.r#type))
                    .unwrap_or_default();
                let data_check = b
                    .data_check
                    .map(|c| match c.error.as_str() {
                        "" => format!("{} at {}", c.status, c.checked_at),
                        error => format!("{} at {}: {error}", c.status, c.checked_at),
                    })
                    .unwrap_or_else(|| "none yet".into());
                println!(
                    "{}\tlast_seen={:?}\tpaused={paused}\tdb_maintenance={db}\tdata_check={data_check}",
                    b.slug, b.last_seen
                );
            }
            Ok(())
        }
        Command::Pause(admin) => {
            admin_call(&admin, |mut c, b| async move {
                c.set_paused(b.map(|backend| pb::SetPausedRequest {
                    backend,
                    paused: true,
                }))
                .await
            })
            .await
        }
        Command::Unpause(admin) => {
            admin_call(&admin, |mut c, b| async move {
                c.set_paused(b.map(|backend| pb::SetPausedRequest {
                    backend,
                    paused: false,
                }))
                .await
            })
            .await
        }
        Command::DbMaintenance { admin, mode } => {
            let on = mode == "on";
            admin_call(&admin, move |mut c, b| async move {
                c.set_db_maintenance(b.map(|backend| pb::SetDbMaintenanceRequest { backend, on }))
                    .await
            })
            .await
        }
        Command::PrepareForReboot(admin) => {
            admin_call(&admin, |mut c, b| async move {
                c.prepare_for_reboot(b.map(|backend| pb::PrepareForRebootRequest { backend }))
                    .await
            })
            .await
        }
        Command::Tasks { admin, all } => {
            let mut client = admin_client(&admin.client).await?;
            let response = client
                .list_tasks(authed(
                    &admin.client,
                    pb::ListTasksRequest {
                        backend: admin.backend.clone(),
                        include_inactive: all,
                    },
                )?)
                .await
                .map_err(status_error)?
                .into_inner();
            for t in response.tasks {
                println!(
                    "{}\tactive={}\tstage={}\tcomplete={}\tagent={}",
                    t.id, t.active, t.agent_stage, t.agent_complete, t.leased_to
                );
            }
            Ok(())
        }
    }
}

async fn serve(
    path: &Path,
    listen: Option<String>,
    agent_listen: Option<String>,
) -> anyhow::Result<()> {
    let mut config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(agent_listen) = agent_listen {
        config.agent_listen = agent_listen;
    }
    // Logs to stderr; spans to an OTLP collector when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    let telemetry = rap_proto::telemetry::init("rap-controller", endpoint.as_deref())
        .context("setting up telemetry")?;
    let listeners = Listeners::bind(&config).await?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let result = server::run(config, listeners, shutdown).await;
    if let Err(error) = telemetry.shutdown().await {
        eprintln!("rap-controller: {error}");
    }
    result?;
    Ok(())
}

/// 32 random bytes as hex, from the kernel.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    let mut file = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut file, &mut bytes).context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn init(
    dir: &Path,
    backends: &[String],
    allow_local_repos: bool,
    hostnames: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let names: Vec<BackendName> = backends
        .iter()
        .map(|b| BackendName::new(b).with_context(|| format!("backend name '{b}'")))
        .collect::<anyhow::Result<_>>()?;
    let hosts: Vec<&str> = hostnames.iter().map(String::as_str).collect();
    let ca = Ca::new("rap-ca")?;
    let ca_paths = ca.pem().write_pem(&dir, "ca")?;
    let server = ca.issue_server(&hosts)?.write_pem(&dir, "controller")?;
    let client_token = new_token()?;
    let admin_token = new_token()?;
    write_secret(&dir.join("client-token"), &client_token)?;
    write_secret(&dir.join("admin-token"), &admin_token)?;
    let quoted: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let mut config = format!(
        r#"# rap-controller configuration. Every top-level key can be overridden by an environment
# variable RAP_CONTROLLER_<KEY>, e.g. RAP_CONTROLLER_LISTEN.

# Where the database (db/) and git caches (repos/) live.
data_dir = "{data}"
# The RAP API and admin service (TLS; bearer tokens).
listen = "127.0.0.1:8443"
# The agent service (mutual TLS; agents present certificates signed by tls.ca).
agent_listen = "127.0.0.1:8444"
# GitHub organisations study repositories may belong to.
allowed_github_orgs = ["opensafely", "opensafely-actions"]
# Accept absolute local paths as repository URLs (development and tests only).
allow_local_repos = {allow_local_repos}
# Reusable actions live at <actions_url>/<image>.
actions_url = "https://github.com/opensafely-actions"
# Job images are <docker_registry>/<image>:<tag>.
docker_registry = "ghcr.io/opensafely-core"
# The periodic safety pass of each backend's scheduler (it also runs on every event).
scheduler_interval_ms = 5000
# RUNJOB tasks a job may use before a retryable agent error fails it.
max_task_attempts = 5
# Seconds an agent may stay disconnected before its unfinished tasks go to another agent.
agent_lease_grace_s = 300
# Seconds WatchJobs' change log keeps a change (0: forever); older cursors must resync.
change_log_retention_s = 2592000
# SHA-256 of the operators' token (the token itself is in admin-token).
admin_token_sha256 = "{admin_hash}"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

# A job server: the SHA-256 of its token (the token itself is in client-token, mode 0600).
[[clients]]
name = "jobserver"
token_sha256 = "{client_hash}"
backends = [{backends}]
"#,
        data = dir.join("data").display(),
        admin_hash = token_hash(&admin_token),
        ca = ca_paths.cert.display(),
        cert = server.cert.display(),
        key = server.key.display(),
        client_hash = token_hash(&client_token),
        backends = quoted.join(", "),
    );
    for name in &names {
        config.push_str(&format!(
            r#"
[[backends]]
name = "{name}"
# Weighted job slots, separately for non-database and database jobs.
max_workers = 10
max_db_workers = 10
cpu_count = 2.0
memory_limit = "4G"
# Seconds between database-maintenance checks (DBSTATUS); 0 disables them.
db_status_interval_s = 0
# Seconds between database data checks (DBDATACHECK; the reference checks daily, 86400);
# 0 disables them. The month the HES activity data is expected to reach, as YYYYMM.
data_check_interval_s = 0
data_check_hes_expected_activity_month = "202304"
"#
        ));
        let agent = ca
            .issue_agent(name)?
            .write_pem(&dir, &format!("agent-{name}"))?;
        let agent_config = format!(
            r#"# rap-agent configuration for backend {name}.
backend = "{name}"
agent_id = "{name}-agent-1"
work_dir = "{work}"

[controller]
endpoint = "https://localhost:8444"
ca_cert = "{ca}"
cert = "{cert}"
key = "{key}"

[docker]
registry = "ghcr.io/opensafely-core"
allowed_images = ["ehrql", "python", "r", "stata-mp", "jupyter", "sqlrunner"]

[git]
allowed_orgs = ["opensafely", "opensafely-actions"]
allow_local_repos = {allow_local_repos}
# Fetch GitHub repositories through the backend's allow-list proxy (deploy/proxy):
# proxy = "https://github-proxy.example.org"
"#,
            work = dir.join(format!("agent-{name}-work")).display(),
            ca = ca_paths.cert.display(),
            cert = agent.cert.display(),
            key = agent.key.display(),
        );
        write_new(&dir.join(format!("agent-{name}.toml")), &agent_config)?;
    }
    write_new(&dir.join("controller.toml"), &config)?;
    println!("wrote {}", dir.join("controller.toml").display());
    Ok(())
}

fn certs(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, hostnames } => {
            std::fs::create_dir_all(&dir)?;
            let hosts: Vec<&str> = hostnames.iter().map(String::as_str).collect();
            let ca = Ca::new("rap-ca")?;
            ca.pem().write_pem(&dir, "ca")?;
            ca.issue_server(&hosts)?.write_pem(&dir, "controller")?;
        }
        CertsCommand::Agent { dir, backend } => {
            let ca = Ca::load(&dir, "ca")?;
            let name = BackendName::new(&backend)?;
            ca.issue_agent(&name)?
                .write_pem(&dir, &format!("agent-{backend}"))?;
        }
        CertsCommand::Client { dir, name } => {
            let ca = Ca::load(&dir, "ca")?;
            ca.issue_client(&name)?
                .write_pem(&dir, &format!("client-{name}"))?;
        }
    }
    Ok(())
}

async fn channel(client: &ClientArgs) -> anyhow::Result<Channel> {
    let tls = rap_proto::tls::tls_client(&client.ca)?;
    let channel = Channel::from_shared(client.endpoint.clone())
        .context("endpoint")?
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", client.endpoint))?;
    Ok(channel)
}

async fn rap_client(
    client: &ClientArgs,
) -> anyhow::Result<pb::rap_service_client::RapServiceClient<Channel>> {
    Ok(pb::rap_service_client::RapServiceClient::new(
        channel(client).await?,
    ))
}

async fn admin_client(
    client: &ClientArgs,
) -> anyhow::Result<pb::admin_service_client::AdminServiceClient<Channel>> {
    Ok(pb::admin_service_client::AdminServiceClient::new(
        channel(client).await?,
    ))
}

fn authed<T>(client: &ClientArgs, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {}", client.token.trim())
        .parse()
        .context("the token is not valid header text")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    let class = status
        .metadata()
        .get("rap-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("error");
    anyhow::anyhow!("{class}: {}", status.message())
}

async fn admin_call<F, Fut>(admin: &AdminBackend, call: F) -> anyhow::Result<()>
where
    F: FnOnce(pb::admin_service_client::AdminServiceClient<Channel>, tonic::Request<String>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::AdminResponse>, tonic::Status>>,
{
    let client = admin_client(&admin.client).await?;
    let request = authed(&admin.client, admin.backend.clone())?;
    let response = call(client, request).await.map_err(status_error)?;
    println!("{}", response.into_inner().details);
    Ok(())
}
