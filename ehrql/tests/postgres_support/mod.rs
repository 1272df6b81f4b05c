//! A fresh PostgreSQL database per test run, on the server named by `RAP_TEST_POSTGRES_URL`
//! (the test command exports it; CI always sets it). Dropped again when the guard drops, so
//! parallel test binaries never see each other's tables.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use ehrql::engines::postgres::PostgresEngine;

/// The variable naming the test server.
pub const URL_VARIABLE: &str = "RAP_TEST_POSTGRES_URL";

/// A database created for this test run; dropped (with its connections) on drop.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The DSN of the new database.
    pub url: String,
}

impl TestDatabase {
    /// Creates `ehrql_test_<pid>_<n>_<nanos>`.
    ///
    /// Panics, naming the variable, when `RAP_TEST_POSTGRES_URL` is not set: the PostgreSQL
    /// tests must fail rather than silently skip.
    pub fn create() -> TestDatabase {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let admin_url = std::env::var(URL_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{URL_VARIABLE} is not set: the PostgreSQL engine tests need a server, e.g. \
                 {URL_VARIABLE}=postgresql://postgres:postgres@127.0.0.1:5432/postgres"
            )
        });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "ehrql_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = PostgresEngine::connect(&admin_url)
            .unwrap_or_else(|e| panic!("connecting to {URL_VARIABLE}={admin_url}: {e}"));
        admin
            .execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        TestDatabase {
            admin_url,
            name,
            url,
        }
    }

    /// [`TestDatabase::create`], holding the tables of the SQLite database at `path`.
    pub fn with_sqlite_tables(path: &std::path::Path) -> TestDatabase {
        let database = TestDatabase::create();
        database
            .connect()
            .load_database(&ehrql::engines::sqlite::read_database(path).unwrap())
            .unwrap();
        database
    }

    /// The three engines the tests compare, by name, each with the `ehrql` flags that select
    /// it: in memory and SQLite over `gen.db` in the working directory, and PostgreSQL over
    /// this database.
    pub fn every_engine(&self) -> [(&'static str, Vec<&str>); 3] {
        [
            (
                "in_memory",
                vec!["--dsn", "sqlite:///gen.db", "--query-engine", "in_memory"],
            ),
            ("sqlite", vec!["--dsn", "sqlite:///gen.db"]),
            ("postgres", vec!["--dsn", self.url.as_str()]),
        ]
    }

    /// A new connection to the test database.
    pub fn connect(&self) -> PostgresEngine {
        PostgresEngine::connect(&self.url).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(admin) = PostgresEngine::connect(&self.admin_url) {
            let _ = admin.execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = head[scheme_end..]
        .find('/')
        .map_or(head.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &head[..host_end])
}
