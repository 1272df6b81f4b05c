//! The operations on a release request (spec B5–B9): each checks every guard first and only
//! then mutates the request, returning the audit events to append with it. A refused
//! operation leaves the request untouched, so the store can simply not save it.

use std::collections::BTreeMap;

use super::review::decision;
use super::status::{TransitionError, check_transition};
use super::{
    Comment, Decision, FileGroup, FileReview, FileType, ReleaseRequest, RequestFile, RequestId,
    RequestStatus, Visibility, Vote,
};
use crate::audit::{AuditEvent, AuditType};
use crate::request::comments::{can_comment, writable_visibilities};
use crate::user::User;
use crate::workspace::{ManifestEntry, is_valid_file_type};

/// Why an operation was refused. Texts are the reference's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("You do not have permission to edit this request")]
    CannotEdit,
    #[error("You do not have permission to create a request for workspace {0}")]
    CannotCreate(String),
    #[error("Cannot submit request with no output files")]
    NoOutputFiles,
    #[error("Incomplete context and/or controls for filegroup(s): {}", quoted(.0))]
    IncompleteGroups(Vec<String>),
    #[error("Filegroup(s) are missing comments: {}", .0.join(", "))]
    MissingComments(Vec<String>),
    #[error("Cannot set status to APPROVED; request has unapproved files.")]
    UnapprovedFiles,
    #[error("Cannot set status to APPROVED; request contains no output files.")]
    NoFilesToApprove,
    #[error("You do not have permission to review this request")]
    CannotReview,
    #[error("cannot review files in a request with status {0}")]
    NotUnderReview(RequestStatus),
    #[error("file is not an output file on this request")]
    NotOutputFile,
    #[error("You must review all files to submit your review")]
    ReviewIncomplete,
    #[error(
        "You must add a comment on any groups for which you have requested file changes before you can submit your review"
    )]
    ReviewMissingComments,
    #[error("You have already submitted your review of this request")]
    AlreadySubmitted,
    #[error("cannot reset file from submitted review")]
    ResetAfterSubmit,
    #[error("You have not reviewed {0}")]
    NoVote(String),
    #[error("Cannot add file of this type to request: {0}")]
    InvalidFileType(String),
    #[error("{path} file has already been added to request (in file group '{group}')")]
    AlreadyAdded { path: String, group: String },
    #[error("Released files cannot be added as output files")]
    ReleasedAsOutput,
    #[error("Cannot update file in request if it is not updated on disk")]
    NotUpdated,
    #[error("No changes to make")]
    NoChanges,
    #[error("{0} is not on this request")]
    FileNotFound(String),
    #[error("File {0} has already been withdrawn")]
    AlreadyWithdrawn(String),
    #[error("Group name must not be empty")]
    EmptyGroupName,
    #[error("There is already a file group called {0}")]
    GroupExists(String),
    #[error("File group {0} does not exist")]
    GroupNotFound(String),
    #[error("You do not have permission to comment on this request")]
    CannotComment,
    #[error("You cannot write a {} comment on this request", .0.as_str())]
    VisibilityNotAllowed(Visibility),
    #[error("Comment must not be empty")]
    EmptyComment,
    #[error("Comment not found")]
    CommentNotFound,
    #[error("Only the author of a comment can change it")]
    NotCommentAuthor,
    #[error("Comments visibility cannot be changed after a round finishes")]
    RoundFinished,
}

impl RequestError {
    /// Whether this error means "no such thing" (404) rather than "not allowed" (403).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RequestError::FileNotFound(_)
                | RequestError::GroupNotFound(_)
                | RequestError::CommentNotFound
        )
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an operation produced beyond the mutated request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Audit events to append, in order.
    pub events: Vec<AuditEvent>,
    /// Hide every audit event of this turn first (early return).
    pub hide_turn: Option<u32>,
}

/// A file to add, with its manifest entry and the digest of the stored copy.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub relpath: &'a str,
    pub group: &'a str,
    pub filetype: FileType,
    pub entry: &'a ManifestEntry,
    pub file_id: &'a str,
    /// The content was already released from this workspace (then only SUPPORTING).
    pub already_released: bool,
}

fn event(
    request: &ReleaseRequest,
    kind: AuditType,
    user: &str,
    path: Option<&str>,
    extra: &[(&str, &str)],
    now: i64,
) -> AuditEvent {
    AuditEvent {
        kind,
        user: user.to_string(),
        workspace: request.workspace.clone(),
        request: Some(request.id.to_string()),
        path: path.map(str::to_string),
        extra: extra
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect::<BTreeMap<_, _>>(),
        review_turn: request.review_turn,
        created_at: now,
        hidden: false,
    }
}

