//! The acceptance behaviours of spec C1 over the pure workflow: each refused operation gives
//! the reference's message and leaves the request exactly as it was.

use super::comments::is_visible;
use super::workflow::*;
use super::*;
use crate::user::User;
use crate::user::tests::{checker, researcher};
use crate::workspace::ManifestEntry;

const WS: &str = "ws";

fn entry() -> ManifestEntry {
    ManifestEntry {
        level: "moderately_sensitive".to_string(),
        job_id: "job".to_string(),
        job_request: "rap".to_string(),
        action: "action".to_string(),
        repo: Some("repo".to_string()),
        commit: Some("abc".to_string()),
        size: 10,
        timestamp: 1.0,
        content_hash: "hash".to_string(),
        excluded: false,
        message: None,
        row_count: Some(1),
        col_count: Some(2),
        user: None,
        out_of_date_action: false,
        out_of_date_output: false,
    }
}

fn author() -> User {
    researcher("author", WS)
}

fn add(request: &mut ReleaseRequest, path: &str, group: &str, filetype: FileType) {
    let entry = entry();
    let new = NewFile {
        relpath: path,
        group,
        filetype,
        entry: &entry,
        file_id: &format!("id-{path}"),
        already_released: false,
    };
    add_file(request, &author(), &new, 0).unwrap();
}

/// A PENDING request with one output file in group "g" with context and controls.
fn pending() -> ReleaseRequest {
    let (mut request, _) = create_request(&author(), WS, RequestId::generate(0), 0).unwrap();
    add(&mut request, "output/a.csv", "g", FileType::Output);
    edit_group(&mut request, &author(), "g", "context", "controls", 0).unwrap();
    request
}

fn submitted() -> ReleaseRequest {
    let mut request = pending();
    submit(&mut request, &author(), 1).unwrap();
    request
}

fn review_all(request: &mut ReleaseRequest, reviewer: &User, vote_cast: Vote) {
    let paths: Vec<String> = request.output_files().map(|f| f.relpath.clone()).collect();
    for path in paths {
        vote(request, reviewer, &path, vote_cast, 2).unwrap();
    }
    if vote_cast == Vote::ChangesRequested {
        let groups: Vec<String> = request.groups.keys().cloned().collect();
        for group in groups {
            add_comment(
                request,
                reviewer,
                &group,
                "please fix",
                Visibility::Private,
                2,
            )
            .unwrap();
        }
    }
    submit_review(request, reviewer, 3).unwrap();
}

fn reviewed(vote_cast: Vote) -> ReleaseRequest {
    let mut request = submitted();
    review_all(&mut request, &checker("c1"), vote_cast);
    review_all(&mut request, &checker("c2"), vote_cast);
    assert_eq!(request.status, RequestStatus::Reviewed);
    request
}

/// Runs `op` on a copy and asserts it fails with `message` and changes nothing.
fn refused(
    request: &ReleaseRequest,
    message: &str,
    op: impl FnOnce(&mut ReleaseRequest) -> Result<Outcome, RequestError>,
) {
    let mut copy = request.clone();
    let error = op(&mut copy).expect_err("operation should be refused");
    assert_eq!(error.to_string(), message);
    assert_eq!(&copy, request, "a refused operation changed the request");
}

// C1 #2 and #3: an output checker cannot review or move their own request.
#[test]
fn author_who_is_a_checker_cannot_review_own_request() {
    let mut author_checker = author();
    author_checker.output_checker = true;
    let request = submitted();
    refused(
        &request,
        "You do not have permission to review this request",
        |r| vote(r, &author_checker, "output/a.csv", Vote::Approved, 2),
    );
    refused(
        &request,
        "You do not have permission to review this request",
        |r| submit_review(r, &author_checker, 2),
    );
    refused(&request, "Can not set your own request to RETURNED", |r| {
        return_request(r, &author_checker, 2)
    });
    let request = reviewed(Vote::Approved);
    refused(&request, "Can not set your own request to APPROVED", |r| {
        approve(r, &author_checker, 4)
    });
}

