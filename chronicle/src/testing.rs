//! Helpers for tests that need a PostgreSQL store: a throwaway schema in the server that
//! `CHRONICLE_TEST_PG_DSN` names, so that test runs (and tests within a run) never see each
//! other's records.
//!
//! Compiled for this crate's own tests and, with the `testing` feature, for other crates'
//! tests (`chronicle-tests`). Not part of the library's API.

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that names the test server: a DSN whose user may create schemas
/// in its database (`scripts/start-postgres.sh` sets one up and prints it).
pub const DSN_VAR: &str = "CHRONICLE_TEST_PG_DSN";

/// Set to `1` to make tests fail, rather than skip, when [`DSN_VAR`] is unset. CI sets it;
/// so does the mere presence of `CI`.
pub const REQUIRE_VAR: &str = "CHRONICLE_REQUIRE_PG";

/// A fresh, empty schema in the test server, dropped with everything in it when this value
/// is dropped.
pub struct PgSchema {
    admin: postgres::Client,
    name: String,
    dsn: String,
}

impl PgSchema {
    /// Creates a schema for `test` in the server [`DSN_VAR`] names.
    ///
    /// When [`DSN_VAR`] is unset, panics with what to do if PostgreSQL is required
    /// ([`REQUIRE_VAR`]`=1` or `CI` set); otherwise says on stderr that `test` did not run and
    /// returns `None`. A set but unusable DSN always panics.
    pub fn new(test: &str) -> Option<PgSchema> {
        let Some(base) = std::env::var(DSN_VAR).ok().filter(|dsn| !dsn.is_empty()) else {
            let required = std::env::var(REQUIRE_VAR).as_deref() == Ok("1")
                || std::env::var_os("CI").is_some_and(|ci| !ci.is_empty());
            let how = format!(
                "start one with `export {DSN_VAR}=$(sudo bash scripts/start-postgres.sh)` \
                 (or point {DSN_VAR} at a server whose user may create schemas)"
            );
            if required {
                panic!("{test} needs PostgreSQL and {DSN_VAR} is not set; {how}");
            }
            eprintln!("NOT RUN: {test} needs PostgreSQL; {how}. CI sets {REQUIRE_VAR}=1.");
            return None;
        };
        Some(
            PgSchema::create(&base, "chronicle_test").unwrap_or_else(|e| {
                panic!(
                    "{test}: cannot make a schema in the server {DSN_VAR} names: {e} ({:?})",
                    e.as_db_error().map(|db| db.message())
                )
            }),
        )
    }

    /// Creates a fresh schema named `<prefix>_<pid>_<nanos>_<n>` in the database `base`
    /// names, whatever the environment says.
    pub fn create(base: &str, prefix: &str) -> Result<PgSchema, postgres::Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{prefix}_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(base, postgres::NoTls)?;
        admin.batch_execute(&format!("CREATE SCHEMA {name}; SET search_path TO {name}"))?;
        let dsn = with_search_path(base, &name);
        Ok(PgSchema { admin, name, dsn })
    }

    /// A DSN for the test database with `search_path` set to this schema: a store opened
    /// with it lives here.
    pub fn dsn(&self) -> &str {
        &self.dsn
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `sql` in this schema, for tests that tamper with a store behind its back.
    #[track_caller]
    pub fn execute(&mut self, sql: &str) {
        self.admin
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e} ({:?})", e.as_db_error()));
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

/// `dsn` with the server option that makes `schema` the only schema on the search path.
fn with_search_path(dsn: &str, schema: &str) -> String {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let separator = if dsn.contains('?') { '&' } else { '?' };
        format!("{dsn}{separator}options=-csearch_path%3D{schema}")
    } else {
        format!("{dsn} options='-csearch_path={schema}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_in_either_dsn_form() {
        assert_eq!(
            with_search_path("postgres://u:p@127.0.0.1:5432/db", "s1"),
            "postgres://u:p@127.0.0.1:5432/db?options=-csearch_path%3Ds1"
        );
        assert_eq!(
            with_search_path("postgresql://u@h/db?connect_timeout=5", "s1"),
            "postgresql://u@h/db?connect_timeout=5&options=-csearch_path%3Ds1"
        );
        assert_eq!(
            with_search_path("host=h user=u dbname=db", "s1"),
            "host=h user=u dbname=db options='-csearch_path=s1'"
        );
    }
}
