//! Prints the throughput of releasing a 200 MB request to the REAL job server: `rap-jobserver`
//! (seeded with its admin commands, its workspace created through its web forms) serving its
//! ReleaseService over loopback TLS with a certificate minted here. Measured: `release_files`
//! (CreateRelease, then the request marked APPROVED) and one uploader pass streaming every
//! file; the job server verifies each file's sha256 and size before storing it. Sixteen files
//! of 12.5 MB, since the job server refuses files over 16 MiB (spec A10).
//!
//! Needs the release binary: `cargo build --release -p rap-jobserver --bins`, then
//! `cargo bench -p rap-airlock --bench release_upload`. The numbers are printed, never asserted.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use rand::RngCore;
use rap_airlock::jobserver::{JobServer, user_from_pb};
use rap_airlock::request::{FileType, RequestStatus};
use rap_airlock::store::Store;
use rap_airlock::upload::{UploadConfig, release_files, upload_pass};
use rap_airlock::workspace::Workspaces;
use rap_proto::tls;
use sha2::{Digest, Sha256};
use support::real_jobserver::{admin, serve, study_repo};
use tokio::sync::Notify;

const N_FILES: usize = 16;
const FILE_BYTES: usize = 12_500_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let jobserver_dir = dir.path().join("jobserver");
    let data = jobserver_dir.join("data");
    admin(
        &data,
        &[
            "user",
            "add",
            "researcher",
            "--fullname",
            "R",
            "--email",
            "r@example.org",
        ],
        Some("researcher-password"),
    );
    admin(
        &data,
        &[
            "user",
            "add",
            "checker",
            "--fullname",
            "C",
            "--email",
            "c@example.org",
            "--role",
            "OutputChecker",
        ],
        Some("checker-password"),
    );
    admin(&data, &["org", "add", "org", "--name", "Org"], None);
    admin(
        &data,
        &["project", "add", "study", "--name", "Study", "--org", "org"],
        None,
    );
    admin(
        &data,
        &["member", "set", "study", "researcher", "ProjectDeveloper"],
        None,
    );
    let token = admin(&data, &["backend", "add", "test", "--name", "Test"], None);
    for username in ["researcher", "checker"] {
        admin(&data, &["backend", "add-member", "test", username], None);
    }
    let repo_url = study_repo(&dir.path().join("repo"));
    let jobserver = serve(&jobserver_dir, token).await;
    jobserver
        .create_workspace(
            "researcher",
            "researcher-password",
            "study",
            "ws",
            &repo_url,
        )
        .await;

    // The outputs: random bytes, so nothing on the way can shrink them.
    let root = dir.path().join("medium/workspaces");
    let files: Vec<(String, Vec<u8>)> = (0..N_FILES)
        .map(|idx| {
            let mut bytes = vec![0u8; FILE_BYTES];
            rand::rng().fill_bytes(&mut bytes);
            (format!("output/part-{idx:02}.csv"), bytes)
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
        .collect();
    support::write_workspace(&root, "ws", &refs);
    let total_bytes = (N_FILES * FILE_BYTES) as f64;

    let store = Store::open(&dir.path().join("airlock")).expect("the store");
    let workspaces = Workspaces::new(&root);
    let outputs: Vec<(&str, FileType)> = files
        .iter()
        .map(|(path, _)| (path.as_str(), FileType::Output))
        .collect();
    let id = support::requests::reviewed_request(&store, &workspaces, "ws", &outputs);
    let ca_pem = std::fs::read_to_string(&jobserver.ca_path).expect("the CA");
    let link = JobServer::connect_lazy(
        &jobserver.grpc_endpoint,
        Some(tls::tls_client_from_pem(&ca_pem).expect("client TLS")),
        &jobserver.backend_token,
    )
    .expect("a link");
    let releaser = user_from_pb(support::level4("checker", &[], true));
    let config = UploadConfig {
        retry_base: Duration::ZERO,
        retry_cap: Duration::ZERO,
        poll_interval: Duration::from_secs(60),
    };

    let start = Instant::now();
    release_files(&store, &link, &id, &releaser, &Notify::new())
        .await
        .expect("releasing");
    let created = start.elapsed();
    let summary = upload_pass(&store, &link, &config)
        .await
        .expect("an upload pass");
    let total = start.elapsed();
    assert_eq!(summary.uploaded, N_FILES, "{summary:?}");
    assert_eq!(
        store
            .get(&id)
            .expect("reading")
            .expect("the request")
            .status,
        RequestStatus::Released
    );

    // What the job server stored is what was reviewed.
    let stored_root = data.join("releases/ws/releases").join(id.as_str());
    for (path, bytes) in &files {
        let stored = std::fs::read(stored_root.join(path)).expect("a stored file");
        assert_eq!(Sha256::digest(&stored), Sha256::digest(bytes), "{path}");
    }

    let uploads = total - created;
    println!(
        "release of {:.0} MB in {N_FILES} files to rap-jobserver over loopback TLS \
         (sha256 verified by the job server):",
        total_bytes / 1e6
    );
    println!(
        "  CreateRelease and APPROVED: {:>8.1} ms",
        created.as_secs_f64() * 1e3
    );
    println!(
        "  uploads:                    {:>8.1} ms, {:.0} MB/s",
        uploads.as_secs_f64() * 1e3,
        total_bytes / 1e6 / uploads.as_secs_f64()
    );
    println!(
        "  whole release:              {:>8.1} ms, {:.0} MB/s",
        total.as_secs_f64() * 1e3,
        total_bytes / 1e6 / total.as_secs_f64()
    );
    let start = Instant::now();
    for (_, bytes) in &files {
        std::hint::black_box(Sha256::digest(bytes));
    }
    println!(
        "  for scale, sha256 of the same bytes on one core here: {:.0} MB/s",
        total_bytes / 1e6 / start.elapsed().as_secs_f64()
    );
}