// C1 #4 and #5.
#[test]
fn only_checkers_vote_and_only_on_outputs_under_review() {
    let mut request = submitted();
    let collaborator = researcher("collab", WS);
    refused(
        &request,
        "You do not have permission to review this request",
        |r| vote(r, &collaborator, "output/a.csv", Vote::Approved, 2),
    );
    refused(
        &request,
        "You do not have permission to review this request",
        |r| submit_review(r, &collaborator, 2),
    );
    refused(
        &pending(),
        "cannot review files in a request with status PENDING",
        |r| vote(r, &checker("c1"), "output/a.csv", Vote::Approved, 2),
    );
    // Supporting files are not voted on. (Added to a fresh pending request, then submitted.)
    let mut with_supporting = pending();
    add(
        &mut with_supporting,
        "output/notes.txt",
        "g",
        FileType::Supporting,
    );
    submit(&mut with_supporting, &author(), 1).unwrap();
    refused(
        &with_supporting,
        "file is not an output file on this request",
        |r| vote(r, &checker("c1"), "output/notes.txt", Vote::Approved, 2),
    );
    vote(
        &mut request,
        &checker("c1"),
        "output/a.csv",
        Vote::Approved,
        2,
    )
    .unwrap();
}

// C1 #6, #7, #8.
#[test]
fn submit_guards() {
    let (mut only_supporting, _) =
        create_request(&author(), WS, RequestId::generate(0), 0).unwrap();
    add(
        &mut only_supporting,
        "output/a.txt",
        "g",
        FileType::Supporting,
    );
    edit_group(&mut only_supporting, &author(), "g", "c", "c", 0).unwrap();
    refused(
        &only_supporting,
        "Cannot submit request with no output files",
        |r| submit(r, &author(), 1),
    );

    let mut request = pending();
    add(&mut request, "output/b.csv", "other", FileType::Output);
    refused(
        &request,
        "Incomplete context and/or controls for filegroup(s): 'other'",
        |r| submit(r, &author(), 1),
    );
    // Withdrawing the only file of the incomplete group lets the request be submitted.
    withdraw_file(&mut request, &author(), "output/b.csv", 1).unwrap();

    let someone_else = researcher("someone", WS);
    refused(
        &request,
        "only the request author author can set status from PENDING to SUBMITTED",
        |r| submit(r, &someone_else, 1),
    );
    refused(
        &request,
        "only the request author author can set status from PENDING to WITHDRAWN",
        |r| withdraw_request(r, &someone_else, 1),
    );
    submit(&mut request, &author(), 1).unwrap();
    assert_eq!(request.status, RequestStatus::Submitted);
    assert_eq!(request.review_turn, 1);
}

// C1 #9 and #10.
#[test]
fn submitting_reviews() {
    let mut request = pending();
    add(&mut request, "output/b.csv", "g", FileType::Output);
    submit(&mut request, &author(), 1).unwrap();
    let c1 = checker("c1");
    refused(
        &request,
        "You must review all files to submit your review",
        |r| submit_review(r, &c1, 2),
    );
    vote(&mut request, &c1, "output/a.csv", Vote::Approved, 2).unwrap();
    vote(&mut request, &c1, "output/b.csv", Vote::ChangesRequested, 2).unwrap();
    refused(
        &request,
        "You must add a comment on any groups for which you have requested file changes before you can submit your review",
        |r| submit_review(r, &c1, 2),
    );
    add_comment(&mut request, &c1, "g", "why", Visibility::Private, 2).unwrap();
    submit_review(&mut request, &c1, 2).unwrap();
    assert_eq!(request.status, RequestStatus::PartiallyReviewed);
    refused(
        &request,
        "You have already submitted your review of this request",
        |r| submit_review(r, &c1, 2),
    );
    review_all(&mut request, &checker("c2"), Vote::Approved);
    assert_eq!(request.status, RequestStatus::Reviewed);
    review_all(&mut request, &checker("c3"), Vote::Approved);
    assert_eq!(request.status, RequestStatus::Reviewed);
    assert_eq!(request.submitted_reviews.len(), 3);
}

