//! Controller benchmarks: prints numbers, asserts nothing.
//!
//! - dispatch latency: SubmitJob call → RUNJOB task received by a connected agent (p50/p99);
//! - SubmitJob throughput for a 5-action pipeline (`run_all`), several requests in flight;
//! - restart time with 100,000 stored jobs (open the store, start the actors, serve).
//!
//! Run with `cargo bench -p rap-controller --bench controller`; add `-- NAME` to run only the
//! benches whose name contains NAME (`dispatch`, `submit`, `restart`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use rap_controller::jobs::create::{CreateOutcome, SubmitFields, create_jobs, validate_request};
use rap_controller::jobs::project::Project;
use rap_controller::jobs::state::{State, StatusCode};
use rap_controller::store::{Store, WriteBatch};
use rap_proto::pb::rap::v1 as pb;

/// CPU time this process has used (user + system), from `/proc/self/stat`: on a shared machine
/// wall-clock throughput says more about the neighbours than about us.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime the
    // 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn roomy(config: &mut rap_controller::config::Config) {
    for backend in &mut config.backends {
        backend.max_workers = 1_000_000.0;
        backend.max_db_workers = Some(1_000_000.0);
    }
    config.scheduler_interval_ms = 5_000;
}

async fn dispatch_latency(n: usize) {
    let setup = Setup::new(roomy).await;
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    let mut agent =
        TestAgent::connect(setup.agent_pem("test"), controller.agent_addr, "bench").await;
    let mut latencies = Vec::with_capacity(n);
    let mut after_ack = Vec::with_capacity(n);
    for i in 0..n {
        let mut request = submit_request(&setup, &format!("{i:016}"), &["solo"]);
        request.workspace = format!("ws{i}");
        let start = Instant::now();
        client
            .submit_job(authed(CLIENT_TOKEN, request))
            .await
            .unwrap();
        let acked = Instant::now();
        agent.next_task().await;
        latencies.push(start.elapsed());
        after_ack.push(acked.elapsed());
    }
    latencies.sort();
    after_ack.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "dispatch (SubmitJob call -> task at agent), {n} requests: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
    println!(
        "dispatch (SubmitJob acknowledged -> task at agent): p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&after_ack, 0.5)),
        ms(percentile(&after_ack, 0.99)),
    );
    controller.stop().await;
}

async fn submit_throughput(n: usize, in_flight: usize) {
    let setup = Setup::new(roomy).await;
    let controller = Controller::start(&setup).await;
    let client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    // Warm the git cache.
    let mut warm = client.clone();
    warm.submit_job(authed(
        CLIENT_TOKEN,
        submit_request(&setup, "warmwarmwarmwarm", &["solo"]),
    ))
    .await
    .unwrap();
    let start = Instant::now();
    let cpu_start = process_cpu();
    let mut tasks = Vec::new();
    for worker in 0..in_flight {
        let mut client = client.clone();
        let template = submit_request(&setup, "x", &["run_all"]);
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < n {
                let mut request = template.clone();
                request.rap_id = format!("{i:016}");
                request.workspace = format!("ws{i}");
                let response = client
                    .submit_job(authed(CLIENT_TOKEN, request))
                    .await
                    .unwrap();
                assert_eq!(response.into_inner().count, 5);
                i += in_flight;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu() - cpu_start;
    println!(
        "SubmitJob, 5-action pipeline, {n} requests, {in_flight} in flight: {:.0} requests/s ({:.0} jobs/s); \
         CPU (controller and client together) {:.2} ms per request, {:.1} of 2 cores busy",
        n as f64 / elapsed.as_secs_f64(),
        5.0 * n as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / n as f64,
        cpu.as_secs_f64() / elapsed.as_secs_f64(),
    );
    controller.stop().await;
}

async fn restart_time(total: usize, active: usize) {
    let setup = Setup::new(|_| {}).await;
    let project = Project::parse(PROJECT_YAML).unwrap();
    let rules = setup.config.request_rules();
    {
        let store = Store::open(&setup.config.data_dir.join("db")).unwrap();
        let mut batch = WriteBatch::default();
        for i in 0..total {
            let request = validate_request(
                SubmitFields {
                    rap_id: format!("{i:016}"),
                    backend: "test".into(),
                    workspace: format!("ws{}", i % 1000),
                    repo_url: setup.repo_url(),
                    branch: "main".into(),
                    commit: setup.commit.clone(),
                    database_name: "default".into(),
                    requested_actions: vec!["solo".into()],
                    codelists_ok: true,
                    ..Default::default()
                },
                &rules,
            )
            .unwrap();
            let CreateOutcome::Created(mut jobs) = create_jobs(
                &request,
                &project,
                &Default::default(),
                &rules,
                1_000_000_000 * i as i64,
            )
            .unwrap() else {
                panic!()
            };
            if i >= active {
                for job in &mut jobs {
                    job.status.state = State::Succeeded;
                    job.status.status_code = StatusCode::Succeeded;
                }
            }
            batch.jobs.extend(jobs);
            if batch.jobs.len() >= 1000 {
                store.write(&batch).unwrap();
                batch = WriteBatch::default();
            }
        }
        store.write(&batch).unwrap();
        store.flush().await.unwrap();
        println!("stored {} jobs", store.job_count());
    }
    let start = Instant::now();
    let controller = Controller::start(&setup).await;
    let mut client = rap_client(&setup.ca_pem, controller.rap_addr).await;
    client
        .get_backend_status(authed(CLIENT_TOKEN, pb::GetBackendStatusRequest {}))
        .await
        .unwrap();
    let serving = start.elapsed();
    let status = client
        .get_job_status(authed(
            CLIENT_TOKEN,
            pb::GetJobStatusRequest {
                rap_ids: vec![format!("{:016}", total - 1)],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.jobs.len(), 1);
    println!(
        "restart with {total} jobs ({active} active): serving after {:.0} ms",
        serving.as_secs_f64() * 1e3
    );
    controller.stop().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench` passes `--bench`; other arguments select benches by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    runtime.block_on(async {
        if selected("dispatch") {
            dispatch_latency(1000).await;
        }
        if selected("submit") {
            submit_throughput(2000, 16).await;
        }
        if selected("restart") {
            restart_time(100_000, 1000).await;
        }
    });
}
