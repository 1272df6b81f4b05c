//! End to end with the real job server (`rap-jobserver`, seeded with its admin commands) and
//! real headless Chromium: each person signs in to the job server with a password, generates
//! a single-use Airlock token on its settings page and signs in to Airlock with it. A
//! researcher creates the workspace on the job server, puts two outputs in a request and
//! submits it; one checker requests changes to a file, the other approves, and the request is
//! returned; the researcher replaces the file with a new version, edits the controls, explains
//! in a comment and resubmits; both checkers approve and one of them releases. The files then
//! appear on the job server's released-files page, and their downloads equal the originals.
//!
//! Needs the binary: `cargo build -p rap-jobserver --bins` (the test command builds every
//! binary before the tests).

mod support;

use fantoccini::Client;
use rap_airlock::config::Config;
use sha2::{Digest, Sha256};
use support::browser::{WAIT, click, fill, open, start_driver, wait_for_text};
use support::real_jobserver::{RealJobServer, admin, serve, study_repo};
use tokio::time::{Instant, timeout};

const A_CSV: &[u8] = b"group,count\nA,35\nB,120\n";
/// The first version of b.csv has a small count the first checker asks to be suppressed.
const B_CSV_SMALL: &[u8] = b"region,count\nNorth,3\nSouth,85\n";
const B_CSV_FIXED: &[u8] = b"region,count\nNorth,[REDACTED]\nSouth,85\n";

/// Signs `username` in to the job server with their password.
async fn sign_in_to_jobserver(client: &Client, jobserver: &RealJobServer, username: &str) {
    client
        .goto(&format!("{}/login/", jobserver.http_base))
        .await
        .unwrap();
    fill(client, "#username", username).await;
    fill(client, "#password", &password(username)).await;
    click(client, "#sign-in").await;
    wait_for_text(client, "nav", username).await;
}

/// Generates a single-use Airlock token on the job server's settings page (the user is signed
/// in there) and signs in to Airlock with it, landing on `next`.
async fn sign_in_to_airlock(
    client: &Client,
    jobserver: &RealJobServer,
    airlock_base: &str,
    username: &str,
    next: &str,
) {
    client
        .goto(&format!("{}/settings/", jobserver.http_base))
        .await
        .unwrap();
    click(client, "form[action='/settings/token/'] button").await;
    let token = wait_for_text(client, "#token", "").await;
    assert_eq!(token.split(' ').count(), 3, "a three-word token: {token:?}");
    client
        .goto(&format!("{airlock_base}/login/?next={next}"))
        .await
        .unwrap();
    wait_for_text(client, "h1", "Sign in to Airlock").await;
    fill(client, "#user", username).await;
    fill(client, "#token", &token).await;
    click(client, "#sign-in").await;
    wait_for_text(client, "nav", "Sign out").await;
}

fn password(username: &str) -> String {
    format!("{username}-password")
}

fn file_button(path: &str, class: &str) -> String {
    format!("tr.file[data-path='{path}'] button.{class}")
}

/// Reloads the page until `#status` shows `expected` (the uploader works in the background).
async fn wait_for_status_after_reload(client: &Client, expected: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        client.refresh().await.unwrap();
        let status = wait_for_text(client, "#status", "").await;
        if status == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never became {expected}; last {status}"
        );
    }
}