// C1 #13.
#[test]
fn reset_only_before_submitting() {
    let mut request = submitted();
    let c1 = checker("c1");
    vote(&mut request, &c1, "output/a.csv", Vote::Approved, 2).unwrap();
    reset_vote(&mut request, &c1, "output/a.csv", 2).unwrap();
    refused(&request, "You have not reviewed output/a.csv", |r| {
        reset_vote(r, &c1, "output/a.csv", 2)
    });
    vote(&mut request, &c1, "output/a.csv", Vote::Approved, 2).unwrap();
    submit_review(&mut request, &c1, 2).unwrap();
    refused(&request, "cannot reset file from submitted review", |r| {
        reset_vote(r, &c1, "output/a.csv", 2)
    });
    // Changing the vote after submitting is allowed.
    vote(&mut request, &c1, "output/a.csv", Vote::ChangesRequested, 2).unwrap();
}

// C1 #14 and #15: release only when every output file has two approvals.
#[test]
fn release_needs_every_output_approved() {
    let mut request = submitted();
    review_all(&mut request, &checker("c1"), Vote::Approved);
    let c2 = checker("c2");
    vote(&mut request, &c2, "output/a.csv", Vote::ChangesRequested, 2).unwrap();
    add_comment(&mut request, &c2, "g", "no", Visibility::Public, 2).unwrap();
    submit_review(&mut request, &c2, 3).unwrap();
    refused(
        &request,
        "Cannot set status to APPROVED; request has unapproved files.",
        |r| approve(r, &checker("c3"), 4),
    );
    refused(
        &submitted(),
        "cannot change status from SUBMITTED to APPROVED",
        |r| approve(r, &checker("c3"), 4),
    );

    let mut request = reviewed(Vote::Approved);
    let outcome = approve(&mut request, &checker("c3"), 4).unwrap();
    assert_eq!(request.status, RequestStatus::Approved);
    let file = &request.files["output/a.csv"];
    assert_eq!(file.released_by.as_deref(), Some("c3"));
    let kinds: Vec<_> = outcome.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            crate::audit::AuditType::RequestFileRelease,
            crate::audit::AuditType::RequestApprove
        ]
    );
    // Not released until every file is uploaded.
    assert_eq!(mark_released(&mut request, 5).unwrap(), None);
    mark_uploaded(&mut request, "output/a.csv", 5).unwrap();
    assert!(mark_released(&mut request, 6).unwrap().is_some());
    assert_eq!(request.status, RequestStatus::Released);
}

// C1 #16: re-releasing does not re-mark released files.
#[test]
fn approving_again_keeps_release_marks() {
    let mut request = reviewed(Vote::Approved);
    approve(&mut request, &checker("c3"), 4).unwrap();
    let outcome = approve(&mut request, &checker("c4"), 9).unwrap();
    assert!(outcome.events.is_empty());
    assert_eq!(request.files["output/a.csv"].released_at, Some(4));
}

