//! Where the workspace's built binaries are, as ripgrep's tests find `rg`: `RAP_BIN_DIR` if
//! set, else the directory of the running executable and its parent (a test executable sits
//! in `target/<profile>/deps`, the binaries in `target/<profile>`), else `PATH`.
//!
//! The one lookup for every crate's tests and for `rap up`, which starts the binaries built
//! beside it.

use std::fmt;
use std::path::{Path, PathBuf};

/// No executable of that name in any of the places searched.
pub struct BinaryNotFound {
    name: String,
    searched: Vec<PathBuf>,
}

impl fmt::Display for BinaryNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let searched: Vec<String> = self
            .searched
            .iter()
            .map(|dir| dir.display().to_string())
            .collect();
        write!(
            f,
            "cannot find the {} binary (build it: cargo build --bins -p <its crate>); looked in {}",
            self.name,
            searched.join(", ")
        )
    }
}

// Debug is the message, so a test's `.unwrap()` shows what to build and where it looked.
impl fmt::Debug for BinaryNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for BinaryNotFound {}

/// The path of the binary `name`.
///
/// # Errors
/// No executable of that name in any of the places searched; the message lists them.
pub fn find(name: &str) -> Result<PathBuf, BinaryNotFound> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("RAP_BIN_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.to_path_buf());
        if let Some(parent) = dir.parent() {
            candidates.push(parent.to_path_buf());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    match candidates
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
    {
        Some(path) => Ok(path),
        None => Err(BinaryNotFound {
            name: name.to_owned(),
            searched: candidates,
        }),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_executable_on_path_and_names_every_place_it_looked_when_missing() {
        // `sh` is on PATH on every machine the suite runs on.
        let sh = find("sh").unwrap();
        assert!(sh.ends_with("sh") && is_executable(&sh), "{sh:?}");

        let error = find("rap-no-such-binary").unwrap_err().to_string();
        assert!(
            error.starts_with("cannot find the rap-no-such-binary binary (build it: cargo build"),
            "{error}"
        );
        let test_dir = std::env::current_exe().unwrap();
        let test_dir = test_dir.parent().unwrap().display().to_string();
        assert!(error.contains(&test_dir), "{error}");
    }
}