/// Creates a new PENDING request for `user` in `workspace` (the transition from none).
///
/// # Errors
/// [`RequestError::CannotCreate`] without an active role on the workspace.
pub fn create_request(
    user: &User,
    workspace: &str,
    id: RequestId,
    now: i64,
) -> Result<(ReleaseRequest, Outcome), RequestError> {
    let Some(access) = user.workspaces.get(workspace) else {
        return Err(RequestError::CannotCreate(workspace.to_string()));
    };
    if !user.can_action_requests(workspace) {
        return Err(RequestError::CannotCreate(workspace.to_string()));
    }
    check_transition(None, RequestStatus::Pending, &user.actor(), &user.username)?;
    let request = ReleaseRequest::new(
        id,
        workspace,
        &user.username,
        &access.project,
        access.orgs.clone(),
        now,
    );
    let created = event(
        &request,
        AuditType::RequestCreate,
        &user.username,
        None,
        &[],
        now,
    );
    Ok((
        request,
        Outcome {
            events: vec![created],
            hide_turn: None,
        },
    ))
}

fn require_edit(request: &ReleaseRequest, user: &User) -> Result<(), RequestError> {
    if user.can_edit_request(request) {
        return Ok(());
    }
    Err(RequestError::CannotEdit)
}

fn validate_group_name(request: &ReleaseRequest, name: &str) -> Result<(), RequestError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(RequestError::EmptyGroupName);
    }
    // New names must be unique case-insensitively (an exact match is the same group).
    let clash = request
        .groups
        .keys()
        .any(|existing| existing != name && existing.eq_ignore_ascii_case(name));
    if clash {
        return Err(RequestError::GroupExists(name.to_string()));
    }
    Ok(())
}

fn ensure_group(request: &mut ReleaseRequest, name: &str, now: i64) {
    request
        .groups
        .entry(name.to_string())
        .or_insert_with(|| FileGroup {
            name: name.to_string(),
            context: String::new(),
            controls: String::new(),
            created_at: now,
            updated_at: now,
        });
}

/// Removes every vote on a file (any change to a file needs a fresh review, B6.10).
fn reset_reviews(
    request: &ReleaseRequest,
    file: &mut RequestFile,
    user: &str,
    now: i64,
    events: &mut Vec<AuditEvent>,
) {
    for reviewer in std::mem::take(&mut file.reviews).into_keys() {
        events.push(event(
            request,
            AuditType::RequestFileResetReview,
            user,
            Some(&file.relpath),
            &[("reviewer", &reviewer)],
            now,
        ));
    }
}

/// Adds a workspace file to the request (B8 "Add file"); a withdrawn file is re-added.
///
/// # Errors
/// Not the author or not editable, a disallowed file type, a released file as output, or a
/// path already on the request.
pub fn add_file(
    request: &mut ReleaseRequest,
    user: &User,
    new: &NewFile<'_>,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_edit(request, user)?;
    if !is_valid_file_type(new.relpath) {
        return Err(RequestError::InvalidFileType(new.relpath.to_string()));
    }
    if new.filetype == FileType::Withdrawn {
        return Err(RequestError::InvalidFileType(new.relpath.to_string()));
    }
    let group = new.group.trim();
    validate_group_name(request, group)?;
    if let Some(existing) = request.files.get(new.relpath)
        && existing.filetype != FileType::Withdrawn
    {
        return Err(RequestError::AlreadyAdded {
            path: new.relpath.to_string(),
            group: existing.group.clone(),
        });
    }
    if new.already_released && new.filetype == FileType::Output {
        return Err(RequestError::ReleasedAsOutput);
    }
    ensure_group(request, group, now);
    let entry = new.entry;
    let file = RequestFile {
        relpath: new.relpath.to_string(),
        group: group.to_string(),
        file_id: new.file_id.to_string(),
        filetype: new.filetype,
        timestamp: entry.timestamp as i64,
        size: entry.size,
        job_id: entry.job_id.clone(),
        commit: entry.commit.clone().unwrap_or_default(),
        repo: entry.repo.clone().unwrap_or_default(),
        row_count: entry.row_count,
        col_count: entry.col_count,
        released_at: None,
        released_by: None,
        uploaded: false,
        uploaded_at: None,
        upload_attempts: 0,
        upload_attempted_at: None,
        reviews: BTreeMap::new(),
    };
    request.files.insert(new.relpath.to_string(), file);
    let added = event(
        request,
        AuditType::RequestFileAdd,
        &user.username,
        Some(new.relpath),
        &[("group", group), ("filetype", new.filetype.as_str())],
        now,
    );
    Ok(Outcome {
        events: vec![added],
        hide_turn: None,
    })
}

