//! The on-disk record formats (an API boundary: change only by adding a version). Domain
//! types are not serializable; these are, and convert by hand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditType};
use crate::request::{
    Comment, FileGroup, FileReview, FileType, ReleaseRequest, RequestFile, RequestId,
    RequestStatus, Visibility, Vote,
};

/// A stored record that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what} record: {detail}")]
pub struct CorruptRecord {
    pub what: &'static str,
    pub detail: String,
}

fn corrupt(what: &'static str, detail: impl Into<String>) -> CorruptRecord {
    CorruptRecord {
        what,
        detail: detail.into(),
    }
}

/// A stored release request, versioned.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum RequestRecord {
    #[serde(rename = "1")]
    V1(RequestV1),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestV1 {
    id: String,
    workspace: String,
    project: String,
    organisations: Vec<String>,
    author: String,
    created_at: i64,
    last_submitted_at: Option<i64>,
    status: String,
    review_turn: u32,
    submitted_reviews: BTreeMap<String, i64>,
    turn_reviewers: Vec<String>,
    groups: Vec<GroupV1>,
    files: Vec<FileV1>,
    comments: Vec<CommentV1>,
    next_comment_id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupV1 {
    name: String,
    context: String,
    controls: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileV1 {
    relpath: String,
    group: String,
    file_id: String,
    filetype: String,
    timestamp: i64,
    size: u64,
    job_id: String,
    commit: String,
    repo: String,
    row_count: Option<u64>,
    col_count: Option<u64>,
    released_at: Option<i64>,
    released_by: Option<String>,
    uploaded: bool,
    uploaded_at: Option<i64>,
    upload_attempts: u32,
    upload_attempted_at: Option<i64>,
    reviews: Vec<ReviewV1>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReviewV1 {
    reviewer: String,
    vote: String,
    review_turn: u32,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommentV1 {
    id: u64,
    group: String,
    text: String,
    author: String,
    visibility: String,
    review_turn: u32,
    created_at: i64,
}

/// A stored audit event, versioned.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum AuditRecord {
    #[serde(rename = "1")]
    V1(AuditV1),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditV1 {
    pub(crate) kind: String,
    pub(crate) user: String,
    pub(crate) workspace: String,
    pub(crate) request: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) extra: BTreeMap<String, String>,
    pub(crate) review_turn: u32,
    pub(crate) created_at: i64,
    pub hidden: bool,
}

impl RequestRecord {
    pub fn from_domain(request: &ReleaseRequest) -> RequestRecord {
        RequestRecord::V1(RequestV1 {
            id: request.id.to_string(),
            workspace: request.workspace.clone(),
            project: request.project.clone(),
            organisations: request.organisations.clone(),
            author: request.author.clone(),
            created_at: request.created_at,
            last_submitted_at: request.last_submitted_at,
            status: request.status.as_str().to_string(),
            review_turn: request.review_turn,
            submitted_reviews: request.submitted_reviews.clone(),
            turn_reviewers: request.turn_reviewers.clone(),
            groups: request
                .groups
                .values()
                .map(|group| GroupV1 {
                    name: group.name.clone(),
                    context: group.context.clone(),
                    controls: group.controls.clone(),
                    created_at: group.created_at,
                    updated_at: group.updated_at,
                })
                .collect(),
            files: request
                .files
                .values()
                .map(|file| FileV1 {
                    relpath: file.relpath.clone(),
                    group: file.group.clone(),
                    file_id: file.file_id.clone(),
                    filetype: file.filetype.as_str().to_string(),
                    timestamp: file.timestamp,
                    size: file.size,
                    job_id: file.job_id.clone(),
                    commit: file.commit.clone(),
                    repo: file.repo.clone(),
                    row_count: file.row_count,
                    col_count: file.col_count,
                    released_at: file.released_at,
                    released_by: file.released_by.clone(),
                    uploaded: file.uploaded,
                    uploaded_at: file.uploaded_at,
                    upload_attempts: file.upload_attempts,
                    upload_attempted_at: file.upload_attempted_at,
                    reviews: file
                        .reviews
                        .values()
                        .map(|review| ReviewV1 {
                            reviewer: review.reviewer.clone(),
                            vote: review.vote.as_str().to_string(),
                            review_turn: review.review_turn,
                            created_at: review.created_at,
                            updated_at: review.updated_at,
                        })
                        .collect(),
                })
                .collect(),
            comments: request
                .comments
                .iter()
                .map(|comment| CommentV1 {
                    id: comment.id,
                    group: comment.group.clone(),
                    text: comment.text.clone(),
                    author: comment.author.clone(),
                    visibility: comment.visibility.as_str().to_string(),
                    review_turn: comment.review_turn,
                    created_at: comment.created_at,
                })
                .collect(),
            next_comment_id: request.next_comment_id,
        })
    }

    /// # Errors
    /// An unknown enum name or id in the record.
    pub fn into_domain(self) -> Result<ReleaseRequest, CorruptRecord> {
        let RequestRecord::V1(record) = self;
        let id = RequestId::parse(&record.id).map_err(|e| corrupt("request", e.to_string()))?;
        let status: RequestStatus =
            record
                .status
                .parse()
                .map_err(|e: crate::request::status::UnknownStatus| {
                    corrupt("request", e.to_string())
                })?;
        let mut files = BTreeMap::new();
        for file in record.files {
            let filetype = FileType::parse(&file.filetype)
                .ok_or_else(|| corrupt("request file", file.filetype.clone()))?;
            let mut reviews = BTreeMap::new();
            for review in file.reviews {
                let vote = Vote::parse(&review.vote)
                    .ok_or_else(|| corrupt("review", review.vote.clone()))?;
                reviews.insert(
                    review.reviewer.clone(),
                    FileReview {
                        reviewer: review.reviewer,
                        vote,
                        review_turn: review.review_turn,
                        created_at: review.created_at,
                        updated_at: review.updated_at,
                    },
                );
            }
            files.insert(
                file.relpath.clone(),
                RequestFile {
                    relpath: file.relpath,
                    group: file.group,
                    file_id: file.file_id,
                    filetype,
                    timestamp: file.timestamp,
                    size: file.size,
                    job_id: file.job_id,
                    commit: file.commit,
                    repo: file.repo,
                    row_count: file.row_count,
                    col_count: file.col_count,
                    released_at: file.released_at,
                    released_by: file.released_by,
                    uploaded: file.uploaded,
                    uploaded_at: file.uploaded_at,
                    upload_attempts: file.upload_attempts,
                    upload_attempted_at: file.upload_attempted_at,
                    reviews,
                },
            );
        }
        let mut comments = Vec::new();
        for comment in record.comments {
            let visibility = Visibility::parse(&comment.visibility)
                .ok_or_else(|| corrupt("comment", comment.visibility.clone()))?;
            comments.push(Comment {
                id: comment.id,
                group: comment.group,
                text: comment.text,
                author: comment.author,
                visibility,
                review_turn: comment.review_turn,
                created_at: comment.created_at,
            });
        }
        Ok(ReleaseRequest {
            id,
            workspace: record.workspace,
            project: record.project,
            organisations: record.organisations,
            author: record.author,
            created_at: record.created_at,
            last_submitted_at: record.last_submitted_at,
            status,
            review_turn: record.review_turn,
            submitted_reviews: record.submitted_reviews,
            turn_reviewers: record.turn_reviewers,
            groups: record
                .groups
                .into_iter()
                .map(|group| {
                    (
                        group.name.clone(),
                        FileGroup {
                            name: group.name,
                            context: group.context,
                            controls: group.controls,
                            created_at: group.created_at,
                            updated_at: group.updated_at,
                        },
                    )
                })
                .collect(),
            files,
            comments,
            next_comment_id: record.next_comment_id,
        })
    }
}

impl AuditRecord {
    pub fn from_domain(event: &AuditEvent) -> AuditRecord {
        AuditRecord::V1(AuditV1 {
            kind: event.kind.as_str().to_string(),
            user: event.user.clone(),
            workspace: event.workspace.clone(),
            request: event.request.clone(),
            path: event.path.clone(),
            extra: event.extra.clone(),
            review_turn: event.review_turn,
            created_at: event.created_at,
            hidden: event.hidden,
        })
    }

    /// # Errors
    /// An unknown event type.
    pub fn into_domain(self) -> Result<AuditEvent, CorruptRecord> {
        let AuditRecord::V1(record) = self;
        let kind = AuditType::parse(&record.kind).ok_or_else(|| corrupt("audit", record.kind))?;
        Ok(AuditEvent {
            kind,
            user: record.user,
            workspace: record.workspace,
            request: record.request,
            path: record.path,
            extra: record.extra,
            review_turn: record.review_turn,
            created_at: record.created_at,
            hidden: record.hidden,
        })
    }
}
