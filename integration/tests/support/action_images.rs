//! The action images (`scripts/action-images`), built once per test process: the script is
//! idempotent and rebuilds only when the `ehrql` binary or the image inputs changed.

use std::path::Path;
use std::sync::OnceLock;

use rap_testkit::binaries;

/// Builds the images unless they are current; panics with the script's error output.
pub async fn action_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| {
        BUILT
            .get_or_init(|| {
                let ehrql = binaries::find("ehrql").map_err(|e| e.to_string())?;
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/action-images");
                let output = std::process::Command::new(script)
                    .arg("--ehrql")
                    .arg(ehrql)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !output.status.success() {
                    return Err(String::from_utf8_lossy(&output.stderr).into_owned());
                }
                Ok(())
            })
            .clone()
    })
    .await
    .unwrap();
    if let Err(error) = result {
        panic!("scripts/action-images failed: {error}");
    }
}
