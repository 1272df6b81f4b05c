//! Releasing a request to a real gRPC peer (the in-test ReleaseService over loopback TLS):
//! checksums match, an interrupted upload resumes without sending a confirmed file twice,
//! and a lost reply is settled by `already_uploaded`.
//! `jobserver_e2e.rs` does the same against the real job server.

mod support;

use std::time::Duration;

use rap_airlock::jobserver::{OutputCheckingRepo, user_from_pb};
use rap_airlock::request::workflow;
use rap_airlock::request::{FileType, RequestId, RequestStatus, Vote};
use rap_airlock::store::Store;
use rap_airlock::upload::{self, ReleaseError, UploadConfig};
use rap_airlock::workspace::Workspaces;
use tokio::sync::Notify;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn config() -> UploadConfig {
    UploadConfig {
        retry_base: Duration::ZERO,
        retry_cap: Duration::ZERO,
        poll_interval: Duration::from_secs(60),
    }
}

/// A REVIEWED request with two approved output files and one supporting file.
fn reviewed_request(store: &Store, workspaces: &Workspaces) -> RequestId {
    support::requests::reviewed_request(
        store,
        workspaces,
        "ws",
        &[
            ("output/a.csv", FileType::Output),
            ("output/b.png", FileType::Output),
            ("output/notes.txt", FileType::Supporting),
        ],
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    workspaces: Workspaces,
    a_bytes: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("medium/workspaces");
    let a_bytes = b"group,count\nA,10\nB,12\n".to_vec();
    support::write_workspace(
        &root,
        "ws",
        &[
            ("output/a.csv", a_bytes.as_slice()),
            ("output/b.png", &[0x89, b'P', b'N', b'G', 1, 2, 3]),
            ("output/notes.txt", b"notes"),
        ],
    );
    let store = Store::open(&dir.path().join("data")).unwrap();
    Fixture {
        store,
        workspaces: Workspaces::new(&root),
        a_bytes,
        _dir: dir,
    }
}

#[tokio::test]
async fn release_uploads_every_output_once_across_an_interruption() {
    let fixture = fixture();
    let server = support::start().await;
    let id = reviewed_request(&fixture.store, &fixture.workspaces);
    let releaser = user_from_pb(support::level4("c3", &[], true));
    let wake = Notify::new();

    let request = timeout(
        WAIT,
        upload::release_files(&fixture.store, &server.link, &id, &releaser, &wake),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(request.status, RequestStatus::Approved);
    {
        let seen = server.fake.seen.lock().unwrap();
        assert_eq!(seen.releases.len(), 1);
        let (release_id, workspace, os_user, files) = &seen.releases[0];
        assert_eq!(
            (release_id.as_str(), workspace.as_str(), os_user.as_str()),
            (id.as_str(), "ws", "c3")
        );
        // Only output files are released.
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| !f.starts_with("output/notes.txt")));
    }

    // First pass: b.png hits an outage, a.csv is stored but its reply is lost.
    {
        let mut seen = server.fake.seen.lock().unwrap();
        seen.fail_before_store.insert("output/b.png".to_string());
        seen.fail_after_store.insert("output/a.csv".to_string());
    }
    let summary = timeout(
        WAIT,
        upload::upload_pass(&fixture.store, &server.link, &config()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (summary.uploaded, summary.failed, summary.released),
        (0, 2, 0)
    );
    assert_eq!(
        fixture.store.get(&id).unwrap().unwrap().status,
        RequestStatus::Approved
    );

    // Second pass: both go through; a.csv is "already uploaded" and counts as success.
    let summary = timeout(
        WAIT,
        upload::upload_pass(&fixture.store, &server.link, &config()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (summary.uploaded, summary.failed, summary.released),
        (2, 0, 1)
    );
    let request = fixture.store.get(&id).unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Released);
    assert!(request.files["output/a.csv"].uploaded);
    assert_eq!(request.files["output/a.csv"].upload_attempts, 2);

    // A third pass sends nothing.
    let calls_before = server.fake.seen.lock().unwrap().upload_calls;
    let summary = upload::upload_pass(&fixture.store, &server.link, &config())
        .await
        .unwrap();
    assert_eq!(summary, upload::PassSummary::default());
    let seen = server.fake.seen.lock().unwrap();
    assert_eq!(seen.upload_calls, calls_before);
    // Each file stored exactly once, byte for byte.
    assert_eq!(
        seen.store_count.values().copied().collect::<Vec<_>>(),
        [1, 1]
    );
    assert_eq!(
        seen.stored[&(id.to_string(), "output/a.csv".to_string())],
        fixture.a_bytes
    );
    let events: Vec<&str> = seen
        .events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    assert_eq!(events, ["request_approved", "request_released"]);
    // No output-checking repository configured: none named.
    assert!(
        seen.events
            .iter()
            .all(|e| e.org.is_empty() && e.repo.is_empty())
    );

    let kinds: Vec<&str> = fixture
        .store
        .audit_for(&id)
        .unwrap()
        .iter()
        .map(|event| event.kind.as_str())
        .filter(|kind| kind.contains("UPLOAD") || kind.contains("RELEASE"))
        .collect();
    assert_eq!(
        kinds,
        [
            "REQUEST_FILE_RELEASE",
            "REQUEST_FILE_RELEASE",
            "REQUEST_FILE_UPLOAD",
            "REQUEST_FILE_UPLOAD",
            "REQUEST_RELEASE"
        ]
    );
}

#[tokio::test]
async fn release_is_refused_with_unapproved_files_and_nothing_is_sent() {
    let fixture = fixture();
    let server = support::start().await;
    let id = reviewed_request(&fixture.store, &fixture.workspaces);
    let c1 = user_from_pb(support::level4("c1", &[], true));
    fixture
        .store
        .update(&id, |r| {
            workflow::vote(r, &c1, "output/a.csv", Vote::ChangesRequested, 5)
        })
        .unwrap();
    let before = fixture.store.get(&id).unwrap().unwrap();
    let releaser = user_from_pb(support::level4("c3", &[], true));
    let error = upload::release_files(&fixture.store, &server.link, &id, &releaser, &Notify::new())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Cannot set status to APPROVED; request has unapproved files."
    );
    assert!(matches!(error, ReleaseError::Request(_)));
    assert_eq!(fixture.store.get(&id).unwrap().unwrap(), before);
    assert!(server.fake.seen.lock().unwrap().releases.is_empty());
}