/// Replaces a file whose workspace content changed (B8 "Update file"); resets its votes.
///
/// # Errors
/// Not editable, not on the request, withdrawn, or unchanged on disk.
pub fn update_file(
    request: &mut ReleaseRequest,
    user: &User,
    relpath: &str,
    entry: &ManifestEntry,
    file_id: &str,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_edit(request, user)?;
    let Some(existing) = request.files.get(relpath) else {
        return Err(RequestError::FileNotFound(relpath.to_string()));
    };
    if existing.filetype == FileType::Withdrawn || existing.file_id == file_id {
        return Err(RequestError::NotUpdated);
    }
    let mut file = existing.clone();
    let mut events = Vec::new();
    reset_reviews(request, &mut file, &user.username, now, &mut events);
    let group = file.group.clone();
    let filetype = file.filetype.as_str();
    events.push(event(
        request,
        AuditType::RequestFileWithdraw,
        &user.username,
        Some(relpath),
        &[("group", &group), ("filetype", filetype)],
        now,
    ));
    events.push(event(
        request,
        AuditType::RequestFileUpdate,
        &user.username,
        Some(relpath),
        &[("group", &group), ("filetype", filetype)],
        now,
    ));
    file.file_id = file_id.to_string();
    file.size = entry.size;
    file.timestamp = entry.timestamp as i64;
    file.job_id = entry.job_id.clone();
    file.commit = entry.commit.clone().unwrap_or_default();
    file.row_count = entry.row_count;
    file.col_count = entry.col_count;
    request.files.insert(relpath.to_string(), file);
    Ok(Outcome {
        events,
        hide_turn: None,
    })
}

/// Moves a file to another group and/or changes OUTPUT ⇄ SUPPORTING; resets its votes.
///
/// # Errors
/// Not editable, not on the request, withdrawn, nothing to change, or a released file made
/// an output.
pub fn change_properties(
    request: &mut ReleaseRequest,
    user: &User,
    relpath: &str,
    group: &str,
    filetype: FileType,
    already_released: bool,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_edit(request, user)?;
    let Some(existing) = request.files.get(relpath) else {
        return Err(RequestError::FileNotFound(relpath.to_string()));
    };
    if existing.filetype == FileType::Withdrawn || filetype == FileType::Withdrawn {
        return Err(RequestError::NoChanges);
    }
    let group = group.trim();
    if existing.group == group && existing.filetype == filetype {
        return Err(RequestError::NoChanges);
    }
    validate_group_name(request, group)?;
    if already_released && filetype == FileType::Output {
        return Err(RequestError::ReleasedAsOutput);
    }
    let mut file = existing.clone();
    let mut events = Vec::new();
    reset_reviews(request, &mut file, &user.username, now, &mut events);
    file.group = group.to_string();
    file.filetype = filetype;
    ensure_group(request, group, now);
    events.push(event(
        request,
        AuditType::RequestFileUpdate,
        &user.username,
        Some(relpath),
        &[("group", group), ("filetype", filetype.as_str())],
        now,
    ));
    request.files.insert(relpath.to_string(), file);
    Ok(Outcome {
        events,
        hide_turn: None,
    })
}

/// Withdraws a file (B8): deleted from a PENDING request, marked WITHDRAWN on a RETURNED one.
///
/// # Errors
/// Not editable, not on the request, or already withdrawn.
pub fn withdraw_file(
    request: &mut ReleaseRequest,
    user: &User,
    relpath: &str,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_edit(request, user)?;
    let Some(existing) = request.files.get(relpath) else {
        return Err(RequestError::FileNotFound(relpath.to_string()));
    };
    if existing.filetype == FileType::Withdrawn {
        return Err(RequestError::AlreadyWithdrawn(relpath.to_string()));
    }
    let group = existing.group.clone();
    let filetype = existing.filetype;
    if request.status == RequestStatus::Pending {
        request.files.remove(relpath);
    } else if let Some(file) = request.files.get_mut(relpath) {
        file.filetype = FileType::Withdrawn;
    }
    let withdrawn = event(
        request,
        AuditType::RequestFileWithdraw,
        &user.username,
        Some(relpath),
        &[("group", &group), ("filetype", filetype.as_str())],
        now,
    );
    Ok(Outcome {
        events: vec![withdrawn],
        hide_turn: None,
    })
}

