//! Output path patterns: the reference's safety rules for a pattern (spec §1.9) and matching a
//! relative path against one, where `*` stays within one path segment (the agent's rule: `*`
//! becomes `[^/]*` in an anchored match, every other character is literal).
//!
//! The agent uses [`matches()`] to find a job's outputs and [`check_pattern`] to refuse a pattern
//! before touching the disk, whatever the file said; validation uses [`check_output_pattern`].

use std::fmt;

use crate::model::Privacy;
use crate::paths;

/// File types a `moderately_sensitive` output may have (spec §1.5), sorted.
pub const LEVEL4_FILE_TYPES: [&str; 11] = [
    ".csv", ".html", ".jpeg", ".jpg", ".json", ".log", ".md", ".png", ".svg", ".svgz", ".txt",
];

/// Why a pattern is refused. `Display` gives the reference's reason text, which validation puts
/// after `Output path <pattern> is invalid: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPattern {
    /// The pattern contains `\`.
    #[error("contains back slashes (use forward slashes only)")]
    BackSlash,
    /// The pattern uses `**`, `?` or `[`: only `*` is supported.
    #[error("contains '{0}' (only the * wildcard character is supported)")]
    UnsupportedWildcard(&'static str),
    /// The last path component has no suffix, or its suffix ends in `*`.
    #[error("output paths must have a file type extension at the end")]
    NoFileExtension,
    /// A `moderately_sensitive` pattern's suffix is not in [`LEVEL4_FILE_TYPES`]. Holds the
    /// pattern in normalised form, as the reference prints it.
    #[error("{0} is not an allowed file type for moderately_sensitive outputs")]
    NotLevel4FileType(String),
    /// The pattern differs from its normalised form (`//`, `.`, `..`, a trailing `/`).
    #[error("is not in standard form (contains double slashes or '..' elements)")]
    NotStandardForm,
    /// The pattern is, or is under, `metadata/`, where logs and the manifest live.
    #[error("should not include the metadata directory")]
    MetadataDirectory,
    /// The pattern is absolute in POSIX (`/x`) or Windows (`c:/x`) terms.
    #[error("is an absolute path")]
    AbsolutePath,
}

/// Whether the relative `path` (with `/` separators) matches `pattern`, where `*` matches any run
/// of characters other than `/` and everything else matches itself. The whole path must match.
pub fn matches(pattern: &str, path: &str) -> bool {
    let pattern_segments: Vec<&str> = pattern.split('/').collect();
    let path_segments: Vec<&str> = path.split('/').collect();
    pattern_segments.len() == path_segments.len()
        && pattern_segments
            .iter()
            .zip(&path_segments)
            .all(|(p, s)| segment_matches(p, s))
}

/// Whether `path`, a file path relative to a workspace (such as a file an output pattern
/// matched), is safe to join onto the workspace directory: not empty, relative in POSIX and
/// Windows terms, with no empty, `.` or `..` components, no backslash and no NUL.
///
/// Unlike [`check_pattern`] this accepts any file name a pattern can match (`a[1].csv`, `.csv`,
/// names without an extension): use it for paths, and `check_pattern` for patterns.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !is_windows_absolute(path)
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Checks the privacy-independent rules of spec §1.9 (all but the file-type list), in the
/// reference's order: no `\`, only `*` wildcards, a file extension, standard form (so no `..`),
/// not under `metadata/`, not absolute.
///
/// # Errors
/// The first rule the pattern breaks.
pub fn check_pattern(pattern: &str) -> Result<(), InvalidPattern> {
    check(pattern, None)
}

/// Checks every rule of spec §1.9 for an output at `privacy`, in the reference's order.
///
/// # Errors
/// The first rule the pattern breaks.
pub fn check_output_pattern(pattern: &str, privacy: Privacy) -> Result<(), InvalidPattern> {
    check(pattern, Some(privacy))
}

fn check(pattern: &str, privacy: Option<Privacy>) -> Result<(), InvalidPattern> {
    if pattern.contains('\\') {
        return Err(InvalidPattern::BackSlash);
    }
    for wildcard in ["**", "?", "["] {
        if pattern.contains(wildcard) {
            return Err(InvalidPattern::UnsupportedWildcard(wildcard));
        }
    }
    let suffix = paths::suffix_of(pattern);
    if suffix.is_empty() || suffix.ends_with('*') {
        return Err(InvalidPattern::NoFileExtension);
    }
    if privacy == Some(Privacy::ModeratelySensitive) && !LEVEL4_FILE_TYPES.contains(&suffix) {
        let normalised = paths::PurePosixPath::new(pattern).to_string();
        return Err(InvalidPattern::NotLevel4FileType(normalised));
    }
    // The reference only compares with the normalised form, which keeps a leading `..`
    // (`../a.csv`); we also refuse any `..` component (a documented difference).
    if !is_standard_form(pattern) {
        return Err(InvalidPattern::NotStandardForm);
    }
    if pattern == "metadata" || pattern.starts_with("metadata/") {
        return Err(InvalidPattern::MetadataDirectory);
    }
    if pattern.starts_with('/') || is_windows_absolute(pattern) {
        return Err(InvalidPattern::AbsolutePath);
    }
    Ok(())
}

