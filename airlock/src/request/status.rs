//! Release-request status and the one function that decides transitions
//! (spec: jobserver-and-airlock, B5).
//!
//! ```text
//!  (none) --first file added--> PENDING --submit--> SUBMITTED --1st review--> PARTIALLY_REVIEWED
//!                                  |                  |   ^                      |        |
//!                             withdraw            return  |                  return   2nd review
//!                                  v                  v   |resubmit              v        v
//!                             [WITHDRAWN] <--withdraw-- RETURNED <------return------- REVIEWED
//!                                                                                  |       |
//!                                                                             release   reject
//!                                                                                  v       v
//!                                                  [RELEASED] <--all uploaded-- APPROVED [REJECTED]
//! ```
//! `[..]` marks the terminal states: nothing leaves WITHDRAWN, RELEASED or REJECTED.
//!
//! The 13 valid transitions (everything else is "cannot change status from X to Y"):
//!
//! | from | to | who |
//! |---|---|---|
//! | (none) | PENDING | the author, by adding the first file |
//! | PENDING | SUBMITTED | the author |
//! | PENDING | WITHDRAWN | the author |
//! | SUBMITTED | PARTIALLY_REVIEWED | the first output checker to submit a review |
//! | SUBMITTED | RETURNED | an output checker (early return) |
//! | PARTIALLY_REVIEWED | REVIEWED | the second output checker to submit a review |
//! | PARTIALLY_REVIEWED | RETURNED | an output checker (early return) |
//! | REVIEWED | RETURNED | an output checker |
//! | REVIEWED | APPROVED | an output checker releasing the files |
//! | REVIEWED | REJECTED | an output checker |
//! | RETURNED | SUBMITTED | the author (resubmit) |
//! | RETURNED | WITHDRAWN | the author |
//! | APPROVED | RELEASED | the uploader, acting as the releasing output checker |
//!
//! Ownership (the reference's generic rule): when the current status is owned by the author
//! (PENDING, RETURNED) only the author may move it; when it is owned by reviewers (SUBMITTED,
//! PARTIALLY_REVIEWED, REVIEWED) or is APPROVED/REJECTED, the actor must be an output checker
//! and must not be the author. Guards that need the whole request (files approved, context and
//! controls filled in) live with the operations in [`crate::request::workflow`].

use std::fmt;
use std::str::FromStr;

/// The status of a release request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestStatus {
    Pending,
    Submitted,
    PartiallyReviewed,
    Reviewed,
    Returned,
    Approved,
    Released,
    Rejected,
    Withdrawn,
}

/// Who owns a status: whose move it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOwner {
    Author,
    Reviewer,
    System,
}

/// Where a request is in its review turn (decides what each viewer may see, B6/B7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewTurnPhase {
    Author,
    Independent,
    Consolidating,
    Complete,
}

/// The user attempting a transition, as far as the transition rules care.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub username: &'a str,
    pub output_checker: bool,
}

/// Why a transition was refused. The display texts are the reference's messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot change status from {} to {to}", from_name(*.from))]
    Invalid {
        from: Option<RequestStatus>,
        to: RequestStatus,
    },
    #[error("only the request author {author} can set status from {from} to {to}")]
    NotAuthor {
        author: String,
        from: RequestStatus,
        to: RequestStatus,
    },
    #[error("only an output checker can set status to {to}")]
    NotOutputChecker { to: RequestStatus },
    #[error("Can not set your own request to {to}")]
    OwnRequest { to: RequestStatus },
}

/// A stored or submitted status name that is not a [`RequestStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request status {0:?}")]
pub struct UnknownStatus(pub String);

/// Every status, in declaration order (for tests and listings).
pub const ALL_STATUSES: [RequestStatus; 9] = [
    RequestStatus::Pending,
    RequestStatus::Submitted,
    RequestStatus::PartiallyReviewed,
    RequestStatus::Reviewed,
    RequestStatus::Returned,
    RequestStatus::Approved,
    RequestStatus::Released,
    RequestStatus::Rejected,
    RequestStatus::Withdrawn,
];

