//! Requests built through the store and the workflow functions (no pages), from real files in
//! a medium-privacy workspace.

use rap_airlock::jobserver::user_from_pb;
use rap_airlock::request::workflow::{self, NewFile};
use rap_airlock::request::{FileType, RequestId, RequestStatus, Vote};
use rap_airlock::store::Store;
use rap_airlock::workspace::Workspaces;

/// A REVIEWED request by `author` on `workspace` holding `files` in group `tables`, every
/// output approved by the checkers `c1` and `c2`, who submitted their reviews.
pub fn reviewed_request(
    store: &Store,
    workspaces: &Workspaces,
    workspace: &str,
    files: &[(&str, FileType)],
) -> RequestId {
    let author = user_from_pb(super::level4("author", &[workspace], false));
    let request = store
        .get_or_create_current(workspace, "author", || {
            workflow::create_request(&author, workspace, RequestId::generate(1), 1)
        })
        .unwrap();
    let manifest = workspaces.manifest(workspace).unwrap();
    for &(path, filetype) in files {
        let entry = &manifest.outputs[path];
        let source = workspaces.resolve(workspace, path).unwrap();
        let (digest, _) = store
            .copy_in(workspace, &request.id, &source, &entry.content_hash)
            .unwrap();
        store
            .update(&request.id, |r| {
                workflow::add_file(
                    r,
                    &author,
                    &NewFile {
                        relpath: path,
                        group: "tables",
                        filetype,
                        entry,
                        file_id: &digest,
                        already_released: false,
                    },
                    2,
                )
            })
            .unwrap();
    }
    store
        .update(&request.id, |r| {
            workflow::edit_group(r, &author, "tables", "ctx", "ctl", 2)
        })
        .unwrap();
    store
        .update(&request.id, |r| workflow::submit(r, &author, 3))
        .unwrap();
    for name in ["c1", "c2"] {
        let checker = user_from_pb(super::level4(name, &[], true));
        store
            .update(&request.id, |r| {
                for &(path, filetype) in files {
                    if filetype == FileType::Output {
                        workflow::vote(r, &checker, path, Vote::Approved, 4)?;
                    }
                }
                workflow::submit_review(r, &checker, 4)
            })
            .unwrap();
    }
    assert_eq!(
        store.get(&request.id).unwrap().unwrap().status,
        RequestStatus::Reviewed
    );
    request.id
}
