//! Prints how long the CSV viewer takes to read one page of a large file, near the start and
//! deep into it, by scanning from the top and through the row index (its one-off build
//! timed apart), and how long the disclosure checks take over the whole file. Run with
//! `cargo bench -p rap-airlock --bench csv_page`; the numbers are printed, never asserted.

use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use rap_airlock::checks::{CheckConfig, check_csv};
use rap_airlock::csv::{IndexCache, RowIndex, page};

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
            "scan:    page {page_idx:>5} (rows {}..{}): {:>8.2} ms, {} rows",
            page_idx * 100 + 1,
            page_idx * 100 + read.rows.len(),
            start.elapsed().as_secs_f64() * 1000.0,
            read.rows.len()
        );
    }
    let start = Instant::now();
    let file = std::fs::File::open(&path).expect("opening");
    let index = RowIndex::build(file).expect("indexing");
    println!(
        "index:   built in {:.1} ms ({} rows)",
        start.elapsed().as_secs_f64() * 1000.0,
        index.n_rows()
    );
    // What the viewer does: the cache builds the index on the first deep page, then reuses it.
    let cache = IndexCache::default();
    for page_idx in [5_000usize, 5_000, 9_999, 100, 7_777] {
        let start = Instant::now();
        let read = cache.page(&path, page_idx, 100).expect("paging");
        let elapsed = start.elapsed();
        assert_eq!(read.rows.len(), 100);
        // The rate column encodes the row number: the page starts where it should.
        let first_row = page_idx * 100;
        assert_eq!(read.rows[0][3], format!("{:.3}", first_row as f64 / 7.0));
        println!(
            "viewer:  page {page_idx:>5}: {:>8.2} ms",
            elapsed.as_secs_f64() * 1000.0
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
