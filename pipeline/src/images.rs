//! Which images run directly and which name a reusable action (spec §1.11, §1.15).

/// Images the controller runs directly (job-runner's `ALLOWED_IMAGES`).
pub const ALLOWED_IMAGES: [&str; 6] = ["ehrql", "stata-mp", "r", "jupyter", "python", "sqlrunner"];

/// Retired images the local `opensafely` CLI still knows; the controller treats them as
/// reusable-action names, as the reference does (and job-server refuses cohortextractor first).
pub const LEGACY_IMAGES: [&str; 2] = ["cohortextractor", "databuilder"];

/// The GitHub organisation that holds reusable actions.
pub const REUSABLE_ACTIONS_ORG: &str = "opensafely-actions";

/// The image name of `image` or `image:tag`.
fn image_name(image: &str) -> &str {
    image.split_once(':').map_or(image, |(name, _)| name)
}

/// Whether the image (`python` or `python:v2`) is on the controller's allow-list.
pub fn is_allowed_image(image: &str) -> bool {
    ALLOWED_IMAGES.contains(&image_name(image))
}

/// For an image outside the allow-list, the reusable action's repository
/// (`opensafely-actions/<name>`, to be found at `https://github.com/opensafely-actions/<name>`);
/// `None` for an allowed image.
pub fn reusable_action_repo(image: &str) -> Option<String> {
    if is_allowed_image(image) {
        return None;
    }
    Some(format!("{REUSABLE_ACTIONS_ORG}/{}", image_name(image)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_images_run_directly_and_others_are_reusable_actions() {
        for image in ALLOWED_IMAGES {
            assert!(is_allowed_image(image));
            assert_eq!(reusable_action_repo(&format!("{image}:v1")), None);
        }
        assert_eq!(
            reusable_action_repo("cox-ipw:v0.0.30").as_deref(),
            Some("opensafely-actions/cox-ipw")
        );
        assert_eq!(
            reusable_action_repo("cohortextractor").as_deref(),
            Some("opensafely-actions/cohortextractor")
        );
        assert!(!is_allowed_image("pythonx:v1"));
    }
}
