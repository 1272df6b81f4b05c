//! The release-request domain (spec B4): a request with its file groups, files, votes and
//! comments, held as one aggregate so that every operation checks all its guards on a value
//! and only then mutates it. Callers (the store) persist the result and the audit events it
//! returns together, so a refused operation changes nothing.
//!
//! - [`status`]: the status enum and the transition rule.
//! - [`workflow`]: the operations (add file, submit, vote, review, return, release …).
//! - [`review`]: file decisions from votes.
//! - [`comments`]: who may comment and who sees what.

pub mod comments;
pub mod review;
pub mod status;
pub mod workflow;

#[cfg(test)]
mod workflow_tests;

use std::collections::BTreeMap;
use std::fmt;

pub use status::RequestStatus;

/// A release request's id: a ULID (26 Crockford base-32 characters), generated locally.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

/// A string that is not a request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request id {0:?}")]
pub struct InvalidRequestId(pub String);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl RequestId {
    /// A fresh ULID: 48 bits of milliseconds since the epoch, then 80 random bits.
    pub fn generate(now_millis: u64) -> RequestId {
        let random: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
        let value: u128 = (u128::from(now_millis & 0xFFFF_FFFF_FFFF) << 80) | random;
        let mut text = String::with_capacity(26);
        for idx in (0..26).rev() {
            let digit = ((value >> (idx * 5)) & 0x1F) as usize;
            text.push(char::from(CROCKFORD[digit]));
        }
        RequestId(text)
    }

    /// Parses a request id from a URL or the store.
    ///
    /// # Errors
    /// [`InvalidRequestId`] unless it is 26 Crockford base-32 characters.
    pub fn parse(text: &str) -> Result<RequestId, InvalidRequestId> {
        if text.len() == 26 && text.bytes().all(|byte| CROCKFORD.contains(&byte)) {
            return Ok(RequestId(text.to_string()));
        }
        Err(InvalidRequestId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a file is on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// To be released: reviewed and voted on.
    Output,
    /// Context for reviewers: never voted on, never released.
    Supporting,
    /// Withdrawn from a returned request (kept visible).
    Withdrawn,
}

/// One reviewer's vote on one output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Approved,
    ChangesRequested,
    Undecided,
}

/// The aggregate decision on a file (B6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved,
    ChangesRequested,
    Conflicted,
    Incomplete,
}

/// Comment visibility (B7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Output checkers only.
    Private,
    Public,
}

/// A named group of files with the author's context and disclosure controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGroup {
    pub name: String,
    pub context: String,
    pub controls: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A reviewer's vote and the turn it was cast in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReview {
    pub reviewer: String,
    pub vote: Vote,
    pub review_turn: u32,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A file on a request. Its bytes are the stored copy named by `file_id` (the sha256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFile {
    pub relpath: String,
    pub group: String,
    pub file_id: String,
    pub filetype: FileType,
    pub timestamp: i64,
    pub size: u64,
    pub job_id: String,
    pub commit: String,
    pub repo: String,
    pub row_count: Option<u64>,
    pub col_count: Option<u64>,
    pub released_at: Option<i64>,
    pub released_by: Option<String>,
    pub uploaded: bool,
    pub uploaded_at: Option<i64>,
    pub upload_attempts: u32,
    pub upload_attempted_at: Option<i64>,
    /// Votes, by reviewer.
    pub reviews: BTreeMap<String, FileReview>,
}

/// A comment on a file group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub group: String,
    pub text: String,
    pub author: String,
    pub visibility: Visibility,
    pub review_turn: u32,
    pub created_at: i64,
}

/// A release request and everything on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    pub id: RequestId,
    pub workspace: String,
    pub project: String,
    pub organisations: Vec<String>,
    pub author: String,
    pub created_at: i64,
    pub last_submitted_at: Option<i64>,
    pub status: RequestStatus,
    /// 0 is the first author turn; odd turns are review turns.
    pub review_turn: u32,
    /// Reviewers who submitted their review this turn, with when.
    pub submitted_reviews: BTreeMap<String, i64>,
    /// Who had submitted in the previous turn (set when a turn starts).
    pub turn_reviewers: Vec<String>,
    /// Groups by name.
    pub groups: BTreeMap<String, FileGroup>,
    /// Files by relative path (a path is on a request at most once).
    pub files: BTreeMap<String, RequestFile>,
    pub comments: Vec<Comment>,
    pub next_comment_id: u64,
}

