//! The medium-privacy tree the agent writes, read-only (spec B1, B8): workspaces with a
//! `metadata/manifest.json`, the outputs it lists, and the rules for which paths are safe to
//! open and which files may go on a request.
//!
//! Invariant: every path handed to the file system is built by [`Workspaces::resolve`], which
//! refuses absolute paths, `..`, and any symlink on the way, so nothing outside
//! `<medium_privacy>/workspaces/<workspace>/` is ever read.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;

/// File extensions that may be requested for release (the reference's `LEVEL4_FILE_TYPES`).
pub const ALLOWED_FILE_TYPES: [&str; 11] = [
    ".csv", ".jpg", ".jpeg", ".png", ".svg", ".svgz", ".html", ".txt", ".log", ".json", ".md",
];

/// The medium-privacy workspaces directory. Clones share the parsed manifests.
#[derive(Debug, Clone)]
pub struct Workspaces {
    root: PathBuf,
    /// Parsed manifests by workspace, each with the size and modification time of the file it
    /// came from: a workspace of 10,000 outputs has a manifest of megabytes, which every page
    /// would otherwise parse again.
    manifests: Arc<Mutex<ManifestCache>>,
}

/// Parsed manifests by workspace, with the stamp of the file each was read from.
type ManifestCache = HashMap<String, (FileStamp, Arc<Manifest>)>;

/// What tells a changed file from the one read before: its inode (a file replaced by a
/// rename), size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    pub(crate) fn of(metadata: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }

    /// Whether what was read under this stamp may be cached. Modification times advance in
    /// clock ticks of a few milliseconds, so a file rewritten in place within the tick it was
    /// read in, to the same size, would keep its stamp; a file modified in the last second is
    /// therefore read afresh every time (git's "racy clean" rule).
    pub(crate) fn is_settled(&self) -> bool {
        self.modified
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age >= std::time::Duration::from_secs(1))
    }
}

/// Why a workspace path could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("invalid workspace name {0:?}")]
    InvalidWorkspace(String),
    #[error("path {0:?} is not inside the workspace")]
    Escapes(String),
    #[error("path {0:?} is a symbolic link")]
    Symlink(String),
    #[error("{0:?} does not exist")]
    NotFound(String),
    #[error("workspace {0:?} has no manifest")]
    NoManifest(String),
    #[error("manifest of workspace {workspace:?} is not valid: {source}")]
    BadManifest {
        workspace: String,
        source: serde_json::Error,
    },
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One output in the manifest (field names as the agent writes them).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ManifestEntry {
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub job_id: String,
    #[serde(default)]
    pub job_request: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub timestamp: f64,
    #[serde(default)]
    pub content_hash: String,
    #[serde(default)]
    pub excluded: bool,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub row_count: Option<u64>,
    #[serde(default)]
    pub col_count: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub out_of_date_action: bool,
    #[serde(default)]
    pub out_of_date_output: bool,
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    #[serde(default)]
    outputs: BTreeMap<String, ManifestEntry>,
}

/// A workspace's manifest, keyed by the path a user sees.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Visible outputs by visible path (an excluded output is shown as `<path>.txt`).
    pub outputs: BTreeMap<String, ManifestEntry>,
}

/// An entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub relpath: String,
    pub is_dir: bool,
}

impl Workspaces {
    /// The tree at `<medium_privacy>/workspaces`.
    pub fn new(root: &Path) -> Workspaces {
        Workspaces {
            root: root.to_path_buf(),
            manifests: Arc::default(),
        }
    }

