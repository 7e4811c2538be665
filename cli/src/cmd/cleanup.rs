//! `chronicle cleanup`: delete old records (and cap the records kept per function).

use anyhow::Context;

use super::StoreArgs;
use crate::Failure;

/// Delete records older than N days, and optionally all but the newest M per function.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  chronicle cleanup --days 30\n  \
                        chronicle cleanup --days 7 --max-per-function 10000 --dsn postgres://...")]
pub struct Args {
    /// Delete the records of calls older than this many days (0: none by age).
    #[arg(long, value_name = "N")]
    pub days: u32,
    /// Also keep at most this many records per function, the newest.
    #[arg(long, value_name = "M")]
    pub max_per_function: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    if args.max_per_function == Some(0) {
        return Err(anyhow::anyhow!(
            "--max-per-function must be at least 1 (leave it out to keep every record)"
        )
        .into());
    }
    let mut storage = super::open_store(&args.store)?;
    let deleted = chronicle::storage::enforce_retention(
        storage.as_mut(),
        args.days,
        args.max_per_function.unwrap_or(0),
    )
    .with_context(|| format!("cleaning up {}", args.store.location()))?;
    let records = match deleted {
        1 => "1 record".to_owned(),
        n => format!("{n} records"),
    };
    println!("deleted {records} from {}", args.store.location());
    Ok(crate::exit::OK)
}
