//! The `rap-agent` binary: `check` says precisely what is wrong, `serve` refuses a bad
//! configuration by naming the key.

mod common;

use std::process::Command;

use common::{NetworkGuard, networks_named};

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    let text = format!(
        r#"
backend = "test"
agent_id = "a1"
work_dir = "{work}"
[controller]
endpoint = "https://localhost:1"
ca_cert = "{dir}/missing-ca.pem"
cert = "{dir}/missing.crt"
key = "{dir}/missing.key"
[docker]
registry = "rap.test"
allowed_images = ["busybox", "absent-image"]
{extra}
"#,
        work = dir.join("work").display(),
        dir = dir.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn rap_agent(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_rap-agent"))
        .args(args)
        .env_remove("RAP_AGENT_DOCKER_USER")
        .env("RAP_TEST_UNSET_DB_URL", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn check_reports_each_problem_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "[database]\nurl_env = \"RAP_TEST_UNSET_DB_URL\"\n",
    );
    let (ok, text) = rap_agent(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(text.contains("ok    Docker engine: Docker "), "{text}");
    assert!(text.contains("ok    image rap.test/busybox: "), "{text}");
    assert!(
        text.contains(
            "FAIL  image rap.test/absent-image: no tag of rap.test/absent-image is present"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "FAIL  controller TLS files: cannot read the CA certificate file {}/missing-ca.pem",
            dir.path().display()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "FAIL  database URL: RAP_TEST_UNSET_DB_URL is not set: database jobs will fail"
        ),
        "{text}"
    );
    assert!(text.contains("ok    directory "), "{text}");
}

#[test]
fn serve_refuses_a_bad_configuration_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "user = \"0:0\"\n");
    let (ok, text) = rap_agent(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("configuration key docker.user: jobs must not run as root"),
        "{text}"
    );
}

#[test]
fn check_says_when_the_certificate_names_another_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rap_proto::certs::Ca::new("test-ca").unwrap();
    let other = rap_proto::identity::BackendName::new("other").unwrap();
    let paths = ca
        .issue_agent(&other)
        .unwrap()
        .write_pem(dir.path(), "agent")
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let path = config(dir.path(), "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            &format!("{}/missing-ca.pem", dir.path().display()),
            &format!("{}/ca.pem", dir.path().display()),
        )
        .replace(
            &format!("{}/missing.crt", dir.path().display()),
            &paths.cert.display().to_string(),
        )
        .replace(
            &format!("{}/missing.key", dir.path().display()),
            &paths.key.display().to_string(),
        );
    std::fs::write(&path, text).unwrap();
    let (ok, text) = rap_agent(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("ok    controller TLS files: CA, certificate and key load and match"),
        "{text}"
    );
    assert!(
        text.contains(
            "FAIL  certificate backend: the certificate names backend other but the configuration says test"
        ),
        "{text}"
    );
}

#[test]
fn check_reports_the_database_network_and_serve_refuses_an_unusable_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = NetworkGuard::unique("rap-test-cli-db");
    let path = config(
        dir.path(),
        &format!("[database]\nnetwork = \"{}\"\n", missing.0),
    );
    let (_, text) = rap_agent(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        text.contains(&format!(
            "ok    database network: {} does not exist yet: rap-agent serve creates it as an \
             internal network",
            missing.0
        )),
        "{text}"
    );
    assert!(
        networks_named_blocking(&missing.0).is_empty(),
        "check changes nothing"
    );

    let path = config(dir.path(), "[database]\nnetwork = \"host\"\n");
    let (ok, text) = rap_agent(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    let refusal = "Docker network host uses the host driver, which database jobs must not use: \
                   set database.network to a bridge network";
    assert!(
        text.contains(&format!("FAIL  database network: {refusal}")),
        "{text}"
    );
    let (ok, text) = rap_agent(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(text.contains(refusal), "{text}");
}

fn networks_named_blocking(name: &str) -> Vec<bollard::models::Network> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(networks_named(name))
}
