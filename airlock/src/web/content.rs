//! File contents for the viewer iframes (spec B8 "View file"): CSV as a paged HTML table read
//! only up to the requested page (deep pages through a cached row index), images as themselves, HTML as-is under a sandboxing CSP,
//! logs truncated to their last 10 000 bytes, everything else as plain text. Every content
//! response carries `Content-Security-Policy: sandbox; default-src 'none' …`, so even
//! hostile HTML in an output cannot run scripts, reach the network or touch Airlock.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use askama::Template;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppError;
use crate::csv::IndexCache;

/// The strict policy for rendered outputs.
pub const CONTENT_CSP: &str =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:";

/// The reference's log viewer limit.
pub const MAX_LOG_BYTES: u64 = 10_000;

#[derive(Template)]
#[template(path = "csv.html")]
struct CsvPage {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    page: usize,
    first_row: usize,
    more: bool,
}

fn extension(relpath: &str) -> String {
    std::path::Path::new(relpath)
        .extension()
        .and_then(|ext| ext.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn with_csp(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_CSP),
    );
    response
}

/// Renders the file at `path` (already resolved safely) for the viewer.
///
/// # Errors
/// The file cannot be read.
pub async fn render(
    csv_indexes: &Arc<IndexCache>,
    path: PathBuf,
    relpath: &str,
    page: usize,
    page_size: usize,
    plaintext: bool,
) -> Result<Response, AppError> {
    let ext = extension(relpath);
    let internal = |error: std::io::Error| AppError::Internal(format!("reading a file: {error}"));
    if ext == "csv" && !plaintext {
        let csv_indexes = Arc::clone(csv_indexes);
        let read = tokio::task::spawn_blocking(move || csv_indexes.page(&path, page, page_size))
            .await
            .map_err(|error| AppError::Internal(error.to_string()))?
            .map_err(internal)?;
        let html = CsvPage {
            header: read.header,
            rows: read.rows,
            page,
            first_row: page * page_size + 1,
            more: read.more,
        }
        .render()?;
        return Ok(with_csp(Html(html).into_response()));
    }
    let content_type = match (ext.as_str(), plaintext) {
        (_, true) => "text/plain; charset=utf-8",
        ("png", _) => "image/png",
        ("jpg" | "jpeg", _) => "image/jpeg",
        ("svg", _) => "image/svg+xml",
        ("html", _) => "text/html; charset=utf-8",
        ("json", _) => "application/json",
        _ => "text/plain; charset=utf-8",
    };
    let is_log = ext == "log";
    let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(&path)?;
        if is_log {
            let size = file.metadata()?.len();
            if size > MAX_LOG_BYTES {
                file.seek(SeekFrom::Start(size - MAX_LOG_BYTES))?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    })
    .await
    .map_err(|error| AppError::Internal(error.to_string()))?
    .map_err(internal)?;
    let response = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    Ok(with_csp(response))
}
