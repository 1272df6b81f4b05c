//! `rap up` as a user runs it: the built `rap` binary over a fresh data directory, every
//! service on a free port, the pages answering, then SIGINT stops everything and `rap` exits 0.
//! A second `rap up` on the same directory reuses the installation and the accounts.

#[path = "support/rap_up.rs"]
mod rap_up;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use rap_up::rap_up;

/// The status code of `GET url` (plain HTTP/1.0).
async fn get(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rap_up_serves_every_service_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = rap_up(&data, &[]).await;
    let jobserver = up.fields["Job server"].clone();
    let airlock = up.fields["Airlock"].clone();
    assert_eq!(get(&jobserver).await, Some(200), "{jobserver}");
    assert_eq!(
        get(&format!("{airlock}login/")).await,
        Some(200),
        "{airlock}"
    );
    let users: Vec<&str> = up.accounts.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(users, ["researcher", "checker1", "checker2"]);
    // The passwords printed are the ones recorded for later runs.
    let recorded = std::fs::read_to_string(data.join("accounts.txt")).unwrap();
    assert!(
        recorded.contains(&format!("user researcher {} ", up.password("researcher"))),
        "{recorded}"
    );
    assert!(data.join("study/.git").is_dir());
    assert!(data.join("controller/controller.toml").is_file());
    let accounts = up.accounts.clone();
    up.interrupt_and_wait().await;
    // Every service stopped with it.
    assert_eq!(get(&jobserver).await, None, "the job server still answers");
    assert_eq!(get(&format!("{airlock}login/")).await, None);

    // Again on the same data directory: the same installation and accounts.
    let again = rap_up(&data, &[]).await;
    assert_eq!(again.accounts, accounts);
    again.interrupt_and_wait().await;
}
