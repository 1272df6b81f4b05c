//! Where the RAP's binaries are: `RAP_BIN_DIR` if set, else the directory of the running
//! executable and its parent (a test executable sits in `target/<profile>/deps`, the binaries
//! in `target/<profile>`), else `PATH`, as ripgrep's tests find `rg`.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The path of the binary `name`.
///
/// # Errors
/// No executable of that name in any of the places searched; the message lists them.
pub fn find(name: &str) -> anyhow::Result<PathBuf> {
    let mut searched = Vec::new();
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
    for dir in candidates {
        let path = dir.join(name);
        if is_executable(&path) {
            return Ok(path);
        }
        searched.push(dir.display().to_string());
    }
    bail!(
        "cannot find the {name} binary (build it: cargo build -p <crate> --bins); looked in {}",
        searched.join(", ")
    )
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
