//! `rap`: the whole RAP on one machine. `rap up` starts the controller, one agent, the job
//! server and Airlock as child processes over one data directory, sets up accounts, prints
//! where everything is, and stops every child cleanly on Ctrl-C or SIGTERM. `rap run` runs a
//! project's actions locally in Docker, as the reference's `opensafely run` does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rap_integration::local_run::{self, Refusal, RunOptions};
use rap_integration::service::Service;
use rap_integration::stack::{self, AgentOptions, Installation, STOP_GRACE};
use rap_integration::study;
use rap_testkit::binaries;
use tokio::process::Command;

/// The whole RAP on one machine.
#[derive(Parser)]
#[command(name = "rap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start controller, agent, job server and Airlock; stop them all on Ctrl-C.
    Up(UpArgs),
    /// Run a project's actions locally in Docker (dependencies first), outputs into the
    /// project directory; exits non-zero if any action fails.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The actions to run, with their dependencies; none or `run_all` runs every action.
    actions: Vec<String>,
    /// The directory holding project.yaml.
    #[arg(long, default_value = ".")]
    project_dir: PathBuf,
    /// Run every dependency again, even those whose earlier results could be reused.
    #[arg(short = 'f', long)]
    force_run_dependencies: bool,
    /// Keep running actions that do not depend on a failed one.
    #[arg(long)]
    continue_on_error: bool,
    /// The registry prefix of the images (`<registry>/<image>:<tag>`); images must already be
    /// on this machine.
    #[arg(long, default_value = local_run::DEFAULT_REGISTRY)]
    registry: String,
    /// Each container's memory limit.
    #[arg(short = 'm', long, default_value = "4G")]
    memory: String,
    /// Each container's CPU limit.
    #[arg(long, default_value_t = 2.0)]
    cpus: f64,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Everything lives here: configuration, certificates, stores, outputs, logs.
    #[arg(long, default_value = "rap-data")]
    data_dir: PathBuf,
    /// The backend's name.
    #[arg(long, default_value = "local")]
    backend: String,
    /// The study folder committed into `<data-dir>/study` (a git repository).
    #[arg(long, default_value_os_t = study::sample_study())]
    study: PathBuf,
    /// The controller's RAP API.
    #[arg(long, default_value = "127.0.0.1:8443")]
    controller_listen: String,
    /// The controller's agent service.
    #[arg(long, default_value = "127.0.0.1:8444")]
    agent_listen: String,
    /// The job server's web app.
    #[arg(long, default_value = "127.0.0.1:8000")]
    jobserver_listen: String,
    /// The job server's ReleaseService (gRPC, for Airlock).
    #[arg(long, default_value = "127.0.0.1:8001")]
    jobserver_grpc_listen: String,
    /// Airlock's web app.
    #[arg(long, default_value = "127.0.0.1:8002")]
    airlock_listen: String,
    /// The `default` database URL given to database jobs (a path inside the ehrql image built
    /// by scripts/action-images).
    #[arg(long, default_value = "sqlite:////database/patients.sqlite")]
    database_url: String,
    /// The Docker network database jobs join (created as an internal network if missing).
    #[arg(long, default_value = "rap-db")]
    database_network: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rap: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Up(args) => up(args).await,
            Cmd::Run(args) => run_locally(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rap: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_locally(args: RunArgs) -> anyhow::Result<()> {
    let options = RunOptions {
        project_dir: args.project_dir,
        actions: args.actions,
        force_run_dependencies: args.force_run_dependencies,
        continue_on_error: args.continue_on_error,
        registry: args.registry,
        memory: args.memory,
        cpus: args.cpus,
    };
    match local_run::run(&options).await {
        Ok(true) => Ok(()),
        Ok(false) => bail!("not every action succeeded"),
        Err(error) => match error.downcast_ref::<Refusal>() {
            Some(refusal) => {
                print!("{}", refusal.report());
                bail!("nothing was run")
            }
            None => Err(error),
        },
    }
}

/// The accounts `rap up` creates, one per line in `<data>/accounts.txt`.
const ACCOUNTS: [(&str, &str, &str); 3] = [
    ("researcher", "Rita Researcher", ""),
    ("checker1", "Olu Output-Checker", "OutputChecker"),
    ("checker2", "Cai Output-Checker", "OutputChecker"),
];
const PROJECT: &str = "sample-study";
/// The images `scripts/action-images` builds: the agent's allow-list here.
const ACTION_IMAGES: [&str; 2] = ["ehrql", "python"];
const ORG: &str = "local-org";

async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let logs = data.join("logs");
    let installation = Installation::init(&data.join("controller"), &args.backend).await?;
    let repo = study::commit_study(&args.study, &data.join("study")).await?;

    // Children in start order; stopped in reverse.
    let mut children: Vec<Service> = Vec::new();
    // Ctrl-C while starting stops what has started (the children are in their own process
    // group, so the terminal's SIGINT reaches only us).
    let result = tokio::select! {
        result = start_all(&args, &data, &logs, &installation, &repo, &mut children) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    if let Err(error) = result {
        stop_all(&mut children).await;
        return Err(error);
    }
    let outcome = wait_for_signal_or_exit(&mut children).await;
    eprintln!("rap: stopping");
    stop_all(&mut children).await;
    eprintln!("rap: stopped");
    outcome
}

async fn start_all(
    args: &UpArgs,
    data: &Path,
    logs: &Path,
    installation: &Installation,
    repo: &study::StudyRepo,
    children: &mut Vec<Service>,
) -> anyhow::Result<()> {
    let controller = stack::start_controller(
        installation,
        &args.controller_listen,
        &args.agent_listen,
        &logs.join("controller.log"),
    )
    .await?;
    let (rap_endpoint, agent_endpoint) = (
        controller.rap_endpoint.clone(),
        controller.agent_endpoint.clone(),
    );
    let jobserver_dir = data.join("jobserver");
    let jobserver_config = stack::jobserver_config(
        installation,
        &rap_endpoint,
        &jobserver_dir,
        &args.jobserver_listen,
        &args.jobserver_grpc_listen,
    )?;
    children.push(controller.service);
    let work_dir = data.join("backend");
    let agent_options = AgentOptions {
        work_dir: work_dir.clone(),
        database_url: args.database_url.clone(),
        database_network: args.database_network.clone(),
        allowed_images: ACTION_IMAGES.map(|image| image.to_owned()).to_vec(),
    };
    let agent = stack::start_checked_agent(
        installation,
        &agent_endpoint,
        &agent_options,
        &logs.join("agent.log"),
    )
    .await?;
    children.push(agent);

    let accounts = set_up_accounts(data, &jobserver_config, &args.backend).await?;
    let jobserver = stack::start_jobserver(&jobserver_config, &logs.join("jobserver.log")).await?;
    let (jobserver_url, grpc_url) = (jobserver.url.clone(), jobserver.grpc_url.clone());
    children.push(jobserver.service);
    let (airlock, airlock_url) = stack::start_airlock(
        &data.join("airlock"),
        &args.airlock_listen,
        &work_dir.join("medium_privacy"),
        &grpc_url,
        &accounts.backend_token,
        &logs.join("airlock.log"),
    )
    .await?;
    children.push(airlock);

    println!(
        "\nRAP is up (Ctrl-C stops everything).\n\n\
         Job server:  {jobserver_url}/\n\
         Airlock:     {airlock_url}/\n\
         Controller:  {rap_endpoint} (RAP API; token in {token}, CA {ca})\n\
         Agent:       backend '{backend}', outputs under {work}\n\n\
         Accounts (also in {accounts_file}):",
        token = installation.dir.join("client-token").display(),
        ca = installation.ca.display(),
        backend = args.backend,
        work = work_dir.display(),
        accounts_file = data.join("accounts.txt").display(),
    );
    for (username, password, role) in &accounts.users {
        println!("  {username:<11} {password}  {role}");
    }
    println!(
        "\nStudy repository: {repo} (branch main, commit {commit})\n\
         To run it: sign in at {jobserver_url}/login/ as researcher, open {jobserver_url}/{PROJECT}/,\n\
         create a workspace with repository URL file://{repo} and branch main, then Run jobs.\n\
         From the command line instead:\n  \
         rap-controller submit --endpoint {rap_endpoint} --ca {ca} --token \"$(cat {token})\" \\\n    \
         --rap-id $(head -c8 /dev/urandom | od -An -tx1 | tr -d ' \\n') --backend {backend} --workspace sample \\\n    \
         --repo-url {repo} --commit {commit} --action summarise\n\n\
         Logs: {logs}/{{controller,agent,jobserver,airlock}}.log",
        repo = repo.path.display(),
        commit = repo.commit,
        token = installation.dir.join("client-token").display(),
        ca = installation.ca.display(),
        backend = args.backend,
        logs = logs.display(),
    );
    Ok(())
}

/// The accounts and the backend's token on the job server.
struct Accounts {
    /// (username, password, role) per user.
    users: Vec<(String, String, String)>,
    backend_token: String,
}

/// Creates the users, organisation, project and backend on the job server the first time
/// (recorded in `<data>/accounts.txt`, mode 0600), or reads them back.
async fn set_up_accounts(data: &Path, config: &Path, backend: &str) -> anyhow::Result<Accounts> {
    let file = data.join("accounts.txt");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return parse_accounts(&text).with_context(|| format!("reading {}", file.display()));
    }
    let admin = |args: Vec<String>, password: Option<String>| async move {
        let mut command = Command::new(binaries::find("rap-jobserver")?);
        command.arg("--config").arg(config).args(&args);
        if let Some(password) = password {
            command.env("RAP_JOBSERVER_PASSWORD", password);
        }
        let output = command.output().await.context("running rap-jobserver")?;
        if !output.status.success() {
            bail!(
                "rap-jobserver {} failed: {}",
                args.first().map(String::as_str).unwrap_or(""),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        anyhow::Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut users = Vec::new();
    for (username, fullname, role) in ACCOUNTS {
        let password = random_hex(9)?;
        let email = format!("{username}@example.org");
        let mut args = strings(&["user", "add", username, "--fullname", fullname, "--email"]);
        args.push(email);
        if !role.is_empty() {
            args.extend(strings(&["--role", role]));
        }
        admin(args, Some(password.clone())).await?;
        users.push((username.to_owned(), password, role.to_owned()));
    }
    admin(
        strings(&["org", "add", ORG, "--name", "Local organisation"]),
        None,
    )
    .await?;
    admin(
        strings(&[
            "project",
            "add",
            PROJECT,
            "--name",
            "Sample study",
            "--org",
            ORG,
        ]),
        None,
    )
    .await?;
    admin(
        strings(&["member", "set", PROJECT, "researcher", "ProjectDeveloper"]),
        None,
    )
    .await?;
    let backend_token = admin(
        strings(&["backend", "add", backend, "--name", "Local backend"]),
        None,
    )
    .await?;
    for (username, _, _) in ACCOUNTS {
        admin(strings(&["backend", "add-member", backend, username]), None).await?;
    }
    let mut text = format!(
        "# Written by `rap up`: job-server accounts (username password role) and the backend token.\nbackend_token {backend_token}\n"
    );
    for (username, password, role) in &users {
        text.push_str(&format!("user {username} {password} {role}\n"));
    }
    write_private(&file, &text)?;
    Ok(Accounts {
        users,
        backend_token,
    })
}

fn parse_accounts(text: &str) -> anyhow::Result<Accounts> {
    let mut users = Vec::new();
    let mut backend_token = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["backend_token", token] => backend_token = Some(token.to_string()),
            ["user", name, password, rest @ ..] => {
                users.push((name.to_string(), password.to_string(), rest.join(" ")))
            }
            [] => {}
            _ => bail!("unexpected line '{line}'"),
        }
    }
    let Some(backend_token) = backend_token else {
        bail!("no backend_token line");
    };
    Ok(Accounts {
        users,
        backend_token,
    })
}

fn random_hex(n: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Waits for SIGINT or SIGTERM (Ok) or for any child to exit (an error naming it).
async fn wait_for_signal_or_exit(children: &mut [Service]) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let any_exit = async {
        let waits = children.iter_mut().map(|child| {
            Box::pin(async move {
                let status = child.wait().await;
                (child.name().to_owned(), child.log_path().to_owned(), status)
            })
        });
        futures_select_all(waits.collect()).await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
        (name, log, status) = any_exit => {
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            bail!("{name} exited unexpectedly ({status}); see {}", log.display())
        }
    }
}

/// The first of several futures to finish (a tiny `select_all`, to avoid a dependency).
async fn futures_select_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> F::Output {
    std::future::poll_fn(|cx| {
        for future in futures.iter_mut() {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready(output);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Stops the children in reverse start order: SIGTERM, a grace period, then SIGKILL.
async fn stop_all(children: &mut Vec<Service>) {
    while let Some(mut child) = children.pop() {
        match child.stop(STOP_GRACE).await {
            Ok(Some(status)) if status.success() => eprintln!("rap: {} stopped", child.name()),
            Ok(Some(status)) => eprintln!("rap: {} stopped ({status})", child.name()),
            Ok(None) => {}
            Err(error) => eprintln!("rap: stopping {}: {error:#}", child.name()),
        }
    }
}
