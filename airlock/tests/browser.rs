//! One end-to-end run in a real headless Chromium (Debian's chromedriver) against Airlock on
//! a real socket: a researcher adds a file and submits the request, two output checkers
//! approve and submit their reviews, a third releases it, and the in-process uploader sends
//! it to the in-test ReleaseService with a matching checksum.

mod support;

use fantoccini::{Client, Locator};
use rap_airlock::config::Config;
use sha2::{Digest, Sha256};
use support::browser::{WAIT, click, fill, open, start_driver, wait_for_text};
use tokio::time::timeout;

const A_CSV: &[u8] = b"group,count\nA,35\nB,120\n";

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
    fill(client, "#user", name).await;
    fill(client, "#token", &format!("token-{name}")).await;
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
    let client = open(&driver, &dir.path().join("chromium-profile")).await;
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
                .any(|event| event.event_type == "request_released")
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
