//! The ReleaseService over loopback with the generated client: Airlock login tokens, the
//! Level4 user, release creation checks and idempotence, uploads with sha256 checks, events.

mod common;

use common::Harness;
use rap_jobserver::rpc::release::ReleaseApi;
use rap_proto::pb::jobserver::v1 as pb;
use rap_proto::pb::jobserver::v1::release_service_client::ReleaseServiceClient;
use sha2::Digest;
use tonic::Code;
use tonic::transport::Channel;

struct Airlock {
    h: Harness,
    client: ReleaseServiceClient<Channel>,
}

async fn airlock() -> Airlock {
    let h = Harness::new().await;
    let api = ReleaseApi {
        store: h.store.clone(),
        release_storage: h.dir.path().join("releases"),
        base_url: "http://jobs.example".into(),
        size_limit: 16 * 1024 * 1024,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::release_service_server::ReleaseServiceServer::new(api))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = ReleaseServiceClient::new(channel);
    Airlock { h, client }
}

fn call<T>(message: T, token: &str, user: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if !token.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(user) = user {
        request
            .metadata_mut()
            .insert("os-user", user.parse().unwrap());
    }
    request
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Generates a login token for `user` through the settings page, returning the words.
async fn generate_token(h: &Harness, user: &str) -> String {
    let (cookie, csrf) = h.session(user);
    let (status, body, _) = h
        .post("/settings/token/", &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, axum::http::StatusCode::OK);
    let start = body.find("<strong id=\"token\">").unwrap() + "<strong id=\"token\">".len();
    let end = start + body[start..].find("</strong>").unwrap();
    body[start..end].to_owned()
}

#[tokio::test]
async fn backend_token_errors_use_the_reference_messages() {
    let mut a = airlock().await;
    let cases = [
        ("", "Authorization header is missing"),
        ("wrong", "Invalid token"),
    ];
    for (token, message) in cases {
        let error = a
            .client
            .authorise(call(
                pb::AuthoriseRequest { user: "dev".into() },
                token,
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
        assert_eq!(error.message(), message);
    }
    let mut request = tonic::Request::new(pb::AuthoriseRequest { user: "dev".into() });
    request
        .metadata_mut()
        .insert("authorization", "Bearer ".parse().unwrap());
    let error = a.client.authorise(request).await.unwrap_err();
    assert_eq!(error.message(), "Authorization header is empty");
    // The bare token (as the reference sends it) works too.
    let mut request = tonic::Request::new(pb::AuthoriseRequest { user: "dev".into() });
    request
        .metadata_mut()
        .insert("authorization", a.h.backend_token.parse().unwrap());
    assert_eq!(
        a.client
            .authorise(request)
            .await
            .unwrap()
            .into_inner()
            .username,
        "dev"
    );
}

#[tokio::test]
async fn login_token_is_single_use_and_returns_the_level4_user() {
    let mut a = airlock().await;
    let token = generate_token(&a.h, "dev").await;
    assert_eq!(token.split(' ').count(), 3);
    // The email works as well as the username; spaces are ignored.
    let user = a
        .client
        .authenticate(call(
            pb::AuthenticateRequest {
                user: "DEV@example.org".into(),
                token: token.replace(' ', ""),
            },
            &a.h.backend_token,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.username, "dev");
    assert_eq!(user.fullname, "dev name");
    assert!(!user.output_checker);
    assert!(!user.readonly_access);
    let ws = &user.workspaces["ws"];
    assert!(!ws.archived);
    let details = ws.project_details.as_ref().unwrap();
    assert_eq!(details.name, "Project One");
    assert!(details.ongoing);
    assert_eq!(details.orgs, vec!["The Org"]);
    assert!(user.copiloted_workspaces.is_empty());
    // Used once: refused now.
    let error = a
        .client
        .authenticate(call(
            pb::AuthenticateRequest {
                user: "dev".into(),
                token,
            },
            &a.h.backend_token,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn expired_or_wrong_tokens_and_users_without_backends_are_refused() {
    let mut a = airlock().await;
    let token = generate_token(&a.h, "dev").await;
    let wrong = a
        .client
        .authenticate(call(
            pb::AuthenticateRequest {
                user: "dev".into(),
                token: "not my words".into(),
            },
            &a.h.backend_token,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    // Expire it.
    let mut user = a.h.store.user("dev").unwrap().unwrap();
    user.login_token.as_mut().unwrap().expires_at = rap_jobserver::model::now() - 1;
    a.h.store.put_user(&user).unwrap();
    let expired = a
        .client
        .authenticate(call(
            pb::AuthenticateRequest {
                user: "dev".into(),
                token,
            },
            &a.h.backend_token,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::PermissionDenied);
    // No backend membership: no token on the settings page, and authorise refuses.
    let (cookie, csrf) = a.h.session("nobackend");
    let (status, _, _) =
        a.h.post("/settings/token/", &cookie, &[("csrf_token", &csrf)])
            .await;
    assert_eq!(status, axum::http::StatusCode::NOT_FOUND);
    let error = a
        .client
        .authorise(call(
            pb::AuthoriseRequest {
                user: "nobackend".into(),
            },
            &a.h.backend_token,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    let error = a
        .client
        .authorise(call(
            pb::AuthoriseRequest {
                user: "ghost".into(),
            },
            &a.h.backend_token,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    // A global output checker is flagged, with no workspaces of their own (spec D).
    let checker = a
        .client
        .authorise(call(
            pb::AuthoriseRequest {
                user: "checker".into(),
            },
            &a.h.backend_token,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(checker.output_checker);
    assert!(checker.workspaces.is_empty());
}

fn release_request(id: &str, files: &[(&str, &[u8])]) -> pb::CreateReleaseRequest {
    pb::CreateReleaseRequest {
        workspace: "ws".into(),
        release_id: id.into(),
        files: files
            .iter()
            .map(|(name, bytes)| pb::ReleaseFileSpec {
                name: (*name).into(),
                size: bytes.len() as u64,
                sha256: sha(bytes),
                date: 1,
            })
            .collect(),
    }
}

const RELEASE_ID: &str = "01HZZZZZZZZZZZZZZZZZZZZZZZ";

#[tokio::test]
async fn create_release_checks_access_in_order() {
    let mut a = airlock().await;
    let token = a.h.backend_token.clone();
    let files: &[(&str, &[u8])] = &[("output/table.csv", b"a,b\n1,2\n")];
    let mut unknown = release_request(RELEASE_ID, files);
    unknown.workspace = "nope".into();
    let error = a
        .client
        .create_release(call(unknown, &token, Some("checker")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let error = a
        .client
        .create_release(call(
            release_request(RELEASE_ID, files),
            "bad",
            Some("checker"),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    for user in [None, Some("ghost"), Some("outsider"), Some("dev")] {
        // No user, unknown user, not a backend member, no release_file_upload.
        let error = a
            .client
            .create_release(call(release_request(RELEASE_ID, files), &token, user))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied, "{user:?}");
    }
    assert!(a.h.store.release(RELEASE_ID).unwrap().is_none());
    // Oversized at create: the reference's message.
    let mut big = release_request(RELEASE_ID, files);
    big.files[0].size = 17 * 1024 * 1024;
    let error = a
        .client
        .create_release(call(big, &token, Some("checker")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "File size should be <16Mb. output/table.csv is 17.00Mb"
    );
    // Path tricks are refused.
    let error = a
        .client
        .create_release(call(
            release_request(RELEASE_ID, &[("../escape", b"x")]),
            &token,
            Some("checker"),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(a.h.store.release(RELEASE_ID).unwrap().is_none());
}

#[tokio::test]
async fn create_is_idempotent_and_upload_verifies_sha256() {
    let mut a = airlock().await;
    let token = a.h.backend_token.clone();
    let content: &[u8] = b"a,b\n1,2\n";
    let files: &[(&str, &[u8])] = &[("output/table.csv", content)];
    let created = a
        .client
        .create_release(call(
            release_request(RELEASE_ID, files),
            &token,
            Some("checker"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.release_id, RELEASE_ID);
    assert_eq!(
        created.release_url,
        format!("http://jobs.example/proj/ws/releases/{RELEASE_ID}/")
    );
    // Again, by another output checker: the same release.
    admin_checker(&a.h, "checker2");
    let again = a
        .client
        .create_release(call(
            release_request(RELEASE_ID, files),
            &token,
            Some("checker2"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.release_id, RELEASE_ID);
    assert_eq!(
        a.h.store
            .release_files_of_release(RELEASE_ID)
            .unwrap()
            .len(),
        1
    );
    // Same id, other files: refused.
    let error = a
        .client
        .create_release(call(
            release_request(RELEASE_ID, &[("output/table.csv", b"other")]),
            &token,
            Some("checker"),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);

    let upload = |name: &str, data: Vec<Vec<u8>>, size: u64| {
        let mut chunks = vec![pb::UploadChunk {
            chunk: Some(pb::upload_chunk::Chunk::Header(pb::UploadHeader {
                release_id: RELEASE_ID.into(),
                name: name.into(),
                size,
                sha256: String::new(),
            })),
        }];
        chunks.extend(data.into_iter().map(|d| pb::UploadChunk {
            chunk: Some(pb::upload_chunk::Chunk::Data(d)),
        }));
        call(tokio_stream::iter(chunks), &token, Some("checker"))
    };
    // Wrong bytes: the reference's message, nothing stored.
    let error = a
        .client
        .upload_file(upload("output/table.csv", vec![b"tampered".to_vec()], 8))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "Contents of uploaded file does not match the file which a review was requested for"
    );
    // Not in the release.
    let error = a
        .client
        .upload_file(upload("output/other.csv", vec![content.to_vec()], 8))
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        format!("File output/other.csv not requested in release {RELEASE_ID}")
    );
    // Too large by its header.
    let error = a
        .client
        .upload_file(upload(
            "output/table.csv",
            vec![content.to_vec()],
            16 * 1024 * 1024 + 1,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "File is too large, it must be below 16.0Mb"
    );
    // Empty.
    let error = a
        .client
        .upload_file(upload("output/table.csv", vec![], 0))
        .await
        .unwrap_err();
    assert_eq!(error.message(), "No data uploaded");
    // Right bytes, in two chunks.
    let done = a
        .client
        .upload_file(upload(
            "output/table.csv",
            vec![content[..3].to_vec(), content[3..].to_vec()],
            8,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!done.already_uploaded);
    let stored = std::fs::read(a.h.dir.path().join(format!(
        "releases/ws/releases/{RELEASE_ID}/output/table.csv"
    )))
    .unwrap();
    assert_eq!(stored, content);
    // Again: a no-op, flagged.
    let again = a
        .client
        .upload_file(upload("output/table.csv", vec![content.to_vec()], 8))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_uploaded);
    assert_eq!(again.file_id, done.file_id);

    // The released file is listed and downloadable for release_file_view holders.
    let (cookie, _) = a.h.session("collab");
    let (_, page, _) = a.h.get("/proj/ws/releases/", &cookie).await;
    assert!(page.contains("output/table.csv"));
    // The release_url handed to Airlock is a page too.
    let release_path = created
        .release_url
        .strip_prefix("http://jobs.example")
        .unwrap();
    let (status, page, _) = a.h.get(release_path, &cookie).await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert!(page.contains("output/table.csv"));
    let (outsider, _) = a.h.session("outsider");
    assert_eq!(
        a.h.get(release_path, &outsider).await.0,
        axum::http::StatusCode::NOT_FOUND
    );
    let (status, body, _) =
        a.h.get(&format!("/proj/ws/releases/file/{}", done.file_id), &cookie)
            .await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert_eq!(body.as_bytes(), content);
}

fn admin_checker(h: &Harness, name: &str) {
    use rap_jobserver::{admin, roles::Role};
    admin::add_user(
        &h.store,
        name,
        name,
        &format!("{name}@example.org"),
        "pw",
        &[Role::OutputChecker],
    )
    .unwrap();
    admin::add_backend_member(&h.store, "test", name).unwrap();
}

#[tokio::test]
async fn upload_from_another_backend_is_refused() {
    let mut a = airlock().await;
    let token = a.h.backend_token.clone();
    let content: &[u8] = b"x";
    a.client
        .create_release(call(
            release_request(RELEASE_ID, &[("f.txt", content)]),
            &token,
            Some("checker"),
        ))
        .await
        .unwrap();
    let other = rap_jobserver::admin::add_backend(&a.h.store, "other", "Other").unwrap();
    rap_jobserver::admin::add_backend_member(&a.h.store, "other", "checker").unwrap();
    let chunks = vec![
        pb::UploadChunk {
            chunk: Some(pb::upload_chunk::Chunk::Header(pb::UploadHeader {
                release_id: RELEASE_ID.into(),
                name: "f.txt".into(),
                size: 1,
                sha256: sha(content),
            })),
        },
        pb::UploadChunk {
            chunk: Some(pb::upload_chunk::Chunk::Data(content.to_vec())),
        },
    ];
    let error = a
        .client
        .upload_file(call(tokio_stream::iter(chunks), &other, Some("checker")))
        .await
        .unwrap_err();
    assert_eq!(error.message(), "Release is from backend test not other");
}

#[tokio::test]
async fn events_answer_ok_and_name_unknown_types() {
    let mut a = airlock().await;
    let event = |kind: &str| pb::AirlockEvent {
        event_type: kind.into(),
        workspace: "ws".into(),
        request_id: RELEASE_ID.into(),
        request_author: "dev".into(),
        user: "checker".into(),
        ..Default::default()
    };
    let ok = a
        .client
        .notify_event(call(event("request_submitted"), &a.h.backend_token, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status, "ok");
    let bad = a
        .client
        .notify_event(call(event("request_exploded"), &a.h.backend_token, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bad.status, "error");
    assert_eq!(bad.message, "Unknown event type request_exploded");
    let error = a
        .client
        .notify_event(call(event("request_submitted"), "bad", None))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
}