// C1 #17, #18, #19.
#[test]
fn adding_files() {
    let entry = entry();
    let new = |path: &'static str, filetype, already_released| NewFile {
        relpath: path,
        group: "g",
        filetype,
        entry: &entry,
        file_id: "x",
        already_released,
    };
    let request = pending();
    refused(
        &request,
        "output/a.csv file has already been added to request (in file group 'g')",
        |r| {
            add_file(
                r,
                &author(),
                &new("output/a.csv", FileType::Output, false),
                0,
            )
        },
    );
    refused(
        &request,
        "Released files cannot be added as output files",
        |r| {
            add_file(
                r,
                &author(),
                &new("output/r.csv", FileType::Output, true),
                0,
            )
        },
    );
    refused(
        &request,
        "Cannot add file of this type to request: output/x.foo",
        |r| {
            add_file(
                r,
                &author(),
                &new("output/x.foo", FileType::Output, false),
                0,
            )
        },
    );
    refused(
        &request,
        "Cannot add file of this type to request: output/.hidden.csv",
        |r| {
            add_file(
                r,
                &author(),
                &new("output/.hidden.csv", FileType::Output, false),
                0,
            )
        },
    );
    refused(&request, "There is already a file group called G", |r| {
        let mut named = new("output/n.csv", FileType::Output, false);
        named.group = "G";
        add_file(r, &author(), &named, 0)
    });
    refused(
        &request,
        "You do not have permission to edit this request",
        |r| {
            add_file(
                r,
                &researcher("other", WS),
                &new("output/n.csv", FileType::Output, false),
                0,
            )
        },
    );
    let mut released_ok = request.clone();
    add_file(
        &mut released_ok,
        &author(),
        &new("output/r.csv", FileType::Supporting, true),
        0,
    )
    .unwrap();
    refused(
        &released_ok,
        "Released files cannot be added as output files",
        |r| change_properties(r, &author(), "output/r.csv", "g", FileType::Output, true, 0),
    );
    // Every status but PENDING and RETURNED refuses new files.
    let mut approved = reviewed(Vote::Approved);
    approve(&mut approved, &checker("c3"), 4).unwrap();
    for other in [submitted(), reviewed(Vote::Approved), approved] {
        refused(
            &other,
            "You do not have permission to edit this request",
            |r| {
                add_file(
                    r,
                    &author(),
                    &new("output/n.csv", FileType::Output, false),
                    0,
                )
            },
        );
    }
}

// C1 #20 and #21.
#[test]
fn withdrawing_and_updating_files() {
    let mut request = pending();
    withdraw_file(&mut request, &author(), "output/a.csv", 1).unwrap();
    assert!(request.files.is_empty());

    let mut request = reviewed(Vote::ChangesRequested);
    add_comment(
        &mut request,
        &checker("c1"),
        "g",
        "fix it",
        Visibility::Public,
        3,
    )
    .unwrap();
    return_request(&mut request, &checker("c1"), 4).unwrap();
    assert_eq!(request.status, RequestStatus::Returned);
    refused(
        &request,
        "Cannot update file in request if it is not updated on disk",
        |r| update_file(r, &author(), "output/a.csv", &entry(), "id-output/a.csv", 5),
    );
    let mut updated = request.clone();
    update_file(&mut updated, &author(), "output/a.csv", &entry(), "new", 5).unwrap();
    assert!(updated.files["output/a.csv"].reviews.is_empty());

    withdraw_file(&mut request, &author(), "output/a.csv", 5).unwrap();
    assert_eq!(request.files["output/a.csv"].filetype, FileType::Withdrawn);
    refused(
        &request,
        "File output/a.csv has already been withdrawn",
        |r| withdraw_file(r, &author(), "output/a.csv", 5),
    );
    refused(
        &submitted(),
        "You do not have permission to edit this request",
        |r| withdraw_file(r, &author(), "output/a.csv", 5),
    );
}

// C1 #22: resubmission after a full review.
#[test]
fn resubmit_after_return() {
    let mut request = reviewed(Vote::ChangesRequested);
    refused(&request, "Filegroup(s) are missing comments: g", |r| {
        return_request(r, &checker("c1"), 4)
    });
    add_comment(
        &mut request,
        &checker("c1"),
        "g",
        "public",
        Visibility::Public,
        4,
    )
    .unwrap();
    return_request(&mut request, &checker("c1"), 4).unwrap();
    refused(&request, "Filegroup(s) are missing comments: g", |r| {
        submit(r, &author(), 5)
    });
    add_comment(&mut request, &author(), "g", "fixed", Visibility::Public, 5).unwrap();
    let outcome = submit(&mut request, &author(), 5).unwrap();
    assert_eq!(request.status, RequestStatus::Submitted);
    assert!(request.submitted_reviews.is_empty());
    assert!(
        request.files["output/a.csv"]
            .reviews
            .values()
            .all(|review| review.vote == Vote::Undecided)
    );
    assert!(
        outcome
            .events
            .iter()
            .any(|e| e.kind == crate::audit::AuditType::RequestFileUndecided)
    );
    assert_eq!(
        notification_for(RequestStatus::Returned, RequestStatus::Submitted),
        Some("request_resubmitted")
    );
}

