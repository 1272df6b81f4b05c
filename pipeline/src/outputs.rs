//! Rules that tie an action's outputs to its command (spec §1.8 steps 8 and 9): the
//! cohortextractor `generate_cohort` rule and the ehrQL `generate-dataset` `--output` rules
//! (§1.10), plus the output directories both the rule and the controller's `--output-dir` use.

use crate::paths::{self, PurePosixPath};

/// Outputs per level (highly, moderately, minimally sensitive), `None` when absent or `null`.
pub(crate) type Levels = [Option<Vec<(String, String)>>; 3];

/// The distinct parent directories of every output pattern, in first-seen order.
pub(crate) fn output_dirs(levels: &Levels) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for (_, pattern) in levels.iter().flatten().flatten() {
        let dir = PurePosixPath::new(pattern).parent().to_string();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// `cohortextractor:<tag> generate_cohort`: exactly one privacy level, and one output directory
/// unless the command names one with `--output-dir`.
pub(crate) fn check_cohortextractor(
    action_id: &str,
    levels: &Levels,
    parts: &[String],
) -> Result<(), String> {
    let n_levels = levels.iter().filter(|level| level.is_some()).count();
    if n_levels != 1 {
        return Err(format!(
            "A `generate_cohort` action must have exactly one output; {action_id} had {n_levels}"
        ));
    }
    let dirs = output_dirs(levels);
    if dirs.len() == 1 {
        return Ok(());
    }
    let has_output_dir = parts
        .iter()
        .any(|part| part == "--output-dir" || part.starts_with("--output-dir="));
    if has_output_dir {
        return Ok(());
    }
    let listed: Vec<String> = dirs.iter().map(|dir| format!(" - {dir}/")).collect();
    Err(format!(
        "generate_cohort command should produce output in only one directory, found {}:\n{}",
        dirs.len(),
        listed.join("\n")
    ))
}

/// `(ehrql|databuilder):<tag> generate[-_]dataset`: only highly sensitive outputs, an `--output`
/// argument, and output patterns that agree with it (§1.10).
pub(crate) fn check_ehrql(
    action_id: &str,
    levels: &Levels,
    parts: &[String],
) -> Result<(), String> {
    // An empty `{}` level is falsy in the reference, so it does not count here.
    let has_other_levels = levels[1..]
        .iter()
        .any(|level| level.as_ref().is_some_and(|outputs| !outputs.is_empty()));
    if has_other_levels {
        return Err(format!(
            "`{action_id}` action uses `generate-dataset` and so all outputs must be labelled `highly_sensitive`"
        ));
    }
    let spec = output_argument(parts).unwrap_or_default();
    if spec.is_empty() {
        return Err(format!(
            "`{action_id}` action does not provide an `--output` argument specifying where the results of `generate-dataset` should be stored"
        ));
    }
    let patterns: Vec<&str> = levels[0]
        .iter()
        .flatten()
        .map(|(_, pattern)| pattern.as_str())
        .collect();
    let (directory, extension) = split_directory_and_extension(spec);
    let matched = if extension.is_empty() {
        patterns.contains(&spec)
    } else {
        let glob = format!("{directory}/*{extension}");
        patterns
            .iter()
            .all(|pattern| paths::fnmatch(pattern, &glob))
    };
    if matched {
        return Ok(());
    }
    let expected = if extension.is_empty() {
        spec.to_owned()
    } else {
        format!("{directory}/:{}", &extension[1..])
    };
    Err(format!(
        "output specification must match the `--output` argument in the `run` command\n              got: {}\nbut was expecting: {expected}",
        patterns.join("                   \n")
    ))
}

/// The value of the first `--output X` or `--output=X` among the words (`X` may be empty).
fn output_argument(parts: &[String]) -> Option<&str> {
    for (i, part) in parts.iter().enumerate() {
        if part == "--output" {
            return Some(parts.get(i + 1).map_or("", String::as_str));
        }
        if let Some(value) = part.strip_prefix("--output=") {
            return Some(value);
        }
    }
    None
}

/// ehrQL's split of an output spec at the last `:` of its final component: `out/t:arrow` and
/// `out/t/:arrow` both mean directory `out/t` and extension `.arrow`; no `:` means no format.
fn split_directory_and_extension(spec: &str) -> (String, String) {
    let path = PurePosixPath::new(spec);
    let name = path.name().to_owned();
    match name.rsplit_once(':') {
        None => (path.to_string(), String::new()),
        Some(("", extension)) => (path.parent().to_string(), format!(".{extension}")),
        Some((stem, extension)) => (path.with_name(stem).to_string(), format!(".{extension}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_directory_and_extension_matches_ehrql() {
        let split = |s: &str| split_directory_and_extension(s);
        assert_eq!(
            split("out/tables:arrow"),
            ("out/tables".into(), ".arrow".into())
        );
        assert_eq!(
            split("out/tables/:arrow"),
            ("out/tables".into(), ".arrow".into())
        );
        assert_eq!(
            split("out/dataset.csv"),
            ("out/dataset.csv".into(), "".into())
        );
        assert_eq!(split(":arrow"), (".".into(), ".arrow".into()));
    }
}
