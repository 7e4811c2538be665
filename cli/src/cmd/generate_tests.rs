//! `chronicle generate-tests`: regression tests in the target's language from recorded calls.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chronicle::testgen::{BehaviorAgent, DEFAULT_COUNT, GenerateOptions, TestLanguage};

use super::{StoreArgs, open_store};
use crate::Failure;

/// Write a test file from recorded calls of a function: Rust `#[test]`s, a C program, or a
/// replay spec for `chronicle replay --spec`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    chronicle generate-tests orders::quote -o tests/ --link target/debug/liborders.rlib\n  \
    chronicle generate-tests order_total -o out/ --lang c --link orders.o")]
pub struct Args {
    /// Function: its full name, or the last part of it when that is unique.
    #[arg(value_name = "FUNC")]
    pub function: String,
    /// Directory to write the test file into (created when missing).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// At most this many tests, chosen for diversity (every distinct error first).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_COUNT)]
    pub count: usize,
    /// rust, c or spec; default: the function's language (spec for others).
    #[arg(long = "lang", value_name = "LANG")]
    pub language: Option<TestLanguage>,
    /// Read the signature and types from this binary instead of the recorded one.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// What the printed build command links against: the crate's rlib (Rust), objects or
    /// libraries that define the function (C). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub link: Vec<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    if args.count == 0 {
        return Err(anyhow::anyhow!("--count must be at least 1").into());
    }
    let storage = open_store(&args.store)?;
    let options = GenerateOptions {
        count: args.count,
        language: args.language,
        binary: args.binary,
        link: args.link,
    };
    let generated = BehaviorAgent::new(&*storage)
        .generate_test_file(&args.function, &args.output, &options)
        .with_context(|| format!("generating tests for `{}`", args.function))?;

    let mut out = std::io::stdout().lock();
    let n = generated.call_ids.len();
    let what = match generated.language {
        TestLanguage::Spec => "replay spec",
        TestLanguage::Rust => "Rust test",
        TestLanguage::C => "C test",
    };
    writeln!(
        out,
        "wrote {what} {} for {}: {n} call{}",
        generated.path.display(),
        generated.function,
        if n == 1 { "" } else { "s" }
    )
    .context("writing to stdout")?;
    for (id, why) in &generated.skipped {
        writeln!(out, "left out call {id}: {why}").context("writing to stdout")?;
    }
    let dir = args.output.display();
    if let Some(build) = &generated.build {
        writeln!(out, "build: cd {dir} && {build}").context("writing to stdout")?;
        writeln!(out, "run:   cd {dir} && {}", generated.run).context("writing to stdout")?;
    } else {
        writeln!(out, "run:   {}", generated.run).context("writing to stdout")?;
    }
    Ok(crate::exit::OK)
}