/// Decides whether `actor` may move a request authored by `author` from `from` (`None`: the
/// request does not exist yet) to `to`.
///
/// # Errors
/// [`TransitionError::Invalid`] for a pair outside the table, otherwise the ownership errors.
pub fn check_transition(
    from: Option<RequestStatus>,
    to: RequestStatus,
    actor: &Actor<'_>,
    author: &str,
) -> Result<(), TransitionError> {
    if !is_valid(from, to) {
        return Err(TransitionError::Invalid { from, to });
    }
    let Some(from) = from else {
        // Creation: whoever creates a request is its author.
        return Ok(());
    };
    let is_author = actor.username == author;
    let owner = from.owner();
    if owner == StatusOwner::Author && !is_author {
        return Err(TransitionError::NotAuthor {
            author: author.to_string(),
            from,
            to,
        });
    }
    if owner == StatusOwner::Reviewer
        || matches!(from, RequestStatus::Approved | RequestStatus::Rejected)
    {
        if !actor.output_checker {
            return Err(TransitionError::NotOutputChecker { to });
        }
        if is_author {
            return Err(TransitionError::OwnRequest { to });
        }
    }
    Ok(())
}

/// Whether `(from, to)` is one of the 13 transitions in the table.
pub fn is_valid(from: Option<RequestStatus>, to: RequestStatus) -> bool {
    use RequestStatus::*;
    matches!(
        (from, to),
        (None, Pending)
            | (Some(Pending), Submitted | Withdrawn)
            | (Some(Submitted), PartiallyReviewed | Returned)
            | (Some(PartiallyReviewed), Reviewed | Returned)
            | (Some(Reviewed), Returned | Approved | Rejected)
            | (Some(Returned), Submitted | Withdrawn)
            | (Some(Approved), Released)
    )
}

fn from_name(from: Option<RequestStatus>) -> &'static str {
    match from {
        Some(status) => status.as_str(),
        None => "(none)",
    }
}