    /// Names of workspace directories that hold a manifest.
    ///
    /// # Errors
    /// The root cannot be read.
    pub fn list(&self) -> Result<Vec<String>, PathError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PathError::Io {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| validate_workspace_name(name).is_ok())
            .filter(|name| {
                self.root
                    .join(name)
                    .join("metadata/manifest.json")
                    .is_file()
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn workspace_dir(&self, workspace: &str) -> Result<PathBuf, PathError> {
        validate_workspace_name(workspace)?;
        let dir = self.root.join(workspace);
        let metadata =
            fs::symlink_metadata(&dir).map_err(|_| PathError::NotFound(workspace.to_string()))?;
        if metadata.file_type().is_symlink() {
            return Err(PathError::Symlink(workspace.to_string()));
        }
        Ok(dir)
    }

    /// The on-disk path of `relpath` in `workspace`, refusing anything that could leave the
    /// workspace: absolute paths, `..`, and symlinks at any level.
    ///
    /// # Errors
    /// [`PathError::Escapes`], [`PathError::Symlink`] or [`PathError::NotFound`].
    pub fn resolve(&self, workspace: &str, relpath: &str) -> Result<PathBuf, PathError> {
        let mut path = self.workspace_dir(workspace)?;
        if relpath.is_empty() {
            return Ok(path);
        }
        for component in Path::new(relpath).components() {
            match component {
                Component::Normal(part) => path.push(part),
                Component::CurDir => {}
                _ => return Err(PathError::Escapes(relpath.to_string())),
            }
            let metadata = fs::symlink_metadata(&path)
                .map_err(|_| PathError::NotFound(relpath.to_string()))?;
            if metadata.file_type().is_symlink() {
                return Err(PathError::Symlink(relpath.to_string()));
            }
        }
        Ok(path)
    }

    /// The workspace's manifest, parsed again only when the file changed (a new run).
    ///
    /// # Errors
    /// [`PathError::NoManifest`] when missing, [`PathError::BadManifest`] when malformed.
    pub fn manifest(&self, workspace: &str) -> Result<Arc<Manifest>, PathError> {
        let path = self
            .resolve(workspace, "metadata/manifest.json")
            .map_err(|_| PathError::NoManifest(workspace.to_string()))?;
        let io_error = |source| PathError::Io {
            path: path.clone(),
            source,
        };
        let metadata = fs::metadata(&path).map_err(io_error)?;
        let stamp = FileStamp::of(&metadata);
        // A poisoned lock only means a panic elsewhere mid-insert; the map is a cache.
        let cached = match self.manifests.lock() {
            Ok(manifests) => manifests.get(workspace).cloned(),
            Err(poisoned) => poisoned.into_inner().get(workspace).cloned(),
        };
        if let Some((cached_stamp, manifest)) = cached
            && cached_stamp == stamp
        {
            return Ok(manifest);
        }
        let manifest = Arc::new(parse_manifest(workspace, &path)?);
        if !stamp.is_settled() {
            return Ok(manifest);
        }
        let mut manifests = match self.manifests.lock() {
            Ok(manifests) => manifests,
            Err(poisoned) => poisoned.into_inner(),
        };
        manifests.insert(workspace.to_string(), (stamp, Arc::clone(&manifest)));
        Ok(manifest)
    }

    /// The entries of a directory in the workspace, directories first. Files under
    /// `metadata/` and files listed in the manifest are shown; other files are not.
    ///
    /// # Errors
    /// The path is unsafe or unreadable.
    pub fn list_dir(
        &self,
        workspace: &str,
        relpath: &str,
        manifest: &Manifest,
    ) -> Result<Vec<DirEntry>, PathError> {
        let dir = self.resolve(workspace, relpath)?;
        let entries = fs::read_dir(&dir).map_err(|source| PathError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut listing = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_symlink() {
                continue;
            }
            let child = if relpath.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", relpath.trim_end_matches('/'))
            };
            let is_dir = file_type.is_dir();
            let shown =
                is_dir || child.starts_with("metadata/") || manifest.outputs.contains_key(&child);
            if shown {
                listing.push(DirEntry {
                    name,
                    relpath: child,
                    is_dir,
                });
            }
        }
        listing.sort_by(|a, b| (!a.is_dir, &a.name).cmp(&(!b.is_dir, &b.name)));
        Ok(listing)
    }
}

/// Reads and parses the manifest at `path`, keeping the outputs users may see.
fn parse_manifest(workspace: &str, path: &Path) -> Result<Manifest, PathError> {
    let bytes = fs::read(path).map_err(|source| PathError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: ManifestFile =
        serde_json::from_slice(&bytes).map_err(|source| PathError::BadManifest {
            workspace: workspace.to_string(),
            source,
        })?;
    let outputs = file
        .outputs
        .into_iter()
        .filter(|(_, entry)| entry.level == "moderately_sensitive" && !entry.out_of_date_output)
        .map(|(path, entry)| {
            let visible = if entry.excluded {
                format!("{path}.txt")
            } else {
                path
            };
            (visible, entry)
        })
        .collect();
    Ok(Manifest { outputs })
}

/// A workspace name is one plain path component.
///
/// # Errors
/// [`PathError::InvalidWorkspace`] otherwise.
pub fn validate_workspace_name(name: &str) -> Result<(), PathError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        return Ok(());
    }
    Err(PathError::InvalidWorkspace(name.to_string()))
}

