//! Page tests through `tower::ServiceExt::oneshot` (no socket for the web app), with real
//! files on disk, a real sled store and the in-test ReleaseService over loopback TLS as the
//! job server.

mod support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use rap_airlock::config::Config;
use rap_airlock::request::{RequestId, RequestStatus};
use rap_airlock::server::state_from_config;
use rap_airlock::upload::{self, UploadConfig};
use rap_airlock::web::{self, AppState, WebConfig};
use sha2::{Digest, Sha256};
use support::pages::{Browser, Page, encode, hidden_value, send};

struct Env {
    _dir: tempfile::TempDir,
    server: support::Running,
    state: AppState,
    app: Router,
}

const A_CSV: &[u8] = b"group,count\nA,3\nB,120\n";

async fn env() -> Env {
    env_with(|_| {}).await
}

async fn env_with(adjust: impl FnOnce(&mut WebConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let medium = dir.path().join("medium");
    support::write_workspace(
        &medium.join("workspaces"),
        "ws",
        &[
            ("output/a.csv", A_CSV),
            ("output/b.png", &[0x89, b'P', b'N', b'G', 9, 9]),
            ("output/notes.txt", b"notes"),
            ("output/x.foo", b"foo"),
            ("output/page.html", b"<script>alert(1)</script><p>hi</p>"),
        ],
    );
    support::write_workspace(
        &medium.join("workspaces"),
        "other",
        &[("output/s.csv", b"s\n1\n")],
    );
    std::os::unix::fs::symlink(
        medium.join("workspaces/other/output/s.csv"),
        medium.join("workspaces/ws/output/link.csv"),
    )
    .unwrap();
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
    let mut state = state_from_config(&config).unwrap();
    let mut web_config = (*state.config).clone();
    adjust(&mut web_config);
    state.config = Arc::new(web_config);
    let app = web::app(state.clone());
    Env {
        _dir: dir,
        server,
        state,
        app,
    }
}

async fn sign_in(env: &Env, user: rap_proto::pb::jobserver::v1::Level4User) -> Browser {
    support::pages::sign_in(&env.app, &env.server.fake, user).await
}

fn current(env: &Env, author: &str) -> rap_airlock::request::ReleaseRequest {
    env.state
        .store
        .current_request("ws", author)
        .unwrap()
        .unwrap()
}

fn get_request(env: &Env, id: &RequestId) -> rap_airlock::request::ReleaseRequest {
    env.state.store.get(id).unwrap().unwrap()
}

async fn add(env: &Env, browser: &Browser, path: &str, filetype: &str) -> Page {
    browser
        .post(
            &env.app,
            "/workspaces/add-file-to-request/ws",
            &[
                ("path", path),
                ("new_group", "tables"),
                ("filetype", filetype),
            ],
        )
        .await
}

/// A researcher's submitted request with a.csv and b.png as outputs, notes.txt supporting.
async fn submitted_request(env: &Env) -> (Browser, RequestId) {
    let researcher = sign_in(env, support::level4("researcher", &["ws"], false)).await;
    for (path, filetype) in [
        ("output/a.csv", "OUTPUT"),
        ("output/b.png", "OUTPUT"),
        ("output/notes.txt", "SUPPORTING"),
    ] {
        let page = add(env, &researcher, path, filetype).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    }
    let id = current(env, "researcher").id;
    let page = researcher
        .post(
            &env.app,
            &format!("/requests/edit/{id}/tables"),
            &[("context", "Counts by group"), ("controls", "Rounded to 5")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = researcher
        .post(&env.app, &format!("/requests/submit/{id}"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(get_request(env, &id).status, RequestStatus::Submitted);
    (researcher, id)
}

async fn review_all(env: &Env, checker: &Browser, id: &RequestId) {
    for path in ["output/a.csv", "output/b.png"] {
        let page = checker
            .post(&env.app, &format!("/requests/approve/{id}/{path}"), &[])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    }
    let page = checker
        .post(&env.app, &format!("/requests/review/{id}"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

#[tokio::test]
async fn researcher_submits_two_checkers_review_and_the_release_uploads() {
    let env = env().await;

    // Browsing: the tree, the file page and the sandboxed CSV viewer.
    let researcher = sign_in(&env, support::level4("researcher", &["ws"], false)).await;
    let page = researcher.get(&env.app, "/workspaces/").await;
    assert!(page.body.contains("/workspaces/view/ws/"), "{}", page.body);
    let page = researcher.get(&env.app, "/workspaces/view/ws/output").await;
    assert!(
        page.body.contains("a.csv") && !page.body.contains("link.csv"),
        "{}",
        page.body
    );
    let page = researcher
        .get(&env.app, "/workspaces/view/ws/output/a.csv")
        .await;
    assert!(page.body.contains("id=\"add-file-form\""), "{}", page.body);
    let page = researcher
        .get(&env.app, "/workspaces/content/ws/output/a.csv")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<td>120</td>"), "{}", page.body);
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("sandbox;"), "{csp}");
    let page = researcher
        .get(&env.app, "/workspaces/content/ws/output/page.html")
        .await;
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );

    let (_researcher, id) = submitted_request(&env).await;
    let checker1 = sign_in(&env, support::level4("checker1", &[], true)).await;
    let checker2 = sign_in(&env, support::level4("checker2", &[], true)).await;
    // The review page flags the small count in a.csv.
    let page = checker1
        .get(&env.app, &format!("/requests/view/{id}/"))
        .await;
    assert!(
        page.body
            .contains("column &#39;count&#39;: 1 cell(s) hold a count between 1 and 7")
            || page
                .body
                .contains("column 'count': 1 cell(s) hold a count between 1 and 7"),
        "{}",
        page.body
    );
    review_all(&env, &checker1, &id).await;
    assert_eq!(
        get_request(&env, &id).status,
        RequestStatus::PartiallyReviewed
    );
    review_all(&env, &checker2, &id).await;
    assert_eq!(get_request(&env, &id).status, RequestStatus::Reviewed);

    let checker3 = sign_in(&env, support::level4("checker3", &[], true)).await;
    let page = checker3
        .post(&env.app, &format!("/requests/release/{id}"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(get_request(&env, &id).status, RequestStatus::Approved);

    let config = UploadConfig {
        retry_base: std::time::Duration::ZERO,
        retry_cap: std::time::Duration::ZERO,
        poll_interval: std::time::Duration::from_secs(60),
    };
    let summary = upload::upload_pass(&env.state.store, &env.state.link, &config)
        .await
        .unwrap();
    assert_eq!(summary.uploaded, 2);
    assert_eq!(get_request(&env, &id).status, RequestStatus::Released);
    {
        let seen = env.server.fake.seen.lock().unwrap();
        let stored = &seen.stored[&(id.to_string(), "output/a.csv".to_string())];
        assert_eq!(
            hex::encode(Sha256::digest(stored)),
            hex::encode(Sha256::digest(A_CSV))
        );
        assert_eq!(seen.stored.len(), 2);
        let events: Vec<&str> = seen
            .events
            .iter()
            .map(|event| event.event_type.as_str())
            .collect();
        assert_eq!(
            events,
            [
                "request_submitted",
                "request_partially_reviewed",
                "request_reviewed",
                "request_approved",
                "request_released"
            ]
        );
    }
    let page = checker3
        .get(&env.app, &format!("/requests/view/{id}/"))
        .await;
    assert!(page.body.contains("2 of 2 files uploaded"), "{}", page.body);
    assert!(page.body.contains("Released request"), "{}", page.body);
}

#[tokio::test]
async fn refusals_are_403_with_the_reason_and_change_nothing() {
    let env = env().await;
    let (researcher, id) = submitted_request(&env).await;
    let before = get_request(&env, &id);

    // An author who is also an output checker cannot review their own request.
    let author_checker = sign_in(&env, {
        let mut user = support::level4("researcher", &["ws"], true);
        user.fullname = "researcher".to_string();
        user
    })
    .await;
    let page = author_checker
        .post(
            &env.app,
            &format!("/requests/approve/{id}/output/a.csv"),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("You do not have permission to review this request")
    );

    // Downloads: never by the author, even an output-checking one; audited for checkers.
    let download = format!("/requests/content/{id}/tables/output/a.csv?download=1");
    assert_eq!(
        author_checker.get(&env.app, &download).await.status,
        StatusCode::FORBIDDEN
    );
    let other_checker = sign_in(&env, support::level4("checker9", &[], true)).await;
    let page = other_checker.get(&env.app, &download).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.as_bytes(), A_CSV);
    assert_eq!(
        page.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"a.csv\""
    );
    let downloads = env
        .state
        .store
        .audit_for(&id)
        .unwrap()
        .into_iter()
        .filter(|event| event.kind.as_str() == "REQUEST_FILE_DOWNLOAD")
        .count();
    assert_eq!(downloads, 1);

    // A third party with a role on the workspace cannot act on someone else's request.
    let colleague = sign_in(&env, support::level4("colleague", &["ws"], false)).await;
    let page = colleague
        .post(&env.app, &format!("/requests/withdraw/{id}"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("cannot change status from SUBMITTED to WITHDRAWN"),
        "{}",
        page.body
    );
    let page = colleague
        .post(
            &env.app,
            &format!("/requests/edit/{id}/tables"),
            &[("context", "x"), ("controls", "y")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // Releasing with unapproved files.
    let checker1 = sign_in(&env, support::level4("checker1", &[], true)).await;
    review_all(&env, &checker1, &id).await;
    let checker2 = sign_in(&env, support::level4("checker2", &[], true)).await;
    let page = checker2
        .post(&env.app, &format!("/requests/release/{id}"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains(
            "Error releasing files: cannot change status from PARTIALLY_REVIEWED to APPROVED"
        ),
        "{}",
        page.body
    );
    assert!(env.server.fake.seen.lock().unwrap().releases.is_empty());

    // A form without the session's CSRF token.
    let forged = Browser {
        cookie: checker2.cookie.clone(),
        csrf: "forged".to_string(),
    };
    let page = forged
        .post(&env.app, &format!("/requests/review/{id}"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    let after = get_request(&env, &id);
    assert_eq!(after.status, RequestStatus::PartiallyReviewed);
    // Only checker1's votes were recorded; nothing else changed.
    assert_eq!(after.groups, before.groups);
    for (path, file) in &after.files {
        let reviewers: Vec<&String> = file.reviews.keys().collect();
        let expected: Vec<&str> =
            if before.files[path].filetype == rap_airlock::request::FileType::Output {
                vec!["checker1"]
            } else {
                vec![]
            };
        assert_eq!(reviewers, expected, "{path}");
    }
    drop(researcher);
}

#[tokio::test]
async fn bad_files_and_escaping_paths_are_refused() {
    let env = env().await;
    let researcher = sign_in(&env, support::level4("researcher", &["ws"], false)).await;
    let page = add(&env, &researcher, "output/x.foo", "OUTPUT").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("Cannot add file of this type to request: output/x.foo")
    );
    for escaping in ["../other/output/s.csv", "/etc/passwd", "output/link.csv"] {
        let page = add(&env, &researcher, escaping, "OUTPUT").await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{escaping}: {}",
            page.body
        );
        let page = researcher
            .get(&env.app, &format!("/workspaces/content/ws/{escaping}"))
            .await;
        assert_ne!(page.status, StatusCode::OK, "{escaping}");
    }
    // Nothing was created.
    assert!(env.state.store.list().unwrap().is_empty());

    // Added once; a second add of the same path is refused.
    assert_eq!(
        add(&env, &researcher, "output/a.csv", "OUTPUT")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let page = add(&env, &researcher, "output/a.csv", "OUTPUT").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains(
            "output/a.csv file has already been added to request (in file group &#39;tables&#39;)"
        ) || page.body.contains(
            "output/a.csv file has already been added to request (in file group 'tables')"
        ),
        "{}",
        page.body
    );
    // Moving the file to another group as supporting; the same again changes nothing.
    let id = current(&env, "researcher").id;
    let fields = [
        ("path", "output/a.csv"),
        ("new_group", "extra"),
        ("filetype", "SUPPORTING"),
    ];
    let page = researcher
        .post(
            &env.app,
            &format!("/requests/change-properties/{id}"),
            &fields,
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let file = current(&env, "researcher").files["output/a.csv"].clone();
    assert_eq!(
        (file.group.as_str(), file.filetype),
        ("extra", rap_airlock::request::FileType::Supporting)
    );
    let page = researcher
        .post(
            &env.app,
            &format!("/requests/change-properties/{id}"),
            &fields,
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("No changes to make"), "{}", page.body);
    // A colleague with a role on the workspace cannot submit the researcher's request.
    let colleague = sign_in(&env, support::level4("colleague", &["ws"], false)).await;
    let page = colleague
        .post(&env.app, &format!("/requests/submit/{id}"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains(
            "only the request author researcher can set status from PENDING to SUBMITTED"
        ),
        "{}",
        page.body
    );
    assert_eq!(current(&env, "researcher").status, RequestStatus::Pending);
    // Another user's workspace is not visible.
    let outsider = sign_in(&env, support::level4("outsider", &["other"], false)).await;
    assert_eq!(
        outsider.get(&env.app, "/workspaces/view/ws/").await.status,
        StatusCode::FORBIDDEN
    );
    let id = current(&env, "researcher").id;
    assert_eq!(
        outsider
            .get(&env.app, &format!("/requests/view/{id}/"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn sign_in_failures_and_re_authorisation() {
    let env = env_with(|config| config.authz_timeout_secs = -1).await;
    // Not signed in: redirected to the login page with `next`.
    let page = send(
        &env.app,
        Request::get("/workspaces/view/ws/")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers[header::LOCATION],
        "/login/?next=%2Fworkspaces%2Fview%2Fws%2F"
    );

    let researcher = sign_in(&env, support::level4("researcher", &["ws"], false)).await;
    assert_eq!(
        researcher
            .get(&env.app, "/workspaces/view/ws/")
            .await
            .status,
        StatusCode::OK
    );
    // The job server withdraws access; the next page re-authorises and sees it.
    env.server.fake.seen.lock().unwrap().users.insert(
        "researcher".to_string(),
        support::level4("researcher", &[], false),
    );
    assert_eq!(
        researcher
            .get(&env.app, "/workspaces/view/ws/")
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // A used token does not work twice.
    let page = send(
        &env.app,
        Request::get("/login/").body(Body::empty()).unwrap(),
    )
    .await;
    let csrf = hidden_value(&page.body, "csrf");
    let cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let request = Request::post("/login/")
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(encode(&[
            ("csrf", &csrf),
            ("user", "researcher"),
            ("token", "one-time"),
        ])))
        .unwrap();
    let page = send(&env.app, request).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Invalid user or token"), "{}", page.body);
}