/// Whether the pattern equals its `posixpath.normpath` and has no `..` component. Most patterns
/// are plain relative paths, decided without allocating.
fn is_standard_form(pattern: &str) -> bool {
    let plain_relative = !pattern.starts_with('/')
        && pattern
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    plain_relative
        || (paths::normpath(pattern) == pattern && pattern.split('/').all(|part| part != ".."))
}

/// Windows calls a path absolute when it has a drive (`X:`, any character before the colon) and
/// a root after it. Backslashes were refused earlier, so the root is `/`; UNC paths start with
/// `/` and were caught by the POSIX test.
fn is_windows_absolute(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    chars.next().is_some() && chars.next() == Some(':') && chars.next() == Some('/')
}

/// `*`-only wildcard match within one segment: the classic greedy match with backtracking to the
/// last star, linear in practice and never exponential.
fn segment_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

impl fmt::Display for Privacy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_within_one_segment() {
        assert!(matches("output/*.csv", "output/a.csv"));
        assert!(matches("output/*.csv", "output/.csv"));
        assert!(!matches("output/*.csv", "output/sub/a.csv"));
        assert!(matches("output/*/a.csv", "output/sub/a.csv"));
        assert!(!matches("output/*/a.csv", "output/a.csv"));
        assert!(matches("output/table_*_*.csv", "output/table_1_2.csv"));
        assert!(!matches("output/a.csv", "output/a.csvx"));
        assert!(!matches("output/a.csv", "output/aXcsv"));
        assert!(matches("output/a?.csv", "output/a?.csv"));
        assert!(!matches("output/a?.csv", "output/ab.csv"));
        assert!(matches("*", "anything"));
        assert!(!matches("*", "a/b"));
    }

    #[test]
    fn star_matching_is_not_exponential() {
        let pattern = "*a".repeat(30) + "b";
        let text = "a".repeat(3000);
        assert!(!matches(&pattern, &text));
    }

    #[test]
    fn is_safe_path_accepts_matched_files_and_refuses_escapes() {
        for path in [
            "output/a.csv",
            "output/a[1].csv",
            "output/.csv",
            "README",
            "a/b/c",
        ] {
            assert!(is_safe_path(path), "{path}");
        }
        for path in [
            "",
            "/etc/passwd",
            "../a.csv",
            "a/../../b",
            "a//b",
            "./a",
            "a/",
            "c:/x",
            "a\\b",
            "a\0b",
        ] {
            assert!(!is_safe_path(path), "{path:?}");
        }
    }

    #[test]
    fn check_pattern_refuses_unsafe_patterns() {
        assert_eq!(check_pattern("output/a.csv"), Ok(()));
        assert_eq!(
            check_pattern("../a.csv"),
            Err(InvalidPattern::NotStandardForm)
        );
        assert_eq!(
            check_pattern("/etc/a.csv"),
            Err(InvalidPattern::AbsolutePath)
        );
        assert_eq!(check_pattern("c:/a.csv"), Err(InvalidPattern::AbsolutePath));
        assert_eq!(
            check_pattern("metadata/a.csv"),
            Err(InvalidPattern::MetadataDirectory)
        );
        assert_eq!(check_pattern("a\\b.csv"), Err(InvalidPattern::BackSlash));
        assert_eq!(
            check_pattern("a/**/b.csv"),
            Err(InvalidPattern::UnsupportedWildcard("**"))
        );
        assert_eq!(check_pattern("a.*"), Err(InvalidPattern::NoFileExtension));
        assert_eq!(check_pattern(".csv"), Err(InvalidPattern::NoFileExtension));
        assert_eq!(
            check_output_pattern("a.feather", Privacy::ModeratelySensitive),
            Err(InvalidPattern::NotLevel4FileType("a.feather".into()))
        );
        assert_eq!(
            check_output_pattern("a.feather", Privacy::HighlySensitive),
            Ok(())
        );
    }
}
