//! Disclosure-check flags for CSV outputs (beyond the reference): cells that look like small
//! counts, and columns that look like identifiers or dates of individuals. Flags help the
//! reviewer look; they never approve or reject anything.

use std::io::BufRead;

/// What to flag.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Integers in `1..=small_count_max` are flagged as small counts.
    pub small_count_max: u64,
    /// Stop scanning after this many rows (the flags say so).
    pub max_rows: usize,
}

/// One flag shown beside a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// `count` cells in column `column` hold a count in 1..=max.
    SmallCounts { column: String, count: usize },
    /// The column's name suggests identifiers of individuals.
    IdentifierColumn { column: String },
    /// The column holds calendar dates (possibly dates of individual events).
    DateColumn { column: String },
    /// Only the first `rows` rows were checked.
    Truncated { rows: usize },
}

impl Flag {
    /// What the review page shows.
    pub fn message(&self, config: &CheckConfig) -> String {
        match self {
            Flag::SmallCounts { column, count } => format!(
                "column '{column}': {count} cell(s) hold a count between 1 and {}",
                config.small_count_max
            ),
            Flag::IdentifierColumn { column } => {
                format!("column '{column}' looks like an identifier of individuals")
            }
            Flag::DateColumn { column } => {
                format!(
                    "column '{column}' holds dates (check they are not dates of individual events)"
                )
            }
            Flag::Truncated { rows } => format!("only the first {rows} rows were checked"),
        }
    }
}

const IDENTIFIER_NAMES: [&str; 6] = [
    "patient_id",
    "nhs_number",
    "person_id",
    "pseudo_id",
    "id",
    "patient",
];

/// Scans CSV text and returns its flags, in column order.
///
/// # Errors
/// Reading failed.
pub fn check_csv(reader: impl BufRead, config: &CheckConfig) -> std::io::Result<Vec<Flag>> {
    let mut records = crate::csv::Records::new(reader);
    let Some(header) = records.next_record()? else {
        return Ok(Vec::new());
    };
    let n_columns = header.len();
    let mut small = vec![0usize; n_columns];
    let mut dates = vec![0usize; n_columns];
    let mut non_empty = vec![0usize; n_columns];
    let mut rows = 0usize;
    let mut truncated = false;
    while let Some(record) = records.next_record()? {
        if rows == config.max_rows {
            truncated = true;
            break;
        }
        rows += 1;
        for (idx, cell) in record.iter().enumerate().take(n_columns) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            non_empty[idx] += 1;
            if let Ok(value) = cell.parse::<u64>()
                && (1..=config.small_count_max).contains(&value)
            {
                small[idx] += 1;
            }
            if looks_like_date(cell) {
                dates[idx] += 1;
            }
        }
    }
    let mut flags = Vec::new();
    for (idx, column) in header.iter().enumerate() {
        let lower = column.trim().to_ascii_lowercase();
        if IDENTIFIER_NAMES.contains(&lower.as_str()) || lower.ends_with("_id") {
            flags.push(Flag::IdentifierColumn {
                column: column.clone(),
            });
        }
        if non_empty[idx] > 0 && dates[idx] * 2 > non_empty[idx] {
            flags.push(Flag::DateColumn {
                column: column.clone(),
            });
        }
        if small[idx] > 0 {
            flags.push(Flag::SmallCounts {
                column: column.clone(),
                count: small[idx],
            });
        }
    }
    if truncated {
        flags.push(Flag::Truncated { rows });
    }
    Ok(flags)
}

fn looks_like_date(cell: &str) -> bool {
    let bytes = cell.as_bytes();
    bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'-'
        && bytes[8..10].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_small_counts_identifiers_and_dates() {
        let config = CheckConfig {
            small_count_max: 7,
            max_rows: 1000,
        };
        let csv = "patient_id,group,count,date\n1,A,3,2020-01-02\n2,B,100,2021-03-04\n3,C,0,\n";
        let flags = check_csv(csv.as_bytes(), &config).unwrap();
        assert_eq!(
            flags,
            [
                Flag::IdentifierColumn {
                    column: "patient_id".to_string()
                },
                Flag::SmallCounts {
                    column: "patient_id".to_string(),
                    count: 3
                },
                Flag::SmallCounts {
                    column: "count".to_string(),
                    count: 1
                },
                Flag::DateColumn {
                    column: "date".to_string()
                },
            ]
        );
        assert_eq!(
            flags[2].message(&config),
            "column 'count': 1 cell(s) hold a count between 1 and 7"
        );
        let clean = check_csv("group,count\nA,100\nB,250\n".as_bytes(), &config).unwrap();
        assert!(clean.is_empty());
        let truncated = check_csv(
            "n\n100\n100\n100\n".as_bytes(),
            &CheckConfig {
                small_count_max: 7,
                max_rows: 2,
            },
        )
        .unwrap();
        assert_eq!(truncated, [Flag::Truncated { rows: 2 }]);
    }
}