/// Sets a group's context and disclosure controls.
///
/// # Errors
/// Not editable, or no such group.
pub fn edit_group(
    request: &mut ReleaseRequest,
    user: &User,
    group: &str,
    context: &str,
    controls: &str,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_edit(request, user)?;
    let Some(found) = request.groups.get_mut(group) else {
        return Err(RequestError::GroupNotFound(group.to_string()));
    };
    found.context = context.to_string();
    found.controls = controls.to_string();
    found.updated_at = now;
    let edited = event(
        request,
        AuditType::RequestEdit,
        &user.username,
        None,
        &[
            ("group", group),
            ("context", context),
            ("controls", controls),
        ],
        now,
    );
    Ok(Outcome {
        events: vec![edited],
        hide_turn: None,
    })
}

/// Groups that need a PUBLIC comment this turn before a return or a resubmission (B6.6).
pub fn groups_missing_public_comment(request: &ReleaseRequest) -> Vec<String> {
    let reviewers: Vec<&str> = match request.status {
        RequestStatus::Reviewed => request
            .submitted_reviews
            .keys()
            .map(String::as_str)
            .collect(),
        RequestStatus::Returned if request.turn_reviewers.len() >= 2 => {
            request.turn_reviewers.iter().map(String::as_str).collect()
        }
        _ => return Vec::new(),
    };
    let all_approved = request
        .output_files()
        .all(|file| decision(file, &reviewers) == Decision::Approved);
    if all_approved {
        return Vec::new();
    }
    request
        .groups
        .keys()
        .filter(|group| {
            let needs = request.group_files(group).any(|file| {
                file.filetype == FileType::Output
                    && decision(file, &reviewers) != Decision::Approved
            });
            let has_public = request.comments.iter().any(|comment| {
                &comment.group == *group
                    && comment.visibility == Visibility::Public
                    && comment.review_turn == request.review_turn
            });
            needs && !has_public
        })
        .cloned()
        .collect()
}

/// Submits (PENDING) or resubmits (RETURNED) the request.
///
/// # Errors
/// The transition check, no output files, incomplete groups, or (on resubmission) groups
/// missing a public comment.
pub fn submit(
    request: &mut ReleaseRequest,
    user: &User,
    now: i64,
) -> Result<Outcome, RequestError> {
    check_transition(
        Some(request.status),
        RequestStatus::Submitted,
        &user.actor(),
        &request.author,
    )?;
    if !user.can_action_requests(&request.workspace) {
        return Err(RequestError::CannotEdit);
    }
    if request.output_files().next().is_none() {
        return Err(RequestError::NoOutputFiles);
    }
    let incomplete = request.incomplete_groups();
    if !incomplete.is_empty() {
        return Err(RequestError::IncompleteGroups(incomplete));
    }
    let missing = groups_missing_public_comment(request);
    if !missing.is_empty() {
        return Err(RequestError::MissingComments(missing));
    }
    let mut events = Vec::new();
    if request.status == RequestStatus::Returned {
        let snapshot = request.clone();
        for file in request.files.values_mut() {
            if file.filetype != FileType::Output {
                continue;
            }
            for review in file.reviews.values_mut() {
                if review.vote == Vote::ChangesRequested {
                    review.vote = Vote::Undecided;
                    review.updated_at = now;
                    events.push(event(
                        &snapshot,
                        AuditType::RequestFileUndecided,
                        &review.reviewer,
                        Some(&file.relpath),
                        &[("reviewer", &review.reviewer)],
                        now,
                    ));
                }
            }
        }
    }
    request.status = RequestStatus::Submitted;
    request.last_submitted_at = Some(now);
    events.push(event(
        request,
        AuditType::RequestSubmit,
        &user.username,
        None,
        &[],
        now,
    ));
    request.start_new_turn();
    Ok(Outcome {
        events,
        hide_turn: None,
    })
}

/// The author abandons the request.
///
/// # Errors
/// The transition check.
pub fn withdraw_request(
    request: &mut ReleaseRequest,
    user: &User,
    now: i64,
) -> Result<Outcome, RequestError> {
    check_transition(
        Some(request.status),
        RequestStatus::Withdrawn,
        &user.actor(),
        &request.author,
    )?;
    request.status = RequestStatus::Withdrawn;
    let withdrawn = event(
        request,
        AuditType::RequestWithdraw,
        &user.username,
        None,
        &[],
        now,
    );
    Ok(Outcome {
        events: vec![withdrawn],
        hide_turn: None,
    })
}

