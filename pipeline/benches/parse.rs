//! Parse-and-validate time for a generated 500-action project whose needs form a 500-deep chain
//! plus extra backward edges. Prints mean, p50, p99 and max over many runs (target: well under
//! 10 ms). Run with `cargo bench -p rap-pipeline`.

use std::hint::black_box;
use std::time::{Duration, Instant};

const N_ACTIONS: usize = 500;
const N_RUNS: usize = 300;

/// A deterministic project: action `i` needs `i - 1` (a chain as deep as the project) and up to
/// two earlier actions chosen by a fixed formula; outputs at every level; config on every third.
fn generate_project() -> String {
    let mut doc = String::from("version: '5'\n\nactions:\n");
    for i in 0..N_ACTIONS {
        doc.push_str(&format!("  action_{i}:\n"));
        let (image, command) = match i % 5 {
            0 => (
                "ehrql:v1",
                format!("generate-dataset analysis/d_{i}.py --output output/d_{i}/dataset.csv.gz"),
            ),
            1 => (
                "python:v2",
                format!("python analysis/p_{i}.py --in output/x.csv"),
            ),
            2 => ("r:v2", format!("analysis/r_{i}.R")),
            3 => ("stata-mp:v2", format!("analysis/s_{i}.do 'quoted arg'")),
            _ => (
                "cox-ipw:v0.0.30",
                format!("--df_input=output/in_{i}.feather --exposure=exp"),
            ),
        };
        doc.push_str(&format!("    run: {image} {command}\n"));
        if i > 0 {
            let mut needs = vec![format!("action_{}", i - 1)];
            for k in [i * 7 % i, i * 13 % i] {
                let name = format!("action_{k}");
                if !needs.contains(&name) {
                    needs.push(name);
                }
            }
            doc.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        }
        if i % 3 == 0 && i % 5 != 0 {
            doc.push_str(&format!(
                "    config:\n      groups: [age, sex]\n      threshold: {i}\n      label: \"it's {i}\"\n"
            ));
        }
        doc.push_str("    outputs:\n");
        if i % 5 == 0 {
            doc.push_str(&format!(
                "      highly_sensitive:\n        dataset: output/d_{i}/dataset.csv.gz\n"
            ));
        } else {
            doc.push_str(&format!(
                "      highly_sensitive:\n        data: output/a_{i}/data.feather\n      moderately_sensitive:\n        table: output/a_{i}/table_*.csv\n        plot: output/a_{i}/plot.png\n"
            ));
        }
    }
    doc
}

fn main() {
    let doc = generate_project();
    // Check once, outside the timing, that the project is valid and really is deep.
    let pipeline = match rap_pipeline::load_pipeline(&doc) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            eprintln!("generated project is invalid: {}", error.message());
            std::process::exit(1);
        }
    };
    let depth = pipeline
        .dependency_closure(&format!("action_{}", N_ACTIONS - 1))
        .map_or(0, |closure| closure.len());
    assert_eq!(pipeline.actions().count(), N_ACTIONS);

    // Warm up, then time each run.
    for _ in 0..10 {
        let _ = black_box(rap_pipeline::load_pipeline(black_box(&doc)));
    }
    let mut times: Vec<Duration> = Vec::with_capacity(N_RUNS);
    let mut cpu_times: Vec<Duration> = Vec::with_capacity(N_RUNS);
    for _ in 0..N_RUNS {
        let cpu_before = thread_cpu_time();
        let started = Instant::now();
        let result = rap_pipeline::load_pipeline(black_box(&doc));
        times.push(started.elapsed());
        if let (Some(before), Some(after)) = (cpu_before, thread_cpu_time()) {
            cpu_times.push(after.saturating_sub(before));
        }
        let _ = black_box(result);
    }
    times.sort();
    let total: Duration = times.iter().sum();
    let mean = total / N_RUNS as u32;
    let p50 = times[N_RUNS / 2];
    let p99 = times[(N_RUNS * 99 / 100).min(N_RUNS - 1)];
    let max = times[N_RUNS - 1];
    println!(
        "parse+validate {N_ACTIONS} actions ({} KiB, dependency depth {depth}), {N_RUNS} runs: mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        doc.len() / 1024,
        mean.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );

    // On a shared, loaded machine wall time includes waiting for a core; the thread's own CPU
    // time shows the cost of the work itself.
    // The kernel accounts CPU time in scheduler ticks, so single runs are coarse; the mean over
    // all runs is what this line is for.
    if cpu_times.len() == N_RUNS {
        let total: Duration = cpu_times.iter().sum();
        println!(
            "  thread CPU time per run (mean over {N_RUNS}): {:.3} ms",
            (total / N_RUNS as u32).as_secs_f64() * 1e3,
        );
    }

    // Derived data for every action (what the controller does per request).
    let started = Instant::now();
    let mut n_words = 0;
    for action in pipeline.topological_order() {
        n_words += action.run_command().len() + action.output_spec().len();
    }
    println!(
        "derived data for {N_ACTIONS} actions (topological order, run_command, output_spec): {:.3} ms ({n_words})",
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// This thread's CPU time so far, from Linux's `/proc/thread-self/schedstat` (nanoseconds on a
/// CPU is its first field); `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}