/// Whether a file of this name may go on a request: an allowed extension and no leading dot.
pub fn is_valid_file_type(relpath: &str) -> bool {
    let Some(name) = Path::new(relpath)
        .file_name()
        .and_then(|name| name.to_str())
    else {
        return false;
    };
    if name.starts_with('.') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    ALLOWED_FILE_TYPES
        .iter()
        .any(|suffix| lower.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Workspaces) {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("workspaces/ws");
        fs::create_dir_all(ws.join("metadata")).unwrap();
        fs::create_dir_all(ws.join("output")).unwrap();
        fs::write(ws.join("output/a.csv"), "a,b\n1,2\n").unwrap();
        fs::write(
            ws.join("metadata/manifest.json"),
            r#"{"workspace":"ws","repo":null,"outputs":{
                "output/a.csv":{"level":"moderately_sensitive","job_id":"j1","job_request":"r1","action":"a","repo":"https://github.com/o/r","commit":"abc","size":8,"timestamp":1700000000.5,"content_hash":"h","excluded":false,"message":null,"row_count":1,"col_count":2,"user":"u"},
                "output/b.csv":{"level":"highly_sensitive","content_hash":"h2"},
                "output/c.rds":{"level":"moderately_sensitive","excluded":true,"message":"File type of .rds is not valid level 4 file"},
                "output/old.csv":{"level":"moderately_sensitive","out_of_date_output":true}
            }}"#,
        )
        .unwrap();
        let root = dir.path().join("workspaces");
        (dir, Workspaces::new(&root))
    }

    #[test]
    fn manifest_shows_only_current_moderately_sensitive_outputs() {
        let (_dir, workspaces) = tree();
        let manifest = workspaces.manifest("ws").unwrap();
        let paths: Vec<&str> = manifest.outputs.keys().map(String::as_str).collect();
        assert_eq!(paths, ["output/a.csv", "output/c.rds.txt"]);
        let entry = &manifest.outputs["output/a.csv"];
        assert_eq!(entry.row_count, Some(1));
        assert_eq!(entry.commit.as_deref(), Some("abc"));
        assert_eq!(workspaces.list().unwrap(), ["ws"]);
    }

    #[test]
    fn a_manifest_is_parsed_again_only_when_its_file_changes() {
        let (dir, workspaces) = tree();
        let manifest_path = dir.path().join("workspaces/ws/metadata/manifest.json");
        let a_minute_ago = SystemTime::now() - std::time::Duration::from_secs(60);
        let set_mtime = |when: SystemTime| {
            fs::File::options()
                .write(true)
                .open(&manifest_path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        // Just written: read afresh each time, in case it is rewritten within the same tick.
        let fresh = workspaces.manifest("ws").unwrap();
        assert!(!Arc::ptr_eq(&fresh, &workspaces.manifest("ws").unwrap()));
        set_mtime(a_minute_ago);
        let first = workspaces.manifest("ws").unwrap();
        // A clone (as each request holds) shares the parsed manifest.
        let again = workspaces.clone().manifest("ws").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // A new run rewrites the manifest: the next read sees it.
        fs::write(
            dir.path().join("workspaces/ws/metadata/manifest.json"),
            r#"{"workspace":"ws","repo":null,"outputs":{
                "output/new.csv":{"level":"moderately_sensitive","content_hash":"h3"}
            }}"#,
        )
        .unwrap();
        let changed = workspaces.manifest("ws").unwrap();
        let paths: Vec<&str> = changed.outputs.keys().map(String::as_str).collect();
        assert_eq!(paths, ["output/new.csv"]);
        // A broken manifest is an error, not the stale copy.
        fs::write(
            dir.path().join("workspaces/ws/metadata/manifest.json"),
            "{not json",
        )
        .unwrap();
        assert!(matches!(
            workspaces.manifest("ws"),
            Err(PathError::BadManifest { .. })
        ));
    }

    #[test]
    fn paths_escaping_the_workspace_are_refused() {
        let (dir, workspaces) = tree();
        fs::write(dir.path().join("secret.csv"), "x").unwrap();
        assert!(matches!(
            workspaces.resolve("ws", "../../secret.csv"),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            workspaces.resolve("ws", "/etc/passwd"),
            Err(PathError::Escapes(_))
        ));
        std::os::unix::fs::symlink(
            dir.path().join("secret.csv"),
            dir.path().join("workspaces/ws/output/link.csv"),
        )
        .unwrap();
        assert!(matches!(
            workspaces.resolve("ws", "output/link.csv"),
            Err(PathError::Symlink(_))
        ));
        assert!(matches!(
            workspaces.resolve("..", "x"),
            Err(PathError::InvalidWorkspace(_))
        ));
        assert!(workspaces.resolve("ws", "output/a.csv").is_ok());
        // The listing never shows the symlink.
        let manifest = workspaces.manifest("ws").unwrap();
        let listing = workspaces.list_dir("ws", "output", &manifest).unwrap();
        let names: Vec<&str> = listing.iter().map(|entry| entry.name.as_str()).collect();
        assert_eq!(names, ["a.csv"]);
    }

    #[test]
    fn file_types() {
        for ok in [
            "a.csv",
            "out/b.PNG",
            "c.txt",
            "d.html",
            "e.json",
            "f.md",
            "g.log",
        ] {
            assert!(is_valid_file_type(ok), "{ok}");
        }
        for bad in ["a.foo", ".hidden.csv", "out/.x.txt", "noext", "a.rds", ""] {
            assert!(!is_valid_file_type(bad), "{bad}");
        }
    }
}
