//! The audit log's event types and their display texts (spec B11). Events are produced by the
//! request operations and appended by the store in the same write as the change they record.

use std::collections::BTreeMap;

/// The kind of an audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditType {
    WorkspaceFileView,
    RequestFileView,
    RequestFileDownload,
    RequestCreate,
    RequestSubmit,
    RequestWithdraw,
    RequestReview,
    RequestApprove,
    RequestReject,
    RequestReturn,
    RequestRelease,
    RequestEarlyReturn,
    RequestEdit,
    RequestComment,
    RequestCommentDelete,
    RequestCommentVisibilityPublic,
    RequestFileAdd,
    RequestFileUpdate,
    RequestFileWithdraw,
    RequestFileApprove,
    RequestFileRequestChanges,
    RequestFileResetReview,
    RequestFileUndecided,
    RequestFileRelease,
    RequestFileUpload,
}

/// Every audit type (for storage parsing and tests).
pub const ALL_AUDIT_TYPES: [AuditType; 25] = [
    AuditType::WorkspaceFileView,
    AuditType::RequestFileView,
    AuditType::RequestFileDownload,
    AuditType::RequestCreate,
    AuditType::RequestSubmit,
    AuditType::RequestWithdraw,
    AuditType::RequestReview,
    AuditType::RequestApprove,
    AuditType::RequestReject,
    AuditType::RequestReturn,
    AuditType::RequestRelease,
    AuditType::RequestEarlyReturn,
    AuditType::RequestEdit,
    AuditType::RequestComment,
    AuditType::RequestCommentDelete,
    AuditType::RequestCommentVisibilityPublic,
    AuditType::RequestFileAdd,
    AuditType::RequestFileUpdate,
    AuditType::RequestFileWithdraw,
    AuditType::RequestFileApprove,
    AuditType::RequestFileRequestChanges,
    AuditType::RequestFileResetReview,
    AuditType::RequestFileUndecided,
    AuditType::RequestFileRelease,
    AuditType::RequestFileUpload,
];

/// One entry of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub kind: AuditType,
    pub user: String,
    pub workspace: String,
    pub request: Option<String>,
    pub path: Option<String>,
    /// Extra details (`group`, `filetype`, `comment`, `visibility`, `reviewer`, …).
    pub extra: BTreeMap<String, String>,
    /// The request's review turn when the event happened.
    pub review_turn: u32,
    pub created_at: i64,
    /// Hidden by an early return: never shown.
    pub hidden: bool,
}

impl AuditType {
    /// The storage name (the reference's enum name).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditType::WorkspaceFileView => "WORKSPACE_FILE_VIEW",
            AuditType::RequestFileView => "REQUEST_FILE_VIEW",
            AuditType::RequestFileDownload => "REQUEST_FILE_DOWNLOAD",
            AuditType::RequestCreate => "REQUEST_CREATE",
            AuditType::RequestSubmit => "REQUEST_SUBMIT",
            AuditType::RequestWithdraw => "REQUEST_WITHDRAW",
            AuditType::RequestReview => "REQUEST_REVIEW",
            AuditType::RequestApprove => "REQUEST_APPROVE",
            AuditType::RequestReject => "REQUEST_REJECT",
            AuditType::RequestReturn => "REQUEST_RETURN",
            AuditType::RequestRelease => "REQUEST_RELEASE",
            AuditType::RequestEarlyReturn => "REQUEST_EARLY_RETURN",
            AuditType::RequestEdit => "REQUEST_EDIT",
            AuditType::RequestComment => "REQUEST_COMMENT",
            AuditType::RequestCommentDelete => "REQUEST_COMMENT_DELETE",
            AuditType::RequestCommentVisibilityPublic => "REQUEST_COMMENT_VISIBILITY_PUBLIC",
            AuditType::RequestFileAdd => "REQUEST_FILE_ADD",
            AuditType::RequestFileUpdate => "REQUEST_FILE_UPDATE",
            AuditType::RequestFileWithdraw => "REQUEST_FILE_WITHDRAW",
            AuditType::RequestFileApprove => "REQUEST_FILE_APPROVE",
            AuditType::RequestFileRequestChanges => "REQUEST_FILE_REQUEST_CHANGES",
            AuditType::RequestFileResetReview => "REQUEST_FILE_RESET_REVIEW",
            AuditType::RequestFileUndecided => "REQUEST_FILE_UNDECIDED",
            AuditType::RequestFileRelease => "REQUEST_FILE_RELEASE",
            AuditType::RequestFileUpload => "REQUEST_FILE_UPLOAD",
        }
    }

    /// Parses a storage name.
    pub fn parse(text: &str) -> Option<AuditType> {
        ALL_AUDIT_TYPES
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// What the activity panel shows.
    pub fn display(self) -> &'static str {
        match self {
            AuditType::WorkspaceFileView | AuditType::RequestFileView => "Viewed file",
            AuditType::RequestFileDownload => "Downloaded file",
            AuditType::RequestCreate => "Created request",
            AuditType::RequestSubmit => "Submitted request",
            AuditType::RequestWithdraw => "Withdrew request",
            AuditType::RequestReview => "Submitted review",
            AuditType::RequestApprove => "Approved request",
            AuditType::RequestReject => "Rejected request",
            AuditType::RequestReturn => "Returned request",
            AuditType::RequestRelease => "Released request",
            AuditType::RequestEarlyReturn => {
                "Request returned early; comments and votes for turn reset"
            }
            AuditType::RequestEdit => "Edited the Context/Controls",
            AuditType::RequestComment => "Commented",
            AuditType::RequestCommentDelete => "Comment deleted",
            AuditType::RequestCommentVisibilityPublic => "Private comment made public",
            AuditType::RequestFileAdd => "Added file",
            AuditType::RequestFileUpdate => "Updated file",
            AuditType::RequestFileWithdraw => "Withdrew file from group",
            AuditType::RequestFileApprove => "Approved file",
            AuditType::RequestFileRequestChanges => "Changes requested to file",
            AuditType::RequestFileResetReview => "Reset review of file",
            AuditType::RequestFileUndecided => "File with changes requested moved to undecided",
            AuditType::RequestFileRelease => "File released",
            AuditType::RequestFileUpload => "File uploaded",
        }
    }

    /// Read-only events an activity panel may leave out.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            AuditType::WorkspaceFileView
                | AuditType::RequestFileView
                | AuditType::RequestFileUndecided
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_type_has_text() {
        for kind in ALL_AUDIT_TYPES {
            assert_eq!(AuditType::parse(kind.as_str()), Some(kind));
            assert!(!kind.display().is_empty());
        }
        assert_eq!(AuditType::RequestFileAdd.display(), "Added file");
        assert_eq!(AuditType::parse("NOPE"), None);
    }
}
