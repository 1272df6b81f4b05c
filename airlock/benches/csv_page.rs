//! Prints how long the CSV viewer takes to render one page of a large file, near the start
//! and deep into it, and how long the disclosure checks take over the whole file. Run with
//! `cargo bench -p rap-airlock --bench csv_page`; the numbers are printed, never asserted.

use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use rap_airlock::checks::{CheckConfig, check_csv};
use rap_airlock::csv::page;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("large.csv");
    let n_rows: usize = 1_000_000;
    {
        let file = std::fs::File::create(&path).expect("creating the file");
        let mut out = BufWriter::new(file);
        writeln!(out, "patient_group,region,count,rate,date").expect("writing");
        for idx in 0..n_rows {
            writeln!(
                out,
                "group-{},\"Region, {}\",{},{:.3},2020-{:02}-{:02}",
                idx % 97,
                idx % 13,
                idx % 500,
                idx as f64 / 7.0,
                idx % 12 + 1,
                idx % 28 + 1
            )
            .expect("writing");
        }
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("file: {n_rows} rows, {:.1} MiB", size as f64 / 1_048_576.0);
    for page_idx in [0usize, 100, 5_000, 9_999] {
        let start = Instant::now();
        let file = std::fs::File::open(&path).expect("opening");
        let read = page(BufReader::new(file), page_idx, 100).expect("paging");
        println!(
            "page {page_idx:>5} (rows {}..{}): {:>8.2} ms, {} rows",
            page_idx * 100 + 1,
            page_idx * 100 + read.rows.len(),
            start.elapsed().as_secs_f64() * 1000.0,
            read.rows.len()
        );
    }
    let config = CheckConfig {
        small_count_max: 7,
        max_rows: n_rows,
    };
    let start = Instant::now();
    let file = std::fs::File::open(&path).expect("opening");
    let flags = check_csv(BufReader::new(file), &config).expect("checking");
    println!(
        "disclosure checks over {n_rows} rows: {:.0} ms, {} flag(s)",
        start.elapsed().as_secs_f64() * 1000.0,
        flags.len()
    );
}