impl RequestStatus {
    /// The wire and storage name (the reference's enum name).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "PENDING",
            RequestStatus::Submitted => "SUBMITTED",
            RequestStatus::PartiallyReviewed => "PARTIALLY_REVIEWED",
            RequestStatus::Reviewed => "REVIEWED",
            RequestStatus::Returned => "RETURNED",
            RequestStatus::Approved => "APPROVED",
            RequestStatus::Released => "RELEASED",
            RequestStatus::Rejected => "REJECTED",
            RequestStatus::Withdrawn => "WITHDRAWN",
        }
    }

    /// What the UI shows (B4: a few statuses have friendlier descriptions).
    pub fn description(self) -> &'static str {
        match self {
            RequestStatus::PartiallyReviewed => "ONE REVIEW SUBMITTED",
            RequestStatus::Reviewed => "ALL REVIEWS SUBMITTED",
            RequestStatus::Approved => "APPROVED - FILES UPLOADING",
            other => other.as_str(),
        }
    }

    /// Whose move it is in this status.
    pub fn owner(self) -> StatusOwner {
        match self {
            RequestStatus::Pending | RequestStatus::Returned => StatusOwner::Author,
            RequestStatus::Submitted
            | RequestStatus::PartiallyReviewed
            | RequestStatus::Reviewed => StatusOwner::Reviewer,
            RequestStatus::Approved
            | RequestStatus::Released
            | RequestStatus::Rejected
            | RequestStatus::Withdrawn => StatusOwner::System,
        }
    }

    /// The review-turn phase of this status.
    pub fn phase(self) -> ReviewTurnPhase {
        match self {
            RequestStatus::Pending | RequestStatus::Returned => ReviewTurnPhase::Author,
            RequestStatus::Submitted | RequestStatus::PartiallyReviewed => {
                ReviewTurnPhase::Independent
            }
            RequestStatus::Reviewed => ReviewTurnPhase::Consolidating,
            RequestStatus::Approved
            | RequestStatus::Released
            | RequestStatus::Rejected
            | RequestStatus::Withdrawn => ReviewTurnPhase::Complete,
        }
    }

    /// Not yet final: at most one such request per (workspace, author).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RequestStatus::Pending
                | RequestStatus::Submitted
                | RequestStatus::PartiallyReviewed
                | RequestStatus::Reviewed
                | RequestStatus::Returned
        )
    }

    /// The author may change files, groups and context (PENDING, RETURNED).
    pub fn is_editable(self) -> bool {
        self.owner() == StatusOwner::Author
    }

    /// Output checkers may vote and submit reviews.
    pub fn is_under_review(self) -> bool {
        self.owner() == StatusOwner::Reviewer
    }

    /// Nothing leaves these statuses.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestStatus::Released | RequestStatus::Rejected | RequestStatus::Withdrawn
        )
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<RequestStatus, UnknownStatus> {
        ALL_STATUSES
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestStatus::*;

    const AUTHOR: &str = "author";

    fn author_actor(output_checker: bool) -> Actor<'static> {
        Actor {
            username: AUTHOR,
            output_checker,
        }
    }

    fn checker() -> Actor<'static> {
        Actor {
            username: "checker",
            output_checker: true,
        }
    }

    fn collaborator() -> Actor<'static> {
        Actor {
            username: "collaborator",
            output_checker: false,
        }
    }

    const VALID: [(Option<RequestStatus>, RequestStatus); 13] = [
        (None, Pending),
        (Some(Pending), Submitted),
        (Some(Pending), Withdrawn),
        (Some(Submitted), PartiallyReviewed),
        (Some(Submitted), Returned),
        (Some(PartiallyReviewed), Reviewed),
        (Some(PartiallyReviewed), Returned),
        (Some(Reviewed), Returned),
        (Some(Reviewed), Approved),
        (Some(Reviewed), Rejected),
        (Some(Returned), Submitted),
        (Some(Returned), Withdrawn),
        (Some(Approved), Released),
    ];

    #[test]
    fn every_pair_of_the_matrix() {
        let froms = std::iter::once(None).chain(ALL_STATUSES.into_iter().map(Some));
        let mut n_valid = 0;
        for from in froms {
            for to in ALL_STATUSES {
                let valid = VALID.contains(&(from, to));
                // The right actor for the transition: the author for author-owned statuses
                // and creation, a non-author output checker otherwise.
                let actor = match from {
                    None => author_actor(false),
                    Some(status) if status.owner() == StatusOwner::Author => author_actor(false),
                    Some(_) => checker(),
                };
                let result = check_transition(from, to, &actor, AUTHOR);
                if valid {
                    n_valid += 1;
                    assert_eq!(result, Ok(()), "{from:?} -> {to:?}");
                } else {
                    let error = result.expect_err("invalid pair accepted");
                    assert_eq!(
                        error.to_string(),
                        format!("cannot change status from {} to {}", from_name(from), to),
                    );
                }
            }
        }
        assert_eq!(n_valid, 13);
    }

    #[test]
    fn author_owned_transitions_need_the_author() {
        for (from, to) in VALID {
            let Some(from) = from else { continue };
            if from.owner() != StatusOwner::Author {
                continue;
            }
            // Even an output checker who is not the author is refused.
            for actor in [collaborator(), checker()] {
                let error = check_transition(Some(from), to, &actor, AUTHOR).unwrap_err();
                assert_eq!(
                    error.to_string(),
                    format!("only the request author author can set status from {from} to {to}")
                );
            }
        }
    }

    #[test]
    fn reviewer_owned_transitions_need_a_non_author_output_checker() {
        for (from, to) in VALID {
            let Some(from) = from else { continue };
            if from.owner() == StatusOwner::Author {
                continue;
            }
            let error = check_transition(Some(from), to, &collaborator(), AUTHOR).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("only an output checker can set status to {to}")
            );
            let error = check_transition(Some(from), to, &author_actor(true), AUTHOR).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("Can not set your own request to {to}")
            );
        }
    }

    #[test]
    fn terminal_statuses_have_no_way_out() {
        for from in [Withdrawn, Released, Rejected] {
            assert!(from.is_final());
            for to in ALL_STATUSES {
                assert!(!is_valid(Some(from), to));
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for status in ALL_STATUSES {
            assert_eq!(status.as_str().parse::<RequestStatus>(), Ok(status));
        }
        assert_eq!(
            "pending".parse::<RequestStatus>(),
            Err(UnknownStatus("pending".to_string()))
        );
    }
}
