//! Who may comment with which visibility, and who sees which comment or audit event
//! (spec B7). Blinding lives here: during independent review a reviewer sees only their own
//! current-turn items, and authors never see PRIVATE ones.

use super::status::{RequestStatus, ReviewTurnPhase, StatusOwner};
use super::{ReleaseRequest, Visibility};
use crate::user::User;

/// The visibilities `user` may write on `request`.
pub fn writable_visibilities(user: &User, request: &ReleaseRequest) -> &'static [Visibility] {
    if user.username == request.author
        || !user.output_checker
        || request.status.owner() == StatusOwner::Author
    {
        return &[Visibility::Public];
    }
    &[Visibility::Private, Visibility::Public]
}

/// Whether `user` may create (or delete/publish their own) comments on `request` now.
pub fn can_comment(user: &User, request: &ReleaseRequest) -> bool {
    if !user.can_view_workspace(&request.workspace) {
        return false;
    }
    if !user.has_role_on_workspace(&request.workspace) {
        return user.output_checker && request.status.is_under_review();
    }
    if !user.can_review_request(request) {
        return request.status.is_editable();
    }
    !request.status.is_final() && request.status != RequestStatus::Approved
}

/// Whether `viewer` sees an item (comment or audit event) with these properties.
pub fn is_visible(
    viewer: &User,
    request: &ReleaseRequest,
    item_author: &str,
    item_turn: u32,
    visibility: Visibility,
    hidden: bool,
) -> bool {
    if hidden {
        return false;
    }
    if item_author == viewer.username {
        return true;
    }
    let previous_turn = item_turn < request.review_turn;
    let phase = request.status.phase();
    match visibility {
        Visibility::Public => {
            previous_turn
                || phase == ReviewTurnPhase::Complete
                || (phase == ReviewTurnPhase::Consolidating && viewer.can_review_request(request))
        }
        Visibility::Private => {
            viewer.can_review_request(request)
                && (previous_turn
                    || phase == ReviewTurnPhase::Complete
                    || phase != ReviewTurnPhase::Independent)
        }
    }
}
