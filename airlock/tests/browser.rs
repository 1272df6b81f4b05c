//! One end-to-end run in a real headless Chromium (Debian's chromedriver) against Airlock on
//! a real socket: a researcher adds a file and submits the request, two output checkers
//! approve and submit their reviews, a third releases it, and the in-process uploader sends
//! it to the in-test ReleaseService with a matching checksum.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use rap_airlock::config::Config;
use sha2::{Digest, Sha256};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(30);
const A_CSV: &[u8] = b"group,count\nA,35\nB,120\n";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed at /usr/bin/chromedriver");
    let stdout = child.stdout.take().unwrap();
    // Ready when it says so; keep draining afterwards so it never blocks on a full pipe.
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("started successfully"));
        std::thread::spawn(move || for _ in lines {});
        ready
    });
    assert!(
        timeout(WAIT, ready).await.unwrap().unwrap(),
        "chromedriver did not start"
    );
    Driver { child, port }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless".to_string(),
        "--no-sandbox".to_string(),
        "--disable-gpu".to_string(),
        "--disable-dev-shm-usage".to_string(),
        "--disable-background-networking".to_string(),
        "--disable-component-update".to_string(),
        "--disable-sync".to_string(),
        "--no-first-run".to_string(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connecting to chromedriver")
}

/// Polls the element's text until it contains `expected` (pages load asynchronously after a
/// click), within a bounded wait.
async fn wait_for_text(client: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last.contains(expected) {
                return;
            }
        }
        tokio::task::yield_now().await;
    }
    panic!("{css} never showed {expected:?}; last text {last:?}");
}

/// Clicks the element, retrying while the page is still being replaced (a stale or missing
/// element), within a bounded wait.
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && element.click().await.is_ok()
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("could not click {css}");
}

async fn sign_in(
    client: &Client,
    base: &str,
    fake: &support::FakeJobServer,
    name: &str,
    next: &str,
    checker: bool,
) {
    let workspaces: &[&str] = if checker { &[] } else { &["ws"] };
    let user = support::level4(name, workspaces, checker);
    {
        let mut seen = fake.seen.lock().unwrap();
        seen.logins
            .insert((name.to_string(), format!("token-{name}")), user.clone());
        seen.users.insert(name.to_string(), user);
    }
    client
        .goto(&format!("{base}/login/?next={next}"))
        .await
        .unwrap();
    wait_for_text(client, "h1", "Sign in to Airlock").await;
    client
        .find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&format!("token-{name}"))
        .await
        .unwrap();
    click(client, "#sign-in").await;
}

async fn sign_out(client: &Client) {
    click(client, "nav button").await;
    wait_for_text(client, "h1", "Sign in to Airlock").await;
}

#[tokio::test]
async fn a_request_goes_from_researcher_to_release_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let medium = dir.path().join("medium");
    support::write_workspace(&medium.join("workspaces"), "ws", &[("output/a.csv", A_CSV)]);
    let server = support::start().await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nmedium_privacy_dir = {:?}\ndata_dir = {:?}\njobserver_endpoint = {:?}\njobserver_ca = {:?}\njobserver_token = {:?}\nsecure_cookies = false\n",
        medium,
        dir.path().join("data"),
        server.endpoint,
        ca,
        support::TOKEN
    );
    let config = Config::parse(&toml, std::path::Path::new("test.toml"), |_| None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let airlock = tokio::spawn(rap_airlock::server::run(config, listener, async {
        let _ = stopped.await;
    }));

    let driver = start_driver().await;
    let client = browser(&driver, &dir.path().join("chromium-profile")).await;
    let fake = server.fake.clone();

    // The researcher adds a.csv to a new group and submits.
    sign_in(
        &client,
        &base,
        &fake,
        "researcher",
        "/workspaces/view/ws/output/a.csv",
        false,
    )
    .await;
    wait_for_text(&client, "#file-path", "output/a.csv").await;
    client
        .find(Locator::Id("new-group"))
        .await
        .unwrap()
        .send_keys("tables")
        .await
        .unwrap();
    click(&client, "#add-file").await;
    wait_for_text(&client, "#flash", "output/a.csv added to group tables").await;
    click(&client, "a[href^='/requests/view/']").await;
    wait_for_text(&client, "#status", "PENDING").await;
    let url = client.current_url().await.unwrap();
    let request_path = url.path().to_string();
    let id = request_path
        .trim_start_matches("/requests/view/")
        .trim_end_matches('/')
        .to_string();
    client
        .find(Locator::Css("textarea[name=context]"))
        .await
        .unwrap()
        .send_keys("Counts by group")
        .await
        .unwrap();
    client
        .find(Locator::Css("textarea[name=controls]"))
        .await
        .unwrap()
        .send_keys("Rounded to the nearest 5")
        .await
        .unwrap();
    click(&client, "button.save-context").await;
    wait_for_text(&client, "#flash", "Context and controls updated").await;
    click(&client, "#submit-request").await;
    wait_for_text(&client, "#status", "SUBMITTED").await;
    sign_out(&client).await;

    // Two independent reviews.
    for checker in ["checker1", "checker2"] {
        sign_in(&client, &base, &fake, checker, &request_path, true).await;
        wait_for_text(&client, "#status", "").await;
        click(&client, "button.approve").await;
        wait_for_text(&client, "#flash", "Approved output/a.csv").await;
        click(&client, "#submit-review").await;
        wait_for_text(&client, "#flash", "Your review has been submitted").await;
        sign_out(&client).await;
    }

    // A third checker releases; the uploader sends the file.
    sign_in(&client, &base, &fake, "checker3", &request_path, true).await;
    wait_for_text(&client, "#status", "ALL REVIEWS SUBMITTED").await;
    click(&client, "#release-files").await;
    wait_for_text(&client, "#flash", "Files have been released").await;
    timeout(
        WAIT,
        fake.wait_until(|seen| {
            seen.events
                .iter()
                .any(|(kind, _, _)| kind == "request_released")
        }),
    )
    .await
    .expect("the request was never released");
    client.refresh().await.unwrap();
    wait_for_text(&client, "#status", "RELEASED").await;
    wait_for_text(&client, "#upload-progress", "1 of 1 files uploaded").await;
    {
        let seen = fake.seen.lock().unwrap();
        let stored = &seen.stored[&(id.clone(), "output/a.csv".to_string())];
        assert_eq!(Sha256::digest(stored), Sha256::digest(A_CSV));
        let (_, _, releaser, files) = &seen.releases[0];
        assert_eq!(releaser, "checker3");
        assert_eq!(
            files,
            &[format!(
                "output/a.csv:{}",
                hex::encode(Sha256::digest(A_CSV))
            )]
        );
    }

    client.close().await.unwrap();
    stop.send(()).unwrap();
    timeout(WAIT, airlock).await.unwrap().unwrap().unwrap();
}
