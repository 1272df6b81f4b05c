//! Prints how long the file browser takes to list a workspace of 10,000 outputs, and how long
//! the viewer takes to show the first page of a 100 MB CSV, each measured as a whole page
//! request through the web app (`oneshot`, signed in; manifest read, listing or paging, and
//! rendering included). Run with `cargo bench -p rap-airlock --bench browse`; the numbers are
//! printed, never asserted. Files are freshly written, so the page cache is warm.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rap_airlock::config::Config;
use rap_airlock::server::state_from_config;
use rap_airlock::web;
use support::pages::Browser;

const N_FILES: usize = 10_000;
const CSV_BYTES: usize = 100 * 1_000_000;
const RUNS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("medium/workspaces");

    let many: Vec<(String, Vec<u8>)> = (0..N_FILES)
        .map(|idx| {
            (
                format!("output/table-{idx:05}.csv"),
                format!("group,count\nA,{idx}\n").into_bytes(),
            )
        })
        .collect();
    let many_refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
        .collect();
    support::write_workspace(&root, "many", &many_refs);

    let large = large_csv();
    support::write_workspace(&root, "big", &[("output/large.csv", &large)]);
    println!(
        "workspace 'many': {N_FILES} outputs in output/; workspace 'big': one CSV of {:.1} MB",
        large.len() as f64 / 1e6
    );
    drop(large);

    let server = support::start().await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).expect("writing the CA");
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nmedium_privacy_dir = {:?}\ndata_dir = {:?}\njobserver_endpoint = {:?}\njobserver_ca = {:?}\njobserver_token = {:?}\nsecure_cookies = false\n",
        dir.path().join("medium"),
        dir.path().join("data"),
        server.endpoint,
        ca,
        support::TOKEN
    );
    let config = Config::parse(&toml, std::path::Path::new("bench.toml"), |_| None)
        .expect("a valid configuration");
    let state = state_from_config(&config).expect("the app state");
    let app = web::app(state);
    let browser = support::pages::sign_in(
        &app,
        &server.fake,
        support::level4("researcher", &["many", "big"], false),
    )
    .await;

    measure(
        &app,
        &browser,
        "list output/ (10,000 files)",
        "/workspaces/view/many/output/",
        "table-09999.csv",
    )
    .await;
    measure(
        &app,
        &browser,
        "workspace root of 'many'",
        "/workspaces/view/many/",
        "output",
    )
    .await;
    measure(
        &app,
        &browser,
        "one file's page in 'many'",
        "/workspaces/view/many/output/table-05000.csv",
        "table-05000.csv",
    )
    .await;
    measure(
        &app,
        &browser,
        "100 MB CSV: file page",
        "/workspaces/view/big/output/large.csv",
        "large.csv",
    )
    .await;
    measure(
        &app,
        &browser,
        "100 MB CSV: first page of rows",
        "/workspaces/content/big/output/large.csv",
        "group-0",
    )
    .await;
}

/// A CSV of about [`CSV_BYTES`] bytes, with a quoted field per row.
fn large_csv() -> Vec<u8> {
    let mut text = String::with_capacity(CSV_BYTES + 100);
    text.push_str("patient_group,region,count,rate,date\n");
    let mut idx = 0usize;
    while text.len() < CSV_BYTES {
        let _ = writeln!(
            text,
            "group-{},\"Region, {}\",{},{:.3},2020-{:02}-{:02}",
            idx % 97,
            idx % 13,
            idx % 500,
            idx as f64 / 7.0,
            idx % 12 + 1,
            idx % 28 + 1
        );
        idx += 1;
    }
    text.into_bytes()
}

/// GETs `path` [`RUNS`] times and prints the first (cold for the app) and median times.
async fn measure(app: &axum::Router, browser: &Browser, label: &str, path: &str, expect: &str) {
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut body_len = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let page = browser.get(app, path).await;
        times.push(start.elapsed());
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains(expect), "{path} lacks {expect}");
        body_len = page.body.len();
    }
    let first = times[0];
    times.sort();
    println!(
        "{label:<34} first {:>8.2} ms, median {:>8.2} ms, min {:>8.2} ms ({RUNS} runs, {:.0} KB page)",
        ms(first),
        ms(times[RUNS / 2]),
        ms(times[0]),
        body_len as f64 / 1e3
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