/// GETs `path` on the job server with the browser's session cookie.
async fn download(client: &Client, jobserver: &RealJobServer, path: &str) -> Vec<u8> {
    let session = client
        .get_named_cookie("rap_session")
        .await
        .expect("signed in to the job server");
    let cookie = format!("rap_session={}", session.value());
    let page = jobserver.http("GET", path, &cookie, "").await;
    assert_eq!(page.status, 200, "GET {path}");
    page.body.into_bytes()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_returned_and_resubmitted_request_is_released_to_the_real_job_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (username, roles) in [
        ("researcher", &[][..]),
        ("checker1", &["--role", "OutputChecker"][..]),
        ("checker2", &["--role", "OutputChecker"][..]),
    ] {
        let email = format!("{username}@example.org");
        let mut args = vec![
            "user",
            "add",
            username,
            "--fullname",
            username,
            "--email",
            &email,
        ];
        args.extend_from_slice(roles);
        admin(&data, &args, Some(&password(username)));
    }
    admin(&data, &["org", "add", "org", "--name", "The Org"], None);
    admin(
        &data,
        &[
            "project",
            "add",
            "study",
            "--name",
            "The Study",
            "--org",
            "org",
        ],
        None,
    );
    admin(
        &data,
        &["member", "set", "study", "researcher", "ProjectDeveloper"],
        None,
    );
    let token = admin(&data, &["backend", "add", "test", "--name", "Test"], None);
    for username in ["researcher", "checker1", "checker2"] {
        admin(&data, &["backend", "add-member", "test", username], None);
    }
    let repo_url = study_repo(&dir.path().join("repo"));
    let jobserver = serve(dir.path(), token).await;

    // Airlock in this process, on the job server's ReleaseService over TLS.
    let medium = dir.path().join("medium");
    support::write_workspace(
        &medium.join("workspaces"),
        "ws",
        &[("output/a.csv", A_CSV), ("output/b.csv", B_CSV_SMALL)],
    );
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nmedium_privacy_dir = {:?}\ndata_dir = {:?}\njobserver_endpoint = {:?}\njobserver_ca = {:?}\njobserver_token = {:?}\nsecure_cookies = false\n",
        medium,
        dir.path().join("airlock"),
        jobserver.grpc_endpoint,
        jobserver.ca_path,
        jobserver.backend_token,
    );
    let config = Config::parse(&toml, std::path::Path::new("test.toml"), |_| None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let airlock_base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let airlock = tokio::spawn(rap_airlock::server::run(config, listener, async {
        let _ = stopped.await;
    }));

    // One browser per person, as at three desks.
    let driver = start_driver().await;
    let researcher = open(&driver, &dir.path().join("profile-researcher")).await;
    let checker1 = open(&driver, &dir.path().join("profile-checker1")).await;
    let checker2 = open(&driver, &dir.path().join("profile-checker2")).await;

    // The researcher creates the workspace on the job server for the study repository, then
    // signs in to Airlock.
    sign_in_to_jobserver(&researcher, &jobserver, "researcher").await;
    researcher
        .goto(&format!("{}/study/new-workspace/", jobserver.http_base))
        .await
        .unwrap();
    fill(&researcher, "#name", "ws").await;
    fill(&researcher, "#repo_url", &repo_url).await;
    fill(&researcher, "#purpose", "Counts by group and region").await;
    click(&researcher, "#create").await;
    wait_for_text(&researcher, "#flash", "Created workspace ws").await;
    sign_in_to_airlock(
        &researcher,
        &jobserver,
        &airlock_base,
        "researcher",
        "/workspaces/view/ws/output/a.csv",
    )
    .await;

    // Both outputs into one group, with context and controls; submit.
    wait_for_text(&researcher, "#file-path", "output/a.csv").await;
    fill(&researcher, "#new-group", "tables").await;
    click(&researcher, "#add-file").await;
    wait_for_text(&researcher, "#flash", "output/a.csv added to group tables").await;
    researcher
        .goto(&format!("{airlock_base}/workspaces/view/ws/output/b.csv"))
        .await
        .unwrap();
    wait_for_text(&researcher, "#file-path", "output/b.csv").await;
    click(&researcher, "#add-file").await;
    wait_for_text(&researcher, "#flash", "output/b.csv added to group tables").await;
    click(&researcher, "a[href^='/requests/view/']").await;
    wait_for_text(&researcher, "#status", "PENDING").await;
    let request_path = researcher.current_url().await.unwrap().path().to_string();
    let id = request_path
        .trim_start_matches("/requests/view/")
        .trim_end_matches('/')
        .to_string();
    fill(
        &researcher,
        "textarea[name=context]",
        "Counts by group and region",
    )
    .await;
    fill(
        &researcher,
        "textarea[name=controls]",
        "Counts above 10 only.",
    )
    .await;
    click(&researcher, "button.save-context").await;
    wait_for_text(&researcher, "#flash", "Context and controls updated").await;
    click(&researcher, "#submit-request").await;
    wait_for_text(&researcher, "#status", "SUBMITTED").await;

    // Checker 1 approves a.csv, asks for b.csv to change with a public comment, submits.
    sign_in_to_jobserver(&checker1, &jobserver, "checker1").await;
    sign_in_to_airlock(
        &checker1,
        &jobserver,
        &airlock_base,
        "checker1",
        &request_path,
    )
    .await;
    wait_for_text(&checker1, "#status", "SUBMITTED").await;
    click(&checker1, &file_button("output/a.csv", "approve")).await;
    wait_for_text(&checker1, "#flash", "Approved output/a.csv").await;
    click(&checker1, &file_button("output/b.csv", "request-changes")).await;
    wait_for_text(&checker1, "#flash", "Changes requested to output/b.csv").await;
    fill(
        &checker1,
        "textarea.comment-text",
        "North has a count of 3: please suppress it",
    )
    .await;
    click(&checker1, "input[name=visibility][value=PUBLIC]").await;
    click(&checker1, "button.add-comment").await;
    wait_for_text(&checker1, "#flash", "Comment added").await;
    click(&checker1, "#submit-review").await;
    wait_for_text(&checker1, "#flash", "Your review has been submitted").await;
    wait_for_text(&checker1, "#status", "ONE REVIEW SUBMITTED").await;

    // Checker 2 approves both and submits: the decision on b.csv is conflicted.
    sign_in_to_jobserver(&checker2, &jobserver, "checker2").await;
    sign_in_to_airlock(
        &checker2,
        &jobserver,
        &airlock_base,
        "checker2",
        &request_path,
    )
    .await;
    click(&checker2, &file_button("output/a.csv", "approve")).await;
    wait_for_text(&checker2, "#flash", "Approved output/a.csv").await;
    click(&checker2, &file_button("output/b.csv", "approve")).await;
    wait_for_text(&checker2, "#flash", "Approved output/b.csv").await;
    click(&checker2, "#submit-review").await;
    wait_for_text(&checker2, "#status", "ALL REVIEWS SUBMITTED").await;
    wait_for_text(
        &checker2,
        "tr.file[data-path='output/b.csv'] td.decision",
        "CONFLICTED",
    )
    .await;
    // Not releasable while a file is not approved by two reviewers.
    assert!(
        checker2
            .find(fantoccini::Locator::Id("release-files"))
            .await
            .is_err(),
        "release offered with a conflicted file"
    );

    // Checker 1 returns it to the researcher.
    checker1.refresh().await.unwrap();
    click(&checker1, "#return-request").await;
    wait_for_text(&checker1, "#flash", "Request has been returned").await;
    wait_for_text(&checker1, "#status", "RETURNED").await;

    // The researcher's job reran: b.csv has a new version. They update it in the request,
    // tighten the controls, answer the comment and resubmit.
    support::write_workspace(
        &medium.join("workspaces"),
        "ws",
        &[("output/a.csv", A_CSV), ("output/b.csv", B_CSV_FIXED)],
    );
    researcher
        .goto(&format!("{airlock_base}/workspaces/view/ws/output/b.csv"))
        .await
        .unwrap();
    wait_for_text(&researcher, "#file-status", "UPDATED").await;
    click(&researcher, "#update-file").await;
    wait_for_text(&researcher, "#flash", "output/b.csv updated").await;
    researcher
        .goto(&format!("{airlock_base}{request_path}"))
        .await
        .unwrap();
    wait_for_text(&researcher, "#status", "RETURNED").await;
    wait_for_text(&researcher, "#group-tables", "please suppress it").await;
    fill(
        &researcher,
        "textarea[name=controls]",
        " Counts below 10 are redacted.",
    )
    .await;
    click(&researcher, "button.save-context").await;
    wait_for_text(&researcher, "#flash", "Context and controls updated").await;
    fill(
        &researcher,
        "textarea.comment-text",
        "North is now redacted",
    )
    .await;
    click(&researcher, "button.add-comment").await;
    wait_for_text(&researcher, "#flash", "Comment added").await;
    click(&researcher, "#submit-request").await;
    wait_for_text(&researcher, "#status", "SUBMITTED").await;
    assert!(
        researcher
            .find(fantoccini::Locator::Id("release-files"))
            .await
            .is_err(),
        "the author can never release"
    );

    // Both checkers approve the new b.csv (their approvals of a.csv stand) and submit.
    for checker in [&checker1, &checker2] {
        checker.refresh().await.unwrap();
        wait_for_text(checker, "#status", "").await;
        wait_for_text(
            checker,
            "tr.file[data-path='output/a.csv'] td.my-vote",
            "APPROVED",
        )
        .await;
        click(checker, &file_button("output/b.csv", "approve")).await;
        wait_for_text(checker, "#flash", "Approved output/b.csv").await;
        click(checker, "#submit-review").await;
        wait_for_text(checker, "#flash", "Your review has been submitted").await;
    }
    wait_for_text(&checker2, "#status", "ALL REVIEWS SUBMITTED").await;
    wait_for_text(
        &checker2,
        "tr.file[data-path='output/b.csv'] td.decision",
        "APPROVED",
    )
    .await;

    // A reviewer who is not the author releases; the uploader sends both files.
    click(&checker2, "#release-files").await;
    wait_for_text(&checker2, "#flash", "Files have been released").await;
    wait_for_status_after_reload(&checker2, "RELEASED").await;
    wait_for_text(&checker2, "#upload-progress", "2 of 2 files uploaded").await;

    // On the job server: the release has Airlock's id, and the files' bytes are the reviewed
    // versions (the new b.csv, not the first).
    researcher
        .goto(&format!("{}/study/ws/releases/", jobserver.http_base))
        .await
        .unwrap();
    let table = wait_for_text(&researcher, "table", "output/b.csv").await;
    for (name, bytes) in [("output/a.csv", A_CSV), ("output/b.csv", B_CSV_FIXED)] {
        let row = table
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not on the released-files page: {table}"));
        assert!(row.contains(&id), "{row}");
        assert!(row.contains(&sha256_hex(bytes)), "{row}");
        let link = researcher
            .find(fantoccini::Locator::LinkText(name))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        let served = download(&researcher, &jobserver, &link).await;
        assert_eq!(sha256_hex(&served), sha256_hex(bytes), "{name}");
        assert_eq!(served, bytes);
    }
    assert!(!table.contains(&sha256_hex(B_CSV_SMALL)));
    assert_eq!(
        table.lines().filter(|l| l.starts_with("output/")).count(),
        2
    );

    for client in [researcher, checker1, checker2] {
        client.close().await.unwrap();
    }
    stop.send(()).unwrap();
    timeout(WAIT, airlock).await.unwrap().unwrap().unwrap();

    // Every status change reached the job server's event receiver.
    let log = jobserver.log();
    for event in [
        "REQUEST_SUBMITTED",
        "REQUEST_PARTIALLY_REVIEWED",
        "REQUEST_REVIEWED",
        "REQUEST_RETURNED",
        "REQUEST_RESUBMITTED",
        "REQUEST_APPROVED",
        "REQUEST_RELEASED",
    ] {
        assert!(log.contains(&format!("event={event}")), "{event}: {log}");
    }
    // The approval's update arrives as a structured entry.
    assert!(
        log.contains(r#"updates=["2 file(s) will be uploaded"]"#),
        "{log}"
    );
}