impl ReleaseRequest {
    /// A new PENDING request with no files.
    pub fn new(
        id: RequestId,
        workspace: &str,
        author: &str,
        project: &str,
        organisations: Vec<String>,
        now: i64,
    ) -> ReleaseRequest {
        ReleaseRequest {
            id,
            workspace: workspace.to_string(),
            project: project.to_string(),
            organisations,
            author: author.to_string(),
            created_at: now,
            last_submitted_at: None,
            status: RequestStatus::Pending,
            review_turn: 0,
            submitted_reviews: BTreeMap::new(),
            turn_reviewers: Vec::new(),
            groups: BTreeMap::new(),
            files: BTreeMap::new(),
            comments: Vec::new(),
            next_comment_id: 1,
        }
    }

    /// Files of type OUTPUT.
    pub fn output_files(&self) -> impl Iterator<Item = &RequestFile> {
        self.files
            .values()
            .filter(|file| file.filetype == FileType::Output)
    }

    /// Files in a group (any type).
    pub fn group_files<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a RequestFile> {
        self.files.values().filter(move |file| file.group == group)
    }

    /// A group is empty when it holds no output and no supporting files.
    pub fn group_is_empty(&self, group: &str) -> bool {
        !self
            .group_files(group)
            .any(|file| file.filetype != FileType::Withdrawn)
    }

    /// Non-empty groups lacking context or controls.
    pub fn incomplete_groups(&self) -> Vec<String> {
        self.groups
            .values()
            .filter(|group| {
                !self.group_is_empty(&group.name)
                    && (group.context.trim().is_empty() || group.controls.trim().is_empty())
            })
            .map(|group| group.name.clone())
            .collect()
    }

    /// Starts a new turn: the reviewers who submitted become `turn_reviewers`.
    pub fn start_new_turn(&mut self) {
        self.turn_reviewers = self.submitted_reviews.keys().cloned().collect();
        self.submitted_reviews.clear();
        self.review_turn += 1;
    }

    /// Every output file has decision APPROVED from this turn's submitted reviewers.
    pub fn all_files_approved(&self) -> bool {
        let reviewers: Vec<&str> = self.submitted_reviews.keys().map(String::as_str).collect();
        self.output_files()
            .all(|file| review::decision(file, &reviewers) == Decision::Approved)
    }
}

impl FileType {
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Output => "OUTPUT",
            FileType::Supporting => "SUPPORTING",
            FileType::Withdrawn => "WITHDRAWN",
        }
    }

    pub fn parse(text: &str) -> Option<FileType> {
        [FileType::Output, FileType::Supporting, FileType::Withdrawn]
            .into_iter()
            .find(|filetype| filetype.as_str() == text)
    }
}

impl Vote {
    pub fn as_str(self) -> &'static str {
        match self {
            Vote::Approved => "APPROVED",
            Vote::ChangesRequested => "CHANGES_REQUESTED",
            Vote::Undecided => "UNDECIDED",
        }
    }

    pub fn parse(text: &str) -> Option<Vote> {
        [Vote::Approved, Vote::ChangesRequested, Vote::Undecided]
            .into_iter()
            .find(|vote| vote.as_str() == text)
    }
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "APPROVED",
            Decision::ChangesRequested => "CHANGES_REQUESTED",
            Decision::Conflicted => "CONFLICTED",
            Decision::Incomplete => "INCOMPLETE",
        }
    }
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "PRIVATE",
            Visibility::Public => "PUBLIC",
        }
    }

    pub fn parse(text: &str) -> Option<Visibility> {
        [Visibility::Private, Visibility::Public]
            .into_iter()
            .find(|visibility| visibility.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_ulids_and_parse_back() {
        let id = RequestId::generate(1_700_000_000_000);
        assert_eq!(id.as_str().len(), 26);
        assert_eq!(RequestId::parse(id.as_str()), Ok(id.clone()));
        assert!(RequestId::parse("../etc/passwd").is_err());
        assert!(RequestId::parse("").is_err());
        // Time-ordered: a later id sorts after an earlier one.
        assert!(RequestId::generate(1_800_000_000_000) > id);
    }

    #[test]
    fn enum_names_round_trip() {
        for filetype in [FileType::Output, FileType::Supporting, FileType::Withdrawn] {
            assert_eq!(FileType::parse(filetype.as_str()), Some(filetype));
        }
        for vote in [Vote::Approved, Vote::ChangesRequested, Vote::Undecided] {
            assert_eq!(Vote::parse(vote.as_str()), Some(vote));
        }
        for visibility in [Visibility::Private, Visibility::Public] {
            assert_eq!(Visibility::parse(visibility.as_str()), Some(visibility));
        }
    }
}
