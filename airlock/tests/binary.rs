//! The built `rap-airlock` binary: `serve --config FILE --listen 127.0.0.1:0` prints
//! `listening on <addr>` once bound and serves the sign-in page over TLS with a certificate
//! minted in the test.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rap_proto::certs::Ca;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn serve_prints_its_address_and_answers_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA").unwrap();
    let server = ca.issue_server(&["localhost"]).unwrap();
    let cert = dir.path().join("airlock.crt");
    let key = dir.path().join("airlock.key");
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    std::fs::create_dir_all(dir.path().join("medium/workspaces")).unwrap();
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\nmedium_privacy_dir = {:?}\ndata_dir = {:?}\njobserver_endpoint = \"http://127.0.0.1:9\"\njobserver_token = \"t\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            dir.path().join("medium"),
            dir.path().join("data"),
            cert,
            key
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rap-airlock"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.strip_prefix("listening on ").expect(&line).to_string();

    let mut tls = rap_proto::tls::rustls_tls_client_config(ca.cert_pem()).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    stream
        .write_all(b"GET /login/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Sign in to Airlock"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-security-policy:")
    );

    // SIGTERM (systemd's stop, `rap up`'s) shuts the server down cleanly.
    let pid = child.id().unwrap().to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_bad_config_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.toml");
    std::fs::write(&config, "listen = 5\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rap-airlock"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rap-airlock: loading"), "{stderr}");
    assert!(stderr.contains("airlock.toml"), "{stderr}");
}
