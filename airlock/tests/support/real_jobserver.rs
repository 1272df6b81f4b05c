//! The real job server, `rap-jobserver`, as a child process: seeded with its admin commands,
//! serving its web app over HTTP and its ReleaseService over loopback TLS with a certificate
//! minted in the test. The binary is found by `rap_testkit::binaries` (build it first with
//! `cargo build -p rap-jobserver --bins`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rap_proto::certs::Ca;
use rap_testkit::binaries;
use tokio::time::timeout;

use super::browser::WAIT;

/// A running `rap-jobserver serve`, killed on drop; its log is printed if the test failed.
pub struct RealJobServer {
    child: std::process::Child,
    /// The web app, e.g. `http://127.0.0.1:41234`.
    pub http_base: String,
    /// The ReleaseService, `https://localhost:<port>`.
    pub grpc_endpoint: String,
    /// PEM file of the CA that signed the ReleaseService's certificate.
    pub ca_path: PathBuf,
    /// The backend token printed by `backend add`.
    pub backend_token: String,
    log_path: PathBuf,
}

impl Drop for RealJobServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            eprintln!("--- rap-jobserver log ---\n{log}");
        }
    }
}

impl RealJobServer {
    /// What the job server has logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap()
    }

    /// Creates `workspace` in `project` for the repository at `repo_url` through the web app's
    /// forms over HTTP, as `username` (who needs `workspace_create` there), for callers that
    /// are not testing the pages themselves.
    pub async fn create_workspace(
        &self,
        username: &str,
        password: &str,
        project: &str,
        workspace: &str,
        repo_url: &str,
    ) {
        let login = self.http("GET", "/login/", "", "").await;
        let login_cookie = cookie_pair(&login, "rap_login_csrf");
        let csrf = super::pages::hidden_value(&login.body, "csrf_token");
        let form = super::pages::encode(&[
            ("username", username),
            ("password", password),
            ("csrf_token", &csrf),
        ]);
        let signed_in = self.http("POST", "/login/", &login_cookie, &form).await;
        assert_eq!(signed_in.status, 303, "signing in: {}", signed_in.body);
        let session = cookie_pair(&signed_in, "rap_session");
        let path = format!("/{project}/new-workspace/");
        let page = self.http("GET", &path, &session, "").await;
        let csrf = super::pages::hidden_value(&page.body, "csrf_token");
        let form = super::pages::encode(&[
            ("name", workspace),
            ("repo_url", repo_url),
            ("branch", "main"),
            ("purpose", "A benchmark"),
            ("csrf_token", &csrf),
        ]);
        let created = self.http("POST", &path, &session, &form).await;
        assert_eq!(
            created.status, 303,
            "creating the workspace: {}",
            created.body
        );
    }

    /// One HTTP request to the web app with the given `Cookie` header and form body; the
    /// answer's body as text.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        form: &str,
    ) -> super::pages::Page {
        use http_body_util::BodyExt;
        let request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.http_base))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(axum::body::Bytes::from(
                form.to_owned(),
            )))
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        super::pages::Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// `name=value` of the cookie `name` set by the response.
fn cookie_pair(page: &super::pages::Page, name: &str) -> String {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .to_owned()
}

/// Runs one admin command on the store in `data_dir` (the server must not be running) and
/// returns its standard output, trimmed.
pub fn admin(data_dir: &Path, args: &[&str], password: Option<&str>) -> String {
    let mut command = Command::new(binaries::find("rap-jobserver").unwrap());
    command.args(args).env("RAP_JOBSERVER_DATA_DIR", data_dir);
    if let Some(password) = password {
        command.env("RAP_JOBSERVER_PASSWORD", password);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "rap-jobserver {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Starts `rap-jobserver serve` on the store in `dir/data` (seeded beforehand with
/// [`admin`]), both listeners on port 0, `file:///` study repositories allowed. There is no
/// controller: its address refuses connections and the job server keeps retrying, which
/// touches nothing Airlock uses.
pub async fn serve(dir: &Path, backend_token: String) -> RealJobServer {
    let ca = Ca::new("jobserver test CA").unwrap();
    let server = ca.issue_server(&["localhost"]).unwrap();
    let ca_path = dir.join("jobserver-ca.pem");
    let cert_path = dir.join("jobserver-grpc.pem");
    let key_path = dir.join("jobserver-grpc.key");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    std::fs::write(&cert_path, &server.cert_pem).unwrap();
    std::fs::write(&key_path, &server.key_pem).unwrap();
    let config = dir.join("jobserver.toml");
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "http_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             controller_url = \"http://127.0.0.1:{closed_port}\"\ncontroller_token = \"unused\"\n\
             allow_file_repos = true\ngrpc_tls_cert = {:?}\ngrpc_tls_key = {:?}\n",
            dir.join("data"),
            cert_path,
            key_path,
        ),
    )
    .unwrap();
    let log_path = dir.join("jobserver.log");
    let mut child = Command::new(binaries::find("rap-jobserver").unwrap())
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RAP_JOBSERVER_DATA_DIR")
        .env("RUST_LOG", "info")
        // Plain `key=value` fields in the log, which tests read.
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The HTTP address, then the gRPC one; keep draining afterwards.
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let addresses: Vec<String> = lines
            .by_ref()
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("listening on ").map(str::to_owned))
            .take(2)
            .collect();
        std::thread::spawn(move || for _ in lines {});
        addresses
    });
    let mut jobserver = RealJobServer {
        child,
        http_base: String::new(),
        grpc_endpoint: String::new(),
        ca_path,
        backend_token,
        log_path,
    };
    let addresses = timeout(WAIT, lines).await.unwrap().unwrap();
    assert_eq!(addresses.len(), 2, "rap-jobserver did not start");
    let grpc_port = addresses[1].rsplit(':').next().unwrap();
    jobserver.http_base = format!("http://{}", addresses[0]);
    jobserver.grpc_endpoint = format!("https://localhost:{grpc_port}");
    jobserver
}

/// A git repository with one commit on `main`, as a `file:///` URL for a workspace.
pub fn study_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.join("project.yaml"),
        "version: '4.0'\nactions:\n  analyse:\n    run: python:latest analysis/analyse.py\n    outputs:\n      moderately_sensitive:\n        tables: output/*.csv\n",
    )
    .unwrap();
    git(&["add", "project.yaml"]);
    git(&["commit", "-q", "-m", "study"]);
    format!("file://{}", dir.display())
}