// C1 #23: early return.
#[test]
fn early_return_reverts_the_turn() {
    let mut request = submitted();
    let c1 = checker("c1");
    let c2 = checker("c2");
    review_all(&mut request, &c1, Vote::Approved);
    vote(&mut request, &c2, "output/a.csv", Vote::Approved, 2).unwrap();
    add_comment(&mut request, &c2, "g", "hmm", Visibility::Private, 2).unwrap();
    let turn = request.review_turn;
    let outcome = return_request(&mut request, &c2, 3).unwrap();
    assert_eq!(outcome.hide_turn, Some(turn));
    let reviews = &request.files["output/a.csv"].reviews;
    assert_eq!(reviews["c1"].vote, Vote::Undecided);
    assert!(!reviews.contains_key("c2"));
    assert!(request.comments.is_empty());
    assert_eq!(request.status, RequestStatus::Returned);
}

// C1 #25: comment visibility.
#[test]
fn comment_visibility() {
    let mut request = submitted();
    let c1 = checker("c1");
    let c2 = checker("c2");
    refused(
        &pending(),
        "You cannot write a PRIVATE comment on this request",
        |r| add_comment(r, &author(), "g", "x", Visibility::Private, 2),
    );
    // The author comments only while the request is editable.
    refused(
        &request,
        "You do not have permission to comment on this request",
        |r| add_comment(r, &author(), "g", "x", Visibility::Public, 2),
    );
    add_comment(&mut request, &c1, "g", "mine", Visibility::Private, 2).unwrap();
    let comment = request.comments[0].clone();
    let seen = |viewer: &User, request: &ReleaseRequest| {
        is_visible(
            viewer,
            request,
            &comment.author,
            comment.review_turn,
            comment.visibility,
            false,
        )
    };
    // Independent phase: only the writer sees it.
    assert!(seen(&c1, &request));
    assert!(!seen(&c2, &request));
    assert!(!seen(&author(), &request));
    review_all(&mut request, &c1, Vote::Approved);
    review_all(&mut request, &c2, Vote::Approved);
    // Consolidating: reviewers see private comments, the author never does.
    assert!(seen(&c2, &request));
    assert!(!seen(&author(), &request));
    refused(
        &request,
        "Only the author of a comment can change it",
        |r| make_comment_public(r, &c2, comment.id, 4),
    );
    make_comment_public(&mut request, &c1, comment.id, 4).unwrap();
    approve(&mut request, &c2, 5).unwrap();
    assert!(is_visible(
        &author(),
        &request,
        "c1",
        comment.review_turn,
        Visibility::Public,
        false
    ));
}

// C1 #26 helper: only active statuses count as the current request.
#[test]
fn active_statuses() {
    use RequestStatus::*;
    let active: Vec<_> = status::ALL_STATUSES
        .into_iter()
        .filter(|s| s.is_active())
        .collect();
    assert_eq!(
        active,
        [Pending, Submitted, PartiallyReviewed, Reviewed, Returned]
    );
}

// B6.2 group shortcuts.
#[test]
fn group_vote_shortcuts() {
    let mut request = pending();
    add(&mut request, "output/b.csv", "g", FileType::Output);
    add(&mut request, "output/notes.txt", "g", FileType::Supporting);
    submit(&mut request, &author(), 1).unwrap();
    let c1 = checker("c1");
    vote(&mut request, &c1, "output/a.csv", Vote::Approved, 2).unwrap();
    request_changes_in_group(&mut request, &c1, "g", 2).unwrap();
    // The approved file keeps its vote; the unvoted one gets changes requested.
    assert_eq!(
        request.files["output/a.csv"].reviews["c1"].vote,
        Vote::Approved
    );
    assert_eq!(
        request.files["output/b.csv"].reviews["c1"].vote,
        Vote::ChangesRequested
    );
    assert!(request.files["output/notes.txt"].reviews.is_empty());
    reset_votes_in_group(&mut request, &c1, "g", 2).unwrap();
    assert!(request.files.values().all(|file| file.reviews.is_empty()));
    refused(&request, "File group nope does not exist", |r| {
        request_changes_in_group(r, &c1, "nope", 2)
    });
}