fn require_current_reviewer(request: &ReleaseRequest, user: &User) -> Result<(), RequestError> {
    if !user.can_review_request(request) {
        return Err(RequestError::CannotReview);
    }
    if !request.status.is_under_review() {
        return Err(RequestError::NotUnderReview(request.status));
    }
    Ok(())
}

/// Records `user`'s vote on an output file; a vote may change even after the review is
/// submitted (B6.2).
///
/// # Errors
/// Not a (non-author) output checker, not under review, or not an output file.
pub fn vote(
    request: &mut ReleaseRequest,
    user: &User,
    relpath: &str,
    vote: Vote,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_current_reviewer(request, user)?;
    if vote == Vote::Undecided {
        return Err(RequestError::NotOutputFile);
    }
    let turn = request.review_turn;
    let Some(file) = request.files.get_mut(relpath) else {
        return Err(RequestError::NotOutputFile);
    };
    if file.filetype != FileType::Output {
        return Err(RequestError::NotOutputFile);
    }
    file.reviews
        .entry(user.username.clone())
        .and_modify(|review| {
            review.vote = vote;
            review.review_turn = turn;
            review.updated_at = now;
        })
        .or_insert_with(|| FileReview {
            reviewer: user.username.clone(),
            vote,
            review_turn: turn,
            created_at: now,
            updated_at: now,
        });
    let kind = match vote {
        Vote::Approved => AuditType::RequestFileApprove,
        _ => AuditType::RequestFileRequestChanges,
    };
    let voted = event(request, kind, &user.username, Some(relpath), &[], now);
    Ok(Outcome {
        events: vec![voted],
        hide_turn: None,
    })
}

/// Deletes `user`'s vote on a file; only before they submit their review (B6.2).
///
/// # Errors
/// Not a current reviewer, review already submitted, or no vote to reset.
pub fn reset_vote(
    request: &mut ReleaseRequest,
    user: &User,
    relpath: &str,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_current_reviewer(request, user)?;
    if request.submitted_reviews.contains_key(&user.username) {
        return Err(RequestError::ResetAfterSubmit);
    }
    let removed = request
        .files
        .get_mut(relpath)
        .and_then(|file| file.reviews.remove(&user.username));
    if removed.is_none() {
        return Err(RequestError::NoVote(relpath.to_string()));
    }
    let reset = event(
        request,
        AuditType::RequestFileResetReview,
        &user.username,
        Some(relpath),
        &[("reviewer", &user.username)],
        now,
    );
    Ok(Outcome {
        events: vec![reset],
        hide_turn: None,
    })
}

/// Requests changes on every output file in `group` that `user` has not voted on or left
/// UNDECIDED (the group-level shortcut, B6.2).
///
/// # Errors
/// Not a current reviewer, or no such group.
pub fn request_changes_in_group(
    request: &mut ReleaseRequest,
    user: &User,
    group: &str,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_current_reviewer(request, user)?;
    if !request.groups.contains_key(group) {
        return Err(RequestError::GroupNotFound(group.to_string()));
    }
    let paths: Vec<String> = request
        .group_files(group)
        .filter(|file| file.filetype == FileType::Output)
        .filter(|file| {
            file.reviews
                .get(&user.username)
                .is_none_or(|review| review.vote == Vote::Undecided)
        })
        .map(|file| file.relpath.clone())
        .collect();
    let mut outcome = Outcome::default();
    for path in paths {
        outcome
            .events
            .extend(vote(request, user, &path, Vote::ChangesRequested, now)?.events);
    }
    Ok(outcome)
}

/// Deletes all of `user`'s votes in `group`; only before they submit their review.
///
/// # Errors
/// Not a current reviewer, review already submitted, or no such group.
pub fn reset_votes_in_group(
    request: &mut ReleaseRequest,
    user: &User,
    group: &str,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_current_reviewer(request, user)?;
    if request.submitted_reviews.contains_key(&user.username) {
        return Err(RequestError::ResetAfterSubmit);
    }
    if !request.groups.contains_key(group) {
        return Err(RequestError::GroupNotFound(group.to_string()));
    }
    let paths: Vec<String> = request
        .group_files(group)
        .filter(|file| file.reviews.contains_key(&user.username))
        .map(|file| file.relpath.clone())
        .collect();
    let mut outcome = Outcome::default();
    for path in paths {
        outcome
            .events
            .extend(reset_vote(request, user, &path, now)?.events);
    }
    Ok(outcome)
}

