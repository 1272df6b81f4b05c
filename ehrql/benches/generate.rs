//! `generate-dataset` benchmark: runs the built `ehrql` binary as a child process on generated
//! SQLite databases and prints wall time, CPU time (user + system) and peak memory (max RSS)
//! of each run, read from the child's rusage.
//!
//! Usage: `cargo bench -p ehrql --bench generate [-- --patients N ...] [--large]
//! [--engine sqlite|in_memory|postgres]`. Default: 100,000 patients on the SQLite engine; `--large` adds
//! 1,000,000. Databases are generated once (deterministically) under the target directory.
//! Reference for scale: ehrQL in Python takes ~29 s (typical) and ~78 s (heavy) at 1,000,000
//! patients.

#[path = "../tests/support/mod.rs"]
mod support;
// `--engine postgres` loads each generated database into a fresh database on the server named
// by RAP_TEST_POSTGRES_URL (peak memory is the ehrql process's, not the server's).
#[path = "../tests/postgres_support/mod.rs"]
mod postgres_support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Measurement {
    wall: Duration,
    cpu: Duration,
    peak_rss_mb: f64,
    success: bool,
}

/// Runs `command` and reads its resource usage with `wait4`.
fn measure(command: &mut Command) -> Measurement {
    let started = Instant::now();
    // Reaped by `wait4` below, which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ehrql");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data, so all-zero is a valid value; `wait4` writes into the
    // two out-pointers, which are valid for the duration of the call; the pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, pid, "wait4 failed");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Measurement {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        // Linux reports ru_maxrss in kilobytes.
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}

fn database(dir: &Path, patients: u64) -> PathBuf {
    let path = dir.join(format!("ehrql-bench-{patients}.db"));
    if !path.exists() {
        let started = Instant::now();
        let partial = dir.join(format!("ehrql-bench-{patients}.db.partial"));
        support::generate_database(&partial, patients, 42).expect("generate database");
        fs::rename(&partial, &path).expect("rename database");
        println!(
            "generated {} in {:.1} s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    path
}

/// Counts the table scans in the compiled SQL (`FROM "<table>" AS base`).
fn scans(binary: &str, definition: &Path) -> String {
    let out = Command::new(binary)
        .arg("dump-dataset-sql")
        .arg(definition)
        .output()
        .expect("dump");
    let sql = String::from_utf8_lossy(&out.stdout);
    let mut counts = Vec::new();
    for table in ["practice_registrations", "clinical_events", "medications"] {
        let n = sql.matches(&format!("FROM \"{table}\" AS base")).count();
        if n > 0 {
            counts.push(format!("{table}×{n}"));
        }
    }
    counts.join(" ")
}

/// A fresh PostgreSQL database holding the tables of the SQLite database at `db`. The load
/// runs in a child process (this bench re-run with `--load-into-postgres`): a child's peak RSS
/// starts from its parent's, so the data must never pass through this process.
fn load_postgres(db: &Path) -> postgres_support::TestDatabase {
    let started = Instant::now();
    let database = postgres_support::TestDatabase::create();
    let status = Command::new(std::env::current_exe().expect("bench executable"))
        .arg("--load-into-postgres")
        .arg(db)
        .arg(&database.url)
        .status()
        .expect("spawn loader");
    assert!(status.success(), "loading into PostgreSQL failed");
    println!(
        "loaded {} into PostgreSQL in {:.1} s",
        db.display(),
        started.elapsed().as_secs_f64()
    );
    database
}

fn load_into_postgres(db: &Path, url: &str) {
    let data = ehrql::engines::sqlite::read_database(db).expect("read generated database");
    ehrql::engines::postgres::PostgresEngine::connect(url)
        .expect("connect")
        .load_database(&data)
        .expect("load into PostgreSQL");
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let [_, flag, db, url] = argv.as_slice()
        && flag == "--load-into-postgres"
    {
        load_into_postgres(Path::new(db), url);
        return;
    }
    let mut patients: Vec<u64> = Vec::new();
    let mut engine = "sqlite".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--patients" => patients.push(
                args.next()
                    .and_then(|n| n.parse().ok())
                    .expect("--patients N"),
            ),
            "--large" => patients.push(1_000_000),
            "--engine" => engine = args.next().expect("--engine NAME"),
            _ => {} // cargo passes --bench
        }
    }
    if patients.is_empty() || (patients == [1_000_000]) {
        patients.insert(0, 100_000);
    }
    let binary = env!("CARGO_BIN_EXE_ehrql");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&dir).expect("bench dir");
    let definitions = [
        ("simple", support::simple_definition()),
        ("typical", support::typical_definition()),
        ("heavy", support::heavy_definition()),
    ];
    println!(
        "{:>9} {:>8} {:>10} {:>9} {:>9} {:>10} {:>9}  scans",
        "patients", "def", "engine", "wall s", "cpu s", "peak MB", "rows"
    );
    for n in patients {
        let db = database(&dir, n);
        let postgres = (engine == "postgres").then(|| load_postgres(&db));
        let dsn = match &postgres {
            Some(p) => p.url.clone(),
            None => format!("sqlite:///{}", db.display()),
        };
        for (name, text) in &definitions {
            let def = dir.join(format!("{name}.json"));
            fs::write(&def, text).expect("write definition");
            let output = dir.join(format!("{name}-{n}.csv"));
            let mut command = Command::new(binary);
            command
                .arg("generate-dataset")
                .arg(&def)
                .arg("--dsn")
                .arg(&dsn);
            if postgres.is_none() {
                command.arg("--query-engine").arg(&engine);
            }
            let m = measure(command.arg("--output").arg(&output));
            // Streamed, not read whole: a child's peak RSS starts from this process's RSS when
            // it is spawned, so holding an earlier output here would inflate later readings.
            let rows = fs::File::open(&output)
                .map(|f| BufReader::new(f).lines().count().saturating_sub(1))
                .unwrap_or(0);
            println!(
                "{:>9} {:>8} {:>10} {:>9.2} {:>9.2} {:>10.1} {:>9}  {}{}",
                n,
                name,
                engine,
                m.wall.as_secs_f64(),
                m.cpu.as_secs_f64(),
                m.peak_rss_mb,
                rows,
                scans(binary, &def),
                if m.success { "" } else { "  FAILED" }
            );
        }
    }
}
