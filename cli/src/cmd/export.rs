//! `chronicle export`: the recorded calls of one function as a JSON file (DESIGN.md's
//! export format).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use chronicle::export::export_json;
use chronicle::storage::{RecordQuery, match_function};

use super::{StoreArgs, open_store};
use crate::Failure;

/// Write the recorded calls of a function to a JSON file, oldest first.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  chronicle export orders::process_order -o calls.json")]
pub struct Args {
    /// Function: its full name, or the last part of it when that is unique (`process_order`).
    #[arg(value_name = "FUNC")]
    pub function: String,
    /// File to write; `-` for stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE.json")]
    pub output: PathBuf,
    /// Export at most this many calls (the oldest).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    let storage = open_store(&args.store)?;
    let reading = || format!("reading {}", args.store.location());
    let known = storage.function_names().with_context(reading)?;
    let function = match_function(&args.function, &known)?;
    let query = RecordQuery {
        function: Some(function.clone()),
        limit: args.limit,
        ..Default::default()
    };
    let records = storage.records(&query).with_context(reading)?;
    let mut text =
        serde_json::to_string_pretty(&export_json(&records)).context("rendering json")?;
    text.push('\n');

    let count = match records.len() {
        1 => "1 record".to_owned(),
        n => format!("{n} records"),
    };
    if args.output.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing to stdout")?;
        // Stdout holds the JSON; the summary goes to stderr.
        eprintln!("exported {count} of {function} to stdout");
    } else {
        let path = &args.output;
        let writing = || format!("writing {}", path.display());
        let mut file = BufWriter::new(File::create(path).with_context(writing)?);
        file.write_all(text.as_bytes()).with_context(writing)?;
        file.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(writing)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "exported {count} of {function} to {}", path.display())
            .context("writing to stdout")?;
    }
    Ok(crate::exit::OK)
}
