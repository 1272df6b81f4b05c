//! Store tests on a real sled database and real files in a temporary directory.

use super::*;
use crate::request::workflow::{self, NewFile};
use crate::request::{FileType, RequestStatus, Visibility, Vote};
use crate::user::tests::{checker, researcher};
use crate::workspace::ManifestEntry;

fn entry(hash: &str) -> ManifestEntry {
    ManifestEntry {
        level: "moderately_sensitive".to_string(),
        job_id: "job".to_string(),
        job_request: "rap".to_string(),
        action: "a".to_string(),
        repo: None,
        commit: None,
        size: 3,
        timestamp: 0.0,
        content_hash: hash.to_string(),
        excluded: false,
        message: None,
        row_count: None,
        col_count: None,
        user: None,
        out_of_date_action: false,
        out_of_date_output: false,
    }
}

fn new_request(store: &Store) -> ReleaseRequest {
    let author = researcher("author", "ws");
    store
        .get_or_create_current("ws", "author", || {
            workflow::create_request(&author, "ws", RequestId::generate(1), 1)
        })
        .unwrap()
}

#[test]
fn requests_round_trip_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let request = new_request(&store);
    // A second get-or-create returns the same active request.
    let again = new_request(&store);
    assert_eq!(again.id, request.id);

    let author = researcher("author", "ws");
    let manifest_entry = entry("");
    store
        .update(&request.id, |r| {
            workflow::add_file(
                r,
                &author,
                &NewFile {
                    relpath: "out/a.csv",
                    group: "g",
                    filetype: FileType::Output,
                    entry: &manifest_entry,
                    file_id: "abc",
                    already_released: false,
                },
                2,
            )
        })
        .unwrap();
    let before = store.get(&request.id).unwrap().unwrap();
    let error = store
        .update(&request.id, |r| workflow::submit(r, &author, 3))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Incomplete context and/or controls for filegroup(s): 'g'"
    );
    assert_eq!(store.get(&request.id).unwrap().unwrap(), before);

    store
        .update(&request.id, |r| {
            workflow::edit_group(r, &author, "g", "c", "d", 3)
        })
        .unwrap();
    store
        .update(&request.id, |r| workflow::submit(r, &author, 3))
        .unwrap();
    let c1 = checker("c1");
    store
        .update(&request.id, |r| {
            workflow::vote(r, &c1, "out/a.csv", Vote::ChangesRequested, 4)?;
            workflow::add_comment(r, &c1, "g", "hm", Visibility::Private, 4)
        })
        .unwrap();
    let stored = store.get(&request.id).unwrap().unwrap();
    assert_eq!(stored.status, RequestStatus::Submitted);
    assert_eq!(stored.comments.len(), 1);
    assert_eq!(
        stored.files["out/a.csv"].reviews["c1"].vote,
        Vote::ChangesRequested
    );

    // Early return hides the turn's events but keeps the return events visible.
    store
        .update(&request.id, |r| workflow::return_request(r, &c1, 5))
        .unwrap();
    let events = store.audit_for(&request.id).unwrap();
    let visible: Vec<&str> = events
        .iter()
        .filter(|e| !e.hidden && e.review_turn == 1)
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(visible, ["REQUEST_EARLY_RETURN", "REQUEST_RETURN"]);
    assert!(
        events
            .iter()
            .any(|e| e.hidden && e.kind.as_str() == "REQUEST_COMMENT")
    );
    assert_eq!(events[0].kind.as_str(), "REQUEST_CREATE");

    // Reopening the database sees the same data.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.get(&request.id).unwrap().unwrap().status,
        RequestStatus::Returned
    );
}

#[test]
fn copies_are_content_addressed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    let source = dir.path().join("a.csv");
    std::fs::write(&source, "abc").unwrap();
    let id = RequestId::generate(1);
    let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let (digest, size) = store.copy_in("ws", &id, &source, expected).unwrap();
    assert_eq!((digest.as_str(), size), (expected, 3));
    let copy = dir
        .path()
        .join("data/requests/ws")
        .join(id.as_str())
        .join(expected);
    assert_eq!(std::fs::read(&copy).unwrap(), b"abc");
    // The workspace file changing later does not change the copy.
    std::fs::write(&source, "changed").unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), b"abc");
    let error = store.copy_in("ws", &id, &source, expected).unwrap_err();
    assert!(matches!(error, StoreError::HashMismatch { .. }), "{error}");
}