/// Submits `user`'s review (B6.3): the first moves the request to PARTIALLY_REVIEWED, the
/// second to REVIEWED, later ones are recorded.
///
/// # Errors
/// Not a current reviewer, already submitted, a file not voted on, or a group with changes
/// requested but no comment by this reviewer this turn.
pub fn submit_review(
    request: &mut ReleaseRequest,
    user: &User,
    now: i64,
) -> Result<Outcome, RequestError> {
    require_current_reviewer(request, user)?;
    if request.submitted_reviews.contains_key(&user.username) {
        return Err(RequestError::AlreadySubmitted);
    }
    let all_voted = request.output_files().all(|file| {
        file.reviews
            .get(&user.username)
            .is_some_and(|review| review.vote != Vote::Undecided)
    });
    if !all_voted {
        return Err(RequestError::ReviewIncomplete);
    }
    let missing_comment = request
        .output_files()
        .filter(|file| {
            file.reviews
                .get(&user.username)
                .is_some_and(|review| review.vote == Vote::ChangesRequested)
        })
        .any(|file| {
            !request.comments.iter().any(|comment| {
                comment.group == file.group
                    && comment.author == user.username
                    && comment.review_turn == request.review_turn
            })
        });
    if missing_comment {
        return Err(RequestError::ReviewMissingComments);
    }
    let next = match request.status {
        RequestStatus::Submitted => Some(RequestStatus::PartiallyReviewed),
        RequestStatus::PartiallyReviewed => Some(RequestStatus::Reviewed),
        _ => None,
    };
    if let Some(next) = next {
        check_transition(Some(request.status), next, &user.actor(), &request.author)?;
    }
    request.submitted_reviews.insert(user.username.clone(), now);
    if let Some(next) = next {
        request.status = next;
    }
    let reviewed = event(
        request,
        AuditType::RequestReview,
        &user.username,
        None,
        &[],
        now,
    );
    Ok(Outcome {
        events: vec![reviewed],
        hide_turn: None,
    })
}

/// Returns the request to its author (B6.6, B6.7). With fewer than two submitted reviews
/// this is an early return: the turn's votes and comments are reverted and its audit events
/// hidden.
///
/// # Errors
/// The transition check, or (from REVIEWED) groups missing a public comment.
pub fn return_request(
    request: &mut ReleaseRequest,
    user: &User,
    now: i64,
) -> Result<Outcome, RequestError> {
    check_transition(
        Some(request.status),
        RequestStatus::Returned,
        &user.actor(),
        &request.author,
    )?;
    let mut outcome = Outcome::default();
    if request.status == RequestStatus::Reviewed {
        let missing = groups_missing_public_comment(request);
        if !missing.is_empty() {
            return Err(RequestError::MissingComments(missing));
        }
    }
    if request.submitted_reviews.len() < 2 {
        let turn = request.review_turn;
        let submitted = request.submitted_reviews.clone();
        for file in request.files.values_mut() {
            file.reviews.retain(|reviewer, review| {
                review.review_turn != turn || submitted.contains_key(reviewer)
            });
            for review in file.reviews.values_mut() {
                if review.review_turn == turn {
                    review.vote = Vote::Undecided;
                    review.updated_at = now;
                }
            }
        }
        request
            .comments
            .retain(|comment| comment.review_turn != turn);
        outcome.hide_turn = Some(turn);
        outcome.events.push(event(
            request,
            AuditType::RequestEarlyReturn,
            &user.username,
            None,
            &[],
            now,
        ));
    }
    request.status = RequestStatus::Returned;
    outcome.events.push(event(
        request,
        AuditType::RequestReturn,
        &user.username,
        None,
        &[],
        now,
    ));
    request.start_new_turn();
    Ok(outcome)
}

/// Rejects the request (only from REVIEWED).
///
/// # Errors
/// The transition check.
pub fn reject(
    request: &mut ReleaseRequest,
    user: &User,
    now: i64,
) -> Result<Outcome, RequestError> {
    check_transition(
        Some(request.status),
        RequestStatus::Rejected,
        &user.actor(),
        &request.author,
    )?;
    request.status = RequestStatus::Rejected;
    let rejected = event(
        request,
        AuditType::RequestReject,
        &user.username,
        None,
        &[],
        now,
    );
    Ok(Outcome {
        events: vec![rejected],
        hide_turn: None,
    })
}

