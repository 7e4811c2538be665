//! One module per subcommand: each parses its arguments, calls a library, formats the result.

pub mod ask;
pub mod attach;
pub mod cleanup;
pub mod dashboard;
pub mod export;
pub mod functions;
pub mod generate_tests;
pub mod mcp;
pub mod query;
pub mod replay;
pub mod symbols;

use std::path::PathBuf;

use chronicle::storage::postgres::{PostgresError, PostgresStorage, display_dsn};
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::storage::{Storage, StorageError};

use crate::Failure;

/// Where the records are stored; shared by every command that reads or writes the store.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// SQLite database file.
    #[arg(
        long,
        default_value = "chronicle.db",
        value_name = "PATH",
        conflicts_with = "dsn"
    )]
    pub db: PathBuf,
    /// PostgreSQL database instead of a SQLite file:
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    #[arg(long, value_name = "DSN")]
    pub dsn: Option<String>,
}

impl StoreArgs {
    /// The store as messages name it: the file, or the DSN without its password.
    pub fn location(&self) -> String {
        match &self.dsn {
            Some(dsn) => display_dsn(dsn).unwrap_or_else(|| "the PostgreSQL database".into()),
            None => self.db.display().to_string(),
        }
    }
}

/// Opens an existing store for reading. A missing SQLite file is never created, and tables
/// are never created in a PostgreSQL database: both are usage errors.
pub(crate) fn open_store(store: &StoreArgs) -> Result<Box<dyn Storage>, Failure> {
    let opened = match &store.dsn {
        Some(dsn) => PostgresStorage::open_existing(dsn).map(boxed),
        None => SqliteStorage::open_existing(&store.db).map(boxed),
    };
    opened.map_err(|error| match error {
        StorageError::NotFound { path } => Failure::from(anyhow::anyhow!(
            "no chronicle database at {}; pass --db PATH or --dsn postgres://..., or run \
             `chronicle attach` first",
            path.display()
        )),
        other => storage_failure(other),
    })
}

/// Before a capture writes to an existing SQLite store: refuses one whose pages are damaged,
/// which would take records and then lose them at the first write.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn check_store(store: &StoreArgs) -> Result<(), Failure> {
    if store.dsn.is_some() || !store.db.exists() {
        return Ok(());
    }
    SqliteStorage::open_existing(&store.db)
        .and_then(|storage| storage.check_integrity())
        .map_err(storage_failure)
}

/// Opens the store for writing, creating it (its tables) when missing.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn create_store(store: &StoreArgs) -> Result<Box<dyn Storage>, Failure> {
    if store.dsn.is_none() {
        give_to_sudo_user(&store.db)?;
    }
    match &store.dsn {
        Some(dsn) => PostgresStorage::open(dsn).map(boxed),
        None => SqliteStorage::open(&store.db).map(boxed),
    }
    .map_err(storage_failure)
}

/// Under `sudo`, a new SQLite database (mode 0600) belongs to the user who ran sudo, so that
/// they can read it without root; SQLite then gives its WAL and shared-memory files the same
/// owner. Does nothing for an existing file, or when not root through sudo.
#[cfg(unix)]
fn give_to_sudo_user(path: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let sudo = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (sudo("SUDO_UID"), sudo("SUDO_GID")) else {
        return Ok(());
    };
    let file = match chronicle::storage::sqlite::create_private_file(path) {
        Ok(file) => file,
        // Existing, or not creatable: opening the store says what is wrong.
        Err(_) => return Ok(()),
    };
    let root = file.metadata().is_ok_and(|m| m.uid() == 0);
    if root {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| {
            anyhow::anyhow!(
                "cannot give {} to the sudo user (uid {uid}): {e}",
                path.display()
            )
        })?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn give_to_sudo_user(_: &std::path::Path) -> Result<(), Failure> {
    Ok(())
}

fn boxed(storage: impl Storage + 'static) -> Box<dyn Storage> {
    Box::new(storage)
}

/// A server that cannot be reached is the environment's fault; everything else (a wrong path
/// or DSN, a newer schema) is the input's. Every message already names the store.
fn storage_failure(error: StorageError) -> Failure {
    match error {
        StorageError::Postgres(PostgresError::Connect { .. }) => Failure::environment(error),
        other => Failure::from(other),
    }
}

/// Rows as an aligned table (the first row is the header): text left-aligned, columns
/// marked in `right` right-aligned, two spaces between columns.
pub(crate) fn render_table<R: AsRef<[String]>>(rows: &[R], right: &[bool]) -> String {
    let columns = rows.first().map_or(0, |r| r.as_ref().len());
    let mut widths = vec![0; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.as_ref().iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
