//! File decisions from reviewers' votes (spec B6.4): two independent approvals release a file;
//! a third reviewer can break a conflict. Pure functions over the request aggregate.

use super::status::ReviewTurnPhase;
use super::{Decision, ReleaseRequest, RequestFile, Vote};
use crate::user::User;

/// The decision on `file` from the votes of `reviewers` (those who submitted their review).
pub fn decision(file: &RequestFile, reviewers: &[&str]) -> Decision {
    let votes: Vec<Vote> = reviewers
        .iter()
        .filter_map(|reviewer| file.reviews.get(*reviewer).map(|review| review.vote))
        .collect();
    if votes.len() < 2 {
        return Decision::Incomplete;
    }
    let approvals = votes.iter().filter(|vote| **vote == Vote::Approved).count();
    if approvals >= 2 {
        return Decision::Approved;
    }
    if votes.iter().any(|vote| *vote != votes[0]) {
        return Decision::Conflicted;
    }
    if votes[0] == Vote::ChangesRequested {
        return Decision::ChangesRequested;
    }
    Decision::Incomplete
}

/// The decision `viewer` may see (B6.4): nobody during independent review; only those who
/// can review it while consolidating; everyone when complete; the previous turn's decision
/// during an author turn. Authors and non-checkers see CONFLICTED as CHANGES_REQUESTED.
pub fn visible_decision(request: &ReleaseRequest, file: &RequestFile, viewer: &User) -> Decision {
    let current: Vec<&str> = request
        .submitted_reviews
        .keys()
        .map(String::as_str)
        .collect();
    let previous: Vec<&str> = request.turn_reviewers.iter().map(String::as_str).collect();
    let raw = match request.status.phase() {
        ReviewTurnPhase::Independent => Decision::Incomplete,
        ReviewTurnPhase::Consolidating => {
            if viewer.can_review_request(request) {
                decision(file, &current)
            } else {
                Decision::Incomplete
            }
        }
        ReviewTurnPhase::Complete => decision(file, &current),
        ReviewTurnPhase::Author => decision(file, &previous),
    };
    if raw == Decision::Conflicted && !viewer.can_review_request(request) {
        return Decision::ChangesRequested;
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{FileReview, FileType};
    use std::collections::BTreeMap;

    fn file_with(votes: &[(&str, Vote)]) -> RequestFile {
        RequestFile {
            relpath: "output/a.csv".to_string(),
            group: "g".to_string(),
            file_id: String::new(),
            filetype: FileType::Output,
            timestamp: 0,
            size: 0,
            job_id: String::new(),
            commit: String::new(),
            repo: String::new(),
            row_count: None,
            col_count: None,
            released_at: None,
            released_by: None,
            uploaded: false,
            uploaded_at: None,
            upload_attempts: 0,
            upload_attempted_at: None,
            reviews: votes
                .iter()
                .map(|(reviewer, vote)| {
                    (
                        reviewer.to_string(),
                        FileReview {
                            reviewer: reviewer.to_string(),
                            vote: *vote,
                            review_turn: 1,
                            created_at: 0,
                            updated_at: 0,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    // C1 #11 and #12.
    #[test]
    fn decisions_from_submitted_votes() {
        use Vote::*;
        type Case<'a> = (&'a [(&'a str, Vote)], &'a [&'a str], Decision);
        let cases: &[Case<'_>] = &[
            (
                &[("a", Approved), ("b", Approved)],
                &["a", "b"],
                Decision::Approved,
            ),
            (
                &[("a", ChangesRequested), ("b", ChangesRequested)],
                &["a", "b"],
                Decision::ChangesRequested,
            ),
            (
                &[("a", Approved), ("b", ChangesRequested)],
                &["a", "b"],
                Decision::Conflicted,
            ),
            // Votes exist but only one review is submitted.
            (
                &[("a", Approved), ("b", Approved)],
                &["a"],
                Decision::Incomplete,
            ),
            (&[], &["a", "b"], Decision::Incomplete),
            // A third reviewer breaks a conflict only once submitted.
            (
                &[("a", Approved), ("b", ChangesRequested), ("c", Approved)],
                &["a", "b"],
                Decision::Conflicted,
            ),
            (
                &[("a", Approved), ("b", ChangesRequested), ("c", Approved)],
                &["a", "b", "c"],
                Decision::Approved,
            ),
        ];
        for (votes, reviewers, expected) in cases {
            assert_eq!(
                decision(&file_with(votes), reviewers),
                *expected,
                "{votes:?} {reviewers:?}"
            );
        }
    }
}
