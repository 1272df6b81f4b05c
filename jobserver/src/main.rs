//! `rap-jobserver`: the job server binary: `serve` and the operator's admin commands. All the
//! work is in the library; this file parses arguments, sets up logging and binds listeners.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rap_jobserver::config::Config;
use rap_jobserver::roles::Role;
use rap_jobserver::store::Store;
use rap_jobserver::{Listeners, admin};

/// The job server: the researchers' web app.
#[derive(Parser)]
#[command(name = "rap-jobserver", version, about)]
struct Cli {
    /// The TOML configuration file; every key can be overridden by RAP_JOBSERVER_<KEY>.
    #[arg(long, global = true, env = "RAP_JOBSERVER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web app and the ReleaseService; prints `listening on <addr>` for each.
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage project memberships.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Manage backends and their tokens.
    #[command(subcommand)]
    Backend(BackendCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from RAP_JOBSERVER_PASSWORD, else from stdin.
    Add {
        username: String,
        #[arg(long)]
        fullname: String,
        #[arg(long)]
        email: String,
        /// A global role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Replace a user's global roles.
    Roles {
        username: String,
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Add an organisation.
    Add {
        slug: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Add a project.
    Add {
        slug: String,
        #[arg(long)]
        name: String,
        /// An org slug (repeatable; the first is the lead).
        #[arg(long = "org")]
        orgs: Vec<String>,
        #[arg(long, default_value = "ongoing")]
        status: String,
        #[arg(long)]
        copilot: Option<String>,
    },
    /// Replace a project's analysis scope (what its database jobs may use).
    Scope {
        slug: String,
        /// A dataset permission, e.g. appointments (repeatable).
        #[arg(long = "dataset")]
        dataset_permissions: Vec<String>,
        /// A population permission, e.g. include_t1oo (repeatable).
        #[arg(long = "population")]
        population_permissions: Vec<String>,
        /// A component, e.g. event_level_data (repeatable).
        #[arg(long = "component")]
        component_access: Vec<String>,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Set a user's roles in a project.
    Set {
        project: String,
        username: String,
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Add a backend; prints its token once.
    Add {
        slug: String,
        #[arg(long)]
        name: String,
    },
    /// Replace a backend's token; prints the new one.
    RotateToken { slug: String },
    /// Make a user a member of a backend.
    AddMember { slug: String, username: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up telemetry (with span export) itself, inside its runtime.
    if !matches!(cli.command, Command::Serve) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rap-jobserver: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn parse_roles(names: &[String]) -> anyhow::Result<Vec<Role>> {
    names.iter().map(|n| Ok(n.parse::<Role>()?)).collect()
}

fn open_store(config: &Option<PathBuf>) -> anyhow::Result<Store> {
    // Admin commands need only the data directory.
    let data_dir = match env("RAP_JOBSERVER_DATA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let config =
                Config::load(config.as_deref(), &env).context("loading the configuration")?;
            config.data_dir
        }
    };
    let path = data_dir.join("store");
    Store::open(&path).with_context(|| format!("opening the store in {}", path.display()))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(cli.config),
        Command::User(UserCommand::Add {
            username,
            fullname,
            email,
            roles,
        }) => {
            let password = match env("RAP_JOBSERVER_PASSWORD") {
                Some(password) => password,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("reading the password from stdin")?;
                    text.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let store = open_store(&cli.config)?;
            admin::add_user(
                &store,
                &username,
                &fullname,
                &email,
                &password,
                &parse_roles(&roles)?,
            )?;
            println!("added user {username}");
            Ok(())
        }
        Command::User(UserCommand::Roles { username, roles }) => {
            admin::set_user_roles(&open_store(&cli.config)?, &username, &parse_roles(&roles)?)?;
            Ok(())
        }
        Command::Org(OrgCommand::Add { slug, name }) => {
            admin::add_org(&open_store(&cli.config)?, &slug, &name)?;
            Ok(())
        }
        Command::Project(ProjectCommand::Scope {
            slug,
            dataset_permissions,
            population_permissions,
            component_access,
        }) => {
            admin::set_analysis_scope(
                &open_store(&cli.config)?,
                &slug,
                &rap_jobserver::model::AnalysisScope {
                    dataset_permissions,
                    population_permissions,
                    component_access,
                },
            )?;
            println!("set the analysis scope of {slug}");
            Ok(())
        }
        Command::Project(ProjectCommand::Add {
            slug,
            name,
            orgs,
            status,
            copilot,
        }) => {
            admin::add_project(
                &open_store(&cli.config)?,
                &slug,
                &name,
                &orgs,
                &status,
                copilot.as_deref(),
            )?;
            Ok(())
        }
        Command::Member(MemberCommand::Set {
            project,
            username,
            roles,
        }) => {
            admin::set_membership(
                &open_store(&cli.config)?,
                &project,
                &username,
                &parse_roles(&roles)?,
            )?;
            Ok(())
        }
        Command::Backend(BackendCommand::Add { slug, name }) => {
            let token = admin::add_backend(&open_store(&cli.config)?, &slug, &name)?;
            println!("{token}");
            Ok(())
        }
        Command::Backend(BackendCommand::RotateToken { slug }) => {
            let token = admin::rotate_backend_token(&open_store(&cli.config)?, &slug)?;
            println!("{token}");
            Ok(())
        }
        Command::Backend(BackendCommand::AddMember { slug, username }) => {
            admin::add_backend_member(&open_store(&cli.config)?, &slug, &username)?;
            Ok(())
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref(), &env).context("loading the configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // Logs to stderr; spans to an OTLP collector when OTEL_EXPORTER_OTLP_ENDPOINT is set.
        let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.is_empty());
        let telemetry = rap_proto::telemetry::init("rap-jobserver", endpoint.as_deref())
            .context("setting up telemetry")?;
        let http = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("binding {}", config.http_listen))?;
        let grpc = tokio::net::TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("binding {}", config.grpc_listen))?;
        for listener in [&http, &grpc] {
            println!("listening on {}", listener.local_addr()?);
        }
        if config.controller_token.is_empty() {
            bail!("controller_token is empty");
        }
        // SIGINT (Ctrl-C) or SIGTERM (systemd) stops the server gracefully.
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        };
        rap_jobserver::run(config, Listeners { http, grpc }, shutdown).await?;
        if let Err(error) = telemetry.shutdown().await {
            tracing::warn!("flushing spans: {error:#}");
        }
        Ok(())
    })
}