#[tokio::test]
async fn release_with_the_job_server_down_leaves_the_request_reviewed() {
    let fixture = fixture();
    let server = support::start().await;
    let id = reviewed_request(&fixture.store, &fixture.workspaces);
    // A link with the wrong token: the job server denies it.
    let denied = rap_airlock::jobserver::JobServer::connect_lazy(
        &server.endpoint,
        Some(rap_proto::tls::tls_client_from_pem(&server.ca_pem).unwrap()),
        "wrong",
    )
    .unwrap();
    let releaser = user_from_pb(support::level4("c3", &[], true));
    let error = upload::release_files(&fixture.store, &denied, &id, &releaser, &Notify::new())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "Permission denied");
    assert_eq!(
        fixture.store.get(&id).unwrap().unwrap().status,
        RequestStatus::Reviewed
    );
}

#[tokio::test]
async fn events_name_the_output_checking_repo_and_carry_structured_updates() {
    let fixture = fixture();
    let server = support::start().await;
    let id = reviewed_request(&fixture.store, &fixture.workspaces);
    let releaser = user_from_pb(support::level4("c3", &[], true));
    let link = server
        .link
        .clone()
        .with_output_checking_repo(OutputCheckingRepo {
            org: "opensafely-core".to_string(),
            repo: "output-checking".to_string(),
        });
    timeout(
        WAIT,
        upload::release_files(&fixture.store, &link, &id, &releaser, &Notify::new()),
    )
    .await
    .unwrap()
    .unwrap();

    let seen = server.fake.seen.lock().unwrap();
    let approved = &seen.events[0];
    assert_eq!(approved.event_type, "request_approved");
    assert_eq!(
        (approved.org.as_str(), approved.repo.as_str()),
        ("opensafely-core", "output-checking")
    );
    assert_eq!(
        (approved.workspace.as_str(), approved.request_id.as_str()),
        ("ws", id.as_str())
    );
    assert_eq!(
        (approved.request_author.as_str(), approved.user.as_str()),
        ("author", "c3")
    );
    let updates: Vec<(&str, &str, &str)> = approved
        .update_items
        .iter()
        .map(|u| (u.update.as_str(), u.group.as_str(), u.user.as_str()))
        .collect();
    assert_eq!(updates, [("2 file(s) will be uploaded", "", "")]);
    // The superseded JSON text is no longer sent.
    assert!(approved.updates.is_empty());
}
