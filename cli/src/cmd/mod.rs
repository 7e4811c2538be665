//! One module per subcommand: each parses its arguments, calls a library, formats the result.

pub mod attach;
pub mod export;
pub mod functions;
pub mod symbols;

use std::path::PathBuf;

/// Where the records are stored; shared by every command that reads or writes the store.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// SQLite database file.
    #[arg(long, default_value = "chronicle.db", value_name = "PATH")]
    pub db: PathBuf,
}