/// Checks that `user` may release the files (B9 step 1–2) without changing anything; call it
/// before creating the release on the job server. An APPROVED request passes (a retry).
///
/// # Errors
/// The transition check, no output files, unapproved files or a disallowed file type.
pub fn check_release(request: &ReleaseRequest, user: &User) -> Result<(), RequestError> {
    if request.status == RequestStatus::Approved {
        return Ok(());
    }
    check_transition(
        Some(request.status),
        RequestStatus::Approved,
        &user.actor(),
        &request.author,
    )?;
    if request.output_files().next().is_none() {
        return Err(RequestError::NoFilesToApprove);
    }
    if !request.all_files_approved() {
        return Err(RequestError::UnapprovedFiles);
    }
    if let Some(file) = request
        .output_files()
        .find(|file| !is_valid_file_type(&file.relpath))
    {
        return Err(RequestError::InvalidFileType(file.relpath.clone()));
    }
    Ok(())
}

/// Marks every output file released by `user` (files released by an earlier attempt keep
/// their marks) and moves the request to APPROVED.
///
/// # Errors
/// As [`check_release`].
pub fn approve(
    request: &mut ReleaseRequest,
    user: &User,
    now: i64,
) -> Result<Outcome, RequestError> {
    check_release(request, user)?;
    let mut events = Vec::new();
    let snapshot = request.clone();
    for file in request.files.values_mut() {
        if file.filetype != FileType::Output || file.released_at.is_some() {
            continue;
        }
        file.released_at = Some(now);
        file.released_by = Some(user.username.clone());
        events.push(event(
            &snapshot,
            AuditType::RequestFileRelease,
            &user.username,
            Some(&file.relpath),
            &[],
            now,
        ));
    }
    if request.status != RequestStatus::Approved {
        request.status = RequestStatus::Approved;
        events.push(event(
            request,
            AuditType::RequestApprove,
            &user.username,
            None,
            &[],
            now,
        ));
    }
    Ok(Outcome {
        events,
        hide_turn: None,
    })
}

/// Files released but not yet uploaded.
pub fn files_to_upload(request: &ReleaseRequest) -> Vec<&RequestFile> {
    request
        .files
        .values()
        .filter(|file| file.released_at.is_some() && !file.uploaded)
        .collect()
}

/// Records one upload attempt (before the bytes are sent).
pub fn record_upload_attempt(request: &mut ReleaseRequest, relpath: &str, now: i64) {
    if let Some(file) = request.files.get_mut(relpath) {
        file.upload_attempts += 1;
        file.upload_attempted_at = Some(now);
    }
}

/// Marks a file uploaded (the job server confirmed it, or had it already).
///
/// # Errors
/// [`RequestError::FileNotFound`] if it is not a released file on the request.
pub fn mark_uploaded(
    request: &mut ReleaseRequest,
    relpath: &str,
    now: i64,
) -> Result<Outcome, RequestError> {
    let Some(file) = request.files.get_mut(relpath) else {
        return Err(RequestError::FileNotFound(relpath.to_string()));
    };
    let Some(released_by) = file.released_by.clone() else {
        return Err(RequestError::FileNotFound(relpath.to_string()));
    };
    if file.uploaded {
        return Ok(Outcome::default());
    }
    file.uploaded = true;
    file.uploaded_at = Some(now);
    let uploaded = event(
        request,
        AuditType::RequestFileUpload,
        &released_by,
        Some(relpath),
        &[],
        now,
    );
    Ok(Outcome {
        events: vec![uploaded],
        hide_turn: None,
    })
}

/// Moves an APPROVED request whose released files are all uploaded to RELEASED, acting as
/// the releaser of the most recently uploaded file. Returns `None` while uploads remain.
///
/// # Errors
/// The transition check.
pub fn mark_released(
    request: &mut ReleaseRequest,
    now: i64,
) -> Result<Option<Outcome>, RequestError> {
    if request.status != RequestStatus::Approved || !files_to_upload(request).is_empty() {
        return Ok(None);
    }
    let releaser = request
        .files
        .values()
        .filter(|file| file.uploaded)
        .max_by_key(|file| file.uploaded_at)
        .and_then(|file| file.released_by.clone())
        .unwrap_or_default();
    // The uploader acts for the releasing output checker (B9).
    let actor = super::status::Actor {
        username: &releaser,
        output_checker: true,
    };
    check_transition(
        Some(request.status),
        RequestStatus::Released,
        &actor,
        &request.author,
    )?;
    request.status = RequestStatus::Released;
    let released = event(
        request,
        AuditType::RequestRelease,
        &releaser,
        None,
        &[],
        now,
    );
    Ok(Some(Outcome {
        events: vec![released],
        hide_turn: None,
    }))
}

