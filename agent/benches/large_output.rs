//! Finalize throughput for one large output: a job writes `RAP_BENCH_OUTPUT_MIB` MiB (default
//! 1024) of zeros with `dd`, then only the finalize step is timed (match the output, copy it to
//! the high-privacy workspace, hash it for the manifest, write logs and metadata). Prints MiB/s
//! and how much the process's peak resident memory grew during finalize: outputs are copied and
//! hashed in a streaming way, so that growth must stay small whatever the file's size.
//!
//! Peak memory is Linux's `VmHWM`, reset to the current resident size just before finalize by
//! writing `5` to `/proc/self/clear_refs`.
//!
//! Run: `cargo bench -p rap-agent --bench large_output` (needs the Docker engine,
//! `scripts/test-images` and twice the output size free on the temp directory's disk).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{executor, make_repo, new_job, output, unique_id};
use rap_agent::executor::Executor;
use rap_agent::job::Privacy;
use rap_agent::layout::Layout;

/// A `kB` field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/self/status"))?;
    let kib = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let size_mib: u64 = std::env::var("RAP_BENCH_OUTPUT_MIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir()?;
    let (repo, commit) = make_repo(dir.path(), &[("project.yaml", "version: '4.0'\n")]);
    let work = dir.path().join("work");
    let executor = executor(&work).await;
    let mut job = new_job(
        &unique_id("bench-large"),
        &repo,
        &commit,
        &format!("mkdir -p output && dd if=/dev/zero of=output/large.bin bs=1M count={size_mib}"),
    );
    job.memory_limit = Some(1024 * 1024 * 1024);
    job.output_spec = vec![output("output/large.bin", Privacy::HighlySensitive)];
    executor.prepare(&job).await?;
    executor.execute(&job).await?;
    executor.wait_for_exit(&job).await?;

    std::fs::write("/proc/self/clear_refs", "5")?;
    let resident_before = status_kib("VmRSS:")?;
    let started = Instant::now();
    let status = executor.finalize(&job, false, None).await?;
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:")?;
    executor.cleanup(&job).await?;

    let record = status
        .metadata
        .ok_or_else(|| anyhow::anyhow!("finalize wrote no metadata"))?;
    anyhow::ensure!(record.exit_code == Some(0), "the job failed: {record:?}");
    let filed = Layout::new(work)
        .high_workspace(&job)
        .join("output/large.bin");
    let filed_bytes = std::fs::metadata(&filed)?.len();
    anyhow::ensure!(
        filed_bytes == size_mib * 1024 * 1024,
        "filed {filed_bytes} bytes"
    );
    println!("output: {size_mib} MiB, one file, highly sensitive");
    println!(
        "finalize: {:.2} s, {:.0} MiB/s",
        elapsed.as_secs_f64(),
        size_mib as f64 / elapsed.as_secs_f64()
    );
    println!(
        "peak RSS during finalize: {:.1} MiB (resident before: {:.1} MiB, growth {:.1} MiB)",
        peak as f64 / 1024.0,
        resident_before as f64 / 1024.0,
        peak.saturating_sub(resident_before) as f64 / 1024.0
    );
    Ok(())
}