/// Adds a comment to a group (B7).
///
/// # Errors
/// Not allowed to comment now, a visibility this user may not write, an empty comment or an
/// unknown group.
pub fn add_comment(
    request: &mut ReleaseRequest,
    user: &User,
    group: &str,
    text: &str,
    visibility: Visibility,
    now: i64,
) -> Result<Outcome, RequestError> {
    if !can_comment(user, request) {
        return Err(RequestError::CannotComment);
    }
    if !writable_visibilities(user, request).contains(&visibility) {
        return Err(RequestError::VisibilityNotAllowed(visibility));
    }
    if text.trim().is_empty() {
        return Err(RequestError::EmptyComment);
    }
    if !request.groups.contains_key(group) {
        return Err(RequestError::GroupNotFound(group.to_string()));
    }
    let id = request.next_comment_id;
    request.next_comment_id += 1;
    request.comments.push(Comment {
        id,
        group: group.to_string(),
        text: text.to_string(),
        author: user.username.clone(),
        visibility,
        review_turn: request.review_turn,
        created_at: now,
    });
    let commented = event(
        request,
        AuditType::RequestComment,
        &user.username,
        None,
        &[
            ("group", group),
            ("comment", text),
            ("visibility", visibility.as_str()),
        ],
        now,
    );
    Ok(Outcome {
        events: vec![commented],
        hide_turn: None,
    })
}

fn own_comment(request: &ReleaseRequest, user: &User, id: u64) -> Result<usize, RequestError> {
    let Some(index) = request.comments.iter().position(|comment| comment.id == id) else {
        return Err(RequestError::CommentNotFound);
    };
    if request.comments[index].author != user.username {
        return Err(RequestError::NotCommentAuthor);
    }
    if !can_comment(user, request) {
        return Err(RequestError::CannotComment);
    }
    Ok(index)
}

/// Deletes one's own comment.
///
/// # Errors
/// Unknown comment, someone else's, or commenting not allowed now.
pub fn delete_comment(
    request: &mut ReleaseRequest,
    user: &User,
    id: u64,
    now: i64,
) -> Result<Outcome, RequestError> {
    let index = own_comment(request, user, id)?;
    let comment = request.comments.remove(index);
    let deleted = event(
        request,
        AuditType::RequestCommentDelete,
        &user.username,
        None,
        &[
            ("group", &comment.group),
            ("comment", &comment.text),
            ("visibility", comment.visibility.as_str()),
        ],
        now,
    );
    Ok(Outcome {
        events: vec![deleted],
        hide_turn: None,
    })
}

/// Makes one's own PRIVATE comment PUBLIC, within the turn it was written in.
///
/// # Errors
/// Unknown comment, someone else's, or a finished turn.
pub fn make_comment_public(
    request: &mut ReleaseRequest,
    user: &User,
    id: u64,
    now: i64,
) -> Result<Outcome, RequestError> {
    let index = own_comment(request, user, id)?;
    if request.comments[index].review_turn != request.review_turn {
        return Err(RequestError::RoundFinished);
    }
    request.comments[index].visibility = Visibility::Public;
    let comment = request.comments[index].clone();
    let published = event(
        request,
        AuditType::RequestCommentVisibilityPublic,
        &user.username,
        None,
        &[
            ("group", &comment.group),
            ("comment", &comment.text),
            ("visibility", "PUBLIC"),
        ],
        now,
    );
    Ok(Outcome {
        events: vec![published],
        hide_turn: None,
    })
}

/// The notification event for a status change (B10), if any.
pub fn notification_for(from: RequestStatus, to: RequestStatus) -> Option<&'static str> {
    if from == to {
        return None;
    }
    Some(match (from, to) {
        (RequestStatus::Returned, RequestStatus::Submitted) => "request_resubmitted",
        (_, RequestStatus::Submitted) => "request_submitted",
        (_, RequestStatus::Withdrawn) => "request_withdrawn",
        (_, RequestStatus::PartiallyReviewed) => "request_partially_reviewed",
        (_, RequestStatus::Reviewed) => "request_reviewed",
        (_, RequestStatus::Approved) => "request_approved",
        (_, RequestStatus::Released) => "request_released",
        (_, RequestStatus::Rejected) => "request_rejected",
        (_, RequestStatus::Returned) => "request_returned",
        (_, RequestStatus::Pending) => return None,
    })
}
